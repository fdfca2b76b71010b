"""The dropout doctor: finds dropout mistakes in real models.

So far the run-time guard (DK001: inference with dropout in training mode; DK015: a no-grad
forward with BatchNorm in training mode).
"""

from dropkit.doctor._guard import DropoutWarning, Guard, guard

__all__ = ["DropoutWarning", "Guard", "guard"]

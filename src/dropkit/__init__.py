"""dropkit: every dropout variant for PyTorch, correct and fast.

- :mod:`dropkit.functional` (alias ``dropkit.F``): dropout as functions, a drop-in for
  ``torch.nn.functional``'s, with reproducible, device-independent masks.
- :mod:`dropkit.nn`: the same as layers, a drop-in for ``torch.nn``'s.
- :func:`convert`: swap torch's dropout layers in an existing model for dropkit's.
- :func:`concrete` and :func:`regularization`: learned rates (Concrete dropout): turn a model's
  dropout layers into concrete ones, and the term to add to its loss.
- :func:`dropout_layers`, :func:`layer_spec`, :func:`function_spec`: the registry of what
  counts as dropout (torch's, dropkit's and third-party layers and functions).
- :func:`backend`: force the reference or a fast kernel backend inside a ``with`` block.
- :mod:`dropkit.mc`: Monte Carlo dropout (``mc_mode``, ``predict``); :mod:`dropkit.metrics`:
  calibration and uncertainty scores. Both are imported on first use.
"""

from dropkit import functional, nn
from dropkit import functional as F
from dropkit._convert import convert
from dropkit._registry import (
    FunctionSpec,
    LayerSpec,
    dropout_layers,
    function_spec,
    layer_spec,
)
from dropkit._version import __version__
from dropkit.functional import dropout_mask
from dropkit.kernels import available_backends, backend
from dropkit.nn import concrete, regularization

__all__ = [
    "F",
    "FunctionSpec",
    "LayerSpec",
    "__version__",
    "available_backends",
    "backend",
    "concrete",
    "convert",
    "dropout_layers",
    "dropout_mask",
    "function_spec",
    "functional",
    "layer_spec",
    "nn",
    "regularization",
]

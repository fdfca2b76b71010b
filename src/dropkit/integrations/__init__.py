"""dropkit inside the trainers people use: Lightning and the Hugging Face ``Trainer``.

- :mod:`dropkit.integrations.lightning` (``pip install 'dropkit[lightning]'``): the callbacks
  :class:`~dropkit.integrations.lightning.DropoutSchedule`,
  :class:`~dropkit.integrations.lightning.EvalGuard`,
  :class:`~dropkit.integrations.lightning.MCValidation` and
  :class:`~dropkit.integrations.lightning.ConvertDropout`.
- :mod:`dropkit.integrations.transformers` (``pip install 'dropkit[transformers]'``):
  :class:`~dropkit.integrations.transformers.DropkitCallback`, a ``TrainerCallback``.

Each module imports its trainer; importing one without its library raises an ``ImportError``
whose message is the one line that installs it. Nothing here is imported by ``import dropkit``.
"""

from dropkit.integrations._common import RateSchedule

__all__ = ["RateSchedule"]

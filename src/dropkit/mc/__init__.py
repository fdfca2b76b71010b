"""Monte Carlo dropout: uncertainty from dropout kept on at inference, done right and fast.

- :func:`mc_mode` (and :func:`enable_mc` / :func:`disable_mc`): the model in eval mode with
  every stochastic op of train mode on (dropout layers, functional dropout, attention and RNN
  dropout), nothing else changed; every flag restored afterwards.
- :func:`predict`: S stochastic passes with the deterministic prefix computed once, on tensor,
  tuple or keyword inputs, and the usual uncertainty scores in :class:`MCResult`;
  ``predict(..., method="moments")`` gets them from one pass of moment propagation instead
  (:class:`MomentResult`).
- ``last_layer=True`` (``predict``, ``mc_mode``): only the last stochastic module that runs is
  on; ``predict(..., masks=ConsistentMasks(S))``: S networks drawn once and kept across calls
  and batches (for scores compared across a data set, as BatchBALD's).
"""

from dropkit.mc._consistent import ConsistentMasks
from dropkit.mc._mode import MCState, disable_mc, dropout_modules, enable_mc, mc_active, mc_mode
from dropkit.mc._moments import MomentResult
from dropkit.mc._predict import MCResult, predict
from dropkit.mc._regression import RegressionPrediction

__all__ = [
    "ConsistentMasks",
    "MCResult",
    "MCState",
    "MomentResult",
    "RegressionPrediction",
    "disable_mc",
    "dropout_modules",
    "enable_mc",
    "mc_active",
    "mc_mode",
    "predict",
]

"""``predict(model, x, method="moments")``: Monte Carlo dropout's mean and variance in one pass.

Instead of running the network S times with random masks, the mean and variance of every
activation are carried through one forward pass (Wang & Manning, "Fast dropout training",
ICML 2013, https://proceedings.mlr.press/v28/wang13a.html; Brach, Sick & Duerr, "Single Shot MC
Dropout Approximation", 2020, https://arxiv.org/abs/2007.03293):

- dropout keeps the mean; the variance becomes ``(Var[x] + E[x]^2) / (1 - p) - E[x]^2``;
- linear maps (``Linear``, convolutions, average pooling, BatchNorm in eval, sums, means,
  reshapes, concatenation) carry the mean exactly and the variance through the squared weights;
- ReLU and LeakyReLU use the exact moments of a rectified Gaussian; GELU, SiLU, tanh, sigmoid,
  softplus, ELU, SELU, CELU and Mish use Gauss-Hermite quadrature of their Gaussian input; max
  pooling uses Clark's moments of the maximum of Gaussians; LayerNorm and RMSNorm use
  normalization statistics fixed at their expected values (an approximation).

Every activation is treated as Gaussian. With ``covariance="diagonal"`` each is also
**independent of every other**, as in both papers: the covariance the network creates (units
after one mask, a residual branch and its skip connection, the units of one channel-dropout or
DropPath mask) is ignored, and a layer that sums such units gets too little variance.
``covariance="lowrank"`` carries that covariance as a low-rank factor over the noise
sources through dense layers (``_covariance.py``: :class:`FactorPropagation`; its rules,
registered with :func:`factor_rule`, in ``_factor_rules.py``); convolution maps, layers
whose factor would be too big and ops without a covariance rule stay diagonal, each named in
``MomentResult.covariance``.

How: the model runs once on the inputs, in eval mode, under a ``TorchFunctionMode``
(:class:`Propagation`, in ``_mode.py``, on dropkit's interception base) that sees every torch
function, ``torch.Tensor`` method and dropout function (dropkit's and ``torch.nn.functional``'s,
module or function). Each tensor it returns holds the *mean*; the variances sit in a side table
keyed by tensor identity. A call that gets a tensor carrying variance and that has no rule
raises ``NotImplementedError`` naming the op and the module, as do random-number calls and
dropout that cannot be propagated (DropBlock, DropConnect, recurrent and attention dropout):
never a silent answer with part of the noise missing. What counts as dropout, and which calls
draw random numbers, is :mod:`dropkit._registry`'s to say.

The package: ``_mode.py`` (the mode and the rule tables), ``_gaussian.py`` (moments of
functions of Gaussians), and the rules by op family: ``_dropout.py``, ``_linear.py``
(linear, conv, matmul), ``_arith.py`` (element-wise arithmetic), ``_activations.py``,
``_pooling.py``, ``_norms.py``, ``_shape.py`` (reshapes, indexing, concatenation, padding,
sums); ``_covariance.py`` (the low-rank mode) and ``_factor_rules.py`` (its rules);
``_predict.py`` runs the pass.

Adding a moment rule
--------------------
A rule is a function ``rule(prop, func, args, kwargs)`` registered for one or more torch
functions (or ``torch.Tensor`` methods, as a ``TorchFunctionMode`` receives them) with
:func:`moment_rule`, in the file of its op family. It is called only when some input carries
variance; it computes the mean as the op does (``func(*args, **kwargs)``), the variance from the
inputs' (``prop.var(t)``: None if ``t`` is fixed; ``prop.zvar(t)``: zeros then), and returns the
mean with the variance bound to it (``prop.bind(mean, var)``; an in-place op returns
``prop.rebind(target, mean, var)``). Where the rule cannot be exact or sure, it raises
``prop.unsupported(func, "why")``. ``prop.square(w)`` is ``w * w``, computed once per weight.
For example, the rule of ``torch.nn.functional.hardtanh`` by quadrature would be::

    @moment_rule(torch.nn.functional.hardtanh)
    def _hardtanh(prop, func, args, kwargs):
        x = args[0]
        mean, var = quadrature_moments(lambda t: func(t, *args[1:], **kwargs), x, prop.zvar(x))
        return prop.bind(mean, var)

A dropout variant of :mod:`dropkit._registry` gets its rule with :func:`dropout_rule`, keyed
by the variant's name (or by a function, which comes first), with the signature
``rule(prop, call)``: ``call`` is the :class:`~dropkit._intercept.DropoutCall` the interception
base hands every mode (``call.rate``, ``call.training``, ``call.active``, ``call.spec``,
``call.args``...). It sees every call, on or off, and counts itself (``prop.dropouts += 1``)
when on. A registered dropout function whose variant has no rule raises when it is on. For
example, a variant whose noise multiplies by ``1 + p * N(0, 1)``::

    @dropout_rule("my_gaussian")
    def _my_gaussian(prop, call):
        x = call.args[0]
        if not call.active:
            return call.run()
        prop.dropouts += 1
        v = prop.zvar(x)
        return prop.bind(x.clone(), (v + x * x) * call.rate**2 + v)
"""

from dropkit.mc._moments import (  # noqa: F401  (each file registers its rules)
    _activations,
    _arith,
    _dropout,
    _factor_rules,
    _linear,
    _norms,
    _pooling,
    _shape,
)
from dropkit.mc._moments._covariance import FactorPropagation, factor_rule
from dropkit.mc._moments._mode import (
    DropoutRule,
    Propagation,
    Rule,
    dropout_rule,
    moment_rule,
)
from dropkit.mc._moments._predict import MomentResult, predict_moments

__all__ = [
    "DropoutRule",
    "FactorPropagation",
    "MomentResult",
    "Propagation",
    "Rule",
    "dropout_rule",
    "factor_rule",
    "moment_rule",
    "predict_moments",
]

"""Cross-unit covariance for moment propagation: a low-rank factor over the noise sources.

The diagonal pass treats every unit as independent of every other. Units that share upstream
masks covary, and a linear map that sums them (the classifier after a hidden layer) gets half
of Monte Carlo's variance or less. Here a tensor may also carry a **factor** ``L`` of shape
``[N, *shape, r]`` over ``r`` independent noise sources, so that its covariance is
``L L^T + diag(e)`` with ``e = var - sum(L^2, -1)`` the variance not attributed to a source
(every unit's own). Its variance stays the diagonal pass's (exact per unit where that is
exact), except after linear maps, sums and LayerNorm, whose rules here know the cross terms
it leaves out; the factor adds the cross terms. This file holds the mode and its rule table; the
rules, registered with :func:`factor_rule` by op, are in ``_factor_rules.py``:

- ``linear`` on a ``[N, D]`` input: ``L <- W L``, and each input unit's unattributed variance
  becomes a source of its own (``W diag(sqrt(e))``): the output covariance is exact for a
  linear map. The output variance is then ``sum(L^2, -1)``: the diagonal pass's
  ``W^2 var`` plus the cross terms. The input keeps those sources too (its factor is built
  when a second consumer asks for it), so that a skip connection beside the branch covaries
  with it: ``Var(a + b) = Va + Vb + 2 Cov(a, b)``;
- every other rule on a factored input first makes that input's unattributed variance
  sources of its own, bound to the input (:meth:`FactorPropagation.complete`), for the same
  reason: what a rule's output carries of its input's own noise is then named, and only
  the noise the op adds (a mask's, a nonlinearity's remainder) is left unattributed. Element
  dropout is the exception, to save a column per unit where its input has one consumer: it
  hands the input's own variance on inside its output's (:meth:`FactorPropagation.pass_on`),
  and a second use of the input is tied to the sources that variance has become by then
  (:meth:`FactorPropagation.tie`). Where a map is too wide for its own variance to become
  sources (``max_factor``), it is handed on unnamed, and a second use is diagonal, named;
- dropout with mask ``c`` (``E[c] = mu``, ``Var(c) = s^2``; ``mu = 1`` when inverted): element
  dropout scales ``L`` by ``mu``; channel dropout, DropPath and ``noise_shape`` masks add
  one source per mask (``s E[x]`` on the units that share it) and, when the input carries a
  factor, ``s L`` again on each mask's units: units under one mask covary by
  ``(mu^2 + s^2) Cov(x_i, x_j) + s^2 E[x_i] E[x_j]``, units under different masks by
  ``mu^2 Cov(x_i, x_j)``. Exact;
- element-wise activations scale ``L`` by ``E[f'(x)]`` (``Phi(m / s)`` for ReLU; Gauss-Hermite
  quadrature for the smooth ones): by Stein's lemma the exact covariance of ``f(x)`` with
  any unit jointly Gaussian with ``x``, and the first term of Mehler's expansion of
  ``Cov(f(x_i), f(x_j))`` (Wu et al., "Deterministic Variational Inference for Robust
  Bayesian Neural Networks", ICLR 2019, https://arxiv.org/abs/1810.03958, derive the full
  bivariate form for ReLU);
- sums and differences add the factors (a skip connection and its branch covary through
  them), products and quotients by fixed tensors scale them, reshapes reshape them;
- LayerNorm goes through its Jacobian at the mean, ``(P - u u^T) / sigma`` (``P`` centers,
  ``u`` is the centered mean's direction: noise that only rescales the input leaves the
  output as it is), with ``sigma^2`` the expected spread under the noise the projection
  leaves, read off the factor.

Any other op that receives a factored tensor gives a diagonal output, as do convolutions
(conv maps stay diagonal) and layers whose factor would exceed ``max_factor`` elements per
input: each such place is named in :attr:`MomentResult.covariance`, never silently.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit._registry import function_spec
from dropkit.mc._moments._mode import Propagation, op_name

__all__ = [
    "FACTOR_RULES",
    "MAX_FACTOR",
    "TINY",
    "FactorPropagation",
    "FactorRule",
    "dropout_factor_rule",
    "factor_rule",
]

#: Default limit on a factor's elements per input (``out_features * sources``): about 256 KB
#: of float32 per input, the size of a 256 -> 256 layer's factor.
MAX_FACTOR = 65_536
#: A unit's unattributed variance below this share of its variance is rounding (the variance
#: and the factor computed two ways), not a source worth a column.
TINY = 1e-5

_State = tuple[torch.Tensor | None, torch.Tensor | None]  # (variance, factor) before the call
#: ``rule(prop, func, args, kwargs, out, before)``: sets the factor of ``out`` (and may rebind
#: its variance); ``before(t)`` is an input's (variance, factor) as they were before the call.
FactorRule = Callable[
    [
        "FactorPropagation",
        Callable[..., Any],
        tuple[Any, ...],
        dict[str, Any],
        Any,
        Callable[[Any], _State],
    ],
    None,
]
FACTOR_RULES: dict[Callable[..., Any], FactorRule] = {}
_F = TypeVar("_F", bound=FactorRule)


def factor_rule(*funcs: Callable[..., Any]) -> Callable[[_F], _F]:
    """Register ``rule`` as the factor rule of each of ``funcs`` (a decorator)."""

    def register(rule: _F) -> _F:
        for func in funcs:
            FACTOR_RULES[func] = rule
        return rule

    return register


#: The factor rule of every dropout function of :mod:`dropkit._registry` (one at most), set
#: with :func:`dropout_factor_rule`: keyed by no function, since dropout makes sources even
#: from a fixed input.
_DROPOUT_FACTOR: list[FactorRule] = []


def dropout_factor_rule(rule: _F) -> _F:
    """Register ``rule`` as the factor rule of every registered dropout function (a decorator)."""
    _DROPOUT_FACTOR[:] = [rule]
    return rule


def _leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, list | tuple):
            out.extend(a)
        else:
            out.append(a)
    return out


class FactorPropagation(Propagation):
    """:class:`Propagation` with a second side table: each tensor's factor ``[N, *shape, r]``.

    Sources are numbered in the order they appear; a factor covers the first ``r`` of them
    (later ones are zero for it), so two factors add after padding the shorter.
    """

    def __init__(self, model: nn.Module | None = None, max_factor: int = MAX_FACTOR) -> None:
        super().__init__(model)
        self.max_factor = max_factor
        self.sources = 0
        self.forms: dict[str, str] = {}  # "module (op)" -> the form used there
        self._factors: dict[int, tuple[Any, torch.Tensor | Callable[[], torch.Tensor]]] = {}
        self._untied: dict[int, weakref.ref[torch.Tensor]] = {}
        self._passed: dict[int, tuple[Any, list[Any], Any, float, torch.Tensor]] = {}
        self._cells: dict[int, tuple[Any, list[Any]]] = {}

    # -- the factor table

    def factor(self, t: Any) -> torch.Tensor | None:
        """The factor bound to ``t``, or None (its covariance is diagonal)."""
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._factors.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        f = entry[1]
        if not isinstance(f, torch.Tensor):  # shared by a linear map: built on first use
            f = f()
            self._factors[id(t)] = (entry[0], f)
        return f

    def has_factor(self, t: Any) -> bool:
        """Whether ``t`` carries a factor (without building one that waits for its first use)."""
        entry = self._factors.get(id(t))
        return entry is not None and entry[0]() is t

    def bind_factor(
        self, t: torch.Tensor, f: torch.Tensor | Callable[[], torch.Tensor] | None
    ) -> None:
        """Record ``f`` as the factor of ``t`` (None: ``t`` is diagonal from here); a callable
        ``f`` builds it when it is first asked for."""
        self._untied.pop(id(t), None)  # a new value (an in-place op), or new sources
        if f is None:
            self._factors.pop(id(t), None)
            return
        self._factors[id(t)] = (weakref.ref(t), f)

    def padded(self, f: torch.Tensor, width: int) -> torch.Tensor:
        """``f`` with zero columns up to ``width`` sources."""
        return f if f.shape[-1] == width else torch_F.pad(f, (0, width - f.shape[-1]))

    def complete(
        self,
        func: Callable[..., Any],
        t: torch.Tensor,
        v: torch.Tensor,
        f: torch.Tensor | None,
        *,
        or_as_is: bool = False,
    ) -> torch.Tensor | None:
        """The factor of ``t`` with its unattributed variance made sources of its own.

        ``t`` is rebound to that factor, so that every later consumer of ``t`` (a skip
        connection beside the branch that consumed it first) shares those sources: a rule that
        carries ``t``'s unattributed variance into its output without naming it would make the
        two uses of ``t`` independent at their sum. Variances below ``TINY`` of a unit's
        (rounding) stay unattributed. None, named at ``func``, when the factor would exceed
        ``max_factor``; ``t`` is then left as it was. With ``or_as_is``, ``f`` is returned
        instead and the output carries ``t``'s own variance unnamed (as a conv map's, too
        wide to name, reaches the next linear map); a later use of ``t`` in a rule is then
        diagonal, named there, as it would be independent of this one.
        """
        e = _unattributed(v, f)
        new = (e > TINY * v).flatten(1).any(0)
        count = int(new.sum())
        if count == 0:
            return f
        units = t[0].numel()
        width = self.sources + count
        if units * width > self.max_factor:
            if or_as_is:
                # a later use of t would be independent of this one's: named there
                self._untied[id(t)] = weakref.ref(t)
                return f
            self.record(
                func,
                f"diagonal: a factor of {units} x {width} sources exceeds max_factor "
                f"{self.max_factor}",
            )
            return None
        # one allocation: the old factor's columns copied in, the new ones on the diagonal
        factor = t.new_zeros((*t.shape, width))
        if f is not None:
            factor[..., : f.shape[-1]] = f
        idx = torch.nonzero(new).squeeze(1)
        cols = torch.arange(self.sources, width, device=idx.device)
        sd = e.flatten(1)[:, idx].sqrt()
        factor.view(t.shape[0], units, width)[:, idx, cols] = sd
        self.named(t, self.sources, idx, sd)
        self.sources = width
        self.bind_factor(t, factor)
        return factor

    # -- a tensor's own variance handed on unnamed, tied back if the tensor is used again

    def pass_on(self, x: torch.Tensor, out: torch.Tensor, gain: float, e: torch.Tensor) -> None:
        """``out`` carries ``gain`` times ``x``'s unattributed variance ``e`` (among its own),
        unnamed: if ``x`` is used again, :meth:`tie` names ``x``'s share of the sources that
        ``out``'s unattributed variance has become by then. Saves a column per unit where
        ``x`` has one consumer (an element dropout's input, most of the time)."""
        cell: list[Any] = [None]
        self._cells[id(out)] = (weakref.ref(out), cell)
        assert not self.waiting(x)  # the rule names a waiting input's variance first
        self._passed[id(x)] = (weakref.ref(x), cell, weakref.ref(out), gain, e)

    def waiting(self, t: torch.Tensor) -> bool:
        """Whether ``t`` holds variance handed on to it unnamed (see :meth:`pass_on`)."""
        entry = self._cells.get(id(t))
        return entry is not None and entry[0]() is t

    def named(self, t: torch.Tensor, start: int, idx: torch.Tensor, sd: torch.Tensor) -> None:
        """``t``'s unattributed variance at units ``idx`` (flat) is now sources ``start...``
        with standard deviations ``sd`` ``[N, len(idx)]``."""
        entry = self._cells.pop(id(t), None)
        if entry is not None and entry[0]() is t:
            entry[1][0] = (start, idx, sd)

    def tie(self, func: Callable[..., Any], x: torch.Tensor) -> bool:
        """Before a second use of ``x`` whose variance was passed on: ``x``'s factor gets its
        covariance with those sources, ``gain e_i / sd_i`` at unit ``i``'s. False (nothing
        can be tied) when the factor would exceed ``max_factor``."""
        entry = self._passed.pop(id(x), None)
        if entry is None or entry[0]() is not x:
            return True
        _, cell, ref, gain, e = entry
        out = ref()
        if cell[0] is None and out is not None:  # not named yet: name it now
            v = self.var(out)
            if v is not None and self.complete(func, out, v, self.factor(out)) is None:
                return False
        if cell[0] is None:
            return False  # out is gone, its variance never named: x's share cannot be found
        start, idx, sd = cell[0]
        units = x[0].numel()
        if units * self.sources > self.max_factor:
            return False
        f = self.factor(x)
        factor = x.new_zeros((*x.shape, self.sources))
        if f is not None:
            factor[..., : f.shape[-1]] = f
        cols = torch.arange(start, start + idx.numel(), device=idx.device)
        share = gain * e.flatten(1)[:, idx] / sd.clamp_min(torch.finfo(sd.dtype).tiny)
        factor.view(x.shape[0], units, self.sources)[:, idx, cols] = share
        self.bind_factor(x, factor)
        return True

    def record(self, func: Callable[..., Any], form: str) -> None:
        """Name the form used at this call (once per module and op)."""
        where = self.module_name() or "<model>"
        self.forms.setdefault(f"{where} ({op_name(func)})", form)

    # -- dispatch: the diagonal rule first, then the factor rule on what it returned

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        leaves = _leaves(args, kwargs)
        before: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for a in leaves:
            if isinstance(a, torch.Tensor):
                v = self.var(a)
                if v is not None:
                    before[id(a)] = (v, a)  # the variance now (an in-place rule rebinds it)
        out = super().__torch_function__(func, types, args, kwargs)
        rule = FACTOR_RULES.get(func)
        if rule is None and function_spec(func) is not None and _DROPOUT_FACTOR:
            rule = _DROPOUT_FACTOR[0]  # dropout makes sources even from a fixed input
        elif not before:
            return out
        tensors = (
            [out]
            if isinstance(out, torch.Tensor)
            else [t for t in out if isinstance(t, torch.Tensor)]
            if isinstance(out, list | tuple)
            else []
        )
        if rule is None:
            factored = any(self.has_factor(a) for _, a in before.values())
            if factored and tensors:
                self.record(func, "diagonal: no covariance rule for this op")
                for t in tensors:
                    self.bind_factor(t, None)  # an in-place op keeps no stale factor
            return out

        def state(t: Any) -> _State:
            entry = before.get(id(t)) if isinstance(t, torch.Tensor) else None
            if entry is None:
                return None, None
            untied = self._untied.get(id(t))
            if (untied is not None and untied() is t) or (
                id(t) in self._passed and not self.tie(func, entry[1])
            ):
                raise _TooWide(entry[1][0].numel(), self.sources, again=True)
            f = self.factor(entry[1])
            if f is not None and entry[1][0].numel() * f.shape[-1] > self.max_factor:
                raise _TooWide(entry[1][0].numel(), f.shape[-1])
            return entry[0], f

        try:
            rule(self, func, args, kwargs, out, state)
        except _TooWide as wide:
            # an input's factor, shared by a linear map that consumed it first, is too big; or
            # an input used again whose own variance was too wide to share with its first use
            what = "used again, whose own variance" if wide.again else "whose factor"
            self.record(
                func,
                f"diagonal: an input {what} of {wide.units} units x {wide.width} sources "
                f"exceeds max_factor {self.max_factor}",
            )
            for t in tensors:
                self.bind_factor(t, None)
        return out


class _TooWide(Exception):
    def __init__(self, units: int, width: int, again: bool = False) -> None:
        super().__init__(units, width)
        self.units, self.width, self.again = units, width, again


def _unattributed(v: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    return v if f is None else (v - _energy(f)).clamp_min(0.0)


def _energy(f: torch.Tensor) -> torch.Tensor:
    """``sum(f^2, -1)``, the variance a factor accounts for: a norm reads ``f`` once, where
    ``f.square()`` would first write a temporary as large as ``f`` (most of the time)."""
    norm: torch.Tensor = torch.linalg.vector_norm(f, dim=-1)
    return norm.square()

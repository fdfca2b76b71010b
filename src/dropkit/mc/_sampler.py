"""The sampling mode: one forward that gives S Monte Carlo samples.

:class:`_Sampler` replicates the batch S times at the first stochastic op (or from the start
when the input is replicated), replicates tensors of the deterministic prefix when they are
first used after it, and runs batch-shared dropout once per sample block. It also sizes the
passes (:func:`samples_per_pass`). The strategies that run it, and when each applies, are in
:mod:`dropkit.mc._sampling`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit import functional as dk_F
from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._registry import call_shares_batch
from dropkit.kernels import CPU_DTYPES

__all__ = ["PREFIX_SHARE_ABOVE", "REPLICATED_ELEMENTS", "samples_per_pass"]


class _CannotShare(RuntimeError):
    """The prefix cannot be shared: replicate the input instead."""


class _NeedLoop(RuntimeError):
    """A mask shared over the batch where the batch cannot be split: one pass per sample."""


class _Measured(Exception):
    """Raised at the first stochastic op by a measuring run: the samples that fit one pass."""

    def __init__(self, samples: int) -> None:
        super().__init__(samples)
        self.samples = samples


#: On the CPU, at most this many elements of the first stochastic op's input are replicated in
#: one pass: S * N rows in one pass beyond that are slower per row than S passes of N (one
#: thread, Hugging Face BERT 256 wide, 8 sequences of 64 tokens, eval mode without dropout:
#: one pass of 160 sequences took 1.36x the time of 20 passes of 8, as the activations leave
#: the caches). The samples then run in groups, each group one pass; CUDA tensors run all S
#: in one pass.
REPLICATED_ELEMENTS = 1 << 18

#: ... but only where the prefix is cheap: when the prefix's ops produced more than this many
#: times the first stochastic op's input in elements (convolutions before a head's dropout),
#: computing it once is worth more than small passes, and all S run in one pass.
PREFIX_SHARE_ABOVE = 8


def samples_per_pass(samples: int, first: torch.Tensor, prefix_elements: int) -> int:
    """How many of ``samples`` one pass replicates: ``first`` is the first stochastic op's input
    (the N rows of one sample), ``prefix_elements`` the elements the ops before it produced.
    A function of shapes only, so the same call always makes the same groups."""
    size = max(1, first.numel())
    if first.is_cuda or prefix_elements > PREFIX_SHARE_ABOVE * size:
        return samples
    return max(1, min(samples, REPLICATED_ELEMENTS // size))


def _repeat(t: torch.Tensor, samples: int) -> torch.Tensor:
    """``t`` repeated ``samples`` times along dim 0, in ``t``'s memory order.

    Random masks are drawn in memory order, so the copy must be laid out as the tensor that
    the replicated input would have produced (a permuted activation stays permuted).
    """

    # Written as loops, without a function per dim: this runs inside every sampling pass.
    shape, strides, dims = t.shape, t.stride(), t.dim()
    ranks = []
    for d in range(dims):
        if d == 0 and shape[0] == 1:
            ranks.append((-1, 0, 0))  # a batch of one: outermost
        else:
            ranks.append((int(shape[d] == 1), -strides[d], d))  # other size-1 dims: innermost
    order = sorted(range(dims), key=ranks.__getitem__)
    reps = [1] * dims
    reps[order.index(0)] = samples
    back = [0] * dims
    for at, d in enumerate(order):
        back[d] = at
    return t.permute(order).repeat(reps).permute(back)


#: Argument values that cannot change after the call: a recorded one is the live one's equal.
_IMMUTABLE = frozenset(
    {int, float, complex, bool, str, bytes, type(None), type(...), torch.dtype, torch.device,
     torch.layout, torch.memory_format, torch.Size}
)  # fmt: skip


class _Unrecordable(Exception):
    """A call whose arguments or output a recording cannot keep as they are (a mutable object)."""


def _snapshot(value: object) -> object:
    """``value`` as the recording keeps it: lists and dicts copied (the model may mutate the
    live ones before the next pass, and the copy is what a later call is compared with),
    tensors and immutable values as they are; :class:`_Unrecordable` for anything else."""
    if isinstance(value, torch.Tensor) or type(value) in _IMMUTABLE:
        return value
    kind = type(value)
    if kind is tuple or kind is list:
        return kind(map(_snapshot, value))  # type: ignore[call-overload]
    if kind is dict:
        return {k: _snapshot(v) for k, v in value.items()}  # type: ignore[attr-defined]
    if kind is slice:
        return slice(*map(_snapshot, (value.start, value.stop, value.step)))  # type: ignore[attr-defined]
    raise _Unrecordable(kind.__name__)


def _immutable_output(out: object) -> bool:
    """Whether a replay may hand the recorded output itself to each pass: tensors (their
    in-place writes are caught by version counters), immutable values and tuples of them; not
    a list the model could append to, nor an iterator that the first pass exhausts."""
    if isinstance(out, torch.Tensor) or type(out) in _IMMUTABLE:
        return True
    return isinstance(out, tuple) and all(map(_immutable_output, out))


def _same(a: object, b: object) -> bool:
    """Whether the argument ``b`` of a call is the argument ``a`` recorded for it (a
    :func:`_snapshot`): the same tensor object (the recording holds it, so its id is not
    reused), else an equal value of the same type (0.0 and -0.0 differ)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or type(a) is not type(b):
        return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, slice) and isinstance(b, slice):
        return all(map(_same, (a.start, a.stop, a.step), (b.start, b.stop, b.step)))
    try:
        return bool(a == b) and (not isinstance(a, float) or str(a) == str(b))
    except Exception:  # a value without a truth value (an array): not known to be the same
        return False


def _tensors(out: object) -> list[torch.Tensor]:
    """The tensors of a call's output and of the tuples and lists in it."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for item in out for t in _tensors(item)]
    return []


def _versions(tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, int]] | None:
    """Each tensor with its version counter (bumped by every in-place write), or None where
    one has none (an inference-mode tensor)."""
    try:
        return [(t, t._version) for t in tensors]
    except RuntimeError:
        return None


class _Prefix:
    """The calls of the deterministic prefix, recorded in one pass and replayed in the next.

    When the samples run in several passes (:func:`samples_per_pass`), each pass would compute
    the prefix again on the same inputs: on the 40-256-128-10 MLP with 10,000 inputs, S = 20,
    that was a fifth of the time. The second pass records its prefix calls (the first cannot
    know yet that more passes follow, and keeping every output of a prefix that fills one pass
    would cost memory); later passes answer each call with its recorded output, if it is the
    same function on the same arguments (the same tensor objects, which the recording holds, and
    equal other values, compared with a copy taken at the call: a list the model mutates between
    passes is not the recorded one) and no tensor the call read or returned has been written in
    place since (a buffer the suffix updates, a recorded output written by a later pass). Nothing
    random runs in the prefix (a draw before the first stochastic op ends sharing), so a
    recomputed output would be equal. A call that differs ends the replay for that pass; a
    recording in which a call wrote into its arguments, or returned a list or an iterator, or took
    an argument of a type a copy cannot be trusted for, or one whose tensors keep no version
    counter (inference mode), is not replayed, nor one in which a tensor of it was written in
    place before the pass ended. A write that the version counters do not see (through
    ``.data`` or a NumPy view, which autograd's own checks miss too) is not caught.
    """

    def __init__(self) -> None:
        self.state = "new"  # -> "record" (a pass records) -> "replay" (or "off")
        #: function, arguments and keyword arguments (as :func:`_snapshot` s), output, and the
        #: version of every tensor the call read or returned
        self.calls: list[
            tuple[Callable[..., Any], Any, Any, Any, list[tuple[torch.Tensor, int]]]
        ] = []

    def begin(self) -> int:
        """Start a pass: the position of its next call (0), or -1 if it does not replay."""
        if self.state == "new":
            self.state = "record"
        return 0 if self.state == "replay" else -1

    def run(
        self, at: int, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, Any]:
        """A prefix call: its output, and the position of the pass's next call (-1: none)."""
        if at >= 0:
            if at < len(self.calls):
                f, a, k, out, versions = self.calls[at]
                if (
                    (f is func or f == func)  # a property's __get__ is a new object per call
                    and _same(a, args)
                    and _same(k, kwargs)
                    and all(t._version == v for t, v in versions)
                ):
                    return at + 1, out
            return -1, func(*args, **kwargs)
        if self.state != "record":
            return -1, func(*args, **kwargs)
        try:
            kept = _snapshot(args), _snapshot(kwargs)
        except _Unrecordable:
            kept = None
        inputs = _versions(_tensors((args, tuple(kwargs.values()))))
        out = func(*args, **kwargs)
        outputs = _versions(_tensors(out))
        if (
            kept is None
            or inputs is None
            or outputs is None
            or any(t._version != v for t, v in inputs)  # the call wrote into an argument
            or not _immutable_output(out)
        ):
            self.state = "off"
        else:
            self.calls.append((func, *kept, out, inputs + outputs))
        return -1, out

    def end(self) -> None:
        """End a pass: after the recording one, keep it if nothing recorded changed since."""
        if self.state == "record":
            unchanged = all(t._version == v for c in self.calls for t, v in c[4])
            self.state = "replay" if unchanged and self.calls else "off"
        if self.state == "off":
            self.calls = []


class _Sampler(InterceptMode):
    """Runs one forward for S samples: replicates the batch at the first stochastic op (or from
    the start with ``replicate``), and runs batch-shared dropout once per sample block."""

    def __init__(
        self,
        samples: int,
        batch: int,
        *,
        replicate: bool,
        group: str = "fixed",
        prefix: _Prefix | None = None,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self._at = prefix.begin() if prefix is not None else -1  # the next replayed call
        self.samples, self.batch = samples, batch
        self.started = replicate
        self.replicate = replicate
        # "fixed": replicate ``samples`` times; "fit": at most what one pass holds
        # (:func:`samples_per_pass`, ``samples`` is then updated); "measure": raise
        # :class:`_Measured` with that number at the first stochastic op.
        self.group = group
        self.prefix_elements = 0  # elements produced by the ops before the first stochastic op
        self._busy = False  # inside our own repeat: let torch calls through untouched
        self._before: dict[int, weakref.ref[torch.Tensor]] = {}
        self._copies: dict[int, torch.Tensor] = {}
        # What the prefix must leave as it is: a function that draws without being registered
        # as random (F.gumbel_softmax, F.rrelu with training=True) would give all samples of a
        # pass one draw, and a replayed prefix would give every pass the recorded one.
        # Read here and compared at the first stochastic op without a function of ours: this
        # runs in every pass. CUDA's generators only once CUDA is initialized.
        self._rng = None if replicate else torch.get_rng_state()
        self._cuda_rng = (
            torch.cuda.get_rng_state_all()
            if self._rng is not None and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
            else None
        )

    # ------------------------------------------------------------------ the prefix's tensors

    def remember(self, out: object) -> None:
        """Note the tensors of a call's output (and of tuples/lists in it) as computed before
        the first stochastic op. An entry outlives its tensor (the sampler lives one pass): a
        new tensor given the same id is told apart by the weak reference."""
        if isinstance(out, torch.Tensor):
            self._before[id(out)] = weakref.ref(out)
            return
        items = out.values() if isinstance(out, Mapping) else out
        if isinstance(out, Mapping | list | tuple):
            for item in items:  # type: ignore[attr-defined]
                if isinstance(item, torch.Tensor):
                    self._before[id(item)] = weakref.ref(item)
                elif isinstance(item, Mapping | list | tuple):
                    self.remember(item)

    def _replicate(self, t: torch.Tensor) -> torch.Tensor:
        copy = self._copies.get(id(t))
        if copy is None:
            self._busy = True
            try:
                copy = _repeat(t, self.samples)
            finally:
                self._busy = False
            self._copies[id(t)] = copy
        return copy

    def _map(self, t: Any) -> Any:
        """A tensor computed before the first stochastic op, replicated; anything else as is."""
        if isinstance(t, torch.Tensor):
            ref = self._before.get(id(t))
            if ref is not None and ref() is t and t.dim() > 0 and t.shape[0] == self.batch:
                return self._replicate(t)
        elif isinstance(t, list | tuple) and t:
            mapped = [self._map(item) for item in t]
            if any(a is not b for a, b in zip(mapped, t, strict=True)):
                return type(t)(mapped) if isinstance(t, list) else tuple(mapped)
        return t

    def map_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with pre-prefix tensors replicated (cheap when none is among
        them: the check runs in this frame, without a call per argument)."""
        before = self._before
        for a in (*args, *kwargs.values()):
            ref = before.get(id(a))  # an id can be a dead tensor's: the reference tells
            if (ref is not None and ref() is a) or isinstance(a, list | tuple):
                break
        else:
            return args, kwargs
        args = tuple([self._map(a) if isinstance(a, torch.Tensor | list | tuple) else a
                      for a in args])  # fmt: skip
        for v in kwargs.values():
            if isinstance(v, torch.Tensor | list | tuple):
                kwargs = {k: self._map(v) for k, v in kwargs.items()}
                break
        return args, kwargs

    def _start(self, first: object, where: str) -> None:
        if not isinstance(first, torch.Tensor) or first.dim() == 0:
            raise _CannotShare(f"the first stochastic op ({where}) has no batched tensor input")
        if first.shape[0] != self.batch:
            raise _CannotShare(
                f"the input of the first stochastic op ({where}) has shape "
                f"{tuple(first.shape)}, whose dim 0 is not the batch ({self.batch})"
            )
        if self._rng is not None and self.group != "measure":  # a measure needs only shapes
            self._busy = True  # the comparisons are torch calls
            try:
                drew = not torch.equal(self._rng, torch.get_rng_state()) or (
                    self._cuda_rng is not None
                    and not all(map(torch.equal, self._cuda_rng, torch.cuda.get_rng_state_all()))
                )
            finally:
                self._busy = False
            if drew:
                raise _CannotShare(
                    f"the random generator advanced before the first stochastic op ({where}): "
                    "a function that draws ran in the prefix"
                )
        if self.group != "fixed":
            fit = samples_per_pass(self.samples, first, self.prefix_elements)
            if self.group == "measure":
                raise _Measured(fit)
            self.samples = fit
        self.started = True

    # ------------------------------------------------------------------ modules

    def module_start(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Forward pre-hook of a module whose stochastic call the mode cannot see alone."""
        if self.replicate:
            return None
        if not self.started:
            where = type(module).__name__
            if isinstance(module, nn.RNNBase | nn.MultiheadAttention) and not module.batch_first:
                raise _CannotShare(f"{where} has batch_first=False: its batch is not dim 0")
            if isinstance(module, nn.RNNBase) and (len(args) > 1 or kwargs):
                raise _CannotShare(f"{where} is given an initial state, batched in dim 1")
            self._start(args[0] if args else next(iter(kwargs.values()), None), where)
        return self.map_call(args, kwargs)

    # ------------------------------------------------------------------ torch calls

    def dropout(self, call: DropoutCall) -> Any:
        if self._busy or not call.active:
            return self.other(call.func, call.types, call.args, call.kwargs)
        spec, args, kwargs = call.spec, call.args, call.kwargs
        if spec.sharing == "batch":  # a mask on weights: no batch to split
            raise _NeedLoop(f"{spec.name} draws one mask for the whole batch")
        if not self.started:
            if spec.module_level:
                raise _CannotShare(f"{spec.name} was called outside its module")
            self._start(args[0], spec.name)
        if not self.replicate and not (
            # One sample a pass: a prefix tensor's copy would only guard it against writes,
            # and torch's dropout of a contiguous tensor, not in place, draws the same mask
            # on the tensor as on its copy without writing it.
            self.samples == 1
            and call.func is torch_F.dropout
            and not (args[3] if len(args) > 3 else kwargs.get("inplace", False))
            and type(x := args[0] if args else kwargs.get("input")) is torch.Tensor
            and x.is_contiguous()
        ):
            args, kwargs = self.map_call(args, kwargs)
        # "batch" raised above; only "argument" (noise_shape=, mode=) decides per call
        if spec.sharing == "argument" and call_shares_batch(spec, args, kwargs):
            return self._per_sample(call.func, spec.name, args, kwargs)
        if call.func is torch_F.dropout:  # the call every nn.Dropout makes
            # Run by dropkit's kernel where it can: the same distribution (each element kept
            # with probability 1 - p, scaled by 1 / (1 - p)), drawn by Philox instead of
            # torch's CPU generator, which is most of a pass over S * N rows (mc.predict on
            # the MLP 40-256-128-10, 2,000 inputs, S = 20: 0.80 s of 1.24 s in torch.dropout,
            # one thread). Its seed comes from torch's global generator, as torch's draw does:
            # seed= and torch.manual_seed repeat the samples, each call without draws anew.
            # The seed is drawn here and passed explicitly: dropkit's own draw folds in the
            # rank under torch.distributed, and mc.predict(seed=s) must give every rank the
            # same samples, as torch's dropout does. Checked here, not in a helper: this runs
            # at every dropout of every pass.
            x, p = args[0] if args else kwargs.get("input"), call.rate
            if type(x) is torch.Tensor and x.is_cpu and x.dtype in CPU_DTYPES and 0.0 < p < 1.0:
                inplace = bool(args[3] if len(args) > 3 else kwargs.get("inplace", False))
                seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
                return dk_F.dropout(x, p, True, inplace, seed=seed)
        return call.func(*args, **kwargs)

    def random_draw(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self._busy and not self.started:
            raise _CannotShare(f"a random draw ({func.__name__}) ran before any dropout")
        return self.other(func, types, args, kwargs)

    def other(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._busy:
            return func(*args, **kwargs)
        if not self.started:
            if self.prefix is None:
                out = func(*args, **kwargs)
            else:
                self._at, out = self.prefix.run(self._at, func, args, kwargs)
            if isinstance(out, torch.Tensor):  # remember(out), without a call for a tensor
                self._before[id(out)] = weakref.ref(out)
                self.prefix_elements += out.numel()
            else:
                self.remember(out)
            return out
        if not self.replicate:
            # map_call's own check, here too: a call with nothing to replicate costs no call
            before = self._before
            for a in (*args, *kwargs.values()):
                ref = before.get(id(a))
                if (ref is not None and ref() is a) or isinstance(a, list | tuple):
                    args, kwargs = self.map_call(args, kwargs)
                    break
        return func(*args, **kwargs)

    def _per_sample(
        self, func: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """A mask shared over the batch: one call per block of N rows (one MC sample each)."""
        x = args[0]
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() == 0
            or x.shape[0] != self.samples * self.batch
        ):
            raise _NeedLoop(f"{name} shares one mask over a batch that is not dim 0")
        blocks = [func(block, *args[1:], **kwargs) for block in torch.split(x, self.batch)]
        out = torch.cat(blocks)
        inplace = args[3] if len(args) > 3 else kwargs.get("inplace", False)
        if inplace:
            return x.copy_(out)
        return out

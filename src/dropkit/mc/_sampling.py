"""``predict``: Monte Carlo dropout samples, computing the deterministic prefix once.

Everything a network computes before its first stochastic operation is the same in all S
passes. The shared-prefix strategy runs the forward once on the N inputs and, at the first
stochastic op, replicates that op's inputs S times along the batch, so only the rest of the
network runs on S * N rows. Tensors computed before that point and used after it (skip
connections, attention masks) are replicated when first used. Replicating the same tensors with
the same seed is what replicating the input would have done, so both strategies give the same
samples.

Any stochastic op ends the prefix: a registered dropout function (torch's, dropkit's,
``scaled_dot_product_attention`` with ``dropout_p > 0``), seen by a ``TorchFunctionMode``; and,
seen by a forward pre-hook, a module whose stochastic call sits inside a larger function
(``nn.MultiheadAttention``, ``nn.LSTM``/``GRU``/``RNN`` with ``dropout``) or is a raw random draw
(timm's ``DropPath``, torchvision's ``StochasticDepth``, LayerDrop). The batch must be dim 0 of
every input tensor and of every tensor that carries it; where sharing is not possible (an error,
an output whose dim 0 is not S * N, a module with ``batch_first=False``) the input is replicated
instead, and :attr:`MCResult.strategy` says why.

On the CPU the S samples run in groups when S copies of the first stochastic op's input would
exceed :data:`REPLICATED_ELEMENTS` (2^18 elements) and the prefix is cheap (its ops produced at
most :data:`PREFIX_SHARE_ABOVE` times that input's elements): one pass per group, the prefix
computed once per pass. Both strategies group alike, so they give the same samples for a seed.

A mask shared over the whole batch (``WeightDrop``, ``EmbeddingDropout``, ``DropPath(mode=
"batch")``, a ``noise_shape`` with 1 in dim 0) would give S identical samples once the batch is
replicated: a function call of that kind runs once per sample block of N rows, and a module of
that kind makes ``predict`` run S separate passes (strategy ``"loop"``).
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from dropkit import functional as dk_F
from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._output import OutputSelector, model_output
from dropkit._registry import call_shares_batch, function_specs, layer_rate, layer_shares_batch
from dropkit.mc._consistent import ConsistentMasks, ConsistentSampler, OnePassPerNetwork
from dropkit.mc._discover import RANDOM, Discovery
from dropkit.mc._mode import disable_mc, mc_state
from dropkit.mc._result import MCResult

__all__ = [
    "PREFIX_SHARE_ABOVE",
    "REPLICATED_ELEMENTS",
    "Inputs",
    "predict_sampling",
    "samples_per_pass",
]

Inputs = torch.Tensor | Sequence[Any] | Mapping[str, Any]


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


#: The dtypes dropkit's CPU kernels draw element-wise masks for.
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class _Sampler(InterceptMode):
    """Runs one forward for S samples: replicates the batch at the first stochastic op (or from
    the start with ``replicate``), and runs batch-shared dropout once per sample block."""

    def __init__(self, samples: int, batch: int, *, replicate: bool, group: str = "fixed") -> None:
        super().__init__()
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
        if not self.replicate:
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
            # Checked here, not in a helper: this runs at every dropout of every pass.
            x, p = args[0] if args else kwargs.get("input"), call.rate
            if type(x) is torch.Tensor and x.is_cpu and x.dtype in _KERNEL_DTYPES and 0.0 < p < 1.0:
                inplace = bool(args[3] if len(args) > 3 else kwargs.get("inplace", False))
                return dk_F.dropout(x, p, True, inplace)
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
            out = func(*args, **kwargs)
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


# ---------------------------------------------------------------------- inputs and outputs


def _as_call(inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, list | tuple):
        return tuple(inputs), {}
    raise TypeError(
        "predict: expected inputs to be a tensor, a tuple of positional inputs or a dict of "
        f"keyword inputs, got {type(inputs).__name__}"
    )


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for leaf in tree_flatten((args, kwargs))[0]:
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0:
            return int(leaf.shape[0])
    raise ValueError("predict: expected inputs with at least one tensor with the batch in dim 0")


def _batch_map(
    args: tuple[Any, ...], kwargs: dict[str, Any], n: int, fn: Callable[[torch.Tensor], Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Apply ``fn`` to every input tensor whose dim 0 is the batch ``n``."""

    def one(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0 and leaf.shape[0] == n:
            return fn(leaf)
        return leaf

    mapped: tuple[tuple[Any, ...], dict[str, Any]] = tree_map(one, (args, kwargs))
    return mapped


# ---------------------------------------------------------------------- strategies


def _module_starts(found: Discovery, level: str) -> list[nn.Module]:
    """Switched-on modules whose forward pre-hook ends the prefix.

    ``"function"``: only those whose stochastic call the mode cannot see alone (inside MHA and
    RNN functions, raw random draws); the prefix then ends at the dropout call itself.
    ``"module"``: also every other module whose own forward issues dropout (an attention
    module reads its input's shape before it calls ``scaled_dot_product_attention``).
    """
    starts = []
    module_level = {spec.name for spec in function_specs().values() if spec.module_level}
    registered: set[nn.Module] | None = None
    for module, calls in found.calls.items():
        for call in calls:
            if call in module_level or call.startswith(RANDOM):
                starts.append(module)
                break
        else:
            if level == "module" and module is not found.root:
                if registered is None:
                    registered = {m for m in found.on if layer_rate(m) is not None}
                if module not in registered:
                    starts.append(module)
    return starts


def _run(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    samples: int,
    found: Discovery,
    output: OutputSelector,
    *,
    replicate: bool,
    level: str = "function",
    group: str = "fixed",
) -> torch.Tensor:
    """``[s, N, ...]`` samples of one pass: ``s = samples``, or fewer with ``group="fit"``."""
    n = _batch_size(args, kwargs)
    sampler = _Sampler(samples, n, replicate=replicate, group=group)
    handles = []
    if replicate:
        args, kwargs = _batch_map(args, kwargs, n, sampler._replicate)
    else:
        sampler.remember((*args, *kwargs.values()))
        handles = [
            m.register_forward_pre_hook(sampler.module_start, with_kwargs=True)
            for m in _module_starts(found, level)
        ]
    try:
        with sampler:
            out = model_output(model(*args, **kwargs), output, where="predict")
    finally:
        for handle in handles:
            handle.remove()
    if not sampler.started:
        raise _CannotShare("no stochastic operation ran")
    samples = sampler.samples
    if out.dim() == 0 or out.shape[0] != samples * n:
        raise _CannotShare(f"the output's dim 0 is {out.shape[0] if out.dim() else None}")
    return out.reshape(samples, n, *out.shape[1:])


def _measure(
    model: nn.Module, part: tuple[tuple[Any, ...], dict[str, Any]], samples: int, found: Discovery
) -> int:
    """Samples per pass for the replicating strategy: the prefix runs up to the first
    stochastic op (nothing random runs before it) and stops there; all if it cannot tell."""
    rng = torch.get_rng_state()
    try:
        _run(model, *part, samples, found, None, replicate=False, group="measure")
    except _Measured as measured:
        return measured.samples
    except (_CannotShare, _NeedLoop, RuntimeError):
        pass
    finally:
        torch.set_rng_state(rng)
    return samples


def _groups(first: torch.Tensor, samples: int, run: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """``first`` (the first pass's samples) and passes of as many for the rest, stacked."""
    done = [first]
    count, per_pass = first.shape[0], first.shape[0]
    while count < samples:
        more = run(min(per_pass, samples - count))
        done.append(more)
        count += more.shape[0]
    return torch.cat(done) if len(done) > 1 else first


def _sample(
    model: nn.Module,
    part: tuple[tuple[Any, ...], dict[str, Any]],
    samples: int,
    found: Discovery,
    output: OutputSelector,
    share_prefix: bool,
) -> tuple[torch.Tensor | None, str]:
    """Samples by the first strategy that works (None: loop), and the strategy's description.

    The prefix ends at the first dropout call, else at the start of the module that issues
    it, else the input is replicated; the level that worked is remembered for the model. Each
    failed try restores the RNG, so every strategy draws the same masks.
    """
    rng = torch.get_rng_state()
    known = found.memo.get("prefix_level")
    levels = [known] if known else ["function", "module"]
    reason = ""
    for level in levels if share_prefix else []:
        try:
            first = _run(
                model, *part, samples, found, output, replicate=False, level=level, group="fit"
            )
            out = _groups(
                first,
                samples,
                lambda s, level=level: _run(  # type: ignore[misc]
                    model, *part, s, found, output, replicate=False, level=level
                ),
            )
        except _NeedLoop as error:
            torch.set_rng_state(rng)
            return None, f"loop ({error}: one pass per sample)"
        except (_CannotShare, RuntimeError) as error:
            torch.set_rng_state(rng)
            reason = reason or str(error)
            continue
        found.memo["prefix_level"] = level
        return out, "shared-prefix"
    try:
        per_pass = _measure(model, part, samples, found)
        out = _groups(
            _run(model, *part, per_pass, found, output, replicate=True),
            samples,
            lambda s: _run(model, *part, s, found, output, replicate=True),
        )
    except _NeedLoop as error:
        torch.set_rng_state(rng)
        return None, f"loop ({error}: one pass per sample)"
    except _CannotShare as error:
        raise ValueError(f"predict: {error}") from None
    if share_prefix:
        return out, f"replicate (shared prefix not possible: {reason})"
    return out, "replicate"


def _loop(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    samples: int,
    output: OutputSelector,
) -> torch.Tensor:
    return torch.stack(
        [model_output(model(*args, **kwargs), output, where="predict") for _ in range(samples)]
    )


def _consistent(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    masks: ConsistentMasks,
    output: OutputSelector,
) -> tuple[torch.Tensor, str]:
    """``[S, N, ...]`` samples of the networks of ``masks`` and the strategy: one pass on the
    input replicated S times, each stochastic call answered with its kept masks, or one pass per
    network where a mask cannot be applied to all networks' rows at once."""
    n, s = _batch_size(args, kwargs), masks.samples
    try:
        copies = _batch_map(args, kwargs, n, lambda t: t.repeat(s, *[1] * (t.dim() - 1)))
        with ConsistentSampler(masks, None, n):
            out = model_output(model(*copies[0], **copies[1]), output, where="predict")
        if out.dim() > 0 and out.shape[0] == s * n:
            return out.reshape(s, n, *out.shape[1:]), "consistent"
        why = f"the output's dim 0 is {out.shape[0] if out.dim() else None}, not S * N"
    except (OnePassPerNetwork, RuntimeError) as error:
        why = str(error)
    # Masks drawn before the failure are kept, and used again; an in-place dropout must not
    # write into the caller's tensors.
    outs = []
    for sample in range(s):
        fresh = _batch_map(args, kwargs, n, torch.clone)
        with ConsistentSampler(masks, sample, n):
            outs.append(model_output(model(*fresh[0], **fresh[1]), output, where="predict"))
    return torch.stack(outs), f"consistent (one pass per network: {why})"


def predict_sampling(
    model: nn.Module,
    inputs: Inputs,
    samples: int,
    *,
    batch_size: int | None,
    share_prefix: bool,
    seed: int | None,
    output: OutputSelector,
    last_layer: bool,
    masks: ConsistentMasks | None,
) -> MCResult:
    """:func:`dropkit.mc.predict` with ``method="sampling"``, its arguments checked: see there
    and the notes of this module."""
    args, kwargs = _as_call(inputs)
    n = _batch_size(args, kwargs)
    chunk = batch_size or max(1, n)
    outputs: list[torch.Tensor] = []
    strategy = ""
    devices = []
    for t in tree_flatten((args, kwargs))[0]:
        if isinstance(t, torch.Tensor) and t.is_cuda and (t.device.index or 0) not in devices:
            devices.append(t.device.index or 0)
    devices.sort()
    # Without a seed the masks come from torch's global generator and advance it, as torch's
    # own random ops do: every call gives fresh samples. With one, the global generator is
    # forked, so the call repeats exactly and leaves the caller's stream where it was.
    rng = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():
        # Discovery switches on all that must run before the first pass.
        state = mc_state(model, last_layer=last_layer)
        try:
            for start in range(0, n, chunk):
                part = _batch_map(args, kwargs, n, operator.itemgetter(slice(start, start + chunk)))
                found = state.discover(*part, "predict")
                if start == 0 and seed is not None:
                    torch.manual_seed(seed)
                if last_layer and not found.on:
                    raise ValueError(
                        f"predict: last_layer=True, but no stochastic module of "
                        f"{found.model_name} can be switched on (see the warnings above)"
                    )
                shared = [found.name(m) for m in found.on if layer_shares_batch(m)]
                out = None
                if masks is not None:
                    out, strategy = _consistent(model, *part, masks, output)
                elif shared:
                    strategy = (
                        f"loop (one mask over the batch in '{shared[0]}': one pass per sample)"
                    )
                else:
                    out, strategy = _sample(model, part, samples, found, output, share_prefix)
                if out is None:
                    out = _loop(model, *part, samples, output)
                outputs.append(out)
        finally:
            disable_mc(state)
    return MCResult(torch.cat(outputs, dim=1), strategy)

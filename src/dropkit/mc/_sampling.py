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
exceed :data:`~dropkit.mc._sampler.REPLICATED_ELEMENTS` (2^18 elements) and the prefix is cheap
(its ops produced at most :data:`~dropkit.mc._sampler.PREFIX_SHARE_ABOVE` times that input's
elements): one pass per group (:func:`~dropkit.mc._sampler.samples_per_pass`). Both
strategies group alike, so they give the same samples for a seed. The passes after the first
do not compute the prefix again: the second records its calls and the rest are answered from
the record (:class:`~dropkit.mc._sampler._Prefix`, which says when it is not).

A mask shared over the whole batch (``WeightDrop``, ``EmbeddingDropout``, ``DropPath(mode=
"batch")``, a ``noise_shape`` with 1 in dim 0) would give S identical samples once the batch is
replicated: a function call of that kind runs once per sample block of N rows, and a module of
that kind makes ``predict`` run S separate passes (strategy ``"loop"``).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from dropkit._output import OutputSelector, model_output
from dropkit._registry import function_specs, layer_rate, layer_shares_batch
from dropkit.mc._consistent import ConsistentMasks, ConsistentSampler, OnePassPerNetwork
from dropkit.mc._discover import RANDOM, Discovery
from dropkit.mc._inputs import Inputs, _as_call, _batch_map, _batch_size
from dropkit.mc._mode import disable_mc, mc_state
from dropkit.mc._result import MCResult
from dropkit.mc._sampler import _CannotShare, _Measured, _NeedLoop, _Prefix, _Sampler

__all__ = ["predict_sampling"]


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
    prefix: _Prefix | None = None,
) -> torch.Tensor:
    """``[s, N, ...]`` samples of one pass: ``s = samples``, or fewer with ``group="fit"``;
    ``prefix`` records the prefix's calls or replays them (:class:`~._sampler._Prefix`)."""
    n = _batch_size(args, kwargs)
    sampler = _Sampler(samples, n, replicate=replicate, group=group, prefix=prefix)
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
        if prefix is not None:
            prefix.end()
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


def _groups(
    first: torch.Tensor, samples: int, run: Callable[[int, _Prefix | None], torch.Tensor]
) -> torch.Tensor:
    """``first`` (the first pass's samples) and passes of as many for the rest, stacked; the
    passes after the first share a :class:`~._sampler._Prefix`."""
    done = [first]
    count, per_pass = first.shape[0], first.shape[0]
    prefix = _Prefix() if count < samples else None
    while count < samples:
        more = run(min(per_pass, samples - count), prefix)
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
                lambda s, prefix, level=level: _run(  # type: ignore[misc]
                    model, *part, s, found, output, replicate=False, level=level, prefix=prefix
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
            lambda s, _: _run(model, *part, s, found, output, replicate=True),
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

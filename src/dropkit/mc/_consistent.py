"""``ConsistentMasks``: S dropout networks drawn once and kept, for Monte Carlo over a data set.

Plain Monte Carlo dropout draws new masks for every batch, so two inputs predicted in different
batches never see the same S networks. Scores that compare samples across inputs (BatchBALD's
joint entropies, Kirsch et al. 2019, https://arxiv.org/abs/1906.08158; any disagreement measured
network by network) need sample s of every input to come from one network s. A
:class:`ConsistentMasks` holds those S networks: passed to :func:`dropkit.mc.predict` as
``masks=``, each stochastic call of the model is answered with the mask of network s that was
drawn for it the first time it ran (the k-th stochastic call of a forward has its own S masks,
per input shape), shared by every row of every batch.

A mask is drawn by the call's own function on ones, one network at a time, so every variant
keeps its semantics (element, channel, whole-sample, block, weight masks); ops whose noise is not
a mask multiplying their input (alpha dropout, fused attention, RNN and multi-head attention
dropout) and raw random draws outside any dropout function raise, naming the op.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._registry import FunctionSpec, variant

__all__ = ["ConsistentMasks", "ConsistentSampler", "OnePassPerNetwork"]


class ConsistentMasks:
    """S dropout networks, drawn once and kept across :func:`dropkit.mc.predict` calls.

    Pass it as ``predict(model, x, masks=masks)``: sample s of every input, in every batch and
    every call, comes from the same network s (each dropout mask shared by all rows), as
    BatchBALD needs. :meth:`reset` draws new networks at the next use.

    Args:
        samples: the number of networks S (``predict`` returns that many samples).
        seed: draws every mask from this seed (each stochastic call's from its own stream), so
            two ``ConsistentMasks`` with one seed are the same networks. Default: drawn from
            torch's global RNG the first time each call runs.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5),
        ...                             torch.nn.Linear(8, 2))
        >>> masks = mc.ConsistentMasks(10, seed=0)
        >>> x = torch.randn(6, 4)
        >>> whole = mc.predict(model, x, masks=masks).samples
        >>> parts = [mc.predict(model, x[:2], masks=masks).samples,
        ...          mc.predict(model, x[2:], masks=masks).samples]
        >>> torch.allclose(whole, torch.cat(parts, dim=1))  # the same 10 networks
        True
    """

    def __init__(self, samples: int, *, seed: int | None = None) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(
                f"ConsistentMasks: expected samples to be a positive int, got {samples!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"ConsistentMasks: expected seed to be an int or None, got {seed!r}")
        self.samples = samples
        self.seed = seed
        # (k, function, shape drawn on, dtype, device) -> [S, *shape] masks
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}
        self._shapes: dict[int, tuple[Any, ...]] = {}  # k -> the first key seen at k

    def reset(self) -> None:
        """Forget the networks: the next use draws S new ones."""
        self._masks.clear()
        self._shapes.clear()

    def __repr__(self) -> str:
        return (
            f"ConsistentMasks(samples={self.samples}, seed={self.seed}, calls={len(self._masks)})"
        )

    def mask(
        self,
        k: int,
        func: Callable[..., Any],
        spec: FunctionSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        batch: int,
    ) -> torch.Tensor:
        """``[S, ...]`` masks of the k-th stochastic call of a forward (drawn on first use);
        ``batch`` is the number of rows its input must have in dim 0 (unless it is a weight)."""
        not_a_mask = variant(spec.variant).not_a_mask
        if not_a_mask is not None:
            raise ValueError(
                f"predict: masks= cannot keep the masks of {spec.name}: {not_a_mask}; use "
                "predict without masks= for this model"
            )
        x = args[0]
        weights = spec.sharing == "batch"  # a mask on a weight: drawn on the weight's shape
        if not weights and (x.dim() == 0 or x.shape[0] != batch):
            raise ValueError(
                f"predict: masks= needs the batch in dim 0 of every dropout input; {spec.name} "
                f"got shape {tuple(x.shape)} for {batch} rows"
            )
        shape = tuple(x.shape) if weights else (1, *x.shape[1:])
        rate = spec.rate(args, kwargs)  # masks drawn at one rate are not those of another
        key = (k, spec.name, shape, x.dtype, x.device, rate)
        masks = self._masks.get(key)
        if masks is None:
            first = self._shapes.setdefault(k, key)
            if first != key:
                warnings.warn(
                    f"predict: masks=: stochastic call {k} of the forward first ran as "
                    f"{first[1]} on {first[2]} ({first[3]}, p={first[5]}), now as {spec.name} "
                    f"on {shape} ({x.dtype}, p={rate}); new masks are drawn for it, so these "
                    "inputs do not share the networks with the earlier ones",
                    RuntimeWarning,
                    stacklevel=4,
                )
            masks = self._draw(k, func, args, kwargs, shape, x)
            self._masks[key] = masks
        return masks

    def _draw(
        self,
        k: int,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        shape: tuple[int, ...],
        x: torch.Tensor,
    ) -> torch.Tensor:
        # The call's own seed= would give all S networks one mask: the networks' draws replace it.
        options = {name: value for name, value in kwargs.items() if name != "seed"}

        def draw() -> torch.Tensor:
            ones = [torch.ones(shape, dtype=x.dtype, device=x.device) for _ in range(self.samples)]
            return torch.stack([func(one, *args[1:], **options) for one in ones])

        if self.seed is None:
            return draw()
        devices = [x.device.index or 0] if x.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(hash((self.seed, k, shape)) & 0x7FFF_FFFF_FFFF_FFFF)
            return draw()


class OnePassPerNetwork(RuntimeError):
    """A mask that cannot be applied to the S networks' rows at once (a mask on a weight)."""


class ConsistentSampler(InterceptMode):
    """One forward with the kept masks: every stochastic call multiplied by its mask; a random
    draw outside any dropout function raises.

    With ``sample=None`` the input holds all S networks' copies of the batch, network by network
    (S blocks of ``batch`` rows), and each call gets its S masks at once; otherwise the forward
    is network ``sample`` alone.
    """

    def __init__(self, masks: ConsistentMasks, sample: int | None, batch: int) -> None:
        super().__init__()
        self.masks, self.sample, self.batch = masks, sample, batch
        self.calls = 0

    def dropout(self, call: DropoutCall) -> Any:
        if not call.active:
            return call.run()
        spec, args, kwargs = call.spec, call.args, call.kwargs
        k, self.calls = self.calls, self.calls + 1
        x = args[0]
        weights = spec.sharing == "batch"
        if self.sample is None and weights:
            raise OnePassPerNetwork(f"{spec.name} masks a weight, not rows")
        rows = self.batch * (self.masks.samples if self.sample is None else 1)
        masks = self.masks.mask(k, call.func, spec, args, kwargs, rows)
        if self.sample is not None:
            out = x * masks[self.sample]
        else:  # [S * N, ...] rows times [S, 1, ...] masks
            n = self.batch
            out = (x.reshape(-1, n, *x.shape[1:]) * masks).reshape(x.shape)
        inplace = spec.name.endswith("_") or bool(
            args[3] if len(args) > 3 else kwargs.get("inplace", False)
        )
        return x.copy_(out) if inplace and not weights else out

    def random_draw(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        raise ValueError(
            f"predict: masks= cannot keep a random draw ({getattr(func, '__name__', func)}) "
            "made outside any dropout function dropkit knows (timm's or torchvision's "
            "stochastic depth, LayerDrop...): convert the model with dropkit.convert first, "
            "or use predict without masks="
        )

"""``predict_moments``: one forward pass under :class:`Propagation`, and its result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dropkit.mc._mode import disable_mc, enable_mc
from dropkit.mc._moments._mode import SAMPLING_HINT, Propagation
from dropkit.mc._regression import RegressionPrediction, from_moments
from dropkit.mc._result import MCResult

__all__ = ["MomentResult", "predict_moments"]


@dataclass(frozen=True)
class MomentResult(MCResult):
    """:class:`MCResult` of moment propagation: the output's Gaussian, and draws from it.

    ``output_mean`` and ``output_variance`` (``[N, ...]``) are the propagated moments, returned
    by :attr:`mean` and :attr:`variance`. ``samples`` (``[S, N, ...]``) are draws from
    ``N(output_mean, output_variance)``, independent per output, from which the classification
    scores (:attr:`probs`, entropies, mutual information, variation ratio) are computed exactly
    as for Monte Carlo samples.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                             torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
        >>> result = mc.predict(model, torch.randn(5, 4), method="moments", seed=0)
        >>> result.mean.shape, result.variance.shape, result.samples.shape
        (torch.Size([5, 3]), torch.Size([5, 3]), torch.Size([30, 5, 3]))
        >>> result.strategy, result.probs.shape
        ('moments', torch.Size([5, 3]))
    """

    output_mean: torch.Tensor
    output_variance: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """``[N, ...]`` the propagated mean of the outputs (regression: the prediction)."""
        return self.output_mean

    @property
    def variance(self) -> torch.Tensor:
        """``[N, ...]`` the propagated variance of the outputs (diagonal)."""
        return self.output_variance

    def regression(
        self,
        tau: float | None = None,
        *,
        heteroscedastic: bool = False,
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> RegressionPrediction:
        """As :meth:`MCResult.regression`, from the propagated Gaussian: its log-likelihood
        is the Gaussian's (with the noise added to the propagated variance), not a mixture's;
        a heteroscedastic head's noise is the log-normal mean ``exp(m + v / 2)`` of its
        log-variance output."""
        return from_moments(
            self.output_mean,
            self.output_variance,
            tau,
            heteroscedastic=heteroscedastic,
            scale=scale,
            shift=shift,
        )


def _forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    prop = Propagation(model)
    # Each module mc_mode switched on (the dropout layers, the modules whose forward issues
    # dropout) must add a dropout that a rule counted: anything else is noise the pass missed.
    switched_on = [m for m in model.modules() if m.training]
    seen_at: dict[int, int] = {}

    def enter(module: nn.Module, inputs: Any) -> None:
        seen_at[id(module)] = prop.dropouts

    def check(module: nn.Module, inputs: Any, output: Any) -> None:
        if prop.dropouts == seen_at.get(id(module), prop.dropouts):
            name = next((n for n, m in model.named_modules() if m is module), "")
            raise NotImplementedError(
                f"predict(method='moments'): module {name or type(module).__name__!r} "
                f"({type(module).__name__}) is dropout but called no dropout function that "
                f"moment propagation knows; {SAMPLING_HINT}"
            )

    handles = []
    try:
        for module in switched_on:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(check))
        with prop:
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"predict: the model must return a tensor, got {type(out).__name__}")
    var = prop.var(out)
    return out, (torch.zeros_like(out) if var is None else var), prop.dropouts


def _flushing_subnormals() -> bool:
    """Whether subnormal floats are flushed to zero now (torch has a setter, no getter)."""
    return bool((torch.tensor([1e-39]) * 1.0).item() == 0.0)


def predict_moments(
    model: nn.Module,
    x: object,
    samples: int = 30,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
) -> MomentResult:
    """The output's mean and variance under MC dropout by moment propagation, in one pass.

    See :func:`dropkit.mc.predict` with ``method="moments"`` and the notes of this module.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"predict: expected samples to be a positive int, got {samples!r}")
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError(
            "predict(method='moments'): expected a tensor input with the batch in dim 0; for "
            "tuple or keyword inputs use method='sampling'"
        )
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"predict: expected batch_size >= 1 or None, got {batch_size!r}")
    chunk = batch_size or max(1, x.shape[0])
    means: list[torch.Tensor] = []
    variances: list[torch.Tensor] = []
    # The same modules on as for sampling: mc_mode's flags (eval, the stochastic ones on).
    state = enable_mc(model)
    # Gaussian tails and their products underflow to subnormal floats, on which CPUs are
    # 10-100x slower; they are far below anything that matters here, so flush them to zero.
    flushing = _flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], chunk):
                part = x[start : start + chunk]
                # Discovery runs the model in train mode: on a copy, in case it works in place.
                state.discover((part.clone(),), {}, "predict(method='moments')")
                mean, var, seen = _forward(model, part)
                if seen == 0:
                    raise ValueError(
                        "predict(method='moments'): no dropout ran in the model's forward, so "
                        "there is no uncertainty to propagate; add dropout"
                    )
                means.append(mean)
                variances.append(var)
    finally:
        torch.set_flush_denormal(flushing)
        disable_mc(state)
    mean = means[0] if len(means) == 1 else torch.cat(means)
    var = variances[0] if len(variances) == 1 else torch.cat(variances)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=mean.device).manual_seed(seed)
    noise = torch.randn(
        (samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device
    )
    draws = noise.mul_(var.sqrt()).add_(mean)  # mean + sd * noise, without temporaries
    return MomentResult(draws, "moments", mean, var)

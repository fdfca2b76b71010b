"""``predict_moments``: one forward pass under :class:`Propagation`, and its result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dropkit.mc._mode import disable_mc, mc_state
from dropkit.mc._moments._covariance import MAX_FACTOR, FactorPropagation
from dropkit.mc._moments._mode import SAMPLING_HINT, Propagation
from dropkit.mc._regression import RegressionPrediction, from_moments
from dropkit.mc._result import MCResult

__all__ = ["MomentResult", "predict_moments"]


@dataclass(frozen=True)
class MomentResult(MCResult):
    """:class:`MCResult` of moment propagation: the output's Gaussian, and draws from it.

    ``output_mean`` and ``output_variance`` (``[N, ...]``) are the propagated moments, returned
    by :attr:`mean` and :attr:`variance`; ``output_covariance`` (``[N, K, K]``) the covariance
    between the outputs where it was carried (``covariance="lowrank"``), and ``covariance`` which
    form each layer used. ``samples`` (``[S, N, ...]``) are draws from that Gaussian
    (independent per output where the covariance is diagonal), from which the classification
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
        >>> result.strategy, result.probs.shape, result.output_covariance is None
        ('moments', torch.Size([5, 3]), True)
        >>> joint = mc.predict(model, torch.randn(5, 4), method="moments", covariance="lowrank")
        >>> joint.output_covariance.shape, joint.covariance
        (torch.Size([5, 3, 3]), {'3 (torch.nn.functional.linear)': 'lowrank'})
    """

    output_mean: torch.Tensor
    output_variance: torch.Tensor
    #: ``[N, K, K]`` the propagated covariance of ``[N, K]`` outputs (``covariance="lowrank"``),
    #: or None where every output was diagonal.
    output_covariance: torch.Tensor | None = None
    #: ``{"module (op)": form}`` for every place where the covariance was or was not carried:
    #: ``"lowrank"``, or ``"diagonal: why"`` (conv maps, layers over ``max_factor``, ops
    #: without a covariance rule). Empty for ``covariance="diagonal"``.
    covariance: Mapping[str, str] = field(default_factory=dict)

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


def _forward(
    model: nn.Module, x: torch.Tensor, prop: Propagation | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    prop = Propagation(model) if prop is None else prop
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
    covariance: str = "diagonal",
    max_factor: int = MAX_FACTOR,
) -> MomentResult:
    """The output's mean and variance under MC dropout by moment propagation, in one pass.

    See :func:`dropkit.mc.predict` with ``method="moments"`` and the notes of this module.
    ``covariance="lowrank"`` also carries the cross-unit covariance as a low-rank factor where
    it fits ``max_factor`` (see :mod:`dropkit.mc._moments._covariance`); ``"diagonal"`` (the
    default) treats every unit as independent.
    """
    if covariance not in ("diagonal", "lowrank"):
        raise ValueError(
            f"predict(method='moments'): expected covariance 'diagonal' or 'lowrank', got "
            f"{covariance!r}"
        )
    if isinstance(max_factor, bool) or not isinstance(max_factor, int) or max_factor < 1:
        raise ValueError(f"predict: expected max_factor to be a positive int, got {max_factor!r}")
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
    factors: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    forms: dict[str, str] = {}
    # The same modules on as for sampling: mc_mode's flags (eval, the stochastic ones on).
    state = mc_state(model)  # discover() below switches on what must run
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
                prop = FactorPropagation(model, max_factor) if covariance == "lowrank" else None
                mean, var, seen = _forward(model, part, prop)
                if isinstance(prop, FactorPropagation):
                    factors.append(_output_factor(prop, mean, var))
                    for where, form in prop.forms.items():
                        # a layer kept diagonal in any chunk is reported diagonal: its chunks'
                        # factor widths differ with their data
                        if where not in forms or form.startswith("diagonal"):
                            forms[where] = form
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
    if not any(f is not None for f in factors):
        draws = torch.addcmul(mean, noise, var.sqrt(), out=noise)  # one pass, no temporaries
        return MomentResult(draws, "moments", mean, var, None, forms)
    # Correlated draws: mean + L eps + sqrt(e) eps', chunk by chunk (each its own sources).
    parts, covs = [], []
    start = 0
    for f, m, v in zip(factors, means, variances, strict=True):
        n = m.shape[0]
        part_noise = noise[:, start : start + n]
        if f is None:
            parts.append(m + v.sqrt() * part_noise)
            covs.append(torch.diag_embed(v))
        else:
            factor, e = f
            eps = torch.randn(
                (samples, *factor.shape[:1], factor.shape[-1]),
                generator=generator,
                dtype=m.dtype,
                device=m.device,
            )
            parts.append(m + e.sqrt() * part_noise + torch.einsum("nkr,snr->snk", factor, eps))
            covs.append(factor @ factor.transpose(-1, -2) + torch.diag_embed(e))
        start += n
    draws = torch.cat(parts, 1)
    return MomentResult(draws, "moments", mean, var, torch.cat(covs), forms)


def _output_factor(
    prop: FactorPropagation, mean: torch.Tensor, var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(factor [N, K, r], unattributed variance [N, K]) of a [N, K] output, or None."""
    f = prop.factor(mean)
    if f is None or mean.dim() != 2:
        if f is not None:
            prop.forms.setdefault(
                "<output>", f"diagonal: outputs of {mean.dim()} dims, the covariance needs [N, K]"
            )
        return None
    return f, (var - f.square().sum(-1)).clamp_min(0.0)

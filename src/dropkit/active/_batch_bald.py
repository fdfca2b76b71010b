"""Greedy BatchBALD and the exact joint mutual information it approximates."""

from __future__ import annotations

import math

import torch

from dropkit.active._scores import _entropy, _probs
from dropkit.active._selection import _check_query, top_k
from dropkit.mc import MCResult, MomentResult

__all__ = ["batch_bald", "joint_mutual_information"]


def _sampling_only(result: MCResult, who: str) -> None:
    if isinstance(result, MomentResult):
        raise ValueError(
            f"{who}: needs Monte Carlo samples, where sample s of every example comes from the "
            "same dropout mask; a method='moments' result draws each example independently, "
            "which makes every joint entropy that of independent predictions. Use "
            "mc.predict(..., method='sampling') for BatchBALD"
        )


def joint_mutual_information(result: MCResult, indices: torch.Tensor | list[int]) -> float:
    """The BatchBALD score of a set, exactly: ``I(y_1, ..., y_n; w)``, in nats.

    Enumerates the ``C ** n`` joint label configurations; for checking :func:`batch_bald` on
    small sets (it raises above 2**20 configurations).

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import bald, joint_mutual_information
        >>> result = MCResult(torch.randn(8, 5, 3, generator=torch.Generator().manual_seed(0)), "s")
        >>> abs(joint_mutual_information(result, [2]) - float(bald(result)[2])) < 1e-12
        True
    """
    _sampling_only(result, "joint_mutual_information")
    p = _probs(result, "joint_mutual_information")
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    s, _, c = p.shape
    if c ** len(idx) > 1 << 20:
        raise ValueError(
            f"joint_mutual_information: {c}**{len(idx)} configurations are too many to enumerate"
        )
    joint = torch.ones(s, 1, dtype=torch.float64)
    for i in idx.tolist():
        joint = (joint[:, :, None] * p[:, i, None, :]).reshape(s, -1)
    conditional = _entropy(p[:, idx, :]).mean(0).sum()
    return float(_entropy(joint.mean(0)) - conditional)


def batch_bald(
    result: MCResult,
    query_size: int,
    *,
    configurations: int = 1024,
    seed: int = 0,
) -> torch.Tensor:
    """Greedy BatchBALD: ``min(query_size, N)`` indices, in the order they were chosen.

    Each step adds the example that most increases the joint mutual information
    ``I(y_1, ..., y_n; w)`` of the set (Kirsch, van Amersfoort & Gal, NeurIPS 2019,
    https://arxiv.org/abs/1906.08158). The joint entropy is exact while the chosen examples'
    label configurations number at most ``configurations`` (``C ** n``); beyond, it is
    estimated from ``configurations`` configurations drawn from the joint predictive (each
    with one of the S samples, as in the paper), seeded by ``seed``. The first pick is BALD's
    top pick. Equal gains go to the lowest index.

    Args:
        result: Monte Carlo samples of the pool, ``[S, N, C]`` (``method="sampling"``; a
            moments result raises, see the module notes).
        query_size: how many examples to choose.
        configurations: the most joint configurations held (memory ``S * configurations``,
            time per step ``S * configurations * N * C``).
        seed: seeds the drawn configurations (unused while the joint is exact).

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import bald, batch_bald
        >>> logits = torch.randn(10, 50, 4, generator=torch.Generator().manual_seed(0))
        >>> result = MCResult(logits, "stored")
        >>> picked = batch_bald(result, 3)
        >>> len(set(picked.tolist())), int(picked[0]) == int(bald(result).argmax())
        (3, True)
    """
    _check_query("batch_bald", query_size)
    _sampling_only(result, "batch_bald")
    bad = isinstance(configurations, bool) or not isinstance(configurations, int)
    if bad or configurations < 1:
        raise ValueError(
            f"batch_bald: expected configurations to be a positive int, got {configurations!r}"
        )
    p = _probs(result, "batch_bald")  # [S, N, C]
    s, n, c = p.shape
    conditional = _entropy(p).mean(0)  # [N]
    flat = p.reshape(s, n * c)
    chosen: list[int] = []
    taken = torch.zeros(n, dtype=torch.bool)
    # The chosen examples' joint: ``joint[s, k]`` is p(configuration k | sample s) (exact), or,
    # once drawn, proportional to it with ``log_scale[k]`` the log of the factor taken out.
    joint = torch.ones(s, 1, dtype=torch.float64)
    log_scale = torch.zeros(1, dtype=torch.float64)
    drawn = False
    generator = torch.Generator().manual_seed(seed)
    model_of: torch.Tensor | None = None  # drawn configurations: the sample each came from
    for _ in range(min(query_size, n)):
        gains = _joint_entropies(joint, flat, n, c, drawn, log_scale) - conditional
        gains = gains - conditional[chosen].sum()
        gains[taken] = -math.inf
        best = int(top_k(gains, 1)[0])
        chosen.append(best)
        taken[best] = True
        if len(chosen) == min(query_size, n):
            break
        if not drawn and joint.shape[1] * c <= configurations:
            joint = (joint[:, :, None] * p[:, best, None, :]).reshape(s, -1)
            log_scale = torch.zeros(joint.shape[1], dtype=torch.float64)
            continue
        if not drawn:  # draw the configurations of everything chosen so far
            drawn = True
            model_of = torch.randint(0, s, (configurations,), generator=generator)
            joint = torch.ones(s, configurations, dtype=torch.float64)
            log_scale = torch.zeros(configurations, dtype=torch.float64)
            picks = chosen
        else:
            picks = [best]
        assert model_of is not None
        for i in picks:
            labels = torch.multinomial(p[model_of, i, :], 1, generator=generator).squeeze(1)
            joint = joint * p[:, i, :][:, labels]  # [S, M]: p(label_m of i | sample s)
            top = joint.max(0).values.clamp_min(1e-300)
            joint = joint / top
            log_scale = log_scale + top.log()
    return torch.tensor(chosen, dtype=torch.long)


def _joint_entropies(
    joint: torch.Tensor,
    flat: torch.Tensor,
    n: int,
    c: int,
    drawn: bool,
    log_scale: torch.Tensor,
) -> torch.Tensor:
    """``[N]`` H(y_chosen, y_n) for every candidate n: exact over the configurations in
    ``joint``, or the importance estimate over drawn configurations."""
    s, k = joint.shape
    out = torch.empty(n, dtype=torch.float64)
    chunk = max(1, (1 << 22) // max(1, k * c))
    if drawn:
        # p(config m) = scale_m * mean_s joint[s, m];  ratio = p(config m, y_n) / p(config m)
        marginal = joint.mean(0)  # [M]
        offset = -(log_scale + marginal.log()).mean()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        # [K, chunk * C]: mean over samples of joint[s, k] * p_s(y_n = c)
        q = (joint.t() @ flat[:, start * c : stop * c]) / s
        q = q.reshape(k, stop - start, c)
        if drawn:
            ratio = q / marginal[:, None, None]
            out[start:stop] = offset - torch.special.xlogy(ratio, ratio).sum(-1).mean(0)
        else:
            out[start:stop] = -torch.special.xlogy(q, q).sum((0, 2))
    return out

"""DropPath (stochastic depth): whole samples dropped, and the usual schedule of its rates."""

from __future__ import annotations

import numbers
from typing import Literal

import torch
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._autograd import ElementMask, apply_noise, inverted_scale
from dropkit.functional._validation import (
    InputError,
    check_input,
    check_p,
    check_training,
    resolve_seed,
)

__all__ = ["drop_path", "drop_path_rates", "stochastic_depth"]


@register_function("path", sharing="argument")
def drop_path(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    mode: Literal["row", "batch"] = "row",
    scale_by_keep: bool = True,
    seed: int | None = None,
) -> torch.Tensor:
    """Stochastic depth: drop a residual branch's output for whole samples (or the whole batch).

    Apply it to the branch, then add the identity: ``x + drop_path(block(x), p)``.

    From Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016,
    https://arxiv.org/abs/1603.09382).

    Args:
        input: ``(N, *)``, the output of a residual branch.
        p: probability of dropping the branch, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        mode: ``"row"`` draws one decision per sample, ``"batch"`` one for the whole batch.
        scale_by_keep: scale kept samples by ``1/(1-p)`` so the expectation is unchanged.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, *)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_path
        >>> y = drop_path(torch.ones(8, 3, 4), 0.5, seed=0)
        >>> bool(((y == 0).flatten(1).all(1) | (y == 2).flatten(1).all(1)).all())
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            drop_path,
            (input,),
            input,
            p,
            training,
            inplace,
            mode=mode,
            scale_by_keep=scale_by_keep,
            seed=seed,
        )
    check_input("drop_path", input)
    if isinstance(training, str):
        raise TypeError(
            f"drop_path: expected training to be a bool, got {training!r}; a mode there is "
            "torchvision's stochastic_depth(input, p, mode, training) order: call "
            "dropkit.functional.stochastic_depth with it, or drop_path(input, p, training, "
            f"mode={training!r})"
        )
    if mode not in ("row", "batch"):
        raise ValueError(f"drop_path: expected mode 'row' or 'batch', got {mode!r}")
    if input.dim() < 1:
        raise InputError("drop_path: expected an input (N, *) with at least 1 dim, got 0D")
    p = check_p("drop_path", p)
    if not check_training("drop_path", training) or p == 0.0:
        return input
    # inverted_dropout's steps, without its checks of a mask shape built here: on the small
    # inputs stochastic depth often sees, each Python step is a visible part of the call.
    shape = (input.shape[0] if mode == "row" else 1,) + (1,) * (input.dim() - 1)
    scale = inverted_scale(p) if scale_by_keep else 1.0
    noise = ElementMask(shape, p, resolve_seed("drop_path", seed), scale)
    return apply_noise(input, noise, inplace)


def stochastic_depth(
    input: torch.Tensor, p: float, mode: str, training: bool = True
) -> torch.Tensor:
    """Stochastic depth with the signature of :func:`torchvision.ops.stochastic_depth`.

    ``stochastic_depth(input, p, mode, training)`` is ``drop_path(input, p, training,
    mode=mode)``: the same semantics as torchvision's (one decision per sample for
    ``mode="row"``, one for the batch for ``"batch"``, kept samples scaled by ``1/(1-p)``),
    with dropkit's reproducible mask (Huang et al., "Deep Networks with Stochastic Depth",
    ECCV 2016, https://arxiv.org/abs/1603.09382).

    Args:
        input: ``(N, *)``, the output of a residual branch.
        p: probability of dropping the branch, in [0, 1].
        mode: ``"row"`` or ``"batch"``.
        training: apply it if True; otherwise return ``input`` itself. Default: True.

    Shape:
        - Input: ``(N, *)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_path, stochastic_depth
        >>> x = torch.ones(8, 3)
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> y = stochastic_depth(x, 0.5, "batch")
        >>> bool((y == 0).all() or (y == 2).all())
        True
        >>> stochastic_depth(x, 0.5, "row", False) is x
        True
    """
    if mode not in ("row", "batch"):
        raise ValueError(f"stochastic_depth: expected mode 'row' or 'batch', got {mode!r}")
    return drop_path(input, p, training, mode=mode)  # type: ignore[arg-type]


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """The usual linear stochastic-depth schedule: block ``i`` gets ``rate * i / (depth - 1)``.

    The first block is never dropped and the last gets ``rate`` (Huang et al. 2016).

    Example:
        >>> from dropkit.functional import drop_path_rates
        >>> drop_path_rates(0.3, 4)
        [0.0, 0.1, 0.2, 0.3]
    """
    rate = check_p("drop_path_rates", rate)
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"drop_path_rates: expected depth to be a positive int, got {depth!r}")
    if depth == 1:
        return [0.0]
    return [round(rate * i / (depth - 1), 12) for i in range(depth)]

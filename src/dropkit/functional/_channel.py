"""Dropout with masks shared along some dims: channel, feature-alpha and time-locked dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as torch_F
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._autograd import ElementMask, alpha_constants, apply_noise
from dropkit.functional._elementwise import inverted_dropout
from dropkit.functional._validation import (
    InputError,
    check_input,
    check_p,
    check_rank,
    check_training,
    resolve_seed,
)

__all__ = ["dropout1d", "dropout2d", "dropout3d", "feature_alpha_dropout", "locked_dropout"]


def _channel_noise_shape(
    input: torch.Tensor, channels_last: bool, *, batched: bool = True
) -> tuple[int, ...]:
    """One mask entry per (sample, channel); the channel dim is 1, or last when channels_last."""
    shape = [1] * input.dim()
    if batched:
        shape[0] = input.shape[0]
    channel_dim = input.dim() - 1 if channels_last else int(batched)
    shape[channel_dim] = input.shape[channel_dim]
    return tuple(shape)


# rank -> (layout, the op for one rank less and its layout, an unbatched input's layout)
_SPATIAL = {
    4: ("(N, C, H, W)", "dropout1d", "(N, C, L)", "(C, H, W) image"),
    5: ("(N, C, D, H, W)", "dropout2d", "(N, C, H, W)", "(C, D, H, W) volume"),
}


def _channel_dropout(
    name: str,
    input: torch.Tensor,
    p: float,
    training: bool,
    inplace: bool,
    channels_last: bool,
    seed: int | None,
    rank: int,
) -> torch.Tensor:
    """Channel dropout of a batched input of exactly ``rank`` dims.

    One rank less is an error that names the right op, not a guess (torch treats a 3D input to
    dropout2d as (N, C, L)).
    """
    check_input(name, input)
    layout, lower, lower_layout, unbatched = _SPATIAL[rank]
    if input.dim() == rank - 1:
        raise InputError(
            f"{name}: expected a {rank}D input {layout}, got {rank - 1}D; use {lower} for "
            f"{lower_layout}, or input.unsqueeze(0) for a single unbatched {unbatched}"
        )
    check_rank(name, input, (rank,), layout)
    shape = _channel_noise_shape(input, channels_last)
    return inverted_dropout(name, input, p, training, inplace, shape, seed)


@register_function("channel1d", replaces=torch_F.dropout1d)
def dropout1d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    channels_last: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Zero whole channels of a sequence with probability ``p``, scale the rest by ``1/(1-p)``.

    From Tompson et al., "Efficient Object Localization Using Convolutional Networks"
    (CVPR 2015, https://arxiv.org/abs/1411.4280).

    Args:
        input: ``(N, C, L)``, or ``(N, L, C)`` with ``channels_last=True``; an unbatched
            ``(C, L)`` input is treated as one sample.
        p: probability of zeroing a channel, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        channels_last: the channel dim is the last one. Default: False.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, C, L)`` or ``(C, L)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import dropout1d
        >>> y = dropout1d(torch.ones(2, 6, 5), 0.5, seed=0)
        >>> bool(((y == 0).all(-1) | (y == 2).all(-1)).all())
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            dropout1d, (input,), input, p, training, inplace, channels_last=channels_last, seed=seed
        )
    check_input("dropout1d", input)
    check_rank("dropout1d", input, (2, 3), "(N, C, L) or unbatched (C, L)")
    shape = _channel_noise_shape(input, channels_last, batched=input.dim() == 3)
    return inverted_dropout("dropout1d", input, p, training, inplace, shape, seed)


@register_function("channel2d", replaces=torch_F.dropout2d)
def dropout2d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    channels_last: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Zero whole channels of an image batch with probability ``p``, scale the rest.

    Unlike :func:`torch.nn.functional.dropout2d`, a 3D input is an error rather than being
    silently treated as a sequence.

    Args:
        input: ``(N, C, H, W)``, or ``(N, H, W, C)`` with ``channels_last=True``. (A tensor in
            torch's ``channels_last`` memory format is still ``(N, C, H, W)``: leave the flag.)
        p: probability of zeroing a channel, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        channels_last: the channel dim is the last one. Default: False.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, C, H, W)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import dropout2d
        >>> y = dropout2d(torch.ones(2, 8, 3, 3), 0.5, seed=0)
        >>> y.flatten(2).amax(-1).eq(y.flatten(2).amin(-1)).all().item()
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            dropout2d, (input,), input, p, training, inplace, channels_last=channels_last, seed=seed
        )
    return _channel_dropout("dropout2d", input, p, training, inplace, channels_last, seed, 4)


@register_function("channel3d", replaces=torch_F.dropout3d)
def dropout3d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    channels_last: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Zero whole channels of a volume batch with probability ``p``, scale the rest.

    Args:
        input: ``(N, C, D, H, W)``, or ``(N, D, H, W, C)`` with ``channels_last=True``.
        p: probability of zeroing a channel, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        channels_last: the channel dim is the last one. Default: False.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, C, D, H, W)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import dropout3d
        >>> dropout3d(torch.ones(1, 2, 2, 2, 2), 0.0).shape
        torch.Size([1, 2, 2, 2, 2])
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            dropout3d, (input,), input, p, training, inplace, channels_last=channels_last, seed=seed
        )
    return _channel_dropout("dropout3d", input, p, training, inplace, channels_last, seed, 5)


@register_function("feature_alpha", replaces=torch_F.feature_alpha_dropout)
def feature_alpha_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Alpha dropout of whole channels: SELU-preserving, one decision per (sample, channel).

    See :func:`alpha_dropout` (Klambauer et al. 2017, https://arxiv.org/abs/1706.02515).

    Args:
        input: ``(N, C, *)`` with at least 2 dims.
        p: probability of dropping a channel, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, C, *)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import feature_alpha_dropout
        >>> y = feature_alpha_dropout(torch.zeros(4, 16, 5), 0.5, seed=0)
        >>> bool((y.amax(-1) == y.amin(-1)).all())
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            feature_alpha_dropout, (input,), input, p, training, inplace, seed=seed
        )
    check_input("feature_alpha_dropout", input)
    if input.dim() < 2:
        raise InputError(
            f"feature_alpha_dropout: expected an input (N, C, *) with at least 2 dims, got "
            f"{input.dim()}D; use alpha_dropout for element-wise masks"
        )
    p = check_p("feature_alpha_dropout", p)
    if not check_training("feature_alpha_dropout", training) or p == 0.0:
        return input
    scale, shift, fill = alpha_constants(p)
    shape = _channel_noise_shape(input, False)
    seed_value = resolve_seed("feature_alpha_dropout", seed)
    return apply_noise(input, ElementMask(shape, p, seed_value, scale, shift, fill), inplace)


@register_function("locked")
def locked_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    batch_first: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Time-locked (variational) dropout: one mask per sequence, shared by every time step.

    From Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent Neural
    Networks" (NeurIPS 2016, https://arxiv.org/abs/1512.05287).

    Args:
        input: ``(T, N, *)``, or ``(N, T, *)`` with ``batch_first=True``.
        p: probability of zeroing a feature, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        batch_first: the batch dim comes first, time second. Default: False.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(T, N, *)`` or ``(N, T, *)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import locked_dropout
        >>> y = locked_dropout(torch.ones(7, 3, 4), 0.5, seed=0)
        >>> bool((y == y[0]).all())
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            locked_dropout,
            (input,),
            input,
            p,
            training,
            inplace,
            batch_first=batch_first,
            seed=seed,
        )
    check_input("locked_dropout", input)
    layout = "(N, T, *)" if batch_first else "(T, N, *)"
    if input.dim() < 2:
        raise InputError(
            f"locked_dropout: expected an input {layout} with at least 2 dims, got {input.dim()}D"
        )
    time_dim = 1 if batch_first else 0
    shape = tuple(1 if d == time_dim else n for d, n in enumerate(input.shape))
    return inverted_dropout("locked_dropout", input, p, training, inplace, shape, seed)

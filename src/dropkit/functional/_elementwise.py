"""Element-wise dropout and its noise-only relatives: dropout, alpha and Gaussian dropout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as torch_F
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._autograd import (
    ElementMask,
    GaussianNoise,
    alpha_constants,
    apply_noise,
    apply_with_grad,
    inverted_scale,
    small_dropout,
)
from dropkit.functional._validation import (
    InputError,
    check_input,
    check_p,
    check_training,
    resolve_noise_shape,
    resolve_seed,
)
from dropkit.kernels import select, stream_keep_mask

__all__ = [
    "alpha_dropout",
    "dropout",
    "dropout_mask",
    "gaussian_dropout",
    "inverted_dropout",
]


def inverted_dropout(
    name: str,
    input: torch.Tensor,
    p: float,
    training: bool,
    inplace: bool,
    noise_shape: Sequence[int | None] | None,
    seed: int | None,
    *,
    scale_by_keep: bool = True,
) -> torch.Tensor:
    """Inverted dropout with a mask of ``noise_shape``; every mask-based op ends here."""
    check_input(name, input)
    p = check_p(name, p)
    shape = resolve_noise_shape(name, input, noise_shape)
    if not check_training(name, training) or p == 0.0:
        return input
    scale = inverted_scale(p) if scale_by_keep else 1.0
    return apply_noise(input, ElementMask(shape, p, resolve_seed(name, seed), scale), inplace)


@register_function("element", sharing="argument", replaces=torch_F.dropout)
def dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    noise_shape: Sequence[int | None] | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``.

    A drop-in for :func:`torch.nn.functional.dropout` (same positional arguments) whose mask is
    a pure function of ``seed`` and the element index (Philox4x32-10), identical on every device
    and backend, and is regenerated in backward rather than stored.

    From Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting"
    (JMLR 2014, https://jmlr.org/papers/v15/srivastava14a.html).

    Args:
        input: a floating-point tensor of any shape.
        p: probability of zeroing an element, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        noise_shape: shape of the mask, broadcast to the input: one entry per input dim, 1 where
            the mask is shared along that dim, the input's size (or None) where it is not.
            ``(N, C, 1, 1)`` on an ``(N, C, H, W)`` input drops whole channels. Default: the
            input's shape (element-wise).
        seed: the mask's seed in [0, 2**64). Default: drawn from torch's default CPU generator,
            so :func:`torch.manual_seed` makes the result reproducible.

    Shape:
        - Input: any shape. Output: the same shape.

    Returns:
        ``input`` unchanged (the same object) when ``training`` is False or ``p`` is 0; zeros
        when ``p`` is 1. The input is multiplied by the scaled mask, as torch does: a NaN or
        inf gives NaN where it is dropped (a NaN is never hidden by the draw), and a dropped
        negative gives -0.0.

    Example:
        >>> import torch
        >>> from dropkit.functional import dropout
        >>> x = torch.ones(10_000)
        >>> y = dropout(x, 0.5, seed=0)
        >>> sorted(set(y.tolist()))
        [0.0, 2.0]
        >>> torch.equal(y, dropout(x, 0.5, seed=0))
        True
        >>> dropout(x, 0.5, training=False) is x
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            dropout, (input,), input, p, training, inplace, noise_shape=noise_shape, seed=seed
        )
    # The commonest call first (small_dropout checks when it applies); then inverted_dropout's
    # steps written out, and apply_noise's common path taken directly: each Python frame costs
    # every call.
    if training is True:  # (in eval, not even the call)
        out = small_dropout(input, p, True, inplace, noise_shape, seed)
        if out is not None:
            return out
    check_input("dropout", input)
    p = check_p("dropout", p)
    shape = resolve_noise_shape("dropout", input, noise_shape)
    if not check_training("dropout", training) or p == 0.0:
        return input
    seed_value = resolve_seed("dropout", seed)
    noise = ElementMask(shape, p, seed_value, inverted_scale(p))
    if type(seed_value) is int and input.requires_grad and torch.is_grad_enabled():
        return apply_with_grad(input, noise, inplace)
    return apply_noise(input, noise, inplace)


def dropout_mask(
    shape: Sequence[int] | torch.Size,
    p: float = 0.5,
    *,
    seed: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The boolean keep mask that ``dropout(x, p, seed=seed)`` applies to a tensor of ``shape``.

    Pass a ``noise_shape`` as ``shape`` to get the mask of a shared-mask call.

    Args:
        shape: the shape of the input (or of the ``noise_shape``).
        p: probability of dropping an element, in [0, 1]. Default: 0.5.
        seed: the seed given to :func:`dropout`.
        device: where to build the mask. The mask is the same on every device.

    Returns:
        A bool tensor of ``shape``: True where the element is kept.

    Example:
        >>> import torch
        >>> from dropkit.functional import dropout, dropout_mask
        >>> keep = dropout_mask((4, 5), 0.3, seed=7)
        >>> y = dropout(torch.ones(4, 5), 0.3, seed=7)
        >>> torch.equal(y != 0, keep)
        True
    """
    p = check_p("dropout_mask", p)
    seed_value = resolve_seed("dropout_mask", seed)
    dims = tuple(int(n) for n in shape)
    if any(n < 0 for n in dims):
        raise InputError(f"dropout_mask: expected a shape of non-negative sizes, got {list(dims)}")
    if p == 0.0:
        return torch.ones(dims, dtype=torch.bool, device=device)
    if isinstance(seed_value, int):  # eagerly: the device's fastest backend (numba, Triton)
        probe = torch.empty((), device=device)
        return select(probe).keep_mask(dims, p, seed_value, probe.device)
    return stream_keep_mask(dims, p, seed_value, device)


@register_function("alpha", replaces=torch_F.alpha_dropout)
def alpha_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Alpha dropout for self-normalizing (SELU) networks: keeps zero mean and unit variance.

    Dropped elements are set to SELU's negative saturation value and the result is rescaled and
    shifted so that a standardized input stays standardized. Unlike torch's, ``training``
    defaults to True, as in every dropkit function.

    From Klambauer et al., "Self-Normalizing Neural Networks" (NeurIPS 2017,
    https://arxiv.org/abs/1706.02515).

    Args:
        input: a floating-point tensor of any shape.
        p: probability of dropping an element, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        seed: the mask's seed; the keep mask equals ``dropout_mask(input.shape, p, seed=seed)``.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import alpha_dropout
        >>> x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
        >>> y = alpha_dropout(x, 0.2, seed=1)
        >>> abs(y.mean().item()) < 0.01, abs(y.std().item() - 1) < 0.01
        (True, True)
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            alpha_dropout, (input,), input, p, training, inplace, seed=seed
        )
    check_input("alpha_dropout", input)
    p = check_p("alpha_dropout", p)
    if not check_training("alpha_dropout", training) or p == 0.0:
        return input
    scale, shift, fill = alpha_constants(p)
    seed_value = resolve_seed("alpha_dropout", seed)
    noise = ElementMask(tuple(input.shape), p, seed_value, scale, shift, fill)
    return apply_noise(input, noise, inplace)


@register_function("gaussian")
def gaussian_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Gaussian dropout: multiply each element by noise drawn from N(1, p / (1 - p)).

    The noise has the mean and variance of the inverted Bernoulli dropout mask of rate ``p``,
    without zeroing anything (Srivastava et al. 2014, section 10,
    https://jmlr.org/papers/v15/srivastava14a.html).

    Args:
        input: a floating-point tensor of any shape.
        p: the equivalent drop rate, in [0, 1); the noise variance is ``p / (1 - p)``.
        training: apply noise if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        seed: the noise's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import gaussian_dropout
        >>> y = gaussian_dropout(torch.ones(100_000), 0.5, seed=3)
        >>> round(y.mean().item(), 1), round(y.var().item(), 1)
        (1.0, 1.0)
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            gaussian_dropout, (input,), input, p, training, inplace, seed=seed
        )
    check_input("gaussian_dropout", input)
    p = check_p("gaussian_dropout", p, allow_one=False)
    if not check_training("gaussian_dropout", training) or p == 0.0:
        return input
    noise = GaussianNoise(
        tuple(input.shape), math.sqrt(p / (1.0 - p)), resolve_seed("gaussian_dropout", seed)
    )
    return apply_noise(input, noise, inplace)

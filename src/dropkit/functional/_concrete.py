"""Concrete dropout: dropout with a relaxed Bernoulli mask, so that its rate can be learned.

From Gal, Hron & Kendall, "Concrete Dropout" (NeurIPS 2017, https://arxiv.org/abs/1705.07832).
The keep factor of an element (or a channel) is

    z = sigmoid(-(logit(p) + logit(u)) / t),   u ~ Uniform(0, 1),   output = input * z / (1 - p)

a continuous relaxation of a Bernoulli(1 - p) keep mask (the binary Concrete distribution): as
the temperature ``t`` goes to 0, ``z`` becomes 0 or 1 with P(z > 1/2) = 1 - p at every ``t``.
The output is differentiable in ``p``.

Mask-free like every dropkit op: the uniforms are the dropkit Philox stream's (the open
uniforms of :func:`stream_open_uniform`), regenerated from the seed in backward. Backward saves
the input alone, and only when ``p`` requires grad (its gradient needs the input); with a fixed
``p`` nothing is saved. The gradient with respect to ``p`` is the exact derivative of the
relaxed mask: with ``m = z / (1 - p)`` and ``w = grad * input * m`` (summed over the dims the
mask is shared along), ``d out / d p`` gives ``sum(w * (p - (1 - z) / t)) / (p (1 - p))``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, cast

import torch
from torch.autograd.function import once_differentiable
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._channel import _channel_noise_shape
from dropkit.functional._validation import (
    check_input,
    check_rank,
    check_training,
    in_graph,
    resolve_seed,
)
from dropkit.kernels import Seed, compute_dtype, random_uint32, select

__all__ = [
    "concrete_dropout",
    "concrete_dropout1d",
    "concrete_dropout2d",
    "concrete_dropout3d",
    "concrete_reference",
    "relaxed_moments",
    "stream_open_uniform",
]

_NATIVE = (torch.float32, torch.float64)


def stream_open_uniform(
    numel: int, seed: Seed, device: torch.device | str | None, dtype: torch.dtype
) -> torch.Tensor:
    """Open uniforms of the dropkit stream: element ``i`` is ``((bits_i >> 9) + 0.5) * 2**-23``.

    Strictly inside (0, 1), exact in float32, and ``1 - u`` is exact too, so ``logit(u)`` is
    finite for every draw. The plain-PyTorch ground truth of the CPU kernel.
    """
    bits = random_uint32(numel, seed, device)
    return ((bits >> 9).to(torch.float64) + 0.5).mul_(2.0**-23).to(dtype)


def _uniforms(
    like: torch.Tensor, shape: tuple[int, ...], seed: int, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`stream_open_uniform` of ``shape`` on the backend that :func:`select` picks."""
    numel = math.prod(shape)
    if dtype in _NATIVE and like.is_cpu and (backend := select(like)).name == "numba":
        out = torch.empty(shape, dtype=dtype)
        cast(Any, backend).open_uniform(out, seed)  # a NumbaBackend
        return out
    return stream_open_uniform(numel, seed, like.device, dtype).view(shape)


def _keep(
    like: torch.Tensor, shape: tuple[int, ...], p: float, seed: int, temperature: float
) -> torch.Tensor:
    """The relaxed keep factor ``z`` of ``shape`` in the compute dtype of ``like``: five passes
    over the mask."""
    u = _uniforms(like, shape, seed, compute_dtype(like.dtype))
    inv_t = 1.0 / temperature
    logit_p = math.log(p) - math.log1p(-p)
    # log(u) - log1p(-u) rather than torch.logit, which costs milliseconds per call on a small
    # CPU tensor when other processes load the machine (measured, torch 2.13; logit_ is worse).
    logit_u = torch.log(u).sub_(torch.log1p(u.neg_()))
    return logit_u.mul_(-inv_t).sub_(logit_p * inv_t).sigmoid_()


#: Temperatures ``1 / k`` with an integer ``k`` up to this take the CPU kernel without logs.
_MAX_POWER = 16


def _factor(
    like: torch.Tensor, shape: tuple[int, ...], p: float, seed: int, temperature: float
) -> torch.Tensor:
    """The relaxed factor ``m = z / (1 - p)`` of ``shape`` in the compute dtype of ``like``.

    On the CPU at a temperature ``1 / k`` (the paper's 0.1 is ``k = 10``), one fused kernel
    pass: ``z = 1 / (1 + (p / (1 - p))**k * (u / (1 - u))**k)`` is the same sigmoid without a
    logarithm or an exponential. Otherwise :func:`_keep`'s torch operations.
    """
    dtype = compute_dtype(like.dtype)
    inverse = 1.0 / temperature
    k = round(inverse)
    if (
        1 <= k <= _MAX_POWER
        and abs(inverse - k) <= 1e-9 * k
        and dtype in _NATIVE
        and like.is_cpu
        and (backend := select(like)).name == "numba"
    ):
        out = torch.empty(shape, dtype=dtype)
        logit_p = math.log(p) - math.log1p(-p)
        cast(Any, backend).concrete_factor(out, seed, math.exp(k * logit_p), k, 1.0 / (1.0 - p))
        return out
    return _keep(like, shape, p, seed, temperature).mul_(1.0 / (1.0 - p))


class _ConcreteFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        input: torch.Tensor,
        p_tensor: torch.Tensor | None,
        p: float,
        shape: tuple[int, ...],
        seed: int,
        temperature: float,
    ) -> torch.Tensor:
        m = _factor(input, shape, p, seed, temperature)
        out = (input.to(m.dtype) * m).to(input.dtype)
        ctx.settings = (p, shape, seed, temperature)
        ctx.p_dtype = p_tensor.dtype if p_tensor is not None else None
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(input)  # the gradient in p needs it; nothing else is kept
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        p, shape, seed, temperature = ctx.settings
        m = _factor(grad, shape, p, seed, temperature)
        grad_x = grad.to(m.dtype) * m
        grad_p = None
        if ctx.needs_input_grad[1]:
            (input,) = ctx.saved_tensors
            w = grad_x * input.to(m.dtype)  # grad * input * m
            if w.shape != shape:
                w = w.sum_to_size(shape)
            total = w.sum(dtype=torch.float64)
            # sum(w * z) from sum(w * m): z = m (1 - p)
            with_z = torch.dot(w.reshape(-1), m.reshape(-1)).double() * (1.0 - p)
            value = (p * total - (total - with_z) / temperature) / (p * (1.0 - p))
            grad_p = value.to(ctx.p_dtype).reshape(())
        grad_input = grad_x.to(grad.dtype) if ctx.needs_input_grad[0] else None
        return grad_input, grad_p, None, None, None, None


def concrete_reference(
    input: torch.Tensor,
    p: float | torch.Tensor,
    shape: tuple[int, ...],
    seed: Seed,
    temperature: float,
) -> torch.Tensor:
    """Concrete dropout from torch operations only: the ground truth of the fast path, and the
    path inside graphs and ``torch.func`` transforms (torch's autograd differentiates it, to any
    order). ``shape`` is the mask's shape, broadcast to the input."""
    dtype = compute_dtype(input.dtype)
    u = stream_open_uniform(math.prod(shape), seed, input.device, dtype).view(shape)
    p_t = torch.as_tensor(p, device=input.device).to(dtype)
    logit_u = torch.log(u) - torch.log1p(-u)
    z = torch.sigmoid(-(torch.log(p_t) - torch.log1p(-p_t) + logit_u) / temperature)
    return (input.to(dtype) * (z / (1.0 - p_t))).to(input.dtype)


def _check_p_tensor(name: str, p: torch.Tensor) -> None:
    if p.numel() != 1 or not p.is_floating_point():
        raise ValueError(
            f"{name}: expected p to be a float or a one-element floating-point tensor, got a "
            f"{p.dtype} tensor of shape {list(p.shape)}"
        )


def _check_p(name: str, p: object) -> float:
    if isinstance(p, torch.Tensor):
        _check_p_tensor(name, p)
        value = float(p.detach().reshape(()))
    elif isinstance(p, int | float) and not isinstance(p, bool):
        value = float(p)
    else:
        raise ValueError(f"{name}: expected p to be a number in [0, 1), got {p!r}")
    if not 0.0 <= value < 1.0 or (value == 0.0 and isinstance(p, torch.Tensor)):
        raise ValueError(
            f"{name}: expected p in (0, 1) (a float p may be 0: no dropout), got {value!r}; a "
            "learned rate is kept inside (0, 1) by its sigmoid, so check the rate's parameter "
            "for inf or NaN"
        )
    return value


def _check_temperature(name: str, temperature: object) -> float:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0.0 < float(temperature) < math.inf
    ):
        raise ValueError(
            f"{name}: expected temperature > 0 (the paper uses 0.1), got {temperature!r}"
        )
    return float(temperature)


def _concrete(
    name: str,
    input: torch.Tensor,
    p: float | torch.Tensor,
    training: bool,
    shape: tuple[int, ...],
    temperature: float,
    seed: int | None,
) -> torch.Tensor:
    t = _check_temperature(name, temperature)
    if isinstance(p, torch.Tensor) and in_graph():
        # Reading the rate's value would break the graph: its shape is checked, and a value
        # outside (0, 1) gives NaN (the logs of the reference) rather than an error.
        _check_p_tensor(name, p)
        if not check_training(name, training):
            return input
        return concrete_reference(input, p.reshape(()), shape, resolve_seed(name, seed), t)
    value = _check_p(name, p)
    if not check_training(name, training) or value == 0.0:
        return input
    seed_value = resolve_seed(name, seed)
    if isinstance(seed_value, torch.Tensor):  # inside a graph or a transform
        return concrete_reference(input, p, shape, seed_value, t)
    p_tensor = p if isinstance(p, torch.Tensor) else None
    grad_p = p_tensor is not None and p_tensor.requires_grad
    if not (torch.is_grad_enabled() and (input.requires_grad or grad_p)):
        m = _factor(input, shape, value, seed_value, t)
        return (input.to(m.dtype) * m).to(input.dtype)
    p_arg = p_tensor.reshape(()) if p_tensor is not None else None
    out: torch.Tensor = _ConcreteFunction.apply(  # type: ignore[no-untyped-call]
        input, p_arg, value, shape, seed_value, t
    )
    return out


@register_function("element")
def concrete_dropout(
    input: torch.Tensor,
    p: float | torch.Tensor = 0.5,
    training: bool = True,
    *,
    temperature: float = 0.1,
    seed: int | None = None,
) -> torch.Tensor:
    """Concrete dropout of each element: a relaxed Bernoulli mask, differentiable in ``p``.

    ``output = input * z / (1 - p)`` with ``z = sigmoid(-(logit(p) + logit(u)) / t)`` and
    ``u ~ Uniform(0, 1)`` per element, from Gal, Hron & Kendall, "Concrete Dropout" (NeurIPS
    2017, https://arxiv.org/abs/1705.07832). Pass a rate that requires grad (a learned one, as
    :class:`dropkit.nn.ConcreteDropout` holds) to learn it; the uniforms come from the dropkit
    stream and are regenerated in backward, so only the input is kept for ``p``'s gradient.

    There is no ``inplace``: the gradient in ``p`` needs the input.

    Args:
        input: a floating-point tensor of any shape.
        p: the rate, a float in [0, 1) or a one-element tensor in (0, 1). Default: 0.5, as
            for every dropout function (the layers start from the paper's 0.1).
        training: apply the mask if True; otherwise return ``input`` itself. Default: True.
        temperature: the relaxation's temperature ``t`` > 0; smaller is closer to a hard mask.
            Default: 0.1, as in the paper.
        seed: the mask's seed in [0, 2**64). Default: drawn from torch's default CPU generator.

    Shape:
        - Input: any shape. Output: the same shape.

    Returns:
        ``input`` itself when ``training`` is False or a float ``p`` is 0.

    Example:
        >>> import torch
        >>> from dropkit.functional import concrete_dropout
        >>> p = torch.tensor(0.2, requires_grad=True)
        >>> y = concrete_dropout(torch.ones(10_000), p, seed=0)
        >>> round(y.mean().item(), 1)  # the mean is (close to) kept
        1.0
        >>> y.sum().backward()
        >>> p.grad is not None
        True
        >>> x = torch.ones(3)
        >>> concrete_dropout(x, p, training=False) is x
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            concrete_dropout, (input,), input, p, training, temperature=temperature, seed=seed
        )
    check_input("concrete_dropout", input)
    shape = tuple(input.shape)
    return _concrete("concrete_dropout", input, p, training, shape, temperature, seed)


_LAYOUTS = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}


def _channel(
    name: str,
    input: torch.Tensor,
    p: float | torch.Tensor,
    training: bool,
    temperature: float,
    seed: int | None,
    rank: int,
) -> torch.Tensor:
    check_input(name, input)
    if input.dim() == rank - 1:
        raise ValueError(
            f"{name}: expected a {rank}D input {_LAYOUTS[rank]}, got {rank - 1}D; for a single "
            "unbatched sample use input.unsqueeze(0)"
        )
    check_rank(name, input, (rank,), _LAYOUTS[rank])
    shape = _channel_noise_shape(input, False)
    return _concrete(name, input, p, training, shape, temperature, seed)


@register_function("channel1d")
def concrete_dropout1d(
    input: torch.Tensor,
    p: float | torch.Tensor = 0.5,
    training: bool = True,
    *,
    temperature: float = 0.1,
    seed: int | None = None,
) -> torch.Tensor:
    """Concrete dropout of whole channels of a sequence batch (one relaxed mask per channel).

    See :func:`concrete_dropout` for the mask, the arguments and the paper.

    Shape:
        - Input: ``(N, C, L)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import concrete_dropout1d
        >>> y = concrete_dropout1d(torch.ones(2, 4, 5), 0.3, seed=0)
        >>> bool((y == y[..., :1]).all())  # one factor per (sample, channel)
        True
    """
    if has_torch_function_unary(input):
        return handle_torch_function(
            concrete_dropout1d, (input,), input, p, training, temperature=temperature, seed=seed
        )
    return _channel("concrete_dropout1d", input, p, training, temperature, seed, 3)


@register_function("channel2d")
def concrete_dropout2d(
    input: torch.Tensor,
    p: float | torch.Tensor = 0.5,
    training: bool = True,
    *,
    temperature: float = 0.1,
    seed: int | None = None,
) -> torch.Tensor:
    """Concrete dropout of whole channels of an image batch (one relaxed mask per channel).

    See :func:`concrete_dropout` for the mask, the arguments and the paper.

    Shape:
        - Input: ``(N, C, H, W)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import concrete_dropout2d
        >>> y = concrete_dropout2d(torch.ones(2, 4, 3, 3), 0.3, seed=0)
        >>> bool((y.flatten(2) == y.flatten(2)[..., :1]).all())
        True
    """
    if has_torch_function_unary(input):
        return handle_torch_function(
            concrete_dropout2d, (input,), input, p, training, temperature=temperature, seed=seed
        )
    return _channel("concrete_dropout2d", input, p, training, temperature, seed, 4)


@register_function("channel3d")
def concrete_dropout3d(
    input: torch.Tensor,
    p: float | torch.Tensor = 0.5,
    training: bool = True,
    *,
    temperature: float = 0.1,
    seed: int | None = None,
) -> torch.Tensor:
    """Concrete dropout of whole channels of a volume batch (one relaxed mask per channel).

    See :func:`concrete_dropout` for the mask, the arguments and the paper.

    Shape:
        - Input: ``(N, C, D, H, W)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import concrete_dropout3d
        >>> concrete_dropout3d(torch.ones(1, 2, 2, 2, 2), 0.3, seed=0).shape
        torch.Size([1, 2, 2, 2, 2])
    """
    if has_torch_function_unary(input):
        return handle_torch_function(
            concrete_dropout3d, (input,), input, p, training, temperature=temperature, seed=seed
        )
    return _channel("concrete_dropout3d", input, p, training, temperature, seed, 5)


_GRID = 1 << 16


@functools.lru_cache(maxsize=1024)
def relaxed_moments(p: float, temperature: float) -> tuple[float, float]:
    """``(E[m], E[m^2])`` of the relaxed factor ``m = z / (1 - p)`` that concrete dropout
    multiplies by, by the midpoint rule over ``u`` on a grid of 2**16 points (float64).

    ``E[m]`` is not exactly 1 at a temperature above 0 (the relaxation is not mean-preserving);
    it tends to 1, and ``Var[m]`` to the hard mask's ``p / (1 - p)``, as the temperature goes to
    0. Moment propagation (``mc.predict(method="moments")``) uses these two numbers.

    Example:
        >>> from dropkit.functional._concrete import relaxed_moments
        >>> mean, second = relaxed_moments(0.2, 1e-4)
        >>> round(mean, 3), round(second - mean**2, 3)  # the hard mask's 1 and p/(1-p)
        (1.0, 0.25)
        >>> mean, second = relaxed_moments(0.2, 0.1)  # the paper's temperature
        >>> round(mean, 3), round(second - mean**2, 3)
        (0.998, 0.226)
    """
    u = (torch.arange(_GRID, dtype=torch.float64) + 0.5) / _GRID
    logit_p = math.log(p) - math.log1p(-p)
    m = torch.sigmoid(-(logit_p + torch.log(u) - torch.log1p(-u)) / temperature) / (1.0 - p)
    return float(m.mean()), float(m.square().mean())

"""The autograd paths behind every stochastic function.

Each op describes its noise as a small frozen object holding only Python numbers (shape, p,
seed, constants). A small mask is written scaled and multiplied by torch's own ``mul``, whose
native autograd saves it (:func:`apply_with_grad`); otherwise the mask-free op applies the
noise and its backward regenerates it from the same seed, so nothing input-sized is kept for
backward.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import torch
from torch.overrides import has_torch_function_unary

from dropkit.functional._compile import compiled_masked_affine
from dropkit.functional._validation import BELOW_ONE, draw_seed_tensor
from dropkit.kernels import (
    Seed,
    affine,
    auto_backend,
    masked_affine,
    placed,
    reusable_empty,
    select,
    stream_keep_mask,
    stream_normal,
)

__all__ = [
    "ElementMask",
    "GaussianNoise",
    "Noise",
    "TraceableNoise",
    "alpha_constants",
    "apply_noise",
    "apply_with_grad",
    "autograd_op",
    "inverted_scale",
    "small_dropout",
]


class Noise(Protocol):
    """Seeded noise that can be applied, and applied again identically in backward.

    Forward computes the masked affine map of :func:`dropkit.kernels.affine`
    (``input * where(keep, scale, 0)`` for dropout); backward, the gradient map
    ``grad * where(keep, scale, 0)``, with ``keep`` and ``scale`` regenerated from the seed.
    """

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The noise applied to ``x`` by the fastest backend, as a new tensor (int seed)."""
        ...

    def linear_part(self) -> Noise:
        """The same noise without shift and fill: applied to a gradient, it is the backward map
        (the map is diagonal, so it is its own adjoint)."""
        ...


class TraceableNoise(Noise, Protocol):
    """Noise that can also be built from torch operations, for graphs and transforms: every
    dropkit op's noise is one."""

    @property
    def seed(self) -> Seed:
        """A Python int eagerly; a 0-dim int64 tensor inside a graph or a transform."""
        ...

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The values of :meth:`apply` from torch operations only, differentiable by torch's
        autograd (any order, forward mode) and traceable; the seed may be a tensor."""
        ...


class ElementMask(NamedTuple):
    """A Bernoulli(1-p) keep mask of ``noise_shape`` from the dropkit stream, broadcast on use.

    A NamedTuple rather than a dataclass: it is built on every call, and tuples build fastest.
    """

    noise_shape: tuple[int, ...]
    p: float
    seed: Seed
    scale: float
    shift: float = 0.0
    fill: float = 0.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        seed = cast(int, self.seed)  # apply runs eagerly, where the seed is an int
        return masked_affine(x, self.noise_shape, self.p, seed, self.scale, self.shift, self.fill)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        keep = stream_keep_mask(self.noise_shape, self.p, self.seed, x.device)
        return affine(x, keep, self.scale, self.shift, self.fill)

    def linear_part(self) -> Noise:
        return self._replace(shift=0.0, fill=0.0) if self.shift or self.fill else self


@dataclass(frozen=True)
class GaussianNoise:
    """Multiplicative noise ``1 + sigma * z`` with ``z ~ N(0, 1)`` from the dropkit stream."""

    noise_shape: tuple[int, ...]
    sigma: float
    seed: Seed

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return placed(x, self.reference(x))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        noise = 1.0 + self.sigma * stream_normal(self.noise_shape, self.seed, x.device)
        return affine(x, None, noise, 0.0, 0.0)

    def linear_part(self) -> Noise:
        return self


class _NoiseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, noise: Noise, inplace: bool) -> torch.Tensor:
        if type(noise) is ElementMask:  # the common case: straight to the backend
            out = select(input).masked_affine(input, *noise)  # type: ignore[arg-type]
        else:
            out = noise.apply(input)
        ctx.noise = noise
        ctx.strides = out.stride()
        if inplace:
            ctx.mark_dirty(input)
            return input.copy_(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        linear = ctx.noise.linear_part()
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable (double backward)
            grad = apply_noise(grad_output, linear, False)
        elif type(linear) is ElementMask:  # the common case: straight to the backend
            grad = select(grad_output).masked_affine(grad_output, *linear)  # type: ignore[arg-type]
        else:
            grad = linear.apply(grad_output)
        return _grad_layout(grad, grad_output, ctx.strides), None, None


def _grad_layout(grad: torch.Tensor, grad_output: torch.Tensor, strides: Any) -> torch.Tensor:
    """The gradient in torch's layout: ``grad_output``'s where it is dense (the backends give
    that), the forward output's where it is not (an expanded gradient, as ``y.sum()`` sends:
    torch multiplies it by a mask laid out as the input)."""
    if grad.stride() == grad_output.stride() or grad.stride() == strides:
        return grad
    out = torch.empty_strided(grad.shape, strides, dtype=grad.dtype, device=grad.device)
    return out.copy_(grad)


def apply_noise(input: torch.Tensor, noise: Noise, inplace: bool) -> torch.Tensor:
    """Apply ``noise`` to ``input``: the one path from every op to a backend.

    - a tensor seed (inside ``torch.compile``, ``torch.export``, ``torch.jit.trace`` or a
      ``torch.func`` transform): torch operations only (:meth:`Noise.reference`), or under
      ``torch.compile`` the ``dropkit::masked_affine`` custom op for element masks;
    - autograd not recording (no grad mode, or an input that does not require grad): the
      backend directly, since ``Function.apply`` alone costs more than a small kernel;
    - otherwise :func:`apply_with_grad`: the saved-mask path for small masks, the mask-free autograd
      op, whose backward regenerates the mask from the seed, for the rest.
    """
    if isinstance(getattr(noise, "seed", None), torch.Tensor):  # a TraceableNoise
        if (
            torch.compiler.is_compiling()
            and isinstance(noise, ElementMask)
            and not torch._C._are_functorch_transforms_active()
        ):
            shape, p, seed, scale, shift, fill = noise
            out = compiled_masked_affine(
                input, shape, p, cast(torch.Tensor, seed), scale, shift, fill
            )
        else:
            out = cast(TraceableNoise, noise).reference(input)
        return input.copy_(out) if inplace else out
    if not (input.requires_grad and torch.is_grad_enabled()):
        if (
            type(noise) is ElementMask
            and input.dtype in _SAVED_MASK_DTYPES
            and not noise.shift
            and not noise.fill
            and input.is_cpu
            and noise.noise_shape != input.shape
            and math.prod(noise.noise_shape) < SAVED_MASK_BELOW
        ):
            # A small shared mask (drop_path's (N, 1, ...), channel dropout's (N, C, 1, ...)):
            # the scaled mask times torch's broadcasting multiply, as with autograd recording;
            # on a small input the broadcast kernel's set-up costs more than the input.
            return apply_with_grad(input, noise, inplace)
        if type(noise) is ElementMask:
            out = select(input).masked_affine(input, *noise)  # type: ignore[arg-type]
        else:
            out = noise.apply(input)
        return input.copy_(out) if inplace else out
    return apply_with_grad(input, noise, inplace)


#: Masks with fewer elements than this take the saved-mask path of :func:`apply_with_grad`.
SAVED_MASK_BELOW = 1 << 16
_SAVED_MASK_DTYPES = (torch.float32, torch.float64)


def apply_with_grad(input: torch.Tensor, noise: Noise, inplace: bool) -> torch.Tensor:
    """Apply ``noise`` (int seed) where autograd records it; one of two paths, the same bits.

    - **Saved mask**: a mask of fewer than :data:`SAVED_MASK_BELOW` elements (a small input,
      or a mask shared over most of a large one, as channel dropout's) scaling a float32 or
      float64 CPU input. The kernel writes the scaled mask ``where(keep, scale, 0)`` and
      ``input * mask`` is torch's own multiply, whose native autograd saves that mask (at most
      256 KiB in float32) and runs no Python in backward. On small tensors the Python of an
      ``autograd.Function`` (~10 us forward, more in backward) and the second mask generation
      cost more than the tensor itself.
    - **Mask-free** otherwise: the :class:`_NoiseFunction` op, whose backward regenerates the
      mask from the seed, so nothing input-sized is saved.

    The forward is ``input * where(keep, scale, 0)`` on both paths (the kernels multiply by the
    scaled mask), and the backward ``grad * where(keep, scale, 0)``, so outputs and gradients
    are bit-identical for a seed on either side of the threshold. Half precision stays
    mask-free: a native multiply would round ``scale`` to half precision first.
    """
    if (
        type(noise) is ElementMask
        and input.dtype in _SAVED_MASK_DTYPES
        and not noise.shift
        and not noise.fill
        and input.is_cpu
        and math.prod(noise.noise_shape) < SAVED_MASK_BELOW
    ):
        mask = select(input).scaled_mask(
            noise.noise_shape,
            noise.p,
            cast(int, noise.seed),
            noise.scale,
            input.dtype,
            input.device,
        )
        if not input.is_contiguous() and mask.shape == input.shape:
            mask = torch.empty_like(input).copy_(mask)  # laid out as the input: see below
        return input.mul_(mask) if inplace else torch.mul(input, mask)
    fast: torch.Tensor = autograd_op(input, noise, inplace)  # type: ignore[no-untyped-call]
    return fast


_PLAIN = (torch.Tensor, torch.nn.Parameter)
#: Per thread, the tensor :func:`draw_seed_tensor` draws into, kept by :func:`small_dropout`.
_seed_tensors = threading.local()
_c10d = torch.distributed.distributed_c10d if torch.distributed.is_available() else None


def small_dropout(
    input: torch.Tensor,
    p: float,
    training: bool = True,
    inplace: bool = False,
    noise_shape: object = None,
    seed: int | None = None,
) -> torch.Tensor | None:
    """``dropout(input, p)`` in training by the saved-mask path of :func:`apply_with_grad`, in
    as few Python steps as it takes; None, with nothing drawn, where this path does not apply.

    This is the commonest call of all: a dropout layer on a small hidden activation while
    training, where the cost is Python and dispatch rather than arithmetic. Inside a training
    step each call finds the caches cold, and every Python frame or torch op then costs a few
    microseconds (measured, docs/benchmarks.md): so this path is one frame with the checks
    inline, draws the seed into a tensor that the kernel reads (no ``.item()``), and writes
    the mask into a reused tensor (no allocation). The seed is the one the general path draws,
    and the mask the same, so the bits are those of the general path.

    The one entry check of both callers, :func:`dropkit.functional.dropout` and
    :class:`dropkit.nn.Dropout` (its ``forward`` calls this first, one frame fewer): the
    arguments are those of ``dropout``, and the path applies only to ``training is True``, a
    float ``p`` in (0, 1), no ``noise_shape``, ``seed`` or ``inplace``, and no
    ``__torch_function__`` override.
    """
    if (
        training is not True
        or type(p) is not float
        or not 0.0 < p < BELOW_ONE
        or noise_shape is not None
        or seed is not None
        or inplace is not False
        or has_torch_function_unary(input)
        # in_graph(), written out: dynamo folds is_compiling() and reads no further, so a
        # compiled or exported graph gets no guard on the input's size from this path.
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch._C._is_tracing()
        or torch._C._len_torch_dispatch_stack()  # a fake-tensor mode: tensors without memory
        or type(input) not in _PLAIN
        or not (
            input.requires_grad
            and input.dtype in _SAVED_MASK_DTYPES
            and input.is_cpu
            and 0 < (n := input.numel()) < SAVED_MASK_BELOW
            and torch.is_grad_enabled()
        )
    ):
        return None
    # The backend's drawn_scaled_mask(), written out: inside a training step each Python frame
    # costs a few microseconds (docs/benchmarks.md).
    found = auto_backend(input)  # None where a backend is forced: the general path
    if found is None or found.name != "numba":
        return None
    backend: Any = found  # NumbaBackend, with the attributes below
    # draw_seed_tensor()'s common case (a thread's later draws, no process group) written out
    # on the tensor it returned: the field under torch's ``_World.default_pg`` property is
    # read directly (a property is one more frame); where it is missing (another world object,
    # as torch's threaded test groups install), draw_seed_tensor asks the property.
    cell = getattr(_seed_tensors, "cell", None)
    if cell is None or getattr(getattr(_c10d, "_world", None), "_default_pg", True) is not None:
        cell, offset = draw_seed_tensor()  # this thread's first draw, or a process group
        if type(cell) is torch.Tensor:
            _seed_tensors.cell = cell
    else:
        cell.random_(0, 2**62)  # draw_seed_tensor's draw
        offset = 0
    mask = reusable_empty(input.shape, input.dtype)
    serial = n < backend.serial_below
    if not serial:
        backend.follow_threads()
    backend.entry_drawn_mask(
        mask.data_ptr(),
        n,
        cell.data_ptr(),
        1,
        offset - 2**64 if offset >= 2**63 else offset,
        backend.threshold(p),
        1.0 / (1.0 - p),
        input.dtype is torch.float64,
        serial,
    )
    if not input.is_contiguous():
        # The mask laid out as the input, as torch's dropout lays its own (torch.empty_like):
        # the product then has torch's layout, and so has its gradient, even one expanded
        # from y.sum() (which takes the mask's layout).
        mask = torch.empty_like(input).copy_(mask)
    return torch.mul(input, mask)


# ``Function.apply`` without its Python prologue (default-argument binding for setup_context,
# functorch unwrapping), which costs a few microseconds per call; that prologue is only needed
# under functorch transforms, which take the tensor-seed path of ``apply_noise`` instead.
# ``apply_with_grad`` calls it for masks too large for the saved-mask path.
autograd_op = super(torch.autograd.Function, _NoiseFunction).apply


def inverted_scale(p: float) -> float:
    """``1 / (1 - p)``, the factor that keeps the expectation; 0 at p = 1 (all dropped)."""
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def alpha_constants(p: float) -> tuple[float, float, float]:
    """``(scale, shift, fill)`` of alpha dropout (Klambauer et al. 2017, arXiv:1706.02515).

    Dropped units are set to SELU's negative saturation ``alpha' = -lambda * alpha`` and the
    result is transformed by ``a * y + b`` so that zero mean and unit variance are kept.
    """
    alpha_prime = -1.7580993408473766
    if p >= 1.0:
        return 0.0, 0.0, 0.0
    a = 1.0 / math.sqrt((1.0 - p) * (1.0 + p * alpha_prime**2))
    b = -a * alpha_prime * p
    return a, b, a * alpha_prime + b

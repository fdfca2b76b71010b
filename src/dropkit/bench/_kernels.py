"""Dropout kernels against torch: one op, forward and forward+backward, and the fused bias op."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

import dropkit.functional as DF
from dropkit.bench._timing import _repeat, _train_step, interleaved

__all__ = ["KernelRow", "bench_fused", "bench_kernels"]


@dataclass(frozen=True)
class KernelRow:
    """Median milliseconds of each contender for one (size, dtype, pass)."""

    numel: int
    dtype: str
    pass_: str  # "forward" or "forward+backward"
    times_ms: dict[str, float]

    def to_json(self) -> dict[str, object]:
        row = asdict(self)
        row["pass"] = row.pop("pass_")
        return row


def bench_kernels(
    sizes: Sequence[int],
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    *,
    p: float = 0.5,
    rounds: int = 7,
    compiled: bool = True,
) -> list[KernelRow]:
    """Forward and forward+backward of element-wise dropout on CPU tensors of each size.

    Contenders: ``dropkit`` (the default backend), ``torch`` (``F.dropout``), ``torch.compile``
    (``F.dropout`` compiled with dynamic shapes, once per dtype) and two copies: ``copy`` into an
    existing tensor (the memory-bandwidth limit) and ``clone`` (a copy into a new tensor, which
    also pays for fresh memory, as every out-of-place op does).
    """
    rows: list[KernelRow] = []
    for dtype in dtypes:
        torch_compiled = (
            torch.compile(lambda t: torch.nn.functional.dropout(t, p, True), dynamic=True)
            if compiled
            else None
        )
        for numel in sizes:
            x = torch.randn(numel).to(dtype)
            reps = max(1, (1 << 20) // numel)  # keep each timed call above timer noise
            sink = torch.empty_like(x)
            forward: dict[str, Callable[[], object]] = {
                "dropkit": functools.partial(DF.dropout, x, p),
                "torch": functools.partial(torch.nn.functional.dropout, x, p),
                "copy": functools.partial(sink.copy_, x),
                "clone": x.clone,
            }
            if torch_compiled is not None:
                forward["torch.compile"] = functools.partial(torch_compiled, x)
            times = interleaved({k: _repeat(v, reps) for k, v in forward.items()}, rounds)
            rows.append(
                KernelRow(
                    numel, str(dtype), "forward", {k: v / reps * 1e3 for k, v in times.items()}
                )
            )

            leaf = x.clone().requires_grad_()
            grad = torch.ones_like(x)
            train_step = functools.partial(_train_step, leaf=leaf, grad=grad)
            both: dict[str, Callable[[], object]] = {
                "dropkit": train_step(lambda t: DF.dropout(t, p)),
                "torch": train_step(lambda t: torch.nn.functional.dropout(t, p)),
            }
            if torch_compiled is not None:
                both["torch.compile"] = train_step(torch_compiled)
            times = interleaved({k: _repeat(v, reps) for k, v in both.items()}, rounds)
            rows.append(
                KernelRow(
                    numel,
                    str(dtype),
                    "forward+backward",
                    {k: v / reps * 1e3 for k, v in times.items()},
                )
            )
    return rows


def bench_fused(
    *, shape: tuple[int, ...] = (16, 512, 1024), p: float = 0.1, rounds: int = 7
) -> dict[str, dict[str, float]]:
    """``residual + dropout(x + bias)``: dropkit's fused op vs the eager torch expression.

    Returns median milliseconds per pass ("forward", "forward+backward") per contender.
    """
    x = torch.randn(shape)
    bias = torch.randn(shape[-1])
    residual = torch.randn(shape)

    def eager(x: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r + torch.nn.functional.dropout(x + b, p)

    def fused(x: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return DF.bias_dropout_add(x, b, r, p)

    results: dict[str, dict[str, float]] = {}
    forward = interleaved(
        {
            "torch eager": functools.partial(eager, x, bias, residual),
            "dropkit fused": functools.partial(fused, x, bias, residual),
        },
        rounds,
    )
    results["forward"] = {k: v * 1e3 for k, v in forward.items()}
    xs, bs, rs = (t.clone().requires_grad_() for t in (x, bias, residual))
    grad = torch.ones(shape)

    def step(op: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            xs.grad = bs.grad = rs.grad = None
            op(xs, bs, rs).backward(grad)  # type: ignore[no-untyped-call]

        return run

    both = interleaved({"torch eager": step(eager), "dropkit fused": step(fused)}, rounds)
    results["forward+backward"] = {k: v * 1e3 for k, v in both.items()}
    return results

"""Per-call cost of dropkit.nn.Dropout(0.5) on a 64x256 float32 input that requires grad.

    python benchmarks/bench_percall.py

Prints two things. The Python function calls made by one forward and by one backward (profile
"call" events: deterministic, so comparable across machines and loads), each named. And the
median time per call, interleaved in one process with a native ``x * 2`` (the floor of any
element-wise op) and with the bare CPU kernel on the same tensor (what is not Python); read
the ratios, the machine this was written on is shared and noisy. Summarized in
docs/benchmarks.md.

    python benchmarks/bench_percall.py --ops

times instead, on the same 64x256 float32 tensor and a random keep mask, the native torch ops a
small-tensor path could apply a mask with (no autograd): ``torch.where``, ``masked_fill``,
``threshold_backward`` with a float mask, and a multiply by the scaled mask, next to ``x * 2``
and the fused kernel (see docs/design.md, "The small-tensor path").

    python benchmarks/bench_percall.py --in-step

times one forward call of each dropout site inside the training step of the benchmark MLP
(64-256-128-10, batches of 64, Adam; ``dropkit.bench.bench_mlp``'s model and loop),
where each call finds the caches cold: ``nn.Identity`` (the module call alone), a multiply by
a fixed scaled mask (the native floor of the saved-mask path), dropkit's and torch's dropout.
The models' epochs are interleaved. See docs/design.md, "The small path".
"""

import statistics
import sys
import time
from collections.abc import Callable

import torch

from dropkit import nn
from dropkit.bench import DrawMaskMultiply
from dropkit.kernels import select


def python_calls(fn: Callable[[], object]) -> list[str]:
    names: list[str] = []

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            names.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names


def native_ops() -> None:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=generator)
    keep = torch.rand(64, 256, generator=generator) >= 0.5
    drop, ones, scaled = ~keep, keep.to(x.dtype), keep.to(x.dtype) * 2.0
    threshold_backward = torch.ops.aten.threshold_backward.default
    backend = select(x)
    cases: dict[str, Callable[[], object]] = {
        "x * 2": lambda: x * 2.0,
        "x * scaled mask": lambda: x * scaled,
        "threshold_backward(x, mask, 0.5)": lambda: threshold_backward(x, ones, 0.5),
        "torch.where(keep, x, 0)": lambda: torch.where(keep, x, 0.0),
        "x.masked_fill(drop, 0)": lambda: x.masked_fill(drop, 0.0),
        "fused kernel (Philox + apply)": lambda: backend.masked_affine(x, (64, 256), 0.5, 1, 2.0),
    }
    _report(cases, rounds=21, calls=50)


def _report(cases: dict[str, Callable[[], object]], *, rounds: int, calls: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    for name, values in times.items():
        print(f"{name:34s} {statistics.median(values):8.1f} us")


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(64, 256, requires_grad=True, generator=torch.Generator().manual_seed(0))
    upstream = torch.ones(64, 256)
    layer = nn.Dropout(0.5)
    for _ in range(5):
        layer(x).backward(upstream)
    out: list[torch.Tensor] = []
    forward = python_calls(lambda: out.append(layer(x)))
    backward = python_calls(lambda: out[0].backward(upstream))
    print(f"forward: {len(forward)} Python calls: {' > '.join(forward)}")
    print(f"backward: {len(backward)} Python calls: {' > '.join(backward)}")

    backend = select(x)
    detached = x.detach()
    # The forward's torch ops and kernel without the Python around them: the seed draw, the
    # mask written into a reused tensor (numba), the multiply that autograd records.
    native_parts = DrawMaskMultiply().forward

    cases: dict[str, Callable[[], object]] = {
        "dropkit forward": lambda: layer(x),
        "native parts of that forward": lambda: native_parts(x),
        "dropkit forward+backward": lambda: layer(x).backward(upstream),
        "kernel alone": lambda: backend.masked_affine(detached, (64, 256), 0.5, 1, 2.0),
        "x * 2 forward": lambda: x * 2.0,
        "x * 2 forward+backward": lambda: (x * 2.0).backward(upstream),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(25):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(50):
                fn()
            times[name].append((time.perf_counter() - start) / 50 * 1e6)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:30s} {value:8.1f} us")
    python_us = medians["dropkit forward"] - medians["native parts of that forward"]
    print(f"{'Python of the forward':30s} {python_us:8.1f} us (the difference of the first two)")


class _FixedMask(torch.nn.Module):
    """A multiply by one fixed scaled mask per shape: the saved-mask path without its mask."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: dict[torch.Size, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(x.shape)
        if mask is None:
            generator = torch.Generator().manual_seed(0)
            keep = torch.rand(x.shape, generator=generator) >= 0.5
            mask = self.masks[x.shape] = keep.to(x.dtype) * 2.0
        return torch.mul(x, mask)


class _Timed(torch.nn.Module):
    """Runs ``inner`` and adds its wall time to ``total`` (nanoseconds, calls)."""

    def __init__(self, inner: torch.nn.Module, total: list[int]) -> None:
        super().__init__()
        self.inner, self.total = inner, total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter_ns()
        out: torch.Tensor = self.inner(x)
        self.total[0] += time.perf_counter_ns() - start
        self.total[1] += 1
        return out


def in_step(epochs: int = 15) -> None:
    from dropkit.bench import mlp_epochs

    torch.set_num_threads(1)
    variants: dict[str, Callable[[], torch.nn.Module]] = {
        "nn.Identity (module call alone)": torch.nn.Identity,
        "x * fixed scaled mask (floor)": _FixedMask,
        "dropkit.nn.Dropout(0.5)": lambda: nn.Dropout(0.5),
        "torch.nn.Dropout(0.5)": lambda: torch.nn.Dropout(0.5),
    }
    totals = {name: [0, 0] for name in variants}
    timed = {
        name: lambda make=make, total=totals[name]: _Timed(make(), total)
        for name, make in variants.items()
    }
    epochs_of = mlp_epochs(timed)
    for run in epochs_of.values():
        run()  # warm-up, not counted
    for total in totals.values():
        total[:] = [0, 0]
    for _ in range(epochs):
        for run in epochs_of.values():
            run()
    for name, (nanoseconds, calls) in totals.items():
        print(f"{name:34s} {nanoseconds / calls / 1e3:8.1f} us per forward call in the step")


if __name__ == "__main__":
    if sys.argv[1:] == ["--ops"]:
        native_ops()
    elif sys.argv[1:] == ["--in-step"]:
        in_step()
    else:
        main()

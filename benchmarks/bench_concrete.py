"""Concrete dropout, forward+backward: dropkit's against a plain PyTorch implementation of the
paper's layer and against dropkit's fixed-rate Dropout; time and memory saved for backward.

Run from the repository root; the results are summarized in docs/benchmarks.md:

    python benchmarks/bench_concrete.py                 # sizes 2^16, 2^20, 2^22, float32
    python benchmarks/bench_concrete.py --rounds 3 --sizes 16   # a quick look

The three run side by side in one process, interleaved round by round, each on the same input
(a learned rate, a 0-dim tensor that requires grad, for both concrete versions):

- ``dropkit concrete``: :func:`dropkit.functional.concrete_dropout`;
- ``plain concrete``: the paper's layer written in PyTorch, as in its notebooks: uniform noise
  from ``torch.rand_like``, ``eps = 1e-7`` in the logs, the sigmoid relaxation, and autograd
  keeping what it needs for backward (the noise and the intermediates);
- ``dropkit Dropout``: :func:`dropkit.functional.dropout` at the same (fixed) rate.

"saved" is what autograd holds for backward (the distinct storages that ``saved_tensors_hooks``
sees, in bytes), as a multiple of the input's size. On a CUDA machine the same runs on the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dropkit import functional as dk_F


def plain_concrete(x: torch.Tensor, p: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The paper's relaxed dropout in plain PyTorch (the reference implementation's steps)."""
    eps = 1e-7
    u = torch.rand_like(x)
    drop = torch.log(p + eps) - torch.log(1 - p + eps) + torch.log(u + eps) - torch.log(1 - u + eps)
    drop = torch.sigmoid(drop / temperature)
    return x * (1 - drop) / (1 - p)


def _variants(p: float) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    return {
        "dropkit concrete": lambda x, rate: dk_F.concrete_dropout(x, rate),
        "plain concrete": plain_concrete,
        "dropkit Dropout": lambda x, rate: dk_F.dropout(x, p),
    }


def saved_bytes(
    op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, p: torch.Tensor
) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``op(x, p)``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        op(x, p)
    return sum(storages.values())


@dataclass(frozen=True)
class Row:
    size: int
    device: str
    ms: dict[str, float]  # median forward+backward time per variant
    saved: dict[str, float]  # saved bytes / input bytes per variant


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(size: int, device: torch.device, rounds: int, p: float = 0.1) -> Row:
    """Median forward+backward time of each variant on ``size`` float32 elements, interleaved."""
    x = torch.randn(size // 1024, 1024, device=device, requires_grad=True)
    rate = torch.tensor(p, device=device, requires_grad=True)
    grad = torch.randn_like(x)
    variants = _variants(p)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for op in variants.values():  # warm-up: kernels compiled, caches filled
        op(x, rate).backward(grad)
    for _ in range(rounds):
        for name, op in variants.items():
            _sync(device)
            start = time.perf_counter()
            op(x, rate).backward(grad)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    nbytes = x.numel() * x.element_size()
    saved = {name: saved_bytes(op, x, rate) / nbytes for name, op in variants.items()}
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return Row(size, device.type, ms, saved)


def table(rows: list[Row]) -> str:
    names = list(rows[0].ms)
    head = "| elements | device | " + " | ".join(f"{n} ms (saved)" for n in names)
    head += " | plain / dropkit concrete |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for r in rows:
        cells = " | ".join(f"{r.ms[n]:.2f} ({r.saved[n]:.2f}x)" for n in names)
        ratio = r.ms["plain concrete"] / r.ms["dropkit concrete"]
        lines.append(f"| 2^{r.size.bit_length() - 1} | {r.device} | {cells} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description="Concrete dropout forward+backward")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 20, 22], help="log2 sizes")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows = [bench(1 << s, d, args.rounds) for d in devices for s in args.sizes]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()

"""The default ``dropkit compare``'s training at 1 thread (its default) and at 2 (torch's).

    python benchmarks/bench_threads.py            # the default comparison's model and data
    python benchmarks/bench_threads.py --rounds 5 --epochs 2

Trains what the default comparison trains (mnist1d, MLP 256-128, Adam, 3 seeds stacked, at
rates 0, 0.2 and 0.5) for a few epochs, with each thread count in turn, interleaved round by
round after one untimed warm-up, and prints the median seconds (wall clock and the process's
CPU time) per epoch of one run and the ratio of the two counts. It also says whether each count
gave the same bits in every round and whether the two counts agree. Writes
benchmarks/results/threads.json. Summarized in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

from dropkit.experiments.batched import train_batched
from dropkit.experiments.datasets import load_dataset
from dropkit.experiments.threads import fixed_threads
from dropkit.experiments.train import RunResult, TrainConfig

RATES = (0.0, 0.2, 0.5)
SEEDS = (0, 1, 2)


def _digest(results: list[RunResult]) -> str:
    weights = b"".join(t.numpy().tobytes() for r in results for t in (r.model_state or {}).values())
    losses = repr([[e.train_loss for e in r.history] for r in results]).encode()
    return hashlib.sha256(weights + losses).hexdigest()[:16]


def measure(
    counts: tuple[int, ...] = (1, 2),
    *,
    rounds: int = 3,
    epochs: int = 1,
    dataset: str = "mnist1d",
    hidden: tuple[int, ...] = (256, 128),
) -> dict[str, object]:
    """Seconds per epoch of one run at each thread count, and the bits each count gave."""
    data = load_dataset(dataset)
    config = TrainConfig(hidden=hidden, epochs=epochs)
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}
    digests: dict[int, set[str]] = {n: set() for n in counts}
    with fixed_threads(counts[0]):  # untimed: the dropout kernels load on their first call
        train_batched(TrainConfig(hidden=hidden, epochs=1), data, max(RATES), SEEDS[:1])
    for _ in range(rounds):
        for n in counts:
            with fixed_threads(n):
                start, start_cpu = time.perf_counter(), time.process_time()
                results = [train_batched(config, data, rate, SEEDS) for rate in RATES]
                elapsed, used = time.perf_counter() - start, time.process_time() - start_cpu
            run_epochs = len(RATES) * len(SEEDS) * epochs
            seconds[n].append(elapsed / run_epochs)
            cpu[n].append(used / run_epochs)
            digests[n].add(_digest([r for rate_runs in results for r in rate_runs]))
    median = {n: statistics.median(s) for n, s in seconds.items()}
    return {
        "dataset": dataset,
        "hidden": list(hidden),
        "epochs": epochs,
        "rounds": rounds,
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "seconds_per_run_epoch": {str(n): s for n, s in seconds.items()},
        "median_seconds_per_run_epoch": {str(n): m for n, m in median.items()},
        "median_cpu_seconds_per_run_epoch": {str(n): statistics.median(c) for n, c in cpu.items()},
        "same_bits_every_round": {str(n): len(d) == 1 for n, d in digests.items()},
        "counts_agree": len(set().union(*digests.values())) == 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    row = measure(rounds=args.rounds, epochs=args.epochs)
    median = row["median_seconds_per_run_epoch"]
    assert isinstance(median, dict)
    cpu = row["median_cpu_seconds_per_run_epoch"]
    assert isinstance(cpu, dict)
    for n, s in median.items():
        print(f"{n} thread(s): {s * 1e3:8.1f} ms per epoch of one run, {cpu[n] * 1e3:8.1f} ms CPU")
    print(f"2 threads / 1 thread: {median['2'] / median['1']:.2f}x")
    print(f"load average {row['load_average']}, {row['cpus']} CPUs")
    print(f"same bits every round: {row['same_bits_every_round']}; counts agree: ", end="")
    print(row["counts_agree"])
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "threads.json").write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Active-learning scoring: dropkit.active on dropkit.mc vs Baal 2.1, side by side in one process.

    pip install --no-deps -r requirements/baal.txt
    python benchmarks/bench_active.py --rounds 5

1. Scoring a pool of 10,000 mnist1d inputs with BALD, S = 20, on the compare MLP (40 -> 256 ->
   128 -> 10, dropout 0.5 after each hidden layer, trained for 300 steps on 200 examples; its
   dropout is torch's ``nn.Dropout``, which Baal's ``MCDropoutModule`` switches on):
   ``mc.predict`` (sampling) + ``active.bald``; ``mc.predict(method="moments")`` +
   ``active.bald``; Baal's ``ModelWrapper.predict_on_dataset`` (its fastest path:
   ``replicate_in_memory=True``, batches of 1,000, no worker processes) + ``BALD``.
   mnist1d has 5,000 examples: the pool is its inputs repeated to 10,000.
2. BatchBALD choosing 10 of 1,000 candidates from the same S = 20 sampled probabilities:
   ``active.batch_bald`` at its default (1,024 configurations once the joint is no longer exact)
   and at 10,000 (Baal's count: S x ``num_draw`` = 20 x 500), vs Baal's ``BatchBALD``
   (``num_samples=9``: its first pick plus nine greedy ones).

Floors are timed beside them: the layers after the first dropout on S x N rows alone (what
any exact sampler computes, with the dropout masks and the scoring free), once a sample at a
time and once in blocks of 1,024 rows (cache-sized), and one deterministic forward (the unit of
the one-pass method's cost).

One thread for everything (torch and numpy), the ways interleaved in shuffled order each round,
medians reported. Writes benchmarks/results/active.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dropkit import active, mc
from dropkit.experiments.datasets import load_dataset


def _model(data) -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(40, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, data.num_classes),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data.x_train[:200], data.y_train[:200]
    model.train()
    for _ in range(300):
        rows = torch.randint(0, 200, (64,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        optimizer.step()
    return model.eval()


def _time(ways: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for fn in ways.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            ways[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import structlog
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # numpy's BLAS, for Baal's heuristics
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from baal.active.heuristics import BALD, BatchBALD
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    data = load_dataset("mnist1d")
    inputs = torch.cat([data.x_train, data.x_val, data.x_test])
    x = inputs.repeat((args.pool + len(inputs) - 1) // len(inputs), 1, 1)[: args.pool]
    model = _model(data)
    dataset = torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
    wrapper = ModelWrapper(
        MCDropoutModule(_model(data)),  # the same weights: _model is seeded
        TrainingArgs(batch_size=1000, use_cuda=False, workers=0, replicate_in_memory=True),
    )

    def dropkit_sampling() -> object:
        return active.bald(mc.predict(model, x, 20, seed=0))

    def dropkit_moments() -> object:
        return active.bald(mc.predict(model, x, 20, seed=0, method="moments"))

    def baal() -> object:
        probs = wrapper.predict_on_dataset(dataset, iterations=20, verbose=False)
        return BALD().get_uncertainties(probs)

    # Floors, not ways to score: what any exact sampler must compute at the least (the layers
    # after the first dropout on S x N rows, with dropout and scoring free), and one
    # deterministic forward (the unit of the one-pass method's cost).
    hidden = torch.relu(model[1](x.flatten(1)))

    @torch.no_grad()
    def floor_suffix() -> object:
        return [model[7](torch.relu(model[4](hidden))) for _ in range(20)]

    # The same suffix with the rows in blocks of 1,024, so that a block's activations stay in
    # the caches: the floor is the faster of the two, whichever that is on the machine.
    @torch.no_grad()
    def floor_blocks() -> object:
        return [
            model[7](torch.relu(model[4](hidden[start : start + 1024])))
            for _ in range(20)
            for start in range(0, len(hidden), 1024)
        ]

    @torch.no_grad()
    def floor_forward() -> object:
        return model(x)

    # the same scores first: the three ways rank the same pool
    ours = dropkit_sampling()
    theirs = baal()
    print(f"pool {len(x)}: mean BALD dropkit {float(ours.mean()):.4f}, Baal {theirs.mean():.4f}")
    scoring = _time(
        {
            "dropkit sampling": dropkit_sampling,
            "dropkit moments": dropkit_moments,
            "baal": baal,
            "floor: suffix matmuls only": floor_suffix,
            "floor: same, 1,024-row blocks": floor_blocks,
            "floor: one forward": floor_forward,
        },
        args.rounds,
    )
    candidates = mc.predict(model, x[:1000], 20, seed=1)
    probs = candidates.sample_probs.double().permute(1, 2, 0).numpy()  # Baal's [N, C, S]

    def batch_default() -> object:
        return active.batch_bald(candidates, 10)

    def batch_10000() -> object:
        return active.batch_bald(candidates, 10, configurations=10_000)

    def batch_baal() -> object:
        return BatchBALD(num_samples=9, num_draw=500).compute_score(probs)

    batch = _time(
        {
            "dropkit batch_bald (1024)": batch_default,
            "dropkit batch_bald (10000)": batch_10000,
            "baal BatchBALD": batch_baal,
        },
        max(1, args.rounds // 2),
    )
    print(f"scoring {len(x)} inputs, S = 20, BALD (median of {args.rounds}):")
    for name, seconds in scoring.items():
        print(f"  {name:28s} {seconds * 1e3:9.1f} ms   {scoring['baal'] / seconds:6.1f}x Baal")
    print("BatchBALD, 10 of 1,000, S = 20:")
    for name, seconds in batch.items():
        ratio = batch["baal BatchBALD"] / seconds
        print(f"  {name:28s} {seconds * 1e3:9.1f} ms   {ratio:6.1f}x Baal")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f}, one thread")
    output = Path(__file__).parent / "results" / "active.json"
    results = {
        "scoring_ms": {k: v * 1e3 for k, v in scoring.items()},
        "batchbald_ms": {k: v * 1e3 for k, v in batch.items()},
        "load_average": load,
    }
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

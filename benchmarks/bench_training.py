"""The runner's training loop vs the textbook DataLoader loop, one MLP epoch on digits.

    python benchmarks/bench_training.py

Prints seconds per epoch of one run: alone with in-memory batches, alone with the DataLoader,
and per run when dropkit compare trains three seeds as one stacked model; measured interleaved
in one process. Writes benchmarks/results/training.json. Summarized in docs/benchmarks.md.
"""

import json
from pathlib import Path

from dropkit.bench import bench_training_loop

if __name__ == "__main__":
    rows = bench_training_loop(epochs=15)
    for row in rows:
        print(f"{row.loop:20s} {row.epoch_s * 1e3:7.1f} ms per epoch")
    loader = rows[1].epoch_s
    print(f"DataLoader / in-memory, one run:      {loader / rows[0].epoch_s:.2f}x")
    print(f"DataLoader / in-memory, 3 runs stacked: {loader / rows[2].epoch_s:.2f}x")
    output = Path(__file__).parent / "results" / "training.json"
    output.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")

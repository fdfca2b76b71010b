"""Monte Carlo dropout: dropkit.mc.predict vs the train()+loop recipe vs replicating the input.

    python benchmarks/bench_mc.py

The CNN conv(3->64) relu pool, conv(64->128) relu pool, Dropout2d(0.25), linear(8192->512)
relu, Dropout(0.5), linear(512->10); 64 inputs of 3x32x32; S = 20 samples; the three ways
interleaved in one process. Writes benchmarks/results/mc.json; summarized in docs/benchmarks.md.
"""

import json
from pathlib import Path

from dropkit.bench import bench_mc

if __name__ == "__main__":
    times = bench_mc(rounds=7)
    shared = times["predict (shared prefix)"]
    for name, seconds in times.items():
        print(f"{name:26s} {seconds * 1e3:8.1f} ms   ({seconds / shared:.1f}x predict's time)")
    output = Path(__file__).parent / "results" / "mc.json"
    output.write_text(json.dumps({k: v * 1e3 for k, v in times.items()}, indent=2) + "\n")

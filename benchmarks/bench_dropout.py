"""Dropout speed on this machine: dropkit vs torch vs torch.compile vs a copy, and the MLP epoch.

Run from the repository root; the results land in benchmarks/results/ and are summarized in
docs/benchmarks.md:

    python benchmarks/bench_dropout.py            # full: sizes 2^16..2^25, float32 and bfloat16
    python benchmarks/bench_dropout.py --quick    # 3 sizes, under a minute

This is ``dropkit bench`` with the output path filled in.
"""

import sys
from pathlib import Path

from dropkit.cli import app

if __name__ == "__main__":
    output = Path(__file__).parent / "results" / "cpu.json"
    app(["bench", "--output", str(output), *sys.argv[1:]])

"""``benchmarks/bench_concrete.py`` run tiny: structure and the memory it measures. Speed is
for the benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_concrete", BENCHMARKS / "bench_concrete.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_plain_layer_is_the_papers_relaxation() -> None:
    bench = _script()
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = bench.plain_concrete(x, torch.tensor(0.3))
    kept = (y * 0.7 > 0.5).double().mean().item()
    assert abs(kept - 0.7) < 5 * (0.7 * 0.3 / 200_000) ** 0.5


def test_tiny_run_measures_time_and_saved_memory() -> None:
    bench = _script()
    rows = bench.main(["--sizes", "17", "--rounds", "1"])
    (row,) = [r for r in rows if r.device == "cpu"]
    assert set(row.ms) == {"dropkit concrete", "plain concrete", "dropkit Dropout"}
    assert all(t > 0 for t in row.ms.values())
    assert row.saved["dropkit concrete"] == 1.0  # the input, nothing else
    assert row.saved["plain concrete"] > 1.0  # the noise and intermediates too
    assert row.saved["dropkit Dropout"] == 0.0  # mask-free, fixed rate
    assert "| 2^17 | cpu |" in bench.table(rows)

"""``benchmarks/bench_moments.py`` run tiny: what it counts and times. Speed is for the
benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_moments", BENCHMARKS / "bench_moments.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_frames_counts_dropkit_functions_only() -> None:
    bench = _script()
    from dropkit import functional as dk_F

    counted = bench.frames(lambda: dk_F.dropout(torch.ones(3), 0.5, training=False))
    assert counted, "a dropkit function ran"
    assert all(":" in name and not name.startswith("/") for name in counted)
    assert not bench.frames(lambda: torch.ones(3) * 2)  # torch alone: nothing of dropkit's


def test_tiny_run_reports_every_model_and_both_methods() -> None:
    bench = _script()
    lines: list[str] = []
    report = bench.main(["--n", "4", "--rounds", "1"], print_=lines.append)
    assert set(report["frames"]) == {"sampling", "moments"}
    assert all(count > 0 for count in report["frames"].values())
    assert set(report["times"]) == {f"{name} N=4" for name in bench.MODELS}
    for times in report["times"].values():
        assert set(times) == set(bench.METHODS)
        assert all(seconds > 0 for seconds in times.values())
    assert sum(line.startswith("| digits cnn | 4 |") for line in lines) == 1

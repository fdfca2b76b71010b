"""``benchmarks/bench_frames_dropout.py``: the counts it reports are those of the calls it names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_frames_dropout", BENCHMARKS / "bench_frames_dropout.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_are_exact_and_see_the_small_path() -> None:
    bench = _script()
    calls = bench.cases()
    small = bench.count(calls["F.dropout, 64x256, grad"])
    assert small == bench.count(calls["F.dropout, 64x256, grad"])  # a count, not a timing
    general = bench.count(calls["F.dropout, 2^17, grad"])  # the mask-free autograd op
    assert 0 < small[0] <= small[1]
    assert small[0] < general[0]  # the small path skips the general path's checks and noise


def test_a_call_outside_dropkit_counts_no_dropkit_function() -> None:
    bench = _script()
    assert bench.count(lambda: sorted([3, 1, 2]))[0] == 0
    assert bench.count(lambda: bench.cases())[0] > 0  # building modules runs dropkit's code

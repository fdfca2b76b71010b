"""``benchmarks/bench_frames.py`` as a regression guard: the Python functions of dropkit that one
``mc.predict`` call enters. Counted, not timed: the count is the same on every run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"

#: A third of the 224 that one sampling call on the benchmark MLP entered before the
#: interception base (docs/benchmarks.md, "Python calls per mc.predict"), for the Monte Carlo
#: machinery: the dropout op's own calls (dropkit's kernel, which now runs nn.Dropout's
#: dropout in the sampler, where torch's C++ op ran before) are left out.
SAMPLING_AT_MOST = 74


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_frames", BENCHMARKS / "bench_frames.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_sampling_enters_at_most_a_third_of_the_functions_it_did() -> None:
    bench = _script()
    calls = bench.count("sampling", "torch.nn.Dropout")
    assert calls["mc/_predict.py:predict"] == 1  # the count sees the call itself
    assert bench.machinery(calls) <= SAMPLING_AT_MOST, calls.most_common(10)


def test_the_count_is_the_same_on_every_call() -> None:
    bench = _script()
    first = bench.count("sampling", "dropkit.nn.Dropout")
    assert bench.count("sampling", "dropkit.nn.Dropout") == first

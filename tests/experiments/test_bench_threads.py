"""``benchmarks/bench_threads.py`` run tiny: what it reports. Speed is for the benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_threads", BENCHMARKS / "bench_threads.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_each_count_is_timed_every_round_and_gives_the_same_bits() -> None:
    before = torch.get_num_threads()
    # One count: more than one thread on a busy 2-core test machine takes seconds per epoch.
    torch.set_num_threads(2)
    try:
        row = _script().measure((1,), rounds=2, epochs=1, dataset="synthetic", hidden=(16,))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert row["rounds"] == 2
    seconds = row["seconds_per_run_epoch"]
    assert set(seconds) == {"1"}
    assert all(len(s) == 2 and all(t > 0 for t in s) for s in seconds.values())
    assert set(row["median_cpu_seconds_per_run_epoch"]) == {"1"}
    assert row["same_bits_every_round"] == {"1": True}
    assert isinstance(row["counts_agree"], bool)

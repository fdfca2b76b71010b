"""The paper's qualitative result: the learned dropout rate falls as the training set grows.

Gal, Hron & Kendall ("Concrete Dropout", NeurIPS 2017, https://arxiv.org/abs/1705.07832, Fig. 2
and 4) show that the rates Concrete dropout learns shrink with more data, as the epistemic
uncertainty they stand for should. Here on a tiny synthetic regression, ``y = sin(2x) + noise``
with ``x ~ U(-2, 2)``: an MLP 1-16-16-1 with a ConcreteDropout before each hidden-to-next layer,
trained full batch by Adam on the Gaussian negative log-likelihood (the known noise level, so
the model precision is folded into the loss and ``tau = 1``), with the paper's regularizer
settings ``weight_regularizer = l**2 / N`` and ``dropout_regularizer = 2 / N``.

The figure in docs/learned-rates.md::

    python -m dropkit.experiments.learned_rates --out docs/images/learned-rates.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch

import dropkit
from dropkit import nn as dk_nn
from dropkit.experiments.threads import fixed_threads

__all__ = ["RateRun", "learned_rate", "plot", "rates_by_size"]

NOISE = 0.3
LENGTH_SCALE = 1e-2


@dataclass(frozen=True)
class RateRun:
    """One training run: its data set size, seed, and each concrete layer's final rate."""

    size: int
    seed: int
    rates: tuple[float, ...]

    @property
    def mean_rate(self) -> float:
        return sum(self.rates) / len(self.rates)


def learned_rate(size: int, seed: int, *, steps: int = 150, hidden: int = 16) -> RateRun:
    """Train on ``size`` samples drawn with ``seed``; return the learned rates.

    Runs on one thread (restored afterwards), so that it is reproducible and quick on a busy
    machine.
    """
    with fixed_threads(1):
        generator = torch.Generator().manual_seed(seed)
        x = torch.rand(size, 1, generator=generator) * 4 - 2
        y = torch.sin(2 * x) + NOISE * torch.randn(size, 1, generator=generator)
        torch.manual_seed(seed)
        model = dropkit.concrete(
            torch.nn.Sequential(
                torch.nn.Linear(1, hidden),
                torch.nn.ReLU(),
                torch.nn.Dropout(0.1),
                torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(),
                torch.nn.Dropout(0.1),
                torch.nn.Linear(hidden, 1),
            ),
            weight_regularizer=LENGTH_SCALE**2 / size,
            dropout_regularizer=2.0 / size,
        )
        rates = [p for name, p in model.named_parameters() if name.endswith("p_logit")]
        weights = [p for name, p in model.named_parameters() if not name.endswith("p_logit")]
        optimizer = torch.optim.Adam(
            [{"params": weights, "lr": 1e-2}, {"params": rates, "lr": 5e-2}]
        )
        for _ in range(steps):
            optimizer.zero_grad()
            nll = (model(x) - y).square().mean() / (2 * NOISE**2)
            (nll + dropkit.regularization(model)).backward()
            optimizer.step()
        learned = tuple(m.p for m in model.modules() if isinstance(m, dk_nn.ConcreteDropout))
    return RateRun(size, seed, learned)


def rates_by_size(
    sizes: Sequence[int], seeds: Sequence[int], *, steps: int = 150, hidden: int = 16
) -> list[RateRun]:
    """:func:`learned_rate` for every size and seed (the same seeds at every size)."""
    return [learned_rate(n, s, steps=steps, hidden=hidden) for n in sizes for s in seeds]


def plot(runs: Sequence[RateRun], path: str) -> None:
    """Each layer's learned rate against the data set size (log-log), one dot per run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    layers = len(runs[0].rates)
    for layer in range(layers):
        sizes = sorted({r.size for r in runs})
        axis.scatter(
            [r.size * (1.06 if layer else 0.94) for r in runs],
            [r.rates[layer] for r in runs],
            s=14,
            alpha=0.7,
            label=f"layer {layer + 1}",
        )
        medians = [
            sorted(r.rates[layer] for r in runs if r.size == n)[
                len([r for r in runs if r.size == n]) // 2
            ]
            for n in sizes
        ]
        axis.plot(sizes, medians, linewidth=1)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("training set size N")
    axis.set_ylabel("learned dropout rate p")
    axis.set_title("Concrete dropout: the learned rate falls with more data")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="learned-rates.png")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    runs = rates_by_size(args.sizes, range(args.seeds), steps=args.steps)
    for run in runs:
        print(f"N={run.size:5d} seed={run.seed}  " + "  ".join(f"{p:.4f}" for p in run.rates))
    plot(runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""dropkit in a Lightning run: early dropout, the forgotten-eval guard and Monte Carlo validation.

A small MLP on two noisy interleaved spirals (made here, nothing is downloaded), trained for a
few epochs on the CPU::

    python examples/lightning_mc.py                 # one process
    python examples/lightning_mc.py --devices 2     # data-parallel, 2 CPU processes (gloo)

Each validation epoch logs the Monte Carlo predictive's NLL, ECE, mutual information and
accuracy (``mc_nll``, ...); with ``--out DIR`` every process writes what it logged to
``DIR/rank-<r>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from dropkit.integrations.lightning import ConvertDropout, DropoutSchedule, EvalGuard, MCValidation


def spirals(n: int, seed: int) -> TensorDataset:
    """Two interleaved spirals with Gaussian noise: ``(x, y)`` with x of shape [n, 2]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    t = torch.rand(n, generator=g) * 3 * math.pi
    x = torch.stack([t * torch.cos(t + math.pi * y), t * torch.sin(t + math.pi * y)], 1) / 10
    return TensorDataset(x + 0.05 * torch.randn(n, 2, generator=g), y)


class SpiralNet(L.LightningModule):
    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Dropout(p),
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Dropout(p),
            torch.nn.Linear(64, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (2: DDP, gloo)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--method", default="sampling", choices=["sampling", "moments"])
    parser.add_argument("--out", type=Path, default=None, help="write each rank's scores here")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    train = DataLoader(spirals(512, seed=0), batch_size=64, shuffle=True)
    val = DataLoader(spirals(256, seed=1), batch_size=64)
    mc = MCValidation(samples=20, method=args.method)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        callbacks=[
            ConvertDropout(),
            DropoutSchedule("early", epochs=args.epochs - 1),  # no dropout in the last epoch
            EvalGuard(),
            mc,
        ],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SpiralNet(), train, val)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"world_size": trainer.world_size, "history": mc.history}
        (args.out / f"rank-{trainer.global_rank}.json").write_text(json.dumps(payload))
    if trainer.is_global_zero:
        for epoch, scores in enumerate(mc.history):
            print(f"epoch {epoch}: " + ", ".join(f"mc_{k} {v:.3f}" for k, v in scores.items()))
    return mc.history[-1]


if __name__ == "__main__":
    main()

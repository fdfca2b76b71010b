"""How close one-pass moment propagation comes to Monte Carlo, per covariance form.

    python benchmarks/bench_moments_accuracy.py DIR [DIR ...] [--reference 1000] [--limit 1000]

Each DIR is an output directory of ``dropkit compare`` (its ``checkpoints/*.pt``, loaded as in
bench_uncertainty.py); two more models are trained here, seeded: a residual MLP with LayerNorm
(digits) and a small regression MLP with input and hidden dropout (scikit-learn's diabetes).
The reference is MC dropout with S = ``--reference`` (1000) samples. Per model and method:
median logit variance ratio to the reference, NLL and ECE relative error, misclassification
AUROC difference, mean KL(reference || method) of the predictive distributions, Spearman
correlation of BALD (mutual information) with the reference's, and CPU time next to
``predict`` with S = 30. MC with S = 10 is scored too: its KL is the bar for the others.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dropkit import mc
from dropkit import nn as dk_nn
from dropkit.metrics import (
    expected_calibration_error,
    misclassification_auroc,
    negative_log_likelihood,
)

sys.path.insert(0, str(Path(__file__).parent))

PROTOTYPES = ("jacobian", "full")  # research forms, scored beside the library's
DRAWS = 1000  # draws from a moment method's Gaussian for the scores: the network is not rerun


# ------------------------------------------------------------------ models trained here


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block: ``x + dropout(W2 relu(W1 LN(x)))``."""

    def __init__(self, width: int, p: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = nn.ReLU()
        self.drop1 = dk_nn.Dropout(p)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop2 = dk_nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop2(self.fc2(self.drop1(self.act(self.fc1(self.norm(x))))))


def residual_mlp(inputs: int, classes: int, width: int = 64, p: float = 0.3) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, width),
        ResidualBlock(width, p),
        ResidualBlock(width, p),
        nn.LayerNorm(width),
        nn.Linear(width, classes),
    )


def regression_mlp(inputs: int, width: int = 64, p: float = 0.1) -> nn.Module:
    return nn.Sequential(
        dk_nn.Dropout(p),
        nn.Linear(inputs, width),
        nn.ReLU(),
        dk_nn.Dropout(p),
        nn.Linear(width, width),
        nn.ReLU(),
        dk_nn.Dropout(p),
        nn.Linear(width, 1),
    )


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Callable[..., torch.Tensor],
    epochs: int,
) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            opt.zero_grad()
            loss(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def trained_models() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor, str]]:
    from sklearn.datasets import load_diabetes, load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1300], perm[1300:]
    res = _train(residual_mlp(64, 10), x[train], y[train], nn.functional.cross_entropy, 30)
    diabetes = load_diabetes()
    xr = torch.tensor(diabetes.data, dtype=torch.float32)
    xr = (xr - xr.mean(0)) / xr.std(0)
    yr = torch.tensor(diabetes.target, dtype=torch.float32)[:, None]
    yr = (yr - yr.mean()) / yr.std()
    perm = torch.randperm(len(xr), generator=torch.Generator().manual_seed(0))
    rtrain, rtest = perm[:350], perm[350:]
    reg = _train(regression_mlp(10), xr[rtrain], yr[rtrain], nn.functional.mse_loss, 200)
    return [
        ("digits residual-MLP+LayerNorm p=0.3", res, x[test], y[test], "classification"),
        ("diabetes regression MLP p=0.1", reg, xr[rtest], yr[rtest], "regression"),
    ]


def compare_models(directories: list[Path]) -> list[tuple[str, nn.Module, Any, Any, str]]:
    from bench_uncertainty import _load

    found = []
    for directory in directories:
        for name, model, data in _load(directory):
            found.append((name, model, data.x_test, data.y_test, "classification"))
    return found


# ------------------------------------------------------------------ prototypes
# The state of a tensor: mean m [N, *S], unattributed variance e [N, *S] and a factor L
# [N, *S, r] over r independent noise sources, Cov = L L^T + diag(e) (form "lowrank"), or a
# full covariance C [N, D, D] of a flat tensor (form "full").


def _phi(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _relu_cov_exact(
    m: torch.Tensor, c: torch.Tensor, nodes: int = 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and full covariance of relu(x), x ~ N(m, C), C [N, D, D].

    Off the diagonal, Price's theorem (dE[f(x)g(y)]/dCov = E[f'(x) g'(y)]) with Plackett's
    identity (dPhi2/drho = phi2): Cov = s_i s_j [rho Phi(a) Phi(b) + int_0^rho (rho - t)
    phi2(a, b; t) dt], by Gauss-Legendre on [0, rho]: the quantity Wu et al. (2019)
    approximate in closed form. The diagonal is the rectified Gaussian's (exact).
    """
    from dropkit.mc._moments._gaussian import relu_moments

    v = torch.diagonal(c, dim1=-2, dim2=-1).clamp_min(1e-30)
    mean, var = relu_moments(m, v.clone())
    s = v.sqrt()
    a = (m / s).clamp(-9, 9)
    rho = (c / (s[:, :, None] * s[:, None, :])).clamp(-0.999, 0.999)
    t, w = np.polynomial.legendre.leggauss(nodes)
    out = rho * (torch.special.ndtr(a)[:, :, None] * torch.special.ndtr(a)[:, None, :])
    ai, bj = a[:, :, None], a[:, None, :]
    for tk, wk in zip(t, w, strict=True):
        r = rho * (tk + 1) / 2  # nodes on [0, rho]
        phi2 = torch.exp(-(ai * ai - 2 * r * ai * bj + bj * bj) / (2 * (1 - r * r))) / (
            2 * math.pi * torch.sqrt(1 - r * r)
        )
        out = out + (wk * rho / 2) * (rho - r) * phi2
    cov = out * s[:, :, None] * s[:, None, :]
    idx = torch.arange(m.shape[1])
    cov[:, idx, idx] = var
    return mean, cov


class Proto:
    """A module walker for the benchmark models, propagating one covariance form."""

    def __init__(self, form: str) -> None:
        self.form = form  # "lowrank", "jacobian", "full"

    # -- lowrank / jacobian state: (m, e, L or None)

    def run(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [N, K], covariance [N, K, K]) of the outputs."""
        with torch.no_grad():
            state = self.module(model, (x, torch.zeros_like(x), None))
        m, e, f = state
        if self.form == "full":
            return m, f
        cov = torch.diag_embed(e)
        if f is not None:
            cov = cov + f @ f.transpose(-1, -2)
        return m, cov

    def module(self, mod: nn.Module, st: Any) -> Any:
        if isinstance(mod, nn.Sequential):
            for child in mod:
                st = self.module(child, st)
            return st
        if isinstance(mod, ResidualBlock):
            skip = st
            st = self.module(mod.norm, st)
            for child in (mod.fc1, mod.act, mod.drop1, mod.fc2, mod.drop2):
                st = self.module(child, st)
            return self.add(skip, st)
        if isinstance(mod, nn.Flatten):
            m, e, f = st
            n = m.shape[0]
            if f is not None and self.form != "full":
                f = f.reshape(n, -1, f.shape[-1])
            return m.reshape(n, -1), e.reshape(n, -1), f
        if isinstance(mod, nn.Linear):
            return self.linear(mod, st)
        if isinstance(mod, nn.ReLU):
            return self.relu(st)
        if isinstance(mod, dk_nn.Dropout2d):
            return self.channel_dropout(float(mod.p), st)
        if isinstance(mod, dk_nn.Dropout):
            return self.dropout(float(mod.p), st)
        if isinstance(mod, nn.LayerNorm):
            return self.layer_norm(mod, st)
        raise NotImplementedError(type(mod).__name__)

    def _total(self, st: Any) -> torch.Tensor:
        _m, e, f = st
        if self.form == "full" and f is not None:
            return torch.diagonal(f, dim1=-2, dim2=-1)
        return e if f is None else e + f.square().sum(-1)

    def dropout(self, p: float, st: Any) -> Any:
        m, e, f = st
        if self.form == "full" and f is not None:
            v = torch.diagonal(f, dim1=-2, dim2=-1)
            c = f.clone()
            idx = torch.arange(m.shape[1])
            c[:, idx, idx] = (v + m * m) / (1 - p) - m * m
            return m, e, c
        norm = 0.0 if f is None else f.square().sum(-1)
        return m, e / (1 - p) + (norm + m * m) * (p / (1 - p)), f

    def channel_dropout(self, p: float, st: Any) -> Any:
        m, e, f = st  # [N, C, H, W]
        n, ch = m.shape[:2]
        scale = math.sqrt(p / (1 - p))
        cols = torch.zeros((*m.shape, ch))
        for c in range(ch):
            cols[:, c, ..., c] = m[:, c] * scale
        norm = 0.0 if f is None else f.square().sum(-1)
        e = e / (1 - p) + norm * (p / (1 - p))
        f = cols if f is None else torch.cat([f, cols], -1)
        if self.form == "full":
            flat = f.reshape(n, -1, f.shape[-1])
            cov = flat @ flat.transpose(-1, -2) + torch.diag_embed(e.reshape(n, -1))
            return m, torch.zeros_like(e), cov.reshape(n, *m.shape[1:], -1)
        return m, e, f

    def linear(self, mod: nn.Linear, st: Any) -> Any:
        m, e, f = st
        w = mod.weight
        mean = nn.functional.linear(m, w, mod.bias)
        if self.form == "full":
            if f is None:
                c = (w[None] * e[:, None, :]) @ w.T
            else:
                f = f.reshape(m.shape[0], m.shape[1], m.shape[1]) if f.dim() != 3 else f
                c = w @ f @ w.T
            return mean, torch.zeros_like(mean), c
        cols = w[None] * e.sqrt()[:, None, :]  # [N, Dout, Din]: e's units are the sources
        keep = (e > 0).any(0)
        cols = cols[..., keep]
        f = cols if f is None else torch.cat([torch.einsum("oi,nir->nor", w, f), cols], -1)
        return mean, torch.zeros_like(mean), f

    def relu(self, st: Any) -> Any:
        from dropkit.mc._moments._gaussian import relu_moments

        m, e, f = st
        if self.form == "full" and f is not None:
            mean, c = _relu_cov_exact(m, f)
            return mean, e, c
        v = self._total(st)
        mean, var = relu_moments(m, v.clone())
        g = torch.special.ndtr((m / v.clamp_min(1e-30).sqrt()).clamp(-9, 9))
        if f is None:
            return mean, var, None
        f = f * g[..., None]
        if self.form == "jacobian":
            return mean, e * g * g, f
        return mean, (var - f.square().sum(-1)).clamp_min(0.0), f

    def layer_norm(self, mod: nn.LayerNorm, st: Any) -> Any:
        m, e, f = st
        d = m.shape[-1]
        v = self._total(st)
        centered = m - m.mean(-1, keepdim=True)
        inv = (
            centered.square().mean(-1, keepdim=True) + v.mean(-1, keepdim=True) + mod.eps
        ).rsqrt()
        scale = inv * mod.weight
        mean = centered * scale + mod.bias
        if self.form == "full":
            a = scale[..., None] * (torch.eye(d) - 1.0 / d)  # [N, D, D]
            return mean, e, a @ f @ a.transpose(-1, -2)
        e = (e * (1 - 2 / d) + e.mean(-1, keepdim=True) / d) * scale * scale
        if f is not None:
            f = (f - f.mean(-2, keepdim=True)) * scale[..., None]
        return mean, e, f

    def add(self, a: Any, b: Any) -> Any:
        (ma, ea, fa), (mb, eb, fb) = a, b
        if self.form == "full":
            raise NotImplementedError("full covariance: the skip-branch cross-covariance")
        if fa is None:
            f = fb
        elif fb is None:
            f = fa
        else:
            if fa.shape[-1] < fb.shape[-1]:
                fa = nn.functional.pad(fa, (0, fb.shape[-1] - fa.shape[-1]))
            f = fa + fb
        return ma + mb, ea + eb, f


def proto_predict(
    form: str, model: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of the logits by a prototype form; the CNN's convolutional body runs
    through the library's (diagonal) moments up to its last channel dropout."""
    if isinstance(model, nn.Sequential) and isinstance(model[0], nn.Sequential):
        body, head = model[0], model[1]
        prefix = nn.Sequential(*list(body)[:-1])
        r = mc.predict(prefix, x, method="moments", seed=0)
        start = (r.mean, r.variance, None)
        proto = Proto(form)
        with torch.no_grad():
            st = proto.module(body[-1], start)
            st = proto.module(head, st)
        m, e, f = st
        if form == "full":
            return m, f
        return m, torch.diag_embed(e) + (0 if f is None else f @ f.transpose(-1, -2))
    if form == "full" and any(isinstance(mod, ResidualBlock) for mod in model.modules()):
        raise NotImplementedError("full")
    return Proto(form).run(model, x)


# ------------------------------------------------------------------ scores


def _gaussian_draws(mean: torch.Tensor, cov: torch.Tensor, draws: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    k = mean.shape[-1]
    chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(k))
    eps = torch.randn((draws, *mean.shape), generator=g)
    return mean + torch.einsum("nij,snj->sni", chol, eps)


def _probs_from(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sp = torch.softmax(samples, -1)
    probs = sp.mean(0)

    def ent(q: torch.Tensor) -> torch.Tensor:
        return -(q * q.clamp_min(1e-12).log()).sum(-1)

    bald = (ent(probs) - ent(sp).mean(0)).clamp_min(0)
    return probs, bald


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _score(
    samples: torch.Tensor,
    var: torch.Tensor,
    ref: dict[str, Any],
    y: torch.Tensor,
    task: str,
) -> dict[str, float]:
    row = {"var_ratio": float((var / ref["var"].clamp_min(1e-12)).median())}
    if task == "regression":
        tau = ref["tau"]
        mean = samples.mean(0)
        # Gaussian predictive log-likelihood, with observation noise 1/tau: log-mean-exp over
        # the draws (as Gal & Ghahramani's code does for MC).
        ll = (
            torch.logsumexp(-0.5 * tau * (y[None] - samples) ** 2, 0)
            - math.log(samples.shape[0])
            - 0.5 * math.log(2 * math.pi)
            + 0.5 * math.log(tau)
        )
        row["nll"] = float(-ll.mean())
        row["rmse"] = float(((mean - y) ** 2).mean().sqrt())
        return row
    probs, bald = _probs_from(samples)
    row["nll"] = negative_log_likelihood(probs, y)
    row["ece"] = expected_calibration_error(probs, y)
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    row["error_auroc"] = misclassification_auroc(probs, y, ent)
    pr = ref["probs"]
    row["kl"] = float(
        (pr * (pr.clamp_min(1e-12).log() - probs.clamp_min(1e-12).log())).sum(-1).mean()
    )
    row["bald_spearman"] = _spearman(bald, ref["bald"])
    return row


def _cpu(fn: Callable[[], Any], rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        fn()
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, reference: int, rounds: int
) -> dict[str, dict[str, float]]:
    r = mc.predict(model, x, reference, seed=0)
    ref: dict[str, Any] = {"var": r.variance}
    if task == "regression":
        # tau: the noise precision that maximizes the reference's held-out likelihood, so
        # every method is scored with the same observation noise.
        resid = ((r.mean - y) ** 2).mean() - r.variance.mean()
        ref["tau"] = float(1.0 / resid.clamp_min(1e-3))
    else:
        ref["probs"], ref["bald"] = _probs_from(r.samples)
    rows: dict[str, dict[str, float]] = {}
    rows[f"MC S={reference}"] = _score(r.samples, r.variance, ref, y, task)
    for s in (10, 30):
        rs = mc.predict(model, x, s, seed=1)
        rows[f"MC S={s}"] = _score(rs.samples, rs.variance, ref, y, task)
    times: dict[str, Callable[[], Any]] = {"MC S=30": lambda: mc.predict(model, x, 30, seed=1)}
    for form in ("diagonal", "lowrank"):
        res = mc.predict(model, x, DRAWS, method="moments", seed=1, covariance=form)
        rows[form] = _score(res.samples, res.variance, ref, y, task)
        forms = getattr(res, "covariance", {})
        rows[form]["diagonal_places"] = float(sum(v != "lowrank" for v in forms.values()))
        times[form] = lambda form=form: mc.predict(
            model, x, method="moments", seed=1, covariance=form
        )
    for form in PROTOTYPES:
        if form == "full" and task != "regression":
            continue  # N x D x D x 24 quadrature nodes per ReLU: minutes on the wider models
        try:
            mean, cov = proto_predict(form, model, x)
        except NotImplementedError:
            continue
        samples = _gaussian_draws(mean, cov, DRAWS)
        rows[form] = _score(samples, torch.diagonal(cov, dim1=-2, dim2=-1), ref, y, task)
        times[form] = lambda form=form: proto_predict(form, model, x)
    torch.set_num_threads(1)
    for name, fn in times.items():
        rows[name]["cpu_s"] = _cpu(fn, rounds)
    torch.set_num_threads(2)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directories", nargs="*", type=Path)
    parser.add_argument("--reference", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1000, help="at most this many test inputs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    for name, model, x, y, task in [*compare_models(args.directories), *trained_models()]:
        x, y = x[: args.limit], y[: args.limit]
        rows = evaluate(model, x, y, task, args.reference, args.rounds)
        report[name] = rows
        print(f"## {name}  (N={len(x)})")
        keys = sorted({k for row in rows.values() for k in row})
        print("| method | " + " | ".join(keys) + " |")
        for method, row in rows.items():
            print(
                f"| {method} | "
                + " | ".join(f"{row.get(k, float('nan')):.4g}" for k in keys)
                + " |"
            )
        sys.stdout.flush()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "moments_accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

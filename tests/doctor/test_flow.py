"""The tracing rules: each against a planted mistake and a correct model; state restored."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropkit import nn as dk_nn
from dropkit.doctor import check
from dropkit.experiments.models import build_model


def codes(model: nn.Module, x, **kw) -> list[str]:
    return check(model, x, **kw).codes()


def test_dk002_dropout_on_the_output() -> None:
    bad = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Dropout(0.3))
    report = check(bad, torch.randn(2, 4))
    assert report.codes() == ["DK002"]
    assert report.findings[0].where == "3"
    through_shape = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.2), nn.Unflatten(1, (2, 3)))
    assert codes(through_shape, torch.randn(2, 4)) == ["DK002"]
    good = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    assert codes(good, torch.randn(2, 4)) == []


def test_dk003_element_dropout_on_conv_maps() -> None:
    bad = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.2), nn.Conv2d(4, 4, 3))
    assert codes(bad, torch.randn(2, 3, 8, 8)) == ["DK003"]
    good = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(4, 4, 3))
    assert codes(good, torch.randn(2, 3, 8, 8)) == []

    class Attention(nn.Module):  # 4D attention probabilities are not a conv map
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.1)

        def forward(self, q: torch.Tensor) -> torch.Tensor:
            scores = torch.softmax(q @ q.transpose(-1, -2), dim=-1)
            return self.drop(scores) @ q

    assert codes(Attention(), torch.randn(2, 2, 5, 4)) == []


def test_dk005_dropout_before_batchnorm() -> None:
    bad = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.BatchNorm1d(8))
    assert codes(bad, torch.randn(4, 4)) == ["DK005"]
    good = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2)
    )
    assert codes(good, torch.randn(4, 4)) == []


class Residual(nn.Module):
    def __init__(self, mode: str, p: float = 0.1) -> None:
        super().__init__()
        self.mode = mode
        self.f = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "skip":
            return self.drop(x) + self.f(x)
        return x + self.drop(self.f(x))


def test_dk006_dropout_on_the_identity_path() -> None:
    report = check(Residual("skip"), torch.randn(2, 8))
    assert report.codes() == ["DK006"]
    assert report.findings[0].where == "drop"
    assert codes(Residual("branch"), torch.randn(2, 8)) == []


def test_dk007_heavy_dropout_in_a_residual_branch() -> None:
    report = check(Residual("branch", p=0.5), torch.randn(2, 8))
    assert report.codes() == ["DK007"]
    assert report.findings[0].severity == "info"


class Functional(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "always-on":
            return self.fc(F.dropout(h, 0.5))  # forgot training=self.training
        if self.kind == "alpha-default":
            return self.fc(F.alpha_dropout(h, 0.2))  # torch's default: training=False
        if self.kind == "sdpa":
            q = h.view(x.shape[0], 1, 2, 4)
            return F.scaled_dot_product_attention(q, q, q, dropout_p=0.1).flatten(1)
        if self.kind == "sdpa-right":
            q = h.view(x.shape[0], 1, 2, 4)
            p = 0.1 if self.training else 0.0
            return F.scaled_dot_product_attention(q, q, q, dropout_p=p).flatten(1)
        return self.fc(F.dropout(h, 0.5, self.training))


def test_dk008_dk009_dk013_functional_calls() -> None:
    x = torch.randn(2, 8)
    report = check(Functional("always-on"), x)
    assert report.codes() == ["DK008"]
    assert report.findings[0].where == ""  # the model's own forward made the call
    assert codes(Functional("alpha-default"), x) == ["DK009"]
    assert codes(Functional("sdpa"), x) == ["DK013"]
    assert codes(Functional("sdpa-right"), x) == []
    assert codes(Functional("right"), x) == []


def test_dk010_channel_dropout_of_the_wrong_rank() -> None:
    bad = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Dropout2d(0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns too, and then does something else
        assert "DK010" in codes(bad, torch.randn(2, 3, 10))
    good = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Dropout1d(0.2), nn.Conv1d(4, 4, 3))
    assert codes(good, torch.randn(2, 3, 10)) == []


def test_dk011_dropout_before_a_saturating_activation() -> None:
    bad = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Sigmoid(), nn.Linear(8, 2))
    assert codes(bad, torch.randn(2, 4)) == ["DK011"]
    good = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 2))
    assert codes(good, torch.randn(2, 4)) == []


def test_check_leaves_everything_as_it_was() -> None:
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2)
    ).eval()
    model[1].train()
    model[0].register_forward_hook(lambda *a: None)
    x = torch.randn(16, 4) * 3 + 1
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    check(model, x)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(model[0]._forward_hooks) == 1


def test_data_dependent_control_flow_that_fx_cannot_trace() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.drop = nn.Dropout(0.3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # torch.fx.symbolic_trace fails on this
                x = self.fc(x)
            return self.drop(x)

    with pytest.raises(Exception):  # noqa: B017,PT011
        torch.fx.symbolic_trace(Branchy())
    assert codes(Branchy(), torch.ones(2, 4)) == ["DK002"]


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (
            nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, 0.1, batch_first=True), 2),
            torch.randn(2, 5, 16),
        ),
        (build_model("rescnn", (3, 16, 16), 10, rate=0.2), torch.randn(2, 3, 16, 16)),
        (build_model("cnn", (3, 16, 16), 10, rate=0.2), torch.randn(2, 3, 16, 16)),
        (build_model("mlp", (40,), 10, rate=0.5), torch.randn(2, 40)),
    ],
    ids=["transformer", "rescnn", "cnn", "mlp"],
)
def test_standard_architectures_have_no_errors_or_warnings(model, x) -> None:
    report = check(model, x)
    assert report.ok, report.findings


def test_dropkit_layers_are_seen() -> None:
    bad = nn.Sequential(nn.Conv2d(3, 4, 3), dk_nn.Dropout(0.2), nn.Conv2d(4, 4, 3))
    assert codes(bad, torch.randn(2, 3, 8, 8)) == ["DK003"]


class DropkitFunctional(nn.Module):
    def __init__(self, right: bool) -> None:
        super().__init__()
        self.right = right
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import dropkit.functional as DF

        if self.right:
            return self.fc(DF.dropout(self.fc(x), 0.3, self.training))
        return self.fc(DF.dropout(self.fc(x), 0.3))  # forgot training=self.training


def test_dropkit_functional_calls_are_seen_like_torch_ones() -> None:
    x = torch.randn(2, 8)
    assert codes(DropkitFunctional(right=False), x) == ["DK008"]
    assert codes(DropkitFunctional(right=True), x) == []
    fused = nn.Sequential(nn.Linear(8, 8))
    import dropkit.functional as DF

    class Epilogue(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = torch.zeros(8)
            return fused(DF.bias_dropout_add(x, b, x, 0.1, self.training))

    assert codes(Epilogue(), x) == []

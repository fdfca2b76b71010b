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


class EncoderDecoder(nn.Module):
    """T5's shape: the encoder ends in a dropout whose output feeds the decoder's cross-attention
    and is also returned beside the logits."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Dropout(0.1))
        self.cross = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        memory = self.encoder(x)
        logits = self.head(torch.tanh(self.cross(memory) + y))
        if self.as_dict:
            return {"logits": logits, "encoder_last_hidden_state": memory}
        return logits, memory


@pytest.mark.parametrize("as_dict", [True, False])
def test_dk002_an_encoders_final_dropout_is_not_the_output(as_dict) -> None:
    inputs = {"x": torch.randn(2, 4), "y": torch.randn(2, 8)}
    assert codes(EncoderDecoder(as_dict), inputs) == []

    class OnlyReturned(EncoderDecoder):  # the dropped tensor is the output users read
        def forward(self, x: torch.Tensor, y: torch.Tensor):
            return self.encoder(x), self.head(y)

    assert codes(OnlyReturned(as_dict), inputs) == ["DK002"]


class DenseBlock(nn.Module):
    """DenseNet's recipe: each layer's dropped features are concatenated into the next one's
    BatchNorm input."""

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(channels + 2 * i), nn.ReLU(), nn.Conv2d(channels + 2 * i, 2, 3, 1, 1)
            )
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            new = F.dropout(layer(torch.cat(features, 1)), 0.2, self.training)
            features.append(new)
        return torch.cat(features, 1).mean((2, 3), keepdim=True)


def test_dk005_sees_through_cat_and_a_repeated_mistake_is_one_finding() -> None:
    assert codes(DenseBlock(4, layers=4), torch.randn(2, 4, 6, 6)) == ["DK003", "DK005"]
    blocks = nn.Sequential(DenseBlock(4, 3), DenseBlock(10, 3), nn.Flatten())
    report = check(blocks, torch.randn(2, 4, 6, 6))
    assert report.codes() == ["DK003", "DK005"]
    assert "; the same in 1 more DenseBlock module (1)" in report.findings[0].message
    good = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(4, 4, 3)
    )
    assert codes(good, torch.randn(2, 3, 8, 8)) == []


def test_dk016_dropout_twice_in_a_row() -> None:
    bad = nn.Sequential(
        nn.Linear(4, 8), nn.Dropout(0.2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(8, 2)
    )
    report = check(bad, torch.randn(2, 4))
    assert report.codes() == ["DK016"]
    assert report.findings[0].where == "3"
    assert "in effect p=0.44" in report.findings[0].message
    good = nn.Sequential(
        nn.Linear(4, 8),
        nn.Dropout(0.2),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.Dropout(0.3),
        nn.Linear(8, 2),
    )
    assert codes(good, torch.randn(2, 4)) == []
    channel_then_element = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Dropout2d(0.2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(144, 2)
    )
    assert codes(channel_then_element, torch.randn(2, 3, 8, 8)) == []
    # Dropout then stochastic depth on a residual branch is the usual recipe, not a repeat.
    branch = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), dk_nn.DropPath(0.1))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch = branch

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.branch(x)

    assert codes(nn.Sequential(Block(), nn.Linear(8, 2)), torch.randn(2, 8)) == []


class FunctionalRate(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(self.fc(x), self.p, self.training))


def test_dk017_functional_rate_above_one_half() -> None:
    report = check(FunctionalRate(0.7), torch.randn(2, 8))
    assert report.codes() == ["DK017"]
    assert "drops 0.7" in report.findings[0].message
    assert codes(FunctionalRate(0.5), torch.randn(2, 8)) == []


class ScaledLinear(nn.Module):
    """A user's layer with parameters and no submodules: the doctor sees the calls inside it."""

    def __init__(self, mistake: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))
        self.mistake = mistake

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight
        return F.dropout(x, 0.3, training=True if self.mistake else self.training)


def test_mistakes_inside_a_leaf_module_with_parameters() -> None:
    model = nn.Sequential(ScaledLinear(mistake=True), nn.Linear(8, 2))
    report = check(model, torch.randn(2, 8))
    assert report.codes() == ["DK008"]
    assert report.findings[0].where == "0"
    assert (
        codes(nn.Sequential(ScaledLinear(mistake=False), nn.Linear(8, 2)), torch.randn(2, 8)) == []
    )


class Keywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        h = self.drop(self.embed(input_ids))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return {"logits": self.head(h.mean(1))}


def test_keyword_positional_and_tensor_inputs() -> None:
    ids = torch.randint(0, 10, (2, 5))
    assert check(Keywords(), {"input_ids": ids, "attention_mask": torch.ones(2, 5)}).ok
    assert check(Keywords(), (ids, torch.ones(2, 5))).ok
    assert check(Keywords(), ids).ok
    with pytest.raises(TypeError, match="needs str keys"):
        check(Keywords(), {0: ids})

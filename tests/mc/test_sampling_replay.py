"""predict in several passes, on models that try to catch the replayed prefix out: Python state,
mutated arguments, in-place writes after the first dropout, draws the registry does not know,
and stock models. The reference is the same call under ``torch.inference_mode()``, where the
prefix is computed in every pass (its tensors keep no version counter), which gives the same
samples bit for bit on a model that computes the same prefix each time."""

from __future__ import annotations

import itertools

import pytest
import torch
import zoo_models as zoo
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from dropkit.mc import predict

SAMPLES = 6


@pytest.fixture
def one_sample_per_pass(monkeypatch):
    """A budget that holds one sample of any first dropout's input, and any prefix cheap."""
    monkeypatch.setattr("dropkit.mc._sampler.REPLICATED_ELEMENTS", 1)
    monkeypatch.setattr("dropkit.mc._sampler.PREFIX_SHARE_ABOVE", 10**9)


class _Calls(TorchFunctionMode):
    """Counts the layers' calls that reach torch below ``predict`` (a replayed one does not)."""

    LAYERS = frozenset({F.linear, F.embedding, F.conv2d, F.layer_norm})

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func in self.LAYERS
        return func(*args, **(kwargs or {}))


def _both(make, inputs, **options):
    """``predict`` on a fresh model as it runs, and on another under inference mode."""
    replayed = predict(make(), inputs, samples=SAMPLES, seed=0, **options)
    with torch.inference_mode():
        recomputed = predict(make(), inputs, samples=SAMPLES, seed=0, **options)
    return replayed, recomputed


# ------------------------------------------------------------------------ models with state


class SuffixUpdatesBuffer(nn.Module):
    """The prefix scales by a buffer that the suffix increments in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(x * self.scale)
        self.scale.add_(1)
        return h


class MutatedList(nn.Module):
    """The prefix pads by a list attribute that each forward changes in place."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = [0, 0]
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pad[1] += 1
        h = nn.functional.pad(x, self.pad)  # the same list object each pass, longer pads
        return self.drop(h).sum(-1, keepdim=True)


class SignedZero(nn.Module):
    """The prefix fills with 0.0 and -0.0 on alternate forwards (equal, but atan2 tells)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        zero = 0.0 if self.calls % 2 else -0.0
        angle = torch.atan2(torch.full_like(x, zero), -torch.ones_like(x))  # pi or -pi
        return self.drop(x * angle)


class LateWrite(nn.Module):
    """The suffix of every other forward adds to a prefix tensor in place: in one of the two
    phases the recording pass sees no write, and the pass after the next must not be given
    the written tensor."""

    phase = 0

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        position = x.sum(0)  # not batched: never replicated
        h = self.drop(x + position)
        if self.calls % 2 == self.phase:
            position.add_(100)
        return h + position


class LateWriteOdd(LateWrite):
    phase = 1


class ListOutput(nn.Module):
    """The prefix takes a list out of a tensor and changes it in place before using it."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x[:, 0].tolist()
        scale[0] += 1  # a replayed list would carry the last pass's increment
        return self.drop(x * torch.tensor(scale).unsqueeze(1))


class Cache(nn.Module):
    """A dict cache in forward: the first forward computes the prefix, the rest reuse it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(10, 8), nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)
        self.cache: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if id(x) not in self.cache:
            self.cache[id(x)] = torch.relu(self.fc1(x))
        h = self.cache[id(x)]
        h2 = self.drop(h)
        h.relu_()  # in place on a prefix tensor in the suffix: replicated, so a copy
        return self.fc2(h2 + h)


class Hooked(nn.Module):
    """A forward hook that counts its calls and scales the output by the count, a pre-hook
    that adds a view of a prefix tensor, a tuple out of the prefix, a kwargs-only call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(10, 8), nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)
        self.count = 0
        self.fc1.register_forward_hook(self._scale)

    def _scale(self, module, args, out):
        self.count += 1
        return out * self.count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.fc1(x), 4, dim=1)
        h = torch.cat(tensors=(b, a), dim=1)
        view = h[:, :4]
        return self.fc2(self.drop(h)) + view.sum(-1, keepdim=True)


STATEFUL = [
    SuffixUpdatesBuffer, MutatedList, SignedZero, LateWrite, LateWriteOdd, ListOutput, Cache,
    Hooked,
]  # fmt: skip


@pytest.mark.parametrize("make", STATEFUL, ids=lambda make: make.__name__)
def test_stateful_prefix_gives_the_recomputed_samples(make, one_sample_per_pass) -> None:
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(0)) + 1
    replayed, recomputed = _both(make, x)
    assert replayed.strategy == recomputed.strategy == "shared-prefix"
    assert torch.equal(replayed.samples, recomputed.samples)


def test_a_stateful_prefix_changes_the_samples(one_sample_per_pass) -> None:
    """Two of the models above compute a different prefix in every pass, so that the
    comparison has something to find (a replay that skips its checks fails it)."""
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(0)) + 1
    scaled = predict(SuffixUpdatesBuffer(), x, samples=SAMPLES, seed=0).samples
    ratio = scaled / (2 * x)  # a kept element is 2 * scale * x
    scales = [float(r[r != 0].round(decimals=4).unique().item()) for r in ratio.flatten(1)]
    assert [b - a for a, b in itertools.pairwise(scales)] == [1.0] * (SAMPLES - 1)
    signs = predict(SignedZero(), x, samples=SAMPLES, seed=0).samples.flatten(1)
    kept_sign = [float(row[row != 0].sign().unique().item()) for row in signs]
    assert all(a == -b for a, b in itertools.pairwise(kept_sign))


# ------------------------------------------------------------------ draws before the dropout


class Gumbel(nn.Module):
    """A draw before the first dropout by a function that is not registered as random."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(nn.functional.gumbel_softmax(x, tau=1.0))


@pytest.mark.parametrize("passes", ["one", "several"])
def test_an_unregistered_draw_in_the_prefix_gives_each_sample_its_own(passes, request) -> None:
    if passes == "several":
        request.getfixturevalue("one_sample_per_pass")
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    result = predict(Gumbel(), x, samples=SAMPLES, seed=0)
    assert result.strategy.startswith("replicate")
    assert "random generator advanced" in result.strategy
    flat = result.samples.flatten(1)
    for i in range(SAMPLES):
        for j in range(i + 1, SAMPLES):
            both = (flat[i] != 0) & (flat[j] != 0)  # kept in both: 1.25 * the Gumbel softmax
            assert both.sum() > 10
            assert not torch.equal(flat[i][both], flat[j][both])


@pytest.mark.filterwarnings("ignore:predict.*draws random numbers")
def test_a_registered_draw_in_the_prefix_is_not_shared(one_sample_per_pass) -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(x + torch.randn_like(x))  # the module starts the suffix

    x = torch.zeros(4, 10)
    result = predict(nn.Sequential(nn.Identity(), Noisy()), x, samples=SAMPLES, seed=0)
    noise = result.samples.flatten(1)
    assert all(not torch.equal(noise[i], noise[j]) for i in range(6) for j in range(i + 1, 6))


# ------------------------------------------------------------------------ stock models


class _Embedded(nn.Module):
    """A linear embedding before ``body`` (whose first op is its dropout), so that there is a
    prefix to replay; ``body`` returns a tensor or a tuple whose first item is the output."""

    def __init__(self, body: nn.Module, features: int, width: int, **call: bool) -> None:
        super().__init__()
        self.embed, self.body, self.call = nn.Linear(features, width), body, call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        out = self.body(h, h, h, **self.call) if self.call else self.body(h)
        return out[0] if isinstance(out, tuple) else out


def _sequence(g: torch.Generator) -> torch.Tensor:
    return torch.randn(zoo.BATCH, 5, 16, generator=g)


TORCH_MODELS = {
    "transformer-encoder": lambda: _Embedded(
        nn.TransformerEncoder(
            nn.TransformerEncoderLayer(32, 2, 64, dropout=0.1, batch_first=True), 2,
            enable_nested_tensor=False),
        16, 32),
    "mha": lambda: _Embedded(
        nn.MultiheadAttention(32, 2, dropout=0.1, batch_first=True), 16, 32,
        need_weights=False),
    "lstm": lambda: _Embedded(nn.LSTM(24, 8, num_layers=2, dropout=0.2, batch_first=True), 16, 24),
    "gru": lambda: _Embedded(nn.GRU(24, 8, num_layers=2, dropout=0.2, batch_first=True), 16, 24),
}  # fmt: skip


def _case(name: str) -> zoo.Case:
    return next(case for case in zoo.CASES if case.name == name)


def _check_parity(make, inputs) -> None:
    with _Calls() as replaying:
        replayed = predict(make(), inputs, samples=SAMPLES, seed=0)
    with torch.inference_mode(), _Calls() as recomputing:
        recomputed = predict(make(), inputs, samples=SAMPLES, seed=0)
    assert replayed.strategy == recomputed.strategy == "shared-prefix"
    assert torch.equal(replayed.samples, recomputed.samples)
    assert replaying.calls < recomputing.calls  # the prefix was replayed (else no test)
    flat = replayed.samples.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))


@pytest.mark.parametrize("name", ["bert", "bert-eager", "gpt2", "vit-hf"])
def test_hugging_face_models_replay_the_recomputed_samples(name, one_sample_per_pass) -> None:
    zoo.import_transformers()
    case = _case(name)
    _check_parity(case.build, case.example())


@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_torch_models_replay_the_recomputed_samples(name, one_sample_per_pass) -> None:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return TORCH_MODELS[name]().eval()

    _check_parity(make, _sequence(torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_and_inputs_that_require_grad(dtype, one_sample_per_pass) -> None:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return (
            nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
            .to(dtype)
            .eval()
        )

    x = torch.randn(4, 10, dtype=dtype, generator=torch.Generator().manual_seed(0))
    _check_parity(make, x.requires_grad_())
    assert not predict(make(), x, samples=2, seed=0).samples.requires_grad  # under no_grad

"""dropkit.convert swaps torch's dropout layers and nothing else."""

from __future__ import annotations

import logging

import pytest
import torch

import dropkit
from dropkit import nn


class CustomDropout(torch.nn.Dropout):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * 2


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.Dropout2d(0.1),
        torch.nn.Flatten(),
        torch.nn.Sequential(torch.nn.Linear(4 * 6 * 6, 8), torch.nn.Dropout(0.3, inplace=True)),
        torch.nn.AlphaDropout(0.2),
        torch.nn.FeatureAlphaDropout(0.15),
        torch.nn.Dropout1d(0.05),
        torch.nn.Dropout3d(0.25),
        CustomDropout(0.4),
    )


def test_convert_swaps_every_torch_dropout_and_keeps_settings(caplog) -> None:
    model = _model()
    model[3].eval()
    with caplog.at_level(logging.INFO, logger="dropkit"):
        converted = dropkit.convert(model)
    assert "swapped 6 dropout layers" in caplog.text
    expected = [
        (1, nn.Dropout2d, 0.1),
        (4, nn.AlphaDropout, 0.2),
        (5, nn.FeatureAlphaDropout, 0.15),
        (6, nn.Dropout1d, 0.05),
        (7, nn.Dropout3d, 0.25),
    ]
    for index, cls, p in expected:
        assert type(converted[index]) is cls
        assert converted[index].p == p
    inner = converted[3][1]
    assert type(inner) is nn.Dropout
    assert inner.p == 0.3
    assert inner.inplace
    assert not inner.training
    assert converted[1].training
    # A subclass with its own forward is left alone.
    assert type(converted[8]) is CustomDropout
    # The original is untouched (deep copy by default) and parameters are equal.
    assert type(model[1]) is torch.nn.Dropout2d
    assert converted[0].weight is not model[0].weight
    torch.testing.assert_close(converted[0].weight, model[0].weight)


def test_convert_inplace_and_eval_equivalence() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Dropout(0.5), torch.nn.Linear(5, 2))
    model.eval()
    x = torch.randn(3, 5)
    before = model(x)
    same = dropkit.convert(model, inplace=True)
    assert same is model
    assert type(model[1]) is nn.Dropout
    assert torch.equal(model(x), before)


def test_convert_a_bare_dropout_and_nothing_to_swap() -> None:
    assert type(dropkit.convert(torch.nn.Dropout(0.1))) is nn.Dropout
    with pytest.warns(UserWarning, match="convert: found no dropout layer to swap"):
        dropkit.convert(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"convert: expected an nn\.Module"):
        dropkit.convert("model")  # type: ignore[type-var]


def test_convert_models_all_hold_torch_dropout_that_convert_swaps() -> None:
    from dropkit.bench import convert_models

    for make, x in convert_models(scale=1 / 32).values():
        model = make()
        count = sum(type(m) is torch.nn.Dropout for m in model.modules())
        assert count >= 2
        converted = dropkit.convert(model)
        assert not any(type(m) is torch.nn.Dropout for m in converted.modules())
        assert converted(x).shape == model(x).shape


def test_a_reused_instance_is_swapped_everywhere_and_stays_shared() -> None:
    class TwoNames(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.drop = self.drop_again = torch.nn.Dropout(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop_again(self.fc(self.drop(x)))

    shared = torch.nn.Dropout(0.3)
    model = torch.nn.Sequential(shared, torch.nn.Linear(4, 4), shared, TwoNames())
    converted, report = dropkit.convert(model, return_report=True)
    assert type(converted[0]) is nn.Dropout
    assert converted[2] is converted[0]
    assert type(converted[3].drop) is nn.Dropout
    assert converted[3].drop_again is converted[3].drop
    assert report.count == 2  # two instances, each counted once
    assert not any(type(m) is torch.nn.Dropout for m in converted.modules())


def test_inplace_converts_a_bare_dropout_layer_itself() -> None:
    layer = torch.nn.Dropout(0.3, inplace=True)
    calls = []
    layer.register_forward_hook(lambda *args: calls.append(1))
    assert type(dropkit.convert(layer)) is nn.Dropout
    assert type(layer) is torch.nn.Dropout  # a copy by default
    same = dropkit.convert(layer, inplace=True)
    assert same is layer
    assert type(layer) is nn.Dropout
    assert layer.p == 0.3
    assert layer.inplace
    x = torch.ones(1000)
    layer.eval()
    assert layer(x) is x
    assert calls == [1]  # the caller's hooks are kept
    layer.train()
    kept = int(layer(torch.ones(10_000)).ne(0).sum())
    assert abs(kept - 7000) < 5 * (10_000 * 0.3 * 0.7) ** 0.5


class HFStyleAttention(torch.nn.Module):
    """As Hugging Face attention does: keep an nn.Dropout, pass its rate to SDPA, never call it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.dropout = torch.nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).transpose(1, 3).unbind(2)
        p = self.dropout.p if self.training else 0.0
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return out.transpose(1, 2).flatten(2)


class FunctionalHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop_rate = 0.2
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.dropout(x.mean(1), self.drop_rate, self.training)
        return self.fc(x)


def test_the_report_says_what_stays_torchs_and_why() -> None:
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lstm = torch.nn.LSTM(8, 8, dropout=0.2)
    model = torch.nn.Sequential(
        HFStyleAttention(),
        HFStyleAttention(),
        torch.nn.Dropout(0.1),
        FunctionalHead(),
    )
    model.add_module("mha", torch.nn.MultiheadAttention(8, 2, dropout=0.1))
    model.add_module("lstm", lstm)
    model.add_module("custom", CustomDropout(0.4))
    converted, report = dropkit.convert(model, return_report=True)
    assert report.count == 1  # the attention's dropout layers are never called: not swapped
    assert type(converted[0].dropout) is torch.nn.Dropout
    left = "\n".join(report.left)
    assert "2 x attention-dropout rate inside HFStyleAttention stays torch's" in left
    assert "1 x functional dropout rate (drop_rate) inside FunctionalHead" in left
    assert "1 x torch's MultiheadAttention: the dropout runs inside torch's fused attention" in left
    assert "1 x torch's LSTM: the dropout between layers runs inside torch's fused RNN" in left
    assert "'s CustomDropout: a subclass of a dropout layer, whose forward may differ" in left
    assert str(report).startswith("convert: swapped 1 dropout layer\n")


def test_with_an_example_input_the_report_counts_only_layers_that_ran() -> None:
    class Skip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.drop = torch.nn.Dropout(0.1)
            self.unused = torch.nn.Dropout(0.1)  # e.g. a DropPath of a block with no skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.fc(x))

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), Skip()).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 4)
    rng = torch.get_rng_state()
    converted, report = dropkit.convert(model, x, return_report=True)
    assert report.count == 1
    assert sum(report.never_ran.values()) == 1
    assert type(converted[1].unused) is nn.Dropout  # swapped all the same
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert not any(m.training for m in model.modules())
    _, report = dropkit.convert(Keywords(), {"ids": torch.tensor([[1, 2]])}, return_report=True)
    assert report.count == 1


class Keywords(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(4, 4)
        self.drop = torch.nn.Dropout(0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.embed(ids))


@pytest.mark.vision
def test_timm_droppath_and_torchvision_stochastic_depth_keep_their_semantics() -> None:
    zoo_models = pytest.importorskip("zoo_models")
    timm = zoo_models.import_timm()
    torchvision = zoo_models.import_torchvision()
    n = 20_000
    cases = [
        (timm.layers.DropPath(0.3), "row", True),
        (timm.layers.DropPath(0.3, scale_by_keep=False), "row", False),
        (torchvision.ops.StochasticDepth(0.3, "row"), "row", True),
        (torchvision.ops.StochasticDepth(0.3, "batch"), "batch", True),
    ]
    for layer, mode, scale in cases:
        new = dropkit.convert(layer)
        assert isinstance(new, nn.DropPath)  # timm's: a subclass that only adds its names
        assert type(new).forward is nn.DropPath.forward
        assert (new.p, new.mode, new.scale_by_keep) == (0.3, mode, scale)
        torch.manual_seed(0)
        y = new(torch.ones(n, 3))
        kept = y.ne(0).all(1)
        assert bool((y.ne(0).any(1) == kept).all())  # whole samples
        assert torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.7 if scale else 1.0))
        if mode == "row":
            assert abs(int(kept.sum()) - 0.7 * n) < 5 * (n * 0.3 * 0.7) ** 0.5
        else:
            assert int(kept.sum()) in (0, n)  # one draw for the batch


# ---------------------------------------------------- timm's and torchvision's DropBlock


def _stock(library: str, cls: str, *args: object, **kwargs: object) -> torch.nn.Module:
    """A stock DropBlock layer, or skip the test saying why the library does not import."""
    zoo_models = pytest.importorskip("zoo_models")
    if library == "timm":
        return getattr(zoo_models.import_timm().layers, cls)(*args, **kwargs)  # type: ignore[no-any-return]
    return getattr(zoo_models.import_torchvision().ops, cls)(*args, **kwargs)  # type: ignore[no-any-return]


# (library, class, p, block_size, options, input shape, the options dropkit's layer gets)
STOCK_BLOCKS = [
    ("timm", "DropBlock2d", 0.1, 3, {}, (8, 4, 10, 10),
     {"placement": "centered", "couple_channels": True, "rescale": "batch", "eps": 1e-7}),
    ("timm", "DropBlock2d", 0.1, 5, {"gamma_scale": 0.25}, (8, 4, 8, 8),
     {"gamma_scale": 0.25, "placement": "centered", "couple_channels": True, "rescale": "batch",
      "eps": 1e-7}),
    ("timm", "DropBlock2d", 0.15, 4, {"couple_channels": False}, (8, 4, 9, 7),
     {"placement": "centered", "rescale": "batch", "eps": 1e-7}),
    ("timm", "DropBlock2d", 0.1, 7, {"scale_by_keep": False}, (8, 4, 9, 5),
     {"placement": "centered", "couple_channels": True, "rescale": "none", "eps": 1e-7}),
    ("timm", "DropBlock2d", 0.1, 3, {"with_noise": True}, (8, 4, 10, 10),
     {"placement": "centered", "couple_channels": True, "rescale": "none", "eps": 1e-7,
      "with_noise": True}),
    ("torchvision", "DropBlock2d", 0.1, 3, {}, (8, 4, 10, 10),
     {"block_clip": "square", "rescale": "batch"}),
    ("torchvision", "DropBlock2d", 0.2, 5, {"eps": 1e-3}, (8, 4, 9, 7),
     {"block_clip": "square", "rescale": "batch", "eps": 1e-3}),
    ("torchvision", "DropBlock2d", 0.1, 7, {}, (8, 4, 9, 5),
     {"block_clip": "square", "rescale": "batch"}),
    ("torchvision", "DropBlock3d", 0.1, 3, {}, (4, 4, 6, 5, 7),
     {"block_clip": "square", "rescale": "batch"}),
]  # fmt: skip
STOCK_IDS = [
    f"{lib}-{cls}-{p}-{b}-{'-'.join(opts) or 'defaults'}"
    for lib, cls, p, b, opts, *_ in STOCK_BLOCKS
]


def _dropped(y: torch.Tensor, noise: bool) -> torch.Tensor:
    """Dropped positions of a DropBlock's output on an input of ones: zeros, or with noise the
    values other than the kept 1 (a normal draw is never exactly 1)."""
    return y != 1 if noise else y == 0


@pytest.mark.vision
@pytest.mark.parametrize(("library", "cls", "p", "block", "options", "shape", "mapped"),
                         STOCK_BLOCKS, ids=STOCK_IDS)  # fmt: skip
def test_stock_dropblock_converts_with_its_settings_and_eval_is_the_identity(
    library, cls, p, block, options, shape, mapped
) -> None:
    stock = _stock(library, cls, p, block, **options)
    new = dropkit.convert(stock)
    assert isinstance(new, getattr(nn, cls))  # timm's: a subclass that only adds its names
    assert type(new).forward is getattr(nn, cls).forward
    assert (new.p, new.block_size, new.inplace) == (p, block, False)
    expected = {
        "gamma": "paper", "gamma_scale": 1.0, "placement": "inside", "block_clip": "axis",
        "couple_channels": False, "rescale": "expected", "eps": 1e-6, "with_noise": False,
        **mapped,
    }  # fmt: skip
    assert {option: getattr(new, option) for option in expected} == expected
    x = torch.randn(shape)
    assert stock.eval()(x) is x
    assert new.eval()(x) is x
    assert new.train()(x) is not x


@pytest.mark.vision
@pytest.mark.parametrize(("library", "cls", "p", "block", "options", "shape", "mapped"),
                         STOCK_BLOCKS, ids=STOCK_IDS)  # fmt: skip
def test_stock_dropblock_and_its_conversion_drop_the_same_fraction(
    library, cls, p, block, options, shape, mapped
) -> None:
    """200 seeded draws of each: the mean dropped fractions agree within 5 standard errors of
    their difference (a one-in-a-million false alarm)."""
    stock = _stock(library, cls, p, block, **options).train()
    new = dropkit.convert(stock)
    noise = bool(options.get("with_noise"))
    x = torch.ones(shape)
    torch.manual_seed(0)
    means, errors = [], []
    for layer in (stock, new):
        fractions = torch.tensor(
            [_dropped(layer(x), noise).double().mean().item() for _ in range(200)]
        )
        means.append(fractions.mean().item())
        errors.append(fractions.std().item() / len(fractions) ** 0.5)
    assert 0 < means[0] < 1
    assert abs(means[0] - means[1]) < 5 * (errors[0] ** 2 + errors[1] ** 2) ** 0.5, means


def _single_blocks(dropped: torch.Tensor, limit: int) -> set[tuple[tuple[int, int], ...]]:
    """``(rows, cols)`` of the maps whose dropped set is one rectangle no wider than ``limit``:
    at a tiny rate, the block of a single origin."""
    found = set()
    for plane in dropped:
        if plane.any():
            rows, cols = plane.nonzero(as_tuple=True)
            r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
            area = (r1 - r0 + 1) * (c1 - c0 + 1)
            if r1 - r0 < limit and c1 - c0 < limit and int(plane.sum()) == area:
                found.add(((r0, r1), (c0, c1)))
    return found


@pytest.mark.vision
@pytest.mark.parametrize(
    ("library", "block", "options", "size", "limit"),
    [
        ("timm", 3, {}, (6, 6), 3),
        ("timm", 4, {}, (6, 6), 4),  # even: one further before the origin than after
        ("timm", 7, {}, (9, 5), 5),  # clipped per axis to 7x5, centred on any position
        ("torchvision", 3, {}, (6, 6), 3),
        ("torchvision", 7, {}, (9, 5), 5),  # clipped to a 5x5 square, inside the map
    ],
)
def test_stock_dropblock_and_its_conversion_drop_the_same_blocks(
    library, block, options, size, limit
) -> None:
    """At a tiny rate most maps hold one block: the set of single blocks seen (where each can sit,
    clipped or not) is the same for the stock layer and dropkit's."""
    stock = _stock(library, "DropBlock2d", 0.04, block, **options).train()
    new = dropkit.convert(stock)
    x = torch.ones(3000, 1, *size)
    torch.manual_seed(0)
    ours = _single_blocks(new(x)[:, 0] == 0, limit)
    theirs = _single_blocks(stock(x)[:, 0] == 0, limit)
    assert len(theirs) >= 5  # every place a block can sit (5 for a 5x5 block on 9x5)
    assert ours == theirs


@pytest.mark.vision
@pytest.mark.parametrize(("library", "cls", "p", "block", "options", "shape", "mapped"),
                         STOCK_BLOCKS, ids=STOCK_IDS)  # fmt: skip
def test_stock_dropblock_and_its_conversion_normalise_alike(
    library, cls, p, block, options, shape, mapped
) -> None:
    """Kept values on an input of ones: ``numel / (eps + kept)`` of the mask as drawn (one map
    per sample when the channels are coupled) with batch rescaling, 1 without, for both."""
    stock = _stock(library, cls, p, block, **options).train()
    new = dropkit.convert(stock)
    noise = bool(options.get("with_noise"))
    coupled = bool(mapped.get("couple_channels"))
    torch.manual_seed(0)
    for layer in (stock, new):
        for _ in range(3):
            y = layer(torch.ones(shape))
            kept = ~_dropped(y, noise)
            if coupled:
                assert torch.equal(kept, kept[:, :1].expand_as(kept))
                kept = kept[:, :1]
            scale = 1.0
            if mapped["rescale"] == "batch":
                scale = kept.numel() / (mapped.get("eps", 1e-6) + int(kept.sum()))
            values = y[~_dropped(y, noise)]
            torch.testing.assert_close(values, torch.full_like(values, scale))


@pytest.mark.vision
@pytest.mark.parametrize(("library", "cls", "p", "block", "options", "shape", "mapped"),
                         STOCK_BLOCKS, ids=STOCK_IDS)  # fmt: skip
def test_converted_dropblock_gradient_is_the_mask_it_applied(
    library, cls, p, block, options, shape, mapped
) -> None:
    new = dropkit.convert(_stock(library, cls, p, block, **options)).train()
    x = torch.rand(shape, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    g = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(3)
    y = new(x)
    y.backward(g)
    torch.manual_seed(3)  # the same seed: the same mask
    applied = new(torch.ones(shape, dtype=torch.float64))
    if options.get("with_noise"):
        applied = (y == x).to(x.dtype)  # kept positions are the input itself
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad, g * applied)


@pytest.mark.vision
def test_convert_swaps_every_stock_dropblock_and_reports_them() -> None:
    shared = _stock("timm", "DropBlock2d", 0.1, 3)
    model = torch.nn.Sequential(
        shared,
        torch.nn.Conv2d(3, 3, 1),
        shared,
        _stock("timm", "DropBlock2d", 0.2, 5, gamma_scale=0.25, couple_channels=False),
        _stock("torchvision", "DropBlock2d", 0.1, 3),
        torch.nn.Sequential(_stock("torchvision", "DropBlock2d", 0.1, 5, eps=1e-3)),
        torch.nn.Unflatten(1, (3, 1)),
        _stock("torchvision", "DropBlock3d", 0.1, 3),
        _stock("timm", "DropBlock2d", 1.5, 3),  # not a probability: left, with why
    )
    converted, report = dropkit.convert(model, return_report=True)
    assert report.swapped == {
        "timm's DropBlock2d -> dropkit's DropBlock2d": 2,
        "torchvision's DropBlock2d -> dropkit's DropBlock2d": 2,
        "torchvision's DropBlock3d -> dropkit's DropBlock3d": 1,
    }
    assert converted[0] is converted[2]  # one new layer for the reused instance
    assert [type(converted[i]).__name__ for i in (0, 3, 4, 7)] == [
        "TimmDropBlock2d", "TimmDropBlock2d", "DropBlock2d", "DropBlock3d"
    ]  # fmt: skip
    assert type(converted[4]) is nn.DropBlock2d  # torchvision's names are dropkit's own
    assert isinstance(converted[0], nn.DropBlock2d)  # timm's: a subclass with timm's names
    assert type(converted[5][0]) is nn.DropBlock2d
    assert converted[5][0].eps == 1e-3
    assert type(converted[8]) is type(model[8])
    assert report.left == [
        "1 x timm's DropBlock2d: its settings have no dropkit equivalent (DropBlock2d: expected "
        "p in [0, 1], got 1.5)"
    ]
    converted.train()
    assert converted[:8](torch.randn(2, 3, 8, 8)).shape == (2, 3, 1, 8, 8)
    with pytest.warns(UserWarning, match=r"found no dropout layer to swap .*got 1\.5"):
        dropkit.convert(model[8])


@pytest.mark.vision
def test_timm_resnet_with_drop_block_converts_and_trains_a_step() -> None:
    zoo_models = pytest.importorskip("zoo_models")
    timm = zoo_models.import_timm()
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10, drop_block_rate=0.1)
    x = torch.randn(4, 3, 64, 64)
    converted, report = dropkit.convert(model, x, return_report=True)
    assert report.swapped == {"timm's DropBlock2d -> dropkit's DropBlock2d": 4}
    assert report.left == []
    blocks = [m for m in converted.modules() if isinstance(m, nn.DropBlock2d)]
    # timm's recipe: block 5 at gamma_scale 0.25 in layer3, block 3 at gamma_scale 1 in layer4.
    assert [(m.block_size, m.gamma_scale) for m in blocks] == [(5, 0.25)] * 2 + [(3, 1.0)] * 2
    converted.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(converted(x), model(x))
    converted.train()
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1)
    before = [p.detach().clone() for p in converted.parameters()]
    loss = torch.nn.functional.cross_entropy(converted(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in converted.parameters() if p.grad is not None)
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, converted.parameters(), strict=True))

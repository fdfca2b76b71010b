"""The registry of dropout: its entries agree with the functions and classes they describe."""

from __future__ import annotations

import inspect
import types
from typing import Any

import pytest
import torch
from torch import nn

import dropkit
from dropkit import functional as dk_F
from dropkit import nn as dk_nn

SPECS = dict(dropkit._registry.function_specs())


def _python_signature(func: object) -> inspect.Signature | None:
    if not isinstance(func, types.FunctionType):
        return None  # torch's C functions have no Python signature
    return inspect.signature(func)


def _aten_names(name: str) -> list[list[str]]:
    """Argument names of each overload of the aten operator behind a torch C function."""
    op = "aten::" + name.rpartition(".")[2]
    return [[a.name for a in s.arguments] for s in torch._C._jit_get_schemas_for_operator(op)]


@pytest.mark.parametrize("func", list(SPECS), ids=lambda f: SPECS[f].name)
def test_positions_and_defaults_match_the_signature(func: Any) -> None:
    spec = SPECS[func]
    signature = _python_signature(func)
    if signature is None:  # a C function: read its aten schema (the RNNs' packed one shifts by 1)
        overloads = [names for names in _aten_names(spec.name) if spec.p_name in names]
        assert overloads, spec.name
        for names in overloads:
            shift = names.index(spec.p_name) - spec.p_at
            assert shift in ((0, 1) if spec.packed_shift else (0,)), (spec.name, names)
            if spec.training_at is not None:
                assert names[spec.training_at + shift] == spec.training_name
        return
    params = list(signature.parameters.values())
    assert params[spec.p_at].name == spec.p_name
    if spec.p_default is not None:
        assert params[spec.p_at].default == spec.p_default
    if spec.training_at is not None:
        assert params[spec.training_at].name == spec.training_name
        if spec.training_default is not None:
            assert params[spec.training_at].default is spec.training_default


def test_rate_and_training_read_positional_and_keyword_calls() -> None:
    spec = dropkit.function_spec(torch.nn.functional.dropout)
    assert spec is not None
    assert spec.rate((None, 0.3, False), {}) == 0.3
    assert not spec.training((None, 0.3, False), {})
    assert spec.rate((None,), {"p": 0.2}) == 0.2
    assert spec.training((None,), {})  # torch's default
    assert spec.active(*spec.with_training((None, 0.3, False), {}, True))


def test_rnn_calls_are_read_packed_or_not() -> None:
    spec = dropkit.function_spec(torch.lstm)
    assert spec is not None
    x, hx, params = torch.zeros(1), (torch.zeros(1), torch.zeros(1)), [torch.zeros(1)]
    plain = (x, hx, params, True, 2, 0.25, False, False, False)
    packed = (x, torch.ones(1), hx, params, True, 2, 0.75, True, False)
    assert (spec.rate(plain, {}), spec.training(plain, {})) == (0.25, False)
    assert (spec.rate(packed, {}), spec.training(packed, {})) == (0.75, True)
    args, _ = spec.with_training(plain, {}, True)
    assert spec.training(args, {})
    assert args[5] == 0.25


def test_attention_rate_alone_switches_it_on() -> None:
    spec = dropkit.function_spec(torch.nn.functional.scaled_dot_product_attention)
    assert spec is not None
    assert not spec.active((None, None, None), {})
    assert spec.active((None, None, None), {"dropout_p": 0.1})


def test_unknown_and_unhashable_functions_have_no_spec() -> None:
    assert dropkit.function_spec(torch.relu) is None
    assert dropkit.function_spec([]) is None


def test_batch_shared_calls() -> None:
    shares = dropkit._registry.call_shares_batch
    path = dropkit.function_spec(dk_F.drop_path)
    drop = dropkit.function_spec(dk_F.dropout)
    emb = dropkit.function_spec(dk_F.embedding_dropout)
    assert path is not None
    assert drop is not None
    assert emb is not None
    assert shares(path, (None, 0.1), {"mode": "batch"})
    assert not shares(path, (None, 0.1), {"mode": "row"})
    assert shares(drop, (None, 0.1), {"noise_shape": (1, None)})
    assert not shares(drop, (None, 0.1), {"noise_shape": (None, 1)})
    assert not shares(drop, (None, 0.1), {})
    assert shares(emb, (None, 0.1), {})


LAYERS = [
    (nn.Dropout(0.1), "element", 0.1),
    (nn.Dropout2d(0.2), "channel2d", 0.2),
    (nn.AlphaDropout(0.3), "alpha", 0.3),
    (nn.LSTM(2, 2, 2, dropout=0.4), "rnn", 0.4),
    (nn.GRU(2, 2, 2, dropout=0.4), "rnn", 0.4),
    (nn.MultiheadAttention(4, 2, dropout=0.5), "attention", 0.5),
    (dk_nn.Dropout(0.1), "element", 0.1),
    (dk_nn.DropPath(0.2), "path", 0.2),
    (dk_nn.LockedDropout(0.3), "locked", 0.3),
    (dk_nn.EmbeddingDropout(nn.Embedding(3, 2), 0.2), "embedding", 0.2),
    (dk_nn.WeightDrop(nn.Linear(2, 2), "weight", 0.2), "dropconnect", 0.2),
]


@pytest.mark.parametrize(("module", "variant", "p"), LAYERS, ids=lambda v: type(v).__name__)
def test_layers_are_found_with_their_rate(module: nn.Module, variant: str, p: float) -> None:
    spec = dropkit.layer_spec(module)
    assert spec is not None
    assert spec.variant == variant
    assert dropkit._registry.layer_rate(module) == pytest.approx(p)


def test_non_dropout_modules_are_not_layers() -> None:
    assert dropkit.layer_spec(nn.Linear(2, 2)) is None
    assert dropkit._registry.layer_rate(nn.ReLU()) is None


def test_subclasses_match_unless_exact() -> None:
    class MyDropout(nn.Dropout):
        pass

    assert dropkit.layer_spec(MyDropout()) is not None
    assert dropkit.layer_spec(MyDropout(), exact=True) is None


def test_factories_build_the_dropkit_layer_with_the_same_settings() -> None:
    for module, cls in [
        (nn.Dropout(0.3, inplace=True), dk_nn.Dropout),
        (nn.Dropout1d(0.3), dk_nn.Dropout1d),
        (nn.FeatureAlphaDropout(0.2), dk_nn.FeatureAlphaDropout),
    ]:
        spec = dropkit.layer_spec(module)
        assert spec is not None
        assert spec.to_dropkit is not None
        built = spec.to_dropkit(module)
        assert type(built) is cls
        assert built.p == module.p
        assert built.inplace == module.inplace


def test_batch_shared_layers() -> None:
    shares = dropkit._registry.layer_shares_batch
    assert shares(dk_nn.DropPath(0.1, mode="batch"))
    assert not shares(dk_nn.DropPath(0.1))
    assert shares(dk_nn.Dropout(0.1, noise_shape=(1, None)))
    assert not shares(dk_nn.Dropout(0.1))
    assert shares(dk_nn.EmbeddingDropout(nn.Embedding(3, 2), 0.1))
    assert not shares(nn.Dropout(0.1))


def test_dropout_layers_lists_every_registered_layer_in_order() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Sequential(dk_nn.DropPath(0.2)))
    assert [(n, p) for n, _, p in dropkit.dropout_layers(model)] == [("1", 0.1), ("2.0", 0.2)]


def test_third_party_names_match_their_classes() -> None:
    """timm and torchvision are matched by name: the names must be where the classes live."""
    names = [n for n in dropkit._registry.layer_specs() if n.startswith(("timm.", "torchvision."))]
    for name in names:
        module_name, _, cls_name = name.rpartition(".")
        spec = importlib_find(module_name)
        if spec is None:
            pytest.skip(f"{module_name} is not installed")
        source = spec.read_text()
        assert f"class {cls_name}(" in source, name


def importlib_find(module_name: str) -> types.SimpleNamespace | None:
    """The source file of ``module_name`` without importing it (torchvision's import may fail
    with CPU torch)."""
    import importlib.util
    import pathlib

    top, *rest = module_name.split(".")
    found = importlib.util.find_spec(top)
    if found is None or found.submodule_search_locations is None:
        return None
    path = pathlib.Path(next(iter(found.submodule_search_locations))).joinpath(*rest)
    file = path.with_suffix(".py")
    return types.SimpleNamespace(read_text=file.read_text) if file.exists() else None

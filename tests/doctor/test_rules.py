"""The module-tree rules, each against a planted mistake and a correct model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import nn as dk_nn
from dropkit.doctor import RULES, Finding, check
from dropkit.experiments.models import build_model


def _codes(model: nn.Module, **kw) -> list[str]:
    return check(model, **kw).codes()


def test_dk004_high_rate() -> None:
    bad = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.6), nn.Conv2d(1, 1, 1), dk_nn.Dropout2d(0.8))
    report = check(bad)
    assert report.codes() == ["DK004", "DK004"]
    assert [f.where for f in report.findings] == ["1", "3"]
    assert report.findings[0].severity == "warning"
    assert "drops 0.6" in report.findings[0].message
    assert _codes(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))) == []


TORCH_RNN_WARNING = "non-zero dropout expects num_layers greater than 1"


def test_dk012_single_layer_rnn_dropout() -> None:
    with pytest.warns(UserWarning, match=TORCH_RNN_WARNING):  # torch itself warns at build time
        lstm = nn.LSTM(4, 4, num_layers=1, dropout=0.3)
    assert _codes(lstm) == ["DK012"]
    assert check(lstm).findings[0].where == ""
    assert _codes(nn.GRU(4, 4, num_layers=2, dropout=0.3)) == []


def test_dk014_all_rates_zero() -> None:
    zeros = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0), dk_nn.DropPath(0.0))
    report = check(zeros)
    assert report.codes() == ["DK014"]
    assert report.findings[0].severity == "info"
    assert report.ok  # info is not a failure
    assert _codes(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0), nn.Dropout(0.1))) == []
    assert _codes(nn.Linear(4, 4)) == []  # no dropout at all is not DK014
    assert _codes(nn.Sequential(nn.LSTM(4, 4), nn.MultiheadAttention(4, 2))) == []  # defaults


@pytest.mark.parametrize("name", ["mlp", "cnn", "rescnn"])
def test_the_runners_models_are_clean(name) -> None:
    shape = (40,) if name == "mlp" else (1, 8, 8)
    assert check(build_model(name, shape, 10, rate=0.3)).findings == []


def test_standard_transformer_layer_is_clean() -> None:
    layer = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True), 2
    )
    assert check(layer).findings == []


def test_selection_ignore_ordering_and_errors() -> None:
    with pytest.warns(UserWarning, match=TORCH_RNN_WARNING):
        model = nn.Sequential(nn.LSTM(4, 4, dropout=0.3), nn.Dropout(0.9))
    assert _codes(model) == ["DK004", "DK012"]
    assert _codes(model, rules=["DK012"]) == ["DK012"]
    assert _codes(model, ignore=["DK004"]) == ["DK012"]
    with pytest.raises(ValueError, match=r"unknown rule code\(s\) \['DK999'\]"):
        check(model, ignore=["DK999"])
    with pytest.raises(TypeError, match=r"check: expected an nn\.Module"):
        check("model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be Tensor, not tuple"):
        check(model, torch.randn(1, 4))  # the model's own error comes through (LSTM -> tuple)
    error = Finding("DK999", "error", "x", "m", "h")
    assert error.to_json()["severity"] == "error"
    assert all(code.startswith("DK") for code in RULES)


def test_the_doctor_does_not_import_mc() -> None:
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from dropkit.doctor import check, guard\n"
        "model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.0))\n"
        "assert check(model).codes() == ['DK014']\n"
        "assert check(model, torch.randn(2, 4)).codes() == ['DK014']\n"
        "with guard(model), torch.no_grad():\n"
        "    model(torch.randn(2, 4))\n"
        "assert not [m for m in sys.modules if m.startswith('dropkit.mc')], 'mc was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

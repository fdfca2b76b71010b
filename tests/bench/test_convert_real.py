"""``dropkit.convert`` on real models: ``dropkit bench``'s section and
``benchmarks/bench_convert_real.py``, run tiny. Structure only; speed is for the benchmark."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from dropkit.bench import ConvertRow, bench_convert_real

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
TINY = {"rounds": 1, "scale": 1 / 32}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_convert_real", BENCHMARKS / "bench_convert_real.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(row: ConvertRow) -> None:
    for value in (row.torch_ms, row.converted_ms, row.speedup):
        assert math.isfinite(value)
        assert value > 0
    assert row.to_json()["speedup"] == row.speedup


def test_the_torch_encoder_is_timed_as_is_and_converted() -> None:
    rows, skipped = bench_convert_real(**TINY, models=["nn-transformer-encoder"])
    assert skipped == {}
    [row] = rows
    assert row.model.startswith("nn.TransformerEncoder")
    assert row.swapped == 6  # dropout, dropout1 and dropout2 in each of the 2 layers
    _check(row)


def test_functional_adds_a_row_per_model() -> None:
    rows, _ = bench_convert_real(**TINY, models=["nn-transformer-encoder"], functional=True)
    plain, routed = rows
    assert routed.model == f"{plain.model} (functional=True)"
    assert routed.swapped == plain.swapped
    _check(routed)


def test_threads_are_put_back_and_unknown_models_rejected() -> None:
    before = torch.get_num_threads()
    bench_convert_real(**TINY, models=["nn-transformer-encoder"], threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=r"bench_convert_real: unknown models \['resnet'\]"):
        bench_convert_real(models=["resnet"])


def test_a_model_whose_library_is_missing_is_skipped_with_the_reason(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    rows, skipped = bench_convert_real(**TINY, models=["bert", "nn-transformer-encoder"])
    assert [row.model.split(" (")[0] for row in rows] == ["nn.TransformerEncoder"]
    [(model, reason)] = skipped.items()
    assert model.startswith("HF BERT")
    assert reason.startswith("transformers does not import")
    assert "\n" not in reason


@pytest.mark.vision
def test_hugging_face_and_timm_models_run_tiny() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("zoo_models").import_timm()
    rows, skipped = bench_convert_real(**TINY, models=["bert", "gpt2", "timm-vit"])
    assert skipped == {}
    assert [row.model.split(" (")[0] for row in rows] == [
        "HF BERT, sdpa attention",
        "HF GPT-2",
        "timm ViT-S/16",
    ]
    for row in rows:
        assert row.swapped > 0
        _check(row)


def test_the_script_prints_a_markdown_table(capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    _script().main(["--rounds", "1", "--scale", "0.03", "--models", "nn-transformer-encoder"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == (
        "| model | layers convert swapped | torch ms per step | converted ms per step | speed-up |"
    )
    assert table[1] == "|---|---|---|---|---|"
    [row] = [line.strip("|").split(" | ") for line in table[2:]]
    assert row[0].strip().startswith("nn.TransformerEncoder")
    assert int(row[1]) == 6
    torch_ms, converted_ms = float(row[2]), float(row[3])
    speedup = float(re.fullmatch(r"\*\*([\d.]+)x\*\* ?", row[4]).group(1))
    for value in (torch_ms, converted_ms, speedup):
        assert math.isfinite(value)
        assert value > 0
    assert re.search(r"^Median speed-up over the 1 timed: \*\*[\d.]+x\*\*$", out, re.M)
    assert "load average" in out

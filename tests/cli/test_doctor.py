"""``dropkit doctor`` end to end on model files the tests write."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app

runner = CliRunner()

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    def bad():
        # element dropout on conv maps (DK003) and dropout on the output (DK002)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, 10), nn.Dropout(0.2))

    def good():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout2d(0.3), nn.Flatten(),
                             nn.Dropout(0.2), nn.Linear(4 * 6 * 6, 10))

    only_info = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0))
    not_a_model = 42
    """
)


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


def test_mistakes_give_exit_1_and_a_table(models) -> None:
    result = runner.invoke(app, ["doctor", f"{models}:bad", "--input-shape", "2,3,8,8"])
    assert result.exit_code == 1, result.output
    for needle in ("errors (1)", "warnings (1)", "DK002", "DK003", "Dropout2d"):
        assert needle in result.output


def test_clean_model_exits_0(models) -> None:
    result = runner.invoke(app, ["doctor", f"{models}:good", "--input-shape", "2,3,8,8"])
    assert result.exit_code == 0, result.output
    assert "No dropout mistakes found." in result.output


def test_json_and_ignore(models) -> None:
    result = runner.invoke(
        app,
        [
            "doctor",
            f"{models}:bad",
            "--input-shape",
            "2,3,8,8",
            "--format",
            "json",
            "--ignore",
            "DK002",
        ],
    )
    assert result.exit_code == 1
    findings = json.loads(result.output)
    assert [f["code"] for f in findings] == ["DK003"]
    assert set(findings[0]) == {"code", "severity", "where", "message", "hint", "doc"}
    assert findings[0]["doc"] == "docs/rules/DK003.md"


def test_text_report_names_each_findings_page(models) -> None:
    result = runner.invoke(app, ["doctor", f"{models}:bad", "--input-shape", "2,3,8,8"])
    assert result.exit_code == 1
    flat = "".join(result.output.split())  # the table wraps long cells
    assert "docs/rules/DK002.md" in flat
    assert "docs/rules/DK003.md" in flat


def test_info_only_is_not_a_failure_and_tree_only_without_input(models) -> None:
    result = runner.invoke(app, ["doctor", f"{models}:only_info"])
    assert result.exit_code == 0
    assert "DK014" in result.output
    assert "give --input-shape" in result.output


def test_input_file(models, tmp_path) -> None:
    saved = tmp_path / "x.pt"
    torch.save(torch.randn(2, 3, 8, 8), saved)
    result = runner.invoke(app, ["doctor", f"{models}:good", "--input", str(saved)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere.py:f"], "nowhere.py: no such file"),
        (["MODELS_PATH:missing"], "has no attribute 'missing'"),
        (["MODELS_PATH:not_a_model"], "is a int, not an nn.Module"),
        (["MODELS_PATH:bad", "--input-shape", "2,5,8,8"], "did not run on the example input"),
        (["MODELS_PATH:bad", "--input-shape", "2,x"], "expected comma-separated sizes"),
        (["MODELS_PATH:bad", "--ignore", "DK999"], "unknown rule code"),
        (["no_colon"], "expected FILE.py:NAME"),
    ],
)
def test_bad_usage_exits_2(models, args, message) -> None:
    args = [a.replace("MODELS_PATH", str(models)) for a in args]
    result = runner.invoke(app, ["doctor", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_module_attr_spec() -> None:
    result = runner.invoke(app, ["doctor", "torch.nn:Identity"])
    assert result.exit_code == 0, result.output


KEYWORDS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.drop = nn.Dropout(0.1)
            self.head = nn.Linear(8, 2)

        def forward(self, input_ids, attention_mask):
            h = self.drop(self.embed(input_ids)) * attention_mask[..., None]
            return {"logits": self.head(h)}
    """
)


def test_input_file_of_keyword_inputs_and_of_positional_ones(tmp_path) -> None:
    path = tmp_path / "tagger.py"
    path.write_text(KEYWORDS)
    ids, mask = torch.randint(0, 10, (2, 5)), torch.ones(2, 5)
    torch.save({"input_ids": ids, "attention_mask": mask}, tmp_path / "kw.pt")
    torch.save([ids, mask], tmp_path / "pos.pt")
    for saved in ("kw.pt", "pos.pt"):
        result = runner.invoke(app, ["doctor", f"{path}:Tagger", "--input", str(tmp_path / saved)])
        assert result.exit_code == 0, result.output
        assert "No dropout mistakes found." in result.output
    torch.save({"input_ids": ids, "n": 3}, tmp_path / "bad.pt")
    result = runner.invoke(app, ["doctor", f"{path}:Tagger", "--input", str(tmp_path / "bad.pt")])
    assert result.exit_code == 2
    assert "expected a tensor, a list of tensors" in result.output


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import sys\nsys.exit(0)\n", "exits on import (SystemExit(0))"),
        ("raise SystemExit(3)\n", "exits on import (SystemExit(3))"),
        ("import sys\ndef f():\n    sys.exit(1)\n", "calling it exits (SystemExit(1))"),
    ],
    ids=["exit-0-on-import", "exit-3-on-import", "exit-in-factory"],
)
def test_a_model_file_that_exits_is_a_usage_error_not_a_pass(tmp_path, source, message) -> None:
    path = tmp_path / "script.py"
    path.write_text(source)
    result = runner.invoke(app, ["doctor", f"{path}:f"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_input_shape_too_large_to_run_is_refused(models) -> None:
    result = runner.invoke(
        app, ["doctor", f"{models}:good", "--input-shape", "100000,100000,100000"]
    )
    assert result.exit_code == 2
    assert "too large for a check" in result.output


OWN_MODELS = textwrap.dedent(
    """
    from torch import nn

    def make_model(p):
        return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(p), nn.Linear(8, 2))

    def two_args(p, width):
        return nn.Sequential(nn.Linear(2, width), nn.Dropout(p))

    def no_args():
        return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    """
)


def test_the_readme_own_model_passes_the_doctor() -> None:
    # The own-model convention of dropkit compare: make_model(p), called with the rate.
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "own_model.py"
    result = runner.invoke(app, ["doctor", f"{example}:make_model", "--input-shape", "8,2"])
    assert result.exit_code == 0, result.output
    assert "No dropout mistakes found." in result.output


@pytest.mark.parametrize(("args", "rate"), [([], 0.2), (["--rate", "0.35"], 0.35)])
def test_a_factory_of_the_rate_gets_the_rate(tmp_path, args, rate) -> None:
    from dropkit.doctor._load import DEFAULT_RATE, load_model

    path = tmp_path / "own.py"
    path.write_text(OWN_MODELS)
    assert DEFAULT_RATE == 0.2
    model = load_model(f"{path}:make_model", *([rate] if args else []))
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [rate]
    result = runner.invoke(app, ["doctor", f"{path}:make_model", "--input-shape", "4,2", *args])
    assert result.exit_code == 0, result.output


def test_the_help_says_which_rate_a_factory_gets() -> None:
    from dropkit.doctor._load import DEFAULT_RATE

    result = runner.invoke(app, ["doctor", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert f"(default: {DEFAULT_RATE:g})" in result.output
    assert "make_model(p)" in result.output


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("two_args", [], "calling it needs p, width"),
        ("no_args", ["--rate", "0.3"], "takes no argument, so no rate"),
        ("make_model", ["--rate", "1.5"], "expected a dropout rate in [0, 1)"),
    ],
)
def test_a_rate_that_cannot_be_used_is_a_usage_error(tmp_path, name, args, message) -> None:
    path = tmp_path / "own.py"
    path.write_text(OWN_MODELS)
    result = runner.invoke(app, ["doctor", f"{path}:{name}", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_an_unreadable_input_file_never_advises_unpickling_it(tmp_path) -> None:
    saved = tmp_path / "x.pt"
    saved.write_bytes(b"not a tensor file")
    result = runner.invoke(app, ["doctor", "torch.nn:Identity", "--input", str(saved)])
    assert result.exit_code == 2
    assert "weights_only" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(saved) in lines[0]
    assert "torch.save" in lines[0]

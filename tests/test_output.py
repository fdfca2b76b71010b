"""The model's output: one rule for Monte Carlo sampling, the doctor and the experiments."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from dropkit._output import model_output

LOGITS = torch.zeros(2, 3)
HIDDEN = torch.ones(2, 4)


def test_the_rule_reads_logits_and_first_elements() -> None:
    assert model_output(LOGITS) is LOGITS
    assert model_output((LOGITS, HIDDEN)) is LOGITS
    assert model_output([(LOGITS, HIDDEN), HIDDEN]) is LOGITS  # read by the same rule
    assert model_output(OrderedDict(loss=torch.tensor(1.0), logits=LOGITS)) is LOGITS


def test_the_selector_names_another_part() -> None:
    assert model_output({"hidden": HIDDEN, "logits": LOGITS}, "hidden") is HIDDEN
    assert model_output((LOGITS, HIDDEN), 1) is HIDDEN
    assert model_output((LOGITS, HIDDEN), lambda out: out[1]) is HIDDEN


def test_errors_name_the_caller_and_the_option() -> None:
    with pytest.raises(ValueError, match=r"^predict: .* without 'logits'.*output='hidden'"):
        model_output({"hidden": HIDDEN}, where="predict")
    with pytest.raises(ValueError, match=r"^predict: output='nope' is not in the model's output"):
        model_output({"hidden": HIDDEN}, "nope", where="predict")
    with pytest.raises(ValueError, match=r"selected output is a int, not a tensor.*output="):
        model_output((3, HIDDEN), where="predict")
    with pytest.raises(ValueError, match="cannot read a tensor from a NoneType"):
        model_output(None)


def test_without_strict_nothing_raises() -> None:
    assert model_output({"hidden": None, "last": (HIDDEN, LOGITS)}, strict=False) is HIDDEN
    assert model_output({}, strict=False) is None
    assert model_output("text", strict=False) == "text"


def test_the_experiments_helper_keeps_its_type_error() -> None:
    from dropkit.experiments.real_models import main_output

    assert main_output({"logits": LOGITS}) is LOGITS
    with pytest.raises(TypeError, match=r"main_output: .*without 'logits'"):
        main_output({"hidden": HIDDEN})

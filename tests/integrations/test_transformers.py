"""The Hugging Face callback in a real ``transformers.Trainer``: a tiny BERT, CPU, no download."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments

from dropkit import mc
from dropkit.doctor import DropoutWarning
from dropkit.integrations.transformers import DropkitCallback
from dropkit.metrics import expected_calibration_error, negative_log_likelihood

ROOT = Path(__file__).resolve().parents[2]
P = 0.1


def _example():
    spec = importlib.util.spec_from_file_location(
        "transformers_mc", ROOT / "examples" / "transformers_mc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _example()


class Rates(TrainerCallback):
    """Records the attention dropout rate in force at each epoch's first step."""

    def __init__(self) -> None:
        self.rates: dict[int, float] = {}

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        epoch = math.floor(state.epoch + 1e-6)
        self.rates.setdefault(epoch, model.bert.encoder.layer[0].attention.self.dropout.p)


def arguments(tmp_path: Path, epochs: int, **kwargs) -> TrainingArguments:
    options = dict(
        output_dir=str(tmp_path),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**{**options, **kwargs})


def make_trainer(tmp_path, epochs, callbacks, model=None, trainer_class=Trainer, **kwargs):
    torch.manual_seed(0)
    return trainer_class(
        model=model if model is not None else example.tiny_bert(P),
        args=arguments(tmp_path, epochs, **kwargs),
        train_dataset=example.Tokens(64, seed=0),
        eval_dataset=example.Tokens(48, seed=1),
        callbacks=callbacks,
    )


def test_evaluate_adds_the_scores_of_the_mc_predictive(tmp_path) -> None:
    method = "sampling"
    callback = DropkitCallback(mc_samples=8, mc_method=method, mc_seed=3)
    trainer = make_trainer(tmp_path, 1, [callback], eval_strategy="no")
    trainer.train()
    metrics = trainer.evaluate()
    model = trainer.model
    probs, information, targets = [], [], []
    for i, batch in enumerate(trainer.get_eval_dataloader()):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        result = mc.predict(model, inputs, samples=8, method=method, seed=3 + i)
        probs.append(result.probs)
        information.append(result.mutual_information)
        targets.append(batch["labels"])
    probs_all, y = torch.cat(probs), torch.cat(targets)
    expected = {
        "eval_mc_nll": negative_log_likelihood(probs_all, y),
        "eval_mc_ece": expected_calibration_error(probs_all, y),
        "eval_mc_mutual_information": float(torch.cat(information).double().mean()),
        "eval_mc_accuracy": float((probs_all.argmax(1) == y).double().mean()),
    }
    assert expected["eval_mc_mutual_information"] > 0  # the dropout was on while sampling
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert trainer.state.log_history[-1]["eval_mc_nll"] == metrics["eval_mc_nll"]
    assert len(callback.history) == 1


def test_early_schedule_and_evaluations_without_dropout(tmp_path) -> None:
    callback, rates = DropkitCallback(schedule="early", schedule_epochs=1, mc_samples=4), Rates()
    trainer = make_trainer(tmp_path, 2, [callback, rates])
    with pytest.warns(UserWarning, match="DropkitCallback: every dropout layer of BertFor"):
        trainer.train()
    assert rates.rates == {0: P, 1: 0.0}
    evaluations = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert ["eval_mc_nll" in e for e in evaluations] == [True, False]
    assert len(callback.history) == 1


class StopAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def test_schedule_state_survives_a_checkpoint(tmp_path) -> None:
    rates = Rates()
    first = make_trainer(
        tmp_path,
        3,
        [
            DropkitCallback(schedule="late", schedule_epochs=2, mc_samples=0),
            rates,
            StopAfterFirstEpoch(),
        ],
        save_strategy="epoch",
        eval_strategy="no",
    )
    first.train()
    model = first.model
    assert rates.rates == {0: 0.0}
    assert model.bert.encoder.layer[0].attention.self.dropout.p == 0.0
    (checkpoint,) = tmp_path.glob("checkpoint-*")

    # Resumed on the same model object, whose layers the schedule has set to 0, with a fresh
    # callback: the rates come from the checkpoint's trainer_state.json.
    rates = Rates()
    callback = DropkitCallback(schedule="late", schedule_epochs=2, mc_samples=0)
    second = make_trainer(tmp_path, 3, [callback, rates], model=model, eval_strategy="no")
    second.train(resume_from_checkpoint=str(checkpoint))
    assert rates.rates == {1: 0.0, 2: P}
    assert callback.schedule_state["base"]["bert.encoder.layer.0.attention.self.dropout"] == P


class TrainsInEvaluation(Trainer):
    """The mistake: the model switched back to training mode to get random predictions."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        model.train()
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def test_guard_fails_an_evaluation_step_with_dropout_on(tmp_path) -> None:
    trainer = make_trainer(
        tmp_path, 1, [DropkitCallback(mc_samples=0)], trainer_class=TrainsInEvaluation
    )
    with pytest.raises(
        RuntimeError, match=r"DK001: BertForSequenceClassification ran in an evaluation"
    ):
        trainer.evaluate()
    warned = make_trainer(
        tmp_path, 1, [DropkitCallback(guard="warn", mc_samples=0)], trainer_class=TrainsInEvaluation
    )
    with pytest.warns(DropoutWarning, match="docs/rules/DK001.md"):
        warned.evaluate()


def test_guard_is_quiet_on_a_correct_evaluation_with_mc(tmp_path) -> None:
    trainer = make_trainer(tmp_path, 1, [DropkitCallback(mc_samples=4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DropoutWarning)
        metrics = trainer.evaluate()
    assert "eval_mc_accuracy" in metrics


def test_bad_options_name_the_fix() -> None:
    with pytest.raises(ValueError, match="guard must be 'error', 'warn' or None"):
        DropkitCallback(guard="loud")
    with pytest.raises(ValueError, match="method must be 'sampling' or 'moments'"):
        DropkitCallback(mc_method="bayes")
    with pytest.raises(ValueError, match=r"keyword inputs .* use mc_method='sampling'"):
        DropkitCallback(mc_method="moments")
    with pytest.raises(ValueError, match="'early' with epochs=0 never applies dropout"):
        DropkitCallback(schedule="early")


def test_import_without_transformers_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "import dropkit\n"
        "try:\n"
        "    import dropkit.integrations.transformers\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == (
        "dropkit.integrations.transformers needs transformers, which is not installed: "
        "pip install 'dropkit[transformers]'"
    )


def test_example_runs(capsys) -> None:
    metrics = example.main(["--epochs", "2", "--train", "64"])
    assert {"eval_loss", "eval_mc_nll", "eval_mc_ece", "eval_mc_accuracy"} <= set(metrics)
    assert "after 2 epochs" in capsys.readouterr().out

"""The Lightning callbacks in a real ``lightning.Trainer`` on the CPU (tiny runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from dropkit import mc  # noqa: E402
from dropkit.doctor import DropoutWarning  # noqa: E402
from dropkit.integrations.lightning import (  # noqa: E402
    ConvertDropout,
    DropoutSchedule,
    EvalGuard,
    MCValidation,
)
from dropkit.metrics import expected_calibration_error, negative_log_likelihood  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
P = 0.3


class Net(L.LightningModule):
    """A tiny classifier that records the dropout rate in force at each epoch's first step."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(P), torch.nn.Linear(16, 3)
        )
        self.rates: dict[int, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if batch_idx == 0:
            self.rates[self.current_epoch] = self.net[2].p
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TrainsInValidation(Net):
    """The mistake: the network switched back to training mode for validation and test."""

    def on_validation_epoch_start(self) -> None:
        self.net.train()

    def on_test_epoch_start(self) -> None:
        self.net.train()


def data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def loader(seed: int = 0) -> DataLoader:
    return DataLoader(data(seed=seed), batch_size=16)


def trainer(epochs: int, callbacks: list, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(callbacks=callbacks, **{**options, **kwargs})


@pytest.mark.parametrize("method", ["sampling", "moments"])
def test_mc_validation_logs_the_scores_of_the_mc_predictive(method) -> None:
    torch.manual_seed(0)
    # The network inside the module (model=) or the module itself (its forward): the same.
    network = (lambda module: module.net) if method == "sampling" else None
    callback = MCValidation(samples=8, method=method, seed=5, model=network)
    model = Net()
    run = trainer(1, [callback])
    run.fit(model, loader(), loader(seed=1))
    # Validation ran after the only training epoch, so the weights now are the ones it scored:
    # the same batches with the same seeds must give the logged numbers.
    probs, information, targets = [], [], []
    for i, (x, y) in enumerate(loader(seed=1)):
        result = mc.predict(model, x, samples=8, method=method, seed=5 + i)
        probs.append(result.probs)
        information.append(result.mutual_information)
        targets.append(y)
    probs_all, y_all = torch.cat(probs), torch.cat(targets)
    expected = {
        "nll": negative_log_likelihood(probs_all, y_all),
        "ece": expected_calibration_error(probs_all, y_all),
        "mutual_information": float(torch.cat(information).double().mean()),
        "accuracy": float((probs_all.argmax(1) == y_all).double().mean()),
    }
    assert len(callback.history) == 1
    assert callback.history[0] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert expected["mutual_information"] > 0  # dropout was on: the samples differ
    for name, value in expected.items():
        assert float(run.callback_metrics[f"mc_{name}"]) == pytest.approx(value, rel=1e-5)
    assert not model.net.training or model.training  # the flags are Lightning's again


def test_early_schedule_sets_the_rates_and_mc_skips_epochs_without_dropout() -> None:
    torch.manual_seed(0)
    model, callback = Net(), MCValidation(samples=4)
    run = trainer(3, [DropoutSchedule("early", epochs=2), callback])
    with pytest.warns(UserWarning, match="MCValidation: every dropout layer of Net has p = 0"):
        run.fit(model, loader(), loader(seed=1))
    assert model.rates == {0: P, 1: P, 2: 0.0}
    assert len(callback.history) == 2  # epochs 0 and 1; epoch 2 has nothing to sample
    assert float(run.callback_metrics["dropout_factor"]) == 0.0


def test_schedule_state_survives_a_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = Net()
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = trainer(2, [DropoutSchedule("late", epochs=3), checkpoints], enable_checkpointing=True)
    first.fit(model, loader(), loader(seed=1))
    assert model.rates == {0: 0.0, 1: 0.0}
    assert model.net[2].p == 0.0  # the model itself no longer knows its rate
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    (state,) = (v for k, v in saved.items() if k.startswith("DropoutSchedule"))
    assert state["base"] == {"net.2": P}

    # Resumed on the same model object, with a fresh callback: the rate comes from the checkpoint.
    second = trainer(4, [DropoutSchedule("late", epochs=3)])
    second.fit(model, loader(), loader(seed=1), ckpt_path=tmp_path / "last.ckpt")
    assert model.rates == {0: 0.0, 1: 0.0, 2: 0.0, 3: P}


def test_schedule_function_and_bad_schedules() -> None:
    model = Net()
    run = trainer(3, [DropoutSchedule(lambda epoch: 0.5 * epoch)])
    run.fit(model, loader(), loader(seed=1))
    assert model.rates == pytest.approx({0: 0.0, 1: 0.5 * P, 2: P})
    with pytest.raises(ValueError, match="unknown kind 'sometimes'"):
        DropoutSchedule("sometimes")
    with pytest.raises(ValueError, match="'early' with epochs=0 never applies dropout"):
        DropoutSchedule("early")
    with pytest.raises(ValueError, match=r"rates must stay in \[0, 1\)"):
        trainer(1, [DropoutSchedule(lambda epoch: 10.0)]).fit(Net(), loader())


def test_eval_guard_fails_a_validation_step_with_dropout_on() -> None:
    message = r"DK001: TrainsInValidation ran in a validation step with dropout in training mode"
    with pytest.raises(RuntimeError, match=message):
        trainer(1, [EvalGuard()]).fit(TrainsInValidation(), loader(), loader(seed=1))


def test_eval_guard_warns_on_a_test_step_with_dropout_on() -> None:
    run = trainer(1, [EvalGuard(action="warn")])
    with pytest.warns(DropoutWarning, match=r"DK001: .* in a test step .*docs/rules/DK001\.md"):
        run.test(TrainsInValidation(), loader(seed=1), verbose=False)


def test_eval_guard_is_quiet_on_a_correct_model_with_mc_validation() -> None:
    model = Net()
    convert = ConvertDropout()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DropoutWarning)
        run = trainer(1, [convert, EvalGuard(), MCValidation(samples=4)], num_sanity_val_steps=1)
        run.fit(model, loader(), loader(seed=1))
        run.test(model, loader(seed=1), verbose=False)
    assert type(model.net[2]).__module__.startswith("dropkit.nn")
    assert model.net[2].p == P
    assert convert.report.count == 1


def test_import_without_lightning_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "import dropkit\n"  # never an error at import dropkit
        "try:\n"
        "    import dropkit.integrations.lightning\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == (
        "dropkit.integrations.lightning needs Lightning, which is not installed: "
        "pip install 'dropkit[lightning]'"
    )


def test_example_runs_data_parallel_on_two_cpu_processes(tmp_path) -> None:
    """examples/lightning_mc.py under DDP (2 processes, gloo): both log the gathered scores."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lightning_mc.py"), "--devices", "2",
         "--epochs", "2", "--out", str(tmp_path)],
        check=True, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Epoch 0 has dropout (early schedule, 1 epoch); each rank validated half of the 256
    # inputs, and after gathering both logged the scores of all of them.
    assert len(ranks[0]["history"]) == 1
    assert ranks[0]["history"] == ranks[1]["history"]
    accuracy = ranks[0]["history"][0]["accuracy"]
    assert accuracy * 256 == pytest.approx(round(accuracy * 256))

"""The regression task of a comparison: data, configuration, training scores and verdict."""

from __future__ import annotations

import math

import pytest
import torch

from dropkit.experiments import CompareConfig, ConfigError, TrainConfig, load_dataset, train
from dropkit.experiments.regression import predictions
from dropkit.experiments.results import RegressionScores, RunResult
from dropkit.experiments.verdict import paired_effect, verdict
from dropkit.metrics import gaussian_negative_log_likelihood, root_mean_squared_error


def test_diabetes_is_standardized_by_its_training_targets() -> None:
    data = load_dataset("diabetes")
    assert data.task == "regression"
    assert data.sizes() == {"train": 283, "val": 71, "test": 88}
    assert data.input_shape == (10,)
    assert data.num_classes == 1
    assert data.y_train.dtype == torch.float32
    assert abs(float(data.y_train.mean())) < 1e-5
    assert float(data.y_train.std()) == pytest.approx(1.0, abs=1e-5)
    from sklearn.datasets import load_diabetes

    raw = load_diabetes().target
    back = data.target_mean + data.target_std * data.y_test.double()
    # Every test target, back in its units, is one of the data set's scores (25 to 346).
    assert all(float((torch.as_tensor(raw) - v).abs().min()) < 1e-3 for v in back)


def test_task_is_part_of_the_identity_and_absent_by_default() -> None:
    classification = CompareConfig(dataset="digits")
    assert "task" not in classification.to_json()  # built-in keys stay what they were
    regression = CompareConfig(dataset="diabetes", task="regression")
    assert regression.to_json()["task"] == "regression"
    assert regression.key() != CompareConfig(dataset="diabetes").key()
    assert CompareConfig.from_json(regression.to_json()) == regression
    assert regression.folder_name() == "task-regression"


@pytest.mark.parametrize(
    ("config", "option", "words"),
    [
        (CompareConfig(dataset="digits", task="regression"), "--dataset", "diabetes"),
        (CompareConfig(dataset="diabetes"), "--task", "add --task regression"),
        (CompareConfig(dataset="diabetes", task="ranking"), "--task", "unknown"),
        (
            CompareConfig(dataset="diabetes", task="regression", label_noise=0.1),
            "--label-noise",
            "classification",
        ),
        (CompareConfig(dataset="diabetes", task="regression", auto=True), "--rates", "auto"),
    ],
)
def test_a_task_that_does_not_fit_is_refused(config, option, words) -> None:
    with pytest.raises(ConfigError, match=words) as error:
        config.check()
    assert error.value.option == option


def test_a_regression_run_scores_in_the_targets_units() -> None:
    data = load_dataset("diabetes")
    result = train(TrainConfig(epochs=3, hidden=(16,), batch_size=32), data, 0.2, seed=0)
    scores = result.regression
    assert scores is not None
    assert math.isnan(result.test_acc)
    assert math.isnan(result.history[-1].val_acc)
    # Recompute from the returned weights: the test RMSE and the Gaussian NLL by hand.
    from dropkit.experiments.train import make_model

    model = make_model(TrainConfig(hidden=(16,)), data, 0.2)
    model.load_state_dict(result.model_state)
    std, mean = data.target_std, data.target_mean
    pred = mean + std * predictions(model, data.x_test).double()
    target = mean + std * data.y_test.double()
    assert scores.test_rmse == pytest.approx(root_mean_squared_error(pred, target), rel=1e-9)
    on_val = predictions(model, data.x_val).double()
    val = std * root_mean_squared_error(on_val, data.y_val.double())
    assert scores.noise_std == pytest.approx(val, rel=1e-9)
    nll = gaussian_negative_log_likelihood(pred, scores.noise_std**2, target)
    assert result.test_nll == pytest.approx(nll, rel=1e-9)
    assert 0.0 <= scores.coverage <= 1.0
    assert scores.width == pytest.approx(2 * 1.959964 * scores.noise_std, rel=1e-5)
    # The stored form comes back as it was.
    again = RunResult.from_json(result.to_json())
    assert again.regression == scores


def _run(rate: float, seed: int, val_rmse: float, test_rmse: float) -> RunResult:
    nan = math.nan
    scores = RegressionScores(40.0, val_rmse, test_rmse, val_rmse, 0.95, 200.0, 0.02)
    return RunResult(rate, seed, nan, nan, 5.0, nan, nan, 10, 1.0, regression=scores)


def test_the_verdict_chooses_by_validation_rmse_and_lower_is_better() -> None:
    runs = [_run(0.0, s, 60.0, 55.0 + 0.1 * s) for s in range(3)]
    runs += [_run(0.2, s, 58.0, 53.0 + 0.1 * s + 0.05 * (s % 2)) for s in range(3)]
    runs += [_run(0.5, s, 59.0, 50.0) for s in range(3)]  # best on test, not on validation
    effect = paired_effect(runs)
    assert effect.rate == 0.2
    assert effect.metric == "RMSE"
    assert effect.mean == pytest.approx(-2.0 + 0.05 / 3, abs=1e-9)
    assert effect.call == "helped"  # the whole interval is below 0: RMSE fell
    assert verdict(runs).startswith("Dropout helped: rate 0.2 (the dropout rate with the lowest")
    worse = [_run(0.0, s, 60.0, 50.0 + s) for s in range(3)]
    worse += [_run(0.2, s, 58.0, 52.0 + s + 0.01 * s) for s in range(3)]
    assert paired_effect(worse).call == "hurt"

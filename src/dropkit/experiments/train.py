"""One training run: a model at one dropout rate and seed, on in-memory data.

Batches are drawn by indexing tensors held in memory (no per-sample DataLoader), which is
where the time of small models goes. Everything random is seeded from the run's seed, so a
run is reproducible.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit.doctor import guard
from dropkit.experiments.datasets import Dataset
from dropkit.experiments.models import build_model, set_rate
from dropkit.experiments.options import OPTIMIZERS, SCHEDULES, ConfigError, check_options
from dropkit.experiments.regression import regression_scores, squared_error
from dropkit.experiments.results import EpochMetrics, RunResult
from dropkit.experiments.state import load_state, save_atomically, save_state

__all__ = [
    "AUTO_INIT_P",
    "AUTO_LENGTH_SCALE",
    "AUTO_TEMPERATURE",
    "OPTIMIZERS",
    "SCHEDULES",
    "ConfigError",
    "EpochMetrics",
    "ModelFn",
    "RunResult",
    "TrainConfig",
    "layer_rates",
    "make_learned_model",
    "make_model",
    "save_atomically",
    "train",
]

#: Your own model: called with the dropout rate, returns an ``nn.Module`` for the data's inputs.
ModelFn = Callable[[float], nn.Module]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run except the data, the dropout rate and the seed.

    ``schedule``: ``constant`` keeps the rate all along; ``early`` applies it for the first
    ``schedule_epochs`` epochs only and ``late`` only after them (Liu et al. 2023, "Dropout
    Reduces Underfitting", https://arxiv.org/abs/2303.01500). ``early_stopping`` is the patience
    in epochs on validation loss (0: off); the best epoch's weights are kept.
    """

    model: str = "mlp"
    variant: str = "channel"  # the cnn's conv-block dropout: channel, element or block
    hidden: tuple[int, ...] = (256, 128)
    layer_scale: tuple[float, ...] | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 60
    batch_size: int = 64
    early_stopping: int = 0
    schedule: str = "constant"
    schedule_epochs: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (see :func:`check_options`)."""
        check_options(**dataclasses.asdict(self))


def _rate_at(config: TrainConfig, rate: float, epoch: int) -> float:
    if config.schedule == "early":
        return rate if epoch < config.schedule_epochs else 0.0
    if config.schedule == "late":
        return rate if epoch >= config.schedule_epochs else 0.0
    return rate


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    rates = [p for name, p in model.named_parameters() if name.endswith("p_logit")]
    params: Any = model.parameters()
    if rates:  # learned rates: weight decay would pull their logits to 0, i.e. p to 0.5
        ids = {id(p) for p in rates}
        weights = [p for p in model.parameters() if id(p) not in ids]
        params = [{"params": weights}, {"params": rates, "weight_decay": 0.0}]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


@torch.no_grad()
def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048
) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and the outputs, in eval mode: cross-entropy, or for float targets
    (regression) the squared error and a NaN accuracy."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    if y.dtype.is_floating_point:
        return squared_error(logits, y).item(), math.nan, logits
    loss = torch_F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc, logits


def _loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class labels; squared error on float targets (regression)."""
    if targets.dtype.is_floating_point:
        return squared_error(outputs, targets)
    return torch_F.cross_entropy(outputs, targets)


def expected_calibration_error(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE of the softmax of ``logits``, 15 equal-width bins (see :mod:`dropkit.metrics`)."""
    from dropkit.metrics import expected_calibration_error as ece

    return ece(torch.softmax(logits.double(), dim=1), y, bins=bins)


def make_model(
    config: TrainConfig,
    data: Dataset,
    rate: float,
    model_fn: ModelFn | None = None,
) -> nn.Module:
    """The model of ``config`` at dropout ``rate``: a built-in one, or yours (``FILE.py:NAME``).

    Your callable gets the rate as its one positional argument and returns an ``nn.Module``;
    ``model_fn`` passes it directly instead of by name.
    """
    from dropkit.experiments import user

    if model_fn is None and not user.is_spec(config.model):
        return build_model(
            config.model,
            data.input_shape,
            data.num_classes,
            hidden=config.hidden,
            rate=rate,
            layer_scale=config.layer_scale,
            variant=config.variant,
        )
    if model_fn is None:
        try:
            model_fn = user.load(config.model, "model")
        except user.SpecError as error:
            raise ConfigError("model", str(error)) from None
    try:
        model = model_fn(rate)
    except Exception as error:  # the user's code: say whose it is
        raise ConfigError(
            "model", f"{config.model}({rate}) failed ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            "model", f"{config.model}({rate}) returned a {type(model).__name__}, not an nn.Module"
        )
    if rate > 0 and not _user_sites(model):
        warnings.warn(
            f"{config.model}({rate}) has no dropout layer with p > 0 that dropkit can see; if it "
            "applies the rate some other way (functional dropout) this is fine, else its runs "
            "compare nothing",
            stacklevel=2,
        )
    return model


def _user_sites(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of a user's model whose ``p`` can be set (torch's and dropkit's)."""
    from dropkit.mc import dropout_modules

    return [m for _, m, p in dropout_modules(model) if isinstance(getattr(m, "p", None), float)]


def _rate_setter(
    config: TrainConfig, model: nn.Module, rate: float
) -> Callable[[float], None] | None:
    """What sets the model's rate each epoch (schedules, layer scales); None: nothing to do."""
    from dropkit.experiments import user

    if not user.is_spec(config.model):
        return lambda epoch_rate: set_rate(model, epoch_rate, config.layer_scale)
    if config.schedule == "constant" and config.layer_scale is None:
        return None  # your model keeps the rates it was built with
    sites = _user_sites(model)
    if not sites and rate > 0:
        option = "layer_scale" if config.schedule == "constant" else "schedule"
        raise ConfigError(
            option,
            f"{config.model}({rate}) has no dropout layer (torch's or dropkit's) whose p dropkit "
            "could change; leave this option out for this model",
        )
    scales = list(config.layer_scale) if config.layer_scale is not None else [1.0] * len(sites)
    if len(scales) != len(sites):
        raise ConfigError(
            "layer_scale",
            f"has {len(scales)} entries but {config.model} has {len(sites)} dropout layers; "
            "give one multiplier per layer",
        )
    base = [float(getattr(m, "p", 0.0)) for m in sites]

    def set_user_rate(epoch_rate: float) -> None:
        factor = epoch_rate / rate if rate > 0 else 0.0
        for site, p, scale in zip(sites, base, scales, strict=True):
            setattr(site, "p", min(p * factor * scale, 1.0))  # noqa: B010

    return set_user_rate


#: The learned-rate run's settings (``--rates auto``): every concrete layer starts at the
#: paper's rate 0.1 and temperature 0.1; the prior length scale ``l`` sets the weight term.
AUTO_INIT_P = 0.1
AUTO_TEMPERATURE = 0.1
AUTO_LENGTH_SCALE = 1e-2


def make_learned_model(
    config: TrainConfig, data: Dataset, model_fn: ModelFn | None = None
) -> nn.Module:
    """The model of ``config`` with its dropout layers made Concrete dropout (learned rates).

    Built as :func:`make_model` builds it at rate :data:`AUTO_INIT_P` (so the same seed gives
    the same initial weights as the fixed-rate runs), then converted by
    :func:`dropkit.concrete`. The regularizer weights are the paper's for a loss that is the
    mean negative log-likelihood (cross-entropy, ``tau = 1``): ``weight_regularizer = l**2 / N``
    and ``dropout_regularizer = 2 / N``, ``N`` the training set size and ``l`` =
    :data:`AUTO_LENGTH_SCALE` (Gal, Hron & Kendall, "Concrete Dropout",
    https://arxiv.org/abs/1705.07832).

    Raises:
        ConfigError: (``rates``) the model has a dropout layer that cannot learn its rate.

    Example:
        >>> from dropkit.experiments.datasets import load_dataset
        >>> data = load_dataset("synthetic")
        >>> model = make_learned_model(TrainConfig(hidden=(32,)), data)
        >>> [round(p, 6) for p in layer_rates(model)]
        [0.1]
    """
    from dropkit import concrete
    from dropkit.experiments import user

    model = make_model(config, data, AUTO_INIT_P, model_fn)
    n = len(data.y_train)
    feeds = None if user.is_spec(config.model) or model_fn is not None else _built_in_feeds(model)
    try:
        with warnings.catch_warnings():
            # A layer left at a fixed rate: the run would not be what its row says.
            warnings.filterwarnings("error", message="concrete: left", category=UserWarning)
            learned = concrete(
                model,
                init_p=AUTO_INIT_P,
                temperature=AUTO_TEMPERATURE,
                weight_regularizer=AUTO_LENGTH_SCALE**2 / n,
                dropout_regularizer=2.0 / n,
                feeds=feeds,
            )
    except (ValueError, UserWarning) as error:
        hint = ""
        if "cannot tell which layer" in str(error):
            hint = (
                "; dropkit compare finds the layer a dropout feeds inside an nn.Sequential: "
                "build your model so, or leave out auto"
            )
        raise ConfigError(
            "rates", f"auto (learned rates) cannot learn {config.model}'s dropout: {error}{hint}"
        ) from None
    return learned


def _built_in_feeds(model: nn.Module) -> dict[str, str]:
    """For the built-in models: each dropout layer feeds the next module with weights (the
    cnn's last conv-block dropout feeds the head's linear layer, outside its Sequential)."""
    from dropkit import layer_spec

    names = list(model.named_modules())
    feeds = {}
    for i, (name, module) in enumerate(names):
        if layer_spec(module) is None:
            continue
        for later, candidate in names[i + 1 :]:
            if any(True for _ in candidate.parameters(recurse=False)):
                feeds[name] = later
                break
    return feeds


def layer_rates(model: nn.Module) -> list[float]:
    """The learned rate of each concrete dropout layer of ``model``, in registration order."""
    from dropkit.nn import ConcreteDropout, ConcreteDropout1d, ConcreteDropout2d, ConcreteDropout3d

    kinds = (ConcreteDropout, ConcreteDropout1d, ConcreteDropout2d, ConcreteDropout3d)
    return [float(m.p) for m in model.modules() if isinstance(m, kinds)]


def state_identity(
    config: TrainConfig, rate: float, seeds: list[int], *, learned: bool = False
) -> str:
    """What a saved training state must match to be resumed."""
    identity: list[object] = [dataclasses.asdict(config), rate, seeds]
    if learned:
        identity.append(["auto", AUTO_INIT_P, AUTO_TEMPERATURE, AUTO_LENGTH_SCALE])
    return json.dumps(identity, sort_keys=True)


def train(
    config: TrainConfig,
    data: Dataset,
    rate: float,
    seed: int,
    *,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    model_fn: ModelFn | None = None,
    state_path: Path | None = None,
    learned: bool = False,
) -> RunResult:
    """Train ``config.model`` on ``data`` with dropout ``rate`` and ``seed``; return the metrics.

    ``learned``: learn the rates instead (``--rates auto``): the model from
    :func:`make_learned_model`, :func:`dropkit.regularization` added to the loss, each layer's
    rate recorded every epoch (``EpochMetrics.layer_rates``); ``rate`` is ignored, and the
    result's ``rate`` is the mean of the final rates.

    With ``state_path``, the training state (weights, optimizer, random generators, epoch,
    history) is saved there after every epoch and a run that finds one of its own there goes on
    from it, with the numbers an uninterrupted run gives; an interruption loses at most the epoch
    in progress. The caller deletes the file once the result is stored.

    Example:
        >>> from dropkit.experiments.datasets import load_dataset
        >>> from dropkit.experiments.train import TrainConfig, train
        >>> data = load_dataset("synthetic")
        >>> result = train(TrainConfig(epochs=2, hidden=(32,)), data, rate=0.2, seed=0)
        >>> result.epochs_run, 0.0 <= result.test_acc <= 1.0
        (2, True)
    """
    config.check()
    start = time.perf_counter()
    torch.manual_seed(seed)
    if learned:
        if config.schedule != "constant" or config.layer_scale is not None:
            raise ConfigError("rates", "auto learns the rates: give no schedule or layer scale")
        model = make_learned_model(config, data, model_fn)
        set_epoch_rate = None
    else:
        model = make_model(config, data, rate, model_fn)
        set_epoch_rate = _rate_setter(config, model, rate)
    optimizer = _optimizer(config, model)
    with guard(model):  # DK001/DK015: warns if evaluation ever runs with dropout still on
        return _fit(
            config,
            data,
            model,
            optimizer,
            rate,
            seed,
            start,
            on_epoch,
            set_epoch_rate,
            state_path,
            learned,
        )


def _fit(
    config: TrainConfig,
    data: Dataset,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rate: float,
    seed: int,
    start: float,
    on_epoch: Callable[[EpochMetrics], None] | None,
    set_epoch_rate: Callable[[float], None] | None,
    state_path: Path | None,
    learned: bool = False,
) -> RunResult:
    if learned:
        from dropkit import regularization
    order_generator = torch.Generator().manual_seed(seed)
    regression = data.task == "regression"
    x, y = data.x_train, data.y_train
    n = len(y)
    history: list[EpochMetrics] = []
    best_loss, best_state, stale = math.inf, None, 0
    first_epoch, earlier_seconds = 0, 0.0
    identity = state_identity(config, rate, [seed], learned=learned)
    saved = load_state(state_path, identity)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        order_generator.set_state(saved["order_rng"])
        torch.set_rng_state(saved["torch_rng"])
        history = [EpochMetrics(**e) for e in saved["history"]]
        best_loss, best_state, stale = saved["best_loss"], saved["best_state"], saved["stale"]
        first_epoch, earlier_seconds = len(history), saved["seconds"]
    stopped = config.early_stopping > 0 and stale >= config.early_stopping
    for epoch in range(first_epoch, config.epochs):
        if stopped:
            break
        epoch_start = time.perf_counter()
        epoch_rate = _rate_at(config, rate, epoch)
        if set_epoch_rate is not None:
            set_epoch_rate(epoch_rate)
        model.train()
        order = torch.randperm(n, generator=order_generator)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        for i in range(0, n, config.batch_size):
            index = order[i : i + config.batch_size]
            xb, yb = x[index], y[index]
            logits = model(xb)
            loss = _loss(logits, yb)
            objective = loss + regularization(model) if learned else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += loss.detach() * len(yb)
            if not regression:
                correct += (logits.detach().argmax(1) == yb).sum()
        val_loss, val_acc, _ = _evaluate(model, data.x_val, data.y_val)
        rates = layer_rates(model) if learned else None
        metrics = EpochMetrics(
            epoch=epoch + 1,
            rate=sum(rates) / len(rates) if rates else epoch_rate,
            train_loss=loss_sum.item() / n,
            train_acc=math.nan if regression else correct.item() / n,
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - epoch_start,
            layer_rates=rates,
        )
        history.append(metrics)
        if config.early_stopping:
            if val_loss < best_loss:
                best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                stopped = stale >= config.early_stopping
        save_state(
            state_path,
            identity,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "order_rng": order_generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": [dataclasses.asdict(e) for e in history],
                "best_loss": best_loss,
                "best_state": best_state,
                "stale": stale,
                "seconds": earlier_seconds + time.perf_counter() - start,
            },
        )
        if on_epoch is not None:
            on_epoch(metrics)
    if best_state is not None:
        model.load_state_dict(best_state)
    _, train_acc, _ = _evaluate(model, x, y)
    _, val_acc, _ = _evaluate(model, data.x_val, data.y_val)
    test_nll, test_acc, test_logits = _evaluate(model, data.x_test, data.y_test)
    scores = None
    if regression:
        test_nll, scores = regression_scores(model, data)
    final = layer_rates(model) if learned else None
    return RunResult(
        rate=sum(final) / len(final) if final else rate,
        seed=seed,
        train_acc=train_acc,
        test_acc=test_acc,
        test_nll=test_nll,
        test_ece=math.nan if regression else expected_calibration_error(test_logits, data.y_test),
        val_acc=val_acc,
        epochs_run=len(history),
        seconds=earlier_seconds + time.perf_counter() - start,
        history=history,
        model_state=model.state_dict(),
        layer_rates=final,
        regression=scores,
    )

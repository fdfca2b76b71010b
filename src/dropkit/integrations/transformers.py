"""A Hugging Face ``TrainerCallback``: rate schedules, the forgotten-eval guard and Monte Carlo
evaluation.

Needs transformers and accelerate (``pip install 'dropkit[transformers]'``)::

    from transformers import Trainer
    from dropkit.integrations.transformers import DropkitCallback

    callback = DropkitCallback(schedule="early", schedule_epochs=2, mc_samples=20)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[callback])
    trainer.train()
    trainer.evaluate()  # ... "eval_mc_nll", "eval_mc_ece", "eval_mc_mutual_information", ...
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from dropkit.integrations._common import require

require("transformers", "transformers", "transformers", "dropkit.integrations.transformers")

from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import ExportableState  # noqa: E402

from dropkit.integrations._common import (  # noqa: E402
    GuardAction,
    MCScores,
    RateSchedule,
    ScheduledRates,
    ScheduleKind,
    all_rates_zero_warning,
    check_eval_mode,
    check_method,
    gathered,
    mc_batch,
    scores,
)

__all__ = ["DropkitCallback"]


class DropkitCallback(TrainerCallback, ExportableState):
    """dropkit in a Hugging Face ``Trainer``: a rate schedule per epoch, the forgotten-eval
    guard on every prediction step and Monte Carlo scores at every evaluation.

    - **Schedule** (``schedule``): at the start of each epoch every dropout layer gets its own
      rate times the schedule's factor: ``"early"`` for the first ``schedule_epochs`` epochs
      only, ``"late"`` from epoch ``schedule_epochs`` on (Liu et al., "Dropout Reduces
      Underfitting", https://arxiv.org/abs/2303.01500), a function ``epoch -> factor`` any
      other. Hugging Face attention reads ``self.dropout.p`` of its dropout layer, so the
      schedule reaches attention dropout too. The rates read at the first epoch are saved in
      each checkpoint's ``trainer_state.json`` and read back when training resumes from it.
    - **Guard** (``guard``): after each evaluation or prediction step, the dropout layers of the
      model must be in eval mode (the doctor's DK001, docs/rules/DK001.md): ``"error"`` raises
      ``RuntimeError``, ``"warn"`` warns once per evaluation, ``None`` does not check.
    - **Monte Carlo evaluation** (``mc_samples`` > 0): after each evaluation, the evaluation
      data runs through :func:`dropkit.mc.predict` (``mc_samples`` passes; moment
      propagation, which takes one tensor input, does not apply to keyword inputs), and
      ``<prefix>mc_nll``, ``mc_ece``, ``mc_mutual_information`` and ``mc_accuracy`` are added
      to the metrics ``evaluate()`` returns and to the evaluation's row of
      ``state.log_history`` (the prefix is the evaluation's, ``eval_`` by default; loggers
      such as TensorBoard, which ``Trainer.log`` feeds before this event, do not see them).
      A batch's ``labels`` are the targets, its other entries the keyword inputs. Under
      data-parallel training the predictions of all processes are gathered first.
      :attr:`history` keeps every evaluation's scores.

    Args:
        schedule: ``"constant"`` (no change), ``"early"``, ``"late"`` or a function of the
            (0-based) epoch; a function cannot be saved in ``trainer_state.json``, so it needs
            ``restore_callback_states_from_checkpoint=False`` (the default), under which this
            callback restores its own state.
        schedule_epochs: the epochs with (``early``) or without (``late``) dropout.
        guard: ``"error"``, ``"warn"`` or ``None``.
        mc_samples: stochastic passes per input; 0: off.
        mc_method: ``"sampling"`` (the only method for keyword inputs; ``"moments"`` raises).
        mc_seed: batch ``i`` of an evaluation uses seed ``mc_seed + i`` (``None``: fresh draws).

    Example:
        >>> from dropkit.integrations.transformers import DropkitCallback
        >>> DropkitCallback(schedule="late", schedule_epochs=1).state()["args"]["schedule"]
        'late'
    """

    def __init__(
        self,
        schedule: ScheduleKind | Callable[[int], float] = "constant",
        schedule_epochs: int = 0,
        guard: GuardAction | None = "error",
        mc_samples: int = 20,
        mc_method: str = "sampling",
        mc_seed: int | None = 0,
    ) -> None:
        if guard not in ("error", "warn", None):
            raise ValueError(
                f"DropkitCallback: guard must be 'error', 'warn' or None, got {guard!r}"
            )
        if mc_samples:
            check_method("DropkitCallback", mc_method, mc_samples)
            if mc_method == "moments":
                raise ValueError(
                    "DropkitCallback: mc_method='moments' propagates a single tensor input, and a "
                    "Trainer calls the model with keyword inputs (input_ids=, attention_mask=); "
                    "use mc_method='sampling'"
                )
        self.rates = ScheduledRates(RateSchedule(schedule, schedule_epochs))
        self.guard: GuardAction | None = guard
        self.mc_samples, self.mc_method, self.mc_seed = mc_samples, mc_method, mc_seed
        self.history: list[dict[str, float]] = []
        self._guard_warned = False

    # --------------------------------------------------------------- saved state

    @property
    def schedule_state(self) -> dict[str, Any]:
        """The schedule's state: each layer's own rate, the last epoch and factor."""
        return self.rates.state_dict()

    @schedule_state.setter
    def schedule_state(self, state: Mapping[str, Any]) -> None:
        self.rates.load_state_dict(state)

    def state(self) -> dict[str, Any]:
        kind = self.rates.schedule.kind
        return {
            "args": {
                "schedule": kind if isinstance(kind, str) else "constant",
                "schedule_epochs": self.rates.schedule.epochs,
                "guard": self.guard,
                "mc_samples": self.mc_samples,
                "mc_method": self.mc_method,
                "mc_seed": self.mc_seed,
            },
            "attributes": {"schedule_state": self.schedule_state},
        }

    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if callable(self.rates.schedule.kind) and args.restore_callback_states_from_checkpoint:
            raise ValueError(
                "DropkitCallback: a schedule function cannot be saved in trainer_state.json, and "
                "restore_callback_states_from_checkpoint=True would rebuild the callback without "
                "it; leave that option False (DropkitCallback restores its own state)"
            )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        stored_states: Any = state.stateful_callbacks  # a dict of states once TrainerState is built
        saved = (
            stored_states.get(type(self).__name__) if isinstance(stored_states, Mapping) else None
        )
        if isinstance(saved, Mapping):  # resumed: the checkpoint's state (or ours, on a fresh run)
            stored = saved.get("attributes", {}).get("schedule_state")
            if stored and stored.get("base"):
                self.rates.load_state_dict(stored)

    # ------------------------------------------------------------------ schedule

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # state.epoch is a whole number at an epoch's start, and a fraction after a checkpoint
        # saved mid-epoch: the epoch that begins is its integer part.
        epoch = math.floor((state.epoch or 0.0) + 1e-6)
        self.rates.apply(kwargs["model"], epoch)

    # --------------------------------------------------------------------- guard

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.guard is None or self._guard_warned:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_eval_mode(kwargs["model"], "in an evaluation step", self.guard)
        if caught:
            self._guard_warned = True
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    # ------------------------------------------------------------ MC evaluation

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._guard_warned = False
        if not self.mc_samples:
            return
        model: nn.Module = kwargs["model"]
        loader = kwargs.get("eval_dataloader")
        metrics: dict[str, float] = kwargs.get("metrics", {})
        if loader is None:
            raise ValueError("DropkitCallback: the evaluation gave no eval_dataloader to score")
        label_names = list(args.label_names or ["labels"])
        collected = MCScores()
        for i, batch in enumerate(loader):
            if not isinstance(batch, Mapping) or label_names[0] not in batch:
                raise TypeError(
                    f"DropkitCallback: Monte Carlo evaluation needs batches of keyword inputs "
                    f"with {label_names[0]!r} (the class labels); got {type(batch).__name__}"
                )
            inputs = {k: v for k, v in batch.items() if k not in label_names}
            seed = None if self.mc_seed is None else self.mc_seed + i
            scored = mc_batch(
                model, inputs, samples=self.mc_samples, method=self.mc_method, seed=seed
            )
            if scored is None:
                all_rates_zero_warning("DropkitCallback", model)
                return
            collected.add(*scored, batch[label_names[0]])
        result = scores(*gathered(*collected.tensors()))
        self.history.append(result)
        prefix = _prefix(metrics)
        named = {f"{prefix}mc_{name}": value for name, value in result.items()}
        metrics.update(named)
        # The evaluation's own row of the log history (Trainer.log wrote it just before this
        # event) gets the Monte Carlo scores, so that one row holds the whole evaluation.
        last = state.log_history[-1] if state.log_history else {}
        if f"{prefix}runtime" in last and last.get("step") == state.global_step:
            last.update(named)
        else:
            state.log_history.append({**named, "epoch": state.epoch, "step": state.global_step})


def _prefix(metrics: Mapping[str, float]) -> str:
    """``"eval_"`` or the evaluation's own ``metric_key_prefix``, read from its runtime key."""
    for key in metrics:
        if key.endswith("_runtime"):
            return key[: -len("runtime")]
    return "eval_"

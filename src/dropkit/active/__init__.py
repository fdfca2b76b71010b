"""Active learning on dropout uncertainty: which pool examples to label next.

- Acquisition functions on an :class:`~dropkit.mc.MCResult` (``method="sampling"`` or
  ``"moments"``): :func:`entropy`, :func:`bald`, :func:`variation_ratio`, :func:`mean_std`,
  :func:`margin`, :func:`least_confidence`, greedy :func:`batch_bald`, stochastic batch
  acquisition (:func:`stochastic_batch`), and :func:`acquire` for any strategy by name.

- The pool-based loop: :func:`active_learning` (your model and data, like
  :func:`dropkit.experiments.compare`) and :func:`run_active` (an :class:`ActiveConfig`), with
  results in an SQLite database that a killed run resumes from (:class:`ActiveStore`).
- Summaries and the HTML report: :func:`summarize_active`, :func:`write_active_report`.

Built on the public API of :mod:`dropkit.mc` only.
"""

from dropkit.active._acquisition import STRATEGIES, acquire, check_strategy
from dropkit.active._batch_bald import batch_bald, joint_mutual_information
from dropkit.active._config import ActiveConfig, ActiveProgress
from dropkit.active._loop import active_learning, initial_labelled, run_active
from dropkit.active._report import (
    Interval,
    StrategySummary,
    summarize_active,
    table_rows,
    write_active_report,
)
from dropkit.active._scores import (
    SCORES,
    bald,
    entropy,
    least_confidence,
    margin,
    mean_std,
    score,
    variation_ratio,
)
from dropkit.active._selection import (
    STOCHASTIC_MODES,
    random_query,
    stochastic_batch,
    stochastic_weights,
    top_k,
)
from dropkit.active._store import ActiveStore, ActiveStoreError, RoundResult

__all__ = [
    "SCORES",
    "STOCHASTIC_MODES",
    "STRATEGIES",
    "ActiveConfig",
    "ActiveProgress",
    "ActiveStore",
    "ActiveStoreError",
    "Interval",
    "RoundResult",
    "StrategySummary",
    "acquire",
    "active_learning",
    "bald",
    "batch_bald",
    "check_strategy",
    "entropy",
    "initial_labelled",
    "joint_mutual_information",
    "least_confidence",
    "margin",
    "mean_std",
    "random_query",
    "run_active",
    "score",
    "stochastic_batch",
    "stochastic_weights",
    "summarize_active",
    "table_rows",
    "top_k",
    "variation_ratio",
    "write_active_report",
]

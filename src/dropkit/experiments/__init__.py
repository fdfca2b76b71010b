"""Paired dropout experiments: data sets, models, training, results on disk and reports.

Needs the ``experiments`` extra (``pip install 'dropkit[experiments]'``); imported only when used.
"""

from dropkit.experiments.api import compare
from dropkit.experiments.compare import CompareConfig, Progress, run_compare
from dropkit.experiments.datasets import DATASETS, Dataset, DatasetError, from_splits, load_dataset
from dropkit.experiments.models import MODELS, build_model
from dropkit.experiments.report import summarize, verdict, write_report
from dropkit.experiments.store import Store, StoreError
from dropkit.experiments.train import ConfigError, RunResult, TrainConfig, train

__all__ = [
    "DATASETS",
    "MODELS",
    "CompareConfig",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "Progress",
    "RunResult",
    "Store",
    "StoreError",
    "TrainConfig",
    "build_model",
    "compare",
    "from_splits",
    "load_dataset",
    "run_compare",
    "summarize",
    "train",
    "verdict",
    "write_report",
]

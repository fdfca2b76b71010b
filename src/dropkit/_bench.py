"""Moved to :mod:`dropkit.experiments.bench`. This alias keeps the old import path working
until the tests that still use it (convert's and mc's) import the new one; then delete it."""

from dropkit.experiments.bench import *  # noqa: F403
from dropkit.experiments.bench import __all__  # noqa: F401

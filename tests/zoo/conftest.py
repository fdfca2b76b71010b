"""The zoo's fixtures: ``zoo_case`` runs a test once per stock model of ``models.py``.

``models.py`` is loaded as the module ``zoo_models`` (by the suite's conftest, or here) so that
the zoo's test files can ``import zoo_models``: the suite runs with ``--import-mode=importlib``,
which puts no test folder on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_models() -> object:
    if "zoo_models" in sys.modules:
        return sys.modules["zoo_models"]
    spec = importlib.util.spec_from_file_location(
        "zoo_models", Path(__file__).with_name("models.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["zoo_models"] = module
    spec.loader.exec_module(module)
    return module


zoo_models = _load_models()


@pytest.fixture(params=zoo_models.case_params())  # type: ignore[attr-defined]
def zoo_case(request: pytest.FixtureRequest) -> object:
    """One :class:`zoo_models.Case` per stock model (slow ones marked ``slow``)."""
    return request.param

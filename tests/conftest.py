"""Suite-wide set-up: the zoo's helpers as ``zoo_models``, and the ``vision`` marker's check.

timm and torchvision run in an environment of their own (``requirements/vision.txt``): PyPI's
torchvision is built for CUDA torch and does not import beside the CPU build that
``requirements/test.txt`` installs. Tests that need them carry ``@pytest.mark.vision``;
``zoo_models.import_torchvision`` and ``import_timm`` refuse an unmarked caller.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


def _zoo_models() -> ModuleType:
    """``tests/zoo/models.py`` as the module ``zoo_models``, loaded once: the suite runs with
    ``--import-mode=importlib``, which puts no test folder on ``sys.path``."""
    if "zoo_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "zoo_models", Path(__file__).parent / "zoo" / "models.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["zoo_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["zoo_models"]


def pytest_configure() -> None:
    _zoo_models()


def pytest_runtest_setup(item: pytest.Item) -> None:
    _zoo_models().current_test_is_vision[0] = item.get_closest_marker("vision") is not None


@pytest.fixture
def special_values() -> Callable[[tuple[int, ...], torch.dtype, int], torch.Tensor]:
    """``make(shape, dtype, seed)``: seeded normal values with NaN, +inf, -inf, +0.0 and -0.0
    each at about one element in eight, for the bit-exact checks of the masks' semantics."""

    def make(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=generator)
        pick = torch.randint(0, 8, shape, generator=generator)
        for code, value in enumerate([float("nan"), float("inf"), -float("inf"), 0.0, -0.0]):
            x[pick == code] = value
        return x.to(dtype)

    return make

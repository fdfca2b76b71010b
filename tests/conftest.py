"""Suite-wide set-up: let torchvision import with a torch build it was not compiled for.

PyPI's torchvision wheel is built against CUDA torch; with the CPU build its compiled extension
does not load and ``import torchvision`` fails (``operator torchvision::nms does not exist``).
torchmetrics (under ``dropkit.metrics``), timm and parts of transformers import torchvision when
it is installed, so the whole suite needs the placeholders of ``tests/zoo/models.py`` before
anything imports it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


def pytest_configure() -> None:
    # Subprocesses that tests spawn (dropkit compare, sweep workers) run the same hook at
    # start-up: Python imports ``sitecustomize`` from PYTHONPATH.
    support = str(Path(__file__).parent / "support")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [support, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    if "zoo_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "zoo_models", Path(__file__).parent / "zoo" / "models.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["zoo_models"] = module
        spec.loader.exec_module(module)
    sys.modules["zoo_models"].torchvision_placeholders()


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

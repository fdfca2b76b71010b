"""Every test here starts from one seed of torch's default generator, so its inputs (and the
masks drawn without an explicit seed) are the same on every machine and every run."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)

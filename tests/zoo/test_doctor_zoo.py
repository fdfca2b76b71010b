"""The doctor on stock models: no false error or warning, and the stock recipe's real ones once."""

from __future__ import annotations

import collections

import pytest
import torch
from zoo_models import import_torchvision

from dropkit.doctor import check


def test_the_doctor_finds_nothing_wrong_with_a_stock_model(zoo_case) -> None:
    model = zoo_case.build()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = check(model, zoo_case.example())
    found = collections.Counter(f.code for f in report.errors + report.warnings)
    assert set(found) == zoo_case.findings, report.findings
    assert all(n == 1 for n in found.values()), report.findings  # one per mistake, not per layer
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.vision
def test_densenet_as_torchvision_ships_it_is_clean() -> None:
    # The zoo's DenseNet sets drop_rate=0.1, and its two findings (DK003 once, DK005 through
    # torch.cat into the next BatchNorm) are right for that recipe; torchvision's default,
    # drop_rate=0, has no dropout and must come out with no error and no warning.
    models = import_torchvision().models
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16)
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = check(model.eval(), example)
    assert report.errors == []
    assert report.warnings == []

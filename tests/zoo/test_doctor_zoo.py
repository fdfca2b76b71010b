"""The doctor on stock models: no false error or warning, and the stock recipe's real ones once."""

from __future__ import annotations

import collections

import torch

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

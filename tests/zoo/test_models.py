"""The zoo itself: enough stock models, each rebuilt identically and run as its users call it."""

from __future__ import annotations

import torch
import zoo_models


def test_the_zoo_covers_the_libraries_people_use() -> None:
    names = {case.name for case in zoo_models.CASES}
    assert len(names) == len(zoo_models.CASES) >= 20
    assert {case.library for case in zoo_models.CASES} == {
        "transformers", "timm", "torchvision", "torch"
    }  # fmt: skip


def test_a_case_builds_the_same_model_and_input_every_time(zoo_case) -> None:
    first, second = zoo_case.build(), zoo_case.build()
    assert not first.training
    x, y = zoo_case.example(), zoo_case.example()
    with torch.no_grad():
        a = zoo_models.main_output(zoo_models.call(first, x))
        b = zoo_models.main_output(zoo_models.call(second, y))
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()

"""Monte Carlo dropout over the zoo of stock models: samples vary exactly where train mode is
stochastic, the shared prefix gives the samples replication gives, and nothing else changes."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import zoo_models
from torch import nn

from dropkit import mc

SAMPLES = 3


def _train_mode_is_stochastic(model: nn.Module, inputs: Any) -> bool:
    """Whether two train-mode passes differ (flags, buffers and the RNG restored afterwards)."""
    flags = {m: m.training for m in model.modules()}
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        with torch.random.fork_rng(), torch.no_grad():
            model.train()
            first = zoo_models.main_output(zoo_models.call(model, inputs))
            second = zoo_models.main_output(zoo_models.call(model, inputs))
    finally:
        for module, training in flags.items():
            module.training = training
        for buffer, value in buffers:
            buffer.copy_(value)
    return not torch.equal(first, second)


def test_mc_on_a_stock_model(zoo_case: Any) -> None:
    model = zoo_case.build()
    inputs = zoo_case.example()
    flags = {name: m.training for name, m in model.named_modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    if not zoo_case.stochastic:
        with pytest.raises(
            ValueError, match=f"nothing stochastic ran .* of {type(model).__name__}"
        ):
            mc.predict(model, inputs, samples=SAMPLES)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shared = mc.predict(model, inputs, samples=SAMPLES, seed=0)
        replicated = mc.predict(model, inputs, samples=SAMPLES, seed=0, share_prefix=False)
    ours = [str(w.message) for w in caught if str(w.message).startswith("predict:")]
    assert ours == []  # every stochastic module of a stock model is switched on safely
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-4, atol=1e-5)
    varies = bool(shared.samples.std(0).max() > 0)
    assert varies == _train_mode_is_stochastic(model, inputs)
    # BatchNorm statistics and every other buffer untouched; every flag as before.
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert {name: m.training for name, m in model.named_modules()} == flags


def test_the_readme_hugging_face_example_runs_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    zoo_models.import_transformers()  # placeholders for torchvision's operators, if needed
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Monte Carlo dropout") :]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    example = next(b for b in blocks if "transformers" in b)
    exec(compile(example, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "shared-prefix torch.Size([20, 4, 3])"

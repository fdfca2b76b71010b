"""convert(functional=True): torch's functional dropout inside a model runs as dropkit's."""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as torch_F
import zoo_models

import dropkit
import dropkit.functional as dk_F
from dropkit import mc


def _no_mode_active() -> bool:
    return not torch.overrides.has_torch_function((torch.ones(1),))


class FunctionalNet(torch.nn.Module):
    def __init__(self, p: float = 0.3, fail: bool = False) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.drop_rate, self.fail = p, fail

    def forward(self, x: torch.Tensor, depth: int = 0) -> torch.Tensor:
        x = torch_F.dropout(self.linear(x), self.drop_rate, self.training)
        if self.fail:
            raise RuntimeError("boom")
        return self(x, depth - 1) if depth > 0 else x


def test_default_convert_routes_nothing() -> None:
    with pytest.warns(UserWarning, match="no dropout layer to swap"):
        _, report = dropkit.convert(FunctionalNet(), torch.randn(4, 8), return_report=True)
    assert not report.functional
    assert "functional dropout rate (drop_rate) inside FunctionalNet" in str(report)


def test_functional_dropout_runs_as_dropkits() -> None:
    model = dropkit.convert(FunctionalNet(), functional=True).train()
    x = torch.randn(16, 8)
    torch.manual_seed(0)
    got = model(x)
    torch.manual_seed(0)
    expected = dk_F.dropout(model.linear(x), 0.3)
    assert torch.equal(got, expected)
    torch.manual_seed(0)
    assert not torch.equal(got, torch_F.dropout(model.linear(x), 0.3))
    assert _no_mode_active()
    model.eval()
    assert torch.equal(model(x), model.linear(x))


def test_report_counts_routed_calls_or_says_run_time() -> None:
    x = torch.randn(4, 8)
    _, report = dropkit.convert(FunctionalNet(), x, functional=True, return_report=True)
    assert report.routed == {"torch.nn.functional.dropout": 1}
    assert "routed 1 functional dropout call per forward" in str(report)
    assert "functional dropout rate" not in str(report)
    _, report = dropkit.convert(FunctionalNet(), functional=True, return_report=True)
    assert "functional dropout routed through dropkit at run time" in str(report)
    with pytest.raises(TypeError, match="functional"):
        dropkit.convert(FunctionalNet(), functional=1)  # type: ignore[call-overload]


def test_exception_and_recursion_leave_no_mode() -> None:
    model = dropkit.convert(FunctionalNet(fail=True), functional=True).train()
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(2, 8))
    assert _no_mode_active()
    model = dropkit.convert(FunctionalNet(), torch.randn(2, 8), functional=True).train()
    model(torch.randn(2, 8), depth=3)  # nested calls each enter and leave their own mode
    assert _no_mode_active()


def test_hooks_survive_copy_and_pickle_and_can_be_removed() -> None:
    model, report = dropkit.convert(FunctionalNet(), functional=True, return_report=True)
    x = torch.randn(16, 8)
    for clone in (copy.deepcopy(model), _pickled(model)):
        clone.load_state_dict(model.state_dict())
        clone.train()
        torch.manual_seed(0)
        got = clone(x)
        torch.manual_seed(0)
        assert torch.equal(got, dk_F.dropout(clone.linear(x), 0.3))
    for handle in report.hooks:
        handle.remove()
    torch.manual_seed(0)
    got = model.train()(x)
    torch.manual_seed(0)
    assert torch.equal(got, torch_F.dropout(model.linear(x), 0.3))


def _pickled(model: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)  # type: ignore[no-any-return]


def test_alpha_dropout_left_off_by_torchs_default() -> None:
    class Alpha(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch_F.alpha_dropout(x, 0.5)  # torch: training=False by default

    model = dropkit.convert(torch.nn.Sequential(Alpha()), functional=True).train()
    x = torch.randn(8, 8)
    assert torch.equal(model(x), x)


CASES = {case.name: case for case in zoo_models.CASES}
ATTENTION = ["nn-transformer-encoder", "bert", "bert-eager", "timm-vit", "llama"]


@pytest.mark.parametrize("case", zoo_models.case_params([CASES[name] for name in ATTENTION]))
def test_attention_models(case: Any) -> None:
    model, x = case.build(), case.example()
    with torch.no_grad():
        expected = zoo_models.main_output(zoo_models.call(model, x))
    converted, report = dropkit.convert(model, x, functional=True, return_report=True)
    assert sum(report.routed.values()) > 0, str(report)
    with torch.no_grad():  # eval: torch's own calls, bit for bit
        assert torch.equal(zoo_models.main_output(zoo_models.call(converted, x)), expected)
    converted.train()
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        out = zoo_models.main_output(zoo_models.call(converted, x))
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    outs[0].float().square().mean().backward()
    assert all(p.grad is None or p.grad.isfinite().all() for p in converted.parameters())
    assert _no_mode_active()


def test_attention_dropout_of_nn_transformer_drops_at_its_rate() -> None:
    # One head, equal scores, value = identity: the layer's attention output is the weights.
    p, s = 0.25, 64
    mha = torch.nn.MultiheadAttention(s, 1, dropout=p, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.zero_()
        mha.in_proj_weight[2 * s :] = torch.eye(s)
        mha.out_proj.weight.copy_(torch.eye(s))
    model = dropkit.convert(mha, functional=True)
    model.train()
    x = torch.eye(s).expand(32, s, s)
    torch.manual_seed(0)
    with torch.no_grad():
        out, _ = model(x, x, x, need_weights=False)
    kept = out != 0
    n = kept.numel()
    z = (kept.sum().item() - n * (1 - p)) / math.sqrt(n * p * (1 - p))
    assert abs(z) < 4
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (s * (1 - p))))


@pytest.mark.parametrize("name", ["nn-transformer-encoder", "bert"])
def test_mc_predict_on_a_converted_model(name: str) -> None:
    case = CASES[name]
    model = dropkit.convert(case.build(), functional=True)
    x = case.example()
    shared = mc.predict(model, x, samples=3, seed=0)
    replicated = mc.predict(model, x, samples=3, seed=0, share_prefix=False)
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-4, atol=1e-5)
    assert shared.samples.std(0).max() > 0
    assert _no_mode_active()

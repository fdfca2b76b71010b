"""torch.compile keeps dropkit ops in one graph and gives the eager results."""

from __future__ import annotations

import pytest
import torch

import dropkit.functional as F
from dropkit import nn


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 32),
        torch.nn.ReLU(),
        nn.Dropout(0.3),
        torch.nn.Unflatten(1, (8, 4)),
        nn.Dropout1d(0.2),
        torch.nn.Flatten(),
        nn.AlphaDropout(0.1),
        torch.nn.Linear(32, 4),
    )


def test_no_graph_breaks() -> None:
    x = torch.randn(8, 16)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(_model())(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    explained = torch._dynamo.explain(lambda t: F.locked_dropout(t, 0.5, seed=3) + 1)(x)
    assert explained.graph_break_count == 0


def test_compiled_equals_eager_with_explicit_seeds() -> None:
    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.dropout(t, 0.4, seed=11) * 2 + F.drop_path(t, 0.5, seed=2**63 + 5)

    x = torch.randn(8, 16)
    compiled = torch.compile(fn, backend="aot_eager")
    assert torch.equal(compiled(x), fn(x))


def test_compiled_training_step_equals_eager() -> None:
    import torch._inductor.config as inductor_config

    model = _model()
    compiled = torch.compile(model)
    x = torch.randn(8, 16, requires_grad=True)
    grads = []
    # Inductor draws random numbers its own way unless told to fall back to eager's.
    with inductor_config.patch(fallback_random=True):
        for run in (compiled, model):
            torch.manual_seed(6)
            out = run(x)
            out.sum().backward()
            grads.append((out.detach(), x.grad.clone()))
            x.grad = None
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_custom_op_passes_opcheck() -> None:
    op = torch.ops.dropkit.masked_affine  # registered by importing dropkit
    x = torch.randn(4, 6, requires_grad=True)
    seed = torch.tensor(3)
    torch.library.opcheck(op, (x, [4, 6], 0.3, seed, 1 / 0.7, 0.0, 0.0), test_utils="test_schema")
    torch.library.opcheck(
        op,
        (x, [4, 1], 0.3, seed, 1 / 0.7, 0.0, 0.0),
        test_utils=["test_faketensor", "test_autograd_registration"],
    )


@pytest.mark.parametrize("inplace", [False, True])
def test_inplace_under_compile(inplace) -> None:
    def fn(t: torch.Tensor) -> torch.Tensor:
        t = t * 1.0
        return F.dropout(t, 0.5, inplace=inplace, seed=1)

    x = torch.randn(5, 5)
    assert torch.equal(torch.compile(fn, backend="aot_eager")(x), fn(x))


def test_export_with_a_dynamic_batch_of_any_size_in_training_mode() -> None:
    # The small path checks for a graph before it reads the input's size, so an exported or
    # compiled graph carries no guard on it.
    from torch.export import Dim

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return F.dropout(self.linear(t), 0.5)

    exported = torch.export.export(
        Model().train(), (torch.randn(8, 4),), dynamic_shapes={"t": {0: Dim("n", max=10**6)}}
    )
    assert exported.module()(torch.randn(20_000, 4)).shape == (20_000, 4)


def test_one_dynamic_graph_serves_small_and_large_inputs() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda t: F.dropout(t, 0.5) * 3, backend="aot_eager", dynamic=True)
    for n in (100, 300, 70_000, 200):
        x = torch.randn(n, 1, requires_grad=True)
        torch.manual_seed(0)
        compiled(x).sum().backward()
    assert counters["stats"]["unique_graphs"] == 1

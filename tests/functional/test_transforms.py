"""Every op under torch's transforms: torch.compile, torch.func, tracing and export.

Where torch's own dropout works under a transform, dropkit's ops work and give their eager
values; where torch's raises (``vmap`` in its default ``randomness="error"`` mode, ``hessian``
with a drawn mask), dropkit's raise the same way.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import pytest
import torch
from torch.func import grad, hessian, jacrev, jvp, vmap

import dropkit.functional as F
from dropkit import nn

_BIAS = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)

# name -> (op taking (x, seed) with the rest fixed, input shape)
OPS: dict[str, tuple[Callable[..., torch.Tensor], tuple[int, ...]]] = {
    "dropout": (lambda x, seed=None: F.dropout(x, 0.4, seed=seed), (4, 6)),
    "dropout1d": (lambda x, seed=None: F.dropout1d(x, 0.4, seed=seed), (4, 3, 6)),
    "dropout2d": (lambda x, seed=None: F.dropout2d(x, 0.4, seed=seed), (4, 3, 2, 6)),
    "dropout3d": (lambda x, seed=None: F.dropout3d(x, 0.4, seed=seed), (4, 3, 2, 1, 6)),
    "alpha_dropout": (lambda x, seed=None: F.alpha_dropout(x, 0.4, seed=seed), (4, 6)),
    "feature_alpha_dropout": (
        lambda x, seed=None: F.feature_alpha_dropout(x, 0.4, seed=seed),
        (4, 3, 6),
    ),
    "gaussian_dropout": (lambda x, seed=None: F.gaussian_dropout(x, 0.4, seed=seed), (4, 6)),
    "locked_dropout": (lambda x, seed=None: F.locked_dropout(x, 0.4, seed=seed), (4, 3, 6)),
    "drop_path": (lambda x, seed=None: F.drop_path(x, 0.4, seed=seed), (4, 6)),
    "drop_block2d": (
        lambda x, seed=None: F.drop_block2d(x, 0.4, block_size=2, seed=seed),
        (2, 2, 5, 6),
    ),
    "drop_block3d": (
        lambda x, seed=None: F.drop_block3d(x, 0.4, block_size=2, seed=seed),
        (2, 2, 3, 4, 6),
    ),
    # timm's semantics: every option that changes the graph (the batch factor, the noise fill)
    "drop_block2d_timm": (
        lambda x, seed=None: F.drop_block2d(
            x,
            0.3,
            block_size=3,
            seed=seed,
            gamma="paper",
            placement="centered",
            couple_channels=True,
            rescale="batch",
            eps=1e-7,
            with_noise=True,
        ),
        (2, 2, 5, 6),
    ),
    "dropconnect": (lambda x, seed=None: F.dropconnect(x, 0.4, seed=seed), (4, 6)),
    "embedding_dropout": (lambda x, seed=None: F.embedding_dropout(x, 0.4, seed=seed), (4, 6)),
    "bias_dropout": (
        lambda x, seed=None: F.bias_dropout(
            x, _BIAS.to(x.dtype), 0.4, activation="gelu", seed=seed
        ),
        (4, 6),
    ),
    "bias_dropout_add": (
        lambda x, seed=None: F.bias_dropout_add(x, _BIAS.to(x.dtype), x.cos(), 0.4, seed=seed),
        (4, 6),
    ),
}
NAMES = list(OPS)


def _input(name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = OPS[name][1]
    return torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _tolerance(name: str, dtype: torch.dtype) -> dict[str, float]:
    """Bit-equal where both sides run the same kernel; a few ulps where a compiled graph may
    reorder floating-point work (the Gaussian noise's log/cos, GELU's erf)."""
    if name in ("gaussian_dropout", "bias_dropout", "drop_block2d_timm"):
        eps = torch.finfo(dtype).eps
        return {"rtol": 8 * eps, "atol": 8 * eps}
    return {"rtol": 0.0, "atol": 0.0}


# ---------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_equals_eager_with_gradients(name: str) -> None:
    fn = OPS[name][0]
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    upstream = torch.randn(OPS[name][1], generator=torch.Generator().manual_seed(2))
    results = []
    for run in (compiled, fn):
        for seed in (5, None):  # explicit, and drawn from the default generator in-graph
            x = _input(name).requires_grad_()
            torch.manual_seed(3)
            out = run(x, seed=seed)
            out.backward(upstream)
            results.append((out.detach(), x.grad))
    for (out_c, grad_c), (out_e, grad_e) in zip(results[:2], results[2:], strict=True):
        torch.testing.assert_close(out_c, out_e, **_tolerance(name, torch.float32))
        torch.testing.assert_close(grad_c, grad_e, **_tolerance(name, torch.float32))


def test_compiled_module_has_no_graph_break() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 6),
        nn.GaussianDropout(0.2),
        nn.Dropout(0.3),
        torch.nn.Unflatten(1, (1, 2, 3)),
        nn.DropBlock2d(0.2, block_size=2),
        torch.nn.Flatten(),
    )
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(4, 6))
    assert explanation.graph_break_count == 0, explanation.break_reasons


# ---------------------------------------------------------------- torch.func


def _torch_dropout(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.dropout(x, 0.4)


def _outcome(fn: Callable[[], object]) -> type[BaseException] | None:
    try:
        fn()
    except Exception as error:  # the type is compared with torch's
        return type(error)
    return None


@pytest.mark.parametrize("name", NAMES)
def test_vmap_randomness_different_draws_one_mask_per_sample(name: str) -> None:
    fn = OPS[name][0]
    x = _input(name).expand(8, *OPS[name][1]).contiguous()
    torch.manual_seed(4)
    out = vmap(fn, randomness="different")(x)
    assert out.shape == x.shape
    # Each sample is the op applied with its own mask: not all samples equal ...
    assert not all(torch.equal(out[0], out[i]) for i in range(1, 8))
    # ... and each one is a valid output of the op (eager, with the same seeds in order).
    torch.manual_seed(4)
    seeds = torch.randint(0, 2**62, (8,), dtype=torch.int64).tolist()
    for i, seed in enumerate(seeds):
        torch.testing.assert_close(out[i], fn(x[i], seed=seed), **_tolerance(name, x.dtype))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_randomness_same_shares_the_mask(name: str) -> None:
    fn = OPS[name][0]
    x = _input(name).expand(5, *OPS[name][1]).contiguous()
    out = vmap(fn, randomness="same")(x)
    for i in range(1, 5):
        assert torch.equal(out[0], out[i])


@pytest.mark.parametrize("name", NAMES)
def test_vmap_default_randomness_errors_like_torch(name: str) -> None:
    x = _input(name).expand(3, *OPS[name][1]).contiguous()
    expected = _outcome(lambda: vmap(_torch_dropout)(x))
    assert expected is RuntimeError
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(OPS[name][0])(x)
    # An explicit seed is not randomness: the same mask for every sample, as "same" gives.
    out = vmap(lambda t: OPS[name][0](t, seed=9))(x)
    torch.testing.assert_close(out[1], OPS[name][0](x[1], seed=9), **_tolerance(name, x.dtype))


@pytest.mark.parametrize("name", NAMES)
def test_grad_jacrev_and_jvp_equal_autograd(name: str) -> None:
    fn = OPS[name][0]
    x = _input(name, torch.float64)
    tangent = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    leaf = x.clone().requires_grad_()
    (expected_grad,) = torch.autograd.grad(fn(leaf, seed=3).square().sum(), leaf)
    torch.testing.assert_close(grad(lambda t: fn(t, seed=3).square().sum())(x), expected_grad)
    jacobian = jacrev(lambda t: fn(t, seed=3))(x)
    assert jacobian.shape == x.shape + x.shape
    torch.testing.assert_close(
        (jacobian.reshape(x.numel(), x.numel()).T @ tangent.reshape(-1)).reshape(x.shape),
        torch.autograd.functional.jvp(lambda t: fn(t, seed=3), x, tangent)[1],
    )
    out, directional = jvp(lambda t: fn(t, seed=3), (x,), (tangent,))
    torch.testing.assert_close(out, fn(x, seed=3))
    torch.testing.assert_close(
        directional, torch.autograd.functional.jvp(lambda t: fn(t, seed=3), x, tangent)[1]
    )
    # A drawn mask works under grad, as torch's dropout does.
    assert _outcome(lambda: grad(lambda t: _torch_dropout(t).sum())(x)) is None
    assert grad(lambda t: fn(t).sum())(x).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_hessian_like_torch(name: str) -> None:
    fn = OPS[name][0]
    x = _input(name, torch.float64)
    # hessian vmaps in the default randomness mode: a drawn mask raises, for torch too.
    assert _outcome(lambda: hessian(lambda t: _torch_dropout(t).square().sum())(x)) is not None
    with pytest.raises(RuntimeError, match="randomness"):
        hessian(lambda t: fn(t).square().sum())(x)
    h = hessian(lambda t: fn(t, seed=3).square().sum())(x)
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(fn(leaf, seed=3).square().sum(), leaf, create_graph=True)
    rows = [torch.autograd.grad(g.reshape(-1)[i], leaf, retain_graph=True)[0] for i in range(3)]
    torch.testing.assert_close(h.reshape(x.numel(), -1)[:3], torch.stack(rows).reshape(3, -1))


# ---------------------------------------------------------------- tracing and export


def _training_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 6), nn.Dropout(0.5), nn.GaussianDropout(0.2))


def test_jit_trace_draws_a_fresh_mask_per_call() -> None:
    model = _training_model()
    x = torch.randn(16, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the trace is nondeterministic
        traced = torch.jit.trace(model, (x,), check_trace=False)
    torch.manual_seed(1)
    first = traced(x)
    torch.manual_seed(1)
    assert torch.equal(first, traced(x))  # torch.manual_seed reproduces it
    assert not torch.equal((first == 0), (traced(x) == 0))  # and each call draws anew
    assert 0 < int((first == 0).sum()) < first.numel()


def test_jit_trace_in_eval_mode_is_the_identity() -> None:
    model = _training_model().eval()
    x = torch.randn(4, 6)
    traced = torch.jit.trace(model, (x,))
    assert torch.equal(traced(x), model[0](x))


def test_jit_script_fails_with_a_message_that_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"Dropout: torch\.jit\.script .*torch\.jit\.trace"):
        torch.jit.script(_training_model())


def test_legacy_onnx_export_in_training_mode_says_what_to_do() -> None:
    model = _training_model()
    with pytest.raises(Exception, match=r"dropout: .*ONNX.*model\.eval\(\)"):
        torch.onnx.export(
            model,
            (torch.randn(2, 6),),
            io.BytesIO(),
            dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING,
        )


def test_legacy_onnx_export_in_eval_mode_works() -> None:
    pytest.importorskip("onnx")
    buffer = io.BytesIO()
    torch.onnx.export(_training_model().eval(), (torch.randn(2, 6),), buffer, dynamo=False)
    assert buffer.getvalue()


@pytest.mark.parametrize(
    ("layer", "name"),
    [(nn.Dropout(0.5), "dropout"), (nn.GaussianDropout(0.2), "gaussian_dropout"),
     (nn.Dropout1d(0.3), "dropout1d")],
)  # fmt: skip
def test_dynamo_onnx_export_in_training_mode_says_what_to_do(layer, name) -> None:
    # The same message as the legacy exporter's, not torch's ConversionError at the dropkit op
    # (and no silent export of a Gaussian dropout, whose noise ONNX would draw its own way).
    pytest.importorskip("onnxscript")
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Unflatten(1, (2, 3)), layer)
    with pytest.raises(
        Exception, match=rf"{name}: a training-mode dropkit dropout .*ONNX.*model\.eval\(\)"
    ):
        torch.onnx.export(model, (torch.randn(2, 6),), dynamo=True)


def test_dynamo_onnx_export_in_eval_mode_works() -> None:
    pytest.importorskip("onnxscript")
    program = torch.onnx.export(_training_model().eval(), (torch.randn(2, 6),), dynamo=True)
    assert program is not None


def test_torch_export_keeps_a_training_mode_dropout() -> None:
    model = _training_model()
    x = torch.randn(32, 6)
    exported = torch.export.export(model, (x,)).module()
    torch.manual_seed(2)
    out = exported(x)
    torch.manual_seed(2)
    assert torch.equal(out, model(x))
    assert 0 < int((out == 0).sum()) < out.numel()

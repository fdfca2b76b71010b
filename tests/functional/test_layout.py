"""Every op keeps the input's memory layout, as torch's dropout does, with the same values.

The rule is torch's: the output has the input's strides where the input is dense, and the
strides of ``torch.empty_like(input)`` otherwise; a gradient has the incoming gradient's layout
where that is dense, the input's where it is expanded (``y.sum()``). The first tests are
written as torch's own (``test/nn/test_dropout.py``: ``_test_dropout``,
``_test_dropout_discontiguous``, ``_test_dropout_stride_mean_preserve``), on dropkit's layers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as torch_F

import dropkit
import dropkit.functional as F
from dropkit import nn

BACKENDS = ("numba", "reference")


def _invert(perm: tuple[int, ...]) -> tuple[int, ...]:
    where = {d: i for i, d in enumerate(perm)}
    return tuple(where[d] for d in range(len(perm)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_dropout_keeps_every_permuted_and_shifted_layout(backend: str, requires_grad: bool) -> None:
    # torch's _test_dropout_stride_mean_preserve, on dropkit.nn.Dropout.
    inp = torch.ones(2, 3, 4, 5)
    with dropkit.backend(backend):  # type: ignore[arg-type]
        for perm in itertools.permutations((0, 1, 2, 3), r=4):
            for shift in [(0, 0), (1, 0), (0, 1), (1, 1)]:
                for p in [1e-10, 0.3, 0.5, 0.7]:
                    mod = nn.Dropout(p=p)
                    permuted = inp.permute(perm).contiguous().permute(_invert(perm))
                    permuted = permuted[shift[0] :, shift[1] :, :, :]
                    out = mod(permuted.detach().requires_grad_(requires_grad))
                    assert out.permute(perm).is_contiguous(), (perm, shift, out.stride())
                    torch.testing.assert_close(out.mean(), inp.mean(), rtol=0.5, atol=0.5)
                    if p == 1e-10:
                        assert torch.equal(out, permuted)
                    else:
                        assert not torch.equal(out, permuted)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_dropout_on_a_discontiguous_input_gives_the_memory_format(
    backend: str, memory_format: torch.memory_format
) -> None:
    # torch's _test_dropout_discontiguous, on every dropkit layer that takes (N, C, H, W).
    layers: list[Callable[[float], torch.nn.Module]] = [
        nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.DropPath,
        lambda p: nn.DropBlock2d(p, block_size=2), nn.LockedDropout,
    ]  # fmt: skip
    with dropkit.backend(backend):  # type: ignore[arg-type]
        for layer in layers:
            for p in [0.0, 1e-10]:
                inp = torch.ones(2, 3, 3, 3)
                discontiguous = torch.empty(2, 3, 3, 6, memory_format=memory_format)[..., ::2]
                discontiguous.copy_(inp)
                out = layer(p)(discontiguous)
                if p != 0:
                    assert out.is_contiguous(memory_format=memory_format), (layer, out.stride())
                assert torch.equal(discontiguous, out)


LAYERS: dict[str, Callable[[float], torch.nn.Module]] = {
    "Dropout": nn.Dropout,
    "Dropout2d": nn.Dropout2d,
    "AlphaDropout": nn.AlphaDropout,
    "FeatureAlphaDropout": nn.FeatureAlphaDropout,
    "GaussianDropout": nn.GaussianDropout,
    "DropPath": nn.DropPath,
    "DropBlock2d": lambda p: nn.DropBlock2d(p, block_size=3),
    "LockedDropout": nn.LockedDropout,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("size", [6, 48])  # 1.3K elements (saved mask), 83K (regenerated)
def test_channels_last_output_and_gradient(backend: str, layer: str, size: int) -> None:
    # torch's _test_dropout(cls, device, input, memory_format=torch.channels_last).
    p = 0.2
    module = LAYERS[layer](p)
    inp = torch.empty(2, 6, size, 6 * size).fill_(1 - p)
    with dropkit.backend(backend):  # type: ignore[arg-type]
        input_var = inp.clone(memory_format=torch.channels_last).requires_grad_()
        output = module(input_var)
        assert output.is_contiguous(memory_format=torch.channels_last)
        output.backward(inp)
        assert input_var.grad is not None
        assert input_var.grad.is_contiguous(memory_format=torch.channels_last)

        if layer in ("Dropout", "AlphaDropout", "GaussianDropout"):
            # A gradient expanded from y.sum() into a non-leaf: torch multiplies it by its
            # element mask, laid out as the input; so does dropkit. (With a mask shared over
            # dims, torch's product comes out contiguous, and so does dropkit's saved path.)
            input_var = inp.clone(memory_format=torch.channels_last).requires_grad_()
            mid = input_var + 0
            (grad,) = torch.autograd.grad(module(mid).sum(), mid)
            assert grad.is_contiguous(memory_format=torch.channels_last)


def _layouts() -> dict[str, torch.Tensor]:
    base = torch.randn(4, 6, 9, 10, generator=torch.Generator().manual_seed(1))
    return {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
        "permuted": base.permute(3, 1, 0, 2).contiguous().permute(2, 1, 3, 0),
        "sliced": torch.randn(4, 6, 9, 20)[..., ::2],
        "channels_last slice": base.contiguous(memory_format=torch.channels_last)[:, :, 1:],
        "expanded": torch.randn(4, 6, 1, 10).expand(4, 6, 9, 10),
    }


OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "dropout": lambda x: F.dropout(x, 0.3, seed=3),
    "dropout2d": lambda x: F.dropout2d(x, 0.3, seed=3),
    "channels_last dropout1d": lambda x: F.dropout1d(x.flatten(2), 0.3, seed=3, channels_last=True),
    "alpha_dropout": lambda x: F.alpha_dropout(x, 0.3, seed=3),
    "feature_alpha_dropout": lambda x: F.feature_alpha_dropout(x, 0.3, seed=3),
    "gaussian_dropout": lambda x: F.gaussian_dropout(x, 0.3, seed=3),
    "drop_path": lambda x: F.drop_path(x, 0.3, seed=3),
    "drop_block2d": lambda x: F.drop_block2d(x, 0.3, block_size=3, seed=3),
    "locked_dropout": lambda x: F.locked_dropout(x, 0.3, seed=3),
    "bias_dropout_add": lambda x: F.bias_dropout_add(x, x.new_ones(10), x, 0.3, seed=3),
    "bias_dropout": lambda x: F.bias_dropout(x, x.new_ones(10), 0.3, seed=3, activation="relu"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_every_layout_gives_the_values_of_a_contiguous_input_in_empty_likes_layout(
    backend: str, op: str, dtype: torch.dtype
) -> None:
    # The mask is on logical indices: one seed gives every layout the same values.
    fn = OPS[op]
    with dropkit.backend(backend):  # type: ignore[arg-type]
        for name, x in _layouts().items():
            x = x.to(dtype)
            y = fn(x)
            assert torch.equal(y, fn(x.contiguous())), name
            inp = x.flatten(2) if op.startswith("channels_last") else x
            assert y.stride() == torch.empty_like(inp).stride(), (name, y.stride())


@pytest.mark.parametrize("requires_grad", [False, True])
def test_output_strides_are_torchs(requires_grad: bool) -> None:
    for name, x in _layouts().items():
        leaf = x.detach().requires_grad_(requires_grad)
        for ours, theirs in [
            (F.dropout(leaf, 0.3), torch_F.dropout(leaf, 0.3)),
            (F.dropout2d(leaf, 0.3), torch_F.dropout2d(leaf, 0.3)),
            (F.alpha_dropout(leaf, 0.3), torch_F.alpha_dropout(leaf, 0.3, True)),
            (F.dropout(leaf.flatten(1).t(), 0.3), torch_F.dropout(leaf.flatten(1).t(), 0.3)),
        ]:
            assert ours.stride() == theirs.stride(), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("numel", [1080, 1 << 17])  # the saved-mask path, the mask-free path
def test_gradient_strides_are_torchs(backend: str, numel: int) -> None:
    base = torch.randn(numel // 1080 * 4, 6, 9, 10)
    for x in (
        base.contiguous(memory_format=torch.channels_last),
        base.transpose(2, 3),
    ):
        leaf = x.detach().requires_grad_()
        for grad_output in (torch.randn(x.shape), torch.ones(()).expand(x.shape)):
            with dropkit.backend(backend):  # type: ignore[arg-type]
                (ours,) = torch.autograd.grad(F.dropout(leaf * 1, 0.3), leaf, grad_output)
                (mid,) = torch.autograd.grad(
                    F.dropout(y := leaf * 1, 0.3), y, grad_output
                )  # the gradient dropkit's backward returns, before any accumulation
            (theirs,) = torch.autograd.grad(torch_F.dropout(leaf * 1, 0.3), leaf, grad_output)
            (torch_mid,) = torch.autograd.grad(torch_F.dropout(z := leaf * 1, 0.3), z, grad_output)
            assert ours.stride() == theirs.stride()
            assert mid.stride() == torch_mid.stride(), (x.stride(), grad_output.stride())


def test_inplace_keeps_the_input_itself_in_its_layout() -> None:
    x = torch.randn(4, 6, 9, 10).contiguous(memory_format=torch.channels_last)
    expected = F.dropout(x.contiguous(), 0.3, seed=4)
    y = F.dropout(x, 0.3, inplace=True, seed=4)
    assert y is x
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, expected)

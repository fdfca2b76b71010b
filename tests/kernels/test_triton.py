"""The Triton kernels in Triton's interpreter, against the reference, bit for bit.

``TRITON_INTERPRET=1`` must be set before Triton is imported, so the checks run in a
subprocess; each prints one line per check and the test reads them back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import dropkit
import dropkit.functional as F

pytest.importorskip("triton")

CHECKS = textwrap.dedent(
    """
    import torch, dropkit, dropkit.functional as F
    from dropkit.kernels import masked_affine

    torch.manual_seed(0)

    INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}

    def both(fn):
        with dropkit.backend("triton"):
            fast = fn()
        with dropkit.backend("reference"):
            ref = fn()
        return fast, ref

    def same_bits(a, b):
        return torch.equal(a.contiguous().view(INT[a.dtype]), b.contiguous().view(INT[b.dtype]))

    for dtype in INT:
        for n in (1, 7, 4095, 4096, 4097, 3 * 4096 + 5):
            x = torch.randn(n).to(dtype)
            fast, ref = both(lambda: masked_affine(x, (n,), 0.3, n, 1 / 0.7, 0.25, -0.5))
            print("affine", dtype, n, same_bits(fast, ref))

    x = torch.randn(6, 8, 5, 7).to(memory_format=torch.channels_last)
    for name, fn in [
        ("dropout channels_last", lambda: F.dropout(x, 0.5, seed=2)),
        ("dropout2d", lambda: F.dropout2d(x, 0.5, seed=2)),
        ("locked", lambda: F.locked_dropout(x.flatten(2), 0.4, seed=3)),
        ("drop_path", lambda: F.drop_path(x, 0.4, seed=4)),
        ("alpha", lambda: F.alpha_dropout(x, 0.2, seed=5)),
        ("transposed", lambda: F.dropout(x.flatten(1).t(), 0.3, seed=6)),
        ("p=1", lambda: F.dropout(x, 1.0, seed=6)),
    ]:
        fast, ref = both(fn)
        print(name, torch.equal(fast, ref))

    # The output has the layout of torch.empty_like (the input's strides where it is dense),
    # and the values of a contiguous input (the mask is on logical indices).
    base = torch.randn(6, 8, 5, 7)
    for name, xs in [
        ("channels_last", base.contiguous(memory_format=torch.channels_last)),
        ("transposed", base.transpose(1, 3)),
        ("sliced", torch.randn(6, 8, 5, 14)[..., ::2]),
        ("expanded", torch.randn(6, 1, 5, 7).expand(6, 8, 5, 7)),
    ]:
        for dtype in INT:
            xd = xs.to(dtype) if name in ("sliced", "expanded") else xs.to(dtype).clone(
                memory_format=torch.preserve_format
            )
            want = torch.empty_like(xd).stride()
            for op, fn in [
                ("dropout", lambda: F.dropout(xd, 0.3, seed=2)),
                ("alpha", lambda: F.alpha_dropout(xd, 0.3, seed=2)),
                ("dropout2d", lambda: F.dropout2d(xd, 0.3, seed=2)),
            ]:
                fast, ref = both(fn)
                with dropkit.backend("reference"):
                    flat = F.dropout(xd.contiguous(), 0.3, seed=2) if op == "dropout" else ref
                same = same_bits(fast, ref) and same_bits(fast, flat)
                print("layout", name, op, dtype, same and fast.stride() == want)

    leaf = torch.randn(40, 70, requires_grad=True)
    grads = []
    for backend in ("triton", "reference"):
        with dropkit.backend(backend):
            F.dropout(leaf, 0.5, seed=8).square().sum().backward()
        grads.append(leaf.grad.clone())
        leaf.grad = None
    print("gradient", torch.equal(*grads))

    xb, b, r = torch.randn(5, 700, 24), torch.randn(24), torch.randn(5, 700, 24)
    for act in (None, "relu", "gelu"):
        fast, ref = both(lambda: F.bias_dropout(xb, b, 0.2, activation=act, seed=4))
        if act == "gelu":  # two float32 erf approximations: a few ulps of the value's scale
            eps = torch.finfo(torch.float32).eps
            y = (xb + b).abs() / 0.8
            close = bool(((fast - ref).abs() <= 8 * eps * (y + ref.abs())).all())
        else:
            close = torch.equal(fast, ref)
        print("bias_dropout", act, close)
    xh, bh, rh = xb.bfloat16(), b.bfloat16(), r.bfloat16()
    fast, ref = both(lambda: F.bias_dropout_add(xh, bh, rh, 0.2, seed=4))
    print("bias_dropout_add bf16", same_bits(fast, ref))
    """
)


def test_triton_kernels_equal_reference_in_the_interpreter() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", CHECKS], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    failed = [line for line in lines if not line.endswith("True")]
    assert not failed, failed
    checked = {line.split()[0] for line in lines}
    assert checked >= {
        "affine", "dropout2d", "layout", "gradient", "bias_dropout", "bias_dropout_add"
    }  # fmt: skip


def test_forcing_triton_on_cpu_outside_the_interpreter_is_an_error(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with dropkit.backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        F.dropout(torch.ones(4), 0.5, seed=0)


def test_auto_never_picks_triton_for_cpu_tensors() -> None:
    from dropkit.kernels import select

    assert select(torch.ones(3)).name == "numba"
    assert "triton" in dropkit.available_backends()

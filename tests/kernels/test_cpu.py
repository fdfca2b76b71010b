"""The numba CPU kernels against the reference, bit for bit, and the backend dispatch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import dropkit
import dropkit.functional as F
from dropkit.kernels import CHUNK, masked_affine, random_uint32, select

pytest.importorskip("numba")

from dropkit.kernels import _cpu, _cpu_stream

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
_INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so that -0.0 vs 0.0 and NaN payloads count as differences."""
    return t.contiguous().view(_INT_VIEW[t.dtype])


def _both(x, noise_shape, p, seed, scale, shift=0.0, fill=0.0):
    """The forced numba backend and the reference; the default ("auto", which picks numba for
    CPU float tensors) is checked against the forced one on the way."""
    with dropkit.backend("numba"):
        fast = masked_affine(x, noise_shape, p, seed, scale, shift, fill)
    with dropkit.backend("reference"):
        ref = masked_affine(x, noise_shape, p, seed, scale, shift, fill)
    auto = masked_affine(x, noise_shape, p, seed, scale, shift, fill)
    assert torch.equal(_bits(auto), _bits(fast))
    return fast, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("numel", [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 70_001])
def test_element_kernel_equals_reference(dtype, numel) -> None:
    x = torch.randn(numel, generator=torch.Generator().manual_seed(numel)).to(dtype)
    for p in (0.1, 0.5, 0.9):
        fast, ref = _both(x, (numel,), p, seed=numel + 3, scale=1 / (1 - p))
        assert torch.equal(_bits(fast), _bits(ref)), (dtype, numel, p)


def _same_bits_up_to_nan_payload(fast: torch.Tensor, ref: torch.Tensor) -> bool:
    nan = torch.isnan(ref)
    return torch.equal(torch.isnan(fast), nan) and torch.equal(_bits(fast)[~nan], _bits(ref)[~nan])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("noise_shape", [(40, 300), (40, 1), (1, 300)])
def test_special_values_multiply_by_the_scaled_mask_as_the_reference(
    special_values, dtype, noise_shape
) -> None:
    # NaN and inf stay NaN where dropped, -0.0 stays -0.0: the kernels multiply by the scaled
    # mask exactly as the reference (and torch) do, with the flat and the broadcast kernels.
    x = special_values((12_000,), dtype, 12_000).view(40, 300)
    fast, ref = _both(x, noise_shape, 0.5, 13, scale=2.0)
    assert _same_bits_up_to_nan_payload(fast, ref)
    keep = select(x).keep_mask(noise_shape, 0.5, 13, x.device).expand(40, 300)
    assert torch.isnan(fast[~keep & torch.isinf(x)]).all()
    assert torch.signbit(fast[~keep & (x < 0)]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_shift_and_fill_equal_reference(dtype) -> None:
    x = torch.randn(5000).to(dtype)
    fast, ref = _both(x, (5000,), 0.3, 9, scale=1.2, shift=0.4, fill=-0.7)
    # x*scale+shift is two roundings in both; no fused multiply-add on either side.
    assert torch.equal(_bits(fast), _bits(ref))


@pytest.mark.parametrize(
    ("shape", "noise_shape"),
    [
        ((8, 16, 5, 5), (8, 16, 1, 1)),  # channel dropout
        ((8, 5, 5, 16), (8, 1, 1, 16)),  # channels last
        ((7, 8, 16), (1, 8, 16)),  # time-locked
        ((8, 3, 4), (8, 1, 1)),  # drop path
        ((1, 3, 4), (1, 1, 1)),  # batch mode
        ((8, 4, 5, 3), (8, 1, 5, 1)),  # two shared runs: mask from the kernel, apply in torch
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_masks_equal_reference(shape, noise_shape, dtype) -> None:
    x = torch.randn(shape).to(dtype)
    fast, ref = _both(x, noise_shape, 0.4, 21, scale=1 / 0.6)
    assert torch.equal(_bits(fast), _bits(ref))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_half_precision_bit_pattern(dtype) -> None:
    # All 65,536 patterns, widened, scaled in float32 and rounded once to nearest even.
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    for scale in (1.0, 1 / 0.7, 3.0, 1e-3):
        fast, ref = _both(x, tuple(x.shape), 1e-9, 5, scale=scale)
        nan = torch.isnan(ref)
        assert torch.equal(torch.isnan(fast), nan)
        assert torch.equal(_bits(fast)[~nan], _bits(ref)[~nan]), scale


def test_non_contiguous_and_channels_last_inputs() -> None:
    x = torch.randn(6, 8, 5, 7).to(memory_format=torch.channels_last)
    for fn in (F.dropout, F.dropout2d):
        with dropkit.backend("numba"):
            fast = fn(x, 0.5, seed=2)
        with dropkit.backend("reference"):
            ref = fn(x, 0.5, seed=2)
        assert torch.equal(fast, ref)
        assert torch.equal(fn(x, 0.5, seed=2), ref)  # auto
    x = torch.randn(40, 30).t()
    with dropkit.backend("numba"):
        fast = F.dropout(x, 0.5, seed=2)
    with dropkit.backend("reference"):
        assert torch.equal(fast, F.dropout(x, 0.5, seed=2))
    assert torch.equal(fast, F.dropout(x, 0.5, seed=2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_backward_equals_reference_backward(dtype) -> None:
    # The default path's backward (the kernel again, from the seed) against the reference's,
    # on a non-contiguous input and a non-contiguous incoming gradient.
    x = torch.randn(33, 70).to(dtype).t()
    grad = torch.randn(33, 70).to(dtype).t()
    grads = []
    for name in (None, "reference"):
        leaf = x.detach().requires_grad_()
        if name is None:
            F.dropout(leaf, 0.3, seed=77).backward(grad)
        else:
            with dropkit.backend(name):
                F.dropout(leaf, 0.3, seed=77).backward(grad)
        grads.append(leaf.grad)
    assert torch.equal(_bits(grads[0]), _bits(grads[1]))


def test_p_one_fills_and_empty_inputs() -> None:
    x = torch.full((10,), float("nan"))
    fast, ref = _both(x, (10,), 1.0, 0, scale=0.0, fill=0.5)
    assert torch.equal(fast, ref)
    assert torch.equal(fast, torch.full((10,), 0.5))
    fast, ref = _both(torch.empty(0, 3), (0, 3), 0.5, 0, scale=2.0)
    assert fast.shape == ref.shape == (0, 3)


def test_keep_mask_kernel_equals_reference() -> None:
    for numel in (1, CHUNK + 3, 50_000):
        expected = random_uint32(numel, 77) >= 2**31
        with dropkit.backend("numba"):
            numba_backend = select(torch.ones(1))
        assert numba_backend.name == "numba"
        keep = numba_backend.keep_mask((numel,), 0.5, 77, torch.device("cpu"))
        assert torch.equal(keep, expected)


def test_block_counters_are_64_bit() -> None:
    # Chunk 2**31 holds stream elements past 2**43: no 32-bit wrap-around of the block counter.
    chunk = 2**31
    bits = np.empty(CHUNK, np.uint32)
    _cpu_stream._philox_chunk(bits, np.int64(chunk), np.uint32(123), np.uint32(0))
    expected = random_uint32(CHUNK, 123, start=chunk * CHUNK)
    assert torch.equal(torch.from_numpy(bits.astype(np.int64)), expected)


def test_thread_count_does_not_change_the_result() -> None:
    x = torch.randn(200_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = F.dropout(x, 0.5, seed=4)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, F.dropout(x, 0.5, seed=4))


# ---------------------------------------------------------------- dispatch


def test_auto_picks_numba_on_cpu_and_reference_for_other_dtypes() -> None:
    assert select(torch.ones(2)).name == "numba"
    assert select(torch.ones(2, dtype=torch.complex64)).name == "reference"
    with dropkit.backend("reference"):
        assert select(torch.ones(2)).name == "reference"
    with dropkit.backend("auto"):
        assert select(torch.ones(2)).name == "numba"


def test_environment_variable_is_read_at_import_and_checked_by_the_first_op() -> None:
    import subprocess
    import sys

    script = (
        "import os, torch, dropkit, dropkit.functional as F\n"
        "y = F.dropout(torch.ones(100), 0.5, seed=1)\n"
        "with dropkit.backend('reference'):\n"
        "    assert torch.equal(y, F.dropout(torch.ones(100), 0.5, seed=1))\n"
        "print('ok')\n"
    )
    for value in ("reference", "numba", "auto"):
        env = dict(__import__("os").environ, DROPKIT_BACKEND=value)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
        assert done.stdout.strip() == b"ok", done.stderr[-2000:]
    env = dict(__import__("os").environ, DROPKIT_BACKEND="fastest")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "DROPKIT_BACKEND: unknown backend 'fastest'" in done.stderr


def test_bad_backend_names_and_forced_backends_that_cannot_run() -> None:
    with (
        pytest.raises(ValueError, match=r"dropkit.backend: unknown backend"),
        dropkit.backend(
            "gpu"  # type: ignore[arg-type]
        ),
    ):
        pass
    with dropkit.backend("numba"), pytest.raises(RuntimeError, match="float CPU tensors only"):
        F.dropout(torch.ones(2, dtype=torch.complex64), 0.5)


def test_available_backends_lists_numba() -> None:
    assert dropkit.available_backends()["numba"].startswith("available")


def test_missing_numba_falls_back_with_one_warning() -> None:
    import subprocess
    import sys

    script = """
import sys, warnings
sys.modules["numba"] = None  # as if numba were not installed
import torch, dropkit, dropkit.functional as F
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    y = F.dropout(torch.ones(100), 0.5, seed=1)
    F.dropout(torch.ones(100), 0.5, seed=1)
assert [str(w.message).count("numba is not installed") for w in caught] == [1], caught
with dropkit.backend("reference"):
    assert torch.equal(y, F.dropout(torch.ones(100), 0.5, seed=1))
try:
    with dropkit.backend("numba"):
        F.dropout(torch.ones(100), 0.5, seed=1)
except RuntimeError as error:
    assert "numba is not installed" in str(error)
    print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_kernels_leave_torch_thread_count_alone() -> None:
    # numba's pool shares torch's OpenMP runtime; starting it used to turn a user's
    # torch.set_num_threads(1) into numba's count. Checked in a fresh process, where the pool
    # starts during the test.
    code = (
        "import torch; torch.set_num_threads(1); import dropkit.functional as F; "
        "assert torch.get_num_threads() == 1; "  # (asking first is what exposed it)
        "F.dropout(torch.randn(10), 0.5); F.dropout(torch.randn(1 << 20), 0.5); "
        "F.dropout(torch.randn(1 << 20, requires_grad=True), 0.5).sum().backward(); "
        "print(torch.get_num_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_mask_into_a_given_tensor(dtype) -> None:
    numba_backend = _cpu.NUMBA
    cpu = torch.device("cpu")
    fresh = numba_backend.scaled_mask((40, 70), 0.3, 5, 1 / 0.7, dtype, cpu)
    with dropkit.backend("reference"):
        expected = select(torch.ones(1, dtype=dtype)).scaled_mask(
            (40, 70), 0.3, 5, 1 / 0.7, dtype, cpu
        )
    assert torch.equal(fresh, expected)
    buffer = torch.full((3, 40, 70), -1.0, dtype=dtype)
    written = numba_backend.scaled_mask((40, 70), 0.3, 5, 1 / 0.7, dtype, cpu, out=buffer[1])
    assert written.data_ptr() == buffer[1].data_ptr()
    assert torch.equal(buffer[1], fresh)
    assert (buffer[0] == -1).all()
    assert (buffer[2] == -1).all()
    with pytest.raises(ValueError, match="contiguous tensor of the mask's shape and dtype"):
        numba_backend.scaled_mask((40, 70), 0.3, 5, 1 / 0.7, dtype, cpu, out=buffer[:, 0])

"""The reference stream: known-answer vectors, layout, and agreement with Triton's Philox."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dropkit.kernels import CHUNK, LANES, keep_threshold, philox4x32, random_uint32

# Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_known_answers(counter, key, expected) -> None:
    words = philox4x32(tuple(torch.tensor([c], dtype=torch.int64) for c in counter), key)
    assert tuple(int(w) for w in words) == expected


def test_stream_layout_uses_four_words_per_block() -> None:
    seed = 2**40 + 99
    stream = random_uint32(2 * CHUNK, seed)
    for element in (0, 1, LANES - 1, LANES, 3 * LANES + 5, CHUNK + 2 * LANES + 17):
        chunk, rest = divmod(element, CHUNK)
        word, lane = divmod(rest, LANES)
        block = chunk * LANES + lane
        counter = (torch.tensor([block]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0]))
        expected = philox4x32(counter, (seed & 0xFFFFFFFF, seed >> 32))[word]
        assert int(stream[element]) == int(expected)


def test_stream_slices_agree_with_whole_stream() -> None:
    whole = random_uint32(3 * CHUNK + 11, 5)
    for start, n in [(0, 1), (7, 100), (CHUNK - 3, 10), (2 * CHUNK + 1, CHUNK + 10)]:
        assert torch.equal(random_uint32(n, 5, start=start), whole[start : start + n])


def test_values_are_uniform_uint32() -> None:
    values = random_uint32(1 << 16, 123).double()
    assert values.min() >= 0
    assert values.max() < 2**32
    # Mean of U(0, 2^32): 2^31, standard error 2^32 / sqrt(12 n).
    assert abs(values.mean().item() - 2**31) < 5 * 2**32 / (12 * (1 << 16)) ** 0.5


def test_bad_seed_and_range() -> None:
    with pytest.raises(ValueError, match="seed"):
        random_uint32(4, -1)
    with pytest.raises(ValueError, match="seed"):
        random_uint32(4, 2**64)
    with pytest.raises(ValueError, match="outside"):
        random_uint32(4, 0, start=2**62)


def test_keep_threshold() -> None:
    assert keep_threshold(0.0) == 0
    assert keep_threshold(1.0) == 2**32
    assert keep_threshold(0.5) == 2**31


TRITON_SCRIPT = textwrap.dedent(
    """
    import torch, triton, triton.language as tl
    from dropkit.kernels import CHUNK, LANES, random_uint32

    @triton.jit
    def stream(out, seed, n, LANES: tl.constexpr):
        lane = tl.arange(0, LANES)
        block = (tl.program_id(0) * LANES + lane).to(tl.int64)
        words = tl.randint4x(seed, block)
        base = tl.program_id(0) * 4 * LANES + lane
        for w in tl.static_range(4):
            tl.store(out + base + w * LANES, words[w], mask=base + w * LANES < n)

    n = 2 * CHUNK + 77
    for seed in (0, 12345, 2**40 + 7):
        out = torch.zeros(n, dtype=torch.int32)
        stream[(triton.cdiv(n, CHUNK),)](out, seed, n, LANES=LANES)
        assert torch.equal(out.to(torch.int64) & 0xFFFFFFFF, random_uint32(n, seed)), seed
    print("ok")
    """
)


def test_reference_equals_triton_randint4x() -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"

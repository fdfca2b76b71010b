"""The two paths of a dropout that autograd records (``_autograd.apply_with_grad``): a small mask
is written scaled and multiplied through torch's native autograd, which saves it; a large one
goes through the mask-free op, whose backward regenerates it. Same Philox mask, same bits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import dropkit
import dropkit.functional as F
from dropkit.functional import _autograd
from dropkit.functional._autograd import SAVED_MASK_BELOW

_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, NaN payloads normalised (torch and the kernels may quiet a NaN differently)."""
    t = torch.where(torch.isnan(t), torch.full_like(t, float("nan")), t)
    return t.contiguous().view(_INT_VIEW[t.dtype])


def _run(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Output, input gradient and bytes saved for backward."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    leaf = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(leaf * 1.0)  # a non-leaf, so that in-place ops are allowed as in a model
        out.backward(grad)
    assert leaf.grad is not None
    return out.detach(), leaf.grad, sum(saved)


@pytest.fixture
def choose_path(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``choose_path("mask-free")`` closes the saved-mask path; ``"saved"`` opens it for all."""

    def force(name: str) -> None:
        below = {"mask-free": 0, "saved": 2**62, "auto": SAVED_MASK_BELOW}[name]
        monkeypatch.setattr(_autograd, "SAVED_MASK_BELOW", below)

    return force


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("numel", [SAVED_MASK_BELOW - 1, SAVED_MASK_BELOW, SAVED_MASK_BELOW + 1])
@pytest.mark.parametrize("inplace", [False, True])
def test_both_paths_give_the_same_bits_on_both_sides_of_the_threshold(
    choose_path, special_values, dtype, numel, inplace
) -> None:
    x = special_values((numel,), dtype, numel)
    grad = special_values((numel,), dtype, numel + 1)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.dropout(t, 0.3, inplace=inplace, seed=11)

    results = {}
    for name in ("auto", "mask-free", "saved"):
        choose_path(name)
        results[name] = _run(fn, x, grad)
    for name in ("mask-free", "saved"):
        assert torch.equal(_bits(results[name][0]), _bits(results["auto"][0])), name
        assert torch.equal(_bits(results[name][1]), _bits(results["auto"][1])), name
    # which path ran: the saved one keeps the scaled mask, the mask-free one nothing input-sized
    assert results["mask-free"][2] < 1024
    assert results["saved"][2] == numel * x.element_size()
    assert results["auto"][2] == (numel * x.element_size() if numel < SAVED_MASK_BELOW else 0)


@pytest.mark.parametrize(
    ("fn", "shape", "mask_numel"),
    [
        (lambda t: F.dropout2d(t, 0.4, seed=3), (8, 16, 9, 9), 8 * 16),
        (lambda t: F.dropout1d(t, 0.4, seed=3), (8, 16, 33), 8 * 16),
        (lambda t: F.locked_dropout(t, 0.4, seed=3), (12, 8, 16), 8 * 16),
        (lambda t: F.drop_path(t, 0.4, seed=3), (8, 5, 7), 8),
        (lambda t: F.dropout(t, 0.4, noise_shape=(1, None), seed=3), (6, 40), 40),
        (lambda t: F.dropout(t, 0.4, seed=3), (37, 23), 37 * 23),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_masks_give_the_same_bits_on_both_paths(
    choose_path, special_values, fn, shape, mask_numel, dtype
) -> None:
    x = special_values(shape, dtype, 5)
    grad = special_values(shape, dtype, 6)
    choose_path("mask-free")
    out_free, grad_free, saved_free = _run(fn, x, grad)
    choose_path("auto")
    out, grad_in, saved = _run(fn, x, grad)
    assert torch.equal(_bits(out), _bits(out_free))
    assert torch.equal(_bits(grad_in), _bits(grad_free))
    assert saved_free < 1024
    assert saved == mask_numel * x.element_size()


def test_a_large_input_with_a_small_shared_mask_saves_only_the_mask() -> None:
    # Channel dropout on a 4M-element map: the mask is N*C values, the input is never saved.
    x = torch.randn(16, 64, 64, 64, requires_grad=True)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = F.dropout2d(x, 0.5, seed=1)
    assert saved == [16 * 64]
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, (y.detach() != 0).float() * 2.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_mask_free(dtype) -> None:
    x = torch.randn(64, 32).to(dtype)
    _, _, saved = _run(lambda t: F.dropout(t, 0.3, seed=2), x, torch.ones_like(x))
    assert saved < 1024


def test_the_reference_backend_takes_the_saved_path_with_the_same_bits(special_values) -> None:
    x = special_values((70, 50), torch.float32, 9)
    grad = special_values((70, 50), torch.float32, 10)
    fn = lambda t: F.dropout(t, 0.6, seed=4)  # noqa: E731
    with dropkit.backend("reference"):
        reference = _run(fn, x, grad)
    default = _run(fn, x, grad)
    assert torch.equal(_bits(reference[0]), _bits(default[0]))
    assert torch.equal(_bits(reference[1]), _bits(default[1]))
    assert reference[2] == default[2] == x.numel() * 4


def test_double_backward_on_the_saved_path() -> None:
    x = torch.randn(20, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: F.dropout(t, 0.4, seed=5) ** 2, (x,))


# ---------------------------------------------------------------- the unseeded small path
# ``dropout(x, p)`` with no seed on a small recorded input takes ``small_dropout``: the seed
# drawn into a tensor that the kernel reads, the mask written into a reused tensor.


def _general(t: torch.Tensor, p: float) -> torch.Tensor:
    """The same call by the general path: an explicit full noise_shape skips the small path."""
    return F.dropout(t, p, noise_shape=[None] * t.dim())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1,), (37, 23), (64, 256), (SAVED_MASK_BELOW - 1,)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_unseeded_small_path_gives_the_general_paths_bits(
    special_values, dtype, shape, p
) -> None:
    x = special_values(shape, dtype, 21)
    grad = special_values(shape, dtype, 22)
    results = []
    for fn in (lambda t: F.dropout(t, p), lambda t: _general(t, p)):
        torch.manual_seed(5)
        results.append(_run(fn, x, grad))
        results[-1] += (torch.rand(()),)  # the generator moved on by the same single draw
    torch.manual_seed(5)
    seed = int(torch.randint(0, 2**62, ()))
    explicit = _run(lambda t: F.dropout(t, p, seed=seed), x, grad)
    (small_out, small_grad, small_saved, after), (out, grad_in, saved, after_general) = results
    assert torch.equal(_bits(small_out), _bits(out))
    assert torch.equal(_bits(small_out), _bits(explicit[0]))
    assert torch.equal(_bits(small_grad), _bits(grad_in))
    assert small_saved == saved == x.numel() * x.element_size()
    assert torch.equal(after, after_general)


def test_the_unseeded_small_path_is_taken_and_left_where_it_should_be(monkeypatch) -> None:
    taken: list[bool] = []
    real = _autograd.small_dropout

    def spy(input: torch.Tensor, p: float, *args: object) -> torch.Tensor | None:
        out = real(input, p, *args)  # type: ignore[arg-type]
        taken.append(out is not None)
        return out

    monkeypatch.setattr(F._elementwise, "small_dropout", spy)
    leaf = torch.randn(8, 16, requires_grad=True)
    F.dropout(leaf, 0.5)
    F.dropout(leaf.double(), 0.5)
    F.dropout(leaf.half(), 0.5)  # half precision: mask-free
    F.dropout(torch.randn(SAVED_MASK_BELOW, requires_grad=True), 0.5)  # too large
    F.dropout(torch.randn(0, 4, requires_grad=True), 0.5)  # empty
    with torch.no_grad():
        F.dropout(leaf, 0.5)
    with dropkit.backend("reference"):
        F.dropout(leaf, 0.5)
    F.dropout(leaf, 0.5, seed=1)  # not taken: explicit seed, shape, in place, eval, p = 0 or 1
    F.dropout(leaf * 1.0, 0.5, inplace=True)
    F.dropout(leaf, 0.5, noise_shape=(8, 1))
    F.dropout(leaf, 0.5, training=False)
    F.dropout(leaf, 0.0)
    F.dropout(leaf, 1.0)
    assert taken == [True, True] + [False] * 10  # training=False does not even ask


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_the_unseeded_small_path_folds_the_rank_in_as_the_general_path(monkeypatch, rank) -> None:
    # Offsets of 2**63 and more reach the kernel as int64 with the same bits.
    from dropkit.functional import _validation

    monkeypatch.setattr(_validation, "_c10d", None)  # no process group to read: ask _rank
    monkeypatch.setattr(_autograd, "_c10d", None)
    monkeypatch.setattr(_validation, "_rank", lambda: rank)
    x = torch.randn(40, 30, requires_grad=True)
    torch.manual_seed(8)
    small = F.dropout(x, 0.5)
    torch.manual_seed(8)
    general = _general(x, 0.5)
    torch.manual_seed(8)
    drawn = int(torch.randint(0, 2**62, ()))
    offset = rank * 0x9E3779B97F4A7C15 % 2**64
    explicit = F.dropout(x, 0.5, seed=(drawn + offset) % 2**64)
    assert torch.equal(small, general)
    assert torch.equal(small, explicit)
    assert not torch.equal(small, F.dropout(x, 0.5, seed=drawn))


def _masks_of(*outputs: torch.Tensor) -> list[torch.Tensor]:
    return [out.detach() != 0 for out in outputs]


def test_masks_alive_at_once_are_never_shared() -> None:
    # Several sites of one shape in one graph: each keeps its own mask until backward.
    torch.manual_seed(0)
    x = torch.ones(64, 32, requires_grad=True)
    outs = [F.dropout(x, 0.5) for _ in range(5)]
    masks = _masks_of(*outs)
    assert all(not torch.equal(masks[0], m) for m in masks[1:])
    torch.stack(outs).sum().backward()
    assert torch.equal(x.grad, sum(m.float() * 2.0 for m in masks))


def _later_calls_leave_its_mask(x: torch.Tensor, y: torch.Tensor) -> None:
    """``y = F.dropout(x, 0.5)`` of an all-ones ``x``, its graph still held: three later calls
    of that shape (each freeing its own graph), then ``y``'s gradient must be its own mask."""
    expected = (y.detach() != 0).float() * 2.0
    for _ in range(3):
        F.dropout(x, 0.5).sum().backward()
    x.grad = None
    y.sum().backward()
    assert torch.equal(x.grad, expected)


def test_a_retained_graph_keeps_its_mask_through_later_calls() -> None:
    torch.manual_seed(1)
    x = torch.ones(16, 16, requires_grad=True)
    y = F.dropout(x, 0.5)
    y.sum().backward(retain_graph=True)
    _later_calls_leave_its_mask(x, y)


def _pack_storage(t: torch.Tensor) -> tuple:
    return (t.untyped_storage(), t.storage_offset(), t.shape, t.stride(), t.dtype)


def _unpack_storage(packed: tuple) -> torch.Tensor:
    storage, offset, shape, stride, dtype = packed
    return torch.empty(0, dtype=dtype).set_(storage, offset, shape, stride)


@pytest.mark.parametrize(
    "hooks",
    [
        # a detached alias: another tensor on the mask's memory
        lambda: torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t),
        # torch's own save_on_cpu packs a CPU tensor as itself (``tensor.cpu()`` is the tensor)
        torch.autograd.graph.save_on_cpu,
        # the mask's storage object, the very one the pool keeps, rebuilt in unpack: only that
        # object's Python refcount shows that the mask is still needed
        lambda: torch.autograd.graph.saved_tensors_hooks(_pack_storage, _unpack_storage),
    ],
    ids=["detached alias", "save_on_cpu", "storage object"],
)
def test_a_saved_tensor_hook_that_keeps_the_mask_keeps_it_from_later_calls(hooks) -> None:
    torch.manual_seed(2)
    x = torch.ones(16, 16, requires_grad=True)
    with hooks():
        y = F.dropout(x, 0.5)
    _later_calls_leave_its_mask(x, y)


def test_threads_draw_their_own_seeds_and_masks() -> None:
    import threading

    errors: list[str] = []
    masks: dict[int, list[torch.Tensor]] = {}

    def work(index: int) -> None:
        x = torch.ones(32, 64, requires_grad=True)
        kept = masks.setdefault(index, [])
        for _ in range(200):
            y = F.dropout(x, 0.5)
            expected = (y.detach() != 0).float() * 2.0
            y.sum().backward()
            if not torch.equal(x.grad, expected):
                errors.append("gradient does not match its output's mask")
            x.grad = None
            kept.append(expected)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    seen = {tuple(m.flatten().tolist()) for ms in masks.values() for m in ms}
    assert len(seen) == 400  # no seed was read twice


def test_a_mask_read_back_from_the_graph_is_not_overwritten() -> None:
    torch.manual_seed(4)
    x = torch.ones(8, 8, requires_grad=True)
    y = F.dropout(x, 0.5)
    mask = y.grad_fn._saved_other  # the saved scaled mask, as users may inspect it
    kept = mask.clone()
    y.sum().backward()
    for _ in range(3):
        F.dropout(x, 0.5).sum().backward()
    assert torch.equal(mask, kept)


def _python(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_tracer_active_at_import_does_not_skew_the_reuse_counts() -> None:
    # A tracer that reads f_locals (a debugger) adds a reference on CPython <= 3.12; counts
    # calibrated under it would take a mask that save_on_cpu still holds for a free one.
    out = _python(
        "import sys, torch\n"
        "def tracer(frame, event, arg):\n"
        "    frame.f_locals\n"
        "    return tracer\n"
        "sys.settrace(tracer)\n"
        "import dropkit.functional as F\n"
        "F.dropout(torch.ones(4, requires_grad=True), 0.5)  # loads the kernels\n"
        "sys.settrace(None)\n"
        "torch.manual_seed(3)\n"
        "x = torch.ones(16, 16, requires_grad=True)\n"
        "with torch.autograd.graph.save_on_cpu():\n"
        "    y = F.dropout(x, 0.5)\n"
        "expected = (y.detach() != 0).float() * 2.0\n"
        "for _ in range(3):\n"
        "    F.dropout(x, 0.5).sum().backward()\n"
        "x.grad = None\n"
        "y.sum().backward()\n"
        "print(torch.equal(x.grad, expected))\n"
    )
    assert out.split() == ["True"]


def test_fake_tensor_modes_never_reach_the_kernel() -> None:
    # A fake tensor has no memory: a kernel writing through its address would crash the
    # process. Inside the mode dropkit raises as torch does; afterwards nothing is left over.
    out = _python(
        "import torch\n"
        "import dropkit.functional as F\n"
        "from torch._subclasses.fake_tensor import FakeTensorMode\n"
        "from torch.fx.experimental.proxy_tensor import make_fx\n"
        "x = torch.randn(8, 8, requires_grad=True)\n"
        "live = F.dropout(x, 0.5)\n"
        "for enter in (lambda: FakeTensorMode(allow_non_fake_inputs=True),):\n"
        "    try:\n"
        "        with enter():\n"
        "            F.dropout(x, 0.5)\n"
        "    except Exception as error:\n"
        "        print(type(error).__name__)\n"
        "try:\n"
        "    make_fx(lambda t: F.dropout(t, 0.5), tracing_mode='fake')(x)\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
        "torch.manual_seed(0); a = F.dropout(x, 0.5)\n"
        "torch.manual_seed(0); b = F.dropout(x, 0.5, noise_shape=[None, None])\n"
        "print(torch.equal(a, b))\n"
    )
    assert out.split()[-1] == "True"

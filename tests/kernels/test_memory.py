"""Reused tensors for the small masks (``dropkit.kernels.reusable_empty``)."""

from __future__ import annotations

import threading

import pytest
import torch

from dropkit.kernels import _memory, reusable_empty


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "_reusable", threading.local())


def test_a_reusable_tensor_comes_back_once_nothing_refers_to_it() -> None:
    shape = torch.Size((4, 5))
    first = reusable_empty(shape, torch.float32)
    assert first.shape == shape
    assert first.dtype == torch.float32
    assert first.is_contiguous()
    assert reusable_empty(shape, torch.float32) is not first  # the caller still holds it
    first_id = id(first)
    held = torch.mul(torch.ones(4, 5, requires_grad=True), first)  # autograd saves it
    del first
    assert id(reusable_empty(shape, torch.float32)) != first_id
    del held  # the graph, and its saved mask, are gone
    assert id(reusable_empty(shape, torch.float32)) == first_id
    assert reusable_empty(shape, torch.float64).dtype == torch.float64


def test_a_view_or_alias_keeps_a_reusable_tensor_taken() -> None:
    shape = torch.Size((6,))
    first = reusable_empty(shape, torch.float32)
    first_id = id(first)
    aliases = [first[2:], first.detach(), first.view(2, 3)]
    del first
    while aliases:
        assert id(reusable_empty(shape, torch.float32)) != first_id
        aliases.pop()
    assert id(reusable_empty(shape, torch.float32)) == first_id


def test_the_pool_stays_within_its_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "REUSABLE_BYTES", 1000)
    kept = [reusable_empty(torch.Size((50,)), torch.float32) for _ in range(10)]  # 200 bytes each
    assert len({id(t) for t in kept}) == 10  # each still held by the list
    assert _memory._reusable.nbytes <= 1000
    assert sum(len(v) for v in _memory._reusable.pool.values()) == 5


def test_each_thread_has_its_own_reusable_tensors() -> None:
    mine = reusable_empty(torch.Size((3,)), torch.float32)
    theirs: list[torch.Tensor] = []
    thread = threading.Thread(
        target=lambda: theirs.append(reusable_empty(torch.Size((3,)), torch.float32))
    )
    thread.start()
    thread.join()
    assert theirs[0] is not mine

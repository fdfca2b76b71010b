"""``fixed_threads``: the thread count a comparison trains with, put back afterwards."""

from __future__ import annotations

import warnings

import pytest
import torch

from dropkit.experiments.threads import fixed_threads


@pytest.fixture(autouse=True)
def _threads_put_back():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_count_holds_inside_and_is_put_back_after_an_error() -> None:
    inside: list[int] = []

    def interrupted() -> None:
        with fixed_threads(1):
            inside.append(torch.get_num_threads())
            raise KeyError("interrupted")

    torch.set_num_threads(2)
    with pytest.raises(KeyError):
        interrupted()
    assert inside == [1]
    assert torch.get_num_threads() == 2


def test_none_leaves_the_count_alone() -> None:
    torch.set_num_threads(2)
    with fixed_threads(None):
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_count_is_named(bad) -> None:
    expected = r"fixed_threads: expected a thread count of at least 1"
    with pytest.raises(ValueError, match=expected), fixed_threads(bad):
        pass


def test_more_than_one_thread_with_omp_dynamic_warns(monkeypatch) -> None:
    monkeypatch.setenv("OMP_DYNAMIC", "TRUE")
    expected = "OMP_DYNAMIC=true: OpenMP may use fewer threads"
    with pytest.warns(RuntimeWarning, match=expected), fixed_threads(2):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one thread has no order to change: nothing to say
        with fixed_threads(1):
            pass
    monkeypatch.setenv("OMP_DYNAMIC", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fixed_threads(2):
            pass

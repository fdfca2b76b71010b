"""The interception base: what a mode receives for dropout calls, random draws and the rest."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as torch_F

from dropkit import functional as dk_F
from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._registry import function_spec


class _Seen(InterceptMode):
    def __init__(self) -> None:
        super().__init__()
        self.dropouts: list[DropoutCall] = []
        self.random: list[str] = []
        self.others: list[str] = []

    def dropout(self, call: DropoutCall) -> Any:
        self.dropouts.append(call)
        return call.run()

    def random_draw(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self.random.append(func.__name__)
        return func(*args, **kwargs)

    def other(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self.others.append(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


def test_a_dropout_call_is_described_by_its_spec() -> None:
    x = torch.ones(4, 3, 5)
    with _Seen() as mode:
        torch_F.dropout(x, 0.3, False)
        torch_F.dropout1d(x, p=0.2, training=True)
        dk_F.dropout(x, 0.0)
        q = torch.ones(1, 2, 4, 8)
        torch_F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    got = [(c.name, c.rate, c.training, c.active, c.input is x) for c in mode.dropouts]
    assert got == [
        ("torch.nn.functional.dropout", 0.3, False, False, True),
        ("torch.nn.functional.dropout1d", 0.2, True, True, True),
        ("dropkit.functional.dropout", 0.0, True, False, True),
        # no flag: the rate alone switches it on
        ("torch.nn.functional.scaled_dot_product_attention", pytest.approx(0.1), True, True, False),
    ]
    assert mode.dropouts[1].spec.variant == "channel1d"
    assert not mode.random


def test_random_draws_and_other_calls_go_to_their_own_methods() -> None:
    x = torch.ones(3)
    with _Seen() as mode:
        torch.bernoulli(x * 0.5)
        torch.empty(3).uniform_()
        torch.relu(x)
    assert mode.random == ["bernoulli", "uniform_"]
    assert "relu" in mode.others
    assert "mul" in mode.others
    assert "bernoulli" not in mode.others


def test_a_mode_that_overrides_nothing_changes_nothing() -> None:
    class Plain(InterceptMode):
        pass

    x = torch.randn(8, 6)
    torch.manual_seed(0)
    expected = torch_F.dropout(torch.relu(x), 0.5) + torch.bernoulli(torch.full((8, 6), 0.5))
    torch.manual_seed(0)
    with Plain():
        got = torch_F.dropout(torch.relu(x), 0.5) + torch.bernoulli(torch.full((8, 6), 0.5))
    assert torch.equal(got, expected)


def test_a_call_costs_no_registry_lookup_once_its_function_was_seen() -> None:
    # Counted as the Python calls into the registry's code while a mode sees 200 calls; one
    # direct lookup first shows that the count sees the registry.
    x = torch.ones(4, 4)
    entered: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and "_registry" in str(Path(frame.f_code.co_filename).resolve()):
            entered.append(frame.f_code.co_name)

    mode = _Seen()
    with mode:
        torch.relu(x), torch.bernoulli(x * 0.5), torch_F.dropout(x, 0.5)  # first sight
        sys.setprofile(profile)
        try:
            function_spec(torch.relu)
            direct = len(entered)
            for _ in range(100):
                torch.relu(x)
                torch.bernoulli(x * 0.5)
        finally:
            sys.setprofile(None)
    assert direct > 0
    assert len(entered) == direct
    assert len(mode.random) == 101


def test_a_removal_then_a_registration_is_seen_by_the_next_mode() -> None:
    # The registry's size is the same after one removal and one registration: the base must
    # still forget what it had looked up, or the removed function would stay a dropout call
    # and the new one would be passed to torch unseen.
    from dropkit._registry import FunctionSpec, add_function, remove_function

    def first(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
        return x

    def second(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
        return x

    def spec(name: str) -> FunctionSpec:
        return FunctionSpec(name, "element", 1, "p", 0.5, 2, "training", True)

    x = torch.ones(2)
    add_function(first, spec("first"))
    try:
        with _Seen() as mode:
            mode.__torch_function__(first, (torch.Tensor,), (x, 0.5, True))
        assert [c.name for c in mode.dropouts] == ["first"]
    finally:
        remove_function(first)
    add_function(second, spec("second"))
    try:
        with _Seen() as mode:
            mode.__torch_function__(first, (torch.Tensor,), (x, 0.5, True))
            mode.__torch_function__(second, (torch.Tensor,), (x, 0.5, True))
        assert [c.name for c in mode.dropouts] == ["second"]
        assert mode.others == ["first"]
    finally:
        remove_function(second)


def test_functions_made_at_run_time_do_not_grow_the_lookups_without_end() -> None:
    from dropkit import _intercept

    x = torch.ones(2)
    seen: list[int] = []

    class _Count(InterceptMode):
        def other(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
            seen.append(1)
            return func(*args, **kwargs)

    with _Count():
        for i in range(_intercept._MAX_LOOKUPS + 100):

            def made(t: torch.Tensor, i: int = i) -> torch.Tensor:
                return t + i

            out = torch.overrides.handle_torch_function(made, (x,), x)
            assert float(out[0]) == 1 + i
    assert len(seen) >= _intercept._MAX_LOOKUPS + 100
    assert len(_intercept._LOOKUPS) <= _intercept._MAX_LOOKUPS

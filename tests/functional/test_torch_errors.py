"""Bad arguments raise what torch raises for the same mistake (issue 23, item 3).

Each case runs torch's call and dropkit's: dropkit's error must be an instance of the class
torch raises in this torch, so code written against torch catches it. dropkit's errors stay
ValueErrors (and TypeErrors) as before, so code written against dropkit keeps catching them.
The first tests are written as torch's own in ``test/nn/test_dropout.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as torch_F

import dropkit.functional as F
from dropkit import nn


def test_dropout1d_of_the_wrong_rank_raises_runtime_error_as_torchs() -> None:
    # torch's test_Dropout1d.
    with pytest.raises(RuntimeError, match="dropout1d: expected a 2D or 3D input"):
        nn.Dropout1d(p=0.5)(torch.rand(1, 2, 2, 2))
    with pytest.raises(RuntimeError, match="dropout1d: expected a 2D or 3D input"):
        nn.Dropout1d(p=0.5)(torch.rand(2))


def test_invalid_dropout_p_raises_value_error_as_torchs() -> None:
    # torch's test_invalid_dropout_p.
    v = torch.ones(1)
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="expected p in"):
            nn.Dropout(bad)
        with pytest.raises(ValueError, match="expected p in"):
            nn.Dropout1d(bad)
        with pytest.raises(ValueError, match="expected p in"):
            nn.AlphaDropout(bad)
        with pytest.raises(ValueError, match="expected p in"):
            F.dropout(v, bad)
        with pytest.raises(ValueError, match="expected p in"):
            F.alpha_dropout(v, bad)


Call = Callable[[], object]
_x4 = torch.ones(2, 3, 4, 5)
_q = torch.randn(1, 4, 3, 8)
_kv = torch.randn(1, 3, 3, 8)
CASES: dict[str, tuple[Call, Call]] = {
    "dropout1d of a 4D input": (
        lambda: torch_F.dropout1d(_x4, 0.5),
        lambda: F.dropout1d(_x4, 0.5),
    ),
    "feature_alpha_dropout of a 1D input": (
        lambda: torch_F.feature_alpha_dropout(torch.ones(3), 0.5, True),
        lambda: F.feature_alpha_dropout(torch.ones(3), 0.5),
    ),
    "a NaN rate": (
        lambda: torch_F.dropout(_x4, float("nan")),
        lambda: F.dropout(_x4, float("nan")),
    ),
    "a rate above 1": (lambda: torch_F.dropout(_x4, 1.5), lambda: F.dropout(_x4, 1.5)),
    "a rate that is not a number (layer)": (
        lambda: torch.nn.Dropout("a"),  # type: ignore[arg-type]
        lambda: nn.Dropout("a"),  # type: ignore[arg-type]
    ),
    "an integer input": (
        lambda: torch_F.dropout(torch.ones(3, dtype=torch.long), 0.5),
        lambda: F.dropout(torch.ones(3, dtype=torch.long), 0.5),
    ),
    "an integer input to alpha_dropout": (
        lambda: torch_F.alpha_dropout(torch.ones(3, dtype=torch.long), 0.5, True),
        lambda: F.alpha_dropout(torch.ones(3, dtype=torch.long), 0.5),
    ),
    "a non-tensor input": (lambda: torch_F.dropout([1.0], 0.5), lambda: F.dropout([1.0], 0.5)),  # type: ignore[arg-type]
    "a training flag that is not a bool": (
        lambda: torch_F.dropout(_x4, 0.5, 1),  # type: ignore[arg-type]
        lambda: F.dropout(_x4, 0.5, 1),  # type: ignore[arg-type]
    ),
    "grouped heads that do not divide": (
        lambda: torch_F.scaled_dot_product_attention(_q, _kv, _kv, enable_gqa=True),
        lambda: F.scaled_dot_product_attention(_q, _kv, _kv, enable_gqa=True),
    ),
    "an in-place call on a leaf that requires grad": (
        lambda: torch_F.dropout(torch.ones(3, requires_grad=True), 0.5, True, True),
        lambda: F.dropout(torch.ones(3, requires_grad=True), 0.5, True, True),
    ),
}


def _raised(call: Call) -> BaseException:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the class is what is compared
        call()
    return info.value


@pytest.mark.parametrize("case", CASES)
def test_dropkit_raises_an_instance_of_what_torch_raises(case: str) -> None:
    torch_call, dropkit_call = CASES[case]
    theirs = _raised(torch_call)
    ours = _raised(dropkit_call)
    assert isinstance(ours, type(theirs)), (case, type(theirs), type(ours), ours)


def test_the_errors_are_also_what_dropkit_raised_before() -> None:
    assert issubclass(F.InputError, ValueError)
    assert issubclass(F.InputError, RuntimeError)
    assert issubclass(F.InputTypeError, TypeError)
    assert issubclass(F.InputTypeError, ValueError)  # a rate that is not a number
    with pytest.raises(ValueError, match=r"dropout2d: expected a 4D input \(N, C, H, W\)"):
        F.dropout2d(torch.ones(2, 3, 4, 5, 6), 0.5)
    with pytest.raises(TypeError, match="expected a floating-point tensor"):
        F.dropout(torch.ones(3, dtype=torch.long), 0.5)


@pytest.mark.parametrize(
    ("name", "shape"), [("dropout2d", (2, 3, 4)), ("dropout2d", (2, 3)), ("dropout3d", (2, 3, 4))]
)
def test_dropout2d_and_3d_raise_where_torch_only_warns(name: str, shape: tuple[int, ...]) -> None:
    # A documented difference (README, compatibility): torch warns and guesses (a 3D input to
    # dropout2d becomes (N, C, L)); dropkit raises, naming the op to use, with an error that
    # code catching either ValueError or RuntimeError catches.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(torch_F, name)(torch.ones(shape), 0.5)
    assert any(name in str(w.message) for w in caught)
    with pytest.raises(RuntimeError, match=f"{name}: expected a"):
        getattr(F, name)(torch.ones(shape), 0.5)
    with pytest.raises(ValueError, match=f"{name}: expected a"):
        getattr(F, name)(torch.ones(shape), 0.5)

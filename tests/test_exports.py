"""Every public module declares an explicit, complete and sorted ``__all__``."""

import importlib
import types

import pytest

PUBLIC_MODULES = [
    "dropkit",
    "dropkit.active",
    "dropkit.bench",
    "dropkit.functional",
    "dropkit.nn",
    "dropkit.kernels",
    "dropkit.mc",
    "dropkit.metrics",
    "dropkit.experiments",
    "dropkit.doctor",
    "dropkit.integrations",
]


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 enforces: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_unique(name: str) -> None:
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(set(module.__all__), key=_isort_key)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", name).startswith("dropkit")
    }
    assert public <= set(module.__all__), public - set(module.__all__)
    for attr in module.__all__:
        assert hasattr(module, attr), attr


def test_version_and_alias() -> None:
    import dropkit

    assert dropkit.__version__.count(".") >= 2
    assert dropkit.F is dropkit.functional


def test_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dropkit; heavy = [m for m in ('numba', 'triton', 'matplotlib', 'scipy') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

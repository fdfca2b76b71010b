"""dropkit.active's public names: complete, sorted, and not imported by `import dropkit`."""

import subprocess
import sys
import types

import dropkit.active as active


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted_unique_and_complete():
    assert list(active.__all__) == sorted(set(active.__all__), key=_isort_key)
    public = {
        name
        for name, value in vars(active).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "dropkit").startswith("dropkit")
    }
    assert public <= set(active.__all__), public - set(active.__all__)
    assert all(hasattr(active, name) for name in active.__all__)


def test_strategies_all_parse():
    for name in active.STRATEGIES:
        active.check_strategy(name)


def test_importing_dropkit_does_not_import_active():
    code = "import sys, dropkit; print('dropkit.active' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

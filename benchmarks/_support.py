"""Set-up shared by the benchmark scripts (not part of the installed package)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

# The hook's namespace: it holds the placeholder library, whose schemas go when it is collected.
_hook: list[dict[str, Any]] = []


def torchvision_placeholders() -> None:
    """Let torchvision, timm and parts of transformers import with a CPU build of torch.

    PyPI's torchvision wheel is built against CUDA torch; with the CPU build its import fails
    (``operator torchvision::nms does not exist``). This runs the test suite's start-up hook,
    ``tests/support/sitecustomize.py``, which defines placeholder schemas for the operators the
    import needs (no benchmark model calls them); it does nothing where torchvision imports.
    """
    hook = Path(__file__).parents[1] / "tests" / "support" / "sitecustomize.py"
    if hook.exists() and not _hook:
        _hook.append(runpy.run_path(str(hook), run_name="sitecustomize"))

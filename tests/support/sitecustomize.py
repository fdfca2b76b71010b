"""Test-only start-up hook: let torchvision import with a torch build it was not compiled for.

PyPI's torchvision wheel is built against CUDA torch; with the CPU build its compiled extension
does not load and ``import torchvision`` fails on its fake-kernel registrations (``operator
torchvision::nms does not exist``). torchmetrics (under ``dropkit.metrics``), timm and parts of
transformers import torchvision whenever it is installed, so without this the test suite could
not score a run. :func:`torchvision_placeholders` defines placeholder schemas for the operators
that the import touches; they have no kernel, and calling one raises (no model of the tests
does).

The suite's ``tests/conftest.py`` calls it in the pytest process and puts this folder on
``PYTHONPATH``, so that Python runs this file (as ``sitecustomize``) at the start of every
subprocess a test spawns (``dropkit compare`` and ``dropkit sweep`` workers). It is never part of
the installed package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

# Schemas of the torchvision operators that torchvision's import registers Python kernels for
# without checking that its compiled extension loaded.
_PLACEHOLDER_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_placeholders: list[Any] = []


def torchvision_placeholders() -> bool:
    """If torchvision is installed and its compiled extension does not load with this torch,
    define placeholder schemas for the operators its import needs; True if it did.

    Cheap where torchvision is absent: it imports neither torch nor torchvision then.
    """
    if _placeholders:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    if hasattr(torch.ops.torchvision, "nms"):
        return False
    libraries = sorted(Path(spec.submodule_search_locations[0]).glob("_C.*"))
    try:
        torch.ops.load_library(str(libraries[0]))
        return False
    except (IndexError, OSError, RuntimeError):
        pass
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _PLACEHOLDER_SCHEMAS:
        library.define(schema)
    _placeholders.append(library)
    return True


if __name__ == "sitecustomize":
    torchvision_placeholders()

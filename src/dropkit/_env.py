"""What dropkit runs on: versions, devices and which backends can run here."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import torch

from dropkit._version import __version__
from dropkit.kernels import available_backends

__all__ = ["environment"]


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, str]:
    """Versions, devices and backends, as label -> value, for bug reports and ``dropkit info``.

    Example:
        >>> from dropkit._env import environment
        >>> env = environment()
        >>> env["dropkit"] == __import__("dropkit").__version__
        True
    """
    cuda = torch.cuda.is_available()
    info = {
        "dropkit": __version__,
        "python": f"{platform.python_version()} ({sys.implementation.name})",
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "cuda": torch.cuda.get_device_name(0) if cuda else "not available",
    }
    for package in ("numba", "triton"):
        version = _package_version(package)
        info[package] = version if version else "not installed"
    for name, status in available_backends().items():
        info[f"backend {name}"] = status
    return info

"""Files of the training loop: written atomically, and the resumable state of a run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_state", "save_atomically", "save_state"]


def save_atomically(payload: object, path: Path, *, durable: bool = False) -> None:
    """``torch.save`` through a uniquely named temporary file, then rename: never half a file.

    The unique name lets several processes write the same path at once (the last rename wins);
    ``durable`` also flushes the file to disk before the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_STATE_FORMAT = "dropkit.train-state/1"


def load_state(path: Path | None, identity: str) -> dict[str, Any] | None:
    """A saved training state of exactly this run, else None (a torn or other file: start over)."""
    if path is None or not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("format") != _STATE_FORMAT:
        return None
    if payload.get("identity") != identity:
        return None
    return payload


def save_state(path: Path | None, identity: str, state: dict[str, Any]) -> None:
    """Save a training state; it only saves time on resuming, so a race never stops the run."""
    if path is None:
        return
    for _ in range(3):
        try:
            save_atomically({"format": _STATE_FORMAT, "identity": identity, **state}, path)
            return
        except (FileNotFoundError, FileExistsError):  # another process removed the folder
            continue

"""Loading what ``dropkit doctor`` checks: a model from ``file.py:attr`` or ``module:attr``, and
example inputs from shapes or a ``.pt`` file."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["LoadError", "load_inputs", "load_model"]


class LoadError(RuntimeError):
    """The model or input cannot be loaded; the message says what and why."""


def load_model(spec: str) -> nn.Module:
    """``path/to/file.py:name`` or ``package.module:name``; a callable is called with no args."""
    if ":" not in spec:
        raise LoadError(f"{spec!r}: expected FILE.py:NAME or MODULE:NAME")
    where, _, attr = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise LoadError(f"{where}: no such file")
            module_spec = importlib.util.spec_from_file_location(
                f"_dropkit_doctor_{path.stem}", path
            )
            if module_spec is None or module_spec.loader is None:
                raise LoadError(f"{where}: cannot be imported as a Python file")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except LoadError:
        raise
    except Exception as error:  # the user's file may raise anything on import
        raise LoadError(f"{where}: import failed: {type(error).__name__}: {error}") from error
    if not hasattr(module, attr):
        raise LoadError(f"{where} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as error:
            raise LoadError(
                f"{spec}: calling it failed: {type(error).__name__}: {error}"
            ) from error
    if not isinstance(obj, nn.Module):
        raise LoadError(f"{spec} is a {type(obj).__name__}, not an nn.Module (or a factory of one)")
    return obj


def load_inputs(shapes: list[str], input_file: Path | None) -> tuple[Any, ...] | None:
    """Random float inputs of the given shapes (``8,3,32,32``), or the tensors saved in a file."""
    if shapes and input_file is not None:
        raise LoadError("give --input-shape or --input, not both")
    if input_file is not None:
        try:
            data = torch.load(input_file, map_location="cpu", weights_only=True)
        except Exception as error:
            raise LoadError(f"{input_file}: not a readable tensor file ({error})") from error
        if isinstance(data, torch.Tensor):
            return (data,)
        if isinstance(data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in data):
            return tuple(data)
        raise LoadError(f"{input_file}: expected a tensor or a list of tensors")
    if not shapes:
        return None
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for shape in shapes:
        try:
            dims = [int(d) for d in shape.split(",") if d.strip()]
        except ValueError:
            raise LoadError(f"--input-shape {shape!r}: expected comma-separated sizes") from None
        if not dims or any(d < 1 for d in dims):
            raise LoadError(f"--input-shape {shape!r}: expected positive sizes like 8,3,32,32")
        inputs.append(torch.randn(dims, generator=generator))
    return tuple(inputs)

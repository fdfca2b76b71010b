"""Loading what ``dropkit doctor`` checks: a model from ``file.py:attr`` or ``module:attr``, and
example inputs from shapes or a ``.pt`` file (a tensor, a list of tensors or a dict of them)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import torch
from torch import nn

__all__ = ["LoadError", "load_inputs", "load_model"]


class LoadError(RuntimeError):
    """The model or input cannot be loaded; the message says what and why."""


#: The rate given to a factory that takes one (``make_model(p)``) when ``--rate`` is not given.
DEFAULT_RATE = 0.2


def load_model(spec: str, rate: float | None = None) -> nn.Module:
    """The model ``path/to/file.py:name`` or ``package.module:name`` names.

    A module is used as it is. A callable is a factory: one with no required argument is called
    with none; one with a single required positional argument follows the own-model convention
    of ``dropkit compare`` (``make_model(p)``) and is called with ``rate`` (default
    :data:`DEFAULT_RATE`). Giving ``rate`` for a factory that takes no rate is an error, so a
    rate is never silently ignored.

    Example:
        >>> load_model("torch.nn:Dropout", rate=0.3)
        Dropout(p=0.3, inplace=False)
    """
    if rate is not None and not (isinstance(rate, int | float) and 0.0 <= rate < 1.0):
        raise LoadError(f"--rate {rate!r}: expected a dropout rate in [0, 1)")
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
    except SystemExit as error:  # a script run as a module: no model was checked
        raise LoadError(
            f"{where}: the file exits on import (SystemExit({error.code!r})), so there is no "
            'model to check; put the script part under `if __name__ == "__main__":`'
        ) from None
    except Exception as error:  # the user's file may raise anything on import
        raise LoadError(f"{where}: import failed: {type(error).__name__}: {error}") from error
    if not hasattr(module, attr):
        raise LoadError(f"{where} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, nn.Module):
        if rate is not None:
            raise LoadError(f"--rate: {spec} is a model, not a factory taking a rate; leave it out")
    elif callable(obj):
        args = _factory_args(spec, obj, rate)
        try:
            obj = obj(*args)
        except SystemExit as error:
            raise LoadError(
                f"{spec}: calling it exits (SystemExit({error.code!r})) instead of returning "
                "a model"
            ) from None
        except Exception as error:
            raise LoadError(
                f"{spec}: calling it failed: {type(error).__name__}: {error}"
            ) from error
    if not isinstance(obj, nn.Module):
        raise LoadError(f"{spec} is a {type(obj).__name__}, not an nn.Module (or a factory of one)")
    return obj


def _factory_args(spec: str, factory: object, rate: float | None) -> tuple[float, ...]:
    """No argument, or the rate for a factory whose one required argument is positional."""
    try:
        signature = inspect.signature(factory)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without a signature: call it as it is
        return () if rate is None else (rate,)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [
        p
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    positional = [p for p in signature.parameters.values() if p.kind in kinds]
    if not required:
        if rate is not None and not positional:
            raise LoadError(f"--rate: {spec} takes no argument, so no rate; leave --rate out")
        return () if rate is None else (rate,)
    if len(required) == 1 and required[0].kind in kinds:
        return (DEFAULT_RATE if rate is None else rate,)
    names = ", ".join(p.name for p in required)
    raise LoadError(
        f"{spec}: calling it needs {names}; give a model, a factory with no required argument, "
        "or one that takes only the dropout rate (make_model(p), called with --rate)"
    )


#: A doctor check runs the model twice on the input; refuse inputs above this many elements.
MAX_ELEMENTS = 2**27


def load_inputs(shapes: list[str], input_file: Path | None) -> object:
    """Random float inputs of the given shapes (``8,3,32,32``) as a tuple, or what a ``.pt`` file
    holds: a tensor, a tuple or list of tensors (positional inputs), or a dict of tensors keyed
    by argument name (keyword inputs, as a Hugging Face model takes ``input_ids=``...)."""
    if shapes and input_file is not None:
        raise LoadError("give --input-shape or --input, not both")
    if input_file is not None:
        return _read_inputs(input_file)
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
        if math.prod(dims) > MAX_ELEMENTS:
            raise LoadError(
                f"--input-shape: {shape} is {math.prod(dims):,} elements, too large for a check "
                f"(at most {MAX_ELEMENTS:,}); a batch of 2-8 small inputs is enough"
            )
        inputs.append(torch.randn(dims, generator=generator))
    return tuple(inputs)


def _read_inputs(path: Path) -> object:
    if not path.is_file():
        raise LoadError(f"--input {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's text may advise weights_only=False: never pass that on
        raise LoadError(
            f"--input {path}: not a readable tensor file (damaged, or it holds more than tensors, "
            f"which dropkit does not load: {type(error).__name__}); save a tensor, a list or a "
            "dict of tensors with torch.save"
        ) from None
    if isinstance(data, torch.Tensor):
        return (data,)
    if isinstance(data, tuple | list) and all(isinstance(t, torch.Tensor) for t in data):
        return tuple(data)
    if isinstance(data, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        return dict(data)
    raise LoadError(
        f"--input {path}: expected a tensor, a list of tensors (positional inputs) or a dict "
        f"of tensors by argument name (keyword inputs), got {type(data).__name__}"
    )

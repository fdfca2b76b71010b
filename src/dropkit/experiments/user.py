"""The user's own model and data, named ``FILE.py:NAME`` or ``package.module:NAME``.

A name with a colon is a *spec*: the part before it is a Python file (it ends in ``.py``) or an
importable module, the part after it a callable there (dots reach into classes). A file is
imported under a private module name, once per process. The :func:`digest` of the source a spec
names is part of a comparison's identity, so editing the model or data file starts a new
configuration instead of mixing old runs with new ones.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "SpecError",
    "UserCode",
    "code_digest",
    "describe",
    "digest",
    "is_spec",
    "load",
    "normalize",
    "spec_of",
    "user_code",
]


class SpecError(ValueError):
    """A spec that cannot be resolved; the message names it and the fix."""


def is_spec(name: str) -> bool:
    """True for ``FILE.py:NAME`` and ``package.module:NAME``; built-in names have no colon."""
    return ":" in name


def _split(spec: str) -> tuple[str, str]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise SpecError(f"{spec!r}: expected FILE.py:NAME or package.module:NAME")
    return target, attr


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def normalize(spec: str) -> str:
    """The spec with its file made absolute, so that it names the same file from any folder."""
    target, attr = _split(spec)
    if _is_file(target):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return spec


def describe(spec: str) -> str:
    """A short name for folders and titles: ``FILE-STEM.NAME`` or ``module.NAME``."""
    target, attr = _split(spec)
    stem = Path(target).stem if _is_file(target) else target.rsplit(".", 1)[-1]
    return f"{stem}.{attr}"


def _source(target: str) -> Path | None:
    """The file of a spec's target, without importing it."""
    if _is_file(target):
        return Path(target).expanduser()
    if target in sys.modules:
        file = getattr(sys.modules[target], "__file__", None)
        return Path(file) if file else None
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    origin = found.origin if found is not None else None
    return Path(origin) if origin and origin not in ("built-in", "frozen") else None


def digest(spec: str) -> str:
    """SHA-256 prefix of the source file a spec names ("" when it has none, e.g. a notebook)."""
    source = _source(_split(spec)[0])
    if source is None or not source.is_file():
        return ""
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    resolved = path.resolve()
    name = "dropkit_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise SpecError(f"{path}: cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(spec: str, what: str) -> Callable[..., Any]:
    """The callable a spec names; ``what`` ("model", "dataset") goes into the error messages."""
    target, attr = _split(spec)
    try:
        module = _import_file(Path(target)) if _is_file(target) else importlib.import_module(target)
    except SpecError as error:
        raise SpecError(f"{what} {spec!r}: {error}") from None
    except (Exception, SystemExit) as error:  # the user's code: report it, don't crash or exit
        kind = type(error).__name__
        raise SpecError(f"{what} {spec!r}: importing {target} failed ({kind}: {error})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"{what} {spec!r}: {target} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(f"{what} {spec!r}: {attr} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def spec_of(obj: Callable[..., Any]) -> str:
    """A spec naming a Python callable: ``module:qualname`` (``FILE.py:NAME`` for a script)."""
    module = getattr(obj, "__module__", None) or "__main__"
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    if module == "__main__" or module.startswith("dropkit_user_"):
        file = getattr(sys.modules.get(module), "__file__", None)
        if file:
            return f"{Path(file).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def code_digest(*objects: object) -> str:
    """Digest of the source of Python callables (code typed in a notebook has no file)."""
    sources = []
    for obj in objects:
        try:
            sources.append(inspect.getsource(obj))  # type: ignore[arg-type]
        except (OSError, TypeError):
            sources.append(repr(obj))
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class UserCode:
    """A model and data given to the Python API as names or callables, named for a config."""

    model_name: str
    model_fn: Callable[[float], Any] | None  # None: a name (built-in or spec)
    data_name: str
    data_fn: Callable[[], Any] | None  # None: a name
    code: str  # :func:`code_digest` of the callables, "" when both are names


def user_code(model: str | Callable[[float], Any], data: str | Callable[[], Any]) -> UserCode:
    """Name ``model`` and ``data`` (each a name, or a callable named by :func:`spec_of`) and
    digest the callables' source, as ``compare()`` and ``active_learning()`` record them.

    Example:
        >>> from dropkit.experiments.user import user_code
        >>> user_code("mlp", "blobs")
        UserCode(model_name='mlp', model_fn=None, data_name='blobs', data_fn=None, code='')
    """
    model_fn = model if callable(model) else None
    data_fn = data if callable(data) else None
    model_name = spec_of(model) if callable(model) else model
    data_name = spec_of(data) if callable(data) else data
    code: list[object] = [fn for fn in (model_fn, data_fn) if fn is not None]
    return UserCode(model_name, model_fn, data_name, data_fn, code_digest(*code) if code else "")

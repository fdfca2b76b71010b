"""Option types shared by the commands: paths and URLs that must not be empty."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

__all__ = ["nonempty_path", "nonempty_text"]


def nonempty_path(what: str) -> Callable[[str], Path]:
    """A parser for a path option: ``""`` (which ``Path`` reads as ``.``) is a usage error.

    Example:
        >>> nonempty_path("a folder")("runs")
        PosixPath('runs')
        >>> try:
        ...     nonempty_path("a folder")("")
        ... except typer.BadParameter as error:
        ...     print(error.message)
        empty; give a folder (. for the current one)
    """
    hint = f"give {what} (. for the current one)" if "folder" in what else f"give {what}"

    def parse(text: str | Path) -> Path:
        if isinstance(text, Path):  # a default, already a path
            return text
        if not text.strip():
            raise typer.BadParameter(f"empty; {hint}")
        return Path(text)

    return parse


def nonempty_text(what: str) -> Callable[[str | None], str | None]:
    """A callback for a text option: ``""`` is a usage error, not the default in disguise.

    Example:
        >>> nonempty_text("a database URL")("sqlite:///x.db")
        'sqlite:///x.db'
    """

    def check(text: str | None) -> str | None:
        if text is not None and not text.strip():
            raise typer.BadParameter(f"empty; give {what}, or leave the option out for the default")
        return text

    return check

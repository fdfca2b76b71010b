"""Griffe extension: dropkit's docstrings, read as the Markdown mkdocstrings renders.

They title their doctests ``Example:`` (torch's habit), and the Google-style parser only knows
``Examples:``: it would render the ``>>>`` lines as prose, so the section is renamed. Their
Sphinx roles (:func:`predict`, :class:`~dropkit.mc.MCResult`) become code spans, the name as
it is written (without a leading ``~``)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", value)

"""MkDocs hook: pages take sections of the README, so the site and the README never disagree.

A line ``<!-- readme: Set-up -->`` in a page is replaced by the body of the README section
whose heading is ``Set-up`` (up to the next heading of the same or a higher level; the heading
itself is left out, the page writes its own). Links into ``docs/`` are made relative to the
page; links to other files of the repository (examples, sources), which the site does not
serve, become their text. A missing section fails the build, naming it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

MARKER = re.compile(r"^<!-- readme: (.+?) -->$", flags=re.MULTILINE)
HEADING = re.compile(r"^(#{1,6}) (.+)$")
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def readme_section(readme: str, title: str) -> str:
    lines = readme.splitlines()
    start = level = None
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        if start is None and match.group(2).strip() == title:
            start, level = i + 1, len(match.group(1))
        elif start is not None and len(match.group(1)) <= level:  # type: ignore[operator]
            return "\n".join(lines[start:i]).strip("\n")
    if start is None:
        raise ValueError(f"docs: the README has no section {title!r} (a page includes it)")
    return "\n".join(lines[start:]).strip("\n")


def relink(text: str, page_dir: str) -> str:
    def fix(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            return match.group(0)
        if target.startswith("docs/"):
            return f"{bang}[{label}]({posixpath.relpath(target[5:], page_dir or '.')})"
        return label  # a file of the repository that the site does not serve

    return LINK.sub(fix, text)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!-- readme:" not in markdown:
        return markdown
    readme = (Path(config["config_file_path"]).parent / "README.md").read_text(encoding="utf-8")
    page_dir = posixpath.dirname(page.file.src_uri)
    return MARKER.sub(lambda m: relink(readme_section(readme, m.group(1)), page_dir), markdown)

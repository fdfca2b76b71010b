"""The documentation site: it builds in strict mode, a broken link fails it, the README sections
it includes are there, the guides' code runs, and the built pages render in headless Chromium.

Without MkDocs (``pip install -e '.[docs]'``) the build tests skip, unless
``DROPKIT_REQUIRE_DOCS=1`` (CI), where that is a failure; the same for Chromium and
``DROPKIT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_DOCS = os.environ.get("DROPKIT_REQUIRE_DOCS") == "1"
REQUIRE_BROWSER = os.environ.get("DROPKIT_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _require_docs_tools() -> None:
    missing = [m for m in DOCS_TOOLS if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing and REQUIRE_DOCS:
        pytest.fail(f"DROPKIT_REQUIRE_DOCS=1 but {missing} are not installed")
    if missing:
        pytest.skip(f"needs {missing}: pip install -e '.[docs]'")


def _text(page: Path) -> str:
    """A built page's text: tags removed (highlighting splits code into spans), entities read."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def _build(config_dir: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=config_dir, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_docs_tools()
    out = tmp_path_factory.mktemp("site")
    built = _build(ROOT, out)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_site_builds_in_strict_mode_with_every_page(site: Path) -> None:
    from dropkit.doctor import RULES
    from dropkit.doctor._rules import RUNTIME_RULES

    for code in [*RULES, *RUNTIME_RULES]:
        page = (site / "rules" / code / "index.html").read_text()
        assert f"{code}:" in page
    for page in ("getting-started", "guides/integrations", "guides/doctor", "reference/mc"):
        assert (site / page / "index.html").is_file(), page
    # The API reference is generated from the docstrings, their doctests shown as code.
    reference = _text(site / "reference" / "mc" / "index.html")
    assert "mc_mode" in reference
    assert 'result = mc.predict(model, torch.randn(5, 4), method="moments", seed=0)' in reference
    assert ">>> from dropkit import mc" in reference  # code, not Markdown blockquotes
    assert ":func:" not in reference  # Sphinx roles shown as code


def test_getting_started_is_the_readmes(site: Path) -> None:
    page = _text(site / "getting-started" / "index.html")
    readme = (ROOT / "README.md").read_text()
    command = "pip install -r requirements/test.txt && pytest"
    assert command in readme
    assert command in page
    # The README's docs/ image is served by the site, relative to the page.
    raw = (site / "getting-started" / "index.html").read_text()
    assert 'src="../images/compare-accuracy.png"' in raw
    assert (site / "images" / "compare-accuracy.png").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    _require_docs_tools()
    for name in ("docs", "src"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    with (tmp_path / "docs" / "guides" / "doctor.md").open("a") as page:
        page.write("\nSee [a page that does not exist](../rules/DK999.md).\n")
    built = _build(tmp_path, tmp_path / "site")
    assert built.returncode != 0
    assert "DK999.md" in built.stdout + built.stderr


def _hook():
    spec = importlib.util.spec_from_file_location("readme_hook", ROOT / "docs/_hooks/readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_hook_takes_sections_and_fixes_links() -> None:
    hook = _hook()
    readme = (
        "# title\n\n## Set-up\n\ntext [a page](docs/design.md) and [`ex.py`](examples/ex.py)\n"
        "![plot](docs/images/p.png) [web](https://example.org)\n\n```bash\n# not a heading\n```\n"
        "### Inner\n\nkept\n\n## Next\n\ngone\n"
    )
    body = hook.relink(hook.readme_section(readme, "Set-up"), "guides")
    assert "[a page](../design.md)" in body
    assert "`ex.py`" in body
    assert "examples/ex.py" not in body
    assert "![plot](../images/p.png)" in body
    assert "[web](https://example.org)" in body
    assert "# not a heading" in body
    assert "kept" in body
    assert "gone" not in body
    with pytest.raises(ValueError, match="the README has no section 'Speedy'"):
        hook.readme_section(readme, "Speedy")


@pytest.mark.parametrize("page", ["guides/variants.md", "guides/kernels.md"])
def test_the_guides_code_runs(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page}[{i}]", "exec"), {})  # this repository's own examples


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP (the search index loads with fetch, which file:// refuses)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


PAGES = {
    "": "dropkit",
    "getting-started/": "Getting started",
    "guides/integrations/": "Lightning and Hugging Face",
    "rules/DK004/": "DK004",
    "reference/doctor/": "dropkit.doctor",
}


@pytest.mark.skipif(
    CHROMIUM is None and not REQUIRE_BROWSER, reason="needs Debian's chromium (.ci/run installs it)"
)
def test_pages_render_in_a_headless_browser(served: str) -> None:
    assert CHROMIUM is not None, "chromium is not installed"
    if REQUIRE_BROWSER:
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            for path, title in PAGES.items():
                response = page.goto(f"{served}/{path}", wait_until="networkidle")
                assert response is not None, path
                assert response.ok, path
                assert title in page.title(), (path, page.title())
                assert page.locator("h1").first.is_visible(), path
                nav = page.locator("nav.md-nav--primary a.md-nav__link")
                assert nav.count() > 20, path  # the whole navigation is there
                assert page.locator(".md-search__input").count() == 1, path
            # Search works: the index loads and finds the rule pages.
            page.goto(f"{served}/", wait_until="networkidle")
            page.locator(".md-search__input").first.click()
            page.keyboard.type("BatchNorm")
            page.wait_for_selector(".md-search-result__item", timeout=10_000)
            assert errors == [], errors
        finally:
            browser.close()

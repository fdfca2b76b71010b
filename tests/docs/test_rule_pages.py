"""Every doctor rule has a page, and each page's two models do what the page says: the first
has the mistake (the doctor finds the page's code), the fixed one is clean."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from dropkit.doctor import RULES, DropoutWarning
from dropkit.doctor._rules import RUNTIME_RULES, rule_doc

ROOT = Path(__file__).resolve().parents[2]
CODES = sorted([*RULES, *RUNTIME_RULES])


def _section_code(page: str, heading: str) -> str:
    """The first ```python block under ``## heading``."""
    section = page.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, f"no python block under '## {heading}'"
    return blocks[0]


def _run(code: str, name: str) -> tuple[list[str], bool]:
    """Run a page's example; the doctor's codes it produced (``report`` or guard warnings), and
    whether it produced any finding at all."""
    namespace: dict[str, object] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, name, "exec"), namespace)  # the page's own code, from this repository
    report = namespace.get("report")
    if report is not None:
        return report.codes(), bool(report.findings)
    codes = [str(w.message).split(":")[0] for w in caught if w.category is DropoutWarning]
    return codes, bool(codes)


def test_every_rule_has_a_page_and_only_rules_do() -> None:
    pages = {p.stem for p in (ROOT / "docs" / "rules").glob("DK*.md")}
    assert pages == set(CODES)  # a new rule needs its page (and every finding names it)


@pytest.mark.parametrize("code", CODES)
def test_the_page_model_has_the_mistake_and_the_fix_is_clean(code: str) -> None:
    path = ROOT / rule_doc(code)  # the path every finding of this rule prints
    page = path.read_text()
    assert page.startswith(f"# {code}: ")
    if code in RULES:
        assert RULES[code].title in page.splitlines()[0]
    found, _ = _run(_section_code(page, "A model that has it"), f"{path}:mistake")
    assert code in found, f"{path}: the model that has it gave {found}"
    fixed, any_finding = _run(_section_code(page, "The fix"), f"{path}:fix")
    assert not any_finding, f"{path}: the fixed model still gives {fixed}"


def test_findings_and_warnings_name_the_page() -> None:
    import torch

    from dropkit.doctor import check, guard

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.7))
    (finding,) = check(model).findings
    assert finding.doc == "docs/rules/DK004.md" == rule_doc("DK004")
    assert finding.to_json()["doc"] == finding.doc
    with guard(model), pytest.warns(DropoutWarning, match=r"see docs/rules/DK001\.md"):  # noqa: SIM117
        with torch.no_grad():
            model(torch.ones(1, 4))

"""Every ```python block in the docs and the README runs, so examples cannot rot.

Blocks of one page run in order in one namespace. A page that needs a real service says so in
an HTML comment, e.g. `<!-- docs-test: needs redis postgres -->`; it then gets the same
skip-or-fail treatment as any real-service test. Use ```text or ```pycon for a block that must
not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.joinpath("docs").rglob("*.md"), ROOT / "README.md"])
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
NEEDS = re.compile(r"<!--\s*docs-test:\s*needs\s+([a-z ]+?)\s*-->")
FIXTURE_FOR = {"redis": "redis_url", "postgres": "postgres_dsn"}


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_examples_run(page: Path, request: pytest.FixtureRequest) -> None:
    """The page's python examples execute without error."""
    text = page.read_text()
    for match in NEEDS.finditer(text):
        for service in match.group(1).split():
            request.getfixturevalue(FIXTURE_FOR[service])
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(BLOCK.findall(text), start=1):
        code = compile(block, f"{_page_id(page)}#block{number}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point

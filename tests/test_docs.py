"""The documentation's links: every relative link of README.md and docs/ names a file that
exists (mkdocs checks links between its pages only; these point at results/ and the
source too), and the README stays a short front page."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def broken_links(page: Path) -> list[str]:
    """The relative link targets of ``page`` that name no file (code blocks skipped)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    targets = [t.split("#")[0] for t in LINK.findall(text)
               if not re.match(r"^(https?:|mailto:|#)", t)]
    return [t for t in targets if t and not (page.parent / t).exists()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file(page):
    assert broken_links(page) == []


def test_a_missing_target_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[there](page.md) [gone](nowhere.md#x) ![img](a.png) [web](https://x.y)\n"
                    "```\n[in code](skipped.md)\n```\n")
    assert broken_links(page) == ["nowhere.md", "a.png"]


def test_the_readme_is_a_front_page_of_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250

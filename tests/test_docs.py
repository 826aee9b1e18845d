"""The README is a landing page and docs/ the reference: every link between them leads
somewhere, and every page is reachable from the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [text](target) outside code: the target up to a space or the closing parenthesis
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, mailto:


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """``page``'s relative links whose file, or heading within it, is not there (the page
    named from ``root``)."""
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif fragment and file.suffix == ".md":
            headings = re.findall(
                r"^#+ (.+)$", FENCE.sub("", file.read_text(encoding="utf-8")), re.M
            )
            if fragment not in {_anchor(h) for h in headings}:
                broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return broken


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file() -> None:
    assert [b for page in _pages() for b in broken_links(page)] == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ holds the reference pages"
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    """The check itself: a missing file and a missing heading are found; code is skipped."""
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) [web](https://example.org/x)\n"
        "[gone](missing.md) [no heading](there.md#other)\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "page.md: missing.md (no such file)",
        "page.md: there.md#other (no such heading)",
    ]

"""The README stays true to the code where it can be checked mechanically."""

from __future__ import annotations

import re
from pathlib import Path

from quantrac.settings import REPO_ROOT, settings_table


def test_readme_settings_table_matches_the_settings_object() -> None:
    """The settings reference the README links to (docs/settings.md) is the settings object's own table."""
    readme = (REPO_ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert block is not None, "docs/settings.md lost its settings markers"
    assert block.group(1) == settings_table(), "regenerate the table with: .venv/bin/quantrac settings"


README = REPO_ROOT / "README.md"


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))


def test_readme_is_a_front_door_of_at_most_200_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200, "move the detail to docs/"


def test_readme_links_to_every_document_and_every_link_resolves() -> None:
    links = _links(README)
    missing = [link for link in links if not link.startswith("http") and not (REPO_ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    documents = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "docs").glob("*.md"))
    unlinked = [doc for doc in documents if doc not in links]
    assert not unlinked, f"README does not link to {unlinked}"


def test_links_between_documents_resolve() -> None:
    broken = [f"{doc.name} -> {link}" for doc in (REPO_ROOT / "docs").glob("*.md") for link in _links(doc)
              if not link.startswith(("http", "mailto:")) and not (doc.parent / link).exists()]
    assert not broken, f"broken links in docs/: {broken}"


def test_performance_table_is_the_one_bench_report_makes_from_the_results() -> None:
    """docs/performance.md holds the table `bench/report.py --write` generates from bench/results/."""
    from bench.report import MARKERS, TABLE_FILE, rows

    block = MARKERS.search(TABLE_FILE.read_text(encoding="utf-8"))
    assert block is not None, "docs/performance.md lost its bench markers"
    assert block.group(1) == "\n".join(rows()), "regenerate the table with: .venv/bin/python bench/report.py --write"

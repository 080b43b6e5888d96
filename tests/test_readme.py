"""The README stays true to the code where it can be checked mechanically."""

from __future__ import annotations

import re

from quantrac.settings import REPO_ROOT, settings_table


def test_readme_settings_table_matches_the_settings_object() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert block is not None, "README.md lost its settings markers"
    assert block.group(1) == settings_table(), "regenerate the table with: .venv/bin/quantrac settings"

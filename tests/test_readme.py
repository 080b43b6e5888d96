"""The README stays true to the code where it can be checked mechanically."""

from __future__ import annotations

import re

from quantrac.settings import REPO_ROOT, settings_table


def test_readme_settings_table_matches_the_settings_object() -> None:
    """The settings reference the README links to (docs/settings.md) is the settings object's own table."""
    readme = (REPO_ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert block is not None, "docs/settings.md lost its settings markers"
    assert block.group(1) == settings_table(), "regenerate the table with: .venv/bin/quantrac settings"

"""The import layers hold: `lint-imports` checks the contract in pyproject.toml ([tool.importlinter]).

cli on top, then the local stack, then the stages (api | processors, then alerts | ingest), then the shared
core `quantrac/`, which imports none of them. A broken contract names the import that crosses a layer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from quantrac.settings import REPO_ROOT


def test_the_import_layers_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--config", str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_tests_take_their_helpers_from_the_support_modules_and_their_ports_at_run_time() -> None:
    """Helpers live in tests/utils/ (never imported from conftest); ports come from tests/utils/ports.py."""
    import re

    conftest_import = re.compile(r"^\s*(from tests\.conftest import|import tests\.conftest)", re.M)
    fixed_port = re.compile(r"port\w*\W.{0,30}?\b[1-6][0-9]{4}\b|\b[1-6][0-9]{4}\b\W{1,6}\w*port", re.I)
    offenders: list[str] = []
    for path in sorted((REPO_ROOT / "tests").rglob("*.py")):
        if "node_modules" in path.parts or path.name == "test_import_layers.py":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: imports from conftest (use tests/utils/)" for _ in conftest_import.findall(text)]
        offenders += [f"{path.name}: fixed port in {line.strip()!r}" for line in text.splitlines() if fixed_port.search(line)]
    assert not offenders, offenders

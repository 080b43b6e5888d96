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

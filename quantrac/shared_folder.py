"""Find a file of the data strategy's shared folder (`shared/`), which is not in this repository.

The shared folder sits beside the project's main checkout (`../shared/`). A clone made elsewhere
(`git clone . $(mktemp -d)/q`, as the README's fresh-clone check does) has no `shared/` beside it
or above it, but its `origin` remote names the checkout it came from, and that one has. So a file
is looked for under `shared/` beside the repository and each of its parents, then beside the
`origin` checkout and each of its parents when `origin` is a folder on this machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from quantrac.settings import REPO_ROOT


def origin_checkout(repo: Path = REPO_ROOT) -> Path | None:
    """The folder the `origin` remote of `repo` names, when it is a local one (a path or a file:// URL)."""
    try:
        url = subprocess.run(["git", "-C", str(repo), "config", "--get", "remote.origin.url"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url or (":" in url and not url.startswith("/")):  # https://…, ssh://…, git@host:path
        return None
    path = (repo / url).resolve() if url else None
    return path if path is not None and path.is_dir() else None


def shared_candidates(relative: Path, repo: Path = REPO_ROOT) -> list[Path]:
    """Every place `shared/<relative>` may be, nearest first."""
    roots = list(repo.parents)
    if (origin := origin_checkout(repo)) is not None:
        roots += [root for root in origin.parents if root not in roots]
    return [root / "shared" / relative for root in roots]


def find_shared(relative: Path, repo: Path = REPO_ROOT) -> Path | None:
    """The first `shared/<relative>` that is a file (see the module's docstring), None when there is none."""
    return next((path for path in shared_candidates(relative, repo) if path.is_file()), None)

"""The shared folder (GECCO data, TimescaleDB source) is found from a clone made anywhere (`quantrac.shared_folder`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from quantrac.shared_folder import find_shared, origin_checkout

DATA = Path("data") / "set.csv"


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def _project(tmp_path: Path) -> Path:
    """A main checkout with the shared folder beside it, as on the development machine."""
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    (tmp_path / "work" / "shared" / DATA).write_text("x\n")
    main = tmp_path / "work" / "main"
    main.mkdir()
    _git("-C", str(main), "init", "-q")
    _git("-C", str(main), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "start")
    return main


def test_the_shared_folder_beside_the_checkout_is_found(tmp_path: Path) -> None:
    main = _project(tmp_path)
    assert find_shared(DATA, main) == tmp_path / "work" / "shared" / DATA


def test_a_clone_made_elsewhere_finds_it_beside_the_checkout_it_came_from(tmp_path: Path) -> None:
    main = _project(tmp_path)
    for n, origin in enumerate((str(main), f"file://{main}")):
        clone = tmp_path / "elsewhere" / str(n) / "q"
        _git("clone", "-q", origin, str(clone))
        assert origin_checkout(clone) == main.resolve()
        assert find_shared(DATA, clone) == tmp_path / "work" / "shared" / DATA
        assert find_shared(Path("data") / "missing.csv", clone) is None


def test_a_remote_origin_or_none_is_not_searched(tmp_path: Path) -> None:
    repo = tmp_path / "lonely" / "q"
    repo.mkdir(parents=True)
    _git("-C", str(repo), "init", "-q")
    assert origin_checkout(repo) is None and find_shared(DATA, repo) is None
    for url in ("https://example.org/quantrac.git", "git@example.org:quantrac.git"):
        _git("-C", str(repo), "remote", "add" if url.startswith("https") else "set-url", "origin", url)
        assert origin_checkout(repo) is None

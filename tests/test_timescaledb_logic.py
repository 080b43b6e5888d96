"""The TimescaleDB install and the store decision: tarball names, control files, the build cache's
place, the cause and fix given for a failed CREATE EXTENSION, the deployments' image, and the install
command's run on this machine (the extension installed: one line, no build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from quantrac.db import explain_extension_failure
from quantrac.settings import Settings
from stack.process import StackError
from stack.timescaledb import cache_dir, control_version, tarball_version


def test_the_release_comes_from_the_tarball_name() -> None:
    assert tarball_version(Path("/x/timescaledb-2.28.3.tar.gz")) == "2.28.3"
    with pytest.raises(StackError, match="QUANTRAC_TIMESCALEDB_SOURCE"):
        tarball_version(Path("/x/timescaledb-main.zip"))


def test_the_installed_version_is_the_control_files_default(tmp_path: Path) -> None:
    control = tmp_path / "timescaledb.control"
    assert control_version(control) is None
    control.write_text("# TimescaleDB\ncomment = 'Enables scalable inserts'\ndefault_version = '2.28.3'\nmodule_pathname = '$libdir/timescaledb-2.28.3'\n")
    assert control_version(control) == "2.28.3"


def test_the_build_cache_is_per_release_and_server_version_outside_the_clone(tmp_path: Path) -> None:
    settings = Settings(timescaledb_cache=tmp_path / "cache")
    assert cache_dir(settings, "2.28.3", "15") == tmp_path / "cache" / "2.28.3-pg15"
    default = Settings().timescaledb_cache
    assert default == Path.home() / ".cache" / "quantrac" / "timescaledb"
    assert Settings().timescaledb_source is not None and Settings().timescaledb_source.name == "timescaledb-2.28.3.tar.gz"


def test_not_preloaded_names_the_preload_line_as_the_fix() -> None:
    failure = explain_extension_failure(psycopg.OperationalError(
        'consuming input failed: FATAL:  extension "timescaledb" must be preloaded\nHINT:  Please preload ...'))
    assert failure.cause == "TimescaleDB is installed but not preloaded"
    assert "shared_preload_libraries = 'timescaledb'" in failure.fix


def test_other_failures_keep_the_servers_first_line() -> None:
    denied = explain_extension_failure(psycopg.errors.InsufficientPrivilege('permission denied to create extension "timescaledb"'))
    assert "permission denied" in denied.cause and "superuser" in denied.fix
    other = explain_extension_failure(psycopg.errors.UndefinedFile('could not access file "$libdir/timescaledb-2.28.3"\nmore'))
    assert other.cause == 'CREATE EXTENSION timescaledb failed: could not access file "$libdir/timescaledb-2.28.3"'
    assert "docs/timescaledb.md" in other.fix


def test_the_deployments_run_the_timescaledb_release_the_tests_build() -> None:
    """Compose and Kubernetes run the image of the release and PostgreSQL major the store tests run on."""
    import re

    from quantrac.settings import REPO_ROOT

    release = tarball_version(Settings().timescaledb_source)  # type: ignore[arg-type]
    for path in ("deploy/compose/compose.yaml", "deploy/k8s/12-timescaledb.yaml"):
        images = re.findall(r"image:\s*(timescale/timescaledb\S*)", (REPO_ROOT / path).read_text())
        assert images == [f"timescale/timescaledb:{release}-pg15"], path


def test_make_timescaledb_on_a_machine_where_it_is_installed_says_so_and_builds_nothing() -> None:
    """`make deps` runs this on every `make run` / `make test`: once installed, one line and no build."""
    done = subprocess.run([sys.executable, "-m", "cli", "stack", "timescaledb"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QUANTRAC_LOG_FORMAT": "console"})
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "timescaledb.ready" in lines[0] and "action=installed" in lines[0] and "version=2.28.3" in lines[0], lines

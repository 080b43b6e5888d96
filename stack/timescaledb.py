"""Provide the TimescaleDB extension to the local PostgreSQL (`quantrac stack timescaledb`, run by `make deps`).

In this order:
1. an extension already installed for the server (control file and library) is used as it is;
2. else the source tarball (`QUANTRAC_TIMESCALEDB_SOURCE`) is built once into a cache outside the
   clone (`QUANTRAC_TIMESCALEDB_CACHE`/<version>-pg<major>/) and installed from there, so later runs
   and fresh clones on the same machine (CI) copy the built files instead of building again;
3. else nothing is installed and the local stack runs on plain PostgreSQL.

The build stages `make install` under the cache (DESTDIR) and copies those files into the server's
directories: the same files whether they were just built or come from the cache. Building needs
Debian's `postgresql-server-dev-<major>`, `libssl-dev` and `cmake`; they are installed here, the dev
package pinned to the version of the installed server, because a newer one would upgrade the server
on disk under any PostgreSQL already running (which then fails to load its own libraries).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from quantrac.settings import Settings
from quantrac.shared_folder import find_shared
from stack.postgres import postgres_bin_dir
from stack.process import StackError

log = structlog.get_logger(__name__)

_TARBALL = re.compile(r"^timescaledb-(?P<version>\d+\.\d+\.\d+)\.tar\.gz$")
_DEFAULT_VERSION = re.compile(r"^\s*default_version\s*=\s*'(?P<version>[^']+)'", re.MULTILINE)
_BUILT_STAMP = ".built"


@dataclass(frozen=True)
class ServerDirs:
    """Where the PostgreSQL server of `bin_dir` looks for extensions."""

    major: str
    sharedir: Path
    pkglibdir: Path
    pg_config: Path

    @property
    def control_file(self) -> Path:
        """TimescaleDB's control file for this server: it exists when the extension is installed."""
        return self.sharedir / "extension" / "timescaledb.control"


@dataclass(frozen=True)
class Outcome:
    """What `ensure` did: `installed` (found in place), `cache` (copied from the cache), `built`, or `absent`."""

    action: Literal["installed", "cache", "built", "absent"]
    version: str | None
    detail: str


def tarball_version(path: Path) -> str:
    """The release of a `timescaledb-X.Y.Z.tar.gz` source tarball, from its name."""
    match = _TARBALL.match(path.name)
    if match is None:
        raise StackError(f"{path} is not named timescaledb-<X.Y.Z>.tar.gz; point QUANTRAC_TIMESCALEDB_SOURCE at such a tarball")
    return match["version"]


def control_version(control_file: Path) -> str | None:
    """The `default_version` of an installed timescaledb.control, None when it is not installed."""
    if not control_file.is_file():
        return None
    match = _DEFAULT_VERSION.search(control_file.read_text())
    return match["version"] if match else None


def cache_dir(settings: Settings, version: str, major: str) -> Path:
    """The build cache of one release for one PostgreSQL major version."""
    return settings.timescaledb_cache.expanduser() / f"{version}-pg{major}"


def server_dirs(bin_dir: Path) -> ServerDirs:
    """The extension directories of the server in `bin_dir` (Debian's layout when pg_config is absent)."""
    major = bin_dir.parent.name
    pg_config = bin_dir / "pg_config"
    if pg_config.is_file():
        def ask(flag: str) -> Path:
            return Path(subprocess.run([str(pg_config), flag], check=True, capture_output=True, text=True).stdout.strip())
        return ServerDirs(major, ask("--sharedir"), ask("--pkglibdir"), pg_config)
    return ServerDirs(major, Path("/usr/share/postgresql") / major, bin_dir.parent / "lib", pg_config)


def installed(dirs: ServerDirs) -> str | None:
    """The installed TimescaleDB version when both its control file and its loader library are in place."""
    version = control_version(dirs.control_file)
    return version if version and (dirs.pkglibdir / "timescaledb.so").is_file() else None


def ensure(settings: Settings) -> Outcome:
    """Make the TimescaleDB extension available to the local server if it can be; says what it did."""
    dirs = server_dirs(postgres_bin_dir())
    present = installed(dirs)
    if present:
        return _done(Outcome("installed", present, f"already installed for PostgreSQL {dirs.major} ({dirs.control_file})"))
    source = settings.timescaledb_source
    if source is not None and not source.is_file() and "timescaledb_source" not in settings.model_fields_set:
        source = find_shared(Path("vendor") / "timescaledb" / source.name) or source  # a clone made elsewhere
    if source is None or not source.is_file():
        return _done(Outcome("absent", None, f"not installed and no source tarball at {source} "
                                             "(set QUANTRAC_TIMESCALEDB_SOURCE): the local stack runs on plain PostgreSQL"))
    version = tarball_version(source)
    cache = cache_dir(settings, version, dirs.major)
    stage = cache / "stage"
    if (cache / _BUILT_STAMP).is_file():
        copied = _install_from(stage)
        return _done(Outcome("cache", version, f"installed {copied} files from the build cache {cache}"))
    _require_root(f"building TimescaleDB {version} needs root to install its build dependencies and the extension")
    started = time.monotonic()
    log.info("timescaledb.building", version=version, source=str(source), cache=str(cache), why="not installed, not cached yet")
    _install_build_dependencies(dirs.major)
    _build(source, version, cache, dirs.pg_config)
    seconds = round(time.monotonic() - started, 1)
    copied = _install_from(stage)
    return _done(Outcome("built", version, f"built in {seconds} s into {cache}, installed {copied} files"))


def _done(outcome: Outcome) -> Outcome:
    log.info("timescaledb.ready" if outcome.version else "timescaledb.absent", action=outcome.action,
             version=outcome.version, detail=outcome.detail)
    return outcome


def _require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise StackError(f"{why}; run `sudo make timescaledb` once")


def _install_build_dependencies(major: str) -> None:
    """The Debian packages the build needs, only those missing; the dev package at the server's own version."""
    server = _dpkg_version(f"postgresql-{major}")
    wanted = {f"postgresql-server-dev-{major}": server, "libssl-dev": None, "cmake": None, "gcc": None, "make": None}
    missing = [name if version is None else f"{name}={version}"
               for name, version in wanted.items() if _dpkg_version(name) is None]
    if not missing:
        return
    log.info("timescaledb.build_dependencies", installing=missing)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    args = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(args, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        _run(args, "installing the TimescaleDB build dependencies", env=env)


def _dpkg_version(package: str) -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", package], check=False, capture_output=True, text=True)
    parts = done.stdout.split()
    return parts[-1] if done.returncode == 0 and parts[:3] == ["install", "ok", "installed"] else None


def _build(source: Path, version: str, cache: Path, pg_config: Path) -> None:
    """Configure, compile and stage `make install` under cache/stage; the stamp is written last."""
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="timescaledb-build-") as tmp:
        with tarfile.open(source) as archive:
            archive.extractall(tmp, filter="data")
        tree = Path(tmp) / f"timescaledb-{version}"
        if not tree.is_dir():
            raise StackError(f"{source} does not hold timescaledb-{version}/ at its top; use the release's `git archive` tarball")
        _run(["./bootstrap", "-DREGRESS_CHECKS=OFF", "-DTAP_CHECKS=OFF", "-DWARNINGS_AS_ERRORS=OFF", "-DLINTER=OFF",
              "-DCMAKE_BUILD_TYPE=Release", f"-DPG_CONFIG={pg_config}"], "configuring TimescaleDB", cwd=tree)
        build = tree / "build"
        _run(["make", f"-j{os.cpu_count() or 1}"], "compiling TimescaleDB", cwd=build)
        _run(["make", "install", f"DESTDIR={cache / 'stage'}"], "staging the TimescaleDB install", cwd=build)
    (cache / _BUILT_STAMP).write_text(f"{version}\n")


def _install_from(stage: Path) -> int:
    """Copy the staged files to the same absolute paths (the server's lib and extension directories)."""
    _require_root(f"installing TimescaleDB from {stage} writes into PostgreSQL's directories")
    files = [p for p in stage.rglob("*") if p.is_file()]
    if not files:
        raise StackError(f"the build cache {stage} is empty; remove {stage.parent} and run `make timescaledb` again")
    for path in files:
        target = Path("/") / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return len(files)


def _run(args: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise StackError(f"{what} failed (exit {done.returncode}): {' '.join(args)}\n{tail}")

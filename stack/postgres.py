"""The local PostgreSQL (Debian packages), with TimescaleDB preloaded when installed, and the native one beside it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, LiteralString

import structlog

from quantrac.settings import Settings
from stack.process import PROBE_TIMEOUT_S, ProcessSpec, StackError, render, run, run_as
from stack.service import PortUse, Service

if TYPE_CHECKING:
    from psycopg.sql import Composed

log = structlog.get_logger(__name__)


class Postgres(Service):
    """The local PostgreSQL server, run as the `postgres` OS user, preloading TimescaleDB when it is wanted and installed."""
    name = "postgres"
    exe = "postgres"
    os_user = "postgres"

    @property
    def home(self) -> Path:
        """The server's folder under run_dir: data directory and unix socket directory."""
        return self.run_dir / "postgres"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory; its path on the command line marks the process as this run_dir's server."""
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server puts its unix socket, unless that path is too long for one (TCP only then)."""
        return self.home / "sock"

    @property
    def endpoint(self) -> str:
        """The DSN without password, as `quantrac stack status` shows it."""
        s = self.settings
        return f"postgresql://{s.pg_user}@{s.pg_host}:{s.pg_port}/{s.pg_database}"

    @property
    def ports(self) -> list[PortUse]:
        """The server's TCP port, with the setting that moves it."""
        return [PortUse(self.settings.pg_host, self.settings.pg_port, "QUANTRAC_PG_PORT=<port>")]

    @property
    def process(self) -> ProcessSpec:
        """Where the server's pid and log live; it runs as `postgres` and stops on SIGINT (fast shutdown)."""
        return ProcessSpec(
            name=self.name,
            exe=self.exe,
            marker=str(self.data_dir),
            pid_file=self.run_dir / "pids" / "postgres.pid",
            output_log=self.logs_dir / "postgres.log",
            logs=(self.logs_dir / "postgres.log",),
            user=self.os_user,
            stop_signal=signal.SIGINT,  # PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast` sends
        )

    def _query(self, dbname: str, query: LiteralString | Composed, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        import psycopg

        s = self.settings
        password = s.pg_password.get_secret_value() if s.pg_password else None
        with psycopg.connect(
            host=s.pg_host, port=s.pg_port, user=s.pg_user, password=password, dbname=dbname,
            connect_timeout=int(PROBE_TIMEOUT_S), autocommit=True,
        ) as conn:  # fmt: skip
            cursor = conn.execute(query, params or None)
            return cursor.fetchall() if cursor.description else []

    def check(self) -> None:
        """Healthy when `SELECT 1` succeeds on the `postgres` database; raises with the reason otherwise."""
        self._query("postgres", "SELECT 1")

    def ready(self) -> None:
        """Ready once the server answers on the `postgres` database: the quantrac one may not exist before `after_start`."""
        self._query("postgres", "SELECT 1")

    def wants_timescaledb(self) -> bool:
        """Whether this server is to preload TimescaleDB: asked for, and installed on this machine."""
        return self.settings.pg_timescaledb and timescaledb_available(postgres_bin_dir())

    def stale(self) -> str | None:
        """Why the running server's TimescaleDB preload differs from what is wanted now; None when it matches."""
        running = self._query("postgres", "SHOW shared_preload_libraries")
        preloaded = "timescaledb" in str(running[0][0]) if running else False
        if self.wants_timescaledb() and not preloaded:
            return "TimescaleDB is installed but the running server does not preload it (started before it was installed)"
        if preloaded and not self.settings.pg_timescaledb:
            return "the running server preloads TimescaleDB but this one is to run plain PostgreSQL"
        return None

    def store(self) -> str:
        """Which store the quantrac database is (TimescaleDB and its version, or native PostgreSQL)."""
        from quantrac.db import connect, describe_store

        with connect(self.settings.pg_dsn, connect_timeout=int(PROBE_TIMEOUT_S)) as conn:
            return describe_store(conn).summary

    def after_start(self) -> None:
        """Create the quantrac database if it does not exist yet."""
        from psycopg import sql

        name = self.settings.pg_database
        if not self._query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [name]):
            self._query("postgres", sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("postgres.database.created", database=name)

    def prepare(self) -> tuple[list[str], Path | None]:
        """initdb on first run, refuse data of another major version, render quantrac.conf; returns argv and the data dir."""
        bin_dir = postgres_bin_dir()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _grant_traversal(self.home, self.os_user)
            _chown_tree(self.home, self.os_user)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(bin_dir)
        self._check_data_version(bin_dir)
        conf = render(
            "postgresql.conf",
            self.data_dir / "quantrac.conf",
            data_dir=self.data_dir,
            host=self.settings.pg_host,
            port=self.settings.pg_port,
            socket_dir=self._socket_dir_setting(),
            preload="timescaledb" if self.wants_timescaledb() else "",
            log_file=self.process.output_log,
        )
        if os.geteuid() == 0:
            _chown_tree(conf, self.os_user)
        return [str(bin_dir / "postgres"), "-D", str(self.data_dir)], self.data_dir

    def _initdb(self, bin_dir: Path) -> None:
        run(
            [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.settings.pg_user,
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
            "initdb of the local PostgreSQL",
            cwd=self.home,
            **run_as(self.os_user),
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# quantrac: the settings of the local stack (rendered from deploy/local/postgresql.conf)\ninclude = 'quantrac.conf'\n"
            )
        log.info("postgres.initdb", data_dir=str(self.data_dir), superuser=self.settings.pg_user)

    def _check_data_version(self, bin_dir: Path) -> None:
        data_version = (self.data_dir / "PG_VERSION").read_text().strip()
        if data_version != bin_dir.parent.name:
            raise StackError(
                f"{self.data_dir} holds a PostgreSQL {data_version} cluster but the newest server here is "
                f"{bin_dir.parent.name}; remove {self.data_dir} (local data is lost) or install postgresql-{data_version}"
            )

    def _socket_dir_setting(self) -> str:
        """The socket directory, or '' (TCP only) when the path is too long for a unix socket."""
        path = str(self.socket_dir)
        return path if len(path) + len(f"/.s.PGSQL.{self.settings.pg_port}.lock") < 100 else ""


def native_postgres_settings(settings: Settings) -> Settings:
    """Settings of a second local PostgreSQL that never preloads TimescaleDB (the native store path the
    tests and the store bench run beside the TimescaleDB one): its own port and run folder, same role and database."""
    return settings.model_copy(update={"pg_port": settings.native_pg_port, "pg_native_port": settings.native_pg_port,
                                       "run_dir": settings.run_dir / "native", "pg_timescaledb": False})


def postgres_bin_dir() -> Path:
    """The bin directory of the newest PostgreSQL server installed from Debian packages."""
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file() and p.parent.name.isdigit()]
    if not candidates:
        raise StackError(
            "the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/postgres); install it with: apt-get install postgresql"
        )
    return max(candidates, key=lambda p: int(p.parent.name))


def timescaledb_available(bin_dir: Path) -> bool:
    """Whether the TimescaleDB extension is installed for this server (control file and library)."""
    share, lib = Path("/usr/share/postgresql") / bin_dir.parent.name, bin_dir.parent / "lib"
    if (bin_dir / "pg_config").is_file():
        with contextlib.suppress(StackError):
            share = Path(run([str(bin_dir / "pg_config"), "--sharedir"], "pg_config").strip())
            lib = Path(run([str(bin_dir / "pg_config"), "--pkglibdir"], "pg_config").strip())
    return (share / "extension" / "timescaledb.control").is_file() and (lib / "timescaledb.so").is_file()


def _grant_traversal(path: Path, user: str) -> None:
    """Let `user` reach path: `chmod o+x` the ancestors that block it (e.g. a mode-700 mktemp dir)."""
    if _user_can_traverse(path, user):
        return
    blocked = []
    for ancestor in reversed(path.parents):
        if not _user_can_traverse(ancestor, user):
            ancestor.chmod(ancestor.stat().st_mode | 0o001)
            blocked.append(str(ancestor))
    log.warning("postgres.traversal.granted", user=user, chmod_o_plus_x=blocked, why=f"{user} must reach {path}")


def _user_can_traverse(path: Path, user: str) -> bool:
    done = subprocess.run(["test", "-x", str(path)], check=False, **run_as(user))  # type: ignore[call-overload]  # run_as returns Popen keyword arguments as dict[str, object], which match no typed overload of subprocess.run
    return bool(done.returncode == 0)


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    if path.stat().st_uid == entry.pw_uid and not path.is_dir():
        return
    paths: Iterable[Path] = [path]
    if path.is_dir():
        paths = [path, *(Path(root) / name for root, dirs, files in os.walk(path) for name in (*dirs, *files))]
    for item in paths:
        if item.lstat().st_uid != entry.pw_uid:
            os.lchown(item, entry.pw_uid, entry.pw_gid)

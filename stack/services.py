"""The local service stack: Mosquitto, Kafka (KRaft) and PostgreSQL on loopback.

`up` starts whatever is not already answering on its port, `down` stops what this stack
started, `status` probes each service at protocol level. No Docker: the services run
from Debian packages (mosquitto, postgresql) and Maven jars (Kafka), as plain detached
child processes. Everything they write -- data, logs, rendered configs, pid files --
lives under `settings.run_dir`:

    <run_dir>/logs/          mosquitto.log, mosquitto.out, kafka-server.log, kafka.out, postgres.log
    <run_dir>/pids/          <service>.pid (the process this stack started)
    <run_dir>/mosquitto/     mosquitto.conf, data/, generated accounts (credentials.json, passwd, acl; mode 600)
    <run_dir>/kafka/         server.properties, log4j2.properties, cluster-id, data/
    <run_dir>/kafka-libs/    the broker's jars, gathered by Maven from deploy/kafka/pom.xml
    <run_dir>/postgres/      data/ and sock/, owned by `postgres` when we run as root

Config templates live in deploy/local/ and use `{{name}}` placeholders.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, LiteralString

import structlog

from quantrac.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient
    from psycopg.sql import Composed

log = structlog.get_logger(__name__)

TEMPLATE_DIR = REPO_ROOT / "deploy" / "local"
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
SERVICE_NAMES = ("postgres", "mosquitto", "kafka")
LOG_TAIL_LINES = 20
_POLL_INTERVAL_S = 0.2
_PROBE_TIMEOUT_S = 3.0


class StackError(Exception):
    """A service could not be started, checked or stopped; the message says why and how to fix it."""


@dataclass(frozen=True)
class ServiceStatus:
    """What `status` found out about one service."""

    name: str
    healthy: bool
    pid: int | None
    endpoint: str
    detail: str


# --------------------------------------------------------------------------------------------
# Small utilities: templates, polling, ports, /proc
# --------------------------------------------------------------------------------------------


def _render(template: str, dest: Path, **values: object) -> Path:
    """Fill the `{{name}}` placeholders of deploy/local/<template> and write it to dest."""
    text = (TEMPLATE_DIR / template).read_text()

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise StackError(f"template {TEMPLATE_DIR / template} uses {{{{{key}}}}}, which stack.py does not provide")
        return str(values[key])

    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(re.sub(r"\{\{\s*(\w+)\s*\}\}", substitute, text))
    return dest


def _probe(check: Callable[[], None]) -> str | None:
    """Run a health check; None when healthy, else a one-line reason."""
    try:
        check()
    except Exception as exc:  # any failure of a probe means "not healthy", with its reason
        text = " ".join(str(exc).split()) or "no detail"
        return f"{type(exc).__name__}: {text}"
    return None


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _tcp_connect(host: str, port: int) -> None:
    """Fail fast (before a slow protocol client) when nothing listens."""
    with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
        pass


def _port_in_use(host: str, port: int) -> bool:
    """Whether binding host:port would fail the way the service's own bind would."""
    family, socktype, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _port_holder(port: int) -> str | None:
    """'name (pid N)' of the process listening on port, from `ss -ltnp`, if it can be found."""
    if shutil.which("ss") is None:
        return None
    try:
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1] == str(port):
            match = re.search(r'\("([^"]+)",pid=(\d+)', line)
            if match:
                return f"{match.group(1)} (pid {match.group(2)})"
    return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of pid from /proc, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces and parens
    return fields[0], int(fields[2])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _stack_lock(settings: Settings) -> Iterator[None]:
    """Serialise `up`/`down` on one run_dir (e.g. two test sessions starting at once)."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with (settings.run_dir / ".stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _require_binary(name: str, package: str, extra_dirs: Sequence[str] = ()) -> str:
    """Absolute path of an executable, or a StackError naming the Debian package that provides it."""
    found = shutil.which(name) or next((str(Path(d) / name) for d in extra_dirs if (Path(d) / name).is_file()), None)
    if found is None:
        raise StackError(f"`{name}` is not installed; install it with: apt-get install {package}")
    return found


def _run(argv: Sequence[str], what: str, **kwargs: object) -> str:
    """Run a short setup command; its output goes into the StackError if it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    except OSError as exc:
        raise StackError(f"{what} failed: {exc}\ncommand: {shlex.join(argv)}") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-LOG_TAIL_LINES:])
        raise StackError(f"{what} failed (exit code {done.returncode})\ncommand: {shlex.join(argv)}\n{output}")
    return str(done.stdout)


# --------------------------------------------------------------------------------------------
# Process supervision: one helper for all three services
# --------------------------------------------------------------------------------------------

# Popen objects of the children this interpreter started, so they are reaped (not left
# as zombies that still look alive) and Python does not warn about them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessSpec:
    """Where one supervised process keeps its pid and logs, and how to recognise and stop it.

    `marker` is an argument of the service's own command line (its config file or data
    dir, all under run_dir), so a recycled pid or a service of another run_dir is never
    mistaken for ours.
    """

    name: str
    exe: str
    marker: str
    pid_file: Path
    output_log: Path
    logs: tuple[Path, ...]
    user: str | None = None
    stop_signal: signal.Signals = signal.SIGTERM


def _run_as(user: str | None) -> dict[str, object]:
    """Popen arguments that drop root to `user` (postgres refuses to run as root); nothing otherwise."""
    if user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    env = {**os.environ, "HOME": entry.pw_dir, "USER": user, "LOGNAME": user}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


def _is_ours(spec: ProcessSpec, pid: int) -> bool:
    argv = _cmdline(pid)
    stat = _proc_stat(pid)
    return bool(argv) and stat is not None and stat[0] != "Z" and Path(argv[0]).name == spec.exe and spec.marker in argv


def _running_pid(spec: ProcessSpec) -> int | None:
    """Pid of the live process this stack started for spec: its pid file, else a /proc scan.

    The scan finds a service whose pid file was lost (e.g. run_dir/pids removed by hand).
    """
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(spec.pid_file.read_text().strip())
        _reap(pid)
        if _is_ours(spec, pid):
            return pid
    own = os.getpid()
    return next((pid for pid in _all_pids() if pid != own and _is_ours(spec, pid)), None)


def _reap(pid: int) -> int | None:
    """Exit code of a child of this interpreter if it has exited (reaping it), else None."""
    child = _CHILDREN.get(pid)
    return None if child is None else child.poll()


def _alive(pid: int) -> bool:
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _group_gone(pgid: int) -> bool:
    """No live process is left in the process group (the service and any children it forked)."""
    _reap(pgid)
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            return False
    return True


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def _log_tails(spec: ProcessSpec) -> str:
    parts = []
    for path in spec.logs:
        tail = _tail(path)
        if tail:
            parts.append(f"--- last lines of {path} ---\n{tail}")
    return "\n".join(parts) or f"(its logs are empty: {', '.join(map(str, spec.logs))})"


def spawn(spec: ProcessSpec, argv: Sequence[str], cwd: Path | None = None) -> int:
    """Start argv detached (own session), stdout+stderr appended to spec.output_log, pid in spec.pid_file."""
    spec.output_log.parent.mkdir(parents=True, exist_ok=True)
    spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with spec.output_log.open("ab") as out:
        out.write(f"\n--- {datetime.now(UTC).isoformat(timespec='seconds')} quantrac stack: {shlex.join(argv)}\n".encode())
        out.flush()
        child = subprocess.Popen(  # type: ignore[call-overload]
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            **_run_as(spec.user),
        )
    _CHILDREN[child.pid] = child
    spec.pid_file.write_text(f"{child.pid}\n")
    log.info("service.spawned", service=spec.name, pid=child.pid, log=str(spec.output_log))
    return int(child.pid)


def wait_started(spec: ProcessSpec, pid: int, ready: Callable[[], None], endpoint: str, timeout_s: float) -> None:
    """Poll `ready` until it passes; raise with the log tails if the process dies or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not _alive(pid):
            code = _reap(pid)
            status = f"exit code {code}" if code is not None else "exited"
            spec.pid_file.unlink(missing_ok=True)
            raise StackError(f"{spec.name} died while starting ({status}).\n{_log_tails(spec)}")
        reason = _probe(ready)
        if reason is None:
            return
        if time.monotonic() >= deadline:
            stop_process(spec, timeout_s=10)
            raise StackError(
                f"{spec.name} did not answer on {endpoint} within {timeout_s:.0f} s (last probe: {reason}); "
                f"it was stopped.\n{_log_tails(spec)}"
            )
        time.sleep(_POLL_INTERVAL_S)


def stop_process(spec: ProcessSpec, timeout_s: float) -> bool:
    """Stop the process this stack started for spec: its stop signal, then SIGKILL to its whole group.

    Returns whether there was anything to stop. Waits until no process of its group is left.
    """
    pid = _running_pid(spec)
    if pid is None:
        spec.pid_file.unlink(missing_ok=True)
        return False
    log.info("service.stopping", service=spec.name, pid=pid, signal=spec.stop_signal.name)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, spec.stop_signal)
    if not _wait_until(lambda: _group_gone(pid), timeout_s):
        log.warning("service.kill", service=spec.name, pid=pid, waited_s=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if not _wait_until(lambda: _group_gone(pid), 10):
            raise StackError(f"{spec.name} (pid {pid}) survived SIGKILL; check `ps -g {pid}`")
    spec.pid_file.unlink(missing_ok=True)
    log.info("service.stopped", service=spec.name, pid=pid)
    return True


# --------------------------------------------------------------------------------------------
# The services
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortUse:
    """A port a service listens on, and the setting that moves it (e.g. `QUANTRAC_PG_PORT=<port>`)."""

    host: str
    port: int
    setting: str


class Service:
    """One service of the stack: how to prepare, recognise, probe and finish starting it."""

    name: str = ""
    exe: str = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir.resolve()
        self.logs_dir = self.run_dir / "logs"

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    @property
    def ports(self) -> list[PortUse]:
        raise NotImplementedError

    @property
    def process(self) -> ProcessSpec:
        raise NotImplementedError

    def check(self) -> None:
        """Protocol-level health check; raises with the reason when unhealthy."""
        raise NotImplementedError

    def ready(self) -> None:
        """What must pass before `after_start` runs; the full check by default."""
        self.check()

    def prepare(self) -> tuple[list[str], Path | None]:
        """Check the binaries, render configs, initialise data; returns (argv, cwd)."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Idempotent set-up that needs the running server (e.g. create the database)."""

    def stale(self) -> str | None:
        """Why a healthy running server no longer matches what `prepare` would start, None when it does."""
        return None


class Mosquitto(Service):
    name = "mosquitto"
    exe = "mosquitto"

    @property
    def home(self) -> Path:
        return self.run_dir / "mosquitto"

    @property
    def conf(self) -> Path:
        return self.home / "mosquitto.conf"

    @property
    def endpoint(self) -> str:
        return f"mqtt://{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    @property
    def ports(self) -> list[PortUse]:
        return [PortUse(self.settings.mqtt_host, self.settings.mqtt_port, "QUANTRAC_MQTT_PORT=<port>")]

    @property
    def process(self) -> ProcessSpec:
        return ProcessSpec(
            name=self.name,
            exe=self.exe,
            marker=str(self.conf),
            pid_file=self.run_dir / "pids" / "mosquitto.pid",
            output_log=self.logs_dir / "mosquitto.out",
            logs=(self.logs_dir / "mosquitto.out", self.logs_dir / "mosquitto.log"),
        )

    def check(self) -> None:
        from ingest.gateways import bridge_login

        username, password = bridge_login(self.settings)
        code = mqtt_connack(self.settings.mqtt_host, self.settings.mqtt_port, username, password)
        if code != 0:
            raise ConnectionRefusedError(f"the broker refused the MQTT connection of {username or 'an anonymous client'} "
                                         f"with CONNACK return code {code}")

    def after_start(self) -> None:
        """Keep the accounts in step with the seed registry (and the test account setting); SIGHUPs our broker."""
        from ingest.gateways import ensure_accounts

        ensure_accounts(self.settings)

    def prepare(self) -> tuple[list[str], Path | None]:
        from ingest.gateways import ensure_accounts

        binary = _require_binary("mosquitto", "mosquitto mosquitto-clients", extra_dirs=("/usr/sbin", "/usr/local/sbin"))
        ensure_accounts(self.settings)  # before the config is rendered: the broker never starts anonymous
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        _render(
            "mosquitto.conf",
            self.conf,
            run_dir=self.run_dir,
            # As root, mosquitto switches to the `mosquitto` user unless told otherwise, and that
            # user may not be able to write into run_dir (or even reach it). Stay root instead.
            user="root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
            pid_file=self.home / "mosquitto.pid",
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_port,
            data_dir=self.home / "data",
            client_expiration=_mosquitto_duration(self.settings.mqtt_session_expiry_s),
            max_queued_bytes=1024**3,
            message_size_limit=self.settings.mqtt_message_size_limit,
            log_file=self.logs_dir / "mosquitto.log",
            auth="\n".join(_mosquitto_auth_lines(self.settings)),
        )
        return [binary, "-c", str(self.conf)], self.home


def _mosquitto_auth_lines(settings: Settings) -> list[str]:
    """The authentication (and TLS listener) part of mosquitto.conf.

    `prepare` generates the accounts and ACL under run_dir/mosquitto first, so no anonymous access.
    """
    from ingest.gateways import mosquitto_auth_lines

    return mosquitto_auth_lines(settings)


def _mosquitto_duration(seconds: int) -> str:
    """mosquitto durations take h/d/w/m/y units only (no seconds); round up to whole hours."""
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    return f"{max(1, -(-seconds // 3600))}h"


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _mqtt_remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def mqtt_connack(host: str, port: int, username: str | None = None, password: str | None = None) -> int:
    """Send an MQTT 3.1.1 CONNECT and return the CONNACK return code (0 = accepted).

    A raw exchange rather than a client library: it is the smallest possible proof that an
    MQTT broker (and not some other program) owns the port, with a hard timeout.
    """
    flags = 0x02  # clean session: the probe leaves no state behind
    payload = _mqtt_string(f"quantrac-stack-probe-{os.getpid()}-{time.monotonic_ns() % 10**9}")
    if username:
        flags |= 0x80
        payload += _mqtt_string(username)
        if password:
            flags |= 0x40
            payload += _mqtt_string(password)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + payload
    with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S) as sock:
        sock.sendall(b"\x10" + _mqtt_remaining_length(len(body)) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise ConnectionError(f"{host}:{port} closed the connection without an MQTT CONNACK")
            reply += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    if reply[0] != 0x20 or reply[1] != 0x02:
        raise ConnectionError(f"{host}:{port} answered {reply.hex()}, which is not an MQTT CONNACK")
    return reply[3]


class Kafka(Service):
    name = "kafka"
    exe = "java"

    @property
    def home(self) -> Path:
        return self.run_dir / "kafka"

    @property
    def props(self) -> Path:
        return self.home / "server.properties"

    @property
    def libs(self) -> Path:
        return self.run_dir / "kafka-libs"

    @property
    def bootstrap(self) -> tuple[str, int]:
        """The local broker's listener: the first of settings.kafka_bootstrap."""
        return _split_host_port(self.settings.kafka_bootstrap.split(",")[0])

    @property
    def endpoint(self) -> str:
        host, port = self.bootstrap
        return f"kafka://{host}:{port}"

    @property
    def ports(self) -> list[PortUse]:
        host, port = self.bootstrap
        return [
            PortUse(host, port, f"QUANTRAC_KAFKA_BOOTSTRAP={host}:<port>"),
            PortUse("127.0.0.1", self.settings.kafka_controller_port, "QUANTRAC_KAFKA_CONTROLLER_PORT=<port>"),
        ]

    @property
    def process(self) -> ProcessSpec:
        return ProcessSpec(
            name=self.name,
            exe=self.exe,
            marker=str(self.props),
            pid_file=self.run_dir / "pids" / "kafka.pid",
            output_log=self.logs_dir / "kafka.out",
            logs=(self.logs_dir / "kafka.out", self.logs_dir / "kafka-server.log"),
        )

    def check(self) -> None:
        host, port = self.bootstrap
        _tcp_connect(host, port)
        admin = kafka_admin(self.settings)
        try:
            admin.describe_cluster()
        finally:
            admin.close()

    def prepare(self) -> tuple[list[str], Path | None]:
        java = _require_binary("java", "default-jre-headless")
        libs = self._gather_libs()
        classpath = f"{libs}/*"  # java expands the wildcard itself
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        host, port = self.bootstrap
        _render(
            "kafka-server.properties",
            self.props,
            run_dir=self.run_dir,
            host=host,
            port=port,
            controller_host="127.0.0.1",
            controller_port=self.settings.kafka_controller_port,
            data_dir=self.home / "data",
            partitions=self.settings.topic_partitions,
        )
        log4j = _render(
            "kafka-log4j2.properties", self.home / "log4j2.properties", run_dir=self.run_dir, log_file=self.logs_dir / "kafka-server.log"
        )
        self._format_storage(java, classpath)
        heap = self.settings.kafka_heap
        return [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.props),
        ], self.home

    def _gather_libs(self) -> Path:
        """Copy the broker's jars out of Maven when missing or when pom.xml changed (stamp = its hash)."""
        stamp = self.libs / ".pom-sha256"
        digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return self.libs
        mvn = _require_binary("mvn", "maven")
        log.info("kafka.libs.gathering", pom=str(KAFKA_POM), into=str(self.libs))
        staging = self.libs.with_name("kafka-libs.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        _run(
            [mvn, "-B", "-q", "-f", str(KAFKA_POM),
             "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
            "gathering the Kafka jars with Maven",
        )  # fmt: skip
        (staging / ".pom-sha256").write_text(digest + "\n")
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        return self.libs

    def _format_storage(self, java: str, classpath: str) -> None:
        """Format the KRaft metadata log once, with a cluster id generated once and kept in run_dir."""
        if (self.home / "data" / "meta.properties").is_file():
            return
        id_file = self.home / "cluster-id"
        if not id_file.is_file():
            out = _run([java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"], "generating a Kafka cluster id")
            id_file.write_text(out.strip().splitlines()[-1].strip() + "\n")
        cluster_id = id_file.read_text().strip()
        _run(
            [java, "-cp", classpath, f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
             "kafka.tools.StorageTool", "format", "-g", "-t", cluster_id, "-c", str(self.props)],
            "formatting the Kafka storage",
        )  # fmt: skip
        log.info("kafka.storage.formatted", cluster_id=cluster_id, data_dir=str(self.home / "data"))


def kafka_admin(settings: Settings) -> KafkaAdminClient:
    """A kafka-python admin client for settings.kafka_bootstrap with short timeouts (for probes and topics)."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id="quantrac-stack",
        request_timeout_ms=10_000,
        api_version_auto_timeout_ms=int(_PROBE_TIMEOUT_S * 1000),
    )


class Postgres(Service):
    name = "postgres"
    exe = "postgres"
    os_user = "postgres"

    @property
    def home(self) -> Path:
        return self.run_dir / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "sock"

    @property
    def endpoint(self) -> str:
        s = self.settings
        return f"postgresql://{s.pg_user}@{s.pg_host}:{s.pg_port}/{s.pg_database}"

    @property
    def ports(self) -> list[PortUse]:
        return [PortUse(self.settings.pg_host, self.settings.pg_port, "QUANTRAC_PG_PORT=<port>")]

    @property
    def process(self) -> ProcessSpec:
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
            connect_timeout=int(_PROBE_TIMEOUT_S), autocommit=True,
        ) as conn:  # fmt: skip
            cursor = conn.execute(query, params or None)
            return cursor.fetchall() if cursor.description else []

    def check(self) -> None:
        self._query("postgres", "SELECT 1")

    def ready(self) -> None:
        self._query("postgres", "SELECT 1")

    def wants_timescaledb(self) -> bool:
        """Whether this server is to preload TimescaleDB: asked for, and installed on this machine."""
        return self.settings.pg_timescaledb and timescaledb_available(postgres_bin_dir())

    def stale(self) -> str | None:
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

        with connect(self.settings.pg_dsn, connect_timeout=int(_PROBE_TIMEOUT_S)) as conn:
            return describe_store(conn).summary

    def after_start(self) -> None:
        from psycopg import sql

        name = self.settings.pg_database
        if not self._query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [name]):
            self._query("postgres", sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("postgres.database.created", database=name)

    def prepare(self) -> tuple[list[str], Path | None]:
        bin_dir = postgres_bin_dir()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _grant_traversal(self.home, self.os_user)
            _chown_tree(self.home, self.os_user)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(bin_dir)
        self._check_data_version(bin_dir)
        conf = _render(
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
        _run(
            [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.settings.pg_user,
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
            "initdb of the local PostgreSQL",
            cwd=self.home,
            **_run_as(self.os_user),
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
            share = Path(_run([str(bin_dir / "pg_config"), "--sharedir"], "pg_config").strip())
            lib = Path(_run([str(bin_dir / "pg_config"), "--pkglibdir"], "pg_config").strip())
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
    done = subprocess.run(["test", "-x", str(path)], check=False, **_run_as(user))  # type: ignore[call-overload]
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


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------

_SERVICE_CLASSES: dict[str, type[Service]] = {"postgres": Postgres, "mosquitto": Mosquitto, "kafka": Kafka}


def services(settings: Settings, only: Iterable[str] | None = None) -> list[Service]:
    """The stack's services in start order, optionally only the named ones."""
    names = list(SERVICE_NAMES) if only is None else list(only)
    unknown = sorted(set(names) - set(SERVICE_NAMES))
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; the stack has {', '.join(SERVICE_NAMES)}")
    return [_SERVICE_CLASSES[name](settings) for name in SERVICE_NAMES if name in names]


def _ensure_ports_free(service: Service, reason: str) -> None:
    for use in service.ports:
        try:
            taken = _port_in_use(use.host, use.port)
        except OSError as exc:
            raise StackError(f"{service.name} cannot listen on {use.host}:{use.port}: {exc}. Check its host/port settings.") from exc
        if taken:
            holder = _port_holder(use.port)
            by = f" by {holder}" if holder else ""
            raise StackError(
                f"port {use.port} on {use.host}, needed by {service.name}, is already taken{by}, and no healthy "
                f"{service.name} answers at {service.endpoint} ({reason}). Stop that process, or move "
                f"{service.name} to a free port with {use.setting}."
            )


def _begin(service: Service) -> int | None:
    """Start service unless it is healthy already; returns the pid to wait for, or None if reused."""
    reason = _probe(service.check)
    stale = service.stale() if reason is None else None
    if stale is not None and _running_pid(service.process) is not None:
        log.info("service.restarting", service=service.name, why=stale)
        stop_process(service.process, service.settings.stack_stop_timeout_s)
        reason = stale
    if reason is None:
        if stale is not None:
            log.warning("service.stale", service=service.name, endpoint=service.endpoint, why=stale,
                        fix="restart it; this stack did not start it, so it leaves it alone")
        log.info("service.reused", service=service.name, endpoint=service.endpoint, pid=_running_pid(service.process))
        service.after_start()
        return None
    pid = _running_pid(service.process)
    if pid is not None:
        # Ours and alive but not (yet) healthy: still starting or missing its set-up; give it the deadline.
        log.info("service.waiting", service=service.name, pid=pid, reason=reason)
        return pid
    _ensure_ports_free(service, reason)
    argv, cwd = service.prepare()
    return spawn(service.process, argv, cwd)


def _finish(service: Service, pid: int, started_at: float) -> None:
    timeout = service.settings.stack_start_timeout_s
    wait_started(service.process, pid, service.ready, service.endpoint, timeout)
    service.after_start()
    reason = _probe(service.check)
    if reason is not None:
        raise StackError(f"{service.name} started (pid {pid}) but is not healthy: {reason}\n{_log_tails(service.process)}")
    log.info("service.started", service=service.name, pid=pid, endpoint=service.endpoint, seconds=round(time.monotonic() - started_at, 1))


def up(settings: Settings, only: Iterable[str] | None = None) -> None:
    """Make every service (or only the named ones) healthy; healthy ones are reused as they are.

    All processes are spawned first and then waited for, so Kafka's slow start overlaps the others.
    Creates the quantrac topics when Kafka is part of the call.
    """
    started_at = time.monotonic()
    chosen = services(settings, only)
    with _stack_lock(settings):
        pending: list[tuple[Service, int]] = []
        try:
            for service in chosen:
                pid = _begin(service)
                if pid is not None:
                    pending.append((service, pid))
            for service, pid in pending:
                _finish(service, pid, started_at)
        except BaseException:
            # A half-started stack is worse than none: stop what this call spawned.
            for service, _ in pending:
                with contextlib.suppress(StackError):
                    stop_process(service.process, settings.stack_stop_timeout_s)
            raise
        if any(service.name == "kafka" for service in chosen):
            ensure_topics(settings)
    log.info("stack.up", services=[s.name for s in chosen], seconds=round(time.monotonic() - started_at, 1))


def down(settings: Settings, only: Iterable[str] | None = None) -> None:
    """Stop the services this stack started (found by their pid files under run_dir); harmless when none run.

    Services started by someone else and merely reused by `up` are left alone.
    """
    with _stack_lock(settings):
        for service in reversed(services(settings, only)):
            if not stop_process(service.process, settings.stack_stop_timeout_s):
                log.info("service.not_running", service=service.name)


def status(settings: Settings, only: Iterable[str] | None = None) -> dict[str, ServiceStatus]:
    """Probe each service at protocol level."""
    result = {}
    for service in services(settings, only):
        reason = _probe(service.check)
        pid = _running_pid(service.process)
        if reason is not None:
            detail = reason
        elif pid is not None:
            detail = "started by this stack"
        else:
            detail = "healthy, not started by this stack (reused)"
        if reason is None and isinstance(service, Postgres):
            detail += f"; store: {_probe_store(service)}"
        result[service.name] = ServiceStatus(service.name, reason is None, pid, service.endpoint, detail)
    return result


def _probe_store(service: Postgres) -> str:
    try:
        return service.store()
    except Exception as exc:  # the database may not exist yet: say so rather than fail the status
        return f"unknown ({type(exc).__name__}: {' '.join(str(exc).split())})"


def ensure_topics(settings: Settings) -> None:
    """Create the quantrac topics if missing (replication factor 1), and grow any with too few partitions.

    Retries until settings.stack_start_timeout_s: right after start the controller may not be ready.
    """
    wanted = {
        settings.readings_topic: settings.topic_partitions,
        settings.deadletter_topic: settings.topic_partitions,
        settings.alerts_topic: settings.topic_partitions,
    }
    deadline = time.monotonic() + settings.stack_start_timeout_s
    while True:
        try:
            _create_topics(settings, wanted)
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise StackError(f"could not create the Kafka topics {sorted(wanted)} on {settings.kafka_bootstrap}: {exc}") from exc
            log.info("kafka.topics.retry", error=f"{type(exc).__name__}: {exc}")
            time.sleep(1.0)


def ensure_changelog_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create the worker's table changelogs (compacted, one partition per source partition) if missing.

    Faust would create them itself, but on a brand-new cluster a table written with
    `use_partitioner=True` asks the producer for the partitions of a changelog it has no metadata
    for yet (TypeError in aiokafka's partitioner); creating them before the worker starts avoids that.
    """
    _create_topics(settings, {name: settings.topic_partitions for name in names}, {"cleanup.policy": "compact"})


def _create_topics(settings: Settings, wanted: dict[str, int], configs: dict[str, str] | None = None) -> None:
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = kafka_admin(settings)
    try:
        existing = {t["topic"]: len(t["partitions"]) for t in admin.describe_topics() if t["topic"] in wanted}
        missing = [NewTopic(name, count, 1, topic_configs=configs or {}) for name, count in wanted.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, timeout_ms=30_000)
            log.info("kafka.topics.created", topics=[t.name for t in missing])
        grow = {name: NewPartitions(wanted[name]) for name, count in existing.items() if count < wanted[name]}
        if grow:
            admin.create_partitions(grow, timeout_ms=30_000)
            log.info("kafka.topics.grown", topics={name: wanted[name] for name in grow})
    finally:
        admin.close()

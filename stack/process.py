"""Process supervision shared by the stack's services: start a detached service, recognise it again by its
command line, wait until it answers, stop its process group; plus the small helpers (templates, ports, /proc)
every service uses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from quantrac.settings import REPO_ROOT, Settings

log = structlog.get_logger(__name__)

TEMPLATE_DIR = REPO_ROOT / "deploy" / "local"
LOG_TAIL_LINES = 20
POLL_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 3.0


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


def render(template: str, dest: Path, **values: object) -> Path:
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


def probe(check: Callable[[], None]) -> str | None:
    """Run a health check; None when healthy, else a one-line reason."""
    try:
        check()
    except Exception as exc:  # any failure of a probe means "not healthy", with its reason
        text = " ".join(str(exc).split()) or "no detail"
        return f"{type(exc).__name__}: {text}"
    return None


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` as (host, port), brackets of an IPv6 host removed; an empty host means 127.0.0.1."""
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def tcp_connect(host: str, port: int) -> None:
    """Fail fast (before a slow protocol client) when nothing listens."""
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
        pass


def port_in_use(host: str, port: int) -> bool:
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


def port_holder(port: int) -> str | None:
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
def stack_lock(settings: Settings) -> Iterator[None]:
    """Serialise `up`/`down` on one run_dir (e.g. two test sessions starting at once)."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with (settings.run_dir / ".stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def require_binary(name: str, package: str, extra_dirs: Sequence[str] = ()) -> str:
    """Absolute path of an executable, or a StackError naming the Debian package that provides it."""
    found = shutil.which(name) or next((str(Path(d) / name) for d in extra_dirs if (Path(d) / name).is_file()), None)
    if found is None:
        raise StackError(f"`{name}` is not installed; install it with: apt-get install {package}")
    return found


def run(argv: Sequence[str], what: str, **kwargs: object) -> str:
    """Run a short setup command; its output goes into the StackError if it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]  # kwargs are subprocess.run keywords passed through as object, which match no typed overload
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


def run_as(user: str | None) -> dict[str, object]:
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


def running_pid(spec: ProcessSpec) -> int | None:
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
        time.sleep(POLL_INTERVAL_S)
    return True


def log_tails(spec: ProcessSpec) -> str:
    """The last lines of each of the process's logs, for an error message; says so when they are all empty."""
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
        child = subprocess.Popen(  # type: ignore[call-overload]  # run_as's Popen keyword arguments are dict[str, object], which match no typed overload of Popen
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            **run_as(spec.user),
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
            raise StackError(f"{spec.name} died while starting ({status}).\n{log_tails(spec)}")
        reason = probe(ready)
        if reason is None:
            return
        if time.monotonic() >= deadline:
            stop_process(spec, timeout_s=10)
            raise StackError(
                f"{spec.name} did not answer on {endpoint} within {timeout_s:.0f} s (last probe: {reason}); "
                f"it was stopped.\n{log_tails(spec)}"
            )
        time.sleep(POLL_INTERVAL_S)


def stop_process(spec: ProcessSpec, timeout_s: float) -> bool:
    """Stop the process this stack started for spec: its stop signal, then SIGKILL to its whole group.

    Returns whether there was anything to stop. Waits until no process of its group is left.
    """
    pid = running_pid(spec)
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

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
import time
from collections.abc import Iterable, Iterator

import structlog

from quantrac.kafka_topics import TopicsError, ensure_topics
from quantrac.settings import Settings
from stack.kafka import Kafka
from stack.mosquitto import Mosquitto
from stack.postgres import Postgres
from stack.process import (
    ServiceStatus,
    StackError,
    log_tails,
    port_holder,
    port_in_use,
    probe,
    running_pid,
    spawn,
    stack_lock,
    stop_process,
    wait_started,
)
from stack.service import Service

log = structlog.get_logger(__name__)

SERVICE_NAMES = ("postgres", "mosquitto", "kafka")


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
            taken = port_in_use(use.host, use.port)
        except OSError as exc:
            raise StackError(f"{service.name} cannot listen on {use.host}:{use.port}: {exc}. Check its host/port settings.") from exc
        if taken:
            holder = port_holder(use.port)
            by = f" by {holder}" if holder else ""
            raise StackError(
                f"port {use.port} on {use.host}, needed by {service.name}, is already taken{by}, and no healthy "
                f"{service.name} answers at {service.endpoint} ({reason}). Stop that process, or move "
                f"{service.name} to a free port with {use.setting}."
            )


def _begin(service: Service) -> int | None:
    """Start service unless it is healthy already; returns the pid to wait for, or None if reused."""
    reason = probe(service.check)
    stale = service.stale() if reason is None else None
    if stale is not None and running_pid(service.process) is not None:
        log.info("service.restarting", service=service.name, why=stale)
        stop_process(service.process, service.settings.stack_stop_timeout_s)
        reason = stale
    if reason is None:
        if stale is not None:
            log.warning("service.stale", service=service.name, endpoint=service.endpoint, why=stale,
                        fix="restart it; this stack did not start it, so it leaves it alone")
        log.info("service.reused", service=service.name, endpoint=service.endpoint, pid=running_pid(service.process))
        service.after_start()
        return None
    pid = running_pid(service.process)
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
    reason = probe(service.check)
    if reason is not None:
        raise StackError(f"{service.name} started (pid {pid}) but is not healthy: {reason}\n{log_tails(service.process)}")
    log.info("service.started", service=service.name, pid=pid, endpoint=service.endpoint, seconds=round(time.monotonic() - started_at, 1))


def up(settings: Settings, only: Iterable[str] | None = None) -> None:
    """Make every service (or only the named ones) healthy; healthy ones are reused as they are.

    All processes are spawned first and then waited for, so Kafka's slow start overlaps the others.
    Creates the quantrac topics when Kafka is part of the call.
    """
    started_at = time.monotonic()
    chosen = services(settings, only)
    with stack_lock(settings):
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
            try:
                ensure_topics(settings)
            except TopicsError as exc:
                raise StackError(str(exc)) from exc
    log.info("stack.up", services=[s.name for s in chosen], seconds=round(time.monotonic() - started_at, 1))


def down(settings: Settings, only: Iterable[str] | None = None) -> None:
    """Stop the services this stack started (found by their pid files under run_dir); harmless when none run.

    Services started by someone else and merely reused by `up` are left alone.
    """
    with stack_lock(settings):
        for service in reversed(services(settings, only)):
            if not stop_process(service.process, settings.stack_stop_timeout_s):
                log.info("service.not_running", service=service.name)


@contextlib.contextmanager
def running(settings: Settings, only: Iterable[str] | None = None) -> Iterator[None]:
    """The services (or only the named ones) up for a while (a test session, a bench), and afterwards those this call
    started stopped again; those already healthy (`make run`, `make stack-up`, another session) are left as they were.
    A development stack left running held the ports a later `make test` starts its own services on."""
    chosen = [service.name for service in services(settings, only)]
    already = {name for name, found in status(settings, chosen).items() if found.healthy}
    up(settings, chosen)
    try:
        yield
    finally:
        started = [name for name in chosen if name not in already]
        if started:
            down(settings, started)


def status(settings: Settings, only: Iterable[str] | None = None) -> dict[str, ServiceStatus]:
    """Probe each service at protocol level."""
    result = {}
    for service in services(settings, only):
        reason = probe(service.check)
        pid = running_pid(service.process)
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

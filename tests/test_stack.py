"""Integration tests of the local service stack, against the real services (no mocks).

The shared stack (fixture `stack`) is only started and inspected here, never stopped: the
stop tests run their own Mosquitto or throwaway processes in a separate run_dir and ports.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from cli.stack import stack_app
from quantrac.kafka_topics import ensure_topics, kafka_admin
from quantrac.settings import Settings
from stack import process as stack_process
from stack import services as local_stack
from stack.postgres import native_postgres_settings
from stack.process import ProcessSpec, StackError
from stack.watch import ServiceWatch
from tests.utils.poll import wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line mentions text."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def private_settings(tmp_path: Path) -> Settings:
    """Settings with their own run_dir and ports, so nothing here touches the shared stack."""
    return Settings(
        run_dir=tmp_path / "run",
        mqtt_port=_free_port(),
        kafka_bootstrap=f"127.0.0.1:{_free_port()}",
        kafka_controller_port=_free_port(),
        pg_port=_free_port(),
        stack_start_timeout_s=20,
        stack_stop_timeout_s=10,
    )


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A port that accepts TCP connections but never speaks any protocol."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_status_reports_every_service_healthy(stack: Settings) -> None:
    found = local_stack.status(stack)

    assert set(found) == {"postgres", "mosquitto", "kafka"}
    assert all(item.healthy for item in found.values()), found
    assert found["mosquitto"].endpoint == f"mqtt://{stack.mqtt_host}:{stack.mqtt_port}"
    assert found["kafka"].endpoint == f"kafka://{stack.kafka_bootstrap}"
    assert found["postgres"].endpoint == f"postgresql://{stack.pg_user}@{stack.pg_host}:{stack.pg_port}/{stack.pg_database}"


def test_up_again_reuses_the_running_services(stack: Settings) -> None:
    before = {name: item.pid for name, item in local_stack.status(stack).items()}

    local_stack.up(stack)

    after = local_stack.status(stack)
    assert {name: item.pid for name, item in after.items()} == before
    assert all(item.healthy for item in after.values())


def test_up_creates_the_topics(stack: Settings) -> None:
    admin = kafka_admin(stack)
    try:
        topics = {
            t["topic"]: len(t["partitions"])
            for t in admin.describe_topics([stack.readings_topic, stack.deadletter_topic, stack.alerts_topic])
        }
    finally:
        admin.close()

    assert topics == {name: stack.topic_partitions for name in (stack.readings_topic, stack.deadletter_topic, stack.alerts_topic)}


def test_new_topics_have_a_leader_on_every_partition_when_created(stack: Settings) -> None:
    """A worker starts right after creating its topics; a client that saw them leaderless kept that view 300 s."""
    prefix = f"quantrac.test.leaders-{os.getpid()}-{os.urandom(3).hex()}"
    own = stack.model_copy(update={"readings_topic": f"{prefix}.readings", "deadletter_topic": f"{prefix}.deadletter",
                                   "alerts_topic": f"{prefix}.alerts"})
    names = [own.readings_topic, own.deadletter_topic, own.alerts_topic]
    ensure_topics(own)
    admin = kafka_admin(stack)
    try:
        described = admin.describe_topics(names)
        admin.delete_topics(names)
    finally:
        admin.close()
    assert len(described) == 3
    assert all(len(topic["partitions"]) == stack.topic_partitions for topic in described)
    assert all(p["leader"] >= 0 for topic in described for p in topic["partitions"])


def test_status_command_exits_zero_and_lists_the_endpoints(stack: Settings) -> None:
    result = CliRunner().invoke(stack_app, ["status"])

    assert result.exit_code == 0, result.output
    assert f":{stack.mqtt_port}" in result.output and f":{stack.pg_port}" in result.output


def test_port_taken_by_a_stranger_is_a_clear_error(private_settings: Settings, silent_listener: socket.socket) -> None:
    port = silent_listener.getsockname()[1]
    settings = private_settings.model_copy(update={"mqtt_port": port})

    with pytest.raises(StackError) as caught:
        local_stack.up(settings, only=["mosquitto"])

    message = str(caught.value)
    assert f"port {port}" in message
    assert "QUANTRAC_MQTT_PORT" in message
    assert _processes_mentioning(str(settings.run_dir)) == []


def test_down_leaves_no_process_behind(private_settings: Settings) -> None:
    local_stack.up(private_settings, only=["mosquitto"])
    started = local_stack.status(private_settings, only=["mosquitto"])["mosquitto"]
    assert started.healthy and started.pid is not None

    local_stack.down(private_settings)
    local_stack.down(private_settings)  # harmless the second time

    assert _processes_mentioning(str(private_settings.run_dir)) == []
    assert not local_stack.status(private_settings, only=["mosquitto"])["mosquitto"].healthy


def test_a_process_dying_at_start_reports_its_log(tmp_path: Path) -> None:
    spec = ProcessSpec(
        name="doomed",
        exe="sh",
        marker="doomed-marker",
        pid_file=tmp_path / "doomed.pid",
        output_log=tmp_path / "doomed.log",
        logs=(tmp_path / "doomed.log",),
    )
    pid = stack_process.spawn(spec, ["sh", "-c", "echo 'fatal: no such table'; exit 3", "doomed-marker"])

    with pytest.raises(StackError) as caught:
        stack_process.wait_started(spec, pid, ready=lambda: (_ for _ in ()).throw(ConnectionRefusedError()), endpoint="nowhere", timeout_s=10)

    message = str(caught.value)
    assert "exit code 3" in message and "fatal: no such table" in message and str(spec.output_log) in message


def _process_group(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else []
        except OSError:
            continue
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_stop_kills_a_process_that_ignores_sigterm_and_its_children(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    spec = ProcessSpec(
        name="stubborn",
        exe="sh",
        marker="stubborn-marker",
        pid_file=tmp_path / "stubborn.pid",
        output_log=tmp_path / "stubborn.log",
        logs=(tmp_path / "stubborn.log",),
    )
    pid = stack_process.spawn(spec, ["sh", "-c", "trap '' TERM; sleep 300 & echo child=$!; wait", "stubborn-marker"])
    request.addfinalizer(lambda: os.killpg(pid, signal.SIGKILL) if _process_group(pid) else None)
    # the child's pid in the log (the log's header line holds the script itself)
    wait_for(lambda: re.search(r"child=\d+", spec.output_log.read_text()), timeout=10, interval=0.05, what="the child's pid in the log")
    assert len(_process_group(pid)) == 2  # sh and its sleep

    assert stack_process.stop_process(spec, timeout_s=1)

    assert _process_group(pid) == []
    assert not spec.pid_file.exists()
    assert not stack_process.stop_process(spec, timeout_s=1)  # nothing left to stop


def test_status_names_the_store_of_each_server(stack: Settings, native_server: Settings) -> None:
    """The stack's PostgreSQL preloads TimescaleDB and the tests' database is on it; the native server's is not."""
    assert re.search(r"store: TimescaleDB 2\.28\.3 on PostgreSQL 15\.\d+$", local_stack.status(stack, only=["postgres"])["postgres"].detail)
    native = local_stack.status(native_postgres_settings(stack), only=["postgres"])["postgres"]
    assert native.healthy and re.search(r"store: native PostgreSQL 15\.\d+$", native.detail), native
    result = CliRunner().invoke(stack_app, ["status", "--only", "postgres"])
    assert result.exit_code == 0 and "TimescaleDB 2.28.3" in result.output, result.output


def test_up_restarts_its_postgresql_started_without_the_preload_line(private_settings: Settings) -> None:
    """A server this stack started before TimescaleDB was installed (here: told not to preload it) is
    restarted with the preload line by the next `up`, so its databases can be TimescaleDB stores."""
    plain = private_settings.model_copy(update={"pg_timescaledb": False})
    try:
        local_stack.up(plain, only=["postgres"])
        first = local_stack.status(plain, only=["postgres"])["postgres"]
        assert first.healthy and first.detail.endswith("TimescaleDB installed, not preloaded)"), first
        local_stack.up(private_settings, only=["postgres"])
        again = local_stack.status(private_settings, only=["postgres"])["postgres"]
        assert again.healthy and again.pid != first.pid and again.detail.endswith("TimescaleDB preloaded)"), again
        local_stack.up(private_settings, only=["postgres"])  # now in step: reused as it is
        assert local_stack.status(private_settings, only=["postgres"])["postgres"].pid == again.pid
    finally:
        local_stack.down(private_settings, only=["postgres"])
    assert not local_stack.status(private_settings, only=["postgres"])["postgres"].healthy


def _mosquitto_pid(settings: Settings) -> int | None:
    return stack_process.running_pid(local_stack.services(settings, ["mosquitto"])[0].process)


def test_watch_starts_a_killed_service_again(private_settings: Settings) -> None:
    local_stack.up(private_settings, only=["mosquitto"])
    try:
        watch = ServiceWatch.of_started(private_settings)
        assert list(watch.watched) == ["mosquitto"]  # only what runs and is ours
        first = _mosquitto_pid(private_settings)
        assert first is not None
        assert watch.check() == []

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _mosquitto_pid(private_settings) is None, what="mosquitto gone")
        with capture_logs() as logs:
            assert watch.check() == ["mosquitto"]

        again = local_stack.status(private_settings, only=["mosquitto"])["mosquitto"]
        assert again.healthy and again.pid not in (None, first)
        assert [e["event"] for e in logs if e["event"].startswith("stack.service_")] == ["stack.service_died", "stack.service_restarted"]
    finally:
        local_stack.down(private_settings)


def test_watch_tries_a_failed_restart_again_only_after_a_backoff(private_settings: Settings) -> None:
    local_stack.up(private_settings, only=["mosquitto"])
    try:
        watch = ServiceWatch.of_started(private_settings)
        pid = _mosquitto_pid(private_settings)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _mosquitto_pid(private_settings) is None, what="mosquitto gone")
        with socket.socket() as stranger, capture_logs() as logs:
            stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            stranger.bind(("127.0.0.1", private_settings.mqtt_port))
            stranger.listen()
            began = time.monotonic()
            assert watch.check(now=began) == []  # the port is taken: the restart fails
            assert watch.check(now=began + 0.5) == []  # not due yet: not tried
        failed = [e for e in logs if e["event"] == "stack.restart_failed"]
        assert len(failed) == 1 and f"port {private_settings.mqtt_port}" in failed[0]["error"]
        retry_in_s = failed[0]["retry_in_s"]
        assert retry_in_s > 0.5

        assert watch.check(now=began + retry_in_s) == ["mosquitto"]
        assert local_stack.status(private_settings, only=["mosquitto"])["mosquitto"].healthy
    finally:
        local_stack.down(private_settings)

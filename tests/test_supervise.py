"""`quantrac run` supervises its processes (quantrac/supervise.py): one that dies is restarted, with backoff.

The integration test is the issue's `make run BRIDGES=2 WORKERS=2` check: `quantrac run` with two
bridges and two workers (real processes, on the session's services with their own database, topics
and group), one bridge and one worker killed with SIGKILL under load; they come back by themselves,
every reading is stored exactly once, and Ctrl-C (SIGINT) stops the supervisor and every process.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrac.bridge_sessions import forget
from quantrac.db import connect, save_stations
from quantrac.settings import Settings
from stack.supervise import Backoff, Supervisor
from tests.utils.builders import make_station, payload
from tests.utils.fleet import owned_partitions, scrape
from tests.utils.load import Publisher, stored
from tests.utils.poll import wait_for
from tests.utils.ports import free_port_run
from tests.utils.processes import NAMESPACE, Process, end_mqtt_session, own_pipeline, publish

# --- backoff -------------------------------------------------------------------------------------

@given(st.integers(min_value=1, max_value=200))
def test_backoff_doubles_from_the_first_wait_up_to_the_cap(n: int) -> None:
    backoff = Backoff(first_s=1.0, max_s=30.0)
    assert backoff.delay(1) == 1.0
    assert backoff.first_s <= backoff.delay(n) <= backoff.max_s
    assert backoff.delay(n + 1) == min(30.0, 2 * backoff.delay(n))


@given(st.integers(min_value=0, max_value=50), st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_backoff_starts_a_new_row_after_a_stable_run(previous: int, ran_s: float) -> None:
    backoff = Backoff(stable_s=60.0)
    assert backoff.in_a_row(previous, ran_s) == (1 if ran_s >= 60.0 else previous + 1)


def test_supervisor_restarts_a_killed_process_and_stops_all(tmp_path: Path) -> None:
    """The loop itself on plain processes: a SIGKILLed one comes back, the others are untouched, stop ends all."""
    supervisor = Supervisor(cwd=str(tmp_path), backoff=Backoff(first_s=0.1), stop_timeout_s=5)
    sleeper = f"{sys.executable} -c 'import time; time.sleep(120)'"
    for name in ("a", "b"):
        supervisor.add(name, sleeper, dict(os.environ))
    stop = threading.Event()
    loop = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    loop.start()
    try:
        def pids() -> dict[str, int]:
            return {n: c.proc.pid for n, c in supervisor.children.items() if c.proc is not None}
        first = wait_for(lambda: len(pids()) == 2 and pids(), timeout=10, what="both processes started")
        os.kill(first["a"], signal.SIGKILL)
        wait_for(lambda: supervisor.children["a"].restarts == 1 and supervisor.children["a"].proc is not None,
                 timeout=10, what="a restarted")
        children = supervisor.children
        assert children["a"].proc is not None and children["a"].proc.pid != first["a"]
        assert children["b"].proc is not None and children["b"].proc.pid == first["b"] and children["b"].restarts == 0
    finally:
        stop.set()
        loop.join(timeout=15)
    assert not loop.is_alive()
    assert all(c.proc is not None and c.proc.poll() is not None for c in supervisor.children.values())


# --- `quantrac run` with the real processes -------------------------------------------------------

BRIDGE_PORT, WORKER_PORT = free_port_run(2), free_port_run(2)   # replicas serve on base + index - 1
READINGS, RATE, KILL_AFTER = 3_000, 100.0, 300


def started_pids(log_path: Path) -> dict[str, int]:
    """The latest pid the supervisor logged for each process."""
    pids: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if "supervisor.started" in line or "supervisor.restarted" in line:
            name, pid = re.search(r"\bchild=(\w+)", line), re.search(r"\bpid=(\d+)", line)
            if name and pid:
                pids[name.group(1)] = int(pid.group(1))
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.integration
def test_run_restarts_a_killed_bridge_and_worker_and_stores_every_reading_once(stack: Settings, tmp_path: Path) -> None:
    own, env = own_pipeline(stack, "supervise")
    run_id = uuid.uuid4().hex[:6]
    client_id = f"quantrac-{NAMESPACE}-sup-{run_id}"
    env |= {"QUANTRAC_BRIDGE_METRICS_PORT": str(BRIDGE_PORT), "QUANTRAC_WORKER_METRICS_PORT": str(WORKER_PORT),
            "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": client_id, "QUANTRAC_MQTT_SHARED_GROUP": f"quantrac-{NAMESPACE}-sup-{run_id}",
            "QUANTRAC_MQTT_SESSION_EXPIRY_S": "300"}
    procfile = tmp_path / "Procfile"
    procfile.write_text("bridge: quantrac bridge\nworker: quantrac worker\n")
    run = Process("supervise-run", ["run", "--no-stack", "--bridges", "2", "--workers", "2", "--procfile", str(procfile)],
                  stack.run_dir / "test-logs" / NAMESPACE, env)
    bridge_ports, worker_ports = (BRIDGE_PORT, BRIDGE_PORT + 1), (WORKER_PORT, WORKER_PORT + 1)

    def ready() -> bool:
        assert run.alive(), f"quantrac run exited with {run.proc.returncode}:\n{run.tail()}"
        bridges = all(scrape(p).get(("quantrac_bridge_mqtt_connected", frozenset())) == 1 for p in bridge_ports)
        owned = [owned_partitions(p, own.readings_topic) for p in worker_ports]
        return bridges and all(owned) and len(owned[0] | owned[1]) == stack.topic_partitions

    try:
        wait_for(ready, timeout=150, interval=0.5, what="2 bridges connected and 2 workers sharing the partitions")
        probe, station = make_station(), make_station()
        with connect(own.pg_dsn) as conn:
            save_stations(conn, {probe.id: probe, station.id: station})

            def probe_stored() -> bool:
                publish(stack, probe.id, payload(COD=10.0))
                return stored(conn, probe.id)[0] > 0
            wait_for(probe_stored, timeout=60, interval=1.0, what="a probe reading stored")

        gateway = Publisher(stack, station.id, count=READINGS, rate=RATE)
        sender = threading.Thread(target=gateway.run, name="supervise-gateway", daemon=True)
        sender.start()
        wait_for(lambda: gateway.acked >= KILL_AFTER, timeout=60, what=f"{KILL_AFTER} messages published")
        before = started_pids(run.log_path)
        os.kill(before["bridge1"], signal.SIGKILL)
        os.kill(before["worker1"], signal.SIGKILL)
        assert not gateway.done.is_set(), "the load ended before the kills"

        def back() -> bool:
            now = started_pids(run.log_path)
            return all(now[n] != before[n] and not gone(now[n]) for n in ("bridge1", "worker1"))
        wait_for(back, timeout=30, interval=0.5, what="the killed bridge and worker restarted by the supervisor")
        after = started_pids(run.log_path)
        assert all(after[n] == before[n] for n in ("bridge2", "worker2")), "the others were left running"

        sender.join(timeout=60)
        assert gateway.done.is_set() and not sender.is_alive(), "the gateway could not publish everything"
        with psycopg.connect(own.pg_dsn, autocommit=True) as conn:
            wait_for(lambda: stored(conn, station.id)[0] >= READINGS, timeout=120, interval=0.5,
                     what=f"all {READINGS} readings stored")
            assert stored(conn, station.id) == gateway.expected(), "count, sum of values and key digest"

        run.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert run.proc.wait(60) == 0, run.tail()
        wait_for(lambda: all(gone(pid) for pid in after.values()), timeout=10, what="every supervised process stopped")
        log = run.log_path.read_text(errors="replace")
        assert re.search(r"supervisor\.exited.*exit_code=-9", log), "the kill was logged"
        print(f"\nsupervisor: bridge1 and worker1 restarted after SIGKILL; {READINGS} of {READINGS} readings stored once")
    finally:
        run.stop(timeout=60)
        with connect(own.pg_dsn) as conn:
            for i in (1, 2):
                end_mqtt_session(stack, f"{client_id}-{i}")
                forget(conn, f"{client_id}-{i}")


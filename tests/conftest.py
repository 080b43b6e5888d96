"""Session fixtures: the real local services, started once per test session (or reused when healthy).

Unit tests never touch these fixtures, so `pytest tests/test_payload.py` runs without services.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator

import psycopg
import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

from tests.utils.processes import NAMESPACE as _ns

# Tests share the services with `make run` but not its data: their own database, topics,
# consumer group and MQTT session, named after QUANTRAC_TEST_NAMESPACE (default "test") so
# that several test sessions can run side by side. Their processes reload the registry quickly.
os.environ.setdefault("QUANTRAC_PG_DATABASE", f"quantrac_{_ns}")
os.environ.setdefault("QUANTRAC_READINGS_TOPIC", f"quantrac.{_ns}.readings")
os.environ.setdefault("QUANTRAC_DEADLETTER_TOPIC", f"quantrac.{_ns}.readings.deadletter")
os.environ.setdefault("QUANTRAC_ALERTS_TOPIC", f"quantrac.{_ns}.alerts")
os.environ.setdefault("QUANTRAC_MQTT_BRIDGE_CLIENT_ID", f"quantrac-bridge-{_ns}")
os.environ.setdefault("QUANTRAC_WORKER_ID", f"quantrac-worker-{_ns}")
os.environ.setdefault("QUANTRAC_WORKER_BATCH_LATENCY_S", "0.2")
os.environ.setdefault("QUANTRAC_REGISTRY_REFRESH_S", "2")
os.environ.setdefault("QUANTRAC_REGISTRY_MISS_RELOAD_S", "0")
# The broker allows no anonymous access: tests publish for stations of their own making with the
# test account (any station's readings topic), which `stack up` creates only when asked.
os.environ.setdefault("QUANTRAC_MQTT_TEST_ACCOUNT", "true")

from quantrac.db import STORE_POSTGRESQL, STORE_TIMESCALEDB, connect, describe_store, migrate, save_stations  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import Settings, get_settings  # noqa: E402
from stack import services as local_stack  # noqa: E402
from stack.postgres import native_postgres_settings  # noqa: E402
from tests.utils.builders import make_station, payload  # noqa: E402
from tests.utils.poll import wait_for  # noqa: E402
from tests.utils.processes import Process, end_mqtt_session, publish, stored_count  # noqa: E402

SERVICE_FIXTURES = frozenset({"stack", "native_server", "store", "store_db", "native_db", "timescale_db",
                              "store_kinds_checked", "store_api", "api", "api_as", "db", "pipeline", "store_pipeline"})
"""Fixtures that start or reach the real services: a test using one, even through another fixture, is `integration`."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tiers honest: `-m "not integration"` (make test-unit) must never start a service."""
    unmarked = [item.nodeid for item in items if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError("these tests use the services but are not marked integration "
                                f"(@pytest.mark.integration or pytestmark): {unmarked}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test that ran on the session's bridge and worker shows the end of their logs beside its
    error: a CI run keeps only the test output, and a pipeline failure is read in those logs."""
    outcome = yield
    report = outcome.get_result()
    procs = getattr(item, "funcargs", {}).get("pipeline") or getattr(item, "funcargs", {}).get("store_pipeline")
    if report.failed and report.when == "call" and isinstance(procs, dict):
        for name, proc in procs.items():
            report.sections.append((f"{name} log (last 40 lines, {proc.log_path})", proc.tail(40)))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """Mosquitto, Kafka and PostgreSQL up, schema migrated and the registry seeded.

    Services that were already healthy are reused and left running; those this session
    started are stopped at its end.
    """
    with local_stack.running(settings):  # `up` generates the MQTT accounts (with the test account) or syncs them
        if settings.mqtt_username is None:  # built before `up` generated the bridge account: take it now
            fresh = Settings()
            settings.mqtt_username, settings.mqtt_password = fresh.mqtt_username, fresh.mqtt_password
        _recreate_database(settings)
        with connect(settings.pg_dsn) as conn:
            migrate(conn)
            save_stations(conn, load_registry(settings.registry_file, settings.limits_dir))
        yield settings


def _recreate_database(settings: Settings) -> None:
    """Start the session on an empty copy of the tests' own database (`quantrac_<namespace>`, never `make run`'s).

    A database kept from earlier sessions holds their stations, liveness entries, readings and dead letters: the
    worker and bridge load and judge all of them, and the suite took twice as long on a checkout that had run
    it many times (the hostile-input test 35 s against 7). Created on the server's default store: TimescaleDB
    where it is preloaded, so a database made before TimescaleDB was installed does not stay native."""
    from psycopg import sql

    admin = settings.pg_dsn.replace(f"dbname={settings.pg_database}", "dbname=postgres")
    with connect(admin) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(settings.pg_database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.pg_database)))


STORE_KINDS = (STORE_TIMESCALEDB, STORE_POSTGRESQL)


@pytest.fixture(scope="session")
def native_server(stack: Settings) -> Iterator[Settings]:
    """A second real PostgreSQL that never preloads TimescaleDB (its own port, `native_pg_port`, and data
    under run_dir/native), with the session's database migrated and seeded: the native store path.

    The extension is installed on this machine but not preloaded there, so `migrate` meets the very
    trap of issue 17 (listed, yet CREATE EXTENSION fails) and must fall back to native PostgreSQL.
    """
    server = native_postgres_settings(stack)
    with local_stack.running(server, only=["postgres"]):
        _recreate_database(server)
        with connect(server.pg_dsn) as conn:
            migrate(conn)
            assert describe_store(conn).kind == STORE_POSTGRESQL
            save_stations(conn, load_registry(server.registry_file, server.limits_dir))
        # The server's own run folder is for its data and pid only: clients keep the session's (MQTT accounts, logs).
        yield server.model_copy(update={"run_dir": stack.run_dir})


@pytest.fixture(scope="session", params=STORE_KINDS)
def store(request: pytest.FixtureRequest, stack: Settings) -> Settings:
    """The session's database on one store path, both on real servers started by the session:
    TimescaleDB (the stack's PostgreSQL, which preloads the extension) and native PostgreSQL
    (`native_server`). Store tests take this instead of `stack` to run on both."""
    if request.param == STORE_POSTGRESQL:
        return request.getfixturevalue("native_server")  # type: ignore[no-any-return]
    _assert_timescaledb(stack)
    return stack


@pytest.fixture()
def store_db(store: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the session's database on the store path under test."""
    with connect(store.pg_dsn) as conn:
        yield conn


@pytest.fixture()
def native_db(native_server: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the session's database on the native PostgreSQL server (native-only store tests)."""
    with connect(native_server.pg_dsn) as conn:
        yield conn


@pytest.fixture()
def timescale_db(store_kinds_checked: None, stack: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the session's database on the TimescaleDB server (TimescaleDB-only store tests)."""
    with connect(stack.pg_dsn) as conn:
        yield conn


@pytest.fixture(scope="session")
def store_kinds_checked(stack: Settings) -> None:
    _assert_timescaledb(stack)


def _assert_timescaledb(stack: Settings) -> None:
    with connect(stack.pg_dsn) as conn:
        info = describe_store(conn)
    assert info.kind == STORE_TIMESCALEDB, (
        f"the tests' database on {stack.pg_host}:{stack.pg_port} is {info.summary}, not TimescaleDB: run `make timescaledb` "
        "(builds and installs the extension), and restart that PostgreSQL if this stack did not start it")


@pytest.fixture(scope="session")
def store_api(store: Settings) -> Iterator["TestClient"]:
    """The API in-process over the store path under test, with an admin key (like `api`)."""
    from fastapi.testclient import TestClient

    from api.auth import create_key
    from api.main import create_app
    with connect(store.pg_dsn) as conn:
        key, _ = create_key(conn, "test-admin", "admin", "tests")
    with TestClient(create_app(store), headers={"X-API-Key": key}) as client:
        yield client


@pytest.fixture(scope="session")
def api(stack: Settings) -> Iterator["TestClient"]:
    """The API in-process over the session's database, with a credential allowed to do everything.

    Every API test goes through this client (or `api_as(role)` once roles exist), so that adding
    authentication changes one fixture, not every test.
    """
    from fastapi.testclient import TestClient

    from api.auth import create_key
    from api.main import create_app
    with connect(stack.pg_dsn) as conn:
        key, _ = create_key(conn, "test-admin", "admin", "tests")
    with TestClient(create_app(stack), headers={"X-API-Key": key}) as client:
        yield client


@pytest.fixture()
def db(stack: Settings) -> Iterator[psycopg.Connection]:
    with connect(stack.pg_dsn) as conn:
        yield conn


@pytest.fixture(scope="session")
def pipeline(stack: Settings) -> Iterator[dict[str, Process]]:
    """The bridge and the worker as subprocesses, ready once a probe reading has reached PostgreSQL."""
    yield from _run_pipeline(stack, {}, stack.run_dir / "test-logs" / _ns)


@pytest.fixture(scope="session")
def store_pipeline(store: Settings, stack: Settings, request: pytest.FixtureRequest) -> Iterator[dict[str, Process]]:
    """A bridge and a worker writing to the store path under test: the session `pipeline` on TimescaleDB;
    on native PostgreSQL its own pair (own topics, consumer group and MQTT session) on the native server."""
    if store.pg_port == stack.pg_port:
        yield request.getfixturevalue("pipeline")
        return
    from quantrac.kafka_topics import ensure_topics

    tag = "native"
    own = store.model_copy(update={
        "readings_topic": f"quantrac.{_ns}.{tag}.readings", "deadletter_topic": f"quantrac.{_ns}.{tag}.readings.deadletter",
        "alerts_topic": f"quantrac.{_ns}.{tag}.alerts", "worker_id": f"quantrac-worker-{_ns}-{tag}",
        "mqtt_bridge_client_id": f"quantrac-bridge-{_ns}-{tag}"})
    ensure_topics(own)
    env = {"QUANTRAC_PG_PORT": str(own.pg_port), "QUANTRAC_READINGS_TOPIC": own.readings_topic,
           "QUANTRAC_DEADLETTER_TOPIC": own.deadletter_topic, "QUANTRAC_ALERTS_TOPIC": own.alerts_topic,
           "QUANTRAC_WORKER_ID": own.worker_id, "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": own.mqtt_bridge_client_id}
    yield from _run_pipeline(own, env, stack.run_dir / "test-logs" / _ns / tag)


def _run_pipeline(settings: Settings, env: dict[str, str], log_dir: Path) -> Iterator[dict[str, Process]]:
    """Start the bridge and the worker for `settings` (their environment: `env` over the session's), wait
    until a probe reading has travelled MQTT → Kafka → PostgreSQL, yield them, stop them."""
    # A session left by an earlier run may hold a backlog (other sessions' traffic on a shared broker).
    end_mqtt_session(settings, settings.mqtt_bridge_client_id)
    procs = {"bridge": Process("bridge", ["bridge"], log_dir, env), "worker": Process("worker", ["worker"], log_dir, env)}
    probe = make_station()
    with connect(settings.pg_dsn) as conn:
        save_stations(conn, {probe.id: probe})

        def probe_stored() -> bool:
            for p in procs.values():
                assert p.alive(), f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}"
            publish(settings, probe.id, payload(COD=10.0))
            return stored_count(conn, probe.id) > 0

        try:
            wait_for(probe_stored, timeout=90, interval=1.0, what="a probe reading to travel MQTT → Kafka → PostgreSQL")
        except BaseException as exc:
            tails = f"\n--- bridge ---\n{procs['bridge'].tail()}\n--- worker ---\n{procs['worker'].tail()}"
            for p in procs.values():
                p.stop()
            raise AssertionError(f"{exc}{tails}") from None
    try:
        yield procs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture(scope="session")
def api_as(api: "TestClient", stack: Settings) -> "Callable[[str | None], TestClient]":
    """A client of the same app acting with a fresh key of the given role (None: no credential at all)."""
    from fastapi.testclient import TestClient

    from api.auth import create_key
    clients: dict[str | None, TestClient] = {}

    def client_for(role: str | None) -> TestClient:
        if role not in clients:
            headers = {}
            if role is not None:
                with connect(stack.pg_dsn) as conn:
                    key, _ = create_key(conn, f"test-{role}", role, "tests")
                headers = {"X-API-Key": key}
            clients[role] = TestClient(api.app, headers=headers)
        return clients[role]
    return client_for


@pytest.fixture
def plain_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each station batch's plain pass (`processors.plain_pass`) found it plain."""
    import processors.detection as detection

    outcomes: list[bool] = []
    real = detection.plain_batches

    def counted(jobs):  # type: ignore[no-untyped-def]
        batches = real(jobs)
        outcomes.extend(batch is not None for batch in batches)
        return batches

    monkeypatch.setattr(detection, "plain_batches", counted)
    return outcomes

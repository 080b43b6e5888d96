"""Prometheus endpoints of real running processes: the bridge and the worker as subprocesses with
their metrics ports set, the API through the shared `api` fixture. Each scrape must show the key
series with values that follow from what the test sent."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from quantrac import metrics
from quantrac.db import save_stations
from quantrac.domain import Station
from quantrac.settings import Settings
from tests.utils.builders import make_station, payload
from tests.utils.poll import wait_for
from tests.utils.ports import free_ports
from tests.utils.processes import NAMESPACE, Process, end_mqtt_session, own_pipeline, publish, stored_count

BRIDGE_PORT, WORKER_PORT = free_ports(2)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(port: int, path: str = "/metrics") -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    assert response.status_code == 200, response.text
    return parse(response.text)


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- pure helper -------------------------------------------------------------------------------

@given(highwater=st.integers(0, 10**9), committed=st.one_of(st.none(), st.integers(-1, 10**9)))
def test_consumer_lag_is_never_negative_and_counts_uncommitted_records(highwater: int, committed: int | None) -> None:
    lag = metrics.consumer_lag(highwater, committed)
    assert lag is not None and lag >= 0
    if committed is None:
        assert lag == highwater
    elif 0 <= committed <= highwater:
        assert lag == highwater - committed


def test_consumer_lag_is_unknown_without_a_highwater() -> None:
    assert metrics.consumer_lag(None, 5) is None
    assert metrics.consumer_lag(-1, 5) is None


def test_metrics_off_by_default_and_a_taken_port_is_reported_not_fatal() -> None:
    assert metrics.serve(0, "bridge") is False
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert metrics.serve(taken.getsockname()[1], "bridge", "127.0.0.1") is False


# --- real processes ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def processes(stack: Settings) -> Iterator[dict[str, Process]]:
    """A bridge and a worker with metrics on; the bridge's MQTT session is ended after the module."""
    log_dir = stack.run_dir / "test-logs" / NAMESPACE
    own, env = own_pipeline(stack, "metrics")
    client_id = own.mqtt_bridge_client_id
    env = {**env, "QUANTRAC_MQTT_SESSION_EXPIRY_S": "60"}
    procs = {"bridge": Process("metrics-bridge", ["bridge"], log_dir, {**env, "QUANTRAC_BRIDGE_METRICS_PORT": str(BRIDGE_PORT)}),
             "worker": Process("metrics-worker", ["worker"], log_dir, {**env, "QUANTRAC_WORKER_METRICS_PORT": str(WORKER_PORT)})}
    try:
        yield procs
    finally:
        for p in procs.values():
            p.stop()
        end_mqtt_session(stack, client_id)


@pytest.fixture(scope="module")
def traffic(processes: dict[str, Process], stack: Settings) -> Station:
    """Five good messages (one with an exceedance) and one that is not JSON, all through the pipeline."""
    station = make_station(cod_limit=100.0)
    with psycopg.connect(own_pipeline(stack, "metrics")[0].pg_dsn, autocommit=True) as conn:
        save_stations(conn, {station.id: station})

        def probe() -> bool:
            for p in processes.values():
                assert p.alive(), f"{p.name} exited:\n{p.tail()}"
            publish(stack, station.id, payload(COD=10.0))
            return stored_count(conn, station.id) > 0

        wait_for(probe, timeout=90, interval=1.0, what="the first reading to reach PostgreSQL")
        wait_for(lambda: all(answers(port) for port in (BRIDGE_PORT, WORKER_PORT)), timeout=60, interval=0.5,
                 what="the bridge's and worker's metrics endpoints to answer")
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
        for i in range(4):
            publish(stack, station.id, payload(start + timedelta(minutes=i), COD=250.0 if i == 3 else 20.0, pH=7.0))
        publish(stack, station.id, b"{not json")
        wait_for(lambda: stored_count(conn, station.id) >= 9, timeout=60, what="the test readings to be stored")
    return station


@pytest.mark.integration
def test_bridge_endpoint_counts_messages_deadletters_and_connection(traffic: Station) -> None:
    def deadletter_counted() -> Samples | None:
        s = scrape(BRIDGE_PORT)
        return s if value(s, "quantrac_deadletters_total", reason="bad_json") >= 1 else None

    samples = wait_for(deadletter_counted, timeout=20, what="the bad_json dead letter in the bridge's metrics")
    assert value(samples, "quantrac_bridge_messages_received_total") >= 6
    assert value(samples, "quantrac_bridge_readings_forwarded_total") >= 9
    assert value(samples, "quantrac_bridge_messages_acked_total") >= 6
    assert value(samples, "quantrac_bridge_mqtt_connected") == 1
    assert ("quantrac_bridge_outbox_records", ()) in samples
    assert scrape(BRIDGE_PORT, "/healthz"), "the Kubernetes probes call /healthz on the metrics port"


@pytest.mark.integration
def test_worker_endpoint_shows_readings_batches_latency_alerts_and_lag(traffic: Station, stack: Settings) -> None:
    topic = own_pipeline(stack, "metrics")[0].readings_topic
    def lag_reported() -> Samples | None:
        s = scrape(WORKER_PORT)
        return s if any(name == "quantrac_worker_consumer_lag" and dict(labels).get("topic") == topic
                        for name, labels in s) else None

    samples = wait_for(lag_reported, timeout=30, what="the worker's consumer lag series")
    assert value(samples, "quantrac_worker_readings_stored_total") >= 9
    assert value(samples, "quantrac_worker_readings_in_total") >= value(samples, "quantrac_worker_readings_stored_total")
    # The bridge joins a station's messages that wait together into one Kafka record (`ingest.bridge.join_records`),
    # so the five messages may come as fewer records; their nine readings are counted above.
    assert value(samples, "quantrac_worker_records_in_total") >= 1
    assert value(samples, "quantrac_worker_batch_records_count") >= 1
    assert value(samples, "quantrac_worker_batch_records_sum") >= 1
    assert value(samples, "quantrac_worker_write_seconds_count") >= 1
    assert value(samples, "quantrac_alert_transitions_total", transition="opened") >= 1
    lags = [v for (name, labels), v in samples.items() if name == "quantrac_worker_consumer_lag"]
    assert all(v >= 0 for v in lags)


@pytest.fixture(scope="module")
def own_api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The API over the database this module's pipeline writes to, scraped as Prometheus does: a bearer
    token read from the file that `QUANTRAC_API_METRICS_KEY_FILE` names (deploy/prometheus/prometheus.yml)."""
    from api.main import create_app

    own = own_pipeline(stack, "metrics")[0]
    key_file = tmp_path_factory.mktemp("metrics-key") / "api_metrics_key"
    key_file.write_text("test-prometheus-scrape-key\n")
    with TestClient(create_app(own.model_copy(update={"api_metrics_key_file": key_file})),
                    headers={"Authorization": "Bearer test-prometheus-scrape-key"}) as client:
        yield client


@pytest.mark.integration
def test_api_endpoint_shows_alerts_by_status_and_defines_notification_failures(traffic: Station, own_api: TestClient) -> None:
    api = own_api
    def open_alert_counted() -> Samples | None:
        response = api.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        s = parse(response.text)
        return s if value(s, "quantrac_alerts", status="open") >= 1 else None

    samples = wait_for(open_alert_counted, timeout=30, what="the open alert in the API's metrics")
    assert {"acknowledged", "resolved"} <= {dict(labels)["status"] for name, labels in samples if name == "quantrac_alerts"}
    families = {f.name for f in text_string_to_metric_families(api.get("/metrics").text)}
    assert "quantrac_notification_failures" in families
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert api.get("/api/v1/alerts").status_code == 403, "the scrape key reads metrics only"


def test_prometheus_scrapes_the_api_with_the_key_file_the_api_reads() -> None:
    """compose: the quantrac-api job's bearer credentials_file is the secret the API reads its metrics key
    from; Kubernetes: the same in the scrape ConfigMap, the API pod mounting the Secret."""
    import yaml

    deploy = Path(__file__).resolve().parent.parent / "deploy"
    compose = yaml.safe_load((deploy / "compose" / "compose.yaml").read_text())
    job = next(j for j in yaml.safe_load((deploy / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
               if j["job_name"] == "quantrac-api")
    assert job["authorization"]["type"] == "Bearer"
    secret = Path(job["authorization"]["credentials_file"]).name
    assert f"/run/secrets/{secret}" == job["authorization"]["credentials_file"]
    assert secret in compose["services"]["prometheus"]["secrets"] and secret in compose["services"]["api"]["secrets"]
    assert compose["services"]["api"]["environment"]["QUANTRAC_API_METRICS_KEY_FILE"] == f"/run/secrets/{secret}"
    assert compose["secrets"][secret]["file"] == f"./secrets/{secret}"
    assert f"secrets/{secret}" in (deploy / "compose" / "make-secrets.sh").read_text()

    scrape = yaml.safe_load((deploy / "k8s" / "30-prometheus-scrape.yaml").read_text())
    [k8s_job] = yaml.safe_load(scrape["data"]["quantrac-api.yml"])["scrape_configs"]
    assert k8s_job["authorization"]["type"] == "Bearer"
    deployment = next(d for d in yaml.safe_load_all((deploy / "k8s" / "23-api.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    assert "prometheus.io/scrape" not in (pod["metadata"].get("annotations") or {}), "annotation scraping sends no key"
    [container] = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if env["QUANTRAC_API_METRICS_KEY_FILE"].startswith(m["mountPath"]))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    secret_name = volume["secret"]["secretName"]
    assert k8s_job["authorization"]["credentials_file"] == f"/etc/prometheus/secrets/{secret_name}/key"
    assert env["QUANTRAC_API_METRICS_KEY_FILE"] == f"{mount['mountPath']}/key"

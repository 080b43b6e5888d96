"""`/healthz`: the state of each dependency, checked at protocol level with short timeouts."""

from __future__ import annotations

import socket
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from api.deps import ConnDep, SettingsDep
from quantrac.db import describe_store

router = APIRouter(tags=["health"])


class DependencyState(BaseModel):
    """Whether one dependency answered its probe, where it was probed, and the error when it did not."""
    ok: bool
    endpoint: str
    detail: str = ""


class StoreState(BaseModel):
    """The store the API reads: `timescaledb` (with the extension's version) or `postgresql`."""

    kind: str
    timescaledb_version: str | None = None
    postgresql_version: str
    summary: str


class Health(BaseModel):
    """`ok` when PostgreSQL, Kafka and MQTT all answer, else `degraded` (with HTTP 503)."""
    status: Literal["ok", "degraded"]
    dependencies: dict[str, DependencyState]
    store: StoreState | None = None


def _tcp_probe(host: str, port: int, hello: bytes, timeout: float = 1.0) -> tuple[bool, str]:
    """Send a protocol greeting and wait for any answer (MQTT CONNACK, Kafka ApiVersions response)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(hello)
            return (len(sock.recv(4)) > 0, "")
    except OSError as exc:
        return False, str(exc)


# MQTT 3.1.1 CONNECT, clean session, client id "quantrac-healthz", keep-alive 5 s. Anonymous on purpose:
# the broker refuses it (CONNACK 5) without anonymous access, and any CONNACK proves it up.
_MQTT_CONNECT = bytes([0x10, 28, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 5, 0, 16]) + b"quantrac-healthz"
# Kafka ApiVersions v0 request, correlation id 1, client id "healthz".
_KAFKA_API_VERSIONS = bytes([0, 0, 0, 17, 0, 18, 0, 0, 0, 0, 0, 1, 0, 7]) + b"healthz"


@router.get("/healthz", response_model=Health, summary="Liveness and the state of each dependency")
def healthz(conn: ConnDep, settings: SettingsDep, response: Response) -> Health:
    """Probes PostgreSQL with a query, Kafka with an ApiVersions request and MQTT with a CONNECT
    (a refused login still proves the broker up); answers 503 when any of them is down."""
    deps: dict[str, DependencyState] = {}
    store = None
    try:
        info = describe_store(conn)
        store = StoreState(kind=info.kind, timescaledb_version=info.timescaledb_version,
                           postgresql_version=info.server_version, summary=info.summary)
        deps["postgresql"] = DependencyState(ok=True, endpoint=f"{settings.pg_host}:{settings.pg_port}", detail=info.summary)
    except Exception as exc:
        deps["postgresql"] = DependencyState(ok=False, endpoint=f"{settings.pg_host}:{settings.pg_port}", detail=str(exc))
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    ok, detail = _tcp_probe(host, int(port), _KAFKA_API_VERSIONS)
    deps["kafka"] = DependencyState(ok=ok, endpoint=f"{host}:{port}", detail=detail)
    ok, detail = _tcp_probe(settings.mqtt_host, settings.mqtt_port, _MQTT_CONNECT)
    deps["mqtt"] = DependencyState(ok=ok, endpoint=f"{settings.mqtt_host}:{settings.mqtt_port}", detail=detail)
    healthy = all(d.ok for d in deps.values())
    if not healthy:
        response.status_code = 503
    return Health(status="ok" if healthy else "degraded", dependencies=deps, store=store)

"""`quantrac run`: the whole pipeline on the local stack, supervised (what `make run` starts)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.common import setup, stop_on_signals
from cli.db import db_migrate
from quantrac.settings import Settings, get_settings


def scale_out(processes: dict[str, str], bridges: int, workers: int, s: Settings) -> dict[str, tuple[str, dict[str, str]]]:
    """Procfile entries with `bridge` and `worker` repeated: several bridges share one MQTT
    subscription (`$share/<group>/...`) under distinct client ids, several workers join one Kafka
    consumer group; each replica gets its own metrics port (base + index) when metrics are on."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for name, command in processes.items():
        count = {"bridge": bridges, "worker": workers}.get(name, 1)
        if count == 1:
            out[name] = (command, {})
            continue
        for i in range(1, count + 1):
            env: dict[str, str] = {}
            if name == "bridge":
                env["QUANTRAC_MQTT_BRIDGE_CLIENT_ID"] = f"{s.mqtt_bridge_client_id}-{i}"
                env["QUANTRAC_MQTT_SHARED_GROUP"] = s.mqtt_shared_group or "quantrac-bridges"
            port = getattr(s, f"{name}_metrics_port")
            if port:
                env[f"QUANTRAC_{name.upper()}_METRICS_PORT"] = str(port + i - 1)
            out[f"{name}{i}"] = (command, env)
    return out


LOCAL_PROCFILE = Path(__file__).resolve().parent.parent / "deploy" / "local" / "Procfile"
"""The processes `make run` supervises."""


def run_all(
    rate: Annotated[float, typer.Option(help="Simulator readings per second.")] = 20.0,
    bridges: Annotated[int, typer.Option(min=1, help="Bridge processes; more than one share an MQTT subscription.")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="Faust worker processes in one consumer group (at most the topic's partitions).")] = 1,
    procfile: Annotated[Path, typer.Option(help="Processes to run.")] = LOCAL_PROCFILE,
    services: Annotated[bool, typer.Option("--stack/--no-stack", help="Start Mosquitto, Kafka and PostgreSQL first and stop them at the end; --no-stack uses services already running.")] = True,
) -> None:
    """Start the services, then the bridge, worker, API and simulator; a process that dies is restarted; Ctrl-C stops everything."""
    setup("run")
    import os
    import threading

    from honcho.environ import parse_procfile

    from quantrac.settings import REPO_ROOT
    from stack import services as local_stack
    from stack.supervise import Supervisor
    from stack.watch import ServiceWatch
    s = get_settings()
    if workers > s.topic_partitions:
        raise typer.BadParameter(f"--workers {workers}: at most QUANTRAC_TOPIC_PARTITIONS={s.topic_partitions} workers get partitions")
    if services:
        local_stack.up(s)
    watch = ServiceWatch.of_started(s) if services else None
    db_migrate(seed=True)
    setup("run")  # db_migrate configured the logs as `db`
    from api.auth import ensure_local_credentials
    from quantrac.db import connect
    credentials_file = s.run_dir / "credentials.json"
    with connect(s.pg_dsn) as conn:
        creds = ensure_local_credentials(conn, credentials_file)
    venv_bin = os.path.dirname(sys.executable)
    env = {**os.environ, "QUANTRAC_SIM_RATE": str(rate), "PYTHONUNBUFFERED": "1",
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    supervisor = Supervisor(cwd=str(REPO_ROOT), stop_timeout_s=s.bridge_stop_timeout_s + 10)
    entries = parse_procfile(procfile.read_text()).processes
    for name, (entry, extra) in scale_out(dict(entries), bridges, workers, s).items():
        supervisor.add(name, entry, {**env, **extra})
    typer.echo(f"\n  dashboard:         http://{s.api_host}:{s.api_port}/  (the browser asks: any user name, a key below as the password)\n"
               f"  admin key:         {creds['admin']}\n"
               f"  operator key:      {creds['operator']}\n"
               f"                     (kept in {credentials_file}, mode 600; use as X-API-Key: <key>)\n"
               f"  example:           curl -H 'X-API-Key: {creds['operator']}' http://{s.api_host}:{s.api_port}/api/v1/alerts\n"
               f"  API documentation: http://{s.api_host}:{s.api_port}/docs\n"
               f"  alerts:            http://{s.api_host}:{s.api_port}/api/v1/alerts\n"
               f"  health:            http://{s.api_host}:{s.api_port}/healthz\n"
               f"  MQTT {s.mqtt_host}:{s.mqtt_port}  Kafka {s.kafka_bootstrap}  PostgreSQL {s.pg_host}:{s.pg_port}\n"
               "  A process or service that dies is started again (supervisor.restarted, stack.service_restarted in the\n"
               "  log); Ctrl-C stops everything.\n")
    stop = threading.Event()
    stop_on_signals(stop)
    watching = threading.Thread(target=watch.run, args=(stop, s.stack_watch_s), name="stack-watch", daemon=True) if watch else None
    if watching:
        watching.start()
    try:
        supervisor.run(stop)
    finally:
        stop.set()
        if watching:
            watching.join()  # a restart under way ends before the services are stopped
        if services:
            local_stack.down(s)

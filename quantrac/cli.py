"""The `quantrac` command line: one entry point for every process and operation."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantrac.logs import configure
from quantrac.settings import get_settings

app = typer.Typer(help="quantrac: real-time monitoring of industrial discharge stations.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _stack_app() -> typer.Typer:
    from quantrac.stack_cli import stack_app
    return stack_app


app.add_typer(_stack_app(), name="stack", help="Start, stop and check the local Mosquitto, Kafka and PostgreSQL.")


def _setup(process: str) -> None:
    s = get_settings()
    configure(s.log_level, s.log_format, process)


@db_app.command("migrate")
def db_migrate(seed: Annotated[bool, typer.Option(help="Also load the station registry seed.")] = True) -> None:
    """Apply pending migrations and load the station registry seed."""
    _setup("db")
    from quantrac.db import connect, migrate, save_stations, schema_version, store_kind
    from quantrac.registry import load_registry
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        applied = migrate(conn)
        if seed:
            save_stations(conn, load_registry(s.registry_file, s.limits_dir))
        typer.echo(f"schema version {schema_version(conn)} ({store_kind(conn)}); applied now: {applied or 'none'}")


def _stop_on_signals(stop: object) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.stop() if hasattr(stop, "stop") else stop.set())  # type: ignore[attr-defined]


@app.command("settings")
def show_settings() -> None:
    """Print every setting as a Markdown table (the README's settings table)."""
    from quantrac.settings import settings_table
    typer.echo(settings_table())


@app.command()
def bridge() -> None:
    """Run the MQTT → Kafka bridge until SIGINT/SIGTERM."""
    _setup("bridge")
    from ingest.bridge import Bridge
    from quantrac.db import connect, load_stations
    s = get_settings()

    def stations() -> dict:  # type: ignore[type-arg]
        with connect(s.pg_dsn) as conn:
            return load_stations(conn)

    b = Bridge(s, stations)
    _stop_on_signals(b)
    b.run()


@app.command()
def worker() -> None:
    """Run the Faust worker (readings → PostgreSQL → alerts) until SIGINT/SIGTERM."""
    _setup("worker")
    s = get_settings()
    import processors.readings_agent  # noqa: F401  (registers the agent)
    from processors.app import app as faust_app
    sys.argv = ["quantrac-worker", "worker", "--without-web", "--loglevel", s.log_level.lower()]
    faust_app.main()


@app.command()
def api() -> None:
    """Serve the HTTP API and dashboard."""
    _setup("api")
    import uvicorn
    from api.main import create_app
    s = get_settings()
    uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_config=None)


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="Readings per second across all stations.")] = 20.0,
    duration: Annotated[Optional[float], typer.Option(help="Seconds to run; forever when omitted.")] = None,
    inject: Annotated[Optional[list[str]], typer.Option(help="STATION:PARAMETER[:VALUE] to publish above its limit.")] = None,
    station: Annotated[Optional[list[str]], typer.Option(help="Only these station ids.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for reproducible values.")] = None,
) -> None:
    """Publish plausible readings for the registry's stations over MQTT."""
    _setup("simulator")
    import threading

    from ingest.simulator import Injection, run
    from quantrac.registry import load_registry
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    if station:
        unknown = set(station) - set(stations)
        if unknown:
            raise typer.BadParameter(f"unknown station(s) {sorted(unknown)}; known: {sorted(stations)}")
        stations = {k: v for k, v in stations.items() if k in station}
    injections = []
    for spec in inject or []:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise typer.BadParameter(f"--inject {spec!r}: write STATION:PARAMETER or STATION:PARAMETER:VALUE")
        injections.append(Injection(parts[0], parts[1], float(parts[2]) if len(parts) == 3 else None))
    stop = threading.Event()
    _stop_on_signals(stop)
    password = s.mqtt_password.get_secret_value() if s.mqtt_password else None
    run(stations, host=s.mqtt_host, port=s.mqtt_port, rate=rate, duration=duration, injections=injections,
        username=s.mqtt_username, password=password, seed=seed, stop=stop)


@app.command("run")
def run_all(
    rate: Annotated[float, typer.Option(help="Simulator readings per second.")] = 20.0,
    procfile: Annotated[Path, typer.Option(help="Processes to run.")] = Path(__file__).resolve().parent.parent / "deploy" / "local" / "Procfile",
) -> None:
    """Start the services, then the bridge, worker, API and simulator; Ctrl-C stops everything."""
    _setup("run")
    import os

    from honcho.manager import Manager
    from honcho.environ import parse_procfile

    from quantrac import stack
    s = get_settings()
    stack.up(s)
    db_migrate(seed=True)
    venv_bin = os.path.dirname(sys.executable)
    env = {**os.environ, "QUANTRAC_SIM_RATE": str(rate), "PYTHONUNBUFFERED": "1",
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    manager = Manager()
    for name, entry in parse_procfile(procfile.read_text()).processes.items():
        manager.add_process(name, entry, env=env, cwd=str(procfile.parent.parent.parent))
    typer.echo(f"\n  dashboard and API: http://{s.api_host}:{s.api_port}/docs\n"
               f"  alerts:            http://{s.api_host}:{s.api_port}/api/v1/alerts\n"
               f"  health:            http://{s.api_host}:{s.api_port}/healthz\n"
               f"  MQTT {s.mqtt_host}:{s.mqtt_port}  Kafka {s.kafka_bootstrap}  PostgreSQL {s.pg_host}:{s.pg_port}\n"
               "  Ctrl-C stops everything.\n")
    try:
        manager.loop()
    finally:
        stack.down(s)
    # Stopped by Ctrl-C or SIGTERM is a clean stop; anything else reports the failing process's code.
    code = manager.returncode or 0
    sys.exit(0 if code in (130, 143, -signal.SIGINT, -signal.SIGTERM) else code)


if __name__ == "__main__":
    app()

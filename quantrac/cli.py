"""The `quantrac` command line: one entry point for every process and operation."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantrac.logs import configure
from quantrac.settings import Settings, get_settings

app = typer.Typer(help="quantrac: real-time monitoring of industrial discharge stations.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _stack_app() -> typer.Typer:
    from quantrac.stack_cli import stack_app
    return stack_app


app.add_typer(_stack_app(), name="stack", help="Start, stop and check the local Mosquitto, Kafka and PostgreSQL.")
app.add_typer(__import__("quantrac.presets_cli", fromlist=["presets_app"]).presets_app, name="presets")


def _setup(process: str) -> None:
    s = get_settings()
    configure(s.log_level, s.log_format, process)
    if process in ("bridge", "worker", "api", "notifier"):
        from quantrac.db import migrate_on_start
        migrate_on_start(s)


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


@db_app.command("retention")
def db_retention(
    days: Annotated[Optional[int], typer.Option(min=1, help="Keep this many days; default QUANTRAC_RETENTION_DAYS.")] = None,
) -> None:
    """Drop readings (whole day partitions) and rollups older than the retention; on TimescaleDB install the policies."""
    _setup("db")
    from processors.partitions import apply_retention, ensure_partitions_ahead
    from quantrac.db import connect, store_kind
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        if store_kind(conn) == "postgresql":
            ensure_partitions_ahead(conn, s.partitions_ahead_days)
        result = apply_retention(conn, days if days is not None else s.retention_days)
    typer.echo(f"{result.store}: cutoff {result.cutoff.isoformat()}; dropped partitions: "
               f"{result.dropped_partitions or 'none'}; rollup rows deleted: {result.deleted_rollup_rows}")


def _stop_on_signals(stop: object) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.stop() if hasattr(stop, "stop") else stop.set())  # type: ignore[attr-defined]


@app.command("settings")
def show_settings() -> None:
    """Print every setting as a Markdown table (the table in docs/settings.md)."""
    from quantrac.settings import settings_table
    typer.echo(settings_table())


bridge_app = typer.Typer(help="The MQTT → Kafka bridge, and draining the session of one that is gone.")
app.add_typer(bridge_app, name="bridge")


@bridge_app.callback(invoke_without_command=True)
def bridge(ctx: typer.Context) -> None:
    """Run the MQTT → Kafka bridge until SIGINT/SIGTERM (then it keeps or drains its session: QUANTRAC_BRIDGE_ON_STOP)."""
    if ctx.invoked_subcommand is not None:
        return
    _setup("bridge")
    from ingest.bridge import Bridge
    from quantrac.db import live_registry
    s = get_settings()
    b = Bridge(s, live_registry(s))
    _stop_on_signals(b)
    b.run()


@bridge_app.command("drain")
def bridge_drain(
    client_id: Annotated[str, typer.Argument(help="Client id of the bridge that is gone (in Kubernetes: its pod name).")],
    group: Annotated[Optional[str], typer.Option(help="Shared-subscription group it was in; default: the one its heartbeat recorded, and QUANTRAC_MQTT_SHARED_GROUP.")] = None,
    force: Annotated[bool, typer.Option(help="Drain even if the bridge looks alive or no other bridge of its group is.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds (the session is kept; run the drain again).")] = 1800.0,
) -> None:
    """Forward what a departed bridge's MQTT session holds (validated, dead letters, acknowledged after Kafka), then end it.

    Idempotent, and safe while the other bridges run: it unsubscribes the session from the shared group first, so the broker deals new messages to them.
    """
    _setup("bridge-drain")
    from ingest.drain import DrainFailed, DrainRefused, drain
    from quantrac.db import live_registry
    s = get_settings()
    try:
        report = drain(s, client_id, live_registry(s), group=group, force=force, timeout_s=timeout)
    except DrainRefused as exc:
        typer.echo(f"error: not drained: {exc}", err=True)
        raise typer.Exit(2) from None
    except DrainFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing"
    typer.echo(f"{client_id}: session {'found' if report.session_present else 'already gone'}; "
               f"{report.forwarded} message(s) forwarded ({counts}); session ended")


@app.command()
def worker() -> None:
    """Run the Faust worker (readings → PostgreSQL → alerts) until SIGINT/SIGTERM."""
    _setup("worker")
    s = get_settings()
    import processors.readings_agent  # noqa: F401  (registers the agent)
    import processors.maintenance_agent  # noqa: F401  (partitions ahead, retention, aggregate refresh)
    from processors.app import app as faust_app
    from quantrac.metrics import serve
    from quantrac.stack import ensure_changelog_topics
    ensure_changelog_topics(s, [table.changelog_topic.get_topic_name() for table in faust_app.tables.values()])
    serve(s.worker_metrics_port, "worker", s.metrics_host)
    faust_level = {"WARNING": "warn", "CRITICAL": "crit"}.get(s.log_level.upper(), s.log_level.lower())
    sys.argv = ["quantrac-worker", "worker", "--without-web", "--loglevel", faust_level]
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
def notifier() -> None:
    """Send alert notifications (webhook, MQTT, Kafka, e-mail) and run escalations until SIGINT/SIGTERM."""
    _setup("notifier")
    import threading

    from alerts.notifier import run
    stop = threading.Event()
    _stop_on_signals(stop)
    run(get_settings(), stop)


keys_app = typer.Typer(help="API keys of the HTTP API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="operator, analyst, admin, or metrics (may read only /metrics).")],
    name: Annotated[str, typer.Option(help="Who or what uses the key; recorded as the actor of its changes.")],
) -> None:
    """Create an API key and print it (only this once)."""
    _setup("keys")
    from api.auth import ROLES, create_key
    from quantrac.db import connect
    if role not in ROLES:
        raise typer.BadParameter(f"--role {role!r}: use one of {', '.join(ROLES)}")
    with connect(get_settings().pg_dsn) as conn:
        key, key_id = create_key(conn, name, role, "quantrac keys create")
    typer.echo(f"key {key_id} ({role}, {name}): {key}\nuse it as: curl -H 'X-API-Key: {key}' ...")


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="Readings per wall-clock second across all stations; 0: each station at its registry interval (realistic).")] = 20.0,
    duration: Annotated[Optional[float], typer.Option(help="Wall-clock seconds to run; forever when omitted (speedup 1 only).")] = None,
    inject: Annotated[Optional[list[str]], typer.Option(help="STATION:PARAMETER[:VALUE] to publish above its limit.")] = None,
    station: Annotated[Optional[list[str]], typer.Option(help="Only these station ids.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for reproducible values.")] = None,
    speedup: Annotated[float, typer.Option(help="Event time runs this many times faster than wall time (288: a day in 5 minutes); plays the past.")] = 1.0,
    incidents: Annotated[float, typer.Option(help="Random incidents per station per simulated day (exceedance, spike, drift, spill, calibration, fault, stuck, silent, late, out-of-order).")] = 0.0,
    ground_truth: Annotated[Optional[Path], typer.Option(help="Write the incidents here, one JSON object a line.")] = None,
    tt10_dir: Annotated[Optional[Path], typer.Option(help="Write TT10 files into this folder instead of publishing over MQTT.")] = None,
    processes: Annotated[int, typer.Option(help="Split the stations over this many publishing processes (one reaches about 8,000 readings/s).")] = 1,
) -> None:
    """Play plausible station data (with incidents) over MQTT, or as TT10 files."""
    _setup("simulator")
    import threading
    from datetime import datetime, timedelta, timezone

    from ingest.gateways import tester_credential
    from ingest.scenarios import random_incidents
    from ingest.simulator import MqttSink, TT10Sink, gateway_accounts, parse_injection, run_processes
    from quantrac.registry import load_registry
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    if station:
        unknown = set(station) - set(stations)
        if unknown:
            raise typer.BadParameter(f"unknown station(s) {sorted(unknown)}; known: {sorted(stations)}")
        stations = {k: v for k, v in stations.items() if k in station}
    try:
        injections = [parse_injection(spec) for spec in inject or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if speedup > 1 and duration is None:
        raise typer.BadParameter("--speedup > 1 plays the past and needs --duration (e.g. --speedup 288 --duration 300)")
    now = datetime.now(timezone.utc)
    span = timedelta(seconds=(duration or 86400) * speedup)
    start = now - span if speedup > 1 else now
    chosen = random_incidents(stations, start, span, seed or 0, incidents) if incidents > 0 else []
    stop = threading.Event()
    _stop_on_signals(stop)
    if tt10_dir is not None:
        def make_sink() -> object:
            return TT10Sink(tt10_dir, s.tt10_province_code)
    else:
        tester = tester_credential(s)  # only for stations without a gateway account (the bridge's may not publish)
        default = (tester.username, tester.password) if tester else (None, None)
        accounts = gateway_accounts(s, stations)

        def make_sink() -> object:  # built in each publishing process: paho's threads do not survive a fork
            return MqttSink(s.mqtt_host, s.mqtt_port, accounts, default)
    run_processes(processes, stations, make_sink=make_sink, duration=duration, rate=rate if rate > 0 else None,  # type: ignore[arg-type]
                  speedup=speedup, seed=seed, incidents=chosen, injections=injections, ground_truth_path=ground_truth,
                  stop=stop, now=now)


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


tt10_app = typer.Typer(help="Files in the national format (Circular 10/2021 Appendix 15).", no_args_is_help=True)
app.add_typer(tt10_app, name="tt10")


@tt10_app.command("watch")
def tt10_watch(directory: Annotated[Path, typer.Argument(help="Drop folder the stations upload to.")]) -> None:
    """Feed TT10 files from a drop folder into the pipeline; processed files go to done/ or rejected/."""
    _setup("tt10-watch")
    from ingest.producer import make_producer
    from ingest.tt10_watch import Watcher
    from quantrac.db import connect, live_registry
    s = get_settings()
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory; create it or pass the stations' FTP target folder")
    producer = make_producer(s, "quantrac-tt10-watch")
    watcher = Watcher(s, directory, producer, live_registry(s), lambda: connect(s.pg_dsn))
    _stop_on_signals(watcher)
    try:
        watcher.run()
    finally:
        producer.close(timeout=5)


@tt10_app.command("export")
def tt10_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the files to.")],
    station: Annotated[str, typer.Option(help="Station id.")],
    from_: Annotated[str, typer.Option("--from", help="Start (ISO 8601 with offset), inclusive.")],
    to: Annotated[str, typer.Option(help="End (ISO 8601 with offset), exclusive.")],
    province: Annotated[Optional[str], typer.Option(help="<Province> code when not known from the source file; default QUANTRAC_TT10_PROVINCE_CODE.")] = None,
    facility: Annotated[Optional[str], typer.Option(help="<Facility> code when not known from the source file; default the station code.")] = None,
    newline: Annotated[str, typer.Option(help="crlf or lf.")] = "crlf",
) -> None:
    """Write a station's stored readings as TT10 files, one per measurement time."""
    _setup("tt10-export")
    from ingest.payload import parse_timestamp
    from ingest.tt10_export import build_files, load_values, station_code, write_files
    from quantrac.db import connect, load_stations
    s = get_settings()
    try:
        start, end = parse_timestamp(from_), parse_timestamp(to)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if newline not in ("crlf", "lf"):
        raise typer.BadParameter(f"--newline {newline!r}: write crlf or lf")
    with connect(s.pg_dsn) as conn:
        known = load_stations(conn)
        if station not in known:
            raise typer.BadParameter(f"station {station!r} is not in the registry; known: {', '.join(sorted(known))}")
        values = load_values(conn, station, start, end)
    export = build_files(known[station], values, province=province or s.tt10_province_code,
                         facility=facility or station_code(station, s.tt10_station_codes),
                         station_codes=s.tt10_station_codes, newline="\r\n" if newline == "crlf" else "\n")
    written = write_files(export, directory)
    typer.echo(f"{len(written)} file(s), {sum(f.lines for f in export.files)} line(s) written to {directory}; "
               f"{len(export.skipped)} reading(s) skipped (no value with status 01)")


gateways_app = typer.Typer(help="Gateway MQTT accounts and the broker's ACL.", no_args_is_help=True)
app.add_typer(gateways_app, name="gateways")


@gateways_app.command("sync")
def gateways_sync(
    test_account: Annotated[Optional[bool], typer.Option(help="Create (or remove) the account that may publish for any station (tests, installers; never production). Default: QUANTRAC_MQTT_TEST_ACCOUNT, else keep what exists.")] = None,
    prune: Annotated[bool, typer.Option(help="Drop accounts of gateways no longer in this registry.")] = False,
) -> None:
    """Create accounts for the registry's gateways, write Mosquitto's password and ACL files, reload the broker."""
    _setup("gateways")
    from ingest.gateways import sync
    from quantrac.db import connect, load_stations
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        stations = load_stations(conn)
    result = sync(s, stations, test_account=test_account, keep_existing=not prune)
    typer.echo(f"{result.gateways} gateway account(s), {len(result.created)} new; broker "
               f"{'reloaded' if result.reloaded else 'not running here: restart it with `quantrac stack up` to apply'}. "
               f"Credentials: {s.run_dir / 'mosquitto' / 'credentials.json'} (mode 600)")


deadletter_app = typer.Typer(help="Rejected messages: keep them queryable, send them through again.", no_args_is_help=True)
app.add_typer(deadletter_app, name="deadletter")


@deadletter_app.command("replay")
def deadletter_replay(
    station: Annotated[Optional[str], typer.Option(help="Only this station id.")] = None,
    reason: Annotated[Optional[str], typer.Option(help="Only this reason code, e.g. unknown_station.")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only dead letters received at or after (ISO 8601 with offset).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Report what would pass without sending or marking anything.")] = False,
) -> None:
    """Validate pending dead letters again against today's registry; send what passes to Kafka and mark it replayed."""
    _setup("deadletter")
    from ingest.deadletter import keep_batch, make_keeper_consumer, replay
    from ingest.payload import parse_timestamp
    from quantrac.db import connect, load_stations
    s = get_settings()
    try:
        start = parse_timestamp(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    consumer = make_keeper_consumer(s)
    try:
        with connect(s.pg_dsn) as kept_into:
            while keep_batch(consumer, kept_into, timeout_ms=2000):
                pass  # catch up with the dead-letter topic first
    finally:
        consumer.close()
    with connect(s.pg_dsn) as conn:
        result = replay(s, conn, load_stations(conn), station=station, reason=reason, since=start, dry_run=dry_run)
    typer.echo(f"{result.considered} pending dead letter(s): {result.replayed} {'would pass' if dry_run else 'replayed'} "
               f"({result.readings_sent} reading(s)); still rejected: {result.still_rejected or 'none'}")


@app.command("run")
def run_all(
    rate: Annotated[float, typer.Option(help="Simulator readings per second.")] = 20.0,
    bridges: Annotated[int, typer.Option(min=1, help="Bridge processes; more than one share an MQTT subscription.")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="Faust worker processes in one consumer group (at most the topic's partitions).")] = 1,
    procfile: Annotated[Path, typer.Option(help="Processes to run.")] = Path(__file__).resolve().parent.parent / "deploy" / "local" / "Procfile",
    services: Annotated[bool, typer.Option("--stack/--no-stack", help="Start Mosquitto, Kafka and PostgreSQL first and stop them at the end; --no-stack uses services already running.")] = True,
) -> None:
    """Start the services, then the bridge, worker, API and simulator; a process that dies is restarted; Ctrl-C stops everything."""
    _setup("run")
    import os
    import threading

    from honcho.environ import parse_procfile

    from quantrac import stack
    from quantrac.settings import REPO_ROOT
    from quantrac.supervise import Supervisor
    s = get_settings()
    if workers > s.topic_partitions:
        raise typer.BadParameter(f"--workers {workers}: at most QUANTRAC_TOPIC_PARTITIONS={s.topic_partitions} workers get partitions")
    if services:
        stack.up(s)
    db_migrate(seed=True)
    _setup("run")  # db_migrate configured the logs as `db`
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
               "  A process that dies is restarted (supervisor.restarted in the log); Ctrl-C stops everything.\n")
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        supervisor.run(stop)
    finally:
        if services:
            stack.down(s)



stations_app = typer.Typer(help="Station registry administration (changes are audited; bridge and worker pick them up).",
                           no_args_is_help=True)
app.add_typer(stations_app, name="stations")


def _cli_actor() -> str:
    import getpass
    return f"cli:{getpass.getuser()}"


def _station_records(file: Path) -> list["object"]:
    """Stations from a YAML or JSON file: one station object or a list of them."""
    import yaml

    from quantrac.domain import Station
    raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    try:
        return [Station.model_validate(item) for item in (raw if isinstance(raw, list) else [raw])]
    except ValueError as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None


def _save_from_file(file: Path, must_exist: bool) -> None:
    _setup("stations")
    from processors.detectors import DETECTORS
    from quantrac.db import connect, load_station_record, save_station_audited
    from quantrac.registry import RegistryError, check_station, load_catalogue
    s = get_settings()
    catalogue = load_catalogue(s.registry_file)
    with connect(s.pg_dsn) as conn:
        for station in _station_records(file):
            try:
                check_station(station, catalogue, DETECTORS)  # type: ignore[arg-type]
            except RegistryError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            exists = load_station_record(conn, station.id) is not None  # type: ignore[attr-defined]
            if exists != must_exist:
                hint = "use `quantrac stations update`" if exists else "use `quantrac stations add`"
                typer.echo(f"error: station {station.id} {'exists' if exists else 'is not registered'}; {hint}", err=True)  # type: ignore[attr-defined]
                raise typer.Exit(2)
            typer.echo(f"{station.id}: {save_station_audited(conn, station, _cli_actor())}")  # type: ignore[arg-type, attr-defined]


@stations_app.command("list")
def stations_list(retired: Annotated[bool, typer.Option(help="Also list retired stations.")] = False) -> None:
    """List the registered stations (id, zone, kind, parameters)."""
    from quantrac.db import connect
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        rows = conn.execute("SELECT id, zone, kind, spec, retired_at FROM stations "
                            + ("" if retired else "WHERE retired_at IS NULL ") + "ORDER BY zone, id").fetchall()
    for station_id, zone, kind, spec, retired_at in rows:
        mark = f"  retired {retired_at:%Y-%m-%d}" if retired_at else ""
        typer.echo(f"{station_id}\t{zone}\t{kind}\t{','.join(spec['parameters'])}{mark}")


@stations_app.command("add")
def stations_add(file: Annotated[Path, typer.Argument(exists=True, help="YAML or JSON: a station object or a list.")]) -> None:
    """Register new stations (any parameter symbol, with unit, range, limit and detectors)."""
    _save_from_file(file, must_exist=False)


@stations_app.command("update")
def stations_update(file: Annotated[Path, typer.Argument(exists=True, help="YAML or JSON: a station object or a list.")]) -> None:
    """Replace registered stations' records (also re-activates a retired one)."""
    _save_from_file(file, must_exist=True)


@stations_app.command("retire")
def stations_retire(station_id: Annotated[str, typer.Argument(help="Station id.")]) -> None:
    """Retire a station: its history stays, new readings are refused."""
    _setup("stations")
    from quantrac.db import connect, retire_station
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        if not retire_station(conn, station_id, _cli_actor()):
            typer.echo(f"error: station {station_id} is unknown or already retired (quantrac stations list --retired)", err=True)
            raise typer.Exit(2)
    typer.echo(f"{station_id}: retired")


@app.command("import")
def import_history(
    path: Annotated[Path, typer.Argument(exists=True, help="CSV file, or a folder of TT10 files.")],
    station: Annotated[str, typer.Option("--station", help="Registry id of the station the data belongs to.")],
    rate: Annotated[Optional[float], typer.Option(min=1, help="Most readings per second sent (leaves room for live traffic).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="CSV layout: wide (time + one column per parameter), long "
                                     "(time, parameter, value, unit, status) or auto (from the header).")] = "auto",
    tz: Annotated[str, typer.Option(help="Time zone of CSV times written without an offset (default Asia/Ho_Chi_Minh); "
                                    "times with an offset keep it.")] = "Asia/Ho_Chi_Minh",
    progress: Annotated[bool, typer.Option(help="Show a progress bar with rate and ETA on stderr.")] = True,
    chunk: Annotated[int, typer.Option(min=1, help="Rows sent before each wait for Kafka's confirmation (the resume step).")] = 2000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the whole file and print what would be sent and "
                                          "rejected; send nothing.")] = False,
    retry_rejected: Annotated[bool, typer.Option(help="Read again the rows an earlier run of this file rejected (after "
                                                 "fixing the registry or the retention).")] = True,
    retention_days: Annotated[Optional[int], typer.Option(min=1, help="First set the station's own retention (registry, "
                                                          "audited) to this many days: keeps an archive older than "
                                                          "QUANTRAC_RETENTION_DAYS; the worker's retention honours it.")] = None,
    skip_column: Annotated[Optional[list[str]], typer.Option(help="A wide CSV column that holds no readings (e.g. a "
                                                             "label such as EVENT); repeat for several.")] = None,
) -> None:
    """Backfill a station's history through the pipeline (validated, stored, rolled up, evaluated; alerts marked historical).

    Resumable: rerun the same command after an interruption and confirmed rows are skipped; rows
    rejected earlier are read again. Idempotent: importing the same file again stores nothing new.
    Prints rows read, readings sent and rejections by reason with examples and the fix; exits 1
    when rows were read and no reading could be sent.
    """
    _setup("import")
    from ingest.import_sources import ImportSourceError
    from ingest.importer import ImportRefused, run_import
    if fmt not in ("wide", "long", "auto"):
        typer.echo(f"error: --format {fmt!r} is not wide, long or auto", err=True)
        raise typer.Exit(2)
    try:
        result = run_import(get_settings(), station, path, fmt=fmt, tz=tz, rate=rate, show_progress=progress,  # type: ignore[arg-type]
                            chunk_units=chunk, dry_run=dry_run, retry_rejected=retry_rejected,
                            retention_days=retention_days, actor=_cli_actor(),
                            skip_columns=frozenset(skip_column or ()))
    except (ImportRefused, ImportSourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.summary())
    if result.nothing_sent:
        raise typer.Exit(1)

@app.command("detect")
def detect_backtest(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV file, wide or long as for `quantrac import`.")],
    station: Annotated[Optional[str], typer.Option("--station", help="Id of a station in the registry seed (QUANTRAC_REGISTRY_FILE).")] = None,
    station_file: Annotated[Optional[Path], typer.Option("--station-file", exists=True, dir_okay=False,
                                                         help="A station's registry entry as JSON (GET /api/v1/stations/{id}).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="CSV layout: wide, long or auto (from the header).")] = "auto",
    tz: Annotated[str, typer.Option(help="Time zone of CSV times written without an offset.")] = "Asia/Ho_Chi_Minh",
    output: Annotated[str, typer.Option(help="csv or json.")] = "csv",
    preset: Annotated[Optional[str], typer.Option(help="Run this detector preset instead of the station's own (`quantrac presets list`).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the alarms here instead of stdout.")] = None,
) -> None:
    """Backtest: stream a CSV through the worker's rules and detectors and write the alarms, without Kafka or PostgreSQL.

    Each alarm is the time it opened (event time), station, parameter, rule, the reading's value, the
    detector score (anomalies), the limit and the message. Detectors are the station's (its preset or
    channels, or --preset) with the worker's QUANTRAC_DETECT_* settings, so "what would these settings
    have flagged last month?" is one command.
    """
    _setup("detect")
    from zoneinfo import ZoneInfo

    from ingest.import_sources import ImportSourceError
    from alerts.store import policy_from_settings
    from processors.backtest import backtest_csv, render
    from processors.detection import DetectionConfig
    from quantrac.domain import Station
    from quantrac.registry import load_registry
    if output not in ("csv", "json") or fmt not in ("wide", "long", "auto") or (station is None) == (station_file is None):
        typer.echo("error: give --station ID or --station-file FILE (one of them); --output csv|json; "
                   "--format wide|long|auto", err=True)
        raise typer.Exit(2)
    s = get_settings()
    if station_file is not None:
        entry = Station.model_validate_json(station_file.read_text(encoding="utf-8"))
    else:
        entry = load_registry(s.registry_file, s.limits_dir).get(station)  # type: ignore[arg-type]
        if entry is None:
            typer.echo(f"error: station {station} is not in {s.registry_file}; pass --station-file with its entry", err=True)
            raise typer.Exit(2)
    try:
        if preset is not None:
            entry = Station.model_validate({**entry.model_dump(mode="json"), "detector_preset": preset, "channels": None})
        alarms = backtest_csv(path, entry, DetectionConfig.from_settings(s), fmt, ZoneInfo(tz), policy_from_settings())
    except (ImportSourceError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    text = render(alarms, output == "json")
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{entry.id}: {len(alarms)} alarms written to {out}", err=True)


if __name__ == "__main__":
    app()

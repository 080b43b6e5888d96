"""The long-running processes: `quantrac bridge` (and `bridge drain`), `worker`, `api`, `notifier`."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cli.common import setup, stop_on_signals
from quantrac.settings import get_settings

bridge_app = typer.Typer(help="The MQTT → Kafka bridge, and draining the session of one that is gone.")


@bridge_app.callback(invoke_without_command=True)
def bridge(ctx: typer.Context) -> None:
    """Run the MQTT → Kafka bridge until SIGINT/SIGTERM (then it keeps or drains its session: QUANTRAC_BRIDGE_ON_STOP)."""
    if ctx.invoked_subcommand is not None:
        return
    setup("bridge")
    from ingest.bridge import Bridge
    from ingest.drain import adopt_legacy_session
    from quantrac.db import live_registry
    s = get_settings()
    registry = live_registry(s)
    adopt_legacy_session(s, registry)
    b = Bridge(s, registry)
    stop_on_signals(b)
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
    setup("bridge-drain")
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


def worker() -> None:
    """Run the Faust worker (readings → PostgreSQL → alerts) until SIGINT/SIGTERM."""
    setup("worker")
    s = get_settings()
    import processors.maintenance_agent  # noqa: F401  (partitions ahead, retention, aggregate refresh)
    import processors.readings_agent  # noqa: F401  (registers the agent)
    from processors.app import app as faust_app
    from processors.engine.warm import compile_passes
    from processors.gc_tuning import tune_gc
    from quantrac.metrics import serve
    serve(s.worker_metrics_port, "worker", s.metrics_host)
    compile_passes()
    faust_level = {"WARNING": "warn", "CRITICAL": "crit"}.get(s.log_level.upper(), s.log_level.lower())
    sys.argv = ["quantrac-worker", "worker", "--without-web", "--loglevel", faust_level]
    tune_gc(s.worker_gc_thresholds)
    faust_app.main()


def api() -> None:
    """Serve the HTTP API and dashboard."""
    setup("api")
    import uvicorn

    from api.main import create_app
    s = get_settings()
    uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_config=None)


def notifier() -> None:
    """Send alert notifications (webhook, MQTT, Kafka, e-mail) and run escalations until SIGINT/SIGTERM."""
    setup("notifier")
    import threading

    from alerts.notifier import run
    stop = threading.Event()
    stop_on_signals(stop)
    run(get_settings(), stop)

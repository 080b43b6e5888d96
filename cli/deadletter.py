"""`quantrac deadletter`: keep rejected messages queryable, send them through again."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.common import setup
from quantrac.settings import get_settings

deadletter_app = typer.Typer(help="Rejected messages: keep them queryable, send them through again.", no_args_is_help=True)


@deadletter_app.command("replay")
def deadletter_replay(
    station: Annotated[Optional[str], typer.Option(help="Only this station id.")] = None,
    reason: Annotated[Optional[str], typer.Option(help="Only this reason code, e.g. unknown_station.")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only dead letters received at or after (ISO 8601 with offset).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Report what would pass without sending or marking anything.")] = False,
) -> None:
    """Validate pending dead letters again against today's registry; send what passes to Kafka and mark it replayed."""
    setup("deadletter")
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

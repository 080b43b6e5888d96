"""`quantrac tt10`: the national file format (watch a drop folder, export stored readings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import setup, stop_on_signals
from quantrac.settings import get_settings

tt10_app = typer.Typer(help="Files in the national format (Circular 10/2021 Appendix 15).", no_args_is_help=True)


@tt10_app.command("watch")
def tt10_watch(directory: Annotated[Path, typer.Argument(help="Drop folder the stations upload to.")]) -> None:
    """Feed TT10 files from a drop folder into the pipeline; processed files go to done/ or rejected/."""
    setup("tt10-watch")
    from ingest.producer import make_producer
    from ingest.tt10_watch import Watcher
    from quantrac.db import connect, live_registry
    s = get_settings()
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory; create it or pass the stations' FTP target folder")
    producer = make_producer(s, "quantrac-tt10-watch")
    watcher = Watcher(s, directory, producer, live_registry(s), lambda: connect(s.pg_dsn))
    stop_on_signals(watcher)
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
    setup("tt10-export")
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

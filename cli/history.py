"""`quantrac import` and `quantrac detect`: backfill a history file through the pipeline, backtest the detectors on one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import cli_actor, setup
from quantrac.settings import get_settings


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
    setup("import")
    from ingest.import_sources import ImportSourceError
    from ingest.importer import ImportRefused, run_import
    if fmt not in ("wide", "long", "auto"):
        typer.echo(f"error: --format {fmt!r} is not wide, long or auto", err=True)
        raise typer.Exit(2)
    try:
        result = run_import(get_settings(), station, path, fmt=fmt, tz=tz, rate=rate, show_progress=progress,  # type: ignore[arg-type]  # typer passes --format as str; the check above limits it to wide/long/auto, which mypy does not narrow from a tuple test
                            chunk_units=chunk, dry_run=dry_run, retry_rejected=retry_rejected,
                            retention_days=retention_days, actor=cli_actor(),
                            skip_columns=frozenset(skip_column or ()))
    except (ImportRefused, ImportSourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.summary())
    if result.nothing_sent:
        raise typer.Exit(1)


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
    setup("detect")
    from zoneinfo import ZoneInfo

    from alerts.alerts_table import policy_from_settings
    from ingest.import_sources import ImportSourceError
    from processors.backtest import backtest_csv, render
    from processors.detection import DetectionConfig
    from processors.detectors.presets import check_detection
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
        registered = load_registry(s.registry_file, s.limits_dir).get(station or "")
        if registered is None:
            typer.echo(f"error: station {station} is not in {s.registry_file}; pass --station-file with its entry", err=True)
            raise typer.Exit(2)
        entry = registered
    try:
        check_detection(entry)
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

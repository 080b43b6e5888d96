"""`quantrac stations`: station registry administration (audited)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import cli_actor, setup
from quantrac.settings import get_settings

if TYPE_CHECKING:
    from quantrac.domain import Station

stations_app = typer.Typer(help="Station registry administration (changes are audited; bridge and worker pick them up).",
                           no_args_is_help=True)


def _station_records(file: Path) -> list[Station]:
    """Stations from a YAML or JSON file: one station object or a list of them."""
    import yaml

    from quantrac.station_input import StationIn
    raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    try:
        return [StationIn.model_validate(item).record() for item in (raw if isinstance(raw, list) else [raw])]
    except ValueError as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None


def _save_from_file(file: Path, must_exist: bool) -> None:
    setup("stations")
    from processors.detectors import DETECTORS
    from processors.detectors.presets import check_detection
    from quantrac.db import connect, load_station_record, save_station_audited
    from quantrac.registry import RegistryError, check_station, load_catalogue
    s = get_settings()
    catalogue = load_catalogue(s.registry_file)
    with connect(s.pg_dsn) as conn:
        for station in _station_records(file):
            try:
                check_station(station, catalogue, DETECTORS)
                check_detection(station)
            except (RegistryError, ValueError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            exists = load_station_record(conn, station.id) is not None
            if exists != must_exist:
                hint = "use `quantrac stations update`" if exists else "use `quantrac stations add`"
                typer.echo(f"error: station {station.id} {'exists' if exists else 'is not registered'}; {hint}", err=True)
                raise typer.Exit(2)
            typer.echo(f"{station.id}: {save_station_audited(conn, station, cli_actor())}")


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
    setup("stations")
    from quantrac.db import connect, retire_station
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        if not retire_station(conn, station_id, cli_actor()):
            typer.echo(f"error: station {station_id} is unknown or already retired (quantrac stations list --retired)", err=True)
            raise typer.Exit(2)
    typer.echo(f"{station_id}: retired")

"""`quantrac presets list|show|use`: the detector presets stations run, where their numbers come from, and naming one."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from quantrac.settings import get_settings

presets_app = typer.Typer(help="Detector presets: what each station kind runs, with provenance; name one for a station.",
                          no_args_is_help=True)


@presets_app.command("list")
def presets_list() -> None:
    """Every preset: name, channels (detector on parameters) and provenance."""
    from processors.detectors.presets import preset, preset_names
    for name in preset_names():
        p = preset(name)
        channels = ", ".join(f"{c.detector} on {'+'.join(c.columns) if c.columns else 'every parameter'}" for c in p.channels)
        typer.echo(f"{name}\t{channels}\n\t{p.provenance}")


@presets_app.command("show")
def presets_show(name: Annotated[str, typer.Argument(help="Preset name (`quantrac presets list`).")]) -> None:
    """One preset as JSON: its channels (params null: the worker's QUANTRAC_DETECT_DETECTOR_PARAMS) and provenance."""
    from processors.detectors.presets import preset
    try:
        p = preset(name)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(p.model_dump(mode="json"), ensure_ascii=False, indent=1))


@presets_app.command("use")
def presets_use(
    station_id: Annotated[str, typer.Argument(help="A registered station.")],
    name: Annotated[Optional[str], typer.Argument(help="Preset name; leave out to go back to its kind's preset.")] = None,
) -> None:
    """Make a registered station run a preset (audited; the worker picks it up at its next registry reload).

    The station's own channels, if it had any, are dropped: a station runs its channels or a preset.
    """
    from quantrac.db import connect, load_station_record, save_station_audited
    from quantrac.domain import Station
    from quantrac.logs import configure
    s = get_settings()
    configure(s.log_level, s.log_format, "presets")
    with connect(s.pg_dsn) as conn:
        record = load_station_record(conn, station_id)
        if record is None:
            typer.echo(f"error: station {station_id} is not registered; see `quantrac stations list`", err=True)
            raise typer.Exit(2)
        try:
            station = Station.model_validate({**record[0].model_dump(mode="json"), "detector_preset": name, "channels": None})
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        import getpass
        action = save_station_audited(conn, station, f"cli:{getpass.getuser()}")
    typer.echo(f"{station_id}: {action}, runs preset {name or station.kind.value}")

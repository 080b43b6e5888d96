"""The `quantrac` command line: one entry point for every process and operation, one module per command group."""

from __future__ import annotations

import typer

from cli import db, deadletter, gateways, history, keys, presets, processes, run, simulate, stations, tt10
from cli.stack import stack_app

app = typer.Typer(help="quantrac: real-time monitoring of industrial discharge stations.", no_args_is_help=True)
app.add_typer(db.db_app, name="db")
app.add_typer(stack_app, name="stack", help="Start, stop and check the local Mosquitto, Kafka and PostgreSQL.")
app.add_typer(processes.bridge_app, name="bridge")
app.command()(processes.worker)
app.command()(processes.api)
app.command()(processes.notifier)
app.add_typer(keys.keys_app, name="keys")
app.command()(simulate.simulate)
app.add_typer(tt10.tt10_app, name="tt10")
app.add_typer(gateways.gateways_app, name="gateways")
app.add_typer(deadletter.deadletter_app, name="deadletter")
app.command("run")(run.run_all)
app.add_typer(stations.stations_app, name="stations")
app.add_typer(presets.presets_app, name="presets")
app.command("import")(history.import_history)
app.command("detect")(history.detect_backtest)


@app.command("settings")
def show_settings() -> None:
    """Print every setting as a Markdown table (the table in docs/settings.md)."""
    from quantrac.settings import settings_table
    typer.echo(settings_table())


if __name__ == "__main__":
    app()

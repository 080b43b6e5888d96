"""`quantrac stack up|down|status`: the local Mosquitto, Kafka and PostgreSQL."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Annotated, Iterator

import typer
from rich.console import Console
from rich.table import Table

from quantrac.settings import get_settings
from stack import services
from stack.process import StackError

stack_app = typer.Typer(help="Start, stop and check the local Mosquitto, Kafka and PostgreSQL.", no_args_is_help=True)

Only = Annotated[
    list[str] | None,
    typer.Option("--only", "-s", help=f"Only this service (repeatable): {', '.join(services.SERVICE_NAMES)}."),
]


def _fail(exc: StackError) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]stack error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code=1)



@contextmanager
def _stack_errors() -> Iterator[None]:
    """A StackError becomes its message on stderr and exit code 1, without a traceback."""
    try:
        yield
    except StackError as exc:
        raise _fail(exc) from None

@stack_app.command()
def up(only: Only = None) -> None:
    """Start every service that is not already healthy, and create the Kafka topics."""
    with _stack_errors():
        services.up(get_settings(), only=only)


@stack_app.command()
def down(only: Only = None) -> None:
    """Stop the services this stack started (the ones it merely reused are left alone)."""
    with _stack_errors():
        services.down(get_settings(), only=only)


@stack_app.command()
def status(only: Only = None) -> None:
    """Probe each service; exits with 1 if any is unhealthy."""
    with _stack_errors():
        found = services.status(get_settings(), only=only)
    table = Table("service", "healthy", "pid")
    table.add_column("endpoint", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for item in found.values():
        table.add_row(
            item.name,
            "[green]yes[/]" if item.healthy else "[red]no[/]",
            str(item.pid) if item.pid is not None else "-",
            item.endpoint,
            item.detail,
        )
    # Without a terminal rich assumes 80 columns; the endpoints alone need more.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if not all(item.healthy for item in found.values()):
        raise typer.Exit(code=1)


@stack_app.command("timescaledb")
def timescaledb() -> None:
    """Make TimescaleDB available to the local PostgreSQL: use it when installed, else build it once
    from QUANTRAC_TIMESCALEDB_SOURCE into QUANTRAC_TIMESCALEDB_CACHE and install it, else leave plain PostgreSQL."""
    from quantrac.logs import configure
    from stack.timescaledb import ensure

    settings = get_settings()
    configure(settings.log_level, settings.log_format, "timescaledb")
    with _stack_errors():
        ensure(settings)

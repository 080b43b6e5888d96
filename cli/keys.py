"""`quantrac keys`: API keys of the HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import setup
from quantrac.settings import get_settings

keys_app = typer.Typer(help="API keys of the HTTP API.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="operator, analyst, admin, or metrics (may read only /metrics).")],
    name: Annotated[str, typer.Option(help="Who or what uses the key; recorded as the actor of its changes.")],
) -> None:
    """Create an API key and print it (only this once)."""
    setup("keys")
    from api.auth import ROLES, create_key
    from quantrac.db import connect
    if role not in ROLES:
        raise typer.BadParameter(f"--role {role!r}: use one of {', '.join(ROLES)}")
    with connect(get_settings().pg_dsn) as conn:
        key, key_id = create_key(conn, name, role, "quantrac keys create")
    typer.echo(f"key {key_id} ({role}, {name}): {key}\nuse it as: curl -H 'X-API-Key: {key}' ...")

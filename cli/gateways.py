"""`quantrac gateways`: gateway MQTT accounts and the broker's ACL."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.common import setup
from quantrac.settings import get_settings

gateways_app = typer.Typer(help="Gateway MQTT accounts and the broker's ACL.", no_args_is_help=True)


@gateways_app.command("sync")
def gateways_sync(
    test_account: Annotated[Optional[bool], typer.Option(help="Create (or remove) the account that may publish for any station (tests, installers; never production). Default: QUANTRAC_MQTT_TEST_ACCOUNT (false: remove it).")] = None,
    prune: Annotated[bool, typer.Option(help="Drop accounts of gateways no longer in this registry.")] = False,
) -> None:
    """Create accounts for the registry's gateways, write Mosquitto's password and ACL files, reload the broker."""
    setup("gateways")
    from quantrac.db import connect, load_stations
    from stack.mosquitto_accounts import sync
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        stations = load_stations(conn)
    result = sync(s, stations, test_account=test_account, keep_existing=not prune)
    typer.echo(f"{result.gateways} gateway account(s), {len(result.created)} new; broker "
               f"{'reloaded' if result.reloaded else 'not running here: restart it with `quantrac stack up` to apply'}. "
               f"Credentials: {s.run_dir / 'mosquitto' / 'credentials.json'} (mode 600)")

"""The MQTT accounts a quantrac process logs in with, read from the file the local stack generates.

stack/mosquitto_accounts.py writes `<run_dir>/mosquitto/credentials.json` (the bridge's, the notifier's,
one per gateway and the optional test account) with the broker's passwd and ACL; the bridge, the
notifier, the simulator and the tests only read it, through this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from quantrac.settings import Settings, mqtt_credentials_file

if TYPE_CHECKING:
    from paho.mqtt.publish import AuthParameter

BRIDGE_ACCOUNT = "quantrac-bridge"
NOTIFIER_ACCOUNT = "quantrac-notifier"
TEST_ACCOUNT = "quantrac-test-gateway"
READINGS_TOPIC = "quantrac/v1/stations/{station}/readings"
ALERTS_TOPICS = "quantrac/v1/alerts/#"
BRIDGE_DRAIN_TOPICS = "quantrac/v1/bridges/+/drain"
"""Where a draining bridge sends itself the marker that tells it its session is empty (ingest/drain.py)."""


@dataclass(frozen=True)
class GatewayCredential:
    """The MQTT account of one gateway and the stations it may publish for."""

    username: str
    password: str = field(repr=False)
    station_ids: tuple[str, ...] = ()


def mosquitto_dir(run_dir: Path) -> Path:
    """The folder of the generated broker files (credentials.json, passwd, acl, tls/) under `run_dir`."""
    return run_dir / "mosquitto"


def read_accounts(run_dir: Path) -> dict[str, object]:
    """The generated credentials.json as parsed; empty when the stack has not generated it yet."""
    path = mqtt_credentials_file(run_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def gateway_credentials(settings: Settings) -> dict[str, GatewayCredential]:
    """Every gateway account generated under settings.run_dir, keyed by gateway id (empty before setup)."""
    gateways = read_accounts(settings.run_dir).get("gateways", {})
    assert isinstance(gateways, dict)
    return {gw: GatewayCredential(a["username"], a["password"], tuple(a["station_ids"])) for gw, a in gateways.items()}


def tester_credential(settings: Settings) -> GatewayCredential | None:
    """The test gateway account (may publish for any station), if it was generated."""
    account = read_accounts(settings.run_dir).get("test")
    return GatewayCredential(account["username"], account["password"]) if isinstance(account, dict) else None


def bridge_login(settings: Settings) -> tuple[str | None, str | None]:
    """(username, password) of the bridge: the settings' account, else the generated one, read now.

    Settings read the generated account when they are built; a process that built them before
    `stack up` generated it (a test session's first start) still logs in through this.
    """
    if settings.mqtt_username:
        return settings.mqtt_username, settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    bridge = read_accounts(settings.run_dir).get("bridge")
    return (bridge["username"], bridge["password"]) if isinstance(bridge, dict) else (None, None)


def bridge_session_id(settings: Settings, name: str | None = None) -> str:
    """The MQTT client id of the bridge named `name` (default `mqtt_bridge_client_id`): the name, a dash and 16 hex
    digits keyed by the bridge account's password; the name alone without a password (an anonymous broker).

    Mosquitto hands a persistent session to any authenticated client that presents its client id, whatever the
    account (eclipse-mosquitto#3553). A gateway configured with the bridge's documented name took the bridge's
    session in turns with it, and the broker dropped the readings of every station that the session was owed
    while the gateway held it (104 of 200 in a trial). A gateway cannot compute this id without the bridge's
    password. Every place that connects as a bridge's session goes through here; logs, heartbeats and drain
    markers keep the name.
    """
    name = name or settings.mqtt_bridge_client_id
    _, password = bridge_login(settings)
    if not password:
        return name
    return f"{name}-{hmac.new(password.encode(), name.encode(), hashlib.sha256).hexdigest()[:16]}"


def notifier_auth(settings: Settings) -> AuthParameter | None:
    """paho `auth` of the alert notifier: its generated account, else the settings' account, else None."""
    account = read_accounts(settings.run_dir).get("notifier")
    if isinstance(account, dict):
        return {"username": account["username"], "password": account["password"]}
    username, password = bridge_login(settings)
    if not username:
        return None
    return {"username": username, "password": password} if password is not None else {"username": username}


def credential_for(settings: Settings, station_id: str) -> GatewayCredential | None:
    """The account to publish as for a station: its gateway's, else the test account (if generated), else None."""
    for credential in gateway_credentials(settings).values():
        if station_id in credential.station_ids:
            return credential
    return tester_credential(settings)

"""Gateway identity: one Mosquitto account per gateway, an ACL generated from the station registry.

Every file lives under `<run_dir>/mosquitto/` and never in the repository:

    credentials.json  the generated accounts with their passwords (mode 600); every quantrac
                      process reads it (the bridge through Settings, gateways through
                      `gateway_credentials`)
    passwd            the same accounts hashed by `mosquitto_passwd -U` (mode 600)
    acl               per account: a gateway may only write its own stations' readings topics;
                      the bridge only reads every readings topic (and the drain markers of
                      ingest/drain.py); the notifier only writes the alert notification
                      topics; the optional test account (tests, installers,
                      never production) writes every readings topic and reads the alert topics
    tls/              a locally generated CA and the broker's certificate (TLS listener option)

`sync` is idempotent and cheap (no password changes for known accounts); Mosquitto reloads the
password and ACL files on SIGHUP, so a station registered at runtime can publish a moment later.
`quantrac stack up` runs it over the seed registry before Mosquitto starts (so the local broker
never allows anonymous access) and again when it finds Mosquitto running (new seed stations, the
test account when asked for).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from quantrac.domain import Station
from quantrac.settings import Settings, mqtt_credentials_file

log = structlog.get_logger(__name__)

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


def gateway_of(station: Station) -> str:
    return station.gateway or station.id


def username_for(gateway: str) -> str:
    return f"gw-{gateway}"


def mosquitto_dir(run_dir: Path) -> Path:
    return run_dir / "mosquitto"


def _read(run_dir: Path) -> dict[str, object]:
    path = mqtt_credentials_file(run_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (no moment with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def gateway_credentials(settings: Settings) -> dict[str, GatewayCredential]:
    """Every gateway account generated under settings.run_dir, keyed by gateway id (empty before setup)."""
    gateways = _read(settings.run_dir).get("gateways", {})
    assert isinstance(gateways, dict)
    return {gw: GatewayCredential(a["username"], a["password"], tuple(a["station_ids"])) for gw, a in gateways.items()}


def tester_credential(settings: Settings) -> GatewayCredential | None:
    """The test gateway account (may publish for any station), if it was generated."""
    account = _read(settings.run_dir).get("test")
    return GatewayCredential(account["username"], account["password"]) if isinstance(account, dict) else None


def bridge_login(settings: Settings) -> tuple[str | None, str | None]:
    """(username, password) of the bridge: the settings' account, else the generated one, read now.

    Settings read the generated account when they are built; a process that built them before
    `stack up` generated it (a test session's first start) still logs in through this.
    """
    if settings.mqtt_username:
        return settings.mqtt_username, settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    bridge = _read(settings.run_dir).get("bridge")
    return (bridge["username"], bridge["password"]) if isinstance(bridge, dict) else (None, None)


def notifier_auth(settings: Settings) -> dict[str, str | None] | None:
    """paho `auth` of the alert notifier: its generated account, else the settings' account, else None."""
    account = _read(settings.run_dir).get("notifier")
    if isinstance(account, dict):
        return {"username": account["username"], "password": account["password"]}
    username, password = bridge_login(settings)
    return {"username": username, "password": password} if username else None


def credential_for(settings: Settings, station_id: str) -> GatewayCredential | None:
    """The account to publish as for a station: its gateway's, else the test account (if generated), else None."""
    for credential in gateway_credentials(settings).values():
        if station_id in credential.station_ids:
            return credential
    return tester_credential(settings)


def acl_text(gateways: Mapping[str, Iterable[str]], test_account: bool,
             alerts_topic: str = ALERTS_TOPICS, bridge: str = BRIDGE_ACCOUNT) -> str:
    """The Mosquitto ACL: the bridge reads readings (and its drain markers), the notifier writes alerts, each gateway writes its stations' readings."""
    readings = READINGS_TOPIC.format(station="+")
    lines = ["# Generated by `quantrac gateways sync` from the station registry; do not edit.", "",
             f"user {bridge}", f"topic read {readings}", f"topic readwrite {BRIDGE_DRAIN_TOPICS}", "",
             f"user {NOTIFIER_ACCOUNT}", f"topic write {alerts_topic}", ""]
    if test_account:
        lines += ["# Test/installer account (QUANTRAC_MQTT_TEST_ACCOUNT): any station. Not for production.",
                  f"user {TEST_ACCOUNT}", f"topic write {readings}", f"topic read {ALERTS_TOPICS}", ""]
    for gateway, stations in sorted(gateways.items()):
        lines.append(f"user {username_for(gateway)}")
        lines += [f"topic write {READINGS_TOPIC.format(station=s)}" for s in sorted(stations)]
        lines.append("")
    return "\n".join(lines)


def alerts_acl_topic(template: str) -> str:
    """The ACL pattern of the notifier's topic template: `{zone}` may be any one topic level."""
    return template.replace("{zone}", "+")


@dataclass(frozen=True)
class SyncResult:
    gateways: int
    created: tuple[str, ...]
    reloaded: bool


def sync(settings: Settings, stations: Mapping[str, Station], *, test_account: bool | None = None,
         keep_existing: bool = True) -> SyncResult:
    """Create accounts for new gateways, regenerate passwd and ACL, and make a running broker reload them.

    Existing passwords are kept. With `keep_existing`, gateways no longer in `stations` keep their
    accounts (several registries, e.g. test databases, may share one broker). `test_account`: True
    creates (or keeps) the test account, False removes it, None creates it when
    `settings.mqtt_test_account` asks for it and otherwise keeps whatever exists (so a `make run`
    beside a test session does not take the tests' account away). Serialised by a lock file, so
    concurrent syncs never hand out two passwords for one account.
    """
    run_dir = settings.run_dir
    home = mosquitto_dir(run_dir)
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".sync.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(run_dir)
        bridge = _bridge_account(settings, data.get("bridge"))
        notifier = data.get("notifier") or _new_account(NOTIFIER_ACCOUNT)
        accounts: dict[str, dict[str, object]] = dict(data.get("gateways", {})) if keep_existing else {}  # type: ignore[arg-type]
        wanted: defaultdict[str, set[str]] = defaultdict(set)
        for station in stations.values():
            wanted[gateway_of(station)].add(station.id)
        created = []
        for gateway, ids in wanted.items():
            known = accounts.get(gateway)
            if known is None:
                created.append(gateway)
                known = {**_new_account(username_for(gateway)), "station_ids": []}
            merged = set(known["station_ids"]) | ids if keep_existing else ids  # type: ignore[call-overload]
            accounts[gateway] = {**known, "station_ids": sorted(merged)}
        out: dict[str, object] = {"bridge": bridge, "notifier": notifier, "gateways": accounts}
        if test_account is None:
            test_account = settings.mqtt_test_account or "test" in data
        test = data.get("test") or _new_account(TEST_ACCOUNT)
        if test_account:
            out["test"] = test
        _write_private(mqtt_credentials_file(run_dir), json.dumps(out, indent=1, sort_keys=True))
        plain = [(a["username"], a["password"]) for a in (bridge, notifier, *accounts.values())]  # type: ignore[index]
        if test_account:
            plain.append((test["username"], test["password"]))  # type: ignore[index]
        _write_passwd(home / "passwd", plain)
        _write_private(home / "acl", acl_text({g: a["station_ids"] for g, a in accounts.items()}, test_account,  # type: ignore[misc]
                                              alerts_acl_topic(settings.notify_mqtt_topic), str(bridge["username"])))
        reloaded = reload_broker(settings)
    log.info("gateways.synced", gateways=len(accounts), created=len(created), test_account=test_account,
             reloaded=reloaded, dir=str(home))
    return SyncResult(len(accounts), tuple(created), reloaded)


def _bridge_account(settings: Settings, known: object) -> dict[str, object]:
    """The bridge's account: the one the settings carry (QUANTRAC_MQTT_USERNAME/PASSWORD, or read from this
    run_dir earlier), else the one generated before, else a new one.

    Taking the settings' account keeps the broker and a process that read its settings before the
    files were removed and regenerated (a test wiping its private run_dir) in agreement.
    """
    if settings.mqtt_username and settings.mqtt_password:
        return {"username": settings.mqtt_username, "password": settings.mqtt_password.get_secret_value()}
    return known if isinstance(known, dict) else _new_account(BRIDGE_ACCOUNT)


def _new_account(username: str) -> dict[str, object]:
    return {"username": username, "password": secrets.token_urlsafe(24)}


def ensure_accounts(settings: Settings) -> SyncResult:
    """`sync` over the seed registry (settings.registry_file): what `quantrac stack up` runs for Mosquitto."""
    from quantrac.registry import load_registry

    return sync(settings, load_registry(settings.registry_file, settings.limits_dir))


def _write_passwd(path: Path, accounts: Iterable[tuple[object, object]]) -> None:
    """Hash `user:password` lines with `mosquitto_passwd -U` (the broker's own format)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        raise RuntimeError("`mosquitto_passwd` is not installed; install it with: apt-get install mosquitto")
    staging = path.with_name(f".{path.name}.new")
    _write_private(staging, "".join(f"{u}:{p}\n" for u, p in accounts))
    done = subprocess.run([tool, "-U", str(staging)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        staging.unlink(missing_ok=True)
        raise RuntimeError(f"mosquitto_passwd -U failed: {done.stderr.strip() or done.stdout.strip()}")
    os.chmod(staging, 0o600)
    os.replace(staging, path)


def reload_broker(settings: Settings) -> bool:
    """SIGHUP the Mosquitto this run_dir's stack started (it rereads passwd and acl); False if none runs."""
    from quantrac.stack import Mosquitto, _running_pid

    pid = _running_pid(Mosquitto(settings).process)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def auth_configured(run_dir: Path) -> bool:
    home = mosquitto_dir(run_dir)
    return (home / "passwd").is_file() and (home / "acl").is_file()


# --- TLS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def ensure_tls(run_dir: Path, host: str) -> TlsFiles:
    """A local CA and a broker certificate for `host` under run_dir/mosquitto/tls (made once, kept)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    tls = mosquitto_dir(run_dir) / "tls"
    files = TlsFiles(tls / "ca.crt", tls / "server.crt", tls / "server.key")
    if all(p.is_file() for p in (files.ca_cert, files.cert, files.key)):
        return files
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quantrac local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        alt = [x509.DNSName(host)]
    alt.append(x509.DNSName("localhost"))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls.mkdir(parents=True, exist_ok=True)
    _write_private(tls / "ca.key", ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()).decode())
    _write_private(files.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode())
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    log.info("gateways.tls_generated", ca=str(files.ca_cert), host=host)
    return files


def mosquitto_auth_lines(settings: Settings) -> list[str]:
    """The authentication and TLS part of mosquitto.conf for this run_dir."""
    home = mosquitto_dir(settings.run_dir)
    if auth_configured(settings.run_dir):
        lines = ["allow_anonymous false", f"password_file {home / 'passwd'}", f"acl_file {home / 'acl'}"]
    else:
        lines = ["# No accounts generated yet (`quantrac gateways sync`): anonymous clients on loopback.",
                 "allow_anonymous true"]
    if settings.mosquitto_tls_port:
        tls = ensure_tls(settings.run_dir, settings.mqtt_host)
        lines += ["", f"listener {settings.mosquitto_tls_port} {settings.mqtt_host}",
                  f"cafile {tls.ca_cert}", f"certfile {tls.cert}", f"keyfile {tls.key}", "tls_version tlsv1.2"]
    return lines

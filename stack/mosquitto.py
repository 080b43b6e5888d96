"""The local Mosquitto: its config rendered from deploy/local/mosquitto.conf with the generated accounts and ACL
(stack/mosquitto_accounts.py), and a raw MQTT CONNECT probe.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import time
from pathlib import Path

import structlog

from quantrac.mqtt_accounts import bridge_login
from stack.mosquitto_accounts import ensure_accounts, mosquitto_auth_lines
from stack.process import PROBE_TIMEOUT_S, ProcessSpec, render, require_binary
from stack.service import PortUse, Service

log = structlog.get_logger(__name__)


class Mosquitto(Service):
    """The local MQTT broker, with the generated accounts and ACL: it never accepts anonymous clients."""
    name = "mosquitto"
    exe = "mosquitto"

    @property
    def home(self) -> Path:
        """The broker's folder under run_dir: config, persistence data and the generated accounts."""
        return self.run_dir / "mosquitto"

    @property
    def conf(self) -> Path:
        """The rendered mosquitto.conf; its path on the command line marks the process as this run_dir's broker."""
        return self.home / "mosquitto.conf"

    @property
    def endpoint(self) -> str:
        """`mqtt://host:port`, as `quantrac stack status` shows it."""
        return f"mqtt://{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    @property
    def ports(self) -> list[PortUse]:
        """The MQTT listener, with the setting that moves it."""
        return [PortUse(self.settings.mqtt_host, self.settings.mqtt_port, "QUANTRAC_MQTT_PORT=<port>")]

    @property
    def process(self) -> ProcessSpec:
        """Where the broker's pid and logs live, and its config path that identifies its process."""
        return ProcessSpec(
            name=self.name,
            exe=self.exe,
            marker=str(self.conf),
            pid_file=self.run_dir / "pids" / "mosquitto.pid",
            output_log=self.logs_dir / "mosquitto.out",
            logs=(self.logs_dir / "mosquitto.out", self.logs_dir / "mosquitto.log"),
        )

    def check(self) -> None:
        """Healthy when the broker accepts the bridge's login; raises ConnectionRefusedError with the CONNACK code otherwise."""
        username, password = bridge_login(self.settings)
        code = mqtt_connack(self.settings.mqtt_host, self.settings.mqtt_port, username, password)
        if code != 0:
            raise ConnectionRefusedError(f"the broker refused the MQTT connection of {username or 'an anonymous client'} "
                                         f"with CONNACK return code {code}")

    def after_start(self) -> None:
        """Keep the accounts in step with the seed registry (and the test account setting); SIGHUPs our broker."""
        ensure_accounts(self.settings)

    def prepare(self) -> tuple[list[str], Path | None]:
        """Generate the accounts (before the config, so the broker never starts open), render the config; returns argv and cwd."""
        binary = require_binary("mosquitto", "mosquitto mosquitto-clients", extra_dirs=("/usr/sbin", "/usr/local/sbin"))
        ensure_accounts(self.settings)  # before the config is rendered: the broker never starts anonymous
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        render(
            "mosquitto.conf",
            self.conf,
            run_dir=self.run_dir,
            # As root, mosquitto switches to the `mosquitto` user unless told otherwise, and that
            # user may not be able to write into run_dir (or even reach it). Stay root instead.
            user="root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
            pid_file=self.home / "mosquitto.pid",
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_port,
            data_dir=self.home / "data",
            client_expiration=_mosquitto_duration(self.settings.mqtt_session_expiry_s),
            max_queued_bytes=1024**3,
            message_size_limit=self.settings.mqtt_message_size_limit,
            log_file=self.logs_dir / "mosquitto.log",
            auth="\n".join(mosquitto_auth_lines(self.settings)),
        )
        return [binary, "-c", str(self.conf)], self.home


def _mosquitto_duration(seconds: int) -> str:
    """mosquitto durations take h/d/w/m/y units only (no seconds); round up to whole hours."""
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    return f"{max(1, -(-seconds // 3600))}h"


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _mqtt_remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def mqtt_connack(host: str, port: int, username: str | None = None, password: str | None = None) -> int:
    """Send an MQTT 3.1.1 CONNECT and return the CONNACK return code (0 = accepted).

    A raw exchange rather than a client library: it is the smallest possible proof that an
    MQTT broker (and not some other program) owns the port, with a hard timeout.
    """
    flags = 0x02  # clean session: the probe leaves no state behind
    payload = _mqtt_string(f"quantrac-stack-probe-{os.getpid()}-{time.monotonic_ns() % 10**9}")
    if username:
        flags |= 0x80
        payload += _mqtt_string(username)
        if password:
            flags |= 0x40
            payload += _mqtt_string(password)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + payload
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
        sock.sendall(b"\x10" + _mqtt_remaining_length(len(body)) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise ConnectionError(f"{host}:{port} closed the connection without an MQTT CONNACK")
            reply += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    if reply[0] != 0x20 or reply[1] != 0x02:
        raise ConnectionError(f"{host}:{port} answered {reply.hex()}, which is not an MQTT CONNACK")
    return reply[3]

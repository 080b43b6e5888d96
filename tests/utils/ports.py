"""TCP ports on loopback that are free now, chosen at run time (no fixed ranges that two test sessions, or a
test and a benchmark, could both reach for).

They are drawn at random from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): a port
the kernel hands out itself (`bind(("127.0.0.1", 0))`) may later become the local end of one of the many
outgoing connections a test session makes, and the process meant to listen on it then finds it taken.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path

_LOWEST = 20000
_draw = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_run(count: int, attempts: int = 200) -> int:
    """The first of `count` consecutive ports nothing listens on now, outside the ephemeral range."""
    highest = _ephemeral_start() - count
    for _ in range(attempts):
        base = _draw.randrange(_LOWEST, highest)
        with ExitStack() as held:
            try:
                for port in range(base, base + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1 in {_LOWEST}-{highest} after {attempts} draws")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now, outside the ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port_run(1)
        if port not in ports:
            ports.append(port)
    return ports


def free_port() -> int:
    return free_port_run(1)

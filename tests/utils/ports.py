"""TCP ports on loopback that are free now, chosen by the kernel at run time (no fixed ranges that two test
sessions, or a test and a benchmark, could both reach for)."""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now (held together while chosen, so never the same twice)."""
    with ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def free_port_run(count: int, attempts: int = 50) -> int:
    """The first of `count` consecutive free ports (for processes that serve on base + replica index)."""
    for _ in range(attempts):
        base = free_port()
        with ExitStack() as held:
            try:
                for port in range(base, base + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1 after {attempts} tries")

"""Real local receivers for notification tests: an HTTP server that fails the first N requests, an SMTP server."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator


@dataclass
class Received:
    fail_first: int = 0
    status_when_failing: int = 503
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def http_receiver(fail_first: int = 0, status_when_failing: int = 503) -> Iterator[tuple[str, Received]]:
    """A webhook receiver on a free loopback port; yields its URL and what it received."""
    got = Received(fail_first, status_when_failing)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with got.lock:
                got.requests.append(({k: v for k, v in self.headers.items()}, body))
                failing = len(got.requests) <= got.fail_first
            self.send_response(got.status_when_failing if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def smtp_receiver() -> Iterator[tuple[int, list[Any]]]:
    """An aiosmtpd server on a free loopback port; yields its port and the envelopes it received."""
    import socket

    from aiosmtpd.controller import Controller

    messages: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            messages.append(envelope)
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, messages
    finally:
        controller.stop()

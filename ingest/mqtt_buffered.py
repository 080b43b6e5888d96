"""A paho-mqtt client that reads the socket in large chunks.

paho 2.1 reads a packet with at least three `recv` calls (the command byte, each byte of the
remaining length, then the rest) and handles one packet per `select` (`loop_read` reads as many
packets as it has QoS 2 messages in flight, at least one). Each call is a system call that lets
go of the GIL, so the bridge's network thread paid four system calls and as many GIL hand-overs per
message. Here `recv` takes whatever the socket holds (up to `READ_CHUNK`) and paho's parser is fed
from that buffer; `loop_read` goes on until the buffer is empty, so nothing waits in it for the next
`select`. A packet split across reads is parsed as before: paho keeps its partial state, and the
next `recv` of the socket continues it. paho-mqtt is pinned (pyproject.toml);
tests/test_mqtt_buffered.py holds this client to what paho itself receives from the same bytes.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt

READ_CHUNK = 256 * 1024
"""Most bytes taken from the socket at once."""


class BufferedClient(mqtt.Client):
    """`paho.mqtt.client.Client` with buffered reads; everything else is paho's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments of `paho.mqtt.client.Client`."""
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0
        self._read_sock: socket.socket | Any = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_sock is not self._sock:  # a new connection: nothing of the old one may be parsed
            self._read_buffer, self._read_pos, self._read_sock = b"", 0, self._sock
        if self._read_pos >= len(self._read_buffer):
            self._read_buffer, self._read_pos = b"", 0
            data = super()._sock_recv(max(bufsize, READ_CHUNK))  # raises as paho's when nothing is there
            if len(data) <= bufsize:
                return data
            self._read_buffer = data
        end = self._read_pos + bufsize
        chunk = self._read_buffer[self._read_pos:end]
        self._read_pos = min(end, len(self._read_buffer))
        return chunk

    def buffered(self) -> int:
        """Bytes read from the current connection and not yet parsed."""
        if self._read_sock is not self._sock:
            return 0
        return len(self._read_buffer) - self._read_pos

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """paho's `loop_read`, repeated until every packet already read from the socket is handled."""
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self.buffered():
            rc = super().loop_read(max_packets)
        return rc

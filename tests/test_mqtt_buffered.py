"""The bridge's buffered paho client receives exactly what paho receives from the same bytes, however they are split."""

from __future__ import annotations

import select
import socket
import struct
from itertools import pairwise

import paho.mqtt.client as mqtt
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.mqtt_buffered import BufferedClient


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    """An MQTT 5 PUBLISH at QoS 1 (no properties), as the broker sends it."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + struct.pack("!H", mid) + b"\x00" + payload
    return bytes([0x32]) + remaining_length(len(body)) + body


def receive(client: mqtt.Client, wire: bytes, cuts: list[int]) -> list[tuple[str, bytes, int]]:
    """Feed `wire` to `client` over a real socket pair, written in pieces at `cuts`, reading after each piece."""
    got: list[tuple[str, bytes, int]] = []
    client.on_message = lambda _c, _u, m: got.append((m.topic, m.payload, m.mid))
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(10)
    client._sock = ours  # noqa: SLF001 (a connected client without a broker: paho reads whatever the socket holds)
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # noqa: SLF001
    try:
        bounds = [0, *sorted(set(cuts)), len(wire)]
        for start, end in pairwise(bounds):
            theirs.sendall(wire[start:end])
            assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            if isinstance(client, BufferedClient):  # one loop_read handled all that had arrived
                assert client.buffered() == 0 and not select.select([ours], [], [], 0)[0]
            while select.select([ours], [], [], 0)[0]:  # paho's own: one packet a loop_read
                assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    finally:
        client._sock = None  # noqa: SLF001
        ours.close()
        theirs.close()
    return got


def new_client(cls: type[mqtt.Client]) -> mqtt.Client:
    return cls(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)


messages = st.lists(st.tuples(st.sampled_from(["quantrac/v1/stations/A/readings", "quantrac/v1/stations/HD-DAIAN-WW01/readings"]),
                              st.one_of(st.binary(max_size=300), st.binary(min_size=5_000, max_size=20_000)),
                              st.integers(1, 65535)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(messages, st.data())
def test_every_message_is_received_as_paho_receives_it(sent: list[tuple[str, bytes, int]], data: st.DataObject) -> None:
    wire = b"".join(publish_packet(topic, payload, mid) for topic, payload, mid in sent)
    assume(len(wire) < 150_000)  # what a socket pair holds before the writer would wait for the reader
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    buffered = receive(new_client(BufferedClient), wire, cuts)
    assert buffered == receive(new_client(mqtt.Client), wire, cuts) == sent


def test_many_messages_in_one_read_are_handled_in_one_loop_read() -> None:
    sent = [("quantrac/v1/stations/A/readings", b"x" * 500, mid) for mid in range(1, 201)]
    wire = b"".join(publish_packet(*m) for m in sent)
    client = new_client(BufferedClient)
    got: list[int] = []
    client.on_message = lambda _c, _u, m: got.append(m.mid)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # noqa: SLF001
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # noqa: SLF001
    theirs.sendall(wire)
    client.loop_read()
    assert got == [mid for *_, mid in sent]  # paho alone handles one packet per loop_read
    client._sock = None  # noqa: SLF001
    ours.close()
    theirs.close()


def test_bytes_left_from_a_lost_connection_are_not_parsed_on_the_next() -> None:
    client = new_client(BufferedClient)
    assert isinstance(client, BufferedClient)
    first = publish_packet("quantrac/v1/stations/A/readings", b"old", 1)
    ours, theirs = socket.socketpair()
    theirs.sendall(first + first)
    client._sock = ours  # noqa: SLF001
    assert client._sock_recv(1) == first[:1]  # noqa: SLF001 (the rest of both packets is now in the buffer)
    assert client.buffered() == 2 * len(first) - 1
    client._sock = socket.socket()  # noqa: SLF001 (reconnected)
    assert client.buffered() == 0
    for s in (ours, theirs, client._sock):  # noqa: SLF001
        s.close()

"""The bridge's batched PUBACKs are byte for byte the PUBACKs paho sends one by one, in the same order."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from ingest.bridge import AckQueue, PendingMessage, queue_pubacks


def unconnected_client() -> mqtt.Client:
    """A client whose queued packets stay in its queue (no connection to write them to)."""
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)


def queued_bytes(client: mqtt.Client) -> bytes:
    return b"".join(bytes(packet["packet"]) for packet in client._out_packet)  # noqa: SLF001 (what would be written)


def test_a_run_of_pubacks_is_what_paho_acks_one_by_one() -> None:
    mids = [1, 7, 300, 65535, 2]
    one_by_one, batched = unconnected_client(), unconnected_client()
    for mid in mids:
        one_by_one.ack(mid, 1)
    queue_pubacks(batched, mids)
    assert queued_bytes(batched) == queued_bytes(one_by_one)
    assert len(batched._out_packet) == 1  # noqa: SLF001 (one write for the run)


def test_the_ack_queue_hands_over_each_completed_run_in_arrival_order() -> None:
    runs: list[list[int]] = []
    queue = AckQueue(lambda _mid, _qos: None, lambda ready: runs.append([m.mid for m in ready]))
    first, second, third = (PendingMessage(mid=mid, qos=1, remaining=1) for mid in (1, 2, 3))
    for message in (first, second, third):
        queue.arrived(message)
    queue.confirm(third)
    queue.confirm(second)
    assert runs == []
    queue.confirm(first)
    assert runs == [[1, 2, 3]]

"""An event that is never acknowledged when Faust skips it, so a skipped reading is redelivered.

faust-streaming skips (does not yield) a message fetched under an older consumer generation or
while flow control is off during a rebalance or table recovery, and *acknowledges* it anyway
(`Stream._py_aiter`). Its offset can then be committed although the reading was never
processed, and it is lost: seen here as a few readings missing when a second worker joined
under load. Refusing that acknowledgement keeps the offset uncommitted; the consumer seeks
back to the committed offset after the rebalance, reads the message again under the new
generation and processes it. A refused ack on a batch that was processed just before a
rebalance only causes a redelivery, which the idempotent store absorbs.

A refused ack also *holds* its offset in the consumer (`processors/consumer.py`): Faust would
otherwise commit the acknowledged offsets after it and so step over the hole.
"""

from __future__ import annotations

from typing import cast

import faust

from processors.consumer import HoldingConsumer


class HeldEvent(faust.Event):
    """Only events of the agents' source topics are held back; table changelogs are read by the
    recovery while flow control is off and must be acknowledged as usual."""

    held_topics: frozenset[str] = frozenset()

    def ack(self) -> bool:
        """Acknowledge, unless Faust skipped this event of a held topic: then hold its offset and refuse."""
        app = self.app
        skipped = not app.flow_control.is_active() or self.message.generation_id != app.consumer_generation_id
        if skipped and self.message.topic in self.held_topics:
            consumer = cast(HoldingConsumer, app.consumer)  # the app's transport is HoldingTransport (processors/app.py)
            consumer.hold(self.message.tp, self.message.offset)
            return False
        return super().ack()


def holding(topics: set[str]) -> type[HeldEvent]:
    """The event class that holds back skipped events of `topics`."""
    return type("HeldEvent", (HeldEvent,), {"held_topics": frozenset(topics)})

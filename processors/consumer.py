"""A Faust consumer that never commits an offset past a reading that was not processed.

faust-streaming decides what to commit from the offsets acknowledged since the last commit
(`Consumer._new_offset`). Two holes let it commit past a message that was never processed:

- its head-gap guard is off by one (faust-streaming #606, fix proposed in #707): with committed
  offset C and acknowledged offsets C+1, C+2, … it commits past C although C was never
  acknowledged; and it skips the guard entirely while the committed offset is 0 or unknown;
- the readings agent refuses the acknowledgement of events Faust skipped during a rebalance
  (`processors/events.py`), which leaves exactly such a hole at the head.

Here a refused acknowledgement *holds* its offset: nothing at or past the lowest held offset of
a partition is committed until that offset is processed and acknowledged (after the consumer
seeks back to the committed offset and reads it again). And with a known committed offset, a
hole at the head of the acknowledged offsets (that the fetcher did not record as a real gap in
the log) keeps the commit where it is. The readings topic is neither compacted nor
transactional, so its offsets have no holes of their own.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, Iterable, Optional, Type

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message


def first_uncommittable(acked: Iterable[int], gap_starts: Iterable[int], committed: Optional[int],
                        held: Iterable[int]) -> Optional[int]:
    """The lowest offset that must not be committed past, or None when there is none.

    `committed` is Kafka's committed position (the next offset to read); a head that starts after
    it means an offset in between was neither acknowledged nor a known gap.
    """
    limits = list(held)
    head = min([*acked, *gap_starts], default=None)
    if committed is not None and head is not None and head > committed:
        limits.append(committed)
    return min(limits, default=None)


class HoldingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with held offsets and a strict head-gap guard."""

    _held_offsets: defaultdict[TP, set[int]]

    @property
    def held_offsets(self) -> defaultdict[TP, set[int]]:
        try:
            return self._held_offsets
        except AttributeError:
            self._held_offsets = defaultdict(set)
            return self._held_offsets

    def hold(self, tp: TP, offset: int) -> None:
        """Keep commits of `tp` below `offset` until a message at that offset is acknowledged."""
        self.held_offsets[tp].add(offset)

    def ack(self, message: Message) -> bool:
        acked = super().ack(message)
        if acked:
            self.held_offsets[message.tp].discard(message.offset)
        return acked

    def _new_offset(self, tp: TP) -> Optional[int]:
        acked = self._acked[tp]
        if not acked:
            return None
        limit = first_uncommittable(acked, (iv.begin for iv in self._gap[tp]), self._committed_offset[tp],
                                    self.held_offsets[tp])
        if limit is None:
            return super()._new_offset(tp)
        later = [o for o in acked if o >= limit]
        acked[:] = [o for o in acked if o < limit]
        try:
            return super()._new_offset(tp) if acked else None
        finally:
            acked.extend(later)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self.held_offsets.pop(tp, None)
        await super().on_partitions_revoked(revoked)


class HoldingTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[Type[Any]] = HoldingConsumer

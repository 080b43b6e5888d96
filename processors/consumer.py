"""A Faust consumer that never commits an offset past a reading that was not processed.

faust-streaming decides what to commit from the offsets acknowledged since the last commit
(`Consumer._new_offset`, reached through processors/faust_compat.py). Three holes let it commit past a message that was never processed:

- its head-gap guard is off by one (faust-streaming #606, fix proposed in #707): with committed
  offset C and acknowledged offsets C+1, C+2, … it commits past C although C was never
  acknowledged; and it skips the guard entirely while the committed offset is 0 or unknown;
- the readings agent refuses the acknowledgement of events Faust skipped during a rebalance
  (`processors/events.py`), which leaves exactly such a hole at the head;
- records fetched for a partition that is paused at that moment (during a rebalance or a table
  recovery) are dropped by Faust's `getmany`; when the next record of that partition arrives,
  Faust takes the jump in offsets for a gap in the log (as in a compacted topic) and commits over
  it. Seen here: 20 readings of one partition skipped and committed over while a worker took over.

Here a refused acknowledgement *holds* its offset: nothing at or past the lowest held offset of
a partition is committed until that offset is processed and acknowledged. With a known committed
offset, a hole at the head of the acknowledged offsets keeps the commit where it is. The readings
topic is neither compacted nor transactional, so its offsets have no real gaps: a jump is never
recorded as a gap there. When a partition's commit has waited at a hole for `rewind_after_s`, the
consumer seeks back to the committed offset and reads the missing records again (what was stored
already is a no-op for the idempotent store).

A partition the group has never committed has no committed offset, and there Faust's guard and
the one above have nothing to compare the head with: in a fresh consumer group, records that never
reached the agent at the head of a partition would be committed over as soon as the next records
were stored. (The loss that first raised this, in test runs, turned out to be TimescaleDB's retention
job dropping stored rows: docs/operations.md. The hole is real all the same.) On a gapless topic
such a partition starts from the log's first offset, as Kafka does for a new group reading from
`earliest`: nothing of it is committed until that offset is known, and a head after it is held and
read again like any other hole.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, ClassVar, Iterable, Optional, Type

import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from processors.faust_compat import CompatConsumer
from quantrac.failures import RateLimitedLog, describe

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)


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


class HoldingConsumer(CompatConsumer):
    """faust's aiokafka consumer with held offsets, a strict head-gap guard and rewinds."""

    gapless_topics: ClassVar[frozenset[str]] = frozenset()
    """Topics whose offsets have no gaps of their own (set by the app: the readings topic)."""
    rewind_after_s: ClassVar[float] = 3.0

    _held_offsets: defaultdict[TP, set[int]]
    _stalled_since: dict[TP, float]
    _log_starts: dict[TP, int]

    def _own(self, name: str, factory: Callable[[], Any]) -> Any:
        """This class's per-partition bookkeeping, made on first use (Faust builds the consumer itself)."""
        try:
            return self.__dict__[name]
        except KeyError:
            return self.__dict__.setdefault(name, factory())

    @property
    def held_offsets(self) -> defaultdict[TP, set[int]]:
        """Per partition: offsets whose acknowledgement was refused, below which nothing is committed."""
        return self._own("_held_offsets", lambda: defaultdict(set))

    def _stalls(self) -> dict[TP, float]:
        return self._own("_stalled_since", dict)

    def log_starts(self) -> dict[TP, int]:
        """Per never-committed partition of a gapless topic: the log's first offset, where this group's reading begins."""
        return self._own("_log_starts", dict)

    def baseline(self, tp: TP) -> Optional[int]:
        """The offset the commit must start from: Kafka's committed offset, else (gapless topics) the log's first offset."""
        committed = self.committed(tp)
        if committed is None and tp.topic in self.gapless_topics:
            return self.log_starts().get(tp)
        return committed

    def hold(self, tp: TP, offset: int) -> None:
        """Keep commits of `tp` below `offset` until a message at that offset is acknowledged."""
        self.held_offsets[tp].add(offset)

    def ack(self, message: Message) -> bool:
        """Faust's acknowledgement, which also releases a hold on the message's offset."""
        acked = super().ack(message)
        if acked:
            self.held_offsets[message.tp].discard(message.offset)
        return acked

    async def record_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """A jump in offsets: a real gap only on topics that can have them; on the readings topic, records were dropped and are not committed over."""
        if tp.topic in self.gapless_topics:
            log.warning("worker.records_skipped", topic=tp.topic, partition=tp.partition, first=offset_from,
                        last=offset_to - 1, action="not committed past; read again from the committed offset")
            return
        await self.faust_record_gap(tp, offset_from, offset_to)

    def next_commit(self, tp: TP) -> Optional[int]:
        """Faust's offset to commit, kept below the first held or never-acknowledged offset; rewinds a partition stalled there."""
        acked = self.acked_offsets(tp)
        if not acked:
            return None
        committed = self.baseline(tp)
        if committed is None and tp.topic in self.gapless_topics:
            self._learn_log_start(tp)
            return None
        limit = first_uncommittable(acked, self.gap_starts(tp), committed, self.held_offsets[tp])
        if limit is None:
            self._stalls().pop(tp, None)
            return self.faust_next_commit(tp)
        later = [o for o in acked if o >= limit]
        acked[:] = [o for o in acked if o < limit]
        try:
            new = self.faust_next_commit(tp) if acked else None
        finally:
            acked.extend(later)
        if new is None and later and committed is not None:
            self._rewind_if_stalled(tp, committed)
        else:
            self._stalls().pop(tp, None)
        return new

    def _rewind_if_stalled(self, tp: TP, committed: int) -> None:
        """Read the partition again from the committed offset once its commit has waited at a hole
        (records never delivered, or held) for `rewind_after_s`."""
        now = time.monotonic()
        since = self._stalls().setdefault(tp, now)
        if now - since < self.rewind_after_s:
            return
        self._stalls()[tp] = now
        _log("warning", "worker.rewind", key=tp, topic=tp.topic, partition=tp.partition, offset=committed,
             held=sorted(self.held_offsets[tp])[:5])
        self.log_starts().pop(tp, None)  # a learned log start is asked again: retention may have moved it meanwhile
        self.app.loop.create_task(self.seek(tp, committed))

    def _learn_log_start(self, tp: TP) -> None:
        """Ask the broker for `tp`'s first offset in the background (one request at a time per partition)."""
        pending: set[TP] = self._own("_log_start_pending", set)
        if tp not in pending:
            pending.add(tp)
            self.app.loop.create_task(self._fetch_log_start(tp, pending))

    async def _fetch_log_start(self, tp: TP, pending: set[TP]) -> None:
        try:
            found = await self.earliest_offsets(tp)
        except Exception as exc:  # noqa: BLE001 (asked again at the next commit; nothing is committed meanwhile)
            _log("warning", "worker.log_start_unknown", key=tp, topic=tp.topic, partition=tp.partition, error=describe(exc),
                 action="nothing of the partition is committed until its first offset is known; asked again")
        else:
            if tp in found and tp in self.assignment():
                self.log_starts()[tp] = int(found[tp])
        finally:
            pending.discard(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Forget the holds, stalls and log starts of partitions this worker no longer reads."""
        for tp in revoked:
            self.held_offsets.pop(tp, None)
            self._stalls().pop(tp, None)
            self.log_starts().pop(tp, None)
        await super().on_partitions_revoked(revoked)


class HoldingTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with `HoldingConsumer` as its consumer (the app's `broker` transport)."""
    Consumer: ClassVar[Type[Any]] = HoldingConsumer

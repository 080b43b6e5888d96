"""Every use of faust-streaming's private consumer state, in one place, for the version it was written against.

Faust keeps no public accessor for the offsets it has acknowledged, the gaps it has recorded or the
offset it last committed, and no hook in its commit decision. quantrac needs all of them
(processors/consumer.py never commits past a reading it did not process; processors/readings_agent.py
reports the consumer lag), so this module reads and overrides Faust's private names, and nothing
else does. Importing it with another faust-streaming version fails: check each override below
against the new version's `faust/transport/consumer.py`, then change `FAUST_VERSION`.

The overrides, and why:

- `Consumer._new_offset(tp)`, the offset Faust commits next, becomes `next_commit(tp)`. Its head-gap
  guard is off by one and skipped while the committed offset is 0 or unknown, so it can commit past
  an offset that was never acknowledged: faust-streaming/faust#606 (open; #312/#313 fixed it in
  0.8.5, the gap handling of #378 in 0.9.0 broke it again).
- `Consumer._add_gap(tp, offset_from, offset_to)`, which records a jump in offsets as a gap in the log
  (for compacted topics: robinhood/faust#401, #403) and commits over it, becomes `record_gap(...)`.
  Records that Faust's `getmany` drops for a partition paused during a rebalance or a table recovery
  leave such a jump on a topic that has no gaps; no upstream issue names that case (the nearest are
  faust-streaming/faust#216 and #241, missed events on a rebalance).
- `App._new_transport()`, which builds the transport from the broker URL's scheme, builds the class
  named by `CompatApp.transport_class` instead: faust has no public setting for the transport class
  (the worker's consumer is `processors.consumer.HoldingConsumer`).
- Read only: `_acked` (acknowledged offsets per partition, a list Faust sorts and trims),
  `_acked_index` (the same as a set), `_gap` (an IntervalTree per partition) and `_committed_offset`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from typing import Any, ClassVar, Optional

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

FAUST_VERSION = "0.15.3"
"""The faust-streaming release whose private consumer state this module reads and overrides."""

_installed = version("faust-streaming")
if _installed != FAUST_VERSION:
    raise ImportError(f"processors/faust_compat.py was written against faust-streaming {FAUST_VERSION}, but "
                      f"{_installed} is installed: check the overrides it documents against the new version's "
                      f"faust/transport/consumer.py, then update FAUST_VERSION (and the pin in pyproject.toml)")


class CompatConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with its private commit bookkeeping behind public names."""

    def acked_offsets(self, tp: TP) -> list[int]:
        """The acknowledged, not yet committed offsets of `tp`: Faust's own list (mutating it changes the commit)."""
        return self._acked[tp]

    def gap_starts(self, tp: TP) -> Iterator[int]:
        """First offsets of the gaps Faust recorded for `tp`."""
        return (interval.begin for interval in self._gap[tp])

    def committed(self, tp: TP) -> Optional[int]:
        """The offset last committed for `tp` (the next one to read), None when unknown."""
        return self._committed_offset.get(tp)

    def faust_next_commit(self, tp: TP) -> Optional[int]:
        """Faust's own choice of the offset to commit next."""
        return super()._new_offset(tp)

    async def faust_record_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's own recording of a gap in the log."""
        await super()._add_gap(tp, offset_from, offset_to)

    def next_commit(self, tp: TP) -> Optional[int]:
        """The offset to commit next; Faust's choice unless a subclass knows better."""
        return self.faust_next_commit(tp)

    async def record_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """A jump from `offset_from` to `offset_to` was seen; Faust records it as a gap unless a subclass knows better."""
        await self.faust_record_gap(tp, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> Optional[int]:  # the override of faust-streaming/faust#606
        return self.next_commit(tp)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:  # the override for dropped records
        await self.record_gap(tp, offset_from, offset_to)


class CompatApp(faust.App):
    """faust.App whose transport is an instance of `transport_class` (a subclass sets it)."""

    transport_class: ClassVar[type[faust_aiokafka.Transport]] = faust_aiokafka.Transport

    def _new_transport(self) -> faust_aiokafka.Transport:  # the override: no public setting chooses the transport class
        return self.transport_class(self.conf.broker_consumer, self)


def committed_offset(consumer: Any, tp: TP) -> Optional[int]:
    """The committed offset of `tp` in any Faust consumer (the readings agent's lag report)."""
    return consumer._committed_offset.get(tp)


def offline_consumer(cls: type[CompatConsumer], tp: TP, committed: Optional[int], acked: Iterable[int],
                     gaps: Iterable[tuple[int, int]] = ()) -> Any:
    """A consumer of class `cls` holding only the commit bookkeeping of one partition, with no connection:
    what the commit decision reads in a running worker (for unit tests of that decision)."""
    consumer = cls.__new__(cls)
    acked = list(acked)
    consumer._acked = defaultdict(list, {tp: acked})
    consumer._acked_index = defaultdict(set, {tp: set(acked)})
    consumer._gap = defaultdict(IntervalTree, {tp: IntervalTree.from_tuples(gaps)})
    consumer._committed_offset = defaultdict(lambda: None, {tp: committed})
    return consumer


def commit_acknowledged(consumer: Any, tp: TP, committed: int, acked: Iterable[int]) -> None:
    """Put `consumer` where Faust is after committing `committed` with `acked` acknowledged since."""
    consumer._committed_offset[tp] = committed
    consumer._acked[tp].extend(acked)

"""The worker's consumer never commits past an offset that was not acknowledged (processors/consumer.py).

The commit decision runs on faust's own bookkeeping (reached only through processors/faust_compat.py);
these tests drive it with the acknowledged offsets, gaps and holds a running consumer would have.
"""

from __future__ import annotations

from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from processors.consumer import HoldingConsumer, first_uncommittable
from processors.faust_compat import commit_acknowledged, offline_consumer

TP0 = TP("quantrac.readings", 0)


def consumer(committed: int | None, acked: list[int], held: set[int] = frozenset(), gaps: list[tuple[int, int]] = ()) -> HoldingConsumer:
    """A consumer in the state the commit decision reads: only the bookkeeping, no connection."""
    c = offline_consumer(HoldingConsumer, TP0, committed, acked, gaps)
    for offset in held:
        c.hold(TP0, offset)
    return c


def test_a_single_unacknowledged_offset_at_the_head_is_not_committed_past() -> None:
    """faust-streaming #606: committed 100, acked 101..104 (100 never acked) must not commit 105."""
    assert consumer(100, [101, 102, 103, 104]).next_commit(TP0) is None


def test_an_unknown_or_zero_committed_offset_does_not_switch_the_guard_off() -> None:
    assert consumer(0, [1, 2, 3]).next_commit(TP0) is None
    assert consumer(None, [1, 2, 3], held={0}).next_commit(TP0) is None


def test_a_held_offset_stops_the_commit_just_before_it_and_releases_it_once_acknowledged() -> None:
    c = consumer(100, [100, 101, 103, 104], held={102})
    assert c.next_commit(TP0) == 102
    assert sorted(c.acked_offsets(TP0)) == [103, 104], "acknowledged offsets past the hold are kept for later"
    commit_acknowledged(c, TP0, 102, [102])
    c.held_offsets[TP0].discard(102)
    assert c.next_commit(TP0) == 105


def test_a_gap_the_fetcher_recorded_is_stepped_over() -> None:
    """Offsets that do not exist in the log (compaction, transaction markers) are not waited for."""
    assert consumer(100, [102, 103], gaps=[(100, 102)]).next_commit(TP0) == 104


def test_first_uncommittable_names_the_lowest_limit() -> None:
    assert first_uncommittable([5, 6], [], 5, []) is None
    assert first_uncommittable([6], [], 5, []) == 5
    assert first_uncommittable([5, 6, 9], [], 5, [8, 7]) == 7


def gapless(committed: int | None, acked: list[int], log_start: int | None) -> HoldingConsumer:
    """A consumer of the readings topic (no gaps of its own); `log_start` is the log's first offset once known."""
    c = consumer(committed, acked)
    c.gapless_topics = frozenset({TP0.topic})
    c._learn_log_start = lambda tp: None  # type: ignore[method-assign]  # no broker here: the test says what is known
    if log_start is not None:
        c.log_starts()[TP0] = log_start
    return c


def test_a_partition_the_group_never_committed_is_not_committed_past_an_unprocessed_head() -> None:
    """A fresh consumer group has no committed offset. Offsets 0-4 dropped before delivery and 5-7 stored
    must not commit 8 (what Faust did: 5 archive records lost in a test run); the log's first offset
    stands in for the committed one, and until it is known nothing is committed."""
    asked: list[TP] = []
    c = gapless(None, [5, 6, 7], log_start=None)
    c._learn_log_start = asked.append  # type: ignore[method-assign]
    assert c.next_commit(TP0) is None and asked == [TP0], "nothing committed before the log's first offset is known"
    assert gapless(None, [5, 6, 7], log_start=0).next_commit(TP0) is None, "head 5 after the log start 0: held"
    assert gapless(None, [5, 6, 7], log_start=5).next_commit(TP0) == 8, "a log that starts at 5 (older records deleted)"
    assert gapless(3, [3, 4], log_start=0).next_commit(TP0) == 5, "a committed offset wins over the log start"


@given(committed=st.integers(0, 50), processed=st.lists(st.booleans(), min_size=1, max_size=40),
       held_mask=st.lists(st.booleans(), min_size=40, max_size=40), order=st.randoms(use_true_random=False),
       never_committed=st.booleans())
def test_the_commit_never_passes_an_offset_that_was_not_acknowledged(
        committed: int, processed: list[bool], held_mask: list[bool], order, never_committed: bool) -> None:
    """`never_committed`: the group has no committed offset and the log starts at `committed`."""
    offsets = [committed + i for i in range(len(processed))]
    acked = [o for o, done in zip(offsets, processed, strict=False) if done]
    order.shuffle(acked)
    held = {o for o, done, h in zip(offsets, processed, held_mask, strict=False) if not done and h}
    c = gapless(None, acked, log_start=committed) if never_committed else consumer(committed, acked)
    for offset in held:
        c.hold(TP0, offset)
    new = c.next_commit(TP0)
    first_missing = next((o for o, done in zip(offsets, processed, strict=False) if not done), offsets[-1] + 1)
    if first_missing == committed:
        assert new is None
    else:
        assert new == first_missing, "the whole acknowledged prefix is committed, and nothing past it"


def test_a_jump_in_offsets_of_the_readings_topic_is_not_a_gap_and_a_stalled_commit_rewinds() -> None:
    """Records Faust dropped (fetched while their partition was paused) leave a jump; on a topic
    with no real gaps it must not be committed over, and the partition is read again."""
    import asyncio
    import types

    async def scenario() -> list[tuple[TP, int]]:
        c = consumer(1512, [1532, 1533])
        c.gapless_topics = frozenset({TP0.topic})
        c.rewind_after_s = 0.0
        seeks: list[tuple[TP, int]] = []

        async def seek(tp: TP, offset: int) -> None:
            seeks.append((tp, offset))

        c.seek = seek  # type: ignore[method-assign]
        c.app = types.SimpleNamespace(loop=asyncio.get_running_loop())
        await c.record_gap(TP0, 1512, 1532)
        assert not list(c.gap_starts(TP0)), "no gap recorded on the readings topic"
        assert c.next_commit(TP0) is None and c.next_commit(TP0) is None
        await asyncio.sleep(0)
        return seeks

    seeks = asyncio.run(scenario())
    assert seeks and seeks[0] == (TP0, 1512), "read again from the committed offset"


def test_the_faust_compatibility_module_is_pinned_to_the_installed_and_required_faust() -> None:
    """processors/faust_compat.py refuses another faust-streaming; its version is the one pyproject.toml pins."""
    import tomllib
    from importlib.metadata import version

    from processors.faust_compat import FAUST_VERSION
    from quantrac.settings import REPO_ROOT

    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"faust-streaming=={FAUST_VERSION}" in pins
    assert version("faust-streaming") == FAUST_VERSION

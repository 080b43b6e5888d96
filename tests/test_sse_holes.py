"""The alert stream waits at a hole in the event ids (a transaction still committing), not for ever."""

from __future__ import annotations

from api.routes.stream import HoleWait


def test_consecutive_ids_pass_at_once() -> None:
    assert HoleWait(10).may_pass(cursor=4, next_id=5, now=0.0, next_age_s=0.0)


def test_a_fresh_hole_holds_the_stream_until_the_grace_has_passed() -> None:
    holes = HoleWait(10)
    assert not holes.may_pass(4, 6, now=100.0, next_age_s=0.1)
    assert not holes.may_pass(4, 6, now=109.9, next_age_s=9.9)
    assert holes.may_pass(4, 6, now=110.0, next_age_s=1.0), "the hole is ten seconds old: a rolled-back transaction"


def test_a_hole_behind_an_old_event_is_stepped_over_at_once() -> None:
    """Resuming over history: holes left by old rollbacks cost no waiting."""
    assert HoleWait(10).may_pass(4, 6, now=0.0, next_age_s=3600.0)


def test_a_new_hole_starts_its_own_wait() -> None:
    holes = HoleWait(10)
    assert not holes.may_pass(4, 6, now=0.0, next_age_s=0.0)
    assert holes.may_pass(4, 5, now=1.0, next_age_s=0.0), "the missing event committed"
    assert not holes.may_pass(5, 7, now=50.0, next_age_s=0.0)

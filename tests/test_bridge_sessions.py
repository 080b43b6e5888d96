"""The bridge session table (ingest/heartbeat.py): when a bridge counts as alive, stranded, or one of the others."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.drain import DrainFailed, drain_topic
from quantrac.bridge_sessions import KnownSession, forget, known_sessions, others_alive, record, session_of


@given(st.sampled_from(["running", "stopping", "stopped"]), st.floats(min_value=0.1, max_value=600),
       st.floats(min_value=0, max_value=1e6), st.floats(min_value=1, max_value=1e4))
def test_a_session_is_stranded_past_the_threshold_and_alive_within_three_heartbeats(
        state: str, heartbeat_s: float, silent_s: float, after_s: float) -> None:
    session = KnownSession("b-1", "$share/g/t", state, heartbeat_s, silent_s)  # type: ignore[arg-type]
    assert session.stranded(after_s) == (silent_s > after_s)
    assert session.looks_alive() == (state != "stopped" and silent_s < 3 * heartbeat_s)


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "+"])
def test_a_client_id_that_cannot_be_a_topic_level_is_refused(bad: str) -> None:
    with pytest.raises(DrainFailed):
        drain_topic(bad)
    assert drain_topic("quantrac-bridge-2") == "quantrac/v1/bridges/quantrac-bridge-2/drain"


@pytest.mark.integration
def test_heartbeats_tell_the_other_live_bridges_of_a_group(db: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:6]
    me, peer, stopping, elsewhere, stale = (f"{tag}-{n}" for n in ("me", "peer", "stopping", "elsewhere", "stale"))
    group, other_group = f"$share/{tag}/t", f"$share/{tag}-x/t"
    with db.transaction():
        record(db, me, group, "running", 10)
        record(db, peer, group, "running", 10)
        record(db, stopping, group, "stopping", 10)
        record(db, elsewhere, other_group, "running", 10)
        record(db, stale, group, "running", 10)
        db.execute("UPDATE bridge_sessions SET last_seen = now() - interval '5 minutes' WHERE client_id = %s", (stale,))
    try:
        assert others_alive(db, me, group) == [peer]
        found = session_of(db, stale)
        assert found is not None and found.silent_s >= 299 and found.stranded(120) and not found.looks_alive()
        mine = session_of(db, me)
        assert mine is not None and mine.silent_s < 5 and not mine.stranded(120) and mine.looks_alive()
        record(db, me, group, "stopped", 10)
        assert session_of(db, me).state == "stopped"  # type: ignore[union-attr]
        assert forget(db, me) and not forget(db, me)
        assert me not in {s.client_id for s in known_sessions(db)}
    finally:
        for client_id in (me, peer, stopping, elsewhere, stale):
            forget(db, client_id)

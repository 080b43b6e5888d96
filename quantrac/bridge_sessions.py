"""Which bridges hold an MQTT session, and when each was last seen alive (table `bridge_sessions`).

A bridge's persistent session outlives its process: while the process is away the broker keeps
dealing that session its share of the shared subscription. Nothing in MQTT tells anyone else that
such a session exists, so every bridge records itself here and refreshes `last_seen` every
`bridge_heartbeat_s`; the row goes once the session has ended. A row whose heartbeat is older than
`bridge_stranded_after_s` is a *stranded* session: the API exports it as
`quantrac_bridge_silent_seconds{client_id}` and `quantrac_bridge_stranded{client_id}`, and the alert
`QuantracBridgeStranded` names `quantrac bridge drain <client id>`.

Ages are computed by PostgreSQL (`now() - last_seen`), so clocks of bridge and API hosts do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

State = Literal["running", "stopping", "stopped"]


@dataclass(frozen=True)
class KnownSession:
    """A bridge session as last recorded, with the seconds since its last heartbeat."""

    client_id: str
    subscription: str
    state: State
    heartbeat_s: float
    silent_s: float

    def stranded(self, after_s: float) -> bool:
        """No heartbeat for longer than `after_s`: the process is gone (or hung) and its session waits."""
        return self.silent_s > after_s

    def looks_alive(self) -> bool:
        """A running bridge whose last heartbeat is recent (within three of its intervals)."""
        return self.state != "stopped" and self.silent_s < 3 * self.heartbeat_s

    def is_other_live_member(self, client_id: str, subscription: str) -> bool:
        """Another bridge, running (not stopping) on `subscription`, seen recently."""
        return (self.client_id != client_id and self.subscription == subscription and self.state == "running"
                and self.looks_alive())


def record(conn: psycopg.Connection, client_id: str, subscription: str, state: State, heartbeat_s: float) -> None:
    """Insert or refresh the bridge's row (one statement, autocommit or the caller's transaction)."""
    conn.execute(
        "INSERT INTO bridge_sessions (client_id, subscription, state, heartbeat_s) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (client_id) DO UPDATE SET subscription = EXCLUDED.subscription, state = EXCLUDED.state, "
        "heartbeat_s = EXCLUDED.heartbeat_s, last_seen = now(), "
        "started_at = CASE WHEN bridge_sessions.state = 'stopped' THEN now() ELSE bridge_sessions.started_at END",
        (client_id, subscription, state, heartbeat_s))


def forget(conn: psycopg.Connection, client_id: str) -> bool:
    """The session has ended: drop its row. True when there was one."""
    return conn.execute("DELETE FROM bridge_sessions WHERE client_id = %s", (client_id,)).rowcount > 0


def known_sessions(conn: psycopg.Connection) -> list[KnownSession]:
    """Every recorded bridge session, by client id, with its seconds since the last heartbeat by PostgreSQL's clock."""
    rows = conn.execute("SELECT client_id, subscription, state, heartbeat_s, "
                        "extract(epoch FROM now() - last_seen)::float8 FROM bridge_sessions ORDER BY client_id").fetchall()
    return [KnownSession(r[0], r[1], r[2], float(r[3]), max(0.0, float(r[4]))) for r in rows]


def session_of(conn: psycopg.Connection, client_id: str) -> KnownSession | None:
    """The recorded session of `client_id`; None when it has no row (never started, or its session has ended)."""
    return next((s for s in known_sessions(conn) if s.client_id == client_id), None)


def others_alive(conn: psycopg.Connection, client_id: str, subscription: str) -> list[str]:
    """Client ids of other running bridges on the same subscription, seen recently.

    A bridge that is stopping does not count, so that of two bridges stopped at the same moment at
    least one sees the other stopping and keeps its session (the group never loses its last member).
    """
    return [s.client_id for s in known_sessions(conn) if s.is_other_live_member(client_id, subscription)]

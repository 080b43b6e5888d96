"""Leaving a shared subscription without stranding what the broker queued for a bridge.

A bridge's persistent session is a member of the shared subscription: while the bridge is away
Mosquitto keeps dealing that session its share of the messages (MQTT 5 allows either choice;
Mosquitto queues them for the member). A bridge that does not come back under the same client id
therefore strands its share. Draining empties such a session through the normal bridge path:

1. connect under the session's client id (clean start off: the session and its queue are kept);
2. UNSUBSCRIBE the shared filter, so the broker deals new messages to the other members only;
3. SUBSCRIBE a private topic `quantrac/v1/bridges/<client id>/drain` and publish a marker there.
   Mosquitto delivers a client's messages in the order it queued them, so once the marker comes
   back, everything queued before the unsubscribe has been handed over;
4. wait until every message has been confirmed by Kafka and acknowledged (validation, dead letters,
   PUBACK after Kafka: it is the `Bridge` that forwards them), and nothing more arrives;
5. DISCONNECT with a session expiry of 0, which ends the session; then forget its heartbeat row.

`quantrac bridge drain CLIENT_ID` does this for a bridge that is gone; a bridge told
`QUANTRAC_BRIDGE_ON_STOP=drain` does steps 2-5 itself on SIGTERM. Both are idempotent: a session
that no longer exists has nothing to forward and is simply ended again. A drain that times out
leaves the session (unsubscribed, nothing lost) for the next attempt.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

import paho.mqtt.client as mqtt
import psycopg
import structlog
from paho.mqtt.properties import Properties

from ingest.bridge import Bridge, PendingMessage, has_session, subscription_for
from quantrac import bridge_sessions
from quantrac.domain import Station
from quantrac.mqtt_accounts import bridge_session_id
from quantrac.settings import Settings

log = structlog.get_logger(__name__)

DRAIN_TOPIC = "quantrac/v1/bridges/{client_id}/drain"
QUIET_S = 1.0
"""After the marker, nothing may arrive for this long before the session is ended (a second guard
on the broker's ordering; a message after the marker is forwarded like any other and logged)."""


class DrainFailed(RuntimeError):
    """The session could not be emptied; it is kept (unsubscribed) and the drain can be run again."""


class DrainRefused(RuntimeError):
    """Draining now could lose data or fight a live bridge; the message says why and what to do."""


def drain_topic(client_id: str) -> str:
    """The private topic of a session's drain marker (one topic level: the client id)."""
    if not client_id or set(client_id) & set("+#/"):
        raise DrainFailed(f"client id {client_id!r} cannot name an MQTT topic level (it has '+', '#' or '/')")
    return DRAIN_TOPIC.format(client_id=client_id)


class SessionDrain:
    """Empties the session of a connected `Bridge` through the bridge's own forwarding path."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.client = bridge.client
        self.client_id = bridge.settings.mqtt_bridge_client_id
        self.topic = drain_topic(self.client_id)
        self.nonce = uuid.uuid4().hex.encode()
        self.received = 0
        self.after_marker = 0
        self._last_arrival = time.monotonic()
        self._marker = threading.Event()
        self._replies: dict[int, list[mqtt.ReasonCode]] = {}
        self._replied = threading.Condition()
        forward = self.client.on_message
        assert forward is not None

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            self.received += 1
            self._last_arrival = time.monotonic()
            if self._marker.is_set():
                self.after_marker += 1
            forward(client, userdata, msg)

        self.client.on_message = on_message
        self.client.message_callback_add(self.topic, self._on_marker)
        bridge.subscribe_on_connect = False  # a reconnect during the drain must not join the group again
        self.client.on_subscribe = self._on_reply
        self.client.on_unsubscribe = self._on_reply

    def _on_marker(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        # Acknowledged in arrival order like a reading, after everything received before it.
        self.bridge.acks.arrived(PendingMessage(mid=msg.mid, qos=msg.qos, remaining=0))
        if msg.payload == self.nonce:  # a marker of an earlier, interrupted drain is only acknowledged
            self._marker.set()

    def _on_reply(self, _client: mqtt.Client, _userdata: object, mid: int, reason_codes: list[mqtt.ReasonCode],
                  _properties: Properties | None) -> None:
        with self._replied:
            self._replies[mid] = list(reason_codes)
            self._replied.notify_all()

    def _await_reply(self, sent: tuple[mqtt.MQTTErrorCode, int | None], what: str, deadline: float) -> list[mqtt.ReasonCode]:
        rc, mid = sent
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise DrainFailed(f"{what} for {self.client_id} could not be sent ({mqtt.error_string(rc)}): the connection dropped")
        with self._replied:
            if not self._replied.wait_for(lambda: mid in self._replies, timeout=max(0.0, deadline - time.monotonic())):
                raise DrainFailed(f"no answer from the broker to {what} for {self.client_id}")
            return self._replies.pop(mid)

    def run(self, filters: list[str], deadline: float) -> int:
        """Unsubscribe `filters` and forward everything the session holds; returns the messages forwarded.

        Raises DrainFailed when the session could not be emptied before `deadline` (time.monotonic()).
        """
        codes = self._await_reply(self.client.unsubscribe(filters), "UNSUBSCRIBE", deadline)
        # "No subscription found" is no error: the session was lost, expired or drained before.
        log.info("bridge.drain_unsubscribed", client_id=self.client_id,
                 unsuback={f: str(code) for f, code in zip(filters, codes, strict=False)})
        granted = self._await_reply(self.client.subscribe(self.topic, qos=1), "SUBSCRIBE to the drain topic", deadline)
        if granted[0].is_failure:
            raise DrainFailed(f"the broker refused {self.topic} to {self.client_id} ({granted[0]}); the bridge account needs "
                              f"`topic readwrite quantrac/v1/bridges/+/drain` in the Mosquitto ACL (quantrac gateways sync)")
        info = self.client.publish(self.topic, self.nonce, qos=1)
        info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        if not info.is_published():
            raise DrainFailed(f"the drain marker of {self.client_id} was not accepted by the broker (ACL or connection); "
                              f"the bridge account needs `topic readwrite quantrac/v1/bridges/+/drain`")
        next_progress = time.monotonic() + 5
        while not self._empty():
            if time.monotonic() > deadline:
                raise DrainFailed(f"{self.client_id}: {len(self.bridge.acks)} message(s) still unacknowledged "
                                  f"(marker {'seen' if self._marker.is_set() else 'not yet seen'}) at the deadline; "
                                  "check Kafka, then run `quantrac bridge drain` again")
            if time.monotonic() > next_progress:
                log.info("bridge.drain_progress", client_id=self.client_id, forwarded=self.received, unacked=len(self.bridge.acks))
                next_progress += 5
            time.sleep(0.05)  # poll interval of the drain loop, bounded by the deadline
        if self.after_marker:
            log.warning("bridge.drain_after_marker", client_id=self.client_id, messages=self.after_marker,
                        note="forwarded; the broker delivered them after the marker")
        return self.received

    def _empty(self) -> bool:
        # The ack queue holds every message until all its Kafka records are confirmed and it is acknowledged.
        return self._marker.is_set() and len(self.bridge.acks) == 0 and time.monotonic() - self._last_arrival >= QUIET_S


T = TypeVar("T")


def _with_db(settings: Settings, action: str, fn: Callable[[psycopg.Connection], T]) -> T | None:
    """Run `fn` on a short autocommit connection; None (logged) when PostgreSQL is unreachable."""
    try:
        with psycopg.connect(settings.pg_dsn, autocommit=True, connect_timeout=5) as conn:
            return fn(conn)
    except psycopg.Error as exc:
        log.warning("bridge.sessions_unavailable", action=action, error=str(exc).strip(),
                    fix="check PostgreSQL (QUANTRAC_PG_*); the bridge session table could not be read or written")
        return None


def stop_gracefully(bridge: Bridge) -> bool:
    """SIGTERM: leave the shared subscription as QUANTRAC_BRIDGE_ON_STOP says; True when the session may end.

    `keep` (a restart under the same client id): new messages are left unacknowledged in the session
    (the broker keeps dealing the bridge its share while it restarts, as it must when every bridge
    restarts at once), the in-flight ones are finished, and the session is kept.
    `drain` (the client id will not come back): unsubscribe, forward what the session holds, end it.
    Draining is skipped (the session kept) when no other bridge of the group is alive: with no member
    left, the broker would drop the group's messages instead of queueing them.
    """
    s = bridge.settings
    client_id, deadline = s.mqtt_bridge_client_id, time.monotonic() + s.bridge_stop_timeout_s
    mode = s.bridge_on_stop
    _with_db(s, "stopping", lambda c: bridge_sessions.record(c, client_id, bridge.subscription, "stopping", s.bridge_heartbeat_s))
    if mode == "drain":
        others = _with_db(s, "others", lambda c: bridge_sessions.others_alive(c, client_id, bridge.subscription))
        if not others:
            log.warning("bridge.drain_skipped", client_id=client_id, reason="no other bridge of the group is alive",
                        fix=f"the session is kept; once another bridge runs: quantrac bridge drain {client_id}")
            mode = "keep"
        elif not bridge.connected.is_set():
            log.warning("bridge.drain_skipped", client_id=client_id, reason="not connected to the broker",
                        fix=f"the session is kept; drain it later: quantrac bridge drain {client_id}")
            mode = "keep"
    if mode == "drain":
        try:
            forwarded = SessionDrain(bridge).run([bridge.subscription], deadline)
        except DrainFailed as exc:
            log.error("bridge.drain_failed", client_id=client_id, error=str(exc),
                      fix=f"the session is kept (unsubscribed); finish with: quantrac bridge drain {client_id}")
        else:
            _with_db(s, "forget", lambda c: bridge_sessions.forget(c, client_id))
            log.info("bridge.drained", client_id=client_id, messages=forwarded)
            return True
    bridge.refusing.set()
    while len(bridge.acks) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval while the in-flight messages reach Kafka, bounded by the deadline
    _with_db(s, "stopped", lambda c: bridge_sessions.record(c, client_id, bridge.subscription, "stopped", s.bridge_heartbeat_s))
    log.info("bridge.session_kept", client_id=client_id, unacked=len(bridge.acks),
             note="the broker keeps dealing this session its share until a bridge with the same client id returns")
    return False


@dataclass(frozen=True)
class DrainReport:
    """What draining a stopped bridge's MQTT session forwarded."""
    client_id: str
    session_present: bool
    forwarded: int
    counts: dict[str, int]


def drain(settings: Settings, client_id: str, stations: Mapping[str, Station], *, group: str | None = None,
          force: bool = False, timeout_s: float = 1800.0, session_id: str | None = None) -> DrainReport:
    """Empty and end the session of a bridge that is gone (`quantrac bridge drain`); `session_id`: the MQTT client id
    of its session when it is not `bridge_session_id` of its name (`adopt_legacy_session`)."""
    drain_topic(client_id)  # refuses a client id that cannot name the marker's topic, before connecting anything
    sessions = _with_db(settings, "read", bridge_sessions.known_sessions)
    known = next((k for k in sessions or [] if k.client_id == client_id), None)
    filters = list(dict.fromkeys(f for f in (known.subscription if known else None,
                                             subscription_for(settings.mqtt_shared_group if group is None else group)) if f))
    if not force:
        if sessions is None:
            raise DrainRefused("the bridge session table cannot be read (PostgreSQL), so whether the bridge or the other "
                               "members of its group are alive is unknown. Fix the database connection (or pass --force)")
        if known is not None and known.looks_alive():
            raise DrainRefused(f"bridge {client_id} was seen {known.silent_s:.0f} s ago and looks alive: taking its session over "
                               "would make the two reconnect in turn. Stop it first (or pass --force if it is surely gone)")
        others = [k for k in sessions if k.is_other_live_member(client_id, filters[0])]
        if not others and filters[0].startswith("$share/"):
            raise DrainRefused(f"no other bridge on {filters[0]} is alive: with its last member unsubscribed the broker "
                               "would drop the group's messages. Start another bridge first (or pass --force, e.g. when "
                               "the group is not used any more)")
    own = settings.model_copy(update={"mqtt_bridge_client_id": client_id, "bridge_metrics_port": 0})
    bridge = Bridge(own, stations, session_id=session_id)
    session = SessionDrain(bridge)  # before connecting: the broker sends queued messages right after CONNACK
    deadline = time.monotonic() + timeout_s
    bridge.start()
    drained = False
    try:
        if not bridge.connected.wait(min(30.0, timeout_s)):
            raise DrainFailed(f"no MQTT connection as {client_id} within 30 s; check the broker at "
                              f"{settings.mqtt_host}:{settings.mqtt_port} and the bridge account")
        log.info("bridge.drain_started", client_id=client_id, session_present=bridge.session_present, filters=filters)
        forwarded = session.run(filters, deadline)
        drained = True
    finally:
        bridge.close(end_session=drained)
    _with_db(settings, "forget", lambda c: bridge_sessions.forget(c, client_id))
    report = DrainReport(client_id, bridge.session_present, forwarded, bridge.counts.snapshot())
    log.info("bridge.drained", client_id=client_id, session_present=report.session_present, messages=forwarded,
             readings=report.counts)
    return report


def adopt_legacy_session(settings: Settings, stations: Mapping[str, Station], timeout_s: float = 120.0) -> DrainReport | None:
    """Before a bridge connects: forward and end the session a bridge of the same name left under its bare name
    (versions before `bridge_session_id`), which would otherwise go on queueing every reading until it expires.

    None when the name is the session id (a broker without passwords), when there is no such session, or when the
    drain failed (logged; the bridge starts anyway); else the drain's report."""
    name = settings.mqtt_bridge_client_id
    if bridge_session_id(settings) == name:
        return None
    try:
        if not has_session(settings, name):
            return None
        return drain(settings, name, stations, force=True, timeout_s=timeout_s, session_id=name)
    except (DrainFailed, OSError, TimeoutError) as exc:
        log.error("bridge.legacy_session_not_drained", client_id=name, error=str(exc),
                  fix="the bridge starts anyway; what that session holds stays until it expires "
                      "(QUANTRAC_MQTT_SESSION_EXPIRY_S); check the broker and restart the bridge to try again")
        return None

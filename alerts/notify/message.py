"""The notification body shared by every channel: the event and the alert it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

ALERT_FIELDS = ("id", "station_id", "parameter", "rule", "basis", "severity", "status", "zone", "opened_at",
                "updated_at", "last_value", "peak_value", "limit_value", "limit_source", "count", "message",
                "acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at", "escalated_at", "score")


@dataclass(frozen=True)
class Notification:
    """An alert event to tell people about, with the alert it belongs to."""
    event_id: int
    kind: str
    actor: str
    at: Any
    note: str | None
    alert: dict[str, Any]

    @property
    def escalation(self) -> bool:
        """True for an escalation or reminder about an unacknowledged alert, rather than a change to the alert itself."""
        return self.kind in ("escalated", "reminded")

    def body(self) -> bytes:
        """The JSON every channel sends (`v` 1): the event, and the alert's public fields with `limit_value` named `limit`."""
        alert = {k: self.alert.get(k) for k in ALERT_FIELDS}
        alert["limit"] = alert.pop("limit_value")
        return orjson.dumps({"v": 1, "event": {"id": self.event_id, "kind": self.kind, "actor": self.actor,
                                               "at": self.at, "note": self.note}, "alert": alert})

    def subject(self) -> str:
        """The e-mail subject: severity, event kind, station, parameter, rule and zone on one line."""
        a = self.alert
        return (f"[quantrac {a['severity']}] {self.kind}: {a['station_id']} {a['parameter']} {a['rule']}"
                f" ({a.get('zone') or 'no zone'})")

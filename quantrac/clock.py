"""The wall clock, read one way by every stage.

Event time comes from the readings; the wall clock only stamps when something was received,
judged or acted on. It is always aware and in UTC, so that nothing is stored in local time.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now, as an aware UTC datetime. Code that must be testable takes it as a `clock` argument."""
    return datetime.now(timezone.utc)

"""Which failures a loop waits out and which it sets aside, and logs that cannot flood.

Every consumer loop of quantrac (bridge producer, dead-letter keeper, worker batch, notifier,
TT10 watcher, importer, replay) makes this one distinction:

- **transient**: Kafka or PostgreSQL is unavailable (a connection refused, a timeout, a broker
  without a leader, a server shutting down). Nothing is wrong with the record; the loop retries
  with backoff for as long as it takes and holds its position meanwhile;
- **record**: the failure belongs to the record in hand (too large for Kafka, a value PostgreSQL
  refuses, undecodable, or a bug of ours on that input). Retrying it for ever would hold back
  every record behind it, so a loop tries it `RECORD_ATTEMPTS` times, then quarantines it (a small
  dead letter: reason, size, SHA-256, first bytes; see `quantrac.wire.encode_quarantine`) and
  moves on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import psycopg
from kafka import errors as kafka_errors

from quantrac.logs import RepeatGate

RECORD_ATTEMPTS = 3
"""Tries of one record before it is quarantined."""

_KAFKA_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError, kafka_errors.CorruptRecordError,
    kafka_errors.InvalidRecordError,
)
_PG_RECORD_ERRORS: tuple[type[BaseException], ...] = (psycopg.DataError, psycopg.IntegrityError)
_ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, MemoryError)


def is_record_failure(exc: BaseException) -> bool:
    """True when `exc` belongs to the record being handled, False when Kafka or PostgreSQL is unavailable.

    Kafka: a record Kafka refuses for what it is (too large, corrupt, invalid); every other Kafka
    error is the broker's state. PostgreSQL: data and integrity errors (NUL in text, a number out
    of range, a constraint); connection, shutdown, lock and schema errors are the server's state
    (a missing table is a deployment to fix, not a record to drop). Anything else (KeyError,
    ValueError, ...) raised while handling a record is our bug on that input.
    """
    if isinstance(exc, kafka_errors.KafkaError):
        return isinstance(exc, _KAFKA_RECORD_ERRORS)
    if isinstance(exc, psycopg.Error):
        return isinstance(exc, _PG_RECORD_ERRORS)
    return not isinstance(exc, _ENVIRONMENT_ERRORS)


MIGRATE_FIX = ("the store's schema is missing or older than this code: run `quantrac db migrate` "
               "(or start with QUANTRAC_DB_MIGRATE_ON_START=true)")


def store_fix(exc: BaseException, otherwise: str) -> str:
    """The fix to log for a PostgreSQL failure: migrating, when a table, column or function of the store is missing
    (the server answers, so "check PostgreSQL" would mislead); else `otherwise`."""
    missing = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction)
    return MIGRATE_FIX if isinstance(exc, missing) else otherwise


def describe(exc: BaseException) -> str:
    """`Type: message` of an exception, for logs and quarantine records."""
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Attempts:
    """Failed tries per record key, so that a loop knows when to stop retrying one record.

    Keys are forgotten on success or quarantine; `limit` keys at most are remembered (oldest
    dropped), so a loop that meets endless distinct failures keeps bounded memory.
    """

    most: int = RECORD_ATTEMPTS
    limit: int = 10_000
    _failed: dict[Hashable, int] = field(default_factory=dict)

    def failed(self, key: Hashable) -> bool:
        """Count one more failure of `key`; True once it has used all its tries."""
        count = self._failed.pop(key, 0) + 1
        self._failed[key] = count
        if len(self._failed) > self.limit:
            self._failed.pop(next(iter(self._failed)))
        return count >= self.most

    def forget(self, key: Hashable) -> None:
        """Drop the failures of `key`, once it has succeeded or been quarantined."""
        self._failed.pop(key, None)

    def count(self, key: Hashable) -> int:
        """Failed tries of `key` remembered so far; 0 when none, or forgotten."""
        return self._failed.get(key, 0)


class RateLimitedLog:
    """Logs one event at most once per `interval_s` for each key, with how many repeats it held back.

    A failure repeated thousands of times a second (a broker refusing the same record, a bad
    gateway) then costs one line per interval: `repeats` says how many were folded into it.
    """

    def __init__(self, logger: Any, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self._logger = logger
        self._gate = RepeatGate(interval_s, clock, max_keys)
        self.interval_s = interval_s

    def __call__(self, level: str, event: str, key: Hashable = None, **fields: Any) -> bool:
        """Log `event` at `level` unless the same (event, key) was logged within the interval; True when logged."""
        repeats = self._gate.admit((event, key))
        if repeats is None:
            return False
        if repeats:
            fields["repeats"] = repeats
            fields["repeats_in_s"] = self.interval_s
        getattr(self._logger, level)(event, **fields)
        return True

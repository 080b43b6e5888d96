"""Text from the wire made safe to keep: in a PostgreSQL text column, in JSON, in a log line.

PostgreSQL refuses NUL in `text` (`PostgreSQL text fields cannot contain NUL (0x00) bytes`), and
UTF-8 encoders (orjson, psycopg) refuse lone surrogates, which Python makes of undecodable bytes in
file names (`surrogateescape`) and JSON decoders of `"\\ud800"`. Either, left in a dead letter's
parameter or a file name, fails the one INSERT or `orjson.dumps` that would have explained it.
Such characters are written as visible escapes (`\\u0000`, `\\udcff`); the raw bytes, where they
matter, stay whole in `bytea`.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00\ud800-\udfff]")

TEXT_LIMIT = 1000
"""Characters kept of one identifier or message taken from the wire (station ids, parameters, topics, errors)."""


def escape_unsafe(text: str) -> str:
    """`text` with NUL and lone surrogates written as `\\uXXXX` escapes; any other character unchanged."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """At most `limit` characters of `text`, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} characters)"


def safe_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """Text that PostgreSQL, JSON and a log line can all hold, clipped to about `limit` characters."""
    return escape_unsafe(clip(text, limit))


def safe_optional(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """`safe_text` of a text that may be absent."""
    return None if text is None else safe_text(str(text), limit)

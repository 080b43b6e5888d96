"""Parser and writer for the Circular 10/2021/TT-BTNMT data file ("TT10" file, Appendix 15).

A station's datalogger uploads one file per transmission (every 5 minutes, over FTP):

    name:    <Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt   e.g. HN_ABCD_NUO001_20250115103000.txt
    content: one line per parameter, 5 TAB-separated fields
             <symbol>\\t<value>\\t<unit>\\t<yyyyMMddHHmmss>\\t<status>

Times carry no zone; Appendix 15 means Vietnam local time, read here as Asia/Ho_Chi_Minh.
Status codes are `00` measuring, `01` calibrating, `02` device fault (Art. 39).

Everything here is pure: the caller reads and writes the bytes. A file is never rejected as a
whole: `parse_content` keeps every valid line and reports each bad one with a reason code and
a message that names the line, the symbol and the fix, so the facility can correct its logger.
Symbols are not checked against Table 34 (the station registry decides which it accepts), and a
symbol sent twice is kept twice.

Round trip: `format_content(parse_content(text).lines, newline=..., final_newline=..., bom=...)`
gives back `text` byte for byte when `text` is canonical: no blank lines, no spaces around
fields, one newline style. Each line keeps the exact original text of its value (`value_text`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from quantrac.domain import Reading, Status, utc
from quantrac.safe_text import clip, escape_unsafe

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
"""The zone of every TT10 time stamp (file name and lines); UTC+7, no DST since 1975."""

BOM = "\ufeff"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
"""The byte order marks a UTF-16 file (Notepad's "Unicode") starts with, little- and big-endian."""
FIELD_SEP = "\t"
FIELD_COUNT = 5
TIME_FORMAT_HINT = "yyyyMMddHHmmss"

ReasonCode = Literal["bad_fields", "bad_value", "missing_value", "bad_status", "bad_time", "empty_symbol", "not_utf8"]
"""Why a content line was rejected. `not_utf8` only arises when bytes are passed in."""

REASON_CODES: tuple[ReasonCode, ...] = (
    "bad_fields", "bad_value", "missing_value", "bad_status", "bad_time", "empty_symbol", "not_utf8",
)

_CODE_RE = re.compile(r"[A-Za-z0-9-]+")
_STAMP_RE = re.compile(r"[0-9]{14}")
NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
COMMA_DECIMAL_RE = re.compile(r"[+-]?[0-9]*,[0-9]+")
_FORBIDDEN_IN_FIELD = ("\t", "\n", "\r", BOM)
_STATUS_TEXT = "00 (measuring), 01 (calibrating) or 02 (device fault)"


class TT10FormatError(ValueError):
    """A file name, or a value handed to the writer, does not follow Circular 10/2021 Appendix 15."""


# --------------------------------------------------------------------------- time stamps


def parse_stamp(text: str) -> datetime:
    """`yyyyMMddHHmmss` in Vietnam local time -> aware datetime in Asia/Ho_Chi_Minh.

    Raises TT10FormatError when the text is not 14 ASCII digits or not a real date and time.
    """
    if not _STAMP_RE.fullmatch(text):
        raise TT10FormatError(f"time {_show(text)} is not {TIME_FORMAT_HINT} (14 digits)")
    try:
        ts = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]),
                      int(text[8:10]), int(text[10:12]), int(text[12:14]), tzinfo=VN_TZ)
        ts.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise TT10FormatError(f"time {_show(text)} is not a valid date and time ({exc})") from None
    return ts


def format_stamp(ts: datetime) -> str:
    """Aware datetime -> `yyyyMMddHHmmss` in Vietnam local time; sub-second parts are dropped."""
    local = _require_aware(ts, "time").astimezone(VN_TZ)
    return f"{local.year:04d}{local.month:02d}{local.day:02d}{local.hour:02d}{local.minute:02d}{local.second:02d}"


def _require_aware(ts: datetime, what: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise TT10FormatError(f"{what} {ts!r} must be a timezone-aware datetime")
    return ts


# --------------------------------------------------------------------------- file name


@dataclass(frozen=True)
class TT10Name:
    """The parts of a TT10 file name. Codes are assigned by the receiving provincial department."""

    province: str
    facility: str
    station: str
    file_time: datetime

    def __post_init__(self) -> None:
        for part in ("province", "facility", "station"):
            _check_code(part, getattr(self, part))
        _require_aware(self.file_time, "file_time")

    @property
    def filename(self) -> str:
        """The name the file is delivered under: `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`, Vietnam local time."""
        return format_filename(self)


def _check_code(part: str, code: str) -> None:
    if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
        raise TT10FormatError(
            f"{part} code {_show(code)} must be 1 or more ASCII letters, digits or '-' (no '_', which separates the fields)"
        )


def parse_filename(name: str) -> TT10Name:
    """`HN_ABCD_NUO001_20250115103000.txt` -> TT10Name (file time in Asia/Ho_Chi_Minh).

    A leading directory (`/` or `\\`) is ignored, so a remote path may be passed as is. The name
    must have exactly 4 `_`-separated fields, the last being 14 digits, and end in `.txt`
    (any case). Codes may contain `-` but not `_`.
    """
    base = re.split(r"[/\\]", name)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot or ext.lower() != "txt":
        raise TT10FormatError(
            f"file name {_show(base)} must end in '.txt', e.g. HN_ABCD_NUO001_20250115103000.txt"
        )
    fields = stem.split("_")
    if len(fields) != 4:
        raise TT10FormatError(
            f"file name {_show(base)} has {len(fields)} '_'-separated fields, expected 4: "
            "<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt (codes must not contain '_')"
        )
    province, facility, station, stamp = fields
    try:
        file_time = parse_stamp(stamp)
    except TT10FormatError as exc:
        raise TT10FormatError(f"file name {_show(base)}: {exc}") from None
    try:
        return TT10Name(province, facility, station, file_time)
    except TT10FormatError as exc:
        raise TT10FormatError(f"file name {_show(base)}: {exc}") from None


def format_filename(name: TT10Name) -> str:
    """TT10Name -> `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`, time written in Vietnam local time."""
    return f"{name.province}_{name.facility}_{name.station}_{format_stamp(name.file_time)}.txt"


# --------------------------------------------------------------------------- numbers


def parse_value(text: str) -> float | None:
    """A TT10 value field -> float, or None when empty. Surrounding spaces are ignored.

    Accepts digits with `.` as decimal separator, an optional sign and an optional exponent.
    Raises TT10FormatError for anything else, including NaN, infinity and `,` decimals.
    """
    core = text.strip(" ")
    if core == "":
        return None
    if not NUMBER_RE.fullmatch(core):
        raise TT10FormatError(f"value {_show(text)} is not a number")
    value = float(core)
    if not math.isfinite(value):
        raise TT10FormatError(f"value {_show(text)} is too large to be a finite number")
    return value


def format_value(value: float | None, decimals: int | None = None) -> str:
    """Write a value for a TT10 file; None (no result, status 02) is the empty string.

    Rule, deterministic and never in exponent notation:
    - with `decimals`, fixed point with exactly that many digits after the `.` (`3.5`, 3 -> `3.500`);
    - without, the shortest digits that read back to the same float (Python's `repr`), written
      positionally, with no trailing zeros and no `.` for whole numbers (`42.0` -> `42`,
      `1e-07` -> `0.0000001`, `0.05` -> `0.05`).
    Negative zero is written without its sign. NaN and infinity raise TT10FormatError.
    """
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        raise TT10FormatError(f"value {value!r} is not finite; send None (empty, status 02) instead")
    if decimals is not None:
        if decimals < 0:
            raise TT10FormatError(f"decimals must be >= 0, got {decimals}")
        text = f"{value:.{decimals}f}"
    else:
        text = format(Decimal(repr(value)), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    if text.startswith("-") and text.strip("-0.") == "":
        text = text[1:]
    return text


# --------------------------------------------------------------------------- content lines


@dataclass(frozen=True)
class TT10Line:
    """One valid content line: one value of one parameter.

    `value_text` is the value exactly as it was in the file (None for a line built in code);
    the writer reuses it while it still reads as `value`, so number formatting survives a round trip.
    `line_no` is the 1-based physical line in the file (0 for a line built in code).
    """

    symbol: str
    value: float | None
    value_text: str | None
    unit: str
    ts: datetime
    status: Status
    line_no: int = 0

    def __post_init__(self) -> None:
        _check_field("symbol", self.symbol, allow_empty=False)
        _check_field("unit", self.unit, allow_empty=True)
        _require_aware(self.ts, "ts")
        try:
            object.__setattr__(self, "status", Status(self.status))
        except ValueError:
            raise TT10FormatError(f"status {self.status!r} must be {_STATUS_TEXT}") from None
        if self.value is not None and not math.isfinite(self.value):
            raise TT10FormatError(f"{self.symbol}: value {self.value!r} is not finite")
        if self.value is None and self.status is not Status.FAULT:
            raise TT10FormatError(f"{self.symbol}: a missing value needs status 02 (device fault), not {self.status}")

    @classmethod
    def of(cls, symbol: str, value: float | None, unit: str, ts: datetime,
           status: Status | str = Status.MEASURING, decimals: int | None = None) -> TT10Line:
        """A line built in code, its value written now by `format_value(value, decimals)`.

        `value` becomes what that text reads back as (rounded to `decimals`), so the line equals
        what a parser will see in the written file.
        """
        text = format_value(value, decimals)
        return cls(symbol, parse_value(text), text, unit, ts, status)  # type: ignore[arg-type]  # `of` also takes a raw status code string; Status is a StrEnum, so the line compares and formats the same


def _check_field(name: str, text: str, *, allow_empty: bool) -> None:
    if not isinstance(text, str):
        raise TT10FormatError(f"{name} must be a string, got {text!r}")
    if not allow_empty and text == "":
        raise TT10FormatError(f"{name} must not be empty")
    if text != text.strip(" ") or any(ch in text for ch in _FORBIDDEN_IN_FIELD):
        raise TT10FormatError(
            f"{name} {_show(text)} must not contain TAB, CR, LF or a BOM, nor start or end with a space"
        )


@dataclass(frozen=True)
class TT10LineError:
    """One rejected content line. `raw_line` is the line without its line ending."""

    line_no: int
    raw_line: str
    reason_code: ReasonCode
    message: str


@dataclass(frozen=True)
class TT10Parse:
    """What one file held: its valid lines and its rejected lines, both in file order.

    `newline` is the style of the first line ending (None if the file has none), `final_newline`
    whether the text ended with a line ending, `bom` whether it started with a UTF-8 BOM; pass
    them to `format_content` to write the file back in the same shape.
    """

    lines: tuple[TT10Line, ...]
    errors: tuple[TT10LineError, ...]
    newline: Literal["\r\n", "\n"] | None
    final_newline: bool
    bom: bool

    @property
    def ok(self) -> bool:
        """True when no line of the file was rejected."""
        return not self.errors


class _LineRejected(Exception):
    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_content(text: str | bytes) -> TT10Parse:
    """Parse a TT10 file's content, keeping the valid lines and reporting each bad one.

    Accepts LF or CRLF line endings, a UTF-8 BOM, and blank lines (skipped, wherever they are).
    Bytes must be UTF-8; a line that is not is reported as `not_utf8`, the other lines still count.
    Never raises for bad content.
    """
    raw_lines, newline, final_newline, bom = _split_lines(text)
    good: list[TT10Line] = []
    bad: list[TT10LineError] = []
    for line_no, raw in enumerate(raw_lines, start=1):
        if isinstance(raw, bytes):
            bad.append(_not_utf8(line_no, raw))
            continue
        if _is_blank(raw):
            continue
        try:
            good.append(_parse_line(line_no, raw))
        except _LineRejected as rejected:
            bad.append(TT10LineError(line_no, raw, rejected.reason,
                                     f"line {line_no} ({_symbol_label(raw)}): {rejected.detail}"))
    return TT10Parse(tuple(good), tuple(bad), newline, final_newline, bom)


def _split_lines(text: str | bytes) -> tuple[list[str | bytes], Literal["\r\n", "\n"] | None, bool, bool]:
    """Split on LF only (not `str.splitlines`, which also breaks on VT, FF, U+2028 and others).

    Bytes lines are decoded one by one, so one undecodable line does not lose the file; a line
    left as bytes could not be decoded.
    """
    bom_mark: str | bytes = BOM.encode() if isinstance(text, bytes) else BOM
    bom = text.startswith(bom_mark)  # type: ignore[arg-type]  # text and bom_mark are both str or both bytes (chosen together above); mypy cannot tie the two unions
    body = text[len(bom_mark):] if bom else text
    nl: str | bytes = b"\n" if isinstance(body, bytes) else "\n"
    cr: str | bytes = b"\r" if isinstance(body, bytes) else "\r"
    final_newline = body.endswith(nl)  # type: ignore[arg-type]  # body and nl are both str or both bytes; mypy cannot tie the two unions
    pieces = body.split(nl)  # type: ignore[arg-type]  # body and nl are both str or both bytes; mypy cannot tie the two unions
    if final_newline:
        pieces.pop()
    newline: Literal["\r\n", "\n"] | None = None
    if len(pieces) > 1 or final_newline:
        newline = "\r\n" if pieces[0].endswith(cr) else "\n"  # type: ignore[arg-type]  # the pieces and cr are both str or both bytes; mypy cannot tie the two unions
    lines: list[str | bytes] = []
    for piece in pieces:
        piece = piece[:-1] if piece.endswith(cr) else piece  # type: ignore[arg-type]  # piece and cr are both str or both bytes; mypy cannot tie the two unions
        lines.append(_decode(piece) if isinstance(piece, bytes) else piece)
    return lines, newline, final_newline, bom


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _not_utf8(line_no: int, raw: bytes) -> TT10LineError:
    """A line that is not UTF-8, named by its symbol where it has one. A UTF-16 file (Notepad's "Unicode") is told
    as such: its every line fails, and its letters come with NUL bytes between them."""
    shown = raw.decode("utf-8", errors="replace")
    if raw.startswith(UTF16_BOMS) or raw.count(b"\x00") * 3 >= len(raw) > 0:
        letters = raw.replace(b"\x00", b"").decode("utf-8", errors="replace").lstrip("\ufffd")
        where = "the file looks UTF-16: NUL bytes between its letters"
    else:
        letters, where = shown, "invalid bytes"
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
    return TT10LineError(
        line_no, shown, "not_utf8",
        f"line {line_no} ({_symbol_label(letters)}): not UTF-8 text ({where}); save the file as UTF-8",
    )


def _is_blank(raw: str) -> bool:
    return FIELD_SEP not in raw and raw.strip() == ""


def _parse_line(line_no: int, raw: str) -> TT10Line:
    """Check one line in a fixed order (fields, symbol, status, time, value); the first failure wins."""
    fields = _split_fields(raw)
    symbol, value_text, unit, stamp, status_text = fields
    symbol, unit = symbol.strip(" "), unit.strip(" ")
    if symbol == "":
        raise _LineRejected("empty_symbol", "the symbol (field 1) is empty; send the parameter symbol of "
                            "Circular 10/2021 Table 34, e.g. COD")
    status = _parse_status(status_text.strip(" "))
    ts = _parse_line_time(stamp.strip(" "))
    value = _parse_line_value(value_text, status)
    return TT10Line(symbol, value, value_text, unit, ts, status, line_no)


def _split_fields(raw: str) -> list[str]:
    if "\r" in raw:
        if "\x00" in raw:  # a UTF-16 (big-endian) CRLF, split at its LF byte
            raise _LineRejected("bad_fields", "the line contains a stray CR character and NUL characters: the file looks "
                                "UTF-16; save the file as UTF-8")
        raise _LineRejected("bad_fields", "the line contains a stray CR character; end every line with CRLF or LF")
    if BOM in raw:
        raise _LineRejected("bad_fields", "the line contains a byte-order mark (U+FEFF); only the start of the "
                            "file may have one, so do not join files by concatenation")
    fields = raw.split(FIELD_SEP)
    if len(fields) != FIELD_COUNT:
        raise _LineRejected(
            "bad_fields",
            f"found {len(fields)} TAB-separated field{'s' if len(fields) != 1 else ''}{_fields_hint(raw, len(fields))}, "
            "expected 5; send symbol, value, unit, yyyyMMddHHmmss and status separated by single TAB characters",
        )
    return fields


def _fields_hint(raw: str, found: int) -> str:
    """What a line with the wrong number of TAB-separated fields seems to be: UTF-16 (NUL characters), or one whose
    fields are separated by something else; "" when it is neither."""
    if "\x00" in raw:
        return " (with NUL characters: the file looks UTF-16; save it as UTF-8)"
    if found != 1:
        return ""
    for sep in (";", ",", "|"):
        if raw.count(sep) == FIELD_COUNT - 1:
            return f" (the fields look separated by {sep!r})"
    return " (the fields look separated by spaces)" if " " in raw.strip() else ""


def _parse_status(text: str) -> Status:
    try:
        return Status(text)
    except ValueError:
        raise _LineRejected("bad_status", f"status {_show(text)} is not valid; send {_STATUS_TEXT}") from None


def _parse_line_time(text: str) -> datetime:
    try:
        return parse_stamp(text)
    except TT10FormatError as exc:
        raise _LineRejected("bad_time", f"{exc}; send the measurement time in Vietnam local time as "
                            f"{TIME_FORMAT_HINT}, e.g. 20250115103000") from None


def _parse_line_value(text: str, status: Status) -> float | None:
    try:
        value = parse_value(text)
    except TT10FormatError:
        raise _LineRejected("bad_value", _bad_value_detail(text)) from None
    if value is None and status is not Status.FAULT:
        raise _LineRejected(
            "missing_value",
            f"the value is empty but the status is {status.value} ({status.name.lower()}); "
            "send the measured value, or status 02 if the device has no result",
        )
    return value


def _bad_value_detail(text: str) -> str:
    core = text.strip(" ")
    if COMMA_DECIMAL_RE.fullmatch(core):
        return f"value {_show(text)} uses ',' as decimal separator; send digits with '.' as decimal separator"
    if NUMBER_RE.fullmatch(core):
        return f"value {_show(text)} is too large to be a finite number; send the value in range of the instrument"
    if core.lower().lstrip("+-") in {"nan", "inf", "infinity"}:
        return (f"value {_show(text)} is not a finite number; send a number, or an empty value with "
                "status 02 when the device has no result")
    return f"value {_show(text)} is not a number; send digits with '.' as decimal separator"


def _symbol_label(raw: str) -> str:
    head = raw.split(FIELD_SEP, 1)[0] if FIELD_SEP in raw else (raw.split() or [""])[0]
    symbol = head.strip()
    return escape_unsafe(clip(symbol, 40)) if symbol else "no symbol"


def _show(text: str) -> str:
    return repr(clip(text, 40))


# --------------------------------------------------------------------------- writer


def format_line(line: TT10Line, decimals: int | None = None) -> str:
    """One content line without its line ending.

    The value is `line.value_text` verbatim while it still reads as `line.value` (so a value
    changed with `dataclasses.replace` is not shadowed by stale text); otherwise
    `format_value(line.value, decimals)`.
    """
    fields = (line.symbol, _value_field(line, decimals), line.unit, format_stamp(line.ts), line.status.value)
    return FIELD_SEP.join(fields)


def _value_field(line: TT10Line, decimals: int | None) -> str:
    if line.value_text is not None and not any(ch in line.value_text for ch in _FORBIDDEN_IN_FIELD):
        try:
            if parse_value(line.value_text) == line.value:
                return line.value_text
        except TT10FormatError:
            pass
    return format_value(line.value, decimals)


def format_content(lines: Iterable[TT10Line], newline: Literal["\r\n", "\n"] = "\r\n", *,
                   decimals: Mapping[str, int] | None = None, final_newline: bool = True,
                   bom: bool = False) -> str:
    """Write lines back as TT10 content, in the given order.

    `decimals` maps a symbol to its number of decimals, used only where a line has no usable
    `value_text`. Mirror a parsed file with `newline=p.newline or "\\r\\n", final_newline=p.final_newline, bom=p.bom`.
    """
    if newline not in ("\r\n", "\n"):
        raise TT10FormatError(f"newline must be '\\r\\n' or '\\n', got {newline!r}")
    places = decimals or {}
    body = newline.join(format_line(line, places.get(line.symbol)) for line in lines)
    if final_newline and body:
        body += newline
    return (BOM if bom else "") + body


# --------------------------------------------------------------------------- domain


def to_readings(parsed: TT10Parse | Iterable[TT10Line], station_id: str) -> list[Reading]:
    """Valid lines -> quantrac readings for `station_id`, timestamps converted to UTC (the storage zone)."""
    lines = parsed.lines if isinstance(parsed, TT10Parse) else parsed
    return [
        Reading(station_id=station_id, parameter=line.symbol, value=line.value, unit=line.unit,
                ts=utc(line.ts), status=line.status)
        for line in lines
    ]

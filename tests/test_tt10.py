"""Circular 10/2021 (Appendix 15) file parser and writer: round trips, reason codes, robustness."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.tt10 import (
    REASON_CODES,
    VN_TZ,
    TT10FormatError,
    TT10Line,
    TT10Name,
    format_content,
    format_filename,
    format_value,
    parse_content,
    parse_filename,
    parse_value,
    to_readings,
)
from quantrac.domain import NATIONAL_SYMBOLS, Reading, Status

STAMP = "20250115103000"
STAMP_UTC = datetime(2025, 1, 15, 3, 30, tzinfo=timezone.utc)

# (value text, unit, status) per Table 34 symbol, in table order: mixed number formats and all statuses.
SAMPLE: dict[str, tuple[str, str, str]] = {
    "Flow": ("1200", "m3/h", "00"),
    "Temp": ("28.5", "°C", "00"),
    "Color": ("35", "Pt/Co", "00"),
    "pH": ("7.12", "-", "00"),
    "TSS": ("", "mg/L", "02"),
    "COD": ("42.0", "mg/L", "01"),
    "NH4": ("0.050", "mg/L", "00"),
    "TP": ("3.5", "mg/L", "00"),
    "TN": ("12.30", "mg/L", "01"),
    "TOC": ("15", "mg/L", "00"),
    "Cl": ("0.2", "mg/L", "00"),
    "RH": ("65.0", "%", "00"),
    "P": ("101.325", "kPa", "00"),
    "NO": ("", "mg/Nm3", "02"),
    "NO2": ("150.75", "mg/Nm3", "00"),
    "CO": ("-0.5", "mg/Nm3", "00"),
    "SO2": ("480", "mg/Nm3", "00"),
    "O2": ("6.80", "%", "00"),
    "H2S": ("0.000", "mg/Nm3", "02"),
    "NH3": ("1.0", "mg/Nm3", "00"),
    "VHg": ("0.0012", "mg/Nm3", "01"),
    "PM": ("180.5", "mg/Nm3", "00"),
    "O3": (".5", "mg/Nm3", "00"),
    "PM10": ("45", "ug/m3", "00"),
    "PM2,5": ("22.40", "ug/m3", "00"),
}


def full_file(newline: str) -> str:
    return "".join(f"{sym}\t{val}\t{unit}\t{STAMP}\t{status}{newline}" for sym, (val, unit, status) in SAMPLE.items())


# ------------------------------------------------------------------- round trip of a full file


def test_sample_covers_table_34_and_every_status() -> None:
    assert tuple(SAMPLE) == NATIONAL_SYMBOLS
    assert {status for _, _, status in SAMPLE.values()} == {"00", "01", "02"}


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_full_file_round_trips_byte_identical(newline: str) -> None:
    text = full_file(newline)
    parsed = parse_content(text)

    assert parsed.errors == ()
    assert [line.symbol for line in parsed.lines] == list(NATIONAL_SYMBOLS)
    assert parsed.newline == newline and parsed.final_newline and not parsed.bom
    assert format_content(parsed.lines, parsed.newline) == text
    assert format_content(parsed.lines, newline).encode() == text.encode()


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_bytes_with_bom_and_no_final_newline_round_trip(newline: str) -> None:
    text = "\ufeff" + full_file(newline).removesuffix(newline)
    parsed = parse_content(text.encode("utf-8"))

    assert parsed.ok and parsed.bom and not parsed.final_newline
    again = format_content(parsed.lines, parsed.newline or "\r\n", final_newline=parsed.final_newline, bom=parsed.bom)
    assert again.encode("utf-8") == text.encode("utf-8")


def test_parsed_values() -> None:
    lines = {line.symbol: line for line in parse_content(full_file("\r\n")).lines}

    assert lines["pH"].value == 7.12 and lines["pH"].status is Status.MEASURING
    assert lines["NH4"].value == 0.05 and lines["NH4"].value_text == "0.050"
    assert lines["TSS"].value is None and lines["TSS"].value_text == "" and lines["TSS"].status is Status.FAULT
    assert lines["H2S"].value == 0.0 and lines["H2S"].status is Status.FAULT
    assert lines["COD"].status is Status.CALIBRATING
    assert lines["PM2,5"].value == 22.4 and lines["PM2,5"].unit == "ug/m3"
    assert lines["Temp"].unit == "°C"
    assert lines["Flow"].ts == STAMP_UTC and lines["Flow"].ts.tzinfo == VN_TZ
    assert lines["O3"].line_no == 23


def test_trailing_blank_lines_are_accepted() -> None:
    parsed = parse_content(full_file("\r\n") + "\r\n\r\n  \r\n")
    assert parsed.ok and len(parsed.lines) == len(NATIONAL_SYMBOLS)


def test_unknown_symbols_are_kept() -> None:
    parsed = parse_content(f"BOD5\t12\tmg/L\t{STAMP}\t00\nColiform\t3000\tMPN/100mL\t{STAMP}\t00\n")
    assert parsed.ok and [line.symbol for line in parsed.lines] == ["BOD5", "Coliform"]


def test_changed_value_is_not_shadowed_by_stale_text() -> None:
    line = parse_content(f"COD\t42.0\tmg/L\t{STAMP}\t00").lines[0]
    assert format_content([line]) == f"COD\t42.0\tmg/L\t{STAMP}\t00\r\n"
    changed = dataclasses.replace(line, value=43.25)
    assert format_content([changed], "\n") == f"COD\t43.25\tmg/L\t{STAMP}\t00\n"
    assert format_content([changed], "\n", decimals={"COD": 3}) == f"COD\t43.250\tmg/L\t{STAMP}\t00\n"


def test_line_built_in_code() -> None:
    ts = datetime(2025, 1, 15, 3, 30, tzinfo=timezone.utc)
    lines = [TT10Line.of("pH", 7.0, "-", ts), TT10Line.of("TSS", None, "mg/L", ts, "02"),
             TT10Line.of("COD", 42.0, "mg/L", ts, Status.CALIBRATING, decimals=1)]
    assert format_content(lines, "\n") == (
        f"pH\t7\t-\t{STAMP}\t00\nTSS\t\tmg/L\t{STAMP}\t02\nCOD\t42.0\tmg/L\t{STAMP}\t01\n"
    )


def test_writer_refuses_lines_the_parser_would_reject() -> None:
    ts = datetime(2025, 1, 15, 10, 30, tzinfo=VN_TZ)
    with pytest.raises(TT10FormatError):
        TT10Line.of("COD", None, "mg/L", ts, "00")
    with pytest.raises(TT10FormatError):
        TT10Line.of("CO\tD", 1.0, "mg/L", ts)
    with pytest.raises(TT10FormatError):
        TT10Line.of("COD", 1.0, "mg/L", ts, "03")
    with pytest.raises(TT10FormatError):
        TT10Line.of("COD", 1.0, "mg/L", datetime(2025, 1, 15, 10, 30))
    with pytest.raises(TT10FormatError):
        format_value(float("nan"))


@pytest.mark.parametrize(("value", "decimals", "text"), [
    (None, None, ""), (42.0, None, "42"), (0.05, None, "0.05"), (1200.0, None, "1200"), (7.12, None, "7.12"),
    (1e-7, None, "0.0000001"), (1e22, None, "10000000000000000000000"), (-0.0, None, "0"),
    (3.5, 3, "3.500"), (42.0, 1, "42.0"), (-0.0001, 2, "0.00"), (2.675, 0, "3"),
])
def test_format_value_rule(value: float | None, decimals: int | None, text: str) -> None:
    assert format_value(value, decimals) == text


def test_to_readings() -> None:
    readings = to_readings(parse_content(full_file("\n")), "HN-NUO001")
    assert len(readings) == len(NATIONAL_SYMBOLS)
    tss = next(r for r in readings if r.parameter == "TSS")
    assert tss == Reading(station_id="HN-NUO001", parameter="TSS", value=None, unit="mg/L", ts=STAMP_UTC,
                          status=Status.FAULT)
    assert all(r.ts.utcoffset().total_seconds() == 0 for r in readings)  # type: ignore[union-attr]
    assert [r.is_valid_measurement for r in readings[:6]] == [True, True, True, True, False, False]


# ------------------------------------------------------------------- file name


def test_filename_round_trip_with_timezone() -> None:
    name = parse_filename("HN_ABCD_NUO001_20250115103000.txt")

    assert (name.province, name.facility, name.station) == ("HN", "ABCD", "NUO001")
    assert name.file_time == datetime(2025, 1, 15, 3, 30, tzinfo=timezone.utc)
    assert name.file_time.isoformat() == "2025-01-15T10:30:00+07:00"
    assert format_filename(name) == "HN_ABCD_NUO001_20250115103000.txt"
    assert name.filename == "HN_ABCD_NUO001_20250115103000.txt"


def test_format_filename_converts_to_local_time() -> None:
    name = TT10Name("HP", "KCN-NAM-SACH", "NT-01", datetime(2025, 1, 15, 3, 30, tzinfo=timezone.utc))
    assert format_filename(name) == "HP_KCN-NAM-SACH_NT-01_20250115103000.txt"
    assert parse_filename(format_filename(name)) == name


def test_filename_with_dashes_and_directory() -> None:
    name = parse_filename("NUO-001/2025/01/15/HN_AB-CD_NUO-001_20250115103000.TXT")
    assert (name.facility, name.station) == ("AB-CD", "NUO-001")


@pytest.mark.parametrize(("bad", "hint"), [
    ("HN_ABCD_NUO_001_20250115103000.txt", "expected 4"),
    ("HN_ABCD_20250115103000.txt", "expected 4"),
    ("HN_ABCD_NUO001_2025011510300.txt", "14 digits"),
    ("HN_ABCD_NUO001_20250230103000.txt", "not a valid date"),
    ("HN_ABCD_NUO001_20250115103000.csv", ".txt"),
    ("HN_ABCD_NUO001_20250115103000", ".txt"),
    ("HN__NUO001_20250115103000.txt", "facility code"),
    ("HN_AB CD_NUO001_20250115103000.txt", "facility code"),
])
def test_bad_filenames(bad: str, hint: str) -> None:
    with pytest.raises(TT10FormatError, match=hint):
        parse_filename(bad)


# ------------------------------------------------------------------- bad lines


@pytest.mark.parametrize(("line", "reason", "fragment"), [
    ("COD 42.0 mg/L 20250115103000 00", "bad_fields", "found 1 TAB-separated field"),
    (f"COD\t42.0\tmg/L\t{STAMP}", "bad_fields", "found 4"),
    (f"COD\t42.0\tmg/L\t{STAMP}\t00\t", "bad_fields", "found 6"),
    (f"COD\t42\r.0\tmg/L\t{STAMP}\t00", "bad_fields", "CR"),
    (f"COD\tabc\tmg/L\t{STAMP}\t00", "bad_value", "value 'abc' is not a number; send digits with '.'"),
    (f"COD\t42,5\tmg/L\t{STAMP}\t00", "bad_value", "',' as decimal separator"),
    (f"COD\tNaN\tmg/L\t{STAMP}\t00", "bad_value", "not a finite number"),
    (f"COD\t-inf\tmg/L\t{STAMP}\t00", "bad_value", "not a finite number"),
    (f"COD\t1e999\tmg/L\t{STAMP}\t00", "bad_value", "too large"),
    (f"COD\t1_000\tmg/L\t{STAMP}\t00", "bad_value", "not a number"),
    (f"COD\t\tmg/L\t{STAMP}\t00", "missing_value", "status 02"),
    (f"COD\t\tmg/L\t{STAMP}\t01", "missing_value", "calibrating"),
    (f"COD\t42.0\tmg/L\t{STAMP}\t03", "bad_status", "status '03' is not valid; send 00"),
    (f"COD\t42.0\tmg/L\t{STAMP}\t0", "bad_status", "status '0'"),
    ("COD\t42.0\tmg/L\t2025011510300\t00", "bad_time", "14 digits"),
    ("COD\t42.0\tmg/L\t2025-01-15 10:30\t00", "bad_time", "14 digits"),
    ("COD\t42.0\tmg/L\t20251315103000\t00", "bad_time", "not a valid date"),
    ("COD\t42.0\tmg/L\t20250115246000\t00", "bad_time", "not a valid date"),
    (f"\t42.0\tmg/L\t{STAMP}\t00", "empty_symbol", "symbol (field 1) is empty"),
    (f"  \t42.0\tmg/L\t{STAMP}\t00", "empty_symbol", "e.g. COD"),
])
def test_each_reason_code(line: str, reason: str, fragment: str) -> None:
    text = f"pH\t7.12\t-\t{STAMP}\t00\r\nTSS\t55\tmg/L\t{STAMP}\t00\r\n{line}\r\n"
    parsed = parse_content(text)

    assert [good.symbol for good in parsed.lines] == ["pH", "TSS"]
    (error,) = parsed.errors
    assert error.reason_code == reason
    assert error.line_no == 3
    assert error.raw_line == line
    assert error.message.startswith("line 3 (COD): " if reason != "empty_symbol" else "line 3 (no symbol): ")
    assert fragment in error.message
    assert "; send " in error.message or "; end " in error.message


def test_not_utf8_line_does_not_lose_the_file() -> None:
    data = f"pH\t7.12\t-\t{STAMP}\t00\r\n".encode() + b"Temp\t28\t\xb0C\t20250115103000\t00\r\n"
    parsed = parse_content(data)
    assert [line.symbol for line in parsed.lines] == ["pH"]
    assert parsed.errors[0].reason_code == "not_utf8"
    assert parsed.errors[0].message.startswith("line 2 (Temp): not UTF-8")


@pytest.mark.parametrize(("encoding", "said"), [("utf-16", "(COD): not UTF-8 text (the file looks UTF-16"),
                                               ("utf-16-be", "NUL characters: the file looks UTF-16")])
def test_a_utf16_file_is_told_to_be_saved_as_utf8_naming_its_symbols(encoding: str, said: str) -> None:
    parsed = parse_content(f"COD\t42.0\tmg/L\t{STAMP}\t00\r\nTemp\t28\t°C\t{STAMP}\t00\r\n".encode(encoding))
    assert parsed.lines == ()
    assert said in parsed.errors[0].message and "save the file as UTF-8" in parsed.errors[0].message
    assert "\x00" not in parsed.errors[0].message and "(Temp)" in parsed.errors[1].message
    assert all("UTF-16" in e.message for e in parsed.errors), [e.message for e in parsed.errors]


@pytest.mark.parametrize("sep", [";", ",", "|"])
def test_fields_separated_by_another_character_are_told_which(sep: str) -> None:
    parsed = parse_content(sep.join(["COD", "42.0", "mg/L", STAMP, "00"]))
    assert f"(the fields look separated by {sep!r})" in parsed.errors[0].message


def test_partly_valid_file_keeps_valid_lines_in_order() -> None:
    text = (
        f"pH\t7.12\t-\t{STAMP}\t00\n"
        f"COD\tabc\tmg/L\t{STAMP}\t00\n"
        "\n"
        f"TSS\t55\tmg/L\t{STAMP}\t01\n"
        "garbage\n"
        f"NH4\t\tmg/L\t{STAMP}\t02\n"
        f"TN\t12\tmg/L\t{STAMP}\t09\n"
    )
    parsed = parse_content(text)

    assert [(line.symbol, line.line_no) for line in parsed.lines] == [("pH", 1), ("TSS", 4), ("NH4", 6)]
    assert [(e.line_no, e.reason_code) for e in parsed.errors] == [(2, "bad_value"), (5, "bad_fields"), (7, "bad_status")]
    assert not parsed.ok
    assert len(to_readings(parsed, "S1")) == 3


def test_empty_content() -> None:
    for text in ("", b"", "\ufeff", "\r\n\r\n"):
        parsed = parse_content(text)
        assert parsed.lines == () and parsed.errors == ()


# ------------------------------------------------------------------- properties

_FIELD_CHARS = st.characters(blacklist_characters="\t\n\r\ufeff", blacklist_categories=("Cs",))
_symbols = st.one_of(
    st.sampled_from(NATIONAL_SYMBOLS),
    st.text(_FIELD_CHARS, min_size=1, max_size=12).filter(lambda s: s == s.strip(" ") and s.strip() != ""),
)
_units = st.one_of(
    st.sampled_from(["mg/L", "-", "°C", "m3/h", "mg/Nm3", "%", "Pt/Co", ""]),
    st.text(_FIELD_CHARS, max_size=10).filter(lambda s: s == s.strip(" ")),
)
_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0, tzinfo=VN_TZ)
)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_number_texts = st.from_regex(r"\A[+-]?(?:[0-9]{1,8}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})(?:[eE][+-]?[0-9]{1,2})?\Z")


@st.composite
def tt10_lines(draw: st.DrawFn) -> TT10Line:
    symbol, unit, ts = draw(_symbols), draw(_units), draw(_times)
    kind = draw(st.sampled_from(["float", "text", "missing"]))
    if kind == "missing":
        return TT10Line(symbol, None, "", unit, ts, Status.FAULT)
    status = draw(st.sampled_from(list(Status)))
    if kind == "text":
        text = draw(_number_texts)
        return TT10Line(symbol, parse_value(text), text, unit, ts, status)
    value = draw(_finite)
    return TT10Line.of(symbol, value, unit, ts, status, decimals=draw(st.none() | st.integers(0, 6)))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(tt10_lines(), max_size=30), newline=st.sampled_from(["\r\n", "\n"]),
       final_newline=st.booleans(), bom=st.booleans(), as_bytes=st.booleans())
def test_well_formed_lines_round_trip(lines: list[TT10Line], newline: str, final_newline: bool, bom: bool,
                                      as_bytes: bool) -> None:
    text = format_content(lines, newline, final_newline=final_newline, bom=bom)
    parsed = parse_content(text.encode() if as_bytes else text)

    assert parsed.errors == ()
    assert parsed.lines == tuple(dataclasses.replace(line, line_no=i) for i, line in enumerate(lines, start=1))
    if len(lines) > 1 or (lines and final_newline):
        assert (parsed.newline, parsed.final_newline, parsed.bom) == (newline, final_newline, bom)
    assert format_content(parsed.lines, newline, final_newline=final_newline, bom=bom) == text


@settings(max_examples=300, deadline=None)
@given(_finite, st.none() | st.integers(0, 12))
def test_format_value_reads_back(value: float, decimals: int | None) -> None:
    text = format_value(value, decimals)
    assert "e" not in text.lower()
    if decimals is None:
        assert parse_value(text) == value
    else:
        assert parse_value(text) == pytest.approx(round(value, decimals), rel=1e-12, abs=10.0 ** -decimals)


_line_soup = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["", "00", "01", "02", STAMP, "1.5", "nan", "PM2,5"])),
                 min_size=1, max_size=7).map("\t".join),
    ),
    max_size=12,
).map(lambda parts: "\r\n".join(parts))


def _blank(raw: str | bytes) -> bool:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return "\t" not in raw and raw.strip() == ""


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _line_soup, st.binary(), _line_soup.map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_arbitrary_input_never_raises_and_every_line_is_accounted_for(data: str | bytes) -> None:
    parsed = parse_content(data)

    seen = sorted([line.line_no for line in parsed.lines] + [error.line_no for error in parsed.errors])
    assert len(seen) == len(set(seen))
    body = data.removeprefix(b"\xef\xbb\xbf" if isinstance(data, bytes) else "\ufeff")
    nl = b"\n" if isinstance(body, bytes) else "\n"
    physical = body.split(nl)  # type: ignore[arg-type]
    if body.endswith(nl):  # type: ignore[arg-type]
        physical.pop()
    content_lines = {n for n, raw in enumerate(physical, start=1) if not _blank(raw)}
    assert set(seen) == content_lines
    assert all(error.reason_code in REASON_CODES for error in parsed.errors)
    assert all(error.message.startswith(f"line {error.line_no} (") for error in parsed.errors)

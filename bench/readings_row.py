"""Where PostgreSQL's cost of a stored reading goes: the same readings COPYed into `readings`-like hypertables that
differ only in their row, the row before migration 0080 (a text key) as the same-run baseline (issue 15, point 5).

Each variant is a TimescaleDB hypertable in day chunks (with the extension's default index on `ts`, as `readings`
has) in a database of its own (quantrac_rowbench, dropped and re-created at each run), filled with the same
readings: `--stations` stations x 8 parameters at a 1-minute cadence, in transactions of `--batch` rows, from
binary COPY buffers built before timing (the server's own cost; no client in the clock). The variants run in
turns, `--rounds` times, in alternating order, each into a fresh table after a CHECKPOINT; the median is reported.

- `text_key`: `readings` as migrations 0002-0075 made it, primary key (station_id, parameter, ts) on text;
- `no_unit`: without the repeated unit;
- `collate_c`: the text key compared bytewise (COLLATE "C");
- `int_key_with_names`: an integer series id as the key (series_id, ts), station_id and parameter kept as columns
  (`readings` since migration 0080);
- `int_key`: the integer key without the names (they would come from a series table);
- `narrow`: the integer key, no unit, a smallint status.

    python bench/readings_row.py [--stations 200] [--rows 800000] [--batch 40000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from processors.copy_binary import PG_EPOCH_US, SIGNATURE, TRAILER  # noqa: E402
from quantrac.settings import Settings  # noqa: E402
from stack import services as local_stack  # noqa: E402

DATABASE = "quantrac_rowbench"
PARAMETERS = ("COD", "TSS", "pH", "NH4", "TN", "TP", "Temp", "Flow")
UNITS = {"pH": "-", "Temp": "°C", "Flow": "m3/h"}
START_US = 1_764_547_200_000_000 - PG_EPOCH_US  # 2025-12-01 00:00 UTC, in PostgreSQL's epoch
_STATUS_TEXT = "status char(2) NOT NULL CHECK (status IN ('00', '01', '02'))"
_RECEIVED = "received_at timestamptz NOT NULL DEFAULT now()"
_NAMES = "station_id text NOT NULL, parameter text NOT NULL"
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text_key": (f"{_NAMES}, ts timestamptz NOT NULL, value double precision, unit text NOT NULL, {_STATUS_TEXT}, {_RECEIVED}, "
                "PRIMARY KEY (station_id, parameter, ts)", ("station_id", "parameter", "ts", "value", "unit", "status")),
    "no_unit": (f"{_NAMES}, ts timestamptz NOT NULL, value double precision, {_STATUS_TEXT}, {_RECEIVED}, "
                "PRIMARY KEY (station_id, parameter, ts)", ("station_id", "parameter", "ts", "value", "status")),
    "collate_c": ('station_id text COLLATE "C" NOT NULL, parameter text COLLATE "C" NOT NULL, ts timestamptz NOT NULL, '
                  f"value double precision, unit text NOT NULL, {_STATUS_TEXT}, {_RECEIVED}, PRIMARY KEY (station_id, parameter, ts)",
                  ("station_id", "parameter", "ts", "value", "unit", "status")),
    "int_key_with_names": (f"series_id integer NOT NULL, {_NAMES}, ts timestamptz NOT NULL, value double precision, "
                           f"unit text NOT NULL, {_STATUS_TEXT}, {_RECEIVED}, PRIMARY KEY (series_id, ts)",
                           ("series_id", "station_id", "parameter", "ts", "value", "unit", "status")),
    "int_key": (f"series_id integer NOT NULL, ts timestamptz NOT NULL, value double precision, unit text NOT NULL, {_STATUS_TEXT}, "
                f"{_RECEIVED}, PRIMARY KEY (series_id, ts)", ("series_id", "ts", "value", "unit", "status")),
    "narrow": ("series_id integer NOT NULL, ts timestamptz NOT NULL, value double precision, "
               f"status smallint NOT NULL CHECK (status IN (0, 1, 2)), {_RECEIVED}, PRIMARY KEY (series_id, ts)",
               ("series_id", "ts", "value", "status")),
}


def _field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def copy_buffers(columns: tuple[str, ...], stations: int, rows: int, batch: int, smallint_status: bool = False) -> list[bytes]:
    """The readings as binary COPY buffers of `columns`, `batch` rows each: station-major within each minute; the status
    as char(2) text, or a smallint with `smallint_status`."""
    status = struct.pack(">h", 0) if smallint_status else b"00"
    names = [(f"HD-ST{s:03d}-WW01".encode(), p.encode(), UNITS.get(p, "mg/L").encode()) for s in range(stations) for p in PARAMETERS]
    buffers = []
    for first in range(0, rows, batch):
        out = [SIGNATURE]
        for k in range(first, min(first + batch, rows)):
            minute, series = divmod(k, len(names))
            station, parameter, unit = names[series]
            value = {"series_id": struct.pack(">i", series), "station_id": station, "parameter": parameter,
                     "ts": struct.pack(">q", START_US + minute * 60_000_000), "value": struct.pack(">d", 10.0 + k % 13),
                     "unit": unit, "status": status}
            out.append(struct.pack(">h", len(columns)) + b"".join(_field(value[c]) for c in columns))
        out.append(TRAILER)
        buffers.append(b"".join(out))
    return buffers


def copy_seconds(conn: psycopg.Connection, variant: str, buffers: list[bytes]) -> float:
    """Seconds to COPY `buffers` into a fresh hypertable of the variant's row, one transaction a buffer."""
    definition, columns = VARIANTS[variant]
    table = sql.Identifier(f"row_{variant}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(sql.SQL("CREATE TABLE {} (" + definition + ")").format(table))
    conn.execute("SELECT create_hypertable(%s, 'ts', chunk_time_interval => INTERVAL '1 day')", (f"row_{variant}",))
    conn.execute("CHECKPOINT")
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    started = time.perf_counter()
    for buffer in buffers:
        with conn.transaction(), conn.cursor().copy(copy) as writer:
            writer.write(buffer)
    seconds = time.perf_counter() - started
    conn.execute(sql.SQL("DROP TABLE {}").format(table))
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--rows", type=int, default=800_000, help="Readings per variant and round.")
    parser.add_argument("--batch", type=int, default=40_000, help="Readings per transaction (the worker's 5,000 messages x 8).")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    settings = Settings()
    admin = settings.model_copy(update={"pg_database": "postgres"}).pg_dsn
    with local_stack.running(settings, only=["postgres"]):
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        buffers = {v: copy_buffers(columns, args.stations, args.rows, args.batch, smallint_status=v == "narrow")
                   for v, (_, columns) in VARIANTS.items()}
        seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        with psycopg.connect(settings.model_copy(update={"pg_database": DATABASE}).pg_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            for round_ in range(args.rounds):
                for variant in (list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))):
                    seconds[variant].append(copy_seconds(conn, variant, buffers[variant]))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
    baseline = statistics.median(seconds["text_key"])
    result = {
        "description": "readings row variants, prebuilt binary COPY into TimescaleDB hypertables",
        "parameters": {"stations": args.stations, "rows": args.rows, "batch_rows": args.batch, "rounds": args.rounds},
        "baseline": "text_key",
        "variants": {v: {"seconds": [round(s, 3) for s in ss], "rows_per_s": round(args.rows / statistics.median(ss)),
                         "vs_text_key": round(baseline / statistics.median(ss), 3)} for v, ss in seconds.items()},
    }
    write_result("readings_row", result)
    return result


if __name__ == "__main__":
    main()

"""A batch's readings as one PostgreSQL binary COPY buffer, built in numpy.

psycopg's `write_row` adapts every value of every row in Python and is awaited once per row; the
writer instead hands `AsyncCopy.write` the whole batch at once (block mode: the buffer carries the
format's signature and trailer itself). A row of `readings (series_id, station_id, parameter, ts,
value, unit, status)` is three pieces: the series' field count, id, station and parameter (one piece
per series), time and value (fixed width, from the columns), unit and status (one piece per distinct
pair).
The pieces are copied into the buffer by one compiled loop. The bytes are exactly those of
psycopg's own binary `write_row` for the same rows (tests/test_copy_binary.py).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import numba
import numpy as np
import numpy.typing as npt

from quantrac.batch_columns import BatchColumns
from quantrac.wire_columns import STATUSES

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
"""Binary COPY header: signature, flags, header extension length."""
TRAILER = struct.pack(">h", -1)
PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01 (PostgreSQL's epoch) in microseconds since the Unix epoch."""
_FIXED = np.dtype([("ts_len", ">i4"), ("ts", ">i8"), ("value_len", ">i4"), ("value", ">f8")])
_FIXED_NULL = 16
"""Bytes of the fixed piece when the value is NULL: its length field is -1 and no value follows."""


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


@functools.lru_cache(maxsize=1 << 16)
def _head(series_id: int, station_id: str, parameter: str) -> bytes:
    """A series' piece: the row's field count, series id, station and parameter (kept: a series comes back every
    batch)."""
    return struct.pack(">hii", 7, 4, series_id) + _text(station_id) + _text(parameter)


def copy_buffer(batch: BatchColumns, series_ids: Sequence[int]) -> bytes:
    """The rows of `batch` in PostgreSQL's binary COPY format, header and trailer included; `series_ids` holds the id
    (`series`) of each of the batch's `series_keys`."""
    n = len(batch)
    used_series, series = np.unique(batch.series, return_inverse=True)
    heads = [_head(series_ids[k], *batch.series_keys[k]) for k in used_series.tolist()]
    pairs, pair = np.unique(batch.unit * len(STATUSES) + batch.status, return_inverse=True)
    tails = [_text(batch.unit_keys[p // len(STATUSES)]) + _text(STATUSES[p % len(STATUSES)].value) for p in pairs.tolist()]
    fixed = np.zeros(n, _FIXED)
    fixed["ts_len"] = 8
    fixed["ts"] = batch.ts_us - PG_EPOCH_US
    fixed["value_len"] = np.where(batch.missing, -1, 8)
    fixed["value"] = np.where(batch.missing, 0.0, batch.values)
    pool = np.frombuffer(b"".join(heads) + b"".join(tails), np.uint8)
    head_len = np.array([len(h) for h in heads], np.int64)
    tail_len = np.array([len(t) for t in tails], np.int64)
    head_at = np.cumsum(head_len) - head_len
    tail_at = np.cumsum(tail_len) - tail_len + head_len.sum()
    fixed_at = len(pool) + np.arange(n, dtype=np.int64) * _FIXED.itemsize
    pool = np.concatenate([pool, fixed.view(np.uint8)])
    starts = np.stack([head_at[series], fixed_at, tail_at[pair]], axis=1).ravel()
    lengths = np.stack([head_len[series], np.where(batch.missing, _FIXED_NULL, _FIXED.itemsize), tail_len[pair]],
                       axis=1).ravel()
    return SIGNATURE + gather(pool, starts, lengths).tobytes() + TRAILER


def gather(pool: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64],
           lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """The slices `pool[start:start + length]`, concatenated in order (a fancy index of every byte built an index
    array eight times the buffer's size)."""
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    _gather(pool, starts, lengths, out)
    return out


@numba.njit(cache=True)
def _gather(pool: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    at = 0
    for i in range(starts.shape[0]):
        n = lengths[i]
        out[at:at + n] = pool[starts[i]:starts[i] + n]
        at += n

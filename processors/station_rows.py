"""A batch's readings split by station, as the columns detection needs, without a `Reading` per row.

The worker decodes a batch into columns (`quantrac.batch_columns.BatchColumns`); building a pydantic
`Reading` for each row only to judge it cost about as much as the rules of a plain batch
(`processors.plain_pass`). `split` gives each station's rows in arrival order as plain lists (parameter,
time as sent, epoch time, whether measuring, spec) with the batch's instantaneous rules judged
column-wise (`processors.rule_columns`); `Reading`s are built only for a station the scalar pass
takes (`StationRows.readings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from alerts.rules import OpenKeys
from processors.detection_state import StationState
from processors.rule_columns import InstantColumns, judged_columns, series_bounds
from quantrac.batch_columns import BatchColumns
from quantrac.domain import ParameterSpec, Reading, Station, Status
from quantrac.wire_columns import STATUSES

_MEASURING = STATUSES.index(Status.MEASURING)


@dataclass(frozen=True)
class OrderedColumns:
    """Every part's readings of a batch, part after part in arrival order, as arrays for compiled passes."""

    series: np.ndarray
    """Each reading's series (an index into the batch's `series_keys`)."""
    t: np.ndarray
    learn: np.ndarray
    """The value to learn from (`InstantColumns.learn`), NaN where None."""
    good: np.ndarray
    """Measuring, with a value to learn from, and not hot: a reading the plain pass can take."""


@dataclass
class StationRows:
    """One station's readings of a batch, in arrival order, and its state before them."""

    station: Station
    state: StationState | dict[str, Any] | None
    parameters: list[str]
    specs: list[ParameterSpec | None]
    """Each reading's parameter spec; None where the station has no such parameter."""
    ts: list[datetime]
    """Each reading's event time as sent."""
    t: list[float]
    """The same in epoch seconds (`datetime.timestamp()`'s float)."""
    measuring: list[bool]
    """Whether the reading's status is 00."""
    columns: InstantColumns | None
    """The instantaneous rules judged column-wise (None: without open keys, every reading is judged)."""
    batch: BatchColumns
    rows: list[int]
    """The readings' rows in `batch`."""
    ordered: OrderedColumns | None = None
    """The whole batch's rows in the order of the parts, as arrays (with `columns`); this part's are `span`."""
    span: tuple[int, int] = (0, 0)

    def readings(self) -> list[Reading]:
        """The readings as `Reading`s, for the scalar pass."""
        return [self.batch.reading(i) for i in self.rows]


def split(batch: BatchColumns, states: Mapping[str, StationState | dict[str, Any] | None], stations: Mapping[str, Station],
          early_fraction: float | None, open_keys: OpenKeys | None) -> list[StationRows]:
    """Each known station's rows of the batch, stations in order of their first reading; readings of a station not in
    `stations` are left out."""
    names, station_of = batch.stations()
    known = np.array([name in stations for name in names], dtype=bool)
    rows = np.flatnonzero(known[station_of]) if len(names) else np.zeros(0, np.int64)
    specs = [stations[sid].parameter(p) if sid in stations else None for sid, p in batch.series_keys]
    order = rows[np.argsort(station_of[rows], kind="stable")]
    bounds = np.searchsorted(station_of[order], np.arange(len(names) + 1)).tolist()
    return _parts(batch, order, bounds, [(stations.get(name), states.get(name)) for name in names], specs, early_fraction,
                  open_keys)


def of_station(batch: BatchColumns, station: Station, state: StationState | dict[str, Any] | None,
               early_fraction: float | None, open_keys: OpenKeys | None) -> StationRows:
    """Every row of the batch as the station's (`processors.detection.detect`)."""
    specs = [station.parameter(p) for _, p in batch.series_keys]
    parts = _parts(batch, np.arange(len(batch)), [0, len(batch)], [(station, state)], specs, early_fraction, open_keys,
                   keep_empty=True)
    return parts[0]


def _parts(batch: BatchColumns, order: np.ndarray, bounds: list[int],
           owners: list[tuple[Station | None, StationState | dict[str, Any] | None]], specs: list[ParameterSpec | None],
           early_fraction: float | None, open_keys: OpenKeys | None, keep_empty: bool = False) -> list[StationRows]:
    """The rows `order[bounds[k]:bounds[k + 1]]` as owner k's (station, state), those of no station left out."""
    series = batch.series[order]
    hot: list[bool] | None = None
    learn: list[float | None] = []
    t_array = batch.ts_us[order] / 1e6
    measuring_array = batch.status[order] == _MEASURING
    ordered = None
    if open_keys is not None:
        judged = judged_columns(batch.series_keys, series, batch.values[order], batch.valid[order],
                                series_bounds(specs, early_fraction)[series], open_keys)
        hot, learn = judged.hot.tolist(), judged.learn.tolist()
        ordered = OrderedColumns(series, t_array, judged.learn, measuring_array & ~judged.hot & ~np.isnan(judged.learn))
        for row in np.flatnonzero(np.isnan(judged.learn)).tolist():
            learn[row] = None
    series_list = series.tolist()
    t = t_array.tolist()
    measuring = measuring_array.tolist()
    row_list = order.tolist()
    keys, ts = batch.series_keys, batch.ts
    out = []
    for k, (station, state) in enumerate(owners):
        a, b = bounds[k], bounds[k + 1]
        if station is None or (a == b and not keep_empty):
            continue
        part = series_list[a:b]
        out.append(StationRows(station, state, [keys[s][1] for s in part], [specs[s] for s in part],
                               [ts[i] for i in row_list[a:b]], t[a:b], measuring[a:b],
                               None if hot is None else InstantColumns(hot[a:b], learn[a:b]), batch, row_list[a:b],
                               ordered, (a, b)))
    return out

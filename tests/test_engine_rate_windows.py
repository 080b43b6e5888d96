"""The engine's rate-of-change bins and windows give what `processors.rate_span` and `processors.windows` give."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import rate_span
from processors.engine.common import steps
from processors.engine.rate import RateRows
from tests.engine_series import Batch, batches, pieces

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(batch=batches(max_len=300), spans=st.lists(st.sampled_from([60.0, 300.0, 900.0, 3600.0]), min_size=4, max_size=4),
       start=st.booleans())
def test_rate_rows_equal_rate_span(batch: Batch, spans: list[float], start: bool) -> None:
    """Valid readings in order: bins and levels equal (exactly) after every reading; loaded bins resume the same."""
    keep = batch.status == 0
    keep &= np.isfinite(batch.value)
    series, t, value = batch.series[keep], batch.t[keep], batch.value[keep]
    bins: list[list[list[float]]] = [[] for _ in spans]
    rows = RateRows(np.array(spans))
    if start and series.size:  # learned state handed over from the scalar form
        first = series[0]
        bins[first] = rate_span.add([], float(t[0]) - spans[first], 1.0, spans[first])
        rows.load(int(first), bins[first])
    found = 0
    for piece in pieces(Batch(series, t, value, batch.status[keep], [c for c in batch.cuts if c <= series.size])):
        s, tt, vv = series[piece], t[piece], value[piece]
        for idx in steps(s):
            r = s[idx]
            rows.add(r, tt[idx], vv[idx])
            got = rows.levels(r)
            for k, i in enumerate(idx.tolist()):
                row = int(s[i])
                bins[row] = rate_span.add(bins[row], float(tt[i]), float(vv[i]), spans[row])
                want = rate_span.levels(bins[row])
                assert bool(got[0][k]) == (want is not None)
                if want is not None:
                    found += 1
                    assert (got[1][k], got[2][k], got[3][k], got[4][k]) == (want.from_t, want.from_level, want.to_t,
                                                                             want.to_level)
                assert rows.bins(row) == bins[row]


def test_rate_rows_find_the_levels_of_a_ramp() -> None:
    """Two series every 20 s and 60 s for two hours, a ramp: the levels are found, and equal the scalar ones."""
    t = 1.7e9 + np.arange(360) * 20.0
    rows = RateRows(np.array([300.0, 900.0]))
    bins: list[list[list[float]]] = [[], []]
    found = 0
    for i, ti in enumerate(t.tolist()):
        r = np.array([0, 1]) if i % 3 == 0 else np.array([0])
        v = np.full(r.size, 7.0 + 0.01 * i)
        rows.add(r, np.full(r.size, ti), v)
        got = rows.levels(r)
        for k, row in enumerate(r.tolist()):
            bins[row] = rate_span.add(bins[row], ti, float(v[k]), [300.0, 900.0][row])
            want = rate_span.levels(bins[row])
            assert bool(got[0][k]) == (want is not None)
            if want is not None:
                found += 1
                assert (got[1][k], got[2][k], got[3][k], got[4][k]) == (want.from_t, want.from_level, want.to_t, want.to_level)
    assert found > 300

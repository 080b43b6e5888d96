"""The flatline bank's value keys in arithmetic are the keys the scalar class spells (`Flatline._key`), bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from processors.engine.flatline import _keys


def spelt(values: list[float]) -> list[int]:
    return np.array([float(f"{v:.9g}") for v in values], dtype=np.float64).view(np.int64).tolist()


def near_halves() -> st.SearchStrategy[float]:
    """Values whose tenth significant digit is about 5: where a rounding error of the scaling could cross the half."""
    return st.builds(lambda digits, nudge, power: (digits + 0.5 + nudge) * 10.0 ** power,
                     st.integers(10**8, 10**9 - 1), st.sampled_from([0.0, 1e-9, -1e-9, 1e-7, -1e-7, 1e-5]),
                     st.integers(-30, 20))


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True), near_halves(),
                   st.floats(-1e4, 1e4).map(lambda v: round(v, 2)), st.integers(-10**15, 10**15).map(float))


@given(st.lists(values, min_size=64, max_size=400))
def test_keys_in_arithmetic_are_the_spelt_keys(xs: list[float]) -> None:
    assert _keys(np.array(xs, dtype=np.float64)).tolist() == spelt(xs)


def test_edges_are_the_spelt_keys() -> None:
    edges = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.7e308, 123456789.5, 1234567895.0, 999999999.7, 9999999995.0,
             1e9, 1e-9, 0.1, 0.3, 2.5e-5, -1e22, 1e23, 1e-22, 1e-23]
    xs = edges * 4
    assert _keys(np.array(xs)).tolist() == spelt(xs)
    assert _keys(np.array(edges)).tolist() == spelt(edges)  # under the size where it spells them anyway

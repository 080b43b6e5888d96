"""A bank's rows written as JSON text column by column (`processors.engine.row_json`) are byte for byte the JSON of
their state dicts, and a state holding such text (`RowJson`) reads back and goes on as the dict form does."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from processors.detection import LiveDetectors, detect
from processors.detection_state import RowJson, StationState, plain
from processors.detectors import CusumDrift, Flatline, Mahalanobis, RobustSpike
from processors.engine import advance
from processors.engine.drift import DriftBank
from processors.engine.flatline import FlatlineBank
from processors.engine.multivariate import MahalanobisBank
from processors.engine.row_json import cells, ragged
from processors.engine.spike import SpikeBank
from tests.engine_series import Batch, batches, pieces
from tests.test_detection_state import CFG, STATION, first_part, rest
from tests.test_engine_equivalence import drift_params, flatline_params, mahalanobis_params, spike_params, vectors

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from([0.0, -0.0, 1e16, 5e-324, 3.0])


@given(column=arrays(np.float64, st.integers(0, 30), elements=FLOATS))
def test_cells_are_each_values_json(column: np.ndarray) -> None:
    assert cells(column) == [orjson.dumps(v) for v in column.tolist()]
    ints = np.arange(column.size, dtype=np.int64) - 7
    assert cells(ints) == [orjson.dumps(v) for v in ints.tolist()]
    assert cells(column > 0) == [orjson.dumps(v) for v in (column > 0).tolist()]


@given(matrix=arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(0, 6), st.integers(1, 3)), elements=FLOATS),
       data=st.data())
def test_ragged_rows_are_each_rows_prefix_as_json(matrix: np.ndarray, data: st.DataObject) -> None:
    lengths = np.array(data.draw(st.lists(st.integers(0, matrix.shape[1]), min_size=matrix.shape[0],
                                          max_size=matrix.shape[0])), dtype=np.int64)
    assert ragged(matrix, lengths) == [orjson.dumps(matrix[i, :n].tolist()) for i, n in enumerate(lengths.tolist())]
    flat = matrix[:, :, 0]
    assert ragged(flat, lengths) == [orjson.dumps(flat[i, :n].tolist()) for i, n in enumerate(lengths.tolist())]


def _play(bank: Any, batch: Batch) -> None:
    """Advance the bank piece by piece; after each, every row's JSON text is its state's JSON."""
    rows = np.arange(len(bank))[::-1].copy()
    for piece in pieces(batch):
        advance(bank, batch.series[piece], batch.t[piece], batch.value[piece], batch.status[piece])
        assert bank.states_json(rows) == [orjson.dumps(bank.state(row)) for row in rows.tolist()]
        assert [orjson.loads(text) for text in bank.states_json(rows)] == [orjson.loads(orjson.dumps(s))
                                                                           for s in bank.states(rows)]


@SETTINGS
@given(batch=batches(), data=st.data())
def test_each_banks_json_is_its_states_json(batch: Batch, data: st.DataObject) -> None:
    """Spike, drift and flatline rows with their own hyperparameters, warming up, flagging, relearning after gaps."""
    for cls, bank, strategy in ((RobustSpike, SpikeBank, spike_params), (CusumDrift, DriftBank, drift_params),
                                (Flatline, FlatlineBank, flatline_params)):
        params = data.draw(st.lists(strategy(), min_size=4, max_size=4))
        _play(bank.from_detectors([cls(**p) for p in params]), batch)


@SETTINGS
@given(batch=batches(), data=st.data())
def test_the_multivariate_banks_json_is_its_states_json(batch: Batch, data: st.DataObject) -> None:
    params = data.draw(st.lists(mahalanobis_params(3), min_size=4, max_size=4))
    _play(MahalanobisBank.from_detectors([Mahalanobis(**p) for p in params]), vectors(batch, 3, 5))


def test_a_state_holding_row_json_reads_back_and_goes_on_as_the_dict_form() -> None:
    """The worker's path (`owned`) keeps rows as `RowJson`: its JSON is the dict path's, and a worker that must load the
    rows from it (another process, or after a failed batch) judges the rest as one that loads them from dicts."""
    live = LiveDetectors()
    kept = detect(None, first_part()[:300], STATION, CFG, live).state
    owned = detect(kept.copy(), first_part()[300:], STATION, CFG, live, owned=True).state
    dicts = detect(kept, first_part()[300:], STATION, CFG).state
    kinds = {type(d) for ps in owned.parameters.values() for d in ps.detectors.values()}
    assert kinds == {RowJson} and isinstance(owned.groups["COD,pH"].detector, RowJson)
    assert orjson.loads(orjson.dumps(owned.to_json())) | {"token": None} == (
        orjson.loads(orjson.dumps(dicts.to_json())) | {"token": None})
    assert all(plain(owned.parameters[p].detectors[name]) == d for p, ps in dicts.parameters.items()
               for name, d in ps.detectors.items())
    from_text = detect(owned, rest(), STATION, CFG, LiveDetectors(), owned=True)
    from_dicts = detect(StationState.from_json(orjson.loads(orjson.dumps(dicts.to_json()))), rest(), STATION, CFG,
                        LiveDetectors())
    assert from_text.conditions == from_dicts.conditions and any(c.active for c in from_text.conditions)
    assert orjson.loads(orjson.dumps(from_text.state.to_json())) | {"token": None} == (
        orjson.loads(orjson.dumps(from_dicts.state.to_json())) | {"token": None})

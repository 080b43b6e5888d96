"""The columnar engine gives the scalar detectors' verdicts, reading for reading, and converts state both ways."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.detectors import CusumDrift, Detector, Flatline, Mahalanobis, RobustSpike
from processors.engine import BatchBank, advance, flagged_since
from processors.engine.common import steps
from processors.engine.drift import DriftBank
from processors.engine.flatline import FlatlineBank
from processors.engine.multivariate import MahalanobisBank
from processors.engine.spike import SpikeBank
from tests.engine_series import Batch, batches, pieces

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spike_params() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "window": st.integers(3, 16), "threshold": st.sampled_from([3.0, 5.0, 8.0]), "grace_period": st.integers(0, 8),
        "eps": st.sampled_from([1e-9, 1e-6]), "relearn_after": st.sampled_from([None, 1, 3, 6]),
        "resolution": st.sampled_from([None, None, 0.01, 0.5]), "center_window": st.sampled_from([None, 0, 1, 3, 5]),
        "threshold_off": st.sampled_from([None, 2.0]), "levels": st.integers(0, 3),
        "tail_p": st.sampled_from([0.001, 0.05]), "tail_ref": st.sampled_from([None, 1.0, 6.5]),
        "tail_fit": st.sampled_from([None, 0.1, 0.5]), "tail_power": st.sampled_from([2.0, 2.5]),
        "tail_blend": st.booleans(), "reseed_after": st.sampled_from([None, 1, 2, 3])}).map(lambda d: {
            **d, "tail_blend": d["tail_blend"] and d["tail_fit"] is not None,
            "reseed_after": d["reseed_after"] if d["reseed_after"] is not None and d["reseed_after"] < d["grace_period"]
            else None})


def stamp(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def same_state(a: Any, b: Any, path: str = "state") -> None:
    """Equal states: the same structure, floats within 1e-9 relative (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != {b}"
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


def unsigned_zero(detail: str | None) -> str | None:
    """A detail with "-0" written "0": a median of zeros is -0.0 or 0.0 (equal numbers) by which one the partition
    picks, and the scalar class itself does not keep that across its own state (its ring's storage order is not in it)."""
    return None if detail is None else re.sub(r"-0(?![\d.])", "0", detail)


def check(detectors: list[Detector], bank_of: Any, batch: Batch, roundtrip: list[bool]) -> tuple[int, int]:
    """Play the batch through the scalar detectors and through a bank built from them; (verdicts compared, anomalies)."""
    bank = bank_of(detectors)
    compared = flagged = 0
    for k, piece in enumerate(pieces(batch)):
        series, t, value, status = batch.series[piece], batch.t[piece], batch.value[piece], batch.status[piece]
        out = advance(bank, series, t, value, status, explain=np.ones(series.size, dtype=bool))
        judged, flag, score = out.judged, out.flag, out.score
        for i in range(series.size):
            if status[i] != 0:
                assert not judged[i]
                continue
            given = value[i] if value.ndim == 2 else float(value[i])
            verdict = detectors[series[i]].update(given, stamp(float(t[i])))
            assert judged[i]
            assert flag[i] == verdict.is_anomaly, f"reading {i} of piece {k}: {verdict}"
            assert math.isclose(score[i], verdict.score, rel_tol=1e-9, abs_tol=1e-12), f"reading {i}: {score[i]} vs {verdict}"
            assert unsigned_zero(out.detail[i]) == unsigned_zero(verdict.detail)
            compared += 1
            flagged += verdict.is_anomaly
        for row, det in enumerate(detectors):
            same_state(bank.state(row), det.state(), f"row {row} after piece {k}")
        if roundtrip[k % len(roundtrip)]:
            bank = bank_of([bank.detector(row) for row in range(len(detectors))])
    return compared, flagged


def each_detector(detectors: list[Detector], bank_of: Any, t: np.ndarray, x: np.ndarray, cuts: list[int],
                  roundtrip: list[bool]) -> int:
    """One series played through each detector (one row each): every verdict compared; the anomalies."""
    series = np.repeat(np.arange(len(detectors), dtype=np.int32), t.size)
    batch = Batch(series, np.tile(t, len(detectors)), np.tile(x, (len(detectors),) + (1,) * (x.ndim - 1)),
                  np.zeros(series.size, dtype=np.int8), cuts)
    compared, flagged = check(detectors, bank_of, batch, roundtrip)
    assert compared == series.size
    return flagged


def test_steps_keep_each_series_order() -> None:
    series = np.array([2, 0, 2, 1, 0, 2, 2])
    cut = steps(series)
    assert [series[s].tolist() for s in cut] == [[0, 1, 2], [0, 2], [2], [2]]
    assert sorted(np.concatenate(cut).tolist()) == list(range(series.size))
    for k in range(series.max() + 1):
        mine = [int(i) for s in cut for i in s if series[i] == k]
        assert mine == sorted(mine)


def test_spike_bank_flags_what_robust_spike_flags_on_a_long_series() -> None:
    """A fixed long series with every path (warm-up, spikes, known levels, relearning, the tail) compared; it must flag."""
    rng = np.random.default_rng(3)
    x = np.round(40.0 + 2.0 * rng.standard_t(3, 3000), 1)
    x[500::97] += 60.0
    x[1000:1400] = 0.0
    x[1800:2200] = 0.0
    t = 1.7e9 + 60.0 * np.arange(x.size)
    params: dict[str, Any] = {"threshold": 8.0, "relearn_after": 6, "center_window": 5, "window": 60, "grace_period": 30}
    detectors: list[Detector] = [RobustSpike(**params), RobustSpike(**params, threshold_off=4.0),
                                 RobustSpike(**params, tail_power=2.5)]
    each_detector(detectors, SpikeBank.from_detectors, t, x, [1234, 4321], [False])
    oracle = RobustSpike(**params)
    verdicts = [oracle.update(float(v), stamp(float(s))) for v, s in zip(x, t, strict=True)]
    assert sum(v.is_anomaly for v in verdicts) > 5
    assert any("back at level" in v.detail for v in verdicts) and any("new level accepted" in v.detail for v in verdicts)
    steeper = RobustSpike(**params, tail_power=2.5)
    steep = [steeper.update(float(v), stamp(float(s))) for v, s in zip(x, t, strict=True)]
    assert 0 < sum(v.is_anomaly for v in steep) <= sum(v.is_anomaly for v in verdicts)


def drift_params() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "alpha": st.sampled_from([0.01, 0.1, 0.5]), "k": st.sampled_from([0.0, 0.5, 1.0]), "h": st.sampled_from([2.0, 5.0, 14.0]),
        "grace_period": st.integers(0, 10), "eps": st.sampled_from([1e-9, 1e-6]), "relearn_after": st.sampled_from([None, 1, 3]),
        "season_s": st.sampled_from([None, 3600.0, 86400.0]), "season_bins": st.integers(1, 6),
        "season_alpha": st.sampled_from([0.05, 0.3]), "decorrelate": st.booleans(), "clip": st.sampled_from([None, 1.0, 4.0]),
        "resolution": st.sampled_from([None, None, 0.01, 0.5]), "seasonal_spread": st.booleans(),
        "learn_clip": st.sampled_from([None, None, 1.0, 4.0])})


def test_drift_bank_flags_what_cusum_drift_flags_with_a_daily_profile() -> None:
    """Three days at 5 minutes with a daily cycle and a slow drift on day 3, at the worker's hyperparameters; it must flag."""
    rng = np.random.default_rng(11)
    t = 1.7e9 + 300.0 * np.arange(3 * 288)
    x = np.round(20.0 + 3.0 * np.sin(2 * np.pi * t / 86400.0) + 0.3 * rng.standard_normal(t.size), 2)
    x[2 * 288:] += np.linspace(0.0, 15.0, 288)
    params: dict[str, Any] = {"k": 1.0, "h": 14.0, "relearn_after": 3}
    detectors: list[Detector] = [CusumDrift(**params), CusumDrift(**params, resolution=0.01)]
    assert each_detector(detectors, DriftBank.from_detectors, t, x, [700], [True]) > 0


def flatline_params() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "n_intervals": st.integers(1, 6), "tolerance": st.sampled_from([0.0, 0.0, 0.01, 0.5]), "grace_period": st.integers(0, 4),
        "rarity": st.sampled_from([1e-7, 1e-2]), "alpha": st.sampled_from([0.01, 0.3])})


@pytest.mark.parametrize(("cls", "bank", "strategy"), [(RobustSpike, SpikeBank, spike_params), (CusumDrift, DriftBank, drift_params),
                                                     (Flatline, FlatlineBank, flatline_params)], ids=["spike", "drift", "flatline"])
@SETTINGS
@given(batch=batches(), data=st.data(), roundtrip=st.lists(st.booleans(), min_size=1, max_size=3))
def test_scalar_banks_equal_their_detectors(cls: Any, bank: Any, strategy: Any, batch: Batch, data: st.DataObject,
                                            roundtrip: list[bool]) -> None:
    """Four series with their own hyperparameters, interleaved, cut at random, state converted at random: equal verdicts."""
    params = data.draw(st.lists(strategy(), min_size=4, max_size=4))
    check([cls(**p) for p in params], bank.from_detectors, batch, roundtrip)


def test_flatline_bank_flags_what_flatline_flags_on_flow_nights() -> None:
    """A flow at 0 every night and noisy by day, quantised (more than 16 values held): every verdict equal, and it flags."""
    rng = np.random.default_rng(2)
    t = 1.7e9 + 300.0 * np.arange(4 * 288)
    day = (t % 86400.0) > 6 * 3600.0
    x = np.where(day, np.round(40.0 + 3.0 * rng.standard_normal(t.size), 1), 0.0)
    x[700:760] = x[699]
    detectors: list[Detector] = [Flatline(n_intervals=12), Flatline(n_intervals=3, tolerance=0.2, grace_period=5)]
    assert each_detector(detectors, FlatlineBank.from_detectors, t, x, [100, 1500], [False, True]) > 0
    assert len(detectors[0].state()["held"]) == 16


def mahalanobis_params(size: int) -> st.SearchStrategy[dict[str, Any]]:
    names = ["COD", "TSS", "NH4", "pH", "Cl"][:size]
    return st.fixed_dictionaries({
        "names": st.just(names), "alpha": st.sampled_from([0.05, 0.2]), "threshold": st.sampled_from([3.0, 6.0]),
        "grace_period": st.integers(0, 10), "shrinkage": st.sampled_from([0.0, 0.01, 0.5]),
        "eps": st.sampled_from([1e-6, 0.01, [0.01 * (j + 1) for j in range(size)]]),
        "relearn_after": st.sampled_from([None, 1, 3]), "threshold_off": st.sampled_from([None, 2.0]),
        "learn_clip": st.sampled_from([None, 2.0])})


def vectors(batch: Batch, size: int, seed: int) -> Batch:
    """The batch's values as vectors of `size` correlated parameters, some missing, some with the correlation broken."""
    rng = np.random.default_rng(seed)
    v = batch.value
    n = v.size
    x = np.stack([v, 2.0 * v + rng.normal(0.0, 0.1, n), rng.normal(5.0, 1.0, n), v - rng.normal(3.0, 0.2, n),
                  np.round(v / 3.0, 1)], axis=1)[:, :size]
    x[rng.random((n, size)) < 0.03] = np.nan
    broken = rng.random(n) < 0.03
    x[broken, min(1, size - 1)] *= -1.0
    return Batch(batch.series, batch.t, x, batch.status, batch.cuts)


@SETTINGS
@given(batch=batches(), size=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), data=st.data(),
       roundtrip=st.lists(st.booleans(), min_size=1, max_size=3))
def test_mahalanobis_bank_equals_mahalanobis(batch: Batch, size: int, seed: int, data: st.DataObject,
                                             roundtrip: list[bool]) -> None:
    params = data.draw(st.lists(mahalanobis_params(size), min_size=4, max_size=4))
    detectors: list[Detector] = [Mahalanobis(**p) for p in params]
    check(detectors, MahalanobisBank.from_detectors, vectors(batch, size, seed), roundtrip)


def test_mahalanobis_bank_flags_what_mahalanobis_flags() -> None:
    """Three groups of COD, TSS, NH4 rising together, with a broken correlation at times: equal verdicts, and flags."""
    rng = np.random.default_rng(9)
    t = 1.7e9 + 60.0 * np.arange(2000)
    base = 50.0 + 5.0 * np.sin(np.arange(2000) / 50.0)
    x = np.stack([base + rng.normal(0, 0.5, 2000), 0.6 * base + rng.normal(0, 0.3, 2000), 0.1 * base + rng.normal(0, 0.05, 2000)], axis=1)
    x[1500:1510, 1] += 15.0
    detectors: list[Detector] = [Mahalanobis(["COD", "TSS", "NH4"], learn_clip=3.0), Mahalanobis(["COD", "TSS", "NH4"]),
                                 Mahalanobis(["COD", "TSS", "NH4"], eps=[1.0, 1.0, 0.1], threshold_off=3.0)]
    assert each_detector(detectors, MahalanobisBank.from_detectors, t, x, [3000], [True]) >= 3


class StepsOnly:
    """A bank seen only through `step` and `relearn`, so that `advance` takes it step by step."""

    def __init__(self, bank: Any) -> None:
        self.bank = bank

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray, explain: np.ndarray | None = None,
             flagged: bool = False) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        out: tuple[np.ndarray, np.ndarray, list[str | None] | None] = self.bank.step(rows, x, t, explain, flagged=flagged)
        return out

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        self.bank.relearn(rows, gap_s)


@pytest.mark.parametrize(("cls", "bank", "strategy"), [(CusumDrift, DriftBank, drift_params),
                                                     (Flatline, FlatlineBank, flatline_params)], ids=["drift", "flatline"])
@SETTINGS
@given(batch=batches(), data=st.data())
def test_a_whole_batch_bank_gives_what_its_steps_give(cls: Any, bank: Any, strategy: Any, batch: Batch,
                                                      data: st.DataObject) -> None:
    """`advance` of a bank that takes the whole batch in one compiled pass (`BatchBank`) gives, with relearn gaps, some
    details asked and the flagged series' details, the flags, scores, details and states its steps give."""
    params = data.draw(st.lists(strategy(), min_size=4, max_size=4))
    n = batch.series.size
    explain = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    gap = silences(batch, data.draw(st.sampled_from([900.0, 6 * 3600.0])))
    whole, stepped = (bank.from_detectors([cls(**p) for p in params]) for _ in range(2))
    assert isinstance(whole, BatchBank) and not isinstance(StepsOnly(stepped), BatchBank)
    for piece in pieces(batch):
        args = (batch.series[piece], batch.t[piece], batch.value[piece], batch.status[piece], gap[piece], explain[piece])
        one, each = advance(whole, *args, flagged=True), advance(StepsOnly(stepped), *args, flagged=True)
        assert one.flag.tolist() == each.flag.tolist() and one.detail == each.detail
        np.testing.assert_array_equal(one.score, each.score)
    for row in range(4):
        assert whole.state(row) == stepped.state(row)


def test_flagged_since_marks_a_series_from_its_first_flag_on() -> None:
    rows = np.array([3, 1, 3, 3, 1, 0])
    flag = np.array([False, False, True, False, False, False])
    assert flagged_since(rows, flag).tolist() == [False, False, True, True, False, False]
    assert flagged_since(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)).tolist() == []


def test_mahalanobis_bank_refuses_mixed_sizes() -> None:
    with pytest.raises(ValueError, match="one size"):
        MahalanobisBank.from_detectors([Mahalanobis(["a"]), Mahalanobis(["a", "b"])])


RELEARNING: list[tuple[Any, Any]] = [
    (lambda: RobustSpike(window=10, grace_period=4, levels=2), SpikeBank.from_detectors),
    (lambda: RobustSpike(window=10, grace_period=4, levels=2, reseed_after=2), SpikeBank.from_detectors),
    (lambda: CusumDrift(grace_period=4, season_s=7200.0, season_bins=4), DriftBank.from_detectors),
    (lambda: Flatline(n_intervals=3), FlatlineBank.from_detectors),
    (lambda: Mahalanobis(["a", "b"], grace_period=3), MahalanobisBank.from_detectors)]


@pytest.mark.parametrize("gap", [None, 3600.0, 86400.0])
@pytest.mark.parametrize(("build", "bank_of"), RELEARNING)
def test_banks_relearn_as_the_detectors(build: Any, bank_of: Any, gap: float | None) -> None:
    """After learning a while, rows 0 and 2 relearn after a gap (None: of unknown length): the states stay equal."""
    rng = np.random.default_rng(6)
    detectors = [build() for _ in range(3)]
    for det in detectors:
        for i, v in enumerate(np.round(rng.normal(10.0, 1.0, 200), 0)):
            det.update([v, v % 3] if det.input_kind == "vector" else float(v), stamp(1.7e9 + 60.0 * i))
    bank = bank_of(detectors)
    bank.relearn(np.array([0, 2]), None if gap is None else np.full(2, gap))
    for i in (0, 2):
        detectors[i].relearn(gap)
    for row, det in enumerate(detectors):
        same_state(bank.state(row), det.state())


def test_spike_bank_reseeds_after_a_gap_as_the_detector() -> None:
    """Rows 0 and 2 relearn after a gap with a full window and come back at another level: verdict for verdict through
    the reseed (after 3 values) and the spike that follows, the states equal at every step; again after a second gap
    that comes before the seeded window is full."""
    rng = np.random.default_rng(7)
    detectors = [RobustSpike(window=20, grace_period=9, center_window=3, reseed_after=3) for _ in range(3)]
    for det in detectors:
        for i, v in enumerate(rng.normal(10.0, 1.0, 40)):
            det.update(float(v), stamp(1.7e9 + 60.0 * i))
    bank = SpikeBank.from_detectors(detectors)
    bank.relearn(np.array([0, 2]), np.full(2, 3 * 3600.0))
    for i in (0, 2):
        detectors[i].relearn(3 * 3600.0)
    rows = np.arange(3)
    for k, level in enumerate([14.0] * 6 + [30.0, 14.0]):
        x = level + rng.normal(0.0, 1.0, 3)
        flag, score, details = bank.step(rows, x, explain=np.ones(3, dtype=bool))
        for row, det in enumerate(detectors):
            verdict = det.update(float(x[row]), stamp(1.8e9 + 60.0 * k))
            assert (bool(flag[row]), details[row]) == (verdict.is_anomaly, verdict.detail)  # type: ignore[index]
            assert math.isclose(float(score[row]), verdict.score, rel_tol=1e-9, abs_tol=1e-12)
            same_state(bank.state(row), det.state())
        if level == 30.0:
            assert flag[0] and flag[2]  # judged again 3 values after the gap, not 9
    bank.relearn(np.array([0, 2]), np.full(2, 3 * 3600.0))  # a second gap, before the seeded window is full
    for i in (0, 2):
        detectors[i].relearn(3 * 3600.0)
    for k, level in enumerate([18.0] * 3 + [40.0]):
        x = level + rng.normal(0.0, 1.0, 3)
        flag, score, details = bank.step(rows, x, explain=np.ones(3, dtype=bool))
        for row, det in enumerate(detectors):
            verdict = det.update(float(x[row]), stamp(1.9e9 + 60.0 * k))
            assert (bool(flag[row]), details[row]) == (verdict.is_anomaly, verdict.detail)  # type: ignore[index]
            same_state(bank.state(row), det.state())
        if level == 40.0:
            assert flag[0] and flag[2]


def silences(batch: Batch, longer_than_s: float) -> np.ndarray:
    """Per reading: the silence of its series before it where that was at least `longer_than_s` (status 00 readings
    only), else NaN: where the worker has a series relearn."""
    last: dict[int, float] = {}
    gap = np.full(batch.series.size, np.nan)
    for i, (row, ti, status) in enumerate(zip(batch.series.tolist(), batch.t.tolist(), batch.status.tolist(), strict=True)):
        if status != 0:
            continue
        if row in last and ti - last[row] >= longer_than_s:
            gap[i] = ti - last[row]
        last[row] = ti
    return gap


@SETTINGS
@given(batch=batches(), spike=st.lists(spike_params(), min_size=4, max_size=4),
       drift=st.lists(drift_params(), min_size=4, max_size=4), flat=st.lists(flatline_params(), min_size=4, max_size=4),
       relearn_after_s=st.sampled_from([900.0, 6 * 3600.0]))
def test_banks_relearn_after_gaps_as_the_worker_does(batch: Batch, spike: list[dict[str, Any]], drift: list[dict[str, Any]],
                                                     flat: list[dict[str, Any]], relearn_after_s: float) -> None:
    """`advance` with a relearn gap on the first reading after a long silence: the scalar detector relearns there too."""
    gap = silences(batch, relearn_after_s)
    cases: list[tuple[Any, Any, list[dict[str, Any]]]] = [
        (RobustSpike, SpikeBank.from_detectors, spike), (CusumDrift, DriftBank.from_detectors, drift),
        (Flatline, FlatlineBank.from_detectors, flat)]
    for cls, bank_of, params in cases:
        detectors: list[Detector] = [cls(**p) for p in params]
        bank = bank_of(detectors)
        out = advance(bank, batch.series, batch.t, batch.value, batch.status, gap)
        flag, score = out.flag, out.score
        assert all(d is None for d in out.detail)
        for i in np.flatnonzero(batch.status == 0).tolist():
            det = detectors[batch.series[i]]
            if not np.isnan(gap[i]):
                det.relearn(float(gap[i]))
            verdict = det.update(float(batch.value[i]), stamp(float(batch.t[i])))
            assert flag[i] == verdict.is_anomaly and math.isclose(score[i], verdict.score, rel_tol=1e-9, abs_tol=1e-12)
        for row, det in enumerate(detectors):
            same_state(bank.state(row), det.state())


GROWING: list[tuple[Any, Any, Any]] = [(RobustSpike, SpikeBank, spike_params), (CusumDrift, DriftBank, drift_params),
                                       (Flatline, FlatlineBank, flatline_params)]


def played(bank: Any, batch: Batch, rows: int) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """`batch`'s readings of series under `rows` through `bank` (explained), cut as the batch says."""
    flags, scores, details = [], [], []
    for piece in pieces(batch):
        at = np.arange(batch.series.size)[piece]
        keep = at[batch.series[at] < rows]
        out = advance(bank, batch.series[keep], batch.t[keep], batch.value[keep], batch.status[keep],
                      explain=np.ones(keep.size, dtype=bool))
        flags.append(out.flag)
        scores.append(out.score)
        details.extend(out.detail)
    return np.concatenate(flags), np.concatenate(scores), details


@pytest.mark.parametrize(("cls", "bank", "strategy"), GROWING, ids=["spike", "drift", "flatline"])
@SETTINGS
@given(batch=batches(), data=st.data(), kept=st.integers(1, 3))
def test_a_grown_bank_keeps_its_rows_and_adds_fresh_ones(cls: Any, bank: Any, strategy: Any, batch: Batch,
                                                         data: st.DataObject, kept: int) -> None:
    """A bank that learned on its first `kept` rows, grown to four (`Rows.grown`, as the worker adds stations): every row's
    state is what a bank built from those states and fresh detectors holds, and the next batch gets the same verdicts
    (details up to a zero's sign: the built bank's windows went through `state()`, see `unsigned_zero`)."""
    params = data.draw(st.lists(strategy(), min_size=4, max_size=4))
    learned = bank([dict(p) for p in params[:kept]])
    played(learned, batch, kept)
    grown = learned.grown(params)
    built = bank.from_detectors([learned.detector(row) for row in range(kept)] + [cls(**p) for p in params[kept:]])
    for row in range(4):
        same_state(grown.state(row), built.state(row), f"row {row}")
    a, b = played(grown, batch, 4), played(built, batch, 4)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    assert [unsigned_zero(d) for d in a[2]] == [unsigned_zero(d) for d in b[2]]


@SETTINGS
@given(batch=batches(), size=st.integers(1, 4), seed=st.integers(0, 2**32 - 1), data=st.data(), kept=st.integers(1, 3))
def test_a_grown_mahalanobis_bank_keeps_its_rows(batch: Batch, size: int, seed: int, data: st.DataObject, kept: int) -> None:
    params = data.draw(st.lists(mahalanobis_params(size), min_size=4, max_size=4))
    x = vectors(batch, size, seed)
    learned = MahalanobisBank([dict(p) for p in params[:kept]])
    played(learned, x, kept)
    grown = learned.grown(params)
    built = MahalanobisBank.from_detectors([learned.detector(row) for row in range(kept)]
                                           + [Mahalanobis(**p) for p in params[kept:]])
    for row in range(4):
        same_state(grown.state(row), built.state(row), f"row {row}")
    a, b = played(grown, x, 4), played(built, x, 4)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist() and a[2] == b[2]

"""One contract, checked on every detector in the registry."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from processors.detectors import DETECTORS, Detector, Verdict, default_params

T0 = datetime(2026, 11, 29, 7, 0, tzinfo=timezone.utc)
Stream = list[tuple[Any, datetime]]


def make(name: str) -> Detector:
    return DETECTORS[name](**default_params(name))


def scalar_series(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    x = 50.0 + rng.standard_normal(n) + np.linspace(0.0, 4.0, n)
    x[n // 4 :: 37] += 40.0
    x[n // 2 : n // 2 + 12] = 51.0
    x[(3 * n) // 4 :] += 25.0
    return x.tolist()


def make_stream(det: Detector, n: int = 400, seed: int = 0) -> Stream:
    """A stream with noise, a trend, spikes, a flat stretch and a level shift, in the detector's input kind."""
    times = [T0 + timedelta(minutes=i) for i in range(n)]
    if det.input_kind == "scalar":
        return list(zip(scalar_series(n, seed), times, strict=False))
    names = list(det.names)
    columns = [scalar_series(n, seed + j) for j in range(len(names))]
    rows: list[Any] = []
    for i in range(n):
        row = {name: col[i] for name, col in zip(names, columns, strict=False)}
        if i % 53 == 7:
            row.pop(names[-1])
        rows.append(row if i % 2 else np.array([row.get(name, np.nan) for name in names]))
    return list(zip(rows, times, strict=False))


def run(det: Detector, stream: Stream) -> list[Verdict]:
    return [det.update(value, ts) for value, ts in stream]


def assert_plain_json(obj: Any, path: str = "state") -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert type(key) is str, f"{path} has a non-str key {key!r}"
            assert_plain_json(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            assert_plain_json(value, f"{path}[{i}]")
    else:
        assert obj is None or type(obj) in (str, int, float, bool), f"{path} is a {type(obj).__name__}"


def check_state_json_round_trip(name: str) -> None:
    det = make(name)
    stream = make_stream(det)
    assert_plain_json(det.state())
    run(det, stream[:250])
    state = det.state()
    assert_plain_json(state)
    restored_state = json.loads(json.dumps(state, allow_nan=False))
    restored = type(det).from_state(restored_state, **default_params(name))
    assert restored.state() == state
    other = make(name)
    other.load_state(restored_state)
    rest = stream[250:]
    expected = run(det, rest)
    assert run(restored, rest) == expected
    assert run(other, rest) == expected


def check_deterministic(name: str) -> None:
    stream = make_stream(make(name), seed=3)
    first, second = make(name), make(name)
    verdicts = run(first, stream)
    assert run(second, stream) == verdicts
    assert first.state() == second.state()
    assert any(v.is_anomaly for v in verdicts), "the contract stream should exercise the anomalous path"


def check_clone_is_fresh(name: str) -> None:
    det = make(name)
    stream = make_stream(det, seed=5)
    run(det, stream[:200])
    clone = det.clone()
    assert type(clone) is type(det)
    assert clone._get_params() == det._get_params()
    assert clone.state() == make(name).state()
    assert run(clone, stream) == run(make(name), stream)
    assert clone.clone()._get_params() == clone._get_params()


def check_input_not_mutated(name: str) -> None:
    det = make(name)
    stream = make_stream(det, seed=7)
    snapshot = copy.deepcopy(stream)
    run(det, stream)
    for (value, ts), (value0, ts0) in zip(stream, snapshot, strict=False):
        assert ts == ts0
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, value0)
        else:
            assert value == value0


def check_verdicts_well_formed(name: str) -> None:
    det = make(name)
    grace = default_params(name).get("grace_period", getattr(det, "grace_period", 0))
    for i, verdict in enumerate(run(det, make_stream(det, seed=9))):
        assert isinstance(verdict, Verdict)
        assert type(verdict.is_anomaly) is bool and type(verdict.score) is float
        assert verdict.kind == name == det.name and verdict.detail
        if i < grace:
            assert not verdict.is_anomaly


def check_documented(name: str) -> None:
    doc = DETECTORS[name].__doc__ or ""
    for section in ("Parameters", "Examples", ">>>"):
        assert section in doc, f"{name} docstring lacks {section}"
    for param in default_params(name):
        assert param in doc, f"{name} docstring does not describe {param}"


CHECKS: list[Callable[[str], None]] = [
    check_state_json_round_trip,
    check_deterministic,
    check_clone_is_fresh,
    check_input_not_mutated,
    check_verdicts_well_formed,
    check_documented,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_contract(name: str, check: Callable[[str], None]) -> None:
    check(name)

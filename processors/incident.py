"""One alarm per incident: within one series, the detectors' verdicts on the same event join one alert.

A level shift trips the spike detector at once and the drift detector a few readings later; a spike
trips both. Each would open its own `anomaly_*` alert, two alarms for one event. The first detector
to flag a quiet series *claims* the incident; while the claim is open, another detector's anomalous
verdict joins the claimant's alert (an active condition under the claimant's rule, carrying the
joiner's score and reason) instead of opening an alert of its own. The claim stays open while any
detector of the series flags, and ends at the first reading on which all are clear `hold_s` of event
time after the last flag (the alert lifecycle's clear hold): that is when the claimant's alert
resolves. A gap in the series ends the claim (its alerts close at the gap).

A refractory span (`refractory_s`) follows: once the claim has ended, an anomaly within `refractory_s`
of the last flag is an echo of the same incident (a noise extreme just after a spike), not a new
alarm: every verdict comes back clear and says so, and the span is not extended by it. A later
anomaly is a new incident and a new alert.

Pure and deterministic: the claim is plain JSON (`[detector name, last flag time]` while open, with a
third element `True` once ended and in its refractory span).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from processors.detectors import Verdict

__all__ = ["Judged", "join", "settle"]


@dataclass(frozen=True)
class Judged:
    """One detector's verdict on one reading and the threshold its score is on."""

    verdict: Verdict
    threshold: float


def ended(claim: list[Any] | None) -> bool:
    """True when `claim` is an incident that has ended and is in its refractory span."""
    return claim is not None and len(claim) > 2 and bool(claim[2])


def settle(claim: list[Any] | None, t: float, hold_s: float, refractory_s: float = 0.0) -> list[Any] | None:
    """The claim after a reading at `t` on which no detector flags: it ends `hold_s` after the last flag, and is
    forgotten once `refractory_s` has passed too.

    >>> settle(["spike", 0.0], 600.0, 900.0, 1800.0), settle(["spike", 0.0], 960.0, 900.0, 1800.0)
    (['spike', 0.0], ['spike', 0.0, True])
    >>> settle(["spike", 0.0, True], 1800.0, 900.0, 1800.0) is None
    True
    """
    if claim is None:
        return None
    since = t - float(claim[1])
    if since < hold_s and not ended(claim):
        return claim
    return [claim[0], claim[1], True] if since < refractory_s else None


def join(claim: list[Any] | None, judged: list[Judged], t: float, hold_s: float,
         refractory_s: float = 0.0) -> tuple[list[Any] | None, list[Judged]]:
    """The new claim and one verdict per detector (same order), anomalies joined to the claimant's alert.

    `claim` is None, `[name, last_active_t]` (open) or `[name, last_active_t, True]` (ended, see
    `settle`); `judged` holds the series' detectors' verdicts on the reading at `t` (POSIX seconds), in
    the worker's detector order. The first anomalous one claims a new incident. Each joiner's own
    verdict comes back clear ("joined the open … alert"); the claimant's comes back active when any
    detector flags, with the claimant's own verdict if it flags itself, else the joiner's. Within
    `refractory_s` of an ended claim's last flag, every verdict comes back clear (an echo).

    >>> spike, drift = Verdict(True, 12.0, "spike", "far"), Verdict(True, 20.0, "drift", "drifting")
    >>> claim, out = join(None, [Judged(spike, 8.0), Judged(drift, 14.0)], 0.0, 900.0)
    >>> claim, [(j.verdict.kind, j.verdict.is_anomaly) for j in out]
    (['spike', 0.0], [('spike', True), ('drift', False)])
    >>> quiet = Verdict(False, 1.0, "spike", "near")
    >>> claim, out = join(claim, [Judged(quiet, 8.0), Judged(drift, 14.0)], 60.0, 900.0)
    >>> claim, out[0].verdict.kind, out[0].verdict.is_anomaly, out[0].verdict.detail
    (['spike', 60.0], 'spike', True, 'drift detector: drifting (joined the open spike alert)')
    >>> claim, out = join(["spike", 60.0, True], [Judged(spike, 8.0)], 1260.0, 900.0, 1800.0)
    >>> claim, out[0].verdict.is_anomaly
    (['spike', 60.0, True], False)
    """
    flagged = [j for j in judged if j.verdict.is_anomaly]
    if not flagged:
        return settle(claim, t, hold_s, refractory_s), judged
    if ended(claim):
        assert claim is not None
        if t - float(claim[1]) < refractory_s:
            note = (f" (within {refractory_s:g} s of this series' last anomaly, at the end of its {claim[0]} alert: "
                    "the same incident, not a new alarm)")
            return claim, [replace(j, verdict=replace(j.verdict, is_anomaly=False, detail=j.verdict.detail + note))
                           if j.verdict.is_anomaly else j for j in judged]
        claim = None
    open_claim = claim[0] if claim is not None and claim[0] in {j.verdict.kind for j in judged} else None
    owner = open_claim if open_claim is not None else flagged[0].verdict.kind
    own = next((j for j in flagged if j.verdict.kind == owner), None)
    carried = own if own is not None else flagged[0]
    out: list[Judged] = []
    for j in judged:
        v = j.verdict
        if v.kind == owner:
            out.append(carried if own is not None else Judged(
                replace(carried.verdict, kind=owner,
                        detail=f"{carried.verdict.kind} detector: {carried.verdict.detail} (joined the open {owner} alert)"),
                carried.threshold))
        elif v.is_anomaly:
            out.append(replace(j, verdict=replace(v, is_anomaly=False, detail=f"{v.detail} (joined the open {owner} alert)")))
        else:
            out.append(j)
    return [owner, t], out

"""One alarm per incident: within one series, the detectors' verdicts on the same event join one alert.

A level shift trips the spike detector at once and the drift detector a few readings later; a spike
trips both. Each would open its own `anomaly_*` alert, two alarms for one event. The first detector
to flag a quiet series *claims* the incident; while the claim is open, another detector's anomalous
verdict joins the claimant's alert (an active condition under the claimant's rule, carrying the
joiner's score and reason) instead of opening an alert of its own. The claim stays open while any
detector of the series flags, and ends at the first reading on which all are clear `hold_s` of event
time after the last flag (the alert lifecycle's clear hold): that is when the claimant's alert
resolves, so a later anomaly is a new incident and a new alert. A gap in the series ends the claim
(its alerts close at the gap).

Pure and deterministic: the claim is plain JSON (`[detector name, last active event time]`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from processors.detectors import Verdict

__all__ = ["Judged", "join"]


@dataclass(frozen=True)
class Judged:
    """One detector's verdict on one reading and the threshold its score is on."""

    verdict: Verdict
    threshold: float


def join(claim: list[Any] | None, judged: list[Judged], t: float, hold_s: float) -> tuple[list[Any] | None, list[Judged]]:
    """The new claim and one verdict per detector (same order), anomalies joined to the claimant's alert.

    `claim` is None or `[name, last_active_t]`; `judged` holds the series' detectors' verdicts on the
    reading at `t` (POSIX seconds), in the worker's detector order. The first anomalous one claims a
    new incident. Each joiner's own verdict comes back clear ("joined the open … alert"); the
    claimant's comes back active when any detector flags, with the claimant's own verdict if it
    flags itself, else the joiner's.

    >>> spike, drift = Verdict(True, 12.0, "spike", "far"), Verdict(True, 20.0, "drift", "drifting")
    >>> claim, out = join(None, [Judged(spike, 8.0), Judged(drift, 14.0)], 0.0, 900.0)
    >>> claim, [(j.verdict.kind, j.verdict.is_anomaly) for j in out]
    (['spike', 0.0], [('spike', True), ('drift', False)])
    >>> quiet = Verdict(False, 1.0, "spike", "near")
    >>> claim, out = join(claim, [Judged(quiet, 8.0), Judged(drift, 14.0)], 60.0, 900.0)
    >>> claim, out[0].verdict.kind, out[0].verdict.is_anomaly, out[0].verdict.detail
    (['spike', 60.0], 'spike', True, 'drift detector: drifting (joined the open spike alert)')
    """
    flagged = [j for j in judged if j.verdict.is_anomaly]
    if not flagged:
        return (None if claim is None or t - float(claim[1]) >= hold_s else claim), judged
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

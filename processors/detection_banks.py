"""The worker's streaming detectors as engine banks (`processors.engine`), alive between batches.

`processors.detection` goes through a batch's readings once, station by station, and hands every
in-order valid reading a detector channel judges (and every gap a series relearns after) to a
`Judgements`. Then each bank is advanced once (`processors.engine.advance`) over all the series of
the batch, and each series' verdicts are joined into incidents (`processors.incident.join`) and
turned into conditions, in the series' own order. Details are formatted only for the verdicts a
condition is built for: flagged ones, and those of keys that may have an open alert.

`LiveBanks` holds one row per (station, plan, series, detector): the worker keeps it for its
stations, and a station's rows are taken as they are while its state carries the token they last
wrote (`StationState.token`); otherwise they are loaded from the state's JSON. Each series keeps its channels
(bank, row and alert key) while its station's rows stay loaded, so a batch neither looks its rows up nor builds
their hyperparameters again, and each bank's rows are written back into the states gathered column by column
(`states`). `LiveBanks(scalar=True)`
runs the scalar River-style classes instead, one Python object per row: the oracle the engine is
tested against.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from alerts.rules import Condition, OpenKeys, judge_anomaly, judge_data_stopped
from processors import windows
from processors.detection_state import DetectorState, IncidentClaim, ParameterState, RowJson, StationState, plain
from processors.detectors import DETECTORS, Detector, Verdict
from processors.engine import advance
from processors.engine.drift import DriftBank
from processors.engine.flatline import FlatlineBank
from processors.engine.multivariate import MahalanobisBank
from processors.engine.spike import SpikeBank
from processors.incident import Judged, join, settle
from processors.plain_pass import RuleRows
from quantrac.domain import Station

__all__ = ["ChannelSpec", "Judgements", "LiveBanks", "ScalarRows", "SeriesKey", "threshold_of"]

ENGINE_BANKS: dict[str, type[Any]] = {"spike": SpikeBank, "drift": DriftBank, "flatline": FlatlineBank,
                                      "multivariate": MahalanobisBank}
"""The bank of each detector; a detector without one runs as `ScalarRows`."""


def threshold_of(det: Detector) -> float:
    """The threshold a detector's score is judged on (its `threshold`, `h` or `n_intervals`)."""
    for attr in ("threshold", "h", "n_intervals"):
        if hasattr(det, attr):
            return float(getattr(det, attr))
    return 0.0


class ScalarRows:
    """Rows of scalar detectors behind the bank interface: `step` calls each row's `update`."""

    def __init__(self, cls: type[Detector], params: Sequence[dict[str, Any]]) -> None:
        self.cls = cls
        self.params = [dict(p) for p in params]
        self.detectors = [cls(**p) for p in self.params]

    def __len__(self) -> int:
        return len(self.detectors)

    def grown(self, params: Sequence[dict[str, Any]]) -> ScalarRows:
        """These rows (their detectors kept as they are) and fresh ones after them: `params` begins with these rows'."""
        bank = ScalarRows(self.cls, params[len(self):])
        bank.params, bank.detectors = [*self.params, *bank.params], [*self.detectors, *bank.detectors]
        return bank

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from its detector's `state()`."""
        self.detectors[row] = self.cls.from_state(state, **self.params[row])

    def state(self, row: int) -> dict[str, Any]:
        """Row `row`'s detector's `state()`."""
        return self.detectors[row].state()

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        """`Detector.relearn(gap)` on each of `rows`."""
        for i, row in enumerate(rows.tolist()):
            self.detectors[row].relearn(None if gap_s is None else float(gap_s[i]))

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray, explain: np.ndarray | None = None,
             flagged: bool = False) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """Each row's `update` on its value (a vector's values in its group's order); every detail is given."""
        verdicts: list[Verdict] = []
        for i, row in enumerate(rows.tolist()):
            det = self.detectors[row]
            names = self.params[row].get("names")
            value = {n: float(v) for n, v in zip(names, x[i], strict=True) if np.isfinite(v)} if names else float(x[i])
            verdicts.append(det.update(value, windows.from_epoch(float(t[i]))))
        flag = np.array([v.is_anomaly for v in verdicts], dtype=bool)
        score = np.array([v.score for v in verdicts], dtype=np.float64)
        return flag, score, [v.detail for v in verdicts]


@dataclass
class _Bank:
    """One bank and, per row, what it was built with and the threshold its scores are on."""

    make: Callable[[list[dict[str, Any]]], Any]
    params: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    bank: Any = None
    pending: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """Rows to load before the next advance: (row, state)."""

    def materialise(self) -> Any:
        """The bank with every row added since (`grown`: the rows it had keep what they learned), and every pending
        state loaded."""
        if self.bank is None:
            self.bank = self.make(self.params)
        elif len(self.bank) < len(self.params):
            self.bank = self.bank.grown(self.params)
        for row, state in self.pending:
            self.bank.load(row, state)
        self.pending = []
        return self.bank


class _Channel(NamedTuple):
    """One detector of a series: its bank row and the key of the alert its verdicts judge."""

    name: str
    holder: _Bank
    row: int
    alert: tuple[str, str, str]
    """(station, series label, rule), as in `alerts.rules.OpenKeys`."""


SeriesKey = tuple[str, str, str, str]
"""(station, plan key, parameter or `mv:` group, detector)."""


class LiveBanks(dict[str, tuple[str, set[SeriesKey]]]):
    """The detectors of the worker's stations as bank rows, kept between batches (see the module's docstring).

    As a mapping: per station, the token of the state its rows last wrote, and the rows loaded under it.
    """

    def __init__(self, scalar: bool = False) -> None:
        super().__init__()
        self.scalar = scalar
        self.banks: dict[str, _Bank] = {}
        self.rows: dict[SeriesKey, tuple[str, int]] = {}
        self.series: dict[tuple[str, str, str], tuple[set[SeriesKey], list[_Channel]]] = {}
        """Per (station, plan key, series): the station's loaded rows its channels were last looked up in, and those."""
        self.rules = RuleRows()
        """The plain stations' windows and rate bins (`processors.plain_pass`), current under the same tokens."""

    def holds(self, station_id: str, state: StationState) -> bool:
        """Whether the station's rows here are the ones `state` was left with (it carries the token they wrote)."""
        kept = self.get(station_id)
        return kept is not None and state.token is not None and kept[0] == state.token

    def channels(self, series: tuple[str, str, str], label: str, specs: Callable[[], Sequence[ChannelSpec]],
                 loaded: set[SeriesKey]) -> list[_Channel]:
        """A series' channels and their rows: those it was last looked up with while the station's rows are still
        `loaded` (the set `begin` gave, kept under the state's token), else looked up (`row`) from `specs`."""
        kept = self.series.get(series)
        if kept is not None and kept[0] is loaded:
            return kept[1]
        found = [_Channel(name, *self.row(key, params, saved, loaded), (series[0], label, f"anomaly_{name}"))
                 for name, key, params, saved in specs()]
        self.series[series] = (loaded, found)
        return found

    def begin(self, station_id: str, state: StationState, fresh: bool) -> set[SeriesKey]:
        """The station's rows taken as they are: those loaded under `state`'s token (none if `fresh` or another token)."""
        if fresh or not self.holds(station_id, state):
            return set()
        return self[station_id][1]

    def row(self, key: SeriesKey, params_of: Callable[[], dict[str, Any]], saved: DetectorState | None,
            loaded: set[SeriesKey]) -> tuple[_Bank, int]:
        """The row of a series' detector: kept if in `loaded`, else loaded from `saved` (None: fresh) and added to it;
        `params_of` gives the detector's hyperparameters (asked only for a row to load)."""
        name = key[3]
        found = self.rows.get(key)
        if found is not None and key in loaded:
            return self.banks[found[0]], found[1]
        params = params_of()
        fresh = DETECTORS[name](**params)
        bank_key = f"{name}:{len(params['names'])}" if "names" in params else name
        holder = self.banks.get(bank_key)
        if holder is None:
            holder = self.banks[bank_key] = _Bank(self._maker(name))
        if found is None:
            row = len(holder.params)
            holder.params.append(fresh._get_params() if self.scalar or name not in ENGINE_BANKS
                                 else ENGINE_BANKS[name].params_of(fresh))
            holder.thresholds.append(threshold_of(fresh))
            self.rows[key] = (bank_key, row)
        else:
            row = found[1]
        state = plain(saved)
        holder.pending.append((row, state if state is not None else fresh.state()))
        loaded.add(key)
        return holder, row

    def _maker(self, name: str) -> Callable[[list[dict[str, Any]]], Any]:
        if self.scalar or name not in ENGINE_BANKS:
            cls = DETECTORS[name]
            return lambda params: ScalarRows(cls, params)
        maker: Callable[[list[dict[str, Any]]], Any] = ENGINE_BANKS[name]
        return maker

    def forget(self, station_ids: Sequence[str]) -> None:
        """Stop taking these stations' rows as they are (a batch failed half-way through them): the next state they are
        handed loads its rows from what it saved."""
        for station_id in station_ids:
            self.pop(station_id, None)
            self.rules.pop(station_id, None)

    def save_rows(self, states: Mapping[str, StationState]) -> None:
        """Write the rows each station's state carries the token of into it (as `RowJson` where the bank writes JSON),
        each bank's rows gathered at once: what `Judgements` leaves in the banks when it does not save."""
        by_bank: dict[str, tuple[list[int], list[tuple[StationState, str, str]]]] = {}
        for station_id, state in states.items():
            if not self.holds(station_id, state):
                continue
            rules = self.rules.get(station_id)
            if rules is not None:
                rules.write(state)
            for key in self[station_id][1]:
                bank_key, row = self.rows[key]
                rows, targets = by_bank.setdefault(bank_key, ([], []))
                rows.append(row)
                targets.append((state, key[2], key[3]))
        for bank_key, (rows, targets) in by_bank.items():
            saved = _saved(self.banks[bank_key].materialise(), np.array(rows, dtype=np.int64), True)
            for (state, series, name), row_state in zip(targets, saved, strict=True):
                if series.startswith("mv:"):
                    state.group(series.removeprefix("mv:")).detector = row_state
                else:
                    state.parameter(series).detectors[name] = row_state

    def stamp(self, station_id: str, state: StationState, loaded: set[SeriesKey]) -> None:
        """Give the station's state a new token, which its `loaded` rows now carry."""
        state.token = os.urandom(8).hex()
        self[station_id] = (state.token, loaded)


@dataclass
class _Series:
    """A series' (parameter's or group's) detector channels."""

    station: Station
    label: str
    """The parameter, or the group's parameters joined with commas."""
    channels: list[_Channel]
    explain: list[bool]
    """Per channel, whether its details are needed from the start (its alert may be open)."""
    incident: ParameterState | None
    """Where the series' incident claim is kept (None: a group, whose verdicts are not joined)."""
    save: Callable[[str, DetectorState], None]
    watched: bool = False
    """An alert of one of its channels may be open (or every condition is wanted): every event of it is judged, not
    only the flagged ones."""


class _Event(NamedTuple):
    """A series' reading handed to the detectors, or a gap it resumes after (see `Judgements.add`)."""

    series: int
    anchor: tuple[int, int]
    """The batch's other condition its conditions go before, then the event's place in the batch: events of
    readings with no other condition between them keep their readings' order, whatever their series."""
    t: float
    ts: datetime | None
    """The reading's own time (None: `t`'s instant in UTC)."""
    value: Any
    judge: bool
    stopped: float | None
    """The last event time before the gap this event resumes after (its alerts close there), else None."""
    relearn_s: float
    """The gap to relearn after (NaN: none)."""


Anchored = list[tuple[tuple[int, int], Condition]]
"""Conditions with the anchor of the event that gave them (`_Event.anchor`)."""

ChannelSpec = tuple[str, SeriesKey, Callable[[], dict[str, Any]], DetectorState | None]
"""A series' detector channel as `Judgements.add_series` takes it: (detector, key, its hyperparameters, saved state)."""

_Verdicts = tuple[np.ndarray, np.ndarray, dict[int, str]]
"""A bank's flags and scores by event index (arrays over the batch: a quiet batch reads few of them), and the details
it formatted."""


class _Events:
    """A batch's events as columns, in the order they were added (an event's index is its place in the batch)."""

    __slots__ = ("series", "anchor", "t", "ts", "value", "scalar", "judge", "stopped", "relearn_s", "resumed")

    def __init__(self) -> None:
        self.series: list[int] = []
        self.anchor: list[int] = []
        self.t: list[float] = []
        self.ts: list[datetime | None] = []
        self.value: list[Any] = []
        self.scalar: list[float] = []
        """Per event, its value if it is one number (NaN for a vector)."""
        self.judge: list[bool] = []
        self.stopped: list[float | None] = []
        self.resumed: list[int] = []
        """The series of the events that close a gap (`stopped` given), in order."""
        self.relearn_s: list[float] = []

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, k: int) -> _Event:
        return _Event(self.series[k], (self.anchor[k], k), self.t[k], self.ts[k], self.value[k], self.judge[k],
                      self.stopped[k], self.relearn_s[k])


class Judgements:
    """A batch's detector work: collected per series, advanced per bank, then joined and judged in series order."""

    def __init__(self, live: LiveBanks, open_keys: OpenKeys | None, hold_s: float, refractory_s: float = 0.0,
                 as_json: bool = False, save: bool = True, relearn_gap_for: Callable[[str], float] | None = None) -> None:
        self.live, self.open_keys, self.hold_s, self.refractory_s = live, open_keys, hold_s, refractory_s
        self.relearn_gap_for = relearn_gap_for
        """How long a gap must be for a detector (by channel name) to relearn after it (`DetectionConfig.relearn_gap_for`);
        None: every gap an event carries."""
        self.as_json = as_json
        """Save the rows of banks that write JSON (`states_json`) as their text (`RowJson`): the caller writes the
        states as JSON next (the worker), and reads them back only after a failed batch."""
        self.save = save
        """Write the rows back into the states after the batch; False: they stay in `live` (`LiveBanks.save_rows`
        writes them when the worker snapshots)."""
        self.series: list[_Series] = []
        self.events = _Events()

    def add_series(self, station: Station, label: str, series: tuple[str, str, str],
                   channels: Callable[[], Sequence[ChannelSpec]], loaded: set[SeriesKey],
                   incident: ParameterState | None, save: Callable[[str, DetectorState], None]) -> int | None:
        """A series of a station with its channels (`LiveBanks.channels`); its index for `add`, None if it has no
        channel. A channel's details are formatted from the start when its key may have an open alert, or it holds
        the series' incident claim (its alert is open)."""
        chans = self.live.channels(series, label, channels, loaded)
        if not chans:
            return None
        owner = None if incident is None or incident.incident is None or incident.incident.ended else incident.incident.detector
        keys = self.open_keys
        explain = [keys is None or owner == ch.name or ch.alert in keys for ch in chans]
        watched = keys is None or any(ch.alert in keys for ch in chans)
        self.series.append(_Series(station, label, chans, explain, incident, save, watched))
        return len(self.series) - 1

    def add(self, series: int, anchor: int, t: float, value: Any, ts: datetime | None = None, judge: bool = True,
            stopped: float | None = None, relearn_s: float | None = None) -> None:
        """An event of a series: a value to judge (a vector: its values in the group's order), or with `judge` False
        only a gap to close its alerts at (`stopped`) and to relearn after (`relearn_s`). Its conditions go before
        the batch's other condition number `anchor` (`run`)."""
        e = self.events
        e.series.append(series)
        e.anchor.append(anchor)
        e.t.append(t)
        e.ts.append(ts)
        e.value.append(value)
        e.scalar.append(math.nan if isinstance(value, list) else value)
        e.judge.append(judge)
        e.stopped.append(stopped)
        if stopped is not None:
            e.resumed.append(series)
        e.relearn_s.append(math.nan if relearn_s is None else relearn_s)

    def add_values(self, series: list[int], anchor: int, t: list[float], values: list[float],
                   ts: list[datetime]) -> None:
        """`add` of one number each to judge, of these series, all before the batch's other condition `anchor`."""
        self._extend(series, anchor, t, ts, values, values)

    def add_vectors(self, series: int, anchor: int, t: list[float], vectors: list[list[float]],
                    stopped: list[float | None], relearn_s: list[float]) -> None:
        """`add` of each of a group's vectors to judge, with the gap it resumes after (None: none) and the gap to
        relearn after (NaN: none), all before the batch's other condition `anchor`."""
        n = len(t)
        self._extend([series] * n, anchor, t, [None] * n, vectors, [math.nan] * n, stopped, relearn_s)

    def _extend(self, series: list[int], anchor: int, t: list[float], ts: Sequence[datetime | None],
                values: Sequence[Any], scalar: list[float], stopped: list[float | None] | None = None,
                relearn_s: list[float] | None = None) -> None:
        """Events to judge, one per item of the lists, all before the batch's other condition `anchor`; `stopped` and
        `relearn_s` None: no event resumes after a gap."""
        e, n = self.events, len(series)
        e.series.extend(series)
        e.anchor.extend([anchor] * n)
        e.t.extend(t)
        e.ts.extend(ts)
        e.value.extend(values)
        e.scalar.extend(scalar)
        e.judge.extend([True] * n)
        if stopped is None or relearn_s is None:
            e.stopped.extend([None] * n)
            e.relearn_s.extend([math.nan] * n)
            return
        e.stopped.extend(stopped)
        e.resumed.extend(s for s, gap in zip(series, stopped, strict=True) if gap is not None)
        e.relearn_s.extend(relearn_s)

    def run(self, others: list[Condition]) -> list[Condition]:
        """Advance every bank once over the batch, judge each series in order and save its rows' states; the batch's
        `others` conditions with the detectors' put where each event's anchor says (as if judged reading by reading)."""
        found: Anchored = []
        if len(self.events):
            verdicts, flagged = self._advance()
            flags = flagged.tolist()
            for i, events in self._to_judge(flagged):
                s = self.series[i]
                found.extend(self._judge(s, events, [verdicts[id(ch.holder)] for ch in s.channels], flags))
        if self.save:
            self._save()
        found.sort(key=lambda pair: pair[0])
        merged: list[Condition] = []
        j = 0
        for i, c in enumerate(others):
            while j < len(found) and found[j][0][0] <= i:
                merged.append(found[j][1])
                j += 1
            merged.append(c)
        merged.extend(c for _, c in found[j:])
        return merged

    def _to_judge(self, flagged: np.ndarray) -> list[tuple[int, list[int]]]:
        """The series `_judge` has something to do for, each with its events (indices) in batch order: those with an
        event a detector flags or a gap closes, an alert that may be open, or an incident claim to settle. `_judge`
        passes over every event of any other series (most of a quiet batch's), so they are not walked at all."""
        events = self.events
        owner = np.array(events.series, dtype=np.int64)
        busy = np.zeros(len(self.series), dtype=bool)
        busy[owner[flagged]] = True
        busy[events.resumed] = True
        busy |= [s.watched or (s.incident is not None and s.incident.incident is not None) for s in self.series]
        if not busy.any():
            return []
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(len(self.series) + 1)).tolist()
        ordered = order.tolist()
        return [(i, ordered[bounds[i]:bounds[i + 1]]) for i in np.flatnonzero(busy).tolist()]

    def _save(self) -> None:
        """Write every series' rows back into its state, each bank's rows gathered at once (`states`)."""
        by_bank: dict[int, tuple[_Bank, list[int], list[tuple[Callable[[str, DetectorState], None], str]]]] = {}
        for s in self.series:
            for ch in s.channels:
                member = by_bank.get(id(ch.holder))
                if member is None:
                    member = by_bank[id(ch.holder)] = (ch.holder, [], [])
                member[1].append(ch.row)
                member[2].append((s.save, ch.name))
        for holder, rows, targets in by_bank.values():
            for (save, name), state in zip(targets, _saved(holder.materialise(), np.array(rows, dtype=np.int64),
                                                           self.as_json), strict=True):
                save(name, state)

    def _advance(self) -> tuple[dict[int, _Verdicts], np.ndarray]:
        """Per bank (by `id` of its holder): its flags, scores and details over the batch's events (by event index); one
        advance per bank. And per event, whether any detector flagged it."""
        events = self.events
        n = len(events)
        t = np.array(events.t)
        relearn = np.array(events.relearn_s)
        owner = np.array(events.series, dtype=np.int64)
        scalar = np.array(events.scalar)
        members: dict[int, tuple[_Bank, list[int], list[int], list[bool], str]] = {}
        for i, s in enumerate(self.series):
            for ch, explain in zip(s.channels, s.explain, strict=True):
                member = members.get(id(ch.holder))
                if member is None:
                    member = members[id(ch.holder)] = (ch.holder, [], [], [], ch.name)
                member[1].append(i)
                member[2].append(ch.row)
                member[3].append(explain)
        found: dict[int, _Verdicts] = {}
        flagged = np.zeros(n, dtype=bool)
        for holder, series_of, rows, explains, name in members.values():
            row_of = np.full(len(self.series), -1, dtype=np.int64)
            explain_of = np.zeros(len(self.series), dtype=bool)
            row_of[series_of], explain_of[series_of] = rows, explains
            idx = np.flatnonzero(row_of[owner] >= 0)
            sample = events.value[int(idx[0])]
            values = np.array([events.value[k] for k in idx.tolist()], dtype=np.float64) \
                if isinstance(sample, list) else scalar[idx]
            gaps = relearn[idx]
            if self.relearn_gap_for is not None:
                gaps = np.where(gaps >= self.relearn_gap_for(name), gaps, np.nan)
            v = advance(holder.materialise(), row_of[owner[idx]], t[idx], values, relearn_gap_s=gaps,
                        explain=explain_of[owner[idx]], flagged=True)
            flag, score = np.zeros(n, dtype=bool), np.zeros(n)
            flag[idx], score[idx] = v.flag, v.score
            flagged |= flag
            details: dict[int, str] = {}
            if v.detail.count(None) < len(v.detail):  # most batches explain nothing: no loop over every event
                for k, text in zip(idx.tolist(), v.detail, strict=True):
                    if text is not None:
                        details[k] = text
            found[id(holder)] = (flag, score, details)
        return found, flagged

    def _judge(self, s: _Series, events: list[int], verdicts: list[_Verdicts], flagged: list[bool]) -> Anchored:
        """The series' conditions with their anchors, event by event: gaps close its alerts; verdicts join into
        incidents. An event no detector flags gives nothing while no alert of the series may be open (none was when
        the batch began, and no event of it was flagged since) and it holds no incident claim: it is passed over then."""
        found: Anchored = []
        judge, stopped = self.events.judge, self.events.stopped
        watched = s.watched
        for k in events:
            if stopped[k] is not None:
                e = self.events[k]
                if s.incident is not None:
                    s.incident.incident = None
                last, resumed = windows.from_epoch(e.stopped or 0.0), windows.from_epoch(e.t)
                for ch in s.channels:
                    _add(found, e.anchor, judge_data_stopped(s.station, s.label, f"anomaly_{ch.name}", last, resumed,
                                                             open_keys=self.open_keys))
            if not judge[k]:
                continue
            if flagged[k]:
                self._flagged(s, self.events[k], k, verdicts, found)
                watched = True  # its alert may be open now
            elif watched or (s.incident is not None and s.incident.incident is not None):
                self._quiet(s, self.events[k], k, verdicts, found)
        return found

    def _flagged(self, s: _Series, e: _Event, k: int, verdicts: list[_Verdicts],
                 found: Anchored) -> None:
        """An event some detector flags: the verdicts joined into the series' incident, a condition for each."""
        judged = [Judged(Verdict(bool(flags[k]), float(scores[k]), ch.name, details.get(k, "")), ch.holder.thresholds[ch.row])
                  for ch, (flags, scores, details) in zip(s.channels, verdicts, strict=True)]
        value = None
        if s.incident is not None:
            claim, judged = join(None if s.incident.incident is None else s.incident.incident.as_list(), judged, e.t,
                                 self.hold_s, self.refractory_s)
            s.incident.incident = IncidentClaim.of(claim)
            value = float(e.value)
        ts = e.ts or windows.from_epoch(e.t)
        for j in judged:
            v = j.verdict
            _add(found, e.anchor, judge_anomaly(s.station, s.label, v.kind, v.is_anomaly, value, v.score, j.threshold,
                                                v.detail, ts, open_keys=self.open_keys))

    def _quiet(self, s: _Series, e: _Event, k: int, verdicts: list[_Verdicts],
               found: Anchored) -> None:
        """An event no detector flags (`join` then changes no verdict): the claim ends after the hold, and a clear
        condition is built only for a key that may be open (the `_flagged` path, without its objects)."""
        held = s.incident
        if held is not None and held.incident is not None:
            held.incident = IncidentClaim.of(settle(held.incident.as_list(), e.t, self.hold_s, self.refractory_s))
        keys = self.open_keys
        for ch, (_, scores, details) in zip(s.channels, verdicts, strict=True):
            if keys is None or ch.alert in keys:
                value = None if s.incident is None else float(e.value)
                _add(found, e.anchor, judge_anomaly(s.station, s.label, ch.name, False, value, float(scores[k]),
                                                    ch.holder.thresholds[ch.row], details.get(k, ""),
                                                    e.ts or windows.from_epoch(e.t), open_keys=keys))


def _saved(bank: Any, rows: np.ndarray, as_json: bool) -> Sequence[DetectorState]:
    """The states of a bank's `rows`: as JSON text (`RowJson`) where wanted and the bank writes it, else gathered."""
    if as_json and hasattr(bank, "states_json"):
        return [RowJson(raw) for raw in bank.states_json(rows)]
    return _states(bank, rows)


def _states(bank: Any, rows: np.ndarray) -> list[dict[str, Any]]:
    """The states of a bank's `rows`: gathered where the bank can (`Rows.states`), else row by row."""
    gather = getattr(bank, "states", None)
    return gather(rows) if gather is not None else [bank.state(row) for row in rows.tolist()]


def _add(found: Anchored, anchor: tuple[int, int], condition: Condition | None) -> None:
    if condition is not None:
        found.append((anchor, condition))

"""`quantrac simulate`: play plausible station data over MQTT or as TT10 files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli.common import setup, stop_on_signals
from quantrac.settings import get_settings

if TYPE_CHECKING:
    from ingest.simulator import Sink


def simulate(
    rate: Annotated[float, typer.Option(help="Readings per wall-clock second across all stations; 0: each station at its registry interval (realistic).")] = 20.0,
    duration: Annotated[Optional[float], typer.Option(help="Wall-clock seconds to run; forever when omitted (speedup 1 only).")] = None,
    inject: Annotated[Optional[list[str]], typer.Option(help="STATION:PARAMETER[:VALUE] to publish above its limit.")] = None,
    station: Annotated[Optional[list[str]], typer.Option(help="Only these station ids.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for reproducible values.")] = None,
    speedup: Annotated[float, typer.Option(help="Event time runs this many times faster than wall time (288: a day in 5 minutes); plays the past.")] = 1.0,
    incidents: Annotated[float, typer.Option(help="Random incidents per station per simulated day (exceedance, spike, drift, spill, calibration, fault, stuck, silent, late, out-of-order).")] = 0.0,
    clock_faults: Annotated[float, typer.Option(help="Gateway clock faults per station per simulated day: stamped times stopped or 7 h behind for 2-12 h, kept 2 h from the other incidents (station_clock).")] = 0.0,
    ground_truth: Annotated[Optional[Path], typer.Option(help="Write the incidents here, one JSON object a line.")] = None,
    tt10_dir: Annotated[Optional[Path], typer.Option(help="Write TT10 files into this folder instead of publishing over MQTT.")] = None,
    processes: Annotated[int, typer.Option(help="Split the stations over this many publishing processes (one reaches about 8,000 readings/s).")] = 1,
) -> None:
    """Play plausible station data (with incidents) over MQTT, or as TT10 files."""
    setup("simulator")
    import threading
    from datetime import datetime, timedelta, timezone

    from ingest.scenarios import random_incidents, with_clock_faults
    from ingest.simulator import MqttSink, TT10Sink, gateway_accounts, parse_injection, run_processes
    from quantrac.mqtt_accounts import tester_credential
    from quantrac.registry import load_registry
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    if station:
        unknown = set(station) - set(stations)
        if unknown:
            raise typer.BadParameter(f"unknown station(s) {sorted(unknown)}; known: {sorted(stations)}")
        stations = {k: v for k, v in stations.items() if k in station}
    try:
        injections = [parse_injection(spec) for spec in inject or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if speedup > 1 and duration is None:
        raise typer.BadParameter("--speedup > 1 plays the past and needs --duration (e.g. --speedup 288 --duration 300)")
    now = datetime.now(timezone.utc)
    span = timedelta(seconds=(duration or 86400) * speedup)
    start = now - span if speedup > 1 else now
    chosen = random_incidents(stations, start, span, seed or 0, incidents) if incidents > 0 else []
    if clock_faults > 0:
        chosen = with_clock_faults(chosen, stations, start, span, seed or 0, clock_faults)
    stop = threading.Event()
    stop_on_signals(stop)
    if tt10_dir is not None:
        def make_sink() -> Sink:
            return TT10Sink(tt10_dir, s.tt10_province_code)
    else:
        tester = tester_credential(s)  # only for stations without a gateway account (the bridge's may not publish)
        default = (tester.username, tester.password) if tester else (None, None)
        accounts = gateway_accounts(s, stations)

        def make_sink() -> Sink:  # built in each publishing process: paho's threads do not survive a fork
            return MqttSink(s.mqtt_host, s.mqtt_port, accounts, default)
    run_processes(processes, stations, make_sink=make_sink, duration=duration, rate=rate if rate > 0 else None,
                  speedup=speedup, seed=seed, incidents=chosen, injections=injections, ground_truth_path=ground_truth,
                  stop=stop, now=now)

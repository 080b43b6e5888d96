"""Worker alone: the Faust worker draining a pre-filled readings topic, against a bare aiokafka consumer.

On the PRIVATE benchmark stack (bench.common.private_settings, ports 21400-21403), this run's own
topic and database:
1. N station messages (8 readings each, the bridge's wire format, spread over S stations) are
   written to the readings topic before anything consumes it;
2. baseline: an aiokafka consumer with no group reads the topic from the beginning and only counts
   records, until it has N (clock from its start, connection included); three times, the median run taken;
3. Faust alone: the worker's app and batch API, only counting (bench/faust_count.py; clock from its
   first record to its last), what Faust costs before the worker does any work;
4. quantrac: `quantrac worker` (store, rollups, every rule, alerts) starts on the same topic; the
   clock runs from the first stored reading to the last (startup and the first rebalance excluded,
   reported apart), counted in PostgreSQL;
5. PostgreSQL alone: the same readings as binary COPY buffers built before the clock, in the worker's
   batch size, one transaction each, into a fresh database of the same store: the most readings a
   second any worker that stores every reading can reach on this machine; beside it, in turns, the same
   readings into a narrow row (series id, time, value, smallint status), what a narrowed `readings` could take.

    python bench/worker.py [--messages 20000] [--stations 100] [--workers 1] [--keep-stack] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import structlog  # noqa: E402

from bench.common import (  # noqa: E402
    IDLE_FRAMES,
    ProcessSample,
    prepare_private_stack,
    private_settings,
    quantrac_process,
    settings_env,
    start_profile,
    stop_profile,
    stored_so_far,
    write_result,
)
from quantrac.db import connect, migrate, save_stations, store_kind  # noqa: E402
from quantrac.domain import Reading, Station, Status  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.wire import encode_readings  # noqa: E402
from stack import services as stack  # noqa: E402
from stack.process import running_pid  # noqa: E402

log = structlog.get_logger(__name__)
SETTINGS = private_settings("benchworker")
TEMPLATE = "HD-DAIAN-WW01"


def bench_stations(count: int) -> dict[str, Station]:
    template = load_registry(SETTINGS.registry_file, SETTINGS.limits_dir)[TEMPLATE]
    return {f"BENCH-{i:04d}": template.model_copy(update={"id": f"BENCH-{i:04d}"}) for i in range(count)}


BASE = {"pH": 7.2, "Temp": 25.0, "Flow": 120.0}


def value(rng: random.Random, symbol: str) -> float:
    """Normal operation: inside every limit and noisy, since a value over a limit or a repeating one (flatline)
    keeps an alert open, and then every reading also updates its alert."""
    return round(BASE.get(symbol, 2.0) * rng.uniform(0.98, 1.02), 3)


def records(stations: dict[str, Station], messages: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of `messages` readings records, round-robin over the stations, one minute apart per station,
    received now (a receive time a day old would make the liveness rules call every station silent)."""
    received_at = datetime.now(timezone.utc)
    start = received_at.replace(second=0, microsecond=0) - timedelta(days=1)
    ids = sorted(stations)
    rng = random.Random(1)
    out = []
    for i in range(messages):
        station = stations[ids[i % len(ids)]]
        ts = start + timedelta(minutes=i // len(ids))
        readings = [Reading(station_id=station.id, parameter=symbol, value=value(rng, symbol), unit=spec.unit, ts=ts,
                            status=Status.MEASURING)
                    for symbol, spec in station.parameters.items()]
        out.append((station.id.encode(), encode_readings(station.id, readings, received_at, "mqtt")))
    return out


def decode_costs(raws: list[bytes], per_message: int, batch: int = 500) -> dict[str, float]:
    """CPU µs per reading to decode the records in the worker's batch size: the validated way (one pydantic
    `Reading` each), into columns only, into columns then back into `Reading`s (the worker before issue 15
    item 5), into the store's batch of columns (`decode_batch`), and that batch's `Reading`s for detection
    (what the worker does now: the store takes the columns, detection still takes `Reading`s)."""
    from quantrac.batch_columns import from_wire
    from quantrac.wire import decode_sourced
    from quantrac.wire_columns import decode_columns

    batches = [raws[i:i + batch] for i in range(0, len(raws), batch)]
    ways = {"validated_readings": lambda b: [decode_sourced(r) for r in b], "columns": decode_columns,
            "columns_then_readings": lambda b: decode_columns(b).records(),
            "store_batch": lambda b: from_wire(decode_columns(b)),
            "store_batch_then_readings": lambda b: from_wire(decode_columns(b)).readings()}
    out = {}
    for name, decode in ways.items():
        began = time.process_time()
        for b in batches:
            decode(b)
        out[name] = round((time.process_time() - began) / (len(raws) * per_message) * 1e6, 2)
    return out


def fill_topic(values: list[tuple[bytes, bytes]]) -> float:
    from ingest.producer import make_producer

    producer = make_producer(SETTINGS, "bench-worker-fill")
    began = time.monotonic()
    for key, value in values:
        producer.send(SETTINGS.readings_topic, key=key, value=value)
    producer.flush(timeout=300)
    producer.close(timeout=10)
    return time.monotonic() - began


async def count_with_aiokafka(want: int, timeout: float = 300) -> dict[str, float]:
    """The baseline: read the topic from the beginning and count records, nothing else (clock from `start()`)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(SETTINGS.readings_topic, bootstrap_servers=SETTINGS.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    got = 0
    began = time.monotonic()
    cpu = time.process_time()
    try:
        while got < want and time.monotonic() - began < timeout:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            got += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    seconds = time.monotonic() - began
    return {"records": got, "seconds": round(seconds, 3), "cpu_cores": round((time.process_time() - cpu) / max(seconds, 1e-9), 3)}


BASELINE_RUNS = 3
"""The bare consumer reads the topic this many times: one read of 100,000 records takes about half a second, and single
runs on this host counted 1.0 to 1.9 M readings/s, more spread than the worker's own changes."""


def median_baseline(runs: list[dict[str, float]], per_message: int) -> dict[str, Any]:
    """The run of median time among the bare consumer's `runs`, with every run's seconds and its readings a second."""
    chosen: dict[str, Any] = dict(sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2])
    chosen["readings_per_s"] = round(chosen["records"] * per_message / max(chosen["seconds"], 1e-9), 1)
    chosen["runs_seconds"] = [run["seconds"] for run in runs]
    return chosen


def count_with_faust(want: int, per_message: int, timeout: float = 300) -> dict[str, float]:
    """Faust's own cost: the worker's app and batch API, only counting (bench/faust_count.py), in its own group."""
    logs = SETTINGS.run_dir / "bench-logs"
    out = logs / "faust-count.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, **settings_env(SETTINGS), "QUANTRAC_WORKER_ID": f"{SETTINGS.worker_id}-faustcount",
           "BENCH_FAUST_COUNT_WANT": str(want), "BENCH_FAUST_COUNT_OUT": str(out), "PYTHONUNBUFFERED": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "faust_count.py")], env=env,
                            stdout=(logs / "faust-count.log").open("ab"), stderr=subprocess.STDOUT)
    sample = ProcessSample(proc.pid).start()
    began = time.monotonic()
    try:
        while not out.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the Faust counter exited with {proc.returncode}; see {logs / 'faust-count.log'}")
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"the Faust counter did not count {want} records in {timeout} s")
            time.sleep(0.1)  # poll interval of the measurement
        usage = sample.usage()
    finally:
        proc.terminate()
        proc.wait(60)
    result = orjson.loads(out.read_bytes())
    return {**result, "readings_per_s": round(result["records"] * per_message / max(result["seconds"], 1e-9), 1), **usage}


def copy_ceiling(raws: list[bytes], per_message: int) -> dict[str, Any]:
    """PostgreSQL alone: the readings of `raws` COPYed from prebuilt binary buffers (the worker's batch size, one
    transaction each) into a fresh database migrated as the worker's; clock around the COPYs only. Beside it, in turns
    batch by batch so both meet the same load, the same readings into the narrow row issue 15 point 5 asks about
    (`bench.store_writes.NARROW_TABLE`: series id, time, value, smallint status): what PostgreSQL could take if
    `readings` were narrowed."""
    from bench.store_writes import NARROW_COPY, create_narrow_table, narrow_buffer
    from processors.copy_binary import copy_buffer
    from processors.pipeline import decode_batch
    from processors.reading_writer import DIRECT_COPY

    size = SETTINGS.worker_batch_size
    batches = [decode_batch(raws[i:i + size]) for i in range(0, len(raws), size)]
    series_ids: dict[tuple[str, str], int] = {}  # a fresh database holds no series: numbered here, as the narrow row's
    narrow = [narrow_buffer(b, series_ids) for b in batches]
    buffers = [copy_buffer(b, [series_ids[key] for key in b.series_keys]) for b in batches]
    days = sorted({d for b in batches for d in np.unique(b.ts_us // 86_400_000_000).tolist()})
    database = f"{SETTINGS.pg_database}_copy"
    seconds = {DIRECT_COPY: 0.0, NARROW_COPY: 0.0}
    try:
        with connect(fresh_database(database)) as conn:
            migrate(conn)
            first, last = (datetime.fromtimestamp(d * 86_400, timezone.utc).date() for d in (days[0], days[-1]))
            conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (first, last))
            create_narrow_table(conn, store_kind(conn), [first + timedelta(days=k) for k in range((last - first).days + 1)])
            conn.commit()
            for buffer, narrow_one in zip(buffers, narrow, strict=True):
                for statement, data in ((DIRECT_COPY, buffer), (NARROW_COPY, narrow_one)):
                    began = time.perf_counter()
                    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                        copy.write(data)
                    seconds[statement] += time.perf_counter() - began
            copied = stored(conn)
    finally:
        drop_database(database)
    readings = len(raws) * per_message
    return {"readings": copied, "seconds": round(seconds[DIRECT_COPY], 3), "batch_messages": size,
            "readings_per_s": round(readings / max(seconds[DIRECT_COPY], 1e-9), 1),
            "narrow_row_seconds": round(seconds[NARROW_COPY], 3),
            "narrow_row_readings_per_s": round(readings / max(seconds[NARROW_COPY], 1e-9), 1)}


def core_budget(worker: dict[str, Any], baseline_per_s: float, cores: int) -> dict[str, Any]:
    """Where the drain's CPU went, per reading: the worker processes', PostgreSQL's and Kafka's CPU µs for each reading
    stored (their cores over the clock's span, divided by the rate). Their sum bounds the rate this machine could reach
    with its `cores` all busy and nothing waiting on anything: `ceiling_readings_per_s`, and that bound beside the same
    run's bare consumer. A ceiling under the goal says the CPU a reading costs must fall; overlap cannot get there."""
    rate = max(worker["readings_per_s"], 1e-9)
    spent = {"worker": worker["drain_cpu_cores"], **{name: worker[f"{name}_cpu_cores"] for name in ("postgres", "kafka")
                                                     if f"{name}_cpu_cores" in worker}}
    us = {name: round(used * 1e6 / rate, 2) for name, used in spent.items()}
    ceiling = cores * 1e6 / max(sum(us.values()), 1e-9)
    return {"cores": cores, "cpu_us_per_reading": us, "cpu_us_per_reading_total": round(sum(us.values()), 2),
            "ceiling_readings_per_s": round(ceiling, 1), "ceiling_vs_baseline": round(ceiling / max(baseline_per_s, 1e-9), 4)}


def _admin(statement: str) -> None:
    """Run `statement` on the private server's `postgres` database, outside a transaction."""
    with connect(SETTINGS.pg_dsn.replace(f"dbname={SETTINGS.pg_database}", "dbname=postgres")) as conn:
        conn.autocommit = True
        conn.execute(statement)


def drop_database(database: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def fresh_database(database: str) -> str:
    """`database` on the private server, dropped and created empty; its DSN."""
    drop_database(database)
    _admin(f'CREATE DATABASE "{database}"')
    return SETTINGS.pg_dsn.replace(f"dbname={SETTINGS.pg_database}", f"dbname={database}")


def stored(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def _service_samples() -> dict[str, ProcessSample]:
    """The private stack's PostgreSQL and Kafka (each process with its children), to sample while the worker drains."""
    found = {service.name: running_pid(service.process) for service in stack.services(SETTINGS, ["postgres", "kafka"])}
    return {name: ProcessSample(pid) for name, pid in found.items() if pid is not None}


_ASSIGNED = re.compile(r"worker\.partitions_assigned .*?partitions=\[([0-9, ]*)\]")


def group_settled(worker_logs: list[Path], partitions: int) -> bool:
    """Whether each worker's latest assignment (its log's last `worker.partitions_assigned`) is non-empty, and together
    they split the topic's partitions with none twice: the group's rebalances are over."""
    latest = []
    for path in worker_logs:
        found = _ASSIGNED.findall(path.read_text(errors="replace")) if path.exists() else []
        if not found or not found[-1].strip():
            return False
        latest.append({int(p) for p in found[-1].split(",")})
    return sum(len(a) for a in latest) == partitions and set().union(*latest) == set(range(partitions))


def drain_worker(want: int, profile: Path | None, workers: int = 1, timeout: float = 600, stall: float = 60
                 ) -> tuple[dict[str, Any], dict[str, list[dict[str, object]]]]:
    """Start `workers` worker processes (one consumer group) and time them from the first stored reading until `want`
    readings are stored; the first one is profiled over the same span (its startup and imports left out). With several,
    the clock starts once the group has settled (`group_settled`: the readings stored while the first worker drained
    alone and the group rebalanced are left out, as the first ones are). `cpu_cores` counts from the workers' start;
    `drain_cpu_cores`, `postgres_cpu_cores` and `kafka_cpu_cores` only over the clock's span: where the machine's cores
    went meanwhile."""
    logs = SETTINGS.run_dir / "bench-logs"
    began = time.monotonic()
    worker_logs = [logs / f"worker{i}.log" for i in range(workers)]
    for path in worker_logs:
        path.unlink(missing_ok=True)
    env = {**settings_env(SETTINGS), **({"QUANTRAC_LOG_LEVEL": "INFO"} if workers > 1 else {})}  # assignments logged
    procs = [quantrac_process(["worker"], env, path) for path in worker_logs]
    spy = None
    samples = [ProcessSample(p.pid).start() for p in procs]
    drain: dict[str, ProcessSample] = {}
    first_at, first_rows, rows, last_change = None, 0, 0, began
    try:
        with connect(SETTINGS.pg_dsn) as conn:
            conn.autocommit = True
            while rows < want:
                now = time.monotonic()
                for i, worker in enumerate(procs):
                    if worker.poll() is not None:
                        raise RuntimeError(f"the worker exited with {worker.returncode}; see {logs / f'worker{i}.log'}")
                current = stored_so_far(conn)
                if current != rows:
                    log.info("bench.worker_progress", seconds=round(now - began, 1), stored=current)
                    rows, last_change = current, now
                    if first_at is None and (workers == 1 or group_settled(worker_logs, SETTINGS.topic_partitions)):
                        first_at, first_rows = now, current
                        drain = {**{f"worker{i}": ProcessSample(p.pid).start() for i, p in enumerate(procs)},
                                 **{name: sample.start() for name, sample in _service_samples().items()}}
                        spy = start_profile(procs[0].pid, profile) if profile else None
                if now - began > timeout or (first_at is not None and now - last_change > stall):
                    break
                time.sleep(0.2)  # poll interval of the measurement
            end = time.monotonic() if rows >= want else last_change
            counted = stored(conn)
        usages = [sample.usage() for sample in samples]
        drained = {name: sample.usage()["cpu_cores"] for name, sample in drain.items()}
    finally:
        frames = stop_profile(spy, profile) if spy and profile else {}
        for worker in procs:
            worker.terminate()
        for worker in procs:
            worker.wait(60)
    seconds = max(end - (first_at or end), 1e-9)
    usage = {key: round(sum(u[key] for u in usages), 3) for key in usages[0]}
    return {"processes": workers, "clock_from": "group settled" if workers > 1 else "first stored reading",
            "readings": counted, "missing": max(0, want - counted), "seconds": round(seconds, 2),
            "startup_seconds": round((first_at or end) - began, 2), "first_readings": first_rows,
            "readings_per_s": round((rows - first_rows) / seconds, 1), **usage,
            "drain_cpu_cores": round(sum(v for k, v in drained.items() if k.startswith("worker")), 3),
            **{f"{name}_cpu_cores": drained[name] for name in ("postgres", "kafka") if name in drained}}, frames


STAGES = (
    ("Faust table writes (changelog)", ("(faust/tables/",)),
    ("decode", ("decode_records", "decode_batch", "decode_sourced", "decode_columns", "(quantrac/wire.py", "from_wire",
                "(quantrac/wire_columns.py", "_columns (quantrac/batch_columns", "BatchColumns.readings")),
    ("state: JSON dump and table write", ("StateCache.written", "_put (processors/readings_agent", "to_json",
                                          "_Run.save", ".state (processors/detectors/", "(processors/engine/row_json.py",
                                          "(processors/worker_state.py", "_write_state", "snapshot_states")),
    ("state: table read, JSON load and copy", ("_get (processors/readings_agent", "(processors/detection_state.py",
                                               "_prepare (processors/detection", "from_state (processors/detectors/")),
    ("conditions (alerts/rules.py)", ("(alerts/rules.py",)),
    ("rule state, plain pass", ("(processors/plain_pass.py", "(processors/rule_columns.py",
                                "(processors/engine/rule_pass.py")),
    ("windows", ("(processors/windows.py", "(processors/engine/windows.py")),
    ("detectors", ("(processors/detectors/", "(processors/engine/")),
    ("detection, other", ("(processors/detection.py", "(processors/incident.py", "(processors/rate_span.py",
                          "(processors/detection_banks.py", "(processors/station_rows.py",
                          "(processors/station_clock.py")),
    ("alerts: apply and publish", ("(alerts/alerts_table.py", "(alerts/open_alerts.py", "_publish (processors")),
    ("writes: readings, rollups, completeness, counts", ("(processors/reading_writer.py", "(processors/copy_binary.py",
                                                        "(processors/rollups.py", "(quantrac/batch_columns.py",
                                                        "(quantrac/completeness.py", "(quantrac/delivery_accounting.py")),
    ("liveness", ("_note_seen", "last_seen", "(processors/liveness.py")),
    ("Faust, aiokafka, asyncio and the rest", ("",)),
)
"""Profile stages: a busy sample counts in the first stage one of whose markers is in its innermost matching frame."""


def stage_table(collapsed: Path, readings: int, rate: int = 50) -> dict[str, float]:
    """CPU µs per reading of each stage (`STAGES`), from py-spy's raw output of the worker's busy samples
    (every thread; a sample whose leaf is a wait is idle)."""
    totals = dict.fromkeys([name for name, _ in STAGES], 0)
    if not collapsed.is_file():
        return {}
    for line in collapsed.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        frames = stack_text.split(";")
        if any(marker in frames[-1] for marker in IDLE_FRAMES):
            continue
        totals[_stage(frames)] += int(count)
    per_reading = {name: round(n / rate / max(readings, 1) * 1e6, 1) for name, n in totals.items()}
    return {**per_reading, "total": round(sum(per_reading.values()), 1)}


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in STAGES[:-1]:
            if any(m in frame for m in markers):
                return name
    return STAGES[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--keep-stack", action="store_true", help="leave the private stack running (and reuse it)")
    parser.add_argument("--profile", action="store_true", help="record the worker with py-spy while it drains")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group (the first is profiled)")
    parser.add_argument("--stages", type=Path, help="only print the stage table of this py-spy file (of --messages)")
    args = parser.parse_args()
    if args.stages:
        print(orjson.dumps(stage_table(args.stages, args.messages * 8), option=orjson.OPT_INDENT_2).decode())
        return

    prepare_private_stack(SETTINGS, args.keep_stack)
    try:
        stations = bench_stations(args.stations)
        with connect(fresh_database(SETTINGS.pg_database)) as conn:
            migrate(conn)
            save_stations(conn, stations)
        values = records(stations, args.messages)
        per_message = len(stations[min(stations)].parameters)
        fill_s = fill_topic(values)
        decode = decode_costs([v for _, v in values], per_message)

        baseline = median_baseline([asyncio.run(count_with_aiokafka(args.messages)) for _ in range(BASELINE_RUNS)],
                                   per_message)
        faust = count_with_faust(args.messages, per_message)
        profile_path = SETTINGS.run_dir / "bench-logs" / f"{SETTINGS.worker_id}.pyspy" if args.profile else None
        worker, frames = drain_worker(args.messages * per_message, profile_path, args.workers)
        ceiling = copy_ceiling([v for _, v in values], per_message)
        write_result("worker", {
            "method": "N readings records pre-filled in Kafka; time from the first stored reading to the last "
                      "(worker) or first to last record counted (baseline)",
            "messages": args.messages, "readings_per_message": per_message, "stations": args.stations,
            "fill_seconds": round(fill_s, 2), "load_average_at_end": os.getloadavg(),
            "worker": worker, "baseline_aiokafka_count": baseline, "faust_count": faust,
            "postgres_copy_prebuilt": ceiling,
            "postgres_copy_vs_baseline": round(ceiling["readings_per_s"] / max(baseline["readings_per_s"], 1e-9), 4),
            "postgres_narrow_row_copy_vs_baseline": round(
                ceiling["narrow_row_readings_per_s"] / max(baseline["readings_per_s"], 1e-9), 4),
            "worker_vs_postgres_copy": round(worker["readings_per_s"] / max(ceiling["readings_per_s"], 1e-9), 4),
            "decode_cpu_us_per_reading": decode,
            "worker_vs_baseline": round(worker["readings_per_s"] / max(baseline["readings_per_s"], 1e-9), 4),
            "core_budget": core_budget(worker, baseline["readings_per_s"], os.cpu_count() or 1),
            "faust_count_vs_baseline": round(faust["readings_per_s"] / max(baseline["readings_per_s"], 1e-9), 4),
            "worker_vs_faust_count": round(worker["readings_per_s"] / max(faust["readings_per_s"], 1e-9), 4),
            **({"worker_profile_top_frames": frames,
                "worker_profile_stages_us_per_reading": stage_table(profile_path, int(worker["readings"] - worker["first_readings"]))}
               if profile_path else {}),
        })
    finally:
        if not args.keep_stack:
            stack.down(SETTINGS)


if __name__ == "__main__":
    main()

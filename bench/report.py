"""The performance table of docs/performance.md, from the newest result of each benchmark in bench/results/.

    python bench/report.py           # print the table
    python bench/report.py --write   # also replace it in docs/performance.md between the bench markers
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, newest, one_worker_run, soak_figures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TABLE_FILE = REPO / "docs" / "performance.md"
MARKERS = re.compile(r"<!-- bench:start -->\n(.*?)\n<!-- bench:end -->", re.S)


def results(name: str) -> list[dict[str, Any]]:
    """Every result of a benchmark, oldest first."""
    return [json.loads(f.read_text()) for f in sorted(RESULTS.glob(f"{name}-*.json"))]


def _held_rows(scan: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """The newest end-to-end run of `runs` of one long step (5 min or more), shown under the rate scan `scan` when it is
    of the same day or later: a rate held that long can fall behind where a 60-s step did not."""
    held = [r for r in runs if len(r["steps"]) == 1 and r["steps"][0]["seconds"] >= 300
            and r["finished_at"][:10] >= scan["finished_at"][:10]]
    if not held:
        return []
    step = held[-1]["steps"][0]
    stored, alert = step["publish_to_stored_s"], step["publish_to_alert_s"]
    return [f"| ↳ {step['offered_readings_per_s']:,.0f} readings/s held {step['seconds'] / 60:.0f} min: stored of offered; lag growth "
            f"(messages/s); drain (s); publish→stored p99 (s); publish→alert p99 (s) {_alerts_when(held[-1])} | {step['stored']:,} of {step['readings']:,}; "
            f"{step['lag_growth_messages_per_s']}; {step['drain_s']}; {stored['p99']}; {alert['p99']} | | | "
            f"sustained: {step['sustained']} ({_when(held[-1])}) |"]


def _alerts_when(e2e: dict[str, Any]) -> str:
    """When in each step the measured exceedances were sent: the e2e bench spread them over the step from
    2026-12-03 10:20 UTC; before, every one went with the step's first messages, while the pipeline was idle."""
    return "(exceedances spread over the step)" if e2e.get("alert_exceedances") == "spread" else "(exceedances at the step's start)"


def _several_workers_row(worker: dict[str, Any]) -> str:
    """Several worker processes in one group on the same pre-filled topic, against that run's bare consumer."""
    ours, base = worker["worker"]["readings_per_s"], worker["baseline_aiokafka_count"]["readings_per_s"]
    clock = ("timed once the group had settled" if worker["worker"].get("clock_from") == "group settled"
             else "their first rebalance inside the clock")
    return (f"| ↳ {worker['worker']['processes']} worker processes in one group, {clock} "
            f"({worker['messages']:,} messages; readings/s together) | {ours:,.0f} | {base:,.0f} | {worker['worker_vs_baseline']} "
            f"| {_when(worker)} |")


def _worker_rows(worker: dict[str, Any]) -> list[str]:
    """The worker alone, Faust alone and PostgreSQL alone, against the bare consumer of the same run."""
    ours, base = worker["worker"]["readings_per_s"], worker["baseline_aiokafka_count"]["readings_per_s"]
    out = [f"| Worker alone (readings/s: store, rollups, every rule) | {ours:,.0f} | {base:,.0f} (bare aiokafka consumer that "
           f"only counts) | {worker['worker_vs_baseline']} | {_when(worker)} |"]
    if (faust := worker.get("faust_count")) is not None:
        out.append(f"| ↳ Faust alone: Faust's consumer and `noack_take` batches (the worker's path before 2026-12-03 17:00), only counting (readings/s) | "
                   f"{faust['readings_per_s']:,.0f} | {base:,.0f} | {worker['faust_count_vs_baseline']} | |")
    if (copy := worker.get("postgres_copy_prebuilt")) is not None:
        out.append(f"| ↳ PostgreSQL alone: the same readings as prebuilt binary COPY buffers, "
                   f"{copy['batch_messages']:,} messages a transaction (readings/s) | {copy['readings_per_s']:,.0f} | "
                   f"{base:,.0f} | {worker['postgres_copy_vs_baseline']} | worker: {worker['worker_vs_postgres_copy']} of it |")
        if "narrow_row_readings_per_s" in copy:
            out.append(f"| ↳ PostgreSQL alone, the same buffers in a narrow row (series id, time, value, smallint status; "
                       f"`readings` is not narrowed), in turns with the row above (readings/s) | "
                       f"{copy['narrow_row_readings_per_s']:,.0f} | {base:,.0f} | {worker['postgres_narrow_row_copy_vs_baseline']} | |")
    return out


def _when(result: dict[str, Any]) -> str:
    params = result.get("parameters", {})
    full = " (full size)" if (params.get("days"), params.get("stations")) == (30, 100) else \
        f" ({params['days']:g} days x {params['stations']} stations)" if "days" in params and "stations" in params else ""
    quick = " (quick)" if result.get("quick") or result.get("size") == "QUICK" else full
    return f"{result['finished_at'][:16].replace('T', ' ')} UTC{quick}"


def rows() -> list[str]:
    out = ["| Figure | quantrac | Baseline (same run) | Ratio | Measured |", "|---|---|---|---|---|"]
    runs = results("e2e")
    scans = [r for r in runs if len(r["steps"]) > 1]
    if (e2e := scans[-1] if scans else (runs[-1] if runs else None)) is not None:
        base = e2e["baseline"]["publisher_only"]["achieved_readings_per_s"]
        best = e2e["highest_sustained_readings_per_s"]
        out.append(f"| End to end, highest rate sustained in {e2e['seconds_per_step']:g}-s steps (readings/s) | {best:,.0f} | {base:,.0f} (publisher alone into Mosquitto) "
                   f"| {best / base:.2f} | {_when(e2e)} |")
        for step in e2e["steps"]:
            stored, alert = step["publish_to_stored_s"], step["publish_to_alert_s"]
            out.append(f"| ↳ at {step['offered_readings_per_s']:,.0f} readings/s: publish→stored p50/p95/p99 (s); publish→alert p99 "
                       f"{_alerts_when(e2e)} | {stored['p50']} / {stored['p95']} / {stored['p99']}; {alert['p99']} | | | sustained: {step['sustained']} "
                       f"({step['seconds']:g}-s step) |")
        out.extend(_held_rows(e2e, runs))
    if (bridge := newest("bridge")) is not None:
        ours, kcat = bridge["bridge"]["readings_per_s"], bridge["baseline_mosquitto_sub_kcat"]["readings_per_s"]
        out.append(f"| Bridge alone (readings/s) | {ours:,.0f} | {kcat:,.0f} (`mosquitto_sub \\| kcat -P`) | {ours / kcat:.2f} | {_when(bridge)} |")
        if (pair := bridge.get("two_bridges")) is not None:
            out.append(f"| ↳ two bridges on a shared subscription (readings/s, together) | {pair['readings_per_s']:,.0f} | "
                       f"{kcat:,.0f} | {pair['readings_per_s'] / kcat:.2f} | |")
    workers = results("worker")
    single = [w for w in workers if one_worker_run(w)]
    if single:
        out.extend(_worker_rows(single[-1]))
        several = [w for w in workers if w["worker"].get("processes", 1) > 1 and w["finished_at"] >= single[-1]["finished_at"][:10]]
        if several:
            out.append(_several_workers_row(several[-1]))
    if (store := newest("store")) is not None:
        out.extend(_store_rows(store))
    if (backfill := newest("backfill")) is not None:
        out.append(_backfill_row(backfill))
    if (soak := newest("soak")) is not None:
        out.extend(_soak_rows(soak))
    if (det := newest("detection")) is not None:
        out.extend(detection_rows(det))
    return out


def detection_rows(det: dict[str, Any]) -> list[str]:
    """GECCO 2018 (held-out part) and simulator ground truth, per incident kind, beside their naive baselines."""
    out: list[str] = []
    if (g := det.get("gecco2018")) is not None:
        ours, base = g["detectors"], g["baseline"]
        out.append(f"| Detection, GECCO 2018 held-out part ({g['test']['events']} events, tuned on the first "
                   f"{g['train']['events']}): point-wise F1 | {ours['f1']} | {base['f1']} (static z-score, threshold tuned "
                   f"likewise) | {ours['f1'] / base['f1']:.2f} | {_when(det)} |" if base["f1"] else "")
        out.append(f"| ↳ events caught; alarm precision; false alarms a day; mean delay (min) | {ours['events_caught']}; "
                   f"{ours['alarm_precision']}; {ours['false_alarms_per_day']}; {ours['mean_delay_min']} | {base['events_caught']}; "
                   f"{base['alarm_precision']}; {base['false_alarms_per_day']}; {base['mean_delay_min']} | | |")
    if (sim := det.get("simulator")) is not None:
        ours, base = sim["quantrac"]["per_kind"], sim["baseline"]["per_kind"]
        out.append(f"| Detection, simulator ground truth ({sim['stations']} stations, {sim['days']:g} days after "
                   f"{sim.get('warmup_days', 0):g} of warm-up, seed {sim['seed']}): per incident kind, recall / precision / "
                   f"median delay (min) | | static \\|z\\| > 4, instantaneous limit, silence seen at the next message | | {_when(det)} |")
        for kind, q in ours.items():
            b = base.get(kind, {})
            out.append(f"| ↳ {kind} ({q['incidents']}) | {_kind(q)} | {_kind(b)} | | |")
        drift = sim["quantrac"]["per_rule"].get("anomaly_drift")
        if drift is not None:
            out.append(f"| ↳ drift detector alarms matching an incident | {drift['matched']}/{drift['alarms']} | | | |")
    if (quiet := det.get("quiet")) is not None:
        out.append(f"| Alert budget on normal data (no incidents, {quiet[0]['stations']} stations): anomaly and rate-of-change "
                   f"alarms per station-week, by reporting interval | | | | {_when(det)} |")
        for q in quiet:
            out.append(f"| ↳ every {q['interval_s']} s ({q['span_h']:g} h played) | {q['per_station_week']} "
                       f"({q['false_alarms']} alarms) | | | |")
    if (stress := det.get("stress")) is not None:
        first: dict[str, Any] = next(iter(stress.values()), {})
        weeks = first.get("weeks", 1)
        out.append(f"| Synthetic stress series ({weeks} seeded week(s) at 1 min each, after a warm-up day): events caught, "
                   f"most alarms per event, false alarms per series-week (mean; worst week), alarms in the warm-up day "
                   f"(mean) | events above every noise reading of their week (single-reading spikes: what a threshold set "
                   f"with hindsight catches with no false alarm); on heavy tails, the share a detector knowing the noise's "
                   f"law catches at this false alarm rate | | | {_when(det)} |")
        for name, v in stress.items():
            worst = f"; {v['worst_week_false_alarms']}" if "worst_week_false_alarms" in v else ""
            separable = f"{v['separable']}/{v['events']}" if "separable" in v else ""
            if "oracle_caught_share" in v:
                separable += f"; {v['oracle_caught_share']}"
            warmup = f", {v['warmup_day_alarms']}" if "warmup_day_alarms" in v else ""
            out.append(f"| ↳ {name} | {v['caught']}/{v['events']}, {v['most_alarms_per_event']}, "
                       f"{v['false_alarms_per_week']}{worst}{warmup} | {separable} | | |")
    return [row for row in out if row]


_STORE_NAMES = {"timescaledb": "TimescaleDB", "postgresql": "native PostgreSQL"}


def _soak_rows(soak: dict[str, Any]) -> list[str]:
    """The soak's stored rate, lag and memory of each component, first against last."""
    out: list[str] = []
    offered = (f"{soak['readings']:,} offered ({soak['achieved_readings_per_s']:,.0f}/s achieved)" if "readings" in soak
               else f"about {soak['offered_readings_per_s'] * soak['minutes'] * 60:,.0f} offered (publisher count lost)")
    out.append(f"| Soak, {soak['minutes']:.0f} min at {soak['offered_readings_per_s']:,.0f} readings/s offered: stored; "
               f"consumer lag first → last (messages) | {soak['stored']:,}; {soak['lag_messages']['first']:,} → "
               f"{soak['lag_messages']['last']:,} | {offered} | | {_when(soak)} |")
    rates, memory = soak_figures(soak["samples"], soak["memory"])
    if rates is not None:
        out.append(f"| ↳ stored, first 5 min → last 5 min (readings/s) | {rates['first_per_s']:,.0f} → "
                   f"{rates['last_per_s']:,.0f} | first 5 min | {rates['last_to_first']} | |")
    for name, m in memory.items():
        out.append(f"| ↳ {name} RSS first → last (MiB), slope over the run; over its last third | {m['first_mib']:.0f} → "
                   f"{m['last_mib']:.0f}, {m['slope_mib_per_hour']} MiB/h; {m['last_third_slope_mib_per_hour']} MiB/h | "
                   f"first sample | {m['ratio_last_to_first']} | |")
    return out


def _backfill_row(backfill: dict[str, Any]) -> str:
    """One station's archive imported: the worker's stored rate against the import's sending rate."""
    stored, sent = backfill["stored"], backfill["import"]
    return (f"| Backfill: `quantrac import` of one station's archive ({backfill['readings_sent']:,} readings, "
            f"{backfill['file']}), stored by one worker (readings/s; worker cores) | {stored['readings_per_s']:,.0f}; "
            f"{stored['worker']['cpu_cores']} | {sent['readings_per_s']:,.0f} (sent by the import) | "
            f"{stored['readings_per_s'] / sent['readings_per_s']:.3f} | {_when(backfill)} |")


def _store_rows(store: dict[str, Any]) -> list[str]:
    """Writes against raw COPY, history queries against GROUP BY, and compression, for each store path."""
    paths = store.get("paths") or {"postgresql": store}  # results before both paths were benched
    out = []
    for kind, p in paths.items():
        w, h, name = p["write"], p["history"], _STORE_NAMES.get(kind, kind)
        rollups = "continuous aggregates refreshed apart" if kind == "timescaledb" else "rollups in the transaction"
        out.append(f"| Store writes, {name} ({rollups}; rows/s) | {w['store_writer_with_rollups_rows_per_s']:,} | "
                   f"{w['baseline_raw_binary_copy_rows_per_s']:,} (raw binary COPY) | {w['ratio_store_with_rollups_to_raw_copy']} | {_when(store)} |")
        if "worker_store_path_rows_per_s" in w:
            stages = ", ".join(f"{stage} {us}" for stage, us in w["worker_store_path_us_per_reading"].items())
            out.append(f"| ↳ every store statement of the worker's batch (rows/s; µs per reading: {stages}) | "
                       f"{w['worker_store_path_rows_per_s']:,} | {w['baseline_raw_binary_copy_us_per_reading']} µs per reading "
                       f"(raw binary COPY, batches interleaved) | {w['ratio_worker_store_path_to_raw_copy']} | |")
        if "narrow_row_copy_prebuilt_buffer_rows_per_s" in w:
            size = w["bytes_per_reading"]
            out.append(f"| ↳ a narrower row (integer series id, smallint status, no unit; bench only): prebuilt binary COPY "
                       f"(rows/s; bytes on disk per reading) | {w['narrow_row_copy_prebuilt_buffer_rows_per_s']:,}; "
                       f"{size['readings_narrow']} | {w['raw_copy_prebuilt_buffer_rows_per_s']:,}; {size['readings']} (today's row, "
                       f"prebuilt) | {w['ratio_narrow_row_to_raw_copy_prebuilt_buffer']} | |")
        out.append(f"| History query, {name}, one station-day at 5 min, p50/p95 (ms) | {h['api_bucket_query_ms']['p50']:.0f} / "
                   f"{h['api_bucket_query_ms']['p95']:.0f} | {h['baseline_group_by_raw_ms']['p50']:.0f} / {h['baseline_group_by_raw_ms']['p95']:.0f} "
                   f"(GROUP BY over raw readings) | | {_when(store)} |")
        if (c := p.get("compression")) is not None:
            q = p["history_compressed"]
            out.append(f"| ↳ {name} compressed: size (MB); history query p50/p95 (ms) | {c['after_bytes'] / 1e6:.1f}; "
                       f"{q['api_bucket_query_ms']['p50']:.0f} / {q['api_bucket_query_ms']['p95']:.0f} | {c['before_bytes'] / 1e6:.1f} "
                       f"(uncompressed); {q['baseline_group_by_raw_ms']['p50']:.0f} / {q['baseline_group_by_raw_ms']['p95']:.0f} "
                       f"(GROUP BY over compressed raw) | {c['ratio']} | |")
        elif "readings_bytes" in p:
            out.append(f"| ↳ {name}: readings size (MB), no compression | {p['readings_bytes'] / 1e6:.1f} | | | |")
    return out


def _kind(k: dict[str, Any]) -> str:
    if not k:
        return ""
    return f"{k['recall']} / {k['precision'] if k['precision'] is not None else '–'} / {k['delay_min_median'] if k['delay_min_median'] is not None else '–'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"replace the table in {TABLE_FILE.relative_to(REPO)}")
    args = parser.parse_args()
    table = "\n".join(rows())
    print(table)
    if args.write:
        text = TABLE_FILE.read_text(encoding="utf-8")
        new, count = MARKERS.subn(lambda _m: f"<!-- bench:start -->\n{table}\n<!-- bench:end -->", text)
        if count != 1:
            sys.exit(f"{TABLE_FILE} has no <!-- bench:start --> / <!-- bench:end --> markers")
        TABLE_FILE.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()

"""The worker bench's clock for several workers starts once their group has settled: each worker's latest assignment in
its log is non-empty, and together they split the topic's partitions once."""

from pathlib import Path

from bench.worker import group_settled


def _log(path: Path, *assignments: str) -> Path:
    path.write_text("".join(f"2026-12-06T06:00:44Z [info     ] worker.partitions_assigned     generation={g} "
                            f"partitions=[{a}] process=worker\n" for g, a in enumerate(assignments, 1)))
    return path


def test_the_group_settles_when_the_latest_assignments_split_the_partitions(tmp_path: Path) -> None:
    first = _log(tmp_path / "w0.log", "0, 1, 2, 3, 4, 5", "0, 2, 4")
    second = _log(tmp_path / "w1.log", "1, 3, 5")
    assert group_settled([first, second], 6)


def test_not_while_a_worker_has_no_assignment_or_an_old_one_overlaps(tmp_path: Path) -> None:
    alone = _log(tmp_path / "w0.log", "0, 1, 2, 3, 4, 5")
    assert not group_settled([alone, tmp_path / "missing.log"], 6)
    assert not group_settled([alone, _log(tmp_path / "w1.log", "1, 3, 5")], 6)  # the first not yet reassigned
    assert not group_settled([_log(tmp_path / "w2.log", "0, 2, 4"), _log(tmp_path / "w3.log", "")], 6)

"""The worker bench's core budget: the CPU a stored reading costs, and the rate the machine's cores bound."""

from hypothesis import given
from hypothesis import strategies as st

from bench.worker import core_budget


def test_budget_divides_each_process_cores_by_the_rate() -> None:
    drained = {"readings_per_s": 100_000.0, "drain_cpu_cores": 0.8, "postgres_cpu_cores": 0.7, "kafka_cpu_cores": 0.05}
    budget = core_budget(drained, baseline_per_s=1_500_000.0, cores=2)
    assert budget["cpu_us_per_reading"] == {"worker": 8.0, "postgres": 7.0, "kafka": 0.5}
    assert budget["cpu_us_per_reading_total"] == 15.5
    assert budget["ceiling_readings_per_s"] == round(2e6 / 15.5, 1)
    assert budget["ceiling_vs_baseline"] == round(2e6 / 15.5 / 1_500_000, 4)


def test_a_process_not_sampled_is_left_out() -> None:
    budget = core_budget({"readings_per_s": 50_000.0, "drain_cpu_cores": 0.5}, baseline_per_s=1e6, cores=2)
    assert budget["cpu_us_per_reading"] == {"worker": 10.0}


@given(rate=st.floats(1_000, 1e6), worker=st.floats(0.01, 1), postgres=st.floats(0.01, 1), cores=st.integers(2, 8))
def test_the_ceiling_is_never_below_a_rate_the_cores_reached(rate: float, worker: float, postgres: float,
                                                            cores: int) -> None:
    """The processes used at most `cores` between them, so the bound on `cores` is at least the rate they reached."""
    budget = core_budget({"readings_per_s": rate, "drain_cpu_cores": worker, "postgres_cpu_cores": postgres},
                         baseline_per_s=1e6, cores=cores)
    assert budget["ceiling_readings_per_s"] >= rate * 0.999

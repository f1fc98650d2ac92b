"""The monitor's back-off: how often a target's scheduler is asked, and its jobs' folders read.

The schedule is checked on its own with made-up times, then a real ``Monitor``
watches real jobs (the ``local`` target, a private Slurm) on a clock of the
test's own, so that minutes of watching take a moment and nothing depends on
how fast this machine is.
"""

import itertools
import json
import sys
import time
from pathlib import Path

import pytest

import rx_magic
from rx_magic.errors import ConfigError
from rx_magic.flow.watch import Monitor, PollSchedule, folder_gap
from rx_magic.model.states import State
from rx_magic.targets import get_target
from helpers import wait_for  # noqa: E402

MINUTE = 60.0


def query_times(schedule: PollSchedule, until: float) -> list[float]:
    """When a monitor on ``schedule`` asks the scheduler, from the last change to ``until``, nothing changing."""
    times = []
    while (due := max(schedule.next_query(), schedule.last_change)) < until:
        schedule.asked(due)
        times.append(due)
    return times


def per_minute(times: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in times) / (end - start) * MINUTE


# ----------------------------------------------------------------------------- the schedule


def test_after_a_change_the_scheduler_is_asked_2_4_8_16_s_apart_then_every_30_s():
    schedule = PollSchedule()
    schedule.changed(0.0)
    assert query_times(schedule, 125) == [0, 2, 6, 14, 30, 60, 90, 120]


def test_quiet_jobs_cost_five_queries_in_their_first_minute_and_two_a_minute_after():
    schedule = PollSchedule()
    schedule.changed(0.0)
    times = query_times(schedule, 3600)
    assert per_minute(times, 0, MINUTE) == 5
    assert per_minute(times, MINUTE, 2 * MINUTE) == 2
    assert per_minute(times, 2 * MINUTE, 10 * MINUTE) == 2
    assert per_minute(times, 10 * MINUTE, 60 * MINUTE) == 2


def test_a_change_after_a_quiet_while_brings_the_next_query_within_two_seconds():
    schedule = PollSchedule()
    schedule.changed(0.0)
    query_times(schedule, 10 * MINUTE)
    assert schedule.next_query() - schedule.last_asked == 30      # backed off
    schedule.changed(10 * MINUTE + 5)
    assert schedule.next_query() <= 10 * MINUTE + 5 + 2


def test_after_a_change_the_gaps_start_over_from_two_seconds():
    schedule = PollSchedule()
    schedule.changed(0.0)
    query_times(schedule, 10 * MINUTE)
    changed = schedule.last_asked + 1
    schedule.changed(changed)
    times = query_times(schedule, changed + 40)
    assert [round(b - a) for a, b in itertools.pairwise(times)] == [2, 4, 8, 16]


@pytest.mark.parametrize("ceiling, gaps", [(120, [2, 4, 8, 16, 32, 64, 120, 120]), (5, [2, 4, 5, 5, 5, 5, 5, 5])])
def test_the_targets_poll_interval_is_the_longest_gap_between_queries(ceiling, gaps):
    schedule = PollSchedule(ceiling=ceiling)
    schedule.changed(0.0)
    times = query_times(schedule, 3600)
    assert [round(b - a) for a, b in itertools.pairwise(times)][:8] == gaps
    assert max(b - a for a, b in itertools.pairwise(times)) == ceiling


def test_running_jobs_folders_are_read_twice_a_second_at_first_and_an_end_shows_within_2_percent_of_the_wait():
    assert folder_gap(0) == folder_gap(29) == 0.5
    for quiet in (60, 300, 600, 1200):
        assert folder_gap(quiet) <= quiet * 0.02
    assert folder_gap(86400) == 30


# ----------------------------------------------------------------------------- poll_interval in targets.toml


def test_poll_interval_is_read_from_the_targets_configuration(configure_targets, tmp_path):
    configure_targets(slow={"workdir": str(tmp_path), "poll_interval": 120},
                      quick={"workdir": str(tmp_path), "poll_interval": 2.5})
    assert get_target("slow").config.poll_interval == 120
    assert get_target("quick").config.poll_interval == 2.5
    assert get_target("local").config.poll_interval == 30


@pytest.mark.parametrize("value", [0, -5, "30s", True, [30]])
def test_a_poll_interval_that_is_not_a_positive_number_is_refused_saying_so(configure_targets, tmp_path, value):
    path = configure_targets(odd={"workdir": str(tmp_path), "poll_interval": value})
    with pytest.raises(ConfigError) as raised:
        get_target("odd")
    message = str(raised.value)
    assert f"{path} [targets.odd]: poll_interval must be a positive number of seconds" in message
    assert repr(value) in message


# ----------------------------------------------------------------------------- a monitor on a clock of the test's own


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def counted_queries(monkeypatch, target, clock):
    """The monitor clock's time of every scheduler query made on ``target`` from now on."""
    times = []
    real_query = target.scheduler.query

    def query(transport, jobs):
        times.append(clock.now)
        return real_query(transport, jobs)

    monkeypatch.setattr(target.scheduler, "query", query)
    return times


def counted_reads(monkeypatch, target, clock, name="status.json"):
    """The monitor clock's time of every read of a file called ``name`` on ``target`` from now on."""
    times = []
    real_read = target.transport.read_bytes

    def read_bytes(path, *args, **kwargs):
        if path.endswith("/" + name):
            times.append(clock.now)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(target.transport, "read_bytes", read_bytes)
    return times


def folder_says(job, state):
    try:
        return json.loads(Path(job.paths.status_json).read_text())["state"] == state
    except (FileNotFoundError, ValueError):
        return False


def step(watcher, clock, until):
    """Let ``watcher`` look at its jobs whenever a look is due, until its clock reads ``until``."""
    while clock.now < until:
        clock.now = min(until, clock.now + max(watcher.poll(), 0.001))


def test_a_job_watched_for_ten_minutes_costs_at_most_two_scheduler_queries_a_minute(monkeypatch):
    target = get_target("local")
    clock = Clock()
    queries, reads = counted_queries(monkeypatch, target, clock), counted_reads(monkeypatch, target, clock)
    job = rx_magic.submit("import time\ntime.sleep(600)", "local")
    watcher = Monitor("local", clock=clock, background=False)
    watcher.watch(job)
    started = clock.now
    step(watcher, clock, started + 11 * MINUTE)
    assert job.record.state is State.RUNNING and watcher.job_ids == [job.id]
    assert per_minute(queries, started, started + MINUTE) <= 5
    assert per_minute(queries, started + 10 * MINUTE, started + 11 * MINUTE) <= 2
    # its folder is still read every few seconds, so that its end would show soon
    assert 2 <= per_minute(reads, started + 10 * MINUTE, started + 11 * MINUTE) <= 8


def test_a_short_job_watched_beside_a_long_quiet_one_ends_within_half_a_second(monkeypatch):
    target = get_target("local")
    clock = Clock()
    queries = counted_queries(monkeypatch, target, clock)
    long = rx_magic.submit("import time\ntime.sleep(600)", "local")
    watcher = Monitor("local", clock=clock, background=False)
    watcher.watch(long)
    step(watcher, clock, clock.now + 10 * MINUTE)
    ended = []
    short = rx_magic.submit("v = 1", "local")
    watched_at = clock.now
    watcher.watch(short, on_end=ended.append)
    step(watcher, clock, watched_at + 2)
    assert [t for t in queries if t >= watched_at]    # the scheduler asked about the new job at once
    wait_for(lambda: folder_says(short, "done"), "the short job to end")
    finished_at = clock.now
    step(watcher, clock, finished_at + 0.5)
    assert ended == [short] and short.record.state is State.DONE
    assert watcher.job_ids == [long.id]


def step_until_ended(watcher, clock, ended, what, timeout=30):
    """Step ``watcher`` 5 s of its clock at a time until its ``on_end`` has filled ``ended``."""
    deadline = time.monotonic() + timeout
    while not ended:
        assert time.monotonic() < deadline, f"the monitor never saw {what} end"
        step(watcher, clock, clock.now + 5)
        time.sleep(0.05)


def test_a_job_cancelled_by_another_handle_is_recorded_cancelled_by_you(monkeypatch):
    clock = Clock()
    job = rx_magic.submit("import time\ntime.sleep(600)", "local")
    watcher = Monitor("local", clock=clock, background=False)
    ended = []
    watcher.watch(job, on_end=ended.append)
    step(watcher, clock, clock.now + 10 * MINUTE)
    assert job.record.state is State.RUNNING
    other = rx_magic.jobs(1)[0]                       # a second handle, as `%rx cancel` makes
    assert other is not job and other.id == job.id
    other.cancel()
    step_until_ended(watcher, clock, ended, "the cancelled job")
    assert job.record.state is State.CANCELLED and job.reason == "cancelled by you"


def test_a_job_removed_from_the_registry_while_watched_is_still_seen_to_end(monkeypatch):
    from rx_magic.flow.registry import default_registry
    clock = Clock()
    job = rx_magic.submit("import time\ntime.sleep(0.5)\nv = 1", "local")
    watcher = Monitor("local", clock=clock, background=False)
    ended = []
    watcher.watch(job, on_end=ended.append)
    default_registry().remove(job.id)                 # as `%rx clean` or another kernel may do
    wait_for(lambda: folder_says(job, "done"), "the job to end")
    step_until_ended(watcher, clock, ended, "the job")
    assert job.record.state is State.DONE


# ----------------------------------------------------------------------------- queued jobs on a real Slurm


@pytest.fixture
def hpc(slurm, configure_targets, tmp_path):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    return slurm


def test_the_folder_of_a_job_slurm_holds_in_the_queue_is_not_read_until_it_leaves_the_queue(hpc, monkeypatch):
    target = get_target("hpc")
    clock = Clock()
    queries, reads = counted_queries(monkeypatch, target, clock), counted_reads(monkeypatch, target, clock)
    job = rx_magic.submit("y = 1", "hpc", extra=["--hold"])
    watcher = Monitor("hpc", clock=clock, background=False)
    ended = []
    watcher.watch(job, on_end=ended.append)
    step(watcher, clock, clock.now + 5 * MINUTE)
    assert job.record.state is State.QUEUED and job.reason == "held"
    first_query = queries[0]
    assert len(queries) >= 10
    assert [t for t in reads if t > first_query] == []
    hpc.client("scontrol", "release", job.record.scheduler_id)
    deadline = time.monotonic() + 60
    while not ended:
        assert time.monotonic() < deadline, f"the released job is still {job.record.state} after 60 s"
        step(watcher, clock, clock.now + 5)
        time.sleep(0.1)
    assert job.record.state is State.DONE
    assert [t for t in reads if t > first_query]      # read again once Slurm let it go

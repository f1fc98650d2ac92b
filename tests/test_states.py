"""``decide_state``: what a job's folder and its scheduler together say about it."""

import pytest

from rx_magic.model.states import Disappearance, Observation, SchedulerState, State, decide_state, looks_gone

RUNNING = {"state": "running"}
DONE = {"state": "done"}
FAILED_BY_SIGNAL = {"state": "failed", "reason": "terminated by signal SIGTERM"}
CELL_RAISED = {"state": "failed", "reason": "the cell raised ValueError: bad"}
STOPPED_FROM_OUTSIDE = {"state": "failed", "reason": "terminated by signal SIGTERM", "exit_code": 143}
CANCELLED = {"state": "cancelled", "reason": "cancelled on the target"}

GONE = SchedulerState(None)
SCHED_RUNNING = SchedulerState(State.RUNNING)
SCHED_QUEUED = SchedulerState(State.QUEUED, "waiting for resources")
SCHED_WALLTIME = SchedulerState(State.FAILED, "walltime exceeded (1:00:00)")
SCHED_CANCELLED = SchedulerState(State.CANCELLED)


def seen(status=None, scheduler=None, exit_code=None, tail=""):
    return Observation(status, exit_code, scheduler, tail)


CASES = {
    # the folder's ending wins
    "folder done wins over a scheduler that still lists the job":
        (seen(DONE, SCHED_RUNNING), False, State.DONE, None),
    "folder done wins when the scheduler was not asked":
        (seen(DONE), False, State.DONE, None),
    "folder done wins even after a cancel was requested":
        (seen(DONE, GONE), True, State.DONE, None),
    "folder failed is failed with the folder's reason":
        (seen(CELL_RAISED, GONE), False, State.FAILED, "the cell raised ValueError: bad"),
    "folder failed after a cancel request is cancelled":
        (seen(FAILED_BY_SIGNAL, GONE), True, State.CANCELLED, "cancelled by you"),
    "folder cancelled is cancelled":
        (seen(CANCELLED, GONE), False, State.CANCELLED, "cancelled on the target"),
    "the scheduler's failed reason wins over the folder's terminated by signal":
        (seen(FAILED_BY_SIGNAL, SCHED_WALLTIME), False, State.FAILED, "walltime exceeded (1:00:00)"),
    "a job stopped by a signal waits while the scheduler still lists it, to learn why":
        (seen(STOPPED_FROM_OUTSIDE, SCHED_RUNNING), False, State.RUNNING, None),
    "a job stopped by a signal takes the scheduler's reason once it has one":
        (seen(STOPPED_FROM_OUTSIDE, SCHED_WALLTIME), False, State.FAILED, "walltime exceeded (1:00:00)"),
    "a job stopped by a signal the scheduler forgot keeps the folder's reason":
        (seen(STOPPED_FROM_OUTSIDE, GONE), False, State.FAILED, "terminated by signal SIGTERM"),
    "a job someone else cancelled through the scheduler is cancelled":
        (seen(STOPPED_FROM_OUTSIDE, SchedulerState(State.CANCELLED, "cancelled by uid 0")), False,
         State.CANCELLED, "cancelled by uid 0"),
    "a cell that raised is failed even while the scheduler still lists the job":
        (seen(dict(CELL_RAISED, exit_code=1), SCHED_RUNNING), False, State.FAILED, "the cell raised ValueError: bad"),
    # no ending in the folder yet
    "scheduler running and folder running is running":
        (seen(RUNNING, SCHED_RUNNING), False, State.RUNNING, None),
    "scheduler running and no folder status yet is running as the scheduler says":
        (seen(None, SCHED_RUNNING), False, State.RUNNING, None),
    "scheduler queued with no folder status is queued with the scheduler's reason":
        (seen(None, SCHED_QUEUED), False, State.QUEUED, "waiting for resources"),
    "folder running wins over a scheduler that still says queued":
        (seen(RUNNING, SCHED_QUEUED), False, State.RUNNING, None),
    "not asking the scheduler, a running folder is running":
        (seen(RUNNING), False, State.RUNNING, None),
    "not asking the scheduler, no folder status is submitted":
        (seen(None), False, State.SUBMITTED, None),
    # the scheduler says it ended (or forgot it) and the folder holds no ending: one round is no evidence
    "scheduler forgot the job and the folder has no ending is no news yet":
        (seen(RUNNING, GONE), False, None, "the job ended without the runner recording a result"),
    "scheduler forgot a job that never started is no news yet":
        (seen(None, GONE), False, None, "the job ended without the runner recording a result"),
    "scheduler says done but the folder has no ending yet is no news (the folder may lag)":
        (seen(RUNNING, SchedulerState(State.DONE)), False, None, "the job ended without the runner recording a result"),
    "scheduler forgot the job after a cancel request is cancelled":
        (seen(RUNNING, GONE), True, State.CANCELLED, "cancelled by you"),
    "scheduler cancelled the job is cancelled":
        (seen(RUNNING, SCHED_CANCELLED), False, State.CANCELLED, "cancelled by you"),
    "scheduler killed it for walltime is failed with its reason":
        (seen(RUNNING, SCHED_WALLTIME), False, State.FAILED, "walltime exceeded (1:00:00)"),
    "an exit code recorded by the job script is failed naming the code":
        (seen(None, GONE, exit_code=127, tail="job.sh: line 5: /opt/py: No such file or directory"), False,
         State.FAILED,
         ("the job script exited with code 127 before the cell finished: "
          "job.sh: line 5: /opt/py: No such file or directory")),
    "an exit code seen without asking the scheduler is failed naming the code":
        (seen(None, exit_code=96), False, State.FAILED, "the job script exited with code 96 before the cell finished"),
}


@pytest.mark.parametrize("observation, cancel_requested, state, reason", CASES.values(), ids=CASES.keys())
def test_decide_state(observation, cancel_requested, state, reason):
    assert decide_state(observation, cancel_requested) == (state, reason)


@pytest.mark.parametrize("observation", [case[0] for case in CASES.values()], ids=CASES.keys())
def test_a_job_without_a_done_folder_is_never_done(observation):
    decided, _ = decide_state(observation, cancel_requested=False)
    assert (decided is State.DONE) == ((observation.status or {}).get("state") == "done")


GONE_WITHOUT_TRACE = [seen(RUNNING, GONE), seen(None, GONE), seen(RUNNING, SchedulerState(State.DONE)),
                      seen(None, SchedulerState(State.FAILED))]


@pytest.mark.parametrize("observation", GONE_WITHOUT_TRACE)
def test_a_job_gone_without_a_trace_is_failed_once_that_is_confirmed_never_done(observation):
    assert looks_gone(observation)
    assert decide_state(observation, gone_confirmed=True) == (
        State.FAILED, "the job ended without the runner recording a result")


@pytest.mark.parametrize("observation", [seen(RUNNING, SCHED_RUNNING), seen(DONE, GONE), seen(RUNNING),
                                         seen(None, GONE, exit_code=1), seen(RUNNING, SCHED_WALLTIME)])
def test_a_round_with_any_trace_is_not_gone(observation):
    assert not looks_gone(observation)


def test_gone_is_evidence_only_after_enough_consistent_rounds_over_enough_time():
    watch = Disappearance(rounds=3, seconds=10.0)
    assert [watch.round(True, t) for t in (0.0, 1.0, 2.0)] == [False, False, False]     # 3 rounds, too soon
    assert watch.round(True, 10.0) is True
    again = Disappearance(rounds=3, seconds=10.0)
    assert [again.round(True, t) for t in (0.0, 20.0)] == [False, False]               # long enough, too few
    assert again.round(False, 21.0) is False                                            # seen alive: starts over
    assert [again.round(True, t) for t in (22.0, 30.0, 40.0)] == [False, False, True]

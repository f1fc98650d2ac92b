"""The one state machine of a job.

A job moves ``submitted -> queued -> running -> done | failed | cancelled``,
or is ``unknown`` when neither the scheduler nor its folder can be read.
The folder's ``status.json`` is the truth for how a job ended; the scheduler
is the truth for queued/running and for jobs it killed, which never write a
final status themselves.

Only evidence ends a job: the folder's ending (``status.json``, ``exit_code``)
or the scheduler's own final record (a final state with its reason). A query
that failed says nothing (the callers skip the round). A job the scheduler no
longer knows, or says ended normally, while its folder holds no ending, is
*gone without a trace*: that ends it only once ``Disappearance`` has seen it
so in several consistent rounds over a minimum time, the folder read each time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(str, enum.Enum):
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SchedulerState:
    """What a scheduler says of one job; ``state`` is None when it no longer knows the job."""

    state: State | None
    reason: str | None = None
    exit_code: int | None = None
    #: A job array's elements, by index, where the scheduler lists them one by one.
    elements: dict | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class Observation:
    """What one poll round saw of a job: its folder's status and the scheduler's word."""

    status: dict | None                 # status.json, or None when absent/unreadable
    exit_code: int | None               # the job script's own record, or None
    scheduler: SchedulerState | None    # None when the scheduler was not asked this round
    log_tail: str = ""                  # the job script's own output, for messages


def stopped_from_outside(status: dict | None) -> bool:
    """Whether the runner recorded a failure by a signal it did not send itself (128 + N)."""
    status = status or {}
    return status.get("state") == "failed" and (status.get("exit_code") or 0) > 128


#: A job gone without a trace ends only after this many consecutive rounds that saw it so...
GONE_ROUNDS = 3
#: ...spanning at least this many seconds from the first.
GONE_SECONDS = 10.0


class Disappearance:
    """Counts the consecutive rounds that saw a job gone without a trace; says when that is evidence.

    ``round(gone, now)`` records one round in which the scheduler was asked;
    it returns True once ``GONE_ROUNDS`` consecutive rounds over at least
    ``GONE_SECONDS`` saw the job gone. Any round that saw it otherwise starts over.
    """

    def __init__(self, rounds: int = GONE_ROUNDS, seconds: float = GONE_SECONDS):
        self.needed_rounds, self.needed_seconds = rounds, seconds
        self.first: float | None = None
        self.rounds = 0

    def round(self, gone: bool, now: float) -> bool:
        if not gone:
            self.first, self.rounds = None, 0
            return False
        if self.first is None:
            self.first = now
        self.rounds += 1
        return self.rounds >= self.needed_rounds and now - self.first >= self.needed_seconds


def looks_gone(seen: Observation, cancel_requested: bool = False) -> bool:
    """Whether this round saw the job gone without a trace: asked, the scheduler no longer knows it (or says it
    ended normally), and neither the folder's status nor the job script's exit code says how it ended."""
    sched = seen.scheduler
    if sched is None or cancel_requested or seen.exit_code is not None:
        return False
    if (seen.status or {}).get("state") in ("done", "failed", "cancelled"):
        return False
    return sched.state is None or sched.state is State.DONE or (sched.state is State.FAILED and not sched.reason)


def decide_state(seen: Observation, cancel_requested: bool = False,
                 gone_confirmed: bool = False) -> tuple[State | None, str | None]:
    """The job's state and, when it ended badly, a reason a person can read.

    ``(None, reason)`` when the job looks gone without a trace (``looks_gone``)
    and ``gone_confirmed`` (``Disappearance``) does not yet say that is evidence:
    the caller keeps the state it had.
    """
    status = seen.status or {}
    folder_state = status.get("state")
    sched = seen.scheduler
    tail = f": {seen.log_tail}" if seen.log_tail else ""

    if folder_state == "done":
        return State.DONE, None
    if folder_state in ("failed", "cancelled"):
        if cancel_requested or folder_state == "cancelled":
            return State.CANCELLED, "cancelled by you" if cancel_requested else status.get("reason")
        if sched and sched.state is State.FAILED and sched.reason:
            return State.FAILED, sched.reason       # the scheduler killed it: its reason is the real one
        if sched and sched.state is State.CANCELLED:
            return State.CANCELLED, sched.reason or status.get("reason")
        if sched and sched.state in (State.QUEUED, State.RUNNING, State.SUBMITTED) and stopped_from_outside(status):
            return State.RUNNING, None              # still being ended: wait for the scheduler to say why
        return State.FAILED, status.get("reason")

    if sched is None:                               # not asked this round: the folder is all we know
        if seen.exit_code is not None:
            return State.FAILED, f"the job script exited with code {seen.exit_code} before the cell finished{tail}"
        return (State.RUNNING, None) if folder_state == "running" else (State.SUBMITTED, None)
    if sched.state in (State.QUEUED, State.RUNNING, State.SUBMITTED):
        return (State.RUNNING, None) if folder_state == "running" else (sched.state, sched.reason)

    # The scheduler says the job ended, or no longer knows it, and the folder holds no ending.
    if cancel_requested or sched.state is State.CANCELLED:
        return State.CANCELLED, sched.reason or "cancelled by you"
    if sched.state is State.FAILED and sched.reason:
        return State.FAILED, sched.reason
    if seen.exit_code is not None:
        return State.FAILED, f"the job script exited with code {seen.exit_code} before the cell finished{tail}"
    reason = f"the job ended without the runner recording a result{tail}"
    return (State.FAILED if gone_confirmed else None), reason


def scheduler_array_state(elements: dict[int, SchedulerState]) -> SchedulerState:
    """One state for an array from its elements' states, keeping them for ``array_status``."""
    states = [said.state for said in elements.values()]
    if any(state is State.RUNNING for state in states):
        state, reason = State.RUNNING, None
    elif any(state in (State.QUEUED, State.SUBMITTED) for state in states):
        waiting = next(said for said in elements.values() if said.state in (State.QUEUED, State.SUBMITTED))
        done_some = any(state is not None and state.is_final for state in states)
        state, reason = (State.RUNNING, None) if done_some else (waiting.state, waiting.reason)
    elif states and all(state is State.DONE for state in states):
        state, reason = State.DONE, None
    elif any(state is State.CANCELLED for state in states):
        state, reason = State.CANCELLED, None
    elif states:
        state, reason = State.FAILED, None
    else:
        state, reason = None, None
    return SchedulerState(state, reason, None, elements)

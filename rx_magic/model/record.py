"""The registry's records: what this machine remembers of a job, and of a hold (one row each)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .states import State


@dataclass(frozen=True)
class JobRecord:
    """One row of the registry: what this machine remembers of a job."""

    id: str
    target: str
    scheduler: str
    workdir: str
    scheduler_id: str = ""
    state: State = State.SUBMITTED
    reason: str = ""
    submitted_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    first_line: str = ""
    pull: tuple[str, ...] = ()
    session: str = ""               # which kernel submitted it (pid@host), to mark others' jobs
    cancel_requested: bool = False
    pulled: bool = False
    elements: int = 0               # a job array's size (``--map``); 0 for a single job

    @property
    def age(self) -> float:
        return time.time() - self.submitted_at


@dataclass(frozen=True)
class HoldRecord:
    """One row of the registry's ``holds`` table: a warm worker inside one batch job (``flow.holds``)."""

    id: str
    target: str
    scheduler: str
    workdir: str
    scheduler_id: str = ""
    resources: str = "{}"           # the Resources held, as JSON (``Resources.to_json``)
    idle: float = 1200.0            # seconds with nothing to run before the worker ends
    name: str = ""
    created: float = field(default_factory=time.time)
    state: str = "queued"           # queued | ready | ended, as last seen
    reason: str = ""                # why it ended: released, idle, walltime, killed (and the words for it)
    ended_at: float | None = None
    session: str = ""

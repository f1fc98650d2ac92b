"""The job record: what this machine remembers of a job (one row of the registry)."""

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

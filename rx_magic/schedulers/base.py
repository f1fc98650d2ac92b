"""The scheduler interface: how a job folder becomes a running job, and what state it is in.

Each scheduler fills the same four hooks: render the job script (pure, no
cluster needed), submit it, read many jobs' states in one query, cancel.
Every one works over every transport.
"""

from __future__ import annotations

import abc
import shlex
from dataclasses import dataclass

from ..errors import ConfigError
from ..model.resources import Resources
from ..model.states import SchedulerState
from ..transport import Transport


@dataclass(frozen=True)
class JobScript:
    """What a job script needs to know; every path is on the submit host."""

    job_id: str
    folder: str
    runner: str
    python: str = "python3"
    setup: tuple[str, ...] = ()
    resources: Resources = Resources()
    cwd: str = ""                   # where the cell runs; the job folder when empty
    elements: int = 0               # a job array's size (``--map``); 0 for a single job

    @property
    def elements_dir(self) -> str:
        return f"{self.folder}/elements"

    @property
    def job_sh(self) -> str:
        return f"{self.folder}/job.sh"

    @property
    def scheduler_log(self) -> str:
        return f"{self.folder}/scheduler.log"

    @property
    def scheduler_err(self) -> str:
        """Where a batch system that keeps them apart writes the job script's stderr."""
        return f"{self.folder}/scheduler.err"


def render_body(script: JobScript, element: str | None = None, pool: bool = False) -> str:
    """The part of every job script after the scheduler's directives.

    For one element of a job array, ``element`` is the shell expression of its
    index (the batch system's variable) and the runner runs that element; with
    ``pool`` the runner itself runs every element, as many at a time as there are cores.
    """
    q = shlex.quote
    lines = ["umask 077", f"cd {q(script.cwd or script.folder)} || exit 96", *script.setup]
    runner = f"exec {q(script.python)} {q(script.runner)} {q(script.folder)}"
    exit_code = q(script.folder + "/exit_code")
    if element is not None:
        lines += [f"element={element}", f"mkdir -p {q(script.elements_dir)}/\"$element\""]
        runner += ' "$element"'
        exit_code = f'{q(script.elements_dir)}/"$element"/exit_code'
    elif pool:
        runner += " --pool"
    lines += [
        # if the interpreter cannot start, record why before the shell exits
        "shopt -s execfail",
        runner,
        "code=$?",
        f"printf '%s\\n' \"$code\" > {exit_code}",
        "exit \"$code\"",
    ]
    return "\n".join(lines) + "\n"


def expand_indices(text: str) -> list[int]:
    """Slurm's and PBS's index lists: ``"5-19"``, ``"1,3,5-7"``, ``"0-9:2"``, ``"2-19%4"``."""
    indices: list[int] = []
    for part in text.split("%")[0].split(","):
        part = part.strip()
        if not part:
            continue
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        if not first.isdigit() or (last and not last.isdigit()) or (step and not step.isdigit()):
            continue
        indices.extend(range(int(first), int(last or first) + 1, int(step or 1) or 1))
    return indices


class Scheduler(abc.ABC):
    """One batch system (or none): render, submit, query, cancel."""

    name: str = ""
    #: Whether the batch system itself enforces walltime and memory; if not, the runner does.
    enforces_limits: bool = False
    #: Site profiles this scheduler knows, chosen by a target's ``profile`` key (e.g. "gadi" for PBS).
    profiles: tuple[str, ...] = ()

    def __init__(self, profile: str | None = None):
        if profile is not None and profile not in self.profiles:
            known = f"choose one of {', '.join(self.profiles)}" if self.profiles else "remove the profile key"
            raise ConfigError(f"the {self.name} scheduler has no profile {profile!r}: {known}")
        self.profile = profile

    def check_request(self, resources: Resources) -> None:
        """Refuse, before anything is written, a request the batch system would reject; by default nothing.

        Raises ``ResourceError`` saying what to change.
        """

    @abc.abstractmethod
    def render(self, script: JobScript) -> str:
        """The job script, as text; pure."""

    @abc.abstractmethod
    def submit(self, transport: Transport, script: JobScript) -> str:
        """Submit the already-written ``job.sh``; return the scheduler's job id."""

    @abc.abstractmethod
    def query(self, transport: Transport, jobs: dict[str, str]) -> dict[str, SchedulerState]:
        """States of many jobs in one query; ``jobs`` maps scheduler id to job folder.

        A job the scheduler no longer knows maps to ``SchedulerState(None)``.
        """

    @abc.abstractmethod
    def cancel(self, transport: Transport, scheduler_id: str, folder: str) -> None:
        """Stop a job; cancelling one that already ended is not an error."""

"""The scheduler interface: how a job folder becomes a running job, and what state it is in.

Each scheduler fills the same four hooks: render the job script (pure, no
cluster needed), submit it, read many jobs' states in one query, cancel.
Every one works over every transport.
"""

from __future__ import annotations

import abc
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError, SchedulerError, TransportError
from ..model.resources import Resources
from ..model.states import SchedulerState
from ..runtime import layout
from ..transport import CommandResult, Transport


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
        return posixpath.join(self.folder, layout.ELEMENTS)

    @property
    def job_sh(self) -> str:
        return posixpath.join(self.folder, layout.JOB_SH)

    @property
    def scheduler_log(self) -> str:
        return posixpath.join(self.folder, layout.SCHEDULER_LOG)

    @property
    def scheduler_err(self) -> str:
        """Where a batch system that keeps them apart writes the job script's stderr."""
        return posixpath.join(self.folder, layout.SCHEDULER_ERR)


def shell_path(path: str) -> str:
    """``path`` as one shell word that bash on the target reads back as that path: quoted (``shlex.quote``), but
    a leading ``~`` (a workdir not yet expanded: ``--dry-run`` before connecting) left to the shell as ``"$HOME"``,
    which, unlike a quoted ``~``, it expands."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + shlex.quote(path[1:]) if path != "~" else '"$HOME"'
    return shlex.quote(path)


def render_body(script: JobScript, element: str | None = None, pool: bool = False) -> str:
    """The part of every job script after the scheduler's directives.

    For one element of a job array, ``element`` is the shell expression of its
    index (the batch system's variable) and the runner runs that element; with
    ``pool`` the runner itself runs every element, as many at a time as there are cores.
    """
    q = shell_path
    lines = ["umask 077", f"cd {q(script.cwd or script.folder)} || exit 96", *script.setup]
    runner = f"exec {q(script.python)} {q(script.runner)} {q(script.folder)}"
    exit_code = q(posixpath.join(script.folder, layout.EXIT_CODE))
    if element is not None:
        lines += [f"element={element}", f"mkdir -p {q(script.elements_dir)}/\"$element\""]
        runner += ' "$element"'
        exit_code = f'{q(script.elements_dir)}/"$element"/{q(layout.EXIT_CODE)}'
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

    #: Whether ``--map`` runs all its elements inside one job (the runner's pool) rather than as a
    #: scheduler array; a site profile may change the default, a target's ``map_in_one_job`` overrides it.
    map_in_one_job: bool = False
    #: Whether its commands run through ``command`` (a login shell, or the target's ``scheduler_path``).
    login_shell_commands: bool = False

    def __init__(self, profile: str | None = None):
        if profile is not None and profile not in self.profiles:
            known = f"choose one of {', '.join(self.profiles)}" if self.profiles else "remove the profile key"
            raise ConfigError(f"the {self.name} scheduler has no profile {profile!r}: {known}")
        self.profile = profile
        self.command_path: str | None = None
        self.defaults = Resources()

    def configure(self, *, command_path: str | None = None, map_in_one_job: bool | None = None,
                  defaults: Resources | None = None) -> None:
        """A target's own settings: the folder its scheduler commands are in, how ``--map`` runs, and its
        default resources (so that what the user asked for on the magic line can be told from them)."""
        self.command_path = command_path
        if map_in_one_job is not None:
            self.map_in_one_job = map_in_one_job
        if defaults is not None:
            self.defaults = defaults

    def command(self, argv: Sequence[str]) -> list[str]:
        """How to run one scheduler command on the submit host: as the user's login shell finds it.

        Batch systems put their commands on PATH in login profiles (``/etc/profile.d``, modules), which a
        plain ``ssh host qsub`` may not read; with a configured ``command_path`` the command runs from there.
        """
        if self.command_path:
            return ["bash", "-c", "exec " + shlex.join([posixpath.join(self.command_path, argv[0]), *argv[1:]])]
        return ["bash", "-lc", "exec " + shlex.join(argv)]

    def run_command(self, transport: Transport, argv: Sequence[str], timeout: float = 120) -> CommandResult:
        """Run a scheduler command (see ``command``); raises ``SchedulerError`` naming it and the PATH
        searched when it is not found."""
        result = transport.run(self.command(argv), check=False, timeout=timeout)
        # the shell's own words (bash, dash, sh) for a command it could not find or run, naming it
        if result.returncode in (126, 127) and re.search(
                rf"{re.escape(posixpath.basename(argv[0]))}: (?:command )?not found|"
                rf"{re.escape(posixpath.basename(argv[0]))}: (?:No such file or directory|Permission denied)",
                result.stderr):
            raise SchedulerError(self._not_found(transport, argv[0], result))
        return result

    def _not_found(self, transport: Transport, name: str, result: CommandResult) -> str:
        if self.command_path:
            where = f"{posixpath.join(self.command_path, name)} (the target's scheduler_path)"
            fix = "set scheduler_path in the target's configuration to the folder that holds it"
        else:
            try:
                path = transport.run(["bash", "-lc", 'printf %s "$PATH"'], check=False, timeout=60).stdout.strip()
            except TransportError:      # the message is about the missing command; the PATH is a detail
                path = "(could not be read)"
            where = f"the login shell's PATH: {path or '(empty)'}"
            fix = ("set scheduler_path in the target's configuration to the folder that holds it, or add that "
                   "folder to PATH in ~/.bash_profile there")
        return (f"{name} was not found on {transport.description} for the {self.name} scheduler; searched "
                f"{where}. {fix}:\n{result.tail(3)}")

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

    def end_notice(self, transport: Transport, scheduler_id: str, folder: str) -> int | None:
        """A file descriptor that becomes readable when the job's process ends, or None where there is none.

        Only a job running as a process of the submit host has one (the direct scheduler: a pidfd on this
        machine, a session watching the process over SSH, ``Transport.end_notice``); the caller closes it.
        """
        return None

    @abc.abstractmethod
    def cancel(self, transport: Transport, scheduler_id: str, folder: str) -> None:
        """Stop a job; cancelling one that already ended is not an error."""

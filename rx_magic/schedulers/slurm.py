"""The Slurm scheduler: ``sbatch``, one ``sacct`` (or ``squeue``) per round for every job, ``scancel``.

Job states are read with ``sacct``, which remembers ended jobs; on clusters
without accounting storage it refuses, and ``squeue --states=all`` answers
instead, for as long as slurmctld keeps ended jobs (``MinJobAge``). A job
neither knows is left to its folder to decide.
"""

from __future__ import annotations

import json
import re
import shlex

from ..errors import ResourceError, SchedulerError
from ..model.resources import Resources, format_size_human, format_walltime, parse_walltime
from ..model.states import SchedulerState, State, scheduler_array_state
from ..transport import CommandResult, Transport
from . import setonix
from .base import JobScript, Scheduler, expand_indices, render_body

QUEUED, RUNNING, DONE, FAILED, CANCELLED = State.QUEUED, State.RUNNING, State.DONE, State.FAILED, State.CANCELLED

#: Slurm's job states (sacct and squeue spell them alike) -> our state and, when worth saying, a reason.
#: "{reason}" is Slurm's own pending reason; "{mem}" and "{time}" are what the job asked for.
STATES: dict[str, tuple[State, str | None]] = {
    "PENDING": (QUEUED, "{reason}"),
    "REQUEUED": (QUEUED, "requeued"),
    "REQUEUE_FED": (QUEUED, "requeued"),
    "REQUEUE_HOLD": (QUEUED, "held"),
    "SPECIAL_EXIT": (QUEUED, "held"),
    "RESV_DEL_HOLD": (QUEUED, "held"),
    "SUSPENDED": (QUEUED, "held"),
    "CONFIGURING": (QUEUED, "starting"),
    "RUNNING": (RUNNING, None),
    "COMPLETING": (RUNNING, None),
    "RESIZING": (RUNNING, None),
    "SIGNALING": (RUNNING, None),
    "STAGE_OUT": (RUNNING, None),
    "STOPPED": (RUNNING, None),
    "COMPLETED": (DONE, None),
    "FAILED": (FAILED, None),               # the job script's own exit code; the folder says why
    "NODE_FAIL": (FAILED, "the node failed"),
    "BOOT_FAIL": (FAILED, "the node failed to boot"),
    "PREEMPTED": (FAILED, "preempted by another job"),
    "OUT_OF_MEMORY": (FAILED, "out of memory{mem}"),
    "TIMEOUT": (FAILED, "walltime exceeded{time}"),
    "DEADLINE": (FAILED, "deadline reached"),
    "CANCELLED": (CANCELLED, "cancelled{by}"),
    "REVOKED": (CANCELLED, "revoked by another cluster of the federation"),
}

#: Pending reasons people can act on, said plainly; others are shown as Slurm names them.
PENDING_REASONS = {
    "None": None, "Resources": "waiting for resources", "Priority": "waiting for higher-priority jobs",
    "JobHeldUser": "held", "JobHeldAdmin": "held by an administrator", "BeginTime": "waiting for its start time",
    "Dependency": "waiting for a dependency",
}

#: Where accounting storage is off, sacct says so on stderr and exits non-zero.
ACCOUNTING_OFF = re.compile(r"accounting storage is disabled", re.IGNORECASE)
#: What scancel and squeue say of a job that ended or was forgotten: not an error.
ENDED_OR_UNKNOWN = re.compile(r"already completing or completed|invalid job id", re.IGNORECASE)
#: slurmstepd's words when jobacct_gather's OverMemoryKill ends a job, which Slurm then records as FAILED.
MEMORY_KILL = re.compile(r"exceeded (job )?memory limit|oom-kill event", re.IGNORECASE)

#: The job's stderr file, beside scheduler.log; slurmstepd writes its own complaints there too.
ERROR_LOG = "scheduler.err"
SACCT_FIELDS = "JobID,State,ExitCode,ReqMem,Timelimit,Reason"
SQUEUE_FORMAT = "%i|%T|%r|%l|%m"

# What a #SBATCH line carries without quoting; other paths go on the sbatch command line.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+,=@:~-]+", re.ASCII)
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?", re.ASCII)
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGTP]?)([nc]?)", re.ASCII)


def format_memory(nbytes: int) -> str:
    """``--mem`` as Slurm reads it: whole gigabytes as "8G", else megabytes, rounded up: "1536M"."""
    if nbytes % 2**30 == 0:
        return f"{nbytes // 2**30}G"
    return f"{-(-nbytes // 2**20)}M"


def format_time(seconds: int) -> str:
    """``--time`` as Slurm reads it: "HH:MM:SS", or "D-HH:MM:SS" from a day on."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def _log_name(path: str) -> str:
    # sbatch expands %j and friends in --output/--error; a backslash turns that off altogether
    return path if "\\" in path else path.replace("%", "%%")


class SlurmScheduler(Scheduler):
    """Slurm (``sbatch``/``sacct``/``scancel``); ``profile="setonix"`` adds Pawsey Setonix's partition rules,
    its ``-gpu`` accounts and GPU allocation packs, and the cost of a job."""

    name = "slurm"
    enforces_limits = True
    profiles = ("setonix",)

    def __init__(self, profile: str | None = None) -> None:
        super().__init__(profile)
        self._accounting = True     # until sacct says otherwise

    # ------------------------------------------------------------------------- render and submit

    @staticmethod
    def _folder_options(script: JobScript) -> list[str]:
        if script.elements:     # each element's own logs, by its index (%a)
            logs = _log_name(script.elements_dir)
            return [f"--chdir={script.folder}", f"--output={logs}/%a.log", f"--error={logs}/%a.err"]
        return [f"--chdir={script.folder}", f"--output={_log_name(script.scheduler_log)}",
                f"--error={_log_name(script.folder + '/' + ERROR_LOG)}"]

    @staticmethod
    def _folder_is_plain(script: JobScript) -> bool:
        # Slurm reads a leading ~ as a folder's name: such a path (a --dry-run not connected) stays off the script
        return bool(_PLAIN_PATH.fullmatch(script.folder)) and not script.folder.startswith("~")

    def render(self, script: JobScript) -> str:
        r = script.resources
        options = [f"--job-name={r.name or script.job_id}"]
        if script.elements:
            options.append(f"--array=0-{script.elements - 1}")
        if self._folder_is_plain(script):
            options += self._folder_options(script)
        if r.queue:
            options.append(f"--partition={r.queue}")
        if self.profile == "setonix":
            options += self._setonix_options(r)
        else:
            if r.project:
                options.append(f"--account={r.project}")
            if r.ncpus:
                options.append(f"--cpus-per-task={r.ncpus}")
            if r.mem:
                options.append(f"--mem={format_memory(r.mem)}")
            if r.ngpus:
                options.append(f"--gres=gpu:{r.ngpus}")
            if r.jobfs:
                options.append(f"--tmp={format_memory(r.jobfs)}")
        if r.walltime:
            options.append(f"--time={format_time(r.walltime)}")
        options += [extra.removeprefix("#SBATCH").strip() for extra in r.extra]
        profile = f", profile {self.profile}" if self.profile else ""
        cost = setonix.estimate_cost(r) if self.profile == "setonix" else None
        lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options),
                 f"# rx_magic job {script.job_id} (slurm{profile})", *([f"# Setonix cost {cost}"] if cost else [])]
        element = "$SLURM_ARRAY_TASK_ID" if script.elements else None
        return "\n".join(lines) + "\n" + render_body(script, element)

    @staticmethod
    def _setonix_options(r: Resources) -> list[str]:
        """Setonix's lines for the resource options: the ``-gpu`` account on GPU partitions, and there whole
        allocation packs (``--gres=gpu:N`` a node, ``--exclusive`` for whole nodes) instead of cores and memory."""
        options = []
        account = setonix.account(r.queue, r.project)
        if account:
            options.append(f"--account={account}")
        if (r.queue or setonix.DEFAULT_PARTITION) not in setonix.GPU_PARTITIONS:
            if r.ncpus:
                options.append(f"--cpus-per-task={r.ncpus}")
            if r.mem:
                options.append(f"--mem={format_memory(r.mem)}")
            if r.jobfs:
                options.append(f"--tmp={format_memory(r.jobfs)}")
            return options
        # Pawsey's GPU nodes: cores and memory come with the packs, so neither is asked for ([RJ] in setonix.py)
        nodes, packs = setonix.gpu_nodes(r), r.ngpus or 1
        options.append(f"--nodes={nodes}")
        whole = setonix.is_exclusive(r) or packs >= 8
        tmp = f",tmp:{-(-r.jobfs // 2**30)}G" if r.jobfs else ""
        if not whole or tmp:
            options.append(f"--gres=gpu:{min(packs, 8) if not whole else 8}{tmp}")
        if whole and not setonix.is_exclusive(r):
            options.append("--exclusive")
        return options

    def check_request(self, resources: Resources) -> None:
        if self.profile == "setonix":
            problems = setonix.check_request(resources)
            if problems:
                raise ResourceError("the request breaks Setonix's partition rules (the target has profile = "
                                    "\"setonix\"):\n" + "\n".join(f"  - {problem}" for problem in problems))

    def submit(self, transport: Transport, script: JobScript) -> str:
        argv = ["sbatch", "--parsable"]
        if not self._folder_is_plain(script):
            argv += self._folder_options(script)
        result = self.run_command(transport, [*argv, script.job_sh], timeout=60)
        lines = result.stdout.strip().splitlines()
        scheduler_id = lines[-1].split(";")[0].strip() if lines else ""
        if result.returncode != 0 or not _JOB_ID.fullmatch(scheduler_id):
            said = (result.stderr.strip() or result.stdout.strip() or "no message")
            raise SchedulerError(f"sbatch refused job {script.job_id} on {transport.description} "
                                 f"(exit code {result.returncode}):\n{said}")
        return scheduler_id

    # ------------------------------------------------------------------------- query

    def query(self, transport: Transport, jobs: dict[str, str]) -> dict[str, SchedulerState]:
        if not jobs:
            return {}
        found: dict[str, SchedulerState] = {}
        if self._accounting:
            result = self.run_command(transport, ["sacct", "-X", "--parsable2", "--noheader",
                                                  f"--format={SACCT_FIELDS}", "-j", ",".join(jobs)], timeout=60)
            if result.returncode == 0:
                found = self._parse(result.stdout, transport, jobs)
            elif ACCOUNTING_OFF.search(result.stderr):
                self._accounting = False
        # squeue for the jobs sacct has not heard of (yet) or all of them where there is no accounting
        missing = [job for job in jobs if job not in found]
        if missing:
            result = self.run_command(transport, ["squeue", "--noheader", "--states=all",
                                                  f"--format={SQUEUE_FORMAT}", "--jobs", ",".join(missing)], timeout=60)
            if result.returncode == 0:
                found.update(self._parse(result.stdout, transport, jobs))
            elif not ENDED_OR_UNKNOWN.search(result.stderr):
                raise SchedulerError(_failed("squeue", transport, result))
        return {job: found.get(job, SchedulerState(None)) for job in jobs}

    def _parse(self, text: str, transport: Transport, jobs: dict[str, str]) -> dict[str, SchedulerState]:
        states: dict[str, SchedulerState] = {}
        elements: dict[str, dict[int, SchedulerState]] = {}
        for line in text.splitlines():
            fields = line.strip().split("|")
            if len(fields) < 5:
                continue
            array_id, _, index = fields[0].partition("_")
            if index and array_id in jobs:      # an array's element ("123_4"), or its pending ones ("123_[5-19]")
                said = self._state(*self._fields(fields), transport, jobs[array_id],
                                   error_log=f"{jobs[array_id]}/elements/{index}.err")
                for number in ([int(index)] if index.isdigit() else expand_indices(index.strip("[]"))):
                    elements.setdefault(array_id, {})[number] = said
                continue
            if fields[0] not in jobs:
                continue
            if len(fields) == 6:                           # sacct: JobID State ExitCode ReqMem Timelimit Reason
                job, state, exit_code, memory, limit, reason = fields
            else:                                          # squeue: JobID State Reason TimeLimit MinMemory
                job, state, reason, limit, memory = fields[:5]
                exit_code = ""
            # the last line wins: a requeued job is listed once per start
            states[job] = self._state(state, reason, exit_code, memory, limit, transport, jobs[job])
        for array_id, by_index in elements.items():
            states[array_id] = scheduler_array_state(by_index)
        return states

    @staticmethod
    def _fields(fields: list[str]) -> tuple[str, str, str, str, str]:
        """(state, reason, exit code, memory, time limit) from a sacct or an squeue line."""
        if len(fields) == 6:
            _, state, exit_code, memory, limit, reason = fields
        else:
            _, state, reason, limit, memory = fields[:5]
            exit_code = ""
        return state, reason, exit_code, memory, limit

    def _state(self, slurm_state: str, reason: str, exit_code: str, memory: str, limit: str,
               transport: Transport, folder: str, error_log: str | None = None) -> SchedulerState:
        name, _, by = slurm_state.partition(" by ")      # sacct: "CANCELLED by 1234"
        name = name.rstrip("+")
        code = _exit_code(exit_code)
        if name == "FAILED" and _killed_for_memory(transport, error_log or f"{folder}/{ERROR_LOG}"):
            name = "OUT_OF_MEMORY"
        state, template = STATES.get(name, (RUNNING, name.lower() or None))
        if template is None:
            return SchedulerState(state, None, code)
        if name == "OUT_OF_MEMORY" and not _describe_memory(memory):
            memory = _asked_memory(transport, folder)      # slurmdbd may not have the job's request yet
        text = template.format(
            reason=PENDING_REASONS.get(reason, reason) or "",
            mem=f" ({_describe_memory(memory)})" if _describe_memory(memory) else "",
            time=f" ({_describe_limit(limit)})" if _describe_limit(limit) else "",
            by=f" by uid {by.strip()}" if by.strip() else "")
        return SchedulerState(state, text or None, code)

    # ------------------------------------------------------------------------- cancel

    def cancel(self, transport: Transport, scheduler_id: str, folder: str) -> None:
        if not _JOB_ID.fullmatch(scheduler_id or ""):
            return
        result = self.run_command(transport, ["scancel", scheduler_id], timeout=60)
        if result.returncode != 0 and not ENDED_OR_UNKNOWN.search(result.stderr):
            raise SchedulerError(_failed("scancel", transport, result))


def _failed(command: str, transport: Transport, result: CommandResult) -> str:
    return (f"{command} failed on {transport.description} (exit code {result.returncode}): "
            f"{result.tail() or 'no message'}; the command was {shlex.join(result.argv)}")


def _exit_code(text: str) -> int | None:
    code, _, signal = text.partition(":")          # sacct: "1:0", or "0:9" for killed by signal 9
    if not code.isdigit():
        return None
    return 128 + int(signal) if signal.isdigit() and int(signal) else int(code)


def _killed_for_memory(transport: Transport, error_log: str) -> bool:
    # Without cgroups, OverMemoryKill ends a job as FAILED (signal 9); only slurmstepd's message,
    # in the job's error file, says it was for memory. Read once, when the job has ended.
    try:
        tail = transport.read_bytes(error_log)[-4096:].decode(errors="replace")
    except (FileNotFoundError, OSError):
        return False
    return bool(MEMORY_KILL.search(tail))


def _asked_memory(transport: Transport, folder: str) -> str:
    """The memory the cell asked for, from its job.json, in Slurm's "100M" form; "" when it asked none."""
    try:
        mem = json.loads(transport.read_bytes(f"{folder}/job.json"))["resources"]["mem"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return format_memory(mem) if isinstance(mem, int) else ""


def _describe_memory(text: str) -> str:
    match = _MEMORY.fullmatch(text.strip())
    if not match or not float(match[1]):
        return ""
    nbytes = int(float(match[1]) * 1024 ** ("KMGTP".index(match[2] or "M") + 1))
    return format_size_human(nbytes) + (" per CPU" if match[3] == "c" else "")


def _describe_limit(text: str) -> str:
    try:
        return format_walltime(parse_walltime(text.strip()))
    except ResourceError:
        return ""                                   # UNLIMITED, Partition_Limit, or empty

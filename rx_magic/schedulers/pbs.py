"""PBS Pro, as on NCI Gadi: a ``#PBS`` script, ``qsub``, one ``qstat`` for many jobs, ``qdel``.

Works over both transports: a laptop submitting over SSH, or a notebook on the
cluster itself. Polling asks ``qstat -x -f -F json`` for all ids at once;
where that is refused (older PBS, Torque, Slurm's Torque-compatible commands)
it falls back to ``qstat -f`` text and then plain ``qstat``, and remembers
the form that worked, so each round costs one command.

A target with ``profile = "gadi"`` also gets Gadi's own resources (``-l wd``,
``-l storage`` derived from the paths the job uses) and has its request
checked against Gadi's queue rules (``gadi.py``) before anything is sent.
"""

from __future__ import annotations

import json
import re
import shlex
import signal

from ..errors import ConfigError, ResourceError, SchedulerError
from ..model.resources import Resources, format_size, format_walltime
from ..model.states import SchedulerState, State, scheduler_array_state
from ..runtime.layout import is_job_id
from ..transport import CommandResult, Transport
from . import gadi
from .base import JobScript, Scheduler, render_body

#: PBS shows (and Gadi keeps) at most this many characters of a job name.
NAME_LIMIT = 15

# A path in a #PBS line is read up to whitespace, may be split at quotes, ':' separates host:path and
# Slurm's qsub expands '%': a path with anything outside this set goes on the qsub command line only.
_BARE_PATH = re.compile(r"/[A-Za-z0-9_./+=@~-]*", re.ASCII)
_BARE_WORD = re.compile(r"[A-Za-z0-9_.+-]+", re.ASCII)
_JOB_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]", re.ASCII)
# Gadi's project folders: /scratch/ab12/... and /g/data/ab12/... need -l storage=scratch/ab12+gdata/ab12.
_GADI_STORAGE_PATH = re.compile(r"(?<![\w/])/(scratch|g/data)/([A-Za-z0-9_]+)(?![\w])", re.ASCII)
_SUBMITTED_ID = re.compile(r"\d+(?:\[\d*\])?(?:\.[A-Za-z0-9_.-]+)?", re.ASCII)

#: What qsub's or qstat's complaint looks like when it does not know an option (the form is refused).
_REFUSED = re.compile(r"usage|invalid option|unknown option|illegal option|unrecognized option|"
                      r"not supported|conflicting options", re.IGNORECASE)
#: What qstat and qdel say of a job id they do not (or no longer) know.
_UNKNOWN_JOB = re.compile(r"Unknown Job Id|Job has finished|Invalid job id", re.IGNORECASE)
#: What qdel says when there is nothing left to stop.
_NOTHING_TO_CANCEL = re.compile(r"Unknown Job Id|Job has finished|already (?:finished|completing|completed|done)|"
                                r"Request invalid for state of job|Invalid job id", re.IGNORECASE)

#: What qstat says to -x on a server that keeps no job history (PBS's default); it still exits 0.
_NO_HISTORY = re.compile(r"not configured to maintain job history", re.IGNORECASE)
#: What qstat without -x says of a finished job on a server that keeps history.
_HAS_FINISHED = re.compile(r"Job has finished, use -x", re.IGNORECASE)
#: How many times ``tracejob`` is asked about one job that qstat no longer shows.
TRACE_TRIES = 3

_ENDED = "ended"
#: PBS ``job_state`` letters: our state and the reason a person reads. ``ended``: Exit_status decides.
JOB_STATES: dict[str, tuple[State | str, str | None]] = {
    "Q": (State.QUEUED, None),
    "H": (State.QUEUED, "held"),
    "W": (State.QUEUED, "waiting for its start time"),
    "T": (State.QUEUED, "being moved to an execution queue"),
    "M": (State.QUEUED, "moved to another server"),
    "S": (State.QUEUED, "suspended"),
    "U": (State.QUEUED, "suspended"),       # PBS: suspended while its workstation is busy
    "R": (State.RUNNING, None),
    "E": (State.RUNNING, None),             # exiting: the script has ended, PBS is cleaning up
    "B": (State.RUNNING, None),             # an array job whose subjobs have begun
    "F": (_ENDED, None),
    "X": (_ENDED, None),                    # a finished subjob of an array
    "C": (_ENDED, None),                    # Torque's (and Slurm's qstat's) completed
}

#: ``Exit_status`` values that mean PBS itself ended the job (PBS Pro's JOB_EXEC_* codes, and kills).
#: Other values: 1-255 the script's own exit code (the job folder says why), 256+N killed by signal N.
EXIT_REASONS: dict[int, str] = {
    -1: "PBS could not start the job",
    -2: "PBS could not start the job",
    -3: "PBS could not start the job (it may be retried)",
    -10: "PBS could not start the job: your user or group is not valid on the node",
    -24: "used more cpus than it asked for",
    -25: "used more cpus than it asked for",
    -26: "out of virtual memory{mem}",
    -27: "out of memory{mem}",
    -28: "cpu time exceeded",
    -29: "walltime exceeded{walltime}",
    265: "killed",
}


class PBSScheduler(Scheduler):
    """PBS Pro (``qsub``/``qstat``/``qdel``); ``profile="gadi"`` adds Gadi's resources and queue rules."""

    name = "pbs"
    enforces_limits = True
    login_shell_commands = True
    profiles = ("gadi",)

    #: The qstat forms to ask, best first; ``query`` moves down when one is refused and stays there.
    QUERY_FORMS: tuple[tuple[str, ...], ...] = (("qstat", "-x", "-f", "-F", "json"), ("qstat", "-f"), ("qstat",))

    def __init__(self, profile: str | None = None):
        super().__init__(profile)
        self._query_form = 0
        self._history = True            # until qstat -x says the server keeps no job history
        self._traces: dict[str, SchedulerState] = {}
        self._trace_tries: dict[str, int] = {}
        if profile == "gadi":
            # NCI limits job arrays hard (its previous system allowed 10 subjobs and advised against arrays
            # altogether): on Gadi a --map runs inside one job, its elements spread over the job's cores
            self.map_in_one_job = True

    # -- rendering (pure) ---------------------------------------------------------------------------------

    def render(self, script: JobScript) -> str:
        resources = script.resources
        pooled = self._pooled(script)
        directives = self._directives(script, pooled)
        profile = f", profile {self.profile}" if self.profile else ""
        # PBS Pro numbers a subjob PBS_ARRAY_INDEX (Torque: PBS_ARRAYID; Slurm's qsub: SLURM_ARRAY_TASK_ID)
        element = (None if not script.elements or pooled else "0" if script.elements == 1
                   else '"${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-$SLURM_ARRAY_TASK_ID}}"')
        body = render_body(script, element, pool=pooled)
        if pooled:      # the job's cores are shared out one per element: see the runner's Pool
            body = f"export RX_MAGIC_POOL_CORES={resources.ncpus or 1}\n" + body
        cost = gadi.estimate_cost(resources) if self.profile == "gadi" else None
        return ("#!/bin/bash\n" + "".join(f"#PBS {line}\n" for line in directives)
                + f"# rx_magic job {script.job_id} (pbs{profile}{', elements in one job' if pooled else ''})\n"
                + (f"# Gadi cost {cost}\n" if cost else "") + body)

    def _directives(self, script: JobScript, pooled: bool) -> list[str]:
        """The ``#PBS`` lines, each setting written once: PBS takes the first of two, so of two lines
        setting the same thing only the one that should win is written. What wins, strongest first: the
        user's ``--extra``, the user's resource options, the target's ``extra``, the target's default
        resources, rx_magic's own lines (``-N``, ``-j``, ``-l wd``, ``-l storage``, ``-o``/``-e``, ``-J``)."""
        resources = script.resources
        target_extra, user_extra = self._split_extra(resources.extra)
        typed = self._typed(resources)
        options = [(USER_OPTION if key in typed else TARGET_DEFAULT, frozenset({key}), line)
                   for key, line in self._option_lines(resources)]
        ranked: list[tuple[int, frozenset, str]] = options[:1] if resources.name else [
            (OWN, frozenset({"-N"}), f"-N {job_name(script)}")]
        if script.elements > 1 and not pooled:   # PBS Pro takes no array of one: that one runs as a plain job
            # PBS Pro refuses an array that is not rerunnable ("-r y")
            ranked += [(OWN, frozenset({"-J"}), f"-J 0-{script.elements - 1}"), (OWN, frozenset({"-r"}), "-r y")]
        ranked += options[1:] if resources.name else options
        if self.profile == "gadi":
            ranked.append((OWN, frozenset({"wd"}), "-l wd"))
        storage = self.storage(script)
        if storage:
            ranked.append((OWN, frozenset({"storage"}), f"-l storage={storage}"))
        ranked.append((OWN, frozenset({"-j"}), "-j n"))
        out, err = self.output_paths(script)
        if _BARE_PATH.fullmatch(out) and _BARE_PATH.fullmatch(err):
            # else only on the qsub command line (submit)
            ranked += [(OWN, frozenset({"-o"}), f"-o {out}"), (OWN, frozenset({"-e"}), f"-e {err}")]
        ranked += [(TARGET_EXTRA, keys, line) for keys, line in _effective_extras(target_extra)]
        ranked += [(USER_EXTRA, keys, line) for keys, line in _effective_extras(user_extra)]
        strongest: dict[str, int] = {}
        for rank, keys, _line in ranked:
            for key in _clashing(keys):
                strongest[key] = max(strongest.get(key, rank), rank)
        return [line for rank, keys, line in ranked if all(strongest[key] <= rank for key in _clashing(keys))]

    def _split_extra(self, extra: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The target's ``extra`` (its defaults come first in a request) and the user's ``--extra``."""
        given = self.defaults.extra
        if given and extra[:len(given)] == given:
            return given, extra[len(given):]
        return (), extra

    def _typed(self, resources: Resources) -> set[str]:
        """The settings the user asked for on the magic line: those that differ from the target's defaults."""
        fields = {"-P": "project", "-q": "queue", "ncpus": "ncpus", "mem": "mem", "walltime": "walltime",
                  "jobfs": "jobfs", "ngpus": "ngpus", "-N": "name"}
        return {key for key, name in fields.items()
                if getattr(resources, name) is not None and getattr(resources, name) != getattr(self.defaults, name)}

    def _pooled(self, script: JobScript) -> bool:
        """Whether a ``--map`` of more than one element runs inside one job instead of as a PBS array."""
        return script.elements > 1 and self.map_in_one_job

    @staticmethod
    def _option_lines(resources: Resources) -> list[tuple[str, str]]:
        """rx_magic's lines for the resource options (--project, --queue, --ncpus, ...), by what each sets."""
        lines = []
        if resources.project:
            lines.append(("-P", f"-P {_bare_word(resources.project, '--project')}"))
        if resources.queue:
            lines.append(("-q", f"-q {_bare_word(resources.queue, '--queue')}"))
        if resources.ncpus is not None:
            lines.append(("ncpus", f"-l ncpus={resources.ncpus}"))
        if resources.mem is not None:
            lines.append(("mem", f"-l mem={format_size(resources.mem)}"))
        if resources.walltime is not None:
            lines.append(("walltime", f"-l walltime={pbs_walltime(resources.walltime)}"))
        if resources.jobfs is not None:
            lines.append(("jobfs", f"-l jobfs={format_size(resources.jobfs)}"))
        if resources.ngpus:
            lines.append(("ngpus", f"-l ngpus={resources.ngpus}"))
        if resources.name:
            lines.insert(0, ("-N", f"-N {job_name_of(resources.name)}"))
        return lines

    def output_paths(self, script: JobScript) -> tuple[str, str]:
        """Where PBS writes the job script's stdout (and Gadi its resource summary) and stderr: the job folder."""
        if any(char in script.folder for char in ":\n\r\0"):
            raise ConfigError(
                f"the job folder {script.folder!r} holds ':' or a line break, which PBS cannot take in -o/-e "
                "(it reads 'host:path'): choose a workdir without them in the target's configuration")
        if script.elements > 1 and not self._pooled(script):   # PBS Pro puts each subjob's index for ^array_index^
            return (f"{script.elements_dir}/^array_index^.log", f"{script.elements_dir}/^array_index^.err")
        return script.scheduler_log, script.scheduler_err

    def storage(self, script: JobScript) -> str | None:
        """``-l storage``: what was asked for, plus (profile gadi) the project folders the job's own paths need."""
        asked = script.resources.storage.split("+") if script.resources.storage else []
        needed: set[str] = set()
        if self.profile == "gadi":
            for text in (script.folder, script.cwd, script.runner, script.python, *script.setup):
                for filesystem, project in _GADI_STORAGE_PATH.findall(text):
                    needed.add(f"{'gdata' if filesystem == 'g/data' else 'scratch'}/{project}")
        # a folder the job cannot see is a job that cannot start, so what it needs is added to what was asked
        return "+".join(asked + sorted(needed - set(asked))) or None

    # -- checking and submitting --------------------------------------------------------------------------

    def check_request(self, resources: Resources) -> None:
        conflicts = extra_conflicts(self, resources)
        if conflicts:
            raise ResourceError("--extra and a resource option ask for the same thing differently (PBS would "
                                "take only the first): " + "; ".join(conflicts) + ". Keep one of each pair")
        if self.profile == "gadi":
            problems = gadi.check_request(resources)
            if problems:
                raise ResourceError("the request breaks Gadi's queue rules (the target has profile = \"gadi\"):\n"
                                    + "\n".join(f"  - {problem}" for problem in problems))

    def submit(self, transport: Transport, script: JobScript) -> str:
        out, err = self.output_paths(script)
        # -o/-e also on the command line: Torque-style qsubs (Slurm's among them) honour only these
        result = self.run_command(transport, ["qsub", "-o", out, "-e", err, script.job_sh], timeout=120)
        if result.returncode == 0:
            for line in reversed(result.stdout.strip().splitlines()):
                if _SUBMITTED_ID.fullmatch(line.strip()):
                    return line.strip()
            raise SchedulerError(f"qsub took job {script.job_id} on {transport.description} but printed no job id "
                                 f"rx_magic can read:\n{_output(result) or '(no output)'}")
        raise SchedulerError(self._refusal(script, result, transport))

    def _refusal(self, script: JobScript, result: CommandResult, transport: Transport) -> str:
        head = f"qsub refused job {script.job_id} on {transport.description} (exit code {result.returncode})"
        output = _output(result)
        if output:
            return f"{head}:\n{output}"
        if result.returncode != 32:
            return f"{head} without a message"
        queue = script.resources.queue
        # 32 is PBSE_HOOKERROR (15136 mod 256, OpenPBS's pbs_error.h): a site's submission hook refused the job
        message = (f"{head} without a message: exit code 32 is PBS's hook error, a site hook refused the job. "
                   "Hooks check what the site requires, often the queue's limits (cores, memory, walltime, jobfs "
                   "or gpus), the project and -l storage")
        if self.profile == "gadi":
            return f"{message}. Gadi's rules for the queue: {gadi.describe_queue(queue or gadi.DEFAULT_QUEUE)}"
        return f"{message}; see the queue's limits with `qstat -Qf {queue or '<queue>'}`"

    # -- polling ------------------------------------------------------------------------------------------

    def query(self, transport: Transport, jobs: dict[str, str]) -> dict[str, SchedulerState]:
        """One ``qstat`` for every job: its live state, how PBS's history says it ended, or
        ``SchedulerState(None)`` for an id PBS does not know (a finished job, where history is off).

        A job PBS says can never run is deleted with ``qdel`` and reported failed with PBS's reason.
        """
        if not jobs:
            return {}
        ids = list(jobs)
        found = self._ask(transport, ids)
        states = {}
        for job_id in ids:
            attributes = _lookup(found, job_id)
            subjobs = _subjobs(found, job_id) if "[]" in job_id else {}
            if attributes is not None and never_runs(attributes):
                states[job_id] = job_state(attributes)
            elif subjobs:
                states[job_id] = scheduler_array_state({index: job_state(a) for index, a in subjobs.items()})
            elif attributes is not None:
                states[job_id] = job_state(attributes)
            else:
                states[job_id] = self._traced(transport, job_id)
        never = [job_id for job_id in ids if states[job_id].state is State.FAILED
                 and never_runs(_lookup(found, job_id) or {})]     # still queued: not yet ended or deleted
        if never:
            # left queued it would wait for ever: PBS keeps such jobs, so rx_magic deletes them
            deleted = self.run_command(transport, ["qdel", *never], timeout=60)
            for job_id in never:
                said = states[job_id]
                note = ("deleted by rx_magic" if deleted.returncode == 0 or not _output(deleted)
                        else f"rx_magic could not delete it: {_output(deleted, 2)}")
                states[job_id] = SchedulerState(said.state, f"{said.reason} ({note})", said.exit_code)
        return states

    def _form(self, ids: list[str]) -> list[str]:
        form = list(self.QUERY_FORMS[self._query_form])
        if not self._history and "-x" in form:
            form.remove("-x")
        if any("[]" in job_id for job_id in ids) and "-f" in form:
            form.append("-t")       # an array's subjobs, each with its own state and Exit_status
        return form

    def _ask(self, transport: Transport, ids: list[str]) -> dict[str, dict]:
        """Attributes of each job qstat knows, by its id, asking the best form this server takes."""
        while True:
            form = self._form(ids)
            result = self.run_command(transport, [*form, *ids], timeout=120)
            if "-x" in form and _NO_HISTORY.search(result.stderr):
                # PBS's default: -x is refused for every job, even running ones (exit 0, nothing shown)
                self._history = False
                continue
            if "-x" not in form and self.QUERY_FORMS[self._query_form][1:2] == ("-x",) \
                    and _HAS_FINISHED.search(result.stderr):
                self._history = True    # the site turned history on: finished jobs are kept for -x again
                continue
            if "-F" in form:
                try:
                    found = parse_qstat_json(result.stdout)
                except ValueError:
                    found = None
                if found is not None:
                    self._check_only_unknown(transport, form, result, read_stdout=True)
                    return self._missing_asked_again(transport, ids, found, result)
                if "{" in result.stdout:
                    # JSON too broken even to clean: read this round from the text form
                    text = self.run_command(transport, [*[w for w in form if w not in ("-F", "json")], *ids])
                    self._check_only_unknown(transport, form, text, read_stdout=True)
                    return parse_qstat_full(text.stdout)
            else:
                found = (parse_qstat_full if "-f" in form else parse_qstat_brief)(result.stdout)
                if found or result.returncode == 0:
                    self._check_only_unknown(transport, form, result, read_stdout=True)
                    return found
            if _refused(result) and self._query_form + 1 < len(self.QUERY_FORMS):
                self._query_form += 1
                continue
            self._check_only_unknown(transport, form, result)
            return {}

    @staticmethod
    def _check_only_unknown(transport: Transport, form: list[str], result: CommandResult,
                            read_stdout: bool = False) -> None:
        """Raise unless qstat succeeded or failed only for ids it does not know: a failed query is no news."""
        if result.returncode == 0 or _only_unknown_jobs(result, read_stdout):
            return
        raise SchedulerError(f"{' '.join(form)} failed on {transport.description} (exit code "
                             f"{result.returncode}):\n{_output(result) or '(no output)'}")

    def _missing_asked_again(self, transport: Transport, ids: list[str], found: dict[str, dict],
                             result: CommandResult) -> dict[str, dict]:
        # qstat names each id it does not know on stderr. An id neither shown nor named was dropped
        # (some PBS releases print only the first job in JSON): ask for those in text once.
        dropped = [job_id for job_id in ids if _lookup(found, job_id) is None
                   and not re.search(rf"(?<![\w.]){re.escape(_sequence(job_id))}\b", result.stderr)]
        if dropped and found:
            form = ["qstat", "-x", "-f"] if self._history else ["qstat", "-f"]
            text = self.run_command(transport, [*form, *dropped], timeout=120).stdout
            found = {**parse_qstat_full(text), **found}
        return found

    def _traced(self, transport: Transport, job_id: str) -> SchedulerState:
        """What PBS's server log (``tracejob``) says of a job ``qstat`` no longer shows, as extra evidence.

        Asked only where history is off, and at most a few times a job; ``SchedulerState(None)`` when
        the log says nothing (``tracejob`` missing, logs not readable, or the job is not in them).
        """
        if self._history or "[]" in job_id:
            return SchedulerState(None)
        if job_id in self._traces:
            return self._traces[job_id]
        tries = self._trace_tries.get(job_id, 0)
        if tries >= TRACE_TRIES:
            return SchedulerState(None)
        self._trace_tries[job_id] = tries + 1
        try:
            result = self.run_command(transport, ["tracejob", "-n", "3", job_id], timeout=60)
        except SchedulerError:      # no tracejob here: the folder decides
            self._trace_tries[job_id] = TRACE_TRIES
            return SchedulerState(None)
        attributes = parse_tracejob(result.stdout)
        if attributes is None:
            return SchedulerState(None)
        self._traces[job_id] = job_state(attributes)
        return self._traces[job_id]

    # -- cancelling ---------------------------------------------------------------------------------------

    def cancel(self, transport: Transport, scheduler_id: str, folder: str) -> None:
        result = self.run_command(transport, ["qdel", scheduler_id], timeout=60)
        if result.returncode == 0:
            return
        output = _output(result)
        # Slurm's qdel exits non-zero and says nothing for a job that already ended
        if not output or _NOTHING_TO_CANCEL.search(output):
            return
        raise SchedulerError(f"qdel could not cancel job {scheduler_id} on {transport.description} "
                             f"(exit code {result.returncode}):\n{output}")


# -- rendering helpers --------------------------------------------------------------------------------------

def job_name(script: JobScript) -> str:
    """``-N``: the user's ``--name`` or ``rx-HHMMSS-xxxx`` from the job id; at most 15 characters, a letter first."""
    name = script.resources.name
    if not name:
        parts = script.job_id.split("-")
        name = f"rx-{parts[2]}-{parts[3]}" if is_job_id(script.job_id) else script.job_id
    return job_name_of(name)


def job_name_of(name: str) -> str:
    """A name PBS takes: at most 15 characters of letters, digits, '_', '.' and '-', a letter first."""
    name = _JOB_NAME_CHARS.sub("_", name)
    if not name[:1].isalpha():
        name = "rx" + name
    return name[:NAME_LIMIT]


def pbs_walltime(seconds: int) -> str:
    """``-l walltime``: HH:MM:SS, hours running past 24 (``172800`` -> ``48:00:00``)."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def directive_settings(line: str) -> list[tuple[str, str, str]]:
    """What one ``#PBS`` directive sets: (key, value, directive) for each resource or option in it.

    ``-l ncpus=4,mem=8GB`` sets ``ncpus`` and ``mem`` (each with its own ``-l`` line); ``-q normal`` sets
    ``-q``; ``-W umask=027`` sets ``-W umask``. A line rx_magic cannot read sets its own text.
    """
    text = line.strip().removeprefix("#PBS").strip()
    try:
        words = shlex.split(text)
    except ValueError:
        return [(text, "", text)]
    if not words or not words[0].startswith("-") or len(words[0]) < 2:
        return [(text, "", text)]
    option, rest = words[0][:2], words[0][2:]
    value = rest or " ".join(words[1:])
    if option == "-l":
        settings = []
        for part in filter(None, (part.strip() for part in value.split(","))):
            key, _, setting = part.partition("=")
            settings.append((key.strip(), setting.strip(), f"-l {part}"))
        return settings or [(text, "", text)]
    if option == "-W":
        key, _, setting = value.partition("=")
        return [(f"-W {key.strip()}", setting.strip(), text)]
    return [(option, value, text)]


def _effective_extras(extras: tuple[str, ...]) -> list[tuple[frozenset, str]]:
    """The ``--extra`` directives to write, one per setting; of two that set the same thing the later
    (the user's over the target's) is kept, since PBS would take the first."""
    settings = [setting for extra in extras for setting in directive_settings(extra)]
    kept: dict[str, str] = {}
    for key, _value, line in settings:
        kept.pop(key, None)
        kept[key] = line
    lines: dict[str, set] = {}
    for key, line in kept.items():
        lines.setdefault(line, set()).add(key)
    return [(frozenset(keys), line) for line, keys in lines.items()]


def _clashing(keys: frozenset) -> frozenset:
    """What a line's settings clash with: ``-l select`` with ``ncpus``, ``mem`` and ``ngpus`` as well."""
    return keys | {"ncpus", "mem", "ngpus"} if "select" in keys else keys


#: Which of two lines setting the same thing is written (see ``PBSScheduler._directives``).
OWN, TARGET_DEFAULT, TARGET_EXTRA, USER_OPTION, USER_EXTRA = range(5)


def extra_conflicts(scheduler: PBSScheduler, resources: Resources) -> list[str]:
    """Each pair of a resource option and an ``--extra`` directive, both the user's, that set the same thing
    differently."""
    _, user_extra = scheduler._split_extra(resources.extra)
    if not user_extra:
        return []
    typed = scheduler._typed(resources)
    options = {key: line for key, line in PBSScheduler._option_lines(resources) if key in typed}
    flags = {"-P": "--project", "-q": "--queue", "ncpus": "--ncpus", "mem": "--mem", "walltime": "--walltime",
             "jobfs": "--jobfs", "ngpus": "--ngpus", "-N": "--name"}
    conflicts = []
    for extra in user_extra:
        for key, value, _line in directive_settings(extra):
            for option_key in _clashing(frozenset({key})):
                if option_key not in options:
                    continue
                _, mine, _ = directive_settings(options[option_key])[0]
                if key == option_key and _same_setting(key, mine, value):
                    continue
                conflicts.append(f"{flags[option_key]} {_shown(option_key, mine, resources)} and "
                                 f"--extra {extra.strip()!r}")
    return list(dict.fromkeys(conflicts))


def _shown(key: str, value: str, resources: Resources) -> str:
    if key == "walltime" and resources.walltime is not None:
        return format_walltime(resources.walltime)
    return value


def _same_setting(key: str, first: str, second: str) -> bool:
    if key in ("mem", "jobfs", "vmem"):
        return _pbs_bytes(first) is not None and _pbs_bytes(first) == _pbs_bytes(second)
    if key == "walltime":
        return _pbs_seconds(first) is not None and _pbs_seconds(first) == _pbs_seconds(second)
    return first.strip().lower() == second.strip().lower()


def _bare_word(value: str, option: str) -> str:
    if not _BARE_WORD.fullmatch(value):
        raise ResourceError(f"{option} {value!r} cannot be written in a #PBS line: "
                            "use letters, digits, '_', '.', '+' or '-'")
    return value


# -- reading qstat ------------------------------------------------------------------------------------------

def job_state(attributes: dict) -> SchedulerState:
    """What one job's qstat attributes (``job_state``, ``Exit_status``, ``comment``, ...) say, for people."""
    letter = str(attributes.get("job_state", "")).strip()[:1]
    state, reason = JOB_STATES.get(letter, (State.SUBMITTED, f"PBS state {letter!r}" if letter else None))
    if state == _ENDED:
        return _ended(attributes)
    comment = str(attributes.get("comment") or "").strip()
    if never_runs(attributes):
        return SchedulerState(State.FAILED, f"PBS says it can never run: {_never_reason(comment)}")
    if state is State.QUEUED and comment:
        if letter == "Q" and comment.startswith("Not Running:"):
            reason = comment.removeprefix("Not Running:").strip()
        elif letter == "H":
            reason = f"held: {comment}"
    return SchedulerState(state, reason)


def never_runs(attributes: dict) -> bool:
    """Whether PBS's scheduler commented that the job can never run (it asks for more than the cluster has)."""
    return str(attributes.get("comment") or "").strip().startswith(_NEVER)


_NEVER = "Can Never Run"


def _never_reason(comment: str) -> str:
    return comment.strip().removeprefix(_NEVER).lstrip(" :") or comment


def parse_tracejob(text: str) -> dict | None:
    """A finished job's attributes from ``tracejob`` (PBS's server log): ``Exit_status=N`` and the
    ``resources_used``/``Resource_List`` figures on its line; None when the log holds no end."""
    attributes: dict | None = None
    for line in text.splitlines():
        match = re.search(r"\bExit_status=(-?\d+)(.*)$", line)
        if match:
            attributes = {"job_state": "F", "Exit_status": match[1]}
            attributes.update(dict(re.findall(r"\b([A-Za-z_]+\.[A-Za-z_]+)=(\S+)", match[2])))
    return attributes


def _ended(attributes: dict) -> SchedulerState:
    code = _as_int(attributes.get("Exit_status"))
    if code is None:
        letter = str(attributes.get("job_state", "")).strip()[:1]
        if letter == "F" and str(attributes.get("substate", "")).strip() == "91":
            # PBS Pro's "terminated" with no exit status: deleted (qdel) before it ever ran
            return SchedulerState(State.CANCELLED, "deleted with qdel before it started")
        return SchedulerState(None)     # ended with no exit status (Torque's C): the folder decides
    if code == 0:
        return SchedulerState(State.DONE, None, 0)
    walltime = _pbs_seconds(attributes.get("Resource_List.walltime"))
    mem = _pbs_bytes(attributes.get("Resource_List.mem"))
    details = {"walltime": f" ({format_walltime(walltime)})" if walltime else "",
               "mem": f" ({_people_size(mem)})" if mem else ""}
    killed_for = _killed_for(code, attributes, walltime)
    if killed_for:
        template = EXIT_REASONS[-29] if killed_for == "walltime" else EXIT_REASONS[-27]
    elif code == 271:   # SIGTERM before the walltime was reached: qdel (PBS Pro's walltime kills are -29)
        return SchedulerState(State.CANCELLED, "deleted with qdel (PBS ended it with SIGTERM, Exit_status 271)")
    elif code in EXIT_REASONS:
        template = EXIT_REASONS[code]
    elif code > 256:
        template = f"killed by signal {code - 256}{_signal_name(code - 256)}"
    elif code < 0:
        template = f"PBS could not run the job (Exit_status {code})"
    else:
        # the job script's own exit code: the runner recorded why in the folder, which says it better
        return SchedulerState(State.FAILED, None, code)
    return SchedulerState(State.FAILED, template.format(**details), code if 0 < code < 256 else None)


def _killed_for(code: int, attributes: dict, walltime: int | None) -> str | None:
    """Why PBS killed the job, ``walltime`` or ``memory``, when its code, comment or time used says so."""
    if code == -29:
        return "walltime"
    if code == -27:
        return "memory"
    comment = str(attributes.get("comment") or "").lower()
    if "exceed" in comment and "walltime" in comment:
        return "walltime"
    if "exceed" in comment and re.search(r"\bmem\b|memory", comment):
        return "memory"
    used = _pbs_seconds(attributes.get("resources_used.walltime"))
    reached = walltime is not None and used is not None and used >= walltime
    if code == 271:     # older PBS Pro ended walltime kills with SIGTERM: only when the limit was reached
        return "walltime" if reached else None
    if code > 128 and reached:      # a signal, straight or through the runner's 128+N, at the time limit
        return "walltime"
    return None


def parse_qstat_json(text: str) -> dict[str, dict] | None:
    """Jobs in ``qstat -f -F json`` output, attributes flattened (``Resource_List.mem``); None when there is no JSON.

    PBS writes some values unescaped (quotes, backslashes, control characters and
    digit strings in ``Variable_List``, quotes in ``comment``): they are cleaned first.
    Raises ``ValueError`` when even the cleaned text does not parse.
    """
    start = text.find("{")
    if start < 0:
        return None
    text = text[start:]
    try:
        document = json.loads(text, strict=False)
    except ValueError:
        document = json.loads(clean_pbs_json(text), strict=False)
    if not isinstance(document, dict):
        raise ValueError("qstat's JSON is not an object")
    jobs = document.get("Jobs") or {}
    return {job_id: _flatten(attributes) for job_id, attributes in jobs.items() if isinstance(attributes, dict)}


_MEMBER = re.compile(r'^(\s*)"([^"]*)"\s*:\s*(.*?)\s*$')
_STRUCTURE = re.compile(r"^\s*(?:[{\[]|[}\]],?)\s*$")
_VALID_ESCAPE = re.compile(r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})')


def clean_pbs_json(text: str) -> str:
    """Make PBS's one-member-per-line JSON parseable: escape each string value again, quote bare non-numbers.

    A line that is neither a member nor a bracket continues the value above it
    (a raw line break inside a value).
    """
    lines: list[str] = []
    open_string = False
    for line in text.split("\n"):
        member = _MEMBER.match(line)
        if lines and (open_string or not (member or _STRUCTURE.match(line))):
            lines[-1] += "\n" + line
        else:
            lines.append(line)
        last = _MEMBER.match(lines[-1].split("\n")[0])
        value = lines[-1][last.end(2) + 1:].lstrip(" \t:") if last else ""
        open_string = value.startswith('"') and not re.search(r'"\s*,?\s*$', value[1:])
    cleaned = []
    for line in lines:
        member = _MEMBER.match(line.split("\n")[0]) if line.strip() else None
        if member is None:
            cleaned.append(line)
            continue
        indent, key = member[1], member[2]
        value = line[member.end(2) + 1:].lstrip(" \t:").rstrip()
        comma = ""
        if value.endswith(",") and not (value.startswith('"') and not value[:-1].rstrip().endswith('"')):
            value, comma = value[:-1].rstrip(), ","
        cleaned.append(f"{indent}{json.dumps(key)}:{_clean_value(value)}{comma}")
    return "\n".join(cleaned)


def _clean_value(value: str) -> str:
    if value in ("{", "["):
        return value
    try:
        return json.dumps(json.loads(value, strict=False))
    except ValueError:
        pass
    if value.startswith('"'):
        inner = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return '"' + _escape_inner(inner) + '"'
    return json.dumps(value)


def _escape_inner(inner: str) -> str:
    out, index = [], 0
    while index < len(inner):
        escape = _VALID_ESCAPE.match(inner, index)
        if escape:
            out.append(escape[0])
            index = escape.end()
            continue
        char = inner[index]
        if char == "\\" and inner[index + 1:index + 2] in (",", "'"):
            char = inner[index + 1]    # PBS's own escapes, which JSON does not have: keep the character
            index += 1
        out.append(json.dumps(char)[1:-1])     # a lone backslash, a bare quote, a control character
        index += 1
    return "".join(out)


_ATTRIBUTE = re.compile(r"^(\s+)([A-Za-z_][\w.]*) = ?(.*)$")


def parse_qstat_full(text: str) -> dict[str, dict]:
    """Jobs in ``qstat -f`` text: ``Job Id: ID`` then indented ``name = value`` lines.

    PBS wraps long values, continuing them on lines that start with a tab; an
    attribute's own indent is whatever the first one used (four spaces for PBS,
    a tab for Slurm's qstat), so a tab line is a continuation only under PBS.
    """
    jobs: dict[str, dict] = {}
    attributes: dict | None = None
    indent = last = None
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line.startswith("Job Id:"):
            attributes = jobs.setdefault(line.partition(":")[2].strip(), {})
            indent = last = None
            continue
        if attributes is None or not line.strip():
            continue
        attribute = _ATTRIBUTE.match(line)
        if attribute and indent in (None, attribute[1]):
            indent, last = attribute[1], attribute[2]
            attributes[last] = attribute[3]
        elif line.startswith("\t") and last is not None:
            attributes[last] += line[1:]
    return jobs


def parse_qstat_brief(text: str) -> dict[str, dict]:
    """Jobs in plain ``qstat`` output: id, name, user, time, state letter, queue columns."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[0] == "Job" or not parts[0].strip("-"):
            continue
        letter = parts[-2] if len(parts) >= 6 else parts[-1]
        jobs[parts[0]] = {"job_state": letter}
    return jobs


def _flatten(attributes: dict) -> dict:
    flat = {}
    for key, value in attributes.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


def _subjobs(found: dict[str, dict], array_id: str) -> dict[int, dict]:
    """The subjobs qstat -t showed of an array (``123[].server``), by index: ``123[4].server`` is 4."""
    head = _sequence(array_id).removesuffix("[]")
    subjobs = {}
    for shown, attributes in found.items():
        match = _SUBJOB.fullmatch(_sequence(shown))
        if match and match[1] == head:
            subjobs[int(match[2])] = attributes
    return subjobs


_SUBJOB = re.compile(r"(\d+)\[(\d+)\]")


def _sequence(job_id: str) -> str:
    """The number PBS knows a job by, whatever server suffix (or truncation ``*``) is shown."""
    return job_id.split(".")[0].rstrip("*")


def _lookup(found: dict[str, dict], job_id: str) -> dict | None:
    """A job's attributes by its full id, else by its number when exactly one job shown has it."""
    if job_id in found:
        return found[job_id]
    same = [attributes for shown, attributes in found.items() if _sequence(shown) == _sequence(job_id)]
    return same[0] if len(same) == 1 else None


def _refused(result: CommandResult) -> bool:
    return result.returncode != 0 and bool(_REFUSED.search(result.stderr + "\n" + result.stdout))


def _only_unknown_jobs(result: CommandResult, read_stdout: bool = False) -> bool:
    """qstat failed only because ids are unknown: each line of complaint names one, or (Slurm's qstat) it
    exited 153 saying nothing. ``read_stdout``: stdout was read as jobs, so only stderr complains."""
    said = result.stderr if read_stdout else result.stderr + "\n" + result.stdout
    lines = [line for line in said.splitlines() if line.strip()]
    if not lines:
        return result.returncode == 153
    return all(_UNKNOWN_JOB.search(line) for line in lines)


def _output(result: CommandResult, lines: int = 20) -> str:
    """A command's own words, verbatim: the tail of stderr, then of stdout."""
    text = "\n".join(part.rstrip() for part in (result.stderr, result.stdout) if part.strip())
    return "\n".join(text.splitlines()[-lines:])


def _as_int(value) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _pbs_seconds(value) -> int | None:
    """Seconds in a PBS duration: ``HH:MM:SS``, ``MM:SS`` or a number of seconds."""
    if value is None:
        return None
    parts = str(value).strip().split(":")
    if not all(part.isdigit() for part in parts) or len(parts) > 3:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


_PBS_SIZE = re.compile(r"(\d+)\s*([kmgtp]?)(b|w)?", re.IGNORECASE)


def _pbs_bytes(value) -> int | None:
    """Bytes in a PBS size: ``8gb``, ``8589934592b``, ``8388608kb``, a bare number (bytes), ``w`` words (8 bytes)."""
    match = _PBS_SIZE.fullmatch(str(value).strip()) if value is not None else None
    if match is None:
        return None
    factor = 1024 ** " kmgtp".index(match[2].lower() or " ")
    return int(match[1]) * factor * (8 if (match[3] or "").lower() == "w" else 1)


def _people_size(nbytes: int) -> str:
    """The size as a directive writes it, with a space: ``8 GB``, ``1536 MB`` (GB as PBS means it, 2**30)."""
    return re.sub(r"(\d)([A-Z])", r"\1 \2", format_size(nbytes))


def _signal_name(number: int) -> str:
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""

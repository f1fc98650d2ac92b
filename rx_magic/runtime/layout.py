"""The job folder's layout: every file name in it, for the notebook and the runner alike.

This module is the one owner of those names. It needs only the standard
library, because it is copied to ``{workdir}/.rx/runtime-*/`` beside
``runner.py`` and ``wire.py``, which import it there::

    {workdir}/
      .rx/blobs/{hash}.dill       content-addressed inputs, shared by jobs
      .rx/files/{hash}            the notebook's modules and --files, by content
      .rx/runtime-{hash}/         wire.py, layout.py, jsontext.py, process_state.py, worker.py, runner.py (one copy per version)
      .rx/staging-{job_id}/       a job folder being written, renamed into place when complete
      .rx/holds/{hold_id}/        a hold's warm worker: hold.json ready.json beat ended.json release
                                  job.sh scheduler.log queue/{job_id} taken/{job_id} (tickets naming job
                                  folders) cancel/{job_id}
      {job_id}/
        job.json cell.py job.sh status.json stdout.log stderr.log exit_code
        outputs.dill display.json result.dill process_state.json error.json exception.dill
        scheduler.log scheduler.err
        work/ lib/ elements/{i}/ (a job array's element i: a single job's names) elements/{i}.end
"""

from __future__ import annotations

import os
import posixpath
import time

_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdef")


def _is_id(text: str, prefix: str) -> bool:
    """``{prefix}YYYYMMDD-HHMMSS-{4 to 8 hex digits}``, with string methods: ``re`` costs a job ~9 ms to import."""
    if not text.startswith(prefix):
        return False
    parts = text[len(prefix):].split("-")
    return (len(parts) == 3 and len(parts[0]) == 8 and len(parts[1]) == 6 and 4 <= len(parts[2]) <= 8
            and set(parts[0] + parts[1]) <= _DIGITS and set(parts[2]) <= _HEX)


def is_job_id(text: str) -> bool:
    """A job's id, ``rx-20261123-141502-3fa9b1``: the only names a job folder (and its ticket) may have."""
    return _is_id(text, "rx-")


def is_hold_id(text: str) -> bool:
    """A hold's id, ``hold-20261123-141502-3fa9b1``."""
    return _is_id(text, "hold-")

#: The format of ``job.json`` this release writes and its runner reads (``model.jobspec`` upgrades older ones).
SPEC_FORMAT = 2

#: A job folder's final files: once ``status.json`` says one of these, the job's folder says how it ended.
FINAL_STATES = ("done", "failed", "cancelled")


def new_job_id(now: float | None = None) -> str:
    """A sortable, unique job id such as ``rx-20261123-141502-3fa9b1`` (UTC)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"rx-{stamp}-{os.urandom(3).hex()}"


def check_job_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise ValueError(f"{job_id!r} is not an rx_magic job id (they look like rx-20261123-141502-3fa9b1)")
    return job_id


class WorkdirPaths:
    """The target's shared ``{workdir}/.rx`` folder: blobs, shipped files, the runner."""

    def __init__(self, workdir: str):
        self.workdir = workdir.rstrip("/") or "/"

    @property
    def rx_dir(self) -> str:
        return posixpath.join(self.workdir, ".rx")

    @property
    def blobs_dir(self) -> str:
        return posixpath.join(self.rx_dir, "blobs")

    @property
    def files_dir(self) -> str:
        """Content-addressed copies of the notebook's modules and ``--files``, shared by jobs."""
        return posixpath.join(self.rx_dir, "files")

    def runtime_dir(self, version: str) -> str:
        return posixpath.join(self.rx_dir, f"runtime-{version}")

    def blob(self, digest: str) -> str:
        return posixpath.join(self.blobs_dir, blob_name(digest))

    @property
    def verified_dir(self) -> str:
        """Stamps of big blobs the runner has checked, so that it need not hash them again (``runner.Cell``)."""
        return posixpath.join(self.rx_dir, "verified")

    def verified(self, digest: str) -> str:
        return posixpath.join(self.verified_dir, digest)

    def staging_folder(self, job_id: str) -> str:
        """Where a job folder is written before it is renamed into place."""
        return posixpath.join(self.rx_dir, f"{STAGING_PREFIX}{job_id}")


STAGING_PREFIX = "staging-"


def blob_name(digest: str) -> str:
    """The file name of a blob in ``.rx/blobs``."""
    return f"{digest}.dill"


#: Names the job script uses (``schedulers.base.render_body``): the scheduler renders them into job.sh.
JOB_SH, SCHEDULER_LOG, SCHEDULER_ERR, EXIT_CODE, ELEMENTS = "job.sh", "scheduler.log", "scheduler.err", "exit_code", "elements"


class JobPaths(WorkdirPaths):
    """Every file name in a job folder, and the shared ``.rx`` folder beside it."""

    def __init__(self, workdir: str, job_id: str):
        super().__init__(workdir)
        self.job_id = check_job_id(job_id)
        self.folder = posixpath.join(self.workdir, job_id)

    @classmethod
    def of_folder(cls, folder: str) -> JobPaths:
        """The paths of the job whose folder is ``folder`` (``{workdir}/{job_id}``)."""
        folder = folder.rstrip("/")
        return cls(posixpath.dirname(folder), posixpath.basename(folder))

    def _in_folder(name: str) -> property:  # noqa: N805 - a property factory
        return property(lambda self: posixpath.join(self.folder, name))

    job_json = _in_folder("job.json")
    cell_py = _in_folder("cell.py")
    job_sh = _in_folder(JOB_SH)
    status_json = _in_folder("status.json")
    stdout = _in_folder("stdout.log")
    stderr = _in_folder("stderr.log")
    scheduler_log = _in_folder(SCHEDULER_LOG)
    scheduler_err = _in_folder(SCHEDULER_ERR)     # where a batch system writes it apart (Slurm)
    exit_code = _in_folder(EXIT_CODE)
    outputs = _in_folder("outputs.dill")
    display = _in_folder("display.json")
    error = _in_folder("error.json")
    exception = _in_folder("exception.dill")
    result = _in_folder("result.dill")                  # the last expression's value, for the notebook to show
    process_state = _in_folder("process_state.json")    # the random state and settings the cell changed
    work = _in_folder("work")    # the cell's working folder on targets other than local; --files land here
    lib = _in_folder("lib")      # the notebook's own modules, put on the cell's sys.path
    elements_dir = _in_folder(ELEMENTS)    # a job array's elements, each in a folder of its own
    del _in_folder

    @property
    def staging(self) -> str:
        """Where this job's folder is written before it is renamed into place."""
        return self.staging_folder(self.job_id)

    def staged(self) -> JobPaths:
        """The same names inside the staging folder, where the job folder is written before it is renamed."""
        staged = JobPaths(self.workdir, self.job_id)
        staged.folder = self.staging
        return staged

    def element(self, index: int) -> ElementPaths:
        return ElementPaths(self.workdir, self.job_id, index)


class ElementPaths(JobPaths):
    """The files of element ``index`` of a job array: a single job's names, inside ``elements/{index}/``."""

    def __init__(self, workdir: str, job_id: str, index: int):
        super().__init__(workdir, job_id)
        self.job_folder = self.folder
        self.index = index
        self.folder = posixpath.join(self.job_folder, ELEMENTS, str(index))

    @property
    def end_marker(self) -> str:
        """An empty file the runner writes when the element has ended (one listing finds them all)."""
        return self.folder + ".end"


def element_entry(name: str) -> tuple[int, bool] | None:
    """``(index, ended)`` for an entry of ``elements/`` (``"3"`` or ``"3.end"``); None for anything else."""
    stem, _, suffix = name.partition(".")
    if not stem.isdigit() or suffix not in ("", "end"):
        return None
    return int(stem), suffix == "end"


def new_hold_id(now: float | None = None) -> str:
    """A sortable, unique hold id such as ``hold-20261123-141502-3fa9b1`` (UTC)."""
    return "hold" + new_job_id(now)[2:]


def check_hold_id(hold_id: str) -> str:
    if not is_hold_id(hold_id):
        raise ValueError(f"{hold_id!r} is not an rx_magic hold id (they look like hold-20261123-141502-3fa9b1)")
    return hold_id


class HoldPaths(WorkdirPaths):
    """The files of a hold (a warm worker inside one batch job): ``{workdir}/.rx/holds/{hold_id}/``.

    The notebook writes ``hold.json`` (what was asked) and drops a ticket ``queue/{job_id}`` (atomically, by
    rename) for each cell it sends; the worker writes ``ready.json`` when it starts, touches ``beat`` while it
    lives, claims a ticket by renaming it to ``taken/{job_id}`` (so it is taken once), removes it when the cell
    has ended, and writes ``ended.json`` (why it ended) last. ``release`` asks it to end.
    """

    def __init__(self, workdir: str, hold_id: str):
        super().__init__(workdir)
        self.hold_id = check_hold_id(hold_id)
        self.folder = posixpath.join(self.rx_dir, "holds", hold_id)

    def _in_folder(name: str) -> property:  # noqa: N805 - a property factory
        return property(lambda self: posixpath.join(self.folder, name))

    hold_json = _in_folder("hold.json")
    ready_json = _in_folder("ready.json")
    beat = _in_folder("beat")
    ended_json = _in_folder("ended.json")
    release = _in_folder("release")
    job_sh = _in_folder(JOB_SH)
    scheduler_log = _in_folder(SCHEDULER_LOG)
    queue_dir = _in_folder("queue")
    taken_dir = _in_folder("taken")
    cancel_dir = _in_folder("cancel")      # cancel/{job_id}: the notebook asks the worker to stop that job
    del _in_folder

    def queued(self, job_id: str) -> str:
        return posixpath.join(self.queue_dir, check_job_id(job_id))

    def taken(self, job_id: str) -> str:
        return posixpath.join(self.taken_dir, check_job_id(job_id))

    def ticket_staging(self, job_id: str) -> str:
        """Where a ticket is written before it is renamed into ``queue/`` (the worker never lists it)."""
        return posixpath.join(self.folder, f".ticket-{check_job_id(job_id)}")

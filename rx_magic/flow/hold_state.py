"""What a hold is now, from evidence, and what that means for the jobs sent to it.

A hold (``flow.holds``) is a warm worker inside one batch job, watching ``.rx/holds/{id}/``
(``runtime.layout.HoldPaths``). Its state is read from that folder and, when asked, from the batch
system: *queued* (no ``ready.json`` yet), *ready* (``ready.json``, a heartbeat that keeps changing),
*ended* (``ended.json`` says why; or the batch system no longer runs it while its heartbeat has not
changed for ``STALE`` seconds; or, never started, it was seen gone in several rounds). One missing
observation never ends a hold.

A job sent to a hold has scheduler id ``hold:{hold_id}:{job_id}``; ``held_job_states`` answers for such jobs
what ``Scheduler.query`` answers for others: queued while its ticket waits in ``queue/``, running once
the worker took it, unknown to the hold once it has ended (its folder says how). A ticket still waiting
when the hold ended is taken back and the job sent to the scheduler, saying so in one line; a job the
hold was running when it died fails with the hold's reason.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import sys
import threading
import time
from dataclasses import dataclass, field

from ..errors import RxError
from ..model.jobspec import JobSpecError, read_spec
from ..model.record import HoldRecord, JobRecord
from ..model.resources import Resources
from ..model.states import Disappearance, SchedulerState, State
from ..runtime.layout import HoldPaths, JobPaths, check_job_id, is_job_id
from ..schedulers import JobScript
from ..targets.target import Target
from .registry import Registry, default_registry

#: The scheduler id of a job sent to a hold: ``hold:{hold_id}:{job_id}`` (unique, as scheduler ids are).
HOLD_PREFIX = "hold:"
#: A ready hold whose heartbeat has not changed for this many seconds, while the batch system no longer
#: runs it, has ended (the worker writes one every 2 s).
STALE = 10.0
#: The words for how a hold ended, by the reason ``ended.json`` (or the notebook) gives.
ENDINGS = {
    "released": "the hold was released",
    "idle": "the hold ended, idle",
    "walltime": "the hold reached its walltime",
    "killed": "the hold was killed",
    "failed": "the hold's batch job ended before its worker started",
}


def held_id(hold_id: str, job_id: str) -> str:
    """The scheduler id of job ``job_id`` sent to hold ``hold_id``."""
    return f"{HOLD_PREFIX}{hold_id}:{job_id}"


def hold_of(scheduler_id: str) -> str | None:
    """The hold a job was sent to, from its scheduler id; None for a job of the scheduler's own."""
    return scheduler_id[len(HOLD_PREFIX):].split(":")[0] if scheduler_id.startswith(HOLD_PREFIX) else None


def held_in(scheduler_id: str, registry: Registry | None = None) -> str:
    """``in hold {name}`` (or its id's short tail, which ``--hold`` takes) for a job sent to a hold, else ""."""
    hold_id = hold_of(scheduler_id)
    if not hold_id:
        return ""
    try:
        name = (registry or default_registry()).get_hold(hold_id).name
    except KeyError:    # a hold this machine never knew
        name = ""
    return f"in hold {name or hold_id.rsplit('-', 1)[-1]}"


@dataclass
class HoldLook:
    """One look at a hold: its state, what its worker said, and the tickets waiting and taken."""

    record: HoldRecord
    state: str                      # queued | ready | ended
    reason: str = ""                # released | idle | walltime | killed | failed, once ended
    detail: str = ""                # more words on the ending (a log's tail)
    ready: dict = field(default_factory=dict)   # ready.json: host, cores, mem, pid, started, walltime
    queued: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)
    tickets: dict[str, dict] = field(default_factory=dict)

    @property
    def said(self) -> str:
        return ENDINGS.get(self.reason, f"the hold ended ({self.reason})") if self.state == "ended" else ""

    @property
    def resources(self) -> Resources:
        return Resources.from_json(json.loads(self.record.resources or "{}"))

    @property
    def cores(self) -> int:
        return int(self.ready.get("cores") or self.resources.ncpus or 1)

    @property
    def mem(self) -> int:
        return int(self.ready.get("mem") or self.resources.mem or 0)

    def in_use(self) -> tuple[int, int]:
        """Cores and memory the tickets waiting and taken ask for (read with ``tickets=True``)."""
        cores = mem = 0
        for ticket in self.tickets.values():
            cores += int(ticket.get("ncpus") or 1) * (1 if not ticket.get("elements") else
                                                       min(int(ticket["elements"]), self.cores))
            mem += int(ticket.get("mem") or 0)
        return cores, mem


_beats: dict[str, tuple[bytes, float]] = {}         # hold id -> (heartbeat last read, when it last changed)
_never_started: dict[str, Disappearance] = {}
_lock = threading.Lock()


def _beat_is_fresh(hold_id: str, beat: bytes | None, now: float) -> bool:
    """Whether the heartbeat changed within ``STALE`` seconds of this kernel's watching (first seen: yes)."""
    with _lock:
        last = _beats.get(hold_id)
        if last is None or last[0] != beat:
            _beats[hold_id] = (beat or b"", now)
            return True
        return now - last[1] < STALE


def _read_json(target: Target, path: str) -> dict | None:
    try:
        found = json.loads(target.transport.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def look(target: Target, record: HoldRecord, *, ask_scheduler: bool = True, tickets: bool = False,
         registry: Registry | None = None) -> HoldLook:
    """The hold's state from its folder and, with ``ask_scheduler``, the batch system; the registry row follows.

    ``tickets``: read the waiting and taken tickets too (what they ask for, to see what fits).
    """
    transport, paths = target.transport, HoldPaths(record.workdir, record.id)
    seen = HoldLook(record, "queued")
    # an ended hold's tickets still say which cells it left waiting (to send on) and which it was running
    seen.queued = sorted(name for name in transport.listdir(paths.queue_dir) if is_job_id(name))
    seen.taken = sorted(name for name in transport.listdir(paths.taken_dir) if is_job_id(name))
    if record.state == "ended":
        seen.state, seen.reason = "ended", record.reason.split(":")[0]
        return seen
    names = set(transport.listdir(paths.folder))
    ended = _read_json(target, paths.ended_json) if "ended.json" in names else None
    if ended is not None:
        seen.state, seen.reason = "ended", str(ended.get("reason") or "killed")
    else:
        if "ready.json" in names:
            seen.ready = _read_json(target, paths.ready_json) or {}
            seen.state = "ready" if seen.ready else "queued"
        if ask_scheduler:
            _judge(target, seen, paths, names)
    if tickets and seen.state != "ended":
        for name, folder in [*((n, paths.queue_dir) for n in seen.queued), *((n, paths.taken_dir) for n in seen.taken)]:
            seen.tickets[name] = _read_json(target, posixpath.join(folder, name)) or {}
    _record(seen, registry)
    return seen


def _judge(target: Target, seen: HoldLook, paths: HoldPaths, names: set[str]) -> None:
    """Ask the batch system; end the hold only on evidence that agrees over time."""
    now = time.monotonic()
    beat = None
    if "beat" in names:
        try:
            beat = target.transport.read_bytes(paths.beat)
        except FileNotFoundError:
            beat = None
    fresh = _beat_is_fresh(seen.record.id, beat, now)
    answer = target.scheduler.query(target.transport, {seen.record.scheduler_id: paths.folder}).get(
        seen.record.scheduler_id, SchedulerState(None))
    gone = answer.state is None or answer.state.is_final
    if seen.ready:
        if gone and not fresh:
            seen.state, seen.reason = "ended", "killed"
        return
    with _lock:
        disappearance = _never_started.setdefault(seen.record.id, Disappearance())
    if disappearance.round(gone, now):
        seen.state, seen.reason = "ended", "failed"
        seen.detail = _log_tail(target, paths)


def _log_tail(target: Target, paths: HoldPaths) -> str:
    try:
        text = target.transport.read_bytes(paths.scheduler_log, limit=1 << 16).decode(errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(text.strip().splitlines()[-3:])


def _record(seen: HoldLook, registry: Registry | None) -> None:
    if seen.state == seen.record.state:
        return
    changes = {"state": seen.state}
    if seen.state == "ended":
        changes.update(reason=seen.reason + (f": {seen.detail}" if seen.detail else ""), ended_at=time.time())
    try:
        seen.record = (registry or default_registry()).update_hold(seen.record.id, **changes)
    except KeyError:
        pass


# ---------------------------------------------------------------------------- jobs sent to holds

def held_job_states(target: Target, records: list[JobRecord],
                    registry: Registry | None = None) -> dict[str, SchedulerState]:
    """What the holds say of jobs sent to them, by scheduler id, as ``Scheduler.query`` says of its own."""
    registry = registry or default_registry()
    answers: dict[str, SchedulerState] = {}
    by_hold: dict[str, list[JobRecord]] = {}
    for record in records:
        by_hold.setdefault(hold_of(record.scheduler_id) or "", []).append(record)
    for hold_id, jobs in by_hold.items():
        try:
            hold = registry.get_hold(hold_id)
        except KeyError:    # a hold this machine never knew: the folders alone say how its jobs end
            answers.update({job.scheduler_id: SchedulerState(None) for job in jobs})
            continue
        seen = look(target, hold, registry=registry)
        for job in jobs:
            if job.id in seen.queued:
                if seen.state == "ended":
                    answers[job.scheduler_id] = _send_to_scheduler(target, job, seen, registry)
                else:
                    answers[job.scheduler_id] = SchedulerState(State.QUEUED, f"waiting in hold {hold_id}")
            elif job.id in seen.taken:
                answers[job.scheduler_id] = (SchedulerState(State.FAILED, f"{seen.said} while the cell ran")
                                             if seen.state == "ended" else SchedulerState(State.RUNNING))
            else:   # done with: its folder says how it ended
                answers[job.scheduler_id] = SchedulerState(None)
    return answers


def _send_to_scheduler(target: Target, job: JobRecord, seen: HoldLook, registry: Registry) -> SchedulerState:
    """A ticket still waiting in a hold that ended: take it back (once, atomically) and submit the job's own
    ``job.sh`` to the scheduler, saying so in one line; a ticket someone else took back is theirs to send."""
    hold_paths, paths = HoldPaths(seen.record.workdir, seen.record.id), JobPaths(job.workdir, job.id)
    transport = target.transport
    claimed = hold_paths.ticket_staging(job.id)
    try:
        transport.rename(hold_paths.queued(job.id), claimed)
    except (FileNotFoundError, OSError, RxError):
        return SchedulerState(State.SUBMITTED)      # another kernel took it back, and sends it
    try:
        spec = read_spec(transport.read_bytes(paths.job_json), paths.job_json)
        script = JobScript(job_id=job.id, folder=paths.folder, runner="", resources=Resources.from_json(
            spec.get("resources") or {}), elements=int((spec.get("map") or {}).get("size") or 0))
        scheduler_id = target.scheduler.submit(transport, script)
    except (RxError, FileNotFoundError, JobSpecError) as exc:
        transport.remove_tree(claimed)
        return SchedulerState(State.FAILED, f"{seen.said} before it ran the cell, and sending the cell to the "
                                            f"{target.scheduler.name} scheduler failed: {exc}")
    transport.remove_tree(claimed)
    remove_end_notice(target, seen.record.workdir, seen.record.id, job.id)
    registry.update(job.id, scheduler_id=scheduler_id)
    print(f"rx_magic: {seen.said} before job {job.id} started: sent it to the {target.scheduler.name} scheduler "
          f"(job {scheduler_id})", file=sys.stderr, flush=True)
    return SchedulerState(State.SUBMITTED)


# ---------------------------------------------------------------------------- waking, on this machine

#: The folder of a hold whose FIFOs say when a job sent to it has ended: ``ends/{job_id}``, made by the notebook
#: that sends the job, named in its ticket, written once by the worker when the job has ended.
END_NOTICES = "ends"


def make_end_notice(target: Target, paths: HoldPaths, job_id: str) -> str | None:
    """On this machine, a FIFO in the hold's private folder a waiting cell blocks on until the worker says the
    job has ended (one byte, then it closes it): its name in the hold folder, for the ticket; None elsewhere (over
    SSH a held cell is looked at every ``HELD_POLL`` seconds instead) or when it cannot be made."""
    if not target.is_local:
        return None
    relative = posixpath.join(END_NOTICES, check_job_id(job_id))
    try:
        os.makedirs(posixpath.join(paths.folder, END_NOTICES), mode=0o700, exist_ok=True)
        os.mkfifo(posixpath.join(paths.folder, relative), 0o600)
    except OSError:     # no FIFOs on this filesystem: the cell is looked at on its timer
        return None
    return relative


def open_end_notice(target: Target, record: JobRecord) -> int | None:
    """A descriptor that turns readable when the worker says the held job ``record`` ended (on this machine, while
    its FIFO is there; a FIFO of anyone else's, or anything else by that name, is not used); None otherwise."""
    hold_id = hold_of(record.scheduler_id)
    if not hold_id or not target.is_local:
        return None
    path = posixpath.join(HoldPaths(record.workdir, hold_id).folder, END_NOTICES, check_job_id(record.id))
    return _open_fifo(path, os.O_RDONLY)


def wake_worker(target: Target, paths: HoldPaths, ready: dict) -> None:
    """Tell a worker on this machine that a ticket is waiting, through the FIFO it named in ``ready.json``
    (``wake``), so it takes it at once instead of at its next look; a worker elsewhere finds it on its own."""
    name = ready.get("wake")
    if not target.is_local or not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        return
    fd = _open_fifo(posixpath.join(paths.folder, name), os.O_WRONLY)
    if fd is not None:
        try:
            os.write(fd, b"w")
        except OSError:     # full of wake-ups not yet read: it is awake already
            pass
        finally:
            os.close(fd)


def _open_fifo(path: str, flags: int) -> int | None:
    """``path`` opened without blocking if it is a FIFO of this user's that no one else may write, else None
    (for writing, also None when nobody has it open for reading: no worker here is listening)."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def remove_end_notice(target: Target, workdir: str, hold_id: str, job_id: str) -> None:
    """The FIFO of a job that will not end in the hold (its ticket was taken back)."""
    if target.is_local:
        try:
            os.remove(posixpath.join(HoldPaths(workdir, hold_id).folder, END_NOTICES, check_job_id(job_id)))
        except OSError:
            pass


def cancel_held(target: Target, record: JobRecord) -> None:
    """Cancel a job sent to a hold: a waiting ticket is taken back; a running job is stopped by the worker."""
    hold_paths = HoldPaths(record.workdir, hold_of(record.scheduler_id) or "")
    transport = target.transport
    try:
        transport.rename(hold_paths.queued(record.id), hold_paths.ticket_staging(record.id))
        transport.remove_tree(hold_paths.ticket_staging(record.id))
        remove_end_notice(target, record.workdir, hold_of(record.scheduler_id) or "", record.id)
        return
    except (FileNotFoundError, OSError, RxError):
        pass
    transport.write_bytes(posixpath.join(hold_paths.cancel_dir, record.id), b"")

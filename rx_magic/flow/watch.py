"""Watching jobs: one scheduler query per round for all of a target's jobs, and their folders' status.

``observe`` is one round for many jobs of one target; blocking cells call it
in a loop, and a target's ``Monitor`` thread calls it for all its live jobs,
asking the scheduler on a back-off (``PollSchedule``) and reading the folders
of running jobs more often in between.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time

from ..errors import RxError
from ..model.record import JobRecord
from ..model.states import Observation, SchedulerState, State, stopped_from_outside
from ..runtime.layout import HoldPaths, JobPaths
from ..targets.config import DEFAULT_POLL_INTERVAL
from ..targets.target import Target, get_target, open_target
from .arrays import array_status, read_progress
from .hold_state import held_job_states, hold_of


#: the most of a status, exit code or scheduler log file a poll round reads with the others (larger: on its own)
READ_LIMIT = 2**20


def read_json(target: Target, path: str):
    try:
        return json.loads(target.transport.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None


class _Files:
    """Files of many jobs read in one request (``Transport.read_files``: one round trip over SSH); a file left out
    of the answer (too large, or unreadable) is read on its own, as before."""

    def __init__(self, target: Target, paths: list[str]):
        self.target = target
        self.found = target.transport.read_files(paths, limit=READ_LIMIT) if paths else {}

    def read(self, path: str) -> bytes:
        if path not in self.found:
            return self.target.transport.read_bytes(path)
        if self.found[path] is None:
            raise FileNotFoundError(2, "No such file", path)
        return self.found[path]

    def json(self, path: str):
        try:
            return json.loads(self.read(path))
        except (FileNotFoundError, ValueError):
            return None


def _read_exit_code(files: _Files, paths: JobPaths) -> int | None:
    try:
        return int(files.read(paths.exit_code).strip())
    except (FileNotFoundError, ValueError):
        return None


def _log_tail(files: _Files, paths: JobPaths, lines: int = 5) -> str:
    text = ""
    for path in (paths.scheduler_log, paths.scheduler_err):
        try:
            text += files.read(path).decode(errors="replace")
        except FileNotFoundError:
            pass
    return " | ".join(text.strip().splitlines()[-lines:])


def read_status(target: Target, record: JobRecord, paths: JobPaths, scheduler: SchedulerState | None = None,
                files: _Files | None = None):
    """The job's ``status.json``; for a job array, what its elements add up to (``arrays.array_status``)."""
    if not record.elements:
        return files.json(paths.status_json) if files is not None else read_json(target, paths.status_json)
    started, ended = read_progress(target.transport, paths, record.elements)
    return array_status(record.elements, started, ended, scheduler, record.cancel_requested)


def observe(target: Target, records: list[JobRecord], ask_scheduler: bool = True) -> dict[str, Observation]:
    """What each job's folder, and (when asked) the scheduler, say now.

    Over SSH a round is two round trips whatever the number of jobs: every ``status.json`` in one request, the
    scheduler's one query; jobs found gone have their folders read again, together, in a third.
    """
    paths = {record.id: JobPaths(record.workdir, record.id) for record in records}
    # a job queued (or not yet seen running) at the last look has its folder read only once the scheduler no
    # longer says it waits: pending jobs have no status yet
    waiting = {record.id for record in records if ask_scheduler and record.state in (State.SUBMITTED, State.QUEUED)}
    looked = [record for record in records if record.id not in waiting]
    files = _Files(target, [paths[r.id].status_json for r in looked if not r.elements])
    statuses = {record.id: None if record.id in waiting else read_status(target, record, paths[record.id], files=files)
                for record in records}
    # a job stopped by a signal from outside is asked about even so: its scheduler may know why (walltime, memory)
    unfinished = [r for r in records if (statuses[r.id] or {}).get("state") not in ("done", "failed", "cancelled")
                  or stopped_from_outside(statuses[r.id])]
    unfinished_ids = {r.id for r in unfinished}
    ask_scheduler = ask_scheduler or any(stopped_from_outside(statuses[r.id]) for r in records)
    answers: dict[str, SchedulerState] = {}
    if ask_scheduler and unfinished:
        held = [r for r in unfinished if hold_of(r.scheduler_id)]     # sent to a hold: the hold answers for them
        asked = {r.scheduler_id: paths[r.id].folder for r in unfinished if r.scheduler_id and r not in held}
        answers = target.scheduler.query(target.transport, asked) if asked else {}
        answers.update(held_job_states(target, held) if held else {})
    if not ask_scheduler:
        return {record.id: Observation(statuses[record.id], None, None) for record in records}
    again = []
    for record in records:
        answer = answers.get(record.scheduler_id, SchedulerState(None))
        gone = answer.state is None or answer.state.is_final
        if record.id in unfinished_ids and (gone or record.id in waiting and answer.state is not State.QUEUED):
            again.append(record)
    # they may have ended between the status read and the query, or have just left the queue: read their folders
    # again, all in one request (with the exit code and the scheduler's log, in case the runner could not say)
    files = _Files(target, [path for r in again if not r.elements
                            for path in (paths[r.id].status_json, paths[r.id].exit_code, paths[r.id].scheduler_log,
                                         paths[r.id].scheduler_err)])
    again_ids = {record.id for record in again}
    seen = {}
    for record in records:
        p, status = paths[record.id], statuses[record.id]
        answer = answers.get(record.scheduler_id, SchedulerState(None))
        exit_code, tail = None, ""
        gone = answer.state is None or answer.state.is_final
        if record.id in again_ids:
            status = read_status(target, record, p, answer, files=files)
            if gone and (status or {}).get("state") not in ("done", "failed", "cancelled") and not record.elements:
                exit_code = _read_exit_code(files, p)
                tail = _log_tail(files, p)
        seen[record.id] = Observation(status, exit_code, answer, tail)
    return seen


# ---------------------------------------------------------------------------- the per-target monitor thread

FIRST_GAP = 2.0         # seconds from the first scheduler query after a change to the second; each gap then doubles
FOLDER_GAP = 0.5        # the folders of running jobs are read this often at first...
FOLDER_SHARE = 60.0     # ...then every 1/60 of the quiet time: a job's end shows within 2% of the time it ran
#: A --bg cell waiting in a hold's queue has its ticket looked for this often (a listing of the hold's ``queue/``,
#: no scheduler command): the hold takes it when a core frees, and it is seen started then, not at the next query.
HELD_WAIT = 0.2


def scheduler_gap(quiet: float, ceiling: float = DEFAULT_POLL_INTERVAL) -> float:
    """Seconds from a scheduler query made ``quiet`` seconds after the last change to the next query.

    The gaps double from ``FIRST_GAP``: queries 0, 2, 6, 14 and 30 s after a job is
    watched or changes state, then every ``ceiling`` seconds (the target's ``poll_interval``).
    """
    gap = FIRST_GAP
    while 0 < gap < ceiling and gap * 2 <= quiet + FIRST_GAP:
        gap *= 2
    return min(gap, ceiling)


def folder_gap(quiet: float, ceiling: float = DEFAULT_POLL_INTERVAL) -> float:
    """Seconds between two reads of running jobs' folders (``status.json``) ``quiet`` seconds after the last change.

    Every ``FOLDER_GAP`` seconds at first, so that a short job's end shows at once; then
    every ``1/FOLDER_SHARE`` of the quiet time; never less often than every ``ceiling`` seconds.
    """
    return min(max(FOLDER_GAP, quiet / FOLDER_SHARE), ceiling)


class PollSchedule:
    """When a monitor next asks the scheduler about its jobs, and when it next reads running jobs' folders.

    Times are seconds on the monitor's clock. ``changed(now)`` (a job watched, or one
    changing state) starts both back-offs over; ``asked(now)`` and ``read(now)`` record a look.
    """

    def __init__(self, ceiling: float = DEFAULT_POLL_INTERVAL):
        self.ceiling = ceiling
        self.last_change = float("-inf")
        self.last_asked: float | None = None
        self.last_read: float | None = None

    def changed(self, now: float) -> None:
        self.last_change = max(self.last_change, now)

    def asked(self, now: float) -> None:
        self.last_asked = self.last_read = now      # a query round reads the folders of jobs not queued as well

    def read(self, now: float) -> None:
        self.last_read = now

    def next_query(self) -> float:
        """When the scheduler is next due to be asked."""
        if self.last_asked is None:
            return float("-inf")
        return self.last_asked + scheduler_gap(max(0.0, self.last_asked - self.last_change), self.ceiling)

    def next_read(self) -> float:
        """When the folders of jobs not waiting in the queue are next due to be read."""
        if self.last_read is None:
            return float("-inf")
        return self.last_read + folder_gap(max(0.0, self.last_read - self.last_change), self.ceiling)

    def next_look(self, reading: bool) -> float:
        """When the next look of either kind is due; ``reading``: some job's folder is worth reading between queries."""
        return min(self.next_query(), self.next_read()) if reading else self.next_query()


class Monitor:
    """One thread per target that watches all its live jobs.

    The scheduler is asked about all of them in one query (one ``observe``) on the
    back-off of ``PollSchedule``; in between, only the folders of jobs not waiting in
    the queue are read. A job watched, or a watched job changing state, starts the
    back-off over. ``watch(job, on_change, on_end)``: ``on_change(job)`` after each
    round that looked at the job, ``on_end(job)`` once it has ended. The thread ends
    by itself when no job is left to watch, at interpreter exit, or on ``stop()``
    (``%rx stop``).

    ``clock`` is the monitor's time (``time.monotonic``). With ``background=False`` no
    thread is started: the owner calls ``poll()`` (tests step a monitor on a clock of their own).
    """

    def __init__(self, target_name: str, *, clock=time.monotonic, background: bool = True):
        self.target_name = target_name
        self.clock = clock
        self.background = background
        self.schedule = PollSchedule()
        self._lock = threading.Lock()
        self._watched: dict[str, tuple] = {}
        self._last_seen: dict[str, Observation] = {}
        self._target: Target | None = None
        self._failed = False
        self._retry_in = 0.0
        self._held_due = float("-inf")     # when the tickets of cells waiting in holds are next looked for
        self._wake = threading.Event()
        self._stopping = threading.Event()     # the running thread's own; a new thread gets a new one
        self._thread: threading.Thread | None = None
        self.rounds = 0         # looks at the jobs
        self.queries = 0        # of which asked the scheduler

    def __repr__(self) -> str:
        return f"<Monitor {self.target_name}: {len(self._watched)} jobs{'' if self.running else ', stopped'}>"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def job_ids(self) -> list[str]:
        with self._lock:
            return list(self._watched)

    def watch(self, job, on_change=None, on_end=None) -> None:
        with self._lock:
            self._watched[job.id] = (job, on_change, on_end)
            self._last_seen.pop(job.id, None)
            self.schedule.changed(self.clock())
            if self.background and self._thread is None:
                self._stopping = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stopping,),
                                                name=f"rx_magic monitor {self.target_name}", daemon=True)
                self._thread.start()
        self._wake.set()

    def unwatch(self, job_id: str) -> None:
        with self._lock:
            self._watched.pop(job_id, None)
            self._last_seen.pop(job_id, None)

    def stop(self, timeout: float = 5.0) -> int:
        """Stop watching; return how many jobs were being watched. The jobs themselves go on."""
        with self._lock:
            count, thread = len(self._watched), self._thread
            self._watched.clear()
            self._last_seen.clear()
            self._stopping.set()
            self._thread = None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return count

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            with self._lock:
                if not self._watched:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
            self._wake.wait(self.poll())
            self._wake.clear()

    def poll(self) -> float:
        """Look at the watched jobs if a look is due; return the seconds until the next one is."""
        now = self.clock()
        with self._lock:
            watched = list(self._watched.values())
        live = [job for job, _, _ in watched if not job.record.state.is_final]
        ask = bool(live) and now >= self.schedule.next_query()
        # between queries only the folders of jobs not known to wait in the queue are read
        looked_at = live if ask else [job for job in live if job.record.state is not State.QUEUED]
        if not ask and now < self.schedule.next_read():
            looked_at = []
        held_due = not ask and now >= self._held_due and any(_waits_in_hold(job) for job in live)
        if looked_at or held_due:
            try:
                target = self._current_target(fresh=ask or self._failed)
                self.schedule.ceiling = target.config.poll_interval
                if held_due:
                    self._held_due = now + HELD_WAIT
                    if _left_hold_queue(target, [job.record for job in live if _waits_in_hold(job)]):
                        ask, looked_at = True, live     # taken (or taken back): the hold says how, at once
                seen = observe(target, [job.record for job in looked_at], ask) if looked_at else {}
            except (RxError, OSError) as exc:
                self._failed = True
                self._retry_in = min(self.schedule.ceiling, max(FOLDER_GAP, self._retry_in * 2))
                for job, on_change, _ in watched:
                    job.outage = str(exc)
                    _call(on_change, job)
                return self._retry_in
            self._failed, self._retry_in = False, 0.0
        if looked_at:
            self._settle(looked_at, seen, now)
            if ask:
                self.schedule.asked(now)
            else:
                self.schedule.read(now)
            self.rounds += 1
            self.queries += ask
        looked = {job.id for job in looked_at}
        for job, on_change, on_end in watched:
            ended = job.record.state.is_final
            if job.id in looked or ended or (looked and getattr(job, "outage", "")):
                job.outage = ""
                _call(on_change, job)
            if ended:
                with self._lock:
                    current = self._watched.get(job.id)
                    if current is None or current[0] is not job:
                        continue    # unwatched meanwhile (``%rx attach``, ``%rx stop``)
                    del self._watched[job.id]
                    self._last_seen.pop(job.id, None)
                _call(on_end, job)
        reading = any(job.record.state is not State.QUEUED and not job.record.state.is_final for job in live)
        due = self.schedule.next_look(reading)
        if any(_waits_in_hold(job) for job in live):
            due = min(due, self._held_due)
        return max(0.0, due - self.clock())

    def _settle(self, jobs: list, seen: dict[str, Observation], now: float) -> None:
        """Take each job's observation; a job changing state starts the back-off over."""
        changed = False
        for job in jobs:
            observation = seen[job.id]
            if observation != self._last_seen.get(job.id):
                # news: read the job's record again first, as another handle (``%rx cancel``,
                # another kernel) may have cancelled or ended it; unchanged news needs no second look
                try:
                    job.record = job._registry.get(job.id)
                except KeyError:    # removed from the registry (``%rx clean``): what this handle knows stands
                    pass
                self._last_seen[job.id] = observation
            before = job.record.state
            job.settle(observation)
            changed = changed or job.record.state is not before
        if changed:
            self.schedule.changed(now)

    def _current_target(self, fresh: bool) -> Target:
        """The target: its configuration is read again when the scheduler is asked or after a failed round, and
        whenever ``get_target`` has put a new one in place of the one kept here (its configuration changed)."""
        if fresh or self._target is None or open_target(self.target_name) is not self._target:
            self._target = get_target(self.target_name)
        return self._target


def _waits_in_hold(job) -> bool:
    return job.record.state in (State.SUBMITTED, State.QUEUED) and bool(hold_of(job.record.scheduler_id))


def _left_hold_queue(target: Target, records: list[JobRecord]) -> bool:
    """Whether the ticket of some job waiting in a hold has left the hold's ``queue/`` (one listing per hold)."""
    by_hold: dict[str, set[str]] = {}
    for record in records:
        by_hold.setdefault(HoldPaths(record.workdir, hold_of(record.scheduler_id)).queue_dir, set()).add(record.id)
    return any(not waiting <= set(target.transport.listdir(queue)) for queue, waiting in by_hold.items())


def _call(callback, job) -> None:
    if callback is None:
        return
    try:
        callback(job)
    except Exception:   # a broken callback must not stop the watching of other jobs
        logging.getLogger("rx_magic").exception("rx_magic monitor callback failed for %s", job.id)


_monitors: dict[str, Monitor] = {}
_monitors_lock = threading.Lock()


def monitor_for(target_name: str) -> Monitor:
    """The one monitor of a target, made on first use."""
    with _monitors_lock:
        monitor = _monitors.get(target_name)
        if monitor is None:
            monitor = _monitors[target_name] = Monitor(target_name)
        return monitor


def _all_monitors() -> list[Monitor]:
    with _monitors_lock:
        return list(_monitors.values())


def running_monitors() -> list[Monitor]:
    return [monitor for monitor in _all_monitors() if monitor.running]


def stop_monitors() -> tuple[int, int]:
    """Stop every monitor (``%rx stop``, interpreter exit); return (monitors, jobs) that were watched.

    Each monitor's thread is joined, so nothing polls once this returns: stop the
    monitors before closing the registry or the targets they use.
    """
    monitors = running_monitors()
    jobs = sum(monitor.stop() for monitor in _all_monitors())
    return len(monitors), jobs


def _stop_at_exit() -> None:
    for monitor in _all_monitors():
        monitor.stop(timeout=1.0)


atexit.register(_stop_at_exit)

"""Watching jobs: one scheduler query and one status read per job per round.

``observe`` is one round for many jobs of one target; blocking cells call it
in a loop, and a background monitor thread will call it for all live jobs.
"""

from __future__ import annotations

import json

from .jobs import JobPaths
from .registry import JobRecord
from .states import Observation, SchedulerState, stopped_from_outside
from .targets import Target


def read_json(target: Target, path: str):
    try:
        return json.loads(target.transport.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None


def _read_exit_code(target: Target, paths: JobPaths) -> int | None:
    try:
        return int(target.transport.read_bytes(paths.exit_code).strip())
    except (FileNotFoundError, ValueError):
        return None


def _log_tail(target: Target, paths: JobPaths, lines: int = 5) -> str:
    text = ""
    for path in (paths.scheduler_log, paths.scheduler_err):
        try:
            text += target.transport.read_bytes(path).decode(errors="replace")
        except FileNotFoundError:
            pass
    return " | ".join(text.strip().splitlines()[-lines:])


def read_status(target: Target, record: JobRecord, paths: JobPaths, scheduler: SchedulerState | None = None):
    """The job's ``status.json``; for a job array, what its elements add up to (``arrays.array_status``)."""
    if not record.elements:
        return read_json(target, paths.status_json)
    from .arrays import array_status, read_progress
    started, ended = read_progress(target.transport, paths, record.elements)
    return array_status(record.elements, started, ended, scheduler, record.cancel_requested)


def observe(target: Target, records: list[JobRecord], ask_scheduler: bool = True) -> dict[str, Observation]:
    """What each job's folder, and (when asked) the scheduler, say now."""
    paths = {record.id: JobPaths(record.workdir, record.id) for record in records}
    statuses = {record.id: read_status(target, record, paths[record.id]) for record in records}
    # a job stopped by a signal from outside is asked about even so: its scheduler may know why (walltime, memory)
    unfinished = [r for r in records if (statuses[r.id] or {}).get("state") not in ("done", "failed", "cancelled")
                  or stopped_from_outside(statuses[r.id])]
    ask_scheduler = ask_scheduler or any(stopped_from_outside(statuses[r.id]) for r in records)
    answers: dict[str, SchedulerState] = {}
    if ask_scheduler and unfinished:
        answers = target.scheduler.query(
            target.transport, {r.scheduler_id: paths[r.id].folder for r in unfinished if r.scheduler_id})
    seen = {}
    for record in records:
        p, status = paths[record.id], statuses[record.id]
        if not ask_scheduler:
            seen[record.id] = Observation(status, None, None)
            continue
        answer = answers.get(record.scheduler_id, SchedulerState(None))
        exit_code, tail = None, ""
        if record in unfinished and (answer.state is None or answer.state.is_final):
            # the job may have ended between the status read and the query: read its folder again
            status = read_status(target, record, p, answer)
            if (status or {}).get("state") not in ("done", "failed", "cancelled") and not record.elements:
                exit_code = _read_exit_code(target, p)
                tail = _log_tail(target, p)
        seen[record.id] = Observation(status, exit_code, answer, tail)
    return seen


# ---------------------------------------------------------------------------- the per-target monitor thread

import atexit  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

def poll_interval(age: float) -> float:
    """Seconds between two looks at jobs whose youngest is ``age`` seconds old: often at first, rarely later."""
    for younger_than, interval in ((30, 0.5), (120, 1.0), (600, 3.0), (3600, 10.0)):
        if age < younger_than:
            return interval
    return 30.0


SCHEDULER_EVERY = 2.0     # the scheduler is asked at most this often; the folder every round


class Monitor:
    """One thread per target that watches all its live jobs: one ``observe`` (one scheduler query) a round.

    ``watch(job, on_change, on_end)``: ``on_change(job)`` after every round,
    ``on_end(job)`` once the job has ended. The thread ends by itself when no
    job is left to watch, at interpreter exit, or on ``stop()`` (``%rx stop``).
    """

    def __init__(self, target_name: str):
        self.target_name = target_name
        self._lock = threading.Lock()
        self._watched: dict[str, tuple] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()     # the running thread's own; a new thread gets a new one
        self._thread: threading.Thread | None = None
        self.rounds = 0

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
            self._watched[job.id] = (job, on_change, on_end, time.time())
            if self._thread is None:
                self._stopping = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stopping,),
                                                name=f"rx_magic monitor {self.target_name}", daemon=True)
                self._thread.start()
        self._wake.set()

    def unwatch(self, job_id: str) -> None:
        with self._lock:
            self._watched.pop(job_id, None)

    def stop(self, timeout: float = 5.0) -> int:
        """Stop watching; return how many jobs were being watched. The jobs themselves go on."""
        with self._lock:
            count, thread = len(self._watched), self._thread
            self._watched.clear()
            self._stopping.set()
            self._thread = None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return count

    def _run(self, stopping: threading.Event) -> None:
        from .errors import RxError
        from .targets import get_target
        last_asked = 0.0
        while not stopping.is_set():
            with self._lock:
                watched = list(self._watched.values())
                if not watched:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
            now = time.time()
            youngest = min(now - max(job.record.submitted_at, since) for job, _, _, since in watched)
            interval = poll_interval(youngest)
            ask = time.monotonic() - last_asked >= max(SCHEDULER_EVERY, interval)
            if ask:
                last_asked = time.monotonic()
            try:
                target = get_target(self.target_name)
                for job, _, _, _ in watched:    # another handle (``%rx cancel``) may have ended it
                    try:
                        job.record = job._registry.get(job.id)
                    except KeyError:
                        pass
                live = [job for job, _, _, _ in watched if not job.record.state.is_final]
                seen = observe(target, [job.record for job in live], ask) if live else {}
                for job in live:
                    job.settle(seen[job.id])
            except (RxError, OSError) as exc:
                for job, on_change, _, _ in watched:
                    job.outage = str(exc)
                    _call(on_change, job)
                self._wake.wait(min(30.0, interval * 4))
                self._wake.clear()
                continue
            self.rounds += 1
            for job, on_change, on_end, _ in watched:
                job.outage = ""
                _call(on_change, job)
                if job.record.state.is_final:
                    with self._lock:
                        current = self._watched.get(job.id)
                        if current is None or current[0] is not job:
                            continue    # unwatched meanwhile (``%rx attach``, ``%rx stop``)
                        del self._watched[job.id]
                    _call(on_end, job)
            self._wake.wait(interval)
            self._wake.clear()


def _call(callback, job) -> None:
    if callback is None:
        return
    try:
        callback(job)
    except Exception:   # a broken callback must not stop the watching of other jobs
        logging.getLogger("rx_magic").exception("rx_magic monitor callback failed for %s", job.id)


_monitors: dict[str, Monitor] = {}


def monitor_for(target_name: str) -> Monitor:
    """The one monitor of a target, made on first use."""
    monitor = _monitors.get(target_name)
    if monitor is None:
        monitor = _monitors.setdefault(target_name, Monitor(target_name))
    return monitor


def running_monitors() -> list[Monitor]:
    return [monitor for monitor in _monitors.values() if monitor.running]


def stop_monitors() -> tuple[int, int]:
    """Stop every monitor (``%rx stop``, interpreter exit); return (monitors, jobs) that were watched."""
    monitors = running_monitors()
    jobs = sum(monitor.stop() for monitor in list(_monitors.values()))
    return len(monitors), jobs


def _stop_at_exit() -> None:
    for monitor in list(_monitors.values()):
        monitor.stop(timeout=1.0)


atexit.register(_stop_at_exit)

"""A hold's warm worker: ``python worker.py HOLD_FOLDER``, the body of one long batch job.

It watches ``{workdir}/.rx/holds/{hold_id}/`` (``layout.HoldPaths``) on the shared filesystem: no port,
nothing listening. The notebook drops a ticket ``queue/{job_id}`` for a job folder it has written; the
worker claims it by renaming it to ``taken/{job_id}`` (atomic: taken once, whoever else looks) and runs the
folder in a child -- the same files a fresh job writes (``status.json``, logs, results), so the notebook
watches and pulls it as any job. A cell with a walltime or memory limit runs under the runner's own
``Supervisor``; any other is the child's own work, and the worker writes its ending as a supervisor would.
The child is forked ahead of time (a *spare*, waiting on a pipe), so a cell starts without a fork. Cells run
side by side up to the hold's cores and memory; the elements of a ``--map`` spread over its cores, each
core's *lane* running them one after another in its own process.

On one machine nothing waits for a timer: the notebook writes a byte to the worker's FIFO ``wake`` (named in
``ready.json``) when it drops a ticket, and the worker writes one to the FIFO the ticket names (``end_notice``)
when that job has ended, which the waiting cell blocks on. Elsewhere (a notebook over SSH, a worker on another
node) neither is opened, and each side looks on its own.

It ends, writing ``ended.json`` with the reason, when asked (``release``: running cells finish first), when
idle for its ``idle`` seconds, at its walltime, or when stopped by a signal (the batch system's at walltime,
or a cancel): cells still running then fail with that reason. Queued tickets are left for the notebook to
send to the scheduler. Standard library only, beside ``runner.py`` and ``layout.py``.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import signal
import socket
import stat
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import layout  # noqa: E402 - the hold folder's and job folders' file names
import runner  # noqa: E402 - the Supervisor that runs one job folder

POLL = 0.02             # seconds between two looks at queue/ when nothing happens (and no one woke it)
WAKE = "wake"           # the FIFO in the hold folder a notebook on this machine writes to when it drops a ticket
BEAT_EVERY = 2.0        # seconds between two heartbeats (the notebook sees beat's content change)
NO_ELEMENT = struct.pack("q", -1)     # what a lane's ``current`` holds between elements
SPARE_AFTER = 0.05      # seconds after the last start before a spare child is forked (not while a cell starts)
STOP_GRACE = 8.0        # seconds running cells get to record their end once the hold is stopped
KILL_AFTER = 5.0        # seconds a cancelled cell with no supervisor has after SIGTERM before SIGKILL (as the runner's)
ENDINGS = {
    "released": "the hold was released",
    "idle": "the hold ended, idle",
    "walltime": "the hold reached its walltime",
    "killed": "the hold was killed",
}


_write_json = runner._write_json        # the runner's: a private temporary file renamed into place
_read_json = runner._read_json          # the runner's: None for a file missing or half-written


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _with_limits(spec: dict) -> dict:
    """The job's spec with the limits the runner enforces in a hold: the batch system enforces a fresh job's; in a
    hold the cell's own walltime and memory are the runner's to enforce."""
    limits, asked = dict(spec.get("limits") or {}), spec.get("resources") or {}
    for name in ("walltime", "mem"):
        if not limits.get(name) and asked.get(name):
            limits[name] = asked[name]
    return {**spec, "limits": limits}


def _signal(pid: int, unit: Unit, signum: int) -> None:
    """Signal a unit: a cell the child runs itself with its process group (its own, as the supervisor gives it)."""
    try:
        if unit.direct:
            try:
                os.killpg(pid, signum)
                return
            except ProcessLookupError:
                pass    # not yet in its own group
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


class Unit:
    """One thing running on the worker's cores: a job, or a *lane* of a ``--map`` job (a child that runs its
    elements one after another, claiming each by creating its folder, so no element runs twice; in its own
    process when the cell has no walltime or memory limit, ``runner.run_element_in_lane``). A lane says which
    element it runs in ``current``, memory it shares with the worker: if the lane dies, that element fails with
    how it died, and another lane takes the elements left."""

    def __init__(self, job_id: str, ncpus: int, mem: int, lane: bool = False, end_notice: str | None = None):
        self.job_id, self.ncpus, self.mem, self.lane = job_id, ncpus, mem, lane
        self.end_notice = end_notice    # the ticket's FIFO, relative to the hold folder, to write once it ended
        self.current = None             # a lane's: 8 shared bytes, the element it runs (-1: none)
        self.direct = False             # a cell run by the child itself, its ending recorded by the worker
        self.started = time.time()
        self.peak = 0                   # the child's peak resident memory, in bytes, once it ended
        self.status: int | None = None  # its wait status, once it ended

    def message(self) -> bytes:
        """What a spare child needs to run the unit."""
        return json.dumps({"job_id": self.job_id, "ncpus": self.ncpus, "mem": self.mem,
                           "end_notice": self.end_notice, "direct": self.direct}).encode()


class Worker:
    def __init__(self, folder: str):
        folder = os.path.abspath(folder)
        workdir = os.path.dirname(os.path.dirname(os.path.dirname(folder)))     # {workdir}/.rx/holds/{id}
        self.paths = layout.HoldPaths(workdir, os.path.basename(folder))
        hold = _read_json(self.paths.hold_json) or {}
        self.cores = int(hold.get("ncpus") or _cores())
        self.mem = int(hold.get("mem") or 0)
        self.idle = float(hold.get("idle") or 1200)
        self.walltime = float(hold.get("walltime") or 0)
        self.started = time.time()
        self.last_busy = time.monotonic()
        self.last_beat = 0.0
        self.running: dict[int, Unit] = {}
        self.ends: dict[int, int | None] = {}   # pid -> a pidfd that turns readable when that child ends
        self.pending: list[Unit] = []           # lanes of claimed --map jobs not started yet
        self.maps: dict[str, int] = {}          # job_id -> its lanes not yet ended
        self.cancelled: set[str] = set()        # jobs the notebook asked to cancel
        self.stopped: list[Unit] = []           # ended when the worker was stopped: they end with its reason
        self.signalled: int | None = None
        self.releasing = False
        self.wake: list[int] = []               # the wake FIFO: the end it is read from, and one held open for writing
        self.spare: tuple[int, int] | None = None   # a child forked ahead, waiting for a cell: its pid, its pipe
        self.kill_at: dict[int, float] = {}     # pid -> when a cancelled unit with no supervisor gets SIGKILL
        self.last_start = 0.0

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        os.makedirs(self.paths.queue_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.paths.taken_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.paths.cancel_dir, mode=0o700, exist_ok=True)
        for name in ("ctypes", "mmap", "resource", "types", "dill", "wire", "process_state"):
            try:    # warm: every cell forked from here finds these imported
                __import__(name)
            except ImportError:
                pass    # the cell's runner names what is missing
        self._beat()
        self._open_wake()
        _write_json(self.paths.ready_json, {"wake": WAKE if self.wake else None,
            "host": socket.gethostname(), "cores": self.cores, "mem": self.mem or None, "pid": os.getpid(),
            "started": self.started, "walltime": self.walltime or None, "idle": self.idle,
            "python": "%d.%d.%d" % sys.version_info[:3]})
        while True:
            self._reap()
            self._kill_overdue()
            if self.signalled is not None:
                elapsed = time.time() - self.started
                at_walltime = self.walltime and elapsed >= self.walltime - min(60.0, self.walltime * 0.1)
                return self.end("walltime" if at_walltime else "killed")
            if self.walltime and time.time() - self.started >= self.walltime:
                return self.end("walltime")
            if not self.releasing and os.path.lexists(self.paths.release):
                self.releasing = True
            if self.running or self.pending:
                self._cancel_asked()
            queued = [] if self.releasing else self._queued()
            if self.running or self.pending or queued:
                self.last_busy = time.monotonic()
            self._start(queued)
            if self.releasing and not self.running and not self.pending:
                return self.end("released")
            if not self.running and not self.pending and time.monotonic() - self.last_busy >= self.idle:
                return self.end("idle")
            if time.monotonic() - self.last_beat >= BEAT_EVERY:
                self._beat()
            if self.spare is None and not self.releasing and time.monotonic() - self.last_start >= SPARE_AFTER:
                self._fork_spare()
            self._nap()

    def _on_signal(self, signum, _frame) -> None:
        self.signalled = signum

    def _nap(self) -> None:
        """Wait ``POLL`` seconds, or less when a running child ends (its pidfd, Linux): a --map's next
        element starts the moment a core frees; or when a notebook here wakes it (a ticket is waiting)."""
        fds = [fd for fd in self.ends.values() if fd is not None] + self.wake[:1]
        if not fds:
            time.sleep(POLL)
            return
        try:
            ready, _, _ = select.select(fds, [], [], POLL)
        except InterruptedError:
            return
        if self.wake and self.wake[0] in ready:
            try:
                while os.read(self.wake[0], 512):
                    pass
            except OSError:     # emptied (EAGAIN)
                pass

    def _open_wake(self) -> None:
        """Make the wake FIFO (private, in the hold's private folder) and hold it open both ways (never at end
        of file); without it the worker still finds tickets by looking every ``POLL`` seconds."""
        path = os.path.join(self.paths.folder, WAKE)
        try:
            if os.path.lexists(path):
                os.remove(path)
            os.mkfifo(path, 0o600)
            reading = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.wake = [reading, os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)]
        except (OSError, AttributeError):
            self.wake = []

    def _notify(self, unit: Unit) -> None:
        """Write a byte to the FIFO the unit's ticket named (a notebook on this machine blocks on it), and remove
        it; only a FIFO of this user's in the hold folder, and only when someone has it open (else nothing)."""
        if not unit.end_notice:
            return
        path = os.path.normpath(os.path.join(self.paths.folder, unit.end_notice))
        if not path.startswith(self.paths.folder + os.sep):
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:     # no one waits on it here (ENXIO), or it is gone
            fd = None
        if fd is not None:
            try:
                info = os.fstat(fd)
                if stat.S_ISFIFO(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
                    os.write(fd, b"e")
            except OSError:
                pass
            finally:
                os.close(fd)
        try:
            os.remove(path)
        except OSError:
            pass

    def _beat(self) -> None:
        _write_json(self.paths.beat, {"beat": time.time(), "running": len(self.running)})
        self.last_beat = time.monotonic()

    # ------------------------------------------------------------------ tickets
    def _queued(self) -> list[str]:
        """The queued tickets, oldest first; only the user's own files (no one else's folder gets run)."""
        names = []
        try:
            entries = list(os.scandir(self.paths.queue_dir))
        except OSError:
            return []
        for entry in entries:
            if not layout.is_job_id(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
                names.append(entry.name)
        return sorted(names)

    def _cancel_asked(self) -> None:
        """Stop the jobs the notebook asked to cancel (``cancel/{job_id}``): their supervisors record the end."""
        try:
            asked = {name for name in os.listdir(self.paths.cancel_dir) if layout.is_job_id(name)}
        except OSError:
            return
        for job_id in asked:
            self.cancelled.add(job_id)
            for pid, unit in list(self.running.items()):
                if unit.job_id == job_id:
                    _signal(pid, unit, signal.SIGTERM)
                    if unit.direct or unit.lane:    # no supervisor of its own to insist: the worker does
                        self.kill_at.setdefault(pid, time.monotonic() + KILL_AFTER)
            for unit in [unit for unit in self.pending if unit.job_id == job_id]:
                self.pending.remove(unit)
                self._ended(unit, 0, reason="cancelled")
            try:
                os.remove(os.path.join(self.paths.cancel_dir, job_id))
            except OSError:
                pass

    def _kill_overdue(self) -> None:
        """SIGKILL a cancelled cell (or lane) that outlived its SIGTERM by ``KILL_AFTER`` seconds (its own handler
        caught it), as a supervisor does to its cell."""
        now = time.monotonic()
        for pid, when in list(self.kill_at.items()):
            if pid not in self.running:
                del self.kill_at[pid]
            elif now >= when:
                _signal(pid, self.running[pid], signal.SIGKILL)
                del self.kill_at[pid]

    def _free(self) -> tuple[int, int]:
        cores = self.cores - sum(unit.ncpus for unit in self.running.values())
        mem = self.mem - sum(unit.mem for unit in self.running.values()) if self.mem else 0
        return cores, mem

    def _fits(self, ncpus: int, mem: int) -> bool:
        cores, free_mem = self._free()
        return ncpus <= cores and (not self.mem or not mem or mem <= free_mem)

    def _start(self, queued: list[str]) -> None:
        while self.pending and self._fits(self.pending[0].ncpus, self.pending[0].mem):
            self._fork(self.pending.pop(0))
        for job_id in queued:
            if self.pending:
                return      # a --map's elements go first, in order
            ticket = _read_json(os.path.join(self.paths.queue_dir, job_id)) or {}
            ncpus, mem = max(1, int(ticket.get("ncpus") or 1)), int(ticket.get("mem") or 0)
            notice = ticket.get("end_notice") if isinstance(ticket.get("end_notice"), str) else None
            elements = int(ticket.get("elements") or 0)
            if not self._fits(ncpus, 0 if elements else mem):
                return      # first come, first served: a later small cell does not overtake it
            try:
                os.rename(self.paths.queued(job_id), self.paths.taken(job_id))
            except OSError:
                continue    # taken back by the notebook (the hold looked dead to it), or gone
            if elements:
                lanes = max(1, min(elements, self.cores // ncpus))
                self.maps[job_id] = lanes
                self.pending.extend(Unit(job_id, ncpus, mem, lane=True, end_notice=notice) for _ in range(lanes))
                return self._start([])
            self._fork(Unit(job_id, ncpus, mem, end_notice=notice))

    def _fork(self, unit: Unit) -> None:
        job_paths = layout.JobPaths(self.paths.workdir, unit.job_id)
        self.last_start = time.monotonic()
        if unit.lane:
            unit.current = mmap.mmap(-1, 8)
            unit.current[:] = NO_ELEMENT
        else:   # a cell with no walltime or memory of its own to enforce needs no supervisor: the worker is one
            spec = _read_json(job_paths.job_json) or {}
            unit.direct = spec.get("format") == layout.SPEC_FORMAT and not runner.needs_supervisor(_with_limits(spec))
        pid = self._hand_to_spare(unit) if not unit.lane else None
        if pid is None:
            ticket = _read_json(self.paths.taken(unit.job_id)) or {}
            pid = os.fork()
            if pid == 0:
                code = 3    # the runner's own code for "the runner failed"
                try:
                    code = self._child(job_paths, ticket, unit)
                finally:
                    os._exit(code)
        unit.started = time.time()
        self.running[pid] = unit
        try:
            self.ends[pid] = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        except OSError:
            self.ends[pid] = None

    def _fork_spare(self) -> None:
        """Fork a child ahead of time that waits for a cell (``_spare``): the next cell starts without a fork,
        which costs a loaded machine several milliseconds with the runtime's modules imported."""
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.close(writing)
                code = self._spare(reading)
            finally:
                os._exit(code)
        os.close(reading)
        self.spare = (pid, writing)

    def _spare(self, reading: int) -> int:
        """In the spare child: wait for the unit to run (``Unit.message``), then run it; nothing: end."""
        self._detach()
        message = b""
        while True:
            piece = os.read(reading, 65536)
            if not piece:
                break
            message += piece
        os.close(reading)
        if not message:
            return 0    # not needed: the worker ends
        said = json.loads(message)
        unit = Unit(said["job_id"], said["ncpus"], said["mem"], end_notice=said["end_notice"])
        unit.direct = bool(said["direct"])
        ticket = _read_json(self.paths.taken(unit.job_id)) or {}
        return self._child(layout.JobPaths(self.paths.workdir, unit.job_id), ticket, unit)

    def _hand_to_spare(self, unit: Unit) -> int | None:
        """Give the unit to the spare child; its pid, or None when there is none (or it died)."""
        if self.spare is None:
            return None
        pid, writing = self.spare
        self.spare = None
        try:
            os.write(writing, unit.message())
        except OSError:
            return None     # it died: reaped as a child that runs nothing
        finally:
            os.close(writing)
        return pid

    def _end_spare(self) -> None:
        if self.spare is not None:
            pid, writing = self.spare
            self.spare = None
            os.close(writing)       # it reads the end of the pipe, and exits
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def _detach(self) -> None:
        """In a child: the default signal actions, death with the worker, none of the worker's descriptors."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_DFL)
        runner.die_with_parent()     # a cell stops with its worker, as it would with its batch job
        for fd in [*self.wake, *(fd for fd in self.ends.values() if fd is not None)]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake, self.ends = [], {}
        if self.spare is not None:
            os.close(self.spare[1])
            self.spare = None

    def _child(self, job_paths: layout.JobPaths, ticket: dict, unit: Unit) -> int:
        """In the forked child: what ``job.sh`` does for a fresh job, then the runner's supervisor, or the cell
        itself (``unit.direct``: the worker records its ending)."""
        self._detach()
        os.umask(0o077)
        log = os.open(job_paths.scheduler_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.environ["RX_MAGIC_HOLD"] = self.paths.hold_id
        try:
            os.chdir(ticket.get("cwd") or job_paths.folder)
        except OSError as exc:
            print(f"rx_magic worker: cannot enter {ticket.get('cwd')}: {exc}", file=sys.stderr)
            return 96
        spec = _read_json(job_paths.job_json)
        if spec is None or spec.get("format") != layout.SPEC_FORMAT:
            print(f"rx_magic worker: cannot read {job_paths.job_json} in format {layout.SPEC_FORMAT}", file=sys.stderr)
            return 2
        spec = _with_limits(spec)
        if unit.direct:
            runner.Supervisor(job_paths.folder, spec).write_status("running")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            return runner.CellProcess(job_paths.folder, spec).run()
        if not unit.lane:
            return runner.Supervisor(job_paths.folder, spec).run()
        runner.warm_lane(job_paths.folder, spec)
        here = not runner.needs_supervisor(spec)
        for index in range(int(spec["map"]["size"])):
            unit.current[:] = struct.pack("q", index)
            try:    # claims the element: the kernel reads a folder there as "started"
                os.mkdir(job_paths.element(index).folder, 0o700)
            except FileExistsError:
                unit.current[:] = NO_ELEMENT
                continue
            if here:
                runner.run_element_in_lane(job_paths.folder, spec, index)
                unit.current[:] = NO_ELEMENT
                continue
            supervisor = runner.Supervisor(job_paths.folder, spec, index)
            supervisor.run()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                signal.signal(signum, signal.SIG_DFL)   # between elements a stop signal ends the lane at once
            if supervisor.signalled is not None:
                return 128 + supervisor.signalled     # stopped: the elements left are the worker's to report
        return 0

    def _reap(self) -> None:
        while self.running or self.spare:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._closed(pid)
            if self.spare is not None and pid == self.spare[0]:
                os.close(self.spare[1])     # it died waiting: another is forked
                self.spare = None
            unit = self.running.pop(pid, None)
            if unit is None:
                continue
            unit.status, unit.peak = status, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
            if self.signalled is None and self._stopped_from_outside(unit, status):
                # a batch system stopping the job signals every process in it: the worker's own signal
                # follows at once, and then the cell ends with the hold's reason, not "terminated by signal"
                deadline = time.monotonic() + 1.0
                while self.signalled is None and time.monotonic() < deadline:
                    time.sleep(0.02)
            if self.signalled is not None:
                self.stopped.append(unit)
                continue
            if unit.lane and status and unit.job_id not in self.cancelled:
                self._lane_died(unit, status)
            self._ended(unit, status)

    def _lane_died(self, unit: Unit, status: int) -> None:
        """A lane ended before its elements did (the element it ran in its process crashed, or ended it): that
        element fails saying how, as a forked element's supervisor would say it, and a new lane takes the rest."""
        index = struct.unpack("q", unit.current[:])[0] if unit.current is not None else -1
        job_paths = layout.JobPaths(self.paths.workdir, unit.job_id)
        if index < 0 or os.path.exists(job_paths.element(index).end_marker):
            return      # it died between elements: the elements left go to the lanes still running, or end failed
        spec = _read_json(job_paths.job_json) or {}
        if spec.get("map"):
            supervisor = runner.Supervisor(job_paths.folder, spec, index)
            try:
                supervisor.started = os.stat(job_paths.element(index).folder).st_mtime
            except OSError:
                pass
            supervisor.record(status)
        self.maps[unit.job_id] = self.maps.get(unit.job_id, 0) + 1
        self.pending.append(Unit(unit.job_id, unit.ncpus, unit.mem, lane=True, end_notice=unit.end_notice))

    def _stopped_from_outside(self, unit: Unit, status: int) -> bool:
        """Whether the unit was stopped by a signal the worker did not send (a cancel's)."""
        if unit.job_id in self.cancelled:
            return False
        if os.WIFSIGNALED(status) or (os.WIFEXITED(status) and os.WEXITSTATUS(status) > 128):
            return True     # a lane stopped, or a supervisor killed outright
        job_paths = layout.JobPaths(self.paths.workdir, unit.job_id)
        return not unit.lane and ((_read_json(job_paths.status_json) or {}).get("exit_code") or 0) > 128

    def _closed(self, pid: int) -> None:
        fd = self.ends.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def _ended(self, unit: Unit, status: int, reason: str | None = None) -> None:
        """Record what the supervisor could not (it was killed), and give the ticket back once the job is over."""
        job_paths = layout.JobPaths(self.paths.workdir, unit.job_id)
        if reason is None and unit.job_id in self.cancelled:
            reason = "cancelled"
        if unit.lane:
            self.maps[unit.job_id] = self.maps.get(unit.job_id, 1) - 1
            if self.maps[unit.job_id] > 0:
                return
            del self.maps[unit.job_id]
            self.cancelled.discard(unit.job_id)
            # the last lane has ended: an element it could not finish (or never claimed) ends with the reason
            spec = _read_json(job_paths.job_json) or {}
            failed = 0
            for index in range(int((spec.get("map") or {}).get("size") or 0)):
                paths = job_paths.element(index)
                if not os.path.exists(paths.end_marker) or reason:
                    os.makedirs(paths.folder, mode=0o700, exist_ok=True)
                    self._record_end(paths, status, reason, element=True)
                failed += (_read_json(paths.status_json) or {}).get("state") != "done"
            with open(os.open(job_paths.exit_code, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                file.write(f"{1 if failed else 0}\n")
        else:
            if unit.direct and unit.status is not None:    # what its supervisor would have written
                found = (_read_json(job_paths.status_json) or {}).get("state")
                if found not in layout.FINAL_STATES:
                    spec = _with_limits(_read_json(job_paths.job_json) or {})
                    supervisor = runner.Supervisor(job_paths.folder, spec)
                    supervisor.started = unit.started
                    stopped = reason and os.WIFSIGNALED(unit.status)    # then the reason says why (below)
                    supervisor.record(unit.status, f"signal:{os.WTERMSIG(unit.status)}" if stopped else None,
                                      unit.peak)
            self._record_end(job_paths, status, reason)
            self.cancelled.discard(unit.job_id)
        try:
            os.remove(self.paths.taken(unit.job_id))
        except OSError:
            pass
        self._notify(unit)

    @staticmethod
    def _record_end(paths: layout.JobPaths, status: int, reason: str | None, element: bool = False) -> None:
        found = _read_json(paths.status_json) or {}
        state, killed = found.get("state"), (found.get("exit_code") or 0) > 128
        # a cell that ended by itself keeps its ending; one stopped by a signal takes the worker's reason
        if state == "done" or (state in layout.FINAL_STATES and not (reason and killed)):
            return
        why = reason or (f"the cell's supervisor was killed by {signal.Signals(os.WTERMSIG(status)).name}"
                         if os.WIFSIGNALED(status) else f"the cell's supervisor exited with code "
                         f"{os.WEXITSTATUS(status)} before recording an end")
        now = time.time()
        _write_json(paths.status_json, {**found, "state": "failed", "reason": why, "ended": now,
                                        "elapsed": now - (found.get("started") or now)})
        if not os.path.exists(paths.exit_code):
            with open(os.open(paths.exit_code, os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
                file.write(f"{found.get('exit_code') or 1}\n")
        if element:
            os.close(os.open(paths.end_marker, os.O_WRONLY | os.O_CREAT, 0o600))

    # ------------------------------------------------------------------ the end
    def end(self, reason: str) -> int:
        """Stop what still runs (its cells fail with the reason), record why the hold ended, and exit."""
        said = f"{ENDINGS[reason]} while the cell ran"
        self._end_spare()
        for pid, unit in list(self.running.items()):
            _signal(pid, unit, signal.SIGTERM)  # the supervisor stops its cell and records the end
        deadline = time.monotonic() + STOP_GRACE
        stopped: dict[int, Unit] = {}
        while self.running and time.monotonic() < deadline:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self._closed(pid)
                unit = self.running.pop(pid, None)
                if unit is not None:
                    unit.status = _status
                    stopped[pid] = unit
            else:
                time.sleep(0.05)
        for pid, unit in list(self.running.items()):
            _signal(pid, unit, signal.SIGKILL)
            try:
                unit.status = os.waitpid(pid, 0)[1]
            except OSError:
                pass
            self._closed(pid)
            stopped[pid] = unit
        self.running.clear()
        for unit in [*self.stopped, *stopped.values(), *self.pending]:
            self._ended(unit, 0, reason=said)
        self.pending.clear()
        for fd in self.wake:
            os.close(fd)
        try:
            os.remove(os.path.join(self.paths.folder, WAKE))
        except OSError:
            pass
        _write_json(self.paths.ended_json, {"reason": reason, "said": ENDINGS[reason], "ended": time.time(),
                                                   "started": self.started, "host": socket.gethostname()})
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: worker.py HOLD_FOLDER", file=sys.stderr)
        return 2
    try:
        worker = Worker(argv[1])
    except ValueError as exc:
        print(f"rx_magic worker: {exc}", file=sys.stderr)
        return 2
    return worker.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

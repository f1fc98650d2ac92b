"""How much does watching many jobs cost? Prints its figures; asserts nothing.

    python benchmarks/bench_poll.py [--quick] [--jobs N] [--accounting]

Starts its own single-node Slurm on loopback (tests/slurm.py: munged,
slurmctld and slurmd of its own, in a temporary folder, stopped by PID at the
end, even on error), configures a target ``scheduler = "slurm"`` over the
local transport, submits N (200) cells that sleep for an hour with
``rx_magic.submit`` (a 2-core node runs 8 of them and the rest stay pending:
pending jobs are live jobs too), and lets one ``rx_magic.flow.watch.Monitor``
watch them all, counting:

a. scheduler commands (``sacct``/``squeue``/...) per poll round (goal: 1);
b. scheduler commands per minute once the back-off has set in (goal: <= 4);
c. file reads (and every other transport call) per round: the target's
   transport methods are wrapped, and calls from the monitor thread counted;
d. the monitor thread's CPU time per minute (its own CPU clock, read with
   ``pthread_getcpuclockid``), split into where it goes, and beside it the
   CPU of the scheduler's client processes (children of this process here,
   but on the submit host, not in the kernel, over SSH).

The measured period has two parts. First the monitor watches the new jobs in
real time for two minutes, in slices (0-10 s, 10-30 s, 30 s-1 min, 1-2 min),
as right after a user submits them. The back-off is keyed on the time since a
watched job last changed state or a job was last watched; nothing changes here
(the running jobs sleep for an hour, the others wait), so the monitor's clock
(its ``clock`` attribute, nothing else) is then moved forward and it is
measured again as if nothing had changed for ~5 minutes (the 2-10 min band)
and, without ``--quick``, ~30 and ~100 minutes. Beside the measurements the
report prints what ``monitor.PollSchedule`` itself says per period.
``--accounting`` adds MariaDB and slurmdbd so ``sacct`` answers (about 15 s
more); without it ``sacct`` refuses and ``squeue`` answers, as in the tests.

Every job is cancelled with one ``scancel`` before Slurm is stopped.
Everything runs in temporary XDG folders, so your own jobs are not touched.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import posixpath
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from slurm import LoopbackSlurm, accounting_available, slurm_available

TARGET = "bench"
CELL = "import time\ntime.sleep(3600)"
SCHEDULER_COMMANDS = {"sacct", "squeue", "sbatch", "scancel", "scontrol", "sinfo",
                      "qstat", "qsub", "qdel", "timeout"}
MONITOR_THREAD = "rx_magic monitor"
GOAL_PER_ROUND = 1
GOAL_PER_MINUTE = 4.0


def in_monitor() -> bool:
    return threading.current_thread().name.startswith(MONITOR_THREAD)


# ----------------------------------------------------------------------------- instrumentation


@dataclass
class Round:
    """One ``observe`` call of the monitor thread: one poll round."""

    started: float                      # time.monotonic()
    ask: bool
    jobs: int
    ended: float = 0.0
    commands: list = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)       # transport method -> calls
    reads: Counter = field(default_factory=Counter)       # file name read -> calls
    missing: int = 0                                       # reads of files not there (yet)
    cpu: float = 0.0                                       # thread CPU inside observe
    changes_before: int = 0                                # on_change calls made before this round's
    error: str = ""


class Meter:
    """Wraps the monitor's collaborators to count what one round costs; only the monitor thread is counted."""

    def __init__(self) -> None:
        self.rounds: list[Round] = []
        self.local = threading.local()
        self.cpu = Counter()            # where the monitor thread's CPU goes, cumulative seconds
        self.calls = Counter()          # calls of the wrapped functions from the monitor thread, cumulative
        self.changes = 0                # on_change callbacks
        self.transitions = Counter()    # (state before, state after) of every settle by the monitor
        self.nested = set()             # labels only ever timed inside another timed call
        self.ends = 0                   # on_end callbacks
        self.lock = threading.Lock()

    # -- observe: one round
    def wrap_observe(self, monitor_module) -> None:
        real = monitor_module.observe

        def observe(target, records, ask_scheduler=True):
            if not in_monitor():
                return real(target, records, ask_scheduler)
            current = Round(time.monotonic(), bool(ask_scheduler), len(records))
            self.local.round = current
            cpu = time.thread_time()
            try:
                return real(target, records, ask_scheduler)
            except BaseException as exc:
                current.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                current.cpu = time.thread_time() - cpu
                current.ended = time.monotonic()
                current.changes_before = self.changes
                self.local.round = None
                self.cpu["observe"] += current.cpu
                with self.lock:
                    self.rounds.append(current)

        monitor_module.observe = observe
        self._restore_observe = (monitor_module, real)

    # -- the target's transport, method by method
    def wrap_transport(self, transport) -> None:
        names = ["run", "exists", "read_bytes", "open_read", "listdir", "open_atomic", "write_bytes",
                 "makedirs", "rename", "remove_tree", "expand_home"]
        for name in names:
            real = getattr(transport, name)
            setattr(transport, name, self._counted(name, real))
        self.transport = transport

    def _counted(self, name, real):
        def counted(*args, **kwargs):
            if not in_monitor():
                return real(*args, **kwargs)
            current = getattr(self.local, "round", None)
            if name == "run":
                label = f"run {posixpath.basename(str(args[0][0]))}"
            elif name == "read_bytes":
                label = f"read {posixpath.basename(str(args[0]))}"
            else:
                label = name
            self.calls[label] += 1
            if current is not None:
                current.calls[name] += 1
                if name == "run":
                    current.commands.append(posixpath.basename(str(args[0][0])))
                elif name == "read_bytes":
                    current.reads[posixpath.basename(str(args[0]))] += 1
            cpu = time.thread_time()
            try:
                return real(*args, **kwargs)
            except FileNotFoundError:
                if current is not None:
                    current.missing += 1
                raise
            finally:
                self.cpu[f"transport.{name}"] += time.thread_time() - cpu
        return counted

    # -- what the monitor does around observe: the target looked up, the registry re-read, callbacks
    def wrap_calls(self, owner, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            if not in_monitor():
                return real(*args, **kwargs)
            if getattr(self.local, "depth", 0):     # inside another timed call: its CPU is counted there
                self.nested.add(label)
                self.calls[f"{label} (nested)"] += 1
                return real(*args, **kwargs)
            self.calls[label] += 1
            self.local.depth = 1
            cpu = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                self.cpu[label] += time.thread_time() - cpu
                self.local.depth = 0

        setattr(owner, name, timed)

    def wrap_settle(self, job) -> None:
        """``job.settle``, timed, and every change of state it makes counted."""
        self.wrap_calls(job, "settle", "job.settle")
        timed = job.settle

        def settle(seen):
            before = job.record.state
            after = timed(seen)
            if in_monitor() and after != before:
                self.transitions[(str(before), str(after))] += 1
            return after

        job.settle = settle

    def on_change(self, job) -> None:
        self.changes += 1

    def on_end(self, job) -> None:
        self.ends += 1


class ShiftedClock:
    """The monitor's clock (``time.monotonic``), moved forward by ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def monitor_thread() -> threading.Thread | None:
    for thread in threading.enumerate():
        if thread.name.startswith(MONITOR_THREAD) and thread.is_alive():
            return thread
    return None


def thread_cpu(thread: threading.Thread | None) -> float:
    if thread is None or not thread.is_alive():
        return float("nan")
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Snapshot:
    at: float
    thread_cpu: float
    children_cpu: float
    cpu: Counter
    calls: Counter
    changes: int
    transitions: Counter


def snapshot(meter: Meter) -> Snapshot:
    return Snapshot(time.monotonic(), thread_cpu(monitor_thread()), children_cpu(), Counter(meter.cpu),
                    Counter(meter.calls), meter.changes, Counter(meter.transitions))


@dataclass
class Window:
    """What the monitor did between two snapshots."""

    name: str
    age: str
    start: Snapshot
    end: Snapshot
    rounds: list[Round]

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at

    @property
    def asked(self) -> list[Round]:
        return [r for r in self.rounds if r.ask]

    def per_minute(self, value: float) -> float:
        return value / self.seconds * 60

    @property
    def commands(self) -> int:
        return sum(len(r.commands) for r in self.rounds)

    @property
    def thread_cpu(self) -> float:
        return self.end.thread_cpu - self.start.thread_cpu

    @property
    def children_cpu(self) -> float:
        return self.end.children_cpu - self.start.children_cpu

    def cpu(self, label: str) -> float:
        return self.end.cpu[label] - self.start.cpu[label]

    def calls(self, label: str) -> int:
        return self.end.calls[label] - self.start.calls[label]

    @property
    def transitions(self) -> Counter:
        return self.end.transitions - self.start.transitions

    def gaps(self) -> list[float]:
        """Seconds between the starts of consecutive rounds that asked the scheduler."""
        starts = [r.started for r in self.asked]
        return [b - a for a, b in itertools.pairwise(starts)]


def measure(meter: Meter, name: str, age: str, seconds: float, start: Snapshot | None = None) -> Window:
    start = start or snapshot(meter)
    time.sleep(max(0.0, seconds))
    end = snapshot(meter)
    rounds = [r for r in list(meter.rounds) if start.at <= r.started < end.at]
    return Window(name, age, start, end, rounds)


def joined(name: str, age: str, windows: list[Window]) -> Window:
    """Consecutive windows as one."""
    return Window(name, age, windows[0].start, windows[-1].end, [r for w in windows for r in w.rounds])


# ----------------------------------------------------------------------------- the back-off schedule


REAL_TIME_EDGES = [0, 10, 30, 60, 120]     # seconds after the jobs are watched: the real-time slices
AGED_QUICK = [("2-10 min band", 300.0)]
AGED_FULL = [("2-10 min band", 300.0), ("10-60 min band", 1800.0), ("back-off ceiling", 6000.0)]
PERIODS = [("0-1 min", 0, 60), ("1-2 min", 60, 120), ("0-2 min", 0, 120), ("2-10 min", 120, 600),
           ("10-60 min", 600, 3600)]


def schedule_model(monitor_module, ceiling: float, until: float = 3600.0) -> tuple[list[float], list[float]]:
    """What ``PollSchedule`` says when nothing changes after a job is watched at 0: (query times, look times).

    A look is a query or a read of the running jobs' folders between queries.
    """
    schedule = monitor_module.PollSchedule(ceiling)
    schedule.changed(0.0)
    queries, looks = [], []
    while (due := max(schedule.next_look(True), 0.0)) < until:
        if due >= schedule.next_query():
            schedule.asked(due)
            queries.append(due)
        else:
            schedule.read(due)
        looks.append(due)
    return queries, looks


def per_minute_in(times: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in times) / (end - start) * 60


def minute_goal_reached(times: list[float], until: float = 3600.0) -> float | None:
    """The first whole minute from which on every minute has at most GOAL_PER_MINUTE queries."""
    minutes = int(until // 60)
    counts = [sum(60 * m <= t < 60 * (m + 1) for t in times) for m in range(minutes)]
    for m in range(minutes):
        if all(count <= GOAL_PER_MINUTE for count in counts[m:]):
            return 60.0 * m
    return None


def fmt_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------- the run


def write_config(root: Path) -> None:
    folder = root / "xdg_config_home" / "rx_magic"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "targets.toml").write_text(
        f'[targets.{TARGET}]\nscheduler = "slurm"\nworkdir = "{root / "jobs"}"\npython = "{sys.executable}"\n')


def submit_all(count: int, jobs: list) -> tuple[float, int]:
    """Submit ``count`` cells into ``jobs``; return the seconds taken and the job-id collisions retried.

    Job ids are the second plus 4 random hex digits, so about 100 submissions a
    second collide now and then: the second folder cannot be renamed onto the
    first (ENOTEMPTY), nothing is submitted, and submitting again draws a new id.
    """
    import errno

    import rx_magic
    started, collisions = time.monotonic(), 0
    for index in range(count):
        for attempt in range(5):
            try:
                jobs.append(rx_magic.submit(CELL, TARGET, {}, walltime="02:00:00"))
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 4:
                    raise
                collisions += 1
        if (index + 1) % 50 == 0:
            print(f"  submitted {index + 1}/{count} ({time.monotonic() - started:.1f} s)", flush=True)
    return time.monotonic() - started, collisions


def slurm_counts(cluster: LoopbackSlurm, ids: list[str]) -> Counter:
    found = cluster.client("squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(ids))
    return Counter(line.split("|")[1] for line in found.stdout.split() if "|" in line)


def cancel_all(cluster: LoopbackSlurm, ids: list[str]) -> str:
    """One scancel for every job, then wait (up to 30 s) until Slurm no longer runs or queues any."""
    if not ids:
        return "no jobs to cancel"
    started = time.monotonic()
    result = cluster.client("scancel", *ids, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = slurm_counts(cluster, ids)
        live = sum(n for state, n in left.items() if state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"))
        if not live:
            break
        time.sleep(0.5)
    else:
        live = -1
    said = f" (scancel exit {result.returncode}: {result.stderr.strip()[:200]})" if result.returncode else ""
    return (f"cancelled {len(ids)} jobs with one scancel in {time.monotonic() - started:.1f} s{said}"
            + ("; some were still live after 30 s" if live == -1 else ""))


def run(args, root: Path) -> None:
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        os.environ[name] = str(root / name.lower())
    os.environ.pop("RX_MAGIC_CONFIG", None)
    write_config(root)
    work = root / "work"
    work.mkdir()
    os.chdir(work)

    import rx_magic.flow.watch as monitor_module
    import rx_magic.targets as targets_module
    from rx_magic.flow.registry import default_registry

    cluster = LoopbackSlurm(root / "slurm", accounting=args.accounting)
    ids: list[str] = []
    watcher = None
    clock = ShiftedClock()
    meter = Meter()
    try:
        print(f"starting a private Slurm ({'with' if args.accounting else 'without'} accounting)...", flush=True)
        started_in = cluster.start(timeout=120)
        os.environ.update(cluster.env)
        print(f"  node {cluster.cpus} cpus, {cluster.memory_mb} MB; up in {started_in:.1f} s", flush=True)
        print(f"submitting {args.jobs} cells ({CELL!r}) with rx_magic.submit...", flush=True)
        jobs: list = []
        try:
            submit_seconds, collisions = submit_all(args.jobs, jobs)
        finally:   # whatever was submitted is cancelled at the end
            ids = [record.scheduler_id for record in default_registry().recent(None) if record.scheduler_id]
        time.sleep(2)       # let slurmctld start what fits
        at_start = slurm_counts(cluster, ids)

        # instrument, then watch every job with one monitor
        target = targets_module.get_target(TARGET)
        meter.wrap_observe(monitor_module)
        meter.wrap_transport(target.transport)
        meter.wrap_calls(monitor_module, "get_target", "get_target (config re-read)")
        registry = default_registry()
        meter.wrap_calls(registry, "get", "registry.get")
        meter.wrap_calls(registry, "update", "registry.update")
        for job in jobs:
            meter.wrap_settle(job)
        watcher = monitor_module.monitor_for(TARGET)
        watcher.clock = clock
        assert monitor_thread() is None, "a monitor thread is already running"
        first = snapshot(meter)
        first.thread_cpu = 0.0          # the monitor thread starts with the first watch: its clock from 0
        watch_started = first.at
        for job in jobs:
            watcher.watch(job, on_change=meter.on_change, on_end=meter.on_end)

        windows: list[Window] = []
        # 1. real time, from the moment the jobs are watched, in slices to show the back-off
        print(f"watching {len(jobs)} jobs in real time for {fmt_age(REAL_TIME_EDGES[-1])}...", flush=True)
        for start, end in itertools.pairwise(REAL_TIME_EDGES):
            windows.append(measure(meter, f"real time {fmt_age(start)}-{fmt_age(end)}", f"{fmt_age(start)}-"
                                   f"{fmt_age(end)}", watch_started + end - time.monotonic(),
                                   first if start == 0 else None))
        minutes = [joined("real time, first minute", "0-1 min", windows[:3]),
                   joined("real time, second minute", "1-2 min", windows[3:])]
        real_time = joined("real time, whole period", "0-2 min", windows)

        # 2. nothing changing for longer: the monitor's clock moved forward (nothing else changes)
        ceiling = target.config.poll_interval
        aged: list[Window] = []
        for name, age in (AGED_QUICK if args.quick else AGED_FULL):
            clock.offset += age - (clock() - watcher.schedule.last_change)
            shifted = time.monotonic()
            watcher._wake.set()     # it sleeps until its next look, on the old clock
            # start measuring once a round that began on the new clock has ended, callbacks and all
            deadline = shifted + ceiling + 10
            while time.monotonic() < deadline:
                latest = meter.rounds[-1] if meter.rounds else None
                if latest and latest.started > shifted and meter.changes >= latest.changes_before + latest.jobs:
                    break
                time.sleep(0.02)
            seconds = max(args.aged_seconds, 2 * ceiling + 5)
            print(f"watching them as if nothing had changed for {fmt_age(age)} for {seconds:.0f} s...", flush=True)
            aged.append(measure(meter, f"aged: {name}", f"~{fmt_age(age)}", seconds))

        live_states = Counter(str(job.record.state) for job in jobs)
        at_end = slurm_counts(cluster, ids)
        stopped = watcher.stop()
        watcher = None
        report(args, cluster, started_in, jobs, submit_seconds, collisions, at_start, at_end, live_states, stopped,
               meter, windows, minutes, real_time, aged, ceiling, monitor_module)
    finally:
        if watcher is not None:
            watcher.stop()
        monitor_module.monitor_for(TARGET).clock = time.monotonic
        if getattr(meter, "_restore_observe", None):
            module, real = meter._restore_observe
            module.observe = real
        try:
            if cluster.processes.get("slurmctld") is not None:
                print("\n" + cancel_all(cluster, ids), flush=True)
        finally:
            cluster.stop()
            deadline = time.monotonic() + 15     # step daemons ended by PID take a moment to be gone
            while cluster.step_daemons() and time.monotonic() < deadline:
                time.sleep(0.2)
            if cluster.step_daemons():
                print(f"slurmstepd processes of this cluster still there: {cluster.step_daemons()}")
            print("slurm stopped (munged, slurmctld, slurmd" + (", slurmdbd, mariadbd" if args.accounting else "")
                  + " ended by PID)", flush=True)
            targets_module.close_all()


# ----------------------------------------------------------------------------- the report


def report(args, cluster, started_in, jobs, submit_seconds, collisions, at_start, at_end, live_states, stopped,
           meter, windows, minutes, real_time, aged, poll_interval, monitor_module) -> None:
    n = len(jobs)
    print()
    if not real_time.rounds:
        print("NOTE: the monitor never called rx_magic.flow.watch.observe, so no round could be counted: "
              "has the Monitor changed how it polls? Only the CPU figures below mean anything.")
    print(f"rx_magic poll benchmark: {n} live jobs on one target (scheduler = \"slurm\", local transport)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; Slurm node of {cluster.cpus} cpus, "
          f"{'with accounting (sacct answers)' if args.accounting else 'no accounting (sacct refuses: squeue)'}, "
          f"up in {started_in:.1f} s")
    print(f"submitted {n} jobs in {submit_seconds:.1f} s ({submit_seconds / max(n, 1) * 1000:.0f} ms each); "
          f"Slurm then: {dict(at_start)}; at the end: {dict(at_end)}")
    if collisions:
        print(f"  {collisions} submission(s) failed on a job-id collision (same second, same 4 hex digits: "
              "'Directory not empty' renaming the staging folder) and were submitted again")
    print(f"the monitor saw at the end: {dict(live_states)}; {meter.ends} ended while watched; "
          f"{stopped} still watched when stopped")

    queries, looks = schedule_model(monitor_module, poll_interval)
    print(f"\nback-off (monitor.PollSchedule, poll_interval = {poll_interval:g} s), by the time since a watched job last "
          "changed state or a job was last watched:")
    print(f"  scheduler asked at {', '.join(f'{t:g}' for t in queries[:8])} ... s; running jobs' folders read "
          f"between queries at {', '.join(f'{t:g}' for t in looks[:6])}, ... s")
    print(f"  {'period':>10}  {'scheduler cmds/min':>18}  {'folder reads/min per running job':>32}")
    for name, start, end in PERIODS:
        rate = per_minute_in(queries, start, end)
        mark = "ok" if rate <= GOAL_PER_MINUTE else "over the goal"
        print(f"  {name:>10}  {rate:>18.1f}  {per_minute_in(looks, start, end):>32.1f}  {mark}")
    reached = minute_goal_reached(queries)

    print("\nmeasured (monitor thread only; 'reads' = transport.read_bytes calls; CPU = the monitor thread's clock)")
    header = (f"  {'period':<34} {'ages':>9} {'secs':>5} {'rounds':>6} {'asked':>5} {'cmds/asked':>10} "
              f"{'cmds/min':>8} {'reads/round':>11} {'reads/min':>9} {'missing':>7} {'changes/round':>13} "
              f"{'CPU s/min':>9} {'client CPU s/min':>16}")
    print(header)
    for w in [*windows, *minutes, real_time, *aged]:
        asked = w.asked
        per_asked = f"{w.commands / len(asked):.2f}" if asked else "-"
        reads = [sum(r.reads.values()) for r in w.rounds]
        missing = [r.missing for r in w.rounds]
        print(f"  {w.name:<34} {w.age:>9} {w.seconds:>5.0f} {len(w.rounds):>6} {len(asked):>5} {per_asked:>10} "
              f"{w.per_minute(w.commands):>8.1f} {statistics.mean(reads) if reads else 0:>11.1f} "
              f"{w.per_minute(sum(reads)):>9.0f} {statistics.mean(missing) if missing else 0:>7.1f} "
              f"{sum(w.transitions.values()) / max(len(w.rounds), 1):>13.1f} {w.per_minute(w.thread_cpu):>9.3f} "
              f"{w.per_minute(w.children_cpu):>16.3f}")

    rounds = real_time.rounds + [r for w in aged for r in w.rounds]
    asked = [r for r in rounds if r.ask]
    per_round = Counter(tuple(r.commands) for r in asked)
    first = asked[0].commands if asked else []
    later = [len(r.commands) for r in asked[1:]]
    errors = [r.error for r in rounds if r.error]
    print("\ncommands in the rounds that asked the scheduler: "
          + ", ".join(f"{' + '.join(cmds) or 'none'} x{count}" for cmds, count in per_round.most_common())
          + f"; rounds that only read folders: {len(rounds) - len(asked)}"
          + (f"; rounds that raised: {len(errors)} ({errors[0]})" if errors else ""))
    example = next((r for r in reversed(rounds) if r.ask), None)
    if example:
        print(f"one asking round, every transport call: {dict(example.calls)}; files read: {dict(example.reads)}; "
              f"{example.missing} not there; {(example.ended - example.started) * 1000:.0f} ms wall, "
              f"{example.cpu * 1000:.0f} ms CPU in observe")
    quiet = next((r for r in reversed(rounds) if not r.ask), None)
    if quiet:
        print(f"one folder-only round: {dict(quiet.calls)}; {(quiet.ended - quiet.started) * 1000:.0f} ms wall, "
              f"{quiet.cpu * 1000:.0f} ms CPU in observe")

    print("\nwhere the monitor thread's CPU went (seconds per minute, real-time period | at the ceiling):")
    ceiling = aged[-1]
    labels = sorted({label for label in real_time.end.cpu} | {label for label in ceiling.end.cpu},
                    key=lambda label: -real_time.cpu(label))
    accounted_rt = accounted_ceil = 0.0
    per_round = lambda w, label: w.calls(label) / max(len(w.rounds), 1) 
    for label in labels:
        rt, ce = real_time.cpu(label), ceiling.cpu(label)
        if label.startswith("transport.") or label == "observe":
            print(f"  {label:<30} {real_time.per_minute(rt):7.3f} | {ceiling.per_minute(ce):7.3f}"
                  + ("   (one round; includes the transport calls below)" if label == "observe" else ""))
            continue
        accounted_rt, accounted_ceil = accounted_rt + rt, accounted_ceil + ce
        inside = [other for other in sorted(meter.nested) if other != label]
        within = ", ".join(f"{other} x{per_round(real_time, other + ' (nested)'):.0f}" for other in inside)
        print(f"  {label:<30} {real_time.per_minute(rt):7.3f} | {ceiling.per_minute(ce):7.3f}"
              f"   ({per_round(real_time, label):.0f} a round"
              + (f"; includes {within}" if label == "job.settle" and within else "") + ")")
    accounted_rt += real_time.cpu("observe")
    accounted_ceil += ceiling.cpu("observe")
    print(f"  {'rest of the loop (callbacks...)':<30} {real_time.per_minute(real_time.thread_cpu - accounted_rt):7.3f} | "
          f"{ceiling.per_minute(ceiling.thread_cpu - accounted_ceil):7.3f}")
    print(f"  {'monitor thread, total':<30} {real_time.per_minute(real_time.thread_cpu):7.3f} | "
          f"{ceiling.per_minute(ceiling.thread_cpu):7.3f}")
    for w in (real_time, ceiling):
        moves = w.transitions
        print(f"state changes the monitor recorded ({w.name}, {len(w.rounds)} rounds): "
              + (", ".join(f"{a} -> {b} x{count}" for (a, b), count in moves.most_common()) or "none")
              + f"; registry writes {w.calls('registry.update') + w.calls('registry.update (nested)')}")

    # ---- the goals
    steady = [len(r.commands) for r in ceiling.asked]
    gaps = ceiling.gaps()
    steady_rate = (60 / statistics.median(gaps) * statistics.mean(steady)) if gaps and steady else float("nan")
    counted_rate = ceiling.per_minute(ceiling.commands)
    reads_per_round = [sum(r.reads.values()) for r in rounds]
    calls_per_round = [sum(r.calls.values()) for r in rounds]
    met = lambda ok: "met" if ok else "MISSED" 
    print("\n" + "=" * 100)
    print(f"{'figure':<52} {'goal':>6}  measured")
    print("-" * 100)
    worst = max(later) if later else (len(first) if first else 0)
    print(f"{'scheduler commands per poll round':<52} {GOAL_PER_ROUND:>6}  "
          f"{statistics.mean(later) if later else float('nan'):.2f} a round (max {worst}) over {len(later)} asking "
          f"rounds after the first, which ran {' + '.join(first) or '-'}"
          + (" (sacct refused once: no accounting)" if first[:1] == ["sacct"] and len(first) > 1 else "")
          + f"  {met(worst <= GOAL_PER_ROUND)}" + (" after the first round" if len(first) > GOAL_PER_ROUND else ""))
    print(f"{'scheduler commands per minute after back-off':<52} {'<= 4':>6}  "
          f"{counted_rate:.1f}/min counted ({steady_rate:.1f}/min from the gaps) with nothing changed for "
          f"{aged[-1].age}  {met((counted_rate if math.isnan(steady_rate) else steady_rate) <= GOAL_PER_MINUTE)}")
    for w in [*minutes, real_time, *aged[:-1]]:
        rate = w.per_minute(w.commands)
        print(f"{'  ... in ' + w.name:<52} {'':>6}  {rate:.1f}/min ({w.age} after the jobs were watched"
              + (", simulated" if w in aged else "") + f")  {'ok' if rate <= GOAL_PER_MINUTE else 'over'}")
    if reached is not None:
        print(f"{'  ... from when on every minute is <= 4 (the schedule)':<52} {'':>6}  "
              f"{fmt_age(reached)} after the last change; {per_minute_in(queries, 0, 60):.0f} in the first minute")
    asking = [sum(r.reads.values()) for r in rounds if r.ask]
    folder_only = [sum(r.reads.values()) for r in rounds if not r.ask]
    print(f"{'file reads per round':<52} {'-':>6}  {statistics.mean(reads_per_round):.1f} "
          f"({statistics.mean(reads_per_round) / n:.2f} per live job; "
          f"{statistics.mean(asking) if asking else 0:.1f} in rounds that asked the scheduler, "
          f"{statistics.mean(folder_only) if folder_only else 0:.1f} in folder-only rounds; all transport calls "
          f"{statistics.mean(calls_per_round):.1f}); {statistics.mean(r.missing for r in rounds):.1f} of them "
          "found no file")
    print(f"{'file reads per minute':<52} {'-':>6}  {real_time.per_minute(sum(reads_per_round[:len(real_time.rounds)])):.0f}"
          f" in the first 2 min, {ceiling.per_minute(sum(sum(r.reads.values()) for r in ceiling.rounds)):.0f} after "
          "back-off")
    print(f"{'kernel CPU polling per minute, first 2 minutes':<52} {'-':>6}  "
          f"{real_time.per_minute(real_time.thread_cpu):.2f} s/min ({real_time.thread_cpu / real_time.seconds * 100:.1f}% "
          f"of a core) + {real_time.per_minute(real_time.children_cpu):.2f} s/min in scheduler clients")
    print(f"{'kernel CPU polling per minute, after back-off':<52} {'-':>6}  "
          f"{ceiling.per_minute(ceiling.thread_cpu):.3f} s/min ({ceiling.thread_cpu / ceiling.seconds * 100:.2f}% "
          f"of a core) + {ceiling.per_minute(ceiling.children_cpu):.3f} s/min in scheduler clients")
    print("=" * 100)
    print("(the ages after the real-time period are simulated: the monitor's clock is moved forward;"
          " rounds, queries and reads are real)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="after the 2 real-time minutes, measure only the 2-10 min band (not 10-60 min and 100 min)")
    parser.add_argument("--jobs", type=int, default=200, help="live jobs to watch (200)")
    parser.add_argument("--accounting", action="store_true",
                        help="run slurmdbd and MariaDB too, so sacct answers instead of squeue")
    args = parser.parse_args()
    args.aged_seconds = 65.0 if args.quick else 90.0
    if not slurm_available():
        sys.exit("bench_poll needs Slurm and munge: apt-get install slurm-wlm munge")
    if args.accounting and not accounting_available():
        sys.exit("--accounting needs slurmdbd and MariaDB: apt-get install slurmdbd mariadb-server")

    def terminated(signum, frame):
        raise SystemExit(128 + signum)     # so that the jobs are cancelled and Slurm stopped
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)

    with tempfile.TemporaryDirectory(prefix="rx-bench-poll-", ignore_cleanup_errors=True) as root:
        cwd = os.getcwd()
        try:
            run(args, Path(root))
        finally:
            os.chdir(cwd)
            from rx_magic.flow import registry
            for opened in list(registry._registries.values()):
                opened.close()
            registry._registries.clear()


if __name__ == "__main__":
    main()

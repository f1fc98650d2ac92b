"""A job's actions: refresh, wait, pull, cancel, read its log.

A ``Job`` is a cheap handle on a registry row (``model.record.JobRecord``);
``rx_magic.jobs()`` and ``%rx attach`` rebuild them in a new kernel. It knows
nothing of how it is shown: the ui layer sets ``Job.view`` (its status widget)
and observes jobs through ``wait(each_round=...)`` and the target's monitor
(``flow.watch.Monitor.watch(job, on_change, on_end)``).
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import replace
from typing import Callable

from ..errors import JobCancelled, JobFailed, SchedulerError, TransportError
from ..model.jobspec import JobSpecError, read_spec
from ..model.local_dirs import cache_home
from ..model.resources import format_walltime
from ..model.states import Disappearance, State, decide_state, looks_gone
from ..runtime.layout import JobPaths
from ..targets.target import get_target
from .logs import OUTPUT_HEAD, OUTPUT_TAIL, LogFollower, read_log
from .arrays import (READ_ELEMENTS_TOGETHER, ElementFailure, ElementsReadAhead, combine, failure_error,
                     read_progress)
from .hold_state import cancel_held, held_in, hold_of, open_end_notice
from .pull import (NOTEBOOK_LOG_LIMIT, READ_TOGETHER, ReadFirst, apply_values, fetch_cell_effects, fetch_results,
                   remote_exception, write_notebook)
from .registry import Registry, default_registry
from .watch import observe, read_status


class Job:
    """A submitted job: watch it, wait for it, pull its results, cancel it.

    ``Job`` objects are cheap handles on a registry row; ``rx_magic.jobs()``
    and ``%rx attach`` rebuild them in a new kernel.
    """

    #: How a job shows itself as a cell's result in a front end with widgets: ``view(job)`` returns an object
    #: with ``_repr_mimebundle_``, or None. The ui layer sets it (``ui.widget``); the domain never imports the UI.
    view: Callable[[Job], object] | None = None

    def __init__(self, record, registry: Registry | None = None):
        self._registry = registry or default_registry()
        self.record = record
        self._target = None
        self._last_asked = 0.0
        self.results = None         # Results, once pulled
        self.notebook_path = None   # the local job.ipynb, once pulled
        self.warnings: list[str] = []  # what the pull could not do, for the user
        self.status: dict | None = None  # the last status.json seen
        self._spec: dict | None = None
        self._gone = Disappearance()    # rounds that saw the job gone without a trace

    def __repr__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"<Job {self.id} on {self.record.target}: {self.record.state}{reason}>"

    @property
    def id(self) -> str:
        return self.record.id

    def _repr_mimebundle_(self, include=None, exclude=None):
        """In Jupyter, a job shown as a cell's result is its status widget, with a Pull results button."""
        shown = Job.view(self) if Job.view is not None else None
        return None if shown is None else shown._repr_mimebundle_()

    @property
    def state(self):
        """The job's state now: its folder is read, and the scheduler asked at most every few seconds."""
        if not self.record.state.is_final:
            try:
                self.refresh(ask_scheduler=time.monotonic() - self._last_asked > 2.0)
            except Exception:  # an unreachable target: the last state known stands
                pass
        return self.record.state

    @property
    def reason(self) -> str:
        return self.record.reason

    @property
    def target(self):
        if self._target is None:
            self._target = get_target(self.record.target)
        return self._target

    @property
    def paths(self) -> JobPaths:
        return JobPaths(self.record.workdir, self.id)

    def refresh(self, ask_scheduler: bool = True):
        """Look at the job once more; return its state."""
        if self.record.state.is_final:
            return self.record.state
        # another handle on this job (``%rx cancel``, another kernel) may have cancelled or ended it
        try:
            self.record = self._registry.get(self.id)
        except KeyError:    # removed from the registry (``%rx clean``): what this handle knows stands
            pass
        if self.record.state.is_final:
            return self.record.state
        if ask_scheduler:
            self._last_asked = time.monotonic()
        return self.settle(observe(self.target, [self.record], ask_scheduler)[self.id])

    def settle(self, seen):
        """Take what one poll round saw of the job (``monitor.observe``) as news; return its state."""
        if seen.status:
            self.status = seen.status
        if self.record.state.is_final:
            return self.record.state
        cancel = self.record.cancel_requested
        gone = seen.scheduler is not None and self._gone.round(looks_gone(seen, cancel), time.monotonic())
        state, reason = decide_state(seen, cancel, gone_confirmed=gone)
        if state is None:
            return self.record.state    # gone without a trace, but not yet for long enough to say it ended
        if seen.scheduler is None and state is State.SUBMITTED:
            # a round that only read the folder knows nothing new of a job that has not started
            return self.record.state
        if state != self.record.state or (reason or "") != self.reason:
            changes = {"state": state, "reason": reason or ""}
            if state.is_final:
                changes["ended_at"] = (seen.status or {}).get("ended") or time.time()
            try:
                self.record = self._registry.update(self.id, **changes)
            except KeyError:    # removed from the registry (%rx clean): this handle still knows
                self.record = replace(self.record, **changes)
        return self.record.state

    def wait(self, timeout: float | None = None, *, echo: bool = False, poll_interval: float = 1.0, each_round=None):
        """Block until the job ends (or ``timeout`` seconds pass); return its state.

        With ``echo``, the job's stdout and stderr are printed here as they arrive;
        ``each_round()`` is called after every look at the job (the status widget).
        """
        started = time.monotonic()
        streams = _Echo(self) if echo else None
        if hold_of(self.record.scheduler_id):
            # a held cell is meant to be quick: where no end notice comes (over SSH, a worker on another node), its
            # end is seen within HELD_POLL seconds, not the second a job with a scheduler is looked at
            poll_interval = min(poll_interval, HELD_POLL)
        nap, last_asked, outage = 0.005, time.monotonic(), None
        with _EndNotice(self) as notice:
            if notice.held:     # a hold's worker here says when the cell has ended: no need to look often meanwhile
                nap = HELD_POLL / 4
            return self._wait(timeout, started, streams, nap, last_asked, outage, notice, poll_interval, each_round)

    def _wait(self, timeout, started, streams, nap, last_asked, outage, notice, poll_interval, each_round):
        while True:
            now = time.monotonic()
            # the folder is read every round; the scheduler is asked every few seconds
            ask = now - last_asked > max(2.0, poll_interval * 2) or self.record.state is State.UNKNOWN
            if ask:
                last_asked = now
            try:
                state = self.refresh(ask_scheduler=ask)
                if streams:
                    streams.pump()
            except (TransportError, SchedulerError) as exc:
                # the link or the scheduler is down: the job goes on; try again, backing off, until it is back
                outage = _Outage(self) if outage is None else outage
                outage.retry_later(exc)
                if timeout is not None and now - started > timeout:
                    return self.record.state
                continue
            if outage is not None:
                outage = outage.over()
            if each_round is not None:
                each_round()
            if state.is_final or (timeout is not None and now - started > timeout):
                if state.is_final:
                    notice.settle()
                if streams:
                    streams.pump(final=state.is_final)
                return state
            if notice.sleep(nap):
                continue                # the process has just ended: its folder says how; look at once
            nap = min(nap * 1.5, poll_interval)

    def pull(self, namespace: dict | None = None, *, raise_error: bool = True):
        """Fetch the results of a finished job and put its pulled values into ``namespace``.

        A failed job applies nothing but its outputs and raises its error (the
        cell's own exception when it can be rebuilt here, else ``RemoteError``);
        a killed or cancelled one raises ``JobFailed`` or ``JobCancelled``.
        Returns the names set. Waits for the job first if it is still running.
        """
        results = self.fetch(namespace)
        names, warnings = [], []
        if self.has_values and namespace is not None:
            names, warnings = apply_values(results, namespace)
            self.record = self._registry.update(self.id, pulled=True)
        self.warnings = warnings
        if raise_error:
            self.raise_for_state()
        return names

    @property
    def has_values(self) -> bool:
        """Whether the job left values to pull: it is done, or it is a job array some of whose elements are."""
        if self.record.state is State.DONE:
            return True
        return (self.record.state is State.FAILED and bool(self.record.elements)
                and "d" in (self.status or {}).get("elements", ""))

    def fetch(self, namespace: dict | None = None):
        """Read a finished job's results (values only when it is done), touching no namespace.

        Pulled values that refer to the notebook's objects are resolved in ``namespace``
        (by default IPython's); the changes to them wait for ``apply_values``.
        """
        if not self.record.state.is_final:
            self.wait()
        if self.record.elements:
            self.results = self._fetch_array()
        else:
            done = self.record.state is State.DONE
            self.results = fetch_results(self.target.transport, self.paths, values=done, namespace=namespace)
            fetch_cell_effects(self.target.transport, self.paths, self.results, values=done)
        self.notebook_path = self._write_notebook(self.results)
        return self.results

    def spec(self, reader: ReadFirst | None = None) -> dict | None:
        """The job's ``job.json``, upgraded to this release's format; None when it cannot be read.

        Read once per handle (from ``reader`` when given: what a pull read together): a spec never changes once
        the folder is in place.
        """
        if self._spec is None:
            try:
                self._spec = read_spec((reader or self.target.transport).read_bytes(self.paths.job_json),
                                       self.paths.job_json)
            except (FileNotFoundError, JobSpecError):
                return None
        return self._spec

    def _array_spec(self) -> dict:
        return (self.spec() or {}).get("map") or {}

    def _fetch_array(self):
        """Every element's results, as one: each pulled name a list in element order, None where one failed."""
        spec, size = self._array_spec(), self.record.elements
        labels = spec.get("labels") or [str(index) for index in range(size)]
        status = self.status if (self.status or {}).get("ended") is not None or self.status else None
        status = read_status(self.target, self.record, self.paths) or status or {}
        self.status = status
        _, ended = read_progress(self.target.transport, self.paths, size)
        reasons = {int(index): reason for index, reason in (status.get("failed_elements") or {}).items()}
        element_results, failures = {}, []
        states = {index: (ended.get(index) or {}).get("state") for index in range(size)}
        pulled = {index: state == "done" for index, state in states.items() if state is not None or index in reasons}
        transport = ElementsReadAhead(self.target.transport, self.paths, pulled)     # a request per 50 elements
        for index in range(size):
            state = states[index]
            if index not in pulled:
                continue            # cancelled before it ran
            paths = self.paths.element(index)
            results = fetch_results(transport, paths, values=state == "done")
            element_results[index] = results
            if state != "done":
                error = results.error or {}
                reason = reasons.get(index) or (ended.get(index) or {}).get("reason") or "failed"
                failures.append(ElementFailure(index, labels[index] if index < len(labels) else str(index),
                                               reason, error.get("traceback", "")))
        return combine(spec.get("name", "element"), labels, element_results, size, list(self.record.pull), failures)

    def raise_for_state(self) -> None:
        """Raise what a job that did not end ``done`` should raise in the notebook."""
        __tracebackhide__ = True
        failures = getattr(self.results, "failures", None)
        if self.record.elements and failures and self.record.state is State.FAILED:
            name = self._array_spec().get("name", "element")
            raise failure_error(self.id, name, self.record.elements, failures, list(self.record.pull))
        if self.record.state is State.FAILED:
            if self.results and self.results.error and self.results.error.get("type"):
                raise remote_exception(self.results, self.id)
            raise JobFailed(f"job {self.id} failed: {self.reason}", self.id)
        if self.record.state is State.CANCELLED:
            why = self.reason if self.reason.startswith(("cancelled ", "deleted ")) else (
                f"cancelled ({self.reason})" if self.reason and self.reason != "cancelled" else "cancelled")
            raise JobCancelled(f"cancelled: {self.described()} was {why}; nothing was pulled", self.id)

    def described(self) -> str:
        """The job as a person names it: ``job 'fit' (rx-...) on gadi``, its ``--name`` when the spec is read."""
        name = ((self._spec or {}).get("resources") or {}).get("name")
        return (f"job {name!r} ({self.id})" if name else f"job {self.id}") + f" on {self.record.target}"

    def summary(self) -> str:
        """One line saying how the job stands: ``done: job 'fit' (rx-...) on gadi after 0:01:05``, and why
        when it did not end done (what a terminal shows once a cell's job has ended)."""
        status, record = self.status or {}, self.record
        started = status.get("started") or record.submitted_at
        ended = (record.ended_at or status.get("ended")) if record.state.is_final else time.time()
        elapsed = f" after {format_walltime(int(max(0.0, ended - started)))}" if started and ended else ""
        why = f" ({record.reason})" if record.reason and record.state is not State.DONE else ""
        held = held_in(record.scheduler_id, self._registry)
        return f"{record.state.value}: {self.described()}{' ' + held if held else ''}{elapsed}{why}"

    def cancel(self) -> None:
        """Stop the job; cancelling one that already ended does nothing."""
        if self.record.state.is_final:
            return
        self.record = self._registry.update(self.id, cancel_requested=True)
        if hold_of(self.record.scheduler_id):
            cancel_held(self.target, self.record)
        else:
            self.target.scheduler.cancel(self.target.transport, self.record.scheduler_id, self.paths.folder)

    def log(self, stream: str = "stdout", **bounds) -> str:
        """The job's ``stdout`` or ``stderr`` so far; a job array's, element by element under a heading.

        A long log is its head and tail with one line between saying how much was cut and where the
        whole log is (``logs.read_log``; ``head=`` and ``tail=`` bytes, by default ``logs.OUTPUT_HEAD``
        and ``OUTPUT_TAIL``).
        """
        if self.record.elements:
            return self._array_log(stream, **bounds)
        path = self.paths.stdout if stream == "stdout" else self.paths.stderr
        try:
            return read_log(self.target.transport, path, stream, f"target {self.record.target!r}", **bounds)
        except FileNotFoundError:
            return ""

    def _array_log(self, stream: str, **bounds) -> str:
        """Each element's log under a heading. The logs are read together, ``READ_ELEMENTS_TOGETHER`` elements to a
        request (one round trip over SSH, not two per element); one longer than its head and tail is read on its
        own, cut as ``logs.read_log`` cuts it."""
        spec = self._array_spec()
        name, labels = spec.get("name", "element"), spec.get("labels") or []
        transport, where = self.target.transport, f"target {self.record.target!r}"
        whole = bounds.get("head", OUTPUT_HEAD) + bounds.get("tail", OUTPUT_TAIL)     # read_log keeps it all
        elements = [self.paths.element(index) for index in range(self.record.elements)]
        paths = [each.stdout if stream == "stdout" else each.stderr for each in elements]
        found: dict[str, bytes | None] = {}
        for start in range(0, len(paths), READ_ELEMENTS_TOGETHER):
            found.update(transport.read_files(paths[start:start + READ_ELEMENTS_TOGETHER],
                                              limit=min(whole, READ_TOGETHER)))
        parts = []
        for index, path in enumerate(paths):
            try:
                if path not in found:       # too long to read with the others
                    body = read_log(transport, path, stream, where, **bounds)
                elif found[path] is None:
                    continue
                else:
                    body = found[path].decode(errors="replace")
            except FileNotFoundError:
                continue
            if body:
                label = f"{name}={labels[index]}" if index < len(labels) else f"element {index}"
                parts.append(f"── {label} ──\n{body}" + ("" if body.endswith("\n") else "\n"))
        return "".join(parts)

    def _write_notebook(self, results):
        reader = ReadFirst(self.target.transport, getattr(results, "read", {}))     # what the pull read together
        spec = self.spec(reader)
        if spec is None:
            return None
        source = "\n".join([*spec.get("header", []), spec.get("source", spec.get("code", ""))])
        path = cache_home() / "jobs" / self.id / "job.ipynb"
        half = NOTEBOOK_LOG_LIMIT // 2 - 1024     # room for the cut line

        def log(stream: str) -> str:
            if self.record.elements:
                return self.log(stream, head=half, tail=half)
            try:
                return read_log(reader, self.paths.stdout if stream == "stdout" else self.paths.stderr, stream,
                                f"target {self.record.target!r}", head=half, tail=half)
            except FileNotFoundError:
                return ""
        written = write_notebook(path, source, log("stdout"), log("stderr"), results)
        if getattr(results, "read", None):
            results.read = {}       # the files' bytes are not kept with the job's results
        return written


#: Seconds at most between two looks at a cell running in a hold.
HELD_POLL = 0.2


class _EndNotice:
    """Sleeps between two looks at a job, waking at once when its process ends where the scheduler can tell
    (``Scheduler.end_notice``: a pidfd for a direct job on this machine), or a hold's worker on this machine says
    the job sent to it ended (``hold_state.open_end_notice``); elsewhere it just sleeps."""

    def __init__(self, job: Job):
        self.fd, self.held = None, False
        if not job.record.state.is_final and job.record.scheduler_id:
            try:
                if hold_of(job.record.scheduler_id):
                    self.fd = open_end_notice(job.target, job.record)
                    self.held = self.fd is not None
                else:
                    self.fd = job.target.scheduler.end_notice(job.target.transport, job.record.scheduler_id,
                                                              job.paths.folder)
            except Exception:   # an unreachable or unknown target: wait by looking, as everywhere else
                self.fd = None

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the process ends meanwhile; True when it did (said once only)."""
        if self.fd is None:
            time.sleep(seconds)
            return False
        if not select.select([self.fd], [], [], seconds)[0]:
            return False
        self.close()            # readable for good now: later naps are plain sleeps
        return True

    def settle(self) -> None:
        """The job has ended by its files: a hold's worker here says, a moment later, that it is done with it too
        (its ticket gone, its cores free for the next cell); wait for that, ``HELD_POLL`` seconds at most."""
        if self.held and self.fd is not None:
            select.select([self.fd], [], [], HELD_POLL)
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> _EndNotice:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Outage:
    """Says once that the link to a job's target dropped, and waits longer between each retry."""

    def __init__(self, job: Job):
        self.job, self.stream, self.delay = job, sys.stderr, 0.5

    def retry_later(self, exc: Exception) -> None:
        if self.delay == 0.5:
            print(f"rx_magic: lost the connection to {self.job.record.target} ({exc}); the job goes on. "
                  "Reconnecting...", file=self.stream, flush=True)
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 30.0)

    def over(self) -> None:
        print(f"rx_magic: reconnected to {self.job.record.target}", file=self.stream, flush=True)


class _Echo:
    """Prints what a job writes to stdout and stderr as it arrives: each stream's head live, and its tail
    once the job has ended, with one line between saying how much was cut (``logs.LogFollower``)."""

    def __init__(self, job: Job):
        where = f"target {job.record.target!r}"
        self.followers = [LogFollower(lambda: job.target.transport, path, stream, out, where)
                          for path, stream, out in ((job.paths.stdout, "stdout", sys.stdout),
                                                    (job.paths.stderr, "stderr", sys.stderr))]

    def pump(self, final: bool = False) -> None:
        for follower in self.followers:
            follower.pump(final)

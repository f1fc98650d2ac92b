"""Job ids and the job folder's layout."""

from __future__ import annotations

import datetime as _dt
import json
import posixpath
import re
import secrets
import time


JOB_ID_PATTERN = re.compile(r"^rx-\d{8}-\d{6}-[0-9a-f]{4,8}$")


def new_job_id(now: _dt.datetime | None = None) -> str:
    """A sortable, unique job id such as ``rx-20261123-141502-3fa9`` (UTC)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"rx-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_job_id(job_id: str) -> str:
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"{job_id!r} is not an rx_magic job id (they look like rx-20261123-141502-3fa9)")
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


class JobPaths(WorkdirPaths):
    """Every file name in a job folder, and the shared ``.rx`` folder beside it."""

    def __init__(self, workdir: str, job_id: str):
        super().__init__(workdir)
        self.job_id = check_job_id(job_id)
        self.folder = posixpath.join(self.workdir, job_id)

    def _in_folder(name: str) -> property:  # noqa: N805 - a property factory
        return property(lambda self: posixpath.join(self.folder, name))

    job_json = _in_folder("job.json")
    cell_py = _in_folder("cell.py")
    job_sh = _in_folder("job.sh")
    status_json = _in_folder("status.json")
    stdout = _in_folder("stdout.log")
    stderr = _in_folder("stderr.log")
    scheduler_log = _in_folder("scheduler.log")
    scheduler_err = _in_folder("scheduler.err")     # where a batch system writes it apart (Slurm)
    exit_code = _in_folder("exit_code")
    outputs = _in_folder("outputs.dill")
    display = _in_folder("display.json")
    error = _in_folder("error.json")
    exception = _in_folder("exception.dill")
    work = _in_folder("work")    # the cell's working folder on targets other than local; --files land here
    lib = _in_folder("lib")      # the notebook's own modules, put on the cell's sys.path
    del _in_folder

    @property
    def staging_folder(self) -> str:
        """Where the folder is written before it is renamed into place."""
        return posixpath.join(self.rx_dir, f"staging-{self.job_id}")


class Job:
    """A submitted job: watch it, wait for it, pull its results, cancel it.

    ``Job`` objects are cheap handles on a registry row; ``rx_magic.jobs()``
    and ``%rx attach`` rebuild them in a new kernel.
    """

    def __init__(self, record, registry=None):
        from .registry import default_registry
        self._registry = registry or default_registry()
        self.record = record
        self._target = None
        self._last_asked = 0.0
        self.results = None         # Results, once pulled
        self.notebook_path = None   # the local job.ipynb, once pulled
        self.warnings: list[str] = []  # what the pull could not do, for the user
        self.status: dict | None = None  # the last status.json seen

    def __repr__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"<Job {self.id} on {self.record.target}: {self.record.state}{reason}>"

    @property
    def id(self) -> str:
        return self.record.id

    def _repr_mimebundle_(self, include=None, exclude=None):
        """In Jupyter, a job shown as a cell's result is its status widget, with a Pull results button."""
        from .widget import front_end_shows_widgets, job_widget_to_look_at
        if not front_end_shows_widgets():
            return None
        return job_widget_to_look_at(self)._repr_mimebundle_()

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
        from .targets import get_target
        if self._target is None:
            self._target = get_target(self.record.target)
        return self._target

    @property
    def paths(self) -> JobPaths:
        return JobPaths(self.record.workdir, self.id)

    def refresh(self, ask_scheduler: bool = True):
        """Look at the job once more; return its state."""
        from .monitor import observe
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
        from .states import State, decide_state
        if seen.status:
            self.status = seen.status
        if self.record.state.is_final:
            return self.record.state
        state, reason = decide_state(seen, self.record.cancel_requested)
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
                from dataclasses import replace
                self.record = replace(self.record, **changes)
        return self.record.state

    def wait(self, timeout: float | None = None, *, echo: bool = False, poll_interval: float = 1.0, each_round=None):
        """Block until the job ends (or ``timeout`` seconds pass); return its state.

        With ``echo``, the job's stdout and stderr are printed here as they arrive;
        ``each_round()`` is called after every look at the job (the status widget).
        """
        from .errors import SchedulerError, TransportError
        from .states import State
        started = time.monotonic()
        streams = _Echo(self) if echo else None
        nap, last_asked, outage = 0.005, time.monotonic(), None
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
                if streams:
                    streams.pump(final=state.is_final)
                return state
            time.sleep(nap)
            nap = min(nap * 1.5, poll_interval)

    def pull(self, namespace: dict | None = None, *, raise_error: bool = True):
        """Fetch the results of a finished job and put its pulled values into ``namespace``.

        A failed job applies nothing but its outputs and raises its error (the
        cell's own exception when it can be rebuilt here, else ``RemoteError``);
        a killed or cancelled one raises ``JobFailed`` or ``JobCancelled``.
        Returns the names set. Waits for the job first if it is still running.
        """
        from .results import apply_values
        results = self.fetch()
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
        from .states import State
        if self.record.state is State.DONE:
            return True
        return (self.record.state is State.FAILED and bool(self.record.elements)
                and "d" in (self.status or {}).get("elements", ""))

    def fetch(self):
        """Read a finished job's results (values only when it is done), touching no namespace."""
        from .results import fetch_results
        from .states import State
        if not self.record.state.is_final:
            self.wait()
        if self.record.elements:
            self.results = self._fetch_array()
        else:
            self.results = fetch_results(self.target.transport, self.paths, values=self.record.state is State.DONE)
        self.notebook_path = self._write_notebook(self.results)
        return self.results

    def _array_spec(self) -> dict:
        try:
            return json.loads(self.target.transport.read_bytes(self.paths.job_json)).get("map") or {}
        except (FileNotFoundError, ValueError):
            return {}

    def _fetch_array(self):
        """Every element's results, as one: each pulled name a list in element order, None where one failed."""
        from .arrays import ElementFailure, ElementPaths, combine, read_progress
        from .monitor import read_status
        from .results import fetch_results
        spec, size = self._array_spec(), self.record.elements
        labels = spec.get("labels") or [str(index) for index in range(size)]
        status = self.status if (self.status or {}).get("ended") is not None or self.status else None
        status = read_status(self.target, self.record, self.paths) or status or {}
        self.status = status
        _, ended = read_progress(self.target.transport, self.paths, size)
        reasons = {int(index): reason for index, reason in (status.get("failed_elements") or {}).items()}
        element_results, failures = {}, []
        for index in range(size):
            state = (ended.get(index) or {}).get("state")
            if state is None and index not in reasons:
                continue            # cancelled before it ran
            paths = ElementPaths(self.record.workdir, self.id, index)
            results = fetch_results(self.target.transport, paths, values=state == "done")
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
        from .errors import JobCancelled, JobFailed
        from .results import remote_exception
        from .states import State
        failures = getattr(self.results, "failures", None)
        if self.record.elements and failures and self.record.state is State.FAILED:
            from .arrays import failure_error
            name = self._array_spec().get("name", "element")
            raise failure_error(self.id, name, self.record.elements, failures, list(self.record.pull))
        if self.record.state is State.FAILED:
            if self.results and self.results.error and self.results.error.get("type"):
                raise remote_exception(self.results, self.id)
            raise JobFailed(f"job {self.id} failed: {self.reason}", self.id)
        if self.record.state is State.CANCELLED:
            raise JobCancelled(f"job {self.id} was cancelled", self.id)

    def cancel(self) -> None:
        """Stop the job; cancelling one that already ended does nothing."""
        if self.record.state.is_final:
            return
        self.record = self._registry.update(self.id, cancel_requested=True)
        self.target.scheduler.cancel(self.target.transport, self.record.scheduler_id, self.paths.folder)

    def log(self, stream: str = "stdout") -> str:
        """The job's ``stdout`` or ``stderr`` so far; a job array's, element by element under a heading."""
        if self.record.elements:
            return self._array_log(stream)
        path = self.paths.stdout if stream == "stdout" else self.paths.stderr
        try:
            return self.target.transport.read_bytes(path).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _array_log(self, stream: str) -> str:
        from .arrays import ElementPaths
        spec = self._array_spec()
        name, labels = spec.get("name", "element"), spec.get("labels") or []
        parts = []
        for index in range(self.record.elements):
            paths = ElementPaths(self.record.workdir, self.id, index)
            try:
                text = self.target.transport.read_bytes(paths.stdout if stream == "stdout" else paths.stderr)
            except FileNotFoundError:
                continue
            if text:
                label = f"{name}={labels[index]}" if index < len(labels) else f"element {index}"
                body = text.decode(errors="replace")
                parts.append(f"── {label} ──\n{body}" + ("" if body.endswith("\n") else "\n"))
        return "".join(parts)

    def _write_notebook(self, results):
        from .registry import cache_home
        from .results import write_notebook
        try:
            spec = json.loads(self.target.transport.read_bytes(self.paths.job_json))
        except (FileNotFoundError, ValueError):
            return None
        source = "\n".join([*spec.get("header", []), spec.get("source", spec.get("code", ""))])
        path = cache_home() / "jobs" / self.id / "job.ipynb"
        return write_notebook(path, source, self.log("stdout"), self.log("stderr"), results)


class _Outage:
    """Says once that the link to a job's target dropped, and waits longer between each retry."""

    def __init__(self, job: Job):
        import sys
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
    """Prints what a job writes to stdout and stderr, as it arrives."""

    def __init__(self, job: Job):
        import codecs
        import sys
        self.job = job
        self.sources = [(job.paths.stdout, sys.stdout), (job.paths.stderr, sys.stderr)]
        self.offsets = [0, 0]
        self.decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in self.sources]

    def pump(self, final: bool = False) -> None:
        transport = self.job.target.transport
        for index, (path, stream) in enumerate(self.sources):
            try:
                data = transport.read_bytes(path, self.offsets[index])
            except FileNotFoundError:
                continue
            self.offsets[index] += len(data)
            text = self.decoders[index].decode(data, final=final)
            if text:
                stream.write(text)
                stream.flush()

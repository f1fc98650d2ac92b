"""Background jobs (``--bg``): results are staged when a job ends and applied just before the next cell runs.

A target's ``Monitor`` thread watches the job and, when it ends, fetches its
results there and then (no namespace is touched). IPython's ``pre_run_cell``
event applies what was staged, in the order the jobs ended, so values never
change in the middle of a cell. A job that did not end ``done`` applies no
values: its outputs are shown and its error is told in a notice, never raised
into the unrelated cell that happens to run next.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

from ..errors import RxError
from ..flow.kernel_state import redo_after_job
from ..flow.pull import Results, apply_values, replay_outputs
from ..flow.registry import default_registry
from ..flow.watch import monitor_for
from ..model.states import State
from .terminal import in_terminal, print_job_line


@dataclass
class Arrival:
    """A finished background job whose results wait for the next cell."""

    job: object                 # Job
    widget: object | None       # JobWidget
    results: Results | None
    problem: str = ""           # why the results could not be fetched


class BackgroundJobs:
    """The background jobs of one shell, and the ``pre_run_cell`` hook that brings their results in."""

    def __init__(self, shell):
        self.shell = shell
        self._lock = threading.Lock()
        self._staged: list[Arrival] = []
        self._adopted: dict[str, tuple] = {}    # job id -> (job, widget)
        shell.events.register("pre_run_cell", self.apply_staged)

    def close(self) -> None:
        try:
            self.shell.events.unregister("pre_run_cell", self.apply_staged)
        except ValueError:
            pass
        for job_id, (job, _) in list(self._adopted.items()):
            monitor_for(job.record.target).unwatch(job_id)
        self._adopted.clear()

    @property
    def job_ids(self) -> list[str]:
        return list(self._adopted)

    @property
    def staged(self) -> list[Arrival]:
        with self._lock:
            return list(self._staged)

    def adopt(self, job, widget=None) -> None:
        """Watch ``job`` from its target's monitor; its results land before the first cell that runs after it ends."""
        self._adopted[job.id] = (job, widget)
        on_change = (lambda j: widget.refresh(j.status)) if widget is not None else None
        monitor_for(job.record.target).watch(job, on_change=on_change, on_end=self._stage_apart)

    def forget(self, job_id: str) -> None:
        """Stop bringing in ``job_id``'s results here (``%rx attach`` takes them itself)."""
        adopted = self._adopted.pop(job_id, None)
        if adopted is not None:
            monitor_for(adopted[0].record.target).unwatch(job_id)
        with self._lock:
            self._staged = [arrival for arrival in self._staged if arrival.job.id != job_id]

    def _stage_apart(self, job) -> None:
        """Fetch on a thread of its own, so that the monitor goes on updating the target's other jobs."""
        threading.Thread(target=self._stage, args=(job,), name=f"rx_magic fetch {job.id}", daemon=True).start()

    def _stage(self, job) -> None:
        """Runs on the monitor's thread when the job has ended: fetch, and keep for the next cell."""
        if job.id not in self._adopted:
            return
        _, widget = self._adopted[job.id]
        results, problem = None, ""
        try:
            results = job.fetch()
        except (RxError, OSError) as exc:
            problem = str(exc)
        arrival = Arrival(job, widget, results, problem)
        with self._lock:
            if job.id not in self._adopted or any(staged.job.id == job.id for staged in self._staged):
                return
            self._staged.append(arrival)
        if widget is not None:     # the live widget becomes the job's record now: a notebook saved before
            widget.refresh(job.status)  # the next cell runs shows it, not a widget error
            widget.push(arrival="results arrive when the next cell runs" if job.record.state is State.DONE
                        else "its output and error are shown when the next cell runs")
            widget.renew_display()

    def _catch_up(self) -> None:
        """Stage jobs that have ended before the monitor's next look: the registry says so (another
        handle saw the end), or, for jobs on this machine, their folder does (a read costs nothing)."""
        staged = {arrival.job.id for arrival in self.staged}
        for job_id, (job, _) in list(self._adopted.items()):
            if job_id in staged:
                continue
            try:
                if job.target.is_local:
                    job.refresh(ask_scheduler=False)
                else:
                    job.record = default_registry().get(job_id)
            except Exception:   # unreachable, or removed by %rx clean: the monitor decides
                continue
            if job.record.state.is_final:
                monitor_for(job.record.target).unwatch(job_id)
                self._stage(job)

    def apply_staged(self, info=None) -> list[str]:
        """``pre_run_cell``: apply every staged arrival; return the notices given."""
        self._catch_up()
        with self._lock:
            arrivals, self._staged = self._staged, []
        notices = []
        for arrival in arrivals:
            self._adopted.pop(arrival.job.id, None)
            notices.append(self._apply(arrival))
        return notices

    def _apply(self, arrival: Arrival) -> str:
        job, widget, results = arrival.job, arrival.widget, arrival.results
        label = f"job {job.id} ({job.record.first_line[:40]})" if job.record.first_line else f"job {job.id}"
        if results is None:
            if widget is not None and widget.on_pull is not None:   # asked with its button: offer it again
                widget.pull_failed(f"its results could not be fetched ({arrival.problem})")
            elif widget is not None:
                widget.renew_display()
            return _notice(f"{label} ended {job.record.state}, but its results could not be fetched "
                           f"({arrival.problem}); `%rx attach {job.id}` tries again", error=True)
        try:
            if default_registry().get(job.id).pulled:
                return ""       # brought in meanwhile by ``%rx attach``
        except KeyError:
            pass
        if in_terminal(self.shell):     # no widget shows it there: one line says how the job ended
            print_job_line(job)
        from IPython.display import display
        applied = apply_values(results, self.shell.user_ns) if job.has_values else None
        for warning in redo_after_job(self.shell, job):     # values first: the cell's display setup uses them
            _notice(f"{job.id}: {warning}", error=True)
        replay_outputs(results.outputs, results.result, show=display)
        if applied is not None:      # done, or a job array some of whose elements are
            names, warnings = applied
            try:
                job.record = default_registry().update(job.id, pulled=True)
            except KeyError:    # its row was removed meanwhile (%rx clean): the values are in all the same
                pass
            if widget is not None:
                widget.show_results(names, warnings, arrival="pulled into the notebook")
                widget.renew_display()
            for warning in warnings:
                _notice(f"{job.id}: {warning}", error=True)
            what = f"pulled {', '.join(names)}" if names else "nothing to pull"
            if job.record.state is not State.DONE:
                failed = "; ".join(f"element {f.index}: {f.reason}" for f in getattr(results, "failures", [])[:5])
                return _notice(f"{label} {job.record.reason} ({failed}): {what}, with None in the failed "
                               f"places. `%rx attach {job.id}` raises its error here", error=True)
            return _notice(f"{label} done: {what}")
        if job.record.state is State.CANCELLED and job.record.cancel_requested:
            if widget is not None:
                widget.show_results([], [], arrival="nothing pulled")
                widget.renew_display()
            return ""       # you cancelled it: %rx cancel or the widget said so already
        error = ""
        if results.error and results.error.get("type"):
            error = f"{results.error['type']}: {results.error.get('message', '')}"
        if widget is not None:
            widget.show_results([], [], error=error, arrival="nothing pulled")
            widget.renew_display()
        why = error or job.record.reason or str(job.record.state)
        return _notice(f"{label} {job.record.state}: {why}. Nothing was pulled; "
                       f"`%rx attach {job.id}` raises its error here", error=True)


def _notice(message: str, *, error: bool = False) -> str:
    text = f"rx_magic: {message}"
    print(text, file=sys.stderr if error else sys.stdout, flush=True)
    return text


_by_shell: dict[int, BackgroundJobs] = {}
_by_shell_lock = threading.Lock()     # widgets' button callbacks may ask from the comm pump's thread


def background_jobs(shell) -> BackgroundJobs:
    """The shell's ``BackgroundJobs``, made (and its ``pre_run_cell`` hook registered) on first use."""
    with _by_shell_lock:
        found = _by_shell.get(id(shell))
        if found is None or found.shell is not shell:
            found = _by_shell[id(shell)] = BackgroundJobs(shell)
        return found


def close_background_jobs(shell) -> None:
    with _by_shell_lock:
        found = _by_shell.pop(id(shell), None)
    if found is not None:
        found.close()

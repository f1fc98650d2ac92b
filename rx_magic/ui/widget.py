"""The live status widget of a job, and the table of jobs (anywidget; front end in ``js/``).

``JobWidget`` holds what a person wants to know of one job as synced traits;
whoever watches the job (a blocking cell's wait, or a target's ``Monitor``
thread) calls ``refresh()``, and changes reach the browser coalesced, at most
a few messages a second. Where widgets do not render (nbconvert, GitHub,
terminal IPython) the same object shows a static HTML or text summary.
"""

from __future__ import annotations

import codecs
import dataclasses
import html
import threading
import time
from pathlib import Path

import anywidget
import traitlets

from ..flow.hold_state import held_in
from ..flow.job import Job
from ..flow.watch import monitor_for
from ..model.record import JobRecord
from ..model.resources import Resources, format_walltime
from ..model.states import State
from .background import background_jobs

MIN_INTERVAL = 0.25     # seconds between two messages of one widget
TAIL_LINES = 8
TAIL_BYTES = 16_384
LOG_LIMIT = 1_000_000


def _assets_dir() -> Path:
    """``rx_magic/js`` inside an installed wheel; the repository's ``js/`` in a checkout."""
    package = Path(__file__).resolve().parent.parent
    folders = (package / "js", package.parent / "js")
    for folder in folders:
        if (folder / "widget.js").is_file():
            return folder
    raise FileNotFoundError(f"rx_magic's widget front end (widget.js) is in neither {folders[0]} nor {folders[1]}")


def front_end_shows_widgets(shell=None) -> bool:
    """Whether the shell is a Jupyter kernel, whose front end can show widgets (terminal IPython cannot)."""
    if shell is None:
        from IPython import get_ipython
        shell = get_ipython()
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return False
    return isinstance(shell, ZMQInteractiveShell)


def job_traits(record: JobRecord, status: dict | None = None, resources: Resources | None = None) -> dict:
    """The widget's traits for what the registry, the job's ``status.json`` and its request say."""
    status = status or {}
    resources = resources or Resources()
    final = record.state.is_final
    held = held_in(record.scheduler_id)     # shown "(in hold NAME)", not its scheduler id hold:hold-...:rx-...
    return {
        "job_id": record.id,
        "target": record.target,
        "scheduler": "in hold" if held else record.scheduler,
        "scheduler_id": held.removeprefix("in hold ") if held else (
            record.scheduler_id if record.scheduler != "direct" else ""),
        "first_line": record.first_line,
        "state": record.state.value,
        "reason": record.reason if record.state is not State.DONE else "",
        "submitted_at": float(record.submitted_at),
        "started_at": float(status.get("started") or 0.0),
        "ended_at": float((record.ended_at or status.get("ended") or 0.0) if final else 0.0),
        "walltime": int(resources.walltime or 0),
        # the walltime is shown once, as the bar's limit; the name once, as the job's label
        "resources": dataclasses.replace(resources, walltime=None, name=None).describe(),
        "server_now": time.time(),
        # a job array's strip: one letter per element (q r d f c), queued until its status says otherwise
        "elements": status.get("elements") or ("q" * record.elements if record.elements else ""),
    }


class StreamTail:
    """The last lines of a job's stdout and stderr, read from where the last read stopped."""

    def __init__(self, job, lines: int = TAIL_LINES):
        self.job, self.lines = job, lines
        self.offsets = {"stdout": 0, "stderr": 0}
        self.text = {"stdout": "", "stderr": ""}
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in self.offsets}

    def read(self) -> tuple[str, str]:
        paths = {"stdout": self.job.paths.stdout, "stderr": self.job.paths.stderr}
        transport = self.job.target.transport
        for name, path in paths.items():
            try:
                data = transport.read_bytes(path, self.offsets[name], TAIL_BYTES + 1)
                if len(data) > TAIL_BYTES:      # a flood: skip to its last bytes, never reading the middle
                    size = transport.file_size(path)
                    self.offsets[name] = max(self.offsets[name], size - TAIL_BYTES)
                    self.decoders[name].reset()
                    self.text[name] = ""
                    data = transport.read_bytes(path, self.offsets[name], TAIL_BYTES)
            except FileNotFoundError:
                continue
            self.offsets[name] += len(data)
            self.text[name] = (self.text[name] + self.decoders[name].decode(data))[-TAIL_BYTES:]
        return tuple("\n".join(self.text[name].rstrip("\n").splitlines()[-self.lines:]) for name in ("stdout", "stderr"))


class JobWidget(anywidget.AnyWidget):
    """One job: where it runs, its state, its time against its walltime, its output, its results.

    Buttons send ``{"action": "cancel" | "pull" | "log"}``; ``on_pull`` is
    called for "pull" (the kernel decides when results may land).

    Displayed with a ``display_id`` (``display_handle``), it is the live widget
    while the job runs; ``renew_display()`` once the job has ended and its
    results are settled replaces it by a static record (HTML and text, no
    widget), so a notebook saved and reopened anywhere shows that record.
    With ``echoed`` (a blocking cell prints the job's output as its stream)
    the widget shows no tail, so each line of output is shown once.
    """

    _esm = _assets_dir() / "widget.js"
    _css = _assets_dir() / "widget.css"

    view = traitlets.Unicode("job").tag(sync=True)
    job_id = traitlets.Unicode("").tag(sync=True)
    target = traitlets.Unicode("").tag(sync=True)
    scheduler = traitlets.Unicode("").tag(sync=True)
    scheduler_id = traitlets.Unicode("").tag(sync=True)
    first_line = traitlets.Unicode("").tag(sync=True)
    state = traitlets.Unicode("submitted").tag(sync=True)
    reason = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    submitted_at = traitlets.Float(0.0).tag(sync=True)
    started_at = traitlets.Float(0.0).tag(sync=True)
    ended_at = traitlets.Float(0.0).tag(sync=True)
    server_now = traitlets.Float(0.0).tag(sync=True)
    walltime = traitlets.Int(0).tag(sync=True)
    resources = traitlets.Unicode("").tag(sync=True)
    elements = traitlets.Unicode("").tag(sync=True)     # a job array's elements, one letter each
    stdout_tail = traitlets.Unicode("").tag(sync=True)
    stderr_tail = traitlets.Unicode("").tag(sync=True)
    pulled = traitlets.List(traitlets.Unicode()).tag(sync=True)
    held_back = traitlets.List(traitlets.Unicode()).tag(sync=True)
    arrival = traitlets.Unicode("").tag(sync=True)
    notes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    can_pull = traitlets.Bool(False).tag(sync=True)
    log_text = traitlets.Unicode("").tag(sync=True)

    def __init__(self, job, *, auto_pull: bool = True, notes: list[str] | None = None, on_pull=None,
                 echoed: bool = False, **kwargs):
        self.job = job
        self.echoed = echoed
        self.auto_pull = auto_pull
        self.on_pull = on_pull
        self._request = _read_resources(job)
        self._tail = StreamTail(job)
        self._lock = threading.RLock()
        self._pending: dict = {}
        self._last_sent = 0.0
        self._timer: threading.Timer | None = None
        self._last_tail_read = 0.0
        self.sent = 0       # messages flushed, for tests and curious people
        self.display_handle = None  # set where it is displayed, so the static summary can be renewed
        super().__init__(**job_traits(job.record, None, self._request), notes=list(notes or []), **kwargs)
        self._update_can_pull()
        self.on_msg(self._on_message)

    # ------------------------------------------------------------------ state in

    def refresh(self, status: dict | None = None, *, read_tail: bool = True) -> None:
        """Show the job's current record (and ``status.json``, when the caller read it), and its output's tail."""
        values = job_traits(self.job.record, status, self._request)
        if getattr(self.job, "outage", ""):
            values["reason"] = f"lost the connection to {self.job.record.target} ({self.job.outage}); retrying"
        if not status:
            values.pop("started_at")
            if not values["ended_at"]:
                values.pop("ended_at")
        now = time.monotonic()
        if read_tail and not self.echoed and (now - self._last_tail_read >= MIN_INTERVAL or self.job.record.state.is_final):
            self._last_tail_read = now
            try:
                values["stdout_tail"], values["stderr_tail"] = self._tail.read()
            except Exception:   # the link dropped: the tail shown stands
                pass
        self.push(**values)

    def show_results(self, names: list[str], warnings: list[str], error: str = "", arrival: str = "") -> None:
        """Show what a pull brought (``names``), what it could not (``warnings``), and the cell's error."""
        self.push(pulled=list(names), held_back=list(warnings), error=error, arrival=arrival)

    def push(self, **values) -> None:
        """Set traits; a burst of calls reaches the front end as one message every ``MIN_INTERVAL``."""
        with self._lock:
            self._pending.update(values)
            wait = self._last_sent + MIN_INTERVAL - time.monotonic()
            if wait <= 0:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Send whatever is pending now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        changes = {name: value for name, value in self._pending.items() if getattr(self, name) != value}
        self._pending.clear()
        if "server_now" in changes and len(changes) == 1:
            return      # the clock alone is not news
        if not changes:
            return
        with self.hold_sync():
            for name, value in changes.items():
                setattr(self, name, value)
        self._last_sent = time.monotonic()
        self.sent += 1
        if "state" in changes:
            self._update_can_pull()

    def _update_can_pull(self) -> None:
        record = self.job.record
        self.can_pull = bool(not self.auto_pull and record.state.is_final and not record.pulled
                             and not self.arrival)

    # ------------------------------------------------------------------ buttons

    def _on_message(self, _widget, content, _buffers) -> None:
        action = (content or {}).get("action")
        try:
            if action == "cancel":
                self.job.cancel()
                self.push(notes=[*self.notes, "cancel sent"])
            elif action == "pull" and self.on_pull is not None:
                self.auto_pull = True
                self.push(arrival="pull asked: the results arrive when the next cell runs")
                self.flush()
                self.on_pull(self)
                self._update_can_pull()
            elif action == "log":
                self.push(log_text=full_log(self.job))
        except Exception as exc:    # a button must never take the kernel down; say what went wrong
            if action == "pull":
                self.pull_failed(str(exc))
            else:
                self.push(notes=[*self.notes, f"{action} failed: {exc}"])

    def pull_failed(self, problem: str) -> None:
        """A pull asked with the button did not bring the results: say why, and offer the button again."""
        self.auto_pull = False
        self.push(arrival="", notes=[*self.notes, f"pull failed: {problem}"])
        self.flush()
        self._update_can_pull()

    # ------------------------------------------------------------------ static views

    def problem(self) -> str:
        """Why the job did not end ``done``: the reason, and the cell's error unless the reason says it already."""
        if self.error and self.error not in self.reason:
            return " — ".join(part for part in (self.reason, self.error) if part)
        return self.reason

    def state_label(self) -> str:
        """The state as the badge says it; a job array some of whose elements ended done says how many."""
        return state_label(self.state, self.elements)

    @property
    def settled(self) -> bool:
        """The job has ended and nothing more will come of it here: its display can be a static record."""
        return self.state in ("done", "failed", "cancelled") and not self.can_pull

    def summary_text(self) -> str:
        """A few lines for people reading a terminal or plain text. The output's tail is there only when
        the cell's stream did not show the output (``--bg``, attached jobs): each line is shown once."""
        elapsed = _elapsed(self)
        head = f"{self.job_id} on {self.target}" + (f" ({self.scheduler} {self.scheduler_id})" if self.scheduler_id else "")
        lines = [f"{head}: {self.state_label()}" + (f" after {elapsed}" if elapsed else "")]
        if self.first_line:
            lines.append(f"  cell: {self.first_line}")
        if self.resources:
            lines.append(f"  asked for {self.resources}")
        lines.append(f"  {_timeline(self)}")
        if self.state != "done" and self.problem():
            lines.append(f"  {self.problem()}")
        if not self.echoed:
            lines.extend("  | " + line for tail in (self.stdout_tail, self.stderr_tail) for line in tail.splitlines())
        if self.pulled:
            lines.append(f"  pulled: {', '.join(self.pulled)}")
        lines.extend(f"  held back: {why}" for why in self.held_back)
        if self.arrival:
            lines.append(f"  {self.arrival}")
        lines.append(f"  job folder: {self.target}:{self.job.paths.folder}")
        return "\n".join(lines)

    def summary_html(self) -> str:
        """The same record as static HTML: no script, no stylesheet (a reopened notebook, nbconvert, GitHub).
        The state is a badge whose white text on its own colour passes WCAG AA on light and dark pages;
        everything else takes the page's text colour."""
        colour = STATIC_BADGE.get(self.state, STATIC_BADGE["unknown"])
        e = html.escape
        rows = [f"<div><span role='status' style='background:{colour};color:#ffffff;font-weight:600;"
                f"padding:0 6px;border-radius:3px'>{e(self.state_label())}</span> <code>{e(self.job_id)}</code>"
                f" on {e(self.target)}"
                + (f" ({e(self.scheduler)} {e(self.scheduler_id)})" if self.scheduler_id else "") + "</div>"]
        if self.first_line:
            rows.append(f"<div><code>{e(self.first_line)}</code></div>")
        if self.resources:
            rows.append(f"<div>asked for {e(self.resources)}</div>")
        rows.append(f"<div>{e(_timeline(self))}</div>")
        if self.state != "done" and self.problem():
            rows.append(f"<div><b>{e(self.problem())}</b></div>")
        if not self.echoed:
            rows.extend(f"<pre style='margin:2px 0'>{e(tail)}</pre>" for tail in (self.stdout_tail, self.stderr_tail)
                        if tail)
        if self.pulled:
            rows.append(f"<div>pulled: {e(', '.join(self.pulled))}</div>")
        rows.extend(f"<div>held back: {e(why)}</div>" for why in self.held_back)
        if self.arrival:
            rows.append(f"<div>{e(self.arrival)}</div>")
        rows.append(f"<div>job folder: <code>{e(self.target)}:{e(self.job.paths.folder)}</code></div>")
        return (f"<div class='rx-job-static' style='border-left:4px solid {colour};padding:2px 8px'>"
                + "".join(rows) + "</div>")

    def static_bundle(self) -> dict:
        """The record without the widget: what a finished job's display becomes."""
        return {"text/plain": self.summary_text(), "text/html": self.summary_html()}

    def renew_display(self) -> None:
        """Send what is pending, and once the job has settled replace the live widget where it was displayed
        by the static record (``update_display`` without the widget's mime type), so that the saved
        notebook shows the record wherever it is opened, kernel or not."""
        self.flush()
        if self.display_handle is not None:
            if self.settled:
                self.display_handle.update(self.static_bundle(), raw=True)
            else:
                self.display_handle.update(self)

    def _repr_mimebundle_(self, **kwargs):
        if self.settled:    # nothing left to watch or press
            return self.static_bundle(), {}
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        data = dict(data)
        data.update(self.static_bundle())
        return data, metadata

    def __repr__(self) -> str:
        return f"<JobWidget {self.job_id}: {self.state}>"


def job_view(job) -> JobWidget | None:
    """``Job.view``: in a front end that shows widgets, a job shown as a cell's result is its status widget."""
    return job_widget_to_look_at(job) if front_end_shows_widgets() else None


def show_job(job) -> JobWidget | None:
    """How IPython displays a ``Job`` (a cell's result, ``display(job)``) in a front end that shows widgets:
    its widget with a ``display_id``, so that it becomes the job's static record once nothing is left to do
    (its results pulled, or none to pull). A job still running, not a ``--bg`` one, is watched by its
    target's monitor so that the widget follows it."""
    from IPython.display import display
    widget = job_widget_to_look_at(job)
    if widget.settled:
        display(widget.static_bundle(), raw=True)
        return None
    widget.display_handle = display(widget, display_id=True)
    from IPython import get_ipython
    # a --bg job is watched already, for its results: a second watch would take its place
    if not job.record.state.is_final and job.id not in background_jobs(get_ipython()).job_ids:
        def ended(ended_job) -> None:
            widget.refresh(ended_job.status)
            widget._update_can_pull()
            widget.renew_display()
        monitor_for(job.record.target).watch(job, on_change=lambda seen: widget.refresh(seen.status), on_end=ended)
    return widget


def register_job_display(shell) -> None:
    """Show jobs with ``show_job`` in this shell, when it is a kernel whose front end shows widgets."""
    if front_end_shows_widgets(shell):
        shell.display_formatter.ipython_display_formatter.for_type(Job, show_job)


def unregister_job_display(shell) -> None:
    shell.display_formatter.ipython_display_formatter.type_printers.pop(Job, None)


def job_widget_to_look_at(job) -> JobWidget:
    """A widget for a job the user only looked at (``rx_magic.jobs()[0]``): its results come when asked."""
    from IPython import get_ipython

    def pull_before_the_next_cell(widget: JobWidget) -> None:
        background_jobs(get_ipython()).adopt(widget.job, widget)

    widget = JobWidget(job, auto_pull=False, on_pull=pull_before_the_next_cell)
    widget.refresh(job.status)
    widget.flush()
    return widget


# badge colours of the static record, under white text: each at least 4.5:1 (tests/test_widget.py checks)
STATIC_BADGE = {"submitted": "#555555", "queued": "#8a4600", "running": "#0d47a1", "done": "#1b5e20",
                "failed": "#b71c1c", "cancelled": "#555555", "unknown": "#6d4c41"}


def state_label(state: str, elements: str) -> str:
    """``failed`` for a job array some of whose elements ended done is "3 of 4 done": their values were pulled."""
    if state == "failed" and "d" in elements:
        return f"{elements.count('d')} of {len(elements)} done"
    return state


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _timeline(widget: JobWidget) -> str:
    """When the job was submitted, how long it queued and ran, and of what walltime."""
    parts = [f"submitted {_clock(widget.submitted_at)}"] if widget.submitted_at else []
    if widget.started_at and widget.submitted_at:
        parts.append(f"queued {format_walltime(int(max(0.0, widget.started_at - widget.submitted_at)))}")
    elapsed = _elapsed(widget)
    if widget.started_at and elapsed:
        parts.append(f"{'ran' if widget.ended_at else 'running'} {elapsed}")
    if widget.walltime:
        parts.append(f"walltime {format_walltime(widget.walltime)}")
    return " · ".join(parts)


def _elapsed(widget: JobWidget) -> str:
    start = widget.started_at or widget.submitted_at
    if not start:
        return ""
    end = widget.ended_at or (0.0 if widget.state in ("done", "failed", "cancelled") else widget.server_now)
    return format_walltime(int(max(0.0, end - start))) if end else ""


def _read_resources(job) -> Resources:
    try:
        spec = job.spec()
    except Exception:   # an unreachable target: show no request rather than fail
        spec = None
    return Resources.from_json((spec or {}).get("resources") or {})


def full_log(job) -> str:
    """The job's stdout, then its stderr under a heading: of each, its head and tail, ``LOG_LIMIT`` bytes in all,
    with one line between saying how much was cut and where the whole log is."""
    parts = []
    for stream in ("stdout", "stderr"):
        text = job.log(stream, head=LOG_LIMIT // 4, tail=LOG_LIMIT - LOG_LIMIT // 4)
        if text:
            parts.append(text if stream == "stdout" else f"--- stderr ---\n{text}")
    return "\n".join(parts) or "(the job has printed nothing yet)"


# ---------------------------------------------------------------------------- the table of jobs

class JobsTable(anywidget.AnyWidget):
    """``%rx jobs`` as a table; rows are dicts (id, state, target, age, first_line, reason, mine).

    Buttons send ``{"action": "attach" | "log" | "cancel", "id": ID}`` to ``on_action(action, id)``.
    """

    _esm = _assets_dir() / "widget.js"
    _css = _assets_dir() / "widget.css"

    view = traitlets.Unicode("jobs").tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, rows: list[dict], text: str, on_action=None, **kwargs):
        super().__init__(rows=rows, **kwargs)
        self.text = text
        self.on_action = on_action
        self.on_msg(self._on_message)

    def update_row(self, job_id: str, **values) -> None:
        """Change one row (a job cancelled from the table shows its new state)."""
        self.rows = [dict(row, **values) if row["id"] == job_id else row for row in self.rows]

    def _on_message(self, _widget, content, _buffers) -> None:
        content = content or {}
        if self.on_action is not None and content.get("action") in ("attach", "log", "cancel"):
            self.on_action(content["action"], str(content.get("id", "")))

    def summary_html(self) -> str:
        e = html.escape
        cells = "".join(
            f"<tr><td>{e(row['state'])}</td><td><code>{e(row['id'])}</code>{'' if row['mine'] else ' (other kernel)'}"
            f"</td><td>{e(row['target'])}</td><td>{e(row['age'])}</td><td><code>{e(row['first_line'][:60])}</code></td></tr>"
            for row in self.rows)
        return ("<table><tr><th>state</th><th>job</th><th>target</th><th>age</th><th>cell</th></tr>"
                + cells + "</table>")

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        data = dict(data)
        data["text/plain"] = self.text
        data["text/html"] = self.summary_html()
        return data, metadata

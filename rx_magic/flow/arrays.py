"""Job arrays: one cell run once per value of ``--map NAME=EXPR``.

An array is one job with one folder and one scheduler id; element ``i`` runs
with ``NAME = values[i]`` and writes everything a single job would into
``elements/{i}/``, then an empty ``elements/{i}.end``. A round of watching
lists ``elements/`` once and reads each ended element's status once (ended
elements never change), so a thousand elements cost one listing a round.

The array's own state is worked out here from its elements and handed to
``states.decide_state`` as if it were one job's ``status.json``.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArrayFailed, InputError, RemoteTraceback
from ..model.states import SchedulerState, State
from ..runtime.layout import JobPaths, element_entry
from .pull import READ_TOGETHER, ReadFirst, Results

#: The most elements one cell may fan out to; more is a sign EXPR was not what was meant.
MAX_ELEMENTS = 10_000

#: One letter per element state, for the widget's strip and ``%rx jobs``.
LETTERS = {"pending": "q", "running": "r", "done": "d", "failed": "f", "cancelled": "c"}

_MAP = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)\s*(.+)$", re.DOTALL)


@dataclass
class ArrayRequest:
    """``--map NAME=EXPR``, evaluated in the notebook."""

    name: str
    expr: str
    values: list = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.values)


def parse_map(text: str, namespace: dict) -> ArrayRequest:
    """Read ``NAME=EXPR`` and evaluate EXPR in the notebook's namespace, once, into a list."""
    match = _MAP.match(text or "")
    if not match:
        raise InputError(f"--map {text!r}: write it as NAME=EXPR, e.g. --map seed=range(20) "
                         "(quote it if EXPR has spaces: --map 'x=[1, 2, 3]')")
    name, expr = match[1], match[2].strip()
    if name in keyword.kwlist:
        raise InputError(f"--map {text!r}: {name!r} is a Python keyword; choose another name")
    try:
        ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise InputError(f"--map {name}={expr}: EXPR is not a Python expression ({exc.msg})") from None
    try:
        found = eval(expr, namespace)       # the user's own expression, in their own notebook
    except Exception as exc:
        raise InputError(f"--map {name}={expr}: evaluating EXPR here raised {type(exc).__name__}: {exc}") from None
    if isinstance(found, (str, bytes, dict)) or not hasattr(found, "__iter__"):
        raise InputError(f"--map {name}={expr}: EXPR gave a {type(found).__name__}; it must be a list, tuple, "
                         "range, array or other sequence of the values to run the cell with")
    values = []
    for value in found:
        values.append(value)
        if len(values) > MAX_ELEMENTS:
            raise InputError(f"--map {name}={expr}: more than {MAX_ELEMENTS} values; run the cell over chunks "
                             "of them instead (each element can loop over a chunk)")
    if not values:
        raise InputError(f"--map {name}={expr}: EXPR has no values, so there is nothing to run")
    return ArrayRequest(name, expr, values)


# ---------------------------------------------------------------------------- reading an array's progress

_ended: dict[str, dict[int, dict]] = {}      # job folder -> element -> its final status.json
_ended_lock = threading.Lock()


def read_progress(transport, paths: JobPaths, size: int) -> tuple[set[int], dict[int, dict]]:
    """Which elements have started, and the final status of each that has ended (each read once)."""
    started, ended_now = set(), set()
    for entry in transport.listdir(paths.elements_dir):
        found = element_entry(entry)
        if found is not None and found[0] < size:
            (ended_now if found[1] else started).add(found[0])
    with _ended_lock:
        known = _ended.setdefault(paths.folder, {})
    for index in sorted(ended_now - set(known)):
        status = _read_json(transport, paths.element(index).status_json)
        if status and status.get("state") in ("done", "failed", "cancelled"):
            with _ended_lock:
                known[index] = status
    return started | set(known), dict(known)


def forget(paths: JobPaths) -> None:
    with _ended_lock:
        _ended.pop(paths.folder, None)


def _read_json(transport, path: str):
    try:
        return json.loads(transport.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None


def array_status(size: int, started: set[int], ended: dict[int, dict], scheduler: SchedulerState | None,
                 cancel_requested: bool = False) -> dict | None:
    """The array as one ``status.json`` would say it; None while no element has started.

    Once every element has ended, or the scheduler's own record says the array
    failed or was cancelled, the array has ended: elements with no ending of
    their own take the scheduler's word for theirs.
    """
    sched_elements = (scheduler.elements or {}) if scheduler else {}
    # the scheduler's own record of an ending that went wrong ends the array; a scheduler that no longer knows
    # it, or says it ended well while elements have no ending yet, is not evidence (states.Disappearance decides)
    # (a cancel you asked for, with the scheduler no longer knowing the array, is its end too)
    over = len(ended) == size or (scheduler is not None and (
        scheduler.state in (State.FAILED, State.CANCELLED) or (cancel_requested and scheduler.state is None)))
    states, reasons = [], {}
    for index in range(size):
        if index in ended:
            state = ended[index].get("state", "failed")
            if state == "failed" and cancel_requested and (ended[index].get("exit_code") or 0) > 128:
                state = "cancelled"
            if state == "failed":
                said = sched_elements.get(index)
                reasons[index] = (said.reason if said and said.state is State.FAILED and said.reason
                                  else ended[index].get("reason") or "failed")
        elif over:
            said = sched_elements.get(index)
            if cancel_requested or (said and said.state is State.CANCELLED):
                state = "cancelled"
            else:
                state = "failed"
                reasons[index] = (said.reason if said and said.reason and said.state is State.FAILED
                                  else "it ended without recording a result" if index in started
                                  else "it never started")
        else:
            state = "running" if index in started else "pending"
        states.append(state)
    if not started and not over:
        return None
    times = [status for status in ended.values()]
    status: dict[str, Any] = {
        "elements": "".join(LETTERS[state] for state in states),
        "failed_elements": {str(index): reason for index, reason in reasons.items()},
        "started": min((s.get("started") or 0 for s in times), default=None),
    }
    if not over:
        status.update(state="running", reason=None, ended=None)
        return status
    failed, cancelled = states.count("failed"), states.count("cancelled")
    if cancelled:
        state, reason = "cancelled", f"{cancelled} of {size} elements cancelled"
    elif failed:
        state, reason = "failed", f"{failed} of {size} elements failed"
    else:
        state, reason = "done", None
    ends = [s.get("ended") for s in times if s.get("ended")]
    status.update(state=state, reason=reason, ended=max(ends) if ends else None,
                  peak_memory=max((s.get("peak_memory") or 0 for s in times), default=0))
    return status


# ---------------------------------------------------------------------------- results

#: How many elements' small files one request reads (one round trip over SSH); chunks bound a reply's size.
READ_ELEMENTS_TOGETHER = 50


class _Wanted:
    """Stands in for a transport to learn which files ``ReadFirst.of`` reads for one element."""

    def __init__(self):
        self.paths: list[str] = []

    def read_files(self, paths, limit=None) -> dict:
        self.paths.extend(paths)
        return {}


class ElementsReadAhead:
    """The transport an array's pull reads its elements through: the small files each element's pull reads
    together (``pull.ReadFirst.of``) are read for ``READ_ELEMENTS_TOGETHER`` elements in one request, instead of
    one request per element (200 round trips over SSH for a 200-element map). A request for files it does not
    hold all of (one was over the size limit) goes to the transport, as does everything else."""

    def __init__(self, transport, paths: JobPaths, elements: dict[int, bool]):
        """``elements``: each element to pull, and whether its values are read (it ended done)."""
        self.transport, self.found = transport, {}
        wanted = []
        for index, values in sorted(elements.items()):
            asked = _Wanted()
            ReadFirst.of(asked, paths.element(index), values)
            wanted.append(asked.paths)
        for start in range(0, len(wanted), READ_ELEMENTS_TOGETHER):
            chunk = [path for paths_of_one in wanted[start:start + READ_ELEMENTS_TOGETHER] for path in paths_of_one]
            self.found.update(transport.read_files(chunk, limit=READ_TOGETHER))

    def read_files(self, paths, limit=None) -> dict:
        if all(path in self.found for path in paths):
            return {path: self.found.pop(path) for path in paths}     # each is read once: let it go then
        return self.transport.read_files(paths, limit)

    def __getattr__(self, name):
        return getattr(self.transport, name)


@dataclass
class ElementFailure:
    index: int
    value_repr: str
    reason: str
    traceback: str = ""


def element_label(name: str, values_repr: list[str], index: int) -> str:
    return f"{name}={values_repr[index]}" if index < len(values_repr) else f"element {index}"


def combine(name: str, values_repr: list[str], element_results: dict[int, Any], size: int, pull: list[str],
            failures: list[ElementFailure]):
    """One ``Results`` for the array: each pulled name as a list in element order (None where it failed)."""
    combined = Results()
    done = {index: results for index, results in element_results.items() if results is not None}
    for pulled in pull:
        if any(pulled in results.values for results in done.values()):
            combined.values[pulled] = [done[index].values.get(pulled) if index in done else None
                                       for index in range(size)]
        elif any(pulled in results.modules for results in done.values()):
            combined.modules[pulled] = next(r.modules[pulled] for r in done.values() if pulled in r.modules)
        elif done:
            combined.missing.append(pulled)
    for results in done.values():
        for unpicklable, why in results.unpicklable.items():
            combined.unpicklable.setdefault(unpicklable, why)
    # the trailing expression of each element, shown as one list
    shown = {index: next((o for o in results.outputs if o.get("output_type") == "execute_result"), None)
             for index, results in element_results.items() if results is not None}
    for index in range(size):
        results = element_results.get(index)
        if results is None:
            continue
        displays = [o for o in results.outputs if o.get("output_type") == "display_data"]
        if displays and size > 1:
            combined.outputs.append({"output_type": "display_data", "metadata": {},
                                     "data": {"text/plain": f"── {element_label(name, values_repr, index)} ──"}})
        combined.outputs.extend(displays)
    if any(shown.values()):
        texts = [shown[index]["data"].get("text/plain", "") if shown.get(index) else "None" for index in range(size)]
        combined.outputs.append({"output_type": "execute_result", "metadata": {}, "execution_count": None,
                                 "data": {"text/plain": "[" + ", ".join(texts) + "]"}})
    combined.failures = failures
    return combined


def failure_error(job_id: str, name: str, size: int, failures: list[ElementFailure], pulled: list[str]) -> ArrayFailed:
    """What the cell raises when some elements failed: each failure, then the first one's traceback."""
    lines = [f"job {job_id}: {len(failures)} of {size} elements failed"
             + (f"; the others' values were pulled, with None in the failed places of {', '.join(pulled)}"
                if pulled and len(failures) < size else "")]
    for failure in failures[:20]:
        lines.append(f"  {name}={failure.value_repr} (element {failure.index}): {failure.reason}")
    if len(failures) > 20:
        lines.append(f"  ... and {len(failures) - 20} more")
    error = ArrayFailed("\n".join(lines), job_id, failures)
    first = next((failure for failure in failures if failure.traceback), None)
    if first is not None:
        error.__cause__ = RemoteTraceback(f"element {first.index} ({name}={first.value_repr}):\n{first.traceback}")
        error.__suppress_context__ = True
    return error

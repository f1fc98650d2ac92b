"""A finished job's results: fetched from its folder, then applied in the notebook.

Applying is all or nothing: every pulled value is loaded before the namespace
is touched, so a value that cannot be loaded here leaves the namespace as it
was (and the job's folder keeps the values for another try).
"""

from __future__ import annotations

import importlib
import os
import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PullError, RemoteError, RemoteTraceback, TransportError, show_as_remote
from ..runtime import process_state, wire
from ..model.local_dirs import private_folder
from ..runtime.layout import JobPaths
from ..transport import Transport

NOTEBOOK_LOG_LIMIT = 1_000_000     # characters of each stream kept in job.ipynb: half its head, half its tail
#: result files up to this size are read together in one request (one round trip over SSH); larger ones on their own
READ_TOGETHER = 4 * 2**20


class _NoResult:
    def __repr__(self) -> str:
        return "NO_RESULT"


NO_RESULT = _NoResult()     # no value came back to show (None never does: it is not shown)


@dataclass
class Results:
    """What a finished job left in its folder."""

    values: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)       # name -> module to import here
    missing: list[str] = field(default_factory=list)            # pulled names the cell never bound
    unpicklable: dict[str, str] = field(default_factory=dict)   # name -> why it stayed on the target
    outputs: list[dict] = field(default_factory=list)           # nbformat output dicts (display.json)
    error: dict | None = None                                   # error.json
    exception: BaseException | None = None                      # the cell's exception, rebuilt here
    changed: list[str] = field(default_factory=list)            # pushed names the cell changed in place
    in_place: wire.InPlace | None = None                        # their new states, put in by apply_values
    carried: dict[str, Any] = field(default_factory=dict)       # globals the pulled functions carry
    result: Any = NO_RESULT                                     # the last expression's value (result.dill)
    process_state: dict = field(default_factory=dict)           # sections the cell changed (process_state.json)
    read: dict[str, bytes | None] = field(default_factory=dict, repr=False)    # files read together (ReadFirst)


class ReadFirst:
    """A finished job's small files -- its results, ``job.json`` and logs for job.ipynb -- all read in one request
    (``Transport.read_files``: one round trip over SSH); a file larger, or not among them, is read from the
    transport as before. Reads as much of a ``Transport`` as the pull and ``logs.read_log`` use."""

    def __init__(self, transport: Transport, found: dict[str, bytes | None]):
        self.transport, self.found = transport, found

    @classmethod
    def of(cls, transport: Transport, paths: JobPaths, values: bool) -> ReadFirst:
        wanted = [paths.display, paths.error, paths.exception, paths.process_state, paths.job_json, paths.stdout,
                  paths.stderr]
        if values:
            wanted += [paths.outputs, paths.result]
        return cls(transport, transport.read_files(wanted, limit=READ_TOGETHER))

    def read_bytes(self, path: str, offset: int = 0, limit: int | None = None) -> bytes:
        if path not in self.found:
            return self.transport.read_bytes(path, offset, limit)
        if self.found[path] is None:
            raise FileNotFoundError(2, "No such file", path)
        return self.found[path][offset:None if limit is None else offset + limit]

    def file_size(self, path: str) -> int:
        return len(self.read_bytes(path)) if path in self.found else self.transport.file_size(path)

    def exists(self, path: str) -> bool:
        return self.found[path] is not None if path in self.found else self.transport.exists(path)

    def open_read(self, path: str):
        return io.BytesIO(self.read_bytes(path)) if path in self.found else self.transport.open_read(path)


def _read_json(transport: Transport | ReadFirst, path: str):
    try:
        return json.loads(transport.read_bytes(path))
    except FileNotFoundError:
        return None


def fetch_results(transport: Transport, paths: JobPaths, *, values: bool = True,
                  namespace: dict | None = None) -> Results:
    """Read the outputs, the error and (with ``values``) every pulled value of a finished job.

    Pulled values come one frame each, read with one memo so that what they share stays
    shared, and refer to the notebook's own objects (``namespace``, by default IPython's),
    those the cell changed in place with their new state, which :func:`apply_values` puts in.
    """
    files = ReadFirst.of(transport, paths, values)
    results = Results(outputs=_read_json(files, paths.display) or [], error=_read_json(files, paths.error),
                      read=files.found)
    transport = files       # from here on, what was read together comes from there
    if results.error and results.error.get("type") and "unpicklable" not in results.error:
        try:
            with transport.open_read(paths.exception) as file:
                results.exception = wire.load(file)
        except Exception:  # an exception class this kernel cannot rebuild: RemoteError stands in
            results.exception = None
    if values and transport.exists(paths.outputs):
        results.in_place = wire.InPlace(namespace)
        with transport.open_read(paths.outputs) as file, wire.loading_into(namespace) as results.carried:
            while True:
                try:
                    name, value = wire.load(file, results.in_place)
                except EOFError:
                    break
                except TransportError:
                    raise               # the link dropped: the values are still there for another try
                except Exception as exc:
                    raise PullError(f"a pulled value could not be loaded here ({type(exc).__name__}: {exc}); "
                                    "nothing was changed in the notebook. The values stay in "
                                    f"{paths.outputs}; install what is missing and attach again") from exc
                if name == "":
                    results.missing = value["missing"]
                    results.unpicklable = value["unpicklable"]
                    results.modules = value["modules"]
                    results.changed = value.get("changed", [])
                elif name not in (wire.KNOWN, wire.CHANGED):    # those the InPlace took in as it read them
                    results.values[name] = value
            results.values.update(results.in_place.rebuilt)     # made anew: the one here could not take it
            try:
                results.in_place.finish()
            except Exception as exc:
                raise PullError(f"{exc}; nothing was changed in the notebook. The values stay in {paths.outputs}; "
                                "attach the job in the notebook that submitted it") from exc
    return results


def apply_values(results: Results, namespace: dict) -> tuple[list[str], list[str]]:
    """Put the pulled values into ``namespace`` at once; return (names set, warnings)."""
    staged, warnings = dict(results.values), []
    for name, module_name in results.modules.items():
        try:
            staged[name] = importlib.import_module(module_name)
        except ImportError as exc:
            warnings.append(f"{name!r} is the module {module_name}, which this kernel cannot import: {exc}")
    for name, why in results.unpicklable.items():
        warnings.append(f"{name!r} stayed on the target: it cannot be pickled ({why})")
    if results.missing:
        names = ", ".join(repr(name) for name in results.missing)
        warnings.append(f"the cell did not define {names}, so {'it was' if len(results.missing) == 1 else 'they were'} "
                        "not pulled")
    if results.in_place is not None:
        results.in_place.commit()
    for name, value in results.carried.items():     # what pulled functions read, where nothing is bound
        if name not in staged:
            namespace.setdefault(name, value)
    namespace.update(staged)
    return list(staged), warnings


def fetch_cell_effects(transport: Transport, paths: JobPaths, results: Results, *, values: bool = True) -> None:
    """Add to ``results`` the random state and settings the cell changed and (with ``values``) the value of
    its last expression, when it loads here; a job from before this release has neither."""
    transport = ReadFirst(transport, results.read)     # what fetch_results read together
    results.process_state = process_state.decode(_read_json(transport, paths.process_state) or {})
    if not values or not any(output.get("output_type") == "execute_result" for output in results.outputs):
        return      # nothing to show: not even a look (over SSH each look is a round trip)
    try:
        kind, shown = wire.load(io.BytesIO(transport.read_bytes(paths.result)))
    except FileNotFoundError:
        return
    except TransportError:
        raise
    except Exception:       # a class this kernel cannot rebuild: the target's rendering stands in
        return
    results.result = ShownName(shown) if kind == "name" else shown


@dataclass(frozen=True)
class ShownName:
    """The last expression was a name the notebook has (pulled, or pushed and there already): what to show is
    the namespace's value once the pulled values are in (``kernel_state.redo_after_job`` looks it up)."""

    name: str


class RemoteResult:
    """The value of the cell's trailing expression, shown as the target rendered it."""

    def __init__(self, data: dict, metadata: dict | None = None):
        self.data = data
        self.metadata = metadata or {}

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return self.data.get("text/plain", "<remote result>")


def replay_outputs(outputs: list[dict], value: Any = NO_RESULT, show=None) -> Any:
    """Show the cell's display outputs here, in order, and its trailing expression's result where it came.

    The result is ``value`` when it was brought back (so this kernel's formatter shows it: the pretty
    printer, ``_repr_html_``, figures as images), else the target's rendering (``RemoteResult``); it is
    passed to ``show`` (the shell's displayhook, or ``display``) or, without one, returned.
    """
    from IPython.display import publish_display_data
    result = None
    if isinstance(value, ShownName):    # never looked up: the target's rendering it is
        value = NO_RESULT
    for output in outputs:
        if output.get("output_type") == "execute_result":
            shown = value if value is not NO_RESULT else RemoteResult(output["data"], output.get("metadata"))
            if show is None:
                result = shown
            else:
                show(shown)
        elif output.get("output_type") == "display_data":
            publish_display_data(output["data"], output.get("metadata") or {})
    return result


def remote_exception(results: Results, job_id: str) -> BaseException:
    """The exception to raise here: the cell's own when it rebuilt, else ``RemoteError``; cause = remote traceback
    (as IPython formatted it on the target, when it could)."""
    error = results.error or {}
    text = error.get("traceback", "")
    exc = results.exception
    if exc is None:
        qualified = ".".join(part for part in (error.get("module"), error.get("type")) if part and part != "builtins")
        exc = RemoteError(f"{qualified}: {error.get('message', '')}", qualified, text, job_id)
    shown = error.get("ipython_traceback")     # IPython's formatting on the target, when it had IPython
    lines = [line for line in shown if isinstance(line, str)] if isinstance(shown, list) else None
    exc.__cause__ = RemoteTraceback(text, lines)
    exc.__suppress_context__ = True
    return show_as_remote(exc)


def write_notebook(path: Path, source: str, stdout: str, stderr: str, results: Results) -> Path:
    """``job.ipynb``: the cell as written, with everything it output, for people to open later.

    Written as nbformat 4.5 JSON directly, laid out as ``nbformat.write`` lays it out (one-space indent,
    sorted keys, text as lines): importing nbformat, and the jsonschema it validates with, costs a kernel
    0.3-1 s (more on a busy machine) before its first remote cell's value appears.
    ``tests/test_local_target.py`` checks the file against nbformat's schema.
    """
    outputs = []
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        if text:
            clipped = text
            if len(text) > NOTEBOOK_LOG_LIMIT:     # a caller that did not read it bounded (Job.log does)
                half = NOTEBOOK_LOG_LIMIT // 2
                cut = len(text) - 2 * half
                clipped = f"{text[:half]}\nrx_magic: ... {cut} characters of {name} cut here\n{text[-half:]}"
            outputs.append({"output_type": "stream", "name": name, "text": _lines(clipped)})
    for output in results.outputs:
        shown = {"output_type": "display_data", "data": _notebook_data(output["data"]),
                 "metadata": output.get("metadata") or {}}
        if output["output_type"] == "execute_result":
            shown.update(output_type="execute_result", execution_count=1)
        outputs.append(shown)
    if results.error and results.error.get("type"):
        outputs.append({"output_type": "error", "ename": results.error["type"],
                        "evalue": results.error.get("message", ""),
                        "traceback": results.error.get("traceback", "").splitlines()})
    cell = {"cell_type": "code", "execution_count": 1, "id": uuid.uuid4().hex[:8], "metadata": {},
            "outputs": outputs, "source": _lines(source)}
    notebook = {"cells": [cell], "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    private_folder(path.parent)
    temporary = path.with_suffix(".part")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)     # a .part left by an older version may be world-readable
        json.dump(notebook, file, indent=1, sort_keys=True, ensure_ascii=False)
        file.write("\n")
    temporary.replace(path)
    return path


def _lines(text: str) -> list[str]:
    """A notebook's multi-line string as nbformat writes it: a list of lines, each keeping its newline."""
    return text.splitlines(keepends=True)


#: Besides ``text/*``, the types whose text nbformat writes as lines (``nbformat.v4.rwbase._non_text_split_mimes``)
_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})


def _notebook_data(data: dict) -> dict:
    """An output's mime bundle as nbformat writes it: text (and SVG, JavaScript) as lines; the rest as it is."""
    return {mime: _lines(value) if isinstance(value, str) and (mime.startswith("text/") or mime in _SPLIT_MIMES)
            else value for mime, value in data.items()}

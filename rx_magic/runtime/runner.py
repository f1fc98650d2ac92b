"""Runs one rx_magic job on the target: ``python runner.py JOB_FOLDER``.

It imports nothing from rx_magic's package. It is copied to
``{workdir}/.rx/runtime-*/`` beside ``layout.py`` (the job folder's file names)
and ``wire.py`` (the pickle format) and needs only the standard library and
dill; IPython and matplotlib are used when the cell uses them.

Two processes share the work. The *supervisor* (this process, standard
library only) records ``status.json``, enforces walltime and memory, and
always writes the job's ending, whatever happens to the cell. The *cell
process*, forked from it in its own process group, loads the pushed values,
runs the cell with stdout/stderr going to the folder, and writes the pulled
values, the rich outputs and any exception.
"""

from __future__ import annotations

import _signal as signal  # signal's functions and numbers without its enums: enum costs a job ~5 ms of its start
import errno
import os
import select
import sys
import time

# layout.py and wire.py lie beside this file; python -I would not look there by itself
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The runtime's own modules are compiled once, into __pycache__ in its private folder, even where
# PYTHONDONTWRITEBYTECODE is set: compiling wire.py alone takes longer than starting Python.
_DONT_WRITE_BYTECODE, sys.dont_write_bytecode = sys.dont_write_bytecode, False
import jsontext  # noqa: E402 - json.loads/dumps without json's imports of re and enum (~8 ms)
import layout  # noqa: E402 - the job folder's file names
sys.dont_write_bytecode = _DONT_WRITE_BYTECODE

CELL_FILENAME = "<remote cell>"
_HOST = os.uname().nodename      # socket.gethostname(), without importing socket

# exit codes of the cell process
CELL_OK, CELL_RAISED, RUNNER_ERROR = 0, 1, 3
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _write_json(path: str, data) -> None:
    temporary = f"{path}.part"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(jsontext.dumps(data))
    os.replace(temporary, path)


def _read_json(path: str):
    try:
        with open(path) as file:
            return jsontext.loads(file.read())
    except (OSError, ValueError):
        return None


def _signal_name(signum: int) -> str:
    """``SIGKILL`` for 9: the signal module's names, imported only for a job that ends by a signal."""
    import signal as signals
    try:
        return signals.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _sibling(name: str):
    """A runtime module beside this file, imported when first needed; compiled once, into its ``__pycache__``.
    Kept here once imported: ``_hide_siblings`` takes it out of ``sys.modules`` before a cell runs."""
    module = _siblings.get(name)
    if module is not None:
        return module
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        module = _siblings[name] = __import__(name)
        return module
    finally:
        sys.dont_write_bytecode = dont_write


_siblings = {"layout": layout, "jsontext": jsontext}


def _hide_siblings() -> None:
    """Take the runtime's modules (and, where the runner was imported as one, ``runner``) out of ``sys.modules``,
    so that a cell's ``import layout`` or ``import wire`` finds the notebook's own module of that name, as in the
    notebook; the runtime keeps its own references. (wire's loaders are found by pickles as ``_rx_wire``.)"""
    runtime = os.path.dirname(os.path.abspath(__file__))
    for name in (*_siblings, "runner", "worker"):
        module = sys.modules.get(name)
        if module is not None and os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or "")) == runtime:
            del sys.modules[name]


#: process_state.py, imported by the cell process when it starts (the supervisor does without it)
process_state = None

#: A ``--map``'s values by their blob's digest, loaded once by a hold's lane before it forks its elements
#: (``warm_lane``); each element's cell process finds them here instead of checking and unpickling the blob.
_map_values: dict[str, object] = {}


#: The cell compiled, by (code, first line): a hold's lane compiles it once for all its elements (``warm_lane``).
_compiled: dict[tuple[str, int], tuple] = {}


def _compiled_cell(code: str, first_line: int, last_expression: bool = True) -> tuple:
    """The cell's code object, and its last expression (node and code object) when it ends with one.

    Compiled as the notebook compiles it, without this file's ``from __future__`` imports (``dont_inherit``),
    which would make the cell's annotations strings. With ``last_expression`` False (the notebook saw that the
    cell does not end with an expression) it is compiled straight from its source, without a syntax tree.
    """
    found = _compiled.get((code, first_line))
    if found is None:
        source = "\n" * (first_line - 1) + code     # blank lines first number its lines as the notebook does
        if not last_expression:
            return compile(source, CELL_FILENAME, "exec", dont_inherit=True), None, None
        # the tree as compile() itself makes it, without the ast module (and what it imports) in every job
        import _ast
        tree = compile(source, CELL_FILENAME, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
        last = last_code = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = _ast.Expression(tree.body.pop().value)
            last_code = compile(last, CELL_FILENAME, "eval", dont_inherit=True)
        found = (compile(tree, CELL_FILENAME, "exec", dont_inherit=True), last, last_code)
    return found


def _shipped_cell(spec: dict) -> tuple | None:
    """The cell as the notebook compiled it (``job.json``'s ``compiled``: body, last expression, its name), when
    this Python reads that bytecode; else None, and the cell is compiled here."""
    shipped = spec.get("compiled")
    machinery = sys.modules.get("_frozen_importlib_external")
    if not shipped or machinery is None or shipped.get("magic") != machinery.MAGIC_NUMBER.hex():
        return None
    try:
        import binascii
        import marshal
        body = marshal.loads(binascii.a2b_base64(shipped["body"]))
        last = marshal.loads(binascii.a2b_base64(shipped["last"])) if shipped.get("last") else None
    except Exception:
        return None
    return body, last, shipped.get("last_name")


def _compile_warning_filters(entries: list) -> None:
    """Compile the notebook's warning filters' patterns as ``warnings.filterwarnings`` does, into ``re``'s cache,
    which the elements forked from here find them in (each element applies the filters anew)."""
    import re
    for entry in entries:
        try:
            message, from_module = entry[2], entry[4]
            if message:
                re.compile(message, re.I)
            if from_module:
                re.compile(from_module)
        except Exception:
            continue


def warm_lane(folder: str, spec: dict) -> None:
    """In a hold's lane, before its first element: what every element's cell process would do alike --
    import the runtime's modules, compile the cell and the notebook's warning filters' patterns, and load the
    ``--map`` values (their blob checked as ``load_blob`` does) -- done once, so each forked element starts
    with them. Anything that fails here is left for the element
    to do, and to report."""
    try:
        cell = CellProcess(folder, spec)
        cell.wire = _sibling("wire")
        key = (spec["code"], spec.get("first_line", 1))
        _compiled[key] = _compiled_cell(*key)
        state = _sibling("process_state")
        _compile_warning_filters(state.decode(spec.get("process_state") or {}).get("warnings") or [])
        digest = spec["map"]["values"]
        _map_values[digest] = cell.load_blob(digest)
    except Exception:
        _map_values.clear()


def needs_supervisor(spec: dict) -> bool:
    """Whether a cell in a hold needs a supervisor watching a process of its own: only to enforce its walltime or
    memory limit. Without one, a hold's worker runs the cell in the child it forks (and records its ending), and a
    lane runs a --map's elements in its own process, one after another, as a process pool's workers do."""
    limits = spec.get("limits") or {}
    return bool(limits.get("walltime") or limits.get("mem"))


def run_element_in_lane(folder: str, spec: dict, element: int) -> int:
    """Run element ``element`` of a --map in this process (a hold's lane, after ``warm_lane``), writing what the
    notebook reads of a forked element -- its output, results, ``status.json`` and end marker; its outputs and
    process state only when it has some -- with no process of its own; return its exit code.

    The element gets its own namespace, values, streams and working folder, and the lane's streams, folder,
    ``sys.path``, environment, signal handlers and warning filters are put back afterwards; a module it imports
    stays imported for the lane's next element. An element that ends the process (a crash, ``os._exit``) leaves
    its ending to the worker (``Supervisor.record``), which starts another lane."""
    import warnings
    supervisor = Supervisor(folder, spec, element)
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    saved = (os.getcwd(), sys.path[:], sys.meta_path[:], sys.modules.get("__main__"), sys.stdin, sys.stdout,
             sys.stderr, dict(os.environ), warnings.filters[:])
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
    handlers = [signal.getsignal(signum) for signum in stop_signals]
    code = RUNNER_ERROR
    try:
        code = CellProcess(folder, spec, element)._in_lane()
    except Exception:   # the runner's own failure, not the cell's: said in the element's stderr, its reason's tail
        import traceback
        traceback.print_exc()
    finally:
        for signum, handler in zip(stop_signals, handlers):
            signal.signal(signum, handler)      # a cell's own handler must not keep the lane from being stopped
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        for fd, copy in zip((0, 1, 2), saved_fds):
            os.dup2(copy, fd)
            os.close(copy)
        cwd, sys.path[:], sys.meta_path[:], main, sys.stdin, sys.stdout, sys.stderr, environ, filters = saved
        if main is not None:
            sys.modules["__main__"] = main
        if os.environ != environ:
            os.environ.clear()
            os.environ.update(environ)
        warnings.filters[:] = filters
        getattr(warnings, "_filters_mutated", lambda: None)()    # the module's cache of what a filter said
        os.chdir(cwd)
    peak = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss
    # status.json holds the exit code: no file of its own, as no scheduler's script looks for it here
    peak *= 1 if sys.platform == "darwin" else 1024
    return supervisor.record((code & 0xFF) << 8, None, peak, exit_file=False)


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent ends, even by SIGKILL (Linux's ``PR_SET_PDEATHSIG``).

    ``prctl`` is called through ``_ctypes`` itself: the ctypes package makes its thirty-odd C types as it is
    imported, which every job would pay for this one call (about 1.5 ms); ctypes does it where that fails.
    """
    try:
        import _ctypes

        class Int(_ctypes._SimpleCData):
            _type_ = "i"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = Int

        Function(_ctypes.dlsym(_ctypes.dlopen(None, os.RTLD_LOCAL), "prctl"))(1, int(signal.SIGKILL))
    except Exception:
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        except Exception:
            pass


#: A blob this big or bigger is stamped once verified, and its buffers are told unchanged by what the cell wrote
#: (``CellProcess.load_blob``, ``changed_in_place``); a smaller one is hashed in less time than a stamp takes.
VERIFIED_STAMP_MIN = 4 * 2**20


def _file_identity(info) -> list[int]:
    """What tells a file's bytes from any other's without reading them (see ``CellProcess._stamp_path``)."""
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def open_own_file(path: str, named: str, to_do: str):
    """``path`` opened for reading only if it is a regular file of this user's that no one else may write (never a
    symlink), else ``RunnerError`` saying so: the one rule for every file the runner trusts (blobs, shipped files).
    ``named`` says what the file is ("the pushed value's blob ..."), ``to_do`` what was refused ("load the blob ...").
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise RunnerError(f"{named} cannot be opened: {exc.strerror} — run the cell again to send it") from exc
    file = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        file.close()
        raise RunnerError(
            f"refusing to {to_do}: it is not a private file of yours (owner uid {info.st_uid}, "
            f"mode {stat.filemode(info.st_mode)}), so someone else may have written it — "
            f"remove it (rm {path}) and run the cell again")
    return file


def _without_dill(exc: BaseException) -> str | None:
    """What to do when loading or writing a value failed because dill is not installed here, else None."""
    if isinstance(exc, ImportError) and (exc.name or "").partition(".")[0] == "dill":
        return (f"dill is not importable by {sys.executable} (Python {sys.version.split()[0]}) on {_HOST}, "
                f"and this value needs it: install it there with `{sys.executable} -m pip install dill`, "
                "or point the target's `python` at an environment that has it")
    return None


def _tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - 4096))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


# ----------------------------------------------------------------------------- supervisor

def _tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes (Linux /proc; 0 elsewhere)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as file:
                for line in file:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{current}/task/{current}/children") as file:
                pending.extend(int(child) for child in file.read().split())
        except (OSError, ValueError):
            continue
    return total


def _paths(folder: str, element: int | None) -> layout.JobPaths:
    """The files a job writes: its folder's, or for element ``element`` of an array, that element's."""
    paths = layout.JobPaths.of_folder(folder)
    return paths if element is None else paths.element(element)


class Supervisor:
    """Starts the cell process, watches it, and writes the job's ending.

    For one element of a job array, everything it writes goes to
    ``elements/{element}/`` and an empty ``elements/{element}.end`` says it
    has ended.
    """

    def __init__(self, folder: str, spec: dict, element: int | None = None):
        self.folder = folder
        self.spec = spec
        self.element = element
        self.paths = _paths(folder, element)
        limits = spec.get("limits") or {}
        self.walltime = limits.get("walltime")
        self.mem = limits.get("mem")
        self.signalled: int | None = None
        self.started = time.time()

    def _on_signal(self, signum, _frame) -> None:
        self.signalled = signum

    def run(self) -> int:
        stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        for signum in stop_signals:
            signal.signal(signum, self._on_signal)
        self.write_status("running")
        # held until the cell process has its own handlers and group, so no stop signal is lost
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        pid = os.fork()
        if pid == 0:  # the cell process
            code = RUNNER_ERROR
            try:
                # the supervisor's handlers would make the cell ignore the SIGTERM that stops it
                for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
                code = CellProcess(self.folder, self.spec, self.element).run()
            finally:
                os._exit(code)
        try:
            os.setpgid(pid, pid)  # as the child does: whichever runs first, killpg finds the group
        except OSError:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        killed_for, peak, status = self.watch(pid)
        usage = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)
        peak = max(peak, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
        return self.record(status, killed_for, peak)

    def record(self, status: int, killed_for: str | None = None, peak: int = 0, exit_file: bool = True) -> int:
        """Write the ending of a cell process that ended with wait status ``status``: its ``status.json``, exit code
        (``exit_file``: in a file of its own too) and, for an element, its end marker; return the exit code."""
        state, reason, exit_code = self.outcome(status, killed_for)
        self.write_status(state, reason=reason, exit_code=exit_code, peak_memory=peak)
        if exit_file:
            with open(os.open(self.paths.exit_code, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                file.write(f"{exit_code}\n")
        if self.element is not None:
            os.close(os.open(self.paths.end_marker, os.O_WRONLY | os.O_CREAT, 0o600))
        return exit_code

    def watch(self, pid: int) -> tuple[str | None, int, int]:
        """Wait for the cell process; kill it on walltime, memory or a signal."""
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        killed_for, peak, kill_sent, nap = None, 0, None, 0.01
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if pidfd is not None:
                    os.close(pidfd)
                return killed_for, peak, status
            now = time.time()
            if self.mem:
                peak = max(peak, _tree_rss(pid))
            if killed_for is None:
                if self.signalled is not None:
                    killed_for = f"signal:{self.signalled}"
                elif self.walltime and now - self.started > self.walltime:
                    killed_for = "walltime"
                elif self.mem and peak > self.mem:
                    killed_for = "memory"
            if killed_for is not None:
                if kill_sent is None:
                    self._kill(pid, signal.SIGTERM)
                    kill_sent = now
                elif now - kill_sent > 5:
                    self._kill(pid, signal.SIGKILL)
            timeout = nap if self.mem or pidfd is None else 0.25
            if pidfd is not None:
                try:
                    select.select([pidfd], [], [], timeout)
                except InterruptedError:
                    pass
            else:
                time.sleep(timeout)
            nap = min(nap * 2, 0.1 if self.mem else 0.2)

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    def outcome(self, status: int, killed_for: str | None) -> tuple[str, str | None, int]:
        if killed_for == "walltime":
            return "failed", f"walltime exceeded ({_clock(self.walltime)})", 124
        if killed_for == "memory":
            return "failed", f"memory limit exceeded ({_size(self.mem)})", 125
        if killed_for and killed_for.startswith("signal:"):
            signum = int(killed_for.split(":")[1])
            return "failed", f"terminated by signal {_signal_name(signum)}", 128 + signum
        if os.WIFSIGNALED(status):
            name = _signal_name(os.WTERMSIG(status))
            hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
            tail = _tail(self.paths.stderr)
            return "failed", f"the cell's process was killed by {name}{hint}" + (f": {tail}" if tail else ""), \
                128 + os.WTERMSIG(status)
        code = os.WEXITSTATUS(status)
        if code == CELL_OK:
            return "done", None, 0
        error = _read_json(self.paths.error) or {}
        if code == CELL_RAISED and error.get("type"):
            message = error.get("message", "")
            return "failed", f"the cell raised {error['type']}" + (f": {message}" if message else ""), 1
        reason = error.get("runner_error") or "the runner failed: " + (_tail(self.paths.stderr) or f"exit code {code}")
        return "failed", reason, code

    def write_status(self, state: str, **extra) -> None:
        now = time.time()
        status = {
            "state": state, "reason": None, "started": self.started,
            "ended": now if state != "running" else None,
            "elapsed": now - self.started, "host": _HOST, "pid": os.getpid(),
            "python": "%d.%d.%d" % sys.version_info[:3],
        }
        if self.element is not None:
            status["element"] = self.element
        status.update(extra)
        _write_json(self.paths.status_json, status)


# ----------------------------------------------------------------------------- cell process

class RunnerError(Exception):
    """Something outside the cell stopped it from running: the message says what and how to fix it."""


class Outputs:
    """Rich outputs as nbformat output dicts, in the order the cell produced them."""

    def __init__(self):
        self.items: list[dict] = []
        self.formatter = None           # IPython's DisplayFormatter, when IPython runs the show
        self.figure_formats = None      # the notebook's inline backend's formats and print_figure arguments

    def bundle(self, obj) -> tuple[dict, dict]:
        if self.formatter is not None:     # it draws figures itself (CellProcess._start_ipython)
            data, metadata = self.formatter.format(obj)
            return data, metadata
        if _is_figure(obj):
            return self.figure_bundle(obj)
        data, metadata = {"text/plain": repr(obj)}, {}
        mimebundle = getattr(obj, "_repr_mimebundle_", None)
        if callable(mimebundle) and not isinstance(obj, type):
            found = mimebundle()
            if isinstance(found, tuple):
                found, metadata = found[0], found[1] or {}
            data.update(found or {})
        for method, mime in (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
                             ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png"),
                             ("_repr_jpeg_", "image/jpeg"), ("_repr_latex_", "text/latex"),
                             ("_repr_json_", "application/json")):
            render = getattr(obj, method, None)
            if callable(render) and not isinstance(obj, type) and mime not in data:
                value = render()
                if isinstance(value, tuple):
                    value, metadata[mime] = value
                if value is not None:
                    data[mime] = value
        return data, metadata

    def add(self, output_type: str, data: dict, metadata: dict | None = None) -> None:
        import base64
        clean = {}
        for mime, value in data.items():
            if isinstance(value, (bytes, bytearray)):
                value = base64.b64encode(value).decode("ascii")
            clean[mime] = value
        output = {"output_type": output_type, "data": clean, "metadata": metadata or {}}
        if output_type == "execute_result":
            output["execution_count"] = None
        self.items.append(output)

    def display(self, *objs, raw: bool = False, **_ignored) -> None:
        """``display()`` for cells that run without IPython."""
        sys.stdout.flush()
        for obj in objs:
            self.add("display_data", *((obj, {}) if raw else self.bundle(obj)))

    def publish(self, data, metadata=None, *args, **kwargs) -> None:
        """Stands in for IPython's DisplayPublisher.publish."""
        sys.stdout.flush()
        self.add("display_data", data, metadata)

    def flush_figures(self) -> None:
        """Open matplotlib figures become outputs and are closed, as the inline backend does."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        for number in pyplot.get_fignums():
            self.add("display_data", *self.figure_bundle(pyplot.figure(number)))
        pyplot.close("all")

    def figure_bundle(self, figure) -> tuple[dict, dict]:
        """A figure in the notebook's inline formats (``InlineBackend.figure_formats``; PNG when it has none),
        drawn as IPython's ``print_figure`` draws it."""
        import io
        import struct
        inline = self.figure_formats or {}
        data, metadata = {"text/plain": repr(figure)}, {}
        if not (figure.axes or figure.lines):    # IPython draws no picture of an empty figure: its text only
            return data, metadata
        for name in inline.get("formats") or ["png"]:
            mime = _FIGURE_MIMES.get(name)
            if mime is None or mime in data:
                continue
            retina = name in ("retina", "png2x")
            options = {"format": "png" if retina else {"jpg": "jpeg"}.get(name, name),
                       "facecolor": figure.get_facecolor(), "edgecolor": figure.get_edgecolor(),
                       "dpi": figure.dpi * (2 if retina else 1), "bbox_inches": "tight",
                       **(inline.get("kwargs") or {})}
            buffer = io.BytesIO()
            figure.canvas.print_figure(buffer, **options)
            value = buffer.getvalue()
            data[mime] = value.decode("utf-8") if mime == "image/svg+xml" else value
            if retina:
                width, height = struct.unpack(">II", value[16:24])
                metadata[mime] = {"width": width // 2, "height": height // 2}
        return data, metadata


_FIGURE_MIMES = {"png": "image/png", "retina": "image/png", "png2x": "image/png", "jpg": "image/jpeg",
                 "jpeg": "image/jpeg", "svg": "image/svg+xml", "pdf": "application/pdf"}


def _is_figure(obj) -> bool:
    figure_module = sys.modules.get("matplotlib.figure")
    return figure_module is not None and isinstance(obj, figure_module.Figure)


def _ends_with_semicolon(code: str) -> bool:
    """Whether the cell's last statement ends with ``;``, which tells IPython not to show its value."""
    import io
    import tokenize
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.INDENT,
                                  tokenize.DEDENT, tokenize.ENDMARKER):
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def ipython_traceback(exc: BaseException, tb, spec: dict) -> list[str] | None:
    """The cell's error as IPython shows one in the notebook (its lines, coloured as the notebook's ``colors``
    asks): ``Cell In[5], line 3`` for the cell, the notebook's labels for its functions. None when IPython is
    not importable here or cannot format it: the standard traceback then stands alone.

    IPython is imported only now, when a cell has failed. Without a shell of the cell's own, one is made
    for this in a temporary profile folder, so nothing is written in the home folder.
    """
    import re
    import tempfile
    import warnings
    look = spec.get("traceback") or {}
    try:
        from IPython.core.interactiveshell import InteractiveShell
    except Exception:   # not installed, or broken: the standard traceback it is
        return None
    try:
        with tempfile.TemporaryDirectory() as profile, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if InteractiveShell.initialized():
                shell = InteractiveShell.instance()
            else:
                import atexit
                from IPython.core.profiledir import ProfileDir
                shell = InteractiveShell.instance(ipython_dir=profile, profile_dir=ProfileDir.create_profile_dir(profile))
                atexit.unregister(shell.atexit_operations)     # its history lives and goes with the folder
            names = getattr(shell.compile, "_filename_map", None)
            if isinstance(names, dict):     # IPython 8.0 and later label cells ``Cell In[N]`` through it
                if isinstance(look.get("cell"), int):
                    names[CELL_FILENAME] = look["cell"]
                for filename, source in (spec.get("sources") or {}).items():
                    number = re.fullmatch(r"Cell In\[(.+)\]", str(source.get("label", "")))
                    if number:
                        names[filename] = number[1]
            lines = None
            for colors in dict.fromkeys((look.get("colors") or "nocolor", "nocolor")):
                try:    # a theme this IPython does not know fails here or in formatting: then without colour
                    shell.colors = colors
                    lines = shell.InteractiveTB.structured_traceback(type(exc), exc, tb)
                    break
                except Exception:
                    continue
    except Exception:   # IPython could not format it: the standard traceback stands alone
        return None
    return [str(line) for line in lines] if lines else None


class CellProcess:
    """Loads the pushed values, runs the cell, and writes what it produced."""

    def __init__(self, folder: str, spec: dict, element: int | None = None):
        self.folder = folder
        self.spec = spec
        self.element = element
        self.paths = _paths(folder, element)
        self.outputs = Outputs()
        self.in_lane = False    # an element run in a hold's lane writes only the files the notebook reads

    def run(self) -> int:
        os.setpgid(0, 0)
        self._die_with_supervisor()
        self._redirect_streams()
        return self.run_cell()

    def run_cell(self) -> int:
        """Load the values, run the cell and write what it produced, in this process as it is (its streams the
        job's already); the cell process's exit code."""
        try:
            namespace = self.prepare()
        except RunnerError as exc:
            print(f"rx_magic runner: {exc}", file=sys.stderr)
            _write_json(self.paths.error, {"runner_error": str(exc)})
            return RUNNER_ERROR
        try:
            self.execute(namespace)
        except BaseException as exc:  # the cell's own exception, whatever it is
            self.outputs.flush_figures()
            self.write_error(exc)
            self.write_display()
            return CELL_RAISED
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        self.outputs.flush_figures()
        try:
            self.write_display()
            self.write_pulled(namespace)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            return self.results_not_written()
        return CELL_OK

    def results_not_written(self) -> int:
        """The disk filled while the results were written: their partial files go, and the job fails saying so."""
        folder = os.path.dirname(self.paths.outputs)
        for path in (self.paths.outputs, self.paths.display):
            for leftover in (path + ".part", path):
                try:
                    os.remove(leftover)
                except OSError:
                    pass
        try:
            found = os.statvfs(folder)
            free = f"{found.f_bavail * found.f_frsize} bytes free"
        except OSError:
            free = "free space unknown"
        reason = f"the job's results could not be written: no space left on device in {folder} ({free})"
        print(f"rx_magic runner: {reason}", file=sys.stderr)
        try:
            _write_json(self.paths.error, {"runner_error": reason})
        except OSError:     # still full: the supervisor reads the reason from stderr.log's tail
            pass
        return RUNNER_ERROR

    def _in_lane(self) -> int:
        """``run`` in a hold's lane, which stays: the element's streams, without a process group of its own."""
        self.in_lane = True
        self._redirect_streams()
        return self.run_cell()

    @staticmethod
    def _die_with_supervisor() -> None:
        if sys.platform.startswith("linux"):
            die_with_parent()

    def _redirect_streams(self) -> None:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, name in ((1, self.paths.stdout), (2, self.paths.stderr)):
            target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        os.environ.setdefault("MPLBACKEND", "Agg")

    def prepare(self) -> dict:
        global process_state
        runtime = os.path.dirname(os.path.abspath(__file__))
        # dill is imported by the blobs that need it (a notebook function's), when they are unpickled
        self.wire = _sibling("wire")
        process_state = _sibling("process_state")
        self._link_files()
        sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != runtime]
        sys.path[0:0] = ["", *self.spec.get("pythonpath", [])]
        _hide_siblings()

        import types
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        namespace = main.__dict__
        if self.spec.get("use_ipython"):
            self._start_ipython(main)
        else:
            namespace["display"] = self.outputs.display
        for name, line in self.spec.get("imports", {}).items():
            try:
                exec(line, namespace)
            except ImportError as exc:
                raise RunnerError(f"the cell uses the module {name!r} ({line!r}), which {sys.executable} on "
                                  f"{_HOST} cannot import: {exc}") from exc
        self.load_pushed(namespace)
        array = self.spec.get("map")
        if array and self.element is not None:
            try:
                digest = array["values"]
                values = _map_values[digest] if digest in _map_values else self.load_blob(digest)
                namespace[array["name"]] = values[self.element]
            except RunnerError:
                raise
            except Exception as exc:
                raise RunnerError(f"could not load the --map values of {array['name']!r} on the target: "
                                  + (_without_dill(exc) or f"{type(exc).__name__}: {exc}")) from exc
        return namespace

    def load_blob(self, digest: str) -> object:
        """The value in the blob named ``digest``, unpickled only once its bytes are shown to hash to that name.

        The file must be a regular file of this user's, writable by no one else (never a symlink), so no
        one else's pickle runs here, and it cannot change between the check and the load. A blob of at least
        ``VERIFIED_STAMP_MIN`` bytes that passed the check gets a stamp (``_stamp_verified``), and is not
        hashed again while the file is the very one stamped (``_verified_sections``).
        """
        import mmap

        path = self.paths.blob(digest)
        with open_own_file(path, f"the pushed value's blob {path}", f"load the blob {path}") as file:
            before = os.fstat(file.fileno())
            sections = self._verified_sections(digest, before)
            if sections is None:
                try:
                    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                        sections = self.wire.frame_sections(mapped)
                    found = self.wire.digest_of_sections(sections)
                except Exception as exc:    # empty, truncated, or not a frame at all
                    found = f"nothing ({type(exc).__name__}: {exc})"
                if found != digest:
                    raise RunnerError(
                        f"refusing to load the blob {path}: its content does not hash to its name (it hashes to "
                        f"{found}), so rx_magic did not write it for this value; it was not unpickled — "
                        f"remove it (rm {path}) and run the cell again")
                self._stamp_verified(digest, before, os.fstat(file.fileno()), sections)
            mapped_buffers: list = []
            value = self.wire.load(file, mapped=mapped_buffers)
            if mapped_buffers:      # to tell afterwards what the cell wrote into them (``changed_in_place``)
                loaded = vars(self).setdefault("loaded_frames", {})     # digest -> (sections, buffers, path, identity)
                loaded[digest] = (sections, mapped_buffers, path, _file_identity(before))
            return value

    # Why a stamp may stand for the check: the blob is opened through ``open_own_file`` every time, so it is a
    # regular file (not a symlink) owned by this user and writable by no one else; no other user (root aside)
    # can write its bytes, create it, or make it writable to themselves. Its stamp says which file passed the
    # check -- (device, inode, size, mtime, ctime), as fstat of the open file gave them before and after the
    # hash -- and is itself a private file of this user's in the private ``.rx`` folder, opened the same way.
    # Any write to the file, a truncation, a chmod or chown, a new link, and os.utime setting its mtime back,
    # each set its ctime to the time of the change, which no one but root can set back; a file made anew in
    # its place (even on a reused inode number) gets a ctime of its own making. So a file whose fstat matches
    # its stamp exactly holds the bytes that hashed to its name, and no file that does not hash to its name is
    # unpickled. (A change by this user's own processes within one tick of the file system's clock, a few ms,
    # could keep the ctime: rx_magic never writes a blob in place, it renames a new file into place.) The
    # stamp also holds the digests of the file's leaves, checked against its name, for ``changed_in_place``.
    def _stamp_path(self, digest: str) -> str:
        return self.paths.verified(digest)

    def _verified_sections(self, digest: str, info) -> list | None:
        """The blob's section digests from its stamp, if the stamp is for this very file (else None: hash it)."""
        if info.st_size < VERIFIED_STAMP_MIN:
            return None
        stamp = self._stamp_path(digest)
        try:
            with open_own_file(stamp, f"the stamp {stamp}", f"use the stamp {stamp}") as file:
                found = jsontext.loads(file.read())
            sections = [bytes.fromhex(section) for section in found["sections"]]
            if (found["format"] == 1 and found["digest"] == digest and found["file"] == _file_identity(info)
                    and self.wire.digest_of_sections(sections) == digest):
                return sections
        except (RunnerError, OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _stamp_verified(self, digest: str, before, after, sections: list) -> None:
        """Stamp a blob that just passed the check, if it did not change while it was hashed; best effort."""
        if before.st_size < VERIFIED_STAMP_MIN or _file_identity(before) != _file_identity(after):
            return
        import stat

        stamp = self._stamp_path(digest)
        folder = os.path.dirname(stamp)
        part = f"{stamp}.{os.getpid()}.part"
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                return
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(jsontext.dumps({"format": 1, "digest": digest, "file": _file_identity(before),
                                           "sections": [section.hex() for section in sections]}))
            os.replace(part, stamp)
        except OSError:
            try:
                os.remove(part)
            except OSError:
                pass

    def load_pushed(self, namespace: dict) -> None:
        """Load the pushed values into ``namespace``; values that share objects arrive in one blob, still sharing.

        The notebook's functions take ``namespace`` as their globals; the globals they carry fill only
        names nothing else bound. What arrived is kept, to see afterwards what the cell changed.
        """
        wire = self.wire
        wire._reuse_arrival_bytes = True        # what arrived is written as it came, unless it changed
        together = self.spec.get("together") or {}
        self.arrived: dict[str, tuple[str, object]] = {}     # name -> (digest, what the blob held)
        self.snapshots: dict[str, tuple | None] = {}        # name -> wire.snapshot of what arrived
        may_change = set(self.spec.get("pull_if_changed", []))
        loaded: dict[str, object] = {}
        with wire.loading_into(namespace) as carried:
            for name, digest in self.spec.get("push", {}).items():
                try:
                    if digest in together:
                        group = loaded[digest] if digest in loaded else loaded.setdefault(
                            digest, self.load_blob(digest))
                        namespace[name] = group[name]
                        self.arrived[name] = (digest, group)
                    else:
                        namespace[name] = self.load_blob(digest)
                        self.arrived[name] = (digest, namespace[name])
                        if name in may_change:      # what it holds, to tell afterwards without pickling it
                            self.snapshots[name] = wire.snapshot(namespace[name])
                except RunnerError:
                    raise
                except Exception as exc:
                    raise RunnerError(f"could not load the value of {name!r} on the target: "
                                      + (_without_dill(exc) or f"{type(exc).__name__}: {exc}")) from exc
        for name, value in carried.items():
            namespace.setdefault(name, value)

    def changed_in_place(self, namespace: dict) -> tuple[dict[str, object], list[str]]:
        """The pushed objects still bound to their names, and which of them the cell changed.

        A blob is pickled again and compared with the digest it arrived as; values that cannot
        change (numbers, strings, tuples of them) were left out by the notebook. A big container of
        immutable contents that still holds the very objects it arrived with is unchanged without
        pickling it (``wire.holds_same``, ``wire.immutable_contents``). Of a blob's memory-mapped buffers
        only the leaves the cell wrote into are hashed again (``wire.digest_since_load``).
        """
        kept, changed, verdicts = {}, [], {}
        for name in self.spec.get("pull_if_changed", []):
            digest, arrived = getattr(self, "arrived", {}).get(name, (None, None))
            if digest is None:
                continue
            value = arrived[name] if digest in (self.spec.get("together") or {}) else arrived
            if name not in namespace or namespace[name] is not value:
                continue    # rebound: it comes back by name if the cell binds it
            kept[name] = value
            seen = getattr(self, "snapshots", {}).get(name)
            if (id(arrived) not in verdicts and seen is not None and self.wire.holds_same(arrived, seen)
                    and self.wire.immutable_contents(seen) is not None):
                verdicts[id(arrived)] = False
            if id(arrived) not in verdicts:
                try:
                    verdicts[id(arrived)] = self._digest_now(digest, arrived) != digest
                except Exception:
                    verdicts[id(arrived)] = True    # no longer pickles: written, so that it is named
            if verdicts[id(arrived)]:
                changed.append(name)
        return kept, changed

    def _digest_now(self, digest: str, arrived) -> str:
        """The digest of what arrived in the blob ``digest``, as it is now."""
        sections, mapped, path, identity = getattr(self, "loaded_frames", {}).get(digest, (None, None, None, None))
        if sections is not None and sum(view.nbytes for view in mapped) >= VERIFIED_STAMP_MIN:
            try:    # the file under the mapping did not change (a file renamed into its place: another inode)
                unchanged_file = _file_identity(os.stat(path, follow_symlinks=False)) == identity
            except OSError:
                unchanged_file = False
            if unchanged_file:
                return self.wire.digest_since_load(arrived, sections, mapped)
        return self.wire.digest(arrived)[0]

    def rebound(self, namespace: dict) -> list[str]:
        """Names bound anew other than by the cell's own assignments (a notebook function's ``global x``)."""
        together = self.spec.get("together") or {}
        arrived = getattr(self, "arrived", {})
        found = []
        for name in self.spec.get("pull_if_rebound", []):
            if name not in namespace:
                continue
            digest, value = arrived.get(name, (None, None))
            if digest is None or namespace[name] is not (value[name] if digest in together else value):
                found.append(name)
        return found

    def _link_files(self) -> None:
        """Put the shipped modules (lib/) and --files (work/) in place, linked from the shared store."""
        store = self.paths.files_dir
        for relative, digest in self.spec.get("files", {}).items():
            job = layout.JobPaths.of_folder(self.folder)
            destination = (os.path.join(self.folder, relative) if relative.startswith("lib/")
                           else os.path.join(job.work, relative))
            if not os.path.abspath(destination).startswith(self.folder + os.sep):
                raise RunnerError(f"refusing to place a shipped file outside the job folder: {relative!r}")
            os.makedirs(os.path.dirname(destination), mode=0o700, exist_ok=True)
            if os.path.exists(destination):     # placed already by another element of the array
                continue
            self.check_file(os.path.join(store, digest), digest, relative)
            try:
                os.link(os.path.join(store, digest), destination)
            except FileExistsError:
                continue
            except OSError:
                import shutil
                shutil.copyfile(os.path.join(store, digest), destination)
                os.chmod(destination, 0o600)

    @staticmethod
    def check_file(path: str, digest: str, relative: str) -> None:
        """A shipped file is used only when it is a private regular file of this user's (never a symlink) whose
        content hashes to its name (``sha256``), as a blob is loaded only then: a changed or truncated copy in the
        shared store fails the job naming it, instead of being read by the cell."""
        import hashlib

        shipped = f"the shipped file {relative!r} ({path})"
        with open_own_file(path, shipped, f"use {shipped}") as file:
            found = hashlib.sha256()
            for piece in iter(lambda: file.read(4 * 2**20), b""):
                found.update(piece)
        if found.hexdigest() != digest:
            raise RunnerError(
                f"refusing to use the shipped file {relative!r} ({path}): its content does not hash to its name "
                f"(it hashes to {found.hexdigest()}), so it is not the file that was sent — remove it (rm {path}) "
                "and run the cell again")

    def _start_ipython(self, main) -> None:
        try:
            from IPython.core.interactiveshell import InteractiveShell
        except ImportError as exc:
            raise RunnerError(f"the cell uses IPython (magics or IPython.display), which {sys.executable} on "
                              f"{_HOST} cannot import: install ipython there") from exc
        shell = InteractiveShell.instance(user_module=main)
        shell.display_pub.publish = self.outputs.publish
        self.outputs.formatter = shell.display_formatter
        # display(fig) shows the picture, as the notebook's inline backend would
        shell.display_formatter.mimebundle_formatter.for_type_by_name("matplotlib.figure", "Figure",
                                                                      self.outputs.figure_bundle)
        run_line_magic = shell.run_line_magic

        def run_kernel_magics_harmlessly(magic_name, line, _stack_depth=1):
            """Magics that configure a kernel are the notebook's (it runs them after the job); here they must
            not fail the cell: ``%matplotlib`` keeps Agg (figures come back as inline's do), ``%pylab``
            only brings its names."""
            depth = _stack_depth + 1    # this frame too: %time and %timeit read the cell's names from its caller's
            if magic_name not in process_state.KERNEL_MAGICS:
                return run_line_magic(magic_name, line, _stack_depth=depth)
            try:
                if magic_name == "pylab":
                    from IPython.core.pylabtools import import_pylab
                    import_pylab(shell.user_ns, import_all="--no-import-all" not in line)
                elif magic_name == "config" and line.lstrip().startswith("InlineBackend.figure_format"):
                    self._set_figure_formats(line)      # this cell's figures already come that way
                elif magic_name != "matplotlib":
                    return run_line_magic(magic_name, line, _stack_depth=depth)
            except Exception:
                pass
            return None

        shell.run_line_magic = run_kernel_magics_harmlessly

    def _set_figure_formats(self, line: str) -> None:
        """``%config InlineBackend.figure_format(s) = ...``: the formats of the figures the cell shows next."""
        import ast
        value = ast.literal_eval(line.partition("=")[2].strip())
        formats = [value] if isinstance(value, str) else list(value)
        self.outputs.figure_formats = {**(self.outputs.figure_formats or {}), "formats": formats}

    def execute(self, namespace: dict) -> None:
        """Run the cell with the notebook's random state and settings; note what it changed of them, and
        the value of its last expression (unless a ``;`` ends it) for the notebook to show."""
        self.outputs.figure_formats = self.spec.get("figure_formats")
        tracker = process_state.Tracker(self.spec.get("process_state") or {})
        tracker.start()
        process_state.when_imported("matplotlib.pyplot", self._show_as_outputs)
        try:
            self._execute(namespace)
        finally:
            if not self.in_lane:    # an element's are not brought back
                _write_json(self.paths.process_state, process_state.encode(tracker.changes()))

    def _show_as_outputs(self, pyplot) -> None:
        outputs = self.outputs
        pyplot.show = lambda *args, **kwargs: outputs.flush_figures()

    def _execute(self, namespace: dict) -> None:
        code = self.spec["code"]
        first_line = self.spec.get("first_line", 1)
        lines = [f"{line}\n" for line in self.spec.get("header", [])][: first_line - 1]
        lines += [""] * (first_line - 1 - len(lines)) + code.splitlines(keepends=True)
        sources = {CELL_FILENAME: lines, **{filename: source["lines"]      # and the notebook's functions'
                                            for filename, source in (self.spec.get("sources") or {}).items()}}

        def show_sources(linecache) -> None:
            for filename, found in sources.items():
                linecache.cache[filename] = (len("".join(found)), None, found, filename)
        # the cell's lines are there for whatever reads them (a traceback, a warning, inspect) once it imports
        # linecache, which (with tokenize) a cell that fails and warns of nothing does without
        process_state.when_imported("linecache", show_sources)
        shipped = _shipped_cell(self.spec)
        if shipped is not None:
            body, last_code, last_name = shipped
        else:
            body, last, last_code = _compiled_cell(code, first_line, self.spec.get("last_expression", True))
            last_name = last.body.id if last is not None and type(last.body).__name__ == "Name" else None
        exec(body, namespace)
        if last_code is not None:
            value = eval(last_code, namespace)
            if value is not None and not _ends_with_semicolon(code):
                sys.stdout.flush()
                self.outputs.add("execute_result", *self.outputs.bundle(value))
                self.outputs.flush_figures()    # first: a figure pickled while open reopens in the notebook
                self.write_result(last_name, value)

    #: A last expression's value bigger than this is shown as the target rendered it, not brought back.
    RESULT_LIMIT = 16 * 2**20

    def write_result(self, name: str | None, value) -> None:
        """The last expression's value, for the notebook's own formatter: a name the notebook has (pulled, or
        pushed and so there already, updated if it changed) by name; anything else pickled, up to a limit.
        ``name``: the expression's, when it is a bare name."""
        if self.element is not None:        # a job array shows each element's result as rendered here
            return
        import io
        if name is not None and (name in self.spec.get("pull", []) or name in self.spec.get("push", {})):
            shown = ("name", name)
        else:
            shown = ("value", value)
        limit, temporary = self.RESULT_LIMIT, self.paths.result + ".part"

        class Capped(io.FileIO):
            """Stops a pickle as soon as it is bigger than the limit, before it is all written."""

            def write(self, data):
                if self.tell() + memoryview(data).nbytes > limit:
                    raise OverflowError(f"over {limit} bytes")
                return super().write(data)

        try:
            with Capped(temporary, "w", opener=lambda path, flags: os.open(path, flags, 0o600)) as file:
                self.wire.dump(shown, file)
            os.replace(temporary, self.paths.result)
        except Exception:   # it does not pickle, or is too big: the rendered output stands in
            try:
                os.remove(temporary)
            except OSError:
                pass

    def write_error(self, exc: BaseException) -> None:
        import traceback
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != CELL_FILENAME:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
        for filename, source in (self.spec.get("sources") or {}).items():   # as IPython names them: Cell In[3]
            text = text.replace(f'File "{filename}"', source["label"])
        error = {"type": type(exc).__qualname__, "module": type(exc).__module__,
                 "message": str(exc), "traceback": text}
        shown = ipython_traceback(exc, tb or exc.__traceback__, self.spec)
        if shown:
            error["ipython_traceback"] = shown
        try:
            with open(self.paths.exception + ".part", "wb") as file:
                self.wire.dump(exc, file)
            os.replace(self.paths.exception + ".part", self.paths.exception)
        except Exception as pickling_error:
            error["unpicklable"] = f"{type(pickling_error).__name__}: {pickling_error}"
        _write_json(self.paths.error, error)

    def write_display(self) -> None:
        if self.outputs.items or not self.in_lane:     # no file says no outputs as well as an empty one
            _write_json(self.paths.display, self.outputs.items)

    def write_pulled(self, namespace: dict) -> None:
        """The pulled values, and the pushed ones the cell changed in place, each in its own pickle frame.

        The frames share one memo, so what values share stays shared, and pushed objects are written
        as references to the notebook's own (``wire.Tokens``). A value that does not pickle is
        listed instead.
        """
        import types
        wire = self.wire
        kept, changed = self.changed_in_place(namespace)
        missing, unpicklable, modules, values = [], {}, {}, {}
        for name in dict.fromkeys([*self.spec.get("pull", []), *changed, *self.rebound(namespace)]):
            if name not in namespace:
                missing.append(name)
            elif isinstance(namespace[name], types.ModuleType):
                modules[name] = namespace[name].__name__
            else:
                values[name] = namespace[name]
        with open(self.paths.outputs + ".part", "wb") as file:
            while True:     # a value that does not pickle is left out, and the file written again without it
                file.seek(0)
                file.truncate()
                tokens = wire.Tokens(kept, changed)
                try:
                    tokens.begin(file)
                    for name, value in values.items():
                        wire.dump((name, value), file, tokens=tokens)
                    break
                except wire.ChangeNotWritten as exc:
                    name, error = exc.name, exc.error
                except OSError as exc:
                    if exc.errno in DISK_FULL_ERRNOS:
                        raise           # the disk is full, not the value unpicklable
                    error = exc
                except Exception as exc:
                    error = exc
                value = values.pop(name)
                kept.pop(name, None)
                changed = [other for other in changed if other != name]
                unpicklable[name] = (f"{type(value).__module__}.{type(value).__qualname__}: "
                                     f"{_without_dill(error) or error}")
            wire.dump(("", {"missing": missing, "unpicklable": unpicklable, "modules": modules,
                            "changed": [name for name in changed if name in values]}), file, tokens=tokens)
        os.replace(self.paths.outputs + ".part", self.paths.outputs)


# ----------------------------------------------------------------------------- job arrays on no batch system

class Pool:
    """Runs every element of a job array, each as ``runner.py FOLDER INDEX``, as many at a time as
    the machine has cores for (``--ncpus`` cores each; inside a batch job that sets
    ``RX_MAGIC_POOL_CORES``, that many at a time, one core each). A stop signal stops the
    elements running and starts no more.
    """

    def __init__(self, folder: str, spec: dict):
        self.folder, self.count = folder, int(spec["map"]["size"])
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        each = max(1, (spec.get("resources") or {}).get("ncpus") or 1)
        if os.environ.get("RX_MAGIC_POOL_CORES", "").isdigit():
            # a batch job that holds the whole map (PBS's map_in_one_job): its cores, one per element
            cores, each = min(cores, max(1, int(os.environ["RX_MAGIC_POOL_CORES"]))), 1
        self.size = max(1, cores // each)
        self.signalled: int | None = None

    def _on_signal(self, signum, _frame) -> None:
        self.signalled = signum

    def run(self) -> int:
        import subprocess
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        running: list = []
        pending = list(range(self.count))
        failed = 0
        while pending or running:
            if self.signalled is not None:
                for process in running:
                    if process.poll() is None:
                        process.send_signal(self.signalled)
                pending = []
            while pending and len(running) < self.size:
                index = pending.pop(0)
                os.makedirs(layout.JobPaths.of_folder(self.folder).element(index).folder, mode=0o700, exist_ok=True)
                running.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), self.folder, str(index)],
                                                stdin=subprocess.DEVNULL))
            time.sleep(0.05)
            for process in [p for p in running if p.poll() is not None]:
                running.remove(process)
                failed += process.returncode != 0
        return 128 + self.signalled if self.signalled else (1 if failed else 0)


def main(argv: list[str]) -> int:
    usage = "usage: runner.py JOB_FOLDER [ELEMENT | --pool]"
    if len(argv) not in (2, 3):
        print(usage, file=sys.stderr)
        return 2
    folder = os.path.abspath(argv[1])
    paths = layout.JobPaths.of_folder(folder)
    spec = _read_json(paths.job_json)
    if spec is None:
        print(f"rx_magic runner: cannot read {paths.job_json}", file=sys.stderr)
        return 2
    if spec.get("format") != layout.SPEC_FORMAT:
        print(f"rx_magic runner: {paths.job_json} is in format {spec.get('format')!r}; this runner reads "
              f"format {layout.SPEC_FORMAT}", file=sys.stderr)
        return 2
    if len(argv) == 3 and argv[2] == "--pool" and spec.get("map"):
        return Pool(folder, spec).run()
    if len(argv) == 3 and argv[2].isdigit() and spec.get("map"):
        element = int(argv[2])
        if element >= int(spec["map"]["size"]):
            print(f"rx_magic runner: element {element} is past the array's {spec['map']['size']}", file=sys.stderr)
            return 2
        os.makedirs(paths.element(element).folder, mode=0o700, exist_ok=True)
        return Supervisor(folder, spec, element).run()
    if len(argv) != 2:
        print(usage, file=sys.stderr)
        return 2
    return Supervisor(folder, spec).run()


def exit_with(code: int):
    """End the job's process with ``code`` once its streams are flushed, skipping the interpreter's teardown: the
    job's ending is written already, and whoever waits for it (the kernel's end notice) learns of it sooner."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    exit_with(main(sys.argv))

"""Submitting a cell: capture, package, write the job folder, submit, record.

Every check that can fail on the user's input (target, resources, syntax,
pickling, payload size) runs before the first byte is written, and a job
folder appears under its final name only once it is complete.
"""

from __future__ import annotations

import ast
import binascii
import importlib.util
import io
import marshal
import os
import platform
import posixpath
import signal
import socket
import stat
import threading
import types
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .._version import __version__
from ..errors import ConfigError, DiskFull, InputError, PayloadTooLarge
from ..model import jobspec
from ..model.jobspec import new_spec
from ..model.record import JobRecord
from ..model.resources import Resources, format_size_human
from ..model.states import State
from ..runtime import RUNTIME_FILES, runtime_snapshot
from ..runtime.layout import JobPaths, new_job_id
from ..schedulers import JobScript
from ..targets.target import Target, get_target
from ..transport import Transport
from ..transport.base import DISK_FULL_ERRNOS, disk_full
from ..transport.local import free_space
from .arrays import ArrayRequest, parse_map
from .blobs import BlobRef, blob_file_name, plan_blobs, size_report, write_blobs
from .capture import Capture, capture_cell, notebook_sources
from .job import Job
from .kernel_state import inline_figure_formats, state_to_send, traceback_look
from .registry import default_registry, this_session
from .shipping import Shipment, missing_packages, plan_shipment, upload_shipment, used_modules


@dataclass
class Plan:
    """Everything a submission will send, worked out before anything is written."""

    target: Target
    job_id: str
    paths: JobPaths
    capture: Capture
    blobs: list[BlobRef]
    resources: Resources
    script: JobScript
    script_text: str
    spec: dict
    warnings: list[str] = field(default_factory=list)
    shipment: Shipment = field(default_factory=Shipment)
    array: ArrayRequest | None = None
    runtime: tuple[str, dict[str, bytes]] | None = None     # runtime_snapshot(): the version the script names
    #: How the written folder becomes a running job when not by the scheduler (``holds.route``: a ready hold's
    #: queue); returns the job's scheduler id.
    dispatch: Callable[[Plan], str] | None = None

    @property
    def pushed_values(self) -> dict:
        """Every value the job needs in the blob store: the pushed names, and a job array's values."""
        values = dict(self.capture.push)
        if self.array is not None:
            values[map_key(self.array)] = self.array.values
        return values

    def report(self) -> str:
        """What ``--dry-run`` shows: what would be sent, and the job script."""
        c = self.capture
        lines = [f"target {self.target.name!r}: {self.target.config.scheduler} scheduler on "
                 f"{self.target.transport.description}, job folder {self.paths.folder}"]
        if self.resources.describe():
            lines.append(f"resources: {self.resources.describe()}" + (" (each element)" if self.array else ""))
        if self.array is not None:
            shown = ", ".join(_short_repr(value) for value in self.array.values[:5])
            more = ", ..." if self.array.size > 5 else ""
            lines.append(f"array: {self.array.size} elements, {self.array.name} = {shown}{more}")
        lines.append("push:" if self.blobs else "push: nothing")
        if self.blobs:
            lines.extend("  " + line for line in size_report(self.blobs).splitlines())
        if c.imports:
            lines.append("imports: " + "; ".join(c.imports.values()))
        if self.shipment:
            lines.append(f"files: {len(self.shipment.files)} ({format_size_human(self.shipment.size)})"
                         + (f", the notebook's modules {', '.join(self.shipment.modules)}" if self.shipment.modules
                            else ""))
            lines.extend(f"  {relative}" for relative in list(self.shipment.files)[:20])
            if len(self.shipment.files) > 20:
                lines.append(f"  ... and {len(self.shipment.files) - 20} more")
        lines.append("pull: " + (", ".join(c.pull) if c.pull else "nothing"))
        if c.pull_if_changed and self.array is None:
            lines.append("pull if changed in place: " + ", ".join(c.pull_if_changed))
        if c.held_back:
            lines.append("held back: " + ", ".join(f"{name} ({why})" for name, why in c.held_back.items()))
        lines.extend(f"note: {warning}" for warning in self.warnings)
        lines += ["", "job script (job.sh):", self.script_text.rstrip()]
        return "\n".join(lines)


def uses_ipython(code: str, captured: Capture) -> bool:
    """Whether the job needs an IPython shell: the cell names IPython, or uses something of IPython's that an
    earlier cell imported (``display``, ``HTML``), which shows rich output only with a shell, as in the notebook."""
    return ("get_ipython" in code or "IPython" in code
            or any("IPython" in line for line in captured.imports.values())
            or any(_module_of(value).partition(".")[0] == "IPython" for value in captured.push.values()))


def _module_of(value) -> str:
    module = getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else None
    return module if isinstance(module, str) else type(value).__module__


def plan_cell(code: str, target: str = "local", *, namespace: dict | None = None,
              resources: Resources | None = None, push=(), pull=None, no_pull: bool = False,
              source: str | None = None, header: tuple[str, ...] = (), first_line: int = 1,
              files: list[str] = (), dry_run: bool = False, map: str | None = None) -> Plan:
    """Check and package a cell for a target, writing nothing.

    With ``dry_run`` no connection is opened: checks that need the target
    (its Python and packages, ``~`` in its workdir) use a connection only if
    one is open already, and the plan says which were left for submission.
    ``map`` is ``--map NAME=EXPR``: the cell runs once per value as a job array.
    """
    chosen = get_target(target)
    resources = (resources or Resources()).over(chosen.config.defaults)
    if chosen.config.project and not resources.project:
        resources = Resources.from_json({**resources.to_json(), "project": chosen.config.project})
    # the batch system's own rules (e.g. profile = "gadi"), checked before anything is packaged
    chosen.scheduler.check_request(resources)
    array = parse_map(map, namespace if namespace is not None else {}) if map is not None else None
    captured = capture_cell(code, namespace if namespace is not None else {}, push=push, pull=pull,
                            no_pull=no_pull, first_line=first_line)
    if array is not None:   # each element has its own value of NAME: none is sent from here or pulled back
        captured.push.pop(array.name, None)
        captured.pull = [name for name in captured.pull if name != array.name]
    process_state = state_to_send(array=array is not None)     # before any value is pickled: figures pickle stably
    values = dict(captured.push)
    if array is not None:
        values[map_key(array)] = array.values
    blobs = plan_blobs(values, limit=chosen.config.max_payload, withhold=captured.withheld,
                       lines=captured.read_lines)
    shipment = Shipment()
    offline = dry_run and not chosen.transport.connected
    if not chosen.is_local:     # the local target runs in the notebook's folder: its files are there
        shipment = plan_shipment(captured, namespace or {}, list(files), Path.cwd())
        _check_payload(blobs, shipment, chosen.config.max_payload)
    if offline:
        captured.warnings.append(
            f"not connected to {chosen.name!r}, so its Python and packages are checked when the cell is submitted"
            + ("; ~ in the job folder is the home folder there: \"$HOME\" in the script, sbatch's --chdir and "
               "--output on its command line" if chosen.config.workdir.startswith("~") else ""))
    elif not chosen.is_local:
        chosen.environment()
        missing = missing_packages(chosen, used_modules(captured, namespace or {}), shipment.modules)
        if missing:
            raise InputError(
                f"target {chosen.name!r} lacks packages the cell uses: {', '.join(missing)} (versions here). "
                f"Install them for {chosen.config.python} there, or load them in the target's setup lines")
    job_id = new_job_id()
    paths = JobPaths(chosen.workdir_path(expand_home=not offline), job_id)
    runtime_files = runtime_snapshot()
    runtime = paths.runtime_dir(runtime_files[0])
    scheduler = chosen.scheduler
    script = JobScript(
        job_id=job_id, folder=paths.folder, runner=posixpath.join(runtime, "runner.py"),
        python=chosen.config.python, setup=chosen.config.setup, resources=resources,
        cwd=os.getcwd() if chosen.is_local else paths.work, elements=array.size if array else 0,
    )
    enforce = {} if scheduler.enforces_limits else {"walltime": resources.walltime, "mem": resources.mem}
    compiled = compiled_cell(code, first_line) if chosen.is_local else None     # this machine: most often its Python
    spec = new_spec(**{
        "job_id": job_id, "target": chosen.name,
        "source": source if source is not None else code, "code": code,
        "header": list(header), "first_line": first_line,
        "push": {ref.name: ref.digest for ref in blobs if array is None or ref.name != map_key(array)},
        "together": {ref.digest: list(ref.together) for ref in blobs if ref.together},
        "pull_if_changed": [] if array is not None else captured.pull_if_changed,
        "pull_if_rebound": [] if array is not None else captured.pull_if_rebound,
        "imports": captured.imports, "pull": captured.pull, "last_expression": ends_with_expression(code),
        **({"compiled": compiled} if compiled is not None else {}),
        "limits": enforce, "resources": resources.to_json(), "files": shipment.digests,
        "pythonpath": [paths.lib] if shipment.modules else [],
        "use_ipython": uses_ipython(code, captured),
        "sources": notebook_sources(captured.push),
        "process_state": process_state, "figure_formats": inline_figure_formats(),
        "traceback": traceback_look(numbered=bool(header)),
        "client": {"python": platform.python_version(), "rx_magic": __version__, "dill": _dill_version(),
                   "host": socket.gethostname()},
        **({"map": {"name": array.name, "expr": array.expr, "size": array.size,
                    "values": next(ref.digest for ref in blobs if ref.name == map_key(array)),
                    "labels": [_short_repr(value) for value in array.values]}} if array is not None else {}),
    })
    return Plan(chosen, job_id, paths, captured, blobs, resources, script, scheduler.render(script), spec,
                list(captured.warnings), shipment, array, runtime_files)


def ends_with_expression(code: str) -> bool:
    """Whether the cell's last statement is an expression, whose value the notebook shows: when not, a job that
    compiles the cell itself does so straight from its source, without a syntax tree round trip (half the time of
    compiling it: ~5 ms for 300 lines)."""
    try:
        body = ast.parse(code).body
    except SyntaxError:     # the job's own compile says what is wrong, as before
        return True
    return bool(body) and isinstance(body[-1], ast.Expr)


#: The file name the runner gives the cell's code (``runner.CELL_FILENAME``), which tracebacks show.
CELL_FILENAME = "<remote cell>"


def compiled_cell(code: str, first_line: int) -> dict | None:
    """The cell compiled here as the runner compiles it (``runner._compiled_cell``: lines numbered from
    ``first_line``, none of this module's ``__future__`` imports), as ``job.json``'s ``compiled``: its body and its
    last expression as marshalled code objects (base64), that expression's name when it is a bare name, and this
    Python's bytecode ``magic``. A job whose Python reads this bytecode runs it as it is: the first compile() in a
    fresh Python makes its syntax tree types, 1.6 ms of every job on this machine. None when it does not compile."""
    try:
        tree = ast.parse("\n" * (first_line - 1) + code)
        last = last_name = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            node = tree.body.pop().value
            last = compile(ast.Expression(node), CELL_FILENAME, "eval", dont_inherit=True, optimize=0)
            last_name = node.id if isinstance(node, ast.Name) else None
        body = compile(tree, CELL_FILENAME, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        return None
    return {"magic": importlib.util.MAGIC_NUMBER.hex(), "body": _base64(marshal.dumps(body)),
            "last": _base64(marshal.dumps(last)) if last is not None else None, "last_name": last_name}


def _base64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def map_key(array: ArrayRequest) -> str:
    """The blob name of an array's values in size reports: ``--map seed``, never a Python name."""
    return f"--map {array.name}"


def _short_repr(value, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_payload(blobs: list[BlobRef], shipment: Shipment, limit: int) -> None:
    total = sum(ref.size for ref in blobs) + shipment.size
    if total > limit:
        raise PayloadTooLarge(
            f"the cell would send {format_size_human(total)} ({format_size_human(shipment.size)} of it in "
            f"{len(shipment.files)} files), over this target's limit of {format_size_human(limit)}: send less with "
            "--files, or raise max_payload in the target's configuration")


def _dill_version() -> str:
    import dill
    return dill.__version__


#: blobs up to this size in all go with the job folder's files in one request (one round trip over SSH)
BATCHED_BLOBS = 8 * 2**20


class _BlobStore:
    """The target's blob folder, as ``blobs.write_blobs`` sees it.

    Which blobs are there is asked once, with the other paths in ``also`` (``found``); small blobs are kept
    in ``pending`` to be written with the job folder (``Transport.write_files``), larger ones stream at once.
    """

    def __init__(self, transport: Transport, folder: str, sizes: dict[str, int], also: tuple[str, ...] = ()):
        self.transport, self.folder = transport, folder
        self.pending: list[tuple[str, bytes]] = []
        paths = [posixpath.join(folder, name) for name in sizes] + list(also)
        # the bytes of none of them: a file over the limit of 0 is there but left out of the answer
        answer = transport.read_files(paths, limit=0) if paths else {}
        self.present = {path for path in paths if answer.get(path, b"") is not None}
        self._batched = {name for name, size in sizes.items() if size <= BATCHED_BLOBS} \
            if sum(sizes.values()) <= BATCHED_BLOBS else set()

    def found(self, path: str) -> bool:
        return path in self.present

    def exists(self, name: str) -> bool:
        return self.found(posixpath.join(self.folder, name))

    @contextmanager
    def open_atomic(self, name: str):
        path = posixpath.join(self.folder, name)
        if name not in self._batched:
            with self.transport.open_atomic(path) as file:
                yield file
            return
        buffer = io.BytesIO()
        yield buffer
        self.pending.append((path, buffer.getvalue()))


def install_runtime(transport: Transport, paths: JobPaths, snapshot: tuple[str, dict[str, bytes]] | None = None,
                    runner_found: bool | None = None) -> str:
    """Copy the runtime's files to the target once per version; return the folder.

    ``snapshot`` is ``runtime.runtime_snapshot()`` as the cell's plan took it (its job script names that folder).
    A folder found there is used only once it holds exactly these files (read back once per connection,
    rewritten when they differ); the folder and its files were checked to be the user's own by
    :func:`check_workdir`. ``runner_found``: whether its ``runner.py`` is there, when the caller looked already.
    """
    version, contents = snapshot or runtime_snapshot()
    folder = paths.runtime_dir(version)
    runner = posixpath.join(folder, "runner.py")
    with _checked_lock:
        verified = folder in _checked.setdefault(transport, set())
    found = transport.exists(runner) if runner_found is None else runner_found
    if verified and found:
        return folder
    transport.makedirs(folder)
    for name in RUNTIME_FILES:  # runner.py last: its presence means the folder is complete
        path = posixpath.join(folder, name)
        try:
            same = found and transport.read_bytes(path) == contents[name]
        except FileNotFoundError:
            same = False
        if not same:
            transport.write_bytes(path, contents[name])
    with _checked_lock:
        _checked[transport].add(folder)
    return folder


_checked: weakref.WeakKeyDictionary[Transport, set[str]] = weakref.WeakKeyDictionary()   # folders found safe
_checked_lock = threading.Lock()


def check_workdir(transport: Transport, paths: JobPaths, version: str) -> None:
    """Refuse a workdir another user could write into; create what is missing, private. Once per connection.

    The workdir, ``.rx``, ``.rx/blobs``, ``.rx/files`` and ``.rx/runtime-{version}`` (and its files) must each be
    missing or be the login user's own, not a symlink, and not writable by group or others: otherwise someone
    else could plant a runner or a pickle that the job would run. One round trip over SSH.
    """
    key = f"{paths.workdir}\0{version}"
    with _checked_lock:
        if key in _checked.setdefault(transport, set()):
            return
    runtime = paths.runtime_dir(version)
    folders = [paths.workdir, paths.rx_dir, paths.blobs_dir, paths.files_dir, runtime]
    files = [posixpath.join(runtime, name) for name in RUNTIME_FILES]
    uid, found = transport.lstat(folders + files)
    for index, (path, info) in enumerate(zip(folders + files, found)):
        if info is None:
            continue
        owner, mode = info
        kind = "folder" if index < len(folders) else "file"
        problem = None
        if stat.S_ISLNK(mode):
            problem = "is a symlink"
        elif not (stat.S_ISDIR(mode) if kind == "folder" else stat.S_ISREG(mode)):
            problem = f"is not a {kind}"
        elif owner != uid:
            problem = f"is owned by uid {owner}, not by you (uid {uid})"
        elif mode & 0o022:
            problem = f"is writable by {'its group' if mode & 0o020 else 'everyone'} (mode {stat.filemode(mode)})"
        if problem:
            workdir = paths.workdir.rstrip("/") or "/"
            private = f"{workdir}-private" if index == 0 and owner != uid else posixpath.join(workdir, "private")
            raise ConfigError(
                f"refusing to use {path} on {transport.description}: it {problem}, so another user could put "
                f"files there that your jobs would run. Make a private folder: mkdir -m 700 {private} "
                "and set the target's workdir to it")
    for path, info in zip(folders[:3], found[:3]):
        if info is None:
            transport.makedirs(path)
    with _checked_lock:
        _checked[transport].add(key)


def submit_plan(plan: Plan) -> Job:
    """Write the job folder, submit it, and record the job.

    A disk that fills on the way is one ``DiskFull`` naming the path, the space free there and what the
    cell sends; nothing is left half-written (the transport removes its partial file, the staged folder
    goes) and nothing is submitted.
    """
    try:
        return _write_and_submit(plan)
    except DiskFull as exc:
        raise disk_full(exc.path, plan.target.transport.description, exc.free, _sent_size(plan)) from None
    except OSError as exc:      # a local folder that could not be made
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        path = exc.filename or plan.paths.workdir
        free = free_space(os.path.dirname(path)) if plan.target.is_local else None
        raise disk_full(path, plan.target.transport.description, free, _sent_size(plan)) from None


def _sent_size(plan: Plan) -> int:
    """The bytes a submission writes on the target, at most (blobs already there are not written again)."""
    version, contents = plan.runtime or runtime_snapshot()
    return (sum(ref.size for ref in plan.blobs) + plan.shipment.size + sum(map(len, contents.values()))
            + len(jobspec.dumps(plan.spec)) + len(plan.spec["source"].encode()) + len(plan.script_text.encode()))


def _write_and_submit(plan: Plan) -> Job:
    transport, paths = plan.target.transport, plan.paths
    version, contents = plan.runtime or runtime_snapshot()
    check_workdir(transport, paths, version)
    # warm, over SSH: one look (the runner, the blobs), one write (small blobs and the job folder), one submit
    runner = posixpath.join(paths.runtime_dir(version), "runner.py")
    store = _BlobStore(transport, paths.blobs_dir, {blob_file_name(ref.digest): ref.size for ref in plan.blobs},
                       also=(runner,))
    install_runtime(transport, paths, (version, contents), runner_found=store.found(runner))
    blobs_written, bytes_written = write_blobs(plan.pushed_values, plan.blobs, store,
                                               withhold=plan.capture.withheld)
    if plan.shipment:
        files_sent, file_bytes = upload_shipment(plan.shipment, transport, paths.files_dir)
        blobs_written, bytes_written = blobs_written + files_sent, bytes_written + file_bytes
    staged = paths.staged()
    # the folder appears under its name only complete: made as staged, written, renamed, in one request
    folders = [staged.folder]
    if not plan.target.is_local:
        folders.append(staged.work)
    if plan.array is not None:  # where each element writes (a batch system opens its log there first)
        folders.append(staged.elements_dir)
    files = [*store.pending, (staged.job_json, jobspec.dumps(plan.spec)),
             (staged.cell_py, plan.spec["source"].encode()), (staged.job_sh, plan.script_text.encode())]
    try:
        transport.write_files(files, folders=folders, keep={path for path, _ in store.pending},
                              rename=(staged.folder, paths.folder))
    except BaseException:
        transport.remove_tree(staged.folder)
        raise
    with _interrupts_deferred():     # a job that runs is a job the registry knows
        try:
            scheduler_id = (plan.dispatch(plan) if plan.dispatch is not None
                            else plan.target.scheduler.submit(transport, plan.script))
        except BaseException:
            transport.remove_tree(paths.folder)
            raise
        job = _record(plan, scheduler_id)
    job.bytes_sent = bytes_written
    job.blobs_sent = blobs_written
    return job


@contextmanager
def _interrupts_deferred():
    """Hold a Ctrl-C / kernel interrupt until the block ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def job_label(source: str, name: str | None = None) -> str:
    """What a job is called in ``%rx jobs`` and its widget: its ``--name``, else the cell's first line that
    says what it does (not blank, a comment, an import or a magic), else its first line that is not blank."""
    if name:
        return name[:200]
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("#", "%", "!", "import ", "from "))]
    return (telling or lines or [""])[0][:200]


def _record(plan: Plan, scheduler_id: str) -> Job:
    record = JobRecord(
        id=plan.job_id, target=plan.target.name, scheduler=plan.target.scheduler.name, workdir=plan.paths.workdir,
        scheduler_id=scheduler_id, state=State.SUBMITTED, first_line=job_label(plan.spec["source"], plan.resources.name),
        pull=tuple(plan.capture.pull), session=this_session(),
        elements=plan.array.size if plan.array else 0,
    )
    registry = default_registry()
    registry.add(record)
    return Job(record, registry)


def submit(code: str, target: str = "local", namespace: dict | None = None, *, push=(), pull=None,
           no_pull: bool = False, files=(), map: str | None = None, **resources) -> Job:
    """Run ``code`` as a job on ``target``; return the ``Job`` at once.

    ``namespace`` is where the cell's inputs are read from (nothing is read
    when it is None); keyword arguments are resources as the magic takes them:
    ``submit(code, "gadi", ns, mem="8GB", ncpus=4, walltime="2:00:00")``.
    """
    try:
        parsed = Resources.parse(**resources)
    except TypeError as exc:
        valid = ", ".join(Resources.__dataclass_fields__)
        raise InputError(f"{exc}; the resources are {valid}") from None
    return submit_plan(plan_cell(code, target, namespace=namespace, resources=parsed, push=push, pull=pull,
                                 no_pull=no_pull, files=list(files), map=map))

"""What travels besides values: the notebook's own modules, and data files named with ``--files``.

A module is the notebook's own when its file lies under the notebook's folder
and not inside an installed environment (site-packages): ``import mylib``
next to the notebook. Such modules (and packages), the local modules they
import in turn, and ``--files`` paths are shipped file by file, content
addressed like blobs, so only what changed since the last job on that target
is sent. On the target they are linked into the job folder: modules under
``lib/`` (put on ``sys.path``), files at their path relative to the notebook.
Installed packages never travel: ``missing_packages`` lists those the target
lacks.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import posixpath
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .capture import Capture

SKIPPED_FOLDERS = frozenset({".git", "__pycache__", ".ipynb_checkpoints", ".venv", "node_modules", ".mypy_cache",
                             ".pytest_cache"})
MODULES_FOLDER = "lib"


@dataclass
class Shipment:
    """Files to send: path in the job folder -> local file, and their digests."""

    files: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)      # the notebook's own modules, by name

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files.values())

    def __bool__(self) -> bool:
        return bool(self.files)


def _installed(path: Path) -> bool:
    parts = set(path.parts)
    return bool(parts & {"site-packages", "dist-packages"}) or any(
        str(path).startswith(prefix) for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix})


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def imported_names(code: str) -> set[str]:
    """Top-level module names a piece of code imports (absolute imports only)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def used_modules(capture: Capture, namespace: dict) -> set[str]:
    """Top-level names of the modules a cell needs: imported by it, bound as modules, or behind pushed values."""
    names = imported_names(capture.code)
    for name in capture.imports:
        module = namespace.get(name)
        if module is not None:
            names.add(module.__name__.split(".")[0])
    for value in capture.push.values():
        for owner in (value, type(value)):
            module = getattr(owner, "__module__", None)
            if isinstance(module, str) and module not in ("__main__", "builtins"):
                names.add(module.split(".")[0])
    return names


def _module_location(name: str) -> Path | None:
    """The file (or package folder) a top-level module comes from, without importing it."""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec and spec.has_location else None
    if not origin:
        return None
    path = Path(origin).resolve()
    return path.parent if path.name == "__init__.py" else path


def notebook_modules(names: set[str], root: Path) -> dict[str, Path]:
    """Of ``names``, the notebook's own modules, with the local modules they import, transitively."""
    found: dict[str, Path] = {}
    pending = sorted(names)
    while pending:
        name = pending.pop()
        if name in found or name in sys.builtin_module_names or name in getattr(sys, "stdlib_module_names", ()):
            continue
        location = _module_location(name)
        if location is None or not _inside(location, root) or _installed(location):
            continue
        found[name] = location
        sources = [location] if location.is_file() else sorted(location.rglob("*.py"))
        for source in sources:
            if source.suffix == ".py":
                pending.extend(imported_names(source.read_text(errors="replace")) - set(found))
    return found


def _files_inside(folder: Path, given: str) -> list[Path]:
    """The files ``--files`` sends from ``folder``; a symbolic link that leads out of it is refused.

    What is sent stays inside the folder given, whatever its links say: a link inside it
    to ``~/.ssh`` or ``/etc`` would otherwise send that. (Links to folders are not followed
    at all, as before; a link to a file inside the folder sends that file's content.)
    """
    if not folder.is_dir():
        return [folder]
    files = []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if name not in SKIPPED_FOLDERS)
        for name in [*subfolders, *names]:
            entry = Path(parent) / name
            if entry.is_symlink() and not _inside(entry.resolve(), folder):
                raise InputError(
                    f"--files {given!r}: {entry.relative_to(folder.parent)} is a symbolic link to {entry.resolve()}, "
                    f"outside {folder}, and rx_magic sends only what is inside the folder given: copy what it "
                    "needs into the folder, or remove the link")
        files.extend(Path(parent) / name for name in sorted(names) if not name.endswith(".pyc"))
    return files


def _walk(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(name for name in subfolders if name not in SKIPPED_FOLDERS)
        files.extend(Path(folder) / name for name in sorted(names) if not name.endswith(".pyc"))
    return files


_digest_cache: dict[tuple[str, int, int], str] = {}
_digest_cache_lock = threading.Lock()     # submissions may run on several threads (rx_magic.submit)


def file_digest(path: Path) -> str:
    """sha256 of a file's content, remembered while its size and mtime stay the same."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _digest_cache_lock:
        found = _digest_cache.get(key)
    if found is None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for piece in iter(lambda: file.read(4 * 2**20), b""):
                digest.update(piece)
        found = digest.hexdigest()
        with _digest_cache_lock:
            _digest_cache[key] = found
    return found


def plan_shipment(capture: Capture, namespace: dict, files: list[str], root: Path) -> Shipment:
    """The notebook's own modules the cell needs, and the ``--files`` paths, ready to send."""
    root = root.resolve()
    shipment = Shipment()
    modules = notebook_modules(used_modules(capture, namespace), root)
    shipment.modules = sorted(modules)
    for name, location in sorted(modules.items()):
        for path in _walk(location):
            shipment.files[posixpath.join(MODULES_FOLDER, path.relative_to(location.parent).as_posix())] = path
    for given in files:
        path = (root / given).resolve()
        if not path.exists():
            raise InputError(f"--files {given!r}: no such file or folder in {root}")
        if not _inside(path, root) or path == root:
            raise InputError(f"--files {given!r} is not inside the notebook's folder {root}: "
                             "name files and folders below it")
        for found in _files_inside(path, given):
            relative = found.relative_to(root).as_posix()
            if any(ch in relative for ch in "\n\r\0"):
                raise InputError(f"--files: the file name {relative!r} cannot be sent (it contains a line break)")
            shipment.files[relative] = found
    shipment.digests = {relative: file_digest(path) for relative, path in shipment.files.items()}
    return shipment


def upload_shipment(shipment: Shipment, transport, files_dir: str) -> tuple[int, int]:
    """Send the files the target lacks; return (files sent, bytes sent)."""
    sent = sent_bytes = 0
    transport.makedirs(files_dir)
    for relative, digest in sorted(shipment.digests.items()):
        remote = posixpath.join(files_dir, digest)
        if transport.exists(remote):
            continue
        path = shipment.files[relative]
        with open(path, "rb") as source, transport.open_atomic(remote, mode=0o400) as target:
            for piece in iter(lambda: source.read(4 * 2**20), b""):
                target.write(piece)
                sent_bytes += len(piece)
        sent += 1
    return sent, sent_bytes


PACKAGES_PROBE = """
import importlib.util, json, sys
missing = [name for name in sys.argv[1:] if importlib.util.find_spec(name) is None]
print(json.dumps(missing))
"""


def missing_packages(target, names: set[str], shipped: list[str]) -> list[str]:
    """Installed packages the cell uses that the target's Python cannot import, with their versions here.

    Names found on the target once are not asked about again while the connection lasts.
    """
    import json
    import shlex
    known = target.packages_present
    wanted = sorted(name for name in names - set(shipped) - known
                    if name not in getattr(sys, "stdlib_module_names", ()) and name not in sys.builtin_module_names
                    and name != "__main__")
    if not wanted:
        return []
    script = "\n".join([*target.config.setup, " ".join(
        ["exec", shlex.quote(target.config.python), "-c", shlex.quote(PACKAGES_PROBE), *map(shlex.quote, wanted)])])
    result = target.transport.run(["bash", "-c", script], check=False, timeout=120)
    try:
        missing = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return []
    known.update(set(wanted) - set(missing))
    described = []
    for name in missing:
        version = _version_here(name)
        described.append(f"{name} {version}" if version else name)
    return described


def _version_here(name: str) -> str | None:
    from importlib import metadata
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version(name)
    except Exception:
        return None

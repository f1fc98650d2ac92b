"""What runs on the target: the runner, the pickle format and the job folder's layout.

Standard library and dill only, and nothing from the rest of rx_magic: these
files are copied as they are to ``{workdir}/.rx/runtime-{version}/``.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

#: The files copied to the target, ``runner.py`` last: its presence means the folder is complete.
RUNTIME_FILES = ("wire.py", "layout.py", "jsontext.py", "process_state.py", "worker.py", "runner.py")

_snapshot: tuple[tuple, str, dict[str, bytes]] | None = None     # (files' stats, version, contents)
_snapshot_lock = threading.Lock()


def runtime_file(name: str) -> Path:
    return Path(__file__).parent / name


def runtime_snapshot() -> tuple[str, dict[str, bytes]]:
    """The runtime's version (a hash of its files) and the files' contents, read again only when one changed.

    The version and the contents come from one reading, so the folder a job script names
    always holds the files that version was made of.
    """
    global _snapshot
    stats = tuple((name, (stat := runtime_file(name).stat()).st_mtime_ns, stat.st_size) for name in RUNTIME_FILES)
    with _snapshot_lock:
        if _snapshot is None or _snapshot[0] != stats:
            contents = {name: runtime_file(name).read_bytes() for name in RUNTIME_FILES}
            digest = hashlib.sha256()
            for name in RUNTIME_FILES:
                digest.update(contents[name])
            _snapshot = (stats, digest.hexdigest()[:16], contents)
        return _snapshot[1], _snapshot[2]


def runtime_version() -> str:
    """A hash of the runtime's files: each version gets its own folder on the target."""
    return runtime_snapshot()[0]

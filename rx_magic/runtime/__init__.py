"""What runs on the target: the runner, the pickle format and the job folder's layout.

Standard library and dill only, and nothing from the rest of rx_magic: these
files are copied as they are to ``{workdir}/.rx/runtime-{version}/``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The files copied to the target, ``runner.py`` last: its presence means the folder is complete.
RUNTIME_FILES = ("wire.py", "layout.py", "runner.py")


def runtime_file(name: str) -> Path:
    return Path(__file__).parent / name


def runtime_version() -> str:
    """A hash of the runtime's files: each version gets its own folder on the target."""
    digest = hashlib.sha256()
    for name in RUNTIME_FILES:
        digest.update(runtime_file(name).read_bytes())
    return digest.hexdigest()[:16]

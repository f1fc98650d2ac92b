"""Where rx_magic keeps things on this machine: the XDG data and cache folders, private to the user."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def data_home() -> Path:
    """``$XDG_DATA_HOME/rx_magic`` (default ``~/.local/share/rx_magic``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rx_magic"


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/rx_magic`` (default ``~/.cache/rx_magic``): fetched outputs, job.ipynb."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rx_magic"


def private_folder(path: Path) -> Path:
    """Make ``path`` (and any missing parent) a folder only the user can enter (0700), and return it.

    Parents created here are 0700 too, as the XDG base directory spec asks. Folders that
    already exist are made private only at or below rx_magic's own data and cache folders
    (one made world-readable by an older version, or by the umask of whatever made it);
    the user's other folders are left as they are.
    """
    path = Path(path)
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue                # another kernel made it meanwhile
        folder.chmod(0o700)         # mkdir's mode is cut by the umask; 0700 is what we want whatever it is
    own = (data_home(), cache_home())
    for folder in (path, *path.parents):
        if not any(folder == home or home in folder.parents for home in own):
            break
        _make_private(folder)
    return path


def _make_private(folder: Path) -> None:
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
        folder.chmod(0o700)

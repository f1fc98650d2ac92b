"""Where rx_magic keeps things on this machine: the XDG data and cache folders."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """``$XDG_DATA_HOME/rx_magic`` (default ``~/.local/share/rx_magic``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rx_magic"


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/rx_magic`` (default ``~/.cache/rx_magic``): fetched outputs, job.ipynb."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rx_magic"

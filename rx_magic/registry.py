"""The local job registry: one SQLite file, so jobs outlive the kernel that submitted them."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .states import State


def this_session() -> str:
    """What a job's ``session`` column holds for jobs submitted by this kernel: ``pid@host``."""
    return f"{os.getpid()}@{socket.gethostname()}"


def data_home() -> Path:
    """``$XDG_DATA_HOME/rx_magic`` (default ``~/.local/share/rx_magic``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rx_magic"


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/rx_magic`` (default ``~/.cache/rx_magic``): fetched outputs, job.ipynb."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rx_magic"


@dataclass(frozen=True)
class JobRecord:
    """One row of the registry: what this machine remembers of a job."""

    id: str
    target: str
    scheduler: str
    workdir: str
    scheduler_id: str = ""
    state: State = State.SUBMITTED
    reason: str = ""
    submitted_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    first_line: str = ""
    pull: tuple[str, ...] = ()
    session: str = ""               # which kernel submitted it (pid@host), to mark others' jobs
    cancel_requested: bool = False
    pulled: bool = False
    elements: int = 0               # a job array's size (``--map``); 0 for a single job

    @property
    def age(self) -> float:
        return time.time() - self.submitted_at


_COLUMNS = [f.name for f in fields(JobRecord)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, scheduler TEXT NOT NULL, workdir TEXT NOT NULL,
    scheduler_id TEXT, state TEXT NOT NULL, reason TEXT, submitted_at REAL NOT NULL,
    ended_at REAL, first_line TEXT, pull TEXT, session TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, pulled INTEGER NOT NULL DEFAULT 0,
    elements INTEGER NOT NULL DEFAULT 0
)"""
#: Columns added since the first release, for registries written before them.
_ADDED = {"elements": "INTEGER NOT NULL DEFAULT 0"}


class Registry:
    """Records jobs in ``{data_home}/registry.sqlite``; safe to share between kernels."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else data_home() / "registry.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED.items():
            if name not in present:
                try:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
                except sqlite3.OperationalError:    # another kernel added it meanwhile
                    pass

    def add(self, record: JobRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", _to_row(record))

    def update(self, job_id: str, **changes) -> JobRecord:
        record = replace(self.get(job_id), **changes)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        values = [_to_row(record)[_COLUMNS.index(name)] for name in changes]
        self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values, job_id])
        return record

    def get(self, job_id: str) -> JobRecord:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _from_row(row)

    def find(self, prefix: str) -> list[JobRecord]:
        """Jobs whose id starts with ``prefix`` (so users may type a unique tail or head)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id LIKE ? OR id LIKE ? ORDER BY id DESC",
            [prefix.replace("%", "") + "%", "%" + prefix.replace("%", "")]).fetchall()
        return [_from_row(row) for row in rows]

    def recent(self, limit: int | None = 20) -> list[JobRecord]:
        """Newest first."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY submitted_at DESC, id DESC"
        rows = self._db.execute(query + (" LIMIT ?" if limit else ""), [limit] if limit else []).fetchall()
        return [_from_row(row) for row in rows]

    def remove(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", [job_id])

    def close(self) -> None:
        self._db.close()


def _to_row(record: JobRecord) -> list:
    row = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if name == "pull":
            value = json.dumps(list(value))
        elif name == "state":
            value = value.value
        elif isinstance(value, bool):
            value = int(value)
        row.append(value)
    return row


def _from_row(row) -> JobRecord:
    values = dict(zip(_COLUMNS, row))
    values["state"] = State(values["state"])
    values["pull"] = tuple(json.loads(values["pull"] or "[]"))
    values["cancel_requested"] = bool(values["cancel_requested"])
    values["pulled"] = bool(values["pulled"])
    values["scheduler_id"] = values["scheduler_id"] or ""
    values["reason"] = values["reason"] or ""
    values["first_line"] = values["first_line"] or ""
    values["session"] = values["session"] or ""
    values["elements"] = values["elements"] or 0
    return JobRecord(**values)


_registries: dict[Path, Registry] = {}


def default_registry() -> Registry:
    """The registry under the current ``XDG_DATA_HOME``, opened once per path."""
    path = data_home() / "registry.sqlite"
    if path not in _registries:
        _registries[path] = Registry(path)
    return _registries[path]

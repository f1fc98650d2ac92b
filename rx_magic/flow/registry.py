"""The local job registry: one SQLite file, so jobs outlive the kernel that submitted them."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from dataclasses import fields, replace
from pathlib import Path

from ..errors import RxError
from ..model.local_dirs import data_home, private_folder
from ..model.record import HoldRecord, JobRecord
from ..model.states import State


def this_session() -> str:
    """What a job's ``session`` column holds for jobs submitted by this kernel: ``pid@host``."""
    return f"{os.getpid()}@{socket.gethostname()}"


_COLUMNS = [f.name for f in fields(JobRecord)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, scheduler TEXT NOT NULL, workdir TEXT NOT NULL,
    scheduler_id TEXT, state TEXT NOT NULL, reason TEXT, submitted_at REAL NOT NULL,
    ended_at REAL, first_line TEXT, pull TEXT, session TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, pulled INTEGER NOT NULL DEFAULT 0,
    elements INTEGER NOT NULL DEFAULT 0
)"""
_HOLD_COLUMNS = [f.name for f in fields(HoldRecord)]
#: Holds (``flow.holds``): a table of their own, new in registries written before holds existed.
_HOLDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, scheduler TEXT NOT NULL, workdir TEXT NOT NULL,
    scheduler_id TEXT, resources TEXT, idle REAL, name TEXT, created REAL NOT NULL,
    state TEXT NOT NULL, reason TEXT, ended_at REAL, session TEXT
)"""
#: Columns added since the first release, for registries written before them.
_ADDED = {"elements": "INTEGER NOT NULL DEFAULT 0"}


#: SQLite's ``synchronous`` setting: with WAL, NORMAL commits without ``fdatasync`` (the log is synced at
#: checkpoints); a kernel that dies loses nothing, only a machine that loses power may lose the last writes.
SYNCHRONOUS = "NORMAL"


class RegistryClosed(RxError):
    """The registry was closed (``%unload_ext``, or a test tearing down) while a thread still used it."""


class Registry:
    """Records jobs in ``{data_home}/registry.sqlite``; safe to share between kernels and threads.

    Each thread has a connection of its own (the ``sqlite3`` documentation's
    advice), made on its first call and closed by that thread alone: ``close()``
    closes the calling thread's connection and makes every other thread close
    its own on its next call (``RegistryClosed``) or when it ends. Shutdown
    order: stop the monitors (``flow.watch.stop_monitors``), then close the registry.

    WAL with ``synchronous=NORMAL``: a write is one commit and no ``fdatasync``
    (the log is synced at checkpoints), so a kernel that dies loses nothing.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else data_home() / "registry.sqlite"
        private_folder(self.path.parent)
        self._local = threading.local()
        self._closed = False
        db = self._db
        os.chmod(self.path, 0o600)
        db.execute(_SCHEMA)
        db.execute(_HOLDS_SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED.items():
            if name not in present:
                try:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
                except sqlite3.OperationalError:    # another kernel added it meanwhile
                    pass

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if self._closed:
            if db is not None:
                db.close()
                self._local.db = None
            raise RegistryClosed(f"the job registry {self.path} was closed")
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
            self._local.db = db
        return db

    def add(self, record: JobRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", _to_row(record))

    def update(self, job_id: str, **changes) -> JobRecord:
        """Change some columns of a job's row; return the record as it now is. Raises ``KeyError``."""
        db = self._db
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with _transaction(db):
            current = self._get(db, job_id)
            if current.state.is_final and "state" in changes and not State(changes["state"]).is_final:
                # an ending is final: a handle that saw the job still running earlier cannot undo it
                changes = {name: value for name, value in changes.items() if name not in ("state", "reason")}
                if not changes:
                    return current
                assignments = ", ".join(f"{name} = ?" for name in changes)
            record = replace(current, **changes)
            row = _to_row(record)
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?",
                       [*(row[_COLUMNS.index(name)] for name in changes), job_id])
        return record

    def get(self, job_id: str) -> JobRecord:
        return self._get(self._db, job_id)

    @staticmethod
    def _get(db: sqlite3.Connection, job_id: str) -> JobRecord:
        row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", [job_id]).fetchone()
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

    def add_hold(self, record: HoldRecord) -> None:
        placeholders = ", ".join("?" for _ in _HOLD_COLUMNS)
        self._db.execute(f"INSERT INTO holds ({', '.join(_HOLD_COLUMNS)}) VALUES ({placeholders})",
                         [getattr(record, name) for name in _HOLD_COLUMNS])

    def update_hold(self, hold_id: str, **changes) -> HoldRecord:
        """Change some columns of a hold's row; an ended hold stays ended. Raises ``KeyError``."""
        db = self._db
        with _transaction(db):
            current = self._get_hold(db, hold_id)
            if current.state == "ended":
                changes = {name: value for name, value in changes.items() if name not in ("state", "reason")}
            if not changes:
                return current
            db.execute(f"UPDATE holds SET {', '.join(f'{name} = ?' for name in changes)} WHERE id = ?",
                       [*changes.values(), hold_id])
            return replace(current, **changes)

    def remove_hold(self, hold_id: str) -> None:
        self._db.execute("DELETE FROM holds WHERE id = ?", [hold_id])

    def get_hold(self, hold_id: str) -> HoldRecord:
        return self._get_hold(self._db, hold_id)

    @staticmethod
    def _get_hold(db: sqlite3.Connection, hold_id: str) -> HoldRecord:
        row = db.execute(f"SELECT {', '.join(_HOLD_COLUMNS)} FROM holds WHERE id = ?", [hold_id]).fetchone()
        if row is None:
            raise KeyError(hold_id)
        return _hold_from_row(row)

    def holds(self, target: str | None = None, live_only: bool = False) -> list[HoldRecord]:
        """Holds, newest first: of one target, and only those not seen ended, when asked."""
        where = [clause for clause, wanted in (("target = ?", target is not None),
                                                ("state != 'ended'", live_only)) if wanted]
        query = (f"SELECT {', '.join(_HOLD_COLUMNS)} FROM holds" + (" WHERE " + " AND ".join(where) if where else "")
                 + " ORDER BY created DESC, id DESC")
        return [_hold_from_row(row) for row in self._db.execute(query, [target] if target is not None else [])]

    def close(self) -> None:
        """Close this thread's connection; other threads close theirs on their next call or when they end."""
        self._closed = True
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: a read and the write that depends on it, with no writer between."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


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


def _hold_from_row(row) -> HoldRecord:
    values = dict(zip(_HOLD_COLUMNS, row))
    for name in ("scheduler_id", "reason", "name", "session"):
        values[name] = values[name] or ""
    values["resources"] = values["resources"] or "{}"
    values["idle"] = values["idle"] or 0.0
    return HoldRecord(**values)


_registries: dict[Path, Registry] = {}
_registries_lock = threading.Lock()


def default_registry() -> Registry:
    """The registry under the current ``XDG_DATA_HOME``, opened once per path."""
    path = data_home() / "registry.sqlite"
    with _registries_lock:
        if path not in _registries:
            _registries[path] = Registry(path)
        return _registries[path]


def close_registry(path: Path | None = None) -> None:
    """Close and forget the registry at ``path`` (the current one by default); stop the monitors first."""
    with _registries_lock:
        registry = _registries.pop(path or data_home() / "registry.sqlite", None)
    if registry is not None:
        registry.close()

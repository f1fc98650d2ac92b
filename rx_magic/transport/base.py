"""The transport interface: run a command and move files on the machine that submits jobs.

A transport knows nothing about jobs or schedulers. Paths are POSIX strings on
the submit host; every command is an argv list, never a shell string, so that
the SSH transport can quote each word exactly once.
"""

from __future__ import annotations

import abc
import errno
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Collection, Sequence

from ..errors import DiskFull, TransportError

_LSTAT = """id -u; for path do stat -c '%u %f' -- "$path" 2>/dev/null || echo -; done"""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str, where: str, free: int | None, needed: int | None, *, at_least: bool = False) -> DiskFull:
    """The one message for a write that found no space: the path, the space free there, the size needed."""
    from ..model.resources import format_size_human as size
    free_text = f"{size(free)} free there" if free is not None else "the space free there is unknown"
    needed_text = "" if needed is None else f", {'at least ' if at_least else ''}{size(needed)} needed"
    return DiskFull(f"no space left on the device to write {path} on {where}: {free_text}{needed_text}. "
                    "Free some space there (`%rx clean` removes finished jobs' folders), or point the target's "
                    "workdir at a disk with room", path, free, needed)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 10) -> str:
        """The last lines of stderr (or stdout when stderr is empty), for messages."""
        text = (self.stderr or self.stdout).rstrip()
        return "\n".join(text.splitlines()[-lines:])


class Transport(abc.ABC):
    """How rx_magic runs commands and moves files on a submit host."""

    #: Short description used in messages: "this machine", "gadi (ssh)".
    description: str = ""

    #: Requests that waited for the server's answer before the next could go (an SFTP request, a session
    #: opened, a command, a command agent request), counted by the SSH transports for the benchmarks
    #: (benchmarks/bench_round_trips.py); pipelined writes and prefetched reads ride on the request that waits for
    #: them. Always 0 on this machine.
    round_trips: int = 0

    def _count(self, trips: int = 1) -> None:
        self.round_trips += trips

    def _disk_full(self, path: str, folder: str, needed: int) -> DiskFull | None:
        """``DiskFull`` when ``folder`` has less room than ``needed`` bytes (df, once the partial file is gone).

        For transports that run commands on another machine; a full disk there shows only as a failed write.
        """
        try:
            result = self.run(["df", "-Pk", "--", folder], check=False, timeout=30)
            free = int(result.stdout.splitlines()[-1].split()[3]) * 1024
        except (TransportError, ValueError, IndexError):
            return None
        return disk_full(path, self.description, free, needed) if free < needed else None

    @abc.abstractmethod
    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float | None = 120, check: bool = True) -> CommandResult:
        """Run ``argv``; with ``check``, a non-zero exit raises ``TransportError``."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def read_bytes(self, path: str, offset: int = 0, limit: int | None = None) -> bytes:
        """The file's bytes from ``offset``, at most ``limit`` of them; ``FileNotFoundError`` when it is missing."""

    def file_size(self, path: str) -> int:
        """The file's size in bytes; ``FileNotFoundError`` when it is missing. Transports answer with one stat."""
        return len(self.read_bytes(path))

    @abc.abstractmethod
    def open_read(self, path: str) -> BinaryIO: ...

    @abc.abstractmethod
    def open_atomic(self, path: str, mode: int = 0o600) -> AbstractContextManager[BinaryIO]:
        """A writable file that appears at ``path`` only if the block completes."""

    @abc.abstractmethod
    def makedirs(self, path: str, mode: int = 0o700) -> None: ...

    @abc.abstractmethod
    def rename(self, source: str, destination: str) -> None: ...

    @abc.abstractmethod
    def remove_tree(self, path: str) -> int:
        """Remove a file or folder; return the bytes freed (0 when it was missing)."""

    @abc.abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Entry names in ``path``; an empty list when it is missing."""

    def listdir_times(self, path: str) -> dict[str, float]:
        """Entry names in ``path`` with each entry's modification time (of a symlink itself, never its target).

        An empty dict when ``path`` is missing. One listing, one round trip over SSH.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list modification times")

    def lstat(self, paths: Sequence[str]) -> tuple[int, list[tuple[int, int] | None]]:
        """The login user's uid, and each path's ``(owner uid, st_mode)`` -- of a symlink itself, never its target.

        ``None`` for a path that is missing. One command, one round trip over SSH (GNU ``stat``).
        """
        result = self.run(["sh", "-c", _LSTAT, "rx-lstat", *paths])
        lines = result.stdout.splitlines()
        if len(lines) != len(paths) + 1:
            raise TransportError(f"could not read the owner and mode of {', '.join(paths)} on {self.description}: "
                                 f"{result.tail(3) or 'unexpected output'}")
        found: list[tuple[int, int] | None] = []
        for line in lines[1:]:
            uid, _, mode = line.partition(" ")
            found.append(None if line == "-" else (int(uid), int(mode, 16)))
        return int(lines[0]), found

    def read_files(self, paths: Sequence[str], limit: int | None = None) -> dict[str, bytes | None]:
        """Many small files at once: each path's bytes, or None when it is missing.

        A file larger than ``limit`` bytes, or that could not be read, is left out of the answer: read it on
        its own (``read_bytes``, ``open_read``), which says why it cannot be read. One round trip over SSH
        (through the command agent), whatever the number of files.
        """
        found: dict[str, bytes | None] = {}
        for path in paths:
            try:
                if limit is not None and self.file_size(path) > limit:
                    continue
                found[path] = self.read_bytes(path)
            except FileNotFoundError:
                found[path] = None
            except OSError:
                continue
        return found

    def write_files(self, files: Sequence[tuple[str, bytes]], *, folders: Sequence[str] = (),
                    keep: Collection[str] = (), rename: tuple[str, str] | None = None) -> None:
        """Make ``folders`` (0700, in order; one that is there must be a folder, not a symlink), write each
        ``(path, bytes)`` atomically (0600; a path in ``keep`` that exists already is left as it is), then
        rename ``rename[0]`` to ``rename[1]``. One round trip over SSH (through the command agent).

        On failure what was done stays (the caller removes the folder it was making); a full disk is ``DiskFull``.
        """
        for folder in folders:
            self.makedirs(folder)
        for path, data in files:
            if path in keep and self.exists(path):
                continue
            self.write_bytes(path, data)
        if rename is not None:
            self.rename(*rename)

    def end_notice(self, pid: str, marker: str) -> int | None:
        """A file descriptor that becomes readable once the process ``pid`` of the submit host (whose command line
        mentions ``marker``: pids are reused) has ended, or None where the transport cannot watch one.

        The caller closes it; closing it (or the transport) stops the watching.
        """
        return None

    @abc.abstractmethod
    def expand_home(self, path: str) -> str:
        """``path`` with a leading ``~`` replaced by the submit host's home."""

    @property
    def connected(self) -> bool:
        """Whether using the transport now needs no new connection (``--dry-run`` opens none)."""
        return True

    def write_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        with self.open_atomic(path, mode) as file:
            file.write(data)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

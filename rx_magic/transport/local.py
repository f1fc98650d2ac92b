"""The local transport: this machine's files and processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterator, Sequence

from ..errors import DiskFull, TransportError
from .base import DISK_FULL_ERRNOS, CommandResult, Transport, disk_full


class LocalTransport(Transport):
    """Runs commands with ``subprocess`` and moves files with the file system."""

    description = "this machine"

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float | None = 120, check: bool = True) -> CommandResult:
        argv = tuple(argv)
        try:
            done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                                  env=command_environment())
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TransportError(f"could not run {argv[0]!r} on this machine: {exc}") from exc
        result = CommandResult(argv, done.returncode,
                               done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise TransportError(f"{argv[0]} exited with code {done.returncode} on this machine:\n{result.tail()}")
        return result

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_bytes(self, path: str, offset: int = 0, limit: int | None = None) -> bytes:
        with open(path, "rb") as file:
            if offset:
                file.seek(offset)
            return file.read(-1 if limit is None else limit)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def open_read(self, path: str) -> BinaryIO:
        return open(path, "rb")

    @contextmanager
    def open_atomic(self, path: str, mode: int = 0o600) -> Iterator[BinaryIO]:
        folder, name = os.path.split(path)
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder or ".")
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full(path, self.description, free_space(folder), None) from None
            raise
        landed = 0
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as file:
                try:
                    yield file
                finally:
                    landed = os.fstat(fd).st_size if not file.closed else landed
            os.replace(temporary, path)
        except BaseException as exc:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
                # the partial file is gone: what is free now is what the user has
                raise disk_full(path, self.description, free_space(folder), landed + 1, at_least=True) from None
            raise

    def write_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        try:
            super().write_bytes(path, data, mode)
        except DiskFull as exc:
            needed = memoryview(data).nbytes
            raise disk_full(path, self.description, exc.free, needed) from None

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        os.makedirs(path, mode=mode, exist_ok=True)

    def rename(self, source: str, destination: str) -> None:
        os.rename(source, destination)

    def remove_tree(self, path: str) -> int:
        freed = _tree_size(path)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
        return freed

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def listdir_times(self, path: str) -> dict[str, float]:
        times = {}
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        times[entry.name] = entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:   # removed while listed
                        pass
        except FileNotFoundError:
            pass
        return times

    def lstat(self, paths: Sequence[str]) -> tuple[int, list[tuple[int, int] | None]]:
        found: list[tuple[int, int] | None] = []
        for path in paths:
            try:
                info = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                found.append(None)
            else:
                found.append((info.st_uid, info.st_mode))
        return os.getuid(), found

    def expand_home(self, path: str) -> str:
        return os.path.expanduser(path)


# What a job on this machine gets of the kernel's environment: who and where the user is, the locale, and where
# programs and libraries are found, as a login over ssh (or sbatch --export=NONE) would give, plus the Python
# environment the kernel runs in. Nothing else: tokens and passwords exported to the kernel stay in it. A
# target's setup lines (``export NAME=value``) add what its jobs need.
# MPLBACKEND: ipykernel sets it to its inline backend, and a cell that asks matplotlib which backend it uses
# should hear what it hears in the notebook (the differential suite's anatomy-figures notebook prints it)
JOB_ENVIRONMENT = ("HOME", "USER", "LOGNAME", "SHELL", "PATH", "LD_LIBRARY_PATH", "LANG", "LANGUAGE", "TZ",
                   "TMPDIR", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "MPLBACKEND")


# What a command run here for a target (sbatch, qsub, the target's setup, a check) gets besides
# ``JOB_ENVIRONMENT``: where the scheduler's own configuration is. sbatch exports its whole environment to the
# job (``--export=ALL`` is Slurm's default), so a command run with the kernel's environment would hand the
# kernel's tokens to every job of a `local` target with a scheduler, and Slurm would keep them in its spool.
SCHEDULER_ENVIRONMENT = ("SLURM_CONF", "PBS_CONF_FILE", "PBS_SERVER")


def command_environment() -> dict[str, str]:
    """The environment of a command run on this machine for a target: a job's (``job_environment``), the
    scheduler's configuration (``SCHEDULER_ENVIRONMENT``) and the user's sbatch defaults (``SBATCH_*``)."""
    return {**job_environment(),
            **{name: value for name, value in os.environ.items()
               if name in SCHEDULER_ENVIRONMENT or name.startswith("SBATCH_")}}


def job_environment() -> dict[str, str]:
    """The variables of this process's environment that a job started here inherits (``JOB_ENVIRONMENT``,
    and the locale's ``LC_*``)."""
    return {name: value for name, value in os.environ.items()
            if name in JOB_ENVIRONMENT or (name.startswith("LC_") and name[3:].isalpha() and name[3:].isupper())}


def free_space(folder: str) -> int | None:
    """Bytes an unprivileged user may still write in ``folder``'s file system."""
    try:
        found = os.statvfs(folder or ".")
    except OSError:
        return None
    return found.f_bavail * found.f_frsize


def _tree_size(path: str) -> int:
    if os.path.islink(path) or os.path.isfile(path):
        return os.lstat(path).st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total

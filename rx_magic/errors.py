"""Every error rx_magic raises, in one tree.

    RxError
    ├── InputError            bad input, found before anything is submitted
    │   ├── ResourceError     a malformed size, time or count (``--mem 8XB``)
    │   ├── ConfigError       an unknown target, a malformed targets.toml
    │   └── CaptureError      a cell that cannot be sent as it is
    │       ├── UnpicklableError   a pushed value that cannot be serialized
    │       └── PayloadTooLarge    pushed values over the target's limit
    ├── TransportError        running a command or moving a file failed
    │   ├── ConnectError      the host could not be reached, or refused us (host key, login)
    │   └── DiskFull          a write found no space left (the path, the space free, the size needed)
    ├── SchedulerError        the scheduler refused or lost a job
    └── JobError              a job ended without the result the user wanted
        ├── JobFailed         killed or crashed: walltime, memory, runner died
        │   └── ArrayFailed   some elements of a --map array failed; the others were pulled
        ├── JobCancelled      cancelled before it finished
        ├── RemoteError       the cell raised, and its exception did not unpickle
        └── PullError         a pulled value cannot be loaded here; nothing was applied

The magic turns an ``InputError`` into IPython's ``UsageError``: one line,
no traceback. A cell's own exception is raised locally as itself when it
unpickles, with the remote traceback as its ``__cause__``. IPython shows a
``JobError``, and a cell's exception raised here, through ``_render_traceback_``
(as ipyparallel's remote errors are shown): the remote traceback and the
message, without rx_magic's own frames, which only waited and pulled.
"""

from __future__ import annotations

import os
import sys


class RxError(Exception):
    """Base class of every error rx_magic raises itself."""


class InputError(RxError):
    """The user's input is wrong; nothing was submitted."""


class ResourceError(InputError, ValueError):
    """A resource request (size, time, count) is malformed or out of range."""


class ConfigError(InputError):
    """A target is unknown or its configuration is malformed."""


class CaptureError(InputError):
    """The cell, or a value it reads, cannot be sent."""


class UnpicklableError(CaptureError):
    """A value the cell reads cannot be serialized."""


class PayloadTooLarge(CaptureError):
    """The pushed values add up to more than the target allows."""


class TransportError(RxError):
    """A command or file transfer on the target failed."""


class ConnectError(TransportError):
    """Connecting to a target's host failed: unreachable, silent, unknown name, host key or login refused.

    IPython shows it as its message alone (one paragraph saying what to check): the
    frames that tried to connect say nothing the message does not.
    """

    def _render_traceback_(self) -> list[str]:
        return traceback_lines(self)


class DiskFull(TransportError):
    """A file could not be written: no space left on the device (or over the disk quota) where it goes.

    ``path`` is the file, ``free`` the bytes free there (None when unknown), ``needed`` the bytes the
    write needed (None when unknown). Shown as its message alone, as ``ConnectError`` is.
    """

    def __init__(self, message: str, path: str = "", free: int | None = None, needed: int | None = None):
        super().__init__(message)
        self.path, self.free, self.needed = path, free, needed

    def _render_traceback_(self) -> list[str]:
        return traceback_lines(self)


class SchedulerError(RxError):
    """The scheduler refused a submission, or a query or cancel failed."""


class JobError(RxError):
    """A job did not end with its cell's results."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id

    def _render_traceback_(self) -> list[str]:
        return traceback_lines(self)


class JobFailed(JobError):
    """The job was killed or crashed outside the cell (walltime, memory, ...)."""


class ArrayFailed(JobFailed):
    """Some elements of a job array failed; the others' values were pulled.

    ``failures`` lists each failed element (``flow.arrays.ElementFailure``): its
    index, its value of NAME, why, and its remote traceback when the cell raised.
    """

    def __init__(self, message: str, job_id: str, failures: list):
        super().__init__(message, job_id)
        self.failures = failures


class JobCancelled(JobError):
    """The job was cancelled.

    IPython shows it as its message alone, uncoloured (``cancelled: job ... nothing was pulled``): a cancel
    is what the user asked for, not an accident; it still stops "Run all".
    """

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class PullError(JobError):
    """A pulled value could not be loaded in this kernel; the namespace was left as it was."""


class RemoteError(JobError):
    """The cell raised an exception on the target that could not be rebuilt here.

    ``remote_type`` is the exception's qualified type name and ``remote_traceback``
    the traceback text as the target printed it.
    """

    def __init__(self, message: str, remote_type: str, remote_traceback: str, job_id: str | None = None):
        super().__init__(message, job_id)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class RemoteTraceback(Exception):
    """Carries a remote traceback's text as the ``__cause__`` of a re-raised exception.

    ``lines`` is the traceback as IPython formatted it on the target (``Cell In[5], line 3``, coloured as
    this kernel asked), when IPython could; IPython then shows those lines as they are.
    """

    def __init__(self, text: str, lines: list[str] | None = None):
        super().__init__(text)
        self.text = text
        self.lines = list(lines or [])

    def __str__(self) -> str:
        return "\n" + self.text.rstrip()


class ShownAsRemote:
    """A cell's own exception's ``_render_traceback_``: IPython then shows where it was raised on the target."""

    def __init__(self, exception: BaseException):
        self.exception = exception

    def __call__(self) -> list[str]:
        return traceback_lines(self.exception)


def show_as_remote(exception: BaseException) -> BaseException:
    """Have IPython show ``exception`` (a cell's own, with a ``RemoteTraceback`` cause) without local frames."""
    try:
        exception._render_traceback_ = ShownAsRemote(exception)
    except (AttributeError, TypeError):     # an exception type without a __dict__: shown the usual way
        pass
    return exception


def ipython_colors() -> str:
    """IPython's colour scheme here (``get_ipython().colors``, lower case): ``"nocolor"`` outside IPython and
    whenever ``NO_COLOR`` is set and not empty (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return "nocolor"
    ipython = sys.modules.get("IPython")     # never imported for this: without IPython nothing is coloured
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    colors = getattr(shell, "colors", None)
    return str(colors).lower() if colors else "nocolor"


def _red(text: str) -> str:
    return text if ipython_colors() == "nocolor" else f"\x1b[0;31m{text}\x1b[0m"


def traceback_lines(exception: BaseException) -> list[str]:
    """What IPython shows for an error of a job: the remote traceback, if any, then the exception's own line.

    A remote traceback IPython formatted on the target is shown as it is (it ends with the exception's
    line); a plain one follows a header, and the exception's line after it unless it ends with it already.
    """
    name, message = type(exception).__name__, str(exception)
    own_line = f"{name}: {message}" if message else name
    shown_line = _red(name) + own_line[len(name):]
    cause = exception.__cause__
    if not isinstance(cause, RemoteTraceback):
        return [shown_line]
    if cause.lines:
        return list(cause.lines)
    remote = [line for line in cause.text.rstrip().splitlines() if line != "Traceback (most recent call last):"]
    lines = ["-" * 75, f"{_red(name.ljust(41))} Traceback on the target (most recent call last)", *remote]
    if not remote or not remote[-1].endswith(own_line):    # Python names a module's exception in full
        lines += ["", shown_line]
    return lines

"""Every error rx_magic raises, in one tree.

    RxError
    ├── InputError            bad input, found before anything is submitted
    │   ├── ResourceError     a malformed size, time or count (``--mem 8XB``)
    │   ├── ConfigError       an unknown target, a malformed targets.toml
    │   └── CaptureError      a cell that cannot be sent as it is
    │       ├── UnpicklableError   a pushed value that cannot be serialized
    │       └── PayloadTooLarge    pushed values over the target's limit
    ├── TransportError        running a command or moving a file failed
    ├── SchedulerError        the scheduler refused or lost a job
    └── JobError              a job ended without the result the user wanted
        ├── JobFailed         killed or crashed: walltime, memory, runner died
        ├── JobCancelled      cancelled before it finished
        ├── RemoteError       the cell raised, and its exception did not unpickle
        └── PullError         a pulled value cannot be loaded here; nothing was applied

The magic turns an ``InputError`` into IPython's ``UsageError``: one line,
no traceback. A cell's own exception is raised locally as itself when it
unpickles, with the remote traceback as its ``__cause__``.
"""

from __future__ import annotations


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


class SchedulerError(RxError):
    """The scheduler refused a submission, or a query or cancel failed."""


class JobError(RxError):
    """A job did not end with its cell's results."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job was killed or crashed outside the cell (walltime, memory, ...)."""


class JobCancelled(JobError):
    """The job was cancelled."""


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
    """Carries a remote traceback's text as the ``__cause__`` of a re-raised exception."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text.rstrip()

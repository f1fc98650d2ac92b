"""rx_magic: run a notebook cell as a job on another machine or an HPC cluster.

In a notebook::

    %load_ext rx_magic

    %%remote gadi --mem 8GB --ncpus 4 --walltime 2:00:00
    model = fit(data, alpha)

From Python::

    job = rx_magic.submit("y = x * 2", "local", {"x": 21})
    job.wait()
    namespace = {}
    job.pull(namespace)      # namespace == {"y": 42}
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    CaptureError, ConfigError, InputError, JobCancelled, JobError, JobFailed, PayloadTooLarge, PullError, RemoteError,
    ResourceError, RxError, SchedulerError, TransportError, UnpicklableError,
)
from .jobs import Job  # noqa: E402
from .resources import Resources  # noqa: E402
from .states import State  # noqa: E402
from .submission import submit  # noqa: E402


def jobs(limit: int | None = 20) -> list[Job]:
    """Recent jobs from the registry, newest first."""
    from .registry import default_registry
    registry = default_registry()
    return [Job(record, registry) for record in registry.recent(limit)]


def load_ipython_extension(ipython) -> None:
    """``%load_ext rx_magic``: register ``%%remote`` and ``%rx``."""
    from .magics import RemoteMagics
    ipython.register_magics(RemoteMagics(ipython))


def unload_ipython_extension(ipython) -> None:
    from .background import close_background_jobs
    from .monitor import stop_monitors
    from .targets import close_all
    close_background_jobs(ipython)
    stop_monitors()
    close_all()


__all__ = [
    "CaptureError", "ConfigError", "InputError", "Job", "JobCancelled", "JobError", "JobFailed",
    "PayloadTooLarge", "PullError", "RemoteError", "Resources", "ResourceError", "RxError", "SchedulerError", "State",
    "TransportError", "UnpicklableError", "jobs", "load_ipython_extension", "submit",
]

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

The package is layered (``../DESIGN.md``): ``runtime`` < ``model`` <
``transport`` < ``schedulers`` < ``targets`` < ``flow`` < ``ui``, with
``errors`` below them all; this module, the public face, wires the top.
"""

from ._version import __version__
from .errors import (
    CaptureError,
    ConfigError,
    ConnectError,
    DiskFull,
    InputError,
    JobCancelled,
    JobError,
    JobFailed,
    PayloadTooLarge,
    PullError,
    RemoteError,
    ResourceError,
    RxError,
    SchedulerError,
    TransportError,
    UnpicklableError,
)
from .flow.job import Job
from .flow.registry import default_registry
from .flow.submit import submit
from .model.resources import Resources
from .model.states import State


def jobs(limit: int | None = 20) -> list[Job]:
    """Recent jobs from the registry, newest first."""
    registry = default_registry()
    return [Job(record, registry) for record in registry.recent(limit)]


def _job_view(job: Job):
    """A job shown as a cell's result is its status widget; anywidget is imported when one is first shown."""
    from .ui.widget import job_view
    return job_view(job)


Job.view = _job_view


def load_ipython_extension(ipython) -> None:
    """``%load_ext rx_magic``: register ``%%remote`` and ``%rx``."""
    from .ui.magics import RemoteMagics
    from .ui.widget import register_job_display
    ipython.register_magics(RemoteMagics(ipython))
    register_job_display(ipython)     # a job shown in Jupyter: its widget, then its static record


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext rx_magic``: stop bringing in background results and watching jobs, close connections."""
    from .flow.watch import stop_monitors
    from .targets.target import close_all
    from .ui.background import close_background_jobs
    from .ui.widget import unregister_job_display
    close_background_jobs(ipython)
    unregister_job_display(ipython)
    stop_monitors()
    close_all()


__all__ = [
    "CaptureError", "ConfigError", "ConnectError", "DiskFull", "InputError", "Job", "JobCancelled", "JobError",
    "JobFailed", "PayloadTooLarge", "PullError", "RemoteError", "Resources", "ResourceError", "RxError",
    "SchedulerError", "State", "TransportError", "UnpicklableError", "__version__", "jobs", "load_ipython_extension",
    "submit",
]

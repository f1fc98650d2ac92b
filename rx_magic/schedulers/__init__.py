"""Schedulers: how a job folder becomes a running job (see DESIGN.md)."""

from ..errors import ConfigError
from .base import JobScript, Scheduler, render_body
from .direct import DirectScheduler
from .pbs import PBSScheduler
from .slurm import SlurmScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {"direct": DirectScheduler, "pbs": PBSScheduler, "slurm": SlurmScheduler}


def scheduler_named(name: str, profile: str | None = None) -> Scheduler:
    """The scheduler called ``name``; ``profile`` picks a site's rules (``"gadi"`` for ``pbs``)."""
    try:
        kind = SCHEDULERS[name]
    except KeyError:
        raise ConfigError(f"unknown scheduler {name!r}: choose one of {', '.join(sorted(SCHEDULERS))}") from None
    return kind() if profile is None else kind(profile=profile)


__all__ = ["SCHEDULERS", "DirectScheduler", "JobScript", "PBSScheduler", "Scheduler", "SlurmScheduler", "render_body",
           "scheduler_named"]

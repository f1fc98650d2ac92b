"""Schedulers: how a job folder becomes a running job (see DESIGN.md)."""

from ..errors import ConfigError
from .base import JobScript, Scheduler, render_body
from .direct import DirectScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {"direct": DirectScheduler}


def scheduler_named(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ConfigError(f"unknown scheduler {name!r}: choose one of {', '.join(sorted(SCHEDULERS))}") from None


__all__ = ["DirectScheduler", "JobScript", "SCHEDULERS", "Scheduler", "render_body", "scheduler_named"]

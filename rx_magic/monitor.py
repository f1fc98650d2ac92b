"""Watching jobs: one scheduler query and one status read per job per round.

``observe`` is one round for many jobs of one target; blocking cells call it
in a loop, and a background monitor thread will call it for all live jobs.
"""

from __future__ import annotations

import json

from .jobs import JobPaths
from .registry import JobRecord
from .states import Observation, SchedulerState
from .targets import Target


def read_json(target: Target, path: str):
    try:
        return json.loads(target.transport.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None


def _read_exit_code(target: Target, paths: JobPaths) -> int | None:
    try:
        return int(target.transport.read_bytes(paths.exit_code).strip())
    except (FileNotFoundError, ValueError):
        return None


def _log_tail(target: Target, paths: JobPaths, lines: int = 5) -> str:
    try:
        text = target.transport.read_bytes(paths.scheduler_log).decode(errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def observe(target: Target, records: list[JobRecord], ask_scheduler: bool = True) -> dict[str, Observation]:
    """What each job's folder, and (when asked) the scheduler, say now."""
    paths = {record.id: JobPaths(record.workdir, record.id) for record in records}
    statuses = {job_id: read_json(target, p.status_json) for job_id, p in paths.items()}
    unfinished = [r for r in records if (statuses[r.id] or {}).get("state") not in ("done", "failed", "cancelled")]
    answers: dict[str, SchedulerState] = {}
    if ask_scheduler and unfinished:
        answers = target.scheduler.query(
            target.transport, {r.scheduler_id: paths[r.id].folder for r in unfinished if r.scheduler_id})
    seen = {}
    for record in records:
        p, status = paths[record.id], statuses[record.id]
        if not ask_scheduler:
            seen[record.id] = Observation(status, None, None)
            continue
        answer = answers.get(record.scheduler_id, SchedulerState(None))
        exit_code, tail = None, ""
        if record in unfinished and (answer.state is None or answer.state.is_final):
            # the job may have ended between the status read and the query: read its folder again
            status = read_json(target, p.status_json)
            if (status or {}).get("state") not in ("done", "failed", "cancelled"):
                exit_code = _read_exit_code(target, p)
                tail = _log_tail(target, p)
        seen[record.id] = Observation(status, exit_code, answer, tail)
    return seen

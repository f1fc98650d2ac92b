"""``%rx clean``: free the space finished jobs hold on their targets and here."""

from __future__ import annotations

import json
import shutil
import time

from .jobs import JobPaths
from .registry import cache_home, default_registry
from .resources import format_size_human
from .targets import get_target


def clean(older_than: float) -> str:
    """Remove job folders of jobs that ended more than ``older_than`` seconds ago, and unused blobs.

    A blob is kept while any job that has not ended uses it. Returns a
    one-line account of what was freed.
    """
    registry = default_registry()
    records = registry.recent(None)
    now = time.time()
    by_target: dict[str, list] = {}
    for record in records:
        by_target.setdefault(record.target, []).append(record)
    folders = blobs = freed = 0
    problems = []
    for target_name, target_records in by_target.items():
        try:
            target = get_target(target_name)
            transport = target.transport
        except Exception as exc:
            problems.append(f"{target_name}: {exc}")
            continue
        live = [r for r in target_records if not r.state.is_final]
        for record in target_records:
            ended = record.ended_at or record.submitted_at
            if record.state.is_final and now - ended >= older_than:
                freed += transport.remove_tree(JobPaths(record.workdir, record.id).folder)
                shutil.rmtree(cache_home() / "jobs" / record.id, ignore_errors=True)
                registry.remove(record.id)
                folders += 1
        in_use = set()
        for record in live:
            try:
                spec = json.loads(transport.read_bytes(JobPaths(record.workdir, record.id).job_json))
                in_use.update(f"{digest}.dill" for digest in spec.get("push", {}).values())
            except (FileNotFoundError, ValueError):
                continue
        for workdir in {record.workdir for record in target_records}:
            blobs_dir = JobPaths(workdir, "rx-00000000-000000-0000").blobs_dir
            for name in transport.listdir(blobs_dir):
                if name.endswith(".dill") and name not in in_use:
                    freed += transport.remove_tree(f"{blobs_dir}/{name}")
                    blobs += 1
    summary = (f"removed {folders} job folder{'s' if folders != 1 else ''} and {blobs} blob{'s' if blobs != 1 else ''}"
               f", freeing {format_size_human(freed) if freed else '0 B'}")
    if problems:
        summary += "; could not reach " + "; ".join(problems)
    return summary

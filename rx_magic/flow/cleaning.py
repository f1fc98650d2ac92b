"""``%rx clean``: free the space finished jobs hold on their targets and here."""

from __future__ import annotations

import posixpath
import shutil
import time

from ..model.jobspec import JobSpecError, read_spec
from ..model.local_dirs import cache_home
from ..model.resources import format_size_human
from ..runtime.layout import JobPaths, WorkdirPaths
from ..targets.target import get_target
from .registry import default_registry


def clean(older_than: float) -> str:
    """Remove job folders of jobs that ended more than ``older_than`` seconds ago, and what nothing live uses.

    Blobs and shipped files are kept while any job that has not ended uses
    them. Returns a one-line account of what was freed.
    """
    registry = default_registry()
    now = time.time()
    by_target: dict[str, list] = {}
    for record in registry.recent(None):
        by_target.setdefault(record.target, []).append(record)
    folders = stores = freed = 0
    problems = []
    for target_name, records in by_target.items():
        try:
            transport = get_target(target_name).transport
            for record in records:
                ended = record.ended_at or record.submitted_at
                if record.state.is_final and now - ended >= older_than:
                    freed += transport.remove_tree(JobPaths(record.workdir, record.id).folder)
                    shutil.rmtree(cache_home() / "jobs" / record.id, ignore_errors=True)
                    registry.remove(record.id)
                    folders += 1
            in_use = set()
            for record in records:
                if not record.state.is_final:
                    in_use |= _used_by(transport, JobPaths(record.workdir, record.id))
            for workdir in {record.workdir for record in records}:
                shared = WorkdirPaths(workdir)
                for folder in (shared.blobs_dir, shared.files_dir):
                    for name in transport.listdir(folder):
                        if name not in in_use:
                            freed += transport.remove_tree(posixpath.join(folder, name))
                            stores += 1
        except Exception as exc:  # one unreachable target must not stop the others
            problems.append(f"{target_name} ({exc})")
    summary = (f"removed {folders} job folder{'s' if folders != 1 else ''} and {stores} stored "
               f"input{'s' if stores != 1 else ''}, freeing {format_size_human(freed) if freed else '0 B'}")
    if problems:
        summary += "; could not clean " + "; ".join(problems)
    return summary


def _used_by(transport, paths: JobPaths) -> set[str]:
    """The blob and file names a job's spec refers to."""
    try:
        spec = read_spec(transport.read_bytes(paths.job_json), paths.job_json)
    except (FileNotFoundError, JobSpecError):
        return set()
    return {f"{digest}.dill" for digest in spec.get("push", {}).values()} | set(spec.get("files", {}).values())

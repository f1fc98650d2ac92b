"""``%rx clean``: free the space ended jobs hold on their targets, judged from the folders themselves.

Every configured target is visited, and every target the registry names, so
jobs of other kernels (another notebook, another machine sharing the
workdir) count as much as this kernel's. On each, the job folders say what
is live:

- a job folder is removed once its job ended (``status.json`` final or
  ``exit_code`` present; for an array, every element's end marker or the
  array's own ``exit_code``) more than ``older_than`` seconds ago;
- a blob or shipped file is kept while a job that has not ended refers to
  it, or a submission being staged does;
- anything else in the stores, a ``.part`` upload and a ``.rx/staging-*``
  folder are kept while younger than ``UPLOAD_GRACE``, since a submission in
  another kernel writes its blobs before its job folder appears, and removed
  once older, as left by a session that stopped;
- a hold's folder (``.rx/holds/{id}``) is removed once the hold ended more
  than ``older_than`` seconds ago: its ``ended.json`` says so, or this
  registry saw it end, or its worker's heartbeat (touched every 2 s) stopped
  more than ``max(older_than, STOPPED_BEAT)`` ago. A hold still queued or
  beating, whichever kernel opened it, stays, and so does an ended one whose
  waiting cells a notebook may still send on (for ``UPLOAD_GRACE``).

Only what was removed from a target leaves the registry and the local cache: a job's row once its folder is
gone, a hold's row once its folder is gone and the hold had ended (a live hold's row never goes).
"""

from __future__ import annotations

import json
import posixpath
import shutil
import threading
import time
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..model.jobspec import JobSpecError, read_spec
from ..model.local_dirs import cache_home
from ..model.record import HoldRecord, JobRecord
from ..model.resources import format_size_human
from ..runtime.layout import (
    FINAL_STATES,
    SPEC_FORMAT,
    STAGING_PREFIX,
    JobPaths,
    WorkdirPaths,
    blob_name,
    element_entry,
    is_hold_id,
    is_job_id,
)
from ..targets.config import TargetConfig, load_configs
from ..targets.target import Target, get_target
from ..transport import Transport
from .registry import default_registry

#: How long an unused input, an upload's ``.part`` file or a staging folder is left alone: a submission
#: writes its blobs before its job folder appears, and nothing says which kernel is still sending them.
UPLOAD_GRACE = 3600.0

#: A hold whose worker's heartbeat (touched every 2 s) has not changed for this long has ended, though nothing
#: said so (a worker killed by SIGKILL writes no ``ended.json``); a day, since a suspended batch job beats not.
STOPPED_BEAT = 86400.0

#: A hold whose heartbeat changed this recently is live (its worker touches it every 2 s).
BEATING = 60.0

#: How long ``%rx clean`` waits for a target; one that has not answered by then is reported, not waited for.
VISIT_TIMEOUT = 300.0


@dataclass
class Tally:
    """What the visits removed and kept, and why."""

    removed_jobs: list[str] = field(default_factory=list)
    removed_inputs: int = 0
    removed_stale: int = 0          # .part files and staging folders of sessions that stopped
    removed_holds: int = 0          # folders of holds that ended
    removed_hold_ids: list[str] = field(default_factory=list)   # their rows leave the registry
    live_holds: int = 0
    recent_holds: int = 0           # ended less than older_than ago, or still sending its waiting cells on
    freed: int = 0
    unfinished: list[str] = field(default_factory=list)
    unseen_end: list[str] = field(default_factory=list)    # ended, but this kernel's registry has not seen it
    recent: list[str] = field(default_factory=list)        # ended less than older_than ago
    unreadable: list[str] = field(default_factory=list)
    newer: list[str] = field(default_factory=list)          # job.json of a newer rx_magic
    inputs_in_use: int = 0
    recent_inputs: int = 0
    uploads: int = 0
    listed: dict[str, set[str]] = field(default_factory=dict)    # workdir -> job folders present there
    listed_holds: dict[str, set[str]] = field(default_factory=dict)   # workdir -> hold folders present there
    problems: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            if isinstance(value, dict):
                getattr(self, name).update(value)
            else:
                setattr(self, name, getattr(self, name) + value)


class _OutOfTime(Exception):
    pass


def clean(older_than: float, timeout: float = VISIT_TIMEOUT) -> str:
    """Remove the job folders of jobs that ended more than ``older_than`` seconds ago, and what nothing live uses.

    Visits every configured target and every target in the registry, at the
    same time, for at most ``timeout`` seconds; one that cannot be reached is
    named in the account and stops none of the others. Returns a short
    account of what was removed and what was kept, and why.
    """
    registry = default_registry()
    records = {record.id: record for record in registry.recent(None)}
    holds = {hold.id: hold for hold in registry.holds()}
    configs = load_configs()
    tally = Tally()
    groups: dict[tuple, list[str]] = {}
    for name in sorted({*configs, *(record.target for record in records.values())}):
        if name in configs:
            groups.setdefault(_host_key(configs[name]), []).append(name)
        else:
            tally.problems.append(f"{name} (no longer configured; its jobs stay in the registry)")
    deadline = time.monotonic() + timeout
    visits = []
    for names in groups.values():
        workdirs = {record.workdir for record in records.values() if record.target in names}
        workdirs |= {hold.workdir for hold in holds.values() if hold.target in names}
        visit = _Visit(names, workdirs, records, older_than, deadline, timeout, holds)
        visit.thread.start()
        visits.append(visit)
    for visit in visits:
        visit.thread.join(max(0.0, deadline - time.monotonic()) + 5)
        if visit.thread.is_alive():     # still changing its tally: only say so
            tally.problems.append(f"{', '.join(visit.names)} (no answer within {_duration(timeout)})")
        else:
            tally.add(visit.tally)
    now = time.time()
    gone = set(tally.removed_jobs)
    for record in records.values():     # folders another kernel's clean, or a person, removed already
        listed = tally.listed.get(record.workdir)
        ended = record.ended_at or record.submitted_at
        if listed is not None and record.id not in listed and record.state.is_final \
                and (older_than <= 0 or now - ended >= older_than):
            gone.add(record.id)
    for hold in holds.values():     # an ended hold's folder another kernel's clean, or a person, removed already
        listed = tally.listed_holds.get(hold.workdir)
        if listed is not None and hold.id not in listed and hold.state == "ended" \
                and (older_than <= 0 or now - (hold.ended_at or hold.created) >= older_than):
            tally.removed_hold_ids.append(hold.id)
    for hold_id in set(tally.removed_hold_ids):     # its folder gone: nothing of it is left to list or to use
        if hold_id in holds:
            registry.remove_hold(hold_id)
    for job_id in gone:
        if job_id in records:
            registry.remove(job_id)
        shutil.rmtree(cache_home() / "jobs" / job_id, ignore_errors=True)
    return _summary(tally, older_than)


def _host_key(config: TargetConfig) -> tuple:
    """Targets on the same host share one visit (and so each workdir is cleaned once)."""
    return ("ssh", config.host, config.user, config.port) if config.host else ("local",)


class _Visit:
    """One host's cleaning, in a thread of its own so that a host that does not answer holds up no other."""

    def __init__(self, names: list[str], workdirs: set[str], records: dict[str, JobRecord],
                 older_than: float, deadline: float, timeout: float, holds: dict[str, HoldRecord] | None = None):
        self.names, self.workdirs, self.records = names, workdirs, records
        self.holds = holds or {}
        self.older_than, self.deadline, self.timeout = older_than, deadline, timeout
        self.tally = Tally()
        self.thread = threading.Thread(target=self.run, name=f"rx-clean-{names[0]}", daemon=True)

    def run(self) -> None:
        try:
            targets, workdirs = [], set(self.workdirs)
            for name in self.names:
                try:
                    target = get_target(name)
                    workdirs.add(target.workdir)    # may connect: the first place an unreachable host shows
                    targets.append(target)
                except ConfigError as exc:          # this target's own mistake: its neighbours are still cleaned
                    self.tally.problems.append(f"{name} ({exc})")
            if not targets:
                return
            transport = targets[0].transport
            now = _clock(transport, targets[0])
            for workdir in sorted(workdirs):
                self._check_time()
                self._clean_workdir(transport, workdir, now)
        except _OutOfTime:
            self.tally.problems.append(f"{', '.join(self.names)} (stopped after {_duration(self.timeout)}; "
                                       "run it again to go on)")
        except Exception as exc:  # noqa: BLE001 - in a thread: whatever it was must reach the account, not vanish
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.tally.problems.append(f"{', '.join(self.names)} ({reason})")

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _OutOfTime

    def _remove(self, transport: Transport, path: str) -> None:
        self._check_time()
        self.tally.freed += transport.remove_tree(path)

    def _clean_workdir(self, transport: Transport, workdir: str, now: float) -> None:
        shared = WorkdirPaths(workdir)
        tally = self.tally
        # The stores are listed first and the job folders last: a job folder renamed into place from its
        # staging folder between the listings is then seen in one or the other, and what it uses is kept.
        stores = {folder: transport.listdir_times(folder) for folder in (shared.blobs_dir, shared.files_dir)}
        in_use: set[str] = set()
        for name, mtime in transport.listdir_times(shared.rx_dir).items():
            if name.startswith(STAGING_PREFIX):
                in_use |= self._staging(transport, shared, name, mtime, now)
        entries = transport.listdir_times(workdir)
        present = {name for name in entries if is_job_id(name)}
        tally.listed.setdefault(workdir, set()).update(present)
        for job_id in sorted(present):
            self._check_time()
            try:
                in_use |= self._job_folder(transport, JobPaths(workdir, job_id), entries[job_id], now)
            except FileNotFoundError:   # removed meanwhile (another kernel's clean)
                continue
        self._holds(transport, shared, now)
        for folder, listing in stores.items():
            for name, mtime in sorted(listing.items()):
                path = posixpath.join(folder, name)
                if name.endswith(".part"):
                    if now - mtime >= UPLOAD_GRACE:
                        self._remove(transport, path)
                        tally.removed_stale += 1
                    else:
                        tally.uploads += 1
                elif path in in_use:
                    tally.inputs_in_use += 1
                elif now - mtime < UPLOAD_GRACE:
                    tally.recent_inputs += 1
                else:
                    self._remove(transport, path)
                    tally.removed_inputs += 1
        self._stamps(transport, shared)

    def _stamps(self, transport: Transport, shared: WorkdirPaths) -> None:
        """Remove the runner's stamps (``.rx/verified``) of blobs that are gone: a stamp only names its blob."""
        stamps = transport.listdir_times(shared.verified_dir)
        if not stamps:
            return
        blobs = transport.listdir_times(shared.blobs_dir)
        for name in sorted(stamps):
            self._check_time()
            if blob_name(name) not in blobs:      # its blob was removed (now, or by another kernel's clean)
                self._remove(transport, shared.verified(name))

    def _holds(self, transport: Transport, shared: WorkdirPaths, now: float) -> None:
        """Remove the folders of holds that ended more than ``older_than`` ago; a live one stays, whoever opened it."""
        holds_dir = posixpath.join(shared.rx_dir, "holds")
        present = transport.listdir_times(holds_dir)
        self.tally.listed_holds.setdefault(shared.workdir, set()).update(present)
        for hold_id, mtime in sorted(present.items()):
            if not is_hold_id(hold_id):
                continue
            self._check_time()
            folder = posixpath.join(holds_dir, hold_id)
            inside = transport.listdir_times(folder)
            ended = inside.get("ended.json")
            record = self.holds.get(hold_id)
            if ended is None and now - inside.get("beat", float("-inf")) < BEATING:
                self.tally.live_holds += 1      # its worker beats: live, whatever a registry concluded
                continue
            if ended is None and record is not None and record.state == "ended" and record.workdir == shared.workdir:
                ended = record.ended_at or max([mtime, *inside.values()])
            if ended is None and "ready.json" in inside \
                    and now - inside.get("beat", inside["ready.json"]) >= max(self.older_than, STOPPED_BEAT):
                ended = inside.get("beat", inside["ready.json"])    # its worker stopped beating long ago: killed
            if ended is None:
                self.tally.live_holds += 1
            elif transport.listdir(posixpath.join(folder, "queue")) and now - ended < max(self.older_than,
                                                                                          UPLOAD_GRACE):
                self.tally.recent_holds += 1    # a notebook may still send its waiting cells on
            elif self.older_than <= 0 or now - ended >= self.older_than:
                self._remove(transport, folder)
                self.tally.removed_holds += 1
                self.tally.removed_hold_ids.append(hold_id)
            else:
                self.tally.recent_holds += 1

    def _staging(self, transport: Transport, shared: WorkdirPaths, name: str, mtime: float, now: float) -> set[str]:
        """Remove a staging folder a stopped session left; return what a live one's job will use."""
        folder = posixpath.join(shared.rx_dir, name)
        inside = transport.listdir_times(folder)
        if now - max([mtime, *inside.values()]) >= UPLOAD_GRACE:
            self._remove(transport, folder)
            self.tally.removed_stale += 1
            return set()
        self.tally.uploads += 1
        try:
            staged = JobPaths(shared.workdir, name[len(STAGING_PREFIX):]).staged()
            data = transport.read_bytes(staged.job_json)
        except (ValueError, FileNotFoundError):     # not a job id, not written yet, or renamed meanwhile
            return set()
        try:
            return _references(shared, read_spec(data, staged.job_json))
        except JobSpecError:
            return _references(shared, _newer_spec(data))

    def _job_folder(self, transport: Transport, paths: JobPaths, mtime: float, now: float) -> set[str]:
        """Remove the folder if its job ended long enough ago; return the store paths it still uses."""
        tally, job_id = self.tally, paths.job_id
        record = self.records.get(job_id)
        listing = transport.listdir_times(paths.folder)
        if not listing and not transport.exists(paths.folder):
            raise FileNotFoundError(paths.folder)
        inside = {posixpath.join(paths.folder, name): when for name, when in listing.items()}
        newest = max([mtime, *inside.values()])
        spec, raw, unreadable = None, None, None
        ended = inside.get(paths.exit_code)
        if ended is None:
            try:
                data = transport.read_bytes(paths.job_json)
                spec = read_spec(data, paths.job_json)
            except FileNotFoundError:
                unreadable = "missing"
            except JobSpecError:
                raw = _newer_spec(data)
                unreadable = "newer" if raw is not None else "damaged"
            if spec is not None and spec.get("map"):
                ended = _array_ended(transport, paths, int(spec["map"]["size"]))
            elif paths.status_json in inside:
                ended = _status_ended(transport, paths, inside[paths.status_json])
        if ended is None and record is not None and record.state.is_final:
            # the scheduler's word, recorded here: a job it killed or cancelled writes no ending itself
            ended = record.ended_at or newest
        if ended is None:
            if raw is not None:
                tally.newer.append(job_id)
                return _references(paths, raw)
            if unreadable is not None:
                if now - newest >= max(self.older_than, UPLOAD_GRACE):
                    self._remove(transport, paths.folder)
                    tally.removed_jobs.append(job_id)
                else:
                    tally.unreadable.append(job_id)
                return set()
            tally.unfinished.append(job_id)
            return _references(paths, spec)
        age = now - ended
        if record is not None and not record.state.is_final and age < max(self.older_than, UPLOAD_GRACE):
            tally.unseen_end.append(job_id)     # this kernel may be about to bring its results back
        elif self.older_than <= 0 or age >= self.older_than:
            self._remove(transport, paths.folder)
            tally.removed_jobs.append(job_id)
        else:
            tally.recent.append(job_id)
        return set()


def _clock(transport: Transport, target: Target) -> float:
    """The target's time now, which its files' times are in; this machine's when it cannot say."""
    if target.is_local:
        return time.time()
    result = transport.run(["date", "+%s"], check=False, timeout=30)
    try:
        return float(result.stdout.strip())
    except ValueError:
        return time.time()


def _array_ended(transport: Transport, paths: JobPaths, size: int) -> float | None:
    """When the last element of an array ended, if every one has (one listing of ``elements/``)."""
    ends = {}
    for name, when in transport.listdir_times(paths.elements_dir).items():
        entry = element_entry(name)
        if entry is not None and entry[1]:
            ends[entry[0]] = when
    if all(index in ends for index in range(size)):
        return max(ends.values())
    return None


def _status_ended(transport: Transport, paths: JobPaths, mtime: float) -> float | None:
    """When ``status.json`` says the job ended, if it says so."""
    try:
        status = json.loads(transport.read_bytes(paths.status_json))
    except (ValueError, OSError):   # being replaced, or damaged: it says nothing
        return None
    if not isinstance(status, dict) or status.get("state") not in FINAL_STATES:
        return None
    ended = status.get("ended")
    return float(ended) if isinstance(ended, (int, float)) else mtime


def _newer_spec(data: bytes) -> dict | None:
    """A ``job.json`` in a format newer than this release reads, unvalidated; None for a damaged one."""
    try:
        spec = json.loads(data)
    except ValueError:
        return None
    newer = isinstance(spec, dict) and isinstance(spec.get("format"), int) and spec["format"] > SPEC_FORMAT
    return spec if newer else None


def _references(shared: WorkdirPaths, spec: dict | None) -> set[str]:
    """The blobs and shipped files a job's spec uses, as paths in the stores (read leniently)."""
    if not spec:
        return set()

    def values(key) -> list:
        found = spec.get(key)
        return [value for value in found.values() if isinstance(value, str)] if isinstance(found, dict) else []

    digests = values("push")
    array = spec.get("map")
    if isinstance(array, dict) and isinstance(array.get("values"), str):
        digests.append(array["values"])
    used = {shared.blob(digest) for digest in digests}
    used |= {posixpath.join(shared.files_dir, digest) for digest in values("files")}
    return used


# ----------------------------------------------------------------------------- the account

def _summary(tally: Tally, older_than: float) -> str:
    removed = [_count(len(tally.removed_jobs), "job folder"), _count(tally.removed_inputs, "stored input")]
    if tally.removed_holds and not tally.removed_jobs and not tally.removed_inputs:
        removed = []
    if tally.removed_stale:
        removed.append(_count(tally.removed_stale, "abandoned upload"))
    if tally.removed_holds:
        removed.append(_count(tally.removed_holds, "ended hold's folder").replace("hold's folders", "holds' folders"))
    if tally.removed_jobs or tally.removed_inputs or tally.removed_stale or tally.removed_holds:
        text = f"removed {_listing(removed)}, freeing {format_size_human(tally.freed) if tally.freed else '0 B'}"
    else:
        text = "removed nothing"
    kept = []
    if tally.unfinished:
        kept.append(f"{_count(len(tally.unfinished), 'unfinished job')} ({_ids(tally.unfinished)})")
    if tally.unseen_end:
        kept.append(f"{_count(len(tally.unseen_end), 'job')} just ended whose results this notebook has not "
                    f"collected ({_ids(tally.unseen_end)})")
    if tally.recent:
        kept.append(f"{_count(len(tally.recent), 'job')} ended less than {_duration(older_than)} ago")
    if tally.unreadable:
        kept.append(f"{_count(len(tally.unreadable), 'job folder')} without a readable job.json "
                    f"({_ids(tally.unreadable)}; removed once {_duration(max(older_than, UPLOAD_GRACE))} old)")
    if tally.newer:
        kept.append(f"{_count(len(tally.newer), 'job')} of a newer rx_magic ({_ids(tally.newer)})")
    if tally.inputs_in_use:
        kept.append(f"{_count(tally.inputs_in_use, 'input')} of unfinished jobs")
    if tally.uploads:
        kept.append(_count(tally.uploads, "upload") + " in progress")
    if tally.live_holds:
        kept.append(_count(tally.live_holds, "live hold"))
    if tally.recent_holds:
        kept.append(f"{_count(tally.recent_holds, 'hold')} ended less than {_duration(older_than)} ago "
                    "or with cells still to send on")
    if tally.recent_inputs:
        kept.append(f"{_count(tally.recent_inputs, 'unused input')} less than {_duration(UPLOAD_GRACE)} old, "
                    "which a submission may be sending")
    if kept:
        text += "; kept " + _listing(kept)
    if tally.problems:
        text += "; could not clean " + "; ".join(tally.problems)
    return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _ids(job_ids: list[str], shown: int = 3) -> str:
    more = len(job_ids) - shown
    return ", ".join(sorted(job_ids)[:shown]) + (f" and {more} more" if more > 0 else "")


def _duration(seconds: float) -> str:
    """``7d``, ``1h``, ``90s``: as ``--older-than`` is typed."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

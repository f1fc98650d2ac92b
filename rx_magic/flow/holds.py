"""Holds: one batch job running a warm worker, so that the cells that fit in it skip the queue.

``open_hold(target, resources, idle, name)`` submits one job whose body is ``runtime/worker.py`` on the
hold's folder (``.rx/holds/{id}/``) and returns at once; ``route(plan)`` sends a planned cell to a ready
hold of its target that has room for it (its folder is written as usual, then a ticket dropped in the
hold's queue instead of a scheduler submission); ``release`` asks a hold to end. Everything goes through
files on the target's filesystem: no port, nothing listening. Holds are rows of the registry, so a new
kernel finds them again; their state comes from evidence (``hold_state.look``).
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass

from ..errors import InputError
from ..model.record import HoldRecord
from ..model.resources import Resources, format_size_human, format_walltime
from ..runtime import runtime_snapshot
from ..runtime.layout import HoldPaths, new_hold_id
from ..schedulers import JobScript, gadi
from ..targets.target import Target, get_target
from .hold_state import HoldLook, held_id, look, make_end_notice, wake_worker
from .registry import Registry, default_registry, this_session
from .submit import Plan, check_workdir, install_runtime

#: A hold with nothing to run for this long ends by itself, unless ``--idle`` says otherwise.
DEFAULT_IDLE = 20 * 60


@dataclass
class HoldPlan:
    """A hold worked out and not yet submitted: what ``--dry-run`` shows."""

    target: Target
    hold_id: str
    paths: HoldPaths
    resources: Resources
    idle: float
    name: str
    script: JobScript
    script_text: str

    def report(self) -> str:
        lines = [f"hold {self.hold_id} on target {self.target.name!r}: one {self.target.config.scheduler} job on "
                 f"{self.target.transport.description}, folder {self.paths.folder}",
                 f"resources held: {self.resources.describe() or 'the scheduler defaults'}",
                 f"ends after {format_walltime(int(self.idle))} with nothing to run"]
        rate = su_per_hour(self.target, self.resources)
        if rate is not None:
            lines.append(f"cost: {rate:.4g} SU per hour held" + (
                f", at most {rate * self.resources.walltime / 3600:.4g} SU over its walltime"
                if self.resources.walltime else ""))
        lines += ["", "job script (job.sh):", self.script_text.rstrip()]
        return "\n".join(lines)


def su_per_hour(target: Target, resources: Resources) -> float | None:
    """Service units a hold costs per hour on a site that charges them (``profile = "gadi"``), else None."""
    if target.config.profile != "gadi":
        return None
    return gadi.su_per_hour(resources)


def plan_hold(target_name: str, resources: Resources | None = None, *, idle: float | None = None,
              name: str | None = None) -> HoldPlan:
    """Check a hold's request and render its job script, writing nothing."""
    target = get_target(target_name)
    resources = (resources or Resources()).over(target.config.defaults)
    if target.config.project and not resources.project:
        resources = Resources.from_json({**resources.to_json(), "project": target.config.project})
    if name and not resources.name:
        resources = Resources.from_json({**resources.to_json(), "name": name})
    target.scheduler.check_request(resources)
    idle = DEFAULT_IDLE if idle is None else idle
    if idle <= 0:
        raise InputError(f"--idle {idle:g}s must be more than zero: e.g. --idle 20m")
    hold_id = new_hold_id()
    paths = HoldPaths(target.workdir, hold_id)
    version, _ = runtime_snapshot()
    script = JobScript(job_id=hold_id, folder=paths.folder,
                       runner=posixpath.join(paths.runtime_dir(version), "worker.py"), python=target.config.python,
                       setup=target.config.setup, resources=resources, cwd=paths.folder)
    return HoldPlan(target, hold_id, paths, resources, idle, name or "", script, target.scheduler.render(script))


def open_hold(target_name: str, resources: Resources | None = None, *, idle: float | None = None,
              name: str | None = None, registry: Registry | None = None) -> HoldLook:
    """Submit one batch job that runs a warm worker for ``target_name``; return at once (the hold queued)."""
    plan = plan_hold(target_name, resources, idle=idle, name=name)
    return submit_hold(plan, registry)


def submit_hold(plan: HoldPlan, registry: Registry | None = None) -> HoldLook:
    transport, paths, resources = plan.target.transport, plan.paths, plan.resources
    snapshot = runtime_snapshot()
    check_workdir(transport, paths, snapshot[0])
    install_runtime(transport, paths, snapshot)
    for folder in (paths.folder, paths.queue_dir, paths.taken_dir, paths.cancel_dir):
        transport.makedirs(folder)
    spec = {"hold": plan.hold_id, "target": plan.target.name, "ncpus": resources.ncpus, "mem": resources.mem,
            "walltime": resources.walltime, "idle": plan.idle, "name": plan.name, "created": time.time(),
            "resources": resources.to_json()}
    transport.write_bytes(paths.hold_json, json.dumps(spec).encode())
    transport.write_bytes(paths.job_sh, plan.script_text.encode())
    try:
        scheduler_id = plan.target.scheduler.submit(transport, plan.script)
    except BaseException:
        transport.remove_tree(paths.folder)
        raise
    record = HoldRecord(id=plan.hold_id, target=plan.target.name, scheduler=plan.target.scheduler.name,
                        workdir=paths.workdir, scheduler_id=scheduler_id, resources=json.dumps(resources.to_json()),
                        idle=plan.idle, name=plan.name, session=this_session())
    (registry or default_registry()).add_hold(record)
    return HoldLook(record, "queued")


def find_hold(text: str | None, registry: Registry | None = None, live: bool = True) -> HoldRecord:
    """The hold a user named by a unique part of its id or its name; the newest live one when ``text`` is None."""
    registry = registry or default_registry()
    holds = registry.holds(live_only=live and not text)
    if not text:
        if not holds:
            raise InputError("no hold is open: `%rx hold TARGET` opens one")
        return holds[0]
    matches = [hold for hold in holds if text in (hold.id, hold.name) or hold.id.startswith(text)
               or hold.id.endswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"no hold matches {text!r}: `%rx holds` lists them")
    raise InputError(f"{text!r} matches {len(matches)} holds ({', '.join(h.id for h in matches[:5])}): "
                     "give more of the id")


def list_holds(registry: Registry | None = None, limit: int = 20) -> list[HoldLook]:
    """The newest holds, each looked at now (an unreachable target's shown as last seen)."""
    registry = registry or default_registry()
    seen = []
    for record in registry.holds()[:limit]:
        try:
            seen.append(look(get_target(record.target), record, tickets=True, registry=registry))
        except Exception:   # an unreachable target must not hide the others
            seen.append(HoldLook(record, record.state, reason=record.reason))
    return seen


def release(record: HoldRecord, registry: Registry | None = None) -> HoldLook:
    """Ask a hold to end: a ready worker finishes the cells it runs and ends; a queued hold is cancelled."""
    registry = registry or default_registry()
    target = get_target(record.target)
    seen = look(target, record, registry=registry)
    if seen.state == "ended":
        return seen
    paths = HoldPaths(record.workdir, record.id)
    target.transport.write_bytes(paths.release, b"")
    if seen.state == "queued":      # no worker yet to read it: the batch job goes
        target.scheduler.cancel(target.transport, record.scheduler_id, paths.folder)
        seen.record = registry.update_hold(record.id, state="ended", reason="released", ended_at=time.time())
        seen.state, seen.reason = "ended", "released"
    return seen


# ---------------------------------------------------------------------------- cells sent to holds

def route(plan: Plan, hold: str | None = None, no_hold: bool = False, *, dry_run: bool = False,
          registry: Registry | None = None) -> HoldLook | None:
    """Send ``plan``'s cell to a hold of its target when one is ready and has room: ``plan.dispatch`` is set.

    ``hold`` names one (it must be open and big enough; the cell then waits for room in it); ``no_hold``
    keeps the cell out of holds. A cell that fits in none, while the target has live holds, goes to the
    scheduler and says why in ``plan.warnings`` (one line).
    """
    if no_hold:
        return None
    registry = registry or default_registry()
    target = plan.target
    if hold is not None:
        record = find_hold(hold, registry, live=False)
        if record.target != target.name:
            raise InputError(f"--hold {hold}: hold {record.id} is on target {record.target!r}, not {target.name!r}")
        candidates = [record]
    else:
        candidates = registry.holds(target=target.name, live_only=True)
    if not candidates:
        return None
    if dry_run and not target.transport.connected:
        plan.warnings.append(f"not connected to {target.name!r}: whether a hold has room is seen when submitted")
        return None
    need_cores = plan.resources.ncpus or 1
    reasons = []
    for record in candidates:
        seen = look(target, record, ask_scheduler=False, tickets=True, registry=registry)
        why = _no_room(seen, plan.resources, need_cores, bool(plan.array), waiting=hold is not None)
        if why is None:
            plan.dispatch = lambda plan, seen=seen: queue_to_hold(plan, seen.record, seen.ready)
            if dry_run:
                plan.warnings.append(f"runs in hold {record.id} ({_where(seen)}), not as a new "
                                     f"{target.scheduler.name} job")
            return seen
        if hold is not None:
            raise InputError(f"--hold {hold}: the cell cannot run in hold {record.id}: {why}. Leave out --hold "
                             "to send it to the scheduler")
        reasons.append(f"{record.id} {why}")
    plan.warnings.append(f"no hold on {target.name!r} has room for this cell ({'; '.join(reasons)}): it goes to "
                         f"the {target.scheduler.name} scheduler as a new job")
    return None


def _where(seen: HoldLook) -> str:
    if seen.state != "ready":
        return f"{seen.state}, {seen.cores} cores"
    used, _ = seen.in_use()
    return f"ready on {seen.ready.get('host', '?')}, {max(0, seen.cores - used)} of {seen.cores} cores free"


def _no_room(seen: HoldLook, asked: Resources, need_cores: int, array: bool, waiting: bool) -> str | None:
    """Why the cell cannot run in the hold now (None: it can); ``waiting``: room later is enough."""
    if seen.state == "ended":
        return f"has ended ({seen.said})"
    if seen.state != "ready" and not waiting:
        return "is still queued"
    held = seen.resources
    if need_cores > seen.cores:
        return f"holds {seen.cores} cores, the cell asks {need_cores}"
    if asked.mem and seen.mem and asked.mem > seen.mem:
        return f"holds {format_size_human(seen.mem)} of memory, the cell asks {format_size_human(asked.mem)}"
    if (asked.ngpus or 0) > (held.ngpus or 0):
        return f"holds {held.ngpus or 0} gpus, the cell asks {asked.ngpus}"
    if asked.queue and held.queue and asked.queue != held.queue:
        return f"runs in queue {held.queue}, the cell asks {asked.queue}"
    walltime, started = seen.ready.get("walltime"), seen.ready.get("started")
    if asked.walltime and walltime and started:
        left = started + walltime - time.time()
        if asked.walltime > left:
            return (f"has {format_walltime(max(0, int(left)))} of walltime left, the cell asks "
                    f"{format_walltime(asked.walltime)}")
    if waiting or array:
        return None     # it waits for room; a --map's elements spread over the cores as they free
    used_cores, used_mem = seen.in_use()
    if need_cores > seen.cores - used_cores:
        return f"has {max(0, seen.cores - used_cores)} of {seen.cores} cores free, the cell asks {need_cores}"
    if asked.mem and seen.mem and asked.mem > seen.mem - used_mem:
        return (f"has {format_size_human(max(0, seen.mem - used_mem))} of memory free, the cell asks "
                f"{format_size_human(asked.mem)}")
    return None


def queue_to_hold(plan: Plan, record: HoldRecord, ready: dict | None = None) -> str:
    """Drop the ticket of ``plan``'s written job folder in the hold's queue (atomically, by rename).

    On this machine the ticket names a FIFO the worker writes when the job has ended (the waiting cell blocks on
    it), and the worker is woken through the FIFO its ``ready`` names: no look on either side waits for a timer.
    """
    paths = HoldPaths(record.workdir, record.id)
    transport = plan.target.transport
    ticket = {"ncpus": plan.resources.ncpus or 1, "mem": plan.resources.mem, "cwd": plan.script.cwd or None,
              "elements": plan.array.size if plan.array else 0, "queued": time.time()}
    notice = make_end_notice(plan.target, paths, plan.job_id)
    if notice:
        ticket["end_notice"] = notice
    staging = paths.ticket_staging(plan.job_id)
    transport.write_bytes(staging, json.dumps(ticket).encode())
    transport.rename(staging, paths.queued(plan.job_id))
    wake_worker(plan.target, paths, ready or {})
    return held_id(record.id, plan.job_id)


def state_words(seen: HoldLook) -> str:
    """A hold's state for people: queued (its batch job), ready (host, cores, what runs, cores free), or ended (why)."""
    record = seen.record
    if seen.state == "ended":
        detail = record.reason.partition(": ")[2]
        return f"ended: {seen.said or record.reason}" + (f" ({detail})" if detail else "")
    if seen.state == "ready":
        used, _ = seen.in_use()
        return (f"ready on {seen.ready.get('host', '?')}: {seen.cores} cores"
                + (f", {format_size_human(seen.mem)}" if seen.mem else "")
                + f"; {len(seen.taken)} running, {len(seen.queued)} waiting, {max(0, seen.cores - used)} cores free")
    return f"queued ({record.scheduler} job {record.scheduler_id})"


def cost_words(record: HoldRecord) -> str:
    """What a hold costs on a site that charges service units: per hour, and so far; "" elsewhere."""
    resources = Resources.from_json(json.loads(record.resources or "{}"))
    try:
        rate = su_per_hour(get_target(record.target), resources)
    except Exception:   # a target no longer configured: no rate to say
        rate = None
    if rate is None:
        return ""
    hours = ((record.ended_at or time.time()) - record.created) / 3600
    return f"cost {rate:.4g} SU/h, about {rate * hours:.3g} SU so far"


def describe(seen: HoldLook) -> str:
    """A hold for people, as ``%rx holds`` lists it: id, target, state, name; its cost on a line below."""
    record = seen.record
    line = f"{record.id}  {record.target:<10} {state_words(seen)}" + (f"  [{record.name}]" if record.name else "")
    cost = cost_words(record)
    return line + (f"\n{'':30}{cost}" if cost else "")

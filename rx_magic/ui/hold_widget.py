"""``%rx hold``, ``%rx holds``, ``%rx release``: parsing and wiring, and how a hold shows itself.

A hold shows as text and HTML (not a live widget): its state when shown -- queued, ready (host and
cores, cells running and waiting, cores free) or ended (why) -- the resources it holds and, on a site
that charges service units (``profile = "gadi"``), its cost per hour and so far. ``%rx holds`` looks again.
"""

from __future__ import annotations

import argparse
import html
import json

from ..flow.hold_state import HoldLook
from ..flow.holds import describe, find_hold, list_holds, plan_hold, release, submit_hold
from ..model.resources import Resources, parse_walltime


class HoldView:
    """A hold as a cell's result: one line of text, or a small HTML block."""

    def __init__(self, seen: HoldLook, note: str = ""):
        self.seen, self.note = seen, note

    def __repr__(self) -> str:
        return describe(self.seen) + (f"\n{self.note}" if self.note else "")

    def _repr_html_(self) -> str:
        seen = self.seen
        resources = Resources.from_json(json.loads(seen.record.resources or "{}"))
        colour = {"ready": "#2e7d32", "ended": "#757575"}.get(seen.state, "#ef6c00")
        lines = [f"<b>hold {html.escape(seen.record.id)}</b> on {html.escape(seen.record.target)}: "
                 f"<span style='color:{colour}'>{html.escape(seen.state)}</span>",
                 html.escape(describe(seen).split("  ", 1)[-1].strip()),
                 f"resources held: {html.escape(resources.describe() or 'the scheduler defaults')}"]
        if self.note:
            lines.append(html.escape(self.note))
        return "<div class='rx-hold'>" + "<br>".join(lines) + "</div>"


def add_hold_commands(commands) -> None:
    """The ``hold``, ``holds`` and ``release`` subcommands of ``%rx``'s parser."""
    hold = commands.add_parser("hold")
    hold.add_argument("target")
    for option in ("--mem", "--ncpus", "--ngpus", "--walltime", "--queue", "--project", "--jobfs", "--storage"):
        hold.add_argument(option)
    hold.add_argument("--extra", action="append", default=[])
    hold.add_argument("--idle", default="20m")
    hold.add_argument("--name")
    hold.add_argument("--dry-run", action="store_true")
    commands.add_parser("holds").add_argument("--all", action="store_true")
    commands.add_parser("release").add_argument("id", nargs="?")


def hold_command(args: argparse.Namespace):
    """``%rx hold TARGET ...``: submit one batch job running a worker, and return at once."""
    resources = Resources.parse(mem=args.mem, ncpus=args.ncpus, ngpus=args.ngpus, walltime=args.walltime,
                                queue=args.queue, project=args.project, jobfs=args.jobfs, storage=args.storage,
                                extra=args.extra)
    idle = parse_walltime(args.idle, "--idle")
    plan = plan_hold(args.target, resources, idle=idle, name=args.name)
    if args.dry_run:
        print(plan.report())
        return None
    seen = submit_hold(plan)
    return HoldView(seen, note=f"cells on {args.target!r} that fit run in it once it is ready; "
                               f"`%rx holds` shows it, `%rx release {seen.record.id}` ends it")


def holds_command(args: argparse.Namespace) -> None:
    """``%rx holds``: the holds, each looked at now."""
    shown = list_holds(limit=100 if args.all else 20)
    if not shown:
        print("no holds yet: `%rx hold TARGET` opens one")
        return
    print("\n".join(describe(seen) for seen in shown))


def release_command(args: argparse.Namespace) -> HoldView:
    """``%rx release [ID]``: end a hold cleanly (the newest live one when no ID)."""
    record = find_hold(args.id)
    seen = release(record)
    if seen.state == "ended":
        return HoldView(seen)
    return HoldView(seen, note="asked to end: the cells it runs finish first; cells waiting in it go to the "
                               "scheduler")

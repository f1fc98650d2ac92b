"""``%rx hold``, ``%rx holds``, ``%rx release``: parsing and wiring, and how a hold shows itself.

A hold shows its state -- queued, ready (host and cores, cells running and waiting, cores free) or ended
(why) -- the resources it holds and, on a site that charges service units (``profile = "gadi"``), its
cost per hour and so far. In a front end with widgets ``HoldWidget`` keeps that up to date (a thread looks
at the hold every few seconds until it has ended; stopped at exit); elsewhere ``HoldView`` is text and
HTML as of when it was shown, and ``%rx holds`` looks again.
"""

from __future__ import annotations

import argparse
import atexit
import html
import json
import threading
import weakref

from ..flow.hold_state import HoldLook, look
from ..flow.holds import (cost_words, describe, find_hold, list_holds, plan_hold, release, state_words,
                          submit_hold)
from ..flow.registry import default_registry
from ..targets.target import get_target
from ..model.resources import Resources, parse_walltime


class HoldView:
    """A hold as a cell's result: one line of text, or a small HTML block."""

    def __init__(self, seen: HoldLook, note: str = ""):
        self.seen, self.note = seen, note

    def __repr__(self) -> str:
        return describe(self.seen) + (f"\n{self.note}" if self.note else "")

    def _repr_html_(self) -> str:
        return hold_html(self.seen, self.note)


def hold_html(seen: HoldLook, note: str = "") -> str:
    """The hold as a small HTML block: id and state, the line ``%rx holds`` shows, the resources held."""
    resources = Resources.from_json(json.loads(seen.record.resources or "{}"))
    colour = {"ready": "#2e7d32", "ended": "#757575"}.get(seen.state, "#ef6c00")
    lines = [f"<b>hold {html.escape(seen.record.id)}</b> on {html.escape(seen.record.target)}: "
             f"<span style='color:{colour}'>{html.escape(seen.state)}</span>",
             html.escape(state_words(seen)),
             f"resources held: {html.escape(resources.describe() or 'the scheduler defaults')}"]
    cost = cost_words(seen.record)
    if cost:
        lines.append(html.escape(cost))
    if note:
        lines.append(html.escape(note))
    return "<div class='rx-hold'>" + "<br>".join(lines) + "</div>"


#: Seconds between two looks at a hold by its widget: while it waits in the queue, and once it is ready.
LOOK_QUEUED, LOOK_READY = 2.0, 5.0


class HoldWidget:
    """A hold's live view: ``ipywidgets.HTML`` that a thread of its own refreshes until the hold has ended.

    The thread looks at the hold (its folder and, while it is not ready, its batch job) every
    ``LOOK_QUEUED`` seconds while it is queued and every ``LOOK_READY`` once ready; it stops when the hold
    has ended, on ``stop()``, or at interpreter exit. An unreachable target keeps the last state shown.
    """

    def __init__(self, seen: HoldLook, note: str = ""):
        import ipywidgets
        self.seen, self.note = seen, note
        self.html = ipywidgets.HTML(hold_html(seen, note))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"rx_magic hold {seen.record.id}", daemon=True)
        _live.add(self)
        self._thread.start()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.html._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        return {**data, "text/plain": describe(self.seen), "text/html": hold_html(self.seen, self.note)}, metadata

    def _watch(self) -> None:
        while not self._stopping.wait(LOOK_READY if self.seen.state == "ready" else LOOK_QUEUED):
            try:
                record = default_registry().get_hold(self.seen.record.id)
                self.seen = look(get_target(record.target), record, tickets=True)
            except Exception:   # unreachable for now: what was last seen stands
                continue
            if self.seen.state == "ended":
                self.note = ""
            self.html.value = hold_html(self.seen, self.note)
            if self.seen.state == "ended":
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


_live: weakref.WeakSet[HoldWidget] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for widget in list(_live):
        widget.stop(timeout=1.0)


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


def hold_command(args: argparse.Namespace, live: bool = False):
    """``%rx hold TARGET ...``: submit one batch job running a worker, and return at once (``live``: a widget
    that follows it)."""
    resources = Resources.parse(mem=args.mem, ncpus=args.ncpus, ngpus=args.ngpus, walltime=args.walltime,
                                queue=args.queue, project=args.project, jobfs=args.jobfs, storage=args.storage,
                                extra=args.extra)
    idle = parse_walltime(args.idle, "--idle")
    plan = plan_hold(args.target, resources, idle=idle, name=args.name)
    if args.dry_run:
        print(plan.report())
        return None
    seen = submit_hold(plan)
    note = (f"cells on {args.target!r} that fit run in it once it is ready; `%rx holds` shows it, "
            f"`%rx release {seen.record.id}` ends it")
    return HoldWidget(seen, note) if live else HoldView(seen, note)


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

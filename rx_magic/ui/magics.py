"""``%%remote`` and ``%rx``: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import InputError, PullError, TransportError
from ..flow.cleaning import clean
from ..flow.hold_state import held_in
from ..flow.holds import route
from ..flow.job import Job
from ..flow.kernel_state import redo_after_job
from ..flow.pull import replay_outputs
from ..flow.registry import default_registry, this_session
from ..flow.submit import plan_cell, submit_plan
from ..flow.watch import stop_monitors
from ..model.resources import Resources, parse_walltime
from ..model.states import State
from ..targets.checks import check_target, format_checklist
from ..targets.config import load_configs
from .background import background_jobs
from .comm_pump import pump_for
from .hold_widget import add_hold_commands, hold_command, holds_command, release_command
from .terminal import print_job_line
from .widget import JobsTable, JobWidget, front_end_shows_widgets, full_log

def split_line(line: str) -> list[str]:
    """The magic line's words, split once as a shell splits them (``shlex``): quotes group words and go.

    ``--map NAME=EXPR`` is the one exception: EXPR is Python, not shell words, so it is taken as
    written up to the next option (``--map x=[1, 2, 3]`` needs no quotes); a NAME=EXPR quoted
    whole (``--map 'x=[1, 2]'``) loses its quotes. ``--extra``'s value is a directive that may
    itself start with a dash (``--extra -Nfit``, ``--extra '--qos=high'``): it is always its value.
    """
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    starts: list[int] = []      # where each word starts in the line
    read_to = 0
    try:
        while True:
            word = lexer.get_token()
            if word is None:
                break
            starts.append(len(line) - len(line[read_to:].lstrip()))
            words.append(word)
            read_to = lexer.instream.tell()
    except ValueError as exc:
        raise UsageError(f"%%remote {line.strip()}: {exc} (a quote is not closed)") from None
    split: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--map" or word.startswith("--map="):
            following = next((later for later in range(index + 1, len(words))
                              if re.match(r"--[A-Za-z]", words[later])), len(words))
            start = starts[index] + len("--map=") if word != "--map" else (
                starts[index + 1] if index + 1 < len(words) else len(line))
            end = starts[following] if following < len(words) else len(line)
            value = line[start:end].strip()
            if value[:1] in ("'", '"') and len(shlex.split(value)) == 1:
                value = shlex.split(value)[0]
            split += ["--map", value] if value else ["--map"]
            index = following
            continue
        if word == "--extra" and index + 1 < len(words):     # its value is a directive: -l wd, --qos=high
            split.append(f"--extra={words[index + 1]}")
            index += 2
            continue
        split.append(word)
        index += 1
    return split


def _print_array_logs(job: Job) -> None:
    import sys
    for stream, out in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        text = job.log(stream)
        if text:
            out.write(text)
            out.flush()


def _names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _age(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _note(message: str) -> None:
    print(f"rx_magic: {message}", file=sys.stderr)


@magics_class
class RemoteMagics(Magics):
    """Run cells as jobs on other machines and manage those jobs."""

    @magic_arguments()
    @argument("target", nargs="?", default="local",
              help="The target to run on, as named in targets.toml; `local` (this machine) when left out.")
    @argument("--mem", help="Memory for the job, e.g. 512MB, 8GB, 1.5GB (binary units, as PBS and Slurm read them).")
    @argument("--ncpus", "--cpus", dest="ncpus", help="Number of CPU cores for the job.")
    @argument("--ngpus", "--gpus", dest="ngpus", help="Number of GPUs for the job.")
    @argument("--walltime", "--time", dest="walltime",
              help="Longest the job may run: HH:MM:SS, or 90m, 2h, 1h30m; the job is stopped after it.")
    @argument("--queue", "--partition", dest="queue", help="The scheduler's queue (PBS) or partition (Slurm).")
    @argument("--project", "--account", dest="project", help="The project (PBS) or account (Slurm) to charge.")
    @argument("--jobfs", help="Node-local disk for the job (PBS jobfs), e.g. 10GB.")
    @argument("--storage", help="File systems the job needs mounted (Gadi), e.g. scratch/a56+gdata/a56.")
    @argument("--name", help="A name for the job, shown by the scheduler.")
    @argument("--extra", action="append", default=[],
              help="A raw scheduler directive passed through as written; repeat for several.")
    @argument("--push", action="append",
              help="Names to send even though the cell does not visibly read them (comma-separated).")
    @argument("--pull", action="append",
              help="Bring back only these names (comma-separated); by default every name the cell binds.")
    @argument("--no-pull", action="store_true", help="Bring back no variables; outputs and errors still show.")
    @argument("--files", action="append", default=[],
              help="A file or folder, relative to the notebook, to send into the job's working folder "
                   "(only what changed since the last job is sent); repeat for several.")
    @argument("--map", metavar="NAME=EXPR",
              help="Run the cell once per value of EXPR (evaluated here) with NAME bound to it, as one job "
                   "array (PBS -J, Slurm --array, a pool of processes on direct); resources are per element. "
                   "Each pulled name comes back as a list in EXPR's order, with None where an element failed.")
    @argument("--hold", metavar="ID",
              help="Run in this hold (`%%rx holds` lists them), waiting there for room; by default a cell runs "
                   "in a ready hold of its target that has room for it, else as a new scheduler job.")
    @argument("--no-hold", action="store_true",
              help="Submit a new scheduler job even when a hold of the target has room for the cell.")
    @argument("--dry-run", action="store_true",
              help="Show what would be sent and the job script, and submit nothing.")
    @argument("--bg", action="store_true",
              help="Return at once and run the job in the background; its variables and outputs arrive "
                   "just before the next cell that runs after it ends.")
    @cell_magic
    def remote(self, line: str, cell: str):
        """Run this cell as a job on TARGET and bring its variables back.

        The names the cell reads are sent with it; the names it assigns come
        back into the notebook when the job ends, with its printed output,
        figures and, if it fails, its traceback. Interrupting the cell stops
        the waiting, not the job: it goes on in the background, as with --bg.
        """
        __tracebackhide__ = True
        args = self.remote.parser.parse_args(split_line(line))
        code = self.shell.transform_cell(cell)
        try:
            resources = Resources.parse(
                mem=args.mem, ncpus=args.ncpus, ngpus=args.ngpus, walltime=args.walltime, queue=args.queue,
                project=args.project, jobfs=args.jobfs, storage=args.storage, name=args.name, extra=args.extra)
            plan = plan_cell(code, args.target, namespace=self.shell.user_ns, resources=resources,
                             push=_names(args.push) or (), pull=_names(args.pull), no_pull=args.no_pull,
                             source=cell, header=(f"%%remote {line}".rstrip(),), first_line=2, files=args.files,
                             dry_run=args.dry_run, map=args.map)
            route(plan, hold=args.hold, no_hold=args.no_hold, dry_run=args.dry_run)
        except InputError as exc:
            raise UsageError(str(exc)) from None
        if args.dry_run:     # the report lists the notes itself
            print(plan.report())
            return None
        for warning in plan.warnings:
            _note(warning)
        try:
            job = submit_plan(plan)
        except InputError as exc:   # found only once connected (an unsafe workdir): nothing was submitted
            raise UsageError(str(exc)) from None
        held = [f"not sent: {name} ({why})" for name, why in plan.capture.held_back.items()]
        if args.bg:
            return self._in_background(job, held)
        return self._wait_and_pull(job, held)

    def _in_background(self, job: Job, notes=(), view=None, announce: bool = True):
        """Watch ``job`` from its target's monitor; show its widget (``view``, or a new one) unless shown already."""
        new = view is None
        view = view or JobWidget(job, notes=list(notes))
        background_jobs(self.shell).adopt(job, view)
        if front_end_shows_widgets(self.shell):
            if new:
                from IPython.display import display
                view.display_handle = display(view, display_id=True)
        elif announce:
            _note(f"job {job.id} runs in the background on {job.record.target}; its results arrive before "
                  f"the next cell that runs after it ends. `%rx jobs` lists it")
        return None

    def _wait_and_pull(self, job: Job, notes=()):
        __tracebackhide__ = True
        view = pump = None
        if front_end_shows_widgets(self.shell):
            from IPython.display import display
            # the cell's stream shows the job's output as it comes: the widget shows no second copy
            view = JobWidget(job, notes=list(notes), echoed=True)
            view.display_handle = display(view, display_id=True)
            pump = pump_for(self.shell)

        def each_round():
            view.refresh(job.status)
            if pump is not None:
                pump.pump()

        try:
            job.wait(echo=True, poll_interval=0.5 if view else 1.0, each_round=each_round if view else None)
        except KeyboardInterrupt:
            if view is not None:    # nothing echoes the output any more: the widget's tail shows it
                view.echoed = False
            self._in_background(job, view=view or JobWidget(job, notes=list(notes)), announce=False)
            _note(f"stopped waiting: job {job.id} goes on in the background, and its results arrive before the "
                  f"next cell that runs after it ends. `%rx attach {job.id}` waits for it here; "
                  f"`%rx cancel {job.id}` stops it.")
            return None
        finally:
            if pump is not None:
                pump.close()
        if view is not None:
            view.refresh(job.status)
        try:
            return self._pull_and_show(job, view)
        finally:
            if view is not None:    # the live widget becomes the job's static record
                view.renew_display()

    def _pull_and_show(self, job: Job, view):
        __tracebackhide__ = True
        try:
            job.pull(self.shell.user_ns, raise_error=False)
        except TransportError as exc:
            raise UsageError(f"job {job.id} ended {job.state}, but its results could not be fetched ({exc}); "
                             f"nothing was changed here. `%rx attach {job.id}` tries again") from None
        except PullError as exc:
            raise UsageError(f"job {job.id}: {exc}") from None
        if job.record.elements:     # an array's printed output, element by element, once it has ended
            _print_array_logs(job)
        redo_warnings = redo_after_job(self.shell, job)
        # the last expression's value shown where it came, by this kernel's displayhook (Out[n], `_`)
        replay_outputs(job.results.outputs, job.results.result, show=self.shell.displayhook)
        for warning in [*job.warnings, *redo_warnings]:
            _note(warning)
        if job.notebook_path and job.state is not State.DONE:
            _note(f"the cell and its outputs are saved in {job.notebook_path}")
        if view is not None:
            _show_pulled(view, job)
        else:     # a terminal: one line says how the job ended
            print_job_line(job)
        job.raise_for_state()
        return None

    @line_magic
    def rx(self, line: str):
        """Manage rx_magic jobs.

        %rx jobs [--all]                 recent jobs (all with --all)
        %rx attach [ID]                  wait for a job and pull its results here (the newest when no ID)
        %rx log [ID] [--stderr]          a job's printed output so far
        %rx cancel [ID]                  stop a job (this notebook's only unfinished one when no ID)
        %rx clean [--older-than 7d]      remove finished job folders, and blobs no live job uses
        %rx targets                      the configured targets and where each came from
        %rx check [TARGET]               TARGET's connection and environment, ok/FAIL with fixes
        %rx stop                         stop watching background jobs here (the jobs go on)
        %rx hold TARGET [--ncpus --mem --ngpus --walltime --queue --project --jobfs --storage --extra, as for %%remote] [--idle 20m] [--name N] [--dry-run]  submit one batch job running a warm worker and return at once: cells on TARGET that fit in it run there without queueing; it ends after --idle with nothing to run
        %rx holds [--all]                the holds: queued, ready (host, cores) or ended (why)
        %rx release [ID]                 end a hold cleanly (the newest open one when no ID)

        ID may be a job's full id or any unique start or end of it.
        """
        __tracebackhide__ = True
        try:
            args = _rx_parser().parse_args(shlex.split(line))
        except InputError as exc:
            raise UsageError(f"{exc}\n{inspect.cleandoc(self.rx.__doc__)}") from None
        except SystemExit:      # `%rx COMMAND -h` printed that command's usage
            return None
        try:
            return getattr(self, f"_rx_{args.command}")(args)
        except InputError as exc:
            raise UsageError(str(exc)) from None

    def _rx_jobs(self, args):
        records = default_registry().recent(None if args.all else 20)
        shown = front_end_shows_widgets(self.shell)
        if not records and not shown:
            print("no jobs yet")
            return
        here = this_session()
        lines, rows = [f"{'job':<23}  {'target':<10} {'state':<9} {'age':>4}  cell"], []
        for record in records:
            job = Job(record)
            if not record.state.is_final:
                try:
                    job.refresh()
                except Exception as exc:  # an unreachable target must not hide the others
                    _note(f"could not check {record.id}: {exc}")
            record = job.record
            mark = "" if record.session == here else "  (from another kernel)"
            held = held_in(record.scheduler_id)
            mark = f"  ({held})" + mark if held else mark
            lines.append(f"{record.id}  {record.target:<10} {record.state.value:<9} {_age(record.age):>4}  "
                         f"{record.first_line[:60]}{mark}")
            if record.reason and record.state is not State.DONE:
                lines.append(f"{'':25}{record.reason[:200]}")
            rows.append({"id": record.id, "state": record.state.value, "target": record.target,
                         "age": _age(record.age), "first_line": record.first_line[:80],
                         "reason": record.reason[:200], "mine": record.session == here,
                         "submitted_at": record.submitted_at})
        if not shown:
            print("\n".join(lines))
            return
        from IPython.display import display
        display(_jobs_panel(self, rows, "\n".join(lines) if rows else "no jobs yet"))

    def _rx_attach(self, args):
        __tracebackhide__ = True
        job = find_job(args.id)
        background_jobs(self.shell).forget(job.id)
        return self._wait_and_pull(job)

    def _rx_stop(self, args):
        background = background_jobs(self.shell)
        waiting = background.job_ids
        monitors, jobs = stop_monitors()
        for job_id in waiting:
            background.forget(job_id)
        print(f"stopped {monitors} monitor{'' if monitors == 1 else 's'} watching {jobs} job{'' if jobs == 1 else 's'}; "
              "the jobs go on. `%rx attach ID` brings one's results here")

    def _rx_log(self, args):
        job = find_job(args.id)
        text = job.log("stderr" if args.stderr else "stdout")
        print(text, end="" if text.endswith("\n") or not text else "\n")

    def _rx_cancel(self, args):
        job = find_job(args.id) if args.id else _only_unfinished_job_here()
        if job.refresh().is_final:
            print(f"{job.id} already ended: {job.state}")
            return
        job.cancel()
        state = job.wait(timeout=15)
        print(f"{job.id}: {state}" if state.is_final else f"{job.id}: cancel sent; it is still {state}")

    def _rx_clean(self, args):
        print(clean(parse_walltime(args.older_than, "--older-than") if args.older_than != "0" else 0))

    def _rx_targets(self, args):
        configs = sorted(load_configs().items())
        width = max(len(config.host or "this machine") for _, config in configs)
        named = max(len(name) for name, _ in configs)
        for name, config in configs:
            where = config.host or "this machine"
            print(f"{name:<{named}}  {config.scheduler:<7} on {where:<{width}}  workdir {config.workdir}  "
                  f"({config.source})")

    def _rx_check(self, args):
        print(format_checklist(args.target, check_target(args.target)))

    def _rx_hold(self, args):
        return hold_command(args, live=front_end_shows_widgets(self.shell))

    def _rx_holds(self, args):
        holds_command(args)

    def _rx_release(self, args):
        return release_command(args)


class _Parser(argparse.ArgumentParser):
    """argparse that raises its complaint instead of printing it and exiting; ``%rx`` adds its own help."""

    def error(self, message: str):
        raise InputError(f"{self.prog}: {message}")


def _rx_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%rx", add_help=False)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("jobs").add_argument("--all", action="store_true")
    commands.add_parser("attach").add_argument("id", nargs="?")
    log = commands.add_parser("log")
    log.add_argument("id", nargs="?")
    log.add_argument("--stderr", action="store_true")
    commands.add_parser("cancel").add_argument("id", nargs="?")
    commands.add_parser("clean").add_argument("--older-than", default="7d")
    commands.add_parser("targets")
    commands.add_parser("stop")
    commands.add_parser("check").add_argument("target", nargs="?", default="local")
    add_hold_commands(commands)
    return parser


def _show_pulled(view, job: Job) -> None:
    """After a blocking pull: the names that came back, those that did not and why, the cell's error."""
    results = job.results
    error = ""
    if results is not None and results.error and results.error.get("type"):
        error = f"{results.error['type']}: {results.error.get('message', '')}"
    pulled = results is not None and job.has_values      # a job array pulls what its elements that ended done made
    names = list(results.values) + list(results.modules) if pulled else []
    if pulled and not names:
        arrival = "the cell assigned nothing to pull"
    else:
        arrival = "pulled into the notebook" if pulled else "nothing pulled"
    view.show_results(names, job.warnings, error=error, arrival=arrival)


def _jobs_panel(magics: RemoteMagics, rows: list[dict], text: str):
    """The ``%rx jobs`` table above an output area where its buttons show a job's widget or log."""
    import ipywidgets

    out = ipywidgets.Output()

    def on_action(action: str, job_id: str) -> None:
        with out:
            try:
                job = find_job(job_id)
                if action == "attach":
                    magics._in_background(job)
                elif action == "log":
                    print(full_log(job))
                elif action == "cancel":
                    job.cancel()
                    state = job.wait(timeout=10)
                    table.update_row(job.id, state=state.value, reason=job.record.reason[:200])
                    print(f"{job.id}: {state}" if state.is_final else f"{job.id}: cancel sent; it is still {state}")
            except Exception as exc:    # a button must not take the kernel down
                print(f"rx_magic: {action} {job_id} failed: {exc}")

    table = JobsTable(rows, text, on_action=on_action)
    return _JobsPanel(table, out)


class _JobsPanel:
    """Shows the jobs table and its output area as one display; text and HTML where widgets do not render."""

    def __init__(self, table, out):
        import ipywidgets
        self.table, self.out = table, out
        self.box = ipywidgets.VBox([table, out])

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        data = dict(data)
        data["text/plain"] = self.table.text
        data["text/html"] = self.table.summary_html()
        return data, metadata


def _only_unfinished_job_here() -> Job:
    """``%rx cancel`` without an id: the one job this kernel submitted that has not ended, else say which to name."""
    registry = default_registry()
    here = this_session()
    unfinished = []
    for record in registry.recent(None):
        if record.session == here and not record.state.is_final:
            job = Job(record, registry)
            try:
                if job.refresh().is_final:
                    continue
            except Exception:   # an unreachable target: its job may still run, so it counts
                pass
            unfinished.append(job)
    if len(unfinished) == 1:
        return unfinished[0]
    if not unfinished:
        raise InputError("no job this notebook submitted is still running; `%rx cancel ID` stops another "
                         "(`%rx jobs` lists them)")
    shown = ", ".join(job.id for job in unfinished[:5]) + (", ..." if len(unfinished) > 5 else "")
    raise InputError(f"this notebook has {len(unfinished)} unfinished jobs ({shown}): "
                     "name the one to stop, `%rx cancel ID`")


def find_job(text: str | None) -> Job:
    """The job a user named by its id, a unique part of it, or (None) the newest."""
    registry = default_registry()
    if not text:
        records = registry.recent(1)
        if not records:
            raise InputError("there are no jobs yet")
        return Job(records[0], registry)
    matches = registry.find(text.strip())
    if len(matches) == 1:
        return Job(matches[0], registry)
    if not matches:
        raise InputError(f"no job matches {text!r}: `%rx jobs` lists them")
    shown = ", ".join(record.id for record in matches[:5])
    raise InputError(f"{text!r} matches {len(matches)} jobs ({shown}{', ...' if len(matches) > 5 else ''}): "
                     "give more of the id")


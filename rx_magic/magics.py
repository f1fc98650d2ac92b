"""``%%remote`` and ``%rx``: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import shlex
import os
import socket
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .errors import InputError
from .jobs import Job
from .registry import default_registry
from .resources import Resources, parse_walltime
from .results import replay_outputs
from .states import State
from .submission import plan_cell, submit_plan


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
    @argument("--dry-run", action="store_true",
              help="Show what would be sent and the job script, and submit nothing.")
    @cell_magic
    def remote(self, line: str, cell: str):
        """Run this cell as a job on TARGET and bring its variables back.

        The names the cell reads are sent with it; the names it assigns come
        back into the notebook when the job ends, with its printed output,
        figures and, if it fails, its traceback. Interrupting the cell stops
        the waiting, not the job: `%rx attach ID` picks it up again.
        """
        __tracebackhide__ = True
        args = parse_argstring(self.remote, line)
        code = self.shell.transform_cell(cell)
        try:
            resources = Resources.parse(
                mem=args.mem, ncpus=args.ncpus, ngpus=args.ngpus, walltime=args.walltime, queue=args.queue,
                project=args.project, jobfs=args.jobfs, storage=args.storage, name=args.name, extra=args.extra)
            plan = plan_cell(code, args.target, namespace=self.shell.user_ns, resources=resources,
                             push=_names(args.push) or (), pull=_names(args.pull), no_pull=args.no_pull,
                             source=cell, header=(f"%%remote {line}".rstrip(),), first_line=2, files=args.files)
        except InputError as exc:
            raise UsageError(str(exc)) from None
        for warning in plan.warnings:
            _note(warning)
        if args.dry_run:
            print(plan.report())
            return None
        job = submit_plan(plan)
        return self._wait_and_pull(job)

    def _wait_and_pull(self, job: Job):
        __tracebackhide__ = True
        try:
            job.wait(echo=True)
        except KeyboardInterrupt:
            _note(f"stopped waiting; job {job.id} goes on. `%rx attach {job.id}` brings its results "
                  f"here when it ends; `%rx cancel {job.id}` stops it.")
            return None
        job.pull(self.shell.user_ns, raise_error=False)
        result = replay_outputs(job.results.outputs)
        for warning in job.warnings:
            _note(warning)
        if job.notebook_path and job.state is not State.DONE:
            _note(f"the cell and its outputs are saved in {job.notebook_path}")
        job.raise_for_state()
        return result

    @line_magic
    def rx(self, line: str):
        """Manage rx_magic jobs.

        %rx jobs [--all]                 recent jobs (all with --all)
        %rx attach [ID]                  wait for a job and pull its results here (the newest when no ID)
        %rx log [ID] [--stderr]          a job's printed output so far
        %rx cancel ID                    stop a job
        %rx clean [--older-than 7d]      remove finished job folders, and blobs no live job uses
        %rx targets                      the configured targets and where each came from

        ID may be a job's full id or any unique start or end of it.
        """
        __tracebackhide__ = True
        parser = _rx_parser()
        try:
            args = parser.parse_args(shlex.split(line))
        except SystemExit:
            raise UsageError(f"usage: {parser.format_usage().strip()}\n{self.rx.__doc__}") from None
        try:
            return getattr(self, f"_rx_{args.command}")(args)
        except InputError as exc:
            raise UsageError(str(exc)) from None

    def _rx_jobs(self, args):
        records = default_registry().recent(None if args.all else 20)
        if not records:
            print("no jobs yet")
            return
        here = f"{os.getpid()}@{socket.gethostname()}"
        for record in records:
            job = Job(record)
            if not record.state.is_final:
                try:
                    job.refresh()
                except Exception as exc:  # an unreachable target must not hide the others
                    _note(f"could not check {record.id}: {exc}")
            record = job.record
            mark = "" if record.session == here else "  (from another kernel)"
            print(f"{record.id}  {record.target:<10} {record.state.value:<9} {_age(record.age):>4}  "
                  f"{record.first_line[:60]}{mark}")
            if record.reason and record.state is not State.DONE:
                print(f"{'':25}{record.reason[:200]}")

    def _rx_attach(self, args):
        __tracebackhide__ = True
        return self._wait_and_pull(find_job(args.id))

    def _rx_log(self, args):
        job = find_job(args.id)
        text = job.log("stderr" if args.stderr else "stdout")
        print(text, end="" if text.endswith("\n") or not text else "\n")

    def _rx_cancel(self, args):
        job = find_job(args.id)
        if job.refresh().is_final:
            print(f"{job.id} already ended: {job.state}")
            return
        job.cancel()
        state = job.wait(timeout=15)
        print(f"{job.id}: {state}" if state.is_final else f"{job.id}: cancel sent; it is still {state}")

    def _rx_clean(self, args):
        from .cleaning import clean
        print(clean(parse_walltime(args.older_than, "--older-than") if args.older_than != "0" else 0))

    def _rx_targets(self, args):
        from .targets import load_configs
        for name, config in sorted(load_configs().items()):
            where = config.host or "this machine"
            print(f"{name:<12} {config.scheduler:<7} on {where:<20} workdir {config.workdir}  ({config.source})")


def _rx_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%rx", add_help=False)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("jobs").add_argument("--all", action="store_true")
    commands.add_parser("attach").add_argument("id", nargs="?")
    log = commands.add_parser("log")
    log.add_argument("id", nargs="?")
    log.add_argument("--stderr", action="store_true")
    commands.add_parser("cancel").add_argument("id")
    commands.add_parser("clean").add_argument("--older-than", default="7d")
    commands.add_parser("targets")
    return parser


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


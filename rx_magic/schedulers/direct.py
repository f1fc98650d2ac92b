"""The direct scheduler: the job is a detached process in its own session.

It survives the kernel (and, over SSH, the connection) dying. The runner's
supervisor enforces walltime and memory, since no batch system does.

On this machine, a target without setup lines starts the runner straight
from the kernel (``start_now``) rather than through ``job.sh`` and the
shells that detach it: the same program, folder, working folder, clean
environment, umask and log, in a session of its own, with the runner's
compiled code (``__pycache__``) instead of its source compiled anew.
"""

from __future__ import annotations

import _thread
import os
import shlex
import subprocess

from ..errors import SchedulerError
from ..model.states import SchedulerState, State
from ..transport import LocalTransport, Transport
from ..transport.local import job_environment
from .base import JobScript, Scheduler, render_body


class DirectScheduler(Scheduler):
    name = "direct"

    def render(self, script: JobScript) -> str:
        # a job array's elements run from one pool process, as many at a time as there are cores
        return (f"#!/bin/bash\n# rx_magic job {script.job_id} (direct)\n"
                + render_body(script, pool=bool(script.elements)))

    def submit(self, transport: Transport, script: JobScript) -> str:
        # a job's runner.py only: a hold's worker.py, and a cell sent on from a hold (no runner), go through job.sh
        if isinstance(transport, LocalTransport) and not script.setup and script.runner.endswith("/runner.py"):
            pid = start_now(script)
            if pid is not None:
                return pid
        job_sh, log = shlex.quote(script.job_sh), shlex.quote(script.scheduler_log)
        # umask 077: the log's redirection creates it, under the login shell's umask otherwise (022: world-readable)
        detach = (f"umask 077; if command -v setsid >/dev/null 2>&1; then setsid bash {job_sh} </dev/null >>{log} 2>&1 &"
                  f" else nohup bash {job_sh} </dev/null >>{log} 2>&1 & fi; echo $!")
        argv = ["bash", "-c", detach]
        if isinstance(transport, LocalTransport):  # a clean environment, as over ssh: the kernel's own stays here
            argv = ["env", "-i", *(f"{name}={value}" for name, value in job_environment().items()), *argv]
        result = transport.run(argv, check=False, timeout=60)
        pid = result.stdout.strip()
        if result.returncode != 0 or not pid.isdigit():
            raise SchedulerError(f"could not start job {script.job_id} on {transport.description}:\n{result.tail()}")
        return pid

    def query(self, transport: Transport, jobs: dict[str, str]) -> dict[str, SchedulerState]:
        if not jobs:
            return {}
        pids = [pid for pid in jobs if pid.isdigit()]
        alive: dict[str, str] = {}
        if pids:
            result = transport.run(["ps", "-ww", "-o", "pid=,args=", "-p", ",".join(pids)], check=False, timeout=60)
            # -ww: without a terminal ps may cut args at 80 columns, hiding the folder.
            # ps exits 1, silently, when none of the pids exists; anything else (killed, an error, a shell
            # that could not start it) says nothing about the jobs, and must not read as "all gone"
            if result.returncode not in (0, 1) or (result.returncode == 1 and (result.stdout.strip()
                                                                              or result.stderr.strip())):
                raise SchedulerError(f"could not list processes on {transport.description} "
                                     f"(ps exited {result.returncode}): {result.tail(3) or 'no output'}")
            for line in result.stdout.splitlines():
                pid, _, args = line.strip().partition(" ")
                alive[pid] = args
        states = {}
        for pid, folder in jobs.items():
            # a pid is reused once its process ends: only ours mention the job folder
            ours = pid in alive and folder in alive[pid]
            states[pid] = SchedulerState(State.RUNNING if ours else None)
        return states

    def end_notice(self, transport: Transport, scheduler_id: str, folder: str) -> int | None:
        """On this machine, a pidfd of the job's process (Linux): it becomes readable the moment the runner exits,
        after it wrote the job's ending, so a waiting cell notices the end at once instead of at its next look.
        Over SSH, the transport's own notice (``Transport.end_notice``: a session that watches the process there and
        says when it ends, within 20 ms, one way across the link)."""
        if not isinstance(transport, LocalTransport):
            return transport.end_notice(scheduler_id, folder) if scheduler_id.isdigit() else None
        if not scheduler_id.isdigit() or not hasattr(os, "pidfd_open"):
            return None
        try:
            notice = os.pidfd_open(int(scheduler_id))
        except OSError:         # already gone, or not allowed
            return None
        # a pid is reused once its process ends and is reaped: only ours mention the job folder. One this kernel
        # started and has not reaped is the job's, even while its command line is still empty (exec under way)
        ours = _children.get(scheduler_id) == folder
        try:
            if not ours:
                with open(f"/proc/{scheduler_id}/cmdline", "rb") as file:
                    ours = folder.encode() in file.read()
        except OSError:
            ours = False
        if not ours:
            os.close(notice)
            return None
        return notice

    def cancel(self, transport: Transport, scheduler_id: str, folder: str) -> None:
        if not scheduler_id.isdigit():
            return
        if self.query(transport, {scheduler_id: folder})[scheduler_id].state is None:
            return
        # the runner's supervisor takes SIGTERM, stops the cell's process group and records the end
        transport.run(["kill", "-TERM", scheduler_id], check=False, timeout=30)


#: What ``python -c`` runs for a job started by ``start_now``: ``runner.py``'s own ``main`` with the arguments job.sh
#: gives it (``sys.argv`` as there), imported from its compiled code in the runtime's private ``__pycache__``, where
#: running it as a script compiles its source anew, every job (11 ms). The module is taken out of ``sys.modules``
#: so that a cell's ``import runner`` finds the notebook's own.
BOOTSTRAP = ("import sys;del sys.argv[0];sys.path[0]=sys.argv[0].rpartition('/')[0];"
             "b=sys.dont_write_bytecode;sys.dont_write_bytecode=False;import runner;sys.dont_write_bytecode=b;"
             "del sys.modules['runner'];runner.exit_with(runner.main(sys.argv))")


def start_now(script: JobScript) -> str | None:
    """Start a job on this machine as its ``job.sh`` would, without the shells: ``python runner.py FOLDER`` (via
    ``BOOTSTRAP``) in a new session, in the cell's folder, with a job's clean environment, umask 077, stdout and
    stderr appended to the scheduler log. Returns its pid; None when the runner could not be started (Python
    missing, the folder gone): ``job.sh`` then starts it, and records why it could not."""
    cwd = script.cwd or script.folder
    argv = [script.python, "-c", BOOTSTRAP, script.runner, script.folder]
    if script.elements:
        argv.append("--pool")
    try:
        log = os.open(script.scheduler_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        # PWD as the shell's cd leaves it; everything else as ``env -i`` gives job.sh
        process = subprocess.Popen(argv, cwd=cwd, env={**job_environment(), "PWD": cwd}, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log, start_new_session=True, umask=0o077)
    except OSError:
        return None
    finally:
        os.close(log)
    # the job outlives the kernel in its own session; while the kernel lives, it is its parent, and reaps it. A
    # bare thread: threading.Thread.start() waits for the thread to run, which on a busy machine took 3 ms a cell
    pid = str(process.pid)
    _children[pid] = script.folder
    _thread.start_new_thread(_reap, (process, pid))
    return pid


#: The jobs this kernel started (``start_now``) and has not yet reaped, pid -> job folder: until its parent reaps
#: it, a pid is not given to another process.
_children: dict[str, str] = {}


def _reap(process: subprocess.Popen, pid: str) -> None:
    try:
        process.wait()
    finally:
        _children.pop(pid, None)

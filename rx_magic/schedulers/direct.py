"""The direct scheduler: the job is a detached process in its own session.

It survives the kernel (and, over SSH, the connection) dying. The runner's
supervisor enforces walltime and memory, since no batch system does.
"""

from __future__ import annotations

import os
import shlex

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
        try:    # a pid is reused once its process ends: only ours mention the job folder
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

"""Only evidence ends a job: a query that failed is no news, and "gone without a trace" needs several rounds.

The regression behind these tests: at kernel shutdown the monitor's status
query (``ps``) was killed with the kernel's process group, returned nothing,
and was read as "the process is gone", so a job whose folder went on to say
done was marked failed 18 ms after submission.
"""

import os
import signal
import stat
import time

from jupyter_client.manager import start_new_kernel

import rx_magic
from rx_magic.flow.registry import default_registry
from rx_magic.model.states import GONE_ROUNDS, State
from rx_magic.schedulers import DirectScheduler
from rx_magic.transport import LocalTransport

ROUNDS = 5


def test_kernels_shut_down_right_after_a_bg_submission_never_mark_the_job_failed(ip, isolated):
    """The kernel-shutdown path, many times: each kernel submits, then is shut down as a notebook's end does."""
    job_ids = []
    for _ in range(ROUNDS):
        manager, client = start_new_kernel(kernel_name="python3", cwd=str(isolated / "work"))
        printed = []
        try:
            client.execute_interactive("%load_ext rx_magic\nbase = 33", timeout=120)
            client.execute_interactive("%%remote local --bg\nimport time\ntime.sleep(2)\nlate = base * 3",
                                       timeout=120)
            client.execute_interactive("import rx_magic; print(rx_magic.jobs(1)[0].id)", timeout=120,
                                       output_hook=lambda m: printed.append(m["content"].get("text", "")))
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=False)      # as nbclient does when a notebook ends: SIGTERM to its group
        job_ids.append("".join(printed).split()[-1])
    registry = default_registry()
    marked = {job_id: registry.get(job_id).state for job_id in job_ids}
    assert not [job_id for job_id, state in marked.items() if state.is_final and state is not State.DONE], marked

    for job_id in job_ids:
        ip.user_ns.pop("late", None)
        ip.run_line_magic("rx", f"attach {job_id}")
        assert ip.user_ns.get("late") == 99, f"{job_id}: {registry.get(job_id)}"
        assert registry.get(job_id).state is State.DONE


def broken_ps(folder, monkeypatch):
    """A ``ps`` that is killed by SIGTERM as it starts, as the kernel's process group is at shutdown.

    A fake, because a real ``ps`` cannot be made to die on cue; it copies what the kernel's
    ``ps`` child showed then: no output, and the exit of a process ended by a signal.
    """
    folder.mkdir()
    script = folder / "ps"
    script.write_text("#!/bin/sh\nkill -TERM $$\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_status_query_killed_mid_way_is_no_news(ip, tmp_path, monkeypatch):
    job = rx_magic.submit("import time\ntime.sleep(6)\nlate = 99", "local", {})
    deadline = time.monotonic() + 30
    while job.refresh() is not State.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    broken_ps(tmp_path / "bin", monkeypatch)
    try:
        DirectScheduler().query(LocalTransport(), {job.record.scheduler_id: job.paths.folder})
    except rx_magic.SchedulerError as error:
        assert "could not list processes" in str(error)
    else:
        raise AssertionError("a ps killed by a signal read as an answer")
    for _ in range(GONE_ROUNDS + 2):       # more rounds than "gone" would ever need: none of them is news
        try:
            job.refresh(ask_scheduler=True)
        except rx_magic.SchedulerError:
            pass
        assert not default_registry().get(job.id).state.is_final
    monkeypatch.undo()
    assert job.wait(timeout=60) is State.DONE
    namespace = {}
    job.pull(namespace)
    assert namespace["late"] == 99


def test_a_job_gone_without_a_trace_ends_failed_only_after_several_rounds(ip):
    job = rx_magic.submit("import time\ntime.sleep(60)\nnever = 1", "local", {})
    deadline = time.monotonic() + 30
    while job.refresh() is not State.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(int(job.record.scheduler_id), signal.SIGKILL)     # the runner dies without writing its ending
    time.sleep(0.5)
    assert not job.refresh(ask_scheduler=True).is_final       # one round without a trace is no evidence
    assert job.wait(timeout=120) is State.FAILED
    assert "ended without the runner recording a result" in job.reason

"""How a job on this machine is started: straight from the kernel, without job.sh's shells, when the target has no
setup lines (``DirectScheduler.start_now``). Real processes; each test checks what a user would notice."""

import os
import signal
from pathlib import Path

import pytest
from helpers import process_is_gone, wait_for

import rx_magic
from rx_magic.model.states import State
from rx_magic.schedulers import DirectScheduler


@pytest.mark.parametrize("name", ["runner", "layout", "wire", "process_state", "jsontext"])
def test_a_cells_module_named_as_one_of_the_runtimes_is_the_notebooks_own_not_rx_magics(ip, name):
    (Path.cwd() / f"{name}.py").write_text("WHO = 'the notebook folder'\n")
    job = rx_magic.submit(f"import {name}\nwho = {name}.WHO", "local")
    assert job.wait(timeout=120) is State.DONE, job.reason
    namespace = {}
    job.pull(namespace)
    assert namespace["who"] == "the notebook folder"


def test_a_job_runs_in_the_notebooks_folder_with_its_pwd_and_in_a_session_of_its_own(ip):
    job = rx_magic.submit("import os\nwhere = (os.getcwd(), os.environ.get('PWD'), os.getsid(0) == os.getpid())",
                          "local")
    assert job.wait(timeout=120) is State.DONE, job.reason
    namespace = {}
    job.pull(namespace)
    cwd, pwd, _ = namespace["where"]
    assert cwd == pwd == os.getcwd()
    assert int(job.record.scheduler_id) != os.getpid()
    assert os.getsid(0) != int(job.record.scheduler_id)     # not this kernel's session: the job outlives it


def test_a_warning_in_the_cell_shows_the_cells_line(ip):
    job = rx_magic.submit("import warnings\n\nwarnings.warn('look at this line')", "local")
    assert job.wait(timeout=120) is State.DONE, job.reason
    stderr = job.log("stderr")
    assert "<remote cell>:3: UserWarning: look at this line" in stderr
    assert "  warnings.warn('look at this line')" in stderr


def test_the_cells_process_ends_when_its_supervisor_is_killed(ip):
    job = rx_magic.submit("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)", "local")
    wait_for(lambda: job.log().strip(), "the cell to start", timeout=120)
    cell_pid, supervisor_pid = int(job.log().strip()), int(job.record.scheduler_id)
    os.kill(supervisor_pid, signal.SIGKILL)      # nothing of the supervisor's runs to stop the cell
    wait_for(lambda: process_is_gone(supervisor_pid), "the supervisor to be gone (reaped by the kernel)")
    wait_for(lambda: process_is_gone(cell_pid), "the cell's process to end with its supervisor")


def test_a_cells_annotations_are_what_they_are_in_the_notebook_not_strings(ip):
    # the runner's own ``from __future__ import annotations`` must not reach the cell
    job = rx_magic.submit("def scale(x: int) -> float:\n    return x / 2\nhints = scale.__annotations__", "local")
    assert job.wait(timeout=120) is State.DONE, job.reason
    namespace = {}
    job.pull(namespace)
    assert namespace["hints"] == {"x": int, "return": float}


def test_a_cell_ending_in_an_expression_shows_its_value_and_one_ending_in_a_statement_does_not(ip, capsys):
    ip.user_ns["x"] = 20
    result = ip.run_cell("%%remote local\ny = x + 1\ny * 2")
    assert result.error_in_exec is None and result.result == 42 and ip.user_ns["y"] == 21
    result = ip.run_cell("%%remote local\nz = x + 2")
    assert result.error_in_exec is None and result.result is None and ip.user_ns["z"] == 22


def test_a_jobs_end_notice_is_there_the_moment_it_is_submitted(ip, monkeypatch):
    # the job's exec may still be under way when submit returns, its command line empty for a few ms: the notice
    # must not depend on reading it, or a waiting cell learns of the end only at its next look
    notices, submit = [], DirectScheduler.submit

    def submit_and_look(self, transport, script):
        pid = submit(self, transport, script)
        notice = self.end_notice(transport, pid, script.folder)
        notices.append(notice)
        if notice is not None:
            os.close(notice)
        return pid
    monkeypatch.setattr(DirectScheduler, "submit", submit_and_look)
    jobs = [rx_magic.submit("import time\ntime.sleep(1)", "local") for _ in range(6)]
    assert None not in notices
    for job in jobs:
        assert job.wait(timeout=120) is State.DONE, job.reason


def test_a_setting_changed_between_cells_reaches_each_cell_as_it_is_then(ip):
    import matplotlib
    default = matplotlib.rcParamsDefault["lines.linewidth"]
    try:
        for width in (default, 3.5, 2.25, default):
            matplotlib.rcParams["lines.linewidth"] = width
            job = rx_magic.submit("import matplotlib\nseen = matplotlib.rcParams['lines.linewidth']", "local")
            assert job.wait(timeout=120) is State.DONE, job.reason
            namespace = {}
            job.pull(namespace)
            assert namespace["seen"] == width
    finally:
        matplotlib.rcParams["lines.linewidth"] = default


def test_a_cell_compiled_here_for_a_python_that_reads_other_bytecode_is_compiled_by_the_job(ip, monkeypatch):
    import rx_magic.flow.submit as submit
    compiled_here = submit.compiled_cell
    # other code than the cell's, under a magic number no Python has: run, it would show itself
    monkeypatch.setattr(submit, "compiled_cell",
                        lambda code, first_line: {**compiled_here("y = 999\ny", first_line), "magic": "00000000"})
    ip.user_ns["x"] = 20
    result = ip.run_cell("%%remote local\ny = x + 1\ny")
    assert result.error_in_exec is None and result.result == 21 and ip.user_ns["y"] == 21
    result = ip.run_cell("%%remote local\nz = x + 2\nz / 0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert "z / 0" in str(result.error_in_exec.__cause__)

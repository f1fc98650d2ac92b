"""Background jobs: ``--bg``, staging rules, the per-target monitor, ``%rx stop``; in a real IPython shell.

The rules: a background job's results are applied just before the next cell
runs, never in the middle of one; a job that did not end ``done`` applies
nothing but its outputs and a notice of its error.
"""

import os
import signal
import textwrap
import threading
import time

import pytest
from helpers import cell, newest_job, wait_for
from IPython.utils.capture import capture_output

import rx_magic
from rx_magic.flow import watch as monitor
from rx_magic.ui.background import background_jobs, close_background_jobs
from rx_magic.model.states import State
from rx_magic.runtime.layout import HoldPaths
from rx_magic.targets import get_target


@pytest.fixture(autouse=True)
def no_watching_left(ip):
    yield
    monitor.stop_monitors()
    close_background_jobs(ip)


def staged(ip):
    return background_jobs(ip).staged


def test_bg_cell_returns_at_once_and_values_arrive_before_the_next_cell(ip, capsys):
    ip.user_ns["x"] = 20
    started = time.monotonic()
    result = ip.run_cell(cell("local --bg", """
        import time
        time.sleep(1.5)
        y = x + 1
    """))
    assert result.error_in_exec is None
    assert time.monotonic() - started < 1.5
    job = newest_job()
    assert "y" not in ip.user_ns
    assert f"{job.id} runs in the background" in capsys.readouterr().err

    wait_for(lambda: staged(ip), "the job's results to be staged")
    assert "y" not in ip.user_ns                     # staged, not applied: no cell has run yet
    result = ip.run_cell("z = y * 2")
    assert result.error_in_exec is None
    assert (ip.user_ns["y"], ip.user_ns["z"]) == (21, 42)
    assert f"rx_magic: job {job.id} (time.sleep(1.5)) done: pulled y, time" in capsys.readouterr().out
    assert newest_job().record.pulled
    ip.run_cell("pass")
    assert "rx_magic" not in capsys.readouterr().out    # applied once


def test_nothing_is_applied_in_the_middle_of_a_cell(ip, tmp_path):
    go = tmp_path / "go"
    # the job ends only once the next cell has begun (it makes the file), so its results arrive during that cell
    ip.run_cell(cell("local --bg", f"import os, time\nwhile not os.path.exists({str(go)!r}):\n    time.sleep(0.02)\n"
                                   "arrived = 'yes'"))
    # this cell waits, inside itself, until the job's results are staged: they must not land in it
    result = ip.run_cell(textwrap.dedent(f"""
        import time
        from rx_magic.ui.background import background_jobs
        open({str(go)!r}, "w").close()
        for _ in range(2400):
            if background_jobs(get_ipython()).staged:
                break
            time.sleep(0.05)
        seen_in_the_cell = "arrived" in globals()
    """))
    assert result.error_in_exec is None
    assert ip.user_ns["seen_in_the_cell"] is False
    assert "arrived" not in ip.user_ns
    ip.run_cell("pass")
    assert ip.user_ns["arrived"] == "yes"


def test_failed_background_job_applies_nothing_but_its_outputs_and_a_notice(ip, capsys):
    ip.user_ns["kept"] = "before"
    ip.run_cell(cell("local --bg", """
        kept = "changed"
        class Badge:
            def _repr_html_(self):
                return "<b>shown anyway</b>"
        display(Badge())
        print("printed before failing")
        raise ValueError("bad input")
    """))
    wait_for(lambda: staged(ip), "the failed job to be staged")
    with capture_output() as captured:
        result = ip.run_cell("after = 1")
    assert result.error_in_exec is None                  # not raised into the unrelated cell
    assert ip.user_ns["kept"] == "before"
    assert ip.user_ns["after"] == 1
    assert {"text/html": "<b>shown anyway</b>"}.items() <= captured.outputs[0].data.items()
    job = newest_job()
    assert "failed: ValueError: bad input" in captured.stderr
    assert f"%rx attach {job.id}" in captured.stderr
    assert job.state is State.FAILED
    assert not job.record.pulled


def test_interrupted_blocking_cell_becomes_a_background_job(ip, capsys, tmp_path, sigint_interrupts):
    go = tmp_path / "go"

    def interrupt_once_the_cell_runs():
        wait_for(lambda: rx_magic.jobs() and "started" in rx_magic.jobs(1)[0].log(), "the cell to start")
        os.kill(os.getpid(), signal.SIGINT)     # as Jupyter's interrupt: the job cannot end before it lands

    interrupter = threading.Thread(target=interrupt_once_the_cell_runs)
    interrupter.start()
    try:
        result = ip.run_cell(cell("local", f"""
            import os, time
            print("started", flush=True)
            for _ in range(6000):       # at most 2 minutes: a lost interrupt fails the test, never hangs it
                if os.path.exists({str(go)!r}):
                    break
                time.sleep(0.02)
            answer = 42
        """))
    finally:
        interrupter.join()
    go.touch()
    assert result.error_in_exec is None
    assert "answer" not in ip.user_ns
    job = newest_job()
    assert f"job {job.id} goes on in the background" in capsys.readouterr().err
    assert background_jobs(ip).job_ids == [job.id]
    wait_for(lambda: staged(ip), "the job's results to be staged")
    ip.run_cell("pass")
    assert ip.user_ns["answer"] == 42


def test_attach_takes_over_a_background_job_and_its_values_are_not_applied_twice(ip, capsys):
    ip.run_cell(cell("local --bg", "import time\ntime.sleep(1)\ncount = 1"))
    job = newest_job()
    result = ip.run_cell(f"%rx attach {job.id}")
    assert result.error_in_exec is None
    assert ip.user_ns["count"] == 1
    assert background_jobs(ip).job_ids == []
    ip.user_ns["count"] = 5
    time.sleep(1.5)
    ip.run_cell("pass")
    assert ip.user_ns["count"] == 5
    assert "done: pulled" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- the monitor

def test_one_scheduler_query_a_round_for_all_jobs_of_a_target(monkeypatch):
    target = get_target("local")
    queries = []
    real_query = target.scheduler.query

    def counting_query(transport, jobs):
        queries.append(sorted(jobs))
        return real_query(transport, jobs)

    monkeypatch.setattr(target.scheduler, "query", counting_query)
    monkeypatch.setattr(monitor, "FIRST_GAP", 0.1)     # asked again at once, with all three watched
    jobs = [rx_magic.submit(f"import time\ntime.sleep(2)\nv = {n}", "local") for n in range(3)]
    ended = []
    watcher = monitor.monitor_for("local")
    for job in jobs:
        watcher.watch(job, on_end=ended.append)
    wait_for(lambda: len(ended) == 3, "all three jobs to end")
    assert {job.id for job in ended} == {job.id for job in jobs}
    assert all(job.record.state is State.DONE for job in jobs)
    assert len(queries) <= watcher.rounds
    assert max(len(asked) for asked in queries) == 3   # the three jobs in one query


def test_monitor_stops_by_itself_when_no_job_is_live():
    job = rx_magic.submit("v = 1", "local")
    watcher = monitor.monitor_for("local")
    watcher.watch(job)
    assert watcher.running
    wait_for(lambda: not watcher.running, "the monitor to stop")
    assert job.record.state is State.DONE
    assert monitor.running_monitors() == []


def test_rx_stop_stops_the_monitors_and_the_jobs_go_on(ip, capsys):
    ip.run_cell(cell("local --bg", "import time\ntime.sleep(3)\nlate = 1"))
    job = newest_job()
    assert monitor.running_monitors()
    result = ip.run_cell("%rx stop")
    assert result.error_in_exec is None
    assert "stopped 1 monitor watching 1 job; the jobs go on" in capsys.readouterr().out
    assert monitor.running_monitors() == []
    assert background_jobs(ip).job_ids == []
    assert job.wait(timeout=30) is State.DONE
    ip.run_cell("pass")
    assert "late" not in ip.user_ns                   # nobody brings it in now...
    ip.run_cell(f"%rx attach {job.id}")
    assert ip.user_ns["late"] == 1                     # ...until it is attached


def test_attach_button_of_the_jobs_table_brings_the_results_in_before_the_next_cell(ip, capsys):
    from rx_magic.ui.magics import RemoteMagics, _jobs_panel
    job = rx_magic.submit("import time\ntime.sleep(0.5)\nfrom_table = 'here'", "local")
    magics = ip.magics_manager.registry[RemoteMagics.__name__]
    panel = _jobs_panel(magics, [{"id": job.id, "state": "running", "target": "local", "age": "1s",
                                  "first_line": "import time", "reason": "", "mine": False}], job.id)
    assert panel._repr_mimebundle_()[0]["text/plain"] == job.id    # the text table where widgets do not render
    assert "(other kernel)" in panel._repr_mimebundle_()[0]["text/html"]
    panel.table._on_message(panel.table, {"action": "attach", "id": job.id}, [])
    assert background_jobs(ip).job_ids == [job.id]
    wait_for(lambda: staged(ip), "the attached job's results to be staged")
    ip.run_cell("pass")
    assert ip.user_ns["from_table"] == "here"


def test_cancel_button_of_the_jobs_table_cancels(ip):
    from rx_magic.ui.magics import RemoteMagics, _jobs_panel
    job = rx_magic.submit("import time\ntime.sleep(60)", "local")
    magics = ip.magics_manager.registry[RemoteMagics.__name__]
    panel = _jobs_panel(magics, [], "")
    panel.table._on_message(panel.table, {"action": "cancel", "id": job.id}, [])
    assert job.wait(timeout=30) is State.CANCELLED


class Clock:
    """A monitor's clock the test moves: minutes of watching take a moment, whatever the machine's load."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_bg_cell_waiting_in_a_hold_is_seen_started_within_the_held_pace_not_the_backed_off_query(ip, tmp_path):
    hold = ip.run_line_magic("rx", "hold local --ncpus 1 --idle 5m").seen.record
    try:
        wait_for(lambda: os.path.exists(HoldPaths(hold.workdir, hold.id).ready_json), "the hold to be ready",
                 timeout=60)
        ip.user_ns["folder"] = str(tmp_path)
        # the first cell takes the hold's one core until it finds the file "go"
        ip.run_cell(cell("local --bg", """
            import os, time
            while not os.path.exists(os.path.join(folder, "go")):
                time.sleep(0.02)
        """))
        first = newest_job()
        wait_for(lambda: first.state is State.RUNNING, "the first cell to start in the hold", timeout=60)
        ip.run_cell(cell(f"local --bg --hold {hold.id}", """
            import os, time
            open(os.path.join(folder, "second started"), "w").close()
            while not os.path.exists(os.path.join(folder, "end")):
                time.sleep(0.02)
        """))
        monitor.stop_monitors()         # from here the test's own monitor watches the waiting cell, on its clock
        second = newest_job()
        clock = Clock()
        watcher = monitor.Monitor("local", clock=clock, background=False)
        watcher.watch(second)
        while clock.now < 1000.0 + 600:     # ten quiet minutes: the scheduler is asked every 30 s by now
            clock.now += max(watcher.poll(), 0.001)
        assert second.record.state is State.QUEUED
        assert watcher.schedule.next_query() - watcher.schedule.last_asked == 30
        assert watcher.poll() <= monitor.HELD_WAIT      # the waiting cell is looked for at the held pace
        (tmp_path / "go").touch()
        wait_for(lambda: (tmp_path / "second started").exists(), "the hold to take the waiting cell", timeout=60)
        clock.now += monitor.HELD_WAIT
        watcher.poll()
        assert second.record.state is State.RUNNING     # seen started at the next look, not 30 s later
        (tmp_path / "end").touch()
        assert second.wait(timeout=60) is State.DONE
    finally:
        (tmp_path / "go").touch()
        (tmp_path / "end").touch()
        ip.run_line_magic("rx", f"release {hold.id}")

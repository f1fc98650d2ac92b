"""Holds: one batch job running a warm worker, so cells that fit skip the queue.

Real parts only: the local target runs a real worker process (the direct scheduler), the SSH tests go
through the loopback sshd, the Slurm and PBS tests through the suite's real Slurm and OpenPBS. Every
wait is on evidence (a file, a state), never a sleep standing in for one.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import newest_job, process_is_gone, run_remote, usage_error, wait_for

import rx_magic
import rx_magic.flow.watch
import rx_magic.targets
from rx_magic.flow.holds import list_holds
from rx_magic.flow.registry import default_registry
from rx_magic.model.states import State
from rx_magic.runtime.layout import HoldPaths
from rx_magic.targets.target import get_target


@pytest.fixture(autouse=True)
def _end_holds_left_open():
    """A hold a test leaves open is stopped by its scheduler's own cancel (its worker's pid, its batch job)."""
    yield
    try:
        holds = default_registry().holds()
    except Exception:   # noqa: BLE001 - no registry (the test closed it): no hold to end
        return
    for hold in holds:
        try:
            target = get_target(hold.target)
            paths = HoldPaths(hold.workdir, hold.id)
            if not target.transport.exists(paths.ended_json):
                target.scheduler.cancel(target.transport, hold.scheduler_id, paths.folder)
        except rx_magic.RxError:
            pass    # a cluster the test has stopped already, and its jobs with it


def open_hold(ip, line: str):
    shown = ip.run_line_magic("rx", f"hold {line}")
    return shown.seen.record


def ready(hold, timeout=60):
    """Wait until the hold's worker is ready; return what ``%rx holds`` sees of it."""
    found = {}

    def is_ready():
        found["seen"] = next(seen for seen in list_holds() if seen.record.id == hold.id)
        assert found["seen"].state != "ended", f"the hold ended: {found['seen'].record.reason}"
        return found["seen"].state == "ready"

    wait_for(is_ready, f"hold {hold.id} to be ready", timeout=timeout)
    return found["seen"]


def hold_state(hold):
    return next(seen for seen in list_holds() if seen.record.id == hold.id)


def ended(hold, timeout=60):
    wait_for(lambda: hold_state(hold).state == "ended", f"hold {hold.id} to end", timeout=timeout)
    return hold_state(hold)


def worker_pid(hold) -> int:
    return int(json.loads(Path(HoldPaths(hold.workdir, hold.id).ready_json).read_text())["pid"])


def exited(pid: int) -> bool:
    """Gone, or a zombie its parent (whoever adopted the detached worker) has not reaped yet."""
    try:
        return process_is_gone(pid) or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ----------------------------------------------------------------------------- local

def test_a_cell_runs_in_a_ready_local_hold_without_a_new_scheduler_job(ip, capsys):
    hold = open_hold(ip, "local --idle 5m")
    seen = ready(hold)
    assert seen.cores >= 1 and seen.ready["pid"] == worker_pid(hold)
    ip.user_ns["base"] = 41
    result = run_remote(ip, "local", """
        import os
        in_hold = os.environ.get("RX_MAGIC_HOLD")
        answer = base + 1
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["answer"] == 42
    assert ip.user_ns["in_hold"] == hold.id          # it ran inside the hold's worker
    job = newest_job()
    assert job.record.scheduler_id.startswith(f"hold:{hold.id}:")     # no process of the scheduler's own
    assert "goes to the" not in capsys.readouterr().err
    # the worker gave the ticket back once the cell ended
    assert os.listdir(HoldPaths(hold.workdir, hold.id).taken_dir) == []


def test_two_cells_run_side_by_side_in_a_two_core_hold(ip, tmp_path):
    hold = open_hold(ip, "local --ncpus 2 --idle 5m")
    ready(hold)
    ip.user_ns["folder"] = str(tmp_path)
    jobs = []
    for me, other in (("a", "b"), ("b", "a")):
        # each cell waits until the other has started: both end done only if they ran at the same time
        run_remote(ip, "local --bg", f"""
            import os, time
            open(os.path.join(folder, "{me}"), "w").close()
            deadline = time.time() + 60
            while not os.path.exists(os.path.join(folder, "{other}")) and time.time() < deadline:
                time.sleep(0.02)
            met_{me} = os.path.exists(os.path.join(folder, "{other}"))
        """)
        jobs.append(newest_job())
    for job in jobs:
        assert job.record.scheduler_id.startswith("hold:")
        assert job.wait(timeout=90) is State.DONE
    ip.run_cell("1")     # the background results arrive before the next cell
    assert ip.user_ns["met_a"] is True and ip.user_ns["met_b"] is True


def test_a_cell_that_does_not_fit_goes_to_the_scheduler_and_says_so(ip, capsys):
    hold = open_hold(ip, "local --ncpus 1 --idle 5m")
    ready(hold)
    result = run_remote(ip, "local --ncpus 2", "x = 1")
    assert result.error_in_exec is None and ip.user_ns["x"] == 1
    job = newest_job()
    assert job.record.scheduler_id.isdigit()        # a process of the direct scheduler's own
    err = capsys.readouterr().err
    assert f"no hold on 'local' has room for this cell ({hold.id} holds 1 cores, the cell asks 2)" in err
    assert err.count("goes to the direct scheduler") == 1


def test_no_hold_forces_a_fresh_job(ip, capsys):
    hold = open_hold(ip, "local --idle 5m")
    ready(hold)
    run_remote(ip, "local --no-hold", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["in_hold"] is None
    assert newest_job().record.scheduler_id.isdigit()
    assert "hold" not in capsys.readouterr().err


def test_hold_names_one_and_a_hold_too_small_is_refused_before_anything_is_sent(ip):
    small = open_hold(ip, "local --ncpus 1 --idle 5m --name small")
    ready(small)
    run_remote(ip, "local --hold small", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["in_hold"] == small.id
    assert f"{newest_job().id} on local in hold small after " in newest_job().summary()
    jobs = len(rx_magic.jobs(None))
    message = usage_error(run_remote(ip, f"local --hold {small.id} --ncpus 2", "y = 1"))
    assert message == (f"--hold {small.id}: the cell cannot run in hold {small.id}: holds 1 cores, the cell asks 2. "
                       "Leave out --hold to send it to the scheduler")
    assert len(rx_magic.jobs(None)) == jobs


def test_an_idle_hold_ends_by_itself_and_later_cells_go_to_the_scheduler(ip, capsys):
    hold = open_hold(ip, "local --idle 2s")
    seen = ended(hold)
    assert seen.reason == "idle" and seen.said == "the hold ended, idle"
    wait_for(lambda: exited(worker_pid(hold)), "the worker to exit")
    run_remote(ip, "local", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["in_hold"] is None
    assert newest_job().record.scheduler_id.isdigit()
    capsys.readouterr()
    ip.run_line_magic("rx", "holds")
    assert "ended: the hold ended, idle" in capsys.readouterr().out


def test_a_hold_released_while_a_cell_runs_lets_it_finish_then_ends(ip, tmp_path, capsys):
    hold = open_hold(ip, "local --idle 5m")
    ready(hold)
    ip.user_ns["go"] = str(tmp_path / "go")
    run_remote(ip, "local --bg", """
        import os, time
        while not os.path.exists(go):
            time.sleep(0.02)
        finished = True
    """)
    job = newest_job()
    wait_for(lambda: job.state is State.RUNNING, "the cell to start in the hold")
    shown = ip.run_line_magic("rx", f"release {hold.id}")
    assert "asked to end" in repr(shown)
    (tmp_path / "go").touch()
    assert job.wait(timeout=60) is State.DONE
    seen = ended(hold)
    assert seen.reason == "released"
    ip.run_cell("1")
    assert ip.user_ns["finished"] is True


def test_a_worker_killed_mid_cell_fails_the_cell_with_the_reason_and_the_waiting_cell_goes_to_the_scheduler(
        ip, tmp_path, capsys):
    hold = open_hold(ip, "local --ncpus 1 --idle 5m")
    ready(hold)
    ip.user_ns["folder"] = str(tmp_path)
    run_remote(ip, "local --bg", """
        import os, time
        open(os.path.join(folder, "started"), "w").close()
        time.sleep(600)
    """)
    running = newest_job()
    wait_for(lambda: (tmp_path / "started").exists(), "the first cell to start")
    # the hold's one core is taken: the next cell waits in its queue (named, or it would go to the scheduler)
    run_remote(ip, f"local --bg --hold {hold.id}", "import os\nlater = os.environ.get('RX_MAGIC_HOLD')")
    waiting = newest_job()
    assert waiting.record.scheduler_id.startswith("hold:")
    os.kill(worker_pid(hold), signal.SIGKILL)
    assert running.wait(timeout=90) is State.FAILED
    assert running.reason == "the hold was killed while the cell ran"
    assert waiting.wait(timeout=90) is State.DONE
    assert waiting.record.scheduler_id.isdigit()        # resubmitted: a process of the scheduler's own
    assert (f"the hold was killed before job {waiting.id} started: sent it to the direct scheduler"
            in capsys.readouterr().err)
    ip.run_cell("1")
    assert ip.user_ns["later"] is None
    assert hold_state(hold).reason == "killed"


def test_a_cancelled_cell_in_a_hold_stops_and_the_hold_goes_on(ip, tmp_path):
    hold = open_hold(ip, "local --idle 5m")
    ready(hold)
    run_remote(ip, "local --bg", "import time\ntime.sleep(600)")
    job = newest_job()
    wait_for(lambda: job.state is State.RUNNING, "the cell to start")
    job.cancel()
    assert job.wait(timeout=60) is State.CANCELLED
    assert hold_state(hold).state == "ready"
    run_remote(ip, "local", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["in_hold"] == hold.id


KERNEL = """
import os, sys
from IPython.testing import globalipapp
globalipapp.start_ipython()
ip = globalipapp.get_ipython()
ip.run_line_magic("load_ext", "rx_magic")
ip.run_cell("%%remote local\\nimport os\\nin_hold = os.environ.get('RX_MAGIC_HOLD')\\n")
print("IN_HOLD", ip.user_ns.get("in_hold"))
"""


def test_a_second_kernel_finds_the_hold_and_runs_its_cells_in_it(ip, isolated):
    hold = open_hold(ip, "local --idle 5m")
    ready(hold)
    # another kernel: its own process, the same registry (the same XDG folders)
    done = subprocess.run([sys.executable, "-c", KERNEL], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ), check=False)
    assert f"IN_HOLD {hold.id}" in done.stdout, done.stdout + done.stderr
    run_remote(ip, "local", "import os\nmine = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["mine"] == hold.id
    holders = {job.record.session for job in rx_magic.jobs(None) if job.record.scheduler_id.startswith("hold:")}
    assert len(holders) == 2


def test_a_map_over_a_hold_spreads_its_elements_over_the_cores(ip):
    hold = open_hold(ip, "local --ncpus 2 --idle 5m")
    ready(hold)
    result = run_remote(ip, "local --map n=range(6)", """
        import os
        square = n * n
        where = os.environ.get("RX_MAGIC_HOLD")
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["square"] == [0, 1, 4, 9, 16, 25]
    assert set(ip.user_ns["where"]) == {hold.id}
    assert newest_job().record.scheduler_id.startswith("hold:")


def test_dry_run_shows_what_a_hold_holds_and_which_hold_a_cell_would_use(ip, capsys):
    ip.run_line_magic("rx", "hold local --ncpus 2 --walltime 1h --idle 10m --dry-run")
    out = capsys.readouterr().out
    assert "resources held: 2 cpus, walltime 1:00:00" in out
    assert "ends after 0:10:00 with nothing to run" in out
    assert "worker.py" in out
    assert default_registry().holds() == []
    hold = open_hold(ip, "local --idle 5m")
    ready(hold)
    run_remote(ip, "local --dry-run", "x = 1")
    assert f"note: runs in hold {hold.id} (ready on" in capsys.readouterr().out


def test_bad_hold_input_is_one_line_before_anything_is_submitted(ip):
    with pytest.raises(Exception) as caught:
        ip.run_line_magic("rx", "hold local --idle soon")
    assert "--idle 'soon' is not a time" in str(caught.value)
    with pytest.raises(Exception) as caught:
        ip.run_line_magic("rx", "release nosuchhold")
    assert "no hold matches 'nosuchhold': `%rx holds` lists them" in str(caught.value)
    assert default_registry().holds() == []


# ----------------------------------------------------------------------------- SSH

def test_a_cell_runs_in_a_hold_on_an_ssh_host(ip, ssh_target, remote_workdir):
    hold = open_hold(ip, "ws --idle 5m")
    seen = ready(hold)
    assert seen.ready["host"]
    ip.user_ns["base"] = 1
    result = run_remote(ip, "ws", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')\nvalue = base + 1")
    assert result.error_in_exec is None
    assert ip.user_ns["in_hold"] == hold.id and ip.user_ns["value"] == 2
    assert newest_job().record.scheduler_id.startswith("hold:")
    ip.run_line_magic("rx", f"release {hold.id}")
    assert ended(hold).reason == "released"
    assert (remote_workdir / ".rx" / "holds" / hold.id / "ended.json").exists()


def test_over_ssh_an_idle_hold_ends_and_a_killed_one_fails_its_cell_and_sends_the_waiting_one_on(
        ip, ssh_target, tmp_path, capsys):
    idle = open_hold(ip, "ws --idle 2s")
    assert ended(idle).reason == "idle"
    hold = open_hold(ip, "ws --ncpus 1 --idle 5m")
    ready(hold)
    ip.user_ns["folder"] = str(tmp_path)
    run_remote(ip, "ws --bg", """
        import os, time
        open(os.path.join(folder, "started"), "w").close()
        time.sleep(600)
    """)
    running = newest_job()
    wait_for(lambda: (tmp_path / "started").exists(), "the first cell to start")
    run_remote(ip, f"ws --bg --hold {hold.id}", "import os\nlater = os.environ.get('RX_MAGIC_HOLD')")
    waiting = newest_job()
    os.kill(worker_pid(hold), signal.SIGKILL)     # the SSH host is this machine: its worker is ours to kill
    assert running.wait(timeout=90) is State.FAILED
    assert running.reason == "the hold was killed while the cell ran"
    assert waiting.wait(timeout=90) is State.DONE
    assert waiting.record.scheduler_id.isdigit()
    assert f"before job {waiting.id} started: sent it to the direct scheduler" in capsys.readouterr().err


SECOND_KERNEL = """
import sys
from IPython.testing import globalipapp
globalipapp.start_ipython()
ip = globalipapp.get_ipython()
ip.run_line_magic("load_ext", "rx_magic")
ip.run_cell("%%remote " + sys.argv[1] + "\\nimport os\\nin_hold = os.environ.get('RX_MAGIC_HOLD')\\n")
print("IN_HOLD", ip.user_ns.get("in_hold"))
print("RELEASED", repr(ip.run_line_magic("rx", "release " + sys.argv[2])))
"""


def two_kernels_share_the_hold_and_the_second_releases_it(ip, hold, target: str, go: Path, timeout: float = 120):
    """This kernel runs a cell in the two-core ``hold`` that waits for ``go``; another kernel (its own process,
    the same registry: the same XDG folders, HOME and ssh config) runs a cell in the hold beside it, then
    releases the hold while this kernel's cell runs; that cell still finishes, and the next goes to the
    scheduler. ``target`` is the cells' ``%%remote`` line."""
    ip.user_ns["go"] = str(go)
    run_remote(ip, f"{target} --bg --hold {hold.id}", """
        import os, time
        while not os.path.exists(go):
            time.sleep(0.05)
        finished = os.environ.get("RX_MAGIC_HOLD")
    """)
    first = newest_job()
    wait_for(lambda: first.state is State.RUNNING, "the first kernel's cell to start in the hold", timeout=timeout)
    done = subprocess.run([sys.executable, "-c", SECOND_KERNEL, target, hold.id], capture_output=True, text=True,
                          timeout=timeout * 3, env=dict(os.environ), check=False)
    assert f"IN_HOLD {hold.id}" in done.stdout, done.stdout + done.stderr
    assert "asked to end" in done.stdout, done.stdout + done.stderr
    holders = {job.record.session for job in rx_magic.jobs(None) if job.record.scheduler_id.startswith("hold:")}
    assert len(holders) == 2
    assert first.state is State.RUNNING        # released, the hold lets the running cell finish
    go.touch()
    assert first.wait(timeout=timeout) is State.DONE
    assert ended(hold, timeout=timeout).reason == "released"
    ip.run_cell("1")
    assert ip.user_ns["finished"] == hold.id
    run_remote(ip, target, "import os\nlater = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["later"] is None          # the hold has ended: the next cell is a job of its own
    assert not newest_job().record.scheduler_id.startswith("hold:")


def test_over_ssh_two_kernels_share_one_hold_and_a_release_from_either_lets_the_running_cell_finish(
        ip, ssh_target, tmp_path):
    hold = open_hold(ip, "ws --ncpus 2 --idle 5m")
    ready(hold)
    two_kernels_share_the_hold_and_the_second_releases_it(ip, hold, "ws", tmp_path / "go")


def test_a_cell_running_when_the_hold_reaches_its_walltime_fails_with_that_reason(ip):
    hold = open_hold(ip, "local --walltime 15s --idle 5m")
    ready(hold)
    run_remote(ip, f"local --bg --hold {hold.id}", "import time\ntime.sleep(600)")
    job = newest_job()
    assert job.record.scheduler_id.startswith("hold:")
    assert job.wait(timeout=90) is State.FAILED
    assert job.reason == "the hold reached its walltime while the cell ran"
    assert ended(hold).reason == "walltime"


# ----------------------------------------------------------------------------- Slurm and OpenPBS

def test_a_cell_runs_in_a_hold_held_by_a_slurm_job_and_is_shown_in_that_hold(ip, slurm, configure_targets,
                                                                              tmp_path, capsys):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    hold = open_hold(ip, "hpc --ncpus 2 --mem 500MB --walltime 10m --idle 5m")
    assert hold.scheduler_id.isdigit()      # sbatch's job id
    seen = ready(hold, timeout=120)
    assert seen.cores == 2
    result = run_remote(ip, "hpc --mem 100MB", """
        import os
        in_hold = os.environ.get("RX_MAGIC_HOLD")
        slurm_job = os.environ.get("SLURM_JOB_ID")
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["in_hold"] == hold.id
    assert ip.user_ns["slurm_job"] == hold.scheduler_id      # inside the hold's batch job, no new one
    job = newest_job()
    assert job.record.scheduler_id.startswith("hold:")
    # shown as the hold it ran in (the tail of its id, which --hold takes), not as hold:hold-...:rx-...
    short = hold.id.rsplit("-", 1)[-1]
    from rx_magic.ui.widget import JobWidget
    head = JobWidget(job).summary_text().splitlines()[0]
    assert head.startswith(f"{job.id} on hpc (in hold {short}): done"), head
    assert f"on hpc in hold {short} after " in job.summary()
    ip.run_line_magic("rx", "jobs")
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job.id)]
    assert line.endswith(f"(in hold {short})") and "hold:" not in line
    result = run_remote(ip, "hpc --mem 100MB --map n=range(4)", """
        import os
        square = n * n
        where = (os.environ.get("RX_MAGIC_HOLD"), os.environ.get("SLURM_JOB_ID"))
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["square"] == [0, 1, 4, 9]
    assert set(ip.user_ns["where"]) == {(hold.id, hold.scheduler_id)}     # every element ran in the hold's job
    two_kernels_share_the_hold_and_the_second_releases_it(ip, hold, "hpc --mem 100MB", tmp_path / "go")
    wait_for(lambda: slurm.squeue_says(hold.scheduler_id) in ("COMPLETED", ""), "Slurm to see the hold's job end",
             timeout=120)


def test_a_slurm_hold_cancelled_by_scancel_fails_its_running_cell_saying_the_hold_was_killed(
        ip, slurm, configure_targets, tmp_path):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    hold = open_hold(ip, "hpc --ncpus 1 --mem 300MB --walltime 10m --idle 5m")
    ready(hold, timeout=120)
    run_remote(ip, "hpc --bg --mem 100MB", "import time\ntime.sleep(600)")
    job = newest_job()
    wait_for(lambda: job.state is State.RUNNING, "the cell to start in the hold", timeout=60)
    slurm.client("scancel", hold.scheduler_id)      # as a user or an administrator would
    assert job.wait(timeout=120) is State.FAILED
    assert job.reason == "the hold was killed while the cell ran"
    assert ended(hold, timeout=60).reason == "killed"


def test_a_slurm_hold_ends_idle_and_one_whose_worker_is_killed_fails_its_cell_and_sends_the_waiting_one_to_slurm(
        ip, slurm, configure_targets, tmp_path, capsys):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    idle = open_hold(ip, "hpc --ncpus 1 --mem 200MB --walltime 10m --idle 2s")
    assert ended(idle, timeout=120).reason == "idle"
    wait_for(lambda: slurm.squeue_says(idle.scheduler_id) in ("COMPLETED", ""), "Slurm to see the idle hold end",
             timeout=120)
    hold = open_hold(ip, "hpc --ncpus 1 --mem 300MB --walltime 10m --idle 5m")
    ready(hold, timeout=120)
    ip.user_ns["folder"] = str(tmp_path)
    run_remote(ip, "hpc --bg --mem 100MB", """
        import os, time
        open(os.path.join(folder, "started"), "w").close()
        time.sleep(600)
    """)
    running = newest_job()
    wait_for(lambda: (tmp_path / "started").exists(), "the first cell to start", timeout=90)
    run_remote(ip, f"hpc --bg --mem 100MB --hold {hold.id}", "import os\nlater = os.environ.get('SLURM_JOB_ID')")
    waiting = newest_job()
    assert waiting.record.scheduler_id.startswith("hold:")
    os.kill(worker_pid(hold), signal.SIGKILL)   # Slurm's node is this machine: the worker is ours to kill
    assert running.wait(timeout=120) is State.FAILED
    assert running.reason == "the hold was killed while the cell ran"
    assert waiting.wait(timeout=180) is State.DONE
    assert waiting.record.scheduler_id.isdigit()        # sbatch's job id: a Slurm job of its own
    assert f"before job {waiting.id} started: sent it to the slurm scheduler" in capsys.readouterr().err
    ip.run_cell("1")
    assert ip.user_ns["later"] == waiting.record.scheduler_id
    assert hold_state(hold).reason == "killed"


def test_a_cell_running_when_a_slurm_hold_reaches_its_walltime_fails_with_that_reason(
        ip, slurm, configure_targets, tmp_path):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    a_cell_running_at_the_holds_walltime_fails_with_that_reason(ip, "hpc --ncpus 1 --mem 300MB", "--mem 100MB")


def a_cell_running_at_the_holds_walltime_fails_with_that_reason(ip, hold_line: str, cell_options: str = ""):
    """Open a hold on ``hold_line`` (target and resources) with the shortest walltime worth asking, one minute, and
    run a cell in it that outlives it: the cell fails with the hold's walltime, and the hold ends with it."""
    hold = open_hold(ip, f"{hold_line} --walltime 1m --idle 5m")
    ready(hold, timeout=180)
    target = hold_line.split()[0]
    run_remote(ip, f"{target} --bg {cell_options} --hold {hold.id}", "import time\ntime.sleep(600)")
    job = newest_job()
    assert job.wait(timeout=300) is State.FAILED
    assert job.reason == "the hold reached its walltime while the cell ran"
    assert ended(hold, timeout=120).reason == "walltime"


@pytest.fixture
def pbs(tmp_path_factory, monkeypatch, configure_targets):
    """Target ``pbs``: the suite's OpenPBS, reached as its user over a loopback sshd; the cluster is returned."""
    from pbs import start_for_tests
    cluster = start_for_tests(history=True)
    try:
        home = tmp_path_factory.mktemp("home")
        cluster.server.ssh_config(home)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        configure_targets(pbs={"host": "rxtest", "scheduler": "pbs", "python": "/usr/bin/python3",
                               "setup": cluster.python_setup, "workdir": str(cluster.root / "{user}" / "jobs"),
                               "poll_interval": 3})
        yield cluster
    finally:
        end_holds_on(cluster)
        rx_magic.flow.watch.stop_monitors()
        rx_magic.targets.close_all()
        cluster.stop()


def end_holds_on(cluster) -> None:
    """qdel the batch job of every hold still open, and wait until PBS has finished it (its output copied back):
    the next test's PBS start wants a free node, and removing the folders first makes the copy retry for 30 s."""
    jobs = [hold.scheduler_id for hold in default_registry().holds() if hold.scheduler_id]
    for scheduler_id in jobs:
        cluster.as_user(f"qdel {scheduler_id}")
    for scheduler_id in jobs:
        wait_for(lambda job=scheduler_id: "job_state = F" in cluster.job_says(job) or not cluster.job_says(job),
                 f"PBS to finish job {scheduler_id}", timeout=180)


def test_a_cell_runs_in_a_hold_held_by_an_openpbs_job_over_ssh(ip, pbs):
    cluster = pbs
    hold = open_hold(ip, "pbs --ncpus 2 --walltime 10m --idle 5m")
    seen = ready(hold, timeout=180)
    assert seen.ready["host"]
    result = run_remote(ip, "pbs", """
        import os
        in_hold = os.environ.get("RX_MAGIC_HOLD")
        pbs_job = os.environ.get("PBS_JOBID")
        user = os.environ.get("USER") or os.environ.get("LOGNAME")
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["in_hold"] == hold.id
    assert ip.user_ns["pbs_job"] == hold.scheduler_id    # inside the hold's batch job, no new one
    assert newest_job().record.scheduler_id.startswith("hold:")
    two_kernels_share_the_hold_and_the_second_releases_it(ip, hold, "pbs", cluster.user_dir / "go", timeout=180)


def the_waiting_cell_goes_to_pbs_when_the_hold_dies_under_the_running_one(ip, hold, running, kill, capsys):
    """With ``running`` taking the one-core PBS ``hold``, a second cell waits in its queue; ``kill`` ends the hold
    (qdel, or the worker killed): the running cell fails saying so, and the waiting one goes to PBS with qsub."""
    run_remote(ip, f"pbs --bg --hold {hold.id}", "import os\nlater = os.environ.get('PBS_JOBID')")
    waiting = newest_job()
    assert waiting.record.scheduler_id.startswith("hold:")
    capsys.readouterr()
    kill()
    assert running.wait(timeout=180) is State.FAILED
    assert running.reason == "the hold was killed while the cell ran"
    assert ended(hold, timeout=120).reason == "killed"
    assert waiting.wait(timeout=240) is State.DONE
    assert not waiting.record.scheduler_id.startswith("hold:")     # qsub's job id: a PBS job of its own
    assert f"before job {waiting.id} started: sent it to the pbs scheduler" in capsys.readouterr().err
    ip.run_cell("1")
    assert ip.user_ns["later"] == waiting.record.scheduler_id


def test_an_openpbs_hold_deleted_by_qdel_or_reaching_its_walltime_fails_its_running_cell_with_that_reason(
        ip, pbs, capsys):
    cluster = pbs
    idle = open_hold(ip, "pbs --ncpus 1 --walltime 10m --idle 2s")
    assert ended(idle, timeout=180).reason == "idle"
    # qdel, as a user or an administrator would, while a cell runs: PBS sends the job SIGTERM (exit 271),
    # then SIGKILL after the queue's kill_delay
    deleted = open_hold(ip, "pbs --ncpus 1 --walltime 10m --idle 5m")
    ready(deleted, timeout=180)
    run_remote(ip, f"pbs --bg --hold {deleted.id}", "import time\ntime.sleep(600)")
    running = newest_job()
    wait_for(lambda: running.state is State.RUNNING, "the cell to start in the hold", timeout=120)

    def qdel():
        done = cluster.as_user(f"qdel {deleted.scheduler_id}")
        assert done.returncode == 0, done.stderr
    the_waiting_cell_goes_to_pbs_when_the_hold_dies_under_the_running_one(ip, deleted, running, qdel, capsys)
    a_cell_running_at_the_holds_walltime_fails_with_that_reason(ip, "pbs --ncpus 1")


# ----------------------------------------------------------------------------- cost on a site that charges

def test_a_gadi_hold_shows_its_cost_per_hour_before_and_so_far_after(ip, ssh_target, capsys):
    ssh_target("gadi", scheduler="pbs", profile="gadi", project="a56")
    ip.run_line_magic("rx", "hold gadi --ncpus 48 --mem 190GB --walltime 2h --queue normal --dry-run")
    out = capsys.readouterr().out
    assert "resources held: mem 190 GiB, 48 cpus, walltime 2:00:00, queue normal, project a56" in out
    assert "cost: 96 SU per hour held, at most 192 SU over its walltime" in out
    assert default_registry().holds() == []
    # no Gadi here: the row a hold that ran there for half an hour leaves in the registry
    from rx_magic.model.record import HoldRecord
    target = get_target("gadi")
    default_registry().add_hold(HoldRecord(
        id="hold-20261203-090000-abcdef", target="gadi", scheduler="pbs", workdir=target.workdir,
        scheduler_id="123.gadi-pbs", resources=json.dumps({"ncpus": 48, "mem": 190 * 2**30, "walltime": 7200,
                                                           "queue": "normal", "project": "a56"}),
        created=1_000_000.0, ended_at=1_001_800.0, state="ended", reason="released"))
    ip.run_line_magic("rx", "holds")
    out = capsys.readouterr().out
    assert "ended: the hold was released" in out
    assert "cost 96 SU/h, about 48 SU so far" in out


def test_the_hold_widget_follows_it_from_queued_to_ready_to_ended(ip, monkeypatch):
    from rx_magic.ui import hold_widget
    monkeypatch.setattr(hold_widget, "LOOK_QUEUED", 0.2)
    monkeypatch.setattr(hold_widget, "LOOK_READY", 0.2)
    from rx_magic.flow.holds import open_hold as open_it
    widget = hold_widget.HoldWidget(open_it("local", idle=300), note="cells that fit run in it")
    try:
        assert "queued" in widget.html.value or "ready" in widget.html.value
        wait_for(lambda: "ready on " in widget.html.value, "the widget to show the hold ready")
        assert f"{os.cpu_count() if not hasattr(os, 'sched_getaffinity') else len(os.sched_getaffinity(0))} cores" \
            in widget.html.value
        ip.run_line_magic("rx", f"release {widget.seen.record.id}")
        wait_for(lambda: "ended: the hold was released" in widget.html.value, "the widget to show the hold ended")
        widget._thread.join(10)
        assert not widget._thread.is_alive()        # it stops looking once the hold has ended
        bundle, _ = widget._repr_mimebundle_()
        assert "ended: the hold was released" in bundle["text/plain"]
    finally:
        widget.stop()


def test_a_map_cancelled_in_a_hold_stops_its_elements_and_the_hold_goes_on(ip, tmp_path):
    hold = open_hold(ip, "local --ncpus 2 --idle 5m")
    ready(hold)
    ip.user_ns["folder"] = str(tmp_path)
    run_remote(ip, "local --bg --map n=range(20)", """
        import os, time
        open(os.path.join(folder, str(n)), "w").close()
        time.sleep(600)
    """)
    job = newest_job()
    wait_for(lambda: len(os.listdir(tmp_path)) == 2, "two elements to start, one per core")
    job.cancel()
    assert job.wait(timeout=60) is State.CANCELLED
    assert len(os.listdir(tmp_path)) == 2           # the other 18 never started
    assert os.listdir(HoldPaths(hold.workdir, hold.id).taken_dir) == []
    run_remote(ip, "local", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
    assert ip.user_ns["in_hold"] == hold.id


def test_a_map_in_a_hold_that_reaches_its_walltime_ends_each_element_left_with_that_reason(ip):
    hold = open_hold(ip, "local --ncpus 1 --walltime 12s --idle 5m")
    ready(hold)
    run_remote(ip, f"local --bg --hold {hold.id} --map n=range(3)", "import time\ntime.sleep(600)")
    job = newest_job()
    assert job.wait(timeout=90) is State.FAILED
    reasons = {json.loads(Path(job.paths.element(index).status_json).read_text())["reason"] for index in range(3)}
    assert reasons == {"the hold reached its walltime while the cell ran"}     # the one running and the two waiting
    assert ended(hold).reason == "walltime"

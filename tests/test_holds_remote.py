"""Holds on the remote targets, where tests/test_holds.py left gaps: a ``--map`` over a ready hold over SSH and
on OpenPBS (its elements spread over the hold's cores, every value back in order, a failing element reported),
a --map's logs read in a few requests, and an OpenPBS hold whose worker is killed while a cell runs.

Real parts only: the loopback sshd (tests/sshd.py) and the suite's real OpenPBS (tests/pbs.py, jobs submitted
as ``rxpbs`` over a loopback sshd of its own). Every wait is on evidence (a file, a state), never a sleep.
The helpers, and the fixture that ends a hold a test leaves open, are tests/test_holds.py's.
"""

import os
import signal
from pathlib import Path

from helpers import newest_job, process_is_gone, run_remote, wait_for
from test_holds import (  # noqa: F401
    _end_holds_left_open,
    ended,
    hold_state,
    open_hold,
    pbs,
    ready,
    the_waiting_cell_goes_to_pbs_when_the_hold_dies_under_the_running_one,
    worker_pid,
)

from rx_magic.errors import ArrayFailed
from rx_magic.model.states import State
from rx_magic.targets.target import get_target

#: A --map cell over a two-core hold: each element says where it ran, and waits (a minute at most) until two
#: elements have started, which happens only when they run side by side; element 3 raises.
MAP_CELL = """
    import os, time
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(n)), "w").close()
    deadline = time.time() + 60
    while len(os.listdir(folder)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    side_by_side = len(os.listdir(folder)) >= 2
    where = (os.environ.get("RX_MAGIC_HOLD"), os.environ.get("PBS_JOBID"))
    print("element", n, "of the map")
    if n == 3:
        raise ValueError("three is not wanted")
    square = n * n
"""


def map_over_the_hold(ip, line: str, hold, folder: str, size: int):
    """Run ``MAP_CELL`` over ``n=range(size)`` in ``hold``; check what the notebook got back; return the job."""
    ip.user_ns["folder"] = folder
    result = run_remote(ip, f"{line} --hold {hold.id} --map n=range({size})", MAP_CELL)
    job = newest_job()
    assert job.record.scheduler_id.startswith("hold:")
    assert job.state is State.FAILED and job.record.elements == size
    error = result.error_in_exec
    assert isinstance(error, ArrayFailed), result
    assert f"1 of {size} elements failed" in str(error)
    assert "n=3 (element 3): " in str(error)
    assert "three is not wanted" in str(error.__cause__)     # the element's own traceback
    # every other element's values, in order, None in the failed place
    assert ip.user_ns["square"] == [None if n == 3 else n * n for n in range(size)]
    assert ip.user_ns["side_by_side"] == [None if n == 3 else True for n in range(size)]
    return job


# ----------------------------------------------------------------------------- SSH

def test_a_map_over_a_ready_ssh_hold_runs_side_by_side_reports_its_failing_element_and_reads_its_logs_together(
        ip, ssh_target, tmp_path, monkeypatch):
    hold = open_hold(ip, "ws --ncpus 2 --idle 5m")
    ready(hold)
    job = map_over_the_hold(ip, "ws", hold, str(tmp_path / "met"), 60)
    assert set(ip.user_ns["where"]) - {None} == {(hold.id, None)}      # every element ran in the hold
    # the elements' logs: a request per 50 elements (one round trip each over the sshd), none read on its own
    transport = get_target("ws").transport
    asked, alone = [], []
    read_files, read_bytes = transport.read_files, transport.read_bytes

    def counted_files(paths, limit=None):
        paths = list(paths)
        if any("/elements/" in path and path.endswith("stdout.log") for path in paths):
            asked.append(paths)
        return read_files(paths, limit)

    def counted_bytes(path, *args, **kwargs):
        if "/elements/" in path and path.endswith(".log"):
            alone.append(path)
        return read_bytes(path, *args, **kwargs)
    monkeypatch.setattr(transport, "read_files", counted_files)
    monkeypatch.setattr(transport, "read_bytes", counted_bytes)
    log = job.log()
    assert [len(paths) for paths in asked] == [50, 10] and alone == []
    for n in range(60):
        assert f"── n={n} ──\nelement {n} of the map\n" in log
    # a log longer than its head and tail is read on its own, cut as a single job's is
    (Path(job.paths.element(7).stdout)).write_text("x" * 5000 + "\n" + "y" * 5000 + "\n")
    log = job.log(head=1000, tail=1000)
    assert alone and set(alone) == {job.paths.element(7).stdout}
    assert "── n=7 ──\n" in log and " of stdout cut here; the whole log is " in log
    assert "── n=8 ──\nelement 8 of the map\n" in log


# ----------------------------------------------------------------------------- OpenPBS

def test_a_map_over_a_ready_openpbs_hold_runs_in_its_job_side_by_side_and_reports_its_failing_element(ip, pbs):
    hold = open_hold(ip, "pbs --ncpus 2 --walltime 10m --idle 5m")
    ready(hold, timeout=180)
    map_over_the_hold(ip, "pbs", hold, str(pbs.user_dir / "met"), 8)
    # every element ran inside the hold's PBS job, none as a job of its own
    assert set(ip.user_ns["where"]) - {None} == {(hold.id, hold.scheduler_id)}


def test_an_openpbs_hold_whose_worker_is_killed_mid_cell_fails_the_cell_and_sends_the_waiting_one_to_pbs(
        ip, pbs, capsys):
    hold = open_hold(ip, "pbs --ncpus 1 --walltime 10m --idle 5m")
    ready(hold, timeout=180)
    started = pbs.user_dir / "started"
    ip.user_ns["started"] = str(started)
    run_remote(ip, f"pbs --bg --hold {hold.id}", """
        import os, time
        with open(started, "w") as file:
            file.write(str(os.getpid()))
        time.sleep(600)
    """)
    running = newest_job()
    wait_for(lambda: started.exists() and started.read_text(), "the first cell to start in the hold", timeout=120)
    cell_pid = int(started.read_text())
    # the hold's one core is taken: the next cell waits in its queue, and goes to PBS once the worker is killed
    # (PBS's MoM is this machine, and the test runs as root)
    the_waiting_cell_goes_to_pbs_when_the_hold_dies_under_the_running_one(
        ip, hold, running, lambda: os.kill(worker_pid(hold), signal.SIGKILL), capsys)
    # the hold's batch job has ended, and the cell it was running with it
    wait_for(lambda: process_is_gone(cell_pid), "the killed hold's cell process to end", timeout=120)
    assert hold_state(hold).reason == "killed"

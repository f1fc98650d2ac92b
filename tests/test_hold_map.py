"""A --map's elements pulled together: what the notebook reads of each element's results comes in a few
requests (one round trip each over SSH), not one request per element. Through the loopback sshd (real
OpenSSH, tests/sshd.py): the transport's own read_files is counted, not replaced. And a --map in a local hold:
its elements run in the lanes' own processes (a real worker), each still with its own output and folder."""

import os
from pathlib import Path

from helpers import newest_job, process_is_gone, run_remote, wait_for
from test_holds import _end_holds_left_open, open_hold, ready  # noqa: F401 - a hold left open is stopped

from rx_magic.errors import ArrayFailed, JobFailed
from rx_magic.model.states import State
from rx_magic.targets.target import get_target


def test_a_map_over_ssh_pulls_its_elements_results_in_a_request_per_fifty_elements(ip, ssh_target, monkeypatch):
    transport = get_target("ws").transport
    asked = []
    read_files = transport.read_files

    def counted(paths, limit=None):
        paths = list(paths)
        if any("/elements/" in path and path.endswith("outputs.dill") for path in paths):
            asked.append(paths)
        return read_files(paths, limit)
    monkeypatch.setattr(transport, "read_files", counted)
    result = run_remote(ip, "ws --no-hold --map n=range(60)", """
        square = n * n
        if n == 7:
            print("seven")
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["square"] == [n * n for n in range(60)]
    assert len(asked) == 2      # elements 0-49, then 50-59: every element's results, each pulled once
    assert sum(1 for paths in asked for path in paths if path.endswith("outputs.dill")) == 60


def test_a_map_in_a_local_hold_runs_its_elements_in_the_lanes_and_an_element_that_ends_its_lane_fails_alone(ip):
    """Each core's lane runs its elements in its own process, one after another (as a process pool's workers do):
    each element still gets its own output, working folder and values, and one that ends the lane's process
    (os._exit here; a crash alike) fails with how it ended while a new lane runs the elements left."""
    hold = open_hold(ip, "local --ncpus 2 --idle 5m")
    ready(hold)
    try:
        result = run_remote(ip, "local --map n=range(12)", """
            import os
            pid, where = os.getpid(), os.getcwd()
            print(f"element {n} says hello")
            os.chdir("/")           # its own affair: the lane's next element starts in the cell's folder again
            if n == 4:
                os._exit(7)
            if n == 6:
                raise ValueError("six")
        """)
        failed = result.error_in_exec
        assert isinstance(failed, ArrayFailed), failed
        assert {failure.index for failure in failed.failures} == {4, 6}
        reasons = {failure.index: failure.reason for failure in failed.failures}
        assert "exit code 7" in reasons[4] and "ValueError: six" in reasons[6]
        pids = [pid for index, pid in enumerate(ip.user_ns["pid"]) if index not in (4, 6)]
        assert None not in pids
        assert len(set(pids)) <= 3      # two lanes, and the one that took over from the lane element 4 ended
        assert set(ip.user_ns["where"]) - {None} == {os.getcwd()}
        log = newest_job().log()
        for index in range(12):
            assert log.count(f"element {index} says hello") == 1
    finally:
        ip.run_line_magic("rx", f"release {hold.id}")


def test_a_cell_with_its_own_walltime_in_a_local_hold_is_stopped_at_it_and_the_hold_goes_on(ip):
    """A held cell with no limit of its own runs in the worker's child with no supervisor; one with --walltime still
    gets the runner's supervisor, which stops it there."""
    hold = open_hold(ip, "local --ncpus 1 --idle 5m")
    ready(hold)
    try:
        result = run_remote(ip, "local --walltime 2s", "import time\ntime.sleep(30)")     # unstopped: it ends well
        assert isinstance(result.error_in_exec, JobFailed), result.error_in_exec
        assert "walltime exceeded (0:00:02)" in str(result.error_in_exec)
        assert newest_job().record.scheduler_id.startswith(f"hold:{hold.id}:")
        result = run_remote(ip, "local", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
        assert result.error_in_exec is None and ip.user_ns["in_hold"] == hold.id
    finally:
        ip.run_line_magic("rx", f"release {hold.id}")


def test_a_cancelled_cell_in_a_local_hold_that_ignores_sigterm_is_killed_and_the_hold_goes_on(ip, tmp_path):
    """A held cell with no supervisor of its own still ends when cancelled if it ignores SIGTERM: the worker
    sends SIGKILL after a grace, as a supervisor does to its cell."""
    hold = open_hold(ip, "local --ncpus 1 --idle 5m")
    ready(hold)
    try:
        ip.user_ns["flag"] = str(tmp_path / "started")
        run_remote(ip, "local --bg", """
            import os, signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(flag, "w") as file:
                file.write(str(os.getpid()))
            time.sleep(600)
        """)
        job = newest_job()
        flag = Path(ip.user_ns["flag"])
        wait_for(lambda: flag.exists() and flag.read_text(), "the cell to start")
        job.cancel()
        assert job.wait(timeout=90) is State.CANCELLED
        pid = int(flag.read_text())
        wait_for(lambda: process_is_gone(pid), "the cell's process to end")
        result = run_remote(ip, "local", "import os\nin_hold = os.environ.get('RX_MAGIC_HOLD')")
        assert result.error_in_exec is None and ip.user_ns["in_hold"] == hold.id
    finally:
        ip.run_line_magic("rx", f"release {hold.id}")

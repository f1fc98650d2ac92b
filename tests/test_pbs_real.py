"""The PBS scheduler end to end against a real OpenPBS 23.06 (tests/pbs.py), reached as a laptop reaches Gadi.

The target is an SSH host (``rxpbs``'s login on a loopback sshd); ``qsub``,
``qstat`` and ``qdel`` run in that user's login shell, which finds OpenPBS's
(``/opt/pbs/bin``) before slurm-wlm-torque's in ``/usr/bin``. Every test runs
twice: with job history on (``qstat -x`` keeps finished jobs) and off (PBS's
default: finished jobs vanish from ``qstat``), switched once for each.
The MoM enforces ``--mem`` (``$enforce mem``) and checks limits every 1-2 s.
"""

import re
import time
from pathlib import Path

import pytest
from helpers import cell, newest_job
from pbs import USER, start_for_tests

import rx_magic
import rx_magic.flow.registry
import rx_magic.flow.watch
import rx_magic.targets
from rx_magic.errors import ArrayFailed, JobCancelled, JobFailed
from rx_magic.model.local_dirs import data_home
from rx_magic.model.states import State
from rx_magic.transport.ssh import SSHTransport

#: Generous: CI runs these beside CPU burners; PBS's own scheduling cycle and the MoM's polls add seconds.
LONG = 300


@pytest.fixture(scope="module")
def _cluster():
    cluster = start_for_tests(history=True)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=[True, False], ids=["history-on", "history-off"])
def pbs(request, _cluster):
    """OpenPBS with job history on, then off (one switch for each: the module's tests are grouped by it)."""
    _cluster.switch_history(request.param)
    return _cluster


@pytest.fixture
def target(pbs, tmp_path_factory, monkeypatch, configure_targets):
    """A target ``pbs``: host ``rxtest`` (``User rxpbs`` in a fresh ~/.ssh/config), scheduler ``pbs``,
    workdir with ``{user}`` in it. Returns a function that writes the target with extra keys."""
    home = tmp_path_factory.mktemp("home")
    pbs.server.ssh_config(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def configure(**keys):
        configure_targets(pbs={"host": "rxtest", "scheduler": "pbs", "python": "/usr/bin/python3",
                               "setup": pbs.python_setup, "workdir": str(pbs.root / "{user}" / "jobs"),
                               "poll_interval": 3, **keys})
        return pbs

    configure()
    return configure


def until(predicate, what: str) -> None:
    """Wait, a look every half second (each may be a qstat over ssh), until ``predicate()`` is true."""
    deadline = time.monotonic() + LONG
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.5)


def pbs_records(pbs, job, pattern: str) -> str:
    """Wait until PBS's own record of the job (``qstat -x -f`` with history, else ``tracejob``) matches
    ``pattern``: the server writes it a moment after the job's folder says it ended. Returns the record."""
    said = ""
    deadline = time.monotonic() + LONG
    while time.monotonic() < deadline:
        said = pbs.job_says(job.record.scheduler_id) if pbs.history else pbs.traced(job.record.scheduler_id)
        if re.search(pattern, said):
            return said
        time.sleep(1)
    pytest.fail(f"PBS never recorded {pattern!r} for job {job.record.scheduler_id}:\n{said}")


def job_folder(job) -> Path:
    return Path(job.paths.folder)


def test_a_cell_runs_as_a_pbs_job_with_its_resources_and_its_values_come_back(ip, target, pbs):
    ip.user_ns["x"] = 41
    result = ip.run_cell(cell("pbs --mem 200MB --ncpus 1 --walltime 5m", """
        import os
        y = x + 1
        pbs_job = os.environ.get("PBS_JOBID")
        user = os.environ.get("USER") or os.environ.get("LOGNAME")
    """))
    assert result.error_in_exec is None, result
    assert ip.user_ns["y"] == 42
    job = newest_job()
    assert job.state is State.DONE
    assert isinstance(job.target.transport, SSHTransport)
    # OpenPBS's qsub took it (an id with the server's name, not Slurm's bare number), and ran it as rxpbs
    assert re.fullmatch(r"\d+\.\w+", job.record.scheduler_id)
    assert ip.user_ns["pbs_job"] == job.record.scheduler_id
    assert ip.user_ns["user"] == USER
    # {user} in the workdir is the login user on the target, from ~/.ssh/config
    assert job_folder(job).parent == pbs.root / USER / "jobs"
    lines = (job_folder(job) / "job.sh").read_text().splitlines()
    assert {"#PBS -l mem=200MB", "#PBS -l ncpus=1", "#PBS -l walltime=00:05:00"} <= set(lines)
    recorded = pbs_records(pbs, job, r"Exit_status ?= ?0\b")
    if pbs.history:
        assert "Resource_List.mem = 200mb" in recorded


def test_a_cell_past_its_walltime_fails_saying_walltime(ip, target, pbs):
    result = ip.run_cell(cell("pbs --walltime 3s", "import time\ntime.sleep(240)\nnever = 1"))
    assert isinstance(result.error_in_exec, JobFailed), result
    job = newest_job()
    assert job.state is State.FAILED
    assert "walltime" in job.reason, job.reason
    assert "never" not in ip.user_ns
    pbs_records(pbs, job, r"Exit_status ?= ?-29\b")


def test_a_cell_past_its_memory_fails_saying_memory(ip, target, pbs):
    result = ip.run_cell(cell("pbs --mem 100MB --walltime 5m", """
        import time
        block = bytearray(400 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(240)
        never = 1
    """))
    assert isinstance(result.error_in_exec, JobFailed), result
    job = newest_job()
    assert job.state is State.FAILED
    assert "memory" in job.reason, job.reason
    pbs_records(pbs, job, r"Exit_status ?= ?-27\b")


def test_a_queued_job_is_cancelled_and_pbs_deletes_it(ip, target, pbs):
    # -h (an --extra directive): PBS holds the job, so it is still queued when cancelled
    job = rx_magic.submit("never = 1", "pbs", extra=["-h"])
    until(lambda: job.refresh() is State.QUEUED, "PBS to queue the held job")
    assert job.reason and "held" in job.reason
    job.cancel()
    until(lambda: job.refresh().is_final, "the job to end")
    assert job.state is State.CANCELLED
    gone = pbs.as_user(f"qstat {job.record.scheduler_id}")
    assert gone.returncode != 0 or " F " in gone.stdout     # not queued any more: deleted


def test_a_running_job_is_cancelled_and_pbs_ends_it(ip, target, pbs):
    job = rx_magic.submit("import time\ntime.sleep(240)\nnever = 1", "pbs", walltime="10m")
    until(lambda: job.refresh() is State.RUNNING, "the job to run")
    job.cancel()
    until(lambda: job.refresh().is_final, "the job to end")
    assert job.state is State.CANCELLED
    with pytest.raises(JobCancelled):
        job.pull({})
    # qdel of a running job: 256 + SIGTERM (271), not a walltime kill; or 256 + SIGKILL (265) when the job took
    # longer than the queue's kill_delay (10 s) to end after the SIGTERM, as it may on a loaded machine
    pbs_records(pbs, job, r"Exit_status ?= ?(271|265)\b")


def test_a_job_that_can_never_run_fails_at_once_with_pbss_reason_and_is_deleted(ip, target, pbs):
    # more cores than any machine running these tests has: PBS comments "Can Never Run" and keeps it queued
    result = ip.run_cell(cell("pbs --ncpus 100000", "never = 1"))
    assert isinstance(result.error_in_exec, JobFailed), result
    job = newest_job()
    assert job.state is State.FAILED
    assert "can never run" in job.reason and "Insufficient amount of resource: ncpus" in job.reason, job.reason
    # rx_magic deleted it: PBS no longer holds it queued
    until(lambda: not re.search(r"job_state = [QH]", pbs.as_user(f"qstat -f {job.record.scheduler_id}").stdout),
          "PBS to delete the job")


def test_a_map_runs_as_a_rerunnable_pbs_array_and_each_value_comes_back(ip, target, pbs):
    result = ip.run_cell(cell("pbs --walltime 5m --map seed=range(3)", """
        import os
        y = seed * 10
        index = os.environ.get("PBS_ARRAY_INDEX")
    """))
    assert result.error_in_exec is None, result
    assert ip.user_ns["y"] == [0, 10, 20]
    assert ip.user_ns["index"] == ["0", "1", "2"]       # each element was its own subjob
    job = newest_job()
    assert job.state is State.DONE and job.record.scheduler_id.split(".")[0].endswith("[]")
    lines = (job_folder(job) / "job.sh").read_text().splitlines()
    assert "#PBS -J 0-2" in lines and "#PBS -r y" in lines


def test_a_map_with_a_failing_element_pulls_the_others(ip, target, pbs):
    result = ip.run_cell(cell("pbs --walltime 5m --map seed=[1, 0, 2]", "y = 6 // seed"))
    assert isinstance(result.error_in_exec, ArrayFailed), result
    assert ip.user_ns["y"] == [6, None, 3]


def test_a_map_of_one_value_runs_as_a_plain_job(ip, target, pbs):
    result = ip.run_cell(cell("pbs --walltime 5m --map seed=[7]", "import os\ny = seed\nindex = os.environ.get('PBS_ARRAY_INDEX')"))
    assert result.error_in_exec is None, result
    assert ip.user_ns["y"] == [7] and ip.user_ns["index"] == [None]
    job = newest_job()
    assert "[]" not in job.record.scheduler_id
    assert not [line for line in (job_folder(job) / "job.sh").read_text().splitlines() if line.startswith("#PBS -J")]


def test_a_map_in_one_job_runs_every_value_inside_a_single_pbs_job(ip, target, pbs):
    target(map_in_one_job=True)
    result = ip.run_cell(cell("pbs --ncpus 1 --walltime 5m --map seed=range(4)", """
        import os
        y = seed + 1
        pbs_job = os.environ.get("PBS_JOBID")
    """))
    assert result.error_in_exec is None, result
    assert ip.user_ns["y"] == [1, 2, 3, 4]
    job = newest_job()
    assert set(ip.user_ns["pbs_job"]) == {job.record.scheduler_id}     # one job held all four
    assert "[]" not in job.record.scheduler_id


def test_an_extra_directive_wins_over_rx_magics_own_line(ip, target, pbs):
    target(**{"defaults.walltime": "5m"})    # a target default rx_magic writes as its own line
    # (the magic line does not take quotes, so a directive goes as one word)
    result = ip.run_cell(cell("pbs --extra=-lwalltime=00:07:00 --extra=-Nmine", "y = 1"))
    assert result.error_in_exec is None, result
    job = newest_job()
    lines = (job_folder(job) / "job.sh").read_text().splitlines()
    assert "#PBS -l walltime=00:07:00" in lines and "#PBS -l walltime=00:05:00" not in lines
    assert "#PBS -Nmine" in lines and not [line for line in lines if line.startswith("#PBS -N rx")]
    if pbs.history:
        recorded = pbs_records(pbs, job, r"Exit_status = 0\b")
        assert "Resource_List.walltime = 00:07:00" in recorded and "Job_Name = mine" in recorded


def test_a_job_submitted_before_a_kernel_restart_is_attached_and_pulled_after_it(ip, target, pbs, capsys):
    ip.user_ns["base"] = 20
    result = ip.run_cell(cell("pbs --bg --walltime 5m", "import time\ntime.sleep(8)\nanswer = base + 22"))
    assert result.error_in_exec is None, result
    job_id = newest_job().id
    # what a kernel restart leaves: no monitors, no open targets or connections, the registry closed
    rx_magic.flow.watch.stop_monitors()
    rx_magic.targets.close_all()
    registry = rx_magic.flow.registry._registries.pop(data_home() / "registry.sqlite", None)
    if registry is not None:
        registry.close()
    ip.user_ns.pop("base")
    ip.run_line_magic("rx", f"attach {job_id}")
    assert ip.user_ns.get("answer") == 42
    job = rx_magic.jobs(1)[0]
    assert job.id == job_id and job.state is State.DONE


def test_a_job_pbs_forgets_while_queued_ends_and_says_so(ip, target, pbs):
    job = rx_magic.submit("never = 1", "pbs", extra=["-h"])
    until(lambda: job.refresh() is State.QUEUED, "PBS to queue the held job")
    # deleted behind rx_magic's back (by the user in a terminal, or an administrator): no folder evidence
    deleted = pbs.as_user(f"qdel {job.record.scheduler_id}")
    assert deleted.returncode == 0, deleted.stderr
    assert job.wait(timeout=LONG).is_final, "rx_magic did not see that PBS forgot the job"
    assert job.state in (State.CANCELLED, State.FAILED)
    assert job.reason
    if pbs.history:     # PBS's history says it was deleted before it ran
        assert job.state is State.CANCELLED and "deleted" in job.reason, job.reason


def test_rx_check_shows_the_workdir_with_the_login_user_and_openpbss_commands(ip, target, pbs, capsys):
    ip.run_line_magic("rx", "check pbs")
    shown = capsys.readouterr().out
    workdir = f"{pbs.root / USER / 'jobs'}"
    assert workdir in shown and f"{{user}} = {USER} (User in ~/.ssh/config for rxtest)" in shown, shown
    # the login shell's PATH puts OpenPBS before slurm-wlm-torque's /usr/bin/qsub
    assert "qsub /opt/pbs/bin/qsub" in shown, shown


def test_a_scheduler_path_without_qsub_is_named_in_one_message(ip, target, pbs):
    target(scheduler_path="/opt/nowhere/bin")
    result = ip.run_cell(cell("pbs", "y = 1"))
    error = result.error_in_exec
    assert error is not None and "qsub was not found on rxtest (ssh)" in str(error), error
    assert "/opt/nowhere/bin/qsub" in str(error)
    target(scheduler_path="/opt/pbs/bin")
    assert ip.run_cell(cell("pbs", "y = 2")).error_in_exec is None
    assert ip.user_ns["y"] == 2

"""The PBS scheduler end to end, against Slurm's Torque-compatible ``qsub``/``qstat``/``qdel``.

PBS Pro cannot be installed here, but slurm-wlm-torque's commands are a real
queue in front of the test Slurm (tests/slurm.py), so the PBS scheduler's
submit, poll and cancel run for real over the local transport. Their quirks,
learned here: ``qsub`` prints a bare id; ``#PBS -P`` makes it fail (so these
targets have no project); ``#PBS -o/-e`` are ignored in favour of the command
line's; one resource per ``-l`` line; ``qstat -x`` and ``-F json`` are refused
with exit code 2, so polling takes the ``qstat -f`` text fallback; and an ended
job shows ``C`` with no exit status, so its folder decides how it ended.
"""

import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from helpers import cell, newest_job, observe_until_final, wait_for

import rx_magic
from rx_magic.errors import SchedulerError
from rx_magic.schedulers import PBSScheduler
from rx_magic.model.states import State
from rx_magic.targets import get_target
from rx_magic.transport import LocalTransport

TORQUE_COMMANDS = ("qsub", "qstat", "qdel")


@pytest.fixture
def torque(slurm, configure_targets, tmp_path):
    """A target ``torque``: the PBS scheduler over the local transport, submitting to Slurm's qsub."""
    missing = [name for name in TORQUE_COMMANDS if shutil.which(name) is None]
    if missing:
        message = f"{', '.join(missing)} not found: apt-get install slurm-wlm-torque"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    configure_targets(torque={"scheduler": "pbs", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    return slurm


def test_a_cell_runs_as_a_job_of_torques_qsub_and_its_values_come_back(ip, torque):
    ip.user_ns["x"] = 41
    result = ip.run_cell(cell("torque --mem 200MB --ncpus 1 --walltime 5m", """
        import os
        y = x + 1
        slurm_job = os.environ.get("SLURM_JOB_ID")
        given = {name: os.environ.get(name) for name in ("SLURM_MEM_PER_NODE", "SLURM_JOB_NAME")}
    """))
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 42
    job = newest_job()
    assert job.state is State.DONE
    # qsub printed a bare id, which is Slurm's own
    assert job.record.scheduler_id == ip.user_ns["slurm_job"]
    folder = Path(job.paths.folder)
    # one resource per -l line, which this qsub takes, and Slurm gave the job what they asked
    lines = (folder / "job.sh").read_text().splitlines()
    assert {"#PBS -l ncpus=1", "#PBS -l mem=200MB", "#PBS -l walltime=00:05:00"} <= set(lines)
    assert not [line for line in lines if line.startswith("#PBS -P")]     # no project: this qsub fails on -P
    assert ip.user_ns["given"] == {"SLURM_MEM_PER_NODE": "200", "SLURM_JOB_NAME": lines[1].removeprefix("#PBS -N ")}
    # -o/-e on qsub's command line put the job script's output in the folder
    assert (folder / "scheduler.log").exists() and (folder / "scheduler.err").exists()
    wait_for(lambda: torque.squeue_says(job.record.scheduler_id) == "COMPLETED", "Slurm to say COMPLETED")


def test_a_cell_that_raises_raises_its_own_exception_here(ip, torque):
    result = ip.run_cell(cell("torque", """
        done_before = 1
        raise ValueError("bad input 7")
    """))
    assert isinstance(result.error_in_exec, ValueError)
    assert str(result.error_in_exec) == "bad input 7"
    assert "done_before" not in ip.user_ns
    job = newest_job()
    assert (job.state, job.reason) == (State.FAILED, "the cell raised ValueError: bad input 7")


def test_rx_cancel_ends_a_sleeping_job_cancelled(ip, torque, capsys):
    job = rx_magic.submit("import time\ntime.sleep(300)\nnever = 1", "torque")
    wait_for(lambda: job.refresh() is State.RUNNING, "the job to run")
    ip.run_line_magic("rx", f"cancel {job.id}")
    assert f"{job.id}: cancelled" in capsys.readouterr().out
    assert job.state is State.CANCELLED
    wait_for(lambda: torque.squeue_says(job.record.scheduler_id) == "CANCELLED", "Slurm to record the cancel")
    # qdel of a job that has ended is not an error
    PBSScheduler().cancel(LocalTransport(), job.record.scheduler_id, job.paths.folder)


def test_a_rejected_submission_shows_qsubs_message_and_records_nothing(ip, torque, tmp_path):
    result = ip.run_cell(cell("torque --ncpus 64", "y = 1"))
    assert isinstance(result.error_in_exec, SchedulerError)
    message = str(result.error_in_exec)
    assert message.startswith("qsub refused job rx-"), message
    # Slurm's qsub quotes sbatch's refusal; it reaches the user word for word
    assert "There was an error running the Slurm sbatch command" in message
    assert "sbatch: error: Batch job submission failed: Requested node configuration is not available" in message
    assert rx_magic.jobs() == []
    assert not list((tmp_path / "jobs").glob("rx-*"))
    assert "y" not in ip.user_ns


def test_several_jobs_are_polled_with_one_qstat_per_round_once_the_text_form_is_learned(torque, monkeypatch):
    # each job outlives the submissions, so the first round finds them all live
    jobs = [rx_magic.submit("import time\ntime.sleep(3)\ny = i * i", "torque", {"i": i}) for i in range(6)]
    commands = []
    real_run = LocalTransport.run

    def counting_run(self, argv, **kwargs):
        # the scheduler's commands go through a login shell: bash -lc 'exec qstat ...'
        shown = shlex.split(argv[2])[1:] if tuple(argv[:2]) == ("bash", "-lc") else argv
        commands.append(tuple(shown))
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(LocalTransport, "run", counting_run)
    target = get_target("torque")
    rounds = observe_until_final(target, jobs, commands, timeout=60, pause=0.3)
    # the command each round ran, its job ids (bare numbers from this qsub) left out
    forms = [[tuple(part for part in argv if not part.isdigit()) for argv in round_] for round_ in rounds]
    # the first round is refused -x -F json (exit 2) and falls back to qstat -f; later rounds ask qstat -f alone
    assert forms[0] == [("qstat", "-x", "-f", "-F", "json"), ("qstat", "-f")], rounds[0]
    assert all(form in ([], [("qstat", "-f")]) for form in forms[1:]), rounds
    assert [("qstat", "-f")] in forms[1:], rounds
    assert target.scheduler.QUERY_FORMS[target.scheduler._query_form] == ("qstat", "-f")
    # one command asked for every live job at once
    assert [part for part in rounds[0][-1] if part.isdigit()] == [job.record.scheduler_id for job in jobs]
    assert [job.wait(timeout=10) for job in jobs] == [State.DONE] * len(jobs)
    values = []
    for job in jobs:
        namespace = {}
        job.pull(namespace)
        values.append(namespace["y"])
    assert values == [i * i for i in range(len(jobs))]

"""Slurm over SSH end to end: the test Slurm (tests/slurm.py) reached through a real sshd on loopback.

A laptop submitting to a cluster: the target names an SSH host (``rxtest``,
tests/sshd.py) and the Slurm scheduler, so ``sbatch``, ``squeue``/``sacct``
and ``scancel`` run in the SSH session and the job folder is written and read
over SFTP. The session finds the cluster through ``SLURM_CONF``, which sshd
sets for it (``SetEnv``), as a site's profile would; ``sbatch`` is on sshd's
default PATH (/usr/bin).
"""

import sys

import pytest
from helpers import cell, newest_job, wait_for
from sshd import start_for_tests

import rx_magic
from rx_magic.model.states import State
from rx_magic.transport.ssh import SSHTransport


@pytest.fixture(scope="module")
def sshd(slurm, tmp_path_factory):
    """One real sshd for the module whose sessions reach the test Slurm, in place of conftest's ``sshd``."""
    server = start_for_tests(tmp_path_factory.mktemp("sshd"), extra_config=[f"SetEnv SLURM_CONF={slurm.config}"])
    yield server
    server.stop()


@pytest.fixture
def cluster(ssh_home, slurm, tmp_path_factory, configure_targets):
    """A target ``cluster``: host ``rxtest`` (a fresh ``HOME``'s ~/.ssh/config), scheduler ``slurm``."""
    configure_targets(cluster={"host": "rxtest", "scheduler": "slurm", "python": sys.executable,
                               "workdir": str(tmp_path_factory.mktemp("remote") / "jobs")})
    return slurm


def test_a_cell_runs_as_a_slurm_job_submitted_over_ssh_and_its_values_come_back(ip, cluster):
    ip.user_ns["x"] = 41
    result = ip.run_cell(cell("cluster --mem 200MB", """
        import os
        y = x + 1
        slurm_job = os.environ.get("SLURM_JOB_ID")
        slurm_conf = os.environ.get("SLURM_CONF")
    """))
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 42
    job = newest_job()
    assert job.state is State.DONE
    assert isinstance(job.target.transport, SSHTransport)
    assert ip.user_ns["slurm_job"] == job.record.scheduler_id
    # the SSH session, and so the job, found the cluster through sshd's SetEnv
    assert ip.user_ns["slurm_conf"] == str(cluster.config)
    wait_for(lambda: cluster.squeue_says(job.record.scheduler_id) == "COMPLETED", "Slurm to say COMPLETED")


def test_a_cell_that_raises_over_ssh_raises_its_own_exception_here(ip, cluster):
    result = ip.run_cell(cell("cluster", """
        done_before = 1
        raise ValueError("bad input 7")
    """))
    assert isinstance(result.error_in_exec, ValueError)
    assert str(result.error_in_exec) == "bad input 7"
    assert "done_before" not in ip.user_ns
    job = newest_job()
    assert (job.state, job.reason) == (State.FAILED, "the cell raised ValueError: bad input 7")
    wait_for(lambda: cluster.squeue_says(job.record.scheduler_id) == "FAILED", "Slurm to say FAILED")


def test_rx_cancel_over_ssh_stops_the_job_and_slurm_records_it_cancelled(ip, cluster, capsys):
    job = rx_magic.submit("import time\ntime.sleep(300)\nnever = 1", "cluster")
    wait_for(lambda: job.refresh() is State.RUNNING, "the job to run")
    ip.run_line_magic("rx", f"cancel {job.id}")
    assert f"{job.id}: cancelled" in capsys.readouterr().out
    assert job.state is State.CANCELLED
    wait_for(lambda: cluster.squeue_says(job.record.scheduler_id) == "CANCELLED", "Slurm to record the cancel")

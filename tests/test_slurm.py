"""The Slurm scheduler: golden-file rendering, and ``%%remote`` cells run as jobs of a real Slurm.

The clusters (tests/slurm.py) are private single-node Slurms on loopback, each
started once per session with its own munged, slurmctld and slurmd, key,
ports and folders. The first has no accounting storage, so ``sacct`` refuses
and states come from ``squeue``; the second (tests marked ``[sacct]``) records
jobs through slurmdbd into a private MariaDB, so ``sacct`` answers. Targets
here use the local transport. Outputs that need a cluster in a state these
cannot be put in (NODE_FAIL, a requeue) are recorded lines fed to the parser.
Set RX_REGENERATE_GOLDEN=1 to rewrite the golden files, then read the diff.
"""

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import cell, newest_job, observe_until_final, wait_for
from scripted import ScriptedCommands

import rx_magic
from rx_magic.errors import SchedulerError
from rx_magic.model.resources import Resources
from rx_magic.model.states import SchedulerState, State
from rx_magic.schedulers import SCHEDULERS, JobScript, scheduler_named
from rx_magic.schedulers.slurm import SlurmScheduler, format_memory, format_time
from rx_magic.targets import get_target
from rx_magic.transport import LocalTransport

GOLDEN = Path(__file__).parent / "golden"
JOB_ID = "rx-20261123-141502-3fa9"
WORKDIR = "/home/abc123/rx_jobs"
RUNTIME = ".rx/runtime-0123456789abcdef/runner.py"


def job_script(workdir=WORKDIR, **keys):
    return JobScript(job_id=JOB_ID, folder=f"{workdir}/{JOB_ID}", runner=f"{workdir}/{RUNTIME}",
                     cwd=f"{workdir}/{JOB_ID}/work", **keys)


def directives(text):
    return [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH ")]


# ----------------------------------------------------------------------------- rendering (no cluster)

GOLDEN_CASES = {
    "minimal": job_script(),
    "full": job_script(
        "/scratch/pawsey0001/abc123/rx_jobs", python="/software/projects/pawsey0001/py311/bin/python3",
        setup=("module load python/3.11.6",),
        resources=Resources.parse(mem="8GB", ncpus=4, ngpus=1, walltime="2:00:00", queue="work",
                                  project="pawsey0001", jobfs="10GB", name="fit_model")),
    "extra": job_script(resources=Resources.parse(
        mem="1.5GB", walltime="1-12:00:00", extra=["--qos=debug", "#SBATCH --mail-type=END"])),
    "odd_folder": job_script("/home/abc123/my \"rx\" jobs 100%"),
}


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_rendered_script_matches_its_golden_file(case):
    text = SlurmScheduler().render(GOLDEN_CASES[case])
    golden = GOLDEN / f"slurm_{case}.sh"
    if os.environ.get("RX_REGENERATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_slurm_is_registered_and_enforces_limits_itself():
    assert SCHEDULERS["slurm"] is SlurmScheduler
    assert scheduler_named("slurm").enforces_limits


@pytest.mark.parametrize("size, expected", [("8GB", "8G"), ("1.5GB", "1536M"), ("512MB", "512M"),
                                            ("100KB", "1M"), ("1TB", "1024G")])
def test_memory_is_whole_gigabytes_or_megabytes_rounded_up(size, expected):
    assert format_memory(Resources.parse(mem=size).mem) == expected


@pytest.mark.parametrize("walltime, expected", [("90m", "01:30:00"), ("45s", "00:00:45"), ("23:59:59", "23:59:59"),
                                                ("36h", "1-12:00:00"), ("3-00:00:01", "3-00:00:01")])
def test_time_is_hh_mm_ss_or_days_hh_mm_ss(walltime, expected):
    assert format_time(Resources.parse(walltime=walltime).walltime) == expected


def test_directives_come_before_the_first_command():
    lines = SlurmScheduler().render(GOLDEN_CASES["full"]).splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))


def test_logs_go_into_the_job_folder():
    script = job_script()
    lines = directives(SlurmScheduler().render(script))
    assert f"--output={script.folder}/scheduler.log" in lines
    assert f"--error={script.folder}/scheduler.err" in lines
    assert f"--chdir={script.folder}" in lines


def test_a_job_folder_sbatch_lines_cannot_carry_goes_on_the_command_line(tmp_path):
    script = GOLDEN_CASES["odd_folder"]
    assert not [line for line in directives(SlurmScheduler().render(script))
                if line.startswith(("--output", "--error", "--chdir"))]
    transport = ScriptedTransport((("sbatch",), (0, "4242\n", "")))
    assert SlurmScheduler().submit(transport, script) == "4242"
    assert transport.calls == [("sbatch", "--parsable", f"--chdir={script.folder}",
                                f"--output={script.folder}/scheduler.log".replace("%", "%%"),
                                f"--error={script.folder}/scheduler.err".replace("%", "%%"), script.job_sh)]


def test_extra_lines_are_passed_through_once_each():
    lines = directives(SlurmScheduler().render(GOLDEN_CASES["extra"]))
    assert lines[-2:] == ["--qos=debug", "--mail-type=END"]


# ----------------------------------------------------------------------------- reading states (recorded outputs)

class ScriptedTransport(ScriptedCommands):
    """Answers each command from (argv prefix, (code, stdout, stderr)) pairs; files from a dict."""

    description = "setonix (ssh)"

    def __init__(self, *answers, files=None):
        super().__init__(*answers)
        self.files = files or {}

    def read_bytes(self, path, offset=0):
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path][offset:]

    def exists(self, path): raise NotImplementedError
    def open_read(self, path): raise NotImplementedError
    def open_atomic(self, path, mode=0o600): raise NotImplementedError
    def makedirs(self, path, mode=0o700): raise NotImplementedError
    def rename(self, source, destination): raise NotImplementedError
    def remove_tree(self, path): raise NotImplementedError
    def listdir(self, path): raise NotImplementedError
    def expand_home(self, path): return path


# sacct -X --parsable2 --noheader --format=JobID,State,ExitCode,ReqMem,Timelimit,Reason: lines 101-108 and
# 115 recorded from the test cluster with slurmdbd (Slurm 22.05.8, job ids renumbered); 109-114 written in
# the same format for states a one-node cluster cannot be put in (sacct writes OUT_OF_MEMORY with 0:125).
SACCT = """\
101|PENDING|0:0|16?||None
102|PENDING|0:0|500M|Partition_Limit|JobHeldUser
103|RUNNING|0:0|500M|00:01:00|None
104|COMPLETED|0:0|100M|UNLIMITED|None
105|FAILED|3:0|100M|UNLIMITED|None
107|TIMEOUT|0:0|500M|00:01:00|None
108|CANCELLED by 0|0:0|500M|00:02:00|None
106|OUT_OF_MEMORY|0:125|8G|02:00:00|None
109|NODE_FAIL|0:0|8G|1-00:00:00|None
110|SUSPENDED|0:0|8G|02:00:00|None
111|COMPLETING|0:0|8G|02:00:00|None
112|REQUEUED|0:0|8G|02:00:00|None
113|DEADLINE|0:0|8G|02:00:00|None
114|BOOT_FAIL|0:0|8G|02:00:00|None
115|FAILED|0:9|100M|UNLIMITED|None
"""
EXPECTED = {
    "101": SchedulerState(State.QUEUED, None, 0),
    "102": SchedulerState(State.QUEUED, "held", 0),
    "103": SchedulerState(State.RUNNING, None, 0),
    "104": SchedulerState(State.DONE, None, 0),
    "105": SchedulerState(State.FAILED, None, 3),
    "106": SchedulerState(State.FAILED, "out of memory (8 GiB)", 253),
    "107": SchedulerState(State.FAILED, "walltime exceeded (0:01:00)", 0),
    "108": SchedulerState(State.CANCELLED, "cancelled by uid 0", 0),
    "109": SchedulerState(State.FAILED, "the node failed", 0),
    "110": SchedulerState(State.QUEUED, "held", 0),
    "111": SchedulerState(State.RUNNING, None, 0),
    "112": SchedulerState(State.QUEUED, "requeued", 0),
    "113": SchedulerState(State.FAILED, "deadline reached", 0),
    "114": SchedulerState(State.FAILED, "the node failed to boot", 0),
    "115": SchedulerState(State.FAILED, "out of memory (100 MiB)", 137),
}
# what slurmstepd wrote to job 115's error file when OverMemoryKill ended it (recorded on the test cluster)
MEMORY_KILLED = (b"slurmstepd-rxnode: error: StepId=115.batch exceeded memory limit (215109632 > 104857600), "
                 b"being killed\nslurmstepd-rxnode: error: *** JOB 115 ON rxnode CANCELLED AT 2026-11-23T08:52:28 ***\n"
                 b"slurmstepd-rxnode: error: Exceeded job memory limit\n")


def folders(ids):
    return {job: f"/scratch/rx/{job}" for job in ids}


def test_one_sacct_reads_every_job_and_each_slurm_state_maps_to_one_of_ours():
    transport = ScriptedTransport((("sacct",), (0, SACCT, "")),
                                  files={"/scratch/rx/115/scheduler.err": MEMORY_KILLED})
    states = SlurmScheduler().query(transport, folders(EXPECTED))
    assert states == EXPECTED
    assert len(transport.calls) == 1
    assert transport.calls[0][-1] == ",".join(EXPECTED)


def test_a_failed_job_without_slurmstepds_memory_message_is_plain_failed():
    transport = ScriptedTransport((("sacct",), (0, "115|FAILED|0:9|100M|UNLIMITED|None\n", "")))
    assert SlurmScheduler().query(transport, folders(["115"])) == {"115": SchedulerState(State.FAILED, None, 137)}


def test_out_of_memory_names_the_cells_request_when_slurmdbd_has_not_recorded_it_yet():
    # slurmdbd lags slurmctld: a job's first record there has ReqMem "16?" and no time limit
    transport = ScriptedTransport((("sacct",), (0, "115|FAILED|0:9|16?||None\n", "")), files={
        "/scratch/rx/115/scheduler.err": MEMORY_KILLED,
        "/scratch/rx/115/job.json": json.dumps({"resources": {"mem": 100 * 2**20}}).encode()})
    assert SlurmScheduler().query(transport, folders(["115"])) == {
        "115": SchedulerState(State.FAILED, "out of memory (100 MiB)", 137)}


def test_jobs_sacct_has_not_heard_of_yet_are_asked_of_squeue_and_unknown_ones_are_none():
    transport = ScriptedTransport((("sacct",), (0, "201|RUNNING|0:0|8G|02:00:00|None\n", "")),
                                  (("squeue",), (0, "202|PENDING|Priority|2:00:00|8G\n", "")))
    states = SlurmScheduler().query(transport, folders(["201", "202", "203"]))
    assert states == {"201": SchedulerState(State.RUNNING, None, 0),
                      "202": SchedulerState(State.QUEUED, "waiting for higher-priority jobs"),
                      "203": SchedulerState(None)}
    assert [call[0] for call in transport.calls] == ["sacct", "squeue"]
    assert transport.calls[1][-1] == "202,203"


# squeue --noheader --states=all --format=%i|%T|%r|%l|%m, recorded from the test cluster without accounting
SQUEUE = """\
1|TIMEOUT|TimeLimit|1:00|500M
2|PENDING|JobHeldUser|UNLIMITED|500M
3|CANCELLED|None|2:00|500M
6|FAILED|JobLaunchFailure|UNLIMITED|100M
7|RUNNING|None|UNLIMITED|500M
"""


def test_without_accounting_squeue_answers_and_sacct_is_not_asked_again():
    transport = ScriptedTransport((("sacct",), (1, "", "Slurm accounting storage is disabled\n")),
                                  (("squeue",), (0, SQUEUE, "")),
                                  files={"/scratch/rx/6/scheduler.err": MEMORY_KILLED})
    scheduler = SlurmScheduler()
    jobs = folders(["1", "2", "3", "6", "7"])
    expected = {"1": SchedulerState(State.FAILED, "walltime exceeded (0:01:00)"),
                "2": SchedulerState(State.QUEUED, "held"),
                "3": SchedulerState(State.CANCELLED, "cancelled"),
                "6": SchedulerState(State.FAILED, "out of memory (100 MiB)"),
                "7": SchedulerState(State.RUNNING)}
    assert scheduler.query(transport, jobs) == expected
    assert scheduler.query(transport, jobs) == expected
    assert [call[0] for call in transport.calls] == ["sacct", "squeue", "squeue"]


def test_a_failing_squeue_is_a_scheduler_error_naming_the_command():
    transport = ScriptedTransport(
        (("sacct",), (1, "", "Slurm accounting storage is disabled\n")),
        (("squeue",), (1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")))
    with pytest.raises(SchedulerError, match="Unable to contact slurm controller") as caught:
        SlurmScheduler().query(transport, folders(["301"]))
    assert "squeue --noheader --states=all" in str(caught.value)


# ----------------------------------------------------------------------------- a real Slurm

@pytest.fixture
def hpc(slurm, configure_targets, tmp_path):
    """A target ``hpc``: Slurm without accounting over the local transport, jobs in ``tmp_path/jobs``."""
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    return slurm


def slurm_says(cluster, scheduler_id):
    """squeue's word on a job: "STATE|REASON", for the assertions' own check."""
    return cluster.squeue_says(scheduler_id, "%T|%r")


def running_job_named(cluster, name):
    found = cluster.client("squeue", "--noheader", "--states=RUNNING", "--name", name, "--format=%i")
    return found.stdout.strip()


def test_cell_runs_as_a_slurm_job_and_its_values_come_back(ip, any_hpc):
    ip.user_ns["x"] = 41
    result = ip.run_cell(cell("hpc", """
        import os
        y = x + 1
        slurm_job = os.environ.get("SLURM_JOB_ID")
    """))
    assert result.error_in_exec is None
    job = newest_job()
    assert ip.user_ns["y"] == 42
    assert ip.user_ns["slurm_job"] == job.record.scheduler_id
    assert job.state is State.DONE
    # the folder says done a moment before Slurm has seen the job script end
    wait_for(lambda: slurm_says(any_hpc, job.record.scheduler_id) == "COMPLETED|None", "Slurm to say COMPLETED")


def test_resources_asked_for_are_what_slurm_gives_the_job(ip, hpc):
    result = ip.run_cell(cell("hpc --mem 300MB --ncpus 2 --walltime 5m --name fit_model", """
        import os, subprocess
        given = {name: os.environ.get(name) for name in ("SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE", "SLURM_JOB_NAME")}
        shown = subprocess.run(["scontrol", "show", "job", os.environ["SLURM_JOB_ID"]],
                               capture_output=True, text=True).stdout
    """))
    assert result.error_in_exec is None
    assert ip.user_ns["given"] == {"SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_NODE": "300",
                                   "SLURM_JOB_NAME": "fit_model"}
    assert "TimeLimit=00:05:00" in ip.user_ns["shown"]


def test_a_cell_that_raises_fails_the_job_and_raises_its_own_exception_here(ip, any_hpc):
    result = ip.run_cell(cell("hpc", """
        done_before = 1
        raise ValueError("bad input 7")
    """))
    assert isinstance(result.error_in_exec, ValueError)
    assert str(result.error_in_exec) == "bad input 7"
    assert "done_before" not in ip.user_ns
    job = newest_job()
    assert job.state is State.FAILED
    assert job.reason == "the cell raised ValueError: bad input 7"
    wait_for(lambda: slurm_says(any_hpc, job.record.scheduler_id).startswith("FAILED|"), "Slurm to say FAILED")


def test_walltime_slurm_enforces_fails_the_job_saying_so(ip, hpc):
    # Slurm counts time limits in whole minutes and checks them every 30 s. Rather than wait a minute
    # or more, an administrator's `scontrol update EndTime=now` brings the limit forward: what follows
    # (slurmctld ends the job for its time limit, TIMEOUT) is what happens when the minute runs out.
    def bring_the_end_forward():
        wait_for(lambda: running_job_named(hpc, "walltime_test"), "the job to start")
        hpc.client("scontrol", "update", f"JobId={running_job_named(hpc, 'walltime_test')}", "EndTime=now")

    helper = threading.Thread(target=bring_the_end_forward, daemon=True)
    helper.start()
    started = time.monotonic()
    result = ip.run_cell(cell("hpc --walltime 1m --name walltime_test", """
        import time
        time.sleep(300)
        never = 1
    """))
    helper.join(5)
    assert isinstance(result.error_in_exec, rx_magic.JobFailed)
    assert "failed: walltime exceeded (0:01:00)" in str(result.error_in_exec)
    assert "never" not in ip.user_ns
    assert time.monotonic() - started < 60
    job = newest_job()
    assert (job.state, job.reason) == (State.FAILED, "walltime exceeded (0:01:00)")
    assert slurm_says(hpc, job.record.scheduler_id) == "TIMEOUT|TimeLimit"


def test_memory_over_what_was_asked_for_fails_the_job_out_of_memory(ip, any_hpc):
    result = ip.run_cell(cell("hpc --mem 100MB", """
        import time
        import numpy as np
        big = np.ones(500 * 2**20 // 8)
        time.sleep(60)
    """))
    assert isinstance(result.error_in_exec, rx_magic.JobFailed)
    assert "failed: out of memory (100 MiB)" in str(result.error_in_exec)
    assert "big" not in ip.user_ns
    assert newest_job().state is State.FAILED


def test_cancel_stops_a_running_job_and_slurm_records_it_cancelled(ip, any_hpc, capsys):
    job = rx_magic.submit("import time\ntime.sleep(300)\nnever = 1", "hpc")
    wait_for(lambda: job.refresh() is State.RUNNING, "the job to run")
    ip.run_line_magic("rx", f"cancel {job.id}")
    assert f"{job.id}: cancelled" in capsys.readouterr().out
    assert job.state is State.CANCELLED
    wait_for(lambda: slurm_says(any_hpc, job.record.scheduler_id).startswith("CANCELLED"), "Slurm to record the cancel")


def test_cancelling_a_job_that_ended_or_slurm_never_knew_is_not_an_error(hpc):
    job = rx_magic.submit("y = 1", "hpc")
    assert job.wait(timeout=60) is State.DONE
    completed = lambda: slurm_says(hpc, job.record.scheduler_id) == "COMPLETED|None"  # noqa: E731
    wait_for(completed, "Slurm to say COMPLETED")
    scheduler = SlurmScheduler()
    scheduler.cancel(LocalTransport(), job.record.scheduler_id, job.paths.folder)
    scheduler.cancel(LocalTransport(), "999999", "/nowhere")
    assert completed()


def test_a_job_waiting_for_memory_is_queued_with_slurms_reason(hpc):
    most = f"{hpc.memory_mb * 3 // 4}MB"
    first = rx_magic.submit("import time\ntime.sleep(300)", "hpc", mem=most)
    wait_for(lambda: first.refresh() is State.RUNNING, "the first job to run")
    second = rx_magic.submit("y = 1", "hpc", mem=most)
    # until slurmctld's next scheduling pass has looked at it, Slurm gives no reason
    wait_for(lambda: second.refresh() is State.QUEUED and second.reason, "Slurm to say why the job waits")
    assert second.reason in ("waiting for resources", "waiting for higher-priority jobs")
    first.cancel()
    assert second.wait(timeout=60) is State.DONE


def test_a_request_slurm_refuses_raises_sbatchs_own_message_and_records_nothing(ip, hpc, tmp_path):
    result = ip.run_cell(cell("hpc --ncpus 64", "y = 1"))
    assert isinstance(result.error_in_exec, SchedulerError)
    assert "sbatch: error: Batch job submission failed: More processors requested than permitted" \
        in str(result.error_in_exec)
    assert rx_magic.jobs() == []
    assert not list((tmp_path / "jobs").glob("rx-*"))
    assert "y" not in ip.user_ns


def test_a_job_folder_with_spaces_quotes_and_percent_signs_works(ip, slurm, configure_targets, tmp_path):
    workdir = tmp_path / "my \"rx\" jobs 100%"
    configure_targets(odd={"scheduler": "slurm", "workdir": str(workdir), "python": sys.executable})
    result = ip.run_cell(cell("odd", "print('hello from slurm')\ny = 2"))
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 2
    folder = Path(newest_job().paths.folder)
    assert folder.parent == workdir
    assert (folder / "scheduler.log").exists() and (folder / "scheduler.err").exists()


def test_a_job_slurm_has_forgotten_is_left_to_its_folder(hpc):
    assert SlurmScheduler().query(LocalTransport(), {"999999": "/nowhere"}) == {"999999": SchedulerState(None)}


def test_fifty_jobs_are_polled_with_one_scheduler_command_per_round(any_hpc, monkeypatch):
    jobs = [rx_magic.submit("y = i * i", "hpc", {"i": i}) for i in range(50)]
    commands = []
    real_run = LocalTransport.run

    def counting_run(self, argv, **kwargs):
        words = list(argv)
        if words[:2] in (["bash", "-lc"], ["bash", "-c"]) and words[2].startswith("exec "):
            words = shlex.split(words[2].removeprefix("exec "))      # sent through the login shell
        if words[0] in ("sacct", "squeue", "scontrol", "sinfo"):
            commands.append(words[0])
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(LocalTransport, "run", counting_run)
    target = get_target("hpc")
    rounds = observe_until_final(target, jobs, commands, timeout=120, pause=0.5)
    # at most two commands a round, however many jobs are live; none once every folder says done
    if any_hpc.accounting:
        # sacct, and squeue only for jobs slurmdbd has not heard of yet (it lags a few seconds)
        assert all(round_ in ([], ["sacct"], ["sacct", "squeue"]) for round_ in rounds), rounds
        assert ["sacct"] in rounds
    else:
        # the first round learns that this cluster has no accounting (sacct refuses); then squeue alone
        assert rounds[0] == ["sacct", "squeue"]
        assert all(round_ in ([], ["squeue"]) for round_ in rounds[1:]), rounds
    assert [job.wait(timeout=10) for job in jobs] == [State.DONE] * 50
    values = []
    for job in jobs:
        namespace = {}
        job.pull(namespace)
        values.append(namespace["y"])
    assert values == [i * i for i in range(50)]

"""Job arrays from one cell: ``%%remote TARGET --map NAME=EXPR``.

End to end on the local target (a pool of processes) and on a real Slurm
(``sbatch --array``, over the local transport, states from squeue and from
sacct); PBS Pro's ``-J`` is checked in its rendering and in qstat -t output
written to the PBS Pro reference format.
"""

import json
import sys
from pathlib import Path

import pytest
from helpers import cell, newest_job, process_is_gone, wait_for
from IPython.core.error import UsageError
from scripted import ScriptedCommands

import rx_magic
from rx_magic.errors import ArrayFailed
from rx_magic.flow.arrays import array_status, parse_map
from rx_magic.schedulers.base import expand_indices
from rx_magic.model.states import scheduler_array_state
from rx_magic.errors import InputError
from rx_magic.flow.registry import Registry
from rx_magic.model.resources import Resources
from rx_magic.schedulers import JobScript, PBSScheduler
from rx_magic.schedulers.pbs import parse_qstat_json
from rx_magic.schedulers.slurm import SlurmScheduler
from rx_magic.model.states import SchedulerState, State

FIXTURES = Path(__file__).parent / "fixtures" / "pbs"


# ----------------------------------------------------------------------------- on the local target

def test_each_value_runs_in_its_own_process_and_pulled_names_come_back_as_lists_in_order(ip, capsys):
    ip.user_ns["offset"] = 100
    result = ip.run_cell(cell("local --map seed=[3, 1, 4, 1, 5]", """
        import os
        y = seed * 2 + offset
        pid = os.getpid()
        print("seed is", seed)
        y
    """))
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == [106, 102, 108, 102, 110]
    assert len(set(ip.user_ns["pid"])) == 5                  # five processes, none of them this kernel
    assert ip.user_ns["pid"][0] != __import__("os").getpid()
    assert "seed" not in ip.user_ns                          # NAME is bound in the elements only
    shown = capsys.readouterr().out
    assert shown.index("── seed=3 ──\nseed is 3") < shown.index("── seed=5 ──\nseed is 5")
    assert str(result.result) == "[106, 102, 108, 102, 110]"    # the trailing expression, element by element
    job = newest_job()
    assert job.state is State.DONE and job.record.elements == 5


def test_a_failing_element_is_reported_with_its_value_and_traceback_and_the_others_are_pulled(ip):
    ip.user_ns["total"] = 12
    result = ip.run_cell(cell("local --map divisor=[4, 0, 3]", "share = total / divisor"))
    error = result.error_in_exec
    assert isinstance(error, ArrayFailed)
    assert ip.user_ns["share"] == [3.0, None, 4.0]
    message = str(error)
    assert "1 of 3 elements failed" in message
    assert "divisor=0 (element 1): the cell raised ZeroDivisionError: division by zero" in message
    assert "None in the failed places of share" in message
    assert "ZeroDivisionError" in str(error.__cause__) and "share = total / divisor" in str(error.__cause__)
    assert [failure.index for failure in error.failures] == [1]
    assert newest_job().state is State.FAILED


def test_an_element_over_its_walltime_fails_alone(ip):
    result = ip.run_cell(cell("local --walltime 2s --map nap=[0, 30]", """
        import time
        time.sleep(nap)
        slept = nap
    """))
    assert isinstance(result.error_in_exec, ArrayFailed)
    assert "nap=30 (element 1): walltime exceeded (0:00:02)" in str(result.error_in_exec)
    assert ip.user_ns["slept"] == [0, None]


def test_the_pool_runs_elements_at_once_up_to_the_cores_each_asks_for(ip):
    import os
    cores = len(os.sched_getaffinity(0))
    result = ip.run_cell(cell(f"local --ncpus {cores} --map i=range(3)", """
        import time
        began = time.time()
        time.sleep(0.3)
        ended = time.time()
    """))
    assert result.error_in_exec is None
    spans = sorted(zip(ip.user_ns["began"], ip.user_ns["ended"]))
    # each element asked for every core: one at a time
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_cancelling_an_array_stops_its_running_elements_and_starts_no_more(ip):
    result = ip.run_cell(cell("local --bg --ncpus 1 --map i=range(50)", """
        import os, time
        pid = os.getpid()
        time.sleep(60)
    """))
    assert result.error_in_exec is None
    job = newest_job()
    folder = Path(job.paths.folder)
    wait_for(lambda: any((folder / "elements" / str(i) / "status.json").exists() for i in range(50)),
             "an element to start")
    running = [json.loads((folder / "elements" / str(i) / "status.json").read_text())["pid"]
               for i in range(50) if (folder / "elements" / str(i) / "status.json").exists()]
    ip.run_line_magic("rx", f"cancel {job.id}")
    wait_for(lambda: job.state.is_final, "the array to end", timeout=30)
    assert job.state is State.CANCELLED
    assert all(process_is_gone(pid) for pid in running)
    started = [i for i in range(50) if (folder / "elements" / str(i)).exists()]
    assert len(started) < 50


@pytest.mark.parametrize("text, expected", [
    ("5=range(3)", "write it as NAME=EXPR"),
    ("seed", "write it as NAME=EXPR"),
    ("lambda=range(3)", "'lambda' is a Python keyword"),
    ("seed=range(", "EXPR is not a Python expression"),
    ("seed=no_such_name", "evaluating EXPR here raised NameError"),
    ("seed=42", "EXPR gave a int; it must be a list"),
    ("seed='abc'", "EXPR gave a str"),
    ("seed=[]", "EXPR has no values"),
    ("seed=range(20000)", "more than 10000 values"),
])
def test_a_bad_map_is_refused_before_anything_is_written(ip, text, expected, isolated):
    with pytest.raises(UsageError, match=expected.replace("(", r"\(")):
        ip.run_cell_magic("remote", f"local --map {text}", "y = seed\n")
    assert rx_magic.jobs() == []


def test_map_values_that_cannot_be_pickled_are_named(ip):
    import threading
    ip.user_ns["locks"] = [threading.Lock()]
    with pytest.raises(UsageError, match="--map lock"):
        ip.run_cell_magic("remote", "local --map lock=locks", "y = 1\n")
    assert rx_magic.jobs() == []


def test_dry_run_shows_the_array_and_the_value_of_each_element(ip, capsys):
    ip.run_cell_magic("remote", "local --dry-run --map alpha=[0.1, 0.2, 0.3]", "fit = alpha * 2\n")
    shown = capsys.readouterr().out
    assert "array: 3 elements, alpha = 0.1, 0.2, 0.3" in shown
    assert "--pool" in shown                            # the direct scheduler runs them from one pool
    assert rx_magic.jobs() == []


def test_expr_with_spaces_needs_no_quotes(ip):
    result = ip.run_cell(cell("local --map x=[1, 2, 3] --walltime 1m", "y = x * 10"))
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == [10, 20, 30]


def test_parse_map_evaluates_expr_once_in_the_notebook():
    calls = []
    request = parse_map("seed = make()", {"make": lambda: calls.append(1) or range(4)})
    assert (request.name, request.values, len(calls)) == ("seed", [0, 1, 2, 3], 1)
    with pytest.raises(InputError):
        parse_map("seed==3", {})


# ----------------------------------------------------------------------------- the array's state, from its parts

def test_an_array_is_running_until_every_element_has_ended_then_failed_if_any_failed():
    done = {"state": "done", "started": 1.0, "ended": 2.0}
    failed = {"state": "failed", "reason": "the cell raised ValueError", "started": 1.0, "ended": 3.0}
    running = array_status(3, {0, 1}, {0: done}, None)
    assert running["state"] == "running" and running["elements"] == "drq"
    assert array_status(3, set(), {}, None) is None
    ended = array_status(3, {0, 1, 2}, {0: done, 1: failed, 2: done}, None)
    assert ended["state"] == "failed" and ended["reason"] == "1 of 3 elements failed"
    assert ended["failed_elements"] == {"1": "the cell raised ValueError"} and ended["ended"] == 3.0


def test_elements_the_scheduler_ended_without_a_status_take_its_word():
    gone = SchedulerState(State.FAILED, None, None, {1: SchedulerState(State.FAILED, "walltime exceeded (0:01:00)"),
                                                    2: SchedulerState(State.FAILED, None)})
    status = array_status(3, {0, 1}, {0: {"state": "done"}}, gone)
    assert status["state"] == "failed" and status["elements"] == "dff"
    assert status["failed_elements"] == {"1": "walltime exceeded (0:01:00)", "2": "it never started"}
    cancelled = array_status(3, {0}, {0: {"state": "done"}}, SchedulerState(None), cancel_requested=True)
    assert cancelled["state"] == "cancelled" and cancelled["elements"] == "dcc"


def test_slurm_and_pbs_index_lists_expand():
    assert expand_indices("5-9") == [5, 6, 7, 8, 9]
    assert expand_indices("1,3,5-6") == [1, 3, 5, 6]
    assert expand_indices("0-6:3") == [0, 3, 6]
    assert expand_indices("2-4%2") == [2, 3, 4]


def test_one_running_element_makes_the_array_running_and_all_done_makes_it_done():
    queued, running, done = SchedulerState(State.QUEUED, "waiting for resources"), SchedulerState(State.RUNNING), \
        SchedulerState(State.DONE)
    assert scheduler_array_state({0: queued, 1: queued}).state is State.QUEUED
    assert scheduler_array_state({0: queued, 1: queued}).reason == "waiting for resources"
    assert scheduler_array_state({0: done, 1: queued}).state is State.RUNNING
    assert scheduler_array_state({0: done, 1: running}).state is State.RUNNING
    assert scheduler_array_state({0: done, 1: done}).state is State.DONE


# ----------------------------------------------------------------------------- rendering and parsing

def array_script(elements, **keys):
    return JobScript(job_id="rx-20261123-141502-3fa9c1", folder="/scratch/ab12/abc123/rx/rx-20261123-141502-3fa9c1",
                     runner="/scratch/ab12/abc123/rx/.rx/runtime-0123/runner.py", elements=elements,
                     resources=Resources.parse(mem="4GB", ncpus=2, walltime="1:00:00"), **keys)


def test_slurm_renders_an_array_with_each_elements_logs_by_index():
    text = SlurmScheduler().render(array_script(20))
    assert "#SBATCH --array=0-19" in text
    assert "#SBATCH --output=/scratch/ab12/abc123/rx/rx-20261123-141502-3fa9c1/elements/%a.log" in text
    assert 'element=$SLURM_ARRAY_TASK_ID' in text
    assert 'runner.py /scratch/ab12/abc123/rx/rx-20261123-141502-3fa9c1 "$element"' in text
    assert '/elements/"$element"/exit_code' in text


def test_pbs_renders_an_array_with_j_and_a_single_element_as_a_plain_job():
    pbs = PBSScheduler()
    text = pbs.render(array_script(20))
    assert "#PBS -J 0-19\n" in text
    assert 'element="${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-$SLURM_ARRAY_TASK_ID}}"' in text
    assert pbs.output_paths(array_script(20))[0].endswith("/elements/^array_index^.log")
    single = pbs.render(array_script(1))
    assert "-J" not in single and "element=0\n" in single


def test_on_gadi_a_map_runs_inside_one_job_not_as_a_pbs_array():
    text = PBSScheduler(profile="gadi").render(array_script(20))
    assert "#PBS -J" not in text and "--pool" in text


class _Answers(ScriptedCommands):
    """A submit host that answers commands from recorded output (for parsing only); its folders are empty."""

    description = "recorded"

    def __init__(self, answers):
        super().__init__(*answers)

    def read_bytes(self, path, offset=0):
        raise FileNotFoundError(path)

    def exists(self, path):
        return False

    def open_read(self, path):
        raise FileNotFoundError(path)

    def open_atomic(self, path, mode=0o600):
        raise NotImplementedError

    def makedirs(self, path, mode=0o700):
        pass

    def rename(self, source, destination):
        pass

    def remove_tree(self, path):
        return 0

    def listdir(self, path):
        return []

    def expand_home(self, path):
        return path


def test_sacct_lines_of_an_array_become_one_state_with_each_element_kept():
    sacct = ("4242_0|COMPLETED|0:0|4G|01:00:00|None\n"
             "4242_1|TIMEOUT|0:15|4G|00:01:00|TimeLimit\n"
             "4242_2|RUNNING|0:0|4G|01:00:00|None\n"
             "4242_[3-5%2]|PENDING|0:0|4G|01:00:00|JobArrayTaskLimit\n")
    transport = _Answers([(("sacct",), (0, sacct, ""))])
    said = SlurmScheduler().query(transport, {"4242": "/jobs/rx-x"})["4242"]
    assert said.state is State.RUNNING
    assert sorted(said.elements) == [0, 1, 2, 3, 4, 5]
    assert said.elements[1].state is State.FAILED and said.elements[1].reason == "walltime exceeded (0:01:00)"
    assert said.elements[4].state is State.QUEUED
    assert len(transport.calls) == 1


def test_qstat_t_json_of_a_pbs_pro_array_gives_each_subjobs_state():
    text = (FIXTURES / "qstat_x_f_t_json_array.json").read_text()
    found = parse_qstat_json(text)
    transport = _Answers([(("qstat", "-x", "-f", "-F", "json", "-t"), (0, text, ""))])
    said = PBSScheduler(profile="gadi").query(transport, {"123456[].gadi-pbs": "/scratch/ab12/x"})
    array = said["123456[].gadi-pbs"]
    assert "123456[].gadi-pbs" in found
    assert array.state is State.RUNNING
    assert array.elements[0].state is State.DONE
    assert array.elements[1].state is State.FAILED and "walltime exceeded" in array.elements[1].reason
    assert array.elements[2].state is State.RUNNING
    assert array.elements[3].state is State.QUEUED


# ----------------------------------------------------------------------------- the registry

def test_a_registry_written_before_arrays_existed_gains_the_column(tmp_path):
    import sqlite3
    path = tmp_path / "registry.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, target TEXT NOT NULL, scheduler TEXT NOT NULL, "
                "workdir TEXT NOT NULL, scheduler_id TEXT, state TEXT NOT NULL, reason TEXT, submitted_at REAL NOT "
                "NULL, ended_at REAL, first_line TEXT, pull TEXT, session TEXT, cancel_requested INTEGER NOT NULL "
                "DEFAULT 0, pulled INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO jobs (id, target, scheduler, workdir, state, submitted_at) VALUES "
                "('rx-20261001-000000-abcd', 'local', 'direct', '/tmp', 'done', 1.0)")
    old.commit()
    old.close()
    record = Registry(path).get("rx-20261001-000000-abcd")
    assert record.elements == 0 and record.state is State.DONE


# ----------------------------------------------------------------------------- on a real Slurm

def test_a_slurm_array_with_one_failing_element_pulls_the_others(ip, any_hpc):
    result = ip.run_cell(cell("hpc --mem 200MB --walltime 2m --map seed=range(4)", """
        import os
        if seed == 2:
            raise ValueError(f"seed {seed} is unlucky")
        task = int(os.environ["SLURM_ARRAY_TASK_ID"])
        y = seed ** 2
    """))
    error = result.error_in_exec
    assert isinstance(error, ArrayFailed), result
    assert "seed=2 (element 2): the cell raised ValueError: seed 2 is unlucky" in str(error)
    assert ip.user_ns["y"] == [0, 1, None, 9]
    assert ip.user_ns["task"] == [0, 1, None, 3]               # each element ran as its own Slurm array task
    job = newest_job()
    assert "#SBATCH --array=0-3" in Path(job.paths.job_sh).read_text()
    assert job.state is State.FAILED and job.reason == "1 of 4 elements failed"


def test_a_slurm_array_cancelled_while_queued_ends_cancelled(ip, slurm, configure_targets, tmp_path):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    result = ip.run_cell(cell("hpc --bg --extra=--begin=now+1hour --map i=range(3)", "y = i"))
    assert result.error_in_exec is None
    job = newest_job()
    wait_for(lambda: job.state is State.QUEUED, "Slurm to queue the array")
    job.cancel()
    wait_for(lambda: job.state.is_final, "the array to end", timeout=60)
    assert job.state is State.CANCELLED

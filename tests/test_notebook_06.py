"""Notebook 06, when things go wrong: every failure it shows happens, reads clearly, and leaves nothing running."""

import json
import os
import re
import signal
from pathlib import Path

import pytest
from helpers import (
    NOTEBOOKS,
    assert_stored_without_outputs,
    cell_starting,
    errors_of,
    jobs_recorded,
    run_isolated,
    text_of,
)


def text_without_stderr(cell) -> str:
    """What the cell printed to stdout and showed, in order.

    A background job's notice goes to stderr of whichever cell runs after it ends; leave
    stderr out where a check must not depend on when that was.
    """
    return text_of(cell, "stdout", displays=True)


def the_error_of(cell):
    assert "raises-exception" in cell.metadata.get("tags", [])
    [error] = errors_of(cell)
    return error


def processes_mentioning(text: str) -> list[int]:
    """Pids of this machine's processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("going-wrong")


@pytest.fixture(scope="module")
def jobs_folder(home):
    return home / "xdg_data_home" / "rx_magic" / "local-jobs"


@pytest.fixture(scope="module")
def going_wrong(home, jobs_folder):
    try:
        yield run_isolated(NOTEBOOKS / "06-when-things-go-wrong.ipynb", home)
    finally:
        # a run that stopped half way may leave its background job behind: stop it, by its own pid
        for pid in processes_mentioning(str(jobs_folder)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def records(going_wrong, home):
    return {record.first_line: record for record in jobs_recorded(home)}


def test_the_notebook_is_stored_without_outputs():
    assert_stored_without_outputs(NOTEBOOKS / "06-when-things-go-wrong.ipynb")


def test_a_remote_exception_is_raised_as_itself_with_the_remote_traceback(going_wrong):
    error = the_error_of(cell_starting(going_wrong, '%%remote local\nstage = "calibrating"'))
    assert error.ename == "ValueError"
    assert error.evalue == "need at least 10 readings to calibrate, got 3"
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
    # IPython's own look, formatted on the target: the cell's lines (the %%remote line is line 1), and
    # calibrate's as the notebook numbers them
    assert traceback.count("Traceback (most recent call last)") == 1
    assert re.search(r"Cell In\[\d+\], line 3\n(?:.*\n){2}----> 3 calibrated = calibrate\(readings\)", traceback)
    assert re.search(r"Cell In\[\d+\], line 4, in calibrate\(readings\)", traceback)
    assert "rx_magic" not in traceback and "runner.py" not in traceback    # no frame of rx_magic's own


def test_a_failed_cell_changes_no_variable(going_wrong):
    after = text_of(cell_starting(going_wrong, 'print("stage:", stage)'))
    assert "stage: not started" in after
    assert "calibrated exists: False" in after


def test_walltime_stops_the_job_and_says_so(going_wrong, records):
    cell = cell_starting(going_wrong, "%%remote local --walltime 3s")
    error = the_error_of(cell)
    assert error.ename == "JobFailed"
    assert re.fullmatch(r"job rx-\S+ failed: walltime exceeded \(0:00:03\)", error.evalue)
    assert "working, second 0" in text_without_stderr(cell)         # its output showed while it ran
    record = records["for second in range(60):"]
    assert record.state.value == "failed" and record.reason == "walltime exceeded (0:00:03)"
    assert record.ended_at - record.submitted_at < 15               # stopped, not left to run its minute


def test_memory_limit_stops_the_job_and_says_so(going_wrong, records):
    cell = cell_starting(going_wrong, "%%remote local --mem 100MB")
    error = the_error_of(cell)
    assert error.ename == "JobFailed"
    assert re.fullmatch(r"job rx-\S+ failed: memory limit exceeded \(100\.0 MiB\)", error.evalue)
    held = [int(mb) for mb in re.findall(r"holding (\d+) MB", text_without_stderr(cell))]
    assert held and max(held) < 400                                # stopped before it got all it asked for
    assert records["chunks = []"].reason == "memory limit exceeded (100.0 MiB)"


def test_log_shows_what_a_running_job_printed(going_wrong):
    assert re.search(r"rx-\S+ is running", text_of(cell_starting(going_wrong, "time.sleep(2)")))
    assert "step 0\nstep 1\n" in text_of(cell_starting(going_wrong, "%rx log {job_id}"))


def test_cancel_stops_a_background_job_and_pulls_nothing(going_wrong, records):
    assert re.fullmatch(r"rx-\S+: cancelled\n", text_without_stderr(cell_starting(going_wrong, "%rx cancel {job_id}")))
    assert "result exists: False" in text_of(cell_starting(going_wrong, 'print("result exists:"'))
    record = records["for step in range(60):"]
    assert record.state.value == "cancelled" and record.reason == "cancelled by you"


def test_jobs_lists_every_job_ended_with_its_reason(going_wrong):
    listing = text_without_stderr(cell_starting(going_wrong, "%rx jobs"))
    assert listing.count("rx-2") == 4
    assert re.search(r"local\s+cancelled .*for step in range\(60\):", listing)
    assert "walltime exceeded (0:00:03)" in listing and "memory limit exceeded (100.0 MiB)" in listing
    assert "the cell raised ValueError: need at least 10 readings to calibrate, got 3" in listing
    assert not re.search(r"\b(running|submitted|queued)\b", listing)


def test_nothing_is_left_running(going_wrong, records, jobs_folder):
    assert text_without_stderr(cell_starting(going_wrong, "still_running = ")).strip() == "[]"
    assert len(records) == 4 and all(record.state.is_final for record in records.values())
    for record in records.values():
        status = json.loads((jobs_folder / record.id / "status.json").read_text())
        assert status["state"] != "running"                         # each runner recorded its end
    # the runners and the cells they forked all name their job folder: none is left
    assert processes_mentioning(str(jobs_folder)) == []

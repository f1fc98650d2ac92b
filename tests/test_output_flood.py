"""A job that prints gigabytes: the notebook keeps its head and tail, and the kernel's memory stays flat.

Real jobs on the local target print 64 MiB, line by line; the test process is the kernel (the ``ip`` shell
runs in it), so its peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``) is the
kernel's.
"""

import re

from helpers import cell, newest_job, wait_for
from IPython.utils.capture import capture_output

from rx_magic.flow import logs
from rx_magic.model.local_dirs import cache_home
from rx_magic.ui.background import background_jobs, close_background_jobs
from rx_magic.flow import watch

FLOOD = """
import sys
line = "x" * 1023 + "\\n"
for number in range(65536):
    sys.stdout.write(line)
print("the last line")
"""
PRINTED = 65536 * 1024
GROWTH_LIMIT = 32 * 2**20


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak(ip):
    """Start VmHWM again from the current resident size, so that a peak reached by earlier tests does not hide ours.

    A small job runs first, so that what the first job of a kernel imports (nbformat, dill, ...) is not counted.
    """
    with capture_output():
        ip.run_cell(cell("local", "print('warming up')"))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_kib("VmRSS")


def _assert_bounded(text, job):
    assert len(text) < logs.OUTPUT_HEAD + logs.OUTPUT_TAIL + 4096
    assert text.startswith("x" * 1023 + "\n")
    summary = f"done: job {job.id} on local after "      # terminal IPython's one line at the job's end
    text = text.rpartition(summary)[0] if summary in text.splitlines()[-1] else text
    assert text.rstrip().endswith("the last line")
    cuts = re.findall(r"rx_magic: \.\.\. (.+) of stdout cut here; the whole log is (\S+) on target 'local'", text)
    assert len(cuts) == 1
    assert cuts[0][1] == job.paths.stdout
    assert cuts[0][0].endswith("MiB") and 59 <= float(cuts[0][0].split()[0]) <= 61


def test_a_blocking_cell_printing_64_mib_shows_its_head_and_tail_and_the_kernel_stays_small(ip):
    base = _reset_peak(ip)
    with capture_output() as captured:
        result = ip.run_cell(cell("local", FLOOD))
    growth = _status_kib("VmHWM") - base
    assert result.error_in_exec is None
    job = newest_job()
    _assert_bounded(captured.stdout, job)
    assert growth < GROWTH_LIMIT, f"the kernel's peak memory grew by {growth / 2**20:.1f} MiB"
    print(f"peak memory growth, blocking: {growth / 2**20:.1f} MiB for {PRINTED / 2**20:.0f} MiB printed")


def test_a_background_cell_printing_64_mib_keeps_the_kernel_small_and_its_log_bounded(ip):
    try:
        base = _reset_peak(ip)
        with capture_output() as captured:
            result = ip.run_cell(cell("local --bg", FLOOD + "done_flooding = True\n"))
            wait_for(lambda: background_jobs(ip).staged, "the job's results to be staged", timeout=120)
            ip.run_cell("pass")
        growth = _status_kib("VmHWM") - base
        assert result.error_in_exec is None
        assert ip.user_ns["done_flooding"] is True
        assert len(captured.stdout) + len(captured.stderr) < 64 * 1024    # notices only
        job = newest_job()
        _assert_bounded(job.log("stdout"), job)
        notebook = (cache_home() / "jobs" / job.id / "job.ipynb").read_text()    # written when it was staged
        assert len(notebook) < 2 * 2**20 and "of stdout cut here" in notebook
        assert growth < GROWTH_LIMIT, f"the kernel's peak memory grew by {growth / 2**20:.1f} MiB"
        print(f"peak memory growth, --bg: {growth / 2**20:.1f} MiB for {PRINTED / 2**20:.0f} MiB printed")
    finally:
        watch.stop_monitors()
        close_background_jobs(ip)


def test_a_short_log_is_shown_whole_without_a_cut_line(ip):
    with capture_output() as captured:
        result = ip.run_cell(cell("local", "print('one')\nprint('two')"))
    assert result.error_in_exec is None
    job = newest_job()
    assert captured.stdout.startswith("one\ntwo\n")
    assert captured.stdout.removeprefix("one\ntwo\n").startswith(f"done: job {job.id} on local after ")
    assert "cut here" not in captured.stdout
    assert job.log("stdout") == "one\ntwo\n"

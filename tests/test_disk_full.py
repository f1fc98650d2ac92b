"""A full disk, where jobs are written: one message naming the path, the space free and the size needed; nothing
half-written left; a job whose results do not fit fails saying so.

The disk is a real 2 MiB tmpfs mounted for the test (root only: it skips, saying why, where mount is refused).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cell, newest_job, user_ssh_reads

import rx_magic
from rx_magic.errors import DiskFull
from rx_magic.model.states import State

SMALL = "2m"


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at ``tmp_path/small``, private to this user; unmounted afterwards."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL},mode=0700", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (mount needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def leftovers(folder: Path) -> list[str]:
    """Partial files and job folders anywhere under ``folder``."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.name.endswith(".part") or path.name.startswith("rx-"))


def test_pushing_more_than_the_disk_holds_says_where_how_much_is_free_and_what_is_needed(ip, configure_targets,
                                                                                         small_disk):
    workdir = small_disk / "jobs"
    configure_targets(small={"workdir": str(workdir), "python": sys.executable})
    ip.user_ns["big"] = os.urandom(3 * 2**20)
    result = ip.run_cell(cell("small", "size = len(big)"))
    error = result.error_in_exec
    assert isinstance(error, DiskFull), error
    message = str(error)
    assert str(workdir) in message and "no space left" in message
    free, needed = re.search(r"([\d.]+) MiB free there, ([\d.]+) MiB needed", message).groups()
    assert float(free) < 2 <= 3 <= float(needed) < 3.5
    assert error._render_traceback_() and len(error._render_traceback_()) == 1     # one message, no traceback
    assert leftovers(small_disk) == []
    assert rx_magic.jobs() == []
    assert "size" not in ip.user_ns


def test_a_cell_whose_results_do_not_fit_fails_saying_so(ip, configure_targets, small_disk):
    workdir = small_disk / "jobs"
    configure_targets(small={"workdir": str(workdir), "python": sys.executable})
    result = ip.run_cell(cell("small", "import os\nbig = os.urandom(3 * 2**20)"))
    job = newest_job()
    assert job.state is State.FAILED
    assert job.reason.startswith("the job's results could not be written: no space left on device in ")
    assert job.paths.folder in job.reason and "bytes free)" in job.reason
    assert "pickled" not in job.reason
    assert isinstance(result.error_in_exec, rx_magic.JobFailed)
    assert job.reason in str(result.error_in_exec)
    assert "big" not in ip.user_ns
    assert [name for name in leftovers(small_disk) if name.endswith(".part")] == []


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_pushing_more_than_a_remote_disk_holds_over_ssh_says_the_same(ip, ssh_target, ssh_home, small_disk,
                                                                      transport, monkeypatch):
    workdir = small_disk / "remote jobs"
    if transport == "openssh":
        user_ssh_reads(ssh_home / ".ssh" / "config", ssh_home, monkeypatch)
    ssh_target(workdir=str(workdir), transport=transport)
    ip.user_ns["big"] = os.urandom(3 * 2**20)
    result = ip.run_cell(cell("ws", "size = len(big)"))
    error = result.error_in_exec
    assert isinstance(error, DiskFull), error
    message = str(error)
    free, needed = re.search(r"([\d.]+) MiB free there, ([\d.]+) MiB needed", message).groups()
    assert float(free) < 2 <= 3 <= float(needed) < 3.5
    assert str(workdir) in message
    assert leftovers(small_disk) == []
    assert rx_magic.jobs() == []
    if transport == "openssh":
        transport_used = rx_magic.targets.get_target("ws").transport
        subprocess.run(transport_used.control_command("exit"), capture_output=True, timeout=30, check=False)

"""Notebook 03 (SSH targets) runs in a real kernel against a real sshd on loopback, as on Binder.

Binder's setup writes a ``loopback`` target (127.0.0.1, a high port, a generated
key, strict host keys with the server's key in known_hosts); this module does
the same with tests/sshd.py, in a fresh ``HOME`` and XDG folders that the
notebook's kernel inherits, and then checks what the notebook shows.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import NOTEBOOKS, cell_starting, run_isolated, text_of, wait_for


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an ended job's process waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def ssh_notebook(sshd, tmp_path_factory):
    """Notebook 03, executed with a Binder-like ``loopback`` target; (notebook, server, remote workdir, home)."""
    root = tmp_path_factory.mktemp("notebook03")
    home = root / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line())
    workdir = root / "remote" / "rx_jobs"
    loopback = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user, "identity_file": str(sshd.user_key),
                "host_key_policy": "strict", "python": sys.executable, "workdir": str(workdir)}
    notebook = run_isolated(NOTEBOOKS / "03-ssh-targets.ipynb", root, targets={"loopback": loopback},
                            env={"HOME": str(home), "SSH_AUTH_SOCK": None})
    return notebook, sshd, workdir, home


def test_the_loopback_target_and_its_file_are_shown(ssh_notebook):
    notebook, server, _, _ = ssh_notebook
    targets = text_of(cell_starting(notebook, "%rx targets", unique=True))
    assert re.search(r"^loopback\s+direct\s+on 127\.0\.0\.1\s", targets, re.MULTILINE)
    shown = text_of(cell_starting(notebook, "from pathlib import Path", unique=True))
    assert "[targets.loopback]" in shown and f"port = {server.port}" in shown


def test_rx_check_connects_over_ssh_with_a_known_host_key(ssh_notebook):
    notebook, server, _, home = ssh_notebook
    check = text_of(cell_starting(notebook, "%rx check loopback", unique=True))
    assert "rx_magic check of target 'loopback': no problems found" in check
    assert "transport          ssh to 127.0.0.1" in check
    assert f"host               127.0.0.1 -> user {server.user}, host 127.0.0.1, port {server.port}" in check
    assert re.search(rf"ok\s+host key\s+known: ssh-ed25519 SHA256:\S+ \({re.escape(str(home))}/\.ssh/known_hosts\)",
                     check)
    assert f"publickey ({server.user_key})" in check
    assert "FAIL" not in check


def test_the_cells_values_go_out_over_ssh_and_come_back(ssh_notebook):
    notebook, server, _, _ = ssh_notebook
    samples = np.random.default_rng(seed=3).normal(loc=2.0, scale=0.5, size=200_000)
    expected = round(float((samples > 2.5).mean()), 4)
    remote = text_of(cell_starting(notebook, "%%remote loopback\nimport os", unique=True))
    assert f"{expected:.1%} of the samples are above 2.5" in remote
    back = text_of(cell_starting(notebook, 'print("back in the notebook', unique=True))
    found = re.search(r"back in the notebook: ([\d.]+) computed by process (\d+) not (\d+)", back)
    assert found and float(found[1]) == expected and found[2] != found[3]
    # the job was started through this sshd: SSH_CONNECTION names its address and port
    assert re.search(rf"SSH_CONNECTION .*: 127\.0\.0\.1 \d+ 127\.0\.0\.1 {server.port}$", back, re.MULTILINE)
    assert "Accepted publickey" in server.log.read_text()


def test_the_job_folder_is_in_the_targets_workdir_and_holds_the_jobs_files(ssh_notebook):
    notebook, _, workdir, _ = ssh_notebook
    folder = text_of(cell_starting(notebook, "job_folder", unique=True)).strip().strip("'")
    assert Path(folder).parent == workdir and Path(folder).name.startswith("rx-")
    listing = text_of(cell_starting(notebook, "%%remote loopback\nsorted(os.listdir(job_folder))", unique=True))
    for name in ("cell.py", "job.sh", "status.json", "stdout.log", "outputs.dill", "work"):
        assert f"'{name}'" in listing


def test_both_jobs_ended_done_and_nothing_is_left_running(ssh_notebook):
    notebook, _, workdir, _ = ssh_notebook
    jobs = text_of(cell_starting(notebook, "%rx jobs", unique=True))
    assert len(re.findall(r"^rx-\S+\s+loopback\s+done\b", jobs, re.MULTILINE)) == 2
    statuses = [json.loads(path.read_text()) for path in workdir.glob("rx-*/status.json")]
    assert [status["state"] for status in statuses] == ["done", "done"]
    for pid in [status["pid"] for status in statuses]:
        wait_for(lambda pid=pid: not running(pid), f"job process {pid} to end", timeout=10)

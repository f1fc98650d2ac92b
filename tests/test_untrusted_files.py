"""rx_magic never runs or unpickles a file it did not write (issue 15, item 1).

On a shared machine another member of the project can write into a
group-writable project folder. A workdir (or ``.rx`` in it) that someone else
owns or can write is refused before anything is written; a blob whose bytes do
not hash to its name is never unpickled; a runtime folder holding other files
than the ones shipped is rewritten before its runner runs. Real parts: the
local target's subprocesses, a real second account, the loopback sshd.
"""

import os
import pickle
import pwd
import shutil
import subprocess
import sys

import pytest
from helpers import run_remote

import rx_magic
from IPython.core.error import UsageError
from rx_magic.runtime import RUNTIME_FILES, runtime_file, runtime_version, wire

OTHER_USER = "rxother"


@pytest.fixture(scope="session")
def other_user():
    """A second real account: the project member who plants files."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create and chown to a second account")
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER], check=True)
        return pwd.getpwnam(OTHER_USER)


@pytest.fixture
def workdir(tmp_path, configure_targets):
    """A private workdir for the local target ``mine``."""
    folder = tmp_path / "jobs"
    folder.mkdir(mode=0o700)
    configure_targets(mine={"workdir": str(folder), "python": sys.executable})
    return folder


class Planted:
    """A pickle that, once unpickled, leaves a marker file: proof that the attacker's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def private_dir(path):
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def refusal(result) -> str:
    """The one-line usage error the cell stopped with (no traceback: nothing was submitted)."""
    error = result.error_in_exec
    assert isinstance(error, UsageError), error
    return str(error)


def assert_nothing_written(workdir):
    assert sorted(os.listdir(workdir)) == []
    assert rx_magic.jobs() == []


# ----------------------------------------------------------------------------- ownership and mode

def test_group_writable_workdir_is_refused_before_anything_is_written(ip, workdir):
    os.chmod(workdir, 0o775)
    message = refusal(run_remote(ip, "mine", "y = 1"))
    assert f"refusing to use {workdir} on this machine: it is writable by its group (mode drwxrwxr-x)" in message
    assert f"mkdir -m 700 {workdir}/private" in message and "set the target's workdir to it" in message
    assert_nothing_written(workdir)


def test_workdir_owned_by_another_user_is_refused(ip, workdir, other_user):
    os.chown(workdir, other_user.pw_uid, other_user.pw_gid)
    message = refusal(run_remote(ip, "mine", "y = 1"))
    assert f"refusing to use {workdir} on this machine: it is owned by uid {other_user.pw_uid}, not by you" in message
    assert f"mkdir -m 700 {workdir}-private" in message
    assert_nothing_written(workdir)


def test_symlinked_rx_folder_is_refused(ip, workdir, tmp_path):
    elsewhere = private_dir(tmp_path / "elsewhere")
    (workdir / ".rx").symlink_to(elsewhere)
    message = refusal(run_remote(ip, "mine", "y = 1"))
    assert f"refusing to use {workdir}/.rx on this machine: it is a symlink" in message
    assert os.listdir(elsewhere) == [] and sorted(os.listdir(workdir)) == [".rx"]


def test_symlinked_workdir_is_refused(ip, tmp_path, configure_targets):
    real = private_dir(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    configure_targets(mine={"workdir": str(tmp_path / "link"), "python": sys.executable})
    assert "it is a symlink" in refusal(run_remote(ip, "mine", "y = 1"))
    assert os.listdir(real) == []


def test_blob_folder_owned_by_another_user_is_refused(ip, workdir, other_user):
    blobs = private_dir(workdir / ".rx" / "blobs")
    os.chown(blobs, other_user.pw_uid, other_user.pw_gid)
    ip.user_ns["x"] = [1, 2, 3]
    message = refusal(run_remote(ip, "mine", "y = len(x)"))
    assert f"refusing to use {blobs} on this machine: it is owned by uid {other_user.pw_uid}" in message
    assert os.listdir(blobs) == []


def test_runtime_file_owned_by_another_user_is_refused(ip, workdir, other_user, tmp_path):
    marker = tmp_path / "ran"
    runtime = private_dir(workdir / ".rx" / f"runtime-{runtime_version()}")
    for name in RUNTIME_FILES:
        shutil.copy(runtime_file(name), runtime / name)
    (runtime / "runner.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    os.chown(runtime / "runner.py", other_user.pw_uid, other_user.pw_gid)
    message = refusal(run_remote(ip, "mine", "y = 1"))
    assert f"refusing to use {runtime}/runner.py on this machine: it is owned by uid {other_user.pw_uid}" in message
    assert not marker.exists()


# ----------------------------------------------------------------------------- planted content

@pytest.mark.parametrize("framed", [False, True], ids=["plain-pickle", "wire-frame"])
def test_planted_blob_that_does_not_match_its_name_is_never_unpickled(ip, workdir, tmp_path, framed):
    marker = tmp_path / "unpickled"
    value = [1, 2, 3]
    digest, _ = wire.digest(value)
    blob = private_dir(workdir / ".rx" / "blobs") / f"{digest}.dill"
    blob.write_bytes(wire.dumps(Planted(marker)) if framed else pickle.dumps(Planted(marker)))
    os.chmod(blob, 0o600)
    ip.user_ns["x"] = value
    result = run_remote(ip, "mine", "y = len(x)")
    assert result.error_in_exec is not None
    message = str(result.error_in_exec)
    assert f"refusing to load the blob {blob}: its content does not hash to its name" in message
    assert f"rm {blob}" in message
    assert not marker.exists()
    assert "y" not in ip.user_ns


def test_blob_matching_its_name_is_used(ip, workdir):
    ip.user_ns["x"] = [1, 2, 3]
    result = run_remote(ip, "mine", "y = len(x)")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 3
    run_remote(ip, "mine", "y = sum(x)")     # the blob, already there, is checked again and loaded
    assert ip.user_ns["y"] == 6


@pytest.mark.parametrize("planted", [False, True], ids=["one-byte-changed", "planted-pickle"])
def test_a_verified_blob_changed_with_its_mtime_set_back_is_still_refused(ip, workdir, tmp_path, planted):
    """A big blob is hashed once and stamped (device, inode, size, mtime, ctime); changed afterwards in place,
    same size, its mtime set back with os.utime, it no longer matches its stamp (its ctime moved, and no one
    can set that back) and is hashed again, and refused."""
    marker = tmp_path / "unpickled"
    value = bytearray(range(256)) * (6 * 2**20 // 256)      # bigger than a stamp's minimum
    digest, _ = wire.digest(value)
    ip.user_ns["x"] = value
    assert run_remote(ip, "mine", "y = len(x)").error_in_exec is None
    blob = workdir / ".rx" / "blobs" / f"{digest}.dill"
    stamp = workdir / ".rx" / "verified" / digest
    assert stamp.exists() and (stamp.stat().st_mode & 0o777) == 0o600
    assert run_remote(ip, "mine", "y = len(x) + 1").error_in_exec is None      # loaded on its stamp
    assert ip.user_ns["y"] == len(value) + 1

    before = blob.stat()
    data = bytearray(blob.read_bytes())
    if planted:
        bad = wire.dumps(Planted(marker))
        data[:len(bad)] = bad
    else:
        data[len(data) // 2] ^= 1       # the value would load, one byte off
    with open(blob, "r+b") as file:     # in place: same file, same inode
        file.write(data)
    while blob.stat().st_ctime_ns == before.st_ctime_ns:     # a coarse clock: until the change shows
        os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = blob.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)

    result = run_remote(ip, "mine", "y = len(x) + 2")
    assert result.error_in_exec is not None
    message = str(result.error_in_exec)
    assert f"refusing to load the blob {blob}: its content does not hash to its name" in message
    assert not marker.exists()
    assert ip.user_ns["y"] == len(value) + 1


def test_modified_runner_in_an_existing_runtime_folder_is_not_run(ip, workdir, tmp_path):
    marker = tmp_path / "ran"
    runtime = private_dir(workdir / ".rx" / f"runtime-{runtime_version()}")
    for name in RUNTIME_FILES:
        shutil.copy(runtime_file(name), runtime / name)
        os.chmod(runtime / name, 0o600)
    planted = f"open({str(marker)!r}, 'w').close()\n" + runtime_file("runner.py").read_text()
    (runtime / "runner.py").write_text(planted)
    result = run_remote(ip, "mine", "y = 41 + 1")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 42
    assert not marker.exists()
    assert (runtime / "runner.py").read_bytes() == runtime_file("runner.py").read_bytes()


def test_workdir_is_checked_once_per_connection(ip, workdir, monkeypatch):
    from rx_magic.transport.local import LocalTransport
    calls = []
    original = LocalTransport.lstat
    monkeypatch.setattr(LocalTransport, "lstat", lambda self, paths: calls.append(paths) or original(self, paths))
    for number in range(3):
        assert run_remote(ip, "mine", f"y = {number}").error_in_exec is None
    assert len(calls) == 1
    assert (os.stat(workdir / ".rx").st_mode & 0o777) == 0o700
    assert (os.stat(workdir / ".rx" / "blobs").st_mode & 0o777) == 0o700


# ----------------------------------------------------------------------------- over SSH

def test_group_writable_workdir_is_refused_over_ssh(ip, ssh_target, remote_workdir):
    remote_workdir.mkdir(mode=0o700)
    os.chmod(remote_workdir, 0o775)
    message = refusal(run_remote(ip, "ws", "y = 1"))
    assert f"refusing to use {remote_workdir} on " in message
    assert "it is writable by its group (mode drwxrwxr-x)" in message
    assert f"mkdir -m 700 {remote_workdir}/private" in message
    assert os.listdir(remote_workdir) == []


def test_private_workdir_is_used_over_ssh(ip, ssh_target, remote_workdir):
    ip.user_ns["x"] = [1, 2]
    result = run_remote(ip, "ws", "y = len(x)")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 2

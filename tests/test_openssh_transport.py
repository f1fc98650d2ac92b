"""transport = "openssh": the user's ssh client and its ControlMaster connection, against a real sshd.

The server (tests/otp_sshd.py) asks for the key and then a one-time code, as
clusters with a second factor do, so ssh under BatchMode can never log in by
itself: a cell works only over a master connection opened beforehand. The test
opens it as a user would, once, with the command rx_magic's message names; ssh
asks the code through SSH_ASKPASS, standing in for the user at a terminal.

OpenSSH reads the passwd entry's home, not ``$HOME``: an ``ssh`` first on PATH
adds ``-F`` with the test's ~/.ssh/config (alias ``rxtest``, its key and known_hosts).
"""

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import newest_job, run_remote, user_ssh_reads

from rx_magic.errors import ConnectError
from rx_magic.model.states import State
from rx_magic.targets import get_target
from rx_magic.transport.openssh import OpenSSHTransport


@pytest.fixture
def openssh_target(otp_sshd, tmp_path_factory, monkeypatch, configure_targets, remote_workdir):
    """Target ``ws``: transport = "openssh" to ``rxtest``; ssh's sockets in a private, short runtime folder."""
    home = tmp_path_factory.mktemp("home")
    config = otp_sshd.ssh_config(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    runtime = user_ssh_reads(config, home, monkeypatch)
    configure_targets(ws={"host": "rxtest", "transport": "openssh", "python": sys.executable,
                          "workdir": str(remote_workdir)})
    transport = get_target("ws").transport
    assert isinstance(transport, OpenSSHTransport)
    yield transport
    subprocess.run(transport.control_command("exit"), capture_output=True, timeout=30, check=False)
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def logged_in(openssh_target, otp_sshd, tmp_path):
    """The user's one interactive login, run as rx_magic's message says; the number of times ssh asked."""
    count = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho \"$1\" >> {shlex.quote(str(count))}\nprintf '%s\\n' {otp_sshd.code}\n")
    askpass.chmod(0o700)
    environment = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    done = subprocess.run(shlex.split(openssh_target.login_command()), env=environment, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert openssh_target.master_alive()
    return lambda: count.read_text().splitlines()


def test_without_a_master_the_cell_fails_at_once_naming_the_login_command(ip, openssh_target, remote_workdir):
    started = time.monotonic()
    result = run_remote(ip, "ws", "y = 1")
    assert time.monotonic() - started < 10
    error = result.error_in_exec
    assert isinstance(error, ConnectError)
    command = openssh_target.login_command()
    assert f"Log in once in a terminal with\n    {command}\n" in str(error)
    assert "-o ControlMaster=auto -o ControlPath=" in command and command.endswith(" -fN rxtest")
    assert "Permission denied" in str(error)
    assert "y" not in ip.user_ns and not remote_workdir.exists()


def test_a_cell_runs_over_the_master_opened_by_one_interactive_login(ip, openssh_target, logged_in, otp_sshd,
                                                                       remote_workdir):
    ip.user_ns["x"] = 20
    result = run_remote(ip, "ws", """
        import os
        y = x + 1
        ran_in = os.getcwd()
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 21
    job = newest_job()
    assert job.state is State.DONE
    assert ip.user_ns["ran_in"].startswith(str(remote_workdir / job.id))
    # asked once, at the login; every command of the cell rode on that one connection
    assert len(logged_in()) == 1 and "Password" in logged_in()[0]
    assert otp_sshd.accepted_logins() == 1
    socket_folder = Path(openssh_target.control_path).parent
    assert socket_folder.stat().st_mode & 0o777 == 0o700


def test_files_move_through_the_master_as_the_ssh_transport_moves_them(openssh_target, logged_in, tmp_path):
    transport = openssh_target
    folder = tmp_path / "remote files" / "deeper"
    transport.makedirs(str(folder))
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    name = str(folder / "it's $(touch pwned); a.bin")
    payload = os.urandom(3 * 2**20 + 17)
    with transport.open_atomic(name, mode=0o640) as file:
        file.write(payload[:2**20])
        file.write(memoryview(payload)[2**20:])
    assert Path(name).read_bytes() == payload and Path(name).stat().st_mode & 0o777 == 0o640
    assert not (folder / "pwned").exists() and not Path("pwned").exists()
    assert transport.read_bytes(name) == payload
    assert transport.read_bytes(name, offset=1000) == payload[1000:]
    with transport.open_read(name) as file:
        buffer = bytearray(2**20)
        assert file.readinto(buffer) > 0
    assert transport.exists(name) and not transport.exists(str(folder / "missing"))
    with pytest.raises(FileNotFoundError):
        transport.read_bytes(str(folder / "missing"))
    with pytest.raises(RuntimeError):           # a block that fails leaves no file behind
        with transport.open_atomic(str(folder / "half"), mode=0o600) as file:
            file.write(b"half")
            raise RuntimeError("stopped")
    assert sorted(os.listdir(folder)) == [Path(name).name]
    transport.write_bytes(str(folder / "other"), b"x")
    transport.rename(str(folder / "other"), name)
    assert Path(name).read_bytes() == b"x"
    assert transport.listdir(str(folder)) == [Path(name).name]
    assert transport.listdir(str(folder / "missing")) == [] and transport.listdir_times(str(folder / "missing")) == {}
    times = transport.listdir_times(str(folder.parent))
    assert times == pytest.approx({"deeper": folder.lstat().st_mtime}, abs=1e-3)
    assert transport.expand_home("~/rx") == os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir) + "/rx"   # the login's
    assert transport.remove_tree(str(folder.parent)) >= 0 and not folder.parent.exists()
    result = transport.run(["sh", "-c", 'printf "%s" "$1"; exit 3', "sh", "a b'c"], check=False)
    assert (result.returncode, result.stdout) == (3, "a b'c")


def test_a_master_the_user_opens_at_their_own_control_path_is_reused(openssh_target, otp_sshd, tmp_path):
    config = Path(os.environ["HOME"]) / ".ssh" / "config"
    own = Path(os.environ["XDG_RUNTIME_DIR"]) / "mine-%C"
    config.write_text(f"Host rxtest\n    ControlPath {own}\n    ControlPersist 5m\n\n" + config.read_text())
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' {otp_sshd.code}\n")
    askpass.chmod(0o700)
    before = otp_sshd.accepted_logins()
    done = subprocess.run(["ssh", "-o", "ControlMaster=yes", "-fN", "rxtest"], stdin=subprocess.DEVNULL,
                          env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"},
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    transport = OpenSSHTransport("rxtest", python=sys.executable)
    try:
        assert Path(transport.control_path).parent == own.parent
        assert Path(transport.control_path).name.startswith("mine-")
        assert "ControlPersist" not in " ".join(transport.control_command("check"))     # the user's 5m stands
        assert transport.run(["id", "-un"]).stdout.strip() == otp_sshd.user
        assert otp_sshd.accepted_logins() == before + 1
    finally:
        transport.close()
        subprocess.run(transport.control_command("exit"), capture_output=True, timeout=30, check=False)


def test_when_the_master_closes_the_next_command_fails_at_once_naming_the_login_command(openssh_target, logged_in):
    assert openssh_target.run(["true"]).returncode == 0        # through the command agent, on the master
    subprocess.run(openssh_target.control_command("exit"), capture_output=True, timeout=30, check=True)
    started = time.monotonic()
    with pytest.raises(ConnectError) as failure:
        openssh_target.run(["true"])
    assert time.monotonic() - started < 10
    assert openssh_target.login_command() in str(failure.value)
    assert not openssh_target.connected


def test_rx_check_of_an_openssh_target_says_whether_the_shared_connection_works(openssh_target, logged_in):
    from rx_magic.targets.checks import FAIL, OK, check_target
    lines = check_target("ws")
    ssh = [line for line in lines if line.item == "ssh"]
    assert ssh and ssh[0].status == OK and "ran through your ssh's shared connection" in ssh[0].found
    assert not [line for line in lines if line.status == FAIL], lines
    subprocess.run(openssh_target.control_command("exit"), capture_output=True, timeout=30, check=False)
    after = [line for line in check_target("ws") if line.item == "ssh"]
    assert after[0].status == FAIL and openssh_target.login_command() in after[0].found

"""Big transfers of the paramiko transport go through the user's own ssh (rx_magic/transport/handoff.py).

Against the real loopback sshd: a big upload and download go through an ssh process (the transport's
``handoffs`` counter, and ssh's own session in sshd's log) and arrive byte-identical, 0600; a host key ssh
refuses fails the transfer with rx_magic's host-key message, never falling back to paramiko; a host whose
login needs a second factor keeps to paramiko and still works; an interrupt during a handed-off upload
removes the partial file. The thresholds are lowered to 1 MiB so the tests move tens of MiB, not hundreds.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time

import pytest
from test_disk_full import leftovers, small_disk  # noqa: F401 (fixture)

import rx_magic.targets
from rx_magic.errors import ConnectError, DiskFull
from rx_magic.transport import handoff
from rx_magic.transport.ssh import SSHTransport

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's client (ssh) is needed")

MiB = 2**20
PIECE = 4 * MiB
WAIT = 120              # seconds for ssh to log in, however loaded the machine


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(handoff, "HANDOFF_BYTES", MiB)
    monkeypatch.setattr(handoff, "READ_HANDOFF_BYTES", MiB)


@pytest.fixture
def folder(remote_workdir):
    remote_workdir.mkdir(mode=0o700)
    return remote_workdir


def parts(folder):
    return [name for name in os.listdir(folder) if name.endswith(".part")]


def upload_until_handed_off(transport, path, extra_pieces=3, mode=0o600):
    """Write distinct pieces (256 KiB every 20 ms) until the upload went to ssh, then ``extra_pieces`` of 4 MiB;
    the sha256 of what was written."""
    digest = hashlib.sha256()
    before = transport.handoffs
    base = bytearray(os.urandom(PIECE))
    deadline = time.monotonic() + WAIT
    with transport.open_atomic(str(path), mode) as file:
        index = 0
        while transport.handoffs == before or extra_pieces > 0:
            assert time.monotonic() < deadline, f"no handoff within {WAIT} s: {transport.handoff_off}"
            base[:8] = index.to_bytes(8, "little")
            if transport.handoffs > before:
                extra_pieces -= 1
                piece = bytes(base)
            else:
                piece = bytes(base[:PIECE // 16])
                time.sleep(0.02)
            digest.update(piece)
            file.write(piece)
            index += 1
        file.write(b"and a tail that is not a whole piece")
        digest.update(b"and a tail that is not a whole piece")
    return digest.hexdigest()


def test_a_big_upload_and_download_go_through_ssh_and_arrive_intact(ssh_target, folder, sshd):
    transport = rx_magic.targets.get_target("ws").transport
    assert isinstance(transport, SSHTransport)
    target = folder / "big file with 'quotes' and spaces"
    sessions = sshd.log.read_text().count("Accepted publickey")
    expected = upload_until_handed_off(transport, target, extra_pieces=4)
    assert transport.handoffs == 1, transport.handoff_off
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    assert target.stat().st_mode & 0o777 == 0o600
    assert not parts(folder)

    with transport.open_read(str(target)) as file:
        assert isinstance(file, handoff.HandoffReader)
        received = hashlib.sha256(file.read(255 * 1024))     # over SFTP, while ssh logs in
        assert file.wait_for_ssh(120)       # the next window comes through ssh
        while piece := file.read(255 * 1024):
            received.update(piece)
    assert received.hexdigest() == expected
    assert transport.handoffs == 2
    # each went through a login of its own: ssh's, beside paramiko's one connection
    assert sshd.log.read_text().count("Accepted publickey") >= sessions + 2

    # read-only, as --files ships files: the handoff's ssh reopens the partial file, still writable until the end
    shipped = folder / "shipped"
    expected = upload_until_handed_off(transport, shipped, mode=0o400)
    assert transport.handoffs == 3
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == expected
    assert shipped.stat().st_mode & 0o777 == 0o400

    small = folder / "small"
    small.write_bytes(b"x" * 1000)
    with transport.open_read(str(small)) as file:       # under the threshold: paramiko
        assert file.read() == b"x" * 1000
    assert transport.handoffs == 3


def test_a_host_key_ssh_refuses_fails_the_transfer_with_the_host_key_message(ssh_target, ssh_home, folder, sshd):
    transport = rx_magic.targets.get_target("ws").transport
    transport.connect()         # paramiko checked the key, and its connection stays open
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    other = (sshd.root / "id_other.pub").read_text().split()      # another ed25519 key: the host's "changed"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(ConnectError, match="has CHANGED") as failure:
        upload_until_handed_off(transport, folder / "refused")
    assert "ssh-keygen -R" in str(failure.value)
    assert transport.handoffs == 0
    assert not (folder / "refused").exists() and not parts(folder)

    big = folder / "to read"
    big.write_bytes(os.urandom(32 * MiB))
    with transport.open_read(str(big)) as file:
        assert not file.wait_for_ssh(120)
        with pytest.raises(ConnectError, match="has CHANGED"):
            file.read()
    assert transport.handoffs == 0
    transport.close()
    with pytest.raises(ConnectError, match="has CHANGED"):     # and paramiko itself refuses it too
        transport.connect()


@pytest.fixture(scope="module")
def password_sshd(tmp_path_factory):
    """A loopback sshd that takes a password alone, no key (tests/otp_sshd.py's code, asked by keyboard-interactive)."""
    import otp_sshd
    if not otp_sshd.sshd_available():
        pytest.skip("OpenSSH's server and ssh-keygen are needed")
    if os.geteuid() != 0 or not otp_sshd.pam_exec_available():
        pytest.skip("sshd with PAM needs root, and PAM's pam_exec.so")
    server = otp_sshd.OTPServer(tmp_path_factory.mktemp("password-sshd"))
    text = server.config.read_text()
    server.config.write_text(text.replace("AuthenticationMethods publickey,keyboard-interactive",
                                          "AuthenticationMethods keyboard-interactive"))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.parametrize("which", ["password alone", "key and one-time code"])
def test_a_host_whose_login_needs_answers_keeps_to_paramiko_and_works(which, tmp_path, monkeypatch, request):
    server = request.getfixturevalue("password_sshd" if which == "password alone" else "otp_sshd")
    home = tmp_path / "home"
    server.ssh_config(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    folder = tmp_path / "remote"
    folder.mkdir(mode=0o700)
    asked = []

    def prompt(text, echo):
        asked.append(text)
        return server.code

    with SSHTransport("rxtest", prompt=prompt) as transport:
        transport.connect()
        assert asked
        data = os.urandom(6 * MiB)
        transport.write_bytes(str(folder / "up"), data)
        assert (folder / "up").read_bytes() == data
        with transport.open_read(str(folder / "up")) as file:
            assert file.read() == data
        assert transport.handoffs == 0
        assert "needed answers" in transport.handoff_off
    assert len(asked) == 1          # one login, paramiko's: ssh never tried (a refused login counts on the host)
    assert server.accepted_logins() >= 1


def test_ssh_that_cannot_log_in_leaves_the_transfer_to_paramiko(ssh_target, ssh_home, folder, monkeypatch):
    """A user's ssh that cannot log in (here: refused by a wrapper, as a host refusing BatchMode logins is)."""
    bin_folder = ssh_home / "bin"
    bin_folder.mkdir()
    wrapper = bin_folder / "ssh"
    tries = ssh_home / "ssh tries"
    wrapper.write_text(f"#!/bin/sh\necho tried >> '{tries}'\n"
                       "echo 'user@host: Permission denied (publickey,keyboard-interactive).' >&2\nexit 255\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    transport = rx_magic.targets.get_target("ws").transport
    sent = bytearray()
    deadline = time.monotonic() + 120
    with transport.open_atomic(str(folder / "up")) as file:
        while not transport.handoff_off:        # each write looks whether ssh got in; it ends refused
            assert time.monotonic() < deadline, "ssh's refusal was never seen"
            piece = os.urandom(MiB)
            file.write(piece)
            sent += piece
            time.sleep(0.01)
        file.write(b"the rest")
        sent += b"the rest"
    data = bytes(sent)
    assert (folder / "up").read_bytes() == data
    assert "Permission denied" in transport.handoff_off
    with transport.open_read(str(folder / "up")) as file:
        assert file.read() == data
    transport.write_bytes(str(folder / "again"), data)
    assert transport.handoffs == 0
    assert tries.read_text() == "tried\n"         # once per connection: later transfers do not try again


UPLOADER = r"""
import os, signal, sys, threading, time
import rx_magic.targets
from rx_magic.transport import handoff
handoff.HANDOFF_BYTES = 2**20
folder, to = sys.argv[1], sys.argv[2]
transport = rx_magic.targets.get_target("ws").transport
piece = os.urandom(4 * 2**20)
signal.signal(signal.SIGINT, signal.default_int_handler)    # as ipykernel does while a cell runs


def interrupt_once_handed_off():
    while transport.handoffs == 0:      # evidence: the rest of the upload goes through ssh now
        time.sleep(0.01)
    time.sleep(0.05)
    if to == "group":                   # as the notebook's Stop does
        os.killpg(os.getpgid(0), signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGINT)


sender = threading.Thread(target=interrupt_once_handed_off, daemon=True)
sender.start()
try:
    with transport.open_atomic(os.path.join(folder, "big")) as file:
        for _ in range(2**30 // len(piece)):
            file.write(piece)
            if transport.handoffs == 0:
                time.sleep(0.05)        # at most 80 MB/s until ssh has logged in, however long that takes
    sys.exit("1 GiB written and no KeyboardInterrupt: it was lost")
except KeyboardInterrupt:
    pass
print("stopped", sorted(os.listdir(folder)), transport.handoffs, flush=True)
transport.write_bytes(os.path.join(folder, "after"), b"after")
print(transport.read_bytes(os.path.join(folder, "after")).decode(), flush=True)
"""


@pytest.mark.parametrize("to", ["process", "group"])
def test_an_interrupt_during_a_handed_off_upload_removes_the_part(ssh_target, folder, tmp_path, to):
    script = tmp_path / "uploader.py"
    script.write_text(UPLOADER)
    try:
        done = subprocess.run([sys.executable, str(script), str(folder), to], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300, check=False, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"an interrupted upload hung; it printed: {exc.stdout!r}, {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["stopped [] 1", "after"], done.stderr
    assert not parts(folder)


def test_a_disk_filling_up_during_a_handed_off_upload_says_so_and_leaves_nothing(ssh_target, small_disk):
    transport = rx_magic.targets.get_target("ws").transport
    path = small_disk / "big"
    with pytest.raises(DiskFull) as failure:
        with transport.open_atomic(str(path)) as file:
            file.write(os.urandom(MiB))         # the threshold: ssh starts beside SFTP
            deadline = time.monotonic() + 120
            while transport.handoffs == 0:      # each write looks whether ssh has logged in
                assert time.monotonic() < deadline, f"no handoff: {transport.handoff_off}"
                file.write(b"x")
                time.sleep(0.01)
            file.write(os.urandom(3 * MiB))     # through ssh, onto a 2 MiB disk
    assert "no space left on the device" in str(failure.value)
    assert str(path) in str(failure.value)
    assert leftovers(small_disk) == []

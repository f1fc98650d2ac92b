"""Big transfers of the paramiko transport go through the user's own ssh (rx_magic/transport/handoff.py).

Against the real loopback sshd: a big upload and download go through an ssh process (the transport's
``handoffs`` counter, and ssh's own session in sshd's log) and arrive byte-identical, 0600; a host key ssh
refuses fails the transfer with rx_magic's host-key message, never falling back to paramiko; a host whose
login needs a second factor keeps to paramiko and still works; an interrupt during a handed-off upload
removes the partial file. The thresholds are lowered to 1 MiB so the tests move tens of MiB, not hundreds.

After a transfer through ssh, the transport keeps one spare ssh logged in for the next (handoff.Spare): the next
upload and download take it (``spares_used``, its pid seen alive before), and arrive intact; it ends with the
transport, when idle past its limit, and with an interrupted upload; its refused login fails the transfer
with the host-key message; one logged in before the host's key changed is used as paramiko's connection is,
until a reconnect, which checks the key again.
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


def upload_until_handed_off(transport, path, extra_pieces=3, mode=0o600, then=None):
    """Write distinct pieces (256 KiB every 20 ms) until the upload went to ssh, then ``extra_pieces`` of 4 MiB
    (``then()`` called before them); the sha256 of what was written."""
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
                if then is not None:
                    then, call = None, then
                    call()
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


def alive(pid):
    """Is ``pid`` a process of this user's that has not ended (a zombie has ended)?"""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def command_of(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().split(b"\0")


def test_the_next_big_transfers_take_a_spare_ssh_logged_in_before_them(ssh_target, folder, sshd):
    transport = rx_magic.targets.get_target("ws").transport
    try:
        upload_until_handed_off(transport, folder / "first")
        assert (transport.handoffs, transport.spares_used) == (1, 0)      # the first logs ssh in itself
        assert transport.wait_spare(WAIT)
        spare = transport.spare_pid
        assert alive(spare) and command_of(spare)[0].endswith(b"ssh")
        logins = sshd.log.read_text().count("Accepted publickey")

        target = folder / "second, through the spare's \\ 'quoted' $(path)"
        expected = upload_until_handed_off(transport, target, extra_pieces=4)
        assert (transport.handoffs, transport.spares_used) == (2, 1)
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        assert target.stat().st_mode & 0o777 == 0o600
        assert not parts(folder)
        assert not alive(spare)         # it took the upload and ended with it
        assert transport.wait_spare(WAIT) and transport.spare_pid != spare     # the next one is waiting

        with transport.open_read(str(target)) as file:
            assert file.wait_for_ssh(WAIT)
            received = hashlib.sha256(file.read())
        assert received.hexdigest() == expected
        assert (transport.handoffs, transport.spares_used) == (3, 2)
        # ssh logged in once for each spare (the third waits now), never at a transfer's start
        assert transport.wait_spare(WAIT)
        assert sshd.log.read_text().count("Accepted publickey") == logins + 2

        spare = transport.spare_pid     # a path with a newline never goes through a spare: ssh logs in for it
        expected = upload_until_handed_off(transport, folder / "new\nline")
        assert (transport.handoffs, transport.spares_used) == (4, 2)
        assert hashlib.sha256((folder / "new\nline").read_bytes()).hexdigest() == expected
        assert transport.spare_pid == spare and alive(spare)
    finally:
        transport.close()
    assert transport.spare_pid is None and not alive(spare)     # closing the transport ended it


def test_an_upload_goes_to_a_spare_already_logged_in_from_a_lower_threshold(ssh_target, folder, monkeypatch):
    transport = rx_magic.targets.get_target("ws").transport
    try:
        upload_until_handed_off(transport, folder / "first", extra_pieces=1)
        assert transport.wait_spare(WAIT)
        monkeypatch.setattr(handoff, "HANDOFF_BYTES", 2**40)        # no new ssh would start for this one
        monkeypatch.setattr(handoff, "SPARE_HANDOFF_BYTES", MiB)
        expected = upload_until_handed_off(transport, folder / "second", extra_pieces=1)
        assert (transport.handoffs, transport.spares_used) == (2, 1)
        assert hashlib.sha256((folder / "second").read_bytes()).hexdigest() == expected
        assert (folder / "second").stat().st_mode & 0o777 == 0o600
    finally:
        transport.close()


def test_a_spare_unused_past_its_idle_limit_ends(ssh_target, folder, monkeypatch):
    monkeypatch.setattr(handoff, "SPARE_IDLE_SECONDS", 1.0)
    transport = rx_magic.targets.get_target("ws").transport
    try:
        upload_until_handed_off(transport, folder / "first", extra_pieces=1)
        spare = transport.spare_pid
        assert spare is not None
        deadline = time.monotonic() + WAIT
        while transport.spare_pid is not None or alive(spare):
            assert time.monotonic() < deadline, "the idle spare is still there"
            time.sleep(0.1)
        expected = upload_until_handed_off(transport, folder / "second", extra_pieces=1)   # ssh logs in again
        assert (transport.handoffs, transport.spares_used) == (2, 0)
        assert hashlib.sha256((folder / "second").read_bytes()).hexdigest() == expected
    finally:
        transport.close()


def test_a_spare_logged_in_before_the_host_key_changed_serves_only_until_the_reconnect(ssh_target, ssh_home, folder,
                                                                                       sshd):
    """The spare is a session to the host paramiko's open connection verified, trusted as that connection is: a
    transfer takes it though known_hosts changed since, but a reconnect (which checks the key again) ends it."""
    transport = rx_magic.targets.get_target("ws").transport
    try:
        upload_until_handed_off(transport, folder / "first", extra_pieces=1)
        assert transport.wait_spare(WAIT)
        spare = transport.spare_pid
        other = (sshd.root / "id_other.pub").read_text().split()      # another ed25519 key: the host's "changed"
        (ssh_home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
        expected = upload_until_handed_off(transport, folder / "second", extra_pieces=1)
        assert (transport.handoffs, transport.spares_used) == (2, 1)
        assert hashlib.sha256((folder / "second").read_bytes()).hexdigest() == expected
        transport._chain[-1].close()        # the connection drops: the next use reconnects
        with pytest.raises(ConnectError, match="has CHANGED"):
            transport.connect()
        assert transport.spare_pid is None and not alive(spare)
    finally:
        transport.close()


def test_a_spare_whose_login_is_refused_fails_the_transfer_with_the_host_key_message(ssh_target, ssh_home, folder,
                                                                                      sshd):
    transport = rx_magic.targets.get_target("ws").transport
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    other = (sshd.root / "id_other.pub").read_text().split()

    def change_the_key():       # while the first upload goes through ssh: the spare started after it is refused
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")

    try:
        upload_until_handed_off(transport, folder / "first", extra_pieces=1, then=change_the_key)
        assert transport.spare_pid is not None
        with pytest.raises(ConnectError, match="has CHANGED") as failure:
            upload_until_handed_off(transport, folder / "refused")
        assert "ssh-keygen -R" in str(failure.value)
        assert transport.handoffs == 1
        assert not (folder / "refused").exists() and not parts(folder)
    finally:
        transport.close()


KEEPER = r"""
import os, sys, time
import rx_magic.targets
from rx_magic.transport import handoff
handoff.HANDOFF_BYTES = 2**20
transport = rx_magic.targets.get_target("ws").transport
with transport.open_atomic(os.path.join(sys.argv[1], "first")) as file:
    while transport.handoffs == 0:
        file.write(os.urandom(2**18))
        time.sleep(0.02)
assert transport.wait_spare(120)
print(transport.spare_pid, flush=True)
if sys.argv[2] == "is killed":
    time.sleep(600)
"""


@pytest.mark.parametrize("kernel", ["exits", "is killed"])
def test_a_spare_never_outlives_the_kernel(ssh_target, folder, tmp_path, kernel):
    """Its own session keeps the notebook's Stop from it, so the kernel ends it: at exit, and when killed (its
    stdin, a pipe only the kernel held, ends, and the spare's script with it)."""
    script = tmp_path / "keeper.py"
    script.write_text(KEEPER)
    kernel_process = subprocess.Popen([sys.executable, str(script), str(folder), kernel], stdout=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        spare = int(kernel_process.stdout.readline())
        if kernel == "is killed":
            assert alive(spare)
            kernel_process.kill()
        assert kernel_process.wait(timeout=WAIT) == (0 if kernel == "exits" else -9)
        deadline = time.monotonic() + WAIT
        while alive(spare):
            assert time.monotonic() < deadline, f"the spare ssh outlived the kernel that {kernel}"
            time.sleep(0.1)
    finally:
        if kernel_process.poll() is None:
            kernel_process.kill()
            kernel_process.wait()


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
folder, to, spare = sys.argv[1], sys.argv[2], sys.argv[3] == "spare"
transport = rx_magic.targets.get_target("ws").transport
piece = os.urandom(4 * 2**20)
signal.signal(signal.SIGINT, signal.default_int_handler)    # as ipykernel does while a cell runs
if spare:       # a first upload through ssh, and the spare it leaves logged in for the interrupted one
    with transport.open_atomic(os.path.join(folder, "first")) as file:
        while transport.handoffs == 0:
            file.write(piece[:2**18])
            time.sleep(0.02)
    assert transport.wait_spare(120)
before = transport.handoffs


def interrupt_once_handed_off():
    while transport.handoffs == before:     # evidence: the rest of the upload goes through ssh now
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
            if transport.handoffs == before:
                time.sleep(0.05)        # at most 80 MB/s until ssh has logged in, however long that takes
    sys.exit("1 GiB written and no KeyboardInterrupt: it was lost")
except KeyboardInterrupt:
    pass
print("stopped", sorted(os.listdir(folder)), transport.handoffs, transport.spares_used, flush=True)
transport.write_bytes(os.path.join(folder, "after"), b"after")
print(transport.read_bytes(os.path.join(folder, "after")).decode(), flush=True)
"""


@pytest.mark.parametrize("to, spare", [("process", "new ssh"), ("group", "new ssh"), ("group", "spare")])
def test_an_interrupt_during_a_handed_off_upload_removes_the_part(ssh_target, folder, tmp_path, to, spare):
    script = tmp_path / "uploader.py"
    script.write_text(UPLOADER)
    try:
        done = subprocess.run([sys.executable, str(script), str(folder), to, spare], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300, check=False, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"an interrupted upload hung; it printed: {exc.stdout!r}, {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr
    expected = "stopped ['first'] 2 1" if spare == "spare" else "stopped [] 1 0"
    assert done.stdout.splitlines() == [expected, "after"], done.stderr
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

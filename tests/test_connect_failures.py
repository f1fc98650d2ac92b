"""Connecting fails as one short paragraph: refused, silent and black-holed ports, unknown names, refused keys.

Each failure is made real on loopback: a port nothing listens on, a socket this test
opens that accepts and never speaks, a listening socket whose accept queue is full (the
kernel drops further SYNs, as a firewall that drops packets does), a name under
``.invalid`` (RFC 6761: never resolves), and a key the real sshd does not accept. The
user sees one paragraph naming host, port and what to check, within the connect timeout
(10 s), and no traceback: not from rx_magic's frames, not from paramiko's thread.
"""

import logging
import socket
import time

import pytest
from helpers import run_remote
from sshd import free_port

from rx_magic.errors import ConnectError
from rx_magic.transport.ssh import CONNECT_TIMEOUT, PARAMIKO_LOG

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture
def silent_port():
    """A listening socket that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def black_hole_port():
    """A port whose SYNs go unanswered: a listener that never accepts, its accept queue already full."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)
    with pytest.raises(TimeoutError):        # the trick works on this kernel: a connect here hangs
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    yield port
    for filler in fillers:
        filler.close()
    server.close()


class RootRecords(logging.Handler):
    """A handler on the root logger, as ``logging.basicConfig`` (or Python's last-resort stderr handler) has."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def shown_failure(ip, capsys, line="ws"):
    """Run a cell that cannot connect; return (the error's message, what the user saw, seconds it took)."""
    capsys.readouterr()
    root = logging.getLogger()
    handler, level = RootRecords(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        started = time.monotonic()
        result = run_remote(ip, line, "y = 1")
        elapsed = time.monotonic() - started
        time.sleep(0.5)     # paramiko's thread, if it were to log or print anything, has done so by now
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out, err = capsys.readouterr()
    error = result.error_in_exec
    assert isinstance(error, ConnectError), error
    seen = out + err
    assert "Traceback" not in seen and "Exception (client)" not in seen, seen
    assert str(error) in seen                   # the message is what IPython showed
    assert len(seen.strip().splitlines()) == 1, seen
    leaked = [record.getMessage() for record in handler.records if record.levelno >= logging.WARNING]
    assert leaked == []
    assert "y" not in ip.user_ns
    return str(error), seen, elapsed


def test_default_connect_timeout_is_at_most_ten_seconds():
    assert CONNECT_TIMEOUT <= 10


def test_refused_port_names_host_and_port_at_once(ip, ssh_target, capsys):
    port = free_port()
    ssh_target(host="127.0.0.1", port=port)
    message, _, elapsed = shown_failure(ip, capsys)
    assert message.startswith("cannot connect to 127.0.0.1: ")
    assert f"127.0.0.1 port {port} refused the connection" in message
    assert "its SSH server listens" in message and "targets.toml" in message
    assert elapsed < 5


def test_silent_port_gives_up_within_the_connect_timeout(ip, ssh_target, capsys, silent_port):
    ssh_target(host="127.0.0.1", port=silent_port)
    message, _, elapsed = shown_failure(ip, capsys)
    assert f"127.0.0.1 port {silent_port} took the connection but no SSH server answered" in message
    assert f"within {CONNECT_TIMEOUT:.0f} s" in message
    assert elapsed < CONNECT_TIMEOUT + 3


def test_black_hole_gives_up_within_the_connect_timeout(ip, ssh_target, capsys, black_hole_port):
    ssh_target(host="127.0.0.1", port=black_hole_port)
    message, _, elapsed = shown_failure(ip, capsys)
    assert f"127.0.0.1 port {black_hole_port} did not answer within {CONNECT_TIMEOUT:.0f} s" in message
    assert "VPN" in message and "firewall" in message
    assert CONNECT_TIMEOUT - 1 < elapsed < CONNECT_TIMEOUT + 3


def test_unknown_host_name_says_it_cannot_be_resolved(ip, ssh_target, capsys):
    ssh_target(host="no-such-host.invalid", port=2222)
    message, _, elapsed = shown_failure(ip, capsys)
    assert "the host name no-such-host.invalid cannot be resolved" in message
    assert "HostName and Port for no-such-host.invalid" in message
    assert elapsed < CONNECT_TIMEOUT + 3


def test_refused_key_names_host_port_and_the_key(ip, ssh_target, sshd, capsys):
    ssh_target(host="127.0.0.1", port=sshd.port, user=sshd.user, identity_file=str(sshd.other_key))
    message, _, elapsed = shown_failure(ip, capsys)
    assert f"{sshd.user}@127.0.0.1 (port {sshd.port}) refused every key offered" in message
    assert str(sshd.other_key) in message and "authorized_keys" in message
    assert elapsed < CONNECT_TIMEOUT


def test_paramiko_logs_of_rx_magic_connections_stay_with_rx_magic(ssh_target, silent_port, caplog):
    # what paramiko's thread logs (a traceback at ERROR) goes to PARAMIKO_LOG, which does not propagate
    from rx_magic.transport.ssh import SSHTransport
    kept = []

    class Keep(logging.Handler):
        def emit(self, record):
            kept.append(record)

    handler = Keep()
    logging.getLogger(PARAMIKO_LOG).addHandler(handler)
    try:
        transport = SSHTransport("127.0.0.1", port=silent_port, connect_timeout=1)
        with caplog.at_level(logging.DEBUG), pytest.raises(ConnectError):
            transport.connect()
        transport.close()
    finally:
        logging.getLogger(PARAMIKO_LOG).removeHandler(handler)
    assert kept, "paramiko logged nothing for a failed connection"
    assert not [record for record in caplog.records if record.name.startswith("paramiko")]


def test_resolver_that_does_not_answer_is_given_up_at_the_connect_timeout(monkeypatch):
    # A fake, for what loopback cannot show: glibc's getaddrinfo when resolv.conf's server does not answer
    # waits out its timeout times its attempts (5 s x 2 by default), then fails with EAI_AGAIN.
    from rx_magic.transport.ssh import SSHTransport

    real = socket.getaddrinfo

    def unanswered(host, *args, **kwargs):
        if host != "cluster.example.invalid":
            return real(host, *args, **kwargs)
        time.sleep(4)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", unanswered)
    transport = SSHTransport("cluster.example.invalid", port=22, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectError) as raised:
        transport.connect()
    assert time.monotonic() - started < 2
    assert "the host name cluster.example.invalid did not resolve within 1 s" in str(raised.value)
    assert "DNS" in str(raised.value)


def test_jump_host_that_cannot_reach_the_target_names_both(ip, ssh_target, sshd, ssh_home, capsys):
    port = free_port()      # nothing listens there: the jump host's own connection onwards is refused
    config = ssh_home / ".ssh" / "config"
    config.write_text(config.read_text() + "\n".join([
        "Host rxbehind", "    HostName 127.0.0.1", f"    Port {port}", f"    User {sshd.user}",
        f"    IdentityFile {sshd.user_key}", "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {ssh_home / '.ssh' / 'known_hosts'}", "    ProxyJump rxtest", ""]))
    ssh_target(host="rxbehind")
    message, _, elapsed = shown_failure(ip, capsys)
    assert message.startswith("cannot connect to rxbehind (jump host rxtest of rxbehind): ")
    assert f"the jump host rxtest could not reach 127.0.0.1 port {port}" in message
    assert "ProxyJump" in message
    assert elapsed < CONNECT_TIMEOUT


@pytest.fixture
def stalling_ssh_port():
    """A listening socket that answers each connection with an SSH banner, then says nothing more."""
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.sendall(b"SSH-2.0-OpenSSH_9.6 overloaded\r\n")
            held.append(connection)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in held:
        connection.close()


def test_ssh_server_that_stalls_after_its_banner_is_given_up_at_the_connect_timeout(stalling_ssh_port):
    from rx_magic.transport.ssh import SSHTransport
    transport = SSHTransport("127.0.0.1", port=stalling_ssh_port, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(ConnectError) as raised:
        transport.connect()
    assert time.monotonic() - started < 3
    message = str(raised.value)
    assert f"the SSH server at 127.0.0.1 port {stalling_ssh_port} (SSH-2.0-OpenSSH_9.6 overloaded) answered" in message
    assert "did not finish the handshake within 2 s" in message

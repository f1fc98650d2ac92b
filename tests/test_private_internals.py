"""The private and undocumented parts of paramiko and ipykernel that rx_magic uses, pinned to the versions tested.

No public API does these jobs. Each test checks that an internal is still there, with
the shape rx_magic relies on, in the installed version; a failure names the internal,
the rx_magic module that uses it, and the versions it was tested with, so an upgrade
that moves it fails here rather than at a user's desk. When one fails: read the new
release's source, adapt the use site, then widen the range here and in pyproject.toml.

paramiko's internals were read in the source of 3.4.0 and 4.0.0 and run with 5.1.0;
ipykernel's in 7.0.0 to 7.3.0 and run with 7.4.0 (on ipykernel 6 the comm pump does
nothing, by design). tests/test_ssh_target.py and tests/test_kernel.py run the same
code end to end.
"""

from __future__ import annotations

import inspect
import re
import select
import socket
import threading
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import paramiko
import paramiko.buffered_pipe
import paramiko.channel
import paramiko.packet
import paramiko.sftp_file
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from rx_magic.transport.ssh import (
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    PacketQueue,
    _tuned_transport,
    install_packet_queue,
)
from rx_magic.ui.comm_pump import COMM_MESSAGES

#: The versions each package's internals were tested with; pyproject.toml declares the same.
TESTED = {"paramiko": ">=3.4,<6", "ipykernel": ">=6.29,<8"}
#: Within ipykernel's range, where the comm pump is expected to work (it does nothing on 6).
PUMP_WORKS = ">=7.0,<8"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REKEY_LIMITS = ("REKEY_BYTES", "REKEY_PACKETS", "REKEY_BYTES_OVERFLOW_MAX", "REKEY_PACKETS_OVERFLOW_MAX")


@contextmanager
def pinned(internal: str, user: str, package: str = "paramiko"):
    """Any failure inside becomes one loud message: what moved, who uses it, what was tested."""
    try:
        yield
    except Exception as exc:
        tested = PUMP_WORKS if package == "ipykernel" else TESTED[package]
        pytest.fail(f"{internal}, used by {user}, is not what rx_magic was tested with ({package}{tested}); "
                    f"{package} {version(package)} is installed. Read its source, adapt {user}, then update "
                    f"tests/test_private_internals.py and pyproject.toml.\n{type(exc).__name__}: {exc}")


def declared(name: str) -> SpecifierSet:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(line)
        if requirement.name == name:
            return requirement.specifier
    raise AssertionError(f"pyproject.toml does not declare {name}")


@pytest.mark.parametrize("name", sorted(TESTED))
def test_pyproject_declares_the_tested_range(name):
    assert declared(name) == SpecifierSet(TESTED[name]), (
        f"pyproject.toml declares {name}{declared(name)}, but tests/test_private_internals.py tested {TESTED[name]}")


@pytest.mark.parametrize("name", sorted(TESTED))
def test_the_installed_version_is_within_the_tested_range(name):
    assert SpecifierSet(TESTED[name]).contains(version(name), prereleases=True), (
        f"{name} {version(name)} is installed, but rx_magic's use of its internals was tested with "
        f"{name}{TESTED[name]} only: if the rest of tests/test_private_internals.py passes, widen the range "
        "there and in pyproject.toml")


# -- paramiko: rx_magic/transport/ssh.py ---------------------------------------------------------

def test_a_channel_receives_into_a_buffered_pipe_that_can_be_swapped_before_data_arrives():
    with pinned("Channel.in_buffer, Channel.in_window_size and the methods Channel calls on in_buffer",
                "rx_magic/transport/ssh.py (install_packet_queue, PacketQueue)"):
        channel = paramiko.Channel(0)
        assert type(channel.in_buffer) is paramiko.buffered_pipe.BufferedPipe
        channel._set_window(WINDOW_SIZE, MAX_PACKET_SIZE)       # what Transport.open_session does
        assert channel.in_window_size == WINDOW_SIZE
        # PacketQueue gathers a quarter of the window: paramiko must acknowledge reads before that
        assert channel.in_window_threshold == WINDOW_SIZE // 10
        source = inspect.getsource(paramiko.channel)
        assert set(re.findall(r"self\.in_buffer\.(\w+)", source)) == {"feed", "read", "read_ready", "set_event",
                                                                      "close"}
        elsewhere = [path.name for path in Path(paramiko.__file__).parent.glob("*.py")
                     if path.name != "channel.py" and "in_buffer" in path.read_text()]
        assert elsewhere == []


def test_a_buffered_pipe_keeps_the_lock_condition_event_and_closed_flag_packet_queue_uses():
    with pinned("BufferedPipe._lock, _cv, _event, _closed and BufferedPipe.close",
                "rx_magic/transport/ssh.py (PacketQueue)"):
        stock = paramiko.buffered_pipe.BufferedPipe()
        assert isinstance(stock._cv, threading.Condition) and hasattr(stock._lock, "acquire")
        assert stock._event is None and stock._closed is False
        assert set(re.findall(r"self\.(_\w+)", inspect.getsource(paramiko.buffered_pipe.BufferedPipe.close))) <= {
            "_lock", "_cv", "_event", "_closed"}
        assert issubclass(paramiko.buffered_pipe.PipeTimeout, IOError)


def test_the_packet_queue_serves_a_channel_as_the_stock_buffer_does():
    with pinned("Channel._feed, Channel._handle_eof and Channel.recv over in_buffer",
                "rx_magic/transport/ssh.py (PacketQueue)"):
        channel = paramiko.Channel(0)
        channel._set_window(WINDOW_SIZE, MAX_PACKET_SIZE)
        assert install_packet_queue(channel) and isinstance(channel.in_buffer, PacketQueue)
        channel.fileno()                                        # select() on a channel: set_event
        try:
            assert select.select([channel], [], [], 0)[0] == []
            channel._feed(b"ab")                                # what the transport's thread does per packet
            channel._feed(b"cd")
            assert select.select([channel], [], [], 0)[0] == [channel]
            channel.settimeout(0.0)
            assert channel.recv_ready() and channel.recv(3) == b"abc" and channel.recv(10) == b"d"
            with pytest.raises(socket.timeout):
                channel.recv(1)
            channel.settimeout(None)
            received = []
            reader = threading.Thread(target=lambda: received.append(channel.recv(10)))
            reader.start()
            channel._handle_eof(None)                           # the server's EOF wakes a waiting reader
            reader.join(10)
            assert received == [b""]
        finally:
            channel._pipe.close()


def test_a_channel_says_eof_received_once_the_server_ends_its_output():
    with pinned("Channel.eof_received", "rx_magic/transport/ssh.py (_drain)"):
        channel = paramiko.Channel(0)
        assert not channel.eof_received
        channel._handle_eof(None)
        assert channel.eof_received is True and not channel.closed
        assert channel.recv(1) == b""


def test_the_packetizer_reads_its_rekey_limits_from_the_instance():
    with pinned(f"Transport.packetizer and Packetizer.{'/'.join(REKEY_LIMITS)}",
                "rx_magic/transport/ssh.py (_tuned_transport)"):
        assert all(isinstance(getattr(paramiko.packet.Packetizer, name), int) for name in REKEY_LIMITS)
        assert set(re.findall(r"self\.(REKEY_\w+)", inspect.getsource(paramiko.packet.Packetizer))) == set(REKEY_LIMITS)
        client, server = socket.socketpair()
        try:
            transport = _tuned_transport(client)
            assert type(transport.packetizer) is paramiko.packet.Packetizer
            assert all(getattr(transport.packetizer, name) == 2**62 for name in REKEY_LIMITS)
        finally:
            client.close()
            server.close()


def test_an_sftp_file_sizes_its_requests_by_its_own_max_request_size():
    with pinned("SFTPFile.MAX_REQUEST_SIZE", "rx_magic/transport/ssh.py (read_bytes, open_read, open_atomic)"):
        sftp_file = paramiko.sftp_file.SFTPFile
        assert isinstance(sftp_file.MAX_REQUEST_SIZE, int)
        for method in ("_read", "_write", "prefetch"):
            assert "self.MAX_REQUEST_SIZE" in inspect.getsource(getattr(sftp_file, method)), method


def test_the_sftp_client_sends_each_request_through_write_all_on_its_channel():
    with pinned("BaseSFTP._write_all(out) over SFTPClient.sock (the channel)",
                "rx_magic/transport/ssh.py (_SFTPClient)"):
        import paramiko.sftp
        assert list(inspect.signature(paramiko.sftp.BaseSFTP._write_all).parameters) == ["self", "out"]
        assert "self._write_all(" in inspect.getsource(paramiko.sftp.BaseSFTP._send_packet)
        assert "self.sock = sock" in inspect.getsource(paramiko.SFTPClient.__init__)


# -- ipykernel: rx_magic/ui/comm_pump.py ---------------------------------------------------------

@pytest.fixture
def pump_expected():
    pytest.importorskip("ipykernel")
    if Version(version("ipykernel")).major < 7:
        pytest.skip("on ipykernel 6 the comm pump does nothing, by design")


def test_ipykernel_tells_the_shell_parents_identity_through_its_parent_ident_shim(pump_expected):
    from ipykernel.kernelbase import Kernel
    with pinned("Kernel._parent_ident['shell'] beside get_parent/set_parent",
                "rx_magic/ui/comm_pump.py (CommPump._handle)", "ipykernel"):
        kernel = Kernel()
        assert list(inspect.signature(Kernel.set_parent).parameters) == ["self", "ident", "parent", "channel"]
        kernel.set_parent([b"cell"], {"header": {"msg_id": "cell"}}, channel="shell")
        assert kernel._parent_ident["shell"] == [b"cell"]
        assert kernel.get_parent("shell") == {"header": {"msg_id": "cell"}}


def test_ipykernel_7_main_shell_receives_on_the_socket_the_pump_reads(pump_expected):
    import zmq
    from ipykernel.kernelbase import Kernel
    from ipykernel.shellchannel import ShellChannelThread
    from ipykernel.socket_pair import SocketPair
    from ipykernel.subshell_manager import SubshellManager
    with pinned("Kernel.shell_channel_thread.manager.get_shell_channel_to_subshell_pair(None).to_socket, "
                "Kernel.shell_stream and Kernel.shell_main", "rx_magic/ui/comm_pump.py (CommPump.for_shell)",
                "ipykernel"):
        assert {"shell_channel_thread", "shell_stream", "session"} <= set(Kernel.class_traits())
        assert isinstance(inspect.getattr_static(ShellChannelThread, "manager"), property)
        get_pair = SubshellManager.get_shell_channel_to_subshell_pair
        assert list(inspect.signature(get_pair).parameters) == ["self", "subshell_id"]
        assert "self._shell_channel_to_main" in inspect.getsource(get_pair)
        # the main shell's own receive callback, which the pump hands other messages back to
        assert "self._shell_channel_to_main.on_recv" in inspect.getsource(SubshellManager.set_on_recv_callback)
        assert "manager.set_on_recv_callback(self.shell_main)" in inspect.getsource(Kernel.start)
        assert "self.io_loop = " in inspect.getsource(Kernel.start)
        assert inspect.iscoroutinefunction(Kernel.shell_main)
        assert list(inspect.signature(Kernel.shell_main).parameters) == ["self", "subshell_id", "msg"]
        context = zmq.Context()
        try:
            pair = SocketPair(context, "-rx-magic-test")
            assert isinstance(pair.to_socket, zmq.Socket)
            pair.close()
        finally:
            context.term()


def test_ipykernel_handles_comm_messages_with_its_comm_managers_handlers(pump_expected):
    import ipykernel
    from ipykernel.comm.manager import CommManager
    with pinned("Kernel.shell_handlers[comm_*] = CommManager.comm_*(stream, ident, msg)",
                "rx_magic/ui/comm_pump.py (CommPump._handle)", "ipykernel"):
        for kind in COMM_MESSAGES:
            assert list(inspect.signature(getattr(CommManager, kind)).parameters) == ["self", "stream", "ident", "msg"]
        # read, not imported: importing ipykernel.ipkernel replaces comm's factories for the whole test run
        source = (Path(ipykernel.__file__).parent / "ipkernel.py").read_text()
        assert "self.shell_handlers[msg_type] = getattr(self.comm_manager, msg_type)" in source

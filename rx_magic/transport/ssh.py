"""The SSH transport: one paramiko connection per target, files over SFTP, commands over exec.

It honours ``~/.ssh/config`` (HostName, User, Port, IdentityFile,
IdentitiesOnly, ProxyJump, UserKnownHostsFile), uses the ssh-agent and the
default keys, and verifies the host key against known_hosts: an unknown key
is refused (or, with ``host_key_policy = "accept-new"``, recorded), a changed
key always is.

Tuning, measured on loopback (see benchmarks/bench_ssh.py): the socket is
made here with TCP_NODELAY, which paramiko never sets (without it every
request on a reused connection stalls ~40 ms); a 4 MiB window and 256 KiB
packets; AES-GCM first; SFTP requests of 261120 bytes, the most OpenSSH
accepts, pipelined on writes and prefetched on reads, and on the SFTP channel a
receive buffer that queues packets instead of copying them into one shifting
array (``install_packet_queue``). paramiko starts its own
rekey after 512 MiB, and a channel the server closes during that rekey hangs
the connection (paramiko #822): rekeying is left to the server instead,
which OpenSSH does by its own RekeyLimit.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import select
import shlex
import socket
import stat
import threading
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

import paramiko
import paramiko.buffered_pipe

from ..errors import TransportError
from .base import CommandResult, Transport
from .command_agent import AgentUnavailable, CommandAgent

WINDOW_SIZE = 4 * 2**20
MAX_PACKET_SIZE = 256 * 2**10
SFTP_REQUEST_SIZE = 261120
WRITE_PIECE = 4 * 2**20
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
CONNECT_TIMEOUT = 20
KEEPALIVE_SECONDS = 30

_CONNECTION_ERRORS = (paramiko.SSHException, EOFError, ConnectionError, socket.timeout, socket.error)


@dataclass(frozen=True)
class HostSettings:
    """Where and as whom to connect, once ``~/.ssh/config`` and the target's own keys are merged."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: str | None
    known_hosts_files: tuple[str, ...]

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        via = f" via {self.proxy_jump}" if self.proxy_jump else ""
        return f"{self.user}@{self.hostname}:{self.port}{via}"


def ssh_config_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".ssh", "config")


def resolve_host(alias: str, *, user: str | None = None, port: int | None = None,
                 identity_file: str | None = None) -> HostSettings:
    """Merge the target's settings over ``~/.ssh/config``'s for ``alias``."""
    config = paramiko.SSHConfig()
    path = ssh_config_path()
    if os.path.isfile(path):
        try:
            config = paramiko.SSHConfig.from_path(path)
        except Exception as exc:
            raise TransportError(f"cannot read {path}: {exc}") from exc
    found = config.lookup(alias)
    files = [os.path.expanduser(identity_file)] if identity_file else []
    files += [os.path.expanduser(path) for path in found.get("identityfile", [])]
    known = found.get("userknownhostsfile", "~/.ssh/known_hosts").split()
    jump = found.get("proxyjump")
    return HostSettings(
        alias=alias,
        hostname=found.get("hostname", alias),
        port=int(port or found.get("port", 22)),
        user=user or found.get("user") or getpass.getuser(),
        identity_files=tuple(dict.fromkeys(files)),
        identities_only=found.get("identitiesonly", "no").lower() == "yes" or bool(identity_file),
        proxy_jump=None if (jump or "").lower() == "none" else jump,
        known_hosts_files=tuple(os.path.expanduser(path) for path in known),
    )


def _jump_hosts(proxy_jump: str) -> list[HostSettings]:
    hops = []
    for hop in proxy_jump.split(","):
        user, _, rest = hop.strip().rpartition("@")
        name, _, port = rest.partition(":")
        settings = resolve_host(name, user=user or None, port=int(port) if port else None)
        hops.append(settings)
    return hops


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_base64()[:20]


def verify_host_key(transport: paramiko.Transport, host: HostSettings, policy: str) -> str:
    """Check the server's key against known_hosts; return "known" or "recorded"."""
    key = transport.get_remote_server_key()
    name = host.known_hosts_name
    known = paramiko.HostKeys()
    for path in host.known_hosts_files:
        if os.path.isfile(path):
            try:
                known.load(path)
            except Exception as exc:
                raise TransportError(f"cannot read known hosts file {path}: {exc}") from exc
    entries = known.lookup(name) or {}
    if key.get_name() in entries:
        if entries[key.get_name()] == key:
            return "known"
        raise TransportError(
            f"the host key of {name} has CHANGED: it now offers {key.get_name()} {_fingerprint(key)}, which does "
            f"not match {host.known_hosts_files[0]}. This may be an attack, or the host was reinstalled; check with "
            f"its administrators, then remove the old key with `ssh-keygen -R '{name}'` and connect again")
    if policy != "accept-new":
        raise TransportError(
            f"the host key of {name} is not known: it offers {key.get_name()} {_fingerprint(key)}. Check that "
            f"fingerprint with the host's administrators, then trust it by connecting once with "
            f"`ssh -p {host.port} {host.user}@{host.hostname}` and answering yes, or set "
            'host_key_policy = "accept-new" for this target to record it on first use')
    path = host.known_hosts_files[0]
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as file:
        file.write(f"{name} {key.get_name()} {key.get_base64()}\n")
    return "recorded"


def _load_key(path: str) -> paramiko.PKey | str:
    """The private key at ``path``, or why it cannot be used."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        return "encrypted: add it to your ssh-agent (ssh-add) so rx_magic can use it"
    except Exception as exc:
        return f"unreadable ({exc})"


def authenticate(transport: paramiko.Transport, host: HostSettings) -> str:
    """Try the agent's keys, then the configured and default key files; return what worked."""
    tried: list[str] = []
    candidates: list[tuple[str, object]] = []
    if not host.identities_only:
        try:
            candidates += [(f"agent key {_fingerprint(key)}", key) for key in paramiko.Agent().get_keys()]
        except Exception:
            pass
    files = list(host.identity_files)
    if not host.identities_only or not files:
        files += [os.path.join(os.path.expanduser("~"), ".ssh", name) for name in DEFAULT_KEYS]
    for path in dict.fromkeys(files):
        if os.path.isfile(path):
            candidates.append((path, path))
    for label, key in candidates:
        if isinstance(key, str):
            loaded = _load_key(key)
            if isinstance(loaded, str):
                tried.append(f"{label} ({loaded})")
                continue
            key = loaded
        try:
            transport.auth_publickey(host.user, key)
        except paramiko.AuthenticationException:
            tried.append(label)
            continue
        except paramiko.SSHException as exc:
            raise TransportError(f"authentication with {host.describe()} failed: {exc}") from exc
        if transport.is_authenticated():
            return f"publickey ({label})"
    keys = "; ".join(tried) if tried else "no key was found (no agent, no ~/.ssh/id_* file, no IdentityFile)"
    raise TransportError(
        f"{host.user}@{host.hostname} refused every key offered; tried: {keys}. Put your public key in "
        f"~/.ssh/authorized_keys on {host.hostname} (e.g. `ssh-copy-id -p {host.port} {host.user}@{host.hostname}`), "
        "or name the right key with identity_file in the target or IdentityFile in ~/.ssh/config")


def _tuned_transport(sock) -> paramiko.Transport:
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    options = transport.get_security_options()
    options.ciphers = PREFERRED_CIPHERS + tuple(c for c in options.ciphers if c not in PREFERRED_CIPHERS)
    # leave rekeying to the server (paramiko #822: its own rekey can hang a closing channel); no public
    # setting does this: Packetizer's limits are pinned by tests/test_private_internals.py
    packetizer = transport.packetizer
    packetizer.REKEY_BYTES = packetizer.REKEY_PACKETS = 2**62
    packetizer.REKEY_BYTES_OVERFLOW_MAX = packetizer.REKEY_PACKETS_OVERFLOW_MAX = 2**62
    return transport


def _open_sftp(transport: paramiko.Transport) -> paramiko.SFTPClient:
    """``SFTPClient.from_transport``, with the channel's receive buffer swapped before any data arrives."""
    channel = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
    install_packet_queue(channel)
    channel.invoke_subsystem("sftp")
    return paramiko.SFTPClient(channel)


def install_packet_queue(channel: paramiko.Channel) -> bool:
    """Give ``channel`` a :class:`PacketQueue` as its receive buffer; False (stock buffer kept) if it can't.

    This replaces ``Channel.in_buffer``, an undocumented attribute: paramiko 3.4 to 5.1's
    ``Channel`` makes a ``BufferedPipe`` there and calls only its ``feed``, ``read``,
    ``read_ready``, ``set_event``, ``close`` and ``len`` (pinned by tests/test_private_internals.py,
    with ``in_window_size`` and the ``BufferedPipe`` internals ``PacketQueue`` uses). It must happen
    before the channel carries data, i.e. before ``invoke_subsystem``. If a paramiko release puts
    anything else there, that stays, and SFTP works as before, only slower.
    """
    stock = getattr(channel, "in_buffer", None)
    if type(stock) is not paramiko.buffered_pipe.BufferedPipe or len(stock) or channel.closed:
        return False
    channel.in_buffer = PacketQueue(gather=max(channel.in_window_size // 4, 1))
    return True


class PacketQueue(paramiko.buffered_pipe.BufferedPipe):
    """A channel receive buffer that queues the packets it is fed, by reference.

    paramiko's ``BufferedPipe`` copies every packet into one ``array`` and each read copies the
    front out twice, then deletes it, shifting all that is left: with a 4 MiB window of data
    waiting, each 255 KiB SFTP reply moves megabytes. Here a read joins what it takes, once.

    A blocking read (no timeout) of up to ``gather`` bytes also waits until all of them are here,
    instead of returning the first packet: the SFTP client always wants a whole reply (it reads
    ``len`` bytes in a loop, ``out += piece``, re-copying the reply for every ~32 KiB packet), and
    the reader thread is woken once per reply, not per packet. The wait cannot stall the window:
    ``gather`` is a quarter of it, and paramiko acknowledges what was read each time a tenth of
    the window has been, so the server always has room to send the rest.

    It uses ``BufferedPipe``'s private ``_lock``, ``_cv``, ``_event`` and ``_closed`` (and inherits
    its ``close``): pinned by tests/test_private_internals.py.
    """

    def __init__(self, gather: int):
        super().__init__()
        self._packets: deque[bytes] = deque()
        self._offset = 0        # how much of the first packet was read already
        self._size = 0
        self._wanted = 0        # what a waiting reader needs buffered before it is woken
        self._gather = gather

    def set_event(self, event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data) -> None:
        data = bytes(data) if type(data) is not bytes else data    # kept by reference: it must not change
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                self._packets.append(data)
                self._size += len(data)
            if self._size >= self._wanted:
                self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            wanted = min(nbytes, self._gather) if timeout is None else 1
            if self._size < wanted and not self._closed:
                if timeout == 0.0 and not self._size:
                    raise paramiko.buffered_pipe.PipeTimeout()
                deadline = None if timeout is None else time.monotonic() + timeout
                self._wanted = min(self._wanted, wanted) if self._wanted else wanted    # the least any reader needs
                try:
                    while self._size < wanted and not self._closed:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            if self._size:
                                break
                            raise paramiko.buffered_pipe.PipeTimeout()
                        self._cv.wait(left)
                finally:
                    self._wanted = 0
            pieces = self._take(min(nbytes, self._size))
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
        return pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces)

    def _take(self, count: int) -> list:
        """Unqueue ``count`` bytes (with the lock held); the pieces are joined after it is released."""
        pieces = []
        self._size -= count
        while count:
            packet = self._packets[0]
            left = len(packet) - self._offset
            if left <= count:
                pieces.append(memoryview(packet)[self._offset:] if self._offset else packet)
                self._packets.popleft()
                self._offset = 0
                count -= left
            else:
                pieces.append(memoryview(packet)[self._offset:self._offset + count])
                self._offset += count
                count = 0
        return pieces

    def empty(self) -> bytes:
        with self._lock:
            pieces = self._take(self._size)
            if self._event is not None and not self._closed:
                self._event.clear()
        return b"".join(pieces)

    def __len__(self) -> int:
        with self._lock:
            return self._size


@dataclass
class ConnectionInfo:
    """What ``%rx check`` reports of the last connection."""

    host: HostSettings
    host_key: str = ""
    auth: str = ""
    connect_seconds: float = 0.0
    server_key: paramiko.PKey | None = None     # the last hop's host key, for its fingerprint


class SSHTransport(Transport):
    """A lazily opened, kept-alive SSH connection with one reused SFTP session."""

    def __init__(self, alias: str, *, user: str | None = None, port: int | None = None,
                 identity_file: str | None = None, host_key_policy: str = "strict",
                 python: str = "python3", setup: tuple[str, ...] = ()):
        self.alias = alias
        self._agent_settings = (python, tuple(setup))
        self._agent: CommandAgent | None = None
        self._agent_failed = False
        self._options = dict(user=user, port=port, identity_file=identity_file)
        self.host_key_policy = host_key_policy
        self.description = f"{alias} (ssh)"
        self.info: ConnectionInfo | None = None
        self._chain: list[paramiko.Transport] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._home: str | None = None

    # -- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._chain) and self._chain[-1].is_active()

    def connect(self) -> ConnectionInfo:
        """Open the connection now (it is otherwise opened on first use)."""
        with self._lock:
            if self._chain and self._chain[-1].is_active():
                return self.info
            self.close()
            started = time.monotonic()
            host = resolve_host(self.alias, **self._options)
            hops = _jump_hosts(host.proxy_jump) if host.proxy_jump else []
            chain = [*hops, host]
            try:
                sock = socket.create_connection((chain[0].hostname, chain[0].port), timeout=CONNECT_TIMEOUT)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for index, hop in enumerate(chain):
                    transport = _tuned_transport(sock)
                    self._chain.append(transport)
                    transport.start_client(timeout=CONNECT_TIMEOUT)
                    host_key = verify_host_key(transport, hop, self.host_key_policy)
                    auth = authenticate(transport, hop)
                    transport.set_keepalive(KEEPALIVE_SECONDS)
                    if index + 1 < len(chain):      # ProxyJump: the next hop through this one
                        following = chain[index + 1]
                        sock = transport.open_channel("direct-tcpip", (following.hostname, following.port),
                                                      ("127.0.0.1", 0))
            except TransportError:
                self.close()
                raise
            except (OSError, *_CONNECTION_ERRORS) as exc:
                self.close()
                raise TransportError(f"cannot connect to {self.alias} ({host.describe()}): {exc}") from exc
            self.info = ConnectionInfo(host, host_key, auth, time.monotonic() - started,
                                       transport.get_remote_server_key())
            return self.info

    @property
    def _ssh(self) -> paramiko.Transport:
        self.connect()
        return self._chain[-1]

    @property
    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            transport = self._ssh
            if self._sftp is None or self._sftp.get_channel().closed:
                try:
                    self._sftp = _open_sftp(transport)
                except _CONNECTION_ERRORS as exc:
                    self.close()
                    raise TransportError(f"cannot open SFTP on {self.alias}: {exc}") from exc
            return self._sftp

    def close(self) -> None:
        with self._lock:
            if self._agent is not None:
                self._agent.close()
                self._agent = None
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:
                    pass
                self._sftp = None
            for transport in reversed(self._chain):
                try:
                    transport.close()
                except Exception:
                    pass
            self._chain = []

    @contextmanager
    def _translated(self, what: str):
        """One operation at a time; connection-level failures become ``TransportError`` and drop the connection.

        paramiko's SFTPClient is not safe for requests from two threads at once (one can take
        the other's reply), and a monitor thread polls while the kernel's thread pulls.
        """
        with self._lock:
            try:
                yield
            except (FileNotFoundError, PermissionError, FileExistsError):
                raise
            except TransportError:
                raise
            except (OSError, *_CONNECTION_ERRORS) as exc:
                if not isinstance(exc, OSError) or exc.errno is None:
                    self.close()            # the link itself failed: reconnect on next use
                raise TransportError(f"{what} on {self.alias} failed: {exc}") from exc

    # -- commands --------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float | None = 120, check: bool = True) -> CommandResult:
        argv = tuple(argv)
        agent = self._command_agent()
        code = None
        if agent is not None:
            try:
                code, stdout, stderr = agent.run(argv, input, timeout)
            except AgentUnavailable:
                self._agent = None      # the link may have dropped: the exec below says so if it did
        if code is None:
            code, stdout, stderr = self._exec(argv, input, timeout)
        result = CommandResult(argv, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        if check and code != 0:
            raise TransportError(f"{argv[0]} exited with code {code} on {self.alias}:\n{result.tail()}")
        return result

    def _command_agent(self) -> CommandAgent | None:
        with self._lock:
            if self._agent_failed:
                return None
            if self._agent is None or not self._agent.alive:
                python, setup = self._agent_settings
                try:
                    self._agent = CommandAgent(self._ssh, python, setup)
                except AgentUnavailable:
                    self._agent, self._agent_failed = None, True
            return self._agent

    def _exec(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        """One SSH exec: the login shell runs the quoted command."""
        command = shlex.join(argv)
        with self._translated(f"running {argv[0]}"):
            channel = self._ssh.open_session()
            try:
                channel.exec_command(command)
                if input:
                    channel.sendall(input)
                channel.shutdown_write()
                stdout, stderr = _drain(channel, timeout, command)
                return channel.recv_exit_status(), stdout, stderr
            finally:
                channel.close()

    # -- files -----------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        with self._translated(f"checking {path}"):
            try:
                self.sftp.stat(path)
                return True
            except FileNotFoundError:
                return False

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        with self._translated(f"reading {path}"):
            with self.sftp.open(path, "rb") as file:
                file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE   # undocumented: see tests/test_private_internals.py
                if offset:
                    file.seek(offset)
                size = file.stat().st_size
                if size - offset > SFTP_REQUEST_SIZE:
                    file.prefetch(size)
                # paramiko's read() asks for 8 KiB at a time: one round trip each, or a split reply
                return _PieceReader(file, nullcontext).read()

    def open_read(self, path: str) -> BinaryIO:
        with self._translated(f"opening {path}"):
            file = self.sftp.open(path, "rb")
            file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE       # undocumented: see tests/test_private_internals.py
            file.prefetch(file.stat().st_size)
            return _PieceReader(file, lambda: self._translated(f"reading {path}"))

    @contextmanager
    def open_atomic(self, path: str, mode: int = 0o600) -> Iterator[BinaryIO]:
        folder, name = posixpath.split(path)
        temporary = posixpath.join(folder, f".{name}.{os.urandom(4).hex()}.part")
        sftp = self.sftp
        with self._translated(f"writing {path}"):
            file = sftp.open(temporary, "wb", bufsize=0)
        writer = _PipelinedWriter(file)
        try:
            with self._translated(f"writing {path}"):
                file.set_pipelined(True)
                file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE   # undocumented: see tests/test_private_internals.py
                sftp.chmod(temporary, mode)
            with self._translated(f"writing {path}"):     # the link may drop mid-upload
                yield writer
            with self._translated(f"writing {path}"):
                file.close()            # waits for every pipelined write to be acknowledged
                size = sftp.stat(temporary).st_size
                if size != writer.written:
                    raise TransportError(f"upload of {path} to {self.alias} arrived with {size} of "
                                         f"{writer.written} bytes")
                sftp.posix_rename(temporary, path)
        except BaseException:
            try:
                file.close()
                sftp.remove(temporary)
            except Exception:
                pass
            raise

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        with self._translated(f"creating {path}"):
            sftp = self.sftp
            missing = []
            current = path.rstrip("/")
            while current and current != "/":
                try:
                    if not stat.S_ISDIR(sftp.stat(current).st_mode):
                        raise TransportError(f"{current} on {self.alias} exists and is not a folder")
                    break
                except FileNotFoundError:
                    missing.append(current)
                    current = posixpath.dirname(current)
            for folder in reversed(missing):
                try:
                    sftp.mkdir(folder, mode)
                    sftp.chmod(folder, mode)
                except OSError as exc:
                    if not self.exists(folder):
                        raise TransportError(f"cannot create {folder} on {self.alias}: {exc}") from exc

    def rename(self, source: str, destination: str) -> None:
        with self._translated(f"renaming {source}"):
            self.sftp.posix_rename(source, destination)

    def remove_tree(self, path: str) -> int:
        script = 'du -sk -- "$1" 2>/dev/null | cut -f1; rm -rf -- "$1"'
        result = self.run(["sh", "-c", script, "rx-clean", path], check=False)
        kilobytes = result.stdout.strip()
        return int(kilobytes) * 1024 if kilobytes.isdigit() else 0

    def listdir(self, path: str) -> list[str]:
        with self._translated(f"listing {path}"):
            try:
                return self.sftp.listdir(path)
            except FileNotFoundError:
                return []

    def listdir_times(self, path: str) -> dict[str, float]:
        with self._translated(f"listing {path}"):
            try:
                # READDIR's attributes are the entries' own (lstat), as `ls -l` shows them
                return {entry.filename: float(entry.st_mtime or 0) for entry in self.sftp.listdir_attr(path)}
            except FileNotFoundError:
                return {}

    def expand_home(self, path: str) -> str:
        if not (path == "~" or path.startswith("~/")):
            return path
        if self._home is None:
            with self._translated("finding the home folder"):
                self._home = self.sftp.normalize(".")
        return self._home + path[1:]


def _drain(channel: paramiko.Channel, timeout: float | None, command: str) -> tuple[bytes, bytes]:
    """Read stdout and stderr together until the command ends (so neither fills up and stalls)."""
    stdout, stderr = bytearray(), bytearray()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        busy = False
        while channel.recv_ready():
            stdout += channel.recv(65536)
            busy = True
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
            busy = True
        # eof_received is undocumented (recv's b"" cannot tell EOF from a dropped link): see
        # tests/test_private_internals.py
        if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(stdout), bytes(stderr)
        if busy:
            continue
        if deadline is not None and time.monotonic() > deadline:
            raise TransportError(f"`{command}` did not finish within {timeout:.0f} s")
        select.select([channel], [], [], 0.05)


class _PipelinedWriter:
    """Feeds an SFTP file; accepts bytes, memoryviews and pickle buffers.

    The caller's buffer goes to paramiko as a memoryview, which paramiko cuts
    into requests and copies into each packet before ``write`` returns, so the
    caller may reuse the buffer at once. (Copying it to ``bytes`` first, as
    this did before, cost ~11% more client CPU per GB uploaded.)
    """

    def __init__(self, file):
        self.file = file
        self.written = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), WRITE_PIECE):
            self.file.write(view[start:start + WRITE_PIECE])
        self.written += len(view)
        return len(view)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass


class _PieceReader:
    """An SFTP file read one whole prefetched reply at a time, each byte copied once out of it.

    ``open_read`` prefetches the file in replies of ``SFTP_REQUEST_SIZE`` bytes.
    Asked for exactly one reply at a reply's start, paramiko hands the reply
    over as it came; asked for anything else it slices replies and keeps the
    rest as new copies (a 4 MiB read leaves every later read misaligned, a
    small read copies the rest of its reply). So this reader always asks for
    one reply, holds what the caller has not taken yet, and copies from it
    straight into the caller's buffer (``readinto``) or into one ``bytes``
    (``read``).

    To stream a large file, ``readinto`` a reused buffer: each large ``read``
    returns a new ``bytes``, which glibc maps fresh (page faults).
    """

    def __init__(self, file, translated):
        self.file = file
        self.translated = translated    # a dropped link becomes TransportError, as everywhere else
        self._held = b""                # the reply being read, and how much of it was taken
        self._taken = 0

    def _reply(self) -> memoryview:
        """What is left of the current reply, fetching the next when it is used up (empty at the end)."""
        if self._taken == len(self._held):
            self._held, self._taken = self.file.read(SFTP_REQUEST_SIZE), 0
        return memoryview(self._held)[self._taken:]

    def read(self, size: int = -1) -> bytes:
        with self.translated():
            pieces = []
            remaining = size
            while remaining != 0 and (left := self._reply()):
                piece = left if remaining < 0 else left[:remaining]
                pieces.append(piece)
                self._taken += len(piece)
                remaining -= len(piece)
            if len(pieces) == 1 and len(pieces[0]) == len(self._held):
                return self._held       # one whole reply: no copy
            return b"".join(pieces)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        with self.translated():
            while done < len(view) and (left := self._reply()):
                count = min(len(left), len(view) - done)
                view[done:done + count] = left[:count]
                self._taken += count
                done += count
        return done

    def readline(self, size: int = -1) -> bytes:
        with self.translated():
            line = b""
            while not line.endswith(b"\n") and (size < 0 or len(line) < size) and self._reply():
                end = self._held.find(b"\n", self._taken) + 1 or len(self._held)
                if size >= 0:
                    end = min(end, self._taken + size - len(line))
                line += self._held[self._taken:end]
                self._taken = end
            return line

    def seek(self, offset: int, whence: int = 0) -> int:
        with self.translated():
            if whence == 1:
                offset -= len(self._held) - self._taken
            self._held, self._taken = b"", 0
            return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell() - (len(self._held) - self._taken)

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


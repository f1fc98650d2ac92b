"""The SSH transport: one paramiko connection per target, files over SFTP, commands over exec.

It honours ``~/.ssh/config`` (HostName, User, Port, IdentityFile,
IdentitiesOnly, ProxyJump, UserKnownHostsFile, HashKnownHosts), uses the ssh-agent and the
default keys (then, when the target has a ``prompt``, answers keyboard-interactive or password
prompts, such as a one-time code after the key, by asking the user: only in the main thread,
which runs cells, never in a monitor's), and verifies the host key against known_hosts as OpenSSH's
``StrictHostKeyChecking`` does: the key types known_hosts holds for the host are
asked for first; an unknown host is refused (or, with ``host_key_policy =
"accept-new"``, recorded), a host known by any other key, or a @revoked one,
always is. Every failure to connect is one ``ConnectError`` paragraph, within the
connect timeout (10 s), and paramiko's own logs of it stay out of the notebook.

Tuning, measured on loopback (see benchmarks/bench_ssh.py): the socket is
made here with TCP_NODELAY, which paramiko never sets (without it every
request on a reused connection stalls ~40 ms); a 4 MiB window and 256 KiB
packets offered (OpenSSH 9.2's sshd still sends SFTP data in 32 KiB packets, and takes
ours only that large: it advertises 32 KiB and a 2 MiB window for the session, so
paramiko's own work per 32 KiB packet cannot be cut by these settings); AES-GCM first; SFTP requests of 261120 bytes, the most OpenSSH
accepts, pipelined on writes and prefetched on reads, and on the SFTP channel a
receive buffer that queues packets instead of copying them into one shifting
array (``install_packet_queue``). paramiko starts its own
rekey after 512 MiB, and a channel the server closes during that rekey hangs
the connection (paramiko #822): rekeying is left to the server instead,
which OpenSSH does by its own RekeyLimit.

paramiko's Python work per 32 KiB packet still leaves it behind ``scp`` on a fast link, so big files
(``handoff.HANDOFF_BYTES`` up, ``handoff.READ_HANDOFF_BYTES`` down) move through the user's own ``ssh``
where it can log in unasked, checking the host key against the same known_hosts files (transport/handoff.py);
after the first, one spare ssh per connection is kept logged in for the next (``handoff.Spare``).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import logging
import os
import posixpath
import queue
import re
import select
import shlex
import socket
import stat
import threading
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import BinaryIO, Callable, Collection, Iterator, Sequence

import paramiko
import paramiko.buffered_pipe

from ..errors import ConfigError, ConnectError, TransportError
from . import handoff
from .base import CommandResult, Transport
from .command_agent import END_WATCH_SCRIPT, AgentUnavailable, CommandAgent, check_write_reply, read_reply, write_request
from .end_watch import EndWatches
from .handoff import HandoffReader, HandoffUpload, Spare, SSHFailed, SwitchingWriter, ssh_argv, ssh_program

WINDOW_SIZE = 4 * 2**20
MAX_PACKET_SIZE = 256 * 2**10
SFTP_REQUEST_SIZE = 261120
WRITE_PIECE = 4 * 2**20
SEND_QUEUE = 2                  # pieces of WRITE_PIECE bytes an upload's sender thread may have waiting
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
CONNECT_TIMEOUT = 10
KEEPALIVE_SECONDS = 30

#: paramiko's logger for rx_magic's connections. paramiko logs every failure it meets in its own thread,
#: traceback included, at ERROR; rx_magic raises each one as a message instead, so these logs stay here
#: (add a handler to this logger, or set its ``propagate``, to see them).
PARAMIKO_LOG = "rx_magic.transport.ssh.paramiko"
logging.getLogger(PARAMIKO_LOG).addHandler(logging.NullHandler())
logging.getLogger(PARAMIKO_LOG).propagate = False

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
    hash_known_hosts: bool = False      # HashKnownHosts: a key recorded under accept-new is filed under a hash

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
    if identity_file and not os.path.isfile(os.path.expanduser(identity_file)):
        raise ConfigError(f"the target's identity_file {os.path.expanduser(identity_file)} (for host {alias}) does "
                          "not exist: correct the path in targets.toml, or leave identity_file out to use "
                          "~/.ssh/config's IdentityFile, the ssh-agent and the default keys")
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
        hash_known_hosts=found.get("hashknownhosts", "no").lower() == "yes",
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


def _blob_fingerprint(blob: bytes) -> str:
    """A public key's SHA256 fingerprint, as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


KNOWN_HOSTS_MARKERS = ("", "@cert-authority", "@revoked")
#: the host key algorithms a key type in known_hosts stands for (an RSA key signs with SHA-2 since OpenSSH 8.8)
_ALGORITHMS_OF_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


@dataclass(frozen=True)
class KnownHostKey:
    """One line of a known_hosts file that names a host: its key, and its marker if any."""

    path: str
    line: int
    marker: str             # "", "@cert-authority" or "@revoked"
    key_type: str
    blob: bytes

    @property
    def fingerprint(self) -> str:
        return _blob_fingerprint(self.blob)

    def describe(self) -> str:
        return f"{self.key_type} {self.fingerprint} ({self.path} line {self.line})"


def _pattern_matches(pattern: str, name: str) -> bool:
    """OpenSSH's host pattern: ``*`` and ``?`` wildcards, case-insensitive (``[host]:port`` is literal)."""
    expression = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(expression, name, re.IGNORECASE | re.DOTALL) is not None


def _host_field_matches(field: str, name: str) -> bool:
    """Whether a known_hosts line's host field (``|1|salt|hash``, or patterns with ``!negations``) names ``name``."""
    if field.startswith("|1|"):
        try:
            _, _, salt, hashed = field.split("|")
            digest = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(digest, base64.b64decode(hashed))
        except (ValueError, binascii.Error):
            return False
    matched = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        if _pattern_matches(pattern[1:] if negated else pattern, name.lower()):
            if negated:
                return False
            matched = True
    return matched


def known_host_keys(host: HostSettings) -> list[KnownHostKey]:
    """Every known_hosts line for ``host`` (by ``[host]:port`` name), read line by line as OpenSSH does.

    Plain, hashed (``|1|``) and wildcard names match; ``@cert-authority`` and ``@revoked``
    lines are returned with their marker; comments, malformed lines and unknown markers are
    skipped, never fatal.
    """
    name = host.known_hosts_name.lower()
    found = []
    for path in host.known_hosts_files:
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConnectError(f"cannot read the known hosts file {path}: {exc.strerror or exc}") from exc
        for number, text in enumerate(lines, 1):
            fields = text.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = fields.pop(0) if fields[0].startswith("@") else ""
            if marker not in KNOWN_HOSTS_MARKERS or len(fields) < 3:
                continue
            names, key_type, data = fields[:3]
            try:
                blob = base64.b64decode(data, validate=True)
            except (ValueError, binascii.Error):
                continue
            if blob[4:4 + int.from_bytes(blob[:4], "big")] != key_type.encode():    # the key names its own type
                continue
            if _host_field_matches(names, name):
                found.append(KnownHostKey(path, number, marker, key_type, blob))
    return found


def prefer_known_key_types(transport: paramiko.Transport, known: Sequence[KnownHostKey]) -> None:
    """Ask first for the host key types known_hosts holds for this host, as OpenSSH does.

    The host then proves itself with the key the user already trusts when it has one,
    instead of with another type paramiko would prefer (ed25519 where ECDSA is known).
    """
    options = transport.get_security_options()
    offered = tuple(options.key_types)
    wanted = [algorithm for entry in known if not entry.marker
              for algorithm in _ALGORITHMS_OF_KEY_TYPE.get(entry.key_type, (entry.key_type,))
              if algorithm in offered]
    if wanted:
        options.key_types = tuple(dict.fromkeys([*wanted, *offered]))


def _removal_advice(name: str, entries: Sequence[KnownHostKey]) -> str:
    return "; ".join(f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(path)}`"
                     for path in dict.fromkeys(entry.path for entry in entries))


def trust_command(host: HostSettings) -> str:
    """The ``ssh`` command that connects as rx_magic does and records the host's key in the file rx_magic reads."""
    return shlex.join(["ssh", "-p", str(host.port), "-l", host.user, "-o",
                       f"UserKnownHostsFile={host.known_hosts_files[0]}", host.alias])


def verify_host_key(transport: paramiko.Transport, host: HostSettings, policy: str,
                    known: Sequence[KnownHostKey] | None = None) -> str:
    """Check the server's key against known_hosts as OpenSSH's ``StrictHostKeyChecking`` does.

    Returns "known", or "recorded" when ``policy`` is "accept-new" and known_hosts holds no key
    of any type for the host. A key that differs from the one known (of the same type or, when
    the host did not offer a known type, of another) is refused as changed, a revoked key always;
    ``@cert-authority`` lines are not used (paramiko checks no host certificates).
    """
    key = transport.get_remote_server_key()
    name = host.known_hosts_name
    known = known_host_keys(host) if known is None else known
    blob = key.asbytes()
    offered = f"{key.get_name()} {_fingerprint(key)}"
    for entry in known:
        if entry.marker == "@revoked" and entry.blob == blob:
            raise ConnectError(
                f"the host key of {name} is REVOKED: it offers {offered}, which {entry.path} line {entry.line} marks "
                "@revoked. rx_magic will not connect with a revoked key; ask the host's administrators for its "
                "current key")
    trusted = [entry for entry in known if not entry.marker]
    if any(entry.blob == blob for entry in trusted):
        return "known"
    if trusted:
        same_type = [entry for entry in trusted if entry.key_type == key.get_name()]
        held = "; ".join(entry.describe() for entry in same_type or trusted)
        why = "" if same_type else (" (the host no longer offers a key of a type known_hosts holds, so it cannot "
                                    "prove it is the host you connected to before)")
        raise ConnectError(
            f"the host key of {name} has CHANGED: it offers {offered}, but known_hosts holds {held}{why}. This may "
            "be an attack, or the host was reinstalled: check the new fingerprint with its administrators, and only "
            f"then remove the old key with {_removal_advice(name, trusted)} and connect again")
    if policy != "accept-new":
        authorities = [entry for entry in known if entry.marker == "@cert-authority"]
        note = (f" ({authorities[0].path} line {authorities[0].line} names a @cert-authority for it, but rx_magic "
                "does not check host certificates)") if authorities else ""
        raise ConnectError(
            f"the host key of {name} is not known: it offers {offered}{note}. Check that fingerprint with the "
            f"host's administrators, then trust it by connecting once with `{trust_command(host)}` and answering "
            'yes (it records the key where rx_magic reads it), or set host_key_policy = "accept-new" for this '
            "target to record it on first use")
    path = host.known_hosts_files[0]
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600), "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size:
            file.seek(size - 1)
        separator = b"\n" if size and file.read(1) != b"\n" else b""
        filed_as = paramiko.HostKeys.hash_host(name) if host.hash_known_hosts else name
        file.write(separator + f"{filed_as} {key.get_name()} {key.get_base64()}\n".encode())
    return "recorded"


def _load_key(path: str) -> paramiko.PKey | str:
    """The private key at ``path``, or why it cannot be used."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        return "encrypted: add it to your ssh-agent (ssh-add) so rx_magic can use it"
    except Exception as exc:
        return f"unreadable ({exc})"


#: ``prompt(text, echo) -> answer``: asks the user for one keyboard-interactive or password answer
Prompt = Callable[[str, bool], str]
NO_PROMPT_ADVICE = ("set interactive_auth = true for the target to be asked in the notebook (hidden input, the answer "
                    "kept nowhere), or transport = \"openssh\" to use the connection your ssh client opens "
                    "(ControlMaster)")


def ask_user(text: str, echo: bool) -> str:
    """Ask in the notebook: hidden input (``getpass``) unless the server says the answer may be shown.

    ``getpass.getpass`` and ``input`` are looked up at each call, because ipykernel replaces them
    while a cell runs with versions that ask through the notebook's stdin requests.
    """
    return input(text) if echo else getpass.getpass(text)


def authenticate(transport: paramiko.Transport, host: HostSettings, prompt: Prompt | None = None,
                 *, no_prompt: str = NO_PROMPT_ADVICE) -> str:
    """Try the agent's keys, then the configured and default key files; return what worked.

    When the server asks for more (keyboard-interactive, e.g. a password or one-time code after
    the key, or password alone), each of its prompts goes to ``prompt``; the answers go to the
    server and nowhere else. Without ``prompt`` that is a ``ConnectError`` ending with ``no_prompt``.
    """
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
    allowed: list[str] | None = None        # the methods the server still accepts, once it said
    accepted = ""                           # the key that was enough for the first factor
    for label, key in candidates:
        if isinstance(key, str):
            loaded = _load_key(key)
            if isinstance(loaded, str):
                tried.append(f"{label} ({loaded})")
                continue
            key = loaded
        try:
            following = transport.auth_publickey(host.user, key)
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            break                           # no key will do: the server takes no public keys
        except paramiko.AuthenticationException:
            tried.append(label)
            continue
        except paramiko.SSHException as exc:
            raise ConnectError(f"logging in to {host.hostname} port {host.port} as {host.user} failed: "
                               f"{exc or type(exc).__name__}. Check that the host's SSH server is up and accepts "
                               f"logins; `ssh -v -p {host.port} {host.user}@{host.hostname}` shows more") from exc
        if transport.is_authenticated():
            return f"publickey ({label})"
        allowed, accepted = list(following), label     # partial success: the key, and then a second factor
        break
    if allowed is None and prompt is not None:     # every key refused: may a password or code do instead?
        try:
            transport.auth_none(host.user)
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
        except (paramiko.AuthenticationException, paramiko.SSHException):
            allowed = []
        if transport.is_authenticated():
            return "none"
    method = next((name for name in ("keyboard-interactive", "password") if name in (allowed or ())), None)
    if method and (prompt is not None or accepted or "publickey" not in allowed):
        first = f"publickey ({accepted}) and " if accepted else ""
        if prompt is None:
            asks = "a second factor" if accepted else "a password or one-time code"
            raise ConnectError(
                f"{host.user}@{host.hostname} (port {host.port}) asks for {method} login ({asks}) after "
                f"{f'accepting {accepted}' if accepted else 'refusing or not being offered a key'}, and rx_magic "
                f"cannot answer it here: {no_prompt}")
        return first + _answer_prompts(transport, host, method, prompt)
    keys = "; ".join(tried) if tried else "no key was found (no agent, no ~/.ssh/id_* file, no IdentityFile)"
    raise ConnectError(
        f"{host.user}@{host.hostname} (port {host.port}) refused every key offered; tried: {keys}. Put your public key in "
        f"~/.ssh/authorized_keys on {host.hostname} (e.g. `ssh-copy-id -p {host.port} {host.user}@{host.hostname}`), "
        "or name the right key with identity_file in the target or IdentityFile in ~/.ssh/config")


PROMPT_ATTEMPTS = 3             # as OpenSSH's NumberOfPasswordPrompts
PROMPT_SECONDS = 300            # to type a code; the server's LoginGraceTime (120 s in OpenSSH) may end it first


def _answer_prompts(transport: paramiko.Transport, host: HostSettings, method: str, prompt: Prompt) -> str:
    """Keyboard-interactive (or password) login, each prompt asked through ``prompt``; the answers are kept nowhere."""
    who = f"({host.user}@{host.hostname})"

    def answer(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        heading = "\n".join(line for line in (title.strip(), instructions.strip()) if line)
        answers = []
        for index, (text, echo) in enumerate(prompts):    # none in OpenSSH's last round: nothing to ask
            asked = f"{heading}\n{who} {text}" if heading and index == 0 else f"{who} {text}"
            answers.append(_ask(prompt, asked, echo))
        return answers

    transport.auth_timeout = max(transport.auth_timeout or 0, PROMPT_SECONDS)
    for attempt in range(1, PROMPT_ATTEMPTS + 1):
        try:
            if method == "keyboard-interactive":
                _interactive_here(transport, host.user, answer)
            else:
                transport.auth_password(host.user, _ask(prompt, f"{who} Password: ", False), fallback=False)
        except paramiko.AuthenticationException:
            if attempt == PROMPT_ATTEMPTS or not transport.is_active():
                raise ConnectError(f"{host.user}@{host.hostname} (port {host.port}) refused the {method} answers "
                                   f"given ({attempt} attempt{'s' if attempt > 1 else ''}): check the password or "
                                   "one-time code and run the cell again") from None
            continue
        if transport.is_authenticated():
            return method
    raise ConnectError(f"{host.user}@{host.hostname} (port {host.port}) did not accept the {method} login")


def _interactive_here(transport: paramiko.Transport, user: str, answer: Callable) -> None:
    """``auth_interactive``, with ``answer`` called in this thread.

    paramiko calls the handler from its own transport thread; asking there would put the
    notebook's input request (and a Ctrl-C) on the wrong thread. So paramiko waits in a helper
    thread, and its questions come here through a queue.
    """
    questions: queue.Queue = queue.Queue()
    answers: queue.Queue = queue.Queue()
    outcome: list = []

    def handler(title, instructions, prompts):
        questions.put((title, instructions, prompts))
        reply = answers.get()
        if reply is None:
            raise paramiko.AuthenticationException("not answered")
        return reply

    def login() -> None:
        try:
            transport.auth_interactive(user, handler)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            questions.put(None)

    helper = threading.Thread(target=login, name="rx_magic keyboard-interactive", daemon=True)
    helper.start()
    while (question := questions.get()) is not None:
        try:
            answers.put(answer(*question))
        except BaseException:
            answers.put(None)
            raise
    helper.join()
    if outcome:
        raise outcome[0]


def _ask(prompt: Prompt, text: str, echo: bool) -> str:
    try:
        return prompt(text, echo)
    except (KeyboardInterrupt, ConnectError):
        raise
    except Exception as exc:    # e.g. ipykernel's StdinNotImplementedError: a frontend that cannot ask
        raise ConnectError(f"rx_magic could not ask for the login answer {text.strip()!r}: "
                           f"{exc or type(exc).__name__}. Run the cell in a notebook or terminal IPython that "
                           "accepts input, or use transport = \"openssh\" with a connection opened in a "
                           "terminal") from None


def _tuned_transport(sock) -> paramiko.Transport:
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    transport.set_log_channel(PARAMIKO_LOG)     # its channels' and SFTP's logs go below it too
    options = transport.get_security_options()
    options.ciphers = PREFERRED_CIPHERS + tuple(c for c in options.ciphers if c not in PREFERRED_CIPHERS)
    # leave rekeying to the server (paramiko #822: its own rekey can hang a closing channel); no public
    # setting does this: Packetizer's limits are pinned by tests/test_private_internals.py
    packetizer = transport.packetizer
    packetizer.REKEY_BYTES = packetizer.REKEY_PACKETS = 2**62
    packetizer.REKEY_BYTES_OVERFLOW_MAX = packetizer.REKEY_PACKETS_OVERFLOW_MAX = 2**62
    return transport


class HandshakeTimeout(TimeoutError):
    """An SSH server answered but did not finish the key exchange before the connect timeout."""


class ResolveTimeout(TimeoutError):
    """The host name did not resolve before the connect timeout (a resolver that does not answer)."""


def _resolve(hostname: str, port: int, deadline: float) -> list[tuple]:
    """``getaddrinfo``, given up at ``deadline``: a DNS server that does not answer keeps glibc for
    resolv.conf's timeout times its attempts (10 s and more), and getaddrinfo takes no timeout."""
    answer: list = []

    def resolve() -> None:
        try:
            answer.append(socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    worker = threading.Thread(target=resolve, name=f"rx_magic resolving {hostname}", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0))
    if not answer:
        raise ResolveTimeout(f"{hostname} did not resolve")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def _open_socket(hop: HostSettings, deadline: float) -> socket.socket:
    """A TCP connection to ``hop``, trying each of its addresses in turn until ``deadline``."""
    failure: OSError | None = None
    for family, kind, protocol, _, address in _resolve(hop.hostname, hop.port, deadline):
        sock = socket.socket(family, kind, protocol)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            if isinstance(exc, TimeoutError):
                break
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise failure or OSError(f"{hop.hostname} has no address")


def _handshake(transport: paramiko.Transport, deadline: float) -> None:
    """Start the SSH session (version banner, key exchange, host key), giving up at ``deadline``."""
    done = threading.Event()
    transport.banner_timeout = max(deadline - time.monotonic(), 0.1) + 5     # the deadline below comes first
    transport.start_client(event=done)
    if not done.wait(max(deadline - time.monotonic(), 0)):
        if getattr(transport, "remote_version", ""):   # its banner came: an SSH server, too slow to finish
            raise HandshakeTimeout(transport.remote_version)
        raise TimeoutError("no SSH handshake before the connect timeout")
    if not transport.is_active() or transport.get_remote_server_key() is None:
        raise transport.get_exception() or paramiko.SSHException("the server closed the connection")


def _connect_failure(alias: str, hop: HostSettings, chain: Sequence[HostSettings], stage: str,
                     exc: BaseException, timeout: float) -> str:
    """One paragraph: which host and port could not be reached, why, and what to check."""
    place = f"{hop.hostname} port {hop.port}"
    jump = f" (jump host {hop.alias} of {alias})" if hop is not chain[-1] else ""
    settings = f"HostName and Port for {hop.alias} in {ssh_config_path()}, or the target's host and port in targets.toml"
    if isinstance(exc, ResolveTimeout):
        what = f"the host name {hop.hostname} did not resolve within {timeout:.0f} s (no answer from the DNS server)"
        check = f"your network, VPN and DNS, and the host name ({settings})"
    elif isinstance(exc, socket.gaierror):
        what = f"the host name {hop.hostname} cannot be resolved ({exc.strerror or exc})"
        check = f"the spelling of the host name ({settings}), and your network, VPN and DNS"
    elif isinstance(exc, ConnectionRefusedError):
        what = f"{place} refused the connection: nothing listens on that port"
        check = f"that the host is up and its SSH server listens on port {hop.port} ({settings})"
    elif isinstance(exc, TimeoutError) and stage == "connect":
        what = f"{place} did not answer within {timeout:.0f} s"
        check = (f"that the host is up and reachable from here (a VPN that is off, a firewall, the wrong address "
                 f"or port: {settings})")
    elif isinstance(exc, HandshakeTimeout):
        what = f"the SSH server at {place} ({exc}) answered but did not finish the handshake within {timeout:.0f} s"
        check = "that the host is not overloaded (try again later), and your network's speed to it"
    elif isinstance(exc, TimeoutError):
        what = f"{place} took the connection but no SSH server answered on it within {timeout:.0f} s"
        check = f"that port {hop.port} is the SSH server's and not another service's ({settings}), or try again later"
    elif "banner" in str(exc):
        what = f"{place} did not answer as an SSH server does ({exc})"
        check = f"that port {hop.port} is the SSH server's and not another service's ({settings})"
    elif stage == "forward":
        onward = chain[[index for index, each in enumerate(chain) if each is hop][0] + 1]
        what = (f"the jump host {hop.alias} could not reach {onward.hostname} port {onward.port} "
                f"({exc or type(exc).__name__})")
        check = (f"that {onward.hostname} is up and its SSH server listens on port {onward.port}, as seen from "
                 f"{hop.alias} (HostName, Port and ProxyJump for {alias} in {ssh_config_path()})")
    elif isinstance(exc, OSError) and exc.strerror:
        what = f"{place}: {exc.strerror}"
        check = f"that the host is up and reachable from here ({settings})"
    else:
        what = f"the SSH session with {place} failed ({exc or type(exc).__name__})"
        check = f"that port {hop.port} is an SSH server's ({settings})"
    return f"cannot connect to {alias}{jump}: {what}. Check {check}; `ssh -v {hop.alias}` may say more."


def _open_sftp(transport: paramiko.Transport) -> paramiko.SFTPClient:
    """``SFTPClient.from_transport``, with the channel's receive buffer swapped before any data arrives."""
    channel = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
    install_packet_queue(channel)
    channel.invoke_subsystem("sftp")
    return _SFTPClient(channel)


class _SFTPClient(paramiko.SFTPClient):
    """paramiko's SFTP client, sending each request without copying what is left of it per SSH packet.

    paramiko's ``BaseSFTP._write_all`` sends a request (up to ``SFTP_REQUEST_SIZE`` bytes) one channel
    packet (32 KiB for OpenSSH) at a time and keeps ``out = out[n:]``, a new copy of the rest each
    time: ~3.5 extra copies of every byte uploaded. Here the rest is a view. ``_write_all`` and
    ``sock`` are undocumented: pinned by tests/test_private_internals.py.
    """

    def _write_all(self, out) -> None:
        view = memoryview(out)
        while len(view):
            sent = self.sock.send(view)
            if sent <= 0:
                raise EOFError()
            view = view[sent:]


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
                 python: str = "python3", setup: tuple[str, ...] = (), connect_timeout: float = CONNECT_TIMEOUT,
                 prompt: Prompt | None = None):
        self.alias = alias
        self.prompt = prompt    # answers keyboard-interactive/password prompts; None: keys only
        self.connect_timeout = float(connect_timeout)
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
        self._watches = EndWatches()
        self._handoff: list[str] | None = None      # the ssh command for big transfers on this connection
        self.handoff_off = ""                       # why big transfers stay with paramiko on this connection
        self.handoffs = 0                           # transfers that went through the user's ssh (transport/handoff.py)
        self._spare: Spare | None = None            # ssh logged in ahead of the next big transfer (handoff.Spare)
        self.spares_used = 0                        # big transfers that found their ssh already logged in

    # -- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._chain) and self._chain[-1].is_active()

    def connect(self) -> ConnectionInfo:
        """Open the connection now (it is otherwise opened on first use).

        Every failure to connect is a :class:`ConnectError` naming the host, the port and what
        to check, raised within ``connect_timeout`` seconds (plus the login itself).
        """
        with self._lock:
            if self._chain and self._chain[-1].is_active():
                return self.info
            self.close()
            started = time.monotonic()
            deadline = started + self.connect_timeout
            host = resolve_host(self.alias, **self._options)
            hops = _jump_hosts(host.proxy_jump) if host.proxy_jump else []
            chain = [*hops, host]
            hop, stage = chain[0], "connect"
            try:
                sock = _open_socket(hop, deadline)
                for index, hop in enumerate(chain):
                    stage = "handshake"
                    known = known_host_keys(hop)
                    transport = _tuned_transport(sock)
                    prefer_known_key_types(transport, known)
                    self._chain.append(transport)
                    _handshake(transport, deadline)
                    host_key = verify_host_key(transport, hop, self.host_key_policy, known)
                    stage = "login"
                    transport.auth_timeout = self.connect_timeout
                    prompt, no_prompt = self._login_prompt()
                    auth = authenticate(transport, hop, prompt, no_prompt=no_prompt)
                    transport.set_keepalive(KEEPALIVE_SECONDS)
                    if index + 1 < len(chain):      # ProxyJump: the next hop through this one
                        following = chain[index + 1]
                        stage = "forward"
                        sock = transport.open_channel("direct-tcpip", (following.hostname, following.port),
                                                      ("127.0.0.1", 0), timeout=max(deadline - time.monotonic(), 1))
            except TransportError:
                self.close()
                raise
            except (OSError, *_CONNECTION_ERRORS) as exc:
                self.close()
                raise ConnectError(_connect_failure(self.alias, hop, chain, stage, exc, self.connect_timeout)) from None
            except BaseException:       # an interrupt at a login prompt: no half-logged-in connection is kept
                self.close()
                raise
            self.info = ConnectionInfo(host, host_key, auth, time.monotonic() - started,
                                       transport.get_remote_server_key())
            return self.info

    def _login_prompt(self) -> tuple[Prompt | None, str]:
        """Who answers the server's password or code prompts: the user, only in the thread that runs cells."""
        if self.prompt is None:
            return None, NO_PROMPT_ADVICE
        if threading.current_thread() is not threading.main_thread():
            return None, (f"it asks only in a cell you run, never in the background (this was the thread "
                          f"{threading.current_thread().name!r}): run a cell on this target to log in again")
        return self.prompt, ""

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
                self._count(3)      # the session opened, the subsystem asked for, SFTP's version exchanged
                self._count_requests(self._sftp)
            return self._sftp

    def _count_requests(self, sftp: paramiko.SFTPClient) -> None:
        """Count each SFTP request that waits for its answer (``round_trips``); paramiko's files send theirs
        through the client's ``_request`` (undocumented: see tests/test_private_internals.py)."""
        request = sftp._request

        def counted(*args):
            self._count()
            return request(*args)
        sftp._request = counted

    def close(self) -> None:
        self._watches.close_all()       # before the lock: a watch's thread may be opening its session
        with self._lock:
            self._end_spare()
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
            self._handoff, self.handoff_off = None, ""     # decided again for the next connection

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
                self._count()
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
                    self._count(3)      # the session opened, the command, the agent's hello
                    self._agent = CommandAgent(self._ssh, python, setup)
                except AgentUnavailable:
                    self._agent, self._agent_failed = None, True
            return self._agent

    def _exec(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        """One SSH exec: the login shell runs the quoted command."""
        command = shlex.join(argv)
        with self._translated(f"running {argv[0]}"):
            self._count(3)              # the session opened, the command started, its end
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

    def _agent_request(self, request: dict, what: str) -> dict | None:
        """One ``read``/``write`` request through the command agent (one round trip); None without an agent."""
        agent = self._command_agent()
        if agent is None:
            return None
        try:
            self._count()
            return agent.request(request)
        except AgentUnavailable:
            with self._lock:
                self._agent = None
            if not self.connected:
                raise TransportError(f"{what} on {self.alias} failed: the connection dropped") from None
            return None

    def read_files(self, paths: Sequence[str], limit: int | None = None) -> dict[str, bytes | None]:
        paths = list(paths)
        if not paths:
            return {}
        reply = self._agent_request({"op": "read", "paths": paths, "limit": limit}, f"reading {paths[0]}")
        return super().read_files(paths, limit) if reply is None else read_reply(reply, paths)

    def write_files(self, files: Sequence[tuple[str, bytes]], *, folders: Sequence[str] = (),
                    keep: Collection[str] = (), rename: tuple[str, str] | None = None) -> None:
        files = [(path, bytes(data)) for path, data in files]
        if not (files or folders or rename):
            return
        what = f"writing {files[0][0] if files else folders[0] if folders else rename[1]}"
        reply = self._agent_request(write_request(files, folders, keep, rename), what)
        if reply is None:
            return super().write_files(files, folders=folders, keep=keep, rename=rename)
        check_write_reply(reply, files, self.description, self.alias)

    def end_notice(self, pid: str, marker: str) -> int | None:
        """A session of its own runs ``END_WATCH_SCRIPT`` (see transport/end_watch.py); not under the lock."""
        if not pid.isdigit() or not self.connected:
            return None

        def open_source():
            self._count(2)              # the session opened, the command started
            channel = self._ssh.open_session()
            try:
                channel.exec_command(shlex.join(["bash", "-c", END_WATCH_SCRIPT, "rx-end-watch", pid, marker]))
            except BaseException:
                channel.close()
                raise
            return channel.fileno(), lambda: channel.recv(4096), channel.close
        return self._watches.start(open_source)

    # -- files -----------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        with self._translated(f"checking {path}"):
            try:
                self.sftp.stat(path)
                return True
            except FileNotFoundError:
                return False

    def read_bytes(self, path: str, offset: int = 0, limit: int | None = None) -> bytes:
        with self._translated(f"reading {path}"):
            with self.sftp.open(path, "rb") as file:
                file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE   # undocumented: see tests/test_private_internals.py
                if offset:
                    file.seek(offset)
                size = file.stat().st_size
                end = size if limit is None else min(size, offset + limit)
                if end - offset > SFTP_REQUEST_SIZE:
                    file.prefetch(end)
                # paramiko's read() asks for 8 KiB at a time: one round trip each, or a split reply
                return _PieceReader(file, nullcontext).read(-1 if limit is None else max(0, end - offset))

    def file_size(self, path: str) -> int:
        with self._translated(f"checking {path}"):
            return self.sftp.stat(path).st_size

    def open_read(self, path: str) -> BinaryIO:
        """A file of ``handoff.READ_HANDOFF_BYTES`` or more comes through the user's ssh where it can."""
        with self._translated(f"opening {path}"):
            file = self.sftp.open(path, "rb")
            try:
                size = file.stat().st_size
                reader = self._handoff_read(path, file, size) if size >= handoff.READ_HANDOFF_BYTES else None
            except BaseException:
                file.close()
                raise
            if reader is not None:
                return reader
            file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE       # undocumented: see tests/test_private_internals.py
            file.prefetch(size)
            return _PieceReader(file, lambda: self._translated(f"reading {path}"))

    # -- big transfers through the user's ssh (transport/handoff.py) -------------------------------

    def _handoff_command(self) -> list[str] | None:
        """The ssh command that logs in as this connection did, or None where transfers stay with paramiko."""
        with self._lock:
            info = self.connect()
            if self._handoff is None and not self.handoff_off:
                host, program = info.host, ssh_program()
                if program is None:
                    self.handoff_off = "no ssh client on this machine"
                elif host.proxy_jump:
                    self.handoff_off = "the host is reached through a jump host"
                elif not info.auth.startswith("publickey") or " and " in info.auth:
                    self.handoff_off = f"its login needed answers ({info.auth}), which ssh cannot give unasked"
                elif info.server_key is None:
                    self.handoff_off = "no host key was seen"
                else:
                    files = list(host.identity_files)
                    if not host.identities_only or not files:
                        home = os.path.join(os.path.expanduser("~"), ".ssh")
                        files += [os.path.join(home, name) for name in DEFAULT_KEYS]
                    key_type = info.server_key.get_name()
                    self._handoff = ssh_argv(
                        program, hostname=host.hostname, port=host.port, user=host.user,
                        identity_files=[path for path in dict.fromkeys(files) if os.path.isfile(path)],
                        identities_only=host.identities_only, known_hosts_files=host.known_hosts_files,
                        host_key_algorithms=_ALGORITHMS_OF_KEY_TYPE.get(key_type, (key_type,)),
                        connect_timeout=self.connect_timeout)
            return self._handoff

    def _start_spare(self) -> None:
        """A big transfer through ssh ended: log one ssh in ahead of the next (none if one is there already)."""
        with self._lock:
            if self._spare is not None or not self.connected or self._handoff is None or self.handoff_off:
                return
            try:
                spare = Spare(self._handoff)
            except SSHFailed:
                return
            spare.timer = threading.Timer(handoff.SPARE_IDLE_SECONDS, self._end_spare, (spare,))
            spare.timer.daemon = True
            spare.timer.start()
            self._spare = spare

    def _end_spare(self, spare: Spare | None = None) -> None:
        """End the connection's spare ssh (only if it is still ``spare``, when given: the idle timer's)."""
        with self._lock:
            if self._spare is None or (spare is not None and self._spare is not spare):
                return
            spare, self._spare = self._spare, None
        spare.abandon()

    def _take_spare(self, path: str) -> Spare | None:
        """The connection's spare ssh for a big transfer of ``path``: one logged in, or still logging in (its
        refused login goes where a new ssh's would); None where a new ssh must log in."""
        with self._lock:
            spare = self._spare
            if spare is None or "\n" in path:
                return None
            self._spare = None
        spare.timer.cancel()
        try:
            ready = spare.wait_ready(0)         # one that ended says why: its output ended
        except SSHFailed as failure:
            spare.abandon()
            # a refused host key raises here, a refused login turns the handoff off, as a new ssh's would; one
            # that had logged in and ended since leaves it to a new ssh
            self._handoff_refused(failure)
            return None
        if not spare.alive():
            spare.abandon()
            return None
        if ready:
            self.spares_used += 1
        return spare

    def _handoff_ssh(self, path: str) -> tuple[list[str], Spare | None] | None:
        """For a big transfer of ``path``: the ssh command and the connection's spare ssh to run it (None: a new ssh
        logs in); None when the transfer stays with paramiko."""
        if self._handoff_command() is None:
            return None
        spare = self._take_spare(path)
        argv = self._handoff_command()      # None if the spare's failed login turned the handoff off
        if argv is None:
            if spare is not None:
                spare.abandon()
            return None
        return argv, spare

    def _spare_ready(self) -> bool:
        """Has the connection's spare ssh logged in (looked at without waiting)?"""
        spare = self._spare
        try:
            return spare is not None and spare.alive() and spare.wait_ready(0)
        except SSHFailed:
            return False        # a big transfer takes it and says why

    def wait_spare(self, timeout: float) -> bool:
        """Wait until the connection's spare ssh has logged in; False if there is none or it did not.
        For tests and benchmarks that must see it ready whatever the machine's speed."""
        spare = self._spare
        try:
            return spare is not None and spare.wait_ready(timeout)
        except SSHFailed:
            return False

    @property
    def spare_pid(self) -> int | None:
        """The process id of the connection's spare ssh, if there is one."""
        spare = self._spare
        return None if spare is None else spare.pid

    def _handoff_refused(self, failure: SSHFailed) -> None:
        """ssh could not log in: paramiko keeps this connection's transfers, unless ssh refused the host key."""
        if failure.host_key:
            raise self._host_key_refusal(str(failure))
        if failure.this_file_only:
            return
        with self._lock:
            self._handoff, self.handoff_off = None, f"ssh could not log in without asking: {failure}"

    def _host_key_refusal(self, said: str) -> ConnectError:
        """ssh refused the host's key: check the key the host offers now as connecting does, and say what it says."""
        host = self.info.host
        deadline = time.monotonic() + self.connect_timeout
        try:
            known = known_host_keys(host)
            transport = _tuned_transport(_open_socket(host, deadline))
            try:
                prefer_known_key_types(transport, known)
                _handshake(transport, deadline)
                verify_host_key(transport, host, "strict", known)
            finally:
                transport.close()
        except ConnectError as exc:
            return exc
        except (OSError, *_CONNECTION_ERRORS):
            pass
        return ConnectError(f"ssh refused the host key of {host.known_hosts_name} for a large transfer ({said}), "
                            f"though it matches {', '.join(host.known_hosts_files)}. rx_magic never moves a file "
                            f"past a refused host key: check the key with `{trust_command(host)}` in a terminal, "
                            "then run the cell again")

    def _handoff_read(self, path: str, file: paramiko.SFTPFile, size: int) -> HandoffReader | None:
        """The file read over SFTP while ssh logs in, and through ssh from then on (``handoff.HandoffReader``)."""
        chosen = self._handoff_ssh(path)
        if chosen is None:
            return None
        argv, spare = chosen
        file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE       # undocumented: see tests/test_private_internals.py

        def read_head(offset: int, length: int) -> list[bytes]:
            # one pipelined request per SFTP reply; each reply handed over as it came (see _PieceReader)
            chunks = [(at, min(SFTP_REQUEST_SIZE, offset + length - at))
                      for at in range(offset, offset + length, SFTP_REQUEST_SIZE)]
            with self._translated(f"reading {path}"):
                return list(file.readv(chunks))

        def close_head() -> None:
            try:
                with self._translated(f"reading {path}"):
                    file.close()
            except TransportError:
                pass

        def settle() -> None:       # the rest comes through ssh
            close_head()
            self._count(1 if reader.spare_ready else 3)     # (a connection of its own, the command,) its end
            self.handoffs += 1

        try:
            reader = HandoffReader(argv, path, size, f"reading {path} on {self.alias}", read_head, settle, close_head,
                                   self._handoff_refused, spare, self._start_spare)
            return reader
        except SSHFailed as failure:
            self._handoff_refused(failure)
            return None

    @contextmanager
    def open_atomic(self, path: str, mode: int = 0o600) -> Iterator[BinaryIO]:
        """Write ``path`` through a temporary ``.part`` file, renamed into place once its size is checked.

        The bytes go out from a sender thread (``_PipelinedWriter``), so an interrupt (the notebook's Stop,
        a KeyboardInterrupt) lands in this thread between SSH packets, never inside one. It abandons the
        SFTP session instead of closing the file (paramiko's close waits for every pipelined write to be
        acknowledged, and a request cut in half is never answered: that hung the kernel), and removes the
        partial file over a new session; the connection stays usable for the next cell.

        Past ``handoff.HANDOFF_BYTES`` the user's ssh is started beside the SFTP session and, once logged
        in, takes the rest of the bytes (appended to the same partial file; ``handoff.SwitchingWriter``);
        past ``handoff.SPARE_HANDOFF_BYTES`` where a spare ssh has logged in already.
        """
        folder, name = posixpath.split(path)
        temporary = posixpath.join(folder, f".{name}.{os.urandom(4).hex()}.part")
        sftp = file = writer = None
        try:
            with self._translated(f"writing {path}"):      # the link may drop mid-upload
                sftp = self.sftp
                file = sftp.open(temporary, "wb", bufsize=0)
                file.set_pipelined(True)
                file.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE   # undocumented: see tests/test_private_internals.py
                # writable by its owner until the end (the handoff's ssh opens it again by name), 0400 at the end
                sftp.chmod(temporary, mode | stat.S_IWUSR)

                def start_handoff() -> HandoffUpload | None:
                    chosen = self._handoff_ssh(temporary)
                    try:
                        return None if chosen is None else HandoffUpload(chosen[0], temporary, chosen[1])
                    except SSHFailed as failure:
                        self._handoff_refused(failure)
                        return None

                def settle() -> None:       # the SFTP part ends: the rest goes through ssh
                    sent.finish()
                    file.close()            # waits for every pipelined write to be acknowledged
                    self._count(1 if writer.upload.spare_ready else 3)  # (its own connection, the command,) its end
                    self.handoffs += 1

                sent = _PipelinedWriter(file, f"upload of {path}")
                writer = SwitchingWriter(sent, start_handoff, settle, self._handoff_refused, self._spare_ready)
                yield writer
                writer.finish(f"writing {path} on {self.alias}")
                if not writer.switched:
                    file.close()            # waits for every pipelined write to be acknowledged
                size = sftp.stat(temporary).st_size
                if size != writer.written:
                    raise TransportError(f"upload of {path} to {self.alias} arrived with {size} of "
                                         f"{writer.written} bytes")
                if not mode & stat.S_IWUSR:
                    sftp.chmod(temporary, mode)
                sftp.posix_rename(temporary, path)
            if writer.upload is not None:
                self._start_spare()     # ssh started for this one (or a spare was taken): the next finds one logged in
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)
            try:
                if writer is not None:
                    writer.stop()
                if interrupted and sftp is not None and not (writer is not None and writer.switched):
                    self._abandon_sftp(sftp, file)      # no waiting for the acknowledgements of writes in flight
                if writer is not None:
                    writer.join()
                if not interrupted and file is not None:
                    try:
                        file.close()
                    except Exception:
                        pass
                if sftp is not None:
                    self._remove_partial(sftp, temporary)
            except Exception:       # the cleanup's own failure never replaces what stopped the upload
                pass
            if isinstance(exc, Exception) and not isinstance(exc, ConnectError):   # a full disk: "Failure", or short
                full = self._disk_full(path, folder, writer.written if writer is not None else 0)
                if full is not None:
                    raise full from None
            raise

    def _abandon_sftp(self, sftp: paramiko.SFTPClient, file: paramiko.SFTPFile | None) -> None:
        """Close the SFTP session's channel at once; the next use opens a new session on the same connection."""
        with self._lock:
            if self._sftp is sftp:
                self._sftp = None
        if file is not None:
            file.set_pipelined(False)   # else its __del__ waits for answers the closed channel never brings
        try:
            sftp.close()
        except Exception:
            pass

    def _remove_partial(self, sftp: paramiko.SFTPClient, temporary: str) -> None:
        """Remove an upload's partial file, over a new SFTP session if the failure closed the connection."""
        for attempt in range(2):
            try:
                with self._lock:
                    (sftp if attempt == 0 and not sftp.get_channel().closed else self.sftp).remove(temporary)
                return
            except FileNotFoundError:
                return
            except Exception:
                continue

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
    """Feeds an SFTP file from a sender thread; accepts bytes, memoryviews and pickle buffers.

    ``write`` cuts the caller's buffer into pieces of ``WRITE_PIECE`` bytes and queues them (at most
    ``SEND_QUEUE`` pieces wait); the sender hands each to paramiko, which copies it into SSH packets.
    So the caller's next piece (read from a file, pickled, hashed) is made while this one is sent,
    and an interrupt in the caller's thread never cuts an SFTP request in half. ``bytes`` are queued
    by reference; any other buffer may change once ``write`` returns, so ``write`` returns only once
    its pieces are sent (no copy: copying cost ~11% more client CPU per GB uploaded). A failure of
    the sender is raised by the next ``write`` or by ``finish``.
    """

    def __init__(self, file, what: str):
        self.file = file
        self.written = 0                # bytes accepted from the caller
        self._what = what
        self._pieces: deque = deque()
        self._queued = self._sent = 0   # pieces queued and sent so far
        self._stopping = False
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        self._sender = threading.Thread(target=self._send, name=f"rx_magic {what}", daemon=True)
        self._sender.start()

    def _send(self) -> None:
        while True:
            with self._changed:
                while not self._pieces and not self._stopping:
                    self._changed.wait()
                if not self._pieces:
                    return
                piece = self._pieces[0]
            try:
                self.file.write(piece)
            except BaseException as exc:
                with self._changed:
                    self._failure = exc if not self._stopping else None
                    self._pieces.clear()
                    self._changed.notify_all()
                return
            with self._changed:
                if self._pieces:
                    self._pieces.popleft()
                self._sent += 1
                self._changed.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._stopping or not self._sender.is_alive():
            raise TransportError(f"the {self._what} was stopped")

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        owned = type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes)
        with self._changed:
            for start in range(0, len(view), WRITE_PIECE):
                while len(self._pieces) >= SEND_QUEUE and self._failure is None and not self._stopping:
                    self._changed.wait()
                self._raise_failure()
                self._pieces.append(view[start:start + WRITE_PIECE])
                self._queued += 1
                self._changed.notify_all()
            if not owned:
                self._wait_sent()
        self.written += len(view)
        return len(view)

    def _wait_sent(self) -> None:
        """(Holding ``_changed``.) Until every piece queued so far is sent; the sender's failure if it failed."""
        while self._sent < self._queued and self._failure is None and not self._stopping:
            self._changed.wait()
        self._raise_failure()

    def finish(self) -> None:
        """Send what is queued and end the sender thread; raise its failure if it had one."""
        with self._changed:
            self._wait_sent()
            self._stopping = True
            self._changed.notify_all()
        self._sender.join()

    def stop(self) -> None:
        """Drop what is queued; the sender ends after the piece it is sending (or when its channel closes)."""
        with self._changed:
            self._stopping = True
            self._pieces.clear()
            self._changed.notify_all()

    def join(self, timeout: float = 30) -> None:
        self._sender.join(timeout)

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


"""The OpenSSH transport: the user's own ``ssh`` client, reusing its ControlMaster connection.

For clusters that ask for a second factor (a password or one-time code) at
each login, users log in once in a terminal and let ssh keep that connection
open as a *master*; later ``ssh`` commands ride on it without asking again.
This transport runs every command, and moves every file, as one such
``ssh`` command::

    ssh -o ControlMaster=auto -o ControlPath=<private socket> -o ControlPersist=10m -o BatchMode=yes HOST ...

BatchMode means it never asks: with no master, and no key that logs in
alone, it fails at once with the one ``ssh ... -fN HOST`` command to run in a
terminal. Being ssh, it honours all of ``~/.ssh/config`` (ProxyJump,
ProxyCommand, Match, certificates, GSSAPI), and checks host keys as ssh does.

Each session a server opens costs it a login (PAM, the login shell): on a
loaded host half a second. So, as the paramiko transport does, commands go
through one long-lived command agent (``command_agent.AGENT_SOURCE``, the
target's Python after its setup lines) on one ssh session, once a master is
open; without one, or if the agent cannot start, each command is its own ssh.
Files move as bytes through the same connection: large writes stream into
``cat`` under a temporary name, renamed into place once its size is checked;
streamed reads come out of ``tail -c +N``. The submit host needs a POSIX
shell, GNU ``find`` (``-printf``) and ``mv -T``, as every Linux cluster has.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import stat
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Collection, Iterator, Sequence

from ..errors import ConnectError, TransportError
from ..model.local_dirs import cache_home
from .base import CommandResult, Transport
from .command_agent import (AGENT_SOURCE, END_WATCH_SCRIPT, AgentRequests, AgentUnavailable, check_write_reply,
                            read_reply, write_request)
from .end_watch import EndWatches

CONTROL_PERSIST = "10m"     # how long a master this transport opened stays after its last command
CONNECT_TIMEOUT = 10
SOCKET_PATH_LIMIT = 86      # sun_path is 104 bytes on macOS, 108 on Linux; ssh adds 17 while it makes the socket
SSH_FAILED = 255            # ssh's own exit code when it could not connect or log in
MISSING = 44                # the read scripts' exit code for a missing file

# "R", then the file's bytes from byte $2 (1 = the start); exit 44 when there is no such file
_READ = '[ -e "$1" ] || exit 44; [ -r "$1" ] || { echo "$1: Permission denied" >&2; exit 1; }; ' \
        'printf R; exec tail -c +"$2" -- "$1"'
_READ_SOME = '[ -e "$1" ] || exit 44; [ -r "$1" ] || { echo "$1: Permission denied" >&2; exit 1; }; ' \
             'printf R; tail -c +"$2" -- "$1" | head -c "$3"'
_SIZE = '[ -e "$1" ] || exit 44; exec wc -c < "$1"'
_WRITE = 'umask 077; exec cat > "$1"'
_WRITE_WHOLE = 'umask 077; cat > "$1" && [ "$(wc -c < "$1")" -eq "$3" ] && chmod "$4" -- "$1" && mv -f -- "$1" "$2" ' \
               '|| { s=$?; rm -f -- "$1"; exit $s; }'
# the upload's size checked, then its mode set and the file renamed into place; else removed
_FINISH = '[ "$(wc -c < "$1")" -eq "$3" ] && chmod "$4" -- "$1" && mv -f -- "$1" "$2" || ' \
          '{ s=$?; rm -f -- "$1"; echo "the upload arrived incomplete or could not be moved into place" >&2; exit $s; }'
_LIST = '[ -d "$1" ] || exit 0; exec find -H "$1" -mindepth 1 -maxdepth 1 -printf "$2"'
_REMOVE = 'du -sk -- "$1" 2>/dev/null | cut -f1; rm -rf -- "$1"'


def control_folder() -> Path:
    """Where the ControlMaster sockets live: private (0700) to the user, short enough for a socket path.

    ``$XDG_RUNTIME_DIR/rx_magic`` when the session has one (a tmpfs only the user enters),
    else ``~/.cache/rx_magic/ssh``, else, when that path is too long for a socket,
    ``/tmp/rx_magic-UID``, checked to be the user's own and private.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    choices = [Path(runtime) / "rx_magic"] if runtime and os.path.isdir(runtime) else []
    choices += [cache_home() / "ssh", Path("/tmp") / f"rx_magic-{os.getuid()}"]
    for folder in choices:
        if len(str(folder)) + 1 + 20 <= SOCKET_PATH_LIMIT or folder == choices[-1]:
            break
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TransportError(f"{folder}, the folder for ssh's connection sockets, is not a folder of your own: "
                             "remove it, or set XDG_RUNTIME_DIR to a private folder")
    if info.st_mode & 0o077:
        folder.chmod(0o700)
    return folder


class OpenSSHTransport(Transport):
    """Runs commands and moves files through ``ssh HOST ...``, reusing one ControlMaster connection."""

    def __init__(self, alias: str, *, user: str | None = None, port: int | None = None,
                 identity_file: str | None = None, host_key_policy: str = "strict",
                 connect_timeout: float = CONNECT_TIMEOUT, ssh: str = "ssh", python: str = "python3",
                 setup: tuple[str, ...] = ()):
        self.alias = alias
        self._agent_settings = (python, tuple(setup))
        self._agent: _AgentProcess | None = None
        self._agent_failed = False      # it could not start over an open master: per-command ssh from then on
        self._agent_lock = threading.Lock()
        self.description = f"{alias} (openssh)"
        self._ssh = ssh
        self._destination: list[str] = []
        if user:
            self._destination += ["-l", user]
        if port:
            self._destination += ["-p", str(port)]
        if identity_file:
            self._destination += ["-i", os.path.expanduser(identity_file)]
        self._policy = ["-o", "StrictHostKeyChecking=accept-new"] if host_key_policy == "accept-new" else []
        self._timeout = ["-o", f"ConnectTimeout={int(connect_timeout)}"]
        identity = "\0".join([alias, *self._destination])
        self._socket_name = "cm-" + hashlib.sha256(identity.encode()).hexdigest()[:20]
        self._home: str | None = None
        self._configured: tuple[str, str] | None = None    # ~/.ssh/config's ControlPath and ControlPersist
        self._watches = EndWatches()

    # -- the connection ---------------------------------------------------------------------------

    def _user_settings(self) -> tuple[str, str]:
        """ControlPath (expanded; "" when unset) and ControlPersist as ssh reads them from ~/.ssh/config (``ssh -G``)."""
        if self._configured is None:
            try:
                done = subprocess.run([self._ssh, "-G", *self._destination, "--", self.alias], stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=30, check=False)
                lines = done.stdout.decode(errors="replace").splitlines()
            except (OSError, subprocess.TimeoutExpired):
                lines = []
            found = dict(line.partition(" ")[::2] for line in lines)
            path = found.get("controlpath", "")
            self._configured = ("" if path.lower() == "none" else path), found.get("controlpersist", "no")
        return self._configured

    @property
    def control_path(self) -> str:
        """The master's socket: the user's own ControlPath when ~/.ssh/config sets one (a master the user
        already opens is reused), else one in rx_magic's private folder."""
        return self._user_settings()[0] or str(control_folder() / self._socket_name)

    def _master_options(self) -> list[str]:
        path = self.control_path.replace("%", "%%")     # ssh expands %-tokens in ControlPath
        persist = self._user_settings()[1]
        keep = [] if persist.lower() not in ("no", "false") else ["-o", f"ControlPersist={CONTROL_PERSIST}"]
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", *keep]

    def login_command(self) -> str:
        """The command that opens the master connection once, in a terminal, asking what the host asks."""
        return shlex.join([self._ssh, *self._master_options(), *self._destination, *self._policy, "-fN",
                           self.alias])

    def _argv(self, command: str) -> list[str]:
        return [self._ssh, *self._master_options(), "-o", "BatchMode=yes", *self._timeout, *self._destination,
                *self._policy, "--", self.alias, command]

    @property
    def connected(self) -> bool:
        """Whether the master's socket is there (a master that died leaves none; ssh removes it)."""
        try:
            return stat.S_ISSOCK(os.stat(self.control_path).st_mode)
        except OSError:
            return False

    def control_command(self, operation: str) -> list[str]:
        """``ssh -O operation`` for the master: ``check`` (is it there?), ``exit`` (close it now)."""
        return [self._ssh, *self._master_options(), *self._destination, "-O", operation, self.alias]

    def master_alive(self) -> bool:
        """Ask the master itself (``ssh -O check``)."""
        try:
            done = subprocess.run(self.control_command("check"), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def _failure(self, stderr: str) -> TransportError:
        """ssh's own failure (exit 255) as one message; the login command when logging in was the problem."""
        said = "\n".join(stderr.strip().splitlines()[-3:]) or "no message"
        if self.master_alive():
            return TransportError(f"ssh to {self.alias} failed over its open connection: {said}")
        if "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return ConnectError(
                f"ssh refused the host key of {self.alias} ({said}). Check the key with the host's administrators "
                f"and record it by running `{self.login_command()}` once in a terminal, then run the cell again")
        if "Permission denied" in said or "Too many authentication failures" in said:
            return ConnectError(
                f"{self.alias} has no open ssh connection to reuse, and ssh cannot log in without asking "
                f"(ssh said: {said}). Log in once in a terminal with\n    {self.login_command()}\n"
                f"(it asks for your password or one-time code, then keeps the connection open in the background "
                f"for {CONTROL_PERSIST} after its last use), then run the cell again")
        return ConnectError(
            f"cannot connect to {self.alias} with ssh: {said}. Check HostName, Port and ProxyJump for {self.alias} "
            f"in ~/.ssh/config; `ssh -v {self.alias}` may say more; once ssh connects, "
            f"`{self.login_command()}` opens the connection rx_magic reuses")

    def _popen(self, command: str, *, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        self._count(3)      # a session opened through the master, the command started, its end
        try:
            return subprocess.Popen(self._argv(command), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise TransportError(f"cannot run {self._ssh!r} on this machine for {self.alias}: {exc}. Install "
                                 "OpenSSH's client, or use transport = \"paramiko\"") from exc

    # -- commands ---------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float | None = 120, check: bool = True) -> CommandResult:
        argv = tuple(argv)
        code, stdout, stderr = self._call(argv, input, timeout)
        result = CommandResult(argv, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        if check and code != 0:
            raise TransportError(f"{argv[0]} exited with code {code} on {self.alias}:\n{result.tail()}")
        return result

    def _call(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        """Through the agent when it runs, else one ssh for this command."""
        agent = self._command_agent()
        if agent is not None:
            try:
                self._count()
                return agent.run(argv, input, timeout)
            except AgentUnavailable:
                with self._agent_lock:
                    if self._agent is agent:
                        self._agent = None      # the master may be gone: the ssh below says so if it is
                agent.close()
        command = shlex.join(argv)
        process = self._popen(command, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise TransportError(f"`{command}` on {self.alias} did not finish within {timeout:.0f} s") from None
        if process.returncode == SSH_FAILED:
            failure = self._failure(stderr.decode(errors="replace"))
            if isinstance(failure, ConnectError):
                raise failure
        return process.returncode, stdout, stderr

    def _command_agent(self) -> _AgentProcess | None:
        """The running agent; started once a master is open (a failed login would only fail twice)."""
        with self._agent_lock:
            if self._agent is not None and self._agent.alive:
                return self._agent
            self._agent = None
            if self._agent_failed or not self.connected:
                return None
            python, setup = self._agent_settings
            script = "\n".join([*setup, f"exec {shlex.quote(python)} -u -c {shlex.quote(AGENT_SOURCE)}"])
            try:
                self._count(3)      # the session opened, the command started, the agent's hello
                self._agent = _AgentProcess(self._argv(shlex.join(["bash", "-c", script])))
            except AgentUnavailable:
                self._agent_failed = self.master_alive()    # with a master there, starting again would not help
            return self._agent

    def _agent_request(self, request: dict) -> dict | None:
        """One ``read``/``write`` request through the command agent (one round trip); None without an agent."""
        agent = self._command_agent()
        if agent is None:
            return None
        try:
            self._count()
            return agent.request(request)
        except AgentUnavailable:
            with self._agent_lock:
                if self._agent is agent:
                    self._agent = None
            agent.close()
            return None

    def read_files(self, paths: Sequence[str], limit: int | None = None) -> dict[str, bytes | None]:
        paths = list(paths)
        if not paths:
            return {}
        reply = self._agent_request({"op": "read", "paths": paths, "limit": limit})
        return super().read_files(paths, limit) if reply is None else read_reply(reply, paths)

    def write_files(self, files: Sequence[tuple[str, bytes]], *, folders: Sequence[str] = (),
                    keep: Collection[str] = (), rename: tuple[str, str] | None = None) -> None:
        files = [(path, bytes(data)) for path, data in files]
        reply = self._agent_request(write_request(files, folders, keep, rename))
        if reply is None:
            return super().write_files(files, folders=folders, keep=keep, rename=rename)
        check_write_reply(reply, files, self.description, self.alias)

    def end_notice(self, pid: str, marker: str) -> int | None:
        """An ssh session of its own through the master runs ``END_WATCH_SCRIPT`` (see transport/end_watch.py)."""
        if not pid.isdigit() or not self.connected:
            return None

        def open_source():
            self._count(2)      # the session opened, the command started
            command = shlex.join(["bash", "-c", END_WATCH_SCRIPT, "rx-end-watch", pid, marker])
            process = subprocess.Popen(self._argv(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, bufsize=0)

            def close() -> None:
                if process.poll() is None:
                    process.kill()
                process.wait()
                for pipe in (process.stdin, process.stdout):
                    pipe.close()
            return process.stdout.fileno(), lambda: os.read(process.stdout.fileno(), 4096), close
        return self._watches.start(open_source)

    def _script(self, script: str, *words: str, input: bytes | None = None, timeout: float | None = 120,
                what: str) -> CommandResult:
        result = self.run(["sh", "-c", script, "rx", *words], input=input, timeout=timeout, check=False)
        if result.returncode not in (0, MISSING):
            raise TransportError(f"{what} on {self.alias} failed: {result.tail(3) or f'exit {result.returncode}'}")
        return result

    # -- files ------------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self.run(["sh", "-c", '[ -e "$1" ] || [ -L "$1" ]', "rx", path], check=False).returncode == 0

    def read_bytes(self, path: str, offset: int = 0, limit: int | None = None) -> bytes:
        script = _READ if limit is None else _READ_SOME
        words = (path, str(offset + 1)) if limit is None else (path, str(offset + 1), str(limit))
        code, stdout, stderr = self._call(("sh", "-c", script, "rx", *words), None, 300)
        if code == 0 and stdout[:1] == b"R":
            return stdout[1:]
        self._read_failure(path, code, stderr)

    def file_size(self, path: str) -> int:
        code, stdout, stderr = self._call(("sh", "-c", _SIZE, "rx", path), None, 120)
        if code == 0 and stdout.strip().isdigit():
            return int(stdout)
        self._read_failure(path, code, stderr)

    def _read_failure(self, path: str, code: int, stderr: bytes):
        message = stderr.decode(errors="replace").strip()
        if code == MISSING:
            raise FileNotFoundError(2, "No such file", path)
        if "Permission denied" in message:
            raise PermissionError(13, "Permission denied", path)
        raise TransportError(f"reading {path} on {self.alias} failed: {message or f'exit {code}'}")

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        process = self._popen(shlex.join(["sh", "-c", _READ, "rx", path, str(offset + 1)]))
        if process.stdout.read(1) == b"R":
            return _StreamReader(process, self, f"reading {path}")
        _, stderr = process.communicate()
        if process.returncode == SSH_FAILED:
            raise self._failure(stderr.decode(errors="replace"))
        self._read_failure(path, process.returncode, stderr)

    @contextmanager
    def open_atomic(self, path: str, mode: int = 0o600) -> Iterator[BinaryIO]:
        folder, name = os.path.split(path)
        temporary = f"{folder}/.{name}.{os.urandom(4).hex()}.part"
        process = self._popen(shlex.join(["sh", "-c", _WRITE, "rx", temporary]), stdin=subprocess.PIPE)
        writer = _StreamWriter(process)
        try:
            yield writer
            writer.finish(self, f"writing {path}")
            self._script(_FINISH, temporary, path, str(writer.written), format(mode, "o"), what=f"writing {path}")
        except BaseException as exc:
            process.kill()
            process.wait()
            try:
                self.run(["rm", "-f", "--", temporary], check=False, timeout=30)
            except Exception:       # the cleanup's own failure never replaces what stopped the upload
                pass
            if isinstance(exc, Exception):      # a full disk shows as cat's write error, or a broken pipe
                full = self._disk_full(path, folder, writer.written)
                if full is not None:
                    raise full from None
            raise

    def write_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """One command: the bytes to a temporary name, checked, renamed into place."""
        folder, name = os.path.split(path)
        temporary = f"{folder}/.{name}.{os.urandom(4).hex()}.part"
        data = bytes(data)
        try:
            self._script(_WRITE_WHOLE, temporary, path, str(len(data)), format(mode, "o"), input=data,
                         what=f"writing {path}")
        except TransportError:      # the script removed its partial file
            full = self._disk_full(path, folder, len(data))
            if full is not None:
                raise full from None
            raise

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        self._script('umask 077 && mkdir -p -m "$2" -- "$1"', path, format(mode, "o"), what=f"creating {path}")

    def rename(self, source: str, destination: str) -> None:
        # -T: onto the destination's own name, as rename(2), never into a folder of that name
        result = self.run(["mv", "-T", "-f", "--", source, destination], check=False)
        if result.returncode != 0:
            if not self.exists(source):
                raise FileNotFoundError(2, "No such file", source)
            raise TransportError(f"renaming {source} on {self.alias} failed: {result.tail(3)}")

    def remove_tree(self, path: str) -> int:
        kilobytes = self.run(["sh", "-c", _REMOVE, "rx-clean", path], check=False).stdout.strip()
        return int(kilobytes) * 1024 if kilobytes.isdigit() else 0

    def listdir(self, path: str) -> list[str]:
        listed = self._script(_LIST, path, r"%f\0", what=f"listing {path}").stdout
        return [name for name in listed.split("\0") if name]

    def listdir_times(self, path: str) -> dict[str, float]:
        listed = self._script(_LIST, path, r"%T@/%f\0", what=f"listing {path}").stdout    # "/" is in no name
        times = {}
        for entry in filter(None, listed.split("\0")):
            when, _, name = entry.partition("/")
            times[name] = float(when)
        return times

    def expand_home(self, path: str) -> str:
        if not (path == "~" or path.startswith("~/")):
            return path
        if self._home is None:
            home = self.run(["sh", "-c", 'cd && pwd -P'], timeout=60).stdout.strip()
            if not home.startswith("/"):
                raise TransportError(f"cannot find the home folder on {self.alias}: `cd && pwd` printed {home!r}")
            self._home = home
        return self._home + path[1:]

    def close(self) -> None:
        """Stop the agent; the master connection is the user's (or lingers ControlPersist after its last use)."""
        self._watches.close_all()
        with self._agent_lock:
            agent, self._agent, self._agent_failed = self._agent, None, False
        if agent is not None:
            agent.close()
        self._home = None


class _AgentProcess(AgentRequests):
    """The command agent's remote Python behind one ssh process: a JSON line per command, each way."""

    def __init__(self, argv: list[str]):
        self._lock = threading.Lock()
        self._buffer = b""
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, bufsize=0)
        except OSError as exc:
            raise AgentUnavailable(str(exc)) from exc
        deadline = time.monotonic() + 60
        try:
            for _ in range(1000):       # past what the login shell and setup lines print
                if self._readline(deadline).startswith(b'{"ready"'):
                    return
            raise AgentUnavailable("the agent did not start")
        except AgentUnavailable:
            self.close()
            raise

    def _readline(self, deadline: float | None) -> bytes:
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not select.select([self.process.stdout], [], [], left)[0]:
                raise AgentUnavailable("the agent did not answer in time")
            piece = os.read(self.process.stdout.fileno(), 2**20)
            if not piece:
                raise AgentUnavailable("the agent stopped")
            self._buffer += piece
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def request(self, request: dict, timeout: float | None = 120) -> dict:
        """One request (a command, or a ``read``/``write`` operation), one JSON reply: one round trip."""
        with self._lock:
            try:
                self.process.stdin.write((json.dumps(request) + "\n").encode())
                reply = json.loads(self._readline(None if timeout is None else time.monotonic() + timeout + 30))
            except (OSError, ValueError) as exc:
                self.close()
                raise AgentUnavailable(str(exc)) from exc
            except AgentUnavailable:
                self.close()
                raise
        return reply

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class _StreamReader:
    """A remote file's bytes as they come out of ``ssh ... tail``; closing it ends the ssh process."""

    def __init__(self, process: subprocess.Popen, transport: OpenSSHTransport, what: str):
        self.process = process
        self.transport = transport
        self.what = what
        self.file = process.stdout

    def _check_end(self) -> None:
        """At the end of the stream: the end of the file, or of the connection? Only ssh's exit code tells."""
        if self.process.wait() != 0:
            stderr = self.process.stderr.read().decode(errors="replace")
            if self.process.returncode == SSH_FAILED:
                raise self.transport._failure(stderr)
            raise TransportError(f"{self.what} on {self.transport.alias} failed: {stderr.strip()}")

    # a read of nothing (an empty out-of-band buffer) is not the end: waiting for ssh there, with its pipe
    # full, waited forever

    def read(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        data = self.file.read(size)
        if size is None or size < 0 or not data:
            self._check_end()
        return data

    def readinto(self, buffer) -> int:
        if not memoryview(buffer).nbytes:
            return 0
        count = self.file.readinto(buffer)
        if not count:
            self._check_end()
        return count

    def readline(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        line = self.file.readline(size)
        if not line:
            self._check_end()
        return line

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.file.close()
        self.process.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _StreamWriter:
    """Feeds ``cat`` on the host through ssh's stdin; counts what was written for the size check."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.written = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            self.process.stdin.write(view)
        except BrokenPipeError:
            raise TransportError("the upload stopped: ssh ended before all of it was sent") from None
        self.written += len(view)
        return len(view)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def finish(self, transport: OpenSSHTransport, what: str) -> None:
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        stderr = self.process.stderr.read().decode(errors="replace")
        self.process.stdout.close()
        self.process.stderr.close()
        if self.process.wait() != 0:
            if self.process.returncode == SSH_FAILED:
                raise transport._failure(stderr)
            raise TransportError(f"{what} on {transport.alias} failed: {stderr.strip() or self.process.returncode}")

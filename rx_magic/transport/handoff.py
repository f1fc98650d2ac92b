"""Big transfers of the paramiko transport handed to the user's own OpenSSH client (``ssh``).

paramiko does Python work for every 32 KiB SSH packet (OpenSSH's sshd sends and takes no larger), so
on a fast link it moves big files more slowly than ``scp``. Where ``ssh`` is installed, the SSH transport
(transport/ssh.py) moves files of ``HANDOFF_BYTES`` and more through one ``ssh`` process per transfer,
started as paramiko connected -- the same host name, port, user and key files -- and checking the host
key exactly as rx_magic does::

    ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<rx_magic's files>
        -o GlobalKnownHostsFile=/dev/null -o HostKeyAlgorithms=<the type paramiko verified> ... HOST COMMAND

No ``~/.ssh/config`` (what paramiko read of it is in the options), no agent or X11 forwarding, no
ControlMaster, never a prompt. A host ssh cannot log in to that way (a password or a second factor)
keeps using paramiko, decided once per connection: not tried at all when paramiko's own login needed
answers, since a refused ssh login counts against the user on the host. A host key ssh refuses is
never a reason to fall back: the transfer fails with rx_magic's own host-key message.

The ssh process runs in its own session: the notebook's Stop (SIGINT to the kernel's process group)
reaches only the kernel, which ends ssh itself and removes the partial file.
"""

from __future__ import annotations

import fcntl
import os
import select
import shlex
import shutil
import subprocess
from typing import Sequence

from ..errors import TransportError

#: files at least this large are read through ssh; an upload starts ssh once it has sent this many bytes over
#: SFTP, and sends the rest through it once ssh has logged in (measured: see benchmarks/bench_ssh.py)
HANDOFF_BYTES = 64 * 2**20
SSH_FAILED = 255            # ssh's own exit code when it could not connect or log in
PIPE_BYTES = 2**20          # the pipes to and from ssh (Linux's default 64 KiB keeps ssh waiting on us)
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"     # as the paramiko transport asks, then ssh's own

# the upload goes on at the end of the partial file the SFTP session made (0600), never creating one: a
# transfer already renamed into place leaves no new partial file behind. "R" once logged in.
_APPEND = '[ -f "$1" ] && [ ! -L "$1" ] || exit 3; printf R; ' \
          'exec dd of="$1" bs=1M oflag=append conv=notrunc,nocreat status=none'
_READ = '[ -f "$1" ] && [ -r "$1" ] || exit 3; printf R; exec cat -- "$1"'

HOST_KEY_REFUSALS = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                     "host key is known", "Host key for", "REVOKED HOST KEY")


def ssh_program() -> str | None:
    return shutil.which("ssh")


def _option_path(path: str) -> str:
    """A path as one word of an ssh option's value: in double quotes, ``%`` doubled (ssh expands %-tokens)."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def ssh_argv(program: str, *, hostname: str, port: int, user: str, identity_files: Sequence[str],
             identities_only: bool, known_hosts_files: Sequence[str], host_key_algorithms: Sequence[str],
             connect_timeout: float) -> list[str]:
    """The ssh command line (without the remote command) that logs in as paramiko did and checks the host key
    against the same known_hosts files, accepting only the key type paramiko verified."""
    argv = [program, "-F", "/dev/null", "-T", "-x", "-a",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=" + " ".join(_option_path(path) for path in known_hosts_files),
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
            "-o", "HostKeyAlgorithms=" + ",".join(host_key_algorithms),
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ClearAllForwardings=yes",
            "-o", "PermitLocalCommand=no", "-o", "ForwardAgent=no", "-o", "ForwardX11=no",
            "-o", f"ConnectTimeout={max(int(connect_timeout), 1)}", "-o", "ServerAliveInterval=30",
            "-o", f"Ciphers={CIPHERS}", "-o", "LogLevel=ERROR",
            "-o", f"IdentitiesOnly={'yes' if identities_only else 'no'}"]
    for path in identity_files:
        argv += ["-i", path.replace("%", "%%")]
    return argv + ["-p", str(port), "-l", user, "--", hostname]


def refused_host_key(stderr: str) -> bool:
    return any(text in stderr for text in HOST_KEY_REFUSALS)


def _widen(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass


class SSHFailed(Exception):
    """ssh ended before it logged in and ran the command: its exit code and what it said."""

    def __init__(self, code: int, stderr: str):
        super().__init__(stderr.strip() or f"exit {code}")
        self.code, self.stderr = code, stderr

    @property
    def host_key(self) -> bool:
        return self.code == SSH_FAILED and refused_host_key(self.stderr)


class _Process:
    """One ssh process running ``sh -c SCRIPT rx PATH`` on the host, in a session of its own."""

    def __init__(self, argv: list[str], script: str, path: str, *, upload: bool):
        command = shlex.join(["sh", "-c", script, "rx", path])
        try:
            self.process = subprocess.Popen([*argv, command], stdin=subprocess.PIPE if upload else subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                                            start_new_session=True)
        except OSError as exc:
            raise SSHFailed(-1, f"cannot run ssh: {exc}") from exc
        _widen((self.process.stdin if upload else self.process.stdout).fileno())
        self.ready = False

    def wait_ready(self, timeout: float | None) -> bool:
        """True once the command runs on the host ("R" came); False if ``timeout`` passed first; else SSHFailed."""
        if self.ready:
            return True
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            return False
        if os.read(self.process.stdout.fileno(), 1) == b"R":
            self.ready = True
            return True
        self.kill()
        raise SSHFailed(self.process.returncode, self._stderr())

    def _stderr(self) -> str:
        try:
            return self.process.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def end(self, what: str) -> None:
        """Wait for ssh to end; a failure of it, or of the command, is a ``TransportError``."""
        stderr = self._stderr()
        code = self.process.wait()
        self.close_pipes()
        if code != 0:
            said = "\n".join(stderr.strip().splitlines()[-3:]) or (
                "ssh lost the connection (exit 255)" if code == SSH_FAILED else f"exit {code}")
            raise TransportError(f"{what} failed (through ssh): {said}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class HandoffUpload(_Process):
    """ssh appending to an upload's partial file: ``write`` once ``wait_ready`` said True; ``finish`` at the end."""

    def __init__(self, argv: list[str], partial: str):
        super().__init__(argv, _APPEND, partial, upload=True)
        self.sent = 0

    def write(self, view: memoryview) -> None:
        fd = self.process.stdin.fileno()
        while view:
            try:
                count = os.write(fd, view)
            except BrokenPipeError:
                self.process.wait()
                said = " ".join(self._stderr().split()[-40:]) or f"exit {self.process.returncode}"
                raise TransportError(f"the upload stopped: ssh ended before all of it was sent ({said})") from None
            view = view[count:]
            self.sent += count

    def finish(self, what: str) -> None:
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        self.end(what)

    def abandon(self) -> None:
        """End ssh at once (nothing was sent through it, or the upload failed)."""
        self.kill()
        self.close_pipes()


class HandoffReader(_Process):
    """A remote file's bytes out of ``ssh ... cat``, checked to be ``size`` bytes and to end with ssh's success."""

    def __init__(self, argv: list[str], path: str, size: int, what: str):
        super().__init__(argv, _READ, path, upload=False)
        self.size, self.what = size, what
        self.position = 0
        self._file = None

    def start(self, timeout: float) -> None:
        """Wait for ssh to log in; ``SSHFailed`` when it could not, ``TransportError`` after ``timeout`` s."""
        try:
            if not self.wait_ready(timeout):
                raise TransportError(f"{self.what}: ssh did not log in within {timeout:.0f} s")
        except BaseException:
            self.close()
            raise
        self._file = open(os.dup(self.process.stdout.fileno()), "rb", buffering=PIPE_BYTES)

    def _check_end(self) -> None:
        self.end(self.what)
        if self.position != self.size:
            raise TransportError(f"{self.what} through ssh ended after {self.position} of {self.size} bytes")

    # the end of the stream is the end of the file only once ssh ended well; a read of nothing is not the end

    def read(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        data = self._file.read(size)
        self.position += len(data)
        if size is None or size < 0 or not data:
            self._check_end()
        return data

    def readinto(self, buffer) -> int:
        if not memoryview(buffer).nbytes:
            return 0
        count = self._file.readinto(buffer)
        self.position += count
        if not count:
            self._check_end()
        return count

    def readline(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        line = self._file.readline(size)
        self.position += len(line)
        if not line:
            self._check_end()
        return line

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0) -> int:
        """Forward only, by reading (as a value that failed to load is skipped to the next frame)."""
        target = offset if whence == 0 else self.position + offset if whence == 1 else -1
        if target < self.position:
            raise OSError(f"{self.what}: a stream through ssh cannot go back (to byte {offset}, whence {whence})")
        while self.position < target and self.read(min(target - self.position, PIPE_BYTES)):
            pass
        return self.position

    def close(self) -> None:
        self.kill()
        if self._file is not None:
            self._file.close()
        self.close_pipes()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SwitchingWriter:
    """An upload's writer that moves from SFTP to ssh part way.

    Bytes go to ``first`` (the SFTP session's writer) until ``HANDOFF_BYTES`` went; then ``start()`` starts
    ssh beside it (or returns None: this upload stays with SFTP). Between pieces of ``STEP`` bytes the
    writer looks, without waiting, whether ssh has logged in; once it has, ``settle()`` ends the SFTP part
    (every write acknowledged, the partial file that long) and the rest goes through ssh, appended.
    ssh that could not log in goes to ``refused(failure)``, which raises for a refused host key and
    otherwise lets the upload go on over SFTP.
    """

    STEP = 4 * 2**20

    def __init__(self, first, start, settle, refused):
        self.first = first
        self.written = 0
        self._start, self._settle, self._refused = start, settle, refused
        self.upload: HandoffUpload | None = None
        self.switched = False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self.switched:
            self.upload.write(view)
        elif self.upload is None and self._start is None:      # this upload stays with SFTP
            self.first.write(data)
        elif size <= self.STEP:
            self.first.write(data)
            self.written += size
            self._look()
            return size
        else:
            done = 0
            while done < size:
                if self.switched:
                    self.upload.write(view[done:])
                    break
                piece = view[done:done + self.STEP]
                self.first.write(piece)
                done += len(piece)
                self.written += len(piece)
                self._look()
            self.written += size - done
            return size
        self.written += size
        return size

    def _look(self) -> None:
        if self.upload is None:
            if self._start is not None and self.written >= HANDOFF_BYTES:
                start, self._start = self._start, None
                self.upload = start()
            return
        try:
            ready = self.upload.wait_ready(0)
        except SSHFailed as failure:
            self.upload.abandon()
            self.upload = None
            self._refused(failure)
            return
        if ready:
            self._settle()
            self.switched = True

    def finish(self, what: str) -> None:
        if self.switched:
            self.upload.finish(what)
            return
        self.first.finish()
        if self.upload is not None:
            self.upload.abandon()

    def stop(self) -> None:
        self.first.stop()
        if self.upload is not None:
            self.upload.abandon()

    def join(self, timeout: float = 30) -> None:
        self.first.join(timeout)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

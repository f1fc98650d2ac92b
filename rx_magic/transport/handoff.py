"""Big transfers of the paramiko transport handed to the user's own OpenSSH client (``ssh``).

paramiko does Python work for every 32 KiB SSH packet (OpenSSH's sshd sends and takes no larger), so
on a fast link it moves big files more slowly than ``scp``. Where ``ssh`` is installed, the SSH transport
(transport/ssh.py) moves big files (``HANDOFF_BYTES``, ``READ_HANDOFF_BYTES``) through one ``ssh`` process each,
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

Every big transfer after the first on a connection skips ssh's login: once a transfer through ssh has ended,
the transport starts one *spare* ssh (``Spare``, the same command line) that logs in, says "R", and waits for
the next transfer to write its kind and path on its stdin (``_SPARE``; the path is the script's ``$1``, never
part of its text, and a path with a newline never goes through a spare). The spare ends with its connection
(the transport's close, and a reconnect, which checks the host key again), when unused for
``SPARE_IDLE_SECONDS``, at interpreter exit, and by itself when the kernel dies (its stdin, a pipe only the
kernel holds, ends, and the script's ``read`` with it). A spare that logged in is a session to the host
paramiko's connection had verified, as trustworthy as that connection and no longer; one still logging in
is taken as it is, and its refused login says what a new ssh's would.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import select
import shlex
import shutil
import subprocess
import weakref
from collections import deque
from typing import Sequence

from ..errors import TransportError

#: an upload starts ssh once it has sent this many bytes over SFTP, and sends the rest through it once ssh has
#: logged in; files at least ``READ_HANDOFF_BYTES`` large are read through ssh the same way. Measured with
#: ``benchmarks/bench_ssh.py --only fb`` on a loaded 2-core machine, server on loopback (its sshd competing for
#: the same cores; ssh's login took 0.4-0.6 s there): uploads through ssh from 128 MiB on 0.75-1.3x of paramiko
#: alone, 512 MiB 1.1-1.3x; downloads through ssh 0.7-0.85x of paramiko alone from 32 to 256 MiB, the same
#: speed at 512 MiB (paramiko's reads, with their packet queue, keep up with ssh there; on a client with more
#: cores than a loopback server leaves, ssh's would not be slowed by the server's work).
HANDOFF_BYTES = 64 * 2**20
READ_HANDOFF_BYTES = 512 * 2**20
#: where a spare ssh has logged in already (no login to wait for), an upload goes to it from this many bytes
SPARE_HANDOFF_BYTES = 16 * 2**20
SSH_FAILED = 255            # ssh's own exit code when it could not connect or log in
NOT_THERE = 3               # the scripts' exit code when the file is not there to append to or read
NO_GNU_DD = 4               # the upload script's exit code when the host's dd lacks oflag=append or conv=nocreat
#: a spare ssh unused this long is ended; the next big transfer logs in again
SPARE_IDLE_SECONDS = 120.0
PIPE_BYTES = 2**20          # the pipes to and from ssh (Linux's default 64 KiB keeps ssh waiting on us)
# AES-GCM first, as the paramiko transport asks, then OpenSSH's other defaults (a list, not "^...": older OpenSSH
# takes no "^", and ssh that refused its options would leave every transfer to paramiko)
CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
           "aes128-ctr,aes192-ctr,aes256-ctr")

# the upload goes on at the end of the partial file the SFTP session made (0600), never creating one: a
# transfer already renamed into place leaves no new partial file behind. "R" once logged in.
# (a host whose dd lacks GNU's nocreat says so before "R", exit 4: its uploads stay with SFTP)
_APPEND = 'dd if=/dev/null of=/dev/null oflag=append conv=notrunc,nocreat status=none 2>/dev/null || exit 4; ' \
          f'[ -f "$1" ] && [ ! -L "$1" ] || exit {NOT_THERE}; printf R; ' \
          'exec dd of="$1" bs=1M oflag=append conv=notrunc,nocreat status=none'
# the download goes on from the byte the reader names on ssh's stdin (how far SFTP got meanwhile)
_READ_FROM = f'[ -f "$1" ] && [ -r "$1" ] || exit {NOT_THERE}; printf R; ' \
             'read -r offset && exec tail -c +"$((offset + 1))" -- "$1"'

# a spare: "R" once logged in; then the transfer's kind (a: append, r: read) and path, one line each, from
# its stdin, and the script above for it with the path as "$1" (exit 5: its stdin ended, the kernel gone)
_SPARE = 'printf R; IFS= read -r kind && IFS= read -r path || exit 5; set -- "$path"; ' \
         f'case "$kind" in a) {_APPEND};; r) {_READ_FROM};; esac; exit 5'
_KINDS = {_APPEND: b"a", _READ_FROM: b"r"}

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

    def __init__(self, code: int, stderr: str, *, logged_in: bool = False):
        super().__init__(stderr.strip() or f"exit {code}")
        self.code, self.stderr, self.logged_in = code, stderr, logged_in

    @property
    def host_key(self) -> bool:
        return self.code == SSH_FAILED and refused_host_key(self.stderr)

    @property
    def this_file_only(self) -> bool:
        """ssh logged in, but the file was not there for it, or a spare that had logged in ended (another transfer
        may go through ssh)."""
        return self.code == NOT_THERE or (self.logged_in and self.code != NO_GNU_DD)


class _Process:
    """One ssh process running ``sh -c SCRIPT rx PATH`` on the host, in a session of its own; or, given a
    ``spare``, that spare's ssh told to run ``SCRIPT`` on ``path``."""

    def __init__(self, argv: list[str], script: str, path: str, *, upload: bool, spare: Spare | None = None):
        self.failure: SSHFailed | None = None
        self.ready = False
        if spare is None:
            self._run([*argv, shlex.join(["sh", "-c", script, "rx", path])])
            _widen((self.process.stdin if upload else self.process.stdout).fileno())
            return
        if "\n" in path:
            raise ValueError("a path with a newline never goes through a spare")
        self.process, spare.process = spare.process, None
        self.logged_in = spare.logged_in
        self._owed = spare._owed + 1        # the spare's own "R" if it is still logging in, and the script's
        _SPARES.discard(spare)
        try:
            os.write(self.process.stdin.fileno(), _KINDS[script] + b"\n" + os.fsencode(path) + b"\n")
        except OSError:     # it ended just now; wait_ready says how
            pass

    def _run(self, command: list[str]) -> None:
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        except OSError as exc:
            raise SSHFailed(-1, f"cannot run ssh: {exc}") from exc
        self.logged_in = False
        self._owed = 1          # the "R"s still to come before the command runs

    def wait_ready(self, timeout: float | None) -> bool:
        """True once the command runs on the host ("R" came); False if ``timeout`` passed first; else SSHFailed."""
        if self.ready:
            return True
        if self.failure is not None:
            raise self.failure
        while select.select([self.process.stdout], [], [], timeout)[0]:
            if os.read(self.process.stdout.fileno(), 1) != b"R":
                break
            self.logged_in = True
            self._owed -= 1
            if not self._owed:
                self.ready = True
                return True
        else:
            return False
        self.kill()
        self.failure = SSHFailed(self.process.returncode, self._stderr(), logged_in=self.logged_in)
        raise self.failure

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
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close_pipes(self) -> None:
        if self.process is None:
            return
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class Spare(_Process):
    """ssh logged in (or logging in) ahead of its connection's next big transfer, waiting for it (``_SPARE``).

    A transfer takes it by passing it as ``spare`` to ``HandoffUpload`` or ``HandoffReader``; ``abandon``
    ends one unused. ``timer`` is its connection's to set (the idle limit)."""

    def __init__(self, argv: list[str]):
        self._run([*argv, shlex.join(["sh", "-c", _SPARE, "rx"])])
        _widen(self.process.stdin.fileno())
        _widen(self.process.stdout.fileno())
        self.failure: SSHFailed | None = None
        self.ready = False
        self.timer = None
        _SPARES.add(self)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def abandon(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        _SPARES.discard(self)
        self.kill()
        self.close_pipes()


_SPARES: weakref.WeakSet[Spare] = weakref.WeakSet()      # spares not taken or ended yet


@atexit.register
def _end_spares() -> None:
    """No spare outlives the interpreter (it would end by itself once its stdin did; this ends it now)."""
    for spare in list(_SPARES):
        spare.abandon()


class HandoffUpload(_Process):
    """ssh appending to an upload's partial file: ``write`` once ``wait_ready`` said True; ``finish`` at the end.
    Given a ``spare``, that ssh does it (``spare_ready``: it had logged in before)."""

    def __init__(self, argv: list[str], partial: str, spare: Spare | None = None):
        self.spare_ready = spare is not None and spare.ready
        super().__init__(argv, _APPEND, partial, upload=True, spare=spare)
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


class HandoffReader:
    """A remote file read through SFTP while ssh logs in, and through ssh from there on.

    ``read_head(offset, length)`` gives the file's bytes from ``offset`` over SFTP, in pieces (pipelined
    requests, ``WINDOW`` bytes at a time); before each window the reader looks, without waiting, whether
    ssh has logged in, and once it has, tells it the byte to go on from and reads the rest out of
    ``ssh ... tail``. So ssh's login, which ``scp`` waits for, costs no time here. The bytes are checked
    to be ``size`` in all, and ssh to have ended well; ssh that could not log in goes to ``refused(failure)``
    (which raises for a refused host key) and the rest of the file comes over SFTP. Given a ``spare``, that
    ssh reads it; ``finished()`` is called once the whole file was read and the reader is closed.
    """

    WINDOW = 8 * 2**20

    def __init__(self, argv: list[str], path: str, size: int, what: str, read_head, settle, close_head, refused,
                 spare: Spare | None = None, finished=None):
        self.size, self.what = size, what
        self.spare_ready = spare is not None and spare.ready
        self._finished = finished
        self._read_head, self._settle, self._close_head, self._refused = read_head, settle, close_head, refused
        self.position = 0               # bytes handed to the caller
        self._held: deque = deque()     # fetched over SFTP, not yet handed out (memoryviews)
        self._fetched = 0               # the file's bytes fetched over SFTP so far
        self._stream = None             # ssh's output, once switched
        self.switched = False
        self._ssh: _Process | None = _Process(argv, _READ_FROM, path, upload=False, spare=spare)

    # -- where the next bytes come from

    def _refill(self) -> None:
        """(Nothing held.) Switch to ssh if it has logged in; else fetch the next window over SFTP."""
        if self._ssh is not None and self._fetched < self.size:
            try:
                ready = self._ssh.wait_ready(0)
            except SSHFailed as failure:
                self._ssh = None
                self._refused(failure)
                ready = False
            if ready:
                try:
                    self._ssh.process.stdin.write(b"%d\n" % self.position)
                    self._ssh.process.stdin.close()
                except OSError:         # ssh ended just now: the rest over SFTP
                    self._ssh.kill()
                    self._ssh.close_pipes()
                    self._ssh = None
                else:
                    # unbuffered: each read takes what the pipe holds straight into its bytes, or the caller's buffer
                    self._stream = open(os.dup(self._ssh.process.stdout.fileno()), "rb", buffering=0)
                    self.switched = True
                    self._settle()
                    return
        length = min(self.WINDOW, self.size - self._fetched)
        if length <= 0:
            return
        for piece in self._read_head(self._fetched, length):
            if not piece:
                break
            self._held.append(memoryview(piece))
            self._fetched += len(piece)

    def _at_end(self) -> None:
        """No more bytes came: the whole file, and (through ssh) ssh ended well?"""
        if self._ssh is not None:
            if self.switched:
                self._ssh.end(self.what)
            else:
                self._ssh.kill()
                self._ssh.close_pipes()
            self._ssh = None
        if self.position != self.size:
            raise TransportError(f"{self.what} ended after {self.position} of {self.size} bytes")

    def wait_for_ssh(self, timeout: float) -> bool:
        """Wait until ssh has logged in (the next window then comes through it); False if it did not.

        For tests and benchmarks that must see the switch whatever the machine's speed.
        """
        try:
            return self._ssh is not None and self._ssh.wait_ready(timeout)
        except SSHFailed:
            return False        # the next read says what became of it

    # -- reading

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            if self.switched:
                count = self._stream.readinto(view[done:])
                if not count:
                    break
            elif self._held:
                piece = self._held[0]
                count = min(len(piece), len(view) - done)
                view[done:done + count] = piece[:count]
                if count == len(piece):
                    self._held.popleft()
                else:
                    self._held[0] = piece[count:]
            else:
                self._refill()
                if not self._held and not self.switched:
                    break
                continue
            done += count
            self.position += count
        if done == 0 and len(view):
            self._at_end()
        return done

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            pieces = []
            while piece := self.read(PIPE_BYTES):
                pieces.append(piece)
            return b"".join(pieces)
        if size == 0:
            return b""
        if not self.switched and not self._held:
            self._refill()
        if self.switched:
            pieces, left = [], size
            while left and (piece := self._stream.read(left)):
                pieces.append(piece)
                left -= len(piece)
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self.position += len(data)
            if not data:
                self._at_end()
            return data
        if self._held and len(self._held[0]) == size:        # one whole SFTP reply: no copy
            piece = self._held.popleft()
            self.position += size
            return piece.obj if len(piece.obj) == size else bytes(piece)
        buffer = bytearray(size)
        count = self.readinto(buffer)
        return bytes(buffer) if count == size else bytes(memoryview(buffer)[:count])

    def readline(self, size: int | None = -1) -> bytes:
        line = bytearray()
        while (size is None or size < 0 or len(line) < size) and not line.endswith(b"\n"):
            piece = self.read(1)
            if not piece:
                break
            line += piece
        return bytes(line)

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
        if self._ssh is not None:
            self._ssh.kill()
            self._ssh.close_pipes()
            self._ssh = None
        if self._stream is not None:
            self._stream.close()
        if not self.switched:
            self._close_head()
        self._held.clear()
        finished, self._finished = self._finished, None
        if finished is not None and self.position == self.size:
            finished()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SwitchingWriter:
    """An upload's writer that moves from SFTP to ssh part way.

    Bytes go to ``first`` (the SFTP session's writer) until ``HANDOFF_BYTES`` went (``SPARE_HANDOFF_BYTES``
    where ``spare_ready()`` says a spare ssh has logged in); then ``start()`` starts ssh beside it, or takes
    the spare (or returns None: this upload stays with SFTP). Between pieces of ``STEP`` bytes the
    writer looks, without waiting, whether ssh has logged in; once it has, ``settle()`` ends the SFTP part
    (every write acknowledged, the partial file that long) and the rest goes through ssh, appended.
    ssh that could not log in goes to ``refused(failure)``, which raises for a refused host key and
    otherwise lets the upload go on over SFTP.
    """

    STEP = 4 * 2**20

    def __init__(self, first, start, settle, refused, spare_ready=None):
        self.first = first
        self._spare_ready = spare_ready
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
            if self._start is not None and (self.written >= HANDOFF_BYTES or (
                    self.written >= SPARE_HANDOFF_BYTES and self._spare_ready is not None and self._spare_ready())):
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

"""A long-lived command runner on an SSH host: one login shell per connection, not per command.

Every SSH exec starts the user's login shell, which on clusters (module
systems, conda, pyenv in ``.bashrc``) costs 100 ms or more before the command
even runs. The agent is a small Python started once per connection, after the
target's setup lines, in that shell's environment; it then runs each argv with
``subprocess`` (no shell) and answers with one JSON line. If it cannot start,
the transport falls back to one exec per command.

Besides commands it does, in one request each (one round trip instead of one per
file and step): ``read`` -- many small files at once (a poll round's ``status.json``
files, a finished job's results); ``write`` -- folders, then files, each written under
a temporary name (``O_EXCL|O_NOFOLLOW``, its mode set before a byte is written) and
renamed into place, then one rename (a whole job folder). ``END_WATCH_SCRIPT`` is
the script a separate session runs to say when a process ends (``Transport.end_notice``).
"""

from __future__ import annotations

import base64
import json
import shlex
import threading
from typing import Collection, Sequence

import paramiko

from ..errors import TransportError
from .base import DISK_FULL_ERRNOS, disk_full

AGENT_SOURCE = r"""
import base64, json, os, subprocess, sys
# `bash -c` children of a process with SSH_CLIENT set would read ~/.bashrc again
for name in ("SSH_CLIENT", "SSH2_CLIENT"):
    os.environ.pop(name, None)
def text(data):
    return base64.b64encode(data).decode("ascii")
out = sys.stdout
out.write(json.dumps({"ready": os.getpid()}) + "\n")
out.flush()
def read_files(request):
    found, limit = [], request.get("limit")
    for path in request["paths"]:
        try:
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if limit is not None and size > limit:
                    found.append({"size": size})
                    continue
                found.append({"data": text(file.read())})
        except FileNotFoundError:
            found.append({"missing": True})
        except OSError as exc:
            found.append({"error": exc.errno})
    return {"files": found}
def write_files(request):
    made, at = [], None
    try:
        for at, mode in request.get("folders", ()):
            if os.path.islink(at) or os.path.lexists(at) and not os.path.isdir(at):
                raise NotADirectoryError(20, "it exists and is not a folder", at)
            if not os.path.lexists(at):
                os.makedirs(at, mode)
                os.chmod(at, mode)
        for at, data, mode, keep in request.get("files", ()):
            if keep and os.path.lexists(at):
                continue
            folder, name = os.path.split(at)
            temporary = os.path.join(folder, ".%s.%s.part" % (name, os.urandom(4).hex()))
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            made.append(temporary)
            with os.fdopen(fd, "wb") as file:
                os.fchmod(fd, mode)
                file.write(base64.b64decode(data))
            os.replace(temporary, at)
            made.pop()
        if request.get("rename"):
            at = request["rename"][0]
            os.rename(*request["rename"])
        return {"code": 0}
    except OSError as exc:
        for temporary in made:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        free = None
        try:
            found = os.statvfs(os.path.dirname(at) or ".")
            free = found.f_bavail * found.f_frsize
        except (OSError, TypeError):
            pass
        return {"code": 1, "errno": exc.errno, "path": at, "message": exc.strerror or str(exc), "free": free}
OPERATIONS = {"read": read_files, "write": write_files}
for line in sys.stdin:
    request = json.loads(line)
    if request.get("op") in OPERATIONS:
        out.write(json.dumps(OPERATIONS[request["op"]](request)) + "\n")
        out.flush()
        continue
    argv, timeout = request["argv"], request.get("timeout")
    data = base64.b64decode(request["input"]) if request.get("input") else None
    try:
        done = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=None if data is not None else subprocess.DEVNULL, timeout=timeout)
        reply = {"code": done.returncode, "stdout": text(done.stdout), "stderr": text(done.stderr)}
    except subprocess.TimeoutExpired:
        reply = {"code": 124, "stdout": "", "stderr": text(b"timed out after %d s" % timeout), "timeout": True}
    except OSError as exc:
        reply = {"code": 127, "stdout": "", "stderr": text(("%s: %s" % (argv[0], exc.strerror)).encode())}
    out.write(json.dumps(reply) + "\n")
    out.flush()
"""


#: ``bash -c END_WATCH_SCRIPT rx-end-watch PID MARKER``: prints "ended" once process PID (whose command line mentions
#: MARKER: pids are reused) is gone, looking every 20 ms with bash's builtins only (no process started per look, no
#: Python, no setup lines); stops when its stdin closes (the session was closed), so it never outlives the notice.
#: The session's first line, "watching", says it has started; without /proc it says nothing and stops.
END_WATCH_SCRIPT = r"""
alive() {
    local word
    [ -r "/proc/$1/cmdline" ] || return 1
    while IFS= read -r -d '' word; do
        [[ $word == *"$2"* ]] && return 0
    done < "/proc/$1/cmdline"
    return 1
}
[ -d /proc/self ] || exit 0
echo watching
while alive "$1" "$2"; do
    read -r -t 0.02 _
    [ $? -gt 128 ] || exit 0
done
echo ended
"""


def read_reply(reply: dict, paths: Sequence[str]) -> dict[str, bytes | None]:
    """``Transport.read_files``' answer from the agent's ``read`` reply: a file too large, or that could not be
    read (permissions), is left out, for the caller to read on its own (and meet the same error)."""
    found: dict[str, bytes | None] = {}
    for path, entry in zip(paths, reply["files"]):
        if "data" in entry:
            found[path] = base64.b64decode(entry["data"])
        elif entry.get("missing"):
            found[path] = None
    return found


def check_write_reply(reply: dict, files: Sequence[tuple[str, bytes]], where: str, alias: str) -> None:
    """Raise what the agent's ``write`` reply reports: ``DiskFull`` (with the free space it saw), else a
    ``TransportError`` naming the path."""
    if reply["code"] == 0:
        return
    if reply["errno"] in DISK_FULL_ERRNOS:
        raise disk_full(reply["path"], where, reply.get("free"), sum(len(data) for _, data in files))
    raise TransportError(f"writing {reply['path']} on {alias} failed: {reply['message']}")


def write_request(files: Sequence[tuple[str, bytes]], folders: Sequence[str], keep: Collection[str],
                  rename: tuple[str, str] | None, mode: int = 0o600, folder_mode: int = 0o700) -> dict:
    """The agent's ``write`` request for ``Transport.write_files``."""
    return {"op": "write", "folders": [[folder, folder_mode] for folder in folders],
            "files": [[path, base64.b64encode(data).decode("ascii"), mode, path in keep] for path, data in files],
            "rename": list(rename) if rename else None}


class AgentUnavailable(Exception):
    """The agent could not start, or stopped answering; fall back to exec."""


class AgentRequests:
    """What every agent connection answers, given its ``request`` (one JSON request, one JSON reply)."""

    def request(self, request: dict, timeout: float | None = 120) -> dict:
        raise NotImplementedError

    def run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        request = {"argv": list(argv), "timeout": timeout,
                   "input": base64.b64encode(input).decode("ascii") if input else None}
        reply = self.request(request, timeout)
        return reply["code"], base64.b64decode(reply["stdout"]), base64.b64decode(reply["stderr"])


class CommandAgent(AgentRequests):
    """Runs argv lists through one long-lived remote Python over a paramiko session."""

    def __init__(self, transport: paramiko.Transport, python: str = "python3", setup: tuple[str, ...] = ()):
        self._lock = threading.Lock()
        script = "\n".join([*setup, f"exec {shlex.quote(python)} -u -c {shlex.quote(AGENT_SOURCE)}"])
        try:
            self._channel = transport.open_session()
            self._channel.exec_command(shlex.join(["bash", "-c", script]))
            self._channel.settimeout(60)
            self._reader = self._channel.makefile("rb")
            self.pid = self._await_ready()
        except Exception as exc:
            self.close()
            raise AgentUnavailable(str(exc)) from exc

    def _await_ready(self) -> int:
        """Skip what the login shell and setup lines print (``Loading module...``) up to the agent's hello."""
        for _ in range(1000):
            line = self._reader.readline()
            if not line:
                break
            if line.startswith(b'{"ready"'):
                return json.loads(line)["ready"]
        raise AgentUnavailable("the agent did not start")

    def request(self, request: dict, timeout: float | None = 120) -> dict:
        """One request (a command, or a ``read``/``write`` operation), one JSON reply: one round trip."""
        with self._lock:
            try:
                self._channel.settimeout(None if timeout is None else timeout + 30)
                self._channel.sendall((json.dumps(request) + "\n").encode())
                line = self._reader.readline()
                reply = json.loads(line) if line else None
            except Exception as exc:
                self.close()
                raise AgentUnavailable(str(exc)) from exc
        if reply is None:
            self.close()
            raise AgentUnavailable("the agent stopped")
        return reply

    @property
    def alive(self) -> bool:
        channel = getattr(self, "_channel", None)
        return channel is not None and not channel.closed and not channel.exit_status_ready()

    def close(self) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None:
            try:
                channel.close()
            except Exception:
                pass
            self._channel = None


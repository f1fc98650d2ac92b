"""A long-lived command runner on an SSH host: one login shell per connection, not per command.

Every SSH exec starts the user's login shell, which on clusters (module
systems, conda, pyenv in ``.bashrc``) costs 100 ms or more before the command
even runs. The agent is a small Python started once per connection, after the
target's setup lines, in that shell's environment; it then runs each argv with
``subprocess`` (no shell) and answers with one JSON line. If it cannot start,
the transport falls back to one exec per command.
"""

from __future__ import annotations

import base64
import json
import shlex
import threading

import paramiko

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
for line in sys.stdin:
    request = json.loads(line)
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


class AgentUnavailable(Exception):
    """The agent could not start, or stopped answering; fall back to exec."""


class CommandAgent:
    """Runs argv lists through one long-lived remote Python."""

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

    def run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        request = {"argv": list(argv), "timeout": timeout,
                   "input": base64.b64encode(input).decode("ascii") if input else None}
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
        return reply["code"], base64.b64decode(reply["stdout"]), base64.b64decode(reply["stderr"])

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


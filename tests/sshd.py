"""A real OpenSSH server on loopback, for the tests: its own keys, config, port and log.

Started by absolute path in the foreground (``-D``), so the tests hold its PID
and end only it, and the per-connection children it forked, by PID.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sshd_available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rx_magic-test", "-f", str(path)],
                   check=True)
    return path


def fingerprint(public_key: Path) -> str:
    """The key's SHA256 fingerprint as ssh-keygen prints it."""
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key)], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]      # "256 SHA256:... comment (ED25519)"


class SSHServer:
    """``sshd`` on 127.0.0.1 accepting one user key; ``ssh_config()`` writes a client side for it.

    ``extra_config`` lines are added to its sshd_config (``SetEnv SLURM_CONF=...``).
    """

    def __init__(self, root: Path, extra_config: list[str] | None = None):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.user = getpass.getuser()
        self.port = free_port()
        self.host_key = keygen(root / "host_key")
        self.user_key = keygen(root / "id_ed25519")
        self.other_key = keygen(root / "id_other")          # a key the server does not accept
        (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
        self.log = root / "sshd.log"
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            "MaxSessions 100",
            "MaxStartups 100:30:200",
            "LogLevel VERBOSE",
            *(extra_config or []),
            "",
        ]))
        self.process: subprocess.Popen | None = None
        self.binary = SSHD      # a link to it under another name: sshd's PAM service is its program name

    def start(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.process = subprocess.Popen([self.binary, "-D", "-f", str(self.config), "-E", str(self.log)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port}: {self.log.read_text()}")

    def session_pids(self) -> list[int]:
        """The per-connection processes sshd forked (its children), to cut connections."""
        if self.process is None:
            return []
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def drop_connections(self) -> None:
        """Cut every open SSH connection, as a network failure would."""
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.drop_connections()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def known_hosts_line(self) -> str:
        public = (self.root / "host_key.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n"

    def ssh_config(self, home: Path, *, known: bool = True) -> Path:
        """Write ``home/.ssh/config`` (aliases ``rxtest`` and ``rxjump``) and, if ``known``, known_hosts."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        known_hosts = ssh / "known_hosts"
        known_hosts.write_text(self.known_hosts_line() if known else "")
        common = ["    HostName 127.0.0.1", f"    Port {self.port}", f"    User {self.user}",
                  f"    IdentityFile {self.user_key}", "    IdentitiesOnly yes",
                  f"    UserKnownHostsFile {known_hosts}"]
        (ssh / "config").write_text("\n".join(["Host rxtest", *common, "", "Host rxjump", *common,
                                               "    ProxyJump rxtest", ""]))
        return ssh / "config"


def start_for_tests(root: Path, extra_config: list[str] | None = None) -> SSHServer:
    """Start a server for a test module; skip when OpenSSH is missing.

    Under CI (``CI`` set) a missing package fails instead of skipping.
    """
    import pytest
    if not sshd_available():
        message = f"OpenSSH's server ({SSHD}) and ssh-keygen are needed: apt-get install openssh-server openssh-client"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    server = SSHServer(root, extra_config)
    server.start()
    return server

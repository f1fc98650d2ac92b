"""A real sshd on loopback that asks for a key and then a one-time code, as clusters with a second factor do.

``AuthenticationMethods publickey,keyboard-interactive``: after the key, PAM asks
"Password: " through keyboard-interactive, and ``pam_exec`` checks the answer
against the SHA-256 of the code (the code itself is written nowhere).

PAM's service is sshd's program name, so the server runs from a link named
``rx-magic-test-<random>`` and its stack is ``/etc/pam.d/rx-magic-test-<random>``,
made here and removed by ``stop``: the system's own ``/etc/pam.d/sshd`` and its
users' passwords are left alone. Needs root (sshd with PAM) and ``pam_exec.so``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
from pathlib import Path

from sshd import SSHD, SSHServer, sshd_available

PAM_FOLDER = Path("/etc/pam.d")


def pam_exec_available() -> bool:
    return bool(glob.glob("/lib/*/security/pam_exec.so") + glob.glob("/usr/lib/*/security/pam_exec.so")
                + glob.glob("/lib/security/pam_exec.so"))


class OTPServer(SSHServer):
    """sshd demanding the user's key and then ``code`` (keyboard-interactive, through PAM)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.code = "otp-" + secrets.token_hex(12)
        self.service = "rx-magic-test-" + secrets.token_hex(4)
        text = self.config.read_text()
        for old, new in (("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes"),
                         ("UsePAM no", "UsePAM yes"),
                         ("PermitRootLogin prohibit-password", "PermitRootLogin yes")):   # root: the test's user
            text = text.replace(old, new)
        self.config.write_text(text + "AuthenticationMethods publickey,keyboard-interactive\n")
        self.binary = str(root / self.service)
        os.symlink(SSHD, self.binary)
        checker = root / "check-code"
        digest = hashlib.sha256(self.code.encode()).hexdigest()
        # pam_exec hands the answer on stdin, ended by a NUL
        checker.write_text(f"#!/bin/sh\ncode=$(tr -d '\\000')\n"
                           f"[ \"$(printf %s \"$code\" | sha256sum | cut -d' ' -f1)\" = {digest} ]\n")
        checker.chmod(0o700)
        self.pam_file = PAM_FOLDER / self.service
        self.pam_file.write_text(f"auth required pam_exec.so quiet expose_authtok {checker}\n"
                                 "auth required pam_permit.so\n"      # answers pam_setcred, as pam_exec does not
                                 "account required pam_permit.so\nsession required pam_permit.so\n")

    def remove(self) -> None:
        self.stop()
        self.pam_file.unlink(missing_ok=True)

    def accepted_logins(self) -> int:
        """How many connections passed keyboard-interactive, from sshd's log."""
        return self.log.read_text().count("Accepted keyboard-interactive")


def start_otp_server(root: Path) -> OTPServer:
    import pytest
    if not sshd_available():
        pytest.skip(f"OpenSSH's server ({SSHD}) and ssh-keygen are needed")
    if os.geteuid() != 0 or not pam_exec_available():
        pytest.skip("sshd with PAM needs root, and PAM's pam_exec.so")
    server = OTPServer(root)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server

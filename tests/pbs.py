"""A real single-node OpenPBS for the tests, from the kit in ``../shared/openpbs`` (its README).

The kit builds OpenPBS 23.06 once (``.ci/run`` does that in CI) and starts its
daemons as root on loopback; ``build-and-start.sh`` run again is quick and is
how history is switched on or off. PBS runs no job for root, so the tests
submit as an unprivileged user of their own, ``rxpbs``, over a loopback sshd
of their own that logs in as that user: the way a laptop reaches Gadi.

What this helper changes on the machine, and puts back: the MoM's config gets
``$enforce mem`` (so ``--mem`` is enforced, as on Gadi) and a 1-2 s check
interval (so walltime and memory kills come within seconds), restored and
re-read (SIGHUP to the MoM, by the PID in its lock file) when the session ends.
It creates the user ``rxpbs`` (no password, not locked, so sshd lets the key in)
if it is missing, and leaves it. It stops no PBS daemon: the kit's daemons are
not this test run's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KIT = Path(os.environ.get("RX_PBS_KIT") or HERE.parent.parent / "shared" / "openpbs")
PBS_EXEC = Path("/opt/pbs")
PBS_HOME = Path("/var/spool/pbs")
MOM_CONFIG = PBS_HOME / "mom_priv" / "config"
MOM_LOCK = PBS_HOME / "mom_priv" / "mom.lock"
USER = "rxpbs"
MOM_LINES = ["$enforce mem", "$min_check_poll 1", "$max_check_poll 2"]


def missing() -> str | None:
    """Why real PBS cannot be used here, or None."""
    if os.geteuid() != 0:
        return "the OpenPBS tests start PBS with the kit, which needs root"
    if not (KIT / "build-and-start.sh").is_file():
        return f"the OpenPBS kit is not at {KIT} (set RX_PBS_KIT)"
    if not (PBS_EXEC / "bin" / "qstat").exists():
        return f"OpenPBS is not built: run {KIT}/build-and-start.sh (3 to 5 minutes) or .ci/run"
    if not os.path.exists("/usr/sbin/sshd"):
        return "OpenSSH's server is needed: apt-get install openssh-server"
    return None


class LoopbackPBS:
    """The kit's OpenPBS, reached as ``rxpbs`` over a private sshd on 127.0.0.1.

    ``root`` is a folder the user can enter: the sshd's files, a copy of dill for
    the target's Python, and ``root/rxpbs``, the user's own folder for job folders.
    """

    def __init__(self, root: Path):
        self.root = root
        self.history: bool | None = None
        self.server = None
        self._mom_config: str | None = None

    # ------------------------------------------------------------------------- set-up

    def start(self, history: bool) -> None:
        _ensure_user()
        self.switch_history(history)
        self._configure_mom()
        self._copy_dill()
        user_dir = self.root / USER
        user_dir.mkdir(exist_ok=True)
        entry = pwd.getpwnam(USER)
        os.chown(user_dir, entry.pw_uid, entry.pw_gid)
        os.chmod(user_dir, 0o700)
        self._start_sshd()

    def switch_history(self, history: bool) -> None:
        """Run ``build-and-start.sh`` with history on or off (quick: PBS is built and running)."""
        if self.history is history:
            return
        env = {**os.environ, "PBS_KIT_USER": USER, "PBS_KIT_HISTORY": "1" if history else "0",
               "PBS_KIT_WORK": os.environ.get("PBS_KIT_WORK", "/tmp/pbskit")}
        done = subprocess.run(["timeout", "900", str(KIT / "build-and-start.sh")], cwd="/", env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{KIT}/build-and-start.sh failed (exit {done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        self.history = history

    def _configure_mom(self) -> None:
        text = MOM_CONFIG.read_text() if MOM_CONFIG.exists() else ""
        wanted = [line for line in MOM_LINES if line not in text.splitlines()]
        if not wanted:
            return
        self._mom_config = text
        MOM_CONFIG.write_text(text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(wanted) + "\n")
        self._reload_mom()

    def _reload_mom(self) -> None:
        pid = int(MOM_LOCK.read_text().strip())
        if b"pbs_mom" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGHUP)     # pbs_mom reads its config again
            time.sleep(1)

    def _copy_dill(self) -> None:
        """The target's Python is Debian's (the kernel's may be under /root, which the user cannot read):
        it gets dill, pure Python, from this environment, through PYTHONPATH in the target's setup."""
        import dill
        site = self.root / "site"
        if not (site / "dill").exists():
            shutil.copytree(Path(dill.__file__).parent, site / "dill")
        for path in [site, *site.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def _start_sshd(self) -> None:
        sys.path.insert(0, str(HERE))
        from sshd import SSHServer
        server = SSHServer(self.root / "sshd")
        server.user = USER
        # sshd reads authorized_keys as the user: a copy it can reach (the folder is traversable, not listable)
        keys = self.root / "authorized_keys"
        shutil.copy(server.root / "authorized_keys", keys)
        os.chmod(keys, 0o644)
        server.config.write_text(server.config.read_text().replace(
            f"AuthorizedKeysFile {server.root / 'authorized_keys'}", f"AuthorizedKeysFile {keys}"))
        os.chmod(server.root, 0o711)
        server.start()
        self.server = server

    # ------------------------------------------------------------------------- use

    @property
    def user_dir(self) -> Path:
        return self.root / USER

    @property
    def python_setup(self) -> list[str]:
        return [f"export PYTHONPATH={self.root / 'site'}"]

    def as_user(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A shell command run as the PBS user in a login shell (PBS's commands first on PATH)."""
        return subprocess.run(["timeout", str(timeout), "su", "-", USER, "-c", command],
                              capture_output=True, text=True)

    def job_says(self, scheduler_id: str) -> str:
        """``qstat -f`` (with ``-x`` where history is on) of one job: what PBS itself recorded, for a test's check."""
        flags = "-x -f" if self.history else "-f"
        return self.as_user(f"qstat {flags} {scheduler_id}").stdout

    def traced(self, scheduler_id: str) -> str:
        return self.as_user(f"tracejob -n 1 {scheduler_id}").stdout

    # ------------------------------------------------------------------------- tear-down

    def stop(self) -> None:
        """Stop the sshd this object started (by PID) and put the MoM's config back; PBS keeps running."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._mom_config is not None:
            MOM_CONFIG.write_text(self._mom_config)
            self._mom_config = None
            self._reload_mom()
        if not os.environ.get("RX_PBS_KEEP"):     # set it to read the job folders after a failure
            shutil.rmtree(self.root, ignore_errors=True)


def _ensure_user() -> None:
    """The test user, with a home and bash; its password '*' (none), not '!' (locked), which sshd without
    PAM refuses even with a key (``useradd``, as the kit runs it, leaves a new account locked)."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", USER], check=True)
        return
    shadow = subprocess.run(["getent", "shadow", USER], capture_output=True, text=True).stdout.split(":")
    if len(shadow) > 1 and shadow[1].startswith("!"):
        subprocess.run(["usermod", "--password", "*", USER], check=True)


def start_for_tests(history: bool) -> LoopbackPBS:
    """OpenPBS with history on or off, and an sshd for its user; skip (fail under CI) when it cannot run."""
    import pytest
    reason = missing()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="rx-pbs-"))
    os.chmod(root, 0o711)
    cluster = LoopbackPBS(root)
    try:
        cluster.start(history)
    except BaseException:
        cluster.stop()
        raise
    return cluster

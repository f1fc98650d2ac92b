"""A Binder rehearsal: what ``binder/`` builds runs every notebook, as an unprivileged user.

As close to repo2docker as a machine without Docker gets. As root, the test
makes the user ``rxstudent`` with a fresh home, copies the repository's files
into that home (repo2docker's ``REPO_DIR`` is ``$HOME``), and then, as that
user and with a clean environment:

1. builds a fresh virtual environment (the Python of ``binder/runtime.txt``)
   and installs ``binder/requirements.txt`` into it, from the repository root;
2. runs ``binder/postBuild``;
3. runs ``binder/start`` with a command that executes every
   ``notebooks/[0-9]*.ipynb`` through ``notebooks/run.py`` and exits.

It then checks that the sshd ``start`` left running is the user's, listens on
127.0.0.1 only, and serves the ``loopback`` target (one job runs there), and
ends it by the PID in its PidFile. ``apt.txt``'s packages must be installed
(repo2docker would install them). pip's cache for the rehearsal is kept in
``/var/tmp/rx_magic-binder-pip-cache``. Not root: the test skips, or fails when
``CI`` is set. Each step's output and time go to ``test-artifacts/binder-rehearsal.log``.
"""

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sshd import SSHD, free_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.binder

REPO = Path(__file__).resolve().parent.parent
BINDER = REPO / "binder"
USER = "rxstudent"
PIP_CACHE = Path("/var/tmp/rx_magic-binder-pip-cache")
LOCK = Path("/var/tmp/rx_magic-binder.lock")
LOG = REPO / "test-artifacts" / "binder-rehearsal.log"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Never copied into the user's home: what a fresh clone does not have.
NOT_COPIED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "test-artifacts",
              "build", "dist", "node_modules"}


def unavailable(message: str):
    pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def apt_packages() -> list[str]:
    lines = (BINDER / "apt.txt").read_text().splitlines()
    return [name for name in (line.partition("#")[0].strip() for line in lines) if name]


def check_machine() -> None:
    """Skip (or fail under CI) when this machine cannot hold the rehearsal."""
    if os.geteuid() != 0:
        unavailable("the Binder rehearsal makes an unprivileged user: run it as root (as .ci/run does)")
    missing = [tool for tool in ("useradd", "usermod", "runuser") if not shutil.which(tool)]
    if missing:
        unavailable(f"the Binder rehearsal needs {', '.join(missing)} (Debian's passwd and util-linux)")
    not_installed = []
    for package in apt_packages():
        status = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], check=False,
                                capture_output=True, text=True)
        if "ok installed" not in status.stdout:
            not_installed.append(package)
    if not_installed or not os.path.exists(SSHD):
        unavailable(f"binder/apt.txt's packages are not installed: apt-get install {' '.join(apt_packages())}")


def runtime_python() -> str:
    """The system Python that ``binder/runtime.txt`` names (Binder's), else the system's ``python3``."""
    runtime = (BINDER / "runtime.txt").read_text().strip()
    version = runtime.removeprefix("python-") if runtime.startswith("python-") else ""
    found = shutil.which(f"python{version}", path=SYSTEM_PATH) or shutil.which("python3", path=SYSTEM_PATH)
    if not found:
        unavailable(f"no system Python in {SYSTEM_PATH} to build the rehearsal's virtual environment")
    check = subprocess.run([found, "-c", "import venv, ensurepip"], check=False, capture_output=True)
    if check.returncode:
        unavailable(f"{found} cannot make virtual environments: apt-get install python3-venv")
    return found


def repository_files() -> list[str]:
    """The files a clone would have: tracked and new (not ignored) ones, as git lists them."""
    try:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, check=True).stdout.decode()
        return [name for name in listed.split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):   # no git, or a checkout git will not read as root
        names = []
        for folder, dirs, files in os.walk(REPO):
            dirs[:] = [name for name in dirs if name not in NOT_COPIED and not name.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(folder, name), REPO) for name in files if not name.endswith(".pyc")]
        return names


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def process_uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    return set()


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if process_uids(int(entry.name)) == {uid} and not is_zombie(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def is_gone(pid: int) -> bool:
    """Ended: no such process, or one its parent has not reaped yet."""
    return not Path(f"/proc/{pid}").exists() or is_zombie(pid)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses process ``pid`` listens on, from its sockets and /proc/net."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:          # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))   # 32-bit words, host order
                found.append((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def end_processes(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(is_gone(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if not is_gone(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Rehearsal:
    """The user, their home (the repository's copy) and environment, and a log of every step."""

    def __init__(self, base: Path, log):
        self.base = base
        self.home = base / "home"
        self.venv = base / "venv"
        self.log = log
        self.times: dict[str, float] = {}
        self.port = free_port()
        self.account = None

    def make_user(self) -> None:
        self.home.mkdir()
        for name in repository_files():
            (self.home / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, self.home / name)
        try:
            account = pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(self.home), "--shell", "/bin/bash", USER],
                           check=True, capture_output=True)
        else:
            leftover = processes_of(account.pw_uid)
            assert not leftover, f"{USER} still runs processes {leftover} (from an earlier rehearsal?)"
            subprocess.run(["usermod", "--home", str(self.home), "--shell", "/bin/bash", USER],
                           check=True, capture_output=True)
        self.account = pwd.getpwnam(USER)
        uid, gid = self.account.pw_uid, self.account.pw_gid
        chown_tree(self.base, uid, gid)
        PIP_CACHE.mkdir(mode=0o700, exist_ok=True)
        if PIP_CACHE.stat().st_uid != uid:
            chown_tree(PIP_CACHE, uid, gid)

    def environment(self) -> dict[str, str]:
        env = {"HOME": str(self.home), "USER": USER, "LOGNAME": USER, "SHELL": "/bin/bash", "LANG": "C.UTF-8",
               "PATH": f"{self.venv}/bin:{SYSTEM_PATH}", "PIP_CACHE_DIR": str(PIP_CACHE),
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "RX_BINDER_SSH_PORT": str(self.port)}
        for name, value in os.environ.items():     # the machine's own way to reach PyPI
            if (name.startswith("PIP_") and name not in env and name not in ("PIP_NO_CACHE_DIR", "PIP_USER",
                                                                             "PIP_TARGET", "PIP_PREFIX")) \
                    or name.lower() in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
                env[name] = value
        return env

    def as_user(self, step: str, *command: str, timeout: float) -> subprocess.CompletedProcess:
        environment = [f"{name}={value}" for name, value in self.environment().items()]
        self.log.write(f"\n===== {step}: {' '.join(command)}\n")
        self.log.flush()
        started = time.monotonic()
        # Its own session, so that on a timeout the whole step ends, not only runuser: a process the step
        # started (pip, a kernel) would otherwise hold the output pipe open and the wait for it would never end.
        process = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *environment, *command],
                                   cwd=self.home, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            end_processes(processes_of(self.account.pw_uid))
            try:
                output, _ = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                output = "(no output: the step's processes would not end)"
            self.log.write(output)
            self.log.flush()
            pytest.fail(f"{step} did not end within {timeout:.0f} s; its output is in {LOG}:\n{output[-3000:]}")
        self.times[step] = time.monotonic() - started
        self.log.write(output)
        self.log.write(f"===== {step}: exit code {process.returncode} after {self.times[step]:.1f} s\n")
        self.log.flush()
        assert process.returncode == 0, f"{step} failed (exit code {process.returncode}):\n{output[-4000:]}"
        return subprocess.CompletedProcess(process.args, process.returncode, output)

    def read_sshd_config(self) -> dict[str, str]:
        config = self.home / ".config" / "rx_magic" / "sshd" / "sshd_config"
        settings = {}
        for line in config.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key and not key.startswith("#"):
                settings[key] = value.strip()
        return settings


@pytest.fixture
def rehearsal():
    check_machine()
    LOG.parent.mkdir(exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)         # one rehearsal at a time: they share the user
        with open(LOG, "w") as log:
            base = Path(tempfile.mkdtemp(prefix="rx-binder-", dir="/tmp"))
            rehearsal = Rehearsal(base, log)
            passed = False
            try:
                yield rehearsal
                passed = True
            finally:
                finish(rehearsal, passed)


def finish(rehearsal: Rehearsal, passed: bool) -> None:
    """End what the user left running, log the times, and remove the home unless the test failed."""
    if rehearsal.account is not None:
        leftover = processes_of(rehearsal.account.pw_uid)
        if leftover:
            rehearsal.log.write(f"\nended {USER}'s leftover processes {leftover}\n")
            end_processes(leftover)
    total = sum(rehearsal.times.values())
    summary = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in rehearsal.times.items())
    rehearsal.log.write(f"\nrehearsal: {total:.0f} s ({summary})\n")
    print(f"Binder rehearsal: {total:.0f} s ({summary}); log in {LOG}")
    if passed:
        shutil.rmtree(rehearsal.base, ignore_errors=True)
    else:
        print(f"the rehearsal's home and environment are kept in {rehearsal.base}")


def test_binder_builds_an_environment_that_runs_every_notebook(rehearsal):
    for script in ("postBuild", "start"):
        assert os.access(BINDER / script, os.X_OK), f"binder/{script} must be executable (chmod +x; git keeps the bit)"
    rehearsal.make_user()
    home, venv = rehearsal.home, rehearsal.venv
    notebooks = sorted(str(path.relative_to(home)) for path in home.glob("notebooks/[0-9]*.ipynb"))
    assert notebooks, "no notebooks/[0-9]*.ipynb to run"

    # repo2docker: an environment, then `pip install -r binder/requirements.txt` from the repository's root
    rehearsal.as_user("venv", runtime_python(), "-m", "venv", str(venv), timeout=300)
    rehearsal.as_user("requirements", str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                      "-r", "binder/requirements.txt", timeout=1200)
    rehearsal.as_user("postBuild", "./binder/postBuild", timeout=600)

    targets = tomllib.loads((home / ".config" / "rx_magic" / "targets.toml").read_text())["targets"]
    assert "local" in targets
    assert targets["loopback"] == {
        "host": "127.0.0.1", "port": rehearsal.port, "user": USER, "host_key_policy": "strict",
        "identity_file": str(home / ".ssh" / "rx_loopback_ed25519"), "python": str(venv / "bin" / "python3")}
    host_key = (home / ".config" / "rx_magic" / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()
    assert f"[127.0.0.1]:{rehearsal.port} {host_key[0]} {host_key[1]}" in \
        (home / ".ssh" / "known_hosts").read_text().splitlines()
    sshd_config = rehearsal.read_sshd_config()
    pid_file = Path(sshd_config["PidFile"])
    assert sshd_config["ListenAddress"] == "127.0.0.1" and sshd_config["Port"] == str(rehearsal.port)

    # the notebook server's command, handed to start as "$@": here, every notebook, then exit
    result = rehearsal.as_user("notebooks", "./binder/start", str(venv / "bin" / "python"), "notebooks/run.py",
                               *notebooks, timeout=1800)
    for notebook in notebooks:
        assert f"=== {notebook}" in result.stdout, f"{notebook} did not run:\n{result.stdout[-3000:]}"

    assert pid_file.exists(), f"start left no {pid_file}: sshd did not start"
    pid = int(pid_file.read_text().split()[0])
    try:
        assert os.readlink(f"/proc/{pid}/exe") == SSHD
        assert process_uids(pid) == {rehearsal.account.pw_uid}, f"sshd ({pid}) does not run as {USER} alone"
        assert listening_addresses(pid) == [("127.0.0.1", rehearsal.port)]

        # the loopback target works, whether or not a notebook used it
        job = ("import rx_magic\n"
               "job = rx_magic.submit('import os, sys\\nwho = (os.getuid(), sys.executable)', 'loopback', {})\n"
               "job.wait(timeout=120)\n"
               "ns = {}\n"
               "job.pull(ns)\n"
               "print('loopback job: uid %d, python %s' % ns['who'])\n")
        check = rehearsal.as_user("loopback job", str(venv / "bin" / "python"), "-c", job, timeout=300)
        assert f"loopback job: uid {rehearsal.account.pw_uid}, python {venv / 'bin' / 'python3'}" in check.stdout
        sshd_log = (pid_file.parent / "sshd.log").read_text()
        assert f"Accepted publickey for {USER} from 127.0.0.1" in sshd_log
    finally:
        if not is_gone(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_gone(pid), f"sshd ({pid}) did not end on SIGTERM"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rehearsal.port), timeout=2).close()

"""Shared fixtures: every test gets its own config, data and cache folders, and a clean shell.

Jobs a test leaves running are cancelled when it ends, by the scheduler's own
cancel, which stops only that job's process (by its pid).
"""

import signal
import sys

import pytest
from helpers import targets_toml

import rx_magic
import rx_magic.flow.registry
import rx_magic.flow.watch
import rx_magic.model.local_dirs
import rx_magic.targets


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """XDG folders and the working directory in a fresh folder; open targets closed afterwards.

    The folder is not ``tmp_path``, which stays empty for the test's own files.
    """
    home = tmp_path_factory.mktemp("rx-home")
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        folder = home / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.delenv("RX_MAGIC_CONFIG", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    work = home / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield home
    try:
        if rx_magic.model.local_dirs.data_home() == home / "xdg_data_home" / "rx_magic":  # never anyone else's jobs
            _cancel_live_jobs()
    finally:
        # The documented shutdown order: monitors (their threads joined), then targets, then the registry.
        rx_magic.flow.watch.stop_monitors()
        rx_magic.targets.close_all()
        rx_magic.flow.registry.close_registry()


def _cancel_live_jobs():
    if not (rx_magic.model.local_dirs.data_home() / "registry.sqlite").exists():
        return
    for job in rx_magic.jobs(None):
        try:
            if not job.refresh().is_final:
                job.cancel()
                job.wait(timeout=15)
        except rx_magic.RxError:
            pass  # a target a test broke on purpose; nothing of ours runs there


@pytest.fixture(scope="session", autouse=True)
def _shell():
    # One IPython shell per process: started before any test asks for
    # InteractiveShell.instance(), so that every test module shares this one.
    from IPython.testing import globalipapp
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "rx_magic")
    return shell, dict(shell.user_ns)


@pytest.fixture
def ip(_shell):
    """The test IPython shell with rx_magic loaded; its namespace is put back as it was after each test."""
    shell, baseline = _shell
    yield shell
    shell.user_ns.clear()
    shell.user_ns.update(baseline)
    # a --bg job a test left behind belongs to that test's folders: its results must not land in the next test
    from rx_magic.ui.background import background_jobs
    left = background_jobs(shell)
    for job_id in left.job_ids:
        left.forget(job_id)


@pytest.fixture
def sigint_interrupts():
    """SIGINT raises KeyboardInterrupt here, as in a kernel running a cell (ipykernel installs that handler),
    even when pytest was started with SIGINT ignored (a background job of a non-interactive shell, as in CI)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def configure_targets(isolated):
    """Write ``$XDG_CONFIG_HOME/rx_magic/targets.toml``: ``configure_targets(name={"workdir": ...}, ...)``."""
    path = isolated / "xdg_config_home" / "rx_magic" / "targets.toml"

    def write(**targets):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(targets_toml(targets))
        return path

    return write


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A private single-node Slurm on loopback (tests/slurm.py) without accounting, started once.

    ``SLURM_CONF`` points at it for the whole session; without Slurm installed the
    tests skip, or fail when ``CI`` is set.
    """
    import os
    from slurm import start_for_tests
    cluster = start_for_tests(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_with_accounting(tmp_path_factory):
    """A second private Slurm whose jobs slurmdbd and MariaDB record, so ``sacct`` answers.

    Tests that use it point ``SLURM_CONF`` at it themselves (``monkeypatch.setenv``).
    """
    from slurm import start_for_tests
    cluster = start_for_tests(tmp_path_factory.mktemp("slurm-accounting"), accounting=True)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["squeue", "sacct"])
def any_hpc(request, slurm, configure_targets, tmp_path, monkeypatch):
    """A target ``hpc`` (Slurm over the local transport, jobs in ``tmp_path/jobs``) on the cluster without
    accounting (states from squeue), then on the one with (sacct); the cluster is returned."""
    cluster = slurm
    if request.param == "sacct":
        cluster = request.getfixturevalue("slurm_with_accounting")
        monkeypatch.setenv("SLURM_CONF", str(cluster.config))
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    return cluster


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH sshd on loopback (tests/sshd.py), one per test module: some tests stop and restart it.

    Without OpenSSH the tests skip, or fail when ``CI`` is set.
    """
    from sshd import start_for_tests
    server = start_for_tests(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def otp_sshd(tmp_path_factory):
    """A loopback sshd that asks for the user's key and then a one-time code (tests/otp_sshd.py)."""
    from otp_sshd import start_otp_server
    server = start_otp_server(tmp_path_factory.mktemp("otp-sshd"))
    yield server
    server.remove()


@pytest.fixture
def ssh_home(sshd, tmp_path_factory, monkeypatch):
    """A fresh ``HOME`` with ``.ssh/config`` (``rxtest``, ``rxjump``) and ``known_hosts`` for the sshd; no ssh-agent."""
    home = tmp_path_factory.mktemp("home")
    sshd.ssh_config(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def remote_workdir(tmp_path):
    """The workdir of the SSH targets, on this machine: what a job leaves there is checked on disk."""
    return tmp_path / "remote jobs"


@pytest.fixture
def ssh_target(ssh_home, remote_workdir, configure_targets):
    """Write targets.toml with ``ws`` (host ``rxtest``, only the alias); ``ssh_target(name, key=value)`` sets a target.

    It returns the targets.toml written.
    """
    configured = {}

    def configure(name="ws", **keys):
        configured[name] = {"host": "rxtest", "python": sys.executable, "workdir": str(remote_workdir), **keys}
        return configure_targets(**configured)

    configure()
    return configure

"""Shared fixtures: every test gets its own config, data and cache folders, and a clean shell.

Jobs a test leaves running are cancelled when it ends, by the scheduler's own
cancel, which stops only that job's process (by its pid).
"""

import json

import pytest

import rx_magic
import rx_magic.registry
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
        if rx_magic.registry.data_home() == home / "xdg_data_home" / "rx_magic":  # never anyone else's jobs
            _cancel_live_jobs()
    finally:
        rx_magic.targets.close_all()
        registry = rx_magic.registry._registries.pop(rx_magic.registry.data_home() / "registry.sqlite", None)
        if registry is not None:
            registry.close()


def _cancel_live_jobs():
    if not (rx_magic.registry.data_home() / "registry.sqlite").exists():
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


@pytest.fixture
def configure_targets(isolated):
    """Write ``$XDG_CONFIG_HOME/rx_magic/targets.toml``: ``configure_targets(name={"workdir": ...}, ...)``."""
    path = isolated / "xdg_config_home" / "rx_magic" / "targets.toml"

    def write(**targets):
        lines = []
        for name, keys in targets.items():
            lines.append(f"[targets.{name}]")
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in keys.items())
            lines.append("")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
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

"""What rx_magic writes, here and on the target, only the user can read: files 0600, folders 0700.

Checked on the real files a job leaves, with the process umask at 022 (the common default,
which makes new files world-readable) and over the real loopback sshd, whose login shell
has the same umask.
"""

import os
import stat
from pathlib import Path

import pytest
from helpers import newest_job, run_remote

from rx_magic.model.local_dirs import cache_home, data_home, private_folder
from rx_magic.model.states import State


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def permissive_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_job_over_ssh_leaves_its_scheduler_log_private(ip, sshd, ssh_target, remote_workdir, permissive_umask):
    from rx_magic.targets import get_target
    login_umask = get_target("ws").transport.run(["sh", "-c", "umask"]).stdout.strip()
    assert int(login_umask, 8) & 0o044 == 0         # the login shell would make the log world-readable itself
    result = run_remote(ip, "ws", "print('hello')\ny = 1")
    assert result.error_in_exec is None, result.error_in_exec
    folder = remote_workdir / newest_job().id
    assert (folder / "scheduler.log").exists()
    assert mode(folder / "scheduler.log") == 0o600
    assert mode(folder) == 0o700 and mode(remote_workdir) == 0o700


def test_a_local_job_leaves_its_log_notebook_registry_and_folders_private(ip, permissive_umask, isolated, capsys):
    result = run_remote(ip, "local", "print('hello')\nraise ValueError('for the notebook')")
    assert isinstance(result.error_in_exec, ValueError)
    job = newest_job()
    assert job.state is State.FAILED
    notebook = cache_home() / "jobs" / job.id / "job.ipynb"
    assert f"saved in {notebook}" in capsys.readouterr().err
    assert mode(notebook) == 0o600
    for folder in (notebook.parent, notebook.parent.parent, cache_home()):
        assert mode(folder) == 0o700, folder
    assert mode(data_home()) == 0o700
    assert mode(data_home() / "registry.sqlite") == 0o600
    assert mode(Path(job.paths.folder) / "scheduler.log") == 0o600


def test_private_folder_makes_missing_parents_private_and_tightens_only_rx_magics_own(tmp_path, monkeypatch,
                                                                                        permissive_umask):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data").chmod(0o755)
    old = tmp_path / "data" / "rx_magic"            # made world-readable by an older version
    old.mkdir()
    old.chmod(0o755)
    assert private_folder(old / "local-jobs") == old / "local-jobs"
    assert mode(old / "local-jobs") == 0o700 and mode(old) == 0o700
    assert mode(tmp_path / "data") == 0o755         # the user's own folder: left alone
    private_folder(cache_home() / "jobs" / "rx-1")
    for folder in (cache_home() / "jobs" / "rx-1", cache_home() / "jobs", cache_home(), tmp_path / "cache"):
        assert mode(folder) == 0o700, folder        # created here: the XDG spec's 0700
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FileExistsError):
        private_folder(tmp_path / "a-file")
    assert mode(tmp_path / "a-file") == 0o644


def test_registry_in_a_world_readable_data_folder_from_before_is_made_private(permissive_umask, isolated):
    from rx_magic.flow.registry import Registry
    data_home().mkdir(parents=True)
    data_home().chmod(0o755)
    registry = Registry()
    try:
        assert mode(data_home()) == 0o700
        assert mode(registry.path) == 0o600
    finally:
        registry.close()

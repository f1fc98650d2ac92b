"""The ``%%remote`` line is split once, as a shell splits it; bad settings stop before any connection.

- quotes group words and go: ``--name 'fit'`` is the name ``fit``, an ``--extra`` directive
  reaches the job script as written (``#SBATCH --qos=high``, not ``#SBATCH '--qos=high'``);
- ``--map NAME=EXPR`` keeps its Python as written, spaces and quotes included;
- a target's ``identity_file`` that does not exist is refused naming the path, before any
  connection is made (the real sshd's log shows none);
- ``--files DIR`` sends only what is inside DIR: a symbolic link out of it is refused.

Job scripts are read from ``--dry-run`` on a Slurm target (rendering needs no cluster);
files and keys go through the real loopback sshd.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_remote, usage_error

import rx_magic
from rx_magic.ui.magics import split_line


@pytest.fixture
def hpc(configure_targets, tmp_path):
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})


def dry_run(ip, capsys, line: str) -> str:
    capsys.readouterr()
    result = run_remote(ip, f"{line} --dry-run", "y = 1")
    assert result.error_in_exec is None, result.error_in_exec
    assert rx_magic.jobs() == []
    return capsys.readouterr().out


def directives(shown: str) -> list[str]:
    return [line for line in shown.splitlines() if line.startswith("#SBATCH")]


# ----------------------------------------------------------------------------- splitting

@pytest.mark.parametrize("written", ["'fit'", '"fit"', "fit"])
def test_quoted_name_is_the_name_without_its_quotes(ip, capsys, hpc, written):
    assert "#SBATCH --job-name=fit" in directives(dry_run(ip, capsys, f"hpc --name {written}"))


def test_extra_directives_reach_the_script_as_written_quoted_once(ip, capsys, hpc):
    shown = directives(dry_run(ip, capsys, """hpc --extra '--qos=high' --extra "--constraint=a100&v100" """
                                           """--extra -Nfit --extra=--begin=now --extra '--comment=two words'"""))
    assert shown[-5:] == ["#SBATCH --qos=high", "#SBATCH --constraint=a100&v100", "#SBATCH -Nfit",
                          "#SBATCH --begin=now", "#SBATCH --comment=two words"]


def test_map_expression_keeps_its_python_spaces_and_quotes(ip, capsys, hpc):
    assert "array: 3 elements, x = 'a b', 'c', \"it's\"" in dry_run(
        ip, capsys, """hpc --map x=["a b", 'c', "it's"] --walltime 1m""")
    assert "array: 2 elements, x = 1, 2" in dry_run(ip, capsys, "hpc --map 'x=[1, 2]'")


def test_split_line_splits_once_as_a_shell_does():
    assert split_line("""ws --name 'fit' --push "a, b" --files 'my data' --bg""") == [
        "ws", "--name", "fit", "--push", "a, b", "--files", "my data", "--bg"]
    assert split_line("ws --map n=range(3) --mem 1GB") == ["ws", "--map", "n=range(3)", "--mem", "1GB"]
    assert split_line("ws --map n='abc'") == ["ws", "--map", "n='abc'"]      # the quotes are Python's
    assert split_line("ws --extra '-l wd' --extra -W --extra") == ["ws", "--extra=-l wd", "--extra=-W", "--extra"]


def test_unclosed_quote_is_one_usage_error(ip, hpc):
    message = usage_error(run_remote(ip, "hpc --name 'fit", "y = 1"))
    assert "No closing quotation" in message and "--name 'fit" in message
    assert rx_magic.jobs() == []


# ----------------------------------------------------------------------------- identity_file

def connections(server) -> int:
    return server.log.read_text().count("Connection from")


def test_missing_identity_file_is_refused_naming_it_before_connecting(ip, sshd, ssh_target, tmp_path):
    missing = tmp_path / "keys" / "id_gadi"
    ssh_target(identity_file=str(missing))
    before = connections(sshd)
    message = usage_error(run_remote(ip, "ws", "y = 1"))
    assert f"the target's identity_file {missing} (for host rxtest) does not exist" in message
    assert connections(sshd) == before
    assert rx_magic.jobs() == []


def test_identity_file_with_a_tilde_is_found_in_home(sshd, ssh_target, ssh_home):
    (ssh_home / "gadi_key").write_bytes(sshd.user_key.read_bytes())
    (ssh_home / "gadi_key").chmod(0o600)
    ssh_target(host="127.0.0.1", port=sshd.port, user=sshd.user, identity_file="~/gadi_key")
    from rx_magic.targets import get_target
    assert get_target("ws").transport.connect().auth == f"publickey ({ssh_home / 'gadi_key'})"


# ----------------------------------------------------------------------------- --files stays inside

@pytest.fixture
def data_folder(tmp_path):
    """``data/`` in the notebook's folder, with a file and a link to it; ``secret`` outside the notebook's folder."""
    Path("data").mkdir()
    Path("data", "table.csv").write_text("1,2\n")
    os.symlink("table.csv", "data/same-table.csv")          # a link that stays inside: sent
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    return secret


@pytest.mark.parametrize("link", ["outside the notebook's folder", "beside the folder given", "a folder outside"])
def test_files_folder_with_a_link_leading_out_of_it_is_refused(ip, sshd, ssh_target, remote_workdir, data_folder,
                                                                 link):
    if link == "outside the notebook's folder":
        os.symlink(data_folder, "data/secret.txt")
    elif link == "beside the folder given":
        Path("notes.txt").write_text("not in data/\n")
        os.symlink("../notes.txt", "data/notes.txt")
    else:
        os.symlink(data_folder.parent, "data/elsewhere")
    message = usage_error(run_remote(ip, "ws --files data", "y = 1"))
    assert message.startswith("--files 'data': data/")
    assert "is a symbolic link to" in message and "outside" in message
    assert not remote_workdir.exists() or not list(remote_workdir.rglob("rx-*"))
    assert rx_magic.jobs() == []


def test_files_folder_with_links_inside_it_sends_their_content(ip, sshd, ssh_target, data_folder, capsys):
    shown = dry_run(ip, capsys, "ws --files data")
    assert "  data/table.csv" in shown and "  data/same-table.csv" in shown


# ----------------------------------------------------------------------------- paths as the target reads them

def test_a_dry_run_not_connected_shows_a_script_whose_home_paths_bash_expands(ip, capsys, configure_targets,
                                                                              tmp_path):
    """The workdir ``~/rx_jobs`` is not expanded before connecting; the script must still work there:
    ``"$HOME"/rx_jobs/...``, never a quoted ``'~/rx_jobs/...'``, which names a folder called ``~``."""
    configure_targets(far={"host": "far.example.org", "scheduler": "direct", "python": sys.executable})
    shown = dry_run(ip, capsys, "far")
    script = shown.split("job script (job.sh):\n", 1)[1]
    assert "~" not in script
    job_id = re.search(r"# rx_magic job (rx-\S+) ", script)[1]
    runtime = re.search(r'"\$HOME"/rx_jobs/\.rx/(runtime-[0-9a-f]+)/runner\.py', script)[1]
    assert f'cd "$HOME"/rx_jobs/{job_id}/work || exit 96' in script
    assert "the home folder there" in shown                         # the note says why
    # run it as the target's bash would, with a HOME holding the folders; runner.py here only says how it was called
    home = tmp_path / "home"
    folder = home / "rx_jobs" / job_id
    (folder / "work").mkdir(parents=True)
    (home / "rx_jobs" / ".rx" / runtime).mkdir(parents=True)
    (home / "rx_jobs" / ".rx" / runtime / "runner.py").write_text(
        "import json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd()}, open(os.path.join(sys.argv[1], 'ran.json'), 'w'))\n")
    (tmp_path / "job.sh").write_text(script)
    ran = subprocess.run(["bash", str(tmp_path / "job.sh")], env={"HOME": str(home), "PATH": os.environ["PATH"]},
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    called = json.loads((folder / "ran.json").read_text())
    assert called == {"argv": [str(folder)], "cwd": str(folder / "work")}


def test_a_dry_run_on_slurm_not_connected_leaves_home_paths_off_the_sbatch_lines(ip, capsys, configure_targets):
    configure_targets(farhpc={"host": "far.example.org", "scheduler": "slurm", "python": sys.executable})
    shown = dry_run(ip, capsys, "farhpc")
    assert not [line for line in directives(shown) if "~" in line]  # Slurm would read ~ as a folder's name
    assert "'~" not in shown.split("job script (job.sh):\n", 1)[1]


def test_a_dry_run_on_this_machine_shows_full_paths(ip, capsys, configure_targets):
    configure_targets(mine={"workdir": "~/rx-dry-jobs", "python": sys.executable})
    script = dry_run(ip, capsys, "mine").split("job script (job.sh):\n", 1)[1]
    assert "~" not in script and "$HOME" not in script
    assert os.path.expanduser("~/rx-dry-jobs/") in script

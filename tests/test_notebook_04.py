"""Notebook 04 (HPC schedulers) runs in a real kernel twice: as on Binder, and with a real Slurm.

Its dry runs use the example ``gadi`` and ``setonix`` targets of
notebooks/rx_targets.toml and must not connect anywhere. Without a target
named ``slurm`` (Binder) its live part says why it is skipped; with one, here
the test Slurm on loopback (tests/slurm.py, found through ``SLURM_CONF``,
which the notebook's kernel inherits), the cell runs as a Slurm job and its
values come back.
"""

import json
import re
import sys

import pytest
from helpers import NOTEBOOKS, cell_starting, run_isolated, text_of

NOTEBOOK = NOTEBOOKS / "04-hpc-schedulers.ipynb"
SKIPPED = "this part needs Slurm and is skipped"


@pytest.fixture(scope="module")
def without_slurm(tmp_path_factory):
    """Notebook 04 as on Binder: no target named ``slurm``."""
    return run_isolated(NOTEBOOK, tmp_path_factory.mktemp("notebook04"))


@pytest.fixture(scope="module")
def with_slurm(slurm, tmp_path_factory):
    """Notebook 04 with a ``slurm`` target on the test Slurm (the local transport, SLURM_CONF from the session)."""
    root = tmp_path_factory.mktemp("notebook04-slurm")
    workdir = root / "slurm-jobs"
    notebook = run_isolated(NOTEBOOK, root,
                            targets={"slurm": {"scheduler": "slurm", "python": sys.executable, "workdir": str(workdir)}})
    return notebook, workdir


def test_the_example_cluster_targets_are_shown(without_slurm):
    shown = text_of(cell_starting(without_slurm, "from pathlib import Path", unique=True))
    assert "[targets.gadi]" in shown and 'profile = "gadi"' in shown and "[targets.setonix]" in shown
    assert 'profile = "setonix"' in shown


def test_dry_run_shows_the_pbs_pro_script_a_gadi_user_would_submit(without_slurm):
    dry = text_of(cell_starting(without_slurm, "%%remote gadi --dry-run --mem 8GB", unique=True))
    assert "target 'gadi': pbs scheduler on gadi.nci.org.au (ssh)" in dry
    for line in ("#PBS -P ab12", "#PBS -q normal", "#PBS -l ncpus=4", "#PBS -l mem=8GB", "#PBS -l walltime=02:00:00",
                 "#PBS -l wd", "#PBS -l storage=scratch/ab12", "module load python3/3.11.7"):
        assert re.search(rf"^{re.escape(line)}$", dry, re.MULTILINE), line
    assert re.search(r"^#PBS -o /scratch/ab12/abc123/rx/rx-\S+/scheduler\.log$", dry, re.MULTILINE)
    assert "# Gadi cost at most 16 SU: 2 SU/h x 4 cores x 2:00:00 in normal" in dry
    assert re.search(r"^\s+data\s+numpy\.ndarray", dry, re.MULTILINE)
    assert "not connected to 'gadi'" in dry                     # the dry run opened no connection


def test_a_request_breaking_gadis_queue_rules_is_explained_before_anything_is_sent(without_slurm):
    cell = cell_starting(without_slurm, "%%remote gadi --dry-run --mem 250GB", unique=True)
    assert cell.metadata.tags == ["raises-exception"]
    # IPython shows a UsageError as one message on stderr, without a traceback
    shown = text_of(cell)
    assert shown.startswith("UsageError: the request breaks Gadi's queue rules")
    assert "queue normal has 190GB memory per node" in shown and "not 250GB" in shown
    assert "hugemem" in shown                                   # the way out is named
    assert "job script" not in shown


def test_dry_run_shows_the_slurm_script_for_setonix(without_slurm):
    dry = text_of(cell_starting(without_slurm, "%%remote setonix --dry-run --mem 8GB", unique=True))
    assert "target 'setonix': slurm scheduler on setonix.pawsey.org.au (ssh)" in dry
    for line in ("#SBATCH --partition=work", "#SBATCH --account=pawsey0001", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=8G", "#SBATCH --time=02:00:00", "module load python/3.11.6"):
        assert re.search(rf"^{re.escape(line)}$", dry, re.MULTILINE), line
    assert "# Setonix cost at most 8 SU: 1 SU/h x 4 cores x 2:00:00 in work" in dry
    assert "not connected to 'setonix'" in dry


def test_dry_run_of_a_setonix_gpu_job_asks_for_packs_on_the_gpu_account(without_slurm):
    dry = text_of(cell_starting(without_slurm, "%%remote setonix --dry-run --queue gpu --ngpus", unique=True))
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=pawsey0001-gpu", "#SBATCH --nodes=1",
                 "#SBATCH --gres=gpu:2", "#SBATCH --time=02:00:00",
                 "# Setonix cost at most 256 SU: 64 SU/h x 2 GPU packs x 2:00:00 in gpu"):
        assert re.search(rf"^{re.escape(line)}$", dry, re.MULTILINE), line
    assert "--mem" not in dry and "--cpus-per-task" not in dry


def test_cores_alone_on_a_setonix_gpu_partition_are_refused_with_the_way_out(without_slurm):
    cell = cell_starting(without_slurm, "%%remote setonix --dry-run --queue gpu --ncpus", unique=True)
    assert cell.metadata.tags == ["raises-exception"]
    shown = text_of(cell)
    assert shown.startswith("UsageError: the request breaks Setonix's partition rules")
    assert "--ncpus 16 on Setonix partition gpu" in shown and "(here --ngpus 2)" in shown
    assert "job script" not in shown


def test_without_a_slurm_target_the_live_part_says_it_is_skipped(without_slurm):
    assert SKIPPED in text_of(cell_starting(without_slurm, "from rx_magic.targets import load_configs", unique=True))
    assert text_of(cell_starting(without_slurm, "job_cell = ", unique=True)) == ""
    assert text_of(cell_starting(without_slurm, "if have_slurm:", unique=True)) == ""


def test_with_a_slurm_target_the_cell_runs_as_a_slurm_job_and_its_values_come_back(with_slurm):
    notebook, workdir = with_slurm
    assert SKIPPED not in text_of(cell_starting(notebook, "from rx_magic.targets import load_configs", unique=True))
    live = text_of(cell_starting(notebook, "job_cell = ", unique=True))
    found = re.search(r"Slurm job (\d+) on \S+ fitted \{'mean': 1\.5, 'n': 100000\}", live)
    assert found, live
    back = text_of(cell_starting(notebook, "if have_slurm:", unique=True))
    assert f"back in the notebook: {{'mean': 1.5, 'n': 100000}} from Slurm job {found[1]}" in back
    [folder] = workdir.glob("rx-*")
    assert json.loads((folder / "status.json").read_text())["state"] == "done"
    script = (folder / "job.sh").read_text()
    assert "#SBATCH --mem=500M" in script and "#SBATCH --time=00:05:00" in script

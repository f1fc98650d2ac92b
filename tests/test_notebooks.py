"""The teaching notebooks run end to end in a real kernel, and show what they promise."""

import re

import pytest
from helpers import NOTEBOOKS, cell_starting, errors_of, run_isolated, text_of


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    return run_isolated(NOTEBOOKS / "01-quickstart.ipynb", tmp_path_factory.mktemp("quickstart"))


def test_quickstart_pulls_values_computed_by_another_process(quickstart):
    remote = cell_starting(quickstart, "%%remote local\nwhere")
    assert "fitted on process" in text_of(remote)
    assert "{'mean': 1.5, 'n': 1000}" in text_of(remote)      # the cell's trailing expression
    back = text_of(cell_starting(quickstart, 'print("back in the notebook'))
    found = re.search(r"computed by process (\d+) not (\d+)", back)
    assert found and found[1] != found[2]
    assert "{'mean': 1.5, 'n': 1000}" in back


def test_quickstart_figure_made_by_the_job_is_shown(quickstart):
    figure_cell = cell_starting(quickstart, "%%remote local\nimport matplotlib")
    images = [o for o in figure_cell.outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1
    assert images[0].data["image/png"].startswith("iVBORw0KGgo")    # base64 of the PNG signature


def test_quickstart_dry_run_shows_the_script_and_sends_nothing(quickstart):
    dry = text_of(cell_starting(quickstart, "%%remote local --walltime 5m"))
    assert "job script (job.sh)" in dry and "runner.py" in dry
    assert re.search(r"data\s+numpy\.ndarray", dry)
    jobs = text_of(cell_starting(quickstart, "%rx jobs"))
    assert jobs.count("rx-") == 3                                   # the dry run is not among the jobs


def test_quickstart_failing_cell_raises_the_remote_error(quickstart):
    failing = cell_starting(quickstart, "%%remote local\nratio")
    errors = errors_of(failing)
    assert errors and errors[0].ename == "ZeroDivisionError"
    assert any(re.search(r"Cell In\[\d+\]", re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in errors[0].traceback)  # IPython's look

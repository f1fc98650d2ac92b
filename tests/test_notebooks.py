"""The teaching notebooks run end to end in a real kernel, and show what they promise."""

import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))

from run import run  # noqa: E402


def text_of(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def cell_starting(notebook, start: str, nth: int = 0):
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.startswith(start)]
    return cells[nth]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("quickstart")
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(root / name.lower()))
    try:
        yield run(NOTEBOOKS / "01-quickstart.ipynb")
    finally:
        monkeypatch.undo()


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
    errors = [o for o in failing.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ZeroDivisionError"
    assert any("<remote cell>" in line for line in errors[0].traceback)

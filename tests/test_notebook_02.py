"""Notebook 02, what travels: it runs end to end in a real kernel and shows what its prose says."""

import json
import re
from pathlib import Path

import pytest
from helpers import (
    NOTEBOOKS,
    assert_stored_without_outputs,
    cell_starting,
    errors_of,
    jobs_recorded,
    run_isolated,
    text_of,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("what-travels")


@pytest.fixture(scope="module")
def travels(home):
    return run_isolated(NOTEBOOKS / "02-what-travels.ipynb", home)


@pytest.fixture(scope="module")
def records(travels, home):
    return jobs_recorded(home)


def test_the_notebook_is_stored_without_outputs():
    assert_stored_without_outputs(NOTEBOOKS / "02-what-travels.ipynb")


def test_dry_run_lists_what_is_pushed_imported_and_pulled(travels):
    dry = text_of(cell_starting(travels, "%%remote local --dry-run"))
    pushed = dry.split("push:")[1].split("imports:")[0]
    assert re.search(r"temperatures\s+numpy\.ndarray", pushed)
    assert re.search(r"threshold\s+float", pushed)
    assert re.search(r"above\s+function", pushed)          # a function written in the notebook
    assert re.search(r"Summary\s+type", pushed)            # and a class
    assert "notes" not in pushed                           # never read by the cell, never sent
    assert "imports: import numpy as np" in dry            # the module as an import line, not a pickle
    assert "pull: hot, summary, spread" in dry


def test_dry_run_submits_nothing(records):
    # the dry run and the real run share their first line; only the real one is a job
    assert sum(record.first_line.startswith("hot = above") for record in records) == 1


def test_values_made_with_the_notebooks_function_and_class_come_back(travels):
    back = text_of(cell_starting(travels, 'print("hot readings:"'))
    assert "hot readings: [23.  25.1 22.4 24.6]" in back
    assert "summary: Summary(n=4, mean=23.77) - spread 1.11" in back


def test_push_sends_a_name_the_cell_only_uses_inside_a_string(travels):
    assert text_of(cell_starting(travels, "print(selected)")).strip() == "[23.  25.1 22.4 24.6]"


def test_pull_brings_back_only_the_names_listed(travels):
    assert "warmest: 25 | ranked came back: False" in text_of(cell_starting(travels, 'print("warmest:"'))


def test_a_change_made_in_place_comes_back_to_the_same_object(travels):
    shown = text_of(cell_starting(travels, 'print(readings, settings, "| one list:"')).strip()
    assert shown == "[6] {'units': 'K'} | one list: True [6]"


def test_shared_objects_stay_shared_and_functions_read_live_variables(travels):
    # roof.log got scaled(1.5) with the cell's scale = 100, and the dict still holds the notebook's own roof
    assert text_of(cell_starting(travels, 'print(roof.log, by_name["roof"] is roof')).strip() == "[150.0] True [150.0]"


def test_random_numbers_carry_on_as_if_every_cell_ran_here(travels):
    assert "same sequence: True" in text_of(cell_starting(travels, "third = np.random.randint"))


def test_a_secret_is_held_back_with_a_note_saying_how_to_send_it(travels):
    cell = cell_starting(travels, '%%remote local\nrequest_header')
    assert "raises-exception" in cell.metadata.tags
    note = text_of(cell, "stderr")
    assert "held back 'API_TOKEN' (its name looks like a credential)" in note
    assert "add --push API_TOKEN" in note
    [error] = errors_of(cell)
    assert error.ename == "NameError" and error.evalue == "name 'API_TOKEN' is not defined"


def test_a_held_back_secret_is_never_written_to_the_job_folder(records):
    [record] = [record for record in records if record.first_line.startswith("request_header")]
    folder = Path(record.workdir) / record.id
    assert json.loads((folder / "job.json").read_text())["push"] == {}
    for path in folder.rglob("*"):
        if path.is_file():
            assert b"course-demo-0000" not in path.read_bytes(), path


def test_a_secret_named_in_push_is_sent(travels):
    assert "the job saw a token of 16 characters" in text_of(cell_starting(travels, 'print("the job saw a token'))


def test_an_unpicklable_value_is_named_with_its_type_before_anything_is_submitted(travels, records):
    cell = cell_starting(travels, '%%remote local\nrows = db.execute')
    assert "raises-exception" in cell.metadata.tags
    message = text_of(cell, "stderr")
    assert "UsageError: cannot send 'db' (sqlite3.Connection) read on line 2 of the cell" in message
    assert "cannot pickle 'sqlite3.Connection' object" in message and "recreate it inside the cell" in message
    assert not [output for output in cell.outputs if output.output_type == "display_data"]    # no job widget
    assert not any(record.first_line.startswith("rows = db.execute") for record in records)


def test_a_connection_the_job_closes_stays_there_and_the_rest_comes_back(travels):
    made = cell_starting(travels, "%%remote local\nimport sqlite3")
    note = text_of(made, "stderr")
    assert "line 4 of the cell binds 'db' to a database connection (sqlite3.Connection" in note
    assert "closed by the end of the cell: 'db' is not brought back" in note
    assert "6 readings, mean 22.73" in text_of(cell_starting(travels, 'print(count, "readings, mean"'))
    assert "('still open here',)" in text_of(cell_starting(travels, 'db.execute("select \'still open here\'")'))


def test_every_job_ended(records):
    assert records and all(record.state.is_final for record in records)

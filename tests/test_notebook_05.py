"""Notebook 05 runs end to end, with a real kernel restart in the middle, and shows what it promises."""

import re

import pytest
from helpers import NOTEBOOKS, cell_starting, errors_of, run_isolated, text_of


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    return run_isolated(NOTEBOOKS / "05-background-and-arrays.ipynb", tmp_path_factory.mktemp("notebook05"))


def test_a_background_jobs_values_arrive_before_the_next_cell_and_not_sooner(notebook):
    assert "squares is not defined yet" in text_of(cell_starting(notebook, 'print("still here'))
    assert "squares arrived: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text_of(cell_starting(notebook, 'print("squares'))


def test_a_job_started_before_a_kernel_restart_is_attached_and_pulled_after_it(notebook):
    before = re.search(r"this kernel is process (\d+)", text_of(cell_starting(notebook, "%load_ext rx_magic")))
    after = re.search(r"this kernel is process (\d+)", text_of(cell_starting(notebook, "%load_ext rx_magic", 1)))
    assert before and after and before[1] != after[1]           # the kernel really was restarted
    assert "answer = 42" in text_of(cell_starting(notebook, "%rx attach"))


def test_an_array_brings_each_name_back_as_a_list_in_order(notebook):
    shown = text_of(cell_starting(notebook, "print(len(estimate)"))
    estimates = [float(x) for x in re.search(r"one per seed: \[(.*)\]", shown)[1].split(", ")]
    assert len(estimates) == 8 and len(set(estimates)) > 1       # eight seeds, eight different estimates
    assert all(3.0 < estimate < 3.3 for estimate in estimates)


def test_a_failing_element_is_named_and_the_others_are_pulled(notebook):
    failing = cell_starting(notebook, "%%remote local --map n=")
    errors = errors_of(failing)
    assert errors and errors[0].ename == "ArrayFailed"
    assert "n=0 (element 2): the cell raised ZeroDivisionError" in errors[0].evalue
    assert "share = [3.0, 6.0, None, 12.0]" in text_of(cell_starting(notebook, 'print("share'))


def test_nothing_is_left_running(notebook):
    assert "still running: []" in text_of(cell_starting(notebook, "import rx_magic"))

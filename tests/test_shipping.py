"""The notebook's own modules and --files are found, checked and shipped file by file."""

import sys

import pytest

from rx_magic.flow.capture import capture_cell
from rx_magic.errors import InputError
from rx_magic.flow.shipping import plan_shipment, upload_shipment
from rx_magic.transport import LocalTransport


@pytest.fixture
def notebook_folder(tmp_path, monkeypatch):
    folder = tmp_path / "notebook"
    (folder / "pkg").mkdir(parents=True)
    (folder / "mylib.py").write_text("from pkg.helper import scale\n\ndef fit(x):\n    return scale(x) + 1\n")
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "helper.py").write_text("def scale(x):\n    return x * 10\n")
    (folder / "data").mkdir()
    (folder / "data" / "x.csv").write_text("1,2,3\n")
    (folder / "data" / "__pycache__").mkdir()
    (folder / "data" / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in ("mylib", "pkg", "pkg.helper"):
        sys.modules.pop(name, None)


def test_module_imported_from_the_notebook_folder_travels_with_the_modules_it_imports(notebook_folder):
    import mylib
    capture = capture_cell("y = mylib.fit(2)", {"mylib": mylib})
    shipment = plan_shipment(capture, {"mylib": mylib}, [], notebook_folder)
    assert shipment.modules == ["mylib", "pkg"]
    assert set(shipment.files) == {"lib/mylib.py", "lib/pkg/__init__.py", "lib/pkg/helper.py"}


def test_function_from_a_notebook_module_brings_its_module(notebook_folder):
    from mylib import fit
    capture = capture_cell("y = fit(2)", {"fit": fit})
    assert "mylib" in plan_shipment(capture, {"fit": fit}, [], notebook_folder).modules


def test_module_the_cell_imports_itself_travels_without_being_imported_here(notebook_folder):
    capture = capture_cell("import mylib\ny = mylib.fit(1)", {})
    assert plan_shipment(capture, {}, [], notebook_folder).modules == ["mylib", "pkg"]
    assert "mylib" not in sys.modules


def test_installed_and_standard_library_modules_never_travel(notebook_folder):
    import json

    import numpy
    namespace = {"np": numpy, "json": json}
    capture = capture_cell("y = np.zeros(3)\nz = json.dumps(1)", namespace)
    assert not plan_shipment(capture, namespace, [], notebook_folder)


def test_files_keep_their_path_relative_to_the_notebook_and_skip_caches(notebook_folder):
    shipment = plan_shipment(capture_cell("x = 1", {}), {}, ["data"], notebook_folder)
    assert list(shipment.files) == ["data/x.csv"]
    assert len(shipment.digests["data/x.csv"]) == 64


@pytest.mark.parametrize("given, message", [
    ("missing.csv", "no such file or folder"),
    ("..", "not inside the notebook's folder"),
    (".", "not inside the notebook's folder"),
])
def test_files_outside_the_notebook_folder_or_missing_are_refused(notebook_folder, given, message):
    with pytest.raises(InputError, match=message):
        plan_shipment(capture_cell("x = 1", {}), {}, [given], notebook_folder)


def test_unchanged_files_are_not_sent_again_and_a_changed_one_is(notebook_folder, tmp_path):
    store = str(tmp_path / "store")
    transport = LocalTransport()
    first = plan_shipment(capture_cell("x = 1", {}), {}, ["data"], notebook_folder)
    assert upload_shipment(first, transport, store) == (1, 6)
    assert upload_shipment(first, transport, store) == (0, 0)
    (notebook_folder / "data" / "x.csv").write_text("4,5,6,7\n")
    changed = plan_shipment(capture_cell("x = 1", {}), {}, ["data"], notebook_folder)
    assert changed.digests != first.digests
    assert upload_shipment(changed, transport, store) == (1, 8)

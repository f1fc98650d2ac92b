"""Blobs: how pushed values are serialized, named by content, written once, and reported."""

import contextlib
import hashlib
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from rx_magic import wire
from rx_magic.blobs import BlobRef, blob_file_name, plan_blobs, size_report, write_blobs
from rx_magic.errors import CaptureError, PayloadTooLarge, UnpicklableError

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20

NOTEBOOK = """
import numpy as np

SCALE = 3

def helper(x):
    return x * SCALE

def scaled_plus_one(x):
    return helper(x) + 1

offset = lambda x: x + 10

def make_adder(k):
    def add(x):
        return x + k
    return add

add5 = make_adder(5)

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm2(self):
        return self.x ** 2 + self.y ** 2

p = Point(3, 4)
"""


class DirectoryBlobStore:
    """A BlobStore over a local folder: temporary name in the same folder, then os.replace."""

    def __init__(self, root: Path):
        self.root = root

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    @contextlib.contextmanager
    def open_atomic(self, name: str):
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=".incoming-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as file:
                yield file
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.root / name)
        except BaseException:
            os.unlink(temporary)
            raise


def dump_from_notebook(tmp_path: Path, expression: str, source: str = NOTEBOOK) -> Path:
    """Run ``source`` as a script, so its definitions live in ``__main__``, and wire.dump ``expression``."""
    script = tmp_path / "notebook.py"
    blob = tmp_path / "value.dill"
    script.write_text(textwrap.dedent(source) + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from rx_magic import wire
        with open({str(blob)!r}, "wb") as file:
            wire.dump({expression}, file)
    """))
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, capture_output=True, text=True)
    script.unlink()
    return blob


def load_in_fresh_process(tmp_path: Path, blob: Path, expression: str) -> str:
    """What the target does: plain pickle.load with dill importable, and nothing from rx_magic."""
    target = tmp_path / "target"
    target.mkdir(exist_ok=True)
    code = textwrap.dedent(f"""
        import pickle, sys
        import dill
        with open({str(blob)!r}, "rb") as file:
            value = pickle.load(file)
        assert not [m for m in sys.modules if m == "wire" or m.startswith("rx_magic")], "loading imported rx_magic"
        print({expression})
    """)
    env = {key: val for key, val in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=target, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def notebook_namespace(source: str = NOTEBOOK) -> dict:
    """Definitions made as a notebook makes them: their ``__module__`` is ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<notebook cell>", "exec"), namespace)
    return namespace


# --- round trips, loaded the way the target loads them ---------------------


def test_nested_builtins_round_trip_in_a_fresh_process(tmp_path):
    value = {"a": [1, 2.5, None, True], "b": (b"x", "ü", frozenset({3})), "c": {"d": {4, 5}}, 6: [[], {}]}
    blob = dump_from_notebook(tmp_path, repr(value), source="")
    assert load_in_fresh_process(tmp_path, blob, "repr(value)") == repr(value)
    assert wire.loads(wire.dumps(value)) == value


def test_numpy_array_keeps_content_and_dtype_in_a_fresh_process(tmp_path):
    blob = dump_from_notebook(tmp_path, "np.arange(12, dtype=np.float32).reshape(3, 4)")
    assert load_in_fresh_process(tmp_path, blob, "value.dtype, value.shape, value.sum()") == (
        "float32 (3, 4) 66.0")


def test_notebook_function_that_calls_another_and_reads_a_global_runs_in_a_fresh_process(tmp_path):
    blob = dump_from_notebook(tmp_path, "scaled_plus_one")
    assert load_in_fresh_process(tmp_path, blob, "value(2)") == "7"


def test_lambda_runs_in_a_fresh_process(tmp_path):
    blob = dump_from_notebook(tmp_path, "offset")
    assert load_in_fresh_process(tmp_path, blob, "value(1)") == "11"


def test_closure_keeps_its_captured_value_in_a_fresh_process(tmp_path):
    blob = dump_from_notebook(tmp_path, "add5")
    assert load_in_fresh_process(tmp_path, blob, "value(1)") == "6"


def test_notebook_class_and_its_instance_load_in_a_fresh_process(tmp_path):
    blob = dump_from_notebook(tmp_path, "{'Point': Point, 'p': p}")
    out = load_in_fresh_process(
        tmp_path, blob, "value['p'].norm2(), type(value['p']) is value['Point'], value['Point'](1, 1).norm2()")
    assert out == "25 True 2"


def test_module_inside_a_value_travels_as_an_import():
    value = wire.loads(wire.dumps({"np": np, "path": os.path}))
    assert value["np"] is np and value["path"] is os.path


def test_values_needing_nothing_from_dill_do_not_import_it(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "rx_magic")!r})
        import wire, numpy as np
        wire.digest({{"a": [1, "x", 2.0], "arr": np.ones(3), "f": len, "t": int}})
        print("dill" in sys.modules, sorted(m for m in sys.modules if m.startswith("rx_magic")))
        wire.digest(lambda x: x)
        print("dill" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split("\n")[:2] == ["False []", "True"]


def test_dumping_a_large_array_into_a_file_makes_no_second_copy(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "rx_magic")!r})
        import numpy as np, wire

        def peak():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))

        array = np.ones(256 * 2**20 // 8)
        before = peak()
        with open({str(tmp_path / "big.dill")!r}, "wb") as file:
            wire.dump(array, file)
        print((peak() - before) / array.nbytes)
    """)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read peak memory")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert float(out) < 0.1


# --- digests ----------------------------------------------------------------


def test_same_value_gives_the_same_digest_each_time():
    notebook = notebook_namespace()
    values = [
        {"b": 2, "a": [1, 2, 3], "c": {"nested": (1.5, "x")}},
        np.random.default_rng(0).random((100, 100)),
        notebook["scaled_plus_one"],
        notebook["offset"],
        notebook["add5"],
        {"Point": notebook["Point"], "p": notebook["p"]},
    ]
    for value in values:
        digests = {wire.digest(value) for _ in range(3)}
        assert len(digests) == 1, value
        assert wire.digest(value)[1] == len(wire.dumps(value))


def test_notebook_class_digest_does_not_change_once_its_instances_have_been_pickled():
    point_class = notebook_namespace()["Point"]
    before = wire.digest(point_class)
    wire.dumps(point_class(1, 2))
    assert wire.digest(point_class) == before


def test_digest_is_the_hash_of_the_dumped_bytes():
    value = {"x": np.arange(10)}
    hex_digest, size = wire.digest(value)
    data = wire.dumps(value)
    assert (hex_digest, size) == (hashlib.new(wire.HASH_NAME, data).hexdigest(), len(data))


def test_changed_value_gives_a_different_digest():
    array = np.zeros(1000)
    before = wire.digest(array)
    array[500] = 1.0
    assert wire.digest(array) != before

    assert wire.digest({"a": 1}) != wire.digest({"a": 2})
    assert wire.digest(np.zeros(3, dtype=np.float32)) != wire.digest(np.zeros(3, dtype=np.float64))


def test_notebook_function_digest_changes_when_a_global_it_reads_changes():
    notebook = notebook_namespace()
    before = wire.digest(notebook["scaled_plus_one"])
    notebook["SCALE"] = 4
    assert wire.digest(notebook["scaled_plus_one"]) != before


# --- writing blobs ------------------------------------------------------------


def test_unchanged_value_is_not_written_again(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    values = {"arr": np.arange(1000.0), "cfg": {"alpha": 0.5}}
    refs = plan_blobs(values)

    written, nbytes = write_blobs(values, refs, store)
    assert (written, nbytes) == (2, sum(ref.size for ref in refs))
    assert write_blobs(values, plan_blobs(values), store) == (0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(blob_file_name(ref.digest) for ref in refs)


def test_names_sharing_one_value_write_one_blob(tmp_path):
    shared = np.arange(100)
    values = {"a": shared, "b": shared}
    refs = plan_blobs(values)
    assert refs[0].digest == refs[1].digest
    assert write_blobs(values, refs, DirectoryBlobStore(tmp_path)) == (1, refs[0].size)


def test_written_blob_is_private_named_by_its_content_and_loads_back(tmp_path):
    values = {"arr": np.linspace(0, 1, 50)}
    (ref,) = plan_blobs(values)
    write_blobs(values, [ref], DirectoryBlobStore(tmp_path))

    path = tmp_path / f"{ref.digest}.dill"
    data = path.read_bytes()
    assert hashlib.new(wire.HASH_NAME, data).hexdigest() == ref.digest
    assert len(data) == ref.size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open("rb") as file:
        np.testing.assert_array_equal(wire.load(file), values["arr"])


class FailsOnSecondPickle:
    """Pickles once (for the plan), then raises while the blob is being written."""

    def __init__(self):
        self.calls = 0

    def __reduce__(self):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("disk went away")
        return (dict, ())


def test_exception_while_writing_leaves_no_file_named_like_a_blob(tmp_path):
    values = {"data": [np.ones(10**6), FailsOnSecondPickle()]}
    refs = plan_blobs(values)
    with pytest.raises(RuntimeError, match="disk went away"):
        write_blobs(values, refs, DirectoryBlobStore(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_failing_file_write_leaves_no_file_named_like_a_blob(tmp_path):
    class FullDiskStore(DirectoryBlobStore):
        @contextlib.contextmanager
        def open_atomic(self, name):
            with super().open_atomic(name) as file:
                original = file.write

                def write(data):
                    if file.tell() > MiB:
                        raise OSError(28, "No space left on device")
                    return original(data)

                file.write = write
                yield file

    values = {"arr": np.ones(4 * MiB)}
    with pytest.raises(OSError, match="No space left"):
        write_blobs(values, plan_blobs(values), FullDiskStore(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_value_changed_after_planning_is_not_stored_under_the_old_digest(tmp_path):
    values = {"arr": np.zeros(100)}
    refs = plan_blobs(values)
    values["arr"][0] = 1.0
    with pytest.raises(CaptureError, match="'arr'"):
        write_blobs(values, refs, DirectoryBlobStore(tmp_path))
    assert list(tmp_path.iterdir()) == []


# --- what the user is told ------------------------------------------------------


def test_unpicklable_value_is_named_with_its_type_reason_and_fix():
    with pytest.raises(UnpicklableError) as caught:
        plan_blobs({"x": 1, "lock": threading.Lock()})
    assert str(caught.value) == (
        "cannot send 'lock' (_thread.lock): cannot pickle '_thread.lock' object"
        " — recreate it inside the cell, or leave it out with --push/--pull")


def test_every_unpicklable_value_is_named_at_once():
    with socket.socket() as sock:
        values = {"lock": threading.Lock(), "ok": [1, 2], "gen": (i for i in range(3)), "sock": sock}
        with pytest.raises(UnpicklableError) as caught:
            plan_blobs(values)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot send 3 values: ")
    for part in ("'lock' (_thread.lock)", "'gen' (generator)", "'sock' (socket.socket)"):
        assert part in message
    assert "'ok'" not in message
    assert message.endswith("leave them out with --push/--pull")


def test_enum_defined_in_the_notebook_is_refused_rather_than_sent_broken():
    notebook = notebook_namespace("import enum\nclass Color(enum.Enum):\n    RED = 1\n")
    with pytest.raises(UnpicklableError, match=r"cannot send 'Color' \(enum.EnumType\)"):
        plan_blobs({"Color": notebook["Color"]})


def test_payload_over_the_limit_names_the_largest_values_in_order():
    values = {"small": b"x" * 1000, "big": np.zeros(3 * MiB // 8), "medium": np.zeros(MiB // 8),
              "tiny": 1, "middling": b"y" * (MiB // 2)}
    with pytest.raises(PayloadTooLarge) as caught:
        plan_blobs(values, limit=4 * MiB)
    message = str(caught.value)
    assert message.startswith("the cell would send 4.5 MiB, over this target's limit of 4 MiB; largest: "
                              "'big' 3 MiB (numpy.ndarray), 'medium' 1 MiB (numpy.ndarray), "
                              "'middling' 512 KiB (bytes), ... — ")
    assert "--push" in message and "max_payload" in message


def test_payload_under_the_limit_or_without_one_is_planned():
    values = {"big": np.zeros(MiB // 8)}
    assert plan_blobs(values, limit=2 * MiB)[0].type_name == "numpy.ndarray"
    assert len(plan_blobs(values, limit=None)) == 1


def test_size_report_lists_largest_first_with_a_total():
    refs = [
        BlobRef("cfg", "a" * 64, 1200, "dict"),
        BlobRef("big", "b" * 64, 500 * MiB, "numpy.ndarray"),
        BlobRef("f", "c" * 64, 300, "function"),
    ]
    lines = size_report(refs).splitlines()
    assert [line.split()[0] for line in lines] == ["name", "big", "cfg", "f", "total"]
    assert lines[1].split() == ["big", "numpy.ndarray", "500", "MiB", "bbbbbbbbbbbb"]
    assert lines[-1].split()[:3] == ["total", "3", "values"]
    assert lines[-1].endswith("500 MiB")
    size_ends = {line.index(size) + len(size) for line, size in zip(lines[1:4], ["500 MiB", "1.2 KiB", "300 B"])}
    assert len(size_ends) == 1, "sizes are right-aligned"


def test_blob_file_name_is_the_digest_with_a_dill_suffix():
    digest = "0123456789abcdef" * 4
    assert blob_file_name(digest) == f"{digest}.dill"
    for bad in ("../etc/passwd", "ABC", digest[:-1], digest + "0"):
        with pytest.raises(ValueError):
            blob_file_name(bad)

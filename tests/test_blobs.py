"""Blobs: how pushed values are serialized, named by content, written once, and reported."""

import contextlib
import io
import os
import pickle
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

from rx_magic.runtime import wire
from rx_magic.flow.blobs import BlobRef, blob_file_name, plan_blobs, size_report, write_blobs
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


@pytest.fixture
def blob_dir(tmp_path) -> Path:
    """An empty folder for blobs (``tmp_path`` also holds the test's XDG folders)."""
    folder = tmp_path / "blobs"
    folder.mkdir()
    return folder


def dump_from_notebook(tmp_path: Path, expression: str, source: str = NOTEBOOK) -> Path:
    """Run ``source`` as a script, so its definitions live in ``__main__``, and wire.dump ``expression``."""
    script = tmp_path / "notebook.py"
    blob = tmp_path / "value.dill"
    script.write_text(textwrap.dedent(source) + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from rx_magic.runtime import wire
        with open({str(blob)!r}, "wb") as file:
            wire.dump({expression}, file)
    """))
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, capture_output=True, text=True)
    script.unlink()
    return blob


def load_in_fresh_process(tmp_path: Path, blob: Path, expression: str) -> str:
    """What the target does: wire.py imported as a top-level module, dill importable, nothing from rx_magic."""
    target = tmp_path / "target"
    target.mkdir(exist_ok=True)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "rx_magic" / "runtime")!r})
        import dill, wire
        value = wire.load_path({str(blob)!r})
        assert not [m for m in sys.modules if m.startswith("rx_magic")], "loading imported rx_magic"
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
        sys.path.insert(0, {str(REPO / "rx_magic" / "runtime")!r})
        import wire, numpy as np
        wire.digest({{"a": [1, "x", 2.0], "arr": np.ones(3), "f": len, "t": int}})
        print("dill" in sys.modules, sorted(m for m in sys.modules if m.startswith("rx_magic")))
        wire.digest(lambda x: x)
        print("dill" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split("\n")[:2] == ["False []", "True"]


@pytest.mark.parametrize("call", ["wire.dump(array, file)", "wire.dump_and_digest(array, file)",
                                  "wire.digest(array)"])
def test_dumping_or_hashing_a_large_array_makes_no_second_copy(tmp_path, call):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "rx_magic" / "runtime")!r})
        import numpy as np, wire

        def peak():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))

        array = np.ones(256 * 2**20 // 8)
        before = peak()
        with open({str(tmp_path / "big.dill")!r}, "wb") as file:
            {call}
        print((peak() - before) / array.nbytes)
    """)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read peak memory")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert float(out) < 0.1


# --- frames: big buffers out of band, memory-mapped on load ------------------


class ForwardOnlyStream(io.RawIOBase):
    """Reads front to back in pieces of at most 64 KiB, and cannot seek or be mapped (a socket, an SFTP file)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._data.readinto(memoryview(buffer)[:64 * 2**10])


class WriteOnlyStream:
    """A sink with nothing but ``write`` (a pipe)."""

    def __init__(self):
        self.data = bytearray()

    def write(self, piece) -> int:
        self.data += piece
        return memoryview(piece).nbytes


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this one")


def mapped_file_of(array: np.ndarray) -> str | None:
    """The file whose mapping holds ``array``'s memory, from /proc/self/maps (None: anonymous memory)."""
    address = array.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(part, 16) for part in fields[0].split("-"))
            if low <= address and address + array.nbytes <= high:
                return fields[5].strip() if len(fields) > 5 else None
    return None


def several_values():
    return [
        np.arange(3 * MiB, dtype=np.float64),
        {"alpha": 0.5, "names": ["a", "b"], "small": np.arange(5)},
        np.asfortranarray(np.arange(600 * 700, dtype=np.int32).reshape(600, 700)),
        b"x" * 100_000,
        (np.ones(MiB, dtype=np.uint8), np.zeros(70_000, dtype=np.float32)),
        [float(i) for i in range(200_000)],  # a 1.8 MB pickle stream, no buffers
    ]


def assert_same(loaded, expected):
    if isinstance(expected, np.ndarray):
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape
        assert loaded.flags.f_contiguous == expected.flags.f_contiguous
        np.testing.assert_array_equal(loaded, expected)
    elif isinstance(expected, (tuple, list)):
        assert type(loaded) is type(expected) and len(loaded) == len(expected)
        for item, want in zip(loaded, expected):
            assert_same(item, want)
    elif isinstance(expected, dict):
        assert loaded.keys() == expected.keys()
        for key in expected:
            assert_same(loaded[key], expected[key])
    else:
        assert loaded == expected


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see what is mapped")
def test_big_array_loads_from_a_file_by_mapping_it_not_reading_it(tmp_path):
    array = np.random.default_rng(0).random(64 * MiB // 8)
    path = tmp_path / "big.dill"
    with path.open("wb") as file:
        size = wire.dump(array, file)
    assert size == path.stat().st_size
    assert array.nbytes < size < array.nbytes + 4096

    loaded = wire.load_path(path)
    np.testing.assert_array_equal(loaded, array)
    assert mapped_file_of(loaded) == str(path)
    assert loaded.ctypes.data % wire.ALIGN == 0


def test_loaded_array_is_writable_and_writing_it_leaves_the_file_unchanged(tmp_path):
    path = tmp_path / "big.dill"
    with path.open("wb") as file:
        wire.dump({"arr": np.zeros(2 * MiB)}, file)
    before = path.read_bytes()

    loaded = wire.load_path(path)["arr"]
    assert loaded.flags.writeable
    loaded[:] = 7.0
    assert loaded.sum() == 7.0 * loaded.size
    assert path.read_bytes() == before
    assert not wire.load_path(path)["arr"].any()


def test_several_frames_in_one_file_load_one_after_another_then_end_of_file(tmp_path):
    values = several_values()
    path = tmp_path / "frames.dill"
    ends = []
    with path.open("wb") as file:
        for value in values:
            wire.dump(value, file)
            ends.append(file.tell())
    assert all(end % wire.ALIGN == 0 for end in ends)

    with path.open("rb") as file:
        for value, end in zip(values, ends):
            loaded = wire.load(file)
            assert file.tell() == end
            assert_same(loaded, value)
        for _ in range(2):
            with pytest.raises(EOFError):
                wire.load(file)
    first = wire.load_path(path)
    assert first.ctypes.data % wire.ALIGN == 0


def test_frames_from_a_stream_that_cannot_be_mapped_load_into_writable_memory():
    values = several_values()
    stream = ForwardOnlyStream(b"".join(wire.dumps(value) for value in values))
    for value in values:
        loaded = wire.load(stream)
        assert_same(loaded, value)
    with pytest.raises(EOFError):
        wire.load(stream)
    big = wire.loads(wire.dumps(values[0]))
    assert big.flags.writeable
    big[0] = -1.0
    assert wire.loads(bytearray(wire.dumps(values[4])))[0].flags.writeable


def test_frame_written_to_a_stream_that_cannot_seek_is_the_same_bytes_as_in_a_file():
    for value in several_values():
        sink = WriteOnlyStream()
        assert wire.dump(value, sink) == len(sink.data)
        assert bytes(sink.data) == wire.dumps(value)
        assert_same(wire.load(ForwardOnlyStream(bytes(sink.data))), value)


def test_a_dump_that_fails_while_pickling_leaves_nothing_of_its_frame(tmp_path):
    path = tmp_path / "frames.dill"
    with path.open("wb") as file:
        wire.dump(("a", np.arange(MiB)), file)
        end = file.tell()
        with pytest.raises(RuntimeError, match="cannot pickle this one"):
            wire.dump(("b", [np.ones(MiB), "x" * 100_000, Unpicklable()]), file)
        assert file.tell() == end
        wire.dump(("c", 3), file)
    with path.open("rb") as file:
        assert wire.load(file)[0] == "a"
        assert wire.load(file) == ("c", 3)
        with pytest.raises(EOFError):
            wire.load(file)

    sink = WriteOnlyStream()
    with pytest.raises(RuntimeError, match="cannot pickle this one"):
        wire.dump([np.ones(MiB), Unpicklable()], sink)
    assert sink.data == b""


def test_a_dump_that_fails_while_writing_leaves_nothing_of_its_frame():
    class DiskFillsUp(io.BytesIO):
        def write(self, data):
            if self.tell() > 3 * MiB:
                raise OSError(28, "No space left on device")
            return super().write(data)

    file = DiskFillsUp()
    wire.dump(np.ones(MiB // 8), file)
    kept = file.getvalue()
    with pytest.raises(OSError, match="No space left"):
        wire.dump([np.ones(MiB // 4), np.ones(MiB // 4)], file)
    assert file.getvalue() == kept


def test_file_that_ends_inside_a_frame_is_reported_as_truncated(tmp_path):
    data = wire.dumps(np.arange(MiB))
    path = tmp_path / "cut.dill"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        wire.load_path(path)
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        wire.loads(data[:-64])


def test_plain_pickle_written_before_frames_existed_still_loads(tmp_path):
    path = tmp_path / "old.dill"
    with path.open("wb") as file:
        pickle.dump(("x", np.arange(10)), file, protocol=5)
        pickle.dump(("", {"missing": []}), file, protocol=5)
    with path.open("rb") as file:
        name, value = wire.load(file)
        assert name == "x" and value.sum() == 45
        assert wire.load(file) == ("", {"missing": []})
        with pytest.raises(EOFError):
            wire.load(file)


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


def test_digest_is_the_digest_of_the_dumped_bytes():
    for value in ({"x": np.arange(10)}, {"big": np.arange(3 * MiB), "also": np.ones((700, 900)).T, "n": 1}):
        hex_digest, size = wire.digest(value)
        data = wire.dumps(value)
        assert (hex_digest, size) == (wire.frame_digest(data), len(data))


def test_changed_value_gives_a_different_digest():
    array = np.zeros(1000)
    before = wire.digest(array)
    array[500] = 1.0
    assert wire.digest(array) != before

    assert wire.digest({"a": 1}) != wire.digest({"a": 2})
    assert wire.digest(np.zeros(3, dtype=np.float32)) != wire.digest(np.zeros(3, dtype=np.float64))


def test_big_array_digest_is_stable_and_changes_when_any_element_changes(tmp_path):
    array = np.random.default_rng(1).random(40 * MiB // 8)  # ten 4 MiB leaves
    first = wire.digest(array)
    assert all(wire.digest(array) == first for _ in range(3))
    with (tmp_path / "big.dill").open("wb") as file:
        assert wire.dump_and_digest(array, file) == first
    assert wire.frame_digest((tmp_path / "big.dill").read_bytes()) == first[0]

    for index in (0, array.size // 2, array.size - 1):
        kept = array[index]
        array[index] = -1.0
        assert wire.digest(array) != first
        array[index] = kept
    assert wire.digest(array) == first
    assert wire.digest(array.reshape(-1, 8)) != first
    assert wire.digest(array[: array.size - 1]) != wire.digest(array[1:])


def test_notebook_function_digest_changes_when_a_global_it_reads_changes():
    notebook = notebook_namespace()
    before = wire.digest(notebook["scaled_plus_one"])
    notebook["SCALE"] = 4
    assert wire.digest(notebook["scaled_plus_one"]) != before


# --- writing blobs ------------------------------------------------------------


def test_unchanged_value_is_not_written_again(blob_dir):
    store = DirectoryBlobStore(blob_dir)
    values = {"arr": np.arange(1000.0), "cfg": {"alpha": 0.5}}
    refs = plan_blobs(values)

    written, nbytes = write_blobs(values, refs, store)
    assert (written, nbytes) == (2, sum(ref.size for ref in refs))
    assert write_blobs(values, plan_blobs(values), store) == (0, 0)
    assert sorted(p.name for p in blob_dir.iterdir()) == sorted(blob_file_name(ref.digest) for ref in refs)


def test_names_sharing_one_value_write_one_blob(blob_dir):
    shared = np.arange(100)
    values = {"a": shared, "b": shared}
    refs = plan_blobs(values)
    assert refs[0].digest == refs[1].digest
    assert write_blobs(values, refs, DirectoryBlobStore(blob_dir)) == (1, refs[0].size)


def test_written_blob_is_private_named_by_its_content_and_loads_back(blob_dir):
    values = {"arr": np.linspace(0, 1, 50)}
    (ref,) = plan_blobs(values)
    write_blobs(values, [ref], DirectoryBlobStore(blob_dir))

    path = blob_dir / f"{ref.digest}.dill"
    data = path.read_bytes()
    assert wire.frame_digest(data) == ref.digest
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


def test_exception_while_writing_leaves_no_file_named_like_a_blob(blob_dir, monkeypatch):
    import rx_magic.flow.blobs
    monkeypatch.setattr(rx_magic.flow.blobs, "KEEP_PICKLED", 0)     # no pickle kept: pickled again to be written
    values = {"data": [np.ones(10**6), FailsOnSecondPickle()]}
    refs = plan_blobs(values)
    assert not refs[0].frame.kept
    with pytest.raises(RuntimeError, match="disk went away"):
        write_blobs(values, refs, DirectoryBlobStore(blob_dir))
    assert list(blob_dir.iterdir()) == []


def test_failing_file_write_leaves_no_file_named_like_a_blob(blob_dir):
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
        write_blobs(values, plan_blobs(values), FullDiskStore(blob_dir))
    assert list(blob_dir.iterdir()) == []


def test_value_changed_after_planning_is_not_stored_under_the_old_digest(blob_dir):
    values = {"arr": np.zeros(100_000)}     # its buffer is written from the array's own memory
    refs = plan_blobs(values)
    values["arr"][0] = 1.0
    with pytest.raises(CaptureError, match="'arr'"):
        write_blobs(values, refs, DirectoryBlobStore(blob_dir))
    assert list(blob_dir.iterdir()) == []


@pytest.mark.parametrize("fast", ["xxh3_128", "sha256 alone (no xxhash)"])
def test_a_big_array_changed_in_its_middle_after_planning_is_not_stored_and_an_unchanged_one_is(
        blob_dir, fast, monkeypatch):
    """Writing checks the buffers again (with the fast hash, when there is one) against what was planned."""
    from rx_magic.flow import unchanged
    if fast != "xxh3_128":
        monkeypatch.setattr(unchanged, "fast_digest", None)
    elif unchanged.fast_digest is None:
        pytest.skip("xxhash is not installed")
    unchanged.forget_all()
    values = {"arr": np.zeros(3 * wire.LEAF_SIZE // 8 + 1000)}     # four leaves
    refs = plan_blobs(values)
    values["arr"][len(values["arr"]) // 2] = 1.0
    plan_blobs(values)      # planned again elsewhere: the notebook now remembers what it hashes to as it is
    with pytest.raises(CaptureError, match="'arr'"):
        write_blobs(values, refs, DirectoryBlobStore(blob_dir))     # what was planned before it changed
    assert list(blob_dir.iterdir()) == []
    refs = plan_blobs(values)       # planned again as it is now: stored, named by the bytes written
    assert write_blobs(values, refs, DirectoryBlobStore(blob_dir))[0] == 1
    data = (blob_dir / blob_file_name(refs[0].digest)).read_bytes()
    assert wire.frame_digest(data) == refs[0].digest == wire.digest(values["arr"])[0]
    assert data == wire.dumps(values["arr"])
    unchanged.forget_all()


def test_a_small_value_changed_after_planning_is_stored_as_it_was_planned(blob_dir):
    values = {"small": [0.0] * 10}          # pickled once, when planned: those bytes are what is written
    refs = plan_blobs(values)
    values["small"][0] = 1.0
    write_blobs(values, refs, DirectoryBlobStore(blob_dir))
    blob = blob_dir / blob_file_name(refs[0].digest)
    assert wire.frame_digest(blob.read_bytes()) == refs[0].digest
    assert wire.load_path(blob) == [0.0] * 10


# --- what the user is told ------------------------------------------------------


def test_unpicklable_value_is_named_with_its_type_reason_and_fix():
    with pytest.raises(UnpicklableError) as caught:
        plan_blobs({"x": 1, "lock": threading.Lock()})
    assert str(caught.value) == (
        "cannot send 'lock' (_thread.lock): cannot pickle '_thread.lock' object"
        " — recreate it inside the cell instead")


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
    assert message.endswith("recreate them inside the cell instead")


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

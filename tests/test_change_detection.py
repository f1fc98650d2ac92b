"""A value pushed again is sent again exactly when it changed: in place, deep inside, or to an equal value of
another type; an unchanged big container of immutable contents is not even pickled again.

Evidence is what a user would see: the bytes a job wrote into the blob store (``Job.bytes_sent``), the
value the cell found on the target, and whether planning had to pickle the value (``BlobRef.frame``).
Real jobs on the local target; no timings.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import rx_magic
from rx_magic.flow import unchanged
from rx_magic.flow.blobs import plan_blobs
from rx_magic.model.states import State
from rx_magic.runtime import wire

N = 5000


@pytest.fixture(autouse=True)
def nothing_remembered():
    unchanged.forget_all()
    yield
    unchanged.forget_all()


def run(code: str, values: dict) -> rx_magic.Job:
    job = rx_magic.submit(code, "local", values)
    assert job.wait(timeout=120) is State.DONE, job.record
    return job


def pulled(job: rx_magic.Job, name: str):
    namespace: dict = {}
    job.pull(namespace)
    return namespace[name]


def table() -> dict:
    return {i: (i, float(i), f"row {i}") for i in range(N)}


def test_an_unchanged_table_is_not_pickled_or_sent_again_and_a_changed_item_is():
    d = table()
    first = run("s = sum(v[0] for v in d.values())", {"d": d})
    assert first.bytes_sent > 0
    assert pulled(first, "s") == sum(range(N))

    again = run("s = sum(v[0] for v in d.values())", {"d": d})
    assert again.bytes_sent == 0
    assert plan_blobs({"d": d}, limit=None)[0].frame is None     # known without pickling it

    d[7] = (700, 7.0, "row 7")
    changed = run("s = sum(v[0] for v in d.values())", {"d": d})
    assert changed.bytes_sent > 0
    assert pulled(changed, "s") == sum(range(N)) - 7 + 700


def test_an_item_replaced_by_an_equal_value_of_another_type_is_sent_again():
    d = {i: i for i in range(N)}
    run("t = type(d[3]).__name__", {"d": d})
    d[3] = 3.0      # 3 == 3.0, but it is not the same value
    job = run("t = type(d[3]).__name__", {"d": d})
    assert job.bytes_sent > 0
    assert pulled(job, "t") == "float"


def test_a_key_deleted_and_added_back_as_an_equal_key_of_another_type_is_sent_again():
    d = {i: "v" for i in range(N)}
    run("t = sorted(type(k).__name__ for k in d if k == 1)", {"d": d})
    del d[1]
    d[True] = "v"   # True == 1 and hashes alike: only identity tells them apart
    job = run("t = sorted(type(k).__name__ for k in d if k == 1)", {"d": d})
    assert job.bytes_sent > 0
    assert pulled(job, "t") == ["bool"]


def test_an_array_changed_in_place_is_sent_again_and_an_unchanged_one_is_not():
    arr = np.zeros(200_000)
    run("first = float(arr[0])", {"arr": arr})
    assert run("first = float(arr[0])", {"arr": arr}).bytes_sent == 0
    arr[0] = 1
    job = run("first = float(arr[0])", {"arr": arr})
    assert job.bytes_sent >= arr.nbytes
    assert pulled(job, "first") == 1.0


def test_a_list_appended_to_inside_a_list_is_sent_again():
    nested = [[i] for i in range(N)]
    run("n = sum(map(len, nested))", {"nested": nested})
    nested[10].append(99)
    job = run("n = sum(map(len, nested))", {"nested": nested})
    assert job.bytes_sent > 0
    assert pulled(job, "n") == N + 1


def test_a_mutable_value_inside_a_table_is_checked_by_pickling_every_time():
    d = {i: (i, [i]) for i in range(N)}    # tuples holding lists: not immutable all the way down
    first = plan_blobs({"d": d}, limit=None)[0]
    again = plan_blobs({"d": d}, limit=None)[0]
    assert again.frame is not None and again.digest == first.digest
    d[5][1].append(0)
    assert plan_blobs({"d": d}, limit=None)[0].digest != first.digest


def test_a_known_table_still_travels_with_another_value_that_holds_it():
    d = table()
    plan_blobs({"d": d}, limit=None)
    refs = plan_blobs({"d": d, "holder": {"table": d}}, limit=None)
    assert refs[0].frame is None or refs[0].together    # remembered, and still grouped
    assert refs[0].together == ("d", "holder") == refs[1].together
    assert refs[0].digest == refs[1].digest == wire.digest({"d": d, "holder": {"table": d}})[0]


def test_the_digest_of_a_remembered_table_is_the_digest_of_its_pickle():
    d = table()
    plan_blobs({"d": d}, limit=None)
    ref = plan_blobs({"d": d}, limit=None)[0]
    assert ref.frame is None
    assert (ref.digest, ref.size) == wire.digest(d)


def test_a_table_deleted_in_the_notebook_is_not_kept_alive():
    d = table()
    plan_blobs({"d": d}, limit=None)
    assert len(unchanged._known) == 1
    del d
    gc.collect()
    plan_blobs({"other": 1}, limit=None)
    assert len(unchanged._known) == 0


def test_a_first_push_writes_the_bytes_it_hashed_without_pickling_again(tmp_path):
    from test_blobs import DirectoryBlobStore
    from rx_magic.flow.blobs import write_blobs

    values = {"d": table(), "arr": np.arange(100_000.0)}
    refs = plan_blobs(values, limit=None)
    assert all(ref.frame is not None and ref.frame.kept for ref in refs)
    written, nbytes = write_blobs(values, refs, DirectoryBlobStore(tmp_path))
    assert written == 2
    for ref in refs:
        data = (tmp_path / f"{ref.digest}.dill").read_bytes()
        assert wire.frame_digest(data) == ref.digest and len(data) == ref.size
        assert data == wire.dumps(values[ref.name])
        assert not ref.frame.kept       # let go once written


def test_a_table_the_cell_changes_in_place_comes_back_and_one_it_only_reads_does_not():
    d = table()
    namespace = {"d": d}
    job = rx_magic.submit("total = len(d)", "local", namespace)
    assert job.wait(timeout=120) is State.DONE
    assert "d" not in job.pull(namespace)       # unchanged on the target: told without pickling it there
    assert namespace["d"] is d
    for change, expected in [("d[3] = (3, 3.0, 'changed')", (3, 3.0, "changed")),
                             ("d[4] = (4, 4, 'row 4')", (4, 4, "row 4"))]:     # 4 == 4.0, but an int now
        job = rx_magic.submit(change, "local", namespace)
        assert job.wait(timeout=120) is State.DONE
        assert "d" in job.pull(namespace)
        assert namespace["d"] is d and d[3 if "d[3]" in change else 4] == expected
    assert type(d[4][1]) is int


def test_a_list_inside_a_big_list_the_cell_appends_to_comes_back():
    nested = [[i] for i in range(N)]
    namespace = {"nested": nested}
    job = rx_magic.submit("nested[10].append(99)", "local", namespace)
    assert job.wait(timeout=120) is State.DONE
    assert "nested" in job.pull(namespace)
    assert namespace["nested"] is nested and nested[10] == [10, 99]


def test_a_table_pushed_for_the_first_time_with_a_value_sharing_it_or_its_long_text_travels_with_it():
    long_text = "z" * 100_000
    d = {i: (i, long_text if i == 7 else "short") for i in range(N)}
    for other in ({"table": d}, [long_text]):
        unchanged.forget_all()
        refs = plan_blobs({"d": d, "other": other, "alone": [1, 2]}, limit=None)
        assert refs[0].together == refs[1].together == ("d", "other")
        assert refs[2].together == ()
        assert refs[0].digest == wire.digest({"d": d, "other": other})[0]


# --- big buffers: checked with a fast hash, hashed with sha256 again only where they changed -----------------

LEAVES = 3      # an array over three of the digest's 4 MiB leaves: a change in the first or the last one


def big_array() -> np.ndarray:
    return np.arange((LEAVES * wire.LEAF_SIZE - 1000) // 8, dtype=np.float64)


def _write_through_view(a):
    view = a[10:20]
    view[:] = -5.0


def _write_through_memoryview(a):
    memoryview(a)[len(a) - 3] = -7.0


IN_PLACE = {
    "a[0] = 1": lambda a: a.__setitem__(0, 1.0),
    "a[-1] += 1": lambda a: a.__setitem__(-1, a[-1] + 1),
    "a[:] = b": lambda a: a.__setitem__(slice(None), np.full(len(a), 2.5)),
    "np.copyto": lambda a: np.copyto(a, a[::-1].copy()),
    "a write through a view": _write_through_view,
    "a write through memoryview(a)": _write_through_memoryview,
}

READ = "total, head, tail = float(arr.sum()), arr[:20].tolist(), arr[-5:].tolist()"


def seen(arr: np.ndarray) -> tuple:
    return float(arr.sum()), arr[:20].tolist(), arr[-5:].tolist()


def pulled_read(job: rx_magic.Job) -> tuple:
    namespace: dict = {}
    job.pull(namespace)
    return namespace["total"], namespace["head"], namespace["tail"]


@pytest.fixture(params=["with xxhash", "without xxhash"])
def fast_hash(request, monkeypatch):
    """Each test runs with the fast check, and as if ``import xxhash`` had failed (every buffer hashed in full)."""
    if request.param == "without xxhash":
        monkeypatch.setattr(unchanged, "fast_digest", None)
    elif unchanged.fast_digest is None:
        pytest.skip("xxhash is not installed")
    return request.param


@pytest.mark.parametrize("change", list(IN_PLACE))
def test_an_array_changed_in_place_is_sent_again_and_arrives_changed(change, fast_hash):
    arr = big_array()
    assert seen(arr) == pulled_read(run(READ, {"arr": arr}))
    assert run(READ, {"arr": arr}).bytes_sent == 0          # unchanged: no blob written
    IN_PLACE[change](arr)
    job = run(READ, {"arr": arr})
    assert job.bytes_sent >= arr.nbytes
    assert pulled_read(job) == seen(arr)


def test_a_fortran_ordered_array_and_a_view_changed_through_their_base_are_sent_again(fast_hash):
    base = np.zeros((1500, 1000))
    fortran = np.asfortranarray(np.arange(1500 * 1000, dtype=np.float64).reshape(1500, 1000))
    view = base[500:]
    values = {"fortran": fortran, "view": view}
    code = "f, v = float(fortran[7, 3]), float(view[0, 0])"
    run(code, values)
    assert run(code, values).bytes_sent == 0
    fortran[7, 3] = -1.0
    base[500, 0] = 42.0
    job = run(code, values)
    assert job.bytes_sent >= fortran.nbytes + view.nbytes
    assert (pulled(job, "f"), pulled(job, "v")) == (-1.0, 42.0)


def test_a_new_array_in_the_place_of_a_freed_one_is_sent():
    """A new array taking the id and the memory of one pushed before, with other contents: sent, as it is."""
    code = "first = float(arr[0])"
    arr = np.zeros(2 * 2**20 // 8)
    run(code, {"arr": arr})
    for attempt in range(1, 50):
        before = (id(arr), arr.__array_interface__["data"][0])
        plan_blobs({"arr": arr}, limit=None)        # pushed (planned) as it is now
        del arr     # the allocator hands the freed object and memory back to the next one, most often
        arr = np.empty(2 * 2**20 // 8)
        arr.fill(float(attempt))
        if (id(arr), arr.__array_interface__["data"][0]) == before:
            break
    else:
        pytest.skip("the allocator did not give a freed array's id and memory back")
    job = run(code, {"arr": arr})
    assert job.bytes_sent >= arr.nbytes
    assert pulled(job, "first") == float(attempt)


def test_a_buffer_of_an_owner_without_weak_references_changed_in_place_is_sent_again(fast_hash):
    """A bytearray allows no weak reference: its buffer is remembered by id, address and length, and what
    decides is still its contents."""
    memory = bytearray(6 * 2**20)
    arr = np.frombuffer(memory, dtype=np.uint8)
    code = "n = int(arr[-1])"
    run(code, {"arr": arr})
    assert run(code, {"arr": arr}).bytes_sent == 0
    memory[-1] = 9
    job = run(code, {"arr": arr})
    assert job.bytes_sent >= arr.nbytes
    assert pulled(job, "n") == 9


class _CountingHashes:
    """wire's ``_new_hash``, counting the bytes each leaf hash is given (leaves are hashed by ``_new_hash(data)``)."""

    def __init__(self, real):
        self.real, self.leaf_bytes = real, 0

    def __call__(self, data=b"", name=wire.HASH_NAME, size=None):
        self.leaf_bytes += memoryview(data).nbytes
        return self.real(data, name, size)


def test_an_unchanged_array_pushed_again_is_not_hashed_with_sha256_and_a_changed_leaf_alone_is(monkeypatch):
    if unchanged.fast_digest is None:
        pytest.skip("xxhash is not installed")
    arr = big_array()
    first = plan_blobs({"arr": arr}, limit=None)[0]
    counting = _CountingHashes(wire._new_hash)
    monkeypatch.setattr(wire, "_new_hash", counting)
    again = plan_blobs({"arr": arr}, limit=None)[0]
    assert again.digest == first.digest
    assert counting.leaf_bytes < 2**12          # the digest of the leaves' digests, nothing of the array
    arr[-1] += 1
    counting.leaf_bytes = 0
    changed = plan_blobs({"arr": arr}, limit=None)[0]
    assert wire.LEAF_SIZE // 2 < counting.leaf_bytes < wire.LEAF_SIZE + 2**12   # the last leaf alone
    assert changed.digest == wire.digest(arr)[0] != first.digest

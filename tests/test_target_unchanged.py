"""On the target, a big pushed value the cell did not change costs no hashing, and one it changed comes back.

A blob that passed its check once is not hashed again while it is the very file checked (its stamp in
``.rx/verified``); after the cell, only the leaves of a memory-mapped buffer with a page the cell wrote are
hashed again (``/proc/self/pagemap``), while the rest of the value (shape, dtype, a DataFrame's columns) is
pickled again as always. Evidence is what a user would see and what the job wrote: the names that came back,
the values, the size of the job's outputs file, the stamp file. Real jobs on the local target; no timings.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import rx_magic
from rx_magic.flow import unchanged
from rx_magic.model.states import State
from rx_magic.runtime import wire

#: 3 leaves and a half: bigger than the runner's VERIFIED_STAMP_MIN, so stamped and checked page by page
SIZE = 14 * 2**20 + 8 * 123

#: Run in the cell before anything else: the cell process can no longer open /proc/self/pagemap, as on a
#: kernel with /proc restricted (a sandbox without /proc, or one that refuses the file: EACCES), so the runner
#: falls back to hashing the whole value again.
NO_PAGEMAP = ("import sys\n"
              "def _refused():\n"
              "    raise PermissionError(13, 'Permission denied', '/proc/self/pagemap')\n"
              "sys.modules['_rx_wire']._open_pagemap = _refused\n")


@pytest.fixture(autouse=True)
def nothing_remembered():
    unchanged.forget_all()
    yield
    unchanged.forget_all()


@pytest.fixture(params=["pagemap", "no pagemap"])
def pagemap(request):
    """The code each cell starts with: nothing, or what takes the pagemap away from the cell's process."""
    return "" if request.param == "pagemap" else NO_PAGEMAP


def run(code: str, namespace: dict) -> tuple[rx_magic.Job, set]:
    """Run ``code`` on the local target with ``namespace``'s values; the job and the names that came back."""
    job = rx_magic.submit(code, "local", namespace)
    assert job.wait(timeout=240) is State.DONE, job.record
    return job, set(job.pull(namespace))


def outputs_size(job: rx_magic.Job) -> int:
    return os.path.getsize(job.paths.outputs)


def stamp_of(job: rx_magic.Job, value) -> str:
    return os.path.join(os.path.dirname(job.paths.blobs_dir), "verified", wire.digest(value)[0])


def big_array() -> np.ndarray:
    return np.arange(SIZE // 8, dtype=np.float64)


def test_an_unchanged_array_is_not_pulled_back_and_its_blob_is_not_checked_again(pagemap):
    arr = big_array()
    namespace = {"arr": arr}
    first, pulled = run(pagemap + "total = float(arr.sum())", namespace)
    assert "arr" not in pulled and namespace["total"] == float(big_array().sum())
    assert outputs_size(first) < 2**16          # nothing of the array came back
    stamp = stamp_of(first, arr)
    stamped = os.stat(stamp)
    assert stamped.st_mode & 0o777 == 0o600

    again, pulled = run(pagemap + "total = float(arr[::2].sum())", namespace)
    assert again.bytes_sent == 0 and "total" in pulled and "arr" not in pulled
    assert outputs_size(again) < 2**16
    assert namespace["arr"] is arr and np.array_equal(arr, big_array())
    assert os.stat(stamp).st_ino == stamped.st_ino     # the stamp held: the blob was not hashed and stamped anew


CHANGES = {
    "one element in the middle": ("arr[len(arr) // 2] = -1.0", lambda a: a.__setitem__(len(a) // 2, -1.0)),
    "the last byte": ("arr.view(np.uint8)[-1] ^= 0xff", lambda a: a.view(np.uint8).__setitem__(-1, a.view(np.uint8)[-1] ^ 0xff)),
    "the first byte, after reading it all": ("s = arr.sum(); arr.view(np.uint8)[0] = 7",
                                            lambda a: a.view(np.uint8).__setitem__(0, 7)),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_an_array_the_cell_writes_into_comes_back_changed(change, pagemap):
    code, same_here = CHANGES[change]
    arr = big_array()
    namespace = {"arr": arr}
    run("n = len(arr)", namespace)      # the blob is checked and stamped
    job, pulled = run(pagemap + "import numpy as np\n" + code, namespace)
    assert "arr" in pulled
    expected = big_array()
    same_here(expected)
    assert namespace["arr"] is arr and np.array_equal(arr.view(np.uint8), expected.view(np.uint8))
    assert outputs_size(job) >= arr.nbytes


@pytest.mark.parametrize("change, expected", [
    ("arr.shape = (1, -1)", lambda a: a.reshape(1, -1)),
    ("arr.dtype = np.int64", lambda a: a.view(np.int64)),
])
def test_an_array_whose_shape_or_dtype_the_cell_sets_comes_back_changed(change, expected, pagemap):
    arr = big_array()
    namespace = {"arr": arr}
    run("n = len(arr)", namespace)
    _, pulled = run(pagemap + "import numpy as np\n" + change, namespace)
    assert "arr" in pulled              # not one byte of its buffer was written
    back = namespace["arr"]
    want = expected(big_array())
    assert back.shape == want.shape and back.dtype == want.dtype and np.array_equal(back, want)


def test_a_dataframe_the_cell_adds_a_column_to_comes_back_and_an_unchanged_one_does_not(pagemap):
    pd = pytest.importorskip("pandas")
    rows = 2**20
    df = pd.DataFrame({"a": np.arange(rows, dtype=np.float64), "b": np.ones(rows)})
    namespace = {"df": df}
    _, pulled = run(pagemap + "n = len(df)", namespace)
    job, pulled = run(pagemap + "n = len(df)", namespace)
    assert "df" not in pulled and outputs_size(job) < 2**16
    _, pulled = run(pagemap + "df['c'] = df['a'] * 2", namespace)
    assert "df" in pulled
    assert list(namespace["df"].columns) == ["a", "b", "c"]
    assert namespace["df"]["c"].iloc[-1] == 2.0 * (rows - 1)


def test_a_blob_changed_on_disk_under_the_loaded_value_is_seen(pagemap):
    """The cell overwrites the blob file itself (same size) without writing into the array: the pages it had
    not read yet now show the new bytes, and the runner, seeing the file changed, hashes the value again."""
    arr = big_array()
    namespace = {"arr": arr}
    first, _ = run("n = len(arr)", namespace)
    blob = first.paths.blob(wire.digest(arr)[0])
    code = (pagemap + f"with open({blob!r}, 'r+b') as f:\n"
            f"    f.seek(-8 - 64, 2)\n"         # inside the buffer, before the last frame padding
            f"    f.write(b'\\x00' * 8)\n"
            "n = len(arr)\n")                  # a cell that names arr: the notebook asks whether it changed
    _, pulled = run(code, namespace)
    assert "arr" in pulled
    expected = big_array()
    expected[-4] = 0.0
    assert np.array_equal(namespace["arr"], expected)

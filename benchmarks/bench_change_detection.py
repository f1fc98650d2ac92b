"""What bringing back in-place changes costs a cell, side by side with not looking for them.

    python benchmarks/bench_change_detection.py [--runs N]

1. Planning (the notebook's side): ``plan_blobs`` as it is (each value hashed, the
   pickler's memo kept to find values that share objects) beside hashing each value
   alone, as before values travelled together.
2. The check on the target: each pushed value that may change pickled and hashed
   again after the cell, for a few typical pushes.
3. A trivial ``%%remote local`` cell reading a small list and dict, end to end, with the
   check and grouping on and off (``may_change`` always False, no groups).
4. Pushing a dict of 10^6 small tuples and a 500 MB array, beside ``pickle.dumps`` of each in
   the same run (and ``pickle.dump`` into a file, like for like): the first push (``plan_blobs`` +
   ``write_blobs`` into a folder; goal <= 1.3x ``pickle.dumps``), planning beside a second name
   (what values share is found too), and the push again of the unchanged value (planning only, as the blob is
   there; goal <= 0.2 s for the dict, <= 0.05 s for the array), and the target's check after
   the cell (``wire.holds_same`` against the snapshot taken at load, else pickling it again).
   For the array, the same first push and push again without ``xxhash`` (every buffer hashed
   with sha256 each time, as before the fast check), and the push again after one element
   changed (one 4 MiB leaf hashed with sha256 again).

Prints figures; asserts nothing. Runs in temporary XDG folders.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def isolate(root: str) -> None:
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        os.environ[name] = os.path.join(root, name.lower())
        os.makedirs(os.environ[name], exist_ok=True)


def best_of(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def pushes():
    import numpy as np

    class Point:
        def __init__(self, x):
            self.x = x

    shared = [1, 2]
    return {
        "trivial (an int, a 10-item list)": {"n": 3, "lst": list(range(10))},
        "mixed (dict of 1000 floats, 100 objects, 1 MB array)": {
            "d": {str(i): float(i) for i in range(1000)}, "points": [Point(i) for i in range(100)],
            "arr": np.ones(2**17)},
        "two names sharing a list": {"a": shared, "b": {"k": shared}},
        "a 200 MB array": {"big": np.ones(25 * 2**20)},
    }


def planning(runs: int) -> None:
    from rx_magic.flow.blobs import plan_blobs
    from rx_magic.runtime import wire
    print("1. planning: plan_blobs now / one digest per value (before), best of", runs)
    for label, values in pushes().items():
        now = best_of(lambda: plan_blobs(values, limit=None), runs)
        before = best_of(lambda: [wire.digest(value) for value in values.values()], runs)
        print(f"   {label:55s} {now * 1e3:8.2f} ms / {before * 1e3:8.2f} ms  ({now / before:.2f}x)")


def target_check(runs: int) -> None:
    from rx_magic.flow.capture import may_change
    from rx_magic.runtime import wire
    print("2. the check on the target: pickling and hashing again what may have changed, best of", runs)
    for label, values in pushes().items():
        checked = {name: value for name, value in values.items() if may_change(value)}
        took = best_of(lambda: [wire.digest(value) for value in checked.values()], runs)
        print(f"   {label:55s} {took * 1e3:8.2f} ms  ({len(checked)} of {len(values)} values checked)")


def trivial_cell(runs: int) -> None:
    from IPython.testing import globalipapp
    import rx_magic.flow.blobs as blobs
    import rx_magic.flow.capture as capture
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "rx_magic")
    shell.run_cell("lst = list(range(10))\nconfig = {'lr': 0.1}")
    cell = "%%remote local\ny = len(lst) + config['lr']\n"

    def run() -> None:
        result = shell.run_cell(cell)
        assert result.success, result.error_in_exec

    run()   # the runtime is installed once
    may_change, groups = capture.may_change, blobs._sharing_groups
    on, off = [], []
    for _ in range(runs):      # interleaved, so that a busy machine weighs on both alike
        on.append(best_of(run, 1))
        capture.may_change = lambda value, depth=0: False
        blobs._sharing_groups = lambda memos: []
        try:
            off.append(best_of(run, 1))
        finally:
            capture.may_change, blobs._sharing_groups = may_change, groups
    print(f"3. a trivial cell end to end, median of {runs}: check on {statistics.median(on) * 1e3:.1f} ms, "
          f"off {statistics.median(off) * 1e3:.1f} ms ({statistics.median(on) / statistics.median(off):.2f}x)")


class _Folder:
    """A BlobStore over a local folder, as the local target's (a temporary name, then a rename)."""

    def __init__(self, root: str):
        self.root = root

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.root, name))

    def open_atomic(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def opened():
            temporary = os.path.join(self.root, name + ".part")
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
                yield file
            os.replace(temporary, os.path.join(self.root, name))
        return opened()


def pushing_again(runs: int) -> None:
    import numpy as np

    from rx_magic.flow import unchanged
    from rx_magic.flow.blobs import plan_blobs
    from rx_magic.runtime import wire
    print(f"4. pushing big values: first push and push again beside pickle.dumps, best of {runs}")
    values = {"dict of 10^6 tuples": ({i: (i, float(i)) for i in range(10**6)}, 0.2),
              "500 MB float64 array": (np.ones(500 * 10**6 // 8), 0.05)}
    for label, (value, goal) in values.items():
        first, second, again, beside, dumps, dump = _pushes(value, runs)
        items = wire.snapshot(value)
        if items is not None:
            check = best_of(lambda: wire.holds_same(value, items) and wire.immutable_contents(items), runs)
            how = "identity against the snapshot taken at load, contents looked at"
        else:
            check = best_of(lambda: wire.digest(value), runs)
            how = "pickled and hashed again"
        print(f"   {label}:\n      pickle.dumps {dumps:.3f} s, pickle.dump into a file {dump:.3f} s; first push "
              f"(into a file) {first:.3f} s = {first / dumps:.2f}x pickle.dumps, {first / dump:.2f}x pickle.dump "
              f"(goal <= 1.3x)\n      planned (not written) beside a second name {beside:.3f} s = "
              f"{beside / dumps:.2f}x pickle.dumps"
              f"\n      pushed again unchanged: {second:.3f} s the first time, {again:.3f} s after "
              f"(goal <= {goal} s)\n      the target's check after the cell: {check:.3f} s ({how})")
        if isinstance(value, np.ndarray):
            fast, unchanged.fast_digest = unchanged.fast_digest, None
            try:
                first_sha, _, again_sha, _, dumps_sha, _ = _pushes(value, runs)
            finally:
                unchanged.fast_digest = fast
            unchanged.forget_all()
            plan_blobs({"v": value}, limit=None)
            changed = []
            for _ in range(runs):
                value[-1] += 1
                start = time.perf_counter()
                plan_blobs({"v": value}, limit=None)
                changed.append(time.perf_counter() - start)
            print(f"      without xxhash (sha256 each time): first push {first_sha:.3f} s = "
                  f"{first_sha / dumps_sha:.2f}x pickle.dumps, pushed again unchanged {again_sha:.3f} s"
                  f"\n      pushed again after one element changed: {min(changed):.3f} s")
    unchanged.forget_all()


def _pushes(value, runs: int) -> tuple[float, ...]:
    """Best of ``runs``: the first push (planned and written into an empty folder), the first push again,
    later pushes again (planned only: the blob is there), planning beside a second name, and, each run
    right after a first push (a busy machine weighs on both alike), ``pickle.dumps`` and ``pickle.dump``
    into a file."""
    import pickle

    from rx_magic.flow import unchanged
    from rx_magic.flow.blobs import plan_blobs, write_blobs
    firsts, dumps, dump = [], [], []
    for _ in range(runs):
        unchanged.forget_all()
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            write_blobs({"v": value}, plan_blobs({"v": value}, limit=None), _Folder(folder))
            firsts.append(time.perf_counter() - start)
            dumps.append(best_of(lambda: pickle.dumps(value, protocol=5), 1))
            with open(os.path.join(folder, "plain.pickle"), "wb") as file:     # like for like: a file too
                start = time.perf_counter()
                pickle.dump(value, file, protocol=5)
                dump.append(time.perf_counter() - start)
    beside = []         # with a second name: what the values share is found too
    for _ in range(runs):
        unchanged.forget_all()
        start = time.perf_counter()
        plan_blobs({"v": value, "n": 1}, limit=None)
        beside.append(time.perf_counter() - start)
    seconds = []
    for _ in range(runs):
        unchanged.forget_all()
        plan_blobs({"v": value}, limit=None)
        seconds.append(best_of(lambda: plan_blobs({"v": value}, limit=None), 1))
    # the first push again: a container's contents are looked at, once
    again = best_of(lambda: plan_blobs({"v": value}, limit=None), runs)
    return min(firsts), min(seconds), again, min(beside), min(dumps), min(dump)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        isolate(root)
        os.chdir(root)
        planning(args.runs)
        target_check(args.runs)
        trivial_cell(max(args.runs, 7))
        pushing_again(min(args.runs, 3))
        os.chdir(os.path.dirname(os.path.abspath(__file__)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

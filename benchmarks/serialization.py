"""How fast and how lean rx_magic's blob format is, next to plain pickle and dill.

    .venv/bin/python benchmarks/serialization.py [--repeat 3]

Prints, for a dict of 10^6 small tuples and a 100 MB float64 array, the time
of ``pickle.dump(protocol=5)``, ``wire.dump`` (both into a file in a temporary
folder) and ``wire.digest``, with ratios to pickle (goal: within 1.2x), and
``dill.dump`` of the dict for comparison; then the time to load each back with
``pickle.load``, ``wire.load`` from the file (buffers memory-mapped) and
``wire.load`` from a stream that cannot be mapped (buffers read). Then the
peak memory (VmHWM, read in a child process per method) of serializing a 500 MB
array, as a multiple of the array's size (goal for ``wire.dump``: under 1.3x).
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dill  # noqa: E402
import numpy as np  # noqa: E402

from rx_magic.runtime import wire

MB = 10**6
TIME_GOAL = 1.2
MEMORY_GOAL = 1.3

_PEAK_CHILD = textwrap.dedent("""
    import pickle, sys
    sys.path.insert(0, {repo!r})
    import numpy as np
    from rx_magic.runtime import wire

    def status(field):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

    array = np.arange({nbytes} // 8, dtype=np.float64)
    before = status("VmRSS")
    method = {method!r}
    if method == "wire.dump":
        with open({path!r}, "wb") as file:
            wire.dump(array, file)
    elif method == "wire.dump_and_digest":
        with open({path!r}, "wb") as file:
            wire.dump_and_digest(array, file)
    elif method == "wire.digest":
        wire.digest(array)
    elif method == "pickle.dump":
        with open({path!r}, "wb") as file:
            pickle.dump(array, file, protocol=5)
    elif method == "pickle.dumps":
        data = pickle.dumps(array, protocol=5)
    print(status("VmHWM"), before, array.nbytes)
""")


def best_time(function, repeat: int, setup=None) -> float:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def into_file(path: Path, dump):
    def run():
        with open(path, "wb") as file:
            dump(file)
    return run


def time_into_file(path: Path, dump, repeat: int) -> float:
    # A fresh file each run: truncating the last run's file costs as much as writing.
    return best_time(into_file(path, dump), repeat, setup=lambda: path.unlink(missing_ok=True))


class UnmappableStream(io.RawIOBase):
    """A file read front to back that cannot be memory-mapped, as an SFTP file."""

    def __init__(self, file):
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)


def time_load(path: Path, load, repeat: int) -> float:
    def run():
        with open(path, "rb") as file:
            load(file)
    return best_time(run, repeat)


def time_value(label: str, value: object, folder: Path, repeat: int, with_dill: bool) -> tuple[list[str], list[str]]:
    """One row of dump timings and one of load timings."""
    path = folder / "value.bin"
    plain = time_into_file(path, lambda file: pickle.dump(value, file, protocol=5), repeat)
    size = path.stat().st_size
    plain_load = time_load(path, pickle.load, repeat)
    ours = time_into_file(path, lambda file: wire.dump(value, file), repeat)
    mapped_load = time_load(path, wire.load, repeat)
    read_load = time_load(path, lambda file: wire.load(io.BufferedReader(UnmappableStream(file))), repeat)
    hashed = best_time(lambda: wire.digest(value), repeat)
    row = [label, f"{size / MB:.1f} MB", f"{plain:.3f} s", f"{ours:.3f} s", f"{ours / plain:.2f}x",
           f"{hashed:.3f} s", f"{hashed / plain:.2f}x"]
    if with_dill:
        slow = time_into_file(path, lambda file: dill.dump(value, file), repeat)
        row += [f"{slow:.2f} s", f"{slow / plain:.1f}x"]
    else:
        row += ["-", "-"]
    load_row = [label, f"{plain_load:.3f} s", f"{mapped_load:.4f} s", f"{read_load:.3f} s"]
    path.unlink()
    return row, load_row


def peak_memory(method: str, nbytes: int, folder: Path) -> tuple[int, int, int]:
    code = _PEAK_CHILD.format(repo=str(REPO), nbytes=nbytes, method=method, path=str(folder / "peak.bin"))
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    (folder / "peak.bin").unlink(missing_ok=True)
    peak, before, array_bytes = map(int, done.stdout.split())
    return peak, before, array_bytes


def table(rows: list[list[str]], right_from: int = 1) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) if column < right_from else cell.rjust(width)
                 for column, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Runs per timing; the best is shown.")
    args = parser.parse_args(argv)

    print(f"serialization benchmark: python {platform.python_version()}, dill {dill.__version__}, "
          f"numpy {np.__version__}, hash {wire.HASH_NAME}, {os.cpu_count()} cpus; best of {args.repeat}")
    print()
    small_tuples = {i: (i, str(i), float(i)) for i in range(10**6)}
    array = np.random.default_rng(0).random(100 * MB // 8)
    header = ["value", "pickle size", "pickle.dump", "wire.dump", "ratio", "wire.digest", "ratio",
              "dill.dump", "ratio"]
    with tempfile.TemporaryDirectory(prefix="rx-bench-") as name:
        folder = Path(name)
        timed = [time_value("dict of 10^6 small tuples", small_tuples, folder, args.repeat, with_dill=True),
                 time_value("float64 array, 100 MB", array, folder, args.repeat, with_dill=False)]
        print("time to serialize (dumps go into a file in a temporary folder; ratios are to pickle.dump)")
        print(table([header] + [row for row, _ in timed]))
        print(f"goal: wire.dump within {TIME_GOAL}x of pickle.dump")
        print()
        print("time to load back from that file (in the page cache)")
        print(table([["value", "pickle.load", "wire.load (mapped)", "wire.load (stream, read)"]]
                    + [load_row for _, load_row in timed]))
        print()

        del small_tuples, array
        nbytes = 500 * MB
        rows = [["method, 500 MB float64 array", "peak (VmHWM)", "x array", "added by the dump"]]
        for method in ("wire.dump", "wire.dump_and_digest", "wire.digest", "pickle.dump", "pickle.dumps"):
            peak, before, array_bytes = peak_memory(method, nbytes, folder)
            label = {"wire.dump": "wire.dump into a file", "wire.digest": "wire.digest (no file)",
                     "wire.dump_and_digest": "wire.dump_and_digest into a file",
                     "pickle.dump": "pickle.dump into a file", "pickle.dumps": "pickle.dumps to bytes"}[method]
            rows.append([label, f"{peak / MB:.0f} MB", f"{peak / array_bytes:.2f}x",
                         f"{max(peak - before, 0) / MB:.0f} MB"])
        print("peak memory of a child process that builds the array, then serializes it")
        print(table(rows))
        print(f"goal: wire.dump under {MEMORY_GOAL}x the array (the peak includes the array itself "
              "and the interpreter)")


if __name__ == "__main__":
    main()

"""How fast is the `local` target? Prints its figures; asserts nothing.

    python benchmarks/bench_local.py [--quick] [--trivial]

1. median time from running a trivial ``%%remote local`` cell to its result
   being in the namespace, beside a bare ``python -c pass`` timed in the same
   run (goal: at most 3x it; the floor is one Python start);
2. a cell reading an unchanged 500 MB numpy array: first and second run, time
   and bytes written (goal: 0 bytes re-written, < 1 s beyond the trivial cell);
3. the kernel's peak memory while pushing that array (goal < 1.3x the array);
4. serialization against plain pickle (benchmarks/serialization.py).

Everything runs in temporary XDG folders, so your own jobs are not touched.
``--trivial`` stops after the first figure. The machine's load average is printed
beside it: other work on the machine weighs on the figures.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ARRAY_BYTES = 500 * 10**6


def isolated_env(root: str) -> dict:
    env = dict(os.environ)
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env[name] = os.path.join(root, name.lower())
    return env


def shell_in(root: str):
    os.environ.update(isolated_env(root))
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython()
    ip.run_line_magic("load_ext", "rx_magic")
    return ip


def trivial_cell(ip, repeats: int) -> list[float]:
    ip.user_ns["x"] = 1
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        ip.run_cell("%%remote local\ny = x + 1")
        times.append(time.perf_counter() - started)
        assert ip.user_ns["y"] == 2
    return times


def bare_python(repeats: int) -> list[float]:
    """``python -c pass`` started and waited for, as many times: the floor of any job's own process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return times


def blobs_bytes(root: str) -> int:
    folder = Path(root) / "xdg_data_home" / "rx_magic" / "local-jobs" / ".rx" / "blobs"
    return sum(path.stat().st_size for path in folder.glob("*.dill"))


def big_array_cell(ip, root: str) -> list[tuple[float, int]]:
    import numpy as np
    ip.user_ns["big"] = np.ones(ARRAY_BYTES // 8)
    runs = []
    for _ in range(2):
        before = blobs_bytes(root)
        started = time.perf_counter()
        ip.run_cell("%%remote local\ntotal = float(big[:1000].sum())")
        runs.append((time.perf_counter() - started, blobs_bytes(root) - before))
        assert ip.user_ns["total"] == 1000.0
    return runs


PEAK_SCRIPT = """
import os, sys
import numpy as np
import rx_magic

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

big = np.ones({n} // 8)
before = hwm()
job = rx_magic.submit("total = float(big[:10].sum())", "local", {{"big": big}})
job.wait()
print(before, hwm(), big.nbytes, job.bytes_sent)
"""


def peak_memory(root: str) -> tuple[int, int, int, int]:
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT.format(n=ARRAY_BYTES)], env=isolated_env(root),
                         capture_output=True, text=True, check=True).stdout.split()
    return tuple(int(value) for value in out)


def main() -> None:
    quick = "--quick" in sys.argv
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        ip = shell_in(root)
        trivial_cell(ip, 1)     # the runtime is installed once
        trivial, bare = [], []
        for _ in range(5 if quick else 15):      # interleaved, so that a busy machine weighs on both alike
            trivial += trivial_cell(ip, 1)
            bare += bare_python(1)
        median, floor = statistics.median(trivial), statistics.median(bare)
        print("rx_magic local target benchmark")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f} at the start, {os.getloadavg()[0]:.2f} after the trivial cells\n")
        print(f"trivial %%remote local cell, submit to value in namespace: median {median * 1000:.0f} ms "
              f"(min {min(trivial) * 1000:.0f}, max {max(trivial) * 1000:.0f}, n={len(trivial)})")
        print(f"bare `python -c pass` in the same run: median {floor * 1000:.0f} ms; the cell takes "
              f"{median / floor:.1f}x it  goal <= 3x")
        if "--trivial" in sys.argv:
            return
        (first, first_bytes), (second, second_bytes) = big_array_cell(ip, root)
        print(f"cell reading a 500 MB array, first run:  {first:6.2f} s, {first_bytes / 1e6:7.1f} MB written")
        print(f"cell reading a 500 MB array, second run: {second:6.2f} s, {second_bytes / 1e6:7.1f} MB written"
              f"  ({second - median:+.2f} s beyond the trivial cell; goal 0 bytes and < 1 s)")
    with tempfile.TemporaryDirectory() as root:
        before, peak, nbytes, sent = peak_memory(root)
        print(f"kernel peak memory while pushing the 500 MB array: {peak / 1e6:.0f} MB = {peak / nbytes:.2f}x the "
              f"array (the push itself added {(peak - before) / 1e6:.0f} MB; {sent / 1e6:.0f} MB written)"
              "  goal < 1.3x\n")
    sys.argv = [sys.argv[0], "--repeat", "1"] if quick else [sys.argv[0]]
    sys.path.insert(0, str(HERE))
    import serialization
    serialization.main()


if __name__ == "__main__":
    main()

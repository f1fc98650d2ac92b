"""How late does a waiting cell notice that its job ended, and how many syncs does the registry cost a cell?

    python benchmarks/bench_end_notice.py [--runs N]

1. For local jobs of several lengths, the time from the runner recording the
   job's end (``status.json``'s ``ended``, the target's clock = this machine's)
   to ``Job.wait`` returning, side by side with the same wait when the job's
   process cannot be waited on (looking at the folder on a timer, as before).
   Goal: within 20 ms whatever the job's length.
2. ``fdatasync``/``fsync`` calls the registry makes per cell, counted by
   ``strace -f -c`` around a script that runs cells (when strace is installed),
   beside the same script with the registry's old ``synchronous=FULL``.

Prints figures; asserts nothing. Runs in temporary XDG folders.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

LENGTHS = (0.3, 1.0, 3.0)


def isolate(root: str) -> None:
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        os.environ[name] = os.path.join(root, name.lower())


def notice_delays(length: float, runs: int, by_process: bool) -> list[float]:
    import rx_magic
    from rx_magic.schedulers.direct import DirectScheduler

    original = DirectScheduler.end_notice
    if not by_process:
        DirectScheduler.end_notice = lambda self, *args: None     # the wait before: look at the folder on a timer
    try:
        delays = []
        for _ in range(runs):
            job = rx_magic.submit(f"import time\ntime.sleep({length})", "local", {})
            job.wait()
            returned = time.time()
            delays.append(returned - job.status["ended"])
        return delays
    finally:
        DirectScheduler.end_notice = original


SYNC_SCRIPT = textwrap.dedent("""
    import os, sys
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        os.environ[name] = os.path.join(sys.argv[1], name.lower())
    import rx_magic.flow.registry as registry
    registry.SYNCHRONOUS = sys.argv[3].upper()
    import rx_magic
    for _ in range(int(sys.argv[2])):
        job = rx_magic.submit("y = 1", "local", {})
        job.wait()
        job.pull({})
""")


def syncs_per_cell(cells: int, mode: str) -> float | None:
    if shutil.which("strace") is None:
        return None
    with tempfile.TemporaryDirectory() as root:
        result = subprocess.run(["strace", "-f", "-c", "-e", "trace=fdatasync,fsync", sys.executable, "-c",
                                 SYNC_SCRIPT, root, str(cells), mode], capture_output=True, text=True)
        calls = 0
        for line in result.stderr.splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fdatasync", "fsync"):
                calls += int(parts[3])
        return calls / cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        isolate(root)
        print("end of a local job noticed by a waiting cell, ms after the runner recorded it (median [min-max])")
        print(f"{'job length':>12} {'waiting on the process':>26} {'looking on a timer':>22}")
        for length in LENGTHS:
            fast = notice_delays(length, args.runs, by_process=True)
            slow = notice_delays(length, args.runs, by_process=False)
            show = lambda ds: f"{statistics.median(ds) * 1000:7.1f} [{min(ds) * 1000:.1f}-{max(ds) * 1000:.1f}]"
            print(f"{length:>11.1f}s {show(fast):>26} {show(slow):>22}")
    for mode, label in (("normal", "synchronous=NORMAL (now)"), ("full", "synchronous=FULL (before)")):
        found = syncs_per_cell(10, mode)
        print(f"registry fdatasync+fsync per cell, {label}: "
              + ("strace not installed" if found is None else f"{found:.1f}"))


if __name__ == "__main__":
    main()

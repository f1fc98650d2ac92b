"""How fast is a cell sent to a ready hold? Prints its figures beside their references; asserts nothing.

    python benchmarks/bench_holds.py [--quick] [--map-only]

(``--map-only``: the ``--map`` figures alone, 3 below, each timed 3 times.)

1. a trivial ``%%remote local`` cell through a ready local hold, beside the same cell as a fresh
   process (``--no-hold``) in the same run (goal: under 100 ms, at most 0.5x the fresh one);
2. the same cell through a ready hold on an SSH host: the loopback sshd of the tests (tests/sshd.py),
   beside a fresh job there (goal: under 0.5 s);
3. ``--map`` of 200 elements of 10 ms work each through a 2-core local hold, beside the same 200 calls
   in a ``multiprocessing.Pool(2)`` here (goal: within 1.5x), and the same map as a fresh job (``--no-hold``).

Everything runs in temporary XDG folders (and a temporary HOME for SSH), so your own jobs are not touched.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def median_of(action, repeats: int) -> float:
    action()    # the first of each kind pays for imports and the connection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def work(value):
    time.sleep(0.01)
    return value * value


def wait_ready(hold_id: str, timeout: float = 120) -> None:
    from rx_magic.flow.holds import list_holds
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = next(seen for seen in list_holds() if seen.record.id == hold_id)
        if seen.state == "ready":
            return
        if seen.state == "ended":
            raise SystemExit(f"hold {hold_id} ended before it was ready: {seen.record.reason}")
        time.sleep(0.1)
    raise SystemExit(f"hold {hold_id} was not ready after {timeout:.0f} s")


def main() -> None:
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    quick = "--quick" in sys.argv
    map_only = "--map-only" in sys.argv
    repeats = 5 if quick else 15
    root = Path(tempfile.mkdtemp(prefix="rx-bench-holds-"))
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        os.environ[name] = str(root / name.lower())
    os.environ.pop("RX_MAGIC_CONFIG", None)
    work_dir = root / "work"
    work_dir.mkdir()
    os.chdir(work_dir)
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython()
    ip.run_line_magic("load_ext", "rx_magic")
    ip.user_ns["x"] = 1
    opened = []

    def hold(line: str) -> str:
        hold_id = ip.run_line_magic("rx", f"hold {line}").seen.record.id
        opened.append(hold_id)
        wait_ready(hold_id)
        return hold_id

    def cell(line: str):
        def run():
            result = ip.run_cell(f"%%remote {line}\ny = x + 1")
            assert result.error_in_exec is None and ip.user_ns["y"] == 2, result.error_in_exec
        return run

    rows = []
    try:
        # 1. local
        hold("local --ncpus 2 --idle 10m")
        if not map_only:
            fresh = median_of(cell("local --no-hold"), repeats)
            held = median_of(cell("local"), repeats)
            rows.append(("trivial cell, local", ms(held), f"fresh process {ms(fresh)}", f"{held / fresh:.2f}x",
                         "< 100 ms and <= 0.5x"))

        # 3. --map of 200 x 10 ms over the 2-core local hold, beside a Pool(2) here
        ip.user_ns["work"] = None
        mapped = "%%remote local --map n=range(200)\nimport time\ntime.sleep(0.01)\nsquare = n * n"

        def run_map():
            result = ip.run_cell(mapped)
            assert result.error_in_exec is None and ip.user_ns["square"][-1] == 199 ** 2, result.error_in_exec
        map_time = median_of(run_map, 1 if quick else 3)

        def run_fresh_map():
            result = ip.run_cell(mapped.replace("--map", "--no-hold --map", 1))
            assert result.error_in_exec is None and ip.user_ns["square"][-1] == 199 ** 2, result.error_in_exec
        started = time.perf_counter()
        run_fresh_map()     # once: each element starts a Python of its own
        fresh_map = time.perf_counter() - started

        def pool():
            with multiprocessing.Pool(2) as processes:
                assert processes.map(work, range(200))[-1] == 199 ** 2
        pool_time = median_of(pool, 1 if quick else 3)
        rows.append(("--map 200 x 10 ms, 2-core hold", ms(map_time), f"Pool(2) here {ms(pool_time)}",
                     f"{map_time / pool_time:.2f}x", "<= 1.5x"))
        rows.append(("  the same --map, --no-hold", ms(fresh_map), f"Pool(2) here {ms(pool_time)}",
                     f"{fresh_map / pool_time:.2f}x", "(today's fresh job: a process per element)"))

        # 2. SSH, through the loopback sshd
        from sshd import SSHServer, sshd_available
        if map_only:
            pass
        elif not sshd_available():
            rows.append(("trivial cell, SSH hold", "skipped", "no sshd here", "", "< 0.5 s"))
        else:
            server = SSHServer(root / "sshd")
            server.start()
            try:
                home = root / "home"
                server.ssh_config(home)
                os.environ["HOME"] = str(home)
                os.environ.pop("SSH_AUTH_SOCK", None)
                config = root / "xdg_config_home" / "rx_magic" / "targets.toml"
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(f'[targets.ws]\nhost = "rxtest"\npython = "{sys.executable}"\n'
                                  f'workdir = "{root / "remote jobs"}"\n')
                hold("ws --idle 10m")
                fresh = median_of(cell("ws --no-hold"), repeats)
                held = median_of(cell("ws"), repeats)
                rows.append(("trivial cell, SSH loopback", ms(held), f"fresh job {ms(fresh)}", f"{held / fresh:.2f}x",
                             "< 0.5 s"))
            finally:
                release_all(ip, opened)
                import rx_magic.targets
                rx_magic.targets.close_all()
                server.stop()
    finally:
        release_all(ip, opened)
    width = max(len(row[0]) for row in rows)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average {load_before[0]:.1f} at the start, {load[0]:.1f} at the end, on {os.cpu_count()} cores "
              "(figures from a busy machine are slower)")
    print(f"{'what':<{width}}  {'through the hold':>16}  {'reference (same run)':<28} {'ratio':>6}  goal")
    for name, figure, reference, ratio, goal in rows:
        print(f"{name:<{width}}  {figure:>16}  {reference:<28} {ratio:>6}  {goal}")
    print(json.dumps({"rows": rows}))


def release_all(ip, opened: list[str]) -> None:
    for hold_id in list(opened):
        try:
            ip.run_line_magic("rx", f"release {hold_id}")
        except Exception:
            pass
        opened.remove(hold_id)


if __name__ == "__main__":
    main()

"""Round trips per operation over SSH, and how late a waiting cell notices its job's end over SSH.

    python benchmarks/bench_round_trips.py [--runs N]

Runs its own OpenSSH sshd on loopback (tests/sshd.py) with a temporary HOME and
temporary XDG folders, a target ``bench`` on the ``direct`` scheduler over it
(transport = "paramiko", then "openssh" through a ControlMaster it opens with the
test key), and counts, through the transport (``Transport.round_trips``: every
request that waits for the server's answer), the round trips of

1. a warm submit of ``y = x + 1`` (``x`` pushed): goal <= 4 (issue 16: 28 before);
2. one poll round (``watch.observe``, the scheduler asked) over N = 1, 10 and 200 running
   direct jobs: goal <= 2 whatever N (before: 6 per job's status.json, plus the query);
3. the pull of that cell's small result once it is done: goal <= 3 (before: 6 per file read);
   and wait + pull together (before: ~49).

Each is measured again "file by file": the same code with the transports' batched ``read_files`` and
``write_files`` replaced by the base class's one request per file (how files moved before), as the
reference of the same run; the "before" column is issue 16's count of the code before these changes.

The 200 "running jobs" of (2) are job folders with a status.json saying running and, as their
process, a ``sleep`` whose command line names the folder (as a runner's does), so that ps and
the folders answer as for real jobs without starting 200 Pythons on the machine.

4. End notice: for jobs of several lengths over SSH, the time from the runner recording the end
   (status.json's ``ended``; the target's clock is this machine's) to ``Job.wait`` returning,
   beside the same wait without the end notice (looking at the folder on a timer, as before).
   Goal: one round trip + 50 ms.

Seconds at 20 ms RTT, two ways: computed for every row (round trips x 20 ms + the time measured on
loopback), and measured for the rows marked "-20ms", whose targets reach the same sshd through a
proxy in a process of its own that holds every byte 10 ms each way (``--delay-proxy``; on loopback,
so no other test's traffic is delayed). ``tc qdisc ... netem`` on a veth pair into a network
namespace would add the delay in the kernel instead (root, iproute2 and sch_netem); this script
says whether the kernel has netem, but uses the proxy either way.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sshd import SSHServer, sshd_available  # noqa: E402

RTT = 0.020
BEFORE = {"submit": "28", "poll": "6 per job + 1", "pull": "6 per file", "wait_pull": "~49"}
GOALS = {"submit": 4, "poll": 2, "pull": 3}
LENGTHS = (0.3, 1.0, 3.0)


def delay_proxy(target_port: int, delay: float) -> None:
    """``--delay-proxy PORT SECONDS``: forward 127.0.0.1:(a free port, printed) to 127.0.0.1:PORT, every byte held
    ``delay`` seconds each way (in order, bandwidth unlimited, Nagle off)."""
    import asyncio
    import socket

    async def pipe(reader, writer) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()
        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(2**18)
                queue.put_nowait((loop.time() + delay, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()

    async def handle(client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        for writer in (client_writer, server_writer):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()
    asyncio.run(serve())


def netem_available() -> str:
    """Why a delayed link cannot be made here ("" when it can): tc netem on a veth pair in a namespace."""
    if os.geteuid() != 0 or not shutil.which("tc") or not shutil.which("ip"):
        return "needs root and iproute2 (ip, tc)"
    name = f"rxrt{os.getpid()}"
    try:
        subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True,
                       capture_output=True)
        done = subprocess.run(["tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "10ms"],
                              capture_output=True, text=True)
        return "" if done.returncode == 0 else f"tc netem refused: {done.stderr.strip()}"
    except subprocess.CalledProcessError as exc:
        return f"cannot make a veth pair: {exc.stderr.decode(errors='replace').strip()}"
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@contextlib.contextmanager
def file_by_file(batched: bool):
    """With ``batched`` False, the SSH transports read and write one file per request, as before the command
    agent's ``read``/``write`` (the base class's ``read_files``/``write_files``): the reference of the same run."""
    from rx_magic.transport.base import Transport
    from rx_magic.transport.openssh import OpenSSHTransport
    from rx_magic.transport.ssh import SSHTransport
    if batched:
        yield
        return
    saved = {(kind, name): getattr(kind, name) for kind in (SSHTransport, OpenSSHTransport)
             for name in ("read_files", "write_files")}
    for kind, name in saved:
        setattr(kind, name, getattr(Transport, name))
    try:
        yield
    finally:
        for (kind, name), method in saved.items():
            setattr(kind, name, method)


class Bench:
    def __init__(self, root: Path, runs: int):
        self.root, self.runs = root, runs
        self.server = SSHServer(root / "sshd")
        self.home = root / "home"
        self.workdir = root / "jobs"
        self.sleepers: list[subprocess.Popen] = []
        self.proxy: subprocess.Popen | None = None
        self.records: list = []         # the running jobs of the poll rounds
        self.rows: list[tuple[str, str, str, str, str]] = []

    def start(self) -> None:
        self.server.start()
        config = self.server.ssh_config(self.home)
        # ssh reads the passwd entry's home, not HOME: a wrapper on PATH gives it this config
        bin_folder = self.home / "bin"
        bin_folder.mkdir()
        (bin_folder / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {shlex.quote(str(config))} "
                                        '"$@"\n')
        (bin_folder / "ssh").chmod(0o755)
        os.environ["PATH"] = f"{bin_folder}{os.pathsep}{os.environ['PATH']}"
        os.environ["HOME"] = str(self.home)
        os.environ.pop("SSH_AUTH_SOCK", None)
        for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
            os.environ.pop(name, None)
            os.environ[name] = str(self.root / name.lower())
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
        os.environ.pop("RX_MAGIC_CONFIG", None)
        config = self.root / "xdg_config_home" / "rx_magic" / "targets.toml"
        config.parent.mkdir(parents=True)
        # the same sshd 20 ms away: host rxslow, through the delaying proxy
        self.proxy = subprocess.Popen([sys.executable, __file__, "--delay-proxy", str(self.server.port), str(RTT / 2)],
                                      stdout=subprocess.PIPE, text=True)
        slow_port = int(self.proxy.stdout.readline())
        ssh_config = self.home / ".ssh" / "config"
        block = ssh_config.read_text().split("Host rxjump")[0].replace("Host rxtest", "Host rxslow")
        ssh_config.write_text(ssh_config.read_text() + "\n" + block.replace(f"Port {self.server.port}",
                                                                              f"Port {slow_port}"))
        known = self.home / ".ssh" / "known_hosts"
        known.write_text(known.read_text() + self.server.known_hosts_line().replace(f"]:{self.server.port} ",
                                                                                    f"]:{slow_port} "))
        common = f'python = "{sys.executable}"\nworkdir = "{self.workdir}"\n'
        config.write_text("".join(f'[targets.{name}]\nhost = "{host}"\n{common}{extra}\n'
                                  for name, host, extra in (("paramiko", "rxtest", ""),
                                                            ("openssh", "rxtest", 'transport = "openssh"\n'),
                                                            ("paramiko-20ms", "rxslow", ""),
                                                            ("openssh-20ms", "rxslow", 'transport = "openssh"\n'))))

    def stop(self) -> None:
        import rx_magic.targets
        for process in [*self.sleepers, *([self.proxy] if self.proxy else [])]:
            process.kill()
            process.wait()
        try:
            rx_magic.targets.close_all()
        finally:
            for target in ("openssh", "openssh-20ms"):
                try:
                    from rx_magic.targets import get_target
                    subprocess.run(get_target(target).transport.control_command("exit"), capture_output=True,
                                   timeout=30)
                except Exception:
                    pass
            self.server.stop()

    def open_master(self, name: str) -> bool:
        from rx_magic.targets import get_target
        transport = get_target(name).transport
        done = subprocess.run(shlex.split(transport.login_command()), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60)
        return done.returncode == 0 and transport.master_alive()

    def row(self, transport: str, what: str, trips: float, seconds: float, goal: int | None, before: str,
            batched: bool = True) -> None:
        at_rtt = seconds + trips * RTT if "-20ms" not in transport else seconds
        met = "" if goal is None or not batched else ("yes" if trips <= goal else "NO")
        if not batched:
            transport += " (file by file)"
        self.rows.append((transport, what, f"{trips:g}", f"{seconds * 1000:.1f} ms", f"{at_rtt * 1000:.0f} ms",
                          f"{goal if goal is not None else '-'} {met}".strip(), before))

    # -- counting ----------------------------------------------------------------------------------

    def counted(self, name: str, action):
        from rx_magic.targets import get_target
        transport = get_target(name).transport
        before = transport.round_trips
        started = time.perf_counter()
        result = action()
        return result, transport.round_trips - before, time.perf_counter() - started

    def submit_and_pull(self, name: str, batched: bool = True) -> None:
        import rx_magic
        job = rx_magic.submit("y = x + 1", name, {"x": 1})       # cold: connect, agent, runtime upload
        job.pull({})
        submits, pulls, cycles, seconds = [], [], [], {"submit": [], "pull": [], "cycle": []}
        for _ in range(self.runs):
            job, trips, took = self.counted(name, lambda: rx_magic.submit("y = x + 1", name, {"x": 1}))
            submits.append(trips)
            seconds["submit"].append(took)
            job.wait()
            namespace = {}
            _, trips, took = self.counted(name, lambda: job.pull(namespace))
            assert namespace["y"] == 2
            pulls.append(trips)
            seconds["pull"].append(took)

            def cycle():
                ns = {}
                rx_magic.submit("y = x + 1", name, {"x": 1}).pull(ns)
                return ns
            _, trips, took = self.counted(name, cycle)
            cycles.append(trips)
            seconds["cycle"].append(took)
        median = statistics.median
        self.row(name, "warm submit", median(submits), median(seconds["submit"]), GOALS["submit"], BEFORE["submit"],
                 batched)
        self.row(name, "pull of a small result (job done)", median(pulls), median(seconds["pull"]), GOALS["pull"],
                 BEFORE["pull"], batched)
        self.row(name, "submit + wait + pull", median(cycles), median(seconds["cycle"]), None, BEFORE["wait_pull"],
                 batched)

    def running_jobs(self, count: int) -> list:
        """``count`` job folders that say running, each with a live process naming its folder."""
        import json

        from rx_magic.model.record import JobRecord
        from rx_magic.model.states import State
        from rx_magic.runtime.layout import JobPaths, new_job_id
        records = []
        for _ in range(count):
            job_id = new_job_id()
            paths = JobPaths(str(self.workdir), job_id)
            os.makedirs(paths.folder, mode=0o700)
            Path(paths.status_json).write_text(json.dumps({"state": "running", "started": time.time()}))
            process = subprocess.Popen(["bash", "-c", 'exec -a "rx_magic runner $0" sleep 3600', paths.folder])
            self.sleepers.append(process)
            records.append(JobRecord(job_id, "bench", "direct", str(self.workdir), str(process.pid), State.RUNNING))
        return records

    def poll_rounds(self, names: list[str], by_file: bool = True) -> None:
        from rx_magic.flow.watch import observe
        from rx_magic.targets import get_target
        for count in (1, 10, 200):
            self.records += self.running_jobs(max(0, count - len(self.records)))
            records = self.records[:count]
            for name, batched in ((name, batched) for name in names for batched in (True, False)[:1 + by_file]):
                target = get_target(name)
                for ask in (True, False):
                    trips, times = [], []
                    for _ in range(self.runs):
                        with file_by_file(batched):
                            seen, counted, took = self.counted(name, lambda: observe(target, records, ask))
                        running = sum((o.status or {}).get("state") == "running" for o in seen.values())
                        assert running == count, (running, count)
                        trips.append(counted)
                        times.append(took)
                    what = f"poll round, {count} running jobs" + ("" if ask else " (folders only)")
                    self.row(name, what, statistics.median(trips), statistics.median(times), GOALS["poll"],
                             BEFORE["poll"], batched)

    # -- end notice --------------------------------------------------------------------------------

    def end_notice(self, name: str) -> None:
        import rx_magic
        from rx_magic.schedulers.direct import DirectScheduler
        original = DirectScheduler.end_notice
        for length in LENGTHS:
            figures = {}
            for notice in (True, False):
                if not notice:
                    DirectScheduler.end_notice = lambda self, *args: None     # before: the folder on a timer
                try:
                    delays = []
                    for _ in range(self.runs):
                        job = rx_magic.submit(f"import time\ntime.sleep({length})", name, {})
                        job.wait()
                        delays.append(time.time() - job.status["ended"])
                    figures[notice] = statistics.median(delays)
                finally:
                    DirectScheduler.end_notice = original
            goal = f"goal one round trip + 50 ms: {(RTT + 0.05) * 1000:.0f} ms at 20 ms RTT"
            at_rtt = "measured at 20 ms RTT" if "-20ms" in name else \
                f"at 20 ms RTT, half a round trip more: {(figures[True] + RTT / 2) * 1000:.0f} ms"
            print(f"  {name}: job of {length:g} s: end noticed {figures[True] * 1000:.0f} ms after it "
                  f"(without the notice: {figures[False] * 1000:.0f} ms; {at_rtt}); {goal}", flush=True)

    def report(self) -> str:
        header = ("transport", "operation", "round trips", "seconds", "at 20 ms RTT (-20ms: measured)", "goal",
                  "before")
        rows = [header, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay-proxy", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.delay_proxy:
        return delay_proxy(int(args.delay_proxy[0]), float(args.delay_proxy[1]))
    if not sshd_available():
        sys.exit("bench_round_trips needs OpenSSH's sshd (/usr/sbin/sshd) and ssh-keygen")
    sys.path.insert(0, str(HERE.parent))
    why = netem_available()
    print("latency: 20 ms RTT through a delaying proxy on loopback (targets -20ms); "
          + ("tc netem would also be available here" if not why else f"no tc netem here ({why})"))
    with tempfile.TemporaryDirectory(prefix="rx-bench-rt-", dir="/tmp") as folder:
        bench = Bench(Path(folder), args.runs)
        bench.start()
        try:
            names, slow = ["paramiko"], ["paramiko-20ms"]
            for name, where in (("openssh", names), ("openssh-20ms", slow)):
                if bench.open_master(name):
                    where.append(name)
                else:
                    print(f"(no ControlMaster could be opened: {name} is left out)")
            for name in names + slow:
                for batched in (True, False):
                    print(f"submit and pull ({name}{'' if batched else ', file by file'}) ...", flush=True)
                    with file_by_file(batched):
                        bench.submit_and_pull(name, batched)
            print("poll rounds ...", flush=True)
            bench.poll_rounds(names)
            bench.poll_rounds(slow, by_file=False)     # 200 jobs file by file: 1,400 round trips, 28 s a round
            print("end notice ...", flush=True)
            for name in names + slow:
                bench.end_notice(name)
        finally:
            bench.stop()
            print(bench.report())
            print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"({os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()

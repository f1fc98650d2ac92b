"""How fast is the SSH transport? Prints its figures; asserts nothing.

    python benchmarks/bench_ssh.py [--quick] [--only PARTS]

Runs its own OpenSSH sshd on loopback (tests/sshd.py) with a temporary HOME
and temporary XDG folders, so your own keys, targets and jobs are not touched:

a. latency: the cold first connection; a warm ``rx_magic.submit`` of
   ``y = x + 1`` on ``direct`` over ssh, alone and with wait + pull (goal
   <= 100 ms on loopback); one command through the command agent vs a plain
   SSH exec; an SFTP stat round trip;
b. throughput of a 512 MiB file up (``open_atomic``, 4 MiB writes) and down
   (``open_read``, reads of one SFTP reply, 255 KiB, each written to the local file as it
   comes, as scp writes; and, for comparison, 4 MiB reads and ``readinto`` a reused 4 MiB
   buffer: in some runs these cost up to ~2 s more client CPU per GB, in others nothing more;
   not in the reader (the same ``readinto`` loop without the local write, shown too, costs what
   255 KiB reads do) but in writing 4 MiB at a time to the local file, whose bytes have left the
   CPU cache by then, while the kernel writes back earlier runs' files)
   against OpenSSH ``scp`` to and from the same sshd, with its default cipher and with
   ``-c aes128-gcm@openssh.com`` (the cipher rx_magic asks for first), as ratios (goal >= 1.0x
   both ways, against both) of the medians of 5 interleaved runs (each run starting the order one
   step later, so no variant always follows an upload); the fastest runs and the
   client's CPU seconds per GB are shown too, since other work on a small
   machine moves single runs by 2x. Files this big go through the user's ssh
   (transport/handoff.py; how many did is printed), all but the first of them through the spare ssh the
   transport keeps logged in after each (how many is printed): each of ours is followed, untimed, by the
   wait for that spare's login, as a user's next cell comes seconds after the last, so its login competes
   with neither ours nor scp's timed runs (ours then skip ssh's login, scp's each include theirs);
   the same upload and 255 KiB-read download with the handoff off (paramiko alone) are timed in the same
   runs for reference;
c. a 3 GiB transfer up and down, streamed from generated data, checked by
   size and sha256;
d. a cell reading an unchanged 200 MB array, submitted twice: bytes sent the
   second time (goal 0);
e. pulling one 500 MB value -- a numpy array (out of band) and a ``bytes``
   (inside the pickle stream) -- in a fresh child process: how much its peak
   RSS grew over its RSS before the pull, as a multiple of the value (goal
   about 1x: the value, not a second copy of it).

Scratch files live in one temporary folder under /tmp, removed at the end.
``--quick`` shrinks the transfers (64 MiB, 256 MiB, 20 MB, 50 MB) to try the script;
``--only bc`` runs only the parts named (here b and c); not in the default set:

f. where the handoff to the user's ssh pays: uploads and downloads of 8 to 256 MiB with the handoff
   off (paramiko alone) and with it at any size (thresholds 1 MiB, no spare ssh: each logs ssh in itself,
   as the first big transfer on a connection does), medians of 3 interleaved runs; the thresholds
   ``handoff.HANDOFF_BYTES`` (up) and ``READ_HANDOFF_BYTES`` (down) are where ssh's own login
   stops costing more than it saves.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sshd import SSHServer, sshd_available

MiB = 2**20
PIECE = 4 * MiB
REPEATS = 5


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def median_time(action, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


class Bench:
    def __init__(self, root: Path, quick: bool):
        self.root, self.quick = root, quick
        self.payload = (64 if quick else 512) * MiB
        self.big = (256 if quick else 3 * 1024) * MiB
        self.array_bytes = (20 if quick else 200) * 10**6
        self.pulled_bytes = (50 if quick else 500) * 10**6
        self.server = SSHServer(root / "sshd")
        self.home = root / "home"
        self.remote = root / "remote"           # "the other machine's" disk, reached only through sshd
        self.local = root / "local"
        self.rows: list[tuple[str, str, str, str]] = []
        self.throughput_detail: dict[str, list[str]] = {}

    # -- set up ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.server.start()
        self.server.ssh_config(self.home)
        os.environ["HOME"] = str(self.home)
        os.environ.pop("SSH_AUTH_SOCK", None)
        for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
            os.environ[name] = str(self.root / name.lower())
        os.environ.pop("RX_MAGIC_CONFIG", None)
        self.remote.mkdir()
        self.local.mkdir()
        config = self.root / "xdg_config_home" / "rx_magic" / "targets.toml"
        config.parent.mkdir(parents=True)
        config.write_text(f'[targets.bench]\nhost = "rxtest"\npython = "{sys.executable}"\n'
                          f'workdir = "{self.root / "jobs"}"\n')

    def stop(self) -> None:
        import rx_magic.targets
        rx_magic.targets.close_all()
        self.server.stop()

    @property
    def transport(self):
        from rx_magic.targets import get_target
        return get_target("bench").transport

    # -- (a) latency -------------------------------------------------------------------------------

    def latency(self) -> None:
        import rx_magic
        from rx_magic.transport.ssh import SSHTransport

        def cold_connect():
            with SSHTransport("rxtest") as fresh:
                fresh.connect()
        cold_connect()                               # warm the page cache for sshd and paramiko's imports
        connect, _ = median_time(cold_connect, 5)
        print(f"  cold connection (TCP, key exchange, host key, auth; median of 5): {ms(connect)}")

        def cycle(target: str) -> tuple[float, float]:
            started = time.perf_counter()
            job = rx_magic.submit("y = x + 1", target, {"x": 1})
            submitted = time.perf_counter()
            job.wait()
            namespace = {}
            job.pull(namespace)
            assert namespace == {"y": 2}, namespace
            return submitted - started, time.perf_counter() - started

        first_submit, first_total = cycle("bench")
        print(f"  cold first cell on a new target (connect, agent, environment check, runtime upload): "
              f"submit {ms(first_submit)}, with wait + pull {ms(first_total)}")
        runs = [cycle("bench") for _ in range(10)]
        submit = statistics.median(run[0] for run in runs)
        total = statistics.median(run[1] for run in runs)
        cycle("local")
        local = [cycle("local") for _ in range(10)]
        local_total = statistics.median(run[1] for run in local)

        transport = self.transport
        agent, _ = median_time(lambda: transport.run(["true"]), 30)
        plain, _ = median_time(lambda: transport._exec(("true",), None, 30), 30)
        stat, _ = median_time(lambda: transport.sftp.stat(str(self.remote)), 100)

        self.row("a", "warm submit step, `y = x + 1` (median of 10)", ms(submit), "<= 100 ms",
                 submit <= 0.1)
        self.row("a", "warm submit + wait + pull (median of 10)", ms(total), "", None)
        self.row("a", "  same cell on `local`, for reference", ms(local_total), "", None)
        self.row("a", "cold first connection", ms(connect), "", None)
        self.row("a", "cold first cell: submit / with wait + pull", f"{ms(first_submit)} / {ms(first_total)}",
                 "", None)
        self.row("a", "one command (`true`) through the command agent", ms(agent), "", None)
        self.row("a", "one command (`true`) as a plain SSH exec (starts the login shell)", ms(plain), "", None)
        self.row("a", "SFTP stat round trip", ms(stat), "", None)

    # -- (b) throughput against scp ----------------------------------------------------------------

    def scp(self, source: str, destination: str, *options: str) -> None:
        subprocess.run(["scp", "-q", "-F", "/dev/null", "-P", str(self.server.port), *options,
                        "-o", f"UserKnownHostsFile={self.home / '.ssh' / 'known_hosts'}",
                        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                        "-i", str(self.server.user_key), source, destination], check=True)

    @staticmethod
    def handoff_at(threshold):
        """Set the sizes from which transfers go through the user's ssh (up, down, up to a spare already logged
        in); returns the settings replaced."""
        from rx_magic.transport import handoff
        old = handoff.HANDOFF_BYTES, handoff.READ_HANDOFF_BYTES, handoff.SPARE_HANDOFF_BYTES
        every = threshold if isinstance(threshold, tuple) else (threshold,) * 3
        handoff.HANDOFF_BYTES, handoff.READ_HANDOFF_BYTES, handoff.SPARE_HANDOFF_BYTES = every
        return old

    def paramiko_alone(self, action):
        def run():
            old = self.handoff_at(2**62)
            try:
                action()
            finally:
                self.handoff_at(old)
        return run

    def up_ours(self, source: Path, destination: Path) -> None:
        with open(source, "rb") as file, self.transport.open_atomic(str(destination)) as remote:
            while piece := file.read(PIECE):
                remote.write(piece)

    def down_ours(self, source: Path, destination: Path, piece_size: int = PIECE) -> None:
        with self.transport.open_read(str(source)) as remote, open(destination, "wb") as file:
            while piece := remote.read(piece_size):
                file.write(piece)

    def down_ours_into(self, source: Path, destination: Path, write: bool = True) -> None:
        """Without ``write``, the bytes are only read (as a pull reads a value into its place), and
        ``destination`` made a sparse file of the size read, to be checked."""
        buffer = memoryview(bytearray(PIECE))
        read = 0
        with self.transport.open_read(str(source)) as remote, open(destination, "wb") as file:
            while count := remote.readinto(buffer):
                read += count
                if write:
                    file.write(buffer[:count])
            file.truncate(read)

    def throughput(self) -> None:
        source = self.local / "payload"
        with open(source, "wb") as file:
            for _ in range(self.payload // PIECE):
                file.write(os.urandom(PIECE))
        uploaded, downloaded = self.remote / "payload", self.local / "payload.down"
        at = f"{self.server.user}@127.0.0.1:"
        from rx_magic.transport.ssh import SFTP_REQUEST_SIZE
        keys = ("up ours", "up paramiko", "up scp", "up scp gcm", "down ours", "down ours small", "down paramiko",
                "down ours into", "down ours into unwritten", "down scp", "down scp gcm")
        gcm = ("-c", "aes128-gcm@openssh.com")
        times = {key: [] for key in keys}
        cpu = {key: [] for key in keys}         # client CPU seconds: this process and its children (ssh, scp)

        def timed(key, action, made: Path):
            clock = client_cpu(False) + client_cpu(True)
            started = time.perf_counter()
            action()
            times[key].append(time.perf_counter() - started)
            cpu[key].append(client_cpu(False) + client_cpu(True) - clock)
            assert made.stat().st_size == self.payload, (key, made.stat().st_size)
            if " ours" in f" {key}":
                self.transport.wait_spare(60)   # untimed: the spare logs in before the next run starts

        ups = [("up ours", lambda: self.up_ours(source, uploaded)),
               ("up paramiko", self.paramiko_alone(lambda: self.up_ours(source, uploaded))),
               ("up scp", lambda: self.scp(str(source), at + str(uploaded))),
               ("up scp gcm", lambda: self.scp(str(source), at + str(uploaded), *gcm))]
        downs = [("down ours", lambda: self.down_ours(uploaded, downloaded)),
                 ("down ours small", lambda: self.down_ours(uploaded, downloaded, SFTP_REQUEST_SIZE)),
                 ("down paramiko",
                  self.paramiko_alone(lambda: self.down_ours(uploaded, downloaded, SFTP_REQUEST_SIZE))),
                 ("down ours into", lambda: self.down_ours_into(uploaded, downloaded)),
                 ("down ours into unwritten", lambda: self.down_ours_into(uploaded, downloaded, write=False)),
                 ("down scp", lambda: self.scp(at + str(uploaded), str(downloaded))),
                 ("down scp gcm", lambda: self.scp(at + str(uploaded), str(downloaded), *gcm))]
        # interleaved, so a slow moment hits both sides; each run starts the order one step later, so no
        # variant always comes first after an upload (whose 512 MiB the kernel is still writing back)
        handoffs, spares = self.transport.handoffs, self.transport.spares_used
        for repeat in range(REPEATS):
            for index, (key, action) in enumerate(ups[repeat % len(ups):] + ups[:repeat % len(ups)]):
                timed(key, action, uploaded)
                if index < len(ups) - 1:
                    uploaded.unlink()
            for key, action in downs[repeat % len(downs):] + downs[:repeat % len(downs)]:
                timed(key, action, downloaded)
                downloaded.unlink()
            uploaded.unlink()
        source.unlink()
        median = {key: rate(self.payload, statistics.median(values)) for key, values in times.items()}
        best = {key: rate(self.payload, min(values)) for key, values in times.items()}
        per_gb = {key: statistics.median(values) / (self.payload / 1e9) for key, values in cpu.items()}
        size = f"{self.payload // MiB} MiB"
        handoffs, spares = self.transport.handoffs - handoffs, self.transport.spares_used - spares
        for ours_key, label, goal in (("up ours", "upload (open_atomic, 4 MiB writes)", True),
                                      ("up paramiko", "upload, paramiko alone (handoff off)", False),
                                      ("down ours small",
                                       f"download (open_read, {SFTP_REQUEST_SIZE // 1024} KiB reads)", True),
                                      ("down paramiko", f"download, paramiko alone, {SFTP_REQUEST_SIZE // 1024} KiB "
                                       "reads", False),
                                      ("down ours", "download (open_read, 4 MiB reads)", False),
                                      ("down ours into", "download (open_read, readinto a 4 MiB buffer)", False),
                                      ("down ours into unwritten",
                                       "download (readinto a 4 MiB buffer, not written)", False)):
            scp_key = ours_key.split()[0] + " scp"
            ours, theirs = median[ours_key], median[scp_key]
            self.row("b", f"{size} {label}: ours / scp, median",
                     f"{ours:.0f} / {theirs:.0f} MB/s = {ours / theirs:.2f}x", ">= 1.0x" if goal else "",
                     ours / theirs >= 1.0 if goal else None)
            self.row("b", "    fastest runs", f"{best[ours_key]:.0f} / {best[scp_key]:.0f} MB/s = "
                     f"{best[ours_key] / best[scp_key]:.2f}x", "", None)
            self.row("b", "    client CPU per GB", f"{per_gb[ours_key]:.2f} / {per_gb[scp_key]:.2f} s", "", None)
            if goal:        # the same against scp with the cipher rx_magic prefers
                ours, theirs = median[ours_key], median[scp_key + " gcm"]
                self.row("b", "    ours / scp -c aes128-gcm@openssh.com, median",
                         f"{ours:.0f} / {theirs:.0f} MB/s = {ours / theirs:.2f}x", ">= 1.0x", ours / theirs >= 1.0)
                self.row("b", "    client CPU per GB", f"{per_gb[ours_key]:.2f} / {per_gb[scp_key + ' gcm']:.2f} s",
                         "", None)
        from rx_magic.transport import handoff
        # ours, but for the two with the handoff off: one upload (ssh starts at HANDOFF_BYTES and needs its login's
        # time to take over), four downloads (of files that big)
        uploads = self.payload >= 2 * handoff.HANDOFF_BYTES
        expected = REPEATS * (uploads + 4 * (self.payload >= handoff.READ_HANDOFF_BYTES))
        self.row("b", "transfers of ours that went through the user's ssh", f"{handoffs} of {expected}",
                 f"{expected}", handoffs == expected)
        self.row("b", "    of them through a spare ssh logged in before they started", f"{spares} of {handoffs}",
                 f"{max(handoffs - 1, 0)}", spares == max(handoffs - 1, 0))
        self.throughput_detail = {key: [f"{rate(self.payload, t):.0f}" for t in values]
                                  for key, values in times.items()}

    # -- (f) where the handoff pays ----------------------------------------------------------------

    def handoff_threshold(self) -> None:
        sizes = [8, 16, 32, 64, 128, 256]
        source = self.local / "sized"
        remote = self.remote / "sized"
        back = self.local / "sized.down"
        times: dict[tuple, list[float]] = {}
        for size in sizes:
            with open(source, "wb") as file:
                for _ in range(size * MiB // PIECE):
                    file.write(os.urandom(PIECE))
            for repeat in range(3):
                ways = [("paramiko", 2**62), ("ssh", MiB)]
                for way, threshold in ways[repeat % 2:] + ways[:repeat % 2]:
                    old = self.handoff_at(threshold)
                    try:
                        for direction, action in (("up", lambda: self.up_ours(source, remote)),
                                                  ("down", lambda: self.down_ours(remote, back, 255 * 1024))):
                            self.transport._end_spare()     # each logs ssh in itself, as a connection's first does
                            started = time.perf_counter()
                            action()
                            times.setdefault((size, direction, way), []).append(time.perf_counter() - started)
                        back.unlink()
                    finally:
                        self.handoff_at(old)
                remote.unlink()
        source.unlink()
        for size in sizes:
            for direction in ("up", "down"):
                alone, handed = (statistics.median(times[(size, direction, way)]) for way in ("paramiko", "ssh"))
                self.row("f", f"{size} MiB {direction}: paramiko alone / through ssh, median of 3",
                         f"{ms(alone)} / {ms(handed)} = {alone / handed:.2f}x", "", None)

    # -- (c) a transfer of several GiB -------------------------------------------------------------

    def big_transfer(self) -> None:
        base = bytearray(os.urandom(PIECE))
        pieces = self.big // PIECE
        remote = self.remote / "big"
        digest = hashlib.sha256()
        handoffs, spares = self.transport.handoffs, self.transport.spares_used
        started = time.perf_counter()
        with self.transport.open_atomic(str(remote)) as file:
            for index in range(pieces):
                base[:8] = index.to_bytes(8, "little")      # every piece differs, so order counts
                digest.update(base)
                file.write(base)
        up = time.perf_counter() - started
        size = self.transport.sftp.stat(str(remote)).st_size
        received = hashlib.sha256()
        count = 0
        started = time.perf_counter()
        with self.transport.open_read(str(remote)) as file:
            while piece := file.read(PIECE):
                received.update(piece)
                count += len(piece)
        down = time.perf_counter() - started
        handoffs, spares = self.transport.handoffs - handoffs, self.transport.spares_used - spares
        remote.unlink()
        intact = size == count == self.big and received.hexdigest() == digest.hexdigest()
        gib = f"{self.big / 2**30:g} GiB"
        self.row("c", f"{gib} upload, streamed + sha256", f"{up:.1f} s, {rate(self.big, up):.0f} MB/s",
                 "completes", size == self.big)
        self.row("c", f"{gib} download + sha256", f"{down:.1f} s, {rate(self.big, down):.0f} MB/s",
                 "completes", count == self.big)
        self.row("c", f"{gib} size and sha256 match", "yes" if intact else f"NO: {size}, {count} bytes",
                 "match", intact)
        self.row("c", "of the two, went through the user's ssh", str(handoffs), "", None)
        self.row("c", "    of them through a spare ssh logged in before they started", str(spares), "", None)

    # -- (d) rerun with unchanged data -------------------------------------------------------------

    def rerun(self) -> None:
        import numpy as np

        import rx_magic
        big = np.random.default_rng(0).random(self.array_bytes // 8)
        runs = []
        for _ in range(2):
            started = time.perf_counter()
            job = rx_magic.submit("total = float(big[:1000].sum())", "bench", {"big": big})
            job.wait()
            namespace = {}
            job.pull(namespace)
            runs.append((time.perf_counter() - started, job.bytes_sent))
            assert namespace["total"] == float(big[:1000].sum())
        (first, first_sent), (second, second_sent) = runs
        mb = f"{self.array_bytes / 1e6:.0f} MB"
        self.row("d", f"cell reading a {mb} array, first run", f"{first:.2f} s, {first_sent / 1e6:.1f} MB sent",
                 "", None)
        self.row("d", "same cell, array unchanged, second run", f"{second:.2f} s, {second_sent} bytes sent",
                 "0 bytes", second_sent == 0)

    # -- (e) peak memory of a large pull ----------------------------------------------------------

    def pull_memory(self) -> None:
        mb = f"{self.pulled_bytes / 1e6:.0f} MB"
        for kind, label in (("array", f"pull a {mb} numpy array (out of band)"),
                            ("bytes", f"pull a {mb} bytes (in the pickle stream)")):
            done = subprocess.run([sys.executable, __file__, "--pull-peak", kind, str(self.pulled_bytes)],
                                  capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            growth = figures["peak"] - figures["before"]
            ratio = growth / self.pulled_bytes
            # what comes on top of the value (buffers in flight, allocator arenas) is about 35 MB, whatever its
            # size: the 50 MB of --quick cannot show the ratio, only whether it arrived intact
            self.row("e", f"{label}: peak RSS growth",
                     f"{growth / 1e6:.0f} MB = {ratio:.2f}x, {figures['seconds']:.1f} s",
                     "intact" if self.quick else "< 1.25x, intact",
                     figures["intact"] and (self.quick or ratio < 1.25))

    # -- report ------------------------------------------------------------------------------------

    def row(self, part: str, what: str, figure: str, goal: str, met: bool | None) -> None:
        verdict = "" if met is None else ("met" if met else "MISSED")
        self.rows.append((part, what, figure, f"{goal} {verdict}".strip()))

    def report(self) -> str:
        width = max(len(row[1]) for row in self.rows)
        figure_width = max(len(row[2]) for row in self.rows)
        lines, part = [], None
        for row in self.rows:
            if row[0] != part:
                part = row[0]
                lines.append("")
            lines.append(f"({row[0]}) {row[1]:<{width}}  {row[2]:<{figure_width}}  {row[3]}")
        return "\n".join(lines)


def client_cpu(children: bool) -> float:
    """CPU seconds used so far by this process (with its threads), or by its finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pull_peak(kind: str, nbytes: int) -> None:
    """In a child process (so nothing else is in its peak RSS): pull one large value; print the figures."""
    import gc

    import numpy as np

    import rx_magic
    code = {"array": f"import numpy as np\nbig = np.arange({nbytes // 8}, dtype=np.float64)",
            "bytes": f"big = bytes(range(256)) * {nbytes // 256}"}[kind]
    job = rx_magic.submit(code, "bench", {})
    job.wait()
    gc.collect()
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    started = time.perf_counter()
    namespace = {}
    job.pull(namespace)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    big = namespace["big"]
    if kind == "array":
        intact = bool(np.array_equal(big, np.arange(nbytes // 8, dtype=np.float64)))
    else:
        intact = big == bytes(range(256)) * (nbytes // 256)
    print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "intact": intact}))


def versions() -> str:
    import paramiko
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip().split(",")[0]
    return (f"{ssh}, paramiko {paramiko.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cpus, loopback")


def main() -> None:
    if sys.argv[1:2] == ["--pull-peak"]:
        return pull_peak(sys.argv[2], int(sys.argv[3]))
    quick = "--quick" in sys.argv
    parts = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else "abcde"
    if not sshd_available() or shutil.which("scp") is None:
        sys.exit("bench_ssh needs OpenSSH's sshd (/usr/sbin/sshd), ssh-keygen and scp")
    print(f"rx_magic SSH transport benchmark: {versions()}")
    with tempfile.TemporaryDirectory(prefix="rx-bench-ssh-", dir="/tmp") as folder:
        bench = Bench(Path(folder), quick)
        bench.start()
        try:
            for part, title, action in (("a", "latency", bench.latency),
                                        ("b", "throughput against scp", bench.throughput),
                                        ("c", "large transfer", bench.big_transfer),
                                        ("d", "rerun with unchanged data", bench.rerun),
                                        ("e", "peak memory of a large pull", bench.pull_memory),
                                        ("f", "where the handoff to ssh pays", bench.handoff_threshold)):
                if part in parts:
                    print(f"({part}) {title} ...", flush=True)
                    action()
        finally:
            bench.stop()
            if bench.rows:
                print(bench.report())
            if bench.throughput_detail:
                print(f"\n(b) each of the {REPEATS} interleaved runs, MB/s: " + "; ".join(
                    f"{key} {', '.join(values)}" for key, values in bench.throughput_detail.items()))
            print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"({os.cpu_count()} cpus; other work on the machine shows up as run-to-run spread)")


if __name__ == "__main__":
    main()

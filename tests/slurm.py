"""A real single-node Slurm on loopback, for the tests: munged, slurmctld and slurmd of its own.

Every daemon is started by absolute path in the foreground, with its own key,
socket, ports, spool, state and logs under one folder, so nothing touches a
system Slurm and the tests hold each PID and end only those, by PID. Clients
find it through ``SLURM_CONF`` and are always run under ``timeout``: a client
blocks for minutes while slurmctld is down.

Facts this configuration rests on (learned on these machines): no cgroups, so
``proctrack/linuxproc`` and ``task/none``; ``DefMemPerCPU`` or one job takes the
whole node; ``EnforcePartLimits=ALL`` or an impossible request pends forever;
``OverMemoryKill`` with a 1 s sampling interval to enforce ``--mem``; the log
folder must be writable by SlurmUser or slurmctld dies silently; slurmd may
ignore SIGTERM. Accounting storage is off, so ``sacct`` fails and schedulers
must fall back to ``squeue``.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
SLURMDBD = "/usr/sbin/slurmdbd"
MARIADBD = "/usr/sbin/mariadbd"
MARIADB_INSTALL_DB = "/usr/bin/mariadb-install-db"
MARIADB = "/usr/bin/mariadb"
CLIENTS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo")
NODE = "rxnode"
PARTITION = "rxtest"


def slurm_available() -> bool:
    return all(os.path.exists(path) for path in (MUNGED, SLURMCTLD, SLURMD)) and \
        all(shutil.which(client) for client in CLIENTS) and shutil.which("timeout") is not None


def accounting_available() -> bool:
    """Whether slurmdbd and MariaDB are installed, for a cluster whose ``sacct`` works."""
    return all(os.path.exists(path) for path in (SLURMDBD, MARIADBD, MARIADB_INSTALL_DB, MARIADB))


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def detected_node() -> dict[str, int]:
    """This machine's CPUs and topology as slurmd sees them (``slurmd -C``), memory in MB."""
    found = subprocess.run(["timeout", "20", SLURMD, "-C"], capture_output=True, text=True, check=True).stdout
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", found.splitlines()[0])}


class LoopbackSlurm:
    """A private Slurm cluster of one node, ``rxnode``, in one partition, ``rxtest``.

    ``memory_mb`` caps the node's memory (it must not exceed the real memory);
    ``min_job_age`` is how long slurmctld keeps an ended job for ``squeue``.
    Without ``accounting`` there is no accounting storage and ``sacct`` refuses;
    with it, a private MariaDB and slurmdbd keep every job, as at most sites.
    """

    def __init__(self, root: Path, *, memory_mb: int = 4000, min_job_age: int = 30, accounting: bool = False):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)       # jobs, run as this user, read their scripts below it
        self.user = getpass.getuser()
        self.munge_dir = root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.log_dir = root / "log"
        self.state_dir = root / "state"
        self.spool_dir = root / "spool"
        self.config = root / "slurm.conf"
        self.controller_port, self.node_port, self.database_port, self.dbd_port = free_ports(4)
        self.accounting = accounting
        self.cluster = "rxacct" if accounting else "rxtest"
        self.database_dir = root / "mariadb"
        node = detected_node()
        self.cpus = node["CPUs"]
        self.memory_mb = min(memory_mb, node["RealMemory"])
        self.min_job_age = min_job_age
        self.topology = (f"CPUs={node['CPUs']} Boards={node.get('Boards', 1)} "
                         f"SocketsPerBoard={node['SocketsPerBoard']} CoresPerSocket={node['CoresPerSocket']} "
                         f"ThreadsPerCore={node['ThreadsPerCore']}")
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a client needs in its environment to reach this cluster."""
        return {"SLURM_CONF": str(self.config)}

    # ------------------------------------------------------------------------- set-up

    def _write_files(self) -> None:
        for folder in (self.munge_dir, self.log_dir, self.state_dir, self.spool_dir, self.database_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.spool_dir / NODE).mkdir(exist_ok=True)
        os.chmod(self.munge_dir, 0o755)      # clients reach the socket; the key itself is 0600
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        hostname = socket.gethostname().split(".")[0]
        self.config.write_text("\n".join([
            f"ClusterName={self.cluster}",
            f"SlurmctldHost={hostname}(127.0.0.1)",
            f"SlurmctldPort={self.controller_port}",
            f"SlurmdPort={self.node_port}",
            f"SlurmUser={self.user}",
            f"SlurmdUser={self.user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={self.spool_dir}/%n",
            f"SlurmctldPidFile={self.root}/slurmctld.pid",
            f"SlurmdPidFile={self.root}/slurmd.pid",
            f"SlurmctldLogFile={self.log_dir}/slurmctld.log",
            f"SlurmdLogFile={self.log_dir}/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=500",
            "EnforcePartLimits=ALL",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherParams=OverMemoryKill",
            "JobAcctGatherFrequency=task=1",
            *(["AccountingStorageType=accounting_storage/slurmdbd",
               "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={self.dbd_port}",
               f"AccountingStoragePass={self.munge_socket}"]     # the munge socket, for slurmdbd's connection
              if self.accounting else ["AccountingStorageType=accounting_storage/none"]),
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            # start jobs as soon as they are submitted or a CPU frees up, not every 3 s
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000",
            "ReturnToService=2",
            "KillWait=2",
            "OverTimeLimit=0",
            f"MinJobAge={self.min_job_age}",
            "InactiveLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "MessageTimeout=10",
            f"NodeName={NODE} NodeHostname={hostname} NodeAddr=127.0.0.1 {self.topology} "
            f"RealMemory={self.memory_mb} State=UNKNOWN",
            # up to 4 jobs share a core: slurmctld starts jobs once a second, so 50 short jobs finish sooner
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
            "",
        ]))

    def start(self, timeout: float = 60) -> float:
        """Start munged, slurmctld and slurmd; return once the node takes jobs. Returns the seconds taken."""
        started = time.monotonic()
        self._write_files()
        try:
            self._spawn("munged", [MUNGED, "--foreground", "--force",
                                   f"--key-file={self.munge_dir / 'munge.key'}",
                                   f"--socket={self.munge_socket}",
                                   f"--pid-file={self.munge_dir / 'munged.pid'}",
                                   f"--seed-file={self.munge_dir / 'munged.seed'}",
                                   f"--log-file={self.log_dir / 'munged.log'}"])
            self._wait(lambda: self.munge_socket.exists(), "munged to open its socket", started + timeout)
            if self.accounting:
                self._start_accounting(started + timeout)
            self._spawn("slurmctld", [SLURMCTLD, "-D", "-i", "-f", str(self.config)])
            self._wait(lambda: self.client("scontrol", "ping", timeout=5).stdout.count("UP") > 0,
                       "slurmctld to answer", started + timeout)
            self._spawn("slurmd", [SLURMD, "-D", "-N", NODE, "-f", str(self.config)])
            self._wait(self._node_is_idle, f"node {NODE} to become idle", started + timeout)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def _start_accounting(self, deadline: float) -> None:
        """A private MariaDB on a loopback port, and slurmdbd storing into it."""
        data, database_socket = self.database_dir / "data", self.database_dir / "mariadb.socket"
        installed = subprocess.run(
            ["timeout", "60", MARIADB_INSTALL_DB, "--no-defaults", f"--datadir={data}", f"--user={self.user}",
             "--auth-root-authentication-method=normal", "--skip-test-db"], capture_output=True, text=True)
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {installed.stdout}{installed.stderr}")
        self._spawn("mariadbd", [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={database_socket}",
                                 "--bind-address=127.0.0.1", f"--port={self.database_port}", f"--user={self.user}",
                                 f"--pid-file={self.database_dir / 'mariadb.pid'}",
                                 f"--log-error={self.log_dir / 'mariadb.log'}", "--innodb-buffer-pool-size=16M"])
        self._wait(database_socket.exists, "MariaDB to open its socket", deadline)
        grant = ("CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'rx-test'; "
                 "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        granted = subprocess.run(["timeout", "30", MARIADB, "--no-defaults", f"--socket={database_socket}",
                                  "-u", "root", "-e", grant], capture_output=True, text=True)
        if granted.returncode != 0:
            raise RuntimeError(f"could not create the slurm database user: {granted.stderr}")
        # slurmdbd reads slurmdbd.conf beside SLURM_CONF, and only if SlurmUser alone can read it
        dbd_config = self.config.parent / "slurmdbd.conf"
        dbd_config.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={self.dbd_port}",
            f"SlurmUser={self.user}", f"PidFile={self.root}/slurmdbd.pid", f"LogFile={self.log_dir}/slurmdbd.log",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={self.database_port}",
            "StorageUser=slurm", "StoragePass=rx-test", "StorageLoc=slurm_acct_db", "",
        ]))
        os.chmod(dbd_config, 0o600)
        self._spawn("slurmdbd", [SLURMDBD, "-D"])
        self._wait(lambda: _listening(self.dbd_port), "slurmdbd to listen", deadline)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.out", "ab")
        self.processes[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                env={**os.environ, **self.env})
        log.close()

    def _node_is_idle(self) -> bool:
        state = self.client("sinfo", "-h", "-N", "-n", NODE, "-o", "%T", timeout=5).stdout.strip()
        return state in ("idle", "mixed", "allocated")

    def _wait(self, ready, what: str, deadline: float) -> None:
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {process.returncode} while waiting for {what}:\n"
                                       + self.logs())
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for {what}:\n" + self.logs())
            time.sleep(0.1)

    def logs(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*")):
            text = path.read_text(errors="replace").strip().splitlines()[-lines:]
            if text:
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------------- use

    def client(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster, killed after ``timeout`` seconds."""
        return subprocess.run(["timeout", "-k", "5", str(timeout), *argv], capture_output=True, text=True,
                              env={**os.environ, **self.env})

    def squeue_says(self, scheduler_id: str, fields: str = "%T") -> str:
        """squeue's word on a job, "STATE" (or ``fields``), for a test's own check of what Slurm recorded."""
        found = self.client("squeue", "--noheader", "--states=all", f"--format={fields}", "--jobs", scheduler_id)
        return found.stdout.strip()

    # ------------------------------------------------------------------------- tear-down

    def stop(self) -> None:
        """Cancel every job, then end the daemons this object started, by PID: SIGTERM, then SIGKILL."""
        controller = self.processes.get("slurmctld")
        if controller is not None and controller.poll() is None:
            self.client("scancel", f"--partition={PARTITION}", timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.client(
                    "squeue", "--noheader", "--states=RUNNING,COMPLETING", "--format=%i", timeout=5).stdout.strip():
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:       # slurmd may ignore SIGTERM
                process.kill()
                process.wait(10)
        for pid in self.step_daemons():             # a job step that outlived its slurmd
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def step_daemons(self) -> list[int]:
        """PIDs of slurmstepd processes of this cluster: those started with our ``SLURM_CONF``."""
        mine = f"SLURM_CONF={self.config}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() == "slurmstepd" and \
                        mine in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids


def start_for_tests(root: Path, *, accounting: bool = False) -> LoopbackSlurm:
    """Start a cluster for a test session; skip when Slurm (or, for ``accounting``, MariaDB) is missing.

    Under CI (``CI`` set) a missing package fails instead of skipping.
    """
    import pytest
    missing = [] if slurm_available() else ["slurm-wlm", "munge"]
    if accounting and not accounting_available():
        missing += ["slurmdbd", "mariadb-server"]
    if missing:
        message = f"not installed: apt-get install {' '.join(missing)}"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    cluster = LoopbackSlurm(root, accounting=accounting)
    cluster.start()
    return cluster

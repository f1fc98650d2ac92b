"""SSH targets end to end: a real IPython shell, a real OpenSSH ``sshd`` on loopback, no fakes.

The server (tests/sshd.py) runs on 127.0.0.1 with its own host key and one
authorized user key; each test gets a fresh ``HOME`` whose ``~/.ssh/config``
names it ``rxtest`` (and ``rxjump``, reached through ``rxtest``). The remote
side is this machine, so what a job leaves on the target is checked on disk.
"""

import hashlib
import os
import platform
import shlex
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import newest_job, process_is_gone, run_remote, usage_error, wait_for
from sshd import fingerprint, keygen

import rx_magic
from rx_magic.model.states import State

# ----------------------------------------------------------------------------- helpers

def assert_nothing_submitted(workdir):
    assert not Path(workdir).exists() or not list(Path(workdir).glob("rx-*"))
    assert rx_magic.jobs() == []


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(text).lstrip())
    path.chmod(0o755)
    return path


def accepted_logins(server) -> int:
    return server.log.read_text().count("Accepted publickey")


class Terminal:
    """Stands in for the notebook's stdout or stderr; ``on(text, action)`` runs ``action`` once ``text`` shows."""

    def __init__(self):
        self.text = ""
        self.triggers = []

    def on(self, text, action):
        self.triggers.append((text, action))

    def write(self, text):
        self.text += text
        for trigger in list(self.triggers):
            if trigger[0] in self.text:
                self.triggers.remove(trigger)
                trigger[1]()
        return len(text)

    def flush(self):
        pass


# ----------------------------------------------------------------------------- a cell over SSH

def test_cell_over_ssh_reads_notebook_variables_and_its_assignments_come_back(ip, ssh_target, remote_workdir):
    ip.user_ns.update(x=20, words=["a", "b"])
    result = run_remote(ip, "ws", """
        import os
        y = x + 1
        joined = "-".join(words)
        ran_in = os.getcwd()
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 21
    assert ip.user_ns["joined"] == "a-b"
    job = newest_job()
    assert job.record.target == "ws"
    assert job.state is State.DONE
    assert ip.user_ns["ran_in"].startswith(str(remote_workdir / job.id))


def test_printed_output_of_a_cell_over_ssh_is_shown(ip, ssh_target, capsys):
    result = run_remote(ip, "ws", """
        import sys
        print("to stdout from ssh")
        print("to stderr from ssh", file=sys.stderr)
    """)
    assert result.error_in_exec is None
    out, err = capsys.readouterr()
    assert "to stdout from ssh" in out
    assert "to stderr from ssh" in err


def test_exception_raised_over_ssh_is_raised_here_as_its_own_type(ip, ssh_target):
    result = run_remote(ip, "ws", """
        def check(v):
            if v < 0:
                raise ValueError(f"negative: {v}")
        check(-1)
    """)
    error = result.error_in_exec
    assert type(error) is ValueError
    assert str(error) == "negative: -1"
    assert "line 4, in check" in error.__cause__.text
    assert newest_job().state is State.FAILED


def test_attach_pulls_the_results_of_a_job_submitted_over_ssh(ip, ssh_target):
    job = rx_magic.submit("import time\ntime.sleep(1)\nanswer = base + 1", "ws", {"base": 41})
    result = ip.run_cell(f"%rx attach {job.id}")
    assert result.error_in_exec is None
    assert ip.user_ns["answer"] == 42
    assert job.refresh() is State.DONE


# ----------------------------------------------------------------------------- reaching the host

def test_target_given_only_as_an_ssh_config_alias_uses_its_hostname_port_user_and_key(ip, ssh_target, sshd):
    # targets.toml says only host = "rxtest": 127.0.0.1, the port, the user and the key come from ~/.ssh/config
    logins = accepted_logins(sshd)
    result = run_remote(ip, "ws", "y = 1")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 1
    assert accepted_logins(sshd) == logins + 1


def test_host_with_only_a_port_in_ssh_config_uses_the_default_key_and_this_user(ip, ssh_target, sshd, ssh_home):
    ssh = ssh_home / ".ssh"
    (ssh / "config").write_text(f"Host plain\n    HostName 127.0.0.1\n    Port {sshd.port}\n")
    (ssh / "id_ed25519").write_bytes(sshd.user_key.read_bytes())
    (ssh / "id_ed25519").chmod(0o600)
    ssh_target(host="plain")
    result = run_remote(ip, "ws", "y = 3")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 3


def test_proxyjump_host_is_reached_through_the_jump_host(ip, ssh_target, sshd, tmp_path):
    ssh_target("jumped", host="rxjump", workdir=str(tmp_path / "jumped jobs"))
    logins = accepted_logins(sshd)
    result = run_remote(ip, "jumped", "y = 2")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 2
    assert accepted_logins(sshd) == logins + 2      # one login on the jump host, one through it


# ----------------------------------------------------------------------------- host keys

def test_unknown_host_key_is_refused_with_its_fingerprint_and_how_to_trust_it(ip, ssh_target, sshd, ssh_home,
                                                                                  remote_workdir):
    sshd.ssh_config(ssh_home, known=False)
    result = run_remote(ip, "ws", "y = 1")
    error = result.error_in_exec
    assert isinstance(error, rx_magic.TransportError)
    message = str(error)
    assert f"host key of [127.0.0.1]:{sshd.port} is not known" in message
    assert fingerprint(sshd.root / "host_key.pub") in message
    assert f"ssh -p {sshd.port}" in message
    assert 'host_key_policy = "accept-new"' in message
    assert (ssh_home / ".ssh" / "known_hosts").read_text() == ""
    assert_nothing_submitted(remote_workdir)


def test_host_key_trusted_by_openssh_in_hashed_known_hosts_is_known(ip, ssh_target, sshd, ssh_home):
    # Debian's ssh hashes the names it records (HashKnownHosts yes); ssh-keyscan -H writes the same form
    scanned = subprocess.run(["ssh-keyscan", "-H", "-t", "ed25519", "-p", str(sshd.port), "127.0.0.1"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    assert scanned.startswith("|1|")
    (ssh_home / ".ssh" / "known_hosts").write_text(scanned)
    result = run_remote(ip, "ws", "y = 1")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 1


def test_accept_new_records_an_unknown_host_key_and_runs_the_job(ip, ssh_target, sshd, ssh_home):
    sshd.ssh_config(ssh_home, known=False)
    ssh_target(host_key_policy="accept-new")
    result = run_remote(ip, "ws", "y = 1")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 1
    assert (ssh_home / ".ssh" / "known_hosts").read_text().splitlines() == [sshd.known_hosts_line().strip()]


def test_changed_host_key_is_refused_even_with_accept_new(ip, ssh_target, sshd, ssh_home, tmp_path, remote_workdir):
    keygen(tmp_path / "reinstalled_host_key")          # known_hosts holds the key from before a reinstall
    kind, key = (tmp_path / "reinstalled_host_key.pub").read_text().split()[:2]
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    ssh_target(host_key_policy="accept-new")
    result = run_remote(ip, "ws", "y = 1")
    error = result.error_in_exec
    assert isinstance(error, rx_magic.TransportError)
    assert "CHANGED" in str(error)
    assert fingerprint(sshd.root / "host_key.pub") in str(error)
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in str(error)
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {kind} {key}\n"
    assert_nothing_submitted(remote_workdir)


# ----------------------------------------------------------------------------- authentication

def test_key_the_server_does_not_accept_gives_an_auth_failure_naming_the_key_tried(ip, ssh_target, sshd,
                                                                                     remote_workdir):
    # named by address, not alias, so that ~/.ssh/config's own key is not offered too
    ssh_target(host="127.0.0.1", port=sshd.port, user=sshd.user, identity_file=str(sshd.other_key))
    result = run_remote(ip, "ws", "y = 1")
    error = result.error_in_exec
    assert isinstance(error, rx_magic.TransportError)
    message = str(error)
    assert "refused every key offered" in message
    assert str(sshd.other_key) in message
    assert str(sshd.user_key) not in message
    assert "authorized_keys" in message
    assert_nothing_submitted(remote_workdir)


# ----------------------------------------------------------------------------- the remote environment

@pytest.fixture
def old_python(tmp_path):
    """A ``python`` that answers the environment probe as Python 3.8 would, and runs everything else."""
    return script(tmp_path / "bin" / "python3.8", f"""
        # answers the environment probe (a -c program that imports dill) as Python 3.8 would; runs the rest
        if [ "$1" = "-c" ] && case "$2" in *dill*) true;; *) false;; esac; then
            echo '{{"python": "3.8.10", "executable": "/usr/bin/python3.8", "dill": "0.3.6", "ipython": null, "matplotlib": null, "numpy": null}}'
            exit 0
        fi
        exec {shlex.quote(sys.executable)} "$@"
    """)


def test_python_version_mismatch_is_refused_naming_both_versions_before_submitting(ip, ssh_target, old_python,
                                                                                   remote_workdir):
    ssh_target(python=str(old_python))
    message = usage_error(run_remote(ip, "ws", "y = 1"))
    assert "3.8.10" in message
    assert platform.python_version() in message
    assert "allow_version_mismatch" in message
    assert_nothing_submitted(remote_workdir)


def test_allow_version_mismatch_skips_the_version_check(ip, ssh_target, old_python):
    ssh_target(python=str(old_python), allow_version_mismatch=True)
    result = run_remote(ip, "ws", "y = 1")
    assert result.error_in_exec is None, result.error_in_exec
    assert ip.user_ns["y"] == 1


def test_missing_dill_on_the_target_is_refused_naming_dill_before_submitting(ip, ssh_target, tmp_path, remote_workdir):
    bare = script(tmp_path / "bin" / "python-without-site", f'exec {shlex.quote(sys.executable)} -S -I "$@"\n')
    ssh_target(python=str(bare))
    message = usage_error(run_remote(ip, "ws", "y = 1"))
    assert "dill is not installed" in message
    assert str(bare) in message
    assert_nothing_submitted(remote_workdir)


# ----------------------------------------------------------------------------- a dropped link

def test_job_goes_on_and_results_are_pulled_when_the_connection_drops(ip, ssh_target, sshd, monkeypatch):
    # every SSH connection is cut once the notebook has shown the cell's first line
    logins = accepted_logins(sshd)
    out = Terminal()
    out.on("started", sshd.drop_connections)
    with monkeypatch.context() as patched:
        patched.setattr(sys, "stdout", out)
        result = run_remote(ip, "ws", """
            import time
            print("started", flush=True)
            time.sleep(3)
            print("finished", flush=True)
            answer = 42
        """)
    assert result.error_in_exec is None, out.text
    assert ip.user_ns["answer"] == 42
    assert newest_job().state is State.DONE
    assert out.text.count("started") == 1
    assert out.text.index("started") < out.text.index("finished")
    assert accepted_logins(sshd) == logins + 2      # the first connection, and the one after the cut


def test_wait_says_it_is_reconnecting_while_the_host_is_down_and_pulls_results_once_it_is_back(
        ip, ssh_target, sshd, monkeypatch):
    # sshd goes down once the cell's first line is shown, and comes back once the wait says it is reconnecting
    out, err = Terminal(), Terminal()
    out.on("started", sshd.stop)
    err.on("Reconnecting", sshd.start)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(sys, "stdout", out)
            patched.setattr(sys, "stderr", err)
            result = run_remote(ip, "ws", """
                import time
                print("started", flush=True)
                time.sleep(3)
                print("finished", flush=True)
                answer = 42
            """)
    finally:
        if sshd.process is None:        # the other tests need it back whatever happened here
            sshd.start()
    assert result.error_in_exec is None, err.text
    assert "lost the connection to ws" in err.text
    assert "the job goes on" in err.text
    assert "reconnected to ws" in err.text
    assert ip.user_ns["answer"] == 42
    assert out.text.count("started") == 1 and "finished" in out.text


# ----------------------------------------------------------------------------- transfers

def test_200_mb_input_arrives_intact_and_is_not_uploaded_again(ssh_target):
    data = np.frombuffer(np.random.default_rng(6).bytes(200 * 2**20), dtype=np.uint8)
    code = "import hashlib\ndigest = hashlib.sha256(data).hexdigest()"
    expected = hashlib.sha256(data).hexdigest()

    first = rx_magic.submit(code, "ws", {"data": data})
    assert first.bytes_sent >= data.nbytes
    assert first.wait(timeout=120) is State.DONE
    pulled = {}
    first.pull(pulled)
    assert pulled["digest"] == expected

    second = rx_magic.submit(code, "ws", {"data": data})
    assert (second.blobs_sent, second.bytes_sent) == (0, 0)
    assert second.wait(timeout=120) is State.DONE
    pulled = {}
    second.pull(pulled)
    assert pulled["digest"] == expected


def test_large_pulled_values_arrive_intact_and_are_held_once_while_pulled(ssh_target):
    # the array travels out of band, the bytes inside the pickle stream: each is read into its place
    size = 100 * 2**20
    job = rx_magic.submit(textwrap.dedent(f"""
        import numpy as np
        array = np.random.default_rng(8).random({size // 8})
        blob = np.random.default_rng(9).bytes({size})
    """), "ws")
    assert job.wait(timeout=120) is State.DONE
    pulled = {}
    tracemalloc.start()
    try:
        job.pull(pulled)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(pulled["array"], np.random.default_rng(8).random(size // 8))
    assert pulled["blob"] == np.random.default_rng(9).bytes(size)
    # each value once, plus what is in flight (16 MiB of reads ahead, a 4 MiB window); reading a value into
    # one buffer and then copying it out again would be 100 MiB more
    assert peak < 2 * size + 48 * 2**20, f"{peak / 2**20:.0f} MiB at the peak of pulling 2 x {size // 2**20} MiB"


def test_reading_a_file_in_any_sizes_gives_its_bytes_in_order_and_short_reads_only_at_its_end(ssh_target, tmp_path):
    # the reader hands out prefetched SFTP replies of SFTP_REQUEST_SIZE bytes: reads smaller, equal to and
    # larger than a reply, straddling replies, readinto, readline, seek and tell must all see the file as it is
    from rx_magic.targets import get_target
    from rx_magic.transport.ssh import SFTP_REQUEST_SIZE

    reply = SFTP_REQUEST_SIZE
    data = np.random.default_rng(11).bytes(5 * reply + 12345).replace(b"\n", b"-")
    data = data[:reply - 3] + b"\n" + data[reply - 2:2 * reply + 7] + b"\n" + data[2 * reply + 8:]
    path = tmp_path / "payload"
    path.write_bytes(data)
    transport = get_target("ws").transport
    with transport.open_read(str(path)) as file:
        got = [file.read(100), file.read(reply), file.read(reply - 100), file.read(3 * reply + 1)]
        assert [len(piece) for piece in got] == [100, reply, reply - 100, 3 * reply + 1]
        rest = file.read(4 * 2**20)         # more than is left: what is left, then nothing
        assert file.read(1) == b"" and file.read() == b""
    assert b"".join(got) + rest == data and len(rest) == len(data) - 5 * reply - 1

    buffer = bytearray(3 * reply // 2)
    pieces = []
    with transport.open_read(str(path)) as file:
        while count := file.readinto(buffer):
            pieces.append(bytes(buffer[:count]))
        assert file.readinto(buffer) == 0
    # every readinto fills the buffer but the last, which is short: the end of the file
    assert [len(piece) for piece in pieces[:-1]] == [len(buffer)] * (len(pieces) - 1)
    assert 0 < len(pieces[-1]) < len(buffer) and b"".join(pieces) == data

    with transport.open_read(str(path)) as file:
        assert file.readline() == data[:reply - 2]                  # ends inside the first reply
        assert file.readline(5) == data[reply - 2:reply + 3]        # a limit
        assert file.readline() == data[reply + 3:2 * reply + 8]     # from one reply into the next
        assert file.tell() == 2 * reply + 8
        file.seek(reply + 10)
        assert file.read(reply) == data[reply + 10:2 * reply + 10]
        file.seek(-20, 1)
        assert file.tell() == 2 * reply - 10 and file.read(30) == data[2 * reply - 10:2 * reply + 20]
        file.seek(len(data) - 5)
        view = memoryview(bytearray(64))
        assert file.readinto(view[8:]) == 5 and bytes(view[8:13]) == data[-5:]
    assert transport.read_bytes(str(path), reply - 1, reply + 2) == data[reply - 1:2 * reply + 1]
    assert transport.read_bytes(str(path), len(data) - 7) == data[-7:]


# paramiko's prefetch thread may still be sending read requests when the link is cut, and dies of it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_download_cut_off_midway_raises_a_transport_error_and_the_next_one_reconnects(ssh_target, sshd, tmp_path):
    from rx_magic.targets import get_target

    data = np.random.default_rng(10).bytes(64 * 2**20)
    path = tmp_path / "payload"
    path.write_bytes(data)
    transport = get_target("ws").transport
    buffer = bytearray(4 * 2**20)
    with pytest.raises(rx_magic.TransportError, match="on rxtest failed"):
        with transport.open_read(str(path)) as file:
            file.readinto(buffer)
            sshd.drop_connections()
            while file.readinto(buffer):
                pass
    with transport.open_read(str(path)) as file:
        assert hashlib.sha256(file.read()).digest() == hashlib.sha256(data).digest()


def cut_the_link_once_uploading(server, blobs: Path) -> threading.Thread:
    """A thread that cuts every connection as soon as a blob's partial file appears in ``blobs``.

    The value is pickled once, before the upload; the link must go while its bytes travel.
    """
    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if blobs.is_dir() and any(name.endswith(".part") for name in os.listdir(blobs)):
                server.drop_connections()
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_upload_cut_off_leaves_no_blob_that_looks_complete_and_the_rerun_sends_it(ssh_target, sshd, remote_workdir):
    payload = np.random.default_rng(7).bytes(96 * 2**20)      # big enough to be still travelling when cut
    code = "import hashlib\ndigest = hashlib.sha256(payload).hexdigest()"
    blobs = remote_workdir / ".rx" / "blobs"
    watcher = cut_the_link_once_uploading(sshd, blobs)
    with pytest.raises(rx_magic.TransportError, match="on rxtest failed"):
        rx_magic.submit(code, "ws", {"payload": payload})
    watcher.join(5)
    assert list(blobs.glob("*.dill")) == []
    assert rx_magic.jobs() == []

    job = rx_magic.submit(code, "ws", {"payload": payload})
    assert job.blobs_sent == 1
    assert job.wait(timeout=60) is State.DONE
    pulled = {}
    job.pull(pulled)
    assert pulled["digest"] == hashlib.sha256(payload).hexdigest()
    assert len(list(blobs.glob("*.dill"))) == 1


# ----------------------------------------------------------------------------- cancel

def test_cancel_over_ssh_stops_the_job_and_its_processes(ip, ssh_target, capsys):
    job = rx_magic.submit("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)", "ws")
    wait_for(lambda: job.log().strip(), "the cell to start")
    cell_pid = int(job.log().strip())
    supervisor_pid = int(job.record.scheduler_id)

    result = ip.run_cell(f"%rx cancel {job.id}")
    assert result.error_in_exec is None
    assert f"{job.id}: cancelled" in capsys.readouterr().out
    assert newest_job().state is State.CANCELLED
    wait_for(lambda: process_is_gone(cell_pid), "the cell's process to end")
    wait_for(lambda: process_is_gone(supervisor_pid), "the job's process to end")


# ----------------------------------------------------------------------------- shell safety

HOSTILE = ["x;touch {marker}", "x$(touch {marker})", "x`touch {marker}`", "x'touch {marker}'", 'x"y',
           "x && touch {marker}"]


@pytest.mark.parametrize("name", HOSTILE)
def test_job_name_with_shell_syntax_is_refused(ip, ssh_target, tmp_path, remote_workdir, name):
    marker = tmp_path / "MARKER"
    name = name.format(marker=marker)
    quoted = f'"{name}"' if "'" in name else f"'{name}'"     # as a user would type it
    message = usage_error(run_remote(ip, f"ws --name {quoted}", "y = 1"))
    assert "--name" in message
    assert "is not allowed" in message
    assert not marker.exists()
    assert_nothing_submitted(remote_workdir)


def test_job_name_and_extra_directive_with_a_newline_are_refused(ssh_target, tmp_path, remote_workdir):
    marker = tmp_path / "MARKER"
    with pytest.raises(rx_magic.ResourceError, match="--name"):
        rx_magic.submit("y = 1", "ws", name=f"fit\ntouch {marker}")
    with pytest.raises(rx_magic.ResourceError, match="--extra.*one non-empty line"):
        rx_magic.submit("y = 1", "ws", extra=[f"-l wd\ntouch {marker}"])
    assert not marker.exists()
    assert_nothing_submitted(remote_workdir)


def hostile_path(marker) -> str:
    """A path that runs ``touch marker`` if put in a shell command unquoted, in "double" or in 'single' quotes."""
    return f"""a "b" c/$(touch {marker})/`touch {marker}`/x;touch {marker};/'; touch {marker}; '/d & e"""


@pytest.mark.parametrize("naive", ["ls -d {} 2>/dev/null", 'ls -d "{}" 2>/dev/null', "ls -d '{}' 2>/dev/null"])
def test_hostile_path_would_run_its_command_if_quoted_naively(tmp_path, naive):
    # the safety tests below mean something only if their paths would inject a command when mishandled
    marker = tmp_path / "MARKER"
    subprocess.run(["bash", "-c", naive.format(hostile_path(marker))], cwd=tmp_path, check=False, timeout=30)
    assert marker.exists()


def test_workdir_python_path_and_setup_with_shell_syntax_run_as_written(ip, ssh_target, tmp_path, capsys):
    # every piece a job script or command is built from holds quotes, spaces, ;, &, $(...) and backticks
    marker = tmp_path / "MARKER"
    odd = hostile_path(marker)
    workdir = tmp_path / odd / "jobs"
    python = script(tmp_path / odd / "bin" / "python", f'exec {shlex.quote(sys.executable)} "$@"\n')
    ssh_target(workdir=str(workdir), python=str(python), setup=[f"export RX_GREETING={shlex.quote(odd)}"])
    ip.user_ns["x"] = 4
    result = run_remote(ip, "ws", """
        import os
        print("printed from an odd place")
        y = x * 10
        greeting = os.environ["RX_GREETING"]
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 40
    assert ip.user_ns["greeting"] == odd
    job = newest_job()
    assert job.state is State.DONE
    assert (workdir / job.id / "stdout.log").read_text() == "printed from an odd place\n"
    capsys.readouterr()
    assert ip.run_cell("%rx clean --older-than 0").error_in_exec is None
    assert "removed 1 job folder" in capsys.readouterr().out
    assert not (workdir / job.id).exists()
    assert not marker.exists()


def test_file_with_shell_syntax_in_its_name_arrives_under_that_name(sshd, ssh_target, remote_workdir):
    marker = f"rx-marker-{os.getpid()}"
    name = f"""it's "odd"; $(touch {marker}) `touch {marker}` & x.csv"""
    Path("data").mkdir()
    Path("data", name).write_text("1,2,3\n")
    job = rx_magic.submit(f"text = open({('data/' + name)!r}).read()", "ws", files=["data"])
    assert job.wait(timeout=60) is State.DONE
    pulled = {}
    job.pull(pulled)
    assert pulled["text"] == "1,2,3\n"
    remote_home = Path(os.path.expanduser(f"~{sshd.user}"))   # where a command on the target would start
    for folder in (Path.cwd(), remote_workdir / job.id, remote_home):
        assert not (folder / marker).exists()
    assert not list(remote_workdir.rglob(marker))


def test_file_with_a_newline_in_its_name_is_refused(ssh_target, remote_workdir):
    Path("data").mkdir()
    Path("data", "two\nlines.csv").write_text("1\n")
    with pytest.raises(rx_magic.InputError, match="line break"):
        rx_magic.submit("x = 1", "ws", files=["data"])
    assert_nothing_submitted(remote_workdir)


def test_workdir_with_a_newline_is_refused(ip, ssh_target, tmp_path):
    marker = tmp_path / "MARKER"
    ssh_target(workdir=f"{tmp_path}/jobs\ntouch {marker}")
    message = usage_error(run_remote(ip, "ws", "y = 1"))
    assert "workdir must be one line" in message
    assert not marker.exists()
    assert rx_magic.jobs() == []


# ----------------------------------------------------------------------------- %rx targets

def test_rx_targets_lists_the_ssh_target_with_its_host_and_source_file(ip, ssh_target, capsys):
    path = ssh_target()
    ip.run_cell("%rx targets")
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ws "))
    assert "rxtest" in listed
    assert str(path) in listed


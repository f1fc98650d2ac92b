"""Fewer round trips over SSH: the job folder in one request, a poll round's status files in one, a job's end
noticed by a session that watches its process. Against the real loopback sshd (tests/sshd.py); the remote side
is this machine, so what lands there is checked on disk.
"""

import os
import select
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import wait_for

import rx_magic
from rx_magic.errors import TransportError
from rx_magic.flow.watch import observe
from rx_magic.model.states import State
from rx_magic.schedulers.direct import DirectScheduler
from rx_magic.targets import get_target
from rx_magic.transport.base import Transport
from rx_magic.transport.end_watch import ENDED


def tree(root: Path) -> dict:
    """Every entry under ``root``: its kind, permission bits and (for a file) bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = "link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode) else "file"
        found[str(path.relative_to(root))] = (kind, oct(stat.S_IMODE(info.st_mode)),
                                              path.read_bytes() if kind == "file" else None)
    return found


def job_folder_write(base: Path, transport, writer) -> None:
    """A job folder as submit writes it: a blob kept if there, the staged folder, its files, the rename."""
    (base / "blobs").mkdir(parents=True, mode=0o700, exist_ok=True)
    staged, final = base / ".staging-job", base / "job"
    files = [(str(base / "blobs" / "ab.dill"), b"\x80\x05blob"), (str(staged / "job.json"), b'{"job_id": "x"}'),
             (str(staged / "cell.py"), b"y = x + 1\n"), (str(staged / "job.sh"), b"#!/bin/bash\nexit 0\n")]
    writer(transport, files, folders=[str(staged), str(staged / "work")], keep={str(base / "blobs" / "ab.dill")},
           rename=(str(staged), str(final)))


def test_the_job_folder_written_in_one_request_is_the_one_written_file_by_file(ssh_target, tmp_path):
    transport = get_target("ws").transport
    job_folder_write(tmp_path / "by-file", transport, Transport.write_files)        # SFTP, a request at a time
    transport.run(["true"])     # the command agent runs (it starts once per connection)
    before = transport.round_trips
    job_folder_write(tmp_path / "batched", transport, type(transport).write_files)  # the command agent
    assert transport.round_trips - before == 1
    written = tree(tmp_path / "batched")
    assert written == tree(tmp_path / "by-file")
    assert written["job"][:2] == ("dir", "0o700") and written["job/work"][:2] == ("dir", "0o700")
    assert written["job/job.sh"] == ("file", "0o600", b"#!/bin/bash\nexit 0\n")
    assert not [name for name in written if name.endswith(".part")]


def test_a_blob_already_there_is_kept_and_a_symlinked_folder_is_refused(ssh_target, tmp_path):
    transport = get_target("ws").transport
    blob = tmp_path / "blobs" / "ab.dill"
    blob.parent.mkdir(mode=0o700)
    blob.write_bytes(b"the one there")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "planted").symlink_to(elsewhere)
    transport.write_files([(str(blob), b"another")], keep={str(blob)})
    assert blob.read_bytes() == b"the one there"
    with pytest.raises(TransportError, match="planted"):
        transport.write_files([(str(tmp_path / "planted" / "job.json"), b"{}")], folders=[str(tmp_path / "planted")])
    assert list(elsewhere.iterdir()) == []


def test_a_cell_over_ssh_leaves_a_private_job_folder(ip, ssh_target, remote_workdir):
    ip.user_ns["x"] = 41
    job = rx_magic.submit("y = x + 1", "ws", ip.user_ns)
    job.pull(ip.user_ns)
    assert ip.user_ns["y"] == 42
    folder = Path(job.paths.folder)
    for name in ("job.json", "cell.py", "job.sh"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (folder / "job.json").read_bytes().startswith(b"{")


def test_one_poll_round_reads_every_job_folder_in_one_request_and_says_each_state(ip, ssh_target, remote_workdir):
    target = get_target("ws")
    flag = remote_workdir / "go"
    waiting = rx_magic.submit(f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)", "ws", {})
    done = rx_magic.submit("y = 1", "ws", {})
    failed = rx_magic.submit("raise ValueError('no')", "ws", {})
    for job in (done, failed):
        job.wait()
    wait_for(lambda: Path(waiting.paths.status_json).exists(), "the waiting job to start")
    assert waiting.refresh() is State.RUNNING
    before = target.transport.round_trips
    seen = observe(target, [waiting.record], ask_scheduler=True)
    assert target.transport.round_trips - before == 2          # every status.json, then the one ps
    assert seen[waiting.id].status["state"] == "running"
    assert seen[waiting.id].scheduler.state is State.RUNNING
    seen = observe(target, [waiting.record, done.record, failed.record], ask_scheduler=False)
    assert [seen[job.id].status["state"] for job in (waiting, done, failed)] == ["running", "done", "failed"]
    flag.touch()
    assert waiting.wait(timeout=120) is State.DONE


def test_a_job_that_ends_is_noticed_by_the_session_watching_its_process(ssh_target, remote_workdir):
    target = get_target("ws")
    flag = remote_workdir / "go"
    job = rx_magic.submit(f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)", "ws", {})
    notice = DirectScheduler().end_notice(target.transport, job.record.scheduler_id, job.paths.folder)
    assert notice is not None
    try:
        wait_for(lambda: watcher_processes(job.paths.folder), "the watching session to start")
        assert not select.select([notice], [], [], 0)[0]       # the job runs: nothing to say yet
        flag.touch()
        assert select.select([notice], [], [], 120)[0]
        assert os.read(notice, 1) == ENDED                       # the session said "ended", not a dropped link
        assert not Path(f"/proc/{job.record.scheduler_id}").exists() or job.paths.folder.encode() not in \
            Path(f"/proc/{job.record.scheduler_id}/cmdline").read_bytes()
    finally:
        os.close(notice)
    wait_for(lambda: not watcher_processes(job.paths.folder), "the watching session to stop")
    assert job.wait(timeout=60) is State.DONE


def watcher_processes(folder: str) -> list[int]:
    """This machine's processes that run the end watch for ``folder`` (the remote side of the session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if folder.encode() in words and b"rx-end-watch" in words:
                found.append(int(entry.name))
    return found


def notice_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "rx_magic end notice"]


def test_closing_the_transport_stops_the_watch_and_its_session(ssh_target, remote_workdir):
    target = get_target("ws")
    job = rx_magic.submit("import time\ntime.sleep(600)", "ws", {})
    notice = target.transport.end_notice(job.record.scheduler_id, job.paths.folder)
    try:
        wait_for(lambda: watcher_processes(job.paths.folder), "the watching session to start")
        assert notice_threads()
        target.transport.close()
        assert select.select([notice], [], [], 60)[0]
        assert os.read(notice, 1) == b""                        # stopped, not ended: the job runs on
    finally:
        os.close(notice)
    assert not notice_threads()
    wait_for(lambda: not watcher_processes(job.paths.folder), "the watching session to stop")
    job.cancel()


def test_a_kernel_that_exits_while_waiting_leaves_no_watching_process(ssh_target, remote_workdir, ssh_home):
    job = rx_magic.submit("import time\ntime.sleep(600)", "ws", {})
    script = textwrap.dedent(f"""
        import sys
        from rx_magic.targets import get_target
        transport = get_target("ws").transport
        transport.run(["true"])     # connected, as after submitting
        fd = transport.end_notice({job.record.scheduler_id!r}, {job.paths.folder!r})
        assert fd is not None
        print("watching", flush=True)
        sys.stdin.readline()
        """)
    kernel = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=os.environ.copy())
    try:
        assert kernel.stdout.readline().strip() == "watching"
        wait_for(lambda: watcher_processes(job.paths.folder), "the watching session to start")
        kernel.stdin.close()        # the kernel exits without closing anything
        assert kernel.wait(60) == 0
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()
    wait_for(lambda: not watcher_processes(job.paths.folder), "the watching session to stop")
    job.cancel()


def test_an_end_notice_whose_waiter_stopped_waiting_just_before_it_came_ends_quietly():
    # the race CI met: the waiting cell closed its end of the pipe between the watch's poll and its write. A real
    # session cannot be timed to land there, so the session here is a pipe whose receive() closes the waiter's end
    # first (as the waiter may at that moment), then hands over the line the remote watch prints
    from rx_magic.transport.end_watch import EndWatch
    session_read, session_write = os.pipe()
    failures = []
    previous_hook, threading.excepthook = threading.excepthook, lambda args: failures.append(args.exc_value)
    try:
        def receive():
            os.close(watch.fd)
            return os.read(session_read, 100)

        watch = EndWatch(lambda: (session_read, receive, lambda: os.close(session_read)))
        os.write(session_write, b"ended\n")
        watch.thread.join(30)
    finally:
        threading.excepthook = previous_hook
        os.close(session_write)
    assert not watch.thread.is_alive()
    assert watch.ended and failures == []

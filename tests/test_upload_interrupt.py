"""Uploads over the paramiko transport, against the real loopback sshd: stopping one mid-way, and what arrives.

Pressing Stop while a cell uploads used to hang the kernel in paramiko's SFTP close (it waits for the
answers to every write in flight, and a request the interrupt cut in half is never answered) and left
the partial file behind.
"""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from test_openssh_transport import logged_in, openssh_target  # noqa: F401 (fixtures)

import rx_magic.targets
from rx_magic.transport.ssh import WRITE_PIECE


def _parts(folder):
    return [entry for entry in folder.iterdir() if entry.name.endswith(".part")]


def _wait_for_part(folder, at_least: int, timeout: float = 120):
    """The upload's .part file once it holds ``at_least`` bytes: evidence the interrupt lands mid-upload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for part in _parts(folder):
            try:
                if part.stat().st_size >= at_least:
                    return part
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no .part file of {at_least} bytes appeared in {folder}: {os.listdir(folder)}")


@pytest.fixture
def uploads(remote_workdir):
    folder = remote_workdir / "uploads"
    folder.mkdir(parents=True, mode=0o700)
    return folder


@pytest.fixture
def kernel(ssh_target, isolated):
    """A real ipykernel whose environment (HOME, XDG folders) reaches the loopback sshd as target ``ws``."""
    from jupyter_client.manager import start_new_kernel
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(isolated / "work"))
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _reply_to(client, msg_id, timeout=120):
    while True:
        reply = client.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def _execute(client, code):
    """Run ``code``; retry while ipykernel still aborts requests queued behind the interrupted one."""
    for _ in range(20):
        outputs = []
        reply = client.execute_interactive(code, timeout=120, output_hook=outputs.append)
        if reply["content"]["status"] != "aborted":
            return reply, "".join(out["content"].get("text", "") for out in outputs if out["msg_type"] == "stream")
        time.sleep(0.5)
    raise AssertionError("the kernel kept aborting requests")


def test_stop_during_a_large_upload_stops_it_removes_the_part_and_the_next_cell_runs(kernel, uploads):
    manager, client = kernel
    reply, _ = _execute(client, "%load_ext rx_magic\nimport os, rx_magic.targets\n"
                                "transport = rx_magic.targets.get_target('ws').transport\n"
                                "piece = os.urandom(4 * 2**20)")
    assert reply["content"]["status"] == "ok"
    # an upload that never ends by itself: wherever the interrupt comes, it comes mid-upload
    msg_id = client.execute(f"with transport.open_atomic({str(uploads / 'big')!r}) as file:\n"
                            "    while True:\n"
                            "        file.write(piece)\n")
    part = _wait_for_part(uploads, 4 * WRITE_PIECE)
    manager.interrupt_kernel()              # what the notebook's Stop button does: SIGINT to the kernel
    reply = _reply_to(client, msg_id)       # a hang in SFTP close never answers (get_shell_msg raises Empty)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert not part.exists() and not _parts(uploads)        # removed before the cell ended
    assert not (uploads / "big").exists()

    reply, printed = _execute(client, "%%remote ws\nanswer = 41 + 1\nprint('remote says', answer)")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert "remote says 42" in printed
    reply, printed = _execute(client, "print('here', answer)")
    assert "here 42" in printed


def test_bytes_arrive_intact_whatever_buffers_the_writer_is_given(ssh_target, uploads):
    transport = rx_magic.targets.get_target("ws").transport
    reused = bytearray(os.urandom(WRITE_PIECE + 12345))
    immutable = os.urandom(3 * WRITE_PIECE + 7)
    expected = hashlib.sha256()
    with transport.open_atomic(str(uploads / "mixed"), mode=0o640) as file:
        for round_ in range(3):
            reused[:8] = round_.to_bytes(8, "little")   # changed after each write returned
            file.write(reused)
            expected.update(reused)
            file.write(memoryview(immutable)[round_:])
            expected.update(immutable[round_:])
            file.write(b"")
            file.write(b"tail %d" % round_)
            expected.update(b"tail %d" % round_)
    written = uploads / "mixed"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == expected.hexdigest()
    assert written.stat().st_mode & 0o777 == 0o640
    assert not _parts(uploads)


UPLOADER = r"""
import os, random, signal, sys, threading, time
import rx_magic.targets
folder = sys.argv[1]
transport = rx_magic.targets.get_target("ws").transport
piece = os.urandom(4 * 2**20)
LIMIT = 2**29       # bytes: the interrupt comes after 8 MiB, so an upload this long means it was lost
# what ipykernel does while a cell runs (and an interactive python at start): a Python started with SIGINT
# ignored (pytest run as a background job of a non-interactive shell) would otherwise ignore it too
signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupt_once_bytes_are_in_flight(trial):
    while True:         # evidence, not a delay: the upload's .part file holds 8 MiB
        sizes = [entry.stat().st_size for entry in os.scandir(folder) if entry.name.endswith(".part")]
        if sizes and sizes[0] >= 8 * 2**20:
            time.sleep(random.Random(trial).uniform(0, 0.05))    # then somewhere else in the upload each trial
            if sys.argv[3] == "group":      # as the notebook's Stop does: to the kernel's process group, ssh too
                os.killpg(os.getpgid(0), signal.SIGINT)
            else:
                os.kill(os.getpid(), signal.SIGINT)     # as Ctrl-C does
            return
        time.sleep(0.01)


for trial in range(int(sys.argv[2])):
    sender = threading.Thread(target=interrupt_once_bytes_are_in_flight, args=(trial,))
    sender.start()
    try:
        with transport.open_atomic(os.path.join(folder, "big")) as file:
            for _ in range(LIMIT // len(piece)):     # the interrupt comes long before: it was lost
                file.write(piece)
        sys.exit(f"trial {trial}: {LIMIT // 2**20} MiB written and no KeyboardInterrupt: it was lost")
    except KeyboardInterrupt:
        sender.join()
    left = sorted(name for name in os.listdir(folder) if name != "after")
    transport.write_bytes(os.path.join(folder, "after"), b"trial %d" % trial)
    print("stopped", trial, left, transport.read_bytes(os.path.join(folder, "after")).decode(), flush=True)
"""


def test_interrupts_landing_anywhere_in_an_upload_never_hang_and_leave_nothing(ssh_target, uploads, tmp_path):
    """A real SIGINT, five times, wherever in the upload it lands (before: a hang within a trial or two)."""
    _interrupted_uploads(uploads, tmp_path)


@pytest.mark.parametrize("to", ["process", "group"])
def test_the_users_ssh_transport_stops_an_interrupted_upload_the_same_way(openssh_target, logged_in, uploads,
                                                                          tmp_path, to):
    """transport = "openssh": the bytes go into ``ssh ... cat``; an interrupt ends that ssh and removes the .part.

    Sent to the whole process group (as the notebook's Stop does), the interrupt reaches ssh too: the
    broken pipe that follows must not replace the KeyboardInterrupt.
    """
    _interrupted_uploads(uploads, tmp_path, to)


def _interrupted_uploads(uploads, tmp_path, to="process"):
    script = tmp_path / "uploader.py"
    script.write_text(UPLOADER)
    trials = 5
    try:
        done = subprocess.run([sys.executable, str(script), str(uploads), str(trials), to], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300, check=False,
                              start_new_session=True)    # its own process group, as a kernel has
    except subprocess.TimeoutExpired as exc:      # a hang: the process was killed by subprocess.run
        raise AssertionError(f"an interrupted upload hung; it printed: {exc.stdout!r}, {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"stopped {trial} [] trial {trial}" for trial in range(trials)], done.stderr
    assert not _parts(uploads)


def test_a_failing_cell_mid_upload_removes_the_part(ssh_target, uploads):
    transport = rx_magic.targets.get_target("ws").transport
    with pytest.raises(ValueError, match="the value changed"):
        with transport.open_atomic(str(uploads / "failed")) as file:
            file.write(os.urandom(3 * WRITE_PIECE))
            assert _parts(uploads)
            raise ValueError("the value changed")
    assert not _parts(uploads) and not (uploads / "failed").exists()
    assert transport.exists(str(uploads))

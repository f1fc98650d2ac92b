"""``%rx clean``: what a live job needs stays, whichever kernel started it; what nothing needs goes.

Real jobs on the local target (and one over a real sshd); other kernels are
real processes with registries of their own. Files are made old with
``os.utime`` rather than by waiting.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import cell, newest_job, run_remote, wait_for

import rx_magic
from rx_magic.flow.cleaning import UPLOAD_GRACE
from rx_magic.flow.registry import default_registry
from rx_magic.model.local_dirs import cache_home, data_home
from rx_magic.model.states import State

OLD = UPLOAD_GRACE * 2


def local_workdir() -> Path:
    return data_home() / "local-jobs"


def make_old(*paths: Path, seconds: float = OLD) -> None:
    """Set the modification time of each path (and, for a folder, of all inside it) ``seconds`` back."""
    then = time.time() - seconds
    for path in paths:
        inside = list(path.rglob("*")) if path.is_dir() and not path.is_symlink() else []
        for each in [*inside, path]:
            os.utime(each, (then, then), follow_symlinks=False)


def clean(ip, capsys, older_than="0") -> str:
    capsys.readouterr()
    result = ip.run_cell(f"%rx clean --older-than {older_than}")
    assert result.error_in_exec is None, result.error_in_exec
    said = capsys.readouterr().out
    assert said.count("\n") == 1, said              # one short paragraph
    return said


def submit_from_another_kernel(code: str, target: str, values: dict, home: Path) -> str:
    """Submit ``code`` from a separate Python process with a registry of its own; return the job id."""
    kernel = textwrap.dedent(f"""
        import rx_magic
        job = rx_magic.submit({code!r}, {target!r}, {values!r})
        print(job.id, flush=True)
    """)
    env = {**os.environ, "XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache")}
    done = subprocess.run([sys.executable, "-c", kernel], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ----------------------------------------------------------------------------- live jobs keep what they use

def test_a_running_array_keeps_its_folder_and_inputs_and_then_completes_and_pulls(ip, capsys):
    ip.user_ns["offset"] = 100
    result = ip.run_cell(cell("local --bg --ncpus 1 --map x=[1, 2, 3]", """
        import time
        time.sleep(3)
        y = x + offset
    """))
    assert result.error_in_exec is None
    job = newest_job()
    blobs = local_workdir() / ".rx" / "blobs"
    stored = sorted(blobs.iterdir())
    assert len(stored) == 2                  # offset, and the values of x
    make_old(*stored)                        # only being used keeps them now

    said = clean(ip, capsys)

    assert f"kept 1 unfinished job ({job.id})" in said
    assert "2 inputs of unfinished jobs" in said
    assert sorted(blobs.iterdir()) == stored
    assert Path(job.paths.folder).is_dir()
    result = ip.run_cell(f"%rx attach {job.id}")     # elements that start after the cleaning find their inputs
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == [101, 102, 103]
    assert newest_job().state is State.DONE


def test_another_kernels_running_job_keeps_its_folder_and_inputs(ip, capsys, configure_targets, tmp_path):
    workdir = tmp_path / "shared-jobs"
    configure_targets(shared={"workdir": str(workdir), "python": sys.executable})
    job_id = submit_from_another_kernel("import time\ntime.sleep(4)\nn = len(data)", "shared",
                                        {"data": list(range(1000))}, tmp_path / "other-kernel")
    assert rx_magic.jobs() == []             # this kernel's registry has never heard of it
    [blob] = (workdir / ".rx" / "blobs").iterdir()
    make_old(blob)

    said = clean(ip, capsys)

    assert f"kept 1 unfinished job ({job_id})" in said
    assert "1 input of unfinished jobs" in said
    assert (workdir / job_id / "job.json").is_file() and blob.is_file()

    wait_for(lambda: (workdir / job_id / "exit_code").exists(), "the other kernel's job to end")
    said = clean(ip, capsys)
    assert said.startswith("removed 1 job folder and 1 stored input, freeing ")
    assert not (workdir / job_id).exists() and not blob.exists()


def test_a_job_in_a_newer_format_is_kept_with_the_inputs_it_names(ip, capsys):
    folder = local_workdir() / "rx-20260101-000000-abcd"
    folder.mkdir(parents=True)
    digest = "f" * 64
    (folder / "job.json").write_text(json.dumps({"format": 99, "job_id": folder.name, "push": {"x": digest}}))
    blob = local_workdir() / ".rx" / "blobs" / f"{digest}.dill"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    make_old(folder, blob)

    said = clean(ip, capsys)

    assert f"1 job of a newer rx_magic ({folder.name})" in said
    assert folder.is_dir() and blob.is_file()


# ----------------------------------------------------------------------------- uploads in progress

def test_unused_inputs_and_partial_uploads_are_kept_for_an_hour_and_removed_after(ip, capsys):
    rx = local_workdir() / ".rx"
    blobs, files = rx / "blobs", rx / "files"
    blobs.mkdir(parents=True)
    files.mkdir()
    fresh = {blobs / f"{'a' * 64}.dill", blobs / f".{'b' * 64}.dill.x1y2.part", files / ("c" * 64)}
    old = {blobs / f"{'d' * 64}.dill", blobs / f".{'e' * 64}.dill.z3w4.part", files / ("0" * 64)}
    for path in fresh | old:
        path.write_bytes(b"payload")
    fresh_staging, old_staging = rx / "staging-rx-20260101-000000-aaaa", rx / "staging-rx-20260101-000000-bbbb"
    for folder in (fresh_staging, old_staging):
        folder.mkdir()
        (folder / "cell.py").write_text("y = 1\n")
    make_old(*old, old_staging)
    verified = rx / "verified"       # the runner's stamps of checked blobs: one for each blob, one for none
    verified.mkdir()
    for digest in ("a" * 64, "d" * 64, "f" * 64):
        (verified / digest).write_text("{}")

    said = clean(ip, capsys)

    assert all(path.exists() for path in fresh) and fresh_staging.is_dir()
    assert not any(path.exists() for path in old) and not old_staging.exists()
    assert sorted(path.name for path in verified.iterdir()) == ["a" * 64]   # a stamp goes with its blob
    assert said.startswith("removed 0 job folders, 2 stored inputs and 2 abandoned uploads, freeing ")
    assert "2 uploads in progress" in said
    assert "2 unused inputs less than 1h old" in said


def test_a_symlink_in_the_store_is_removed_without_touching_what_it_points_to(ip, capsys, tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    blobs = local_workdir() / ".rx" / "blobs"
    blobs.mkdir(parents=True)
    link = blobs / f"{'9' * 64}.dill"
    link.symlink_to(outside)
    make_old(link)

    clean(ip, capsys)

    assert not link.is_symlink()
    assert outside.read_text() == "keep me"


# ----------------------------------------------------------------------------- ended jobs

def test_an_ended_job_goes_with_its_registry_row_and_cache_once_older_than_asked(ip, capsys):
    assert run_remote(ip, "local", "v = 1").error_in_exec is None
    job = newest_job()
    folder = Path(job.paths.folder)

    said = clean(ip, capsys, "1h")
    assert "kept 1 job ended less than 1h ago" in said
    assert folder.is_dir() and [j.id for j in rx_magic.jobs()] == [job.id]

    said = clean(ip, capsys)
    assert said.startswith("removed 1 job folder and ")
    assert not folder.exists()
    assert rx_magic.jobs() == []
    assert not (cache_home() / "jobs" / job.id).exists()


def test_a_job_folder_without_a_readable_job_json_is_kept_until_it_is_an_hour_old(ip, capsys):
    folder = local_workdir() / "rx-20260101-000000-abcd"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text("{not json")

    said = clean(ip, capsys)
    assert f"1 job folder without a readable job.json ({folder.name}; removed once 1h old)" in said
    assert folder.is_dir()

    make_old(folder)
    said = clean(ip, capsys)
    assert said.startswith("removed 1 job folder")
    assert not folder.exists()


# ----------------------------------------------------------------------------- which targets

def test_a_target_with_no_job_in_this_registry_is_visited(ip, capsys, configure_targets, tmp_path):
    workdir = tmp_path / "idle-jobs"
    configure_targets(idle={"workdir": str(workdir), "python": sys.executable})
    job_id = submit_from_another_kernel("v = 1", "idle", {}, tmp_path / "other-kernel")
    wait_for(lambda: (workdir / job_id / "exit_code").exists(), "the other kernel's job to end")
    stale = workdir / ".rx" / "blobs" / f"{'7' * 64}.dill"
    stale.write_bytes(b"left behind")
    make_old(stale)
    assert rx_magic.jobs() == []

    said = clean(ip, capsys)

    assert said.startswith("removed 1 job folder and 1 stored input, freeing ")
    assert not (workdir / job_id).exists() and not stale.exists()


def test_an_unreachable_target_is_named_and_the_others_are_cleaned(ip, capsys, configure_targets):
    configure_targets(gone={"host": "127.0.0.1", "port": 1})      # nothing listens on port 1
    assert run_remote(ip, "local", "v = 1").error_in_exec is None
    job = newest_job()

    said = clean(ip, capsys)

    assert said.startswith("removed 1 job folder")
    assert re.search(r"could not clean gone \(.*127\.0\.0\.1", said), said
    assert not Path(job.paths.folder).exists()


# ----------------------------------------------------------------------------- over SSH

def test_over_ssh_a_running_jobs_inputs_stay_and_an_old_unused_one_goes(ip, capsys, sshd, ssh_target,
                                                                        remote_workdir):
    job = rx_magic.submit("import time\ntime.sleep(4)\nn = len(data)", "ws", {"data": list(range(100))})
    blobs = remote_workdir / ".rx" / "blobs"
    [used] = blobs.iterdir()
    unused = blobs / f"{'8' * 64}.dill"
    unused.write_bytes(b"left behind")
    make_old(used, unused)

    said = clean(ip, capsys)

    assert f"kept 1 unfinished job ({job.id})" in said
    assert used.is_file() and not unused.exists()
    assert job.wait(timeout=60) is State.DONE
    namespace = {}
    job.pull(namespace)
    assert namespace["n"] == 100
    said = clean(ip, capsys)
    assert said.startswith("removed 1 job folder and 1 stored input")
    assert not (remote_workdir / job.id).exists() and not used.exists()


OPEN_HOLD = """
import sys
from rx_magic.flow.holds import open_hold
print(open_hold(sys.argv[1], idle=300).record.id, flush=True)
"""


def test_an_ended_holds_folder_goes_once_older_than_asked_and_a_live_hold_of_another_kernel_stays(
        ip, capsys, configure_targets, tmp_path):
    workdir = tmp_path / "shared-jobs"
    configure_targets(shared={"workdir": str(workdir), "python": sys.executable})
    holds = workdir / ".rx" / "holds"
    mine = ip.run_line_magic("rx", "hold shared --idle 2s").seen.record
    wait_for(lambda: (holds / mine.id / "ended.json").exists(), "this kernel's idle hold to end")
    # a hold another kernel opened, with a registry of its own: this kernel has never heard of it
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "other" / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "other" / "cache")}
    done = subprocess.run([sys.executable, "-c", OPEN_HOLD, "shared"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    theirs = done.stdout.strip()
    wait_for(lambda: (holds / theirs / "ready.json").exists(), "the other kernel's hold to be ready")
    make_old(holds / theirs)        # however old its files, a hold whose worker still beats is live

    said = clean(ip, capsys, "1h")
    assert said.startswith("removed nothing; kept "), said
    assert "1 live hold" in said and "1 hold ended less than 1h ago" in said
    assert (holds / mine.id).is_dir() and (holds / theirs).is_dir()

    said = clean(ip, capsys)
    assert said.startswith("removed 1 ended hold's folder, freeing "), said
    assert "kept 1 live hold" in said
    assert not (holds / mine.id).exists()
    assert (holds / theirs / "ready.json").is_file()
    capsys.readouterr()
    ip.run_line_magic("rx", "holds")            # its folder gone, the ended hold is no longer listed
    assert mine.id not in capsys.readouterr().out
    assert default_registry().holds() == []

    (holds / theirs / "release").touch()        # as `%rx release` in the other kernel does
    wait_for(lambda: (holds / theirs / "ended.json").exists(), "the other kernel's hold to end")
    said = clean(ip, capsys)
    assert said.startswith("removed 1 ended hold's folder, freeing "), said
    assert not (holds / theirs).exists()


def test_a_holds_row_leaves_the_registry_with_its_folder_and_a_beating_holds_stays_whatever_the_registry_says(
        ip, capsys, configure_targets, tmp_path):
    configure_targets(shared={"workdir": str(tmp_path / "jobs"), "python": sys.executable})
    holds, registry = tmp_path / "jobs" / ".rx" / "holds", default_registry()
    alive = ip.run_line_magic("rx", "hold shared --idle 5m").seen.record
    gone = ip.run_line_magic("rx", "hold shared --idle 2s").seen.record
    wait_for(lambda: (holds / gone.id / "ended.json").exists(), "the idle hold to end")
    ip.run_line_magic("rx", "holds")            # this kernel sees it end
    assert registry.get_hold(gone.id).state == "ended"
    shutil.rmtree(holds / gone.id)              # as another kernel's clean does
    # a registry that concluded, long ago, that the live hold had ended (a look while its host was away)
    registry.update_hold(alive.id, state="ended", reason="killed", ended_at=time.time() - OLD)
    beat = holds / alive.id / "beat"
    wait_for(lambda: beat.exists() and time.time() - beat.stat().st_mtime < 30, "the live hold's worker to beat")

    said = clean(ip, capsys)
    assert "kept 1 live hold" in said, said
    assert (holds / alive.id / "ready.json").is_file()
    assert [hold.id for hold in registry.holds()] == [alive.id]     # the hold without a folder left the registry
    capsys.readouterr()
    ip.run_line_magic("rx", "holds")
    assert gone.id not in capsys.readouterr().out

    (holds / alive.id / "release").touch()      # as `%rx release` does
    wait_for(lambda: (holds / alive.id / "ended.json").exists(), "the live hold to end")
    said = clean(ip, capsys)
    assert said.startswith("removed 1 ended hold's folder, freeing "), said
    assert registry.holds() == [] and not (holds / alive.id).exists()

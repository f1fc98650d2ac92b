"""Small helpers the end-to-end tests share: waiting, ``%%remote`` cells, and executed notebooks."""

import json
import os
import shlex
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import rx_magic
from rx_magic.flow.watch import observe
from rx_magic.flow.registry import Registry
from rx_magic.model.states import decide_state

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def newest_job():
    return rx_magic.jobs(1)[0]


def wait_for(predicate, what, timeout=30):
    """Wait until ``predicate()`` is true; a hung job fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def observe_until_final(target, jobs, commands: list, *, timeout: float, pause: float) -> list:
    """Observe ``jobs`` on ``target`` a round at a time, as the monitor does, until every one is final.

    ``commands`` is filled by the caller, which spies on the transport; each round's share of it is returned.
    """
    rounds, live, deadline = [], {job.id: job for job in jobs}, time.monotonic() + timeout
    while live:
        assert time.monotonic() < deadline, f"{len(live)} jobs still live after {timeout} s"
        before = len(commands)
        seen = observe(target, [job.record for job in live.values()])
        rounds.append(commands[before:])
        for job_id, observation in seen.items():
            if decide_state(observation)[0].is_final:
                del live[job_id]
        time.sleep(pause)
    return rounds


def process_is_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ----------------------------------------------------------------------------- %%remote cells in the test shell

def cell(line, code):
    """A ``%%remote`` cell: the magic line, then the code."""
    return f"%%remote {line}".rstrip() + "\n" + textwrap.dedent(code).strip("\n") + "\n"


def run_remote(ip, line, code):
    return ip.run_cell(cell(line, code))


def usage_error(result) -> str:
    """The one-line message of a cell that failed with ``UsageError``."""
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    message = str(result.error_in_exec)
    assert "\n" not in message
    return message


def targets_toml(targets: dict) -> str:
    """The text of a targets.toml with a ``[targets.NAME]`` table for each of ``targets``."""
    lines = []
    for name, keys in targets.items():
        lines.append(f"[targets.{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in keys.items())
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- notebooks run in a real kernel

def run_notebook(path: Path):
    """Execute the notebook at ``path`` in a new kernel with notebooks/run.py, as its readers would."""
    if str(NOTEBOOKS) not in sys.path:
        sys.path.insert(0, str(NOTEBOOKS))
    from run import run
    return run(path)


def run_isolated(path: Path, home: Path, *, targets: dict | None = None, env: dict | None = None):
    """Execute notebook ``path`` with its kernel's XDG folders in ``home``, which the test can read afterwards.

    ``targets`` are written to its user targets.toml; ``env`` sets more variables for the
    kernel (a value of None removes one).
    """
    monkeypatch = pytest.MonkeyPatch()
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.delenv("RX_MAGIC_CONFIG", raising=False)
    for name, value in (env or {}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    if targets:
        config = home / "xdg_config_home" / "rx_magic" / "targets.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(targets_toml(targets))
    try:
        return run_notebook(path)
    finally:
        monkeypatch.undo()


def jobs_recorded(home: Path) -> list:
    """The job records that a notebook run by ``run_isolated(path, home)`` left in its registry, newest first."""
    registry = Registry(home / "xdg_data_home" / "rx_magic" / "registry.sqlite")
    try:
        return registry.recent(None)
    finally:
        registry.close()


def assert_stored_without_outputs(path: Path):
    """The notebook in the repository has no outputs and runs in the ``python3`` kernel."""
    import nbformat
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def text_of(cell, stream: str | None = None, *, displays: bool | None = None) -> str:
    """What a code cell printed and showed, as text, in order.

    ``stream`` ("stdout" or "stderr") keeps only that stream's text; the displays' plain text
    is then left out too, unless ``displays=True``.
    """
    if displays is None:
        displays = stream is None
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream" and stream in (None, output.name):
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data") and displays:
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def cell_starting(notebook, start: str, nth: int = 0, unique: bool = False):
    """The ``nth`` code cell whose source starts with ``start``; with ``unique``, the one such cell."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.startswith(start)]
    if unique:
        [cell] = cells
        return cell
    return cells[nth]


def errors_of(cell):
    return [output for output in cell.outputs if output.output_type == "error"]


def user_ssh_reads(config: Path, home: Path, monkeypatch) -> str:
    """The user's ssh (transport = "openssh") reads ``config`` (ssh takes ~ from passwd, not HOME, so it would
    not find the test's ``~/.ssh/config``) and keeps its sockets in a short private folder (a socket's path must
    be short), which it returns. Skips when OpenSSH's client is missing."""
    if shutil.which("ssh") is None:
        pytest.skip("OpenSSH's client is needed")
    bin_folder = home / "bin"
    bin_folder.mkdir()
    wrapper = bin_folder / "ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {shlex.quote(str(config))} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    runtime = tempfile.mkdtemp(prefix="rx-run-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    return runtime

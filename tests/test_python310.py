"""``requires-python`` says 3.10: rx_magic imports there (``tomli`` stands in for ``tomllib``) and runs a job.

Runs when a Python 3.10 is on this machine (``python3.10`` on PATH, or pyenv's); it builds a
virtual environment for it, as a user on 3.10 would, and installs the checkout into it.
"""

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def python310() -> str | None:
    """A real Python 3.10 (pyenv's shims are skipped: they fail unless pyenv selects that version)."""
    candidates = [*sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10"))),
                  shutil.which("python3.10") or ""]
    return next((path for path in candidates if path and "/shims/" not in path), None)


@pytest.mark.skipif(python310() is None, reason="no Python 3.10 on this machine")
def test_rx_magic_imports_and_runs_a_job_on_python_3_10(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([python310(), "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              str(REPO)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    script = textwrap.dedent("""
        import sys
        assert sys.version_info[:2] == (3, 10), sys.version
        import rx_magic
        from rx_magic.targets.config import tomllib
        import rx_magic.ui.magics, rx_magic.targets.checks, rx_magic.flow.cleaning
        job = rx_magic.submit("y = x * 2", "local", {"x": 21})
        assert job.wait(120) is rx_magic.State.DONE, job.reason
        namespace = {}
        job.pull(namespace)
        print(tomllib.__name__, namespace["y"])
    """)
    env = {**os.environ, **{name: str(tmp_path / name.lower()) for name in
                            ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}}
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.split() == ["tomli", "42"]

"""rx_magic in terminal IPython (a real ``ipython`` process reading cells from a pipe): one line per job,
coloured as IPython colours, or not at all under ``--colors=nocolor`` or ``NO_COLOR``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

IPYTHON = Path(sys.executable).with_name("ipython")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Typed at the prompt: a %%remote cell ends with two empty lines, as in a terminal.
SESSION = """\
%load_ext rx_magic
%%remote local --name fit
x = 41 + 1


print("x is", x)
%%remote local
first = 1
1 / 0


print("still here")
"""


def run_ipython(isolated, *options, env=None) -> str:
    """What terminal IPython printed (stdout and stderr together) for SESSION."""
    environment = {**os.environ, "IPYTHONDIR": str(isolated / "ipython")}
    environment.pop("NO_COLOR", None)
    environment.update(env or {})
    finished = subprocess.run([str(IPYTHON), "--simple-prompt", "--no-banner", *options], input=SESSION,
                              capture_output=True, text=True, env=environment, timeout=300)
    return finished.stdout + finished.stderr


def test_terminal_ipython_prints_one_line_for_each_job_and_the_remote_traceback(isolated):
    out = run_ipython(isolated)
    plain = ANSI.sub("", out)
    assert re.search(r"\bdone: job 'fit' \(rx-\S+\) on local after \d+:\d\d:\d\d\n", plain), plain
    assert "x is 42" in plain
    assert re.search(r"\bfailed: job rx-\S+ on local after \d+:\d\d:\d\d \(the cell raised ZeroDivisionError: "
                     r"division by zero\)\n", plain), plain
    assert re.search(r"Cell In\[\d+\], line 3\n(?:.*\n){2}----> 3 1 / 0", plain), plain    # IPython's look, cell lines
    assert "still here" in plain
    assert "\x1b[32mdone\x1b[0m: job 'fit'" in out                 # IPython colours here: so does rx_magic


@pytest.mark.parametrize("how", ["--colors=nocolor", "NO_COLOR=1"])
def test_no_colour_when_ipython_has_none_or_no_color_is_set(isolated, how):
    if how.startswith("NO_COLOR"):
        out = run_ipython(isolated, env={"NO_COLOR": "1"})
    else:
        out = run_ipython(isolated, how)
    assert "done: job 'fit'" in out and "failed: job" in out
    assert "Cell In[" in out and "ZeroDivisionError: division by zero" in out
    assert "\x1b[" not in out                                      # not one colour code, remote traceback included


def test_a_background_job_arriving_in_terminal_ipython_gets_its_line_too(isolated):
    environment = {**os.environ, "IPYTHONDIR": str(isolated / "ipython")}
    environment.pop("NO_COLOR", None)
    session = ("%load_ext rx_magic\n"
               "%%remote local --bg --name later\ny = 6 * 7\n\n\n"
               "import rx_magic, time\n"
               "for _ in range(600):\n    time.sleep(0.1) if not rx_magic.jobs(1)[0].state.is_final else None\n\n\n"
               "print('y is', y)\n")
    finished = subprocess.run([str(IPYTHON), "--simple-prompt", "--no-banner", "--colors=nocolor"], input=session,
                              capture_output=True, text=True, env=environment, timeout=300)
    out = finished.stdout
    assert re.search(r"\bdone: job 'later' \(rx-\S+\) on local after \d+:\d\d:\d\d\n", out), out
    assert "y is 42" in out and out.index("done: job 'later'") < out.index("y is 42")

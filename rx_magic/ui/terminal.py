"""How a job shows in terminal IPython, where no widget renders: one line once its cell's job has ended.

Coloured as IPython colours its own output: not at all under ``%colors nocolor`` (``--colors=nocolor``)
or when ``NO_COLOR`` is set (https://no-color.org).
"""

from __future__ import annotations

from ..errors import ipython_colors
from ..flow.job import Job

#: ANSI colours of the state word: green, red, yellow; others stay plain.
STATE_COLOURS = {"done": "32", "failed": "31", "cancelled": "33"}


def job_line(job: Job) -> str:
    """``job.summary()``, its state word coloured unless colours are off."""
    line = job.summary()
    colour = STATE_COLOURS.get(job.record.state.value)
    if colour is None or ipython_colors() == "nocolor":
        return line
    state = job.record.state.value
    return f"\x1b[{colour}m{state}\x1b[0m{line[len(state):]}"


def print_job_line(job: Job) -> None:
    print(job_line(job), flush=True)


def in_terminal(shell) -> bool:
    """Whether ``shell`` is terminal IPython, where no widget shows a job: its line has to."""
    try:
        from IPython.terminal.interactiveshell import TerminalInteractiveShell
    except ImportError:
        return False
    return isinstance(shell, TerminalInteractiveShell)

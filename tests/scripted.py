"""A submit host that answers commands from recorded output, for the schedulers' parsing tests.

What its files do differs from test to test, so each test module subclasses it.
"""

import shlex

from rx_magic.transport import CommandResult, Transport


class ScriptedCommands(Transport):
    """Answers each command from (argv prefix, (code, stdout, stderr)) pairs; records every argv it ran."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def run(self, argv, *, input=None, timeout=120, check=True):
        argv = tuple(argv)
        if argv[:2] in (("bash", "-lc"), ("bash", "-c")) and argv[2].startswith("exec "):
            argv = tuple(shlex.split(argv[2].removeprefix("exec ")))   # a command sent through a login shell
        self.calls.append(argv)
        for prefix, answer in self.answers:
            if argv[:len(prefix)] == tuple(prefix):
                return CommandResult(argv, *answer)
        raise AssertionError(f"unexpected command {argv}")

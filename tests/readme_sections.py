"""The README's generated sections, written from the magics' own help so they cannot drift.

    python tests/readme_sections.py      rewrite the sections in README.md (what `make readme` runs)

Each section sits between two marker lines in README.md::

    <!-- begin generated: NAME (...) -->
    ...
    <!-- end generated: NAME -->

``remote-options`` is the ``%%remote`` help: its docstring and one table row per
``@argument``, read from the parser IPython's ``magic_arguments`` builds (the
parser ``%%remote?`` prints). ``rx-commands`` is the ``%rx`` docstring, its
command lines as a table. ``tests/test_readme.py`` fails when README.md differs
from what this module renders now.

This lives beside the tests, not in the package: only the README test and
``make readme`` use it, and code that writes the README has no business in a
user's kernel.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _cell(text: str) -> str:
    """One markdown table cell: one line; ``|`` escaped everywhere, ``<`` outside `code` (where it could open HTML)."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;") for part in parts).replace("|", r"\|")


def _metavar(action: argparse.Action) -> str:
    name = action.metavar or action.dest.upper()
    return {None: name, "?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}.get(action.nargs, name)


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    """The help as argparse prints it: ``%(default)s`` and the like expanded."""
    params = {name: value for name, value in vars(action).items() if value is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    return action.help % params


def _option(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{_metavar(action)}`"
    first, *aliases = action.option_strings
    takes_value = action.nargs != 0
    shown = f"`{first} {_metavar(action)}`" if takes_value else f"`{first}`"
    return shown + (f" ({', '.join(f'`{alias}`' for alias in aliases)})" if aliases else "")


def render_remote_options() -> str:
    """The ``%%remote`` help: its docstring, then a table of its arguments in the order they are declared."""
    from rx_magic.ui.magics import RemoteMagics

    parser = RemoteMagics.remote.parser
    lines = [inspect.cleandoc(parser.description or ""), "", "| option | meaning |", "| --- | --- |"]
    for action in parser._actions:      # argparse keeps no public list of its arguments
        if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        lines.append(f"| {_cell(_option(action))} | {_cell(_help(action, parser))} |")
    return "\n".join(lines)


_COMMAND_LINE = re.compile(r"(%rx \S.*?)\s{2,}(\S.*)")


def render_rx_commands() -> str:
    """The ``%rx`` docstring: its summary, its command lines as a table, and the paragraphs after them."""
    from rx_magic.ui.magics import RemoteMagics

    summary, _, body = inspect.cleandoc(RemoteMagics.rx.__doc__ or "").partition("\n")
    rows, prose = [], []
    for line in body.strip().splitlines():
        match = _COMMAND_LINE.fullmatch(line.strip())
        if match:
            rows.append(f"| `{_cell(match[1])}` | {_cell(match[2])} |")
        else:
            prose.append(line)
    lines = [summary, "", "| command | does |", "| --- | --- |", *rows]
    tail = "\n".join(prose).strip()
    return "\n".join(lines + (["", tail] if tail else []))


SECTIONS = {
    "remote-options": ("the %%remote help", render_remote_options),
    "rx-commands": ("the %rx help", render_rx_commands),
}


def begin_marker(name: str) -> str:
    source = SECTIONS[name][0]
    return f"<!-- begin generated: {name} (`make readme` writes this from {source}; do not edit) -->"


def end_marker(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def _span(text: str, name: str) -> tuple[int, int]:
    """Where section ``name`` is in ``text``: from the start of its begin line to the end of its end marker."""
    begin = re.search(rf"^<!-- begin generated: {re.escape(name)} .*-->$", text, re.MULTILINE)
    end = text.find(end_marker(name), begin.end() if begin else 0)
    if begin is None or end < 0:
        raise LookupError(f"README.md has no generated section {name!r}: put the lines\n"
                          f"{begin_marker(name)}\n{end_marker(name)}\nwhere it belongs, then run `make readme`")
    return begin.start(), end + len(end_marker(name))


def rendered_section(name: str) -> str:
    """Section ``name`` as `make readme` writes it, markers included."""
    return f"{begin_marker(name)}\n{SECTIONS[name][1]()}\n{end_marker(name)}"


def current_section(text: str, name: str) -> str:
    start, stop = _span(text, name)
    return text[start:stop]


def regenerate(text: str) -> str:
    """``text`` (README.md) with every generated section rendered anew."""
    for name in SECTIONS:
        start, stop = _span(text, name)
        text = text[:start] + rendered_section(name) + text[stop:]
    return text


def main() -> int:
    text = README.read_text()
    try:
        new = regenerate(text)
    except LookupError as exc:
        print(exc, file=sys.stderr)
        return 1
    if new != text:
        README.write_text(new)
        print(f"rewrote the generated sections of {README}")
    else:
        print(f"{README} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

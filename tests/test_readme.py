"""README.md says what the code does: its generated sections match the magics' help, its tables the code."""

import argparse
import difflib
import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest

from readme_sections import README, SECTIONS, current_section, rendered_section
from rx_magic.ui.magics import RemoteMagics, _rx_parser
from rx_magic.model.resources import Resources, parse_size
from rx_magic.targets import VALID_KEYS, TargetConfig, parse_target, tomllib

ROOT = README.parent


def readme() -> str:
    return README.read_text()


def section(title: str) -> str:
    """The text under the ``## title`` heading, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme(), re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match[1]


@pytest.mark.parametrize("name", SECTIONS)
def test_each_generated_section_matches_what_the_magic_help_says_now(name):
    written, wanted = current_section(readme(), name), rendered_section(name)
    if written != wanted:
        diff = "\n".join(difflib.unified_diff(written.splitlines(), wanted.splitlines(),
                                              "README.md", "the magic's help now", lineterm=""))
        pytest.fail(f"README.md's generated section {name!r} is out of date: run `make readme`\n{diff}")


def test_every_rx_command_and_its_options_are_in_the_rx_help_the_readme_is_made_from():
    doc = inspect.cleandoc(RemoteMagics.rx.__doc__)
    commands = next(action for action in _rx_parser()._actions if action.choices)
    for command, parser in commands.choices.items():
        line = next((line for line in doc.splitlines() if line.strip().startswith(f"%rx {command}")), None)
        assert line, f"`%rx {command}` is missing from the %rx docstring (and so from the README)"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert option in line, f"`%rx {command} {option}` is missing from its line in the %rx docstring"


def configuration_rows() -> dict[str, str]:
    return dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", section("Configuration"), re.MULTILINE))


def test_the_configuration_table_has_every_target_key_and_no_other():
    documented = set(configuration_rows())
    assert documented == set(VALID_KEYS), (
        f"README.md's configuration table misses {sorted(set(VALID_KEYS) - documented)} "
        f"and has keys parse_target refuses: {sorted(documented - set(VALID_KEYS))}")


def test_the_configuration_table_gives_each_key_its_real_default():
    rows = configuration_rows()
    for field in fields(TargetConfig):
        default = field.default
        if field.name not in rows or not isinstance(default, (str, bool, int)) or default == "":
            continue
        stated = re.search(r"\(`([^`]+)`\)$", rows[field.name])
        assert stated, f"the README's row for {field.name} ends without its default (`{default}`)"
        if isinstance(default, bool):
            assert stated[1] == str(default).lower(), field.name
        elif isinstance(default, int):
            assert parse_size(stated[1]) == default, field.name
        else:
            assert stated[1] == default, field.name


def test_the_defaults_row_names_every_resource_a_target_may_default():
    row = configuration_rows()["defaults"]
    for name in inspect.signature(Resources.parse).parameters:
        assert f"`{name}`" in row, f"the README's defaults row does not name the resource {name}"


def test_the_readme_opens_with_the_two_commands():
    opening = re.match(r"# rx_magic\n+```\w*\n(.*?)```", readme(), re.DOTALL)
    assert opening, "README.md must open, right under its title, with the two commands"
    assert [line.split("#")[0].strip() for line in opening[1].splitlines()] == ["make quickstart", "make test"]


RAW = "https://raw.githubusercontent.com/rx-magic/rx_magic/main/"


def test_the_screenshot_and_the_binder_notebook_exist():
    """The picture's address is absolute (the package index shows the README without the repository's files),
    and names a file of this repository."""
    image = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme())[1]
    assert image.startswith(RAW), f"{image}: the package index needs an absolute address"
    image = image[len(RAW):]
    assert (ROOT / image).is_file() and (ROOT / image).stat().st_size < 150_000
    notebook = re.search(r"mybinder\.org/v2/gh/[^)]*urlpath=lab/tree/([^)&]+)", readme())[1]
    assert (ROOT / notebook).is_file()


def test_make_readme_runs_the_generator():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^readme:.*\n\t(.*)$", makefile, re.MULTILINE)
    assert recipe and Path(__file__).with_name("readme_sections.py").name in recipe[1]


def test_the_configuration_example_is_a_valid_targets_file():
    example = re.search(r"```toml\n(.*?)```", section("Configuration"), re.DOTALL)[1]
    for name, table in tomllib.loads(example)["targets"].items():
        parse_target(name, table, "README.md", TargetConfig(name=name))

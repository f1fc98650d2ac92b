"""Public notebooks nobody here wrote give the same outputs and namespace under ``%%remote local`` as plainly.

Each notebook of tests/differential/notebooks.toml runs in real kernels three ways (compare.py):
plainly, with its heavy cells sent, and with every cell sent. The heavy variant must show no
difference; the kinds it still shows are listed per notebook under ``known_heavy``, each a strict
xfail here, so a fix that removes one fails its xfail until the line is deleted. The all-cells
variant may differ, but only in the kinds that tests/differential/README.md documents.

``pytest -s tests/test_differential.py`` prints each notebook's differences and, at the end, the
tables; ``python tests/differential/compare.py`` prints the same without pytest.
"""

import re
import sys
from pathlib import Path

import pytest

DIFFERENTIAL = Path(__file__).resolve().parent / "differential"
sys.path.insert(0, str(DIFFERENTIAL))
import compare

ENTRIES = {entry.name: entry for entry in compare.catalogue()}
_results: dict = {}


def results(name):
    """The plain run and the two variants' reports for notebook ``name``, run once per session."""
    if name not in _results:
        plain, reports = compare.compare_notebook(ENTRIES[name], workers=compare.WORKERS)
        _results[name] = (plain, {report.variant: report for report in reports})
        for report in reports:
            print("\n" + compare.details(report))
    return _results[name]


@pytest.fixture(scope="module", autouse=True)
def tables():
    """After the module, the tables a developer reads (with ``pytest -s``)."""
    yield
    if not _results:
        return
    plain_runs = {name: plain for name, (plain, _) in _results.items()}
    for variant in compare.VARIANTS:
        reports = [by_variant[variant] for _, by_variant in _results.values()]
        print(f"\n\n=== {variant}: differences from the plain run\n")
        print(compare.table(reports, plain_runs))


def documented_kinds() -> set[str]:
    """The kinds that tests/differential/README.md explains, one ``- **kind**`` bullet each."""
    text = (DIFFERENTIAL / "README.md").read_text()
    return set(re.findall(r"^- \*\*(.+?)\*\*", text, re.MULTILINE))


KNOWN = [pytest.param(name, kind, id=f"{name}-{kind.replace(' ', '_').replace('/', '_')}",
                      marks=pytest.mark.xfail(strict=True, reason=reason))
         for name, entry in ENTRIES.items() for kind, reason in entry.known.items()]


def test_catalogue_names_only_kinds_the_harness_knows():
    for entry in ENTRIES.values():
        assert set(entry.known) <= set(compare.KINDS), entry.name
        assert entry.path.exists(), entry.path


@pytest.mark.parametrize("name", ENTRIES)
def test_sending_the_heavy_cells_changes_nothing_but_the_known_kinds(name):
    _, reports = results(name)
    report = reports["heavy"]
    unknown = [d for d in report.differences if d.kind not in ENTRIES[name].known]
    assert not unknown, "\n" + compare.details(report)


@pytest.mark.parametrize(("name", "kind"), KNOWN)
def test_sending_the_heavy_cells_shows_no(name, kind):
    _, reports = results(name)
    assert kind not in reports["heavy"].kinds, "\n" + compare.details(reports["heavy"])


@pytest.mark.parametrize("name", ENTRIES)
def test_sending_every_cell_differs_only_in_documented_kinds(name):
    _, reports = results(name)
    report = reports["all"]
    undocumented = set(report.kinds) - documented_kinds()
    assert not undocumented, f"kinds not in tests/differential/README.md: {undocumented}\n" + compare.details(report)

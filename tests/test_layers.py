"""The package's layers (DESIGN.md), checked from the source: no upward import, no cycle, a standalone runtime.

Every import counts, those inside functions included, so an import cannot hide
from these tests by moving into a function.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rx_magic"

#: Lowest first. A module may import its own layer and those below it.
LAYERS = ["errors", "runtime", "model", "transport", "schedulers", "targets", "flow", "ui"]
BOTTOM = {"rx_magic.errors", "rx_magic._version"}       # below every layer: the exception tree, the version
TOP = "rx_magic"                                        # the package's face: may import anything


def module_name(path: Path) -> str:
    parts = ["rx_magic", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    if module in BOTTOM:
        return -1
    if module == TOP:
        return len(LAYERS)
    return LAYERS.index(module.split(".")[1])


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The rx_magic modules ``module`` imports (anywhere in the file), with the line of each import."""
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "rx_magic"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "rx_magic":
                source = node.module
            else:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in known else source, node.lineno))
    return [(name, line) for name, line in found if name in known and name != module]


def import_graph() -> dict[str, list[tuple[str, int]]]:
    known = all_modules()
    return {module: imports_of(module, path, known) for module, path in known.items()}


def test_every_module_belongs_to_a_layer():
    stray = [module for module in all_modules() if module not in BOTTOM and module != TOP
             and module.split(".")[1] not in LAYERS]
    assert stray == [], f"modules outside DESIGN.md's layers: {stray}"


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{module} (line {line}) imports {imported}"
              for module, edges in import_graph().items() for imported, line in edges
              if layer_of(imported) > layer_of(module)]
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def test_no_two_modules_import_each_other_round_about():
    graph = {module: sorted({imported for imported, _ in edges}) for module, edges in import_graph().items()}
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in graph[module]:
            if state.get(imported) == "open":
                cycles.append(trail[trail.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, [*trail, imported])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("name", ["runner.py", "wire.py", "layout.py", "jsontext.py", "process_state.py", "worker.py"])
def test_the_runtime_needs_only_the_standard_library_and_its_own_files(name):
    """These files are copied to the target as they are: nothing of rx_magic's package is importable there."""
    path = PACKAGE / "runtime" / name
    siblings = {p.stem for p in (PACKAGE / "runtime").glob("*.py")} - {"__init__"}
    # used only when a cell's values or code need them, or (numpy, pandas) when the notebook had them imported
    # (_sha2 is the standard library's sha256 from Python 3.12 on, _sha256 before)
    allowed_lazily = {"dill", "IPython", "matplotlib", "numpy", "pandas", "_sha2"}
    tree = ast.parse(path.read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            problems.append(f"line {node.lineno}: relative import")
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
        top_level = node in tree.body
        for imported in names:
            root = imported.split(".")[0]
            if root in sys.stdlib_module_names or root in siblings or root == "__future__":
                continue
            if root in allowed_lazily and not top_level:
                continue
            problems.append(f"line {node.lineno}: imports {imported}")
    assert problems == [], f"runtime/{name}: " + "; ".join(problems)


def test_the_checker_sees_an_upward_import_hidden_in_a_function(tmp_path):
    """The rule holds for imports inside functions too: a model module reaching up to flow is caught."""
    known = {**all_modules(), "rx_magic.model.sneaky": tmp_path / "sneaky.py"}
    (tmp_path / "sneaky.py").write_text("def f():\n    from ..flow.job import Job\n    return Job\n")
    edges = imports_of("rx_magic.model.sneaky", tmp_path / "sneaky.py", known)
    assert edges == [("rx_magic.flow.job", 2)]
    assert layer_of("rx_magic.flow.job") > layer_of("rx_magic.model.sneaky")

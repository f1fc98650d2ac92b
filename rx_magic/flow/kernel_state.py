"""What a remote cell does to the kernel itself, not to its names: sent with the cell, redone here after it.

- The process state (``runtime.process_state``): the random generators'
  state and the settings (rcParams, print options, pandas options, warnings
  filters) go with the cell, and what the cell changed of them is applied here.
- Line magics that configure the kernel (``%matplotlib inline``, ``%load_ext``,
  ``%config``) and display setup calls (``init_printing()``) in the cell's top
  level run here too: the target ran them harmlessly, they belong to this kernel.
- ``from m import *`` binds names nobody can list before it runs: it runs here
  again, and binds those of its names the cell did not bring back itself.
- A last expression that was a name the notebook has is shown from the
  namespace, once the pulled values are in (``pull.ShownName``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import sys
from dataclasses import dataclass, field

from ..errors import ipython_colors
from ..runtime import process_state
from .pull import NO_RESULT, ShownName

#: Calls that set up how this kernel displays values (sympy's ``init_printing``, the inline backend's formats).
DISPLAY_SETUP_CALLS = frozenset({"init_printing", "set_matplotlib_formats"})


def state_to_send(*, array: bool = False) -> dict:
    """The process state a job starts from: this kernel's, as ``job.json`` carries it.

    The elements of a job array get no random state: each must draw its own numbers.
    """
    process_state.pickle_figures_stably()
    return process_state.encode(process_state.outgoing(skip=process_state.RANDOM_SECTIONS if array else ()))


def traceback_look(numbered: bool) -> dict:
    """How this kernel shows a cell's error, so that the target formats one the same way: IPython's colours
    (``errors.ipython_colors``: none with ``NO_COLOR``) and, when the code is the cell being run
    (``numbered``), its number, for ``Cell In[5], line 3``."""
    look = {"colors": ipython_colors()}
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    name_of = getattr(getattr(shell, "compile", None), "format_code_name", None)
    frame = sys._getframe(1) if numbered and name_of is not None else None
    while frame is not None:    # the cell's own frame, which ran the magic: IPython names its code ("Cell", "In[5]")
        label = name_of(frame.f_code.co_filename)
        number = re.fullmatch(r"In\[(\d+)\]", label[1]) if label else None
        if number:
            look["cell"] = int(number[1])
            break
        frame = frame.f_back
    return look


def inline_figure_formats() -> dict | None:
    """How this kernel's inline backend shows figures (``%config InlineBackend.figure_formats``), so that the
    job's figures come in the same formats; None when it is not set up here."""
    config = sys.modules.get("matplotlib_inline.config")
    if config is None or not config.InlineBackend.initialized():
        return None
    backend = config.InlineBackend.instance()
    kwargs = dict(backend.print_figure_kwargs)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        kwargs = {"bbox_inches": "tight"}
    return {"formats": sorted(backend.figure_formats), "kwargs": kwargs}


@dataclass
class KernelStatements:
    """The top-level statements of a cell that this kernel redoes after the job."""

    magics: list[tuple[str, str]] = field(default_factory=list)     # (magic, its line)
    display_setup: list[str] = field(default_factory=list)          # statements, as source
    star_imports: list[str] = field(default_factory=list)           # module names


def kernel_statements(code: str) -> KernelStatements:
    """Find them in ``code`` (as ``shell.transform_cell`` leaves it)."""
    found = KernelStatements()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return found
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and any(alias.name == "*" for alias in node.names):
            found.star_imports.append(node.module)
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            continue
        call, func = node.value, node.value.func
        magic = _line_magic(call)
        if magic is not None and magic[0] in process_state.KERNEL_MAGICS:
            found.magics.append(magic)
        elif (getattr(func, "id", None) or getattr(func, "attr", None)) in DISPLAY_SETUP_CALLS:
            found.display_setup.append(ast.unparse(node))
    return found


def _line_magic(call: ast.Call) -> tuple[str, str] | None:
    func = call.func
    if (isinstance(func, ast.Attribute) and func.attr == "run_line_magic"
            and isinstance(func.value, ast.Call) and getattr(func.value.func, "id", None) == "get_ipython"
            and len(call.args) >= 2
            and all(isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in call.args[:2])):
        return call.args[0].value, call.args[1].value
    return None


def redo_here(shell, code: str, results, *, values_applied: bool) -> list[str]:
    """After a job: this kernel's magics, the process state the cell changed, and (once its values are
    in the namespace) its star imports and display setup. Returns what could not be done, for the user."""
    warnings = []
    statements = kernel_statements(code)
    for magic, line in statements.magics:      # first, as they come first in a cell: the cell's settings win
        try:
            with contextlib.redirect_stdout(io.StringIO()):     # the job printed what it says already
                shell.run_line_magic(magic, line)
        except Exception as exc:
            warnings.append(f"%{magic} {line} ran on the target but failed here: {type(exc).__name__}: {exc}")
    for section, value in (getattr(results, "process_state", None) or {}).items():
        if not process_state.write(section, value, import_module=True):
            warnings.append(f"the cell changed {section}, which could not be applied here")
    if not values_applied:
        return warnings
    pulled = set(results.values) | set(results.modules)
    for module in statements.star_imports:
        names: dict = {}
        try:
            exec(f"from {module} import *", names)
        except Exception as exc:
            warnings.append(f"`from {module} import *` ran on the target, but {module} cannot be imported here "
                            f"({type(exc).__name__}: {exc}), so the names it binds are not here")
            continue
        names.pop("__builtins__", None)
        shell.user_ns.update({name: value for name, value in names.items() if name not in pulled})
    for statement in statements.display_setup:
        try:
            exec(compile(statement, "<remote cell>", "exec"), shell.user_ns)
        except Exception as exc:
            warnings.append(f"`{statement}` ran on the target but failed here: {type(exc).__name__}: {exc}")
    return warnings


def redo_after_job(shell, job) -> list[str]:
    """``redo_here`` for a fetched job whose cell ran (it ended done, or raised): nothing for one killed or
    cancelled. Its values must be in ``shell.user_ns`` already when it has any."""
    results = job.results
    if results is None or not (job.has_values or (results.error or {}).get("type")):
        return []
    if isinstance(results.result, ShownName):
        results.result = shell.user_ns.get(results.result.name, NO_RESULT) if job.has_values else NO_RESULT
    return redo_here(shell, (job.spec() or {}).get("code", ""), results, values_applied=job.has_values)

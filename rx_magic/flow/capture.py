"""Which names a cell pushes to the target and which it pulls back.

A cell *reads* a name when it may load it before the cell itself has surely
bound it; such a name, if it lives in the user namespace, is pushed. A cell
*binds* the names it assigns at top level; those are pulled back. Modules are
never pushed: they travel as the ``import`` line that recreates them. Values
that look like credentials stay in the kernel unless the user names them in
``--push``. Nothing here serializes anything.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import keyword
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import CaptureError
from .secrets import CREDENTIAL_NAME, looks_secret, secret_shape

EMPTY_CELL_MESSAGE = "the cell is empty: write the code to run below the %%remote line"

_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
_IPYTHON_NAME_PATTERN = re.compile(r"_(|_|__|i|ii|iii|ih|oh|dh|i?\d+)|__\w+__")

# Magics whose argument is Python code run in the user namespace, after options (getopt letters, ":" takes
# a value); other magics' arguments are opaque.
_CODE_MAGICS = {"time": "", "timeit": "n:r:tcp:qo", "prun": "D:l:rs:T:q"}


@dataclass(frozen=True)
class CellNames:
    """The names a cell reads from the namespace it starts with, and binds at top level."""

    reads: frozenset[str]
    binds: tuple[str, ...]


@dataclass
class Capture:
    """What to send with a cell and what to bring back from it."""

    code: str
    push: dict[str, object] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    pull: list[str] = field(default_factory=list)
    held_back: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # pushed names whose objects come back if the cell changed them in place (``lst.append(x)``)
    pull_if_changed: list[str] = field(default_factory=list)
    # names that come back if the job binds them anew: pushed ones, and globals the notebook's functions assign
    pull_if_rebound: list[str] = field(default_factory=list, compare=False)
    read_lines: dict[str, int] = field(default_factory=dict, compare=False)  # pushed name -> first line reading it
    # globals no notebook function carries: the held back ones, and every credential-named one not pushed
    withheld: frozenset = field(default_factory=frozenset, compare=False)


def names_in_cell(code: str, first_line: int = 1) -> CellNames:
    """Find the names ``code`` reads and binds.

    ``first_line`` is the cell line number of the code's first line, used in
    error messages. Raises ``CaptureError`` for a syntax error or an empty cell.
    """
    try:
        tree = ast.parse(code)
        compile(tree, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as exc:
        raise CaptureError(_syntax_error_message(exc, code, first_line)) from None
    if not tree.body:
        raise CaptureError(EMPTY_CELL_MESSAGE)
    walk = _ScopeWalk("module")
    walk.visit(tree)
    return CellNames(reads=frozenset(walk.reads), binds=tuple(walk.binds))


def capture_cell(
    code: str,
    user_ns: dict,
    *,
    push: Sequence[str] = (),
    pull: Sequence[str] | None = None,
    no_pull: bool = False,
    first_line: int = 1,
) -> Capture:
    """Decide what a cell sends from ``user_ns`` and which names it brings back.

    ``push`` names values to send even if the cell does not seem to read them
    (and even if they look secret); ``pull`` replaces the names brought back;
    ``no_pull`` brings nothing back.
    """
    names = names_in_cell(code, first_line)
    _check_python_names("--push", push)
    _check_python_names("--pull", pull or ())
    undefined = [name for name in push if name not in user_ns]
    if undefined:
        verb = "which is" if len(undefined) == 1 else "which are"
        raise CaptureError(f"--push names {_quoted(undefined)} {verb} not defined in the notebook")

    capture = Capture(code=code)
    # the notebook's functions read the cell's globals on the target: what they use travels too
    used, assigned = _globals_of_notebook_code(names.reads | set(push), user_ns)
    reads = names.reads | used
    for name in sorted(reads | set(push)):
        if is_ipython_internal(name):
            if name in push:
                capture.warnings.append(f"--push names {name!r}, which is IPython's own and is never sent")
            continue
        if name not in user_ns or _is_ipython_builtin_stand_in(name, user_ns[name]):
            continue
        value = user_ns[name]
        if isinstance(value, types.ModuleType):
            capture.imports[name] = module_import_line(name, value)
            continue
        reason = None if name in push else looks_secret(name, value)
        if reason:
            capture.held_back[name] = reason
            capture.warnings.append(
                f"held back {name!r} ({reason}): it stays in this kernel; to send it anyway, add --push {name}"
            )
            continue
        capture.push[name] = value

    if no_pull:
        capture.pull = []
    elif pull is not None:
        capture.pull = list(dict.fromkeys(pull))
        for name in capture.pull:
            if name not in names.binds and name not in capture.push:   # changed in place, it comes back
                capture.warnings.append(f"--pull names {name!r}, which the cell never binds at top level")
    else:
        capture.pull = [name for name in names.binds if not is_ipython_internal(name)]
    if not no_pull and pull is None:
        capture.pull_if_rebound = [name for name in dict.fromkeys([*capture.push, *sorted(assigned)])
                                   if name not in capture.pull and not is_ipython_internal(name)]
    if no_pull:
        capture.pull_if_changed = []
    elif pull is not None:
        capture.pull_if_changed = [name for name in capture.pull if name in capture.push
                                   and may_change(capture.push[name])]
    else:
        capture.pull_if_changed = [name for name, value in capture.push.items() if may_change(value)]
    capture.withheld = frozenset(capture.held_back) | frozenset(
        name for name in user_ns if isinstance(name, str) and CREDENTIAL_NAME.search(name) and name not in capture.push)
    _refuse_live_objects(capture, user_ns, first_line)
    capture.read_lines = _first_reads(code, set(capture.push), first_line)
    return capture


def _first_reads(code: str, names: set[str], first_line: int) -> dict[str, int]:
    """The cell line on which each of ``names`` is first loaded, for messages about its value."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
            line = node.lineno + first_line - 1
            found[node.id] = min(line, found.get(node.id, line))
    return found


def _refuse_live_objects(capture: Capture, user_ns: dict, first_line: int) -> None:
    """Name, before anything is sent, the open files, sockets, locks and generators the cell would bring back.

    One the cell closes (``with open(p) as f``, ``f.close()``) is useless here: its name is left
    out with a note. One still open stops the cell with a single message naming each.
    """
    from .live_objects import find_live_objects
    problems = []
    for live in find_live_objects(capture.code, user_ns, first_line):
        comes_back = live.name in capture.pull or (live.stored and live.name in capture.pull_if_changed)
        if not comes_back:
            continue
        if live.closed:
            if live.name in capture.pull:
                capture.pull.remove(live.name)
                capture.warnings.append(f"{live.describe()}, closed by the end of the cell: {live.name!r} "
                                        "is not brought back")
            continue
        if all(problem.describe() != live.describe() for problem in problems):
            problems.append(live)
    if not problems:
        return
    stuck = list(dict.fromkeys(problem.name for problem in problems))
    others = [name for name in capture.pull if name not in stuck]
    instead = f"--pull {','.join(others)}" if others else "--no-pull"
    raise CaptureError(
        f"{'; '.join(problem.describe() for problem in problems)}: "
        f"{'it lives' if len(problems) == 1 else 'these live'} only in the job's process and cannot come back to "
        f"the notebook. Close files and connections within the cell (`with ... as f:`), turn generators into "
        f"lists, or leave {_quoted(stuck)} out of what comes back with {instead}")


_IMMUTABLE = (int, float, complex, bool, str, bytes, type(None), range, types.BuiltinFunctionType)


def may_change(value: object, depth: int = 0) -> bool:
    """Whether a cell can change ``value`` in place, so that it has to be checked after the cell.

    Numbers, strings, bytes, tuples and frozensets of those never change; nor, here, do
    functions and classes (a function's globals are the namespace's own names).
    """
    if isinstance(value, _IMMUTABLE) or isinstance(value, (type, types.FunctionType, types.ModuleType)):
        return False
    if type(value) in (tuple, frozenset):
        return depth > 3 or len(value) > 1000 or any(may_change(item, depth + 1) for item in value)
    return True


def _globals_of_notebook_code(names: set[str], user_ns: dict) -> tuple[set[str], set[str]]:
    """The notebook globals that the notebook's functions and classes among ``names`` use, transitively,
    and the global names they assign (``global total; total += x``)."""
    from ..runtime.wire import globals_stored, globals_used
    found: set[str] = set()
    assigned: set[str] = set()
    pending = [name for name in names if name in user_ns]
    seen = set(pending)
    while pending:
        value = user_ns[pending.pop()]
        kind = value if isinstance(value, type) else type(value)
        functions = [value] if isinstance(value, types.FunctionType) else _functions_within(value)
        if getattr(kind, "__module__", None) == "__main__":
            for member in vars(kind).values():
                member = getattr(member, "__func__", member)
                functions.extend(getattr(member, part, None) for part in ("fget", "fset", "fdel"))
                functions.append(member)
        for function in functions:
            if not isinstance(function, types.FunctionType) or function.__module__ != "__main__" \
                    or function.__globals__ is not user_ns:
                continue
            assigned.update(globals_stored(function))
            for used in globals_used(function):
                if used not in seen and not is_ipython_internal(used):
                    seen.add(used)
                    found.add(used)
                    pending.append(used)
    return found - names, assigned


def _functions_within(value: object, limit: int = 10_000) -> list[types.FunctionType]:
    """The notebook's functions held in ``value``'s containers and attributes (``{'f': f}``, ``obj.callback``),
    looked for ``limit`` items deep: they travel with it, carrying the globals they use."""
    found, seen, pending = [], set(), [(value, 0)]
    while pending and limit > 0:
        item, depth = pending.pop()
        limit -= 1
        if id(item) in seen or depth > 6 or isinstance(item, (str, bytes, bytearray, int, float, type(None))):
            continue
        seen.add(id(item))
        if isinstance(item, types.FunctionType):
            if item.__module__ == "__main__" and depth:
                found.append(item)
            continue
        if isinstance(item, (types.ModuleType, type)) or hasattr(type(item), "__array_interface__"):
            continue
        if isinstance(item, dict):
            children = list(itertools.islice(item.values(), limit))
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(itertools.islice(item, limit))
        elif isinstance(item, types.MethodType):
            children = [item.__func__]
        else:
            try:
                state = object.__getattribute__(item, "__dict__")
            except Exception:
                state = None
            children = list(state.values()) if isinstance(state, dict) else []
            children += [getattr(item, part, None) for part in ("func", "args", "keywords")
                         if type(item).__name__ == "partial"]
        pending.extend((child, depth + 1) for child in children)
    return found


def notebook_sources(values: dict) -> dict[str, dict]:
    """The lines of the notebook's functions among ``values`` (methods of its classes, and functions
    their containers hold), so remote tracebacks through them show their lines, labelled as IPython
    labels them (``Cell In[3]``). Only those functions' lines go, at their places in their cells; every
    other line of the cell is left empty, and so is a line that looks like it holds a credential.

    Returns ``{code file name: {"lines": [...], "label": "Cell In[3]"}}``; empty outside IPython.
    """
    import dis
    import linecache
    try:
        from IPython import get_ipython
        compiler = get_ipython().compile
    except Exception:
        return {}
    wanted: dict[str, set[int]] = {}

    def code_lines(code: types.CodeType) -> None:
        lines = wanted.setdefault(code.co_filename, set())
        found = [line for _, line in dis.findlinestarts(code) if line]
        lines.update(range(code.co_firstlineno, max(found, default=code.co_firstlineno) + 1))
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                code_lines(constant)

    functions = []
    for value in values.values():
        if isinstance(value, types.FunctionType):
            functions.append(value)
        elif isinstance(value, type) and value.__module__ == "__main__":
            for member in vars(value).values():
                member = getattr(member, "__func__", member)
                functions.extend(getattr(member, part, None) for part in ("fget", "fset", "fdel"))
                functions.append(member)
        else:
            functions.extend(_functions_within(value))
    for function in functions:
        if isinstance(function, types.FunctionType) and function.__module__ == "__main__":
            code_lines(function.__code__)
    sources = {}
    for filename, numbers in sorted(wanted.items()):
        label = compiler.format_code_name(filename) if hasattr(compiler, "format_code_name") else None
        lines = linecache.getlines(filename)
        if not (label and lines and numbers):     # only the notebook's own cells: files on disk the target may have
            continue
        sent = [lines[number - 1] if number in numbers and not _credential_line(lines[number - 1]) else "\n"
                for number in range(1, min(max(numbers), len(lines)) + 1)]
        sources[filename] = {"lines": sent, "label": " ".join(label)}
    return sources


_CREDENTIAL_ASSIGNMENT = re.compile(rf"(?:{CREDENTIAL_NAME.pattern})\w*['\"]?\s*[:=]\s*[rbfu]*['\"]", re.IGNORECASE)


def _credential_line(line: str) -> bool:
    """Whether a source line looks like it holds a credential: a secret's shape, or text given to a credential's name."""
    return secret_shape(line) is not None or _CREDENTIAL_ASSIGNMENT.search(line) is not None


def module_import_line(name: str, module: types.ModuleType) -> str:
    """The ``import`` statement that binds ``name`` to ``module`` on the target."""
    module_name = getattr(module, "__name__", None)
    if not _is_python_name(name) or not isinstance(module_name, str) or not all(
        _is_python_name(part) for part in module_name.split(".")
    ):
        raise CaptureError(f"{name!r} holds module {module_name!r}, which cannot be recreated with an import")
    if name == module_name:
        return f"import {module_name}"
    return f"import {module_name} as {name}"


def is_ipython_internal(name: str) -> bool:
    """Whether ``name`` belongs to IPython or Python rather than the user (``In``, ``_i3``, ``__doc__``)."""
    return name in _IPYTHON_NAMES or _IPYTHON_NAME_PATTERN.fullmatch(name) is not None


def _is_ipython_builtin_stand_in(name: str, value: object) -> bool:
    # IPython puts its own wrapper of `open` in the user namespace; the target has the real one.
    wrapped = getattr(value, "__wrapped__", None)
    return wrapped is not None and wrapped is getattr(builtins, name, None)


def _syntax_error_message(exc: SyntaxError, code: str, first_line: int) -> str:
    lineno = exc.lineno or 1
    lines = code.splitlines()
    source = (lines[lineno - 1] if lineno <= len(lines) else exc.text or "").strip()
    in_cell_numbering = re.sub(r"\bline (\d+)", lambda m: f"line {int(m[1]) + first_line - 1}", exc.msg)
    return f"line {lineno + first_line - 1} of the cell: {in_cell_numbering}" + (f": `{source}`" if source else "")


def _magic_code(call: ast.Call) -> str | None:
    """The code a ``get_ipython().run_line_magic("time", code)`` call (or its cell form) runs, if any."""
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr in ("run_line_magic", "run_cell_magic")
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
        and len(call.args) == (2 if func.attr == "run_line_magic" else 3)
        and all(isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in call.args)
        and call.args[0].value in _CODE_MAGICS
    ):
        return None
    if func.attr == "run_cell_magic":
        return call.args[-1].value
    return _without_options(call.args[-1].value, _CODE_MAGICS[call.args[0].value])


def _without_options(line: str, letters: str) -> str:
    """``-n 10 -r3 f(x)`` -> ``f(x)``: the code after a magic's leading options."""
    rest = line.lstrip()
    while True:
        match = re.match(r"-([A-Za-z])(\S*)\s*", rest)
        if match is None or match[1] not in letters:
            return rest
        rest = rest[match.end():]
        if letters[letters.index(match[1]) + 1:].startswith(":") and not match[2]:
            rest = rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else ""


def _is_python_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _check_python_names(option: str, names: Sequence[str]) -> None:
    bad = [name for name in names if not _is_python_name(name)]
    if bad:
        raise CaptureError(f"{option} names {_quoted(bad)}, which {'is' if len(bad) == 1 else 'are'} not a Python name")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


class _ScopeWalk(ast.NodeVisitor):
    """Walks one scope in execution order, tracking which names are surely bound so far.

    ``kind`` is "module", "class", "function" or "comprehension". A load of a
    name not surely bound here is a read; a nested scope's reads are checked
    against what is bound where the nested scope is defined, except in a class
    body, whose names nested scopes cannot see.
    """

    def __init__(self, kind: str, params: Sequence[str] = ()):
        self.kind = kind
        self.bound = set(params)
        self.binds = dict.fromkeys(params)
        self.reads: set[str] = set()
        self.declared_global: set[str] = set()
        self.declared_nonlocal: set[str] = set()
        self.global_binds: dict[str, None] = {}
        self.walrus_binds: dict[str, None] = {}

    def load(self, name: str) -> None:
        if name not in self.bound:
            self.reads.add(name)

    def bind(self, name: str, surely: bool = True) -> None:
        if surely:
            self.bound.add(name)
        if name in self.declared_global:
            self.global_binds.setdefault(name)
        else:
            self.binds.setdefault(name)

    def outward_reads(self) -> set[str]:
        if self.kind == "function":
            return self.reads - set(self.binds) - self.declared_nonlocal
        return self.reads

    def adopt(self, child: _ScopeWalk) -> None:
        for name in child.outward_reads():
            if self.kind == "class" or name not in self.bound:
                self.reads.add(name)
        for name in child.walrus_binds:
            if self.kind == "comprehension":
                self.walrus_binds.setdefault(name)
            else:
                self.bind(name, surely=False)
        for name in child.global_binds:
            if self.kind == "module":
                self.binds.setdefault(name)
            else:
                self.global_binds.setdefault(name)

    def visit_all(self, nodes) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def either(self, *branches) -> None:
        """Walk alternative branches; afterwards only names bound on every branch are sure."""
        start, ends = self.bound, []
        for branch in branches:
            self.bound = set(start)
            self.visit_all(branch)
            ends.append(self.bound)
        self.bound = set.intersection(*ends)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.bind(node.id)
            return
        self.load(node.id)
        if isinstance(node.ctx, ast.Del):
            self.bound.discard(node.id)
            if self.kind == "module":
                self.binds.pop(node.id, None)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        if self.kind == "comprehension":  # PEP 572: binds in the enclosing scope
            self.bound.add(node.target.id)
            self.walrus_binds.setdefault(node.target.id)
        else:
            self.bind(node.target.id)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.visit(node.values[0])
        self.either(node.values[1:], [])

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        self.either([node.body], [node.orelse])

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self.either(node.body, node.orelse)

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)
        self.either(node.body, [])
        self.either(node.orelse, [])

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.either([node.target, *node.body], [])
        self.either(node.orelse, [])

    visit_AsyncFor = visit_For

    def visit_Try(self, node: ast.Try) -> None:
        start = set(self.bound)
        self.visit_all(node.body + node.orelse)
        ends = [self.bound]
        for handler in node.handlers:
            self.bound = set(start)
            self.visit_all([handler.type])
            if handler.name and self.kind == "module":  # Python deletes it when the handler ends: never pulled
                self.bound.add(handler.name)
            elif handler.name:
                self.bind(handler.name)
            self.visit_all(handler.body)
            self.bound.discard(handler.name)
            ends.append(self.bound)
        self.bound = set.intersection(*ends)
        self.visit_all(node.finalbody)

    visit_TryStar = visit_Try

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        branches = [[case.pattern, case.guard, *case.body] for case in node.cases]
        last = node.cases[-1]
        if not (isinstance(last.pattern, ast.MatchAs) and last.pattern.pattern is None and last.guard is None):
            branches.append([])
        self.either(*branches)

    def _visit_capture_pattern(self, node: ast.MatchAs | ast.MatchStar | ast.MatchMapping) -> None:
        self.generic_visit(node)
        name = getattr(node, "name", None) or getattr(node, "rest", None)
        if name:
            self.bind(name)

    visit_MatchAs = visit_MatchStar = visit_MatchMapping = _visit_capture_pattern

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        code = _magic_code(node)
        if code is not None:
            try:
                self.visit_all(ast.parse(code).body)
            except SyntaxError:
                pass  # the magic reports it when the cell runs

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        self.visit_all(node.targets)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
            self.visit(node.value)
            self.bind(node.target.id)
        else:
            self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit_all([node.value])
        if self.kind != "function":  # annotations of local variables are never evaluated
            self.visit(node.annotation)
        if not isinstance(node.target, ast.Name):
            self.visit(node.target)
        elif node.value is not None:
            self.bind(node.target.id)
        elif self.kind == "function":  # `x: int` alone still makes x local
            self.binds.setdefault(node.target.id)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":  # names a star import binds cannot be known here
                self.bind(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_Global(self, node: ast.Global) -> None:
        if self.kind != "module":
            self.declared_global.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.declared_nonlocal.update(node.names)

    def _function(self, node, body) -> None:
        args = node.args
        self.visit_all(args.defaults + args.kw_defaults)
        every_arg = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
        params = [arg.arg for arg in every_arg if arg is not None]
        if not isinstance(node, ast.Lambda):
            self.visit_all([arg.annotation for arg in every_arg if arg is not None] + [node.returns])
        child = _ScopeWalk("function", params)
        child.visit_all(body)
        self.adopt(child)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.visit_all(node.decorator_list)
        self._function(node, node.body)
        self.bind(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.visit_all(node.decorator_list + node.bases + node.keywords)
        child = _ScopeWalk("class")
        child.visit_all(node.body)
        self.adopt(child)
        self.bind(node.name)

    def _comprehension(self, node, results) -> None:
        self.visit(node.generators[0].iter)  # the first iterable is evaluated in the enclosing scope
        child = _ScopeWalk("comprehension")
        for index, generator in enumerate(node.generators):
            if index:
                child.visit(generator.iter)
            child.visit(generator.target)
            child.visit_all(generator.ifs)
        child.visit_all(results)
        self.adopt(child)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])

"""Objects that live in the process that made them: open files, sockets, locks, threads, generators.

A cell that leaves one in a name it brings back (``f = open(path)``), or puts one
into a value that comes back changed (``handles.append(open(path))``), would fail
only after the job ran. :func:`find_live_objects` reads the cell's code and
names each such place, with the object's type and its line, before anything is
sent. It recognises the calls that make them (resolved through the notebook's
names and the cell's imports, never by running anything), generator
expressions and calls of generator functions; other values that do not pickle
are still named after the job.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import sys
from dataclasses import dataclass

_FILE = "an open file"
_TEXT_FILE, _BINARY_FILE = "io.TextIOWrapper", "io.Buffered{}"
# what each call makes: (what it is, its type); None: an open file, its type read from the mode
_MAKERS: dict[str, tuple[str, str] | None] = {
    "open": None, "io.open": None, "pathlib.Path.open": None, "os.fdopen": None,
    "io.FileIO": (_FILE, "io.FileIO"), "codecs.open": (_FILE, "codecs.StreamReaderWriter"),
    "gzip.open": (_FILE, "gzip.GzipFile"), "gzip.GzipFile": (_FILE, "gzip.GzipFile"),
    "bz2.open": (_FILE, "bz2.BZ2File"), "bz2.BZ2File": (_FILE, "bz2.BZ2File"),
    "lzma.open": (_FILE, "lzma.LZMAFile"), "lzma.LZMAFile": (_FILE, "lzma.LZMAFile"),
    "tarfile.open": ("an open archive", "tarfile.TarFile"), "zipfile.ZipFile": ("an open archive", "zipfile.ZipFile"),
    "tempfile.TemporaryFile": (_FILE, "tempfile.TemporaryFile"),
    "tempfile.NamedTemporaryFile": (_FILE, "tempfile.NamedTemporaryFile"),
    "tempfile.SpooledTemporaryFile": (_FILE, "tempfile.SpooledTemporaryFile"),
    "mmap.mmap": ("a memory map", "mmap.mmap"),
    "socket.socket": ("a socket", "socket.socket"), "socket.create_connection": ("a socket", "socket.socket"),
    "socket.create_server": ("a socket", "socket.socket"), "socket.socketpair": ("sockets", "socket.socket"),
    "urllib.request.urlopen": ("an open network response", "http.client.HTTPResponse"),
    "sqlite3.connect": ("a database connection", "sqlite3.Connection"),
    "threading.Lock": ("a lock", "_thread.lock"), "threading.RLock": ("a lock", "_thread.RLock"),
    "_thread.allocate_lock": ("a lock", "_thread.lock"),
    "threading.Condition": ("a condition variable", "threading.Condition"),
    "threading.Semaphore": ("a semaphore", "threading.Semaphore"),
    "threading.BoundedSemaphore": ("a semaphore", "threading.BoundedSemaphore"),
    "threading.Event": ("an event", "threading.Event"), "threading.Barrier": ("a barrier", "threading.Barrier"),
    "threading.Thread": ("a thread", "threading.Thread"), "threading.Timer": ("a thread", "threading.Timer"),
    "subprocess.Popen": ("a running process", "subprocess.Popen"),
    "multiprocessing.Pool": ("a pool of worker processes", "multiprocessing.pool.Pool"),
    "multiprocessing.pool.Pool": ("a pool of worker processes", "multiprocessing.pool.Pool"),
    "multiprocessing.pool.ThreadPool": ("a pool of worker threads", "multiprocessing.pool.ThreadPool"),
    "concurrent.futures.ThreadPoolExecutor": ("a pool of worker threads", "concurrent.futures.ThreadPoolExecutor"),
    "concurrent.futures.ProcessPoolExecutor": ("a pool of worker processes",
                                               "concurrent.futures.ProcessPoolExecutor"),
    "csv.reader": ("a csv reader", "_csv.reader"), "csv.writer": ("a csv writer", "_csv.writer"),
    "csv.DictReader": ("a csv reader", "csv.DictReader"), "csv.DictWriter": ("a csv writer", "csv.DictWriter"),
}
_GENERATOR = ("a generator", "generator")
# calls whose result keeps what they are given (enumerate(open(p)) is still a file underneath)
_WRAPPERS = frozenset({"enumerate", "zip", "map", "filter", "iter", "reversed"})
# methods that store their argument in the object they are called on
_STORING_METHODS = frozenset({"append", "extend", "insert", "add", "update", "setdefault", "appendleft",
                              "extendleft", "put", "put_nowait", "__setitem__"})
_CONTAINERS = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Starred, ast.ListComp, ast.SetComp, ast.DictComp,
               ast.IfExp, ast.BoolOp)


@dataclass(frozen=True)
class LiveObject:
    """A place where the cell leaves a live object in a value that would come back."""

    name: str           # the notebook name that would hold it
    what: str           # "an open file"
    type_name: str      # "io.TextIOWrapper"
    line: int           # in the cell, as the user numbers its lines
    source: str         # the expression that makes it, shortened
    stored: bool        # put into the value (``name.append(...)``), rather than bound to the name
    closed: bool        # closed by the cell (``with ... as name``, ``name.close()``): useless here anyway

    def describe(self) -> str:
        where = f"line {self.line} of the cell"
        made = f"{self.what} ({self.type_name}, from `{self.source}`)"
        if self.stored:
            return f"{where} puts {made} into {self.name!r}"
        return f"{where} binds {self.name!r} to {made}"


def find_live_objects(code: str, user_ns: dict, first_line: int = 1) -> list[LiveObject]:
    """Every place the cell's top level leaves a live object in a name or into a name's value."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    finder = _Finder(code, user_ns, first_line)
    finder.visit(tree)
    return finder.found


class _Finder(ast.NodeVisitor):
    """Walks the cell's top level (not function or class bodies), remembering each node's parent."""

    def __init__(self, code: str, user_ns: dict, first_line: int):
        self.code, self.user_ns, self.first_line = code, user_ns, first_line
        self.parents: dict[ast.AST, ast.AST] = {}
        self.aliases: dict[str, str] = {}           # name bound by an import in the cell -> dotted module path
        self.generator_functions: set[str] = set()
        self.closed: set[str] = set()
        self.pending: list[tuple[ast.AST, tuple[str, str]]] = []
        self.found: list[LiveObject] = []
        self.makers = _maker_paths()

    def visit_Module(self, node: ast.Module) -> None:
        self._walk(node)
        for made, (what, type_name) in self.pending:
            self._follow(made, what, type_name)

    def _walk(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            self.parents[child] = node
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _yields(child):
                    self.generator_functions.add(child.name)
                continue
            if isinstance(child, (ast.Lambda, ast.ClassDef)):
                continue
            self._note(child)
            self._walk(child)

    def _note(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    self.aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.GeneratorExp):
            self.pending.append((node, _GENERATOR))
        elif isinstance(node, ast.Call):
            made = self._makes(node)
            if made is not None:
                self.pending.append((node, made))
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "close" and isinstance(func.value, ast.Name):
                self.closed.add(func.value.id)
        elif isinstance(node, ast.withitem) and isinstance(node.context_expr, ast.Name):
            self.closed.add(node.context_expr.id)

    # --- what a call makes

    def _makes(self, call: ast.Call) -> tuple[str, str] | None:
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.generator_functions:
            return _GENERATOR
        dotted = _dotted(func)
        resolved = self._resolve(func)
        path = None
        if resolved is not None:
            if inspect.isgeneratorfunction(resolved) or inspect.isasyncgenfunction(resolved):
                return _GENERATOR
            path = self.makers.get(id(resolved))
        if path is None and dotted is not None:
            root, _, rest = dotted.partition(".")
            module = self.aliases.get(root)
            candidate = f"{module}.{rest}" if module and rest else (module or dotted)
            if candidate in _MAKERS and (root in self.aliases or root not in self.user_ns):
                path = candidate
        if path is None:
            return None
        made = _MAKERS[path]
        if made is None:
            return _FILE, _file_type(call, method=path == "pathlib.Path.open")
        return made

    def _resolve(self, func: ast.AST):
        """The object ``func`` names, looked up without calling anything; None when it cannot be known."""
        if isinstance(func, ast.Name):
            if func.id in self.aliases:
                return _import_path(self.aliases[func.id])
            if func.id in self.user_ns:
                value = self.user_ns[func.id]
                return getattr(value, "__wrapped__", value) if func.id == "open" else value
            return getattr(builtins, func.id, None)
        if isinstance(func, ast.Attribute):
            base = self._resolve(func.value)
            if base is None:
                return None
            if inspect.ismodule(base) or inspect.isclass(base):
                return inspect.getattr_static(base, func.attr, None)
            return inspect.getattr_static(type(base), func.attr, None)     # a method, not the instance's data
        return None

    # --- where what it makes goes

    def _follow(self, made: ast.AST, what: str, type_name: str) -> None:
        node = made
        while True:
            parent = self.parents.get(node)
            if parent is None:
                return
            if isinstance(parent, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node is parent.value:
                targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
                for target in targets:
                    self._land(target, made, what, type_name)
                return
            if isinstance(parent, ast.NamedExpr) and node is parent.value:
                self._land(parent.target, made, what, type_name)
                return
            if isinstance(parent, ast.withitem) and node is parent.context_expr:
                if parent.optional_vars is not None:
                    self._land(parent.optional_vars, made, what, type_name, closed=True)
                return
            if isinstance(parent, _CONTAINERS) or (
                    isinstance(parent, (ast.ListComp, ast.SetComp, ast.GeneratorExp)) and node is parent.elt):
                node = parent
                continue
            if isinstance(parent, ast.keyword):
                node = parent
                continue
            if isinstance(parent, ast.Call) and node is not parent.func:
                func = parent.func
                if isinstance(func, ast.Name) and func.id in _WRAPPERS:
                    node = parent
                    continue
                if isinstance(func, ast.Name) and func.id == "setattr" and parent.args:
                    self._land(parent.args[0], made, what, type_name, stored=True)
                elif isinstance(func, ast.Attribute) and func.attr in _STORING_METHODS:
                    self._land(func.value, made, what, type_name, stored=True)
                return
            return

    def _land(self, target: ast.AST, made: ast.AST, what: str, type_name: str,
              closed: bool = False, stored: bool = False) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._land(element, made, what, type_name, closed, stored)
            return
        if isinstance(target, ast.Starred):
            target = target.value
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            target, stored = _root(target), True
        if not isinstance(target, ast.Name):
            return
        source = ast.get_source_segment(self.code, made) or "..."
        source = " ".join(source.split())
        if len(source) > 40:
            source = source[:39] + "…"
        closed = closed or (not stored and target.id in self.closed)
        self.found.append(LiveObject(target.id, what, type_name, made.lineno + self.first_line - 1, source,
                                     stored, closed))


def _yields(function: ast.AST) -> bool:
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _import_path(path: str):
    """The object at a dotted path, if its module is imported already (nothing is imported here)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is not None:
            found = module
            for part in parts[split:]:
                found = inspect.getattr_static(found, part, None)
                if found is None:
                    return None
            return found
    return None


def _maker_paths() -> dict[int, str]:
    """The makers that this process has imported, by identity (``from threading import Lock`` is one of them)."""
    found = {}
    for path in _MAKERS:
        obj = _import_path(path) if "." in path else getattr(builtins, path)
        if obj is not None:
            found.setdefault(id(obj), path)
    return found


def _file_type(call: ast.Call, method: bool) -> str:
    """The type ``open(...)`` gives for the mode it is written with."""
    mode = next((keyword.value for keyword in call.keywords if keyword.arg == "mode"), None)
    position = 0 if method else 1
    if mode is None and len(call.args) > position:
        mode = call.args[position]
    text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"
    if "b" not in text:
        return _TEXT_FILE
    if "+" in text:
        return _BINARY_FILE.format("Random")
    return _BINARY_FILE.format("Reader" if "r" in text else "Writer")

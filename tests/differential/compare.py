"""Run public notebooks plainly and under ``%%remote local``, and say where they differ.

    python tests/differential/compare.py [NAME ...] [--variant heavy|all] [--details]

Each notebook in notebooks.toml runs in a new real kernel (nbclient) three ways:

- ``plain``: as its authors wrote it;
- ``heavy``: its heavy cells (the ``heavy`` list in notebooks.toml: ``.fit(`` calls, long loops)
  prefixed with ``%%remote local``;
- ``all``: every code cell prefixed with ``%%remote local``, except the cells that cannot be sent
  at all (only magics or shell escapes), which run here and are counted as kept local.

Before the notebook's first cell each run executes a prelude that is not compared: it seeds
``random`` and ``numpy.random`` (so that a plain run gives the same numbers every time), and in
the remote variants loads rx_magic. Kernels run with ``PYTHONHASHSEED=0``, in a fresh working
folder, with their own rx_magic folders. After the last cell a summary of the namespace (names,
types, values where comparable, which names share objects, settings, random state) is taken in
the kernel. Each variant's cells and namespace are compared with the plain run's, after
normalising what differs between any two runs (addresses, timings, job ids, temporary paths,
rx_magic's own job displays), and every difference is given a kind (KINDS).
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import tomllib
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE / "notebooks"
CATALOGUE = HERE / "notebooks.toml"
VARIANTS = ("heavy", "all")
WORKERS = int(os.environ.get("RX_DIFF_WORKERS", "2"))
REMOTE = "%%remote local\n"

KINDS = {
    "random state": "the job drew from random/numpy.random without the notebook's state, or did not bring the advanced state back",
    "in-place mutation lost": "an object the cell changed in place (model.fit, lst.append, arr[...] = ...) came back unchanged",
    "identity": "names that shared one object here share it no more (a figure and its axes, two names for one list)",
    "figure missing": "a figure the plain run showed is not shown, or shows as text",
    "figure differs": "a figure is shown, but not the same picture (size, settings, content)",
    "display/repr": "the cell's displayed value differs: repr instead of the pretty printer, `;` ignored, a display hook missing",
    "magic failed": "a line magic, cell magic or shell escape inside a remote cell failed or did nothing",
    "settings": "process settings (matplotlib rcParams and style, numpy print options) were not applied where they should be",
    "cannot come back": "the cell binds a value that lives only in the job's process (a generator, an open file): rx_magic refuses the cell before submission and says so",
    "name missing": "a name the plain run bound is missing, or a cell failed for a name the job did not have",
    "error": "the cell raised an error that the plain run did not (or another one)",
    "other": "any other difference in printed output or values",
}

# Names a kernel has before any cell, or that only a shell defines.
IGNORED_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


# ----------------------------------------------------------------------------- the catalogue

@dataclass
class Entry:
    """One notebook of notebooks.toml: where it came from, which cells are heavy, which are left out."""
    name: str
    path: Path
    repo: str
    commit: str
    source_path: str
    licence: str
    heavy: list[int]
    skip: dict[int, str]
    volatile: dict[int, str]                                    # cells compared by the shape of their outputs only
    known: dict[str, str] = field(default_factory=dict)       # heavy variant: kind -> reason


def catalogue() -> list[Entry]:
    data = tomllib.loads(CATALOGUE.read_text())
    entries = []
    for name, item in data["notebook"].items():
        entries.append(Entry(
            name=name, path=NOTEBOOKS / item["file"], repo=item["repo"], commit=item["commit"],
            source_path=item["path"], licence=item["licence"], heavy=list(item.get("heavy", [])),
            skip={int(k): v for k, v in item.get("skip", {}).items()},
            volatile={int(k): v for k, v in item.get("volatile", {}).items()},
            known=dict(item.get("known_heavy", {}))))
    return entries


# ----------------------------------------------------------------------------- building the variants

PRELUDE = """\
__import__("random").seed(0)
try:
    __import__("numpy").random.seed(0)
except ImportError:
    pass
"""

# Runs in the kernel after the last cell; prints one JSON line. Everything it defines is private.
SUMMARY = r'''
def __rx_summary():
    import json, re, sys, hashlib, types, random
    ns = get_ipython().user_ns
    hidden = set(get_ipython().user_ns_hidden)
    np = sys.modules.get("numpy"); pd = sys.modules.get("pandas"); mpl = sys.modules.get("matplotlib")
    addr = re.compile(r"0x[0-9a-fA-F]+")
    timed = re.compile(r"_time_?$")         # measured durations (cv_results_'s mean_fit_time, refit_time_)

    def digest(text):
        return text if len(text) <= 300 else "sha1:" + hashlib.sha1(text.encode()).hexdigest()[:16] + f" ({len(text)} chars)"

    def clean(text):
        return addr.sub("0x…", text)

    def value(obj, depth=0):
        if depth > 3:
            return "…"
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return clean(repr(obj))
        if np is not None and isinstance(obj, np.ndarray):
            if obj.dtype == object:
                return f"ndarray object {obj.shape} [" + ", ".join(value(o, depth + 1) for o in obj.ravel()[:50]) + "]"
            return f"ndarray {obj.dtype} {obj.shape} {hashlib.sha1(np.ascontiguousarray(obj).tobytes()).hexdigest()[:16]}"
        if np is not None and isinstance(obj, np.generic):
            return clean(repr(obj))
        if pd is not None and isinstance(obj, pd.DataFrame):
            obj = obj[[c for c in obj.columns if not (isinstance(c, str) and timed.search(c))]]
        if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
            return f"{type(obj).__name__} {obj.shape} {hashlib.sha1(obj.to_csv().encode()).hexdigest()[:16]}"
        if isinstance(obj, (list, tuple)):
            return type(obj).__name__ + "[" + ", ".join(value(o, depth + 1) for o in obj[:50]) + ("…" if len(obj) > 50 else "") + "]"
        if isinstance(obj, (set, frozenset)):
            return type(obj).__name__ + "{" + ", ".join(sorted(value(o, depth + 1) for o in obj)) + "}"
        if isinstance(obj, dict):
            return "{" + ", ".join(f"{value(k, depth + 1)}: {value(v, depth + 1)}" for k, v in list(obj.items())[:50]
                                   if not (isinstance(k, str) and timed.search(k))) + "}"
        if isinstance(obj, types.GeneratorType):
            return "generator " + ("finished" if obj.gi_frame is None else f"at line {obj.gi_frame.f_lineno}")
        if isinstance(obj, (types.ModuleType,)):
            return "module " + obj.__name__
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
            return getattr(obj, "__qualname__", repr(obj))
        if mpl is not None:
            from matplotlib.figure import Figure
            from matplotlib.axes import Axes
            if isinstance(obj, Figure):
                return (f"Figure {tuple(obj.get_size_inches())} axes=[" +
                        ", ".join(value(a, depth + 1) for a in obj.axes) + "]")
            if isinstance(obj, Axes):
                return (f"Axes title={obj.get_title()!r} xlim={tuple(round(v, 6) for v in obj.get_xlim())} "
                        f"ylim={tuple(round(v, 6) for v in obj.get_ylim())} lines={len(obj.lines)} "
                        f"collections={len(obj.collections)} images={len(obj.images)} texts={len(obj.texts)}")
        if hasattr(obj, "get_params") and hasattr(obj, "fit"):       # a scikit-learn estimator
            fitted = {k: v for k, v in vars(obj).items() if k.endswith("_") and not k.startswith("_")}
            return (f"{type(obj).__name__}({clean(repr(sorted(obj.get_params(deep=False).items())))}) fitted="
                    + value(fitted, depth + 1))
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            return type(obj).__name__ + "(" + ", ".join(f"{k}={value(v, depth + 1)}" for k, v in list(attrs.items())[:50]) + ")"
        return type(obj).__qualname__

    def refs(obj):
        """(path, object) pairs one step inside ``obj``, where identity can be shared."""
        if isinstance(obj, (list, tuple)):
            return [(f"[{i}]", o) for i, o in enumerate(obj[:200])]
        if isinstance(obj, dict):
            return [(f"[{k!r}]", o) for k, o in list(obj.items())[:200]]
        if np is not None and isinstance(obj, np.ndarray) and obj.dtype == object:
            return [(f"[{i}]", o) for i, o in enumerate(obj.ravel()[:200])]
        if isinstance(obj, (types.ModuleType, type, types.FunctionType)):
            return []
        attrs = getattr(obj, "__dict__", None)
        found = [(f".{k}", o) for k, o in list(attrs.items())[:200]] if isinstance(attrs, dict) else []
        if mpl is not None:
            from matplotlib.axes import Axes
            if isinstance(obj, Axes):
                found.append((".figure", obj.figure))
        return found

    names = sorted(n for n in ns if not n.startswith("_") and n not in hidden and n not in IGNORED)
    out = {"names": {}, "aliases": [], "settings": {}, "random": {}}
    owner = {}
    for n in names:
        obj = ns[n]
        if isinstance(obj, types.ModuleType):
            continue
        owner.setdefault(id(obj), n)
    for n in names:
        obj = ns[n]
        try:
            shown = digest(value(obj))
        except Exception as exc:
            shown = f"<summary failed: {type(exc).__name__}>"
        out["names"][n] = {"type": f"{type(obj).__module__}.{type(obj).__qualname__}", "value": shown}
        if isinstance(obj, types.ModuleType) or isinstance(obj, (int, float, str, bool, type(None))):
            continue
        if owner.get(id(obj)) != n:
            out["aliases"].append(f"{n} is {owner[id(obj)]}")
        try:
            for path, inner in refs(obj):
                target = owner.get(id(inner))
                if target is not None and target != n and not isinstance(inner, (int, float, str, bool, type(None))):
                    out["aliases"].append(f"{n}{path} is {target}")
        except Exception:
            pass
    if mpl is not None:
        import matplotlib as m
        changed = {k: v for k, v in m.rcParams.items() if k in m.rcParamsDefault and v != m.rcParamsDefault[k]
                   and k not in ("backend", "interactive", "backend_fallback")}
        out["settings"]["matplotlib.rcParams"] = digest(clean(repr(sorted(changed.items()))))
    if np is not None:
        out["settings"]["numpy.printoptions"] = digest(repr(sorted(np.get_printoptions().items())))
        out["random"]["numpy.random"] = hashlib.sha1(repr(np.random.get_state()).encode()).hexdigest()[:16]
    out["random"]["random"] = hashlib.sha1(repr(random.getstate()).encode()).hexdigest()[:16]
    print("RX-SUMMARY " + json.dumps(out))

__rx_summary(); del __rx_summary
'''.replace("IGNORED", repr(IGNORED_NAMES))

MAGIC_LINE = re.compile(r"^\s*(%|!)")


def code_lines(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]


def sendable(source: str) -> bool:
    """Whether a cell can be sent at all: it has a line of Python that is not a magic or shell escape."""
    return any(not MAGIC_LINE.match(line) for line in code_lines(source))


@dataclass
class Plan:
    """A notebook ready to run: the cells to run, which are compared (by their index in the file), which stay local."""
    notebook: nbformat.NotebookNode
    compared: dict[int, int]                   # run index -> index in the original notebook
    sent: set[int]                             # original indices sent with %%remote
    kept_local: dict[int, str]                 # original index -> why it could not be sent


def plan(entry: Entry, variant: str) -> Plan:
    original = nbformat.read(entry.path, as_version=4)
    notebook = copy.deepcopy(original)
    cells = [nbformat.v4.new_code_cell(PRELUDE)]
    if variant != "plain":
        cells.append(nbformat.v4.new_code_cell("%load_ext rx_magic"))
    compared, sent, kept_local = {}, set(), {}
    for index, cell in enumerate(original.cells):
        if cell.cell_type != "code" or index in entry.skip or not cell.source.strip():
            continue
        cell = copy.deepcopy(cell)
        wanted = variant == "all" or (variant == "heavy" and index in entry.heavy)
        if wanted and sendable(cell.source):
            cell.source = REMOTE + cell.source
            sent.add(index)
        elif wanted:
            kept_local[index] = "only magics or shell escapes" if code_lines(cell.source) else "only comments"
        compared[len(cells)] = index
        cells.append(cell)
    notebook.cells = cells
    return Plan(notebook, compared, sent, kept_local)


# ----------------------------------------------------------------------------- running

@dataclass
class Run:
    variant: str
    plan: Plan
    outputs: dict[int, list]                   # original index -> normalised outputs
    summary: dict
    seconds: float


def kernel_env(home: Path) -> dict:
    env = dict(os.environ)
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        folder = home / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    for name in ("RX_MAGIC_CONFIG", "MPLBACKEND", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    env["PYTHONHASHSEED"] = "0"
    return env


def run(entry: Entry, variant: str, timeout: int = 120) -> Run:
    """Execute ``entry`` as ``variant`` in a new kernel, errors allowed, in a fresh folder."""
    the_plan = plan(entry, variant)
    home = Path(tempfile.mkdtemp(prefix=f"rx-diff-{variant}-"))
    work = home / "work"
    work.mkdir()
    started = time.monotonic()
    try:
        notebook = the_plan.notebook
        notebook.cells.append(nbformat.v4.new_code_cell(SUMMARY))
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(work)}})
        with client.setup_kernel(env=kernel_env(home), cwd=str(work)):
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
                if index < min(the_plan.compared) and any(o.output_type == "error" for o in cell.outputs):
                    raise RuntimeError(f"{entry.name} ({variant}): the prelude failed: {cell.source!r}: {cell.outputs}")
        last = notebook.cells.pop()
        text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
        found = re.search(r"^RX-SUMMARY (.*)$", text, re.MULTILINE)
        if not found:
            raise RuntimeError(f"{entry.name} ({variant}): no namespace summary: {last.outputs}")
        summary = json.loads(found[1])
        outputs = {original: normalise(notebook.cells[i].outputs, home) for i, original in the_plan.compared.items()}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return Run(variant, the_plan, outputs, summary, time.monotonic() - started)


# ----------------------------------------------------------------------------- normalising outputs

RX_NOTE = re.compile(r"^rx_magic: the cell and its outputs are saved in \S+\n?", re.MULTILINE)   # where a failed job's notebook is
JOB_DISPLAY = re.compile(r"^rx-\d{8}-\d{6}-[0-9a-f]+ on \S+")
TIMINGS = [
    (re.compile(r"[\d.]+ ?(?:ns|[µμ]s|us|ms|s) ± [\d.]+ ?(?:ns|[µμ]s|us|ms|s) per loop "
                r"\(mean ± std\. dev\. of \d+ runs?, [\d,]+ loops? each\)"), "<timeit>"),
    (re.compile(r"(Wall time|CPU times|user|sys|total): [^\n]*"), r"\1: <time>"),
    (re.compile(r"total time=\s*[\d.]+s"), "total time=<time>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:seconds|secs?|ms|[µμ]s)\b"), "<time>"),
]
ADDRESS = re.compile(r"0x[0-9a-fA-F]+|(?<=\.\.\.)x[0-9a-f]{8,}")              # scikit-learn's HTML abbreviates to ...x7f…
FITTED_TABLE = re.compile(r"(<summary>Fitted attributes</summary>).*?(</details>)", re.DOTALL)
JOB_ID = re.compile(r"rx-\d{8}-\d{6}-[0-9a-f]+")
TMP = re.compile(r"/tmp/[\w.\-/]+")
DISPLAY_COUNTER = re.compile(r"(sk-(?:container|estimator)-id-)\d+")      # scikit-learn numbers its HTML displays per process


def normalise_text(text: str, home: Path) -> str:
    text = text.replace(str(home), "<home>")
    text = ADDRESS.sub("0x…", text)
    text = JOB_ID.sub("rx-<job>", text)
    text = TMP.sub("<tmp>", text)
    text = DISPLAY_COUNTER.sub(r"\1N", text)
    for pattern, replacement in TIMINGS:
        text = pattern.sub(replacement, text)
    return text


def png_shape(data: str) -> tuple[int, int]:
    raw = base64.b64decode(data[:64])
    return struct.unpack(">II", raw[16:24])


def is_rx_display(output) -> bool:
    """One of rx_magic's own job displays (its widget, or that widget's text fallback)."""
    data = output.get("data", {})
    if output.output_type not in ("display_data", "update_display_data"):
        return False
    plain = data.get("text/plain", "")
    return bool(JOB_DISPLAY.match(plain)) or "rx-job" in data.get("text/html", "")


def normalise(outputs, home: Path) -> list:
    """The cell's outputs as comparable tuples, streams joined, rx_magic's job displays left out."""
    result = []
    for output in outputs:
        if is_rx_display(output):
            continue
        kind = output.output_type
        if kind == "stream" and output.name == "stderr" and output.text.startswith("UsageError: "):
            # IPython prints a UsageError instead of raising it into the outputs.
            result.append(("error", "UsageError", normalise_text(output.text[len("UsageError: "):].strip(), home)))
        elif kind == "stream":
            text = normalise_text(RX_NOTE.sub("", output.text), home)
            if not text:
                continue
            if result and result[-1][0] == "stream" and result[-1][1] == output.name:
                result[-1] = ("stream", output.name, result[-1][2] + text)
            else:
                result.append(("stream", output.name, text))
        elif kind == "error":
            result.append(("error", output.ename, normalise_text(output.evalue, home)))
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            shown = {}
            for mime, value in sorted(data.items()):
                if mime == "image/png":
                    width, height = png_shape(value)
                    shown[mime] = f"png {width}x{height} sha1:{hashlib.sha1(value.encode()).hexdigest()[:12]}"
                elif mime == "application/vnd.jupyter.widget-view+json":
                    shown[mime] = "widget"
                elif mime == "text/html":
                    # scikit-learn's HTML lists the fitted attributes, measured times among them; the
                    # namespace comparison covers them
                    shown[mime] = normalise_text(FITTED_TABLE.sub(r"\1…\2", value), home)
                elif isinstance(value, str):
                    shown[mime] = normalise_text(value, home)
                else:
                    shown[mime] = normalise_text(json.dumps(value, sort_keys=True), home)
            result.append((kind, tuple(sorted(shown.items()))))
    return result


# ----------------------------------------------------------------------------- comparing and classifying

RANDOM = re.compile(r"\b(?:np|numpy)\.random\.(?!RandomState|default_rng|seed)\w+|\brandom\.\w+\(|ShuffleSplit\(|"
                    r"KFold\(shuffle=True\)|\bshuffle=True")
ASSIGNED = re.compile(r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*=[^=]", re.MULTILINE)


@dataclass
class Difference:
    kind: str
    where: str                                  # "cell 16" or "name grid"
    detail: str


def images(outputs) -> list[str]:
    return [dict(o[1])["image/png"] for o in outputs if o[0] in ("execute_result", "display_data")
            and "image/png" in dict(o[1])]


def short(outputs) -> str:
    text = []
    for o in outputs:
        if o[0] == "stream":
            text.append(o[2])
        elif o[0] == "error":
            text.append(f"{o[1]}: {o[2]}")
        else:
            data = dict(o[1])
            text.append(f"[{o[0]}] " + data.get("text/plain", "") + (" +png" if "image/png" in data else ""))
    joined = " | ".join(t.strip().replace("\n", " ⏎ ") for t in text)
    return joined if len(joined) < 160 else joined[:157] + "…"


def shape(outputs: list) -> list:
    """What kinds of output a cell gave, without their text: for cells that show measured times."""
    kinds = {"stream": lambda o: o[:2], "error": lambda o: o, "execute_result": lambda o: (o[0], tuple(k for k, _ in o[1]))}
    return [kinds.get(o[0], kinds["execute_result"])(o) for o in outputs]


def first_difference(plain: list, other: list, variant: str) -> str:
    """Both runs' outputs in short, or their first differing lines when they are long."""
    a, b = short(plain), short(other)
    if a != b or len(a) < 150:
        return f"plain: {a}\n{' ' * 10}{variant}: {b}"
    lines_a, lines_b = repr(plain).split("\\n"), repr(other).split("\\n")
    for line_a, line_b in zip(lines_a, lines_b):
        if line_a != line_b:
            return f"plain: …{line_a[:150]}…\n{' ' * 10}{variant}: …{line_b[:150]}…"
    return f"plain: {len(lines_a)} lines\n{' ' * 10}{variant}: {len(lines_b)} lines"


def classify_cell(source: str, earlier: str, plain: list, other: list, sent: bool, mutated: set[str]) -> str:
    """The kind of one differing cell, from its source, the code before it, and both runs' outputs."""
    plain_errors = [o for o in plain if o[0] == "error"]
    errors = [o for o in other if o[0] == "error"]
    if errors and errors != plain_errors:
        ename, evalue = errors[0][1], errors[0][2]
        magic = any(MAGIC_LINE.match(line) for line in source.splitlines())
        if sent and magic and (ename == "UsageError" or "magic" in evalue.lower() or "get_ipython" in evalue
                               or ename in ("SyntaxError", "NameError")):
            return "magic failed"
        if ename == "UsageError" and "cannot come back" in evalue:
            return "cannot come back"
        if ename == "NotFittedError" or re.search(r"has no attribute '\w+_'", evalue) or "not fitted" in evalue:
            return "in-place mutation lost"
        if ename == "NameError":
            return "name missing"
        if "Figure" in evalue or "figure" in evalue:
            return "figure missing"
        return "error"
    plain_images, other_images = images(plain), images(other)
    if len(other_images) < len(plain_images):
        return "figure missing"
    if plain_images != other_images:
        same_size = [i.split(" sha1")[0] for i in plain_images] == [i.split(" sha1")[0] for i in other_images]
        if same_size and uses(source, mutated):
            return "in-place mutation lost"
        if same_size and RANDOM.search(earlier + "\n" + source):
            return "random state"
        return "figure differs"
    results = lambda outs: [o for o in outs if o[0] == "execute_result"]
    if len(results(plain)) != len(results(other)):
        return "display/repr"
    mimes = lambda outs: [dict(o[1]).keys() for o in outs if o[0] in ("execute_result", "display_data")]
    if mimes(plain) != mimes(other):
        return "display/repr"
    if uses(source, mutated):
        return "in-place mutation lost"
    if RANDOM.search(earlier + "\n" + source):
        return "random state"
    if sent and any(MAGIC_LINE.match(line) for line in source.splitlines()):
        return "magic failed"
    if [reprs(o) for o in plain] == [reprs(o) for o in other]:
        return "display/repr"
    return "other"


def uses(source: str, names: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}\b", source) for name in names)


def reprs(output) -> str:
    """An output with Python's default object reprs and IPython's pretty ones made alike."""
    return re.sub(r"<([\w.]+) object at 0x…>", r"<\1 at 0x…>", repr(output))


def mutated_names(sources: list[str]) -> set[str]:
    """Names that remote cells use without assigning them at top level: changes to them must come back in place."""
    used = set()
    for source in sources:
        assigned = {n.strip() for match in ASSIGNED.finditer(source) for n in match[1].split(",")}
        for name in re.findall(r"\b([A-Za-z_]\w*)\s*(?:\.|\[)", source):
            if name not in assigned:
                used.add(name)
    return used


def compare(entry: Entry, plain: Run, other: Run) -> list[Difference]:
    """Every difference between ``other`` and the plain run, each with its kind."""
    original = nbformat.read(entry.path, as_version=4)
    differences = []
    earlier = ""
    mutated_so_far = set()
    changeable = {name for name, seen in plain.summary["names"].items()
                  if seen["type"] not in ("builtins.module", "builtins.function", "builtins.type")}
    for index in sorted(plain.outputs):
        source = original.cells[index].source
        a, b = plain.outputs[index], other.outputs.get(index, [])
        compared = (shape(a), shape(b)) if index in entry.volatile else (a, b)
        if compared[0] != compared[1]:
            kind = classify_cell(source, earlier, a, b, index in other.plan.sent, mutated_so_far)
            differences.append(Difference(kind, f"cell {index}", first_difference(a, b, other.variant)))
        earlier += "\n" + source
        if index in other.plan.sent:
            mutated_so_far |= mutated_names([source]) & changeable
    sent_sources = [original.cells[i].source for i in other.plan.sent]
    uses_random = bool(RANDOM.search(earlier))
    mutated = mutated_names(sent_sources)
    names_a, names_b = plain.summary["names"], other.summary["names"]
    for name in sorted(set(names_a) | set(names_b)):
        a, b = names_a.get(name), names_b.get(name)
        if a == b:
            continue
        if b is None:
            kind = "magic failed" if re.search(rf"%\w+.*\b{re.escape(name)}\b", "\n".join(sent_sources)) else "name missing"
            differences.append(Difference(kind, f"name {name}", f"missing ({a['type']})"))
            continue
        if a is None:
            differences.append(Difference("other", f"name {name}", f"only in {other.variant} ({b['type']})"))
            continue
        if a["type"] != b["type"]:
            kind = "figure missing" if "Figure" in a["type"] or "Axes" in a["type"] else "other"
        elif name in mutated:
            kind = "in-place mutation lost"
        elif uses_random:
            kind = "random state"
        else:
            kind = "other"
        differences.append(Difference(kind, f"name {name}", f"plain: {a['type']} {a['value'][:100]}\n"
                                                          f"{' ' * 10}{other.variant}: {b['type']} {b['value'][:100]}"))
    aliases_a, aliases_b = set(plain.summary["aliases"]), set(other.summary["aliases"])
    for alias in sorted(aliases_a ^ aliases_b):
        differences.append(Difference("identity", "aliases",
                                      f"{alias}: {'only plain' if alias in aliases_a else 'only ' + other.variant}"))
    for key, value in plain.summary["settings"].items():
        if key in other.summary["settings"] and other.summary["settings"][key] != value:
            differences.append(Difference("settings", key, f"plain: {value[:80]}\n{' ' * 10}{other.variant}: "
                                                           f"{str(other.summary['settings'].get(key))[:80]}"))
    for key, value in plain.summary["random"].items():
        if other.summary["random"].get(key) != value:
            differences.append(Difference("random state", key, "the generator's final state differs"))
    return differences


# ----------------------------------------------------------------------------- reporting

@dataclass
class Report:
    entry: Entry
    variant: str
    run: Run
    differences: list[Difference]

    @property
    def kinds(self) -> dict[str, int]:
        counted = {}
        for d in self.differences:
            counted[d.kind] = counted.get(d.kind, 0) + 1
        return dict(sorted(counted.items()))

    def cells_differing(self) -> int:
        return sum(1 for d in self.differences if d.where.startswith("cell "))

    def names_differing(self) -> int:
        return sum(1 for d in self.differences if not d.where.startswith("cell "))


def table(reports: list[Report], plain_runs: dict[str, Run]) -> str:
    rows = [("notebook", "variant", "cells", "sent", "local", "cells≠", "names≠", "seconds", "kinds"),]
    for r in reports:
        rows.append((r.entry.name, r.variant, str(len(r.run.outputs)), str(len(r.run.plan.sent)),
                     str(len(r.run.plan.kept_local)), str(r.cells_differing()), str(r.names_differing()),
                     f"{plain_runs[r.entry.name].seconds:.0f}+{r.run.seconds:.0f}",
                     ", ".join(f"{k} {n}" for k, n in r.kinds.items()) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 5))
    return "\n".join(lines)


def details(report: Report) -> str:
    lines = [f"--- {report.entry.name} / {report.variant}"]
    for index, why in sorted(report.run.plan.kept_local.items()):
        lines.append(f"  kept local: cell {index} ({why})")
    for d in report.differences:
        lines.append(f"  [{d.kind}] {d.where}: {d.detail}")
    return "\n".join(lines)


def compare_notebook(entry: Entry, variants=VARIANTS, workers: int = 1) -> tuple[Run, list[Report]]:
    """Run ``entry`` plainly and as each of ``variants``, ``workers`` kernels at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(lambda variant: run(entry, variant), ("plain",) + tuple(variants)))
    plain = runs[0]
    return plain, [Report(entry, other.variant, other, compare(entry, plain, other)) for other in runs[1:]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="Notebooks to run, as named in notebooks.toml; all when left out.")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="Run only this variant (repeatable).")
    parser.add_argument("--details", action="store_true", help="Print every difference, not only the table.")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"Kernels to run at once (default {WORKERS}, or RX_DIFF_WORKERS).")
    args = parser.parse_args(argv)
    entries = [e for e in catalogue() if not args.names or e.name in args.names]
    started = time.monotonic()
    plain_runs, reports = {}, []
    for entry in entries:
        plain, found = compare_notebook(entry, tuple(args.variant or VARIANTS), args.workers)
        plain_runs[entry.name] = plain
        reports.extend(found)
        if args.details:
            for report in found:
                print(details(report), flush=True)
    for variant in args.variant or VARIANTS:
        print(f"\n=== {variant}: differences from the plain run\n")
        print(table([r for r in reports if r.variant == variant], plain_runs))
    print(f"\n{len(entries)} notebooks in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

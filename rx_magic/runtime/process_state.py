"""What a cell shares with its whole process: the global random generators and the settings.

A cell that draws from ``random`` or ``numpy.random``, or sets matplotlib's
rcParams (a style), numpy's print options, pandas' options or a warnings
filter, changes its process, not a name. Both sides use this file (the
notebook as ``rx_magic.runtime.process_state``, the runner as
``process_state`` beside it), so each *section* is read and written the same
way on both. A section is only read where its module is imported already:
reading and sending never import numpy, matplotlib or pandas.

The notebook sends what differs from the defaults (all of a random state);
the job applies it when the section's module is imported there, notes the
state then, and sends back what the cell changed, which the notebook applies
(importing the module if the cell used one this kernel has not imported yet).
On the wire a section is a base64 pickle, unpickled only once its module is
there, and one that cannot be read on the other side is skipped alone.
"""

from __future__ import annotations

import binascii     # base64's own functions, without the base64 module: one less import in every job
import sys
import warnings

try:        # as wire.py: without pickle.py's imports of re and enum
    import _pickle as pickle
except ImportError:
    import pickle

PROTOCOL = 4

#: Line magics that configure the kernel that runs them: in a remote cell they belong to the notebook's
#: kernel (which runs them after the job) and are harmless on the target.
KERNEL_MAGICS = frozenset({"matplotlib", "pylab", "load_ext", "reload_ext", "unload_ext", "config", "precision",
                           "pprint", "xmode", "colors", "autoreload", "aimport", "env"})

_MISSING = object()
_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:       # arrays and other values without a plain truth: different
        return a is b


class _Random:
    """The ``random`` module's global generator."""

    module = "random"

    @staticmethod
    def read(random):
        return random.getstate()

    @staticmethod
    def write(random, state) -> None:
        random.setstate(state)

    @staticmethod
    def outgoing(state):
        return state

    @staticmethod
    def changes(before, after):
        return None if _same(before, after) else after


class _NumpyRandom(_Random):
    """numpy's legacy global ``RandomState`` (``np.random.seed``, ``np.random.rand``, ...), as plain values."""

    module = "numpy.random"

    @staticmethod
    def read(np_random):
        name, keys, position, has_gauss, gauss = np_random.get_state(legacy=True)
        return name, keys.astype("<u4").tobytes(), int(position), int(has_gauss), float(gauss)

    @staticmethod
    def write(np_random, state) -> None:
        import numpy
        name, keys, position, has_gauss, gauss = state
        np_random.set_state((name, numpy.frombuffer(keys, "<u4").astype(numpy.uint32), position, has_gauss, gauss))


class _Options:
    """A module's settings as one flat ``{key: value}``; what travels is what differs from the defaults."""

    module = ""

    def __init__(self):
        self._verdicts: dict[str, tuple] = {}    # key -> (value, default, whether they differ): see ``outgoing``

    def read(self, module) -> dict:
        raise NotImplementedError

    def defaults(self, module) -> dict:
        raise NotImplementedError

    def write_one(self, module, key, value) -> None:
        raise NotImplementedError

    def write(self, module, values: dict) -> None:
        for key, value in values.items():
            try:
                self.write_one(module, key, value)
            except Exception:   # a key this version does not know, or refuses: the others still apply
                pass

    def outgoing(self, values: dict):
        defaults = self.defaults(sys.modules[self.module])
        # every cell sends the settings that differ from the defaults, and comparing all ~350 of matplotlib's took
        # 0.6 ms of each cell's planning. A comparison of two values that cannot change in place holds while both
        # are the very same objects; any thread may fill this, as each entry checks itself
        known = self._verdicts
        sent = {}
        for key, value in values.items():
            default = defaults.get(key, _MISSING)
            seen = known.get(key)
            if seen is not None and seen[0] is value and seen[1] is default:
                differs = seen[2]
            else:
                differs = not _same(default, value)
                if type(value) in _IMMUTABLE and type(default) in _IMMUTABLE:
                    known[key] = (value, default, differs)
            if differs:
                sent[key] = value
        return sent

    @staticmethod
    def changes(before: dict, after: dict):
        return {key: value for key, value in after.items() if not _same(before.get(key, _MISSING), value)}


class _NumpyPrintOptions(_Options):
    module = "numpy"
    _DEFAULTS = {"edgeitems": 3, "threshold": 1000, "floatmode": "maxprec", "precision": 8, "suppress": False,
                 "linewidth": 75, "nanstr": "nan", "infstr": "inf", "sign": "-", "formatter": None,
                 "legacy": False, "override_repr": None}

    def read(self, numpy) -> dict:
        return numpy.get_printoptions()

    def defaults(self, numpy) -> dict:
        return self._DEFAULTS

    def write(self, numpy, values: dict) -> None:
        try:
            numpy.set_printoptions(**values)
        except Exception:
            super().write(numpy, values)

    def write_one(self, numpy, key, value) -> None:
        numpy.set_printoptions(**{key: value})


class _MatplotlibParams(_Options):
    """rcParams, which a style sets too; never the backend: the job draws with Agg, the notebook with its own."""

    module = "matplotlib"
    _SKIP = frozenset({"backend", "backend_fallback", "interactive"})

    def read(self, matplotlib) -> dict:
        # dict's own items: rcParams["backend"] would pick (and import) a backend
        return {key: value for key, value in dict.items(matplotlib.rcParams) if key not in self._SKIP}

    def defaults(self, matplotlib) -> dict:
        return dict.copy(matplotlib.rcParamsDefault)

    def write_one(self, matplotlib, key, value) -> None:
        if key not in self._SKIP:
            matplotlib.rcParams[key] = value


class _PandasOptions(_Options):
    """``pd.set_option`` values (display and the others), deprecated options left out."""

    module = "pandas"

    @staticmethod
    def _registered(pandas) -> dict:
        from pandas._config import config
        deprecated = getattr(config, "_deprecated_options", {})
        return {key: option for key, option in config._registered_options.items() if key not in deprecated}

    def read(self, pandas) -> dict:
        values = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key in self._registered(pandas):
                try:
                    values[key] = pandas.get_option(key)
                except Exception:
                    pass
        return values

    def defaults(self, pandas) -> dict:
        return {key: option.defval for key, option in self._registered(pandas).items()}

    def write_one(self, pandas, key, value) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pandas.set_option(key, value)


class _WarningsFilters:
    """The filters beyond Python's own (the notebook's), or those the cell added; each put first or last.

    A filter's category travels by name, so no module is imported to read it: it is looked up where the
    filter is applied, and in the job only once its module is imported there (``defer``).
    """

    module = "warnings"
    defer = False       # the job sets it: a category whose module is not imported yet waits for that import
    _PYTHON_DEFAULTS = [("default", None, "builtins:DeprecationWarning", "__main__", 0),
                        ("ignore", None, "builtins:DeprecationWarning", None, 0),
                        ("ignore", None, "builtins:PendingDeprecationWarning", None, 0),
                        ("ignore", None, "builtins:ImportWarning", None, 0),
                        ("ignore", None, "builtins:ResourceWarning", None, 0)]

    @staticmethod
    def read(module) -> list:
        return [_filter_key(entry) for entry in module.filters]

    @staticmethod
    def _added(before: list, after: list) -> list:
        old = set(before)
        first_old = next((index for index, key in enumerate(after) if key in old), len(after))
        return [(index < first_old, *key) for index, key in enumerate(after) if key not in old]

    def outgoing(self, filters: list):
        return self._added(self._PYTHON_DEFAULTS, filters) or None

    def changes(self, before: list, after: list):
        return self._added(before, after) or None

    def write(self, module, added: list) -> None:
        first = [entry for entry in added if entry[0]]
        last = [entry for entry in added if not entry[0]]
        for entry in [*reversed(first), *last]:
            # the whole package: its own filters, added as it imports, must not end up before the notebook's
            owner = entry[3].partition(":")[0].partition(".")[0]
            if owner in sys.modules or not self.defer:
                _call(lambda module, entry=entry: _add_filter(module, entry), module)
            else:
                when_imported(owner, lambda _owner, entry=entry: _add_filter(module, entry))


def _filter_key(entry: tuple) -> tuple:
    """A filter as plain values: ``(action, message pattern, "module:Category", module pattern, lineno)``."""
    action, message, category, module, lineno = entry
    return (action, getattr(message, "pattern", message), f"{category.__module__}:{category.__qualname__}",
            getattr(module, "pattern", module), lineno)


def _add_filter(warnings_module, entry: tuple) -> None:
    in_front, action, message, category_name, from_module, lineno = entry
    module_name, _, qualname = category_name.partition(":")
    if module_name not in sys.modules:
        import importlib
        importlib.import_module(module_name)
    category = sys.modules[module_name]
    for part in qualname.split("."):
        category = getattr(category, part)
    if message is None and from_module is None:
        if (action, None, category_name, None, lineno) not in _WarningsFilters.read(warnings_module):
            warnings_module.simplefilter(action, category, lineno, append=not in_front)
    elif "re" in sys.modules or not hasattr(warnings_module, "_add_filter"):
        warnings_module.filterwarnings(action, message or "", category, from_module or "", lineno,
                                       append=not in_front)
    else:   # what filterwarnings adds, with patterns compiled when a warning is first checked against them
        warnings_module._add_filter(action, _Pattern(message, _IGNORECASE) if message else None, category,
                                    _Pattern(from_module, 0) if from_module else None, lineno, append=not in_front)


_IGNORECASE, _UNICODE = 2, 32       # re.IGNORECASE and re.UNICODE (implied for a str pattern)


class _Pattern:
    """A warnings filter's pattern, compiled by ``re`` when a warning is first checked against it.

    Nearly every notebook has filters with patterns (numpy adds three as it is imported), and
    ``warnings.filterwarnings`` compiles them at once: ``re`` (with ``enum``) costs a job 3-9 ms to
    import, and most cells warn nothing. It matches, compares equal to and reads as the ``re.Pattern``
    ``filterwarnings`` would have made (``pattern``, ``flags``, ``match``). A pattern ``re`` cannot
    compile here (the notebook's Python compiled it) matches nothing.
    """

    __slots__ = ("pattern", "flags", "_compiled")

    def __init__(self, pattern: str, flags: int):
        self.pattern, self.flags, self._compiled = pattern, flags | _UNICODE, None

    def match(self, text: str, *args):
        if self._compiled is None:
            import re
            try:
                self._compiled = re.compile(self.pattern, self.flags)
            except re.error:
                self._compiled = False
        return self._compiled.match(text, *args) if self._compiled else None

    def __eq__(self, other):
        if not (isinstance(other, _Pattern) or type(other).__name__ == "Pattern"):
            return NotImplemented
        return (self.pattern, self.flags) == (getattr(other, "pattern", None), getattr(other, "flags", None))

    def __hash__(self):
        return hash((self.pattern, self.flags))

    def __repr__(self):
        flags = ", re.IGNORECASE" if self.flags & _IGNORECASE else ""
        return f"re.compile({self.pattern!r}{flags})"


SECTIONS = {
    "random": _Random(), "numpy.random": _NumpyRandom(), "numpy.printoptions": _NumpyPrintOptions(),
    "matplotlib.rcParams": _MatplotlibParams(), "pandas.options": _PandasOptions(), "warnings": _WarningsFilters(),
}
RANDOM_SECTIONS = ("random", "numpy.random")


def read(name: str):
    """Section ``name`` as it is now, or ``_MISSING`` when its module is not imported or cannot be read."""
    section = SECTIONS[name]
    module = sys.modules.get(section.module)
    if module is None:
        return _MISSING
    try:
        return section.read(module)
    except Exception:
        return _MISSING


def write(name: str, value, *, import_module: bool = False) -> bool:
    """Apply a section's value; with ``import_module``, import its module first if needed. False if it failed."""
    section = SECTIONS[name]
    module = sys.modules.get(section.module)
    if module is None and import_module:
        import importlib
        try:
            module = importlib.import_module(section.module)
        except Exception:
            return False
    if module is None:
        return False
    try:
        section.write(module, value)
    except Exception:
        return False
    return True


def outgoing(skip=()) -> dict:
    """This process's sections as the notebook sends them: only modules imported here, only what differs."""
    sent = {}
    for name, section in SECTIONS.items():
        if name in skip:
            continue
        value = read(name)
        if value is _MISSING:
            continue
        try:
            value = section.outgoing(value)
        except Exception:
            continue
        if value:
            sent[name] = value
    return sent


def changes(before: dict, name: str):
    """What the process changed in section ``name`` since ``before[name]`` (noted when it was applied), or None."""
    after = read(name)
    if after is _MISSING or name not in before:
        return None
    try:
        return SECTIONS[name].changes(before[name], after) or None
    except Exception:
        return None


def encode(sections: dict) -> dict:
    """``{section: base64 pickle}``; a section that does not pickle (even with dill) is left out."""
    encoded = {}
    for name, value in sections.items():
        try:
            data = pickle.dumps(value, PROTOCOL)
        except Exception:
            try:
                import dill
                data = dill.dumps(value, PROTOCOL, recurse=True)
            except Exception:
                continue
        encoded[name] = binascii.b2a_base64(data, newline=False).decode("ascii")
    return encoded


def decode(encoded: dict) -> dict:
    """The sections of an ``encode`` result that load here (a known section, every class importable)."""
    sections = {}
    for name, text in (encoded or {}).items():
        if name not in SECTIONS:
            continue
        try:
            sections[name] = pickle.loads(binascii.a2b_base64(text))
        except Exception:
            continue
    return sections


def pickle_figures_stably() -> None:
    """Make a matplotlib figure pickle to the same bytes each time (its digest is how it is known).

    ``CallbackRegistry.__getstate__`` takes the next id from its counter, so every pickle of a figure
    differs from the last; this reduces it the same way and puts the counter back.
    """
    cbook = sys.modules.get("matplotlib.cbook")
    registry = getattr(cbook, "CallbackRegistry", None)
    if registry is None:
        return
    import copyreg
    if copyreg.dispatch_table.get(registry) is not _reduce_callback_registry:
        copyreg.pickle(registry, _reduce_callback_registry)


def _reduce_callback_registry(registry):
    import itertools
    reduced = registry.__reduce_ex__(PROTOCOL)
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, dict) and isinstance(state.get("_cid_gen"), int):
        registry._cid_gen = itertools.count(state["_cid_gen"])
    return reduced


class Tracker:
    """In the job: applies the notebook's sections as their modules are imported, noting each one then,
    so that what the cell changed can go back. ``incoming`` is as ``encode`` left it: a section is only
    unpickled once its module is there (an rcParams value may need a module of matplotlib's)."""

    def __init__(self, incoming: dict):
        self.incoming = incoming
        self.before: dict = {}

    def start(self) -> None:
        _WarningsFilters.defer = True
        when_imported("matplotlib", lambda module: pickle_figures_stably())
        for name, section in SECTIONS.items():
            when_imported(section.module, lambda module, name=name: self._arrived(name))

    def _arrived(self, name: str) -> None:
        incoming = decode({name: self.incoming[name]}) if name in self.incoming else {}
        if name in incoming:
            write(name, incoming[name])
        value = read(name)
        if value is not _MISSING:
            self.before[name] = value

    def changes(self) -> dict:
        """``{section: what the cell changed}`` for every section it changed."""
        found = {}
        for name in self.before:
            changed = changes(self.before, name)
            if changed is not None:
                found[name] = changed
        return found


def when_imported(name: str, callback) -> None:
    """Call ``callback(module)`` once module ``name`` is imported: now if it is, else just after its import."""
    module = sys.modules.get(name)
    if module is not None:
        _call(callback, module)
    else:
        sys.meta_path.insert(0, _AfterImport(name, callback))


def _call(callback, module) -> None:
    try:
        callback(module)
    except Exception:   # never the cause of a failed import in the cell
        pass


class _AfterImport:
    """A meta path finder that finds nothing itself: it wraps the real loader of one module to call back."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module, callback = loader.exec_module, self.callback

        def exec_then_call(module):
            exec_module(module)
            _call(callback, module)

        loader.exec_module = exec_then_call
        return spec

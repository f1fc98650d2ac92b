"""The on-disk pickle format, shared by the notebook side and the target.

A file holds one or more *frames*, one after another; :func:`dump` writes one
and :func:`load` reads one, leaving the file just after it, and raises
``EOFError`` at the end. A frame is a protocol-5 pickle written by the C
pickler whose large buffers (numpy arrays, anything exporting a
``PickleBuffer`` of at least ``OUT_OF_BAND_MIN`` bytes) are written *out of
band*, after the pickle stream, each aligned to ``ALIGN`` bytes::

    offset  size      field
    0       8         magic b"RXWIRE01" (format version 1)
    8       8         P, length of the pickle stream        (u64, little endian)
    16      8         N, number of out-of-band buffers      (u64)
    24      8         L, length of the whole frame          (u64, a multiple of ALIGN)
    32      P         pickle stream; its NEXT_BUFFER opcodes take buffers 0..N-1 in turn
    32+P    8*N       length of each buffer                 (u64 each)
            0..63     zeros up to the next multiple of ALIGN (counted from the frame's start)
            len[0]    buffer 0, then zeros up to a multiple of ALIGN
            ...
            len[N-1]  buffer N-1, then zeros up to a multiple of ALIGN = L

Every frame's length is a multiple of ``ALIGN``, so in a file whose first
frame starts at 0 every buffer starts on an ``ALIGN`` boundary. Loading from a
regular file memory-maps the buffers (``mmap.ACCESS_COPY``): a 500 MB array
loads in milliseconds, its pages are read when touched, and it is writable
copy-on-write without changing the file. Any other file object (a socket, an
SFTP file) is read into bytearrays, each made at its full size and filled with
``readinto``, so nothing is held twice. A frame without out-of-band buffers is
unpickled as it is read, from any file: a large in-band value (a long
``bytes``) is read straight into the object.

Writing streams: the pickle stream goes straight into a seekable file behind a
placeholder header, which is filled in at the end; big buffers go to
``file.write`` as they are, never copied. A non-seekable file gets the pickle
stream spooled first (``SpooledTemporaryFile``, in memory up to
``SPOOL_IN_MEMORY``). A dump that fails leaves nothing of its frame in a
seekable file (it truncates back), and nothing at all in a non-seekable one
unless writing itself failed.

A function defined in the notebook (``__main__``: lambdas and closures too)
travels as its code (pickled by dill, once per code object), closure, attributes
and the globals its code names, and is rebuilt with the namespace it is loaded
into as its globals (:func:`loading_into`): it reads the cell's variables on the
target and the notebook's here, never private copies. What else the C pickler
cannot carry by reference -- classes defined in the notebook, functions not
importable by qualified name -- is handed to dill, and travels as
``dill.loads(<bytes>)``. Instances of such classes stay on the fast path: the
C pickler reduces them as usual and only their class goes through dill.

Values coming back from a job are written with :class:`Tokens`, frame after
frame with one memo, and read with one :class:`InPlace`: what they share stays
shared, and the notebook's own objects (the pushed values) are referred to by
name, with their new state when the cell changed them, which is put into them
once everything has loaded.

The digest of a frame (:func:`digest`, :func:`dump_and_digest`,
:func:`frame_digest`) is a sha256 tree over its sections -- header, pickle
stream, buffer lengths, each buffer; padding left out -- so large buffers are
hashed in 4 MiB leaves on all cores, and never copied::

    section = u64 length || sha256(leaf 0) || sha256(leaf 1) || ...
    digest  = sha256(DIGEST_DOMAIN || section(header) || section(pickle) || section(lengths) || section(buffer 0) ...)

:func:`prepare` pickles a value once into a :class:`Frame`: its digest and length known before anything
is written, its bytes kept to be written after (the notebook plans, then sends only what the target
lacks); given what its buffers hashed to before (``known_buffers``, with a fast 128-bit hash of each
leaf), only the leaves whose fast digest changed are hashed with sha256 again, and writing the frame checks
its buffers with the fast hash alone. :func:`snapshot`, :func:`holds_same` and :func:`immutable_contents`
tell a big container of immutable contents unchanged without pickling it again, on both sides.

The target's runner imports this file as a top-level module (``import wire``),
so it imports only the standard library, and dill lazily.
"""

from __future__ import annotations

import _thread     # threading's locks and locals, without importing threading
import copyreg
import importlib
import io
import mmap
import operator
import os
import stat
import struct
import sys
import types
import warnings
import weakref
from itertools import chain, compress

try:        # pickle's own C classes and functions: pickle.py imports re (and enum), ~9 ms of a job's start
    import _pickle as pickle
except ImportError:
    import pickle

PROTOCOL = 5
MAGIC = b"RXWIRE01"
ALIGN = 64
OUT_OF_BAND_MIN = 64 * 2**10
SPOOL_IN_MEMORY = 64 * 2**20

# sha256 over 500 MiB on the build machine (AMD EPYC with SHA-NI, CPython 3.11),
# one core / two threads on 4 MiB leaves: sha1 0.33 / 0.19 s, sha256 0.36 / 0.18 s,
# blake2b 0.71 / 0.39 s, sha512 0.85 / 0.41 s, sha3_256 1.38 / 0.80 s. sha256
# matches sha1 without sha1's known collisions; blake2b only wins on CPUs
# without SHA extensions. hashlib releases the GIL for large updates, so the
# leaves of a big buffer hash in parallel on a thread pool.
HASH_NAME = "sha256"
LEAF_SIZE = 4 * 2**20
DIGEST_DOMAIN = b"rx_magic wire 1: sha256 tree, 4 MiB leaves\n"

_HEADER = struct.Struct("<8sQQQ")
_LENGTH = struct.Struct("<Q")
_COPY_SIZE = 2**20

_FunctionType = types.FunctionType
_ModuleType = types.ModuleType


# ----------------------------------------------------------------------------- pickling

def _importable(obj: object) -> bool:
    """Whether ``obj`` is found again as ``module.qualname`` in this process (what pickle stores)."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or module_name == "__main__" or "<" in qualname:
        return False
    found = sys.modules.get(module_name)
    if found is None:
        return False
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def _reduce_with_dill(obj: object, withhold: frozenset = frozenset()) -> tuple:
    import dill

    if isinstance(obj, type):
        # Pickling an instance caches __slotnames__ in its class's __dict__;
        # fill that cache now, or the class's bytes (and digest) change later.
        for klass in obj.__mro__:
            if not _importable(klass):
                copyreg._slotnames(klass)
    if isinstance(obj, type) and _reuse_arrival_bytes:
        with _origins_lock:
            arrived = _arrival_bytes.get(obj)
        if arrived is not None:
            return (_main_class, (obj.__qualname__, *arrived))
    with warnings.catch_warnings():
        # dill warns, then writes a by-name reference the target cannot resolve
        # (an Enum defined in the notebook); fail here instead.
        warnings.simplefilter("error", dill.PicklingWarning)
        buffer = io.BytesIO()
        _dill_pickler(dill)(buffer, protocol=PROTOCOL, recurse=True, withhold=withhold).dump(obj)
        data = buffer.getvalue()
    if isinstance(obj, type) and obj.__module__ == "__main__" and "<" not in obj.__qualname__:
        return (_main_class, (obj.__qualname__, _origin(obj, data), data))
    return (dill.loads, (data,))


_dill_pickler_class = None


def _dill_pickler(dill):
    """dill's pickler, handing the notebook's functions (a class's methods) to :func:`_reduce_main_function`."""
    global _dill_pickler_class
    if _dill_pickler_class is None:
        class _NotebookDillPickler(dill.Pickler):
            def __init__(self, file, *args, withhold=frozenset(), **kwargs):
                super().__init__(file, *args, **kwargs)
                self._withhold = withhold

            def reducer_override(self, obj):
                if type(obj) is _FunctionType and getattr(obj, "__module__", None) == "__main__":
                    # a global that is the class being pickled is carried once the class exists
                    return _reduce_main_function(obj, self._withhold, getattr(self, "_postproc", None))
                return NotImplemented

        _dill_pickler_class = _NotebookDillPickler
    return _dill_pickler_class


# A class defined in the notebook travels by value, yet must come back as the notebook's own class
# (``isinstance`` and ``except`` work on identity). Each such class carries an origin: the hash of
# its bytes where it was defined, kept across the trip. On loading, a class of the same name in
# ``__main__`` with the same origin is that class; anything else is built from the bytes.
_origins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_origins_lock = _thread.allocate_lock()      # the kernel's thread pickles, a monitor's fetch thread unpickles
# On the target the runner re-pickles what arrived to see whether the cell changed it: a class built
# from bytes is sent on as those same bytes (dill would not write them identically twice).
_arrival_bytes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_reuse_arrival_bytes = False


def _origin(klass: type, data: bytes) -> str:
    with _origins_lock:
        found = _origins.get(klass)
        if found is None:
            found = _origins[klass] = _new_hash(data, 'sha256').hexdigest()[:32]
        return found


def _main_class(qualname: str, origin: str, data: bytes) -> type:
    import dill
    here = _find_main(qualname)
    with _origins_lock:
        known = _origins.get(here) if isinstance(here, type) else None
    if known == origin:
        return here
    if isinstance(here, type) and here.__module__ == "__main__" and known is None:
        try:       # defined here and not yet sent: its origin is the hash of its bytes now
            if _reduce_with_dill(here)[1][1] == origin:
                return here
        except Exception:
            pass
    klass = dill.loads(data)
    with _origins_lock:
        _origins[klass] = origin
        _arrival_bytes[klass] = (origin, data)
    return klass


def _find_main(qualname: str):
    """``qualname`` in the notebook's namespace (IPython's, when it runs) or in ``__main__``."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    name, _, rest = qualname.partition(".")
    here = shell.user_ns.get(name) if shell is not None else None
    if here is None:
        here = getattr(sys.modules.get("__main__"), name, None)
    for part in rest.split(".") if rest else ():
        here = getattr(here, part, None)
    return here




class _Pickler(pickle.Pickler):
    # The C pickler skips this hook for None, bools and exact ints, floats, str,
    # bytes, dicts, lists, tuples and sets, and for anything already memoized,
    # so it only sees the rest: keep the common "no" to a few type checks.
    def __init__(self, file, *, withhold: frozenset = frozenset(), **kwargs):
        super().__init__(file, **kwargs)
        self._withhold = withhold

    def reducer_override(self, obj):
        kind = type(obj)
        if kind is _FunctionType or isinstance(obj, type):
            if _importable(obj):
                return NotImplemented
            if kind is _FunctionType and obj.__module__ == "__main__":
                return _reduce_main_function(obj, self._withhold)
            return _reduce_with_dill(obj, self._withhold)
        if kind is _ModuleType and obj.__name__ != "__main__" and sys.modules.get(obj.__name__) is obj:
            return (importlib.import_module, (obj.__name__,))
        if kind is _CodeType:
            return (_load_code, (_code_data(obj),))
        if kind is _CellType:
            try:
                contents = (obj.cell_contents,)
            except ValueError:      # an empty cell: a closure over a name not bound yet
                contents = ()
            return (_new_cell, (), contents, None, None, _fill_cell)
        return NotImplemented


# ----------------------------------------------------------------------------- the notebook's functions

# A function defined in the notebook travels as its code, closure and attributes, and is rebuilt
# with the namespace it is loaded into as its globals (the cell's on the target, the notebook's
# here), so it reads the same variables as the cell around it, never private copies. It carries
# the globals its code names, and only those, so that it works even where they are missing;
# they are set only where a name is not bound already (see :func:`loading_into`).
_CodeType = types.CodeType
_CellType = types.CellType
# the namespace's own machinery, found wherever the function lands (the runner's display, IPython's)
_NOT_CARRIED = frozenset({"__builtins__", "__name__", "In", "Out", "get_ipython", "exit", "quit", "display"})
_code_bytes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()     # code objects never change
_code_lock = _thread.allocate_lock()
_loading = _thread._local()


_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL", "STORE_NAME", "DELETE_NAME"})
_names_of_code: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _global_names(code: types.CodeType, found: set, stored_only: bool = False) -> set:
    """The global names ``code`` and the code nested in it load or store (not attribute names)."""
    with _code_lock:
        names = _names_of_code.get(code)
    if names is None:
        import dis
        instructions = list(dis.get_instructions(code))
        names = (frozenset(i.argval for i in instructions if i.opname in _LOADS | _STORES),
                 frozenset(i.argval for i in instructions if i.opname in _STORES))
        with _code_lock:
            _names_of_code[code] = names
    found.update(names[1] if stored_only else names[0])
    for constant in code.co_consts:
        if isinstance(constant, _CodeType):
            _global_names(constant, found, stored_only)
    return found


def globals_stored(function: types.FunctionType) -> set[str]:
    """The global names ``function`` (or a function nested in it) assigns or deletes (``global x; x = 1``)."""
    return _global_names(function.__code__, set(), stored_only=True)


def globals_used(function: types.FunctionType) -> dict:
    """The globals ``function``'s code names (nested functions' included) that its globals hold."""
    namespace = function.__globals__
    return {name: namespace[name] for name in sorted(_global_names(function.__code__, set()))
            if name in namespace and name not in _NOT_CARRIED}


def _reduce_main_function(function: types.FunctionType, withhold: frozenset = frozenset(),
                          in_progress: dict | None = None) -> tuple:
    carried = {name: value for name, value in globals_used(function).items()
               if name not in withhold}
    if in_progress:     # a method of a class dill is pickling: carry the globals once the class is built
        after_class = in_progress[next(iter(in_progress))]
        for name, value in carried.items():
            after_class.append((_carry_global, (function, name, value)))
        carried = {}
    state = {"defaults": function.__defaults__, "kwdefaults": function.__kwdefaults__,
             "dict": function.__dict__ or None, "annotations": function.__annotations__ or None,
             "doc": function.__doc__, "globals": carried}
    return (_main_function, (function.__code__, function.__name__, function.__qualname__, function.__closure__),
            state, None, None, _set_function_state)


def _main_function(code, name, qualname, closure):
    function = types.FunctionType(code, _loading_namespace(), name, None, closure)
    function.__qualname__ = qualname
    function.__module__ = "__main__"
    return function


def _set_function_state(function, state) -> None:
    function.__defaults__ = state["defaults"]
    function.__kwdefaults__ = state["kwdefaults"]
    if state["dict"]:
        function.__dict__.update(state["dict"])
    if state["annotations"]:
        function.__annotations__ = state["annotations"]
    function.__doc__ = state["doc"]
    carried = getattr(_loading, "carried", None)
    target = carried if carried is not None else function.__globals__
    for global_name, value in state["globals"].items():
        target.setdefault(global_name, value)


def _carry_global(function, name: str, value) -> None:
    carried = getattr(_loading, "carried", None)
    (carried if carried is not None else function.__globals__).setdefault(name, value)


def _code_data(code: types.CodeType) -> bytes:
    with _code_lock:
        data = _code_bytes.get(code)
    if data is None:
        import dill
        data = dill.dumps(code, protocol=PROTOCOL)
        with _code_lock:
            _code_bytes[code] = data
    return data


def _load_code(data: bytes) -> types.CodeType:
    import dill
    code = dill.loads(data)
    with _code_lock:
        _code_bytes[code] = data        # sent on as the bytes it came as
    return code


def _new_cell():
    return types.CellType()


def _fill_cell(cell, contents: tuple) -> None:
    if contents:
        cell.cell_contents = contents[0]


def main_namespace() -> dict:
    """The notebook's namespace: IPython's ``user_ns`` when IPython runs, else ``__main__``'s."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None:
        return shell.user_ns
    return sys.modules["__main__"].__dict__


def _loading_namespace() -> dict:
    namespace = getattr(_loading, "namespace", None)
    return namespace if namespace is not None else main_namespace()


class loading_into:
    """``with loading_into(namespace) as carried:`` functions loaded in the block take ``namespace``
    as their globals; the globals they carry are gathered in ``carried`` (the first value of a
    name wins) for the caller to set where the name is not bound, instead of being set at once.
    """

    def __init__(self, namespace: dict | None = None):
        self.namespace = namespace
        self.carried: dict = {}

    def __enter__(self) -> dict:
        self._previous = (getattr(_loading, "namespace", None), getattr(_loading, "carried", None))
        _loading.namespace = self.namespace if self.namespace is not None else main_namespace()
        _loading.carried = self.carried
        return self.carried

    def __exit__(self, *exc_info) -> None:
        _loading.namespace, _loading.carried = self._previous


# found by the same name wherever this file is imported from (rx_magic.runtime.wire here, wire beside the runner)
for _loader in (_main_class, _main_function, _set_function_state, _carry_global, _load_code, _new_cell, _fill_cell):
    _loader.__module__ = "_rx_wire"
sys.modules.setdefault("_rx_wire", sys.modules[__name__])


# ----------------------------------------------------------------------------- changed in place

_NEW_OBJECT = (copyreg.__newobj__,)


def _state_of(obj) -> tuple | None:
    """What a reader needs to put ``obj``'s state into an object it already has, or None if it cannot."""
    kind = type(obj)
    if kind is list:
        return ("list", list(obj))
    if kind is dict:
        return ("dict", dict(obj))
    if kind is set:
        return ("set", list(obj))
    if kind is bytearray:
        return ("bytearray", bytes(obj))
    if kind.__name__ == "ndarray" and kind.__module__ == "numpy":
        return ("array", obj.view())
    try:
        reduced = obj.__reduce_ex__(PROTOCOL)
    except Exception:
        return None
    if not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] not in _NEW_OBJECT:
        return None
    args = reduced[1]
    if not args or args[0] is not kind:
        return None
    state, listitems, dictitems = (tuple(reduced[2:5]) + (None, None, None))[:3]
    if len(reduced) > 5 and reduced[5] is not None:
        return None             # a state setter of its own: leave it to pickle
    return ("object", kind, tuple(args[1:]), state,
            None if listitems is None else list(listitems), None if dictitems is None else list(dictitems))


KNOWN, CHANGED = "=known", "=changed"       # frame names: never Python names, so never a pulled value's


class Tokens:
    """How one file of values going back to the notebook is written: frame after frame, with one memo.

    Give the same ``Tokens`` to each :func:`dump` into one file, and read the file, in order,
    with one :class:`InPlace`: an object written in one frame is referred to, not copied, by
    the next, so values keep sharing what they share, each still in a frame of its own.

    ``objects`` are the reader's own (what arrived under each name). The first frame names
    them; after it both memos hold them at the same places, so every value that holds one
    refers to the reader's object, at no cost per object written. For each name in
    ``changed``, a frame carries the object's new state, which the reader puts into its own
    object (so every other name for it sees the change) or, when the type does not allow it,
    into a new one bound to the name. After a frame that failed, the Tokens refuse more:
    write the file again without that value.
    """

    def __init__(self, objects: dict[str, object] | None = None, changed=()):
        self.objects = {}
        self.states = {}
        seen: set[int] = set()
        for name, obj in (objects or {}).items():
            if id(obj) in seen:
                continue
            if name in changed:
                state = _state_of(obj)
                if state is None:
                    continue        # no way to put it into the reader's object: pickled anew, and rebound
                self.states[name] = state
            seen.add(id(obj))
            self.objects[name] = obj
        self._relay: _Relay | None = None
        self._pickler: pickle.Pickler | None = None
        self._broken = False
        self._begun = False

    def _pickler_for(self, sink, out_of_band, withhold: frozenset) -> pickle.Pickler:
        if self._broken:
            raise RuntimeError("a frame written with these Tokens failed, so the reader's memo would no longer "
                               "match: write the file again with new Tokens")
        if self._pickler is None:
            self._relay = relay = _Relay()
            self._pickler = _Pickler(relay, protocol=PROTOCOL, buffer_callback=relay.out_of_band, withhold=withhold)
        self._relay.sink, self._relay.take = sink, out_of_band
        return self._pickler

    def begin(self, file) -> None:
        """Write the first frames: the reader's objects by name, then each changed one's new state.

        :func:`dump` calls it for the first frame; call it first to learn which change cannot
        be written (``ChangeNotWritten``, naming it).
        """
        if self._begun:
            return
        self._begun = True
        if not self.objects:
            return
        _write_known(list(self.objects), file)
        self._pickler_for(None, None, frozenset()).memo = {
            id(obj): (index, obj) for index, obj in enumerate(self.objects.values())}
        for name, state in self.states.items():
            try:
                dump((CHANGED, (name, state)), file, tokens=self)
            except Exception as exc:
                raise ChangeNotWritten(name, exc) from exc

    def _dump(self, pickler: pickle.Pickler, obj) -> None:
        try:
            pickler.dump(obj)
        except BaseException:
            # the frame is cut from the file, but the memo keeps what it met, numbered: later frames
            # would refer to entries the reader never saw
            self._broken = True
            raise


def _write_known(names: list[str], file) -> None:
    """The frame naming the reader's objects: ``(KNOWN, (object, ...))``, each object a persistent id
    (its name) that the reader resolves and memoizes, so that both memos hold them at 0, 1, ...

    Written opcode by opcode: nothing else in it is memoized, whatever the pickler's habits.
    """
    def text(value: str) -> bytes:
        data = value.encode("utf-8", "surrogatepass")
        return b"X" + struct.pack("<I", len(data)) + data     # BINUNICODE, never memoized here

    stream = b"".join([b"\x80\x05", text(KNOWN), b"(",                 # PROTO 5, MARK
                       *(text(name) + b"Q\x94" for name in names),   # BINPERSID, MEMOIZE
                       b"t\x86."])                                   # TUPLE, TUPLE2, STOP
    _, frame_length = _layout(len(stream), ())
    header = _HEADER.pack(MAGIC, len(stream), 0, frame_length)
    _write_all(file, header + stream + bytes(frame_length - _HEADER.size - len(stream)))


class ChangeNotWritten(Exception):
    """The new state of the reader's object ``name`` does not pickle."""

    def __init__(self, name: str, error: Exception):
        super().__init__(f"{name}: {type(error).__name__}: {error}")
        self.name, self.error = name, error


class _Relay:
    """The file a long-lived pickler writes into; each frame points it at that frame's sink."""

    sink = None
    take = None

    def write(self, data):
        return self.sink.write(data)

    def out_of_band(self, buffer):
        return self.take(buffer)


class InPlace:
    """Reads a file written with :class:`Tokens`, resolving its references to ``namespace``'s objects.

    Nothing is changed while loading: the new states wait for :meth:`commit`, so a file that
    fails to load leaves every object as it was. ``rebuilt`` holds the objects made anew
    because the one here could not take the new state (another type, an array of another shape).
    """

    def __init__(self, namespace: dict | None = None):
        self.namespace = namespace if namespace is not None else main_namespace()
        self.updates: list = []
        self.updated: list[str] = []
        self.rebuilt: dict[str, object] = {}
        self._known: dict[str, object] = {}
        self._absent: dict[str, _Absent] = {}
        self._unpickler: pickle.Unpickler | None = None
        self._switch: _Switch | None = None

    def _load(self, source, buffers) -> object:
        """Unpickle the next frame's stream from ``source`` with the memo of the frames before it."""
        if self._unpickler is None:
            self._switch = _Switch()
            self._unpickler = _ResolvingUnpickler(self._switch, buffers=self._switch)
            self._unpickler.resolve = self._resolve
        self._switch.source, self._switch.buffers = source, iter(buffers or ())
        frame = self._unpickler.load()
        if isinstance(frame, tuple) and len(frame) == 2 and frame[0] == KNOWN:
            return (KNOWN, None)        # held by the memo alone from now on (see finish)
        if isinstance(frame, tuple) and len(frame) == 2 and frame[0] == CHANGED:
            self._change(*frame[1])
        return frame

    def _resolve(self, name):
        """The notebook's object ``name`` (the frame ``KNOWN`` names them); a stand-in if it has none."""
        if not isinstance(name, str):
            raise pickle.UnpicklingError(f"not a name in a pulled frame: {name!r}")
        if name in self.namespace:
            self._known[name] = self.namespace[name]
        else:       # pulled into another namespace: fine, unless a value holds it (see finish)
            self._known[name] = self._absent[name] = _Absent(name)
        return self._known[name]

    def finish(self) -> None:
        """After the last frame: raise if a value holds one of the notebook's objects that is not there."""
        self._unpickler = self._switch = None          # its memo was the last holder of the stand-ins
        self._known.clear()
        # held by self._absent and getrefcount's argument alone, unless a loaded value holds it too
        used = [name for name in self._absent if sys.getrefcount(self._absent[name]) > 2]
        if used:
            raise pickle.UnpicklingError(
                f"a pulled value holds the notebook's {', '.join(map(repr, used))}, which "
                f"{'is' if len(used) == 1 else 'are'} not defined in the namespace pulled into")

    def _change(self, name: str, state: tuple) -> None:
        old, form = self._known[name], state[0]     # a stand-in (absent) has no type to match: built anew
        if form == "array":
            new = state[1]
            if type(old) is type(new) and old.shape == new.shape and old.dtype == new.dtype and old.flags.writeable:
                self._later(name, _assign_array, old, new)
            else:
                self.rebuilt[name] = new
        elif form in _CONTAINERS:
            container = _CONTAINERS[form]
            if type(old) is container:
                self._later(name, _refill, old, state[1])
            else:
                self.rebuilt[name] = container(state[1])
        elif form == "object":
            _, cls, newargs, obj_state, listitems, dictitems = state
            if type(old) is cls:
                self._later(name, _set_state, old, obj_state, listitems, dictitems, True)
            else:
                new = cls.__new__(cls, *newargs)
                _set_state(new, obj_state, listitems, dictitems, False)
                self.rebuilt[name] = new
        else:
            raise pickle.UnpicklingError(f"unknown state {form!r} for {name!r} in a pulled frame")

    def _later(self, name: str, update, *args) -> None:
        self.updates.append((update, args))
        self.updated.append(name)

    def commit(self) -> None:
        """Put the new states into the notebook's objects."""
        updates, self.updates = self.updates, []
        for update, args in updates:
            update(*args)


_CONTAINERS = {"list": list, "dict": dict, "set": set, "bytearray": bytearray}


class _Absent:
    """Stands in for an object the notebook no longer has while a pulled file is read."""

    __slots__ = ("name", "__weakref__")

    def __init__(self, name: str):
        self.name = name


def _assign_array(old, new) -> None:
    old[...] = new


def _refill(old, items) -> None:
    if isinstance(old, dict):
        old.clear()
        old.update(items)
    elif isinstance(old, set):
        old.clear()
        old.update(items)
    else:
        old[:] = items


def _set_state(obj, state, listitems, dictitems, clear: bool) -> None:
    """What unpickling does to a new object's state (``BUILD``), done to ``obj``; ``clear`` empties it first."""
    if clear:
        attributes = getattr(obj, "__dict__", None)
        if attributes is not None:
            attributes.clear()
        for slot in copyreg._slotnames(type(obj)):
            try:
                object.__delattr__(obj, slot)
            except AttributeError:
                pass
        if listitems is not None:
            del obj[:]
        if dictitems is not None:
            obj.clear()
    if state is not None:
        setstate = getattr(obj, "__setstate__", None)
        if setstate is not None:
            setstate(state)
        else:
            slots = None
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            if state:
                attributes = obj.__dict__
                for key, value in state.items():
                    attributes[sys.intern(key) if type(key) is str else key] = value
            for key, value in (slots or {}).items():
                setattr(obj, key, value)
    for item in listitems or ():
        obj.append(item)
    for key, value in dictitems or ():
        obj[key] = value


class _Sink:
    """What the pickler writes into: counts, optionally hashes, and passes each piece on to ``file``."""

    def __init__(self, file, hashed: _SectionHash | None):
        self._file = file
        self._hashed = hashed
        self.nbytes = 0

    def write(self, data) -> int:
        size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        self.nbytes += size
        if self._hashed is not None:
            self._hashed.update(data)
        if self._file is not None:
            _write_all(self._file, data)
        return size


def _pickle(obj: object, sink: _Sink, *, withhold: frozenset = frozenset(), tokens: Tokens | None = None,
            memo: list | None = None) -> list[memoryview]:
    """Pickle ``obj`` into ``sink``; return the buffers left out of band, as flat byte views.

    With ``memo`` (a list), the pickler's memo ``{id: (index, object)}`` is appended to it.
    """
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(view)
        return False

    if tokens is not None:
        tokens._dump(tokens._pickler_for(sink, out_of_band, withhold), obj)
        return buffers
    pickler = _Pickler(sink, protocol=PROTOCOL, buffer_callback=out_of_band, withhold=withhold)
    pickler.dump(obj)
    if memo is not None:
        memo.append(pickler.memo.copy())
    return buffers


def _padding(offset: int) -> int:
    return -offset % ALIGN


def _layout(pickle_length: int, lengths) -> tuple[list[int], int]:
    """Offsets of the buffers from the frame's start, and the frame's length."""
    offset = _HEADER.size + pickle_length + _LENGTH.size * len(lengths)
    offset += _padding(offset)
    offsets = []
    for length in lengths:
        offsets.append(offset)
        offset += length + _padding(length)
    return offsets, offset


# ----------------------------------------------------------------------------- digests

_pool = None
_pool_pid = None


#: Up to this many bytes, a sha256 is taken with Python's own sha256 module while hashlib is not imported yet:
#: it is ~5x slower than OpenSSL's per byte (4.7 against 0.9 ns on the build machine), but hashlib's OpenSSL
#: start-up (~3.5 ms) is worth ~900 KB of it, and a job whose values are all small then never pays it.
SMALL_HASH = 256 * 2**10
_small_sha256 = None


def _new_hash(data=b"", name: str = HASH_NAME, size: int | None = None):
    """``hashlib.new(name, data)``, hashlib imported when first needed: a job with no value to check starts
    without it. ``size``: how many bytes it will hash in all, when more than ``data`` (small: no hashlib)."""
    global _small_sha256
    if name == "sha256" and "hashlib" not in sys.modules:
        if (memoryview(data).nbytes if size is None else size) <= SMALL_HASH:
            if _small_sha256 is None:
                try:
                    from _sha256 import sha256 as _small_sha256     # CPython 3.11 and before
                except ImportError:
                    try:
                        from _sha2 import sha256 as _small_sha256   # 3.12 on
                    except ImportError:
                        _small_sha256 = False
            if _small_sha256:
                return _small_sha256(data)
    import hashlib
    return hashlib.new(name, data)


def _hash_pool():
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():  # a forked child has none of its parent's threads
        from concurrent.futures import ThreadPoolExecutor
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        _pool = ThreadPoolExecutor(max_workers=min(max(cpus or 1, 1), 8), thread_name_prefix="rx-wire-hash")
        _pool_pid = os.getpid()
    return _pool


def _leaf_digest(view: memoryview) -> bytes:
    return _new_hash(view).digest()


def _pieces_digest(pieces: list) -> bytes:
    leaf = _new_hash(size=sum(memoryview(piece).nbytes for piece in pieces))
    for piece in pieces:
        leaf.update(piece)
    return leaf.digest()


class _SectionHash:
    """One section's part of the digest: its length and the hash of each ``LEAF_SIZE`` leaf.

    Fed in pieces of any size, it gives the same answer as one piece; each whole leaf is hashed on the
    thread pool, without copying, while more is fed (the pickler goes on while the leaves before hash);
    the last, partial one at :meth:`finish`. A piece of something that may change (not ``bytes``) smaller
    than a leaf is copied, as it is hashed later.
    """

    def __init__(self, data=None):
        self.nbytes = 0
        self._leaves: list = []             # digests (bytes) or futures of them, in order
        self._pieces: list = []             # the pieces of the leaf being filled
        self._filled = 0
        if data is not None:
            self.update(data)

    def update(self, data) -> None:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.nbytes += view.nbytes
        if type(data) is not bytes and view.nbytes < LEAF_SIZE:
            view = memoryview(bytes(view))
        while len(view):
            take = min(len(view), LEAF_SIZE - self._filled)
            if take == LEAF_SIZE:
                self._leaves.append(_hash_pool().submit(_leaf_digest, view[:take]))
            else:
                self._pieces.append(view[:take])
                self._filled += take
                if self._filled == LEAF_SIZE:
                    self._leaves.append(_hash_pool().submit(_pieces_digest, self._pieces))
                    self._pieces, self._filled = [], 0
            view = view[take:]

    def finish(self) -> bytes:
        if self._filled:
            self._leaves.append(_pieces_digest(self._pieces))
            self._pieces, self._filled = [], 0
        leaves = [leaf if isinstance(leaf, bytes) else leaf.result() for leaf in self._leaves]
        self._leaves = leaves
        return _LENGTH.pack(self.nbytes) + b"".join(leaves)


def _leaf_digests(leaf: memoryview, fast, known: tuple | None) -> tuple[bytes, bytes | None]:
    """``(sha256 digest, fast digest or None)`` of one leaf of a buffer.

    ``known`` is such a pair from an earlier hash of this leaf of the buffer: when the leaf's fast digest
    is the one it holds, the leaf holds the bytes it did then, and its sha256 digest is taken from it.
    """
    if fast is None:
        return _new_hash(leaf).digest(), None
    quick = fast(leaf)
    if known is not None and known[1] == quick:
        return known[0], quick
    return _new_hash(leaf).digest(), quick


class _BufferHash:
    """An out-of-band buffer's section of the digest (what ``_SectionHash(view)`` gives), its leaves on the pool.

    With ``fast`` (a function of a leaf giving a 128-bit digest of it; the notebook passes xxh3_128, see
    :mod:`rx_magic.flow.unchanged`), each leaf's fast digest is taken too, and ``known`` -- the
    :attr:`leaves` of an earlier hash of the same buffer -- spares the sha256 of every leaf whose fast
    digest is the same as then: a fast digest goes at the speed memory is read (about 20 ms for 500 MB),
    sha256 at a tenth of it. Without ``fast`` each leaf gets its sha256 alone, as always.
    """

    def __init__(self, view: memoryview, fast=None, known=(), unwritten: list | None = None):
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.nbytes = view.nbytes
        starts = range(0, view.nbytes, LEAF_SIZE)
        if unwritten is not None:   # each leaf's sha256 digest if it still holds the bytes it did, else None
            pool = _hash_pool()
            self._leaves = [(sha, None) if sha is not None
                            else pool.submit(_leaf_digests, view[start:start + LEAF_SIZE], None, None)
                            for start, sha in zip(starts, unwritten)]
            return
        known = list(known)[:len(starts)] if fast is not None else []
        known += [None] * (len(starts) - len(known))
        if len(starts) == 1:        # one leaf: not worth a trip to the pool
            self._leaves: list = [_leaf_digests(view, fast, known[0])]
        else:
            pool = _hash_pool()
            self._leaves = [pool.submit(_leaf_digests, view[start:start + LEAF_SIZE], fast, before)
                            for start, before in zip(starts, known)]

    @property
    def leaves(self) -> list[tuple[bytes, bytes | None]]:
        """``(sha256 digest, fast digest or None)`` of each leaf, in order (waits for them)."""
        self._leaves = [leaf if isinstance(leaf, tuple) else leaf.result() for leaf in self._leaves]
        return self._leaves

    def finish(self) -> bytes:
        return _LENGTH.pack(self.nbytes) + b"".join(sha for sha, _ in self.leaves)


def _hash_buffer(index: int, view: memoryview) -> _BufferHash:
    return _BufferHash(view)


def _root_digest(sections: list[_SectionHash]) -> str:
    return digest_of_sections([section.finish() for section in sections])


# ----------------------------------------------------------------------------- what a loaded frame still holds

# A buffer loaded from a file is a private copy-on-write mapping of it (:func:`_map_buffers`). A page of it this
# process never wrote is the file's page, or not in memory at all; a page it wrote became a private anonymous
# page, in memory or in swap. Linux's /proc/self/pagemap tells them apart: one 64-bit entry per page, bit 63
# "present", bit 62 "swapped", bit 61 "file page or shared anonymous" (since Linux 3.5; before, those bits held
# the page shift, and every page in memory looks written: more is hashed, never less). The three live in the
# entry's most significant byte; _WRITTEN maps that byte to 1 for a page this process wrote.
PAGEMAP = "/proc/self/pagemap"
_WRITTEN = bytes(1 if flags & 0x40 or (flags & 0xA0) == 0x80 else 0 for flags in range(256))
_FLAGS_BYTE = 7 if sys.byteorder == "little" else 0
_pagemap_fd: int | None = None
_pagemap_pid = None


def _open_pagemap() -> int:
    return os.open(PAGEMAP, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))


def _address(view: memoryview) -> int | None:
    """Where ``view``'s bytes start in this process's memory; None for a read-only buffer (ctypes needs a writable one)."""
    if not view.nbytes:
        return None
    try:
        import ctypes
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (ImportError, TypeError, ValueError, BufferError):
        return None


def _written_flags(fd: int, address: int, nbytes: int) -> bytes:
    """One byte per page of ``nbytes`` at ``address``: 1 where this process wrote the page (see _WRITTEN)."""
    page = mmap.PAGESIZE
    first, last = address // page, (address + nbytes - 1) // page
    entries = os.pread(fd, (last - first + 1) * 8, first * 8)
    if len(entries) != (last - first + 1) * 8:
        raise OSError(f"{PAGEMAP} gave {len(entries)} bytes for {last - first + 1} pages")
    return entries[_FLAGS_BYTE::8].translate(_WRITTEN)


def _pagemap() -> int | None:
    """This process's pagemap, open, once it is shown to tell a written page (None where it cannot be read).

    The check writes one page of a private anonymous mapping and wants to see it written: a pagemap that reads
    but reports nothing (a kernel or sandbox that emulates the file with zeros) is not trusted.
    """
    global _pagemap_fd, _pagemap_pid
    if _pagemap_pid == os.getpid():
        return _pagemap_fd
    _pagemap_fd, _pagemap_pid = None, os.getpid()   # a forked child opens its own: the file is per process
    fd = None
    try:
        fd = _open_pagemap()
        with mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE) as probe:
            probe[0] = 1
            view = memoryview(probe)
            try:
                address = _address(view)
                if address is not None and _written_flags(fd, address, 1) == b"\1":
                    _pagemap_fd, fd = fd, None
            finally:
                view.release()
    except (OSError, ValueError, AttributeError):     # no pagemap, no MAP_PRIVATE or os.pread (not Linux)
        pass
    finally:
        if fd is not None:
            os.close(fd)
    return _pagemap_fd


def _unwritten_leaves(fd: int, address: int, nbytes: int, section: bytes) -> list | None:
    """The sha256 digest of each leaf of the loaded buffer of ``nbytes`` at ``address`` that still holds what it
    held when loaded, None for a leaf with a written page; None for all where pagemap cannot tell. ``section``
    is the buffer's part of the frame's digest (:func:`frame_sections`)."""
    if _LENGTH.unpack_from(section)[0] != nbytes or len(section) != 8 + 32 * -(-nbytes // LEAF_SIZE):
        return None
    try:
        flags = _written_flags(fd, address, nbytes)
    except OSError:
        return None
    page, first = mmap.PAGESIZE, address // mmap.PAGESIZE
    found = []
    for number, start in enumerate(range(0, nbytes, LEAF_SIZE)):
        end = min(start + LEAF_SIZE, nbytes)
        pages = flags[(address + start) // page - first:(address + end - 1) // page - first + 1]
        found.append(None if 1 in pages else section[8 + 32 * number:8 + 32 * (number + 1)])
    return found


def digest_since_load(obj: object, sections: list[bytes], mapped: list[memoryview]) -> str:
    """:func:`digest` of ``obj``, which was loaded from a frame whose parts are ``sections`` (:func:`frame_sections`)
    with its buffers ``mapped`` (``load(file, mapped=...)``), hashing only what may have changed since.

    ``obj`` is pickled again (its pickle stream: shapes, dtypes, columns, everything but the big buffers) and
    hashed. Of an out-of-band buffer that is still one of the mapped buffers (same memory, same length), only
    the leaves with a page this process wrote (``/proc/self/pagemap``) are hashed again; the others keep their
    digests from the load-time check. Anything else -- a new buffer, a read-only one, no readable pagemap -- is
    hashed whole, as :func:`digest` does. The caller makes sure the file under the mapping did not change.
    """
    pickle_hash = _SectionHash()
    sink = _Sink(None, pickle_hash)
    buffers = _pickle(obj, sink)
    fd = _pagemap() if buffers and mapped else None
    where = {}
    if fd is not None:
        for view, section in zip(mapped, sections[3:]):
            address = _address(view)
            if address is not None:
                where[address, view.nbytes] = section

    def hash_buffer(index: int, view: memoryview) -> _BufferHash:
        section = where.get((_address(view), view.nbytes)) if where else None
        unwritten = None if section is None else _unwritten_leaves(fd, _address(view), view.nbytes, section)
        return _BufferHash(view, unwritten=unwritten)

    return _write_rest(sink, buffers, None, pickle_hash, hash_buffer=hash_buffer)[0]


# ----------------------------------------------------------------------------- unchanged without pickling

#: Containers with fewer items pickle in a moment: no snapshot is worth taking of them.
SNAPSHOT_MIN_ITEMS = 1000
_SNAPSHOT_DEPTH = 6
_ATOMS = frozenset({int, float, complex, bool, type(None), str, bytes})
_NESTED = frozenset({tuple, frozenset})
_TEXTS = frozenset({str, bytes})
_SNAPSHOT_TYPES = (dict, list, tuple)


def snapshot(value) -> tuple[list, ...] | None:
    """The objects a big container holds, to tell later without pickling it whether it still pickles the same.

    For a ``dict``, ``list`` or ``tuple`` (exact types) of at least ``SNAPSHOT_MIN_ITEMS`` items: a dict's
    keys and values, or the items, as lists (a copy of the references, at C speed); None for anything else.
    Take it *before* pickling the value; see :func:`holds_same` and :func:`immutable_contents`.
    """
    kind = type(value)
    if kind not in _SNAPSHOT_TYPES or len(value) < SNAPSHOT_MIN_ITEMS:
        return None
    return (list(value), list(value.values())) if kind is dict else (list(value),)


def holds_same(value, items: tuple[list, ...]) -> bool:
    """Whether ``value`` holds the very objects ``items`` (from :func:`snapshot`) lists, in that order.

    If it does, and what it holds is immutable all the way down (:func:`immutable_contents` of the
    snapshot), it pickles to the same bytes it did when the snapshot was taken: the pickle of such a
    container depends on nothing but its exact type, the sequence of objects it holds and which of them
    are one object, and none of those objects can change. Objects are compared by identity, at C speed,
    never with ``==`` (``1 == 1.0 == True``, and they pickle differently). The caller keeps ``value``
    itself referenced and checks it is the same object (so that its id is not reused).
    """
    if len(value) != len(items[0]):
        return False
    if type(value) is dict:
        keys, values = items
        return all(map(operator.is_, keys, value)) and all(map(operator.is_, values, value.values()))
    return all(map(operator.is_, items[0], value))


def immutable_contents(groups: tuple[list, ...], long_text: int = 64 * 2**10) -> list | None:
    """Whether what a :func:`snapshot` lists is immutable all the way down: ``int``, ``float``, ``complex``,
    ``bool``, ``None``, ``str``, ``bytes``, and ``tuple``/``frozenset`` of them (exact types, at most
    ``_SNAPSHOT_DEPTH`` levels). If so, the ``str``/``bytes`` among it at least ``long_text`` long (a list,
    often empty); else None.

    Each level of nesting is looked at in one pass at C speed (``map(type, ...)``), without copying it.
    """
    long_texts: list = []
    for group in groups:
        base, flatten = [group], 1      # this level's objects: ``base`` flattened ``flatten`` times

        def level():
            found = base
            for _ in range(flatten):
                found = chain.from_iterable(found)
            return found

        for _ in range(_SNAPSHOT_DEPTH):
            kinds = set(map(type, level()))
            if not kinds <= _ATOMS | _NESTED:
                return None
            if kinds & _TEXTS:
                texts = list(compress(level(), map(_TEXTS.__contains__, map(type, level()))))
                long_texts.extend(compress(texts, map(long_text.__le__, map(len, texts))))
            if not kinds & _NESTED:
                break
            if kinds <= _NESTED:
                flatten += 1
            else:
                base, flatten = [list(compress(level(), map(_NESTED.__contains__, map(type, level()))))], 2
        else:
            return None
    return long_texts


# ----------------------------------------------------------------------------- writing

def _write_all(file, data) -> None:
    written = file.write(data)
    if written is not None:
        view = memoryview(data)
        while written < view.nbytes:  # a raw (unbuffered) file may write less than it was given
            written += file.write(view[written:])


def _seekable(file) -> bool:
    try:
        if not file.seekable() or "a" in str(getattr(file, "mode", "")):
            return False
        file.tell()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def _dump(obj: object, file, hashed: bool, **options) -> tuple[str | None, int]:
    """Write one frame for ``obj`` into ``file`` (None: only measure it); return (digest or None, length).

    ``options`` go to :func:`_pickle`.
    """
    pickle_hash = _SectionHash() if hashed else None
    if file is None:
        sink = _Sink(None, pickle_hash)
        return _write_rest(sink, _pickle(obj, sink, **options), None, pickle_hash)
    if not _seekable(file):
        import tempfile     # not at the top: the runner starts faster without it
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            sink = _Sink(spool, pickle_hash)
            buffers = _pickle(obj, sink, **options)
            spool.seek(0)

            def write_header_then_pickle(header: bytes) -> None:
                _write_all(file, header)
                while chunk := spool.read(_COPY_SIZE):
                    _write_all(file, chunk)

            return _write_rest(sink, buffers, file, pickle_hash, write_header_then_pickle)
    start = file.tell()
    try:
        _write_all(file, bytes(_HEADER.size))  # a placeholder, filled in once the lengths are known
        sink = _Sink(file, pickle_hash)
        buffers = _pickle(obj, sink, **options)

        def fill_in_header(header: bytes) -> None:
            end = file.tell()
            file.seek(start)
            _write_all(file, header)
            file.seek(end)

        return _write_rest(sink, buffers, file, pickle_hash, fill_in_header, header_last=True)
    except BaseException:
        try:
            file.seek(start)
            file.truncate(start)
        except (OSError, ValueError):
            pass  # what is left is the caller's to remove (a temporary file, as every caller uses)
        raise


def _write_rest(sink: _Sink, buffers: list[memoryview], file, pickle_hash: _SectionHash | None,
                write_header=None, header_last: bool = False,
                hash_buffer=_hash_buffer) -> tuple[str | None, int]:
    """Write the header and what follows the pickle stream; return (digest or None, frame length).

    ``hash_buffer(index, view)`` gives each buffer's section hash (a :class:`_BufferHash`).
    """
    lengths = [view.nbytes for view in buffers]
    offsets, frame_length = _layout(sink.nbytes, lengths)
    header = _HEADER.pack(MAGIC, sink.nbytes, len(buffers), frame_length)
    table = struct.pack(f"<{len(lengths)}Q", *lengths)
    sections = None if pickle_hash is None else [_SectionHash(header), pickle_hash, _SectionHash(table)]
    position = _HEADER.size + sink.nbytes + len(table)
    if file is not None:
        if not header_last:
            write_header(header)
        _write_all(file, table)
    for index, (view, offset) in enumerate(zip(buffers, offsets)):
        if sections is not None:
            sections.append(hash_buffer(index, view))   # its leaves hash on the pool while the file is written
        if file is not None:
            _write_all(file, bytes(offset - position))
            _write_all(file, view)
        position = offset + view.nbytes
    if file is not None:
        _write_all(file, bytes(frame_length - position))
        if header_last:
            write_header(header)
    return (None if sections is None else _root_digest(sections)), frame_length


def dump(obj: object, file, *, tokens: Tokens | None = None) -> int:
    """Write ``obj`` as one frame into the binary file ``file``; return the frame's length in bytes.

    Large buffers such as numpy arrays are handed to ``file.write`` as they
    are (a ``memoryview``), not copied, so ``file.write`` must accept any
    bytes-like object. Frames written with one ``tokens`` share a memo and refer to
    the reader's own objects (:class:`Tokens`); read them, in order, with one
    ``InPlace``: ``load(file, in_place)``.
    """
    if tokens is not None and not tokens._begun:
        tokens.begin(file)
    return _dump(obj, file, hashed=False, tokens=tokens)[1]


def dump_and_digest(obj: object, file, *, withhold: frozenset = frozenset()) -> tuple[str, int]:
    """:func:`dump`, hashing what is written; return ``(hex digest, frame length)``.

    ``withhold`` names globals the notebook's functions must not carry.
    """
    return _dump(obj, file, hashed=True, withhold=withhold)


def digest(obj: object, *, withhold: frozenset = frozenset(), memo: list | None = None) -> tuple[str, int]:
    """Return ``(hex digest, size in bytes)`` of the frame :func:`dump` would write for ``obj``, writing nothing.

    With ``memo`` (a list), the pickler's memo, ``{id: (index, object)}``, is appended to it:
    every object the frame holds once however often it is reached.
    """
    return _dump(obj, None, hashed=True, withhold=withhold, memo=memo)


class _Kept:
    """What the pickler writes, kept in memory up to ``limit`` bytes; past that only counted (``kept`` False)."""

    def __init__(self, limit: int):
        self.chunks: list[bytes] = []
        self.limit, self.size, self.kept = limit, 0, True

    def write(self, data) -> int:
        size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        self.size += size
        if self.kept and self.size > self.limit:
            self.kept, self.chunks = False, []
        if self.kept:   # a copy of anything not bytes: the pickler may hand over a view of a mutable object
            self.chunks.append(data if isinstance(data, bytes) else bytes(data))
        return size


class Frame:
    """One value pickled once: its digest and length known before anything is written, its bytes ready to write.

    :func:`prepare` makes it. The pickle stream is kept in memory (up to a limit, see ``kept``); big buffers
    (numpy arrays) are kept as views of the value's own memory, not copied. :meth:`write` writes the frame
    :func:`dump` would write, and hashes it again as it goes, so a value whose buffers changed in between
    is told apart (the digest it returns differs from ``digest``). With a fast hash (see :func:`prepare`)
    the buffers are hashed again with it alone, and only a leaf whose fast digest changed gets a sha256.
    """

    def __init__(self, sink: _Sink, kept: _Kept, buffers: list[memoryview], pickle_hash: _SectionHash,
                 digest: str, length: int, buffer_hashes: list[_BufferHash] | None = None, fast=None):
        self._sink, self._kept, self._buffers, self._pickle_hash = sink, kept, buffers, pickle_hash
        self._buffer_hashes, self._fast = buffer_hashes or [], fast
        self.digest, self.length = digest, length

    @property
    def kept(self) -> bool:
        """Whether the bytes are still here to write (False: the stream was too big to keep, or released)."""
        return self._kept.kept

    def release(self) -> None:
        """Let go of the kept bytes; :meth:`write` cannot be used after."""
        self._kept.kept, self._kept.chunks, self._buffers, self._buffer_hashes = False, [], [], []

    def write(self, file) -> tuple[str, int]:
        """Write the frame into the binary file ``file``; return ``(digest of what was written, length)``."""
        if not self.kept:
            raise ValueError("this frame's bytes were not kept: dump the value instead")

        def write_header_then_pickle(header: bytes) -> None:
            _write_all(file, header)
            for chunk in self._kept.chunks:
                _write_all(file, chunk)

        planned = self._buffer_hashes

        def hash_buffer(index: int, view: memoryview) -> _BufferHash:
            return _BufferHash(view, self._fast, planned[index].leaves if index < len(planned) else ())

        # the pickle stream's section is hashed already; the header, the table and the buffers are hashed again
        return _write_rest(self._sink, self._buffers, file, self._pickle_hash, write_header_then_pickle,
                           hash_buffer=hash_buffer)


def prepare(obj: object, *, withhold: frozenset = frozenset(), memo: list | None = None,
            keep: int = SPOOL_IN_MEMORY, known_buffers=None) -> Frame:
    """Pickle ``obj`` once: its frame's digest and length, and (a pickle stream up to ``keep`` bytes) the bytes.

    ``withhold`` and ``memo`` as for :func:`digest`. Writing the :class:`Frame` then costs no second pickling.

    ``known_buffers`` (the notebook's :mod:`rx_magic.flow.unchanged` gives one) remembers what the
    out-of-band buffers hashed to: ``known_buffers.fast`` is a function giving a 128-bit digest of a
    leaf (None: no fast hash, everything is hashed with sha256 as without it),
    ``known_buffers.recall(view)`` the :attr:`_BufferHash.leaves` of an earlier hash of the buffer
    ``view`` (``view.obj`` is what exports it; empty if none), and ``known_buffers.remember(view, leaves)``
    keeps them for the next time. Only leaves whose fast digest changed are hashed with sha256.
    """
    pickle_hash = _SectionHash()
    kept = _Kept(keep)
    sink = _Sink(kept, pickle_hash)
    buffers = _pickle(obj, sink, withhold=withhold, memo=memo)
    fast = None if known_buffers is None else known_buffers.fast
    hashes: list[_BufferHash] = []

    def hash_buffer(index: int, view: memoryview) -> _BufferHash:
        hashes.append(_BufferHash(view, fast, known_buffers.recall(view) if fast is not None else ()))
        return hashes[-1]

    digest, length = _write_rest(sink, buffers, None, pickle_hash, hash_buffer=hash_buffer)
    if fast is not None:
        for view, hashed in zip(buffers, hashes):
            known_buffers.remember(view, hashed.leaves)
    if not kept.kept:
        buffers, hashes = [], []
    return Frame(sink, kept, buffers, pickle_hash, digest, length, hashes, fast)


def frame_sections(data) -> list[bytes]:
    """Each section's part of the digest of one frame's bytes, in order: header, pickle stream, buffer
    lengths, then each buffer; each is ``u64 length || sha256(leaf 0) || sha256(leaf 1) || ...``.
    :func:`digest_of_sections` of them is the frame's digest; :func:`digest_since_load` reuses a buffer's."""
    view = memoryview(data).cast("B")
    magic, pickle_length, count, frame_length = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise pickle.UnpicklingError("not an rx_magic wire frame")
    table_start = _HEADER.size + pickle_length
    table = view[table_start:table_start + _LENGTH.size * count]
    lengths = struct.unpack(f"<{count}Q", table)
    offsets, expected_length = _layout(pickle_length, lengths)
    if expected_length != frame_length or len(view) < frame_length:
        raise pickle.UnpicklingError("truncated or corrupt rx_magic wire frame")
    sections = [view[:_HEADER.size], view[_HEADER.size:table_start], table]
    sections += [view[offset:offset + length] for offset, length in zip(offsets, lengths)]
    hashes = [_SectionHash(section) for section in sections]     # all leaves on the pool before waiting
    return [section.finish() for section in hashes]


def digest_of_sections(sections: list[bytes]) -> str:
    """The digest of a frame from its sections' parts (:func:`frame_sections`)."""
    return _new_hash(DIGEST_DOMAIN + b"".join(sections)).hexdigest()


def frame_digest(data) -> str:
    """The digest of one frame's bytes (as :func:`dump` wrote them): what a blob's name says of its file."""
    return digest_of_sections(frame_sections(data))


def dumps(obj: object) -> bytes:
    """Return the bytes :func:`dump` would write for ``obj``."""
    buffer = io.BytesIO()
    dump(obj, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- loading

def _read_exact(file, size: int):
    """``size`` bytes from ``file``: bytes if one read gave them all, else a bytearray read into in place.

    A large ``size`` is read straight into a buffer made up front, so the data is held once,
    not once in the pieces ``read`` gathers and again in what it joins them into.
    """
    if size <= _COPY_SIZE:
        data = file.read(size)
        if len(data) == size:
            return data
        done = len(data)
    else:
        data, done = b"", 0
    buffer = bytearray(size)
    buffer[:done] = data
    _read_into(file, memoryview(buffer)[done:])
    return buffer


def _read_into(file, view: memoryview) -> None:
    done = 0
    readinto = getattr(file, "readinto", None)
    while done < len(view):
        if readinto is not None:
            count = readinto(view[done:])
        else:
            chunk = file.read(min(len(view) - done, 16 * _COPY_SIZE))
            count = len(chunk)
            view[done:done + count] = chunk
        if not count:
            raise pickle.UnpicklingError(f"truncated rx_magic wire frame: the file ended {len(view) - done} bytes "
                                         "before the frame did")
        done += count


class _PickleSection:
    """The next ``size`` bytes of ``file`` as a file of their own, for an unpickler to read from directly.

    Unpickling from the file, not from the stream read into memory first, holds a large
    in-band value (a long ``bytes``) once: the unpickler reads it into the new object.
    """

    def __init__(self, file, size: int):
        self._file = file
        self.left = size

    def read(self, size: int = -1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = _read_exact(self._file, size)    # a bytearray when large: the unpickler takes any buffer
        self.left -= size
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")[:self.left]
        _read_into(self._file, view)
        self.left -= len(view)
        return len(view)

    def readline(self) -> bytes:  # the unpickler wants one; protocol 5 streams never call it
        line = bytearray()
        while self.left and not line.endswith(b"\n"):
            line += self.read(1)
        return bytes(line)


class _ResolvingUnpickler(pickle.Unpickler):
    # a method, not an instance attribute: Python 3.13 made persistent_load read-only on instances
    resolve = None

    def persistent_load(self, pid):
        return self.resolve(pid)


class _Switch:
    """What a long-lived unpickler reads, and the buffers it takes: each frame's, in turn."""

    source = None
    buffers = iter(())

    def read(self, size: int = -1):
        return self.source.read(size)

    def readinto(self, buffer) -> int:
        return self.source.readinto(buffer)

    def readline(self) -> bytes:
        return self.source.readline()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.buffers)


def _unpickle(source, in_place: InPlace | None, buffers=None) -> object:
    if in_place is not None:
        return in_place._load(source, buffers)
    return pickle.Unpickler(source, buffers=buffers).load()


def _unpickle_in_place(file, pickle_length: int, start: int | None, frame_length: int,
                       in_place: InPlace | None = None) -> object:
    """Unpickle a frame without buffers from ``file`` as it is read; leave ``file`` after the frame."""
    section = _PickleSection(file, pickle_length)
    try:
        value = _unpickle(section, in_place)
        if section.left:
            raise pickle.UnpicklingError("corrupt rx_magic wire frame: its pickle stream ends before its stated length")
    except Exception:
        _skip_to_frame_end(file, start, frame_length, section.left + frame_length - _HEADER.size - pickle_length)
        raise
    _read_exact(file, frame_length - _HEADER.size - pickle_length)
    return value


def _skip_to_frame_end(file, start: int | None, frame_length: int, left: int) -> None:
    """After a value that failed to load, move on to the next frame, as a value that loaded does."""
    try:
        if start is not None:
            file.seek(start + frame_length)
            return
        while left:
            piece = file.read(min(left, 16 * _COPY_SIZE))
            if not piece:
                return
            left -= len(piece)
    except Exception:
        pass    # the error being raised says more than this one would


def _regular_file_fd(file) -> int | None:
    try:
        fd = file.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def _tell(file) -> int | None:
    try:
        return file.tell()
    except (AttributeError, OSError, ValueError):
        return None


def load(file, in_place: InPlace | None = None, mapped: list | None = None) -> object:
    """Read the next frame written by :func:`dump` from ``file``, leaving ``file`` just after it.

    Raises ``EOFError`` when no frame is left. From a regular file the large
    buffers are memory-mapped copy-on-write; from any other file object they
    are read into memory. Needs dill importable if the value used it.
    ``in_place`` resolves a frame written with ``tokens`` (see :class:`InPlace`).
    ``mapped`` (a list) gets the memory-mapped buffers appended, in the frame's order (see
    :func:`digest_since_load`); nothing when they were read instead.
    """
    fd = _regular_file_fd(file)
    start = _tell(file)
    header = file.read(_HEADER.size)
    if not header:
        raise EOFError("no more rx_magic wire frames")
    while len(header) < _HEADER.size and (more := file.read(_HEADER.size - len(header))):
        header += more
    if not header.startswith(MAGIC):
        if header[:1] == b"\x80" and start is not None:  # a plain pickle, as rx_magic wrote before frames
            file.seek(start)
            return pickle.load(file)
        raise pickle.UnpicklingError("not an rx_magic wire frame (the file was not written by wire.dump)")
    if len(header) < _HEADER.size:
        raise pickle.UnpicklingError("truncated rx_magic wire frame: the file ends inside its header")
    _, pickle_length, count, frame_length = _HEADER.unpack(header)
    if not count:
        if _layout(pickle_length, ())[1] != frame_length:
            raise pickle.UnpicklingError("corrupt rx_magic wire frame: its lengths do not add up")
        return _unpickle_in_place(file, pickle_length, start, frame_length, in_place)
    pickled = _read_exact(file, pickle_length)
    lengths = struct.unpack(f"<{count}Q", _read_exact(file, _LENGTH.size * count))
    offsets, expected_length = _layout(pickle_length, lengths)
    if expected_length != frame_length:
        raise pickle.UnpicklingError("corrupt rx_magic wire frame: its lengths do not add up")
    position = _HEADER.size + pickle_length + _LENGTH.size * count
    if fd is not None and start is not None and count:
        buffers = _map_buffers(fd, start, offsets, lengths, frame_length)
        file.seek(start + frame_length)
        if mapped is not None:
            mapped.extend(buffers)
    else:
        buffers = []
        for offset, length in zip(offsets, lengths):
            _read_exact(file, offset - position)
            buffer = bytearray(length)
            _read_into(file, memoryview(buffer))
            buffers.append(buffer)
            position = offset + length
        _read_exact(file, frame_length - position)
    return _unpickle(io.BytesIO(pickled), in_place, buffers)


def _map_buffers(fd: int, start: int, offsets: list[int], lengths, frame_length: int) -> list[memoryview]:
    """Views of the frame's buffers in one private (copy-on-write) mapping of the file."""
    end = start + frame_length
    size = os.fstat(fd).st_size
    if size < end:
        raise pickle.UnpicklingError(f"truncated rx_magic wire frame: it ends at byte {end}, the file at {size}")
    base = (start + offsets[0]) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
    mapped = memoryview(mmap.mmap(fd, end - base, access=mmap.ACCESS_COPY, offset=base))
    return [mapped[start + offset - base:start + offset - base + length] for offset, length in zip(offsets, lengths)]


def load_path(path) -> object:
    """Read the first frame of the file at ``path``, memory-mapping its large buffers."""
    with open(path, "rb") as file:
        return load(file)


def loads(data) -> object:
    """Read one value from bytes written by :func:`dumps` (its buffers are copied)."""
    return load(io.BytesIO(data))

"""The on-disk pickle format, shared by the notebook side and the target.

A blob is one protocol-5 pickle written by the C pickler. Only the objects the
C pickler cannot carry by reference -- functions and classes defined in the
notebook (``__main__``) or otherwise not importable by qualified name,
lambdas, closures -- are handed to dill, and travel as
``dill.loads(<bytes>)``. Instances of such classes stay on the fast path: the
C pickler reduces them as usual and only their class goes through dill. So a
blob loads with plain ``pickle.load`` wherever dill is importable, and a large
numpy array streams into the file without being copied.

The target's runner imports this file as a top-level module (``import wire``),
so it imports only the standard library, and dill lazily.
"""

from __future__ import annotations

import copyreg
import hashlib
import importlib
import io
import pickle
import sys
import types
import warnings

PROTOCOL = 5

# sha256 over 500 MiB on the build machine (AMD EPYC with SHA-NI, CPython 3.11):
# sha1 0.34 s, sha256 0.37 s, sha512 0.78 s, blake2b 0.87 s, md5 0.88 s,
# blake2s 1.27 s. sha256 is within 10% of sha1 without sha1's known collisions;
# blake2b only wins on CPUs without SHA extensions.
HASH_NAME = "sha256"

_FunctionType = types.FunctionType
_ModuleType = types.ModuleType


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


def _reduce_with_dill(obj: object) -> tuple:
    import dill

    if isinstance(obj, type):
        # Pickling an instance caches __slotnames__ in its class's __dict__;
        # fill that cache now, or the class's bytes (and digest) change later.
        for klass in obj.__mro__:
            if not _importable(klass):
                copyreg._slotnames(klass)
    with warnings.catch_warnings():
        # dill warns, then writes a by-name reference the target cannot resolve
        # (an Enum defined in the notebook); fail here instead.
        warnings.simplefilter("error", dill.PicklingWarning)
        return (dill.loads, (dill.dumps(obj, protocol=PROTOCOL, recurse=True),))


class _Pickler(pickle.Pickler):
    # The C pickler skips this hook for None, bools and exact ints, floats, str,
    # bytes, dicts, lists, tuples and sets, and for anything already memoized,
    # so it only sees the rest: keep the common "no" to a few type checks.
    def reducer_override(self, obj):
        kind = type(obj)
        if kind is _FunctionType or isinstance(obj, type):
            if _importable(obj):
                return NotImplemented
            return _reduce_with_dill(obj)
        if kind is _ModuleType and obj.__name__ != "__main__" and sys.modules.get(obj.__name__) is obj:
            return (importlib.import_module, (obj.__name__,))
        return NotImplemented


def dump(obj: object, file) -> None:
    """Pickle ``obj`` into the binary file object ``file`` (protocol 5; dill only where needed).

    Large buffers such as numpy arrays are handed to ``file.write`` as they
    are (a ``PickleBuffer``), not copied, so ``file.write`` must accept any
    bytes-like object.
    """
    _Pickler(file, protocol=PROTOCOL).dump(obj)


def load(file) -> object:
    """Read one value written by :func:`dump`; needs dill importable if the value used it."""
    return pickle.load(file)


def dumps(obj: object) -> bytes:
    """Return the bytes :func:`dump` would write for ``obj``."""
    buffer = io.BytesIO()
    dump(obj, buffer)
    return buffer.getvalue()


def loads(data: bytes) -> object:
    """Read one value from bytes written by :func:`dumps`."""
    return pickle.loads(data)


class HashingWriter:
    """A binary sink that hashes and counts what is written, and optionally passes it on to ``file``."""

    def __init__(self, file=None):
        self._hash = hashlib.new(HASH_NAME)
        self._file = file
        self.nbytes = 0

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.nbytes += view.nbytes
        if self._file is not None:
            self._file.write(view)
        return view.nbytes

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def digest(obj: object) -> tuple[str, int]:
    """Return ``(hex digest, size in bytes)`` of what :func:`dump` would write for ``obj``, writing nothing."""
    sink = HashingWriter()
    dump(obj, sink)
    return sink.hexdigest(), sink.nbytes

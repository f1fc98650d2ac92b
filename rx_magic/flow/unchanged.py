"""Big values pushed before and unchanged since: their blob's digest, known without pickling them again.

A cell run again mostly sends what it sent before. Pickling a dict of a million tuples only to find its
digest unchanged costs seconds. So for a big ``dict``, ``list`` or ``tuple`` whose contents are immutable all
the way down, the notebook remembers the very objects it held when it was pickled (``wire.snapshot``, a
copy of its references) and the digest and length of that pickle; when it is pushed again and is the same
object holding the same objects in the same order, compared by identity, and they are all immutable
(``wire.holds_same`` says why that is enough; ``wire.immutable_contents`` looks, once, when it is pushed
again, so the first push costs only the copy of references), the digest is reused and nothing is pickled. Anything else -- a mutable item anywhere inside, a subclass, an
object of another type, a small value -- is not remembered and is pickled every time, as before.

A remembered value is kept referenced (so its id is not reused while it is remembered) and let go as soon
as nothing else refers to it (checked at each plan); at most ``MAX_ENTRIES`` are kept.

Big buffers (a numpy array's memory, anything the wire format sends out of band) cost nothing to pickle
but everything to hash: sha256 reads 500 MB in about 0.3 s. :data:`buffers` remembers, for each buffer
hashed before, keyed by the identity of what owns its memory, the sha256 and the xxh3_128 digest of each
4 MiB leaf (``wire._BufferHash``). Pushed again, each leaf gets only its xxh3_128 digest (memory speed,
about 20 ms for 500 MB), and keeps its sha256 digest if that is unchanged: a buffer changed in place in
any way (through the array, a view, a ``memoryview``, ``np.copyto``) has other bytes, so other xxh3
digests, and those leaves are hashed with sha256 again. Whatever the identity says, what decides is the
content: a wrong match (an id reused after the owner was freed) costs a sha256, never a wrong digest.
Without the ``xxhash`` package every buffer is hashed with sha256 each time, as before.
"""

from __future__ import annotations

import sys
import threading
import weakref
from dataclasses import dataclass

from ..runtime import wire

try:
    from xxhash import xxh3_128_digest as fast_digest
except ImportError:         # still correct without it: buffers are hashed in full each time
    fast_digest = None

MAX_ENTRIES = 64
#: A ``str``/``bytes`` this long inside a value is sent once when two values hold it (``blobs._shares_identity``).
LARGE = 64 * 2**10


@dataclass
class Known:
    """A remembered value: the objects it held, the digest and length of its frame, and what it may share."""

    value: object
    withhold: frozenset
    items: tuple[list, ...]             # a dict's keys and values, or a list's or tuple's items
    digest: str = ""
    size: int = 0
    #: the str/bytes inside it long enough to be sent once when shared; None until its contents are
    #: found immutable all the way down (looked at when it is pushed again, not when first pickled)
    long_texts: list | None = None

    def memo(self) -> dict:
        """The part of a pickler's memo that ``blobs._sharing_groups`` looks at: ``{id: (None, object)}``."""
        return {id(obj): (None, obj) for obj in (self.value, *self.long_texts)}


_known: dict[int, Known] = {}
_lock = threading.Lock()


def study(value: object, withhold: frozenset = frozenset()) -> Known | None:
    """A snapshot of ``value`` to :func:`remember` once it is pickled, or None when it cannot be remembered.

    Taken *before* the value is pickled: the digest then belongs to exactly these objects.
    """
    items = wire.snapshot(value)
    return None if items is None else Known(value, withhold, items)


def immutable(known: Known) -> bool:
    """Whether what :func:`study` saw is immutable all the way down (looked at once, then known)."""
    if known.long_texts is None:
        known.long_texts = wire.immutable_contents(known.items, LARGE)
    return known.long_texts is not None


def remember(known: Known, digest: str, size: int) -> None:
    """Remember the digest and length of the frame pickled from what :func:`study` saw."""
    known.digest, known.size = digest, size
    with _lock:
        _known.pop(id(known.value), None)
        _known[id(known.value)] = known
        while len(_known) > MAX_ENTRIES:
            del _known[next(iter(_known))]


def recall(value: object, withhold: frozenset = frozenset()) -> Known | None:
    """What was remembered of ``value``, if it still holds the very same objects and they are all immutable;
    else None (and it is forgotten: pickle it)."""
    with _lock:
        known = _known.get(id(value))
    if known is None or known.value is not value or known.withhold != withhold:
        return None
    if wire.holds_same(value, known.items) and immutable(known):    # the same objects, none of them mutable
        return known
    with _lock:
        if _known.get(id(value)) is known:
            del _known[id(value)]
    return None


def forget_unused() -> None:
    """Let go of the values nothing but this module refers to any more (deleted or rebound in the notebook)."""
    with _lock:
        for key, known in list(_known.items()):
            # its references: the entry's, and getrefcount's own argument
            if sys.getrefcount(known.value) <= 2:
                del _known[key]


def forget_all() -> None:
    with _lock:
        _known.clear()
    buffers.forget_all()


#: Buffers remembered at most (the least recently pushed is forgotten first); each costs 48 bytes per 4 MiB.
MAX_BUFFERS = 256


class KnownBuffers:
    """What each big buffer hashed to when it was last pushed: ``wire.prepare``'s ``known_buffers``.

    An entry is keyed by the identity of the object owning the buffer's memory (a numpy array's ``base``,
    or the array itself when it owns it), the type of that object, the buffer's address and its length;
    it holds a weak reference to the owner where the owner allows one, so that an entry goes when the
    owner does and an id reused by another object never finds it. The entry holds ``(sha256, xxh3_128)``
    of each leaf, nothing of the buffer itself.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[weakref.ref | None, list]] = {}
        # reentrant: a collection while it is held may free an owner, whose weak reference's callback takes it
        self._lock = threading.RLock()

    @property
    def fast(self):
        """The fast digest of a leaf: xxh3_128, 128 bits, so that a changed leaf keeps its digest by
        accident with odds of about 2**-128 (xxh3 is built to spread changes, not to resist a collision made
        on purpose: both the old and the new bytes are the notebook's own); None without ``xxhash``."""
        return fast_digest

    def recall(self, view: memoryview) -> list:
        """The leaves remembered for the buffer ``view`` (empty if none)."""
        key, owner = _identity(view)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or (entry[0] is not None and entry[0]() is not owner):
            return []
        return entry[1]

    def remember(self, view: memoryview, leaves: list) -> None:
        key, owner = _identity(view)
        try:
            ref = weakref.ref(owner, lambda gone, key=key: self._drop(key, gone))
        except TypeError:       # no weak references to it (bytes): kept by id, type, address and length
            ref = None
        entry = (ref, list(leaves))
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > MAX_BUFFERS:
                del self._entries[next(iter(self._entries))]

    def _drop(self, key: tuple, gone: weakref.ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is gone:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()


def _identity(view: memoryview) -> tuple[tuple, object]:
    """``(key, owner)`` of the buffer ``view``: what owns its memory, and where in it the buffer lies."""
    exporter = view.obj
    owner, address = exporter, 0
    kind = type(exporter)
    if kind.__name__ == "ndarray" and kind.__module__ == "numpy":
        # a Fortran-ordered array is exported through a transposed view made for the occasion: its base
        # (numpy keeps it the object that owns the memory) lasts
        address = exporter.__array_interface__["data"][0]
        if exporter.base is not None:
            owner = exporter.base
    return (id(owner), type(owner), address, view.nbytes), owner


buffers = KnownBuffers()

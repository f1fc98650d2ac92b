"""Big values pushed before and unchanged since: their blob's digest, known without pickling them again.

A cell run again mostly sends what it sent before. Pickling a dict of a million tuples only to find its
digest unchanged costs seconds. So for a big ``dict``, ``list`` or ``tuple`` whose contents are immutable all
the way down, the notebook remembers the very objects it held when it was pickled (``wire.snapshot``, a
copy of its references) and the digest and length of that pickle; when it is pushed again and is the same
object holding the same objects in the same order, compared by identity, and they are all immutable
(``wire.holds_same`` says why that is enough; ``wire.immutable_contents`` looks, once, when it is pushed
again, so the first push costs only the copy of references), the digest is reused and nothing is pickled. Anything else -- a mutable item anywhere inside, a subclass, an
object of another type, a small value -- is not remembered and is pickled every time, as before. numpy
arrays are not remembered either: telling an unchanged array from a changed one needs reading all of it,
which is what hashing it does.

A remembered value is kept referenced (so its id is not reused while it is remembered) and let go as soon
as nothing else refers to it (checked at each plan); at most ``MAX_ENTRIES`` are kept.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

from ..runtime import wire

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

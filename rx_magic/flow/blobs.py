"""Pushed values as content-addressed blobs, and the report of their sizes.

Each value a cell reads is serialized by :mod:`rx_magic.wire` into its own
file, ``{workdir}/.rx/blobs/{digest}.dill``, named by the digest of its bytes
(``wire.frame_digest``), which the runner memory-maps. Values that share an
object (two names for one list, a figure and its axes, a function and a list
it reads) travel together, as one ``{name: value}`` blob, so they arrive still
sharing it; a value that shares nothing keeps a blob of its own, sent once.
:func:`plan_blobs` pickles and hashes every value once without writing anything, so an
unpicklable value or an oversized payload is reported before anything is
sent, and keeps the pickles (``wire.Frame``, within ``KEEP_PICKLED``);
:func:`write_blobs` then writes from them only the blobs the target lacks, so an
unchanged value is never sent twice, and a value is not pickled twice to be sent.
A big container of immutable contents pushed before and holding the very same
objects is not pickled at all, and a big buffer pushed before is checked with a
fast hash, not hashed again with sha256, when unchanged (:mod:`.unchanged`).
"""

from __future__ import annotations

import enum
import pickle
import re
import sys
import types
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from ..errors import CaptureError, PayloadTooLarge, UnpicklableError
from ..model.resources import format_size_human
from ..runtime import wire
from ..runtime.layout import blob_name
from . import unchanged

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SHOWN_IN_ERRORS = 3
_DIGEST_PREFIX = 12


@dataclass(frozen=True)
class BlobRef:
    """One pushed value, planned: which blob holds it and how big that blob is."""

    name: str
    digest: str
    size: int
    type_name: str
    together: tuple[str, ...] = ()      # the names whose values share this blob, as one {name: value}
    #: the value pickled when it was planned, ready to write (``wire.Frame``); None when it was not pickled
    frame: object = field(default=None, compare=False, repr=False)


class BlobStore(Protocol):
    """Where blobs live on the target: file names are relative to ``.rx/blobs/``."""

    def exists(self, name: str) -> bool:
        """Whether a complete blob called ``name`` is already stored."""

    def open_atomic(self, name: str) -> AbstractContextManager[BinaryIO]:
        """A writable binary file that appears as ``name`` (mode 0600) only if the block exits without error.

        Its ``write`` receives bytes-like objects (often a ``memoryview`` of a
        large array), not only ``bytes``.
        """


def blob_file_name(digest: str) -> str:
    """The file name of the blob with this digest: ``{digest}.dill``."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a blob digest: {digest!r} (expected 64 lowercase hex digits)")
    return blob_name(digest)


def type_name(value: object) -> str:
    """A short name for ``value``'s type as people write it: "numpy.ndarray", "dict", "Point"."""
    kind = type(value)
    module, qualname = kind.__module__, kind.__qualname__
    if module in ("builtins", "__main__"):
        return qualname
    package = module.partition(".")[0]
    if getattr(sys.modules.get(package), qualname, None) is kind:
        return f"{package}.{qualname}"
    return f"{module}.{qualname}"


def plan_blobs(values: dict[str, object], limit: int | None = 2 * 2**30,
               withhold: frozenset = frozenset(), lines: dict[str, int] | None = None) -> list[BlobRef]:
    """Hash every value (writing nothing) and return one ``BlobRef`` per name, in order.

    Values that share objects are planned as one blob (``BlobRef.together``).
    Raises ``UnpicklableError`` naming every value that cannot be serialized,
    and ``PayloadTooLarge`` when the distinct blobs add up to more than
    ``limit`` bytes (``None``: no limit). ``withhold`` names globals that the
    notebook's functions must not carry; ``lines`` gives the cell line that
    reads each name, for the message.
    """
    refs: list[BlobRef] = []
    failures: list[str] = []
    memos: dict[str, dict] = {}
    groupable = sum(1 for name in values if name.isidentifier()) > 1
    unchanged.forget_unused()
    kept = 0
    for name, value in values.items():
        memo: list = []
        frame = None
        known = unchanged.recall(value, withhold)     # pushed before, holding the very same objects
        try:
            if known is None:
                seen = unchanged.study(value, withhold)
                # what it may share with the other values: read from the pickler's memo (a copy of it costs more
                # than the pickling, for a million tuples), unless its contents are immutable all the way down
                if groupable and seen is not None and unchanged.immutable(seen):
                    known = seen
                frame = wire.prepare(value, withhold=withhold, memo=memo if groupable and known is None else None,
                                     keep=min(KEEP_PICKLED, max(0, KEEP_PICKLED - kept)),
                                     known_buffers=unchanged.buffers)
                if seen is not None:
                    unchanged.remember(seen, frame.digest, frame.length)
        except Exception as exc:
            read = f" read on line {lines[name]} of the cell" if lines and name in lines else ""
            failures.append(f"{name!r} ({type_name(value)}){read}: {_reason(exc)}")
            continue
        if groupable and name.isidentifier():
            memos[name] = known.memo() if known is not None else memo[0]
        if frame is not None and frame.kept:
            kept += frame.length
        digest, size = (frame.digest, frame.length) if frame is not None else (known.digest, known.size)
        refs.append(BlobRef(name, digest, size, type_name(value), frame=frame))
    if len(failures) == 1:
        raise UnpicklableError(
            f"cannot send {failures[0]} — recreate it inside the cell instead")
    if failures:
        raise UnpicklableError(
            f"cannot send {len(failures)} values: {'; '.join(failures)}"
            " — recreate them inside the cell instead")
    for group in _sharing_groups(memos):
        for ref in refs:
            if ref.name in group and ref.frame is not None:
                ref.frame.release()     # it travels inside the group's blob
        payload = {name: values[name] for name in group}
        frame = wire.prepare(payload, withhold=withhold, keep=KEEP_PICKLED, known_buffers=unchanged.buffers)
        refs = [BlobRef(ref.name, frame.digest, frame.length, ref.type_name, group, frame) if ref.name in group
                else ref for ref in refs]
    total = total_size(refs)
    if limit is not None and total > limit:
        largest = _largest_first(refs)
        shown = ", ".join(
            f"{ref.name!r} {format_size_human(ref.size)} ({ref.type_name})" for ref in largest[:_SHOWN_IN_ERRORS])
        if len(largest) > _SHOWN_IN_ERRORS:
            shown += ", ..."
        raise PayloadTooLarge(
            f"the cell would send {format_size_human(total)}, over this target's limit of "
            f"{format_size_human(limit)}; largest: {shown} — leave big values out with --push, "
            "load them on the target, or raise max_payload in the target's configuration")
    return refs


#: The pickle streams planned values keep in memory in all, to be written without pickling them again;
#: past that a value is pickled again when its blob is written (big buffers such as arrays are never copied).
KEEP_PICKLED = 256 * 2**20


_NEVER_SHARED = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range, slice, type,
                 types.ModuleType, types.BuiltinFunctionType, types.CodeType, enum.Enum, pickle.PickleBuffer)


_LARGE = 64 * 2**10


def _shares_identity(obj: object) -> bool:
    """Whether two values holding ``obj`` must arrive holding one object: it is mutable, a notebook function,
    or big enough not to be sent twice."""
    kind = type(obj)
    if kind in (list, dict, set, bytearray):
        return True
    if kind in (str, bytes) and len(obj) >= _LARGE:
        return True     # in one blob it is sent once (a function carries the global that is pushed too)
    if isinstance(obj, _NEVER_SHARED):
        return False
    if kind is types.FunctionType:
        return obj.__module__ == "__main__"
    if kind.__name__ == "ndarray" and kind.__module__ == "numpy":
        return True
    return hasattr(obj, "__dict__") or bool(getattr(kind, "__slots__", None))


def _sharing_groups(memos: dict[str, dict]) -> list[tuple[str, ...]]:
    """Names whose values reach a common object, as groups of two or more, in the values' order."""
    owner: dict[int, str] = {}
    parent = {name: name for name in memos}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name, memo in memos.items():
        for key, (_, obj) in memo.items():
            first = owner.setdefault(key, name)
            if first != name and root(first) != root(name) and _shares_identity(obj):
                parent[root(name)] = root(first)
    groups: dict[str, list[str]] = {}
    for name in memos:
        groups.setdefault(root(name), []).append(name)
    return [tuple(group) for group in groups.values() if len(group) > 1]


def write_blobs(values: dict[str, object], refs: list[BlobRef], store: BlobStore,
                withhold: frozenset = frozenset()) -> tuple[int, int]:
    """Write each planned blob the store lacks; return ``(blobs written, bytes written)``.

    Each blob is hashed again as it is written; if its bytes no longer match
    the plan (the value changed meanwhile, or does not pickle the same way
    twice), nothing is stored under its name and ``CaptureError`` is raised.
    """
    try:
        return _write_missing(values, refs, store, withhold)
    finally:
        for ref in refs:        # what was pickled when planned is not needed any more
            if ref.frame is not None:
                ref.frame.release()


def _write_missing(values: dict[str, object], refs: list[BlobRef], store: BlobStore,
                   withhold: frozenset) -> tuple[int, int]:
    written = written_bytes = 0
    seen: set[str] = set()
    for ref in refs:
        if ref.digest in seen:
            continue
        seen.add(ref.digest)
        name = blob_file_name(ref.digest)
        if store.exists(name):
            continue
        payload = {member: values[member] for member in ref.together} if ref.together else values[ref.name]
        with store.open_atomic(name) as file:
            if ref.frame is not None and ref.frame.kept:     # pickled once, when planned
                digest, size = ref.frame.write(file)
            else:
                digest, size = wire.dump_and_digest(payload, file, withhold=withhold)
            if digest != ref.digest:
                raise CaptureError(
                    f"cannot send {ref.name!r} ({ref.type_name}): it serialized differently when written than "
                    "when it was hashed (changed meanwhile, or does not pickle the same way twice) — "
                    "run the cell again, or leave it out with --push/--pull")
        written += 1
        written_bytes += size
    return written, written_bytes


def total_size(refs: list[BlobRef]) -> int:
    """Bytes to send for ``refs``, counting a blob shared by several names once."""
    return sum({ref.digest: ref.size for ref in refs}.values())


def size_report(refs: list[BlobRef]) -> str:
    """An aligned table of the pushed values, largest first, with a total line."""
    rows = [("name", "type", "size", "digest")]
    rows += [(ref.name, ref.type_name, format_size_human(ref.size), ref.digest[:_DIGEST_PREFIX])
             for ref in _largest_first(refs)]
    count = len(refs)
    rows.append(("total", f"{count} value{'' if count == 1 else 's'}", format_size_human(total_size(refs)), ""))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _largest_first(refs: list[BlobRef]) -> list[BlobRef]:
    return sorted(refs, key=lambda ref: (-ref.size, ref.name))


def _reason(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].rstrip(".") if lines else ""
    if isinstance(exc, (TypeError, pickle.PicklingError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""A job's printed output (``stdout.log``, ``stderr.log``), read in bounded pieces: its head, its tail, one line between.

A job may print gigabytes; the notebook keeps at most ``OUTPUT_HEAD`` bytes of
each stream's start and ``OUTPUT_TAIL`` of its end, and says in one line how
much was cut and where the whole log is. Reads are at most ``CHUNK`` bytes, so
the kernel's memory stays flat however much the job prints; the middle is
never read.
"""

from __future__ import annotations

import codecs
from typing import TextIO

from ..model.resources import format_size_human
from ..transport import Transport

OUTPUT_HEAD = 2 * 2**20     # bytes of each stream's start kept in the notebook
OUTPUT_TAIL = 2 * 2**20     # and of its end
CHUNK = 2**20               # the most read at once


def cut_line(cut: int, stream: str, path: str, where: str) -> str:
    """The one line that stands for what was cut from a log."""
    return f"rx_magic: ... {format_size_human(cut)} of {stream} cut here; the whole log is {path} on {where}\n"


def read_log(transport: Transport, path: str, stream: str, where: str, *,
             head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL) -> str:
    """The log's text: all of it when it is at most ``head + tail`` bytes, else its head, the cut line, its tail.

    ``FileNotFoundError`` when there is no log (yet).
    """
    size = transport.file_size(path)
    if size <= head + tail:
        return transport.read_bytes(path, 0, size).decode(errors="replace")
    start = transport.read_bytes(path, 0, head)
    end = transport.read_bytes(path, size - tail, tail)
    start, end, cut = _at_line_ends(start, end, size - len(start) - len(end))
    text = start.decode(errors="replace")
    return (text + ("" if not text or text.endswith("\n") else "\n") + cut_line(cut, stream, path, where)
            + end.decode(errors="replace"))


def _at_line_ends(start: bytes, end: bytes, cut: int) -> tuple[bytes, bytes, int]:
    """Cut at line ends where a line ends near the cut (partial lines are cut too), so no line is shown broken."""
    newline = start.rfind(b"\n")
    if newline >= len(start) - 4096:
        cut += len(start) - newline - 1
        start = start[:newline + 1]
    newline = end.find(b"\n")
    if 0 <= newline < 4096:
        cut += newline + 1
        end = end[newline + 1:]
    return start, end, cut


class LogFollower:
    """Prints one stream of a running job as it arrives: its first ``head`` bytes live, then, once it has
    ended, the cut line and its last ``tail`` bytes. Reads at most ``CHUNK`` bytes at a time."""

    def __init__(self, transport_of, path: str, stream: str, out: TextIO, where: str, *,
                 head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL):
        self.transport_of = transport_of    # called each time: a target reconnects with a new transport
        self.path, self.stream, self.out, self.where = path, stream, out, where
        self.head, self.tail = head, tail
        self.offset = 0                     # bytes read from the start, and shown
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.ended_line = True

    def pump(self, final: bool = False) -> None:
        """Show what arrived since the last call; with ``final`` (the job has ended) the rest, bounded."""
        transport = self.transport_of()
        try:
            while self.offset < self.head:
                data = transport.read_bytes(self.path, self.offset, min(CHUNK, self.head - self.offset))
                if not data:
                    break
                self._show(data)
                self.offset += len(data)
            if final:
                self._finish(transport)
        except FileNotFoundError:
            return

    def _finish(self, transport: Transport) -> None:
        size = transport.file_size(self.path)
        if size <= self.offset:
            self._write(self.decoder.decode(b"", final=True))
            return
        start = max(self.offset, size - self.tail)
        if start > self.offset:
            first = transport.read_bytes(self.path, start, min(CHUNK, size - start))
            newline = first.find(b"\n")
            skip = newline + 1 if 0 <= newline < 4096 else 0
            self._write(self.decoder.decode(b"", final=True))
            if not self.ended_line:
                self._write("\n")
            self.decoder.reset()
            self._write(cut_line(start + skip - self.offset, self.stream, self.path, self.where))
            self._show(first[skip:])
            start += len(first)
        while start < size:
            data = transport.read_bytes(self.path, start, min(CHUNK, size - start))
            if not data:
                break
            self._show(data)
            start += len(data)
        self._write(self.decoder.decode(b"", final=True))

    def _show(self, data: bytes) -> None:
        self._write(self.decoder.decode(data))

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.ended_line = text.endswith("\n")

"""A job's end noticed over SSH at once: a session on the submit host that says when a process ends.

``Transport.end_notice`` over SSH opens a session of its own (never the command
agent's, and never holding the transport's lock while it waits) that runs
``command_agent.END_WATCH_SCRIPT``: bash there looks at the process every 20 ms
(builtins only: no Python, no process per look) and prints "ended" once it is
gone. A thread here turns that line into a readable pipe, the same kind of file
descriptor as the pidfd a local job gives, so a waiting cell learns of the end
half a round trip after it, plus at most 20 ms.

The watch stops, and its session closes (the remote program stops when its stdin
does), when the job ends, when the caller closes its end of the pipe, or when the
transport closes (``close_all``), so nothing outlives the kernel.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Callable

#: a watch's session, opened in the watch's own thread: (a descriptor readable when it says something, how to
#: receive what it said (b"" at its end), how to close it)
Source = tuple[int, Callable[[], bytes], Callable[[], None]]


#: what ``fd`` reads once the process ended; a watch that stopped for another reason (the link dropped, the
#: transport closed) leaves it at end of file, which a waiting cell also takes as a cue to look at once
ENDED = b"e"


class EndWatch:
    """One watched process: ``fd`` is readable once the remote session printed "ended", or stopped."""

    def __init__(self, open_source: Callable[[], Source], on_stop: Callable[[EndWatch], None] = lambda watch: None):
        self._open_source, self._on_stop = open_source, on_stop
        self._close_source: Callable[[], None] = lambda: None
        self.fd, self._write = os.pipe()
        self._stop_read, self._stop_write = os.pipe()
        self._stop_lock = threading.Lock()
        self.ended = False      # the remote session said the process ended
        self.thread = threading.Thread(target=self._run, name="rx_magic end notice", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:    # here, not in the caller's thread: a waiting cell's first look does not wait for the session
            source_fd, receive, self._close_source = self._open_source()
        except Exception:
            source_fd = None    # no session (the link dropped): the waiter looks at once, then on its timer
        poller = select.poll()
        if source_fd is not None:
            poller.register(source_fd, select.POLLIN)
        poller.register(self._write, 0)          # POLLERR once the reader closed its end: nobody waits any more
        poller.register(self._stop_read, select.POLLIN)
        seen = b""
        try:
            while source_fd is not None:
                events = dict(poller.poll())
                if self._write in events or self._stop_read in events:
                    return
                if source_fd in events:
                    try:
                        piece = receive()
                    except Exception:
                        return
                    if not piece:
                        return          # the session ended (the link dropped): wake the waiter to look
                    seen += piece
                    if b"ended" in seen:
                        self.ended = True
                        try:
                            os.write(self._write, ENDED)
                        except BrokenPipeError:     # the waiter closed its end since the poll: nobody waits
                            pass
                        return
        finally:
            try:
                self._close_source()
            except Exception:
                pass
            os.close(self._write)       # the waiter's fd turns readable (end of file), if it is still open
            with self._stop_lock:
                os.close(self._stop_read)
                os.close(self._stop_write)
                self._stop_read = self._stop_write = -1
            self._on_stop(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching (the transport closes); the caller still closes ``fd``."""
        with self._stop_lock:
            if self._stop_write >= 0:
                os.write(self._stop_write, b"x")
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)


class EndWatches:
    """A transport's running watches, all stopped when it closes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[EndWatch] = set()

    def start(self, open_source: Callable[[], Source]) -> int:
        """Watch through the session ``open_source`` opens (in the watch's thread); the caller's fd."""
        with self._lock:       # held until it is listed: a watch that stops at once is then taken off
            watch = EndWatch(open_source, self._stopped)
            self._running.add(watch)
        return watch.fd

    def _stopped(self, watch: EndWatch) -> None:
        with self._lock:
            self._running.discard(watch)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def close_all(self) -> None:
        with self._lock:
            watches, self._running = list(self._running), set()
        for watch in watches:
            watch.stop()

"""Widget messages handled while a blocking cell waits, so the status widget's buttons work then too.

While a cell runs, ipykernel's main thread does not read its shell channel,
so a button's ``comm_msg`` would only be handled after the cell ends. Like
jupyter-ui-poll, ``CommPump.pump()`` reads the messages that are pending for
the main shell, handles the comm ones at once, and hands every other message
(the next cells' ``execute_request``, ``kernel_info_request``, ...) back to the
kernel's event loop, in the order they came, to run after this cell.

It relies on ipykernel 7's shell-channel layout and its private
``_parent_ident`` (no public API reads the shell channel or the parent's
identity), pinned to the versions tests/test_private_internals.py checks;
where that is not found (ipykernel 6, another kernel, terminal IPython)
``pump()`` does nothing and buttons act once the cell has ended.
"""

from __future__ import annotations

import logging

COMM_MESSAGES = ("comm_open", "comm_msg", "comm_close")

log = logging.getLogger("rx_magic")


class CommPump:
    """Handles a kernel's pending comm messages during a blocking wait (see the module's docstring)."""

    def __init__(self, kernel, socket, handback):
        self.kernel, self.socket, self._handback = kernel, socket, handback
        self.held: list = []
        self.handled = 0

    @classmethod
    def for_shell(cls, shell) -> CommPump | None:
        """The pump for this shell's kernel, or None when it is not an ipykernel this code knows."""
        kernel = getattr(shell, "kernel", None)
        needs = ("shell_main", "session", "_parent_ident")     # see tests/test_private_internals.py
        if kernel is None or not all(hasattr(kernel, name) for name in needs):
            return None
        try:    # ipykernel 7's shell-channel layout: see tests/test_private_internals.py
            channel_thread = getattr(kernel, "shell_channel_thread", None)
            if channel_thread:
                socket = channel_thread.manager.get_shell_channel_to_subshell_pair(None).to_socket
            else:
                socket = kernel.shell_stream.socket
        except Exception:   # a layout this code does not know
            return None
        return cls(kernel, socket, lambda frames: kernel.io_loop.add_callback(kernel.shell_main, None, frames))

    def pump(self, limit: int = 20) -> int:
        """Handle up to ``limit`` pending messages now; return how many comm messages were handled."""
        import zmq
        handled = 0
        for _ in range(limit):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            except zmq.ZMQError:
                break
            if self._handle(frames):
                handled += 1
            else:
                self.held.append(frames)
        self.handled += handled
        return handled

    def _handle(self, frames) -> bool:
        kernel = self.kernel
        session = kernel.session
        try:
            idents, parts = session.feed_identities(frames, copy=False)
            # the header alone first: a full read records the signature, and the kernel would then
            # refuse a message handed back to it as a replay
            header = session.deserialize(parts, content=False, copy=False)["header"]
            if header.get("msg_type") not in COMM_MESSAGES:
                return False
            msg = session.deserialize(parts, content=True, copy=False)
        except Exception:
            return False
        kind = msg["header"]["msg_type"]
        # the handler's own output must not be taken for the cell's: keep the cell's parent
        parent = kernel.get_parent("shell")
        ident = kernel._parent_ident["shell"]   # ipykernel's kept shim: see tests/test_private_internals.py
        kernel.set_parent(idents, msg, channel="shell")
        try:
            kernel.shell_handlers[kind](None, idents, msg)
        except Exception:
            log.exception("rx_magic: a widget message failed while the cell waited")
        finally:
            kernel.set_parent(ident, parent, channel="shell")
        return True

    def close(self) -> None:
        """Hand the held messages back to the kernel, to run in order once this cell ends."""
        held, self.held = self.held, []
        for frames in held:
            self._handback(frames)


def pump_for(shell) -> CommPump | None:
    try:
        return CommPump.for_shell(shell)
    except Exception:
        return None

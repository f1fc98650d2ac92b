"""Transports: how rx_magic reaches the machine that submits jobs (see DESIGN.md)."""

from .base import CommandResult, Transport
from .local import LocalTransport

__all__ = ["CommandResult", "LocalTransport", "Transport"]

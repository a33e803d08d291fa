"""Connectors: one module per kind of system, behind the seam in `base`."""

from patchbay.connectors.base import Capability, Connector, connect, register

__all__ = ["Capability", "Connector", "connect", "register"]

"""fleetscan's version, in a leaf of its own so the client and the CLI need not import
the package root (which imports them)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

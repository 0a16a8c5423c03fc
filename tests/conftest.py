"""Suite-wide settings: nothing here may reach a real cloud endpoint."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

# The credentials chain ends at the ECS metadata service (100.100.100.200); a test that
# finds no credentials must fail at once, not wait on that address.
os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"


@pytest.fixture
def virtual_loop() -> Callable[[Callable[[], Awaitable[T]]], T]:
    """``virtual_loop(main)`` runs ``main()`` on an event loop with a virtual clock
    (tests/virtual_loop.py): timing logic without wall-clock bounds."""
    from virtual_loop import run_virtual

    return run_virtual

"""Suite-wide settings: nothing here may reach a real cloud endpoint."""

from __future__ import annotations

import os

import pytest
from log_capture import logs  # noqa: F401 - every log line at DEBUG, for the secrets tests
from redis_fixtures import redis_server  # noqa: F401 - a real redis-server, for its tests
from virtual_loop import VirtualLoop

# The credentials chain ends at the ECS metadata service (100.100.100.200); a test that
# finds no credentials must fail at once, not wait on that address.
os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"


@pytest.fixture
def virtual_loop() -> VirtualLoop:
    """A fresh event loop on a virtual clock (see `virtual_loop.VirtualLoop`)."""
    return VirtualLoop()

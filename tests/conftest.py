"""Suite-wide settings: nothing here may reach a real cloud endpoint."""

from __future__ import annotations

import os

# The credentials chain ends at the ECS metadata service (100.100.100.200); a test that
# finds no credentials must fail at once, not wait on that address.
os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"

# A real redis-server for the shared pacer's tests (skips without one, fails under CI).
from redis_fixtures import redis_server  # noqa: F401

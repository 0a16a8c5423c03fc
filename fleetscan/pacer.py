"""The pacer seam: what the scan asks of whatever spaces its HTTP attempts.

`fleetscan.limiter.RateLimiter` (one process, one token bucket, AIMD) is the first
and the default; a pacer shared by several processes, or one spending an address's
budget, plugs in at the same three calls.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Pacer"]


class Pacer(Protocol):
    """Paces every HTTP attempt of a scan, retries included.

    ``acquire`` is awaited before each attempt; the answer is reported with
    ``on_throttled`` (the API said slow down) or ``on_success``. Other failures
    (faults, timeouts) are not reported: they say nothing about the rate.
    """

    async def acquire(self) -> None: ...

    def on_throttled(self) -> None: ...

    def on_success(self) -> None: ...

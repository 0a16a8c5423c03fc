"""How to scan, checked when built: the library refuses what the command refuses.

The rules live here and nowhere else: the rate must be positive and at most the
account's limit for the mode's API (500 single, 100 batch); above the rate past which
Alibaba blocks a source IP (300) the settings carry a warning; the instance ID must
look like one. The messages name the command's options (``--qps``, ``--instance-id``):
the command shows them as they are, and they name the library's arguments too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fleetscan.engine.shared import LimiterSettings
from fleetscan.errors import UsageError
from fleetscan.ids import instance_id_problem
from fleetscan.limits import (
    DEFAULT_QPS,
    IP_SAFE_QPS,
    MAX_CONCURRENCY,
    MAX_QPS,
    MODES,
    Mode,
    api_for,
)
from fleetscan.outage import DEFAULT_OUTAGE_TIMEOUT
from fleetscan.retry import RetryPolicy
from fleetscan.shard import Shard

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "QUEUE_SIZE",
    "ScanSettings",
    "checked_rate",
    "default_concurrency",
    "rate_warnings",
]

# IDs read ahead of the workers: enough to keep them busy, small enough to stay flat.
QUEUE_SIZE = 2_000
# How long a stop waits for the calls on the wire before it cuts them off.
DEFAULT_GRACE_SECONDS = 5.0


def default_concurrency(qps: float) -> int:
    """Enough calls in flight to hold ``qps`` with up to half a second of latency."""
    return max(16, int(qps / 2) + 1)


def checked_rate(mode: Mode, qps: float | None, *, account_qps: float | None = None) -> float:
    """The rate to use: the mode's default, refused above the account's limit.

    ``account_qps`` is that limit, the API's documented one unless told otherwise (an
    account with a raised quota, or an emulator configured with one).
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    rate = float(qps) if qps is not None else float(DEFAULT_QPS[mode])
    if not rate > 0 or math.isinf(rate):
        raise UsageError(f"--qps {rate:g}: the rate must be a positive number of calls/s")
    limit = MAX_QPS[mode] if account_qps is None else account_qps
    if rate > limit:
        raise UsageError(
            f"--qps {rate:g} is above the {limit:g} calls/s that {api_for(mode)} allows an account"
        )
    return rate


def rate_warnings(mode: Mode, rate: float) -> tuple[str, ...]:
    """What to tell the user about ``rate`` before the scan starts."""
    if mode == "single" and rate > IP_SAFE_QPS:
        return (
            f"--qps {rate:g}: Alibaba blocks a source IP that sends more than "
            f"{IP_SAFE_QPS} calls/s of one API; above that, run from two or more egress "
            f"IPs, each under {IP_SAFE_QPS}/s",
        )
    return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanSettings:
    """How to scan; refused (`UsageError`) when the command would refuse it.

    ``qps`` and ``concurrency`` default from the mode. ``account_qps`` is the
    account's limit for the mode's API (default: the documented one); the rate may
    not exceed it.

    ``shard`` keeps only the IDs that shard owns (`fleetscan.shard.Shard`, ``--shard``);
    ``limiter`` paces through a budget in Redis shared by every process of the account
    (`fleetscan.engine.shared.LimiterSettings`, ``--limiter``).
    """

    instance_id: str
    mode: Mode = "single"
    qps: float | None = None
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    queue_size: int = QUEUE_SIZE
    account_qps: float | None = None
    # Seconds without any answer from the service before the scan gives up.
    outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT
    # Many processes and hosts (--shard, --limiter): None is one process alone.
    shard: Shard | None = None
    limiter: LimiterSettings | None = None

    def __post_init__(self) -> None:
        problem = instance_id_problem(self.instance_id)
        if problem:
            raise UsageError(f"--instance-id {self.instance_id!r}: {problem}")
        checked_rate(self.mode, self.qps, account_qps=self.account_qps)
        if self.concurrency is not None and self.concurrency < 1:
            raise UsageError(f"--concurrency {self.concurrency}: must be at least 1")
        if self.concurrency is not None and self.concurrency > MAX_CONCURRENCY:
            raise UsageError(
                f"--concurrency {self.concurrency}: at most {MAX_CONCURRENCY} calls in "
                "flight (500 calls/s at 2 s latency); more only costs memory"
            )
        if not self.outage_timeout > 0:
            raise UsageError(f"--outage-timeout {self.outage_timeout:g}: must be positive")
        if not self.grace_seconds >= 0:
            raise UsageError(f"the grace period cannot be negative ({self.grace_seconds})")
        if self.queue_size < 1:
            raise UsageError(f"the queue needs room for at least one ID ({self.queue_size})")

    @property
    def rate(self) -> float:
        return float(self.qps) if self.qps is not None else float(DEFAULT_QPS[self.mode])

    @property
    def workers(self) -> int:
        return self.concurrency or default_concurrency(self.rate)

    @property
    def api(self) -> str:
        return api_for(self.mode)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user should hear before the scan starts (the per-IP limit)."""
        if self.limiter is not None:
            return ()  # the shared address budget keeps each address under the limit
        return rate_warnings(self.mode, self.rate)

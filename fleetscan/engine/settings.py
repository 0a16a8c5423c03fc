"""How to scan, checked when built: the library refuses what the command refuses.

The rules live here and nowhere else: the rate must be positive and at most the
account's limit for the mode's API (500 single, 100 batch); the address budget (all
APIs from one source address together) at most 300, past which Alibaba blocks the
address; a rate the budget holds lower carries a warning; the instance ID must look
like one. The messages name the command's options (``--qps``, ``--instance-id``):
the command shows them as they are, and they name the library's arguments too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, cast

from fleetscan.engine.shared import LimiterSettings
from fleetscan.errors import UsageError
from fleetscan.ids import instance_id_problem
from fleetscan.limits import (
    BATCH_API,
    IP_SAFE_QPS,
    MAX_CONCURRENCY,
    MAX_QPS,
    MODES,
    SINGLE_API,
    Mode,
    api_for,
)
from fleetscan.outage import DEFAULT_OUTAGE_TIMEOUT
from fleetscan.pacing import (
    ACCOUNT_PACE,
    DEFAULT_ADDRESS_BUDGET,
    check_address_budget,
    lane_rates,
    pace_under,
)
from fleetscan.redis_pacer.script import MIN_QPS as MIN_SHARED_QPS
from fleetscan.retry import RetryPolicy
from fleetscan.shard import Shard
from fleetscan.source_address import check_source_addresses

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "HYBRID",
    "QUEUE_SIZE",
    "SCAN_MODES",
    "ScanMode",
    "ScanSettings",
    "checked_rate",
    "default_concurrency",
    "default_rate",
    "rate_warnings",
]

# A scan's mode: one API's lane, or both lanes at once on one admission queue.
ScanMode = Literal["single", "batch", "hybrid"]
HYBRID: ScanMode = "hybrid"
SCAN_MODES: tuple[ScanMode, ...] = (*MODES, HYBRID)

# IDs read ahead of the workers: enough to keep them busy, small enough to stay flat.
QUEUE_SIZE = 2_000
# How long a stop waits for the calls on the wire before it cuts them off.
DEFAULT_GRACE_SECONDS = 5.0


def default_concurrency(qps: float) -> int:
    """Enough calls in flight to hold ``qps`` with up to half a second of latency."""
    return max(16, int(qps / 2) + 1)


def default_rate(mode: Mode, account_qps: float | None = None) -> float:
    """The API's pace when ``--qps`` is not given: just under its account limit
    (`fleetscan.pacing.ACCOUNT_PACE`; for another limit, the same margin under it)."""
    if account_qps is None:
        return float(ACCOUNT_PACE[mode])
    return float(pace_under(max(1, math.floor(account_qps))))


def checked_rate(mode: Mode, qps: float | None, *, account_qps: float | None = None) -> float:
    """The API's rate: the mode's pace by default, refused above the account's limit.

    ``account_qps`` is that limit, the API's documented one unless told otherwise (an
    account with a raised quota, or an emulator configured with one).
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    rate = float(qps) if qps is not None else default_rate(mode, account_qps)
    if not rate > 0 or math.isinf(rate):
        raise UsageError(f"--qps {rate:g}: the rate must be a positive number of calls/s")
    limit = MAX_QPS[mode] if account_qps is None else account_qps
    if rate > limit:
        raise UsageError(
            f"--qps {rate:g} is above the {limit:g} calls/s that {api_for(mode)} allows an account"
        )
    return rate


def rate_warnings(
    mode: Mode, rate: float, address_budget: float = DEFAULT_ADDRESS_BUDGET
) -> tuple[str, ...]:
    """What to tell the user about the API's ``rate`` before the scan starts."""
    if rate > address_budget:
        return (
            f"--qps {rate:g}: one source address carries at most {address_budget:g} "
            f"calls/s (--address-budget; Alibaba blocks an address that sends more than "
            f"{IP_SAFE_QPS} calls/s, all APIs together), so the scan goes at "
            f"{address_budget:g}/s; for more, send from several addresses",
        )
    return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanSettings:
    """How to scan; refused (`UsageError`) when the command would refuse it.

    ``qps`` (the API's rate) and ``concurrency`` default from the mode.
    ``account_qps`` is the account's limit for the mode's API (default: the documented
    one); ``qps`` may not exceed it. ``address_budget`` caps every call from one source
    address, all APIs together (default 270, at most 300): the scan goes at the lower
    of the two (`rate`).

    ``shard`` keeps only the IDs that shard owns (`fleetscan.shard.Shard`, ``--shard``);
    ``limiter`` paces through a budget in Redis shared by every process of the account
    (`fleetscan.engine.shared.LimiterSettings`, ``--limiter``).
    """

    instance_id: str
    mode: ScanMode = "single"
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
    # Calls/s from one source address, all APIs together (issue 10).
    address_budget: float = DEFAULT_ADDRESS_BUDGET
    # Batch and hybrid: every ID a batch answer says is offline is asked again in real
    # time before its record is written.
    confirm_offline: bool = False
    # The local addresses the calls leave from, each with its own budget (empty: the
    # kernel's choice, one address). Checked on the host when the settings are built.
    source_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = instance_id_problem(self.instance_id)
        if problem:
            raise UsageError(f"--instance-id {self.instance_id!r}: {problem}")
        check_address_budget(self.address_budget)
        if self.source_addresses:
            object.__setattr__(
                self, "source_addresses", check_source_addresses(self.source_addresses)
            )
        if self.mode == HYBRID:
            self._check_hybrid()
        else:
            checked_rate(self.lane_mode, self.qps, account_qps=self.account_qps)
        if self.confirm_offline:
            self._check_confirm()
        if self.limiter is not None and self.qps is not None and self.qps < MIN_SHARED_QPS:
            raise UsageError(
                f"--qps {self.qps:g} with --limiter: a shared budget paces at "
                f"{MIN_SHARED_QPS} calls/s or more (all processes together)"
            )
        if (
            self.limiter is not None
            and self.limiter.address_group is not None
            and len(self.source_addresses) > 1
        ):
            raise UsageError(
                f"--address-group {self.limiter.address_group!r} names the one egress "
                "address of hosts behind a NAT gateway; with several --source-address "
                "each address has a budget of its own: give one or the other"
            )
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

    def _check_hybrid(self) -> None:
        if self.qps is not None:
            raise UsageError(
                f"--qps {self.qps:g} sets one API's rate; --mode hybrid paces its two "
                "lanes from the address budget (batch at its pace, single at what is left)"
            )
        rates = lane_rates(self.addresses, self.address_budget)
        if rates["single"] < 1:
            raise UsageError(
                f"--mode hybrid: an address budget of {self.address_budget:g} calls/s leaves "
                f"nothing for the single lane beside batch's {rates['batch']:g}/s"
            )

    def _check_confirm(self) -> None:
        if self.mode == "single":
            raise UsageError(
                "--confirm-offline asks the real-time API again about what a batch answer "
                "said; it needs --mode batch or hybrid (single answers are real time)"
            )
        if self.lane_rates["single"] < 1:
            raise UsageError(
                f"--confirm-offline: the address budget of {self.address_budget:g} calls/s "
                f"leaves nothing for the confirming single calls beside batch's "
                f"{self.lane_rates['batch']:g}/s"
            )

    @property
    def two_lanes(self) -> bool:
        """Whether the scan runs a single lane beside the batch lane (hybrid, or batch
        confirming its offline answers)."""
        return self.mode == HYBRID or (self.mode == "batch" and self.confirm_offline)

    @property
    def addresses(self) -> int:
        """Source addresses the scan sends from, each with its own budget."""
        return max(1, len(self.source_addresses))

    @property
    def lane_mode(self) -> Mode:
        """The one lane's API of a single or batch scan (batch for hybrid's lead lane)."""
        return "batch" if self.mode == HYBRID else cast(Mode, self.mode)

    @property
    def lane_rates(self) -> dict[Mode, float]:
        """Each lane's account pace: hybrid's from `fleetscan.pacing.lane_rates`."""
        return self.lane_rates_from(self.addresses)

    def lane_rates_from(self, addresses: int) -> dict[Mode, float]:
        """`lane_rates` if the scan sent from ``addresses`` source addresses."""
        if self.mode == HYBRID:
            return lane_rates(addresses, self.address_budget)
        if not self.confirm_offline:
            return {self.lane_mode: self.api_rate}
        # Batch confirming: batch at its rate, the confirmations at what is left.
        return lane_rates(addresses, self.address_budget, batch=self.api_rate)

    @property
    def api_rate(self) -> float:
        """The API's pace: ``qps``, else just under the account's limit (hybrid: the
        lanes' paces together)."""
        if self.mode == HYBRID:
            return sum(self.lane_rates.values())
        return checked_rate(self.lane_mode, self.qps, account_qps=self.account_qps)

    @property
    def rate(self) -> float:
        """What the scan aims at: the API's pace, within the address budgets."""
        return min(self.api_rate, self.address_budget * self.addresses)

    @property
    def workers(self) -> int:
        return self.concurrency or default_concurrency(self.rate)

    def lane_workers(self, mode: Mode, *, routes: int = 1) -> int:
        """Workers of ``mode``'s lane (``concurrency`` is per lane), each of ``routes``
        lanes of the mode (one per source address) carrying its share of the rate:
        workers for the whole rate on every address only crowd the pacers' queues."""
        if self.concurrency:
            return self.concurrency
        rate = self.lane_rates[mode] if self.two_lanes else self.rate
        return default_concurrency(rate / max(1, routes))

    @property
    def api(self) -> str:
        if self.mode == HYBRID:
            return f"{BATCH_API}+{SINGLE_API}"
        return api_for(self.lane_mode)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user should hear before the scan starts (the address budget)."""
        if self.limiter is not None:
            return ()  # the shared address budget keeps each address under the limit
        # Only a rate asked for is worth a word: the default is meant to be capped.
        if self.qps is None or self.mode == HYBRID:
            return ()
        if self.api_rate <= self.address_budget * self.addresses:
            return ()
        return rate_warnings(self.lane_mode, self.api_rate, self.address_budget)

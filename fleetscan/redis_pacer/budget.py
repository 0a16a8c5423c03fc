"""The process's share of the account's budgets in Redis, and the pacers drawing on it.

::

    budget = await SharedBudget.connect(
        "redis://redis:6379/0", access_key_id=credentials.access_key_id, address="10.0.0.7"
    )
    single = budget.pacer("QuerySessionByClientId", qps=300, address_qps=270)
    batch = budget.pacer("BatchQuerySessionByClientIds", qps=100, address_qps=270)
    ...
    await budget.aclose()

Every process of the account that names the same Redis draws on the same budgets: one
per API (``qps`` is the account's, shared by all), one per egress address (``address``:
the source address, or a group name for the hosts behind one NAT gateway), so the
address budget is shared by both APIs and by every process behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from fleetscan.redis_pacer.keys import (
    DEFAULT_PREFIX,
    address_key,
    address_share_key,
    aimd_key,
    api_key,
)
from fleetscan.redis_pacer.link import DEFAULT_TIMEOUT_S, RedisLink
from fleetscan.redis_pacer.pacer import DEFAULT_LEASE, RedisPacer

__all__ = ["SharedBudget"]


class SharedBudget:
    """The link to Redis for one account and one egress address; see the module doc."""

    __slots__ = ("_access_key_id", "_address", "_pacers", "_prefix", "link")

    def __init__(
        self, link: RedisLink, *, access_key_id: str, address: str, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if not address:
            raise ValueError("address: the egress address or its group's name")
        self.link = link
        self._access_key_id = access_key_id
        self._address = address
        self._prefix = prefix
        # The pacers made here, closed with the link.
        self._pacers: list[RedisPacer] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        access_key_id: str,
        address: str,
        prefix: str = DEFAULT_PREFIX,
        limiter_timeout: float = DEFAULT_TIMEOUT_S,
        environ: Mapping[str, str] | None = None,
        ca_bundle: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> SharedBudget:
        """Connect to ``url`` (LimiterUnavailableError if it cannot be used)."""
        link = await RedisLink.connect(
            url,
            limiter_timeout=limiter_timeout,
            environ=environ,
            ca_bundle=ca_bundle,
            clock=clock,
            sleep=sleep,
            probe_key=f"{prefix}:probe",
        )
        return cls(link, access_key_id=access_key_id, address=address, prefix=prefix)

    def pacer(
        self,
        api: str,
        qps: float,
        *,
        address_qps: float | None = None,
        adaptive: bool = True,
        lease: int = DEFAULT_LEASE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_grant: Callable[[int], None] | None = None,
        address: str | None = None,
        share_qps: float | None = None,
    ) -> RedisPacer:
        """A pacer for ``api`` at up to ``qps`` (and ``address_qps`` from ``address``:
        by default the budget's own; a process sending from several addresses names
        each). ``share_qps`` caps ``api``'s share of that address's budget, for every
        process behind it: two APIs sharing an address each keep their part (the
        calls of many single lanes, ahead in the queue for the address, would leave
        the batch lane, ten IDs a call, next to nothing). All in one grant: a cap
        taken apart, before the shared permit, would leave one caller at a time
        waiting on Redis, and a lease of one permit a round trip."""
        keys: tuple[str, ...] = (
            aimd_key(self._prefix, self._access_key_id, api),
            api_key(self._prefix, self._access_key_id, api),
        )
        if address_qps is not None:
            keys += (address_key(self._prefix, address or self._address),)
        if share_qps is not None:
            keys += (address_share_key(self._prefix, address or self._address, api),)
        pacer = RedisPacer(
            self.link,
            keys=keys,
            qps=qps,
            address_qps=address_qps,
            share_qps=share_qps,
            adaptive=adaptive,
            lease=lease,
            clock=clock,
            sleep=sleep,
            on_grant=on_grant,
        )
        self._pacers.append(pacer)
        return pacer

    def stats(self) -> dict[str, int]:
        """Permits spent and dropped by its pacers, and round trips to Redis, so far."""
        return {
            "permits": sum(pacer.granted for pacer in self._pacers),
            "dropped": sum(pacer.dropped for pacer in self._pacers),
            "round_trips": self.link.calls,
        }

    async def aclose(self) -> None:
        for pacer in self._pacers:
            await pacer.aclose()
        await self.link.aclose()

    def __repr__(self) -> str:
        return f"SharedBudget({self.link.shown}, address={self._address!r})"

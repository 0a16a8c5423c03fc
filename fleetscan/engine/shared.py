"""A scan's share of a budget kept in Redis (``--limiter``): its settings and its pacers.

`LimiterSettings` is checked when built, like `ScanSettings` (the URL's form, the
timeout, the address group), and never shows the URL: a password may be in it.
`shared_pacers` connects (`fleetscan.redis_pacer.SharedBudget`), one pacer per lane's
API, after the credentials (the budget's keys are per account) and before any call.

Each pacer draws on two shared budgets: the API's, at the scan's rate, which is then
the rate of every process of the account together (each process passes the same
``--qps``, or the same default); and the egress address's (``address_group``, by
default the local address the calls leave from), at the address budget (270/s),
shared by both APIs and every process behind that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fleetscan.errors import UsageError
from fleetscan.pacer import Pacer
from fleetscan.pacing import DEFAULT_ADDRESS_BUDGET, check_address_budget
from fleetscan.redis_pacer.budget import SharedBudget
from fleetscan.redis_pacer.link import DEFAULT_TIMEOUT_S, parse_limiter_url

__all__ = ["LimiterSettings", "egress_address", "shared_pacers"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterSettings:
    """Where the shared budget is (``url``: ``redis://`` or ``rediss://``) and how this
    process draws on it; refused (`UsageError`) when the command would refuse it.

    ``timeout``: seconds of Redis outage before the scan stops (resumable, exit 3).
    ``address_group``: the name of the egress address's budget (hosts behind one NAT
    gateway give the same one); None: the address the calls leave from.
    """

    url: str = field(repr=False)  # may hold a password
    timeout: float = DEFAULT_TIMEOUT_S
    address_group: str | None = None
    address_qps: float = DEFAULT_ADDRESS_BUDGET

    def __post_init__(self) -> None:
        try:
            importlib.import_module("redis")
        except ImportError:
            raise UsageError(
                "a Redis limiter needs the redis extra: pip install 'fleetscan[redis]'"
            ) from None
        parse_limiter_url(self.url)  # its errors never echo the URL
        if not self.timeout > 0:
            raise UsageError(f"--limiter-timeout {self.timeout:g}: must be positive")
        if self.address_group is not None and not self.address_group.strip():
            raise UsageError("--address-group: give a name (or leave it out)")
        check_address_budget(self.address_qps)

    @property
    def shown(self) -> str:
        """The server, as messages name it: ``scheme://host:port/db``, no credentials."""
        return parse_limiter_url(self.url).shown


async def egress_address(endpoint: str | None) -> str:
    """The local address calls to ``endpoint`` leave from (the route's source: a UDP
    socket's connect sends nothing); the host's name when that cannot be told."""
    host = urlsplit(endpoint).hostname if endpoint else None
    if host:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_DGRAM)
            family, kind, _, _, address = infos[0]
            with socket.socket(family, kind) as probe:
                probe.connect(address)
                local: str = probe.getsockname()[0]
                return local
    return socket.gethostname()


@contextlib.asynccontextmanager
async def shared_pacers(
    settings: LimiterSettings,
    *,
    access_key_id: str,
    address: str,
    rates: Sequence[tuple[str, float]],
    ca_bundle: str | None = None,
) -> AsyncIterator[dict[str, Pacer]]:
    """Connect, and yield a pacer per ``(api, rate)`` of the scan's lanes; closed after.

    `LimiterUnavailableError` when Redis cannot be used (nothing was sent);
    `UsageError` when the ``redis`` package is missing.
    """
    budget = await SharedBudget.connect(
        settings.url,
        access_key_id=access_key_id,
        address=settings.address_group or address,
        limiter_timeout=settings.timeout,
        ca_bundle=ca_bundle,
    )
    try:
        yield {
            api: budget.pacer(api, rate, address_qps=settings.address_qps) for api, rate in rates
        }
    finally:
        await budget.aclose()

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
import logging
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fleetscan.credentials.value import Credentials
from fleetscan.errors import UsageError
from fleetscan.pacer import Pacer
from fleetscan.pacing import DEFAULT_ADDRESS_BUDGET, check_address_budget
from fleetscan.redis_pacer.budget import SharedBudget
from fleetscan.redis_pacer.link import DEFAULT_TIMEOUT_S, parse_limiter_url

__all__ = ["LimiterSettings", "budget_account", "egress_address", "shared_pacers"]

log = logging.getLogger("fleetscan")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterSettings:
    """Where the shared budget is (``url``: ``redis://`` or ``rediss://``) and how this
    process draws on it; refused (`UsageError`) when the command would refuse it.

    ``timeout``: seconds of Redis outage before the scan stops (resumable, exit 3).
    ``address_group``: the name of the egress address's budget (hosts behind one NAT
    gateway give the same one); None: the address the calls leave from.
    ``account``: the name of the account's budgets; None: `budget_account`'s choice.
    """

    url: str = field(repr=False)  # may hold a password
    timeout: float = DEFAULT_TIMEOUT_S
    address_group: str | None = None
    # The name of the account's budgets (--limiter-account); None: from the credentials.
    account: str | None = None

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
        if self.account is not None and not self.account.strip():
            raise UsageError("--limiter-account: give a name (or leave it out)")

    @property
    def shown(self) -> str:
        """The server, as messages name it: ``scheme://host:port/db``, no credentials."""
        return parse_limiter_url(self.url).shown


def budget_account(settings: LimiterSettings, credentials: Credentials | None) -> str:
    """What names the account's budgets (hashed into the keys, never stored as is):
    ``--limiter-account``, else the account an assumed role's ARN names, else the
    AccessKeyId.

    A temporary key (STS, an instance's role) changes at every refresh and differs
    from process to process: named by it, each process would pace alone. An assumed
    role names its account; for a temporary key of unknown account (the metadata
    service, a credentials URI) the processes need ``--limiter-account``, and hear so.
    """
    if settings.account is not None:
        return "name:" + settings.account.strip()
    if credentials is None:
        return "default"  # a client passed in: still one account's budget
    if credentials.account is not None:
        return "account:" + credentials.account
    if credentials.security_token is not None:
        log.warning(
            "--limiter: the credentials from %s are temporary and name no account, so "
            "each process would draw on a budget of its own key; give every process "
            "the same --limiter-account (e.g. the account's UID) to share one",
            credentials.source,
        )
    return credentials.access_key_id


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
    account: str,
    addresses: Sequence[str],
    rates: Mapping[str, tuple[float, float | None]],
    address_budget: float = DEFAULT_ADDRESS_BUDGET,
    ca_bundle: str | None = None,
) -> AsyncIterator[tuple[dict[tuple[str, str], Pacer], Callable[[], dict[str, int]]]]:
    """Connect, and yield a pacer per source address and API, keyed ``(address, api)``,
    and what reads their figures so far (`SharedBudget.stats`), each pacer at the
    API's shared rate (``rates[api]``: the rate, and this process's cap of
    the API over all its addresses, or None) and at ``address_budget`` from the
    address (both APIs and every process behind it together); closed after.

    ``account`` names the account's budgets (`budget_account`). Each address draws on
    its own budget, or all on the group's (``address_group``).
    `LimiterUnavailableError` when Redis cannot be used (nothing was sent);
    `UsageError` when the ``redis`` package is missing.
    """
    if not addresses:
        raise ValueError("at least one source address")
    address_qps = check_address_budget(address_budget)
    budget = await SharedBudget.connect(
        settings.url,
        access_key_id=account,
        address=settings.address_group or addresses[0],
        limiter_timeout=settings.timeout,
        ca_bundle=ca_bundle,
    )
    try:
        pacers: dict[tuple[str, str], Pacer] = {
            (address, api): budget.pacer(
                api,
                rate,
                address_qps=address_qps,
                address=settings.address_group or address,
                share_qps=cap,
            )
            for address in addresses
            for api, (rate, cap) in rates.items()
        }
        yield pacers, budget.stats
    finally:
        await budget.aclose()

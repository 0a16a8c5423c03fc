"""Source addresses: checked before any call, and seen by the emulator as distinct IPs.

Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2 and 127.0.0.3 stand for two
egress addresses. 192.0.2.1 (TEST-NET-1) is an address no host here has: binding to it
sends nothing anywhere.
"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from emulator_fixtures import Caller, ids, serving

from fleetscan.emulator import EmulatorConfig, Limits
from fleetscan.errors import UsageError
from fleetscan.pacing import AddressBudget
from fleetscan.source_address import (
    check_source_address,
    check_source_addresses,
    connector_kwargs,
    make_connector,
)


def test_addresses_this_host_has_pass_in_canonical_form() -> None:
    assert check_source_address("127.0.0.2") == "127.0.0.2"
    assert check_source_address(" 127.0.0.3 ") == "127.0.0.3"
    assert check_source_addresses(["127.0.0.2", "127.0.0.3"]) == ("127.0.0.2", "127.0.0.3")


def test_ipv6_loopback_passes_where_the_host_has_it() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert check_source_address("[0:0::1]") == "::1"


def test_an_address_the_host_does_not_have_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match=r"192\.0\.2\.1: cannot send from it") as caught:
        check_source_address("192.0.2.1")
    assert "no such address" in str(caught.value)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("eth0", "is not an IP address"),
        ("127.0.0.300", "is not an IP address"),
        ("0.0.0.0", "cannot be a source"),
        ("224.0.0.1", "cannot be a source"),
    ],
)
def test_what_is_not_a_source_address_is_a_clear_error(address: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_source_address(address)


def test_the_same_address_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="given twice"):
        check_source_addresses(["127.0.0.2", "127.0.0.3", "127.000.0.2".replace("000", "0")])


def test_connector_arguments() -> None:
    assert connector_kwargs(None) == {}
    assert connector_kwargs("127.0.0.2") == {"local_addr": ("127.0.0.2", 0)}


async def test_two_source_addresses_are_two_ips_each_under_its_budget() -> None:
    # Real time, small budgets: pacing can only be slower on a busy machine, so the
    # bound "each under its budget" cannot flake.
    budget = 20
    config = EmulatorConfig(limits=Limits(ip_limit=budget + 5))
    addresses = check_source_addresses(["127.0.0.2", "127.0.0.3"])
    async with serving(config, clock=time.time) as (emu, _):
        sessions = []
        for address in addresses:
            pacer = AddressBudget(budget, address=address)
            session = aiohttp.ClientSession(
                connector=make_connector(address, limit=0),
                trace_configs=[pacer.trace_config()],
            )
            sessions.append((Caller(session, emu.url), pacer))
        try:

            async def calls(caller: Caller, pacer: AddressBudget, prefix: str) -> list[int]:
                async def one(client_id: str) -> int:
                    await pacer.acquire()
                    return (await caller.single(client_id)).status

                return list(await asyncio.gather(*(one(c) for c in ids(30, prefix))))

            results = await asyncio.gather(
                *(
                    calls(caller, pacer, f"GID_test@@@{i}-")
                    for i, (caller, pacer) in enumerate(sessions)
                )
            )
        finally:
            for caller, _ in sessions:
                await caller.session.close()
        stats = emu.stats()
    assert results == [[200] * 30, [200] * 30]
    assert set(stats.ip_totals) == set(addresses)
    for address in addresses:
        total = stats.ip_totals[address]
        assert total.requests == 30
        assert 0 < total.max_requests_1s <= budget
    assert sum(a.blocked for a in stats.actions.values()) == 0

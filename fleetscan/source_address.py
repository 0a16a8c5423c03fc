"""Source addresses: the local addresses a scan's calls leave from, checked up front.

The per-IP limit binds each address on its own, so a host with several network
interfaces or elastic IPs can send one address budget from each. Each address gets its
own aiohttp connector bound to it (``local_addr=(address, 0)``: the kernel picks the
port), hence its own session and pool. On Linux every address of 127.0.0.0/8 is
loopback, so 127.0.0.2, 127.0.0.3, ... stand for distinct egress addresses in tests
and benchmarks without any setup.

An address this host does not have fails at the first connect, mid-scan, as an
``EADDRNOTAVAIL`` from deep inside aiohttp. `check_source_addresses` binds a socket to
each address first, so a typo is a clear `UsageError` before any call.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import aiohttp

from fleetscan.errors import UsageError

__all__ = [
    "check_source_address",
    "check_source_addresses",
    "connector_kwargs",
    "make_connector",
]


def check_source_address(address: str) -> str:
    """``address`` in canonical form if this host can send from it, else `UsageError`."""
    text = address.strip()
    try:
        parsed = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise UsageError(
            f"--source-address {address!r} is not an IP address (give one of this host's "
            "addresses, such as 10.0.0.5 or 2001:db8::5)"
        ) from None
    if parsed.is_multicast or parsed.is_unspecified:
        raise UsageError(
            f"--source-address {parsed} cannot be a source: give one of this host's own addresses"
        )
    family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(parsed), 0))
    except OSError as exc:
        why = (
            "this host has no such address"
            if exc.errno == errno.EADDRNOTAVAIL
            else exc.strerror or str(exc)
        )
        raise UsageError(
            f"--source-address {parsed}: cannot send from it ({why}); give an address "
            "of one of this host's network interfaces (see `ip -brief address`)"
        ) from None
    return str(parsed)


def check_source_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Each address checked, in order; a repeated one is a `UsageError` (it would get
    two budgets for one address, and the server counts them as one)."""
    checked: list[str] = []
    for address in addresses:
        canonical = check_source_address(address)
        if canonical in checked:
            raise UsageError(
                f"--source-address {canonical} is given twice: each address has one budget"
            )
        checked.append(canonical)
    return tuple(checked)


def connector_kwargs(address: str | None) -> dict[str, Any]:
    """The `aiohttp.TCPConnector` arguments that send from ``address`` (none for None:
    the kernel's choice). ``address`` should have passed `check_source_address`."""
    if address is None:
        return {}
    return {"local_addr": (address, 0)}


def make_connector(
    address: str | None, *, ssl_context: ssl.SSLContext | bool = True, **kwargs: Any
) -> aiohttp.TCPConnector:
    """A connector whose connections leave from ``address``; call it in the running loop.

    ``kwargs`` go to `aiohttp.TCPConnector` as they are (``limit=0`` as the client's).
    """
    return aiohttp.TCPConnector(ssl=ssl_context, **connector_kwargs(address), **kwargs)

"""Where the API is: region endpoints, the endpoint check, and what counts as loopback.

A leaf: the client, the emulator and the credentials sources all decide "is this
host loopback?" here, so http:// is allowed (and a listening emulator is quiet) for
exactly the same hosts everywhere.
"""

from __future__ import annotations

import ipaddress
import re

from yarl import URL

from fleetscan.errors import UsageError

__all__ = ["check_endpoint", "endpoint_for_region", "is_loopback"]

_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also bracketed, or IPv4-mapped) and localhost.

    Names are compared without case and without one trailing dot (``LOCALHOST.`` is
    localhost). Only the name ``localhost`` counts: what other names resolve to
    (``localhost.localdomain``, ``*.localhost``) depends on the machine's resolver.
    """
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if name == "localhost":
        return True
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # Python 3.11's is_loopback says False for ::ffff:127.0.0.1; a socket disagrees.
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def endpoint_for_region(region: str, *, vpc: bool = False) -> str:
    """``https://onsmqtt.<region>.aliyuncs.com/`` (``onsmqtt-vpc.`` inside a VPC)."""
    if not _REGION.fullmatch(region):
        raise UsageError(f"{region!r} is not a region ID such as cn-hangzhou")
    return f"https://onsmqtt{'-vpc' if vpc else ''}.{region}.aliyuncs.com/"


def check_endpoint(url: str) -> str:
    """The endpoint, normalised to ``scheme://host[:port]/``; UsageError if unusable.

    Only https, except http:// to loopback (see `is_loopback`) for the emulator and
    tests: signatures and STS tokens must not cross a network in clear.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"endpoint {url!r} is not a URL: {exc}") from None
    host = parsed.host
    if not parsed.absolute or not host:
        raise UsageError(f"endpoint {url!r} has no host; give e.g. https://host/")
    if parsed.user is not None or parsed.password is not None:
        raise UsageError("endpoint must not hold a user name or password")
    if parsed.path not in ("", "/") or parsed.raw_query_string or parsed.fragment:
        raise UsageError(f"endpoint {url!r} must be just scheme://host[:port]/")
    scheme = parsed.scheme.lower()
    if scheme == "http" and not is_loopback(host):
        raise UsageError(f"endpoint {url!r}: http:// is only allowed to loopback; use https://")
    if scheme not in ("https", "http"):
        raise UsageError(f"endpoint {url!r}: the scheme must be https")
    return f"{scheme}://{parsed.host_port_subcomponent}/"

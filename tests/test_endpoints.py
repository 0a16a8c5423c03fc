"""One loopback rule for the client (http:// allowed) and the emulator (no warning)."""

from __future__ import annotations

import pytest

from fleetscan.client import check_endpoint
from fleetscan.emulator.command import exposure_warning
from fleetscan.endpoints import is_loopback
from fleetscan.errors import UsageError

LOOPBACK = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    "[::1]",
    "::ffff:127.0.0.1",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "LOCALHOST.",
]
NOT_LOOPBACK = [
    "",
    "0.0.0.0",
    "::",
    "[::]",
    "::2",
    "::ffff:10.0.0.1",
    "128.0.0.1",
    "192.0.2.1",
    "10.0.0.1",
    "example.com",
    "localhost..",
    "localhost.example.com",
    "myhost.localhost",
    # What it resolves to is the machine's /etc/hosts, not a rule.
    "localhost.localdomain",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts_are_loopback_for_the_client_and_the_emulator(host: str) -> None:
    assert is_loopback(host)
    assert exposure_warning(host) is None
    url_host = host if host.startswith("[") or ":" not in host else f"[{host}]"
    assert check_endpoint(f"http://{url_host}:8080/").startswith("http://")


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_other_hosts_are_not_for_the_client_nor_the_emulator(host: str) -> None:
    assert not is_loopback(host)
    warning = exposure_warning(host)
    assert warning is not None
    assert "reachable beyond this machine" in warning
    if host:
        url_host = host if host.startswith("[") or ":" not in host else f"[{host}]"
        with pytest.raises(UsageError, match="only allowed to loopback"):
            check_endpoint(f"http://{url_host}:8080/")

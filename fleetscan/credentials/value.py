"""What every credentials module shares: the key pair, and what provides one.

A leaf: it imports nothing of fleetscan's, so the fetchers, the refreshing provider,
the sources and the chain can all depend on it without depending on each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = [
    "Credentials",
    "CredentialsProvider",
    "ResolvedCredentials",
    "StaticCredentials",
    "account_of_role",
]

# acs:ram::<account UID>:role/<name>
_ROLE_ARN = re.compile(r"acs:ram::(\d+):role/\S+")


def account_of_role(role_arn: str) -> str | None:
    """The account UID a RAM role's ARN names, None when it is no role ARN."""
    found = _ROLE_ARN.fullmatch(role_arn.strip())
    return found.group(1) if found else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """One access key pair, with an STS token when temporary. The repr hides secrets."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None
    # Where these came from, for messages: "environment", "~/.aliyun/config.json" ...
    source: str = "given"
    # The account (UID) the key acts for, when known: an assumed role's ARN names it.
    # Temporary keys change at every refresh; the account does not (the shared
    # budget's keys are per account: fleetscan.engine.shared.budget_account).
    account: str | None = None


class CredentialsProvider(Protocol):
    """Anything the client can ask for current credentials before each attempt."""

    async def get(self) -> Credentials: ...


class StaticCredentials:
    """A provider for credentials that never change."""

    __slots__ = ("_credentials",)

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    async def get(self) -> Credentials:
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credentials!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedCredentials:
    """What the chain found: a provider to sign with, the region, and where from."""

    provider: CredentialsProvider
    region: str | None
    source: str

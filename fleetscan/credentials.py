"""Access keys, and where they come from.

(The resolution chain of ``onsmqtt-api.md`` section 7 is being written; this module
holds the types the client signs with.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["Credentials", "CredentialsProvider", "StaticCredentials"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """One access key pair, with an STS token when temporary. The repr hides secrets."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None
    # Where these came from, for messages: "environment", "~/.aliyun/config.json" ...
    source: str = "given"


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

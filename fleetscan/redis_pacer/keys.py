"""The Redis keys of the shared budgets: per account and API, and per egress address.

An account's keys carry a digest of its AccessKeyId, never the ID itself, so two
accounts never share a budget and Redis never holds a credential. An address's key
does not name the account: the API limits a source address over all APIs and, as far
as anyone can tell, over all accounts (docs/onsmqtt-api.md, section 2).

The default prefix is a Redis Cluster hash tag (``{...}``): every key of fleetscan
then lives in one slot, where one script may touch them all.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "DEFAULT_PREFIX",
    "account_digest",
    "address_key",
    "address_share_key",
    "aimd_key",
    "api_key",
]

DEFAULT_PREFIX = "{fleetscan}"


def account_digest(access_key_id: str) -> str:
    """A short, stable digest of the AccessKeyId: the account's part of its keys."""
    return hashlib.blake2b(
        access_key_id.encode(), digest_size=10, person=b"fleetscan-acct"
    ).hexdigest()


def api_key(prefix: str, access_key_id: str, api: str) -> str:
    """The slots granted for ``api`` on the account (a sorted set)."""
    return f"{prefix}:{account_digest(access_key_id)}:api:{api}:slots"


def aimd_key(prefix: str, access_key_id: str, api: str) -> str:
    """The shared slow-down (AIMD) of ``api`` on the account."""
    return f"{prefix}:{account_digest(access_key_id)}:api:{api}:aimd"


def address_key(prefix: str, address: str) -> str:
    """The slots granted from an egress address, or a group of hosts behind one (a
    sorted set). Named apart from the single value of earlier versions, which a
    process of an earlier version still in use may hold."""
    return f"{prefix}:addr:{address}:slots"


def address_share_key(prefix: str, address: str, api: str) -> str:
    """The slots granted to ``api`` from an egress address (or group): the API's share
    of the address's budget, beside the address's own key."""
    return f"{prefix}:addr:{address}:api:{api}:slots"

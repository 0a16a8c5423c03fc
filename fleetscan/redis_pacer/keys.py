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

__all__ = ["DEFAULT_PREFIX", "account_digest", "address_key", "aimd_key", "api_key"]

DEFAULT_PREFIX = "{fleetscan}"


def account_digest(access_key_id: str) -> str:
    """A short, stable digest of the AccessKeyId: the account's part of its keys."""
    return hashlib.blake2b(
        access_key_id.encode(), digest_size=10, person=b"fleetscan-acct"
    ).hexdigest()


def api_key(prefix: str, access_key_id: str, api: str) -> str:
    """The last slot granted for ``api`` on the account."""
    return f"{prefix}:{account_digest(access_key_id)}:api:{api}"


def aimd_key(prefix: str, access_key_id: str, api: str) -> str:
    """The shared slow-down (AIMD) of ``api`` on the account."""
    return api_key(prefix, access_key_id, api) + ":aimd"


def address_key(prefix: str, address: str) -> str:
    """The last slot granted from an egress address, or a group of hosts behind one."""
    return f"{prefix}:addr:{address}"

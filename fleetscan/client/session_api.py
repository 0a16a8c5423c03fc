"""What a scan calls on the API, as a Protocol: `OnsMqttClient` is the real one.

Tests and other pipelines pass any object with these two methods (a fake that
answers at once, a recording wrapper) without subclassing the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleetscan.client.answers import BatchAnswer, SessionAnswer

__all__ = ["SessionApi"]


class SessionApi(Protocol):
    """One attempt of each session call; failures raise `ApiError` subclasses."""

    async def query_session(self, client_id: str) -> SessionAnswer:
        """QuerySessionByClientId: whether ``client_id`` is online now."""
        ...

    async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
        """BatchQuerySessionByClientIds: up to 10 IDs, as answered."""
        ...

"""The OnsMqtt API client: one signed attempt of each session call, and its answer.

Each call signs afresh (see `signers`), sends ``POST /`` with every parameter in the
query string and an empty body, as the official SDK does, and reads the answer (see
`answers`). Whatever goes wrong comes out as an `ApiError` subclass: error answers
through `errors.api_error`, aiohttp's exceptions through `transport.no_answer`.
Retrying and pacing are not done here (see `retry` and `limiter`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from yarl import URL

from fleetscan.client.answers import (
    BatchAnswer,
    SessionAnswer,
    answer_data,
    kind,
    malformed,
    parse_statuses,
    read_capped,
    text_or_none,
)
from fleetscan.client.signers import Signer, V1Signer, V3Signer
from fleetscan.client.transport import TRANSPORT_ERRORS, no_answer
from fleetscan.credentials import CredentialsProvider
from fleetscan.endpoints import check_endpoint
from fleetscan.errors import UsageError
from fleetscan.limits import BATCH_API, BATCH_SIZE, RETRY_AFTER_HEADER, SINGLE_API
from fleetscan.signing import percent_encode
from fleetscan.version import __version__

__all__ = ["DEFAULT_TIMEOUT", "OnsMqttClient"]

# Seconds one attempt may take, connection and body included.
DEFAULT_TIMEOUT = 10.0

_USER_AGENT = f"fleetscan/{__version__}"
# ClientIdList.<i> in canonical (byte) order for each batch size: 1, 10, 2, 3 ...
_BATCH_ORDER = tuple(tuple(sorted(range(1, n + 1), key=str)) for n in range(BATCH_SIZE + 1))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _uuid_nonce() -> str:
    return uuid.uuid4().hex


class OnsMqttClient:
    """Calls QuerySessionByClientId and BatchQuerySessionByClientIds, one attempt each.

    The session is the caller's (one for the whole scan; closing it is the caller's
    job). Credentials are fetched before every attempt, so refreshed STS tokens are
    picked up. Every failure raises an `ApiError` subclass::

        async with aiohttp.ClientSession() as session:
            client = OnsMqttClient(
                session=session,
                credentials=StaticCredentials(Credentials(access_key_id=..., ...)),
                instance_id="mqtt-cn-0pp12gl0000",
                endpoint=endpoint_for_region("cn-hangzhou"),
            )
            answer = await client.query_session("GID_test@@@device-1")
            print(answer.online, answer.request_id)
            batch = await client.batch_query_sessions(["GID_a@@@d1", "GID_a@@@d2"])
            print(batch.statuses)
    """

    __slots__ = (
        "_base",
        "_credentials",
        "_instance_id",
        "_instance_query",
        "_session",
        "_signature",
        "_signer",
        "_timeout",
        "_timeout_s",
    )

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        credentials: CredentialsProvider,
        instance_id: str,
        endpoint: str,
        signature: Literal["v3", "v1"] = "v3",
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = _utc_now,
        nonce: Callable[[], str] = _uuid_nonce,
    ) -> None:
        if signature not in ("v3", "v1"):
            raise UsageError(f"signature must be v3 or v1, not {signature!r}")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, not {timeout!r}")
        url = URL(check_endpoint(endpoint))
        self._session = session
        self._credentials = credentials
        self._instance_id = instance_id
        self._signature = signature
        self._timeout_s = float(timeout)
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        # Precomputed per client: the URL up to "?" and the encoded InstanceId pair.
        self._base = f"{url.scheme}://{url.host_port_subcomponent}/?"
        self._instance_query = f"InstanceId={percent_encode(instance_id)}"
        # V3 signs the Host header we send, so its signer is given the same one.
        self._signer: Signer = (
            V3Signer(host=url.host_port_subcomponent or "", clock=clock, nonce=nonce)
            if signature == "v3"
            else V1Signer(clock=clock, nonce=nonce)
        )

    def __repr__(self) -> str:
        return (
            f"OnsMqttClient(endpoint={self._base[:-1]!r}, instance_id={self._instance_id!r}, "
            f"signature={self._signature!r})"
        )

    async def query_session(self, client_id: str) -> SessionAnswer:
        """Whether ``client_id`` is online now (real time)."""
        query = f"ClientId={percent_encode(client_id)}&{self._instance_query}"
        params = {"ClientId": client_id, "InstanceId": self._instance_id}
        data = await self._call(SINGLE_API, query, params, "OnlineStatus")
        online = data["OnlineStatus"]
        if type(online) is not bool:
            raise malformed(200, f"OnlineStatus is {kind(online)}, not a boolean")
        return SessionAnswer(online=online, request_id=text_or_none(data.get("RequestId")))

    async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
        """Online status of up to 10 client IDs in one call (served from a cache).

        The answer is returned as given: an ID the server left out is absent.
        """
        if not 0 < len(client_ids) <= BATCH_SIZE:
            raise ValueError(f"a batch holds 1 to {BATCH_SIZE} client IDs, not {len(client_ids)}")
        query = "&".join(
            [
                *(
                    f"ClientIdList.{i}={percent_encode(client_ids[i - 1])}"
                    for i in _BATCH_ORDER[len(client_ids)]
                ),
                self._instance_query,
            ]
        )
        params = {f"ClientIdList.{i}": cid for i, cid in enumerate(client_ids, 1)}
        params["InstanceId"] = self._instance_id
        data = await self._call(BATCH_API, query, params, "OnlineStatusList")
        return BatchAnswer(
            statuses=parse_statuses(data["OnlineStatusList"]),
            request_id=text_or_none(data.get("RequestId")),
        )

    # --- one attempt ------------------------------------------------------------------

    async def _call(
        self, action: str, query: str, params: dict[str, str], field: str
    ) -> dict[str, Any]:
        """Sign, send, read; the answer's JSON object, which holds ``field``."""
        credentials = await self._credentials.get()
        query, headers = self._signer.sign(action, query, params, credentials)
        headers["user-agent"] = _USER_AGENT
        # encoded=True: the query goes on the wire exactly as it was signed.
        url = URL(self._base + query, encoded=True)
        try:
            async with self._session.post(
                url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get(RETRY_AFTER_HEADER)
                body = await read_capped(response, status)
        except TRANSPORT_ERRORS as exc:
            # from None: aiohttp's messages and reprs can show the URL, which holds the
            # STS token under V1.
            raise no_answer(exc, self._timeout_s) from None
        secrets = (credentials.security_token, credentials.access_key_secret)
        return answer_data(status, body, retry_after, field, secrets=secrets)

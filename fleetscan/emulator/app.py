"""The emulator's aiohttp applications: the API at ``/`` and controls at ``/_emulator/``;
with `StsConfig`, STS (`fleetscan.emulator.sts`) on a port of its own (`create_sts_app`).

A request to ``/`` (GET or POST) goes through the stages a real call meets, and the
first that refuses it answers:

1. count it; the source-IP limit (``Forbidden.SourceIpBlocked``);
2. the action (``ApiNotSupport``, 404) and version (``InvalidVersion``);
3. the signature: V3 when an ``Authorization`` header is present, else V1 (`auth`);
4. gateway checks of the parameters: ``Missing<Name>``, more than 10 IDs
   (``InvalidParameter.ClientIdList``);
5. the account limit (``SystemOverFlow``, 403);
6. the service's checks: ``InstanceNotFound``, ``InvalidParameter.ClientId``;
7. injected faults and latency (`faults`); then the answer, from the `Fleet`.

Parameters come from the query string and, for a form-urlencoded body, the body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from fleetscan.emulator.answers import Answers, Refusal
from fleetscan.emulator.auth import Authenticator
from fleetscan.emulator.config import (
    ACTION_SINGLE,
    ACTIONS,
    API_VERSION,
    MAX_BATCH_SIZE,
    EmulatorConfig,
    KeyPair,
)
from fleetscan.emulator.control import EmulatorControl
from fleetscan.emulator.faults import FaultInjector
from fleetscan.emulator.fleet import Fleet
from fleetscan.emulator.stats import Stats, StatsSnapshot
from fleetscan.emulator.sts import StsService
from fleetscan.emulator.throttle import Throttle
from fleetscan.ids import client_id_problem

__all__ = ["EMULATOR", "Emulator", "create_app", "create_sts_app"]

_FORM = "application/x-www-form-urlencoded"
_LIST_PREFIX = "ClientIdList."


class Emulator:
    """The request pipeline and the state it works on.

    ``clock`` (seconds since the epoch) drives timestamps, windows, blocks, churn and
    caches; ``sleep`` waits out injected latency. Both default to the real thing.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self.control = EmulatorControl(config)
        if config.fleet_csv is not None:
            self.fleet = Fleet.from_csv(
                config.fleet_csv,
                seed=config.seed,
                churn_rate=config.churn_rate,
                batch_cache_seconds=config.batch_cache_seconds,
                clock=clock,
            )
        else:
            self.fleet = Fleet(
                seed=config.seed,
                online_ratio=config.online_ratio,
                churn_rate=config.churn_rate,
                batch_cache_seconds=config.batch_cache_seconds,
                clock=clock,
            )
        self.stats = Stats(count_client_ids=config.count_client_ids)
        self._auth = Authenticator(self.control)
        self._throttle = Throttle(self.control)
        self._faults = FaultInjector(self.control, seed=config.seed)
        self._answers = Answers(
            region=config.region, seed=config.seed, legacy_statuses=config.legacy_statuses
        )
        self._instances = frozenset(config.instance_ids)
        # STS shares the keys (it adds the ones it issues) and the signature checks.
        self.sts = (
            StsService(
                config.sts,
                control=self.control,
                auth=self._auth,
                clock=clock,
                sleep=sleep,
                seed=config.seed,
            )
            if config.sts is not None
            else None
        )

    def snapshot(self) -> StatsSnapshot:
        """The counters now (call on the emulator's loop)."""
        return self.stats.snapshot()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one API request."""
        now = self.clock()
        ip = request.remote or "unknown"
        headers = request.headers
        v3 = "Authorization" in headers
        body = await request.read() if request.body_exists else b""
        params: dict[str, str] = {}
        for name, value in request.query.items():
            params.setdefault(name, value)
        undecodable = None
        if body and headers.get("Content-Type", "").startswith(_FORM):
            try:
                for name, value in parse_qsl(body.decode(), keep_blank_values=True):
                    params.setdefault(name, value)
            except UnicodeDecodeError as exc:
                undecodable = exc
        action = headers.get("x-acs-action", "") if v3 else params.get("Action", "")
        counters = self.stats.request(action, ip, now)
        answers = self._answers
        try:
            self._throttle.check_ip(ip, action, now)
        except Refusal as refusal:
            counters.blocked += 1
            return answers.error(refusal.code, refusal.message)
        try:
            if undecodable is not None:
                raise undecodable
            if action not in ACTIONS:
                raise Refusal(
                    "ApiNotSupport",
                    f"The API {action!r} is not supported by OnsMqtt {API_VERSION}."
                    if action
                    else "The request names no Action.",
                )
            version = headers.get("x-acs-version") if v3 else params.get("Version")
            if version != API_VERSION:
                raise Refusal(
                    "InvalidVersion",
                    f"Specified parameter Version is not valid: {version!r}, "
                    f"expected {API_VERSION}.",
                )
            key = self._authenticate(request, v3, params, body, now)
            client_ids = self._gateway_check(action, params)
        except (Refusal, UnicodeDecodeError) as refusal:
            counters.rejected += 1
            return self._refused(refusal)
        try:
            self._throttle.admit(key.account, action, now)
        except Refusal as refusal:
            counters.throttled += 1
            return answers.error(
                refusal.code, refusal.message, retry_after_ms=refusal.retry_after_ms
            )
        try:
            self._service_check(params, client_ids)
        except Refusal as refusal:
            counters.rejected += 1
            return self._refused(refusal)
        stats = self.stats
        stats.queried(client_ids)
        fate = self._faults.fate(action, client_ids)
        if fate.faulted:
            counters.faulted += 1
            if fate.drop:
                counters.dropped += 1
        else:
            stats.success(counters, action, ip, now, len(client_ids))
            stats.answered(client_ids)
        if fate.delay > 0:
            await self._sleep(fate.delay)
        if fate.drop:
            # Close without a byte of answer, as a reset connection or a dead gateway.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fate.error is not None:
            return self._refused(fate.error)
        fleet = self.fleet
        if action == ACTION_SINGLE:
            return answers.single(fleet.is_online(client_ids[0], at=now))
        return answers.batch([(cid, fleet.batch_view(cid, at=now)) for cid in client_ids])

    def _authenticate(
        self, request: web.Request, v3: bool, params: dict[str, str], body: bytes, now: float
    ) -> KeyPair:
        if v3:
            return self._auth.check_v3(
                request.method, request.query.items(), request.headers, body, now
            )
        return self._auth.check_v1(request.method, params, now)

    def _gateway_check(self, action: str, params: dict[str, str]) -> list[str]:
        # Required parameters and sizes, checked before the request is admitted.
        if not params.get("InstanceId"):
            raise Refusal("MissingInstanceId", "InstanceId is mandatory for this action.")
        if action == ACTION_SINGLE:
            client_id = params.get("ClientId")
            if not client_id:
                raise Refusal("MissingClientId", "ClientId is mandatory for this action.")
            return [client_id]
        indexed: dict[int, str] = {}
        for name, value in params.items():
            if name.startswith(_LIST_PREFIX):
                suffix = name[len(_LIST_PREFIX) :]
                if not suffix.isdigit() or int(suffix) < 1:
                    raise Refusal(
                        "InvalidParameter.ClientIdList",
                        f"The specified parameter {name} is not valid: "
                        "ClientIdList.N counts from 1.",
                    )
                indexed[int(suffix)] = value
        if not indexed:
            raise Refusal("MissingClientIdList", "ClientIdList is mandatory for this action.")
        if len(indexed) > MAX_BATCH_SIZE:
            raise Refusal(
                "InvalidParameter.ClientIdList",
                f"The specified parameter ClientIdList holds {len(indexed)} client IDs; "
                f"at most {MAX_BATCH_SIZE} are allowed.",
            )
        if max(indexed) != len(indexed):
            raise Refusal(
                "InvalidParameter.ClientIdList",
                "The specified parameter ClientIdList is not valid: "
                "ClientIdList.1 to ClientIdList.N must all be present.",
            )
        return [indexed[i] for i in range(1, len(indexed) + 1)]

    def _service_check(self, params: dict[str, str], client_ids: list[str]) -> None:
        instance_id = params["InstanceId"]
        if instance_id not in self._instances:
            raise Refusal("InstanceNotFound", f"The specified instance {instance_id} is not found.")
        for client_id in client_ids:
            problem = client_id_problem(client_id)
            if problem is not None:
                raise Refusal(
                    "InvalidParameter.ClientId",
                    f"The specified parameter ClientId {client_id!r} is not valid: {problem}.",
                )

    def _refused(self, refusal: Refusal | UnicodeDecodeError) -> web.Response:
        if isinstance(refusal, UnicodeDecodeError):
            return self._answers.error(
                "InvalidParameter", "The request body is not UTF-8 form data."
            )
        return self._answers.error(
            refusal.code,
            refusal.message,
            status=refusal.status,
            retry_after_ms=refusal.retry_after_ms,
        )

    # --- /_emulator/ ----------------------------------------------------------------

    async def get_stats(self, request: web.Request) -> web.Response:
        """``GET /_emulator/stats[?client_ids=0]``."""
        with_ids = request.query.get("client_ids", "1") not in ("0", "false", "no")
        return _json(self.snapshot().as_dict(client_ids=with_ids))

    async def post_reset(self, request: web.Request) -> web.Response:
        """``POST /_emulator/reset``: zero the counters."""
        self.stats.reset()
        return _json({"reset": True})

    async def get_config(self, request: web.Request) -> web.Response:
        """``GET /_emulator/config``: the settings in force."""
        return _json(self.control.settings())

    async def post_config(self, request: web.Request) -> web.Response:
        """``POST /_emulator/config``: change settings (`EmulatorControl.apply`)."""
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            return _json(self.control.apply(changes))
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)

    async def get_fleet(self, request: web.Request) -> web.Response:
        """``GET /_emulator/fleet?ClientId=…``: the truth, and what a batch answers now."""
        client_id = request.query.get("ClientId", "")
        now = self.clock()
        return _json(
            {
                "ClientId": client_id,
                "OnlineStatus": self.fleet.is_online(client_id, at=now),
                "BatchOnlineStatus": self.fleet.batch_view(client_id, at=now),
            }
        )


# The `Emulator` behind an application made by `create_app`.
EMULATOR = web.AppKey("fleetscan_emulator", Emulator)


def create_app(
    config: EmulatorConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> web.Application:
    """An aiohttp application serving the emulator; ``app[EMULATOR]`` is its state."""
    emulator = Emulator(config or EmulatorConfig(), clock=clock, sleep=sleep)
    app = web.Application()
    app[EMULATOR] = emulator
    app.router.add_route("GET", "/", emulator.handle)
    app.router.add_route("POST", "/", emulator.handle)
    app.router.add_get("/_emulator/stats", emulator.get_stats)
    app.router.add_post("/_emulator/reset", emulator.post_reset)
    app.router.add_get("/_emulator/config", emulator.get_config)
    app.router.add_post("/_emulator/config", emulator.post_config)
    app.router.add_get("/_emulator/fleet", emulator.get_fleet)
    return app


def create_sts_app(emulator: Emulator) -> web.Application:
    """The application of ``emulator``'s STS (it must have been configured with one)."""
    if emulator.sts is None:
        raise ValueError("this emulator was configured without STS")
    app = web.Application()
    app[EMULATOR] = emulator
    app.router.add_route("GET", "/", emulator.sts.handle)
    app.router.add_route("POST", "/", emulator.sts.handle)
    return app


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

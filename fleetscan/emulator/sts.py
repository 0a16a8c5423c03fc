"""The emulator's STS: ``AssumeRole`` and ``AssumeRoleWithOIDC`` (``onsmqtt-api.md`` §7.1).

Served on a port of its own (`StsConfig`), at ``/``, GET or POST, parameters in the
query string or a form body. A request meets, in order:

1. a fault rule for its action, if one is armed (``Throttling.User`` on demand);
2. the action (``InvalidAction.NotFound``) and version (``InvalidVersion``);
3. for ``AssumeRole``, the V1 signature, checked by the API's own `Authenticator`
   against the emulator's keys, issued STS keys included (so a chain works, and an
   expired source is ``InvalidSecurityToken.Expired``); ``AssumeRoleWithOIDC`` is
   anonymous;
4. the parameters (``Missing<Name>``, ``InvalidParameter.<Name>``);
5. the role (``EntityNotExist.Role``), then who may assume it (``NoPermission``), or
   the OIDC provider (``EntityNotExist.OIDCProvider``) and token
   (``AuthenticationFail.OIDCToken``).

Then it issues an ``STS.`` key with a token, added to the keys the API accepts until
it expires. Codes Alibaba documents are used where known; the others are plausible
guesses (see the README). Refusals of a token quote it back on purpose: a real
server or proxy may, and the client must cut it out of every message.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from fleetscan.emulator.answers import MESSAGES, Refusal, RequestIds
from fleetscan.emulator.auth import Authenticator
from fleetscan.emulator.config import (
    STS_MIN_DURATION_SECONDS,
    STS_VERSION,
    FaultRule,
    KeyPair,
    StsConfig,
    StsRole,
)
from fleetscan.emulator.control import ArmedRule, EmulatorControl
from fleetscan.signing import format_timestamp

__all__ = ["STS_ACTIONS", "STS_STATUSES", "StsCall", "StsService", "StsStats"]

STS_ACTIONS = ("AssumeRole", "AssumeRoleWithOIDC")
# HTTP status per code; a code not listed is a 400.
STS_STATUSES: Mapping[str, int] = {
    "EntityNotExist.Role": 404,
    "EntityNotExist.OIDCProvider": 404,
    "InvalidAccessKeyId.NotFound": 404,
    "NoPermission": 403,
    "AuthenticationFail.OIDCToken": 401,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}
_JSON = "application/json;charset=utf-8"
_FORM = "application/x-www-form-urlencoded"
_SESSION_NAME = re.compile(r"[A-Za-z0-9.@_-]{2,64}")
_TOKEN_LENGTHS = range(4, 20_001)


@dataclass(frozen=True, slots=True, kw_only=True)
class StsCall:
    """What one request carried, for tests: where each parameter came from, no secret."""

    action: str
    method: str
    content_type: str
    query_names: tuple[str, ...]
    form_names: tuple[str, ...]
    role_arn: str | None
    session_name: str | None
    duration_seconds: str | None
    policy: str | None
    external_id: str | None
    access_key_id: str | None
    code: str | None  # None when credentials were issued


@dataclass(slots=True)
class StsStats:
    """Every request, in order, and what each action was answered."""

    calls: list[StsCall] = field(default_factory=list)

    def issued(self, action: str | None = None) -> int:
        """Credentials issued (for ``action``, or for both)."""
        return sum(1 for c in self.calls if c.code is None and action in (None, c.action))

    def codes(self) -> list[str]:
        """The codes of the refused requests, in order."""
        return [c.code for c in self.calls if c.code is not None]


class StsService:
    """STS's state (roles, fault rules, issued keys) and its request handler.

    ``clock`` (seconds since the epoch) is the API side's, so issued credentials
    expire on the same time line the API checks them on.
    """

    def __init__(
        self,
        config: StsConfig,
        *,
        control: EmulatorControl,
        auth: Authenticator,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.stats = StsStats()
        self._control = control
        self._auth = auth
        self._clock = clock
        self._sleep = sleep
        # Roles by ARN; tests may add and remove them while it runs.
        self._roles: dict[str, StsRole] = {r.arn: r for r in config.roles}
        # Deterministic faults for STS alone, tried in order.
        self._rules: list[ArmedRule] = []
        # Issued access key ID -> the role ARN it was issued for (a chain's principal).
        self._issued: dict[str, str] = {}
        # Every key issued, in order (tests look for their secrets in what a scan wrote).
        self.issued: list[KeyPair] = []
        self._rng = random.Random(f"sts:{seed}")
        # Seconds every answer takes (a far-away endpoint); tests may set it.
        self.latency = 0.0
        self._request_id = RequestIds(seed + 1)

    # --- control ------------------------------------------------------------------

    def add_rule(self, rule: FaultRule) -> None:
        """Fail the next ``rule.times`` requests (of ``rule.action``, or any) with its code."""
        self._rules = [*self._rules, ArmedRule(rule)]

    def set_role(self, role: StsRole) -> None:
        """Add or replace a role."""
        self._roles[role.arn] = role

    def remove_role(self, arn: str) -> None:
        """Delete a role: assuming it is ``EntityNotExist.Role`` from now on."""
        self._roles.pop(arn, None)

    # --- requests -----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one STS request."""
        now = self._clock()
        body = await request.read() if request.body_exists else b""
        content_type = request.headers.get("Content-Type", "")
        query = dict(request.query.items())
        form: dict[str, str] = {}
        if body and content_type.startswith(_FORM):
            try:
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                return self._error(Refusal("InvalidParameter", "The body is not UTF-8 form data."))
        params = {**form, **query}
        action = params.get("Action", "")
        call = _Call(action, request.method, content_type, query, form)
        rule = self._armed_rule(action)
        delay = self.latency + (rule.delay_ms / 1000 if rule is not None else 0.0)
        if delay > 0:
            await self._sleep(delay)
        try:
            if rule is not None:
                raise Refusal(rule.code, status=rule.status, retry_after_ms=rule.retry_after_ms)
            issued = self._serve(action, request.method, params, now)
        except Refusal as refusal:
            self.stats.calls.append(call.done(refusal.code))
            return self._error(refusal)
        self.stats.calls.append(call.done(None))
        return web.Response(body=orjson.dumps(issued), headers={"Content-Type": _JSON})

    def _armed_rule(self, action: str) -> FaultRule | None:
        """The first armed rule for ``action``, used up by one; None when none is."""
        for armed in self._rules:
            if armed.remaining > 0 and armed.rule.action in (None, action):
                armed.remaining -= 1
                return armed.rule
        return None

    def _serve(
        self, action: str, method: str, params: dict[str, str], now: float
    ) -> dict[str, object]:
        if action not in STS_ACTIONS:
            raise Refusal(
                "InvalidAction.NotFound",
                f"Specified api {action!r} is not found." if action else "No Action given.",
                status=404,
            )
        if params.get("Version") != STS_VERSION:
            raise Refusal(
                "InvalidVersion",
                f"Specified parameter Version is not valid: expected {STS_VERSION}.",
            )
        if action == "AssumeRole":
            key = self._auth.check_v1(method, params, now)
            role = self._role(params)
            self._check_trust(role, key, params)
        else:
            role = self._role(params)
            self._check_oidc(role, params)
        session_name = _required(params, "RoleSessionName")
        if not _SESSION_NAME.fullmatch(session_name):
            raise Refusal(
                "InvalidParameter.RoleSessionName",
                "The parameter RoleSessionName must be 2 to 64 of A-Z a-z 0-9 . @ - _.",
            )
        duration = _duration(params, role)
        policy = params.get("Policy")
        if policy:
            try:
                if not isinstance(orjson.loads(policy), dict):
                    raise ValueError
            except ValueError:
                raise Refusal(
                    "InvalidParameter.PolicyGrammar", "The policy is not a JSON object."
                ) from None
        return self._issue(role, session_name, duration, now, oidc=action != "AssumeRole")

    def _role(self, params: Mapping[str, str]) -> StsRole:
        arn = _required(params, "RoleArn")
        role = self._roles.get(arn)
        if role is None:
            raise Refusal("EntityNotExist.Role", f"The role not exists: {arn}.")
        return role

    def _check_trust(self, role: StsRole, key: KeyPair, params: Mapping[str, str]) -> None:
        principals = {key.access_key_id, self._issued.get(key.access_key_id)}
        if role.trusted and not principals & set(role.trusted):
            raise Refusal(
                "NoPermission",
                f"You are not authorized to do this action. The role {role.arn} does not "
                "trust the caller.",
            )
        if role.external_id is not None and params.get("ExternalId") != role.external_id:
            raise Refusal(
                "NoPermission",
                f"You are not authorized to do this action. The role {role.arn} needs its "
                "ExternalId.",
            )

    def _check_oidc(self, role: StsRole, params: Mapping[str, str]) -> None:
        provider = _required(params, "OIDCProviderArn")
        token = _required(params, "OIDCToken")
        if len(token) not in _TOKEN_LENGTHS:
            raise Refusal(
                "InvalidParameter.OIDCToken",
                f"The parameter OIDCToken is {len(token)} characters long, not 4 to 20000.",
            )
        if role.oidc_provider_arn != provider:
            raise Refusal(
                "EntityNotExist.OIDCProvider",
                f"The OIDC provider {provider} does not exist or is not trusted by {role.arn}.",
            )
        if token not in role.oidc_tokens:
            # Quoted back on purpose (see the module's docstring).
            raise Refusal(
                "AuthenticationFail.OIDCToken",
                f"The OIDC token {token} is not valid for the provider {provider}.",
            )

    def _issue(
        self, role: StsRole, session_name: str, duration: int, now: float, *, oidc: bool
    ) -> dict[str, object]:
        lifetime = self.config.lifetime_seconds or duration
        # Whole seconds: the Expiration the client reads is the instant the API enforces.
        expires_at = float(math.floor(now + lifetime))
        key_id = f"STS.{self._hex(24)}"
        secret = self._hex(40)
        token = f"CAIS{self._hex(96)}"
        key = KeyPair(
            access_key_id=key_id,
            secret=secret,
            security_token=token,
            expires_at=expires_at,
            account=role.account,
        )
        self._control.add_key(key)
        self.issued.append(key)
        self._issued[key_id] = role.arn
        uid = role.arn.removeprefix("acs:ram::").split(":", 1)[0]
        name = role.arn.rsplit("/", 1)[-1]
        answer: dict[str, object] = {
            "RequestId": self._request_id(),
            "AssumedRoleUser": {
                "Arn": f"acs:ram::{uid}:assumed-role/{name}/{session_name}",
                "AssumedRoleId": f"3{self._hex(17)}:{session_name}",
            },
            "Credentials": {
                "AccessKeyId": key_id,
                "AccessKeySecret": secret,
                "SecurityToken": token,
                "Expiration": format_timestamp(datetime.fromtimestamp(expires_at, UTC)),
            },
        }
        if oidc:
            answer["OIDCTokenInfo"] = {
                "Subject": "system:serviceaccount:fleet:fleetscan",
                "Issuer": "https://oidc-ack.emulator.invalid",
                "ClientIds": "sts.aliyuncs.com",
            }
        return answer

    def _hex(self, n: int) -> str:
        return f"{self._rng.getrandbits(4 * n):0{n}x}"

    def _error(self, refusal: Refusal) -> web.Response:
        request_id = self._request_id()
        body = orjson.dumps(
            {
                "RequestId": request_id,
                "HostId": "sts.aliyuncs.com",
                "Code": refusal.code,
                "Message": refusal.message or MESSAGES.get(refusal.code, f"{refusal.code}."),
                "Recommend": (
                    "https://api.alibabacloud.com/troubleshoot"
                    f"?q={refusal.code}&product=Sts&requestId={request_id}"
                ),
            }
        )
        status = refusal.status or STS_STATUSES.get(refusal.code, 400)
        headers = {"Content-Type": _JSON}
        if refusal.retry_after_ms:
            headers["x-acs-retry-after"] = str(refusal.retry_after_ms)
        return web.Response(body=body, status=status, headers=headers)


class _Call:
    """An `StsCall` in the making: what arrived, before the answer is known."""

    __slots__ = ("action", "content_type", "form", "method", "query")

    def __init__(
        self,
        action: str,
        method: str,
        content_type: str,
        query: Mapping[str, str],
        form: Mapping[str, str],
    ) -> None:
        self.action = action
        self.method = method
        self.content_type = content_type
        self.query = query
        self.form = form

    def done(self, code: str | None) -> StsCall:
        params = {**self.form, **self.query}
        return StsCall(
            action=self.action,
            method=self.method,
            content_type=self.content_type,
            query_names=tuple(sorted(self.query)),
            form_names=tuple(sorted(self.form)),
            role_arn=params.get("RoleArn"),
            session_name=params.get("RoleSessionName"),
            duration_seconds=params.get("DurationSeconds"),
            policy=params.get("Policy"),
            external_id=params.get("ExternalId"),
            access_key_id=params.get("AccessKeyId"),
            code=code,
        )


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise Refusal(f"Missing{name}", f"{name} is mandatory for this action.")
    return value


def _duration(params: Mapping[str, str], role: StsRole) -> int:
    given = params.get("DurationSeconds")
    if not given:
        return min(3600, role.max_session_seconds)
    if not given.isdigit() or not (
        STS_MIN_DURATION_SECONDS <= int(given) <= role.max_session_seconds
    ):
        raise Refusal(
            "InvalidParameter.DurationSeconds",
            f"The parameter DurationSeconds must be {STS_MIN_DURATION_SECONDS} to "
            f"{role.max_session_seconds} for the role {role.arn}.",
        )
    return int(given)

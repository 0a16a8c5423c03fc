"""The emulator's settings: values only, with their defaults as named constants.

`EmulatorConfig` is what starts an emulator. `Limits` and `Faults` are the parts a
running emulator can change (see `EmulatorControl`); `KeyPair` is one accepted
credential and `FaultRule` one deterministic fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fleetscan.limits import (
    API_VERSION,
    BATCH_API,
    BATCH_SIZE,
    IP_SAFE_QPS,
    MAX_QPS,
    SINGLE_API,
)

__all__ = [
    "ACTIONS",
    "ACTION_BATCH",
    "ACTION_SINGLE",
    "API_VERSION",
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_ACCOUNT",
    "DEFAULT_HOST",
    "DEFAULT_INSTANCE_ID",
    "DEFAULT_IP_BLOCK_SECONDS",
    "DEFAULT_IP_LIMIT",
    "DEFAULT_IP_LIMIT_SCOPE",
    "DEFAULT_KEY",
    "DEFAULT_ONLINE_RATIO",
    "DEFAULT_PORT",
    "DEFAULT_QPS_BATCH",
    "DEFAULT_QPS_SINGLE",
    "DEFAULT_REGION",
    "DEFAULT_SEED",
    "DROP",
    "IP_LIMIT_SCOPES",
    "MAX_BATCH_SIZE",
    "SIGNATURE_WINDOW_SECONDS",
    "STS_MAX_DURATION_SECONDS",
    "STS_MIN_DURATION_SECONDS",
    "STS_VERSION",
    "EmulatorConfig",
    "FaultRule",
    "Faults",
    "KeyPair",
    "Limits",
    "StsConfig",
    "StsRole",
]

# The service's facts, shared with the client (fleetscan.limits).
ACTION_SINGLE = SINGLE_API
ACTION_BATCH = BATCH_API
ACTIONS = (ACTION_SINGLE, ACTION_BATCH)
MAX_BATCH_SIZE = BATCH_SIZE
# Timestamps this far off are refused, and nonces are remembered this long.
SIGNATURE_WINDOW_SECONDS = 15 * 60

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 0
# A documented throwaway credential: it only ever opens a local emulator.
DEFAULT_ACCESS_KEY_ID = "FLEETSCAN_DEMO_KEY"
DEFAULT_ACCESS_KEY_SECRET = "fleetscan-demo-secret-not-a-real-key"  # noqa: S105
DEFAULT_ACCOUNT = "emulator-account"
DEFAULT_INSTANCE_ID = "mqtt-cn-emulator"
DEFAULT_REGION = "cn-hangzhou"
DEFAULT_SEED = 0
DEFAULT_ONLINE_RATIO = 0.5
DEFAULT_QPS_SINGLE = MAX_QPS["single"]
DEFAULT_QPS_BATCH = MAX_QPS["batch"]
DEFAULT_IP_LIMIT = IP_SAFE_QPS
# What the per-IP limit counts: every API together ("all", the newer English page and
# the safe reading) or each API on its own ("action", the older pages).
IP_LIMIT_SCOPES = ("all", "action")
DEFAULT_IP_LIMIT_SCOPE = "all"
# The real block time is undocumented; a minute is long enough to hurt a scan.
DEFAULT_IP_BLOCK_SECONDS = 60.0

# STS (``onsmqtt-api.md`` §7.1): its version, and the bounds of DurationSeconds (a
# role's maximum is at most 12 hours; the default maximum is one hour).
STS_VERSION = "2015-04-01"
STS_MIN_DURATION_SECONDS = 900
STS_MAX_DURATION_SECONDS = 3600

# The FaultRule code that closes the connection without any response.
DROP = "Drop"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """One credential the emulator accepts.

    With ``security_token`` it is an STS key: requests must carry that token, and
    ``expires_at`` (seconds since the epoch, on the emulator's clock) ends it.
    Keys of one ``account`` share that account's limits.
    """

    access_key_id: str
    secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    account: str = DEFAULT_ACCOUNT


DEFAULT_KEY = KeyPair(access_key_id=DEFAULT_ACCESS_KEY_ID, secret=DEFAULT_ACCESS_KEY_SECRET)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The service's rate limits.

    ``qps_single``/``qps_batch`` bind per account and action on every sliding
    one-second window. ``ip_limit`` (0 = off) binds per source IP, over all APIs
    together (``ip_limit_scope="all"``) or per API (``"action"``); an IP over it is
    blocked for ``ip_block_seconds``. ``retry_after_ms`` > 0 adds
    ``x-acs-retry-after`` to throttled answers.
    """

    qps_single: int = DEFAULT_QPS_SINGLE
    qps_batch: int = DEFAULT_QPS_BATCH
    ip_limit: int = DEFAULT_IP_LIMIT
    ip_limit_scope: str = DEFAULT_IP_LIMIT_SCOPE
    ip_block_seconds: float = DEFAULT_IP_BLOCK_SECONDS
    retry_after_ms: int = 0

    def __post_init__(self) -> None:
        if self.qps_single < 1 or self.qps_batch < 1:
            raise ValueError("qps_single and qps_batch must be at least 1")
        if self.ip_limit < 0 or self.ip_block_seconds < 0 or self.retry_after_ms < 0:
            raise ValueError("ip_limit, ip_block_seconds and retry_after_ms must not be negative")
        if self.ip_limit_scope not in IP_LIMIT_SCOPES:
            raise ValueError(
                f"ip_limit_scope must be one of {', '.join(IP_LIMIT_SCOPES)}, "
                f"not {self.ip_limit_scope!r}"
            )

    def for_action(self, action: str) -> int:
        """The account limit of ``action``."""
        return self.qps_batch if action == ACTION_BATCH else self.qps_single


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Random faults and latency, drawn per request from the seeded generator.

    Rates are probabilities per request that passed authentication and throttling.
    ``overflow_retry_after_share`` of injected ``SystemOverFlow`` answers carry
    ``x-acs-retry-after: overflow_retry_after_ms``. Latency is ``latency_ms`` plus a
    uniform ``[0, jitter_ms)``, plus ``slow_ms`` with probability ``slow_rate``.
    """

    error_rate: float = 0.0
    unavailable_rate: float = 0.0
    overflow_rate: float = 0.0
    overflow_retry_after_share: float = 0.0
    overflow_retry_after_ms: int = 100
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 0.0

    def __post_init__(self) -> None:
        rates = {
            "error_rate": self.error_rate,
            "unavailable_rate": self.unavailable_rate,
            "overflow_rate": self.overflow_rate,
            "overflow_retry_after_share": self.overflow_retry_after_share,
            "drop_rate": self.drop_rate,
            "slow_rate": self.slow_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {rate}")
        if self.error_rate + self.unavailable_rate + self.overflow_rate + self.drop_rate > 1.0:
            raise ValueError("error, unavailable, overflow and drop rates add up to more than 1")
        if min(self.latency_ms, self.jitter_ms, self.slow_ms, self.overflow_retry_after_ms) < 0:
            raise ValueError("latencies and retry-after must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """The first ``times`` matching attempts fail with ``code``.

    An attempt matches when its action is ``action`` (None = either) and it carries
    ``client_id`` (None = any ID). ``code`` is an API error code (its usual HTTP
    status unless ``status`` is given) or `DROP`. ``delay_ms`` delays the answer.
    """

    code: str
    times: int = 1
    client_id: str | None = None
    action: str | None = None
    status: int | None = None
    retry_after_ms: int | None = None
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.code or self.times < 0 or self.delay_ms < 0:
            raise ValueError("a fault rule needs a code, times >= 0 and delay_ms >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class StsRole:
    """A RAM role the emulator's STS lets callers assume.

    ``arn`` is ``acs:ram::<account uid>:role/<name>``. ``AssumeRole`` is allowed to
    the access key IDs in ``trusted`` and to the keys issued for the role ARNs in it
    (a chain); empty ``trusted`` lets any key the emulator knows assume it. When
    ``external_id`` is set, ``AssumeRole`` must give it. ``AssumeRoleWithOIDC`` is
    accepted for ``oidc_provider_arn`` with one of ``oidc_tokens``. Issued keys
    belong to ``account`` (the OnsMqtt limits are per account).
    """

    arn: str
    trusted: tuple[str, ...] = ()
    external_id: str | None = None
    oidc_provider_arn: str | None = None
    oidc_tokens: tuple[str, ...] = field(default=(), repr=False)
    max_session_seconds: int = STS_MAX_DURATION_SECONDS
    account: str = DEFAULT_ACCOUNT

    def __post_init__(self) -> None:
        if not self.arn.startswith("acs:ram::") or ":role/" not in self.arn:
            raise ValueError(f"a role ARN looks like acs:ram::<uid>:role/<name>, not {self.arn!r}")
        if self.max_session_seconds < STS_MIN_DURATION_SECONDS:
            raise ValueError(f"max_session_seconds must be at least {STS_MIN_DURATION_SECONDS}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StsConfig:
    """STS, served on a port of its own (0 picks a free one) next to the API.

    Issued credentials expire after the DurationSeconds asked for, or after
    ``lifetime_seconds`` when that is set (a short life, for tests of refreshing);
    the API side refuses them from then on (``InvalidSecurityToken.Expired``).
    """

    roles: tuple[StsRole, ...] = ()
    port: int = 0
    lifetime_seconds: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, not {self.port}")
        if self.lifetime_seconds is not None and not self.lifetime_seconds >= 1:
            raise ValueError("lifetime_seconds must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    """Everything an emulator starts with.

    The fleet is ``online_ratio`` of all valid IDs, chosen by ``seed``, unless
    ``fleet_csv`` (``client_id,online`` lines) names it. ``churn_rate`` is the share
    of IDs whose status is drawn afresh each second; ``batch_cache_seconds`` > 0
    makes batch answers come from a snapshot refreshed that often. ``sts`` serves
    STS too (`StsConfig`).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    keys: tuple[KeyPair, ...] = (DEFAULT_KEY,)
    instance_ids: tuple[str, ...] = (DEFAULT_INSTANCE_ID,)
    region: str = DEFAULT_REGION
    seed: int = DEFAULT_SEED
    online_ratio: float = DEFAULT_ONLINE_RATIO
    fleet_csv: Path | None = None
    churn_rate: float = 0.0
    batch_cache_seconds: float = 0.0
    limits: Limits = Limits()
    faults: Faults = Faults()
    rules: tuple[FaultRule, ...] = ()
    legacy_statuses: bool = False
    # Counting every client ID costs memory per distinct ID; benchmarks may turn it off.
    count_client_ids: bool = True
    tls: bool = False
    tls_dir: Path | None = None
    # STS on a port of its own, when set.
    sts: StsConfig | None = None

    def __post_init__(self) -> None:
        if not self.keys or not self.instance_ids:
            raise ValueError("the emulator needs at least one key pair and one instance ID")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, not {self.port}")
        if not 0.0 <= self.online_ratio <= 1.0:
            raise ValueError(f"online_ratio must be within 0..1, not {self.online_ratio}")
        if self.churn_rate < 0 or self.batch_cache_seconds < 0:
            raise ValueError("churn_rate and batch_cache_seconds must not be negative")

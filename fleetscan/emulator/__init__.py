"""A local emulator of the OnsMqtt session APIs, for tests, benchmarks and demos.

It serves ``QuerySessionByClientId`` and ``BatchQuerySessionByClientIds`` on
loopback as strictly as the docs describe the real service: V1 and V3 signatures,
15-minute timestamps and nonces, per-account and per-IP limits on every sliding
second, real error codes and statuses, plus injected faults and counters a test can
check; with `StsConfig`, STS's ``AssumeRole`` and ``AssumeRoleWithOIDC`` on a port of
their own. See `run_emulator`, `run_emulator_in_thread` and `EmulatorConfig`.
"""

from fleetscan.emulator.app import EMULATOR, Emulator, create_app
from fleetscan.emulator.config import (
    ACTION_BATCH,
    ACTION_SINGLE,
    ACTIONS,
    API_VERSION,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_ACCOUNT,
    DEFAULT_HOST,
    DEFAULT_INSTANCE_ID,
    DEFAULT_IP_BLOCK_SECONDS,
    DEFAULT_IP_LIMIT,
    DEFAULT_KEY,
    DEFAULT_ONLINE_RATIO,
    DEFAULT_PORT,
    DEFAULT_QPS_BATCH,
    DEFAULT_QPS_SINGLE,
    DEFAULT_REGION,
    DEFAULT_SEED,
    DROP,
    MAX_BATCH_SIZE,
    EmulatorConfig,
    FaultRule,
    Faults,
    KeyPair,
    Limits,
    StsConfig,
    StsRole,
)
from fleetscan.emulator.control import EmulatorControl
from fleetscan.emulator.fleet import Fleet
from fleetscan.emulator.server import (
    RunningEmulator,
    ThreadedEmulator,
    run_emulator,
    run_emulator_in_thread,
)
from fleetscan.emulator.stats import ActionStats, IpStats, StatsSnapshot
from fleetscan.emulator.sts import StsCall, StsService, StsStats

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
    "DEFAULT_KEY",
    "DEFAULT_ONLINE_RATIO",
    "DEFAULT_PORT",
    "DEFAULT_QPS_BATCH",
    "DEFAULT_QPS_SINGLE",
    "DEFAULT_REGION",
    "DEFAULT_SEED",
    "DROP",
    "EMULATOR",
    "MAX_BATCH_SIZE",
    "ActionStats",
    "Emulator",
    "EmulatorConfig",
    "EmulatorControl",
    "FaultRule",
    "Faults",
    "Fleet",
    "IpStats",
    "KeyPair",
    "Limits",
    "RunningEmulator",
    "StatsSnapshot",
    "StsCall",
    "StsConfig",
    "StsRole",
    "StsService",
    "StsStats",
    "ThreadedEmulator",
    "create_app",
    "run_emulator",
    "run_emulator_in_thread",
]

"""``fleetscan emulator``: serve the emulator until SIGINT or SIGTERM.

It prints ``name: value`` lines to stdout (``url``, ``instance_id``, ``region``,
``access_key_id``, ``ca_file`` with ``--tls``, ``sts_url`` with ``--sts-role``, and
``access_key_secret`` only when it is the documented demo secret), then serves. The
secret is best given in ``FLEETSCAN_EMULATOR_SECRET`` rather than on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from fleetscan.emulator.config import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_HOST,
    DEFAULT_INSTANCE_ID,
    DEFAULT_IP_BLOCK_SECONDS,
    DEFAULT_IP_LIMIT,
    DEFAULT_ONLINE_RATIO,
    DEFAULT_PORT,
    DEFAULT_QPS_BATCH,
    DEFAULT_QPS_SINGLE,
    DEFAULT_REGION,
    DEFAULT_SEED,
    EmulatorConfig,
    Faults,
    KeyPair,
    Limits,
    StsConfig,
    StsRole,
)
from fleetscan.emulator.server import run_emulator
from fleetscan.endpoints import is_loopback

__all__ = ["SECRET_ENV", "add_arguments", "config_from_args", "exposure_warning", "run"]

SECRET_ENV = "FLEETSCAN_EMULATOR_SECRET"  # noqa: S105 - the variable's name, not a secret


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    net = parser.add_argument_group("where it listens")
    net.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    net.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway CA")
    net.add_argument("--tls-dir", type=Path, help="where to write the CA file (default: temp)")

    acct = parser.add_argument_group("what it accepts")
    acct.add_argument("--access-key-id", default=DEFAULT_ACCESS_KEY_ID)
    acct.add_argument(
        "--access-key-secret",
        help=f"prefer the {SECRET_ENV} variable (default: the documented demo secret)",
    )
    acct.add_argument(
        "--instance-id",
        action="append",
        help=f"repeatable (default {DEFAULT_INSTANCE_ID})",
    )
    acct.add_argument("--region", default=DEFAULT_REGION)

    fleet = parser.add_argument_group("the fleet")
    fleet.add_argument("--seed", type=int, default=DEFAULT_SEED)
    fleet.add_argument("--online-ratio", type=float, default=DEFAULT_ONLINE_RATIO)
    fleet.add_argument("--fleet-csv", type=Path, help="client_id,online lines")
    fleet.add_argument("--churn-rate", type=float, default=0.0, help="share redrawn per second")
    fleet.add_argument("--batch-cache-seconds", type=float, default=0.0)

    lim = parser.add_argument_group("limits")
    lim.add_argument("--qps-single", type=int, default=DEFAULT_QPS_SINGLE)
    lim.add_argument("--qps-batch", type=int, default=DEFAULT_QPS_BATCH)
    lim.add_argument("--ip-limit", type=int, default=DEFAULT_IP_LIMIT, help="0 turns it off")
    lim.add_argument(
        "--ip-limit-per-api",
        action="store_true",
        help="count the per-IP limit per API (older docs), not all APIs together",
    )
    lim.add_argument("--ip-block-seconds", type=float, default=DEFAULT_IP_BLOCK_SECONDS)
    lim.add_argument("--retry-after-ms", type=int, default=0, help="0 sends no hint")
    lim.add_argument(
        "--legacy-statuses", action="store_true", help="500 for SystemOverFlow and InternalError"
    )

    flt = parser.add_argument_group("faults")
    flt.add_argument("--error-rate", type=float, default=0.0, help="InternalError")
    flt.add_argument("--unavailable-rate", type=float, default=0.0, help="ServiceUnavailable")
    flt.add_argument("--overflow-rate", type=float, default=0.0, help="SystemOverFlow")
    flt.add_argument("--overflow-retry-after-share", type=float, default=0.0)
    flt.add_argument("--drop-rate", type=float, default=0.0, help="close without answering")
    flt.add_argument("--latency-ms", type=float, default=0.0)
    flt.add_argument("--jitter-ms", type=float, default=0.0)
    flt.add_argument("--slow-rate", type=float, default=0.0)
    flt.add_argument("--slow-ms", type=float, default=0.0)

    sts = parser.add_argument_group("STS (on a port of its own, when a role is given)")
    sts.add_argument(
        "--sts-role", action="append", metavar="ARN", help="a role any key may assume; repeatable"
    )
    sts.add_argument("--sts-port", type=int, default=0, help="0 picks a free port")
    sts.add_argument("--sts-oidc-provider", metavar="ARN", help="the OIDC provider the roles trust")
    sts.add_argument(
        "--sts-oidc-token-file",
        type=Path,
        metavar="PATH",
        help="the OIDC token accepted (read from a file: it is a secret)",
    )
    sts.add_argument(
        "--sts-lifetime", type=float, metavar="SECONDS", help="issued keys expire this soon"
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The `EmulatorConfig` the options ask for; ValueError when they cannot work."""
    secret = args.access_key_secret or os.environ.get(SECRET_ENV) or DEFAULT_ACCESS_KEY_SECRET
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        keys=(KeyPair(access_key_id=args.access_key_id, secret=secret),),
        instance_ids=tuple(args.instance_id or (DEFAULT_INSTANCE_ID,)),
        region=args.region,
        seed=args.seed,
        online_ratio=args.online_ratio,
        fleet_csv=args.fleet_csv,
        churn_rate=args.churn_rate,
        batch_cache_seconds=args.batch_cache_seconds,
        limits=Limits(
            qps_single=args.qps_single,
            qps_batch=args.qps_batch,
            ip_limit=args.ip_limit,
            ip_limit_scope="action" if args.ip_limit_per_api else "all",
            ip_block_seconds=args.ip_block_seconds,
            retry_after_ms=args.retry_after_ms,
        ),
        faults=Faults(
            error_rate=args.error_rate,
            unavailable_rate=args.unavailable_rate,
            overflow_rate=args.overflow_rate,
            overflow_retry_after_share=args.overflow_retry_after_share,
            drop_rate=args.drop_rate,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            slow_rate=args.slow_rate,
            slow_ms=args.slow_ms,
        ),
        legacy_statuses=args.legacy_statuses,
        tls=args.tls,
        tls_dir=args.tls_dir,
        sts=_sts_config(args),
    )


def _sts_config(args: argparse.Namespace) -> StsConfig | None:
    if not args.sts_role:
        if args.sts_oidc_provider or args.sts_oidc_token_file or args.sts_lifetime:
            raise ValueError("the --sts-* options need at least one --sts-role")
        return None
    if bool(args.sts_oidc_provider) != bool(args.sts_oidc_token_file):
        raise ValueError("--sts-oidc-provider and --sts-oidc-token-file go together")
    tokens: tuple[str, ...] = ()
    if args.sts_oidc_token_file:
        tokens = (args.sts_oidc_token_file.read_text(encoding="utf-8").strip(),)
    roles = tuple(
        StsRole(arn=arn, oidc_provider_arn=args.sts_oidc_provider, oidc_tokens=tokens)
        for arn in args.sts_role
    )
    return StsConfig(roles=roles, port=args.sts_port, lifetime_seconds=args.sts_lifetime)


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 then, 2 for bad options, 1 when it cannot serve."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"fleetscan emulator: {exc}", file=err)
        return 2
    try:
        asyncio.run(_serve(config, out, err))
    except (OSError, RuntimeError) as exc:
        print(f"fleetscan emulator: cannot serve: {exc}", file=err)
        return 1
    return 0


def exposure_warning(host: str) -> str | None:
    """What to say when the emulator listens beyond loopback (the client's rule too)."""
    if is_loopback(host):
        return None
    return (
        f"warning: listening on {host}, reachable beyond this machine; the "
        "emulator is a test tool with no real security"
    )


async def _serve(config: EmulatorConfig, out: TextIO, err: TextIO) -> None:
    warning = exposure_warning(config.host)
    if warning:
        print(warning, file=err)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_emulator(config) as emu:
            key = config.keys[0]
            lines = [
                # Without the trailing slash: URL/_emulator/stats must not become //.
                f"url: {emu.url.rstrip('/')}",
                *(f"instance_id: {i}" for i in config.instance_ids),
                f"region: {config.region}",
                f"access_key_id: {key.access_key_id}",
            ]
            # Only the documented demo secret is shown; a real one never is.
            if key.secret == DEFAULT_ACCESS_KEY_SECRET:
                lines.append(f"access_key_secret: {key.secret}")
            if emu.ca_file is not None:
                lines.append(f"ca_file: {emu.ca_file}")
            if emu.sts_url is not None:
                lines.append(f"sts_url: {emu.sts_url}")
            print("\n".join(lines), file=out, flush=True)
            print("serving; stop with Ctrl-C or SIGTERM", file=err, flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

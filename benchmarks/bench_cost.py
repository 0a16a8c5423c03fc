"""Cost per call: calls/s and client CPU per call, fleetscan against the official SDK.

    python benchmarks/bench_cost.py [--calls 10000] [--repeat 3] [--protocol https ...]
    python benchmarks/bench_cost.py --profile fleetscan.prof   # cProfile one fleetscan run

One emulator per protocol (limits off: ``--qps-single 100000 --ip-limit 0``, no
latency) runs in its own process; each client runs in a fresh child process over the
same IDs, in turn, ``--repeat`` times (medians are reported). The child measures its
own wall time and CPU (``time.process_time``: every thread of the process) around the
calls only, after a short warm-up, so imports and set-up are not counted:

- ``fleetscan``: the real scan path, `ScanJob.run` (as the command runs it) with the
  client from `connect()`, the retry policy, a `RateLimiter` (at 1,000,000/s so it
  paces nothing but is still acquired per attempt) and a `RecordWriter` serialising
  every record to /dev/null. The settings refuse more than the account's 500/s unless
  told the account allows more (``account_qps``), as this emulator does.
- ``client-only``: fleetscan's `OnsMqttClient.query_session` alone from ``--concurrency``
  tasks (no scanner, limiter, retry or records): what the HTTP call and signing cost,
  so the difference to ``fleetscan`` is what the scan machinery around it costs.
- ``sdk-async``: the official SDK's ``query_session_by_client_id_async`` under an
  ``asyncio.Semaphore``, as a user would write it.
- ``sdk-sync``: the official SDK's ``query_session_by_client_id`` in a thread pool.

All three keep ``--concurrency`` calls in flight (32: within the sync SDK's pool of 40
connections, so none is thrown away). Over HTTPS every client trusts the emulator's
throwaway CA (``--ca-bundle`` / ``Config(ca=...)``); verification stays on.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from emulator_process import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    INSTANCE_ID,
    REGION,
    ROOT,
    EmulatorProcess,
    child_env,
)
from figures import Figure, median, render
from fleet_ids import client_ids

__all__ = ["CLIENTS", "PROTOCOLS", "CostRun", "run", "run_client"]

CLIENTS = ("fleetscan", "client-only", "sdk-async", "sdk-sync")
PROTOCOLS = ("https", "http")
CONCURRENCY = 32
# Calls made before measuring (first connections, code run the first time), at most.
WARM_UP_CALLS = 200
# The official async client over HTTPS costs ~25 ms of CPU a call: it gets this share of
# the calls (the first IDs of the same list), or one run would take minutes.
SLOW_SHARE = {("sdk-async", "https"): 10}
UNLIMITED = ("--qps-single", "100000", "--qps-batch", "100000", "--ip-limit", "0")
# fleetscan's limiter at this rate never makes a call wait, but is still acquired.
UNPACED_QPS = 1_000_000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CostRun:
    """One client's calls in one child process."""

    client: str
    protocol: str
    calls: int
    ok: int
    wall: float
    cpu: float
    user: float
    system: float
    server_cpu: float | None

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.wall

    @property
    def cpu_per_call(self) -> float:
        return self.cpu / self.calls

    @property
    def calls_per_cpu_second(self) -> float:
        """Calls one core would sustain if the client were the only limit."""
        return self.calls / self.cpu


# --- the parent: emulators, children, figures -------------------------------------------


def run_client(
    client: str, emu: EmulatorProcess, protocol: str, calls: int, *, profile: str | None = None
) -> CostRun:
    """Run ``client`` in a fresh process against ``emu``; what it measured."""
    args = [
        sys.executable,
        __file__,
        "--child",
        client,
        "--url",
        emu.url,
        "--calls",
        str(calls),
    ]
    if emu.ca_file:
        args += ["--ca", emu.ca_file]
    if profile:
        args += ["--profile", profile]
    before = emu.cpu_seconds()
    done = subprocess.run(
        args,
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=calls / 50 + 120,
        check=False,
    )
    after = emu.cpu_seconds()
    if done.returncode != 0:
        raise RuntimeError(f"{client} over {protocol} failed:\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    server = None if before is None or after is None else after - before
    return CostRun(client=client, protocol=protocol, server_cpu=server, **data)


def run(
    *,
    calls: int = 10_000,
    repeat: int = 3,
    protocols: Iterable[str] = PROTOCOLS,
    clients: Iterable[str] = CLIENTS,
    log: Callable[[str], None] | None = None,
) -> list[Figure]:
    """Every client over every protocol, ``repeat`` times in turn; the figures."""
    clients = tuple(clients)
    figures: list[Figure] = []
    for protocol in protocols:
        runs: dict[str, list[CostRun]] = {c: [] for c in clients}
        with EmulatorProcess(*UNLIMITED, tls=protocol == "https") as emu:
            for i in range(repeat):
                for client in clients:
                    share = SLOW_SHARE.get((client, protocol), 1)
                    n = max(10, calls // share)
                    if log:
                        log(f"cost: {client} over {protocol}, run {i + 1}/{repeat}, {n} calls")
                    runs[client].append(run_client(client, emu, protocol, n))
        figures += figures_for(protocol, runs)
    return figures


def figures_for(protocol: str, runs: dict[str, list[CostRun]]) -> list[Figure]:
    """Per client: calls/s, CPU per call, calls per CPU-second; fleetscan's ratios."""
    figures = []
    per_cpu_s = {c: median(r.calls_per_cpu_second for r in rs) for c, rs in runs.items()}
    for client, rs in runs.items():
        wall = median(r.calls_per_second for r in rs)
        cpu_us = median(r.cpu_per_call for r in rs) * 1e6
        user_us = median(r.user / r.calls for r in rs) * 1e6
        sys_us = median(r.system / r.calls for r in rs) * 1e6
        server = [r.server_cpu / r.calls for r in rs if r.server_cpu is not None]
        server_text = f"; emulator {median(server) * 1e6:.0f} us/call" if server else ""
        failed = sum(r.calls - r.ok for r in rs)
        calls = rs[0].calls
        fleetscan = client == "fleetscan"
        figures.append(
            Figure(
                name=f"cost {protocol} {client}: calls/s on one core (1 / CPU per call)",
                target=">= 2000" if fleetscan else "",
                measured=(
                    f"{per_cpu_s[client]:,.0f} ({cpu_us:.0f} us CPU/call: user {user_us:.0f}, "
                    f"sys {sys_us:.0f}; {wall:,.0f} calls/s wall; {calls:,} calls{server_text}"
                    + (f"; {failed} FAILED calls" if failed else "")
                    + ")"
                ),
                passed=(per_cpu_s[client] >= 2000 and failed == 0) if fleetscan else None,
                data={
                    "calls_per_cpu_second": per_cpu_s[client],
                    "calls_per_second": wall,
                    "cpu_us_per_call": cpu_us,
                    "runs": [_as_dict(r) for r in rs],
                },
            )
        )
    if "fleetscan" in per_cpu_s:
        for baseline in ("sdk-async", "sdk-sync"):
            if baseline not in per_cpu_s:
                continue
            ratio = per_cpu_s["fleetscan"] / per_cpu_s[baseline]
            wall_ratio = median(r.calls_per_second for r in runs["fleetscan"]) / median(
                r.calls_per_second for r in runs[baseline]
            )
            target = protocol == "https" and baseline == "sdk-async"
            figures.append(
                Figure(
                    name=f"cost {protocol}: fleetscan / {baseline}, calls per CPU-second",
                    target=">= 5x" if target else "",
                    measured=f"{ratio:.1f}x (wall calls/s {wall_ratio:.1f}x)",
                    passed=ratio >= 5 if target else None,
                    data={"ratio": ratio, "wall_ratio": wall_ratio},
                )
            )
    return figures


def _as_dict(r: CostRun) -> dict[str, Any]:
    return {
        "calls": r.calls,
        "ok": r.ok,
        "wall": r.wall,
        "cpu": r.cpu,
        "user": r.user,
        "system": r.system,
        "server_cpu": r.server_cpu,
    }


# --- the children: one client each ------------------------------------------------------


class _Meter:
    """Wall time and this process's CPU (all threads) between start() and stop()."""

    def start(self) -> None:
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def stop(self, calls: int, ok: int) -> dict[str, Any]:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "calls": calls,
            "ok": ok,
            "wall": wall,
            "cpu": cpu,
            "user": usage.ru_utime - self._usage.ru_utime,
            "system": usage.ru_stime - self._usage.ru_stime,
        }


async def _fleetscan(
    url: str, ca: str | None, ids: list[str], warm: list[str], sink: BinaryIO
) -> dict[str, Any]:
    from fleetscan.client import connect
    from fleetscan.credentials import Credentials
    from fleetscan.engine import ScanJob, ScanSettings
    from fleetscan.limiter import RateLimiter
    from fleetscan.output import RecordWriter
    from fleetscan.records import Record, Status

    credentials = Credentials(
        access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, source="benchmark"
    )
    # The emulator's limits are off: the account limit the settings check is lifted too.
    settings = ScanSettings(
        instance_id=INSTANCE_ID,
        qps=UNPACED_QPS,
        account_qps=UNPACED_QPS,
        concurrency=CONCURRENCY,
    )
    meter = _Meter()

    class Counting:
        """The NDJSON writer, counting the final records on the way."""

        def __init__(self, writer: RecordWriter) -> None:
            self.writer = writer
            self.ok = 0

        def write(self, record: Record) -> None:
            self.ok += record.status in (Status.ONLINE, Status.OFFLINE)
            self.writer.write(record)

        def flush(self, *, fsync: bool = False) -> None:
            self.writer.flush(fsync=fsync)

        def close(self) -> None:
            self.writer.close()

    async with connect(
        instance_id=INSTANCE_ID, credentials=credentials, endpoint=url, ca_bundle=ca
    ) as client:
        # The one assembly path (as the command and the library run it), on one client
        # for both runs so the measured one starts with warm connections.
        def job() -> ScanJob:
            return ScanJob(settings, session=client, pacer=RateLimiter(UNPACED_QPS))

        await job().run(warm)
        counting = Counting(RecordWriter(sink))
        meter.start()
        await job().run(ids, sinks=[counting])
        return meter.stop(len(ids), counting.ok)


async def _client_only(url: str, ca: str | None, ids: list[str], warm: list[str]) -> dict[str, Any]:
    from fleetscan.client import connect
    from fleetscan.credentials import Credentials

    credentials = Credentials(
        access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, source="benchmark"
    )
    async with connect(
        instance_id=INSTANCE_ID, credentials=credentials, endpoint=url, ca_bundle=ca
    ) as client:

        async def calls(client_ids: list[str]) -> int:
            queue = iter(client_ids)  # shared by the workers: each takes the next ID

            async def worker() -> int:
                return sum([(await client.query_session(c)).online in (True, False) for c in queue])

            return sum(await asyncio.gather(*(worker() for _ in range(CONCURRENCY))))

        await calls(warm)
        meter = _Meter()
        meter.start()
        ok = await calls(ids)
        return meter.stop(len(ids), ok)


def _sdk_client(url: str, ca: str | None) -> Any:
    from alibabacloud_onsmqtt20200420.client import Client
    from alibabacloud_tea_openapi.models import Config

    host_port = url.split("://", 1)[1].rstrip("/")
    config = Config(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        endpoint=host_port,
        protocol="https" if url.startswith("https") else "http",
        region_id=REGION,
        ca=ca,
    )
    return Client(config)


def _sdk_request(client_id: str) -> Any:
    from alibabacloud_onsmqtt20200420.models import QuerySessionByClientIdRequest

    return QuerySessionByClientIdRequest(instance_id=INSTANCE_ID, client_id=client_id)


async def _sdk_async(url: str, ca: str | None, ids: list[str], warm: list[str]) -> dict[str, Any]:
    client = _sdk_client(url, ca)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(client_id: str) -> bool:
        async with semaphore:
            answer = await client.query_session_by_client_id_async(_sdk_request(client_id))
            return isinstance(answer.body.online_status, bool)

    await asyncio.gather(*(one(c) for c in warm))
    meter = _Meter()
    meter.start()
    results = await asyncio.gather(*(one(c) for c in ids), return_exceptions=True)
    return meter.stop(len(ids), sum(r is True for r in results))


def _sdk_sync(url: str, ca: str | None, ids: list[str], warm: list[str]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    client = _sdk_client(url, ca)

    def one(client_id: str) -> bool:
        try:
            answer = client.query_session_by_client_id(_sdk_request(client_id))
        except Exception:
            return False
        return isinstance(answer.body.online_status, bool)

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(one, warm))
        meter = _Meter()
        meter.start()
        ok = sum(pool.map(one, ids))
        return meter.stop(len(ids), ok)


def _child(client: str, url: str, ca: str | None, calls: int, profile: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    ids = list(client_ids(calls))
    warm = list(client_ids(min(WARM_UP_CALLS, max(10, calls // 10)), start=calls))

    def measure() -> dict[str, Any]:
        if client == "fleetscan":
            with open(os.devnull, "wb") as sink:
                return asyncio.run(_fleetscan(url, ca, ids, warm, sink))
        if client == "client-only":
            return asyncio.run(_client_only(url, ca, ids, warm))
        if client == "sdk-async":
            return asyncio.run(_sdk_async(url, ca, ids, warm))
        return _sdk_sync(url, ca, ids, warm)

    if profile:
        # CPU time, not wall time: the figure measured is CPU per call.
        profiler = cProfile.Profile(time.process_time)
        result = profiler.runcall(measure)
        profiler.dump_stats(profile)
    else:
        result = measure()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--protocol", action="append", choices=PROTOCOLS)
    parser.add_argument("--client", action="append", choices=CLIENTS)
    parser.add_argument("--profile", metavar="FILE", help="cProfile one fleetscan run into FILE")
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.url, args.ca, args.calls, args.profile)
        return
    protocols = args.protocol or PROTOCOLS
    if args.profile:
        for protocol in protocols:
            with EmulatorProcess(*UNLIMITED, tls=protocol == "https") as emu:
                path = Path(args.profile).with_suffix(f".{protocol}.prof")
                r = run_client("fleetscan", emu, protocol, args.calls, profile=str(path))
                print(f"{protocol}: {r.cpu_per_call * 1e6:.0f} us CPU/call (profiled); {path}")
        return
    figures = run(
        calls=args.calls,
        repeat=args.repeat,
        protocols=protocols,
        clients=args.client or CLIENTS,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(render(figures), end="")


if __name__ == "__main__":
    main()

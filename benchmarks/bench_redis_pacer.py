"""The shared pacer on a local redis-server against the local RateLimiter, side by side.

    python benchmarks/bench_redis_pacer.py [--seconds 10] [--qps 500]

Starts its own ``redis-server`` (from PATH) on a free loopback port, keeping nothing on
disk, then, each in a fresh child process with 8 callers acquiring as fast as they
are let: the local ``RateLimiter``, and ``RedisPacer`` leasing 1 and 8 (the default)
permits a round trip. For each: permits granted per second (against ``--qps``), the
busiest sliding second (of the server's clock for Redis, of the loop's for the local one), Redis
round trips per permit, permits dropped for a late wake-up, and CPU per permit of the
client process and of redis-server; then the ratio of CPU per permit, Redis to local.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator_process import ROOT, child_env
from figures import Figure, render

__all__ = ["run"]

CALLERS = 8
# (name, lease; 0 is the local RateLimiter). Lease 1 is the no-leasing reference: a
# round trip per permit, with no rate target (it cannot keep 500/s on a busy machine).
CASES = (("local", 0), ("redis, lease 1", 1), ("redis, lease 8", 8))


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


async def _measure(url: str, lease: int, qps: float, seconds: float) -> dict[str, Any]:
    """In the child: acquire for ``seconds`` with CALLERS callers; what it cost."""
    from fleetscan.limiter import RateLimiter
    from fleetscan.redis_pacer import SharedBudget

    loop = asyncio.get_running_loop()
    stamps: list[float] = []
    budget = None
    pacer: Any
    if lease == 0:
        pacer = RateLimiter(qps)
        note: Callable[[], None] = lambda: stamps.append(loop.time())  # noqa: E731
    else:
        budget = await SharedBudget.connect(url, access_key_id="bench", address="bench")
        pacer = budget.pacer(
            "QuerySessionByClientId", qps, lease=lease, on_grant=lambda s: stamps.append(s / 1e6)
        )
        # A new key waits out its hold (HORIZON_S) before the first permit: not timed.
        await pacer.acquire()
        stamps.clear()
        pacer.granted = 0
        note = lambda: None  # noqa: E731
    calls_before = budget.link.calls if budget else 0
    cpu = time.process_time()
    started = loop.time()
    deadline = started + seconds

    async def caller() -> None:
        while loop.time() < deadline:
            await pacer.acquire()
            note()

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    elapsed = loop.time() - started
    cpu = time.process_time() - cpu
    permits = len(stamps)
    figures = {
        "permits": permits,
        "seconds": elapsed,
        "cpu": cpu,
        "busiest_second": _busiest_second(stamps),
        "round_trips": (budget.link.calls - calls_before) if budget else 0,
        "dropped": getattr(pacer, "dropped", 0),
    }
    if budget is not None:
        await budget.aclose()
    return figures


def _server_cpu(port: int) -> float:
    """redis-server's CPU seconds so far (INFO cpu), over a raw socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO cpu\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 3:
            data += sock.recv(65536)
    fields = dict(line.split(":", 1) for line in data.decode().splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Redis:
    """redis-server on a free loopback port, nothing on disk."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.port = _free_port()
        config = folder / "redis.conf"
        config.write_text(
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {folder}\nlogfile ""\n'
        )
        self._process = subprocess.Popen(
            [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                _server_cpu(self.port)
                return
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self._process.kill()
        self._process.wait(timeout=10)


def run(
    *, seconds: float, qps: float = 500.0, log: Callable[[str], None] | None = None
) -> list[Figure]:
    binary = shutil.which("redis-server")
    if binary is None:
        return [
            Figure(
                name="redis pacer: skipped",
                target="-",
                measured="needs redis-server on PATH (apt-get install redis-server)",
            )
        ]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fleetscan-redis-") as tmp:
        server = _Redis(binary, Path(tmp))
        try:
            url = f"redis://127.0.0.1:{server.port}/0"
            for name, lease in CASES:
                if log:
                    log(f"redis pacer: {name}, {seconds:g} s at {qps:g}/s")
                before = _server_cpu(server.port)
                done = subprocess.run(
                    [sys.executable, __file__, "--child", url, str(lease), str(qps), str(seconds)],
                    cwd=ROOT,
                    env=child_env(),
                    capture_output=True,
                    text=True,
                    timeout=seconds * 4 + 60,
                    check=True,
                )
                results[name] = json.loads(done.stdout)
                results[name]["server_cpu"] = _server_cpu(server.port) - before
        finally:
            server.stop()
    return _figures(results, qps)


def _figures(results: dict[str, dict[str, Any]], qps: float) -> list[Figure]:
    figures = []
    for (name, lease), r in zip(CASES, results.values(), strict=True):
        permits = max(1, r["permits"])
        rate = r["permits"] / r["seconds"]
        per_permit_us = r["cpu"] / permits * 1e6
        server_us = r.get("server_cpu", 0.0) / permits * 1e6
        figures += [
            Figure(
                name=f"redis pacer {name}: permits/s at {qps:g}/s",
                target="-" if lease == 1 else f">= {0.95 * qps:g}",
                measured=f"{rate:.1f}",
                passed=None if lease == 1 else rate >= 0.95 * qps,
                data=r,
            ),
            Figure(
                name=f"redis pacer {name}: busiest sliding second",
                target=f"<= {qps:g}",
                measured=str(r["busiest_second"]),
                passed=r["busiest_second"] <= qps,
            ),
            Figure(
                name=f"redis pacer {name}: CPU per permit (client / redis-server)",
                target="-",
                measured=f"{per_permit_us:.1f} us / {server_us:.1f} us",
                data={"client_us": per_permit_us, "server_us": server_us},
            ),
        ]
        if r["round_trips"]:
            figures.append(
                Figure(
                    name=f"redis pacer {name}: round trips per permit (dropped)",
                    target="-",
                    measured=f"{r['round_trips'] / permits:.3f} ({r['dropped']} dropped)",
                    data={"per_permit": r["round_trips"] / permits, "dropped": r["dropped"]},
                )
            )
    local = results["local"]
    local_us = local["cpu"] / max(1, local["permits"])
    for name, _ in CASES[1:]:
        r = results[name]
        ratio = (r["cpu"] / max(1, r["permits"])) / local_us if local_us else float("inf")
        figures.append(
            Figure(
                name=f"redis pacer {name} / local: client CPU per permit",
                target="-",
                measured=f"{ratio:.2f}x",
                data={"ratio": ratio},
            )
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        url, lease, qps, seconds = args[1:]
        print(json.dumps(asyncio.run(_measure(url, int(lease), float(qps), float(seconds)))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--qps", type=float, default=500.0)
    options = parser.parse_args(args)
    figures = run(seconds=options.seconds, qps=options.qps, log=lambda m: print(m, file=sys.stderr))
    print(render(figures), end="")
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())

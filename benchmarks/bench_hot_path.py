"""fleetscan's own work per call, without the network: where its CPU goes.

    python benchmarks/bench_hot_path.py

Each piece of the per-call path is timed alone (``timeit``, best of 5) in a fresh
process: signing a call (V3, nonce and timestamp included), reading an answer,
building and writing a record, dedup and validation of an ID; then the whole scan
machinery (reader thread, queue, workers, warm-up gate, limiter, retry, counters,
records) around a client that answers at once, per ID. Set against the CPU per call
of ``bench_cost.py``, the rest is aiohttp, asyncio and the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import timeit
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO

from emulator_process import ROOT, child_env
from figures import Figure, render
from fleet_ids import client_id, client_ids

__all__ = ["run"]

LOOPS = 20_000
SCAN_IDS = 50_000


def _best_us(fn: Callable[[], object], loops: int = LOOPS) -> float:
    return min(timeit.repeat(fn, number=loops, repeat=5)) / loops * 1e6


async def _pieces(sink: BinaryIO) -> dict[str, float]:
    from fleetscan.client import V3Signer
    from fleetscan.client.answers import answer_data
    from fleetscan.credentials import Credentials
    from fleetscan.dedup import SeenSet
    from fleetscan.ids import client_id_problem
    from fleetscan.output import RecordWriter
    from fleetscan.records import Record, Status
    from fleetscan.signing import percent_encode

    credentials = Credentials(access_key_id="AK", access_key_secret="secret", source="bench")
    signer = V3Signer(
        host="onsmqtt.cn-hangzhou.aliyuncs.com",
        clock=lambda: datetime.now(UTC),
        nonce=lambda: uuid.uuid4().hex,
    )
    cid = client_id(1)
    query = f"ClientId={percent_encode(cid)}&InstanceId=mqtt-cn-bench"
    params = {"ClientId": cid, "InstanceId": "mqtt-cn-bench"}
    body = b'{"RequestId":"6D5F0C4A-1B2C-4D3E-8F90-A1B2C3D4E5F6","OnlineStatus":true}'
    fresh = iter(client_ids(10**8))
    seen = SeenSet()
    writer = RecordWriter(sink)

    def record() -> None:
        writer.write(
            Record(
                client_id=cid,
                instance_id="mqtt-cn-bench",
                status=Status.ONLINE,
                checked_at=datetime.now(UTC),
                api="QuerySessionByClientId",
                request_id="6D5F0C4A-1B2C-4D3E-8F90-A1B2C3D4E5F6",
                attempts=1,
            )
        )

    def dedup() -> None:
        name = next(fresh)
        seen.add(name)
        client_id_problem(name)

    return {
        "sign": _best_us(
            lambda: (
                percent_encode(cid),
                signer.sign("QuerySessionByClientId", query, params, credentials),
            )
        ),
        "answer": _best_us(lambda: answer_data(200, body, None, "OnlineStatus")),
        "record": _best_us(record),
        "dedup": _best_us(dedup),
    }


async def _machinery(sink: BinaryIO) -> float:
    """CPU per ID of `Scanner.run` around a client that answers at once."""
    from fleetscan.client import BatchAnswer, SessionAnswer
    from fleetscan.limiter import RateLimiter
    from fleetscan.output import RecordWriter
    from fleetscan.scanner import Scanner, ScanSettings

    class Instant:
        async def query_session(self, client_id: str) -> SessionAnswer:
            await asyncio.sleep(0)  # one trip through the loop, as a real answer takes
            return SessionAnswer(online=True, request_id="r")

        async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
            raise AssertionError("the scan runs in single mode")

    ids = list(client_ids(SCAN_IDS))
    writer = RecordWriter(sink)
    scanner = Scanner(
        client=Instant(),
        settings=ScanSettings(instance_id="mqtt-cn-bench", concurrency=32),
        limiter=RateLimiter(1_000_000),
    )
    start = time.process_time()
    await scanner.run(ids, emit=writer.write)
    writer.flush()
    return (time.process_time() - start) / len(ids) * 1e6


def _child() -> None:
    sys.path.insert(0, str(ROOT))
    with open(os.devnull, "wb") as sink:
        result = asyncio.run(_pieces(sink))
        result["machinery"] = asyncio.run(_machinery(sink))
    print(json.dumps(result))


def run() -> list[Figure]:
    """The hot path's pieces, as figures for context (no targets)."""
    done = subprocess.run(
        [sys.executable, __file__, "--child"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    names = {
        "sign": "sign a call (V3: nonce, timestamp, canonical request, HMAC)",
        "answer": "read an answer (JSON, checks)",
        "record": "build and write a record (NDJSON)",
        "dedup": "dedup and validate an ID",
        "machinery": "whole scan per ID around an instant client (no signing, no HTTP)",
    }
    return [
        Figure(
            name=f"hot path: {text}",
            target="",
            measured=f"{data[key]:.1f} us CPU",
            data={"us": data[key]},
        )
        for key, text in names.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    if parser.parse_args().child:
        _child()
        return
    print(render(run()), end="")


if __name__ == "__main__":
    main()

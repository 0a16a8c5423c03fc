"""A process that takes permits from a shared pacer and writes their slots, one a line.

    python redis_pacer_worker.py URL API QPS ADDRESS_QPS LEASE COUNT SKEW OUT

SKEW (seconds) shifts this process's clock, as a host whose clock disagrees would.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from fleetscan.redis_pacer import SharedBudget


async def main(argv: list[str]) -> list[int]:
    url, api, qps, address_qps, lease, count, skew, _ = argv
    shift = float(skew)
    budget = await SharedBudget.connect(url, access_key_id="LTAI-test", address="nat-a")
    slots: list[int] = []
    pacer = budget.pacer(
        api,
        float(qps),
        address_qps=float(address_qps),
        lease=int(lease),
        clock=lambda: time.monotonic() + shift,
        on_grant=slots.append,
    )

    async def worker() -> None:
        while len(slots) < int(count):
            await pacer.acquire()

    await asyncio.gather(*(worker() for _ in range(4)))
    await budget.aclose()
    return slots


if __name__ == "__main__":
    slots = asyncio.run(main(sys.argv[1:]))
    Path(sys.argv[-1]).write_text("".join(f"{slot}\n" for slot in slots))

"""Many ``fleetscan scan --mode hybrid --shard k/N --limiter ...`` processes against one
emulator, side by side with one process pacing the same quota alone.

    python benchmarks/bench_shared.py [--case hosts|nat|all] [--ids 30000]

Starts a ``redis-server`` (from PATH) on a free loopback port and the emulator in its
own process at the service's limits (500 single and 100 batch calls/s per account,
the per-IP block past 300/s over all APIs). Two cases, each run two ways:

- ``hosts``: three processes, ``--shard k/3``, each sending from its own address
  (127.0.0.2, .3, .4, standing for three hosts), one ``--limiter``: the account's
  whole quota, 96 x 10 + 482 = 1,442 IDs/s at the paces (0.96 of 1,500; 1,363 at
  the shared budget's sustained rates). Beside it:
  one process sending from the three addresses (``--source-address`` x 3), paced by
  its local pacers, the same quota.
- ``nat``: ten processes behind one egress address (all from 127.0.0.1, one
  ``--address-group``): together never over 300/s from it, 96 x 10 + 174 = 1,134
  IDs/s. Beside it: one process alone from that address.

Figures per run: IDs/s of all processes together from the first answer to the last
(the start-up of N interpreters left out) against what the budgets allow; the
busiest sliding second per API (<= 500 / 100) and per address (<= 300); throttled
and blocked answers (0); every ID once over the shards' outputs; and, against the
local pacer in the same run, Redis round trips per API call and the scans' CPU per call.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from bench_redis_pacer import _Redis
from emulator_process import INSTANCE_ID, ROOT, EmulatorProcess, child_env
from figures import Figure, render

__all__ = ["CASES", "run"]

LIMITS = {"QuerySessionByClientId": 500, "BatchQuerySessionByClientIds": 100}
ADDRESS_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Case:
    """N shared processes (each from ``addresses[k % len]``, or none) and the local
    run beside them: one process from all the addresses."""

    processes: int
    addresses: tuple[str, ...]
    group: str | None
    # IDs/s the budgets allow: the local pacer at its paces (batch 96, single 482 or
    # what the addresses leave), the shared one at its ticks' sustained rates at the
    # same paces ((pace - 1) / 1.05: batch 90.5, single 458; an address 256 of its
    # 270, its batch share 90.5 and single 165; script.py, point 3).
    local_allowed: int
    shared_allowed: int

    @property
    def label(self) -> str:
        where = f"{len(self.addresses)} addresses" if self.addresses else "one address"
        return f"{self.processes} processes, {where}"


CASES = {
    "hosts": Case(3, ("127.0.0.2", "127.0.0.3", "127.0.0.4"), None, 960 + 482, 905 + 458),
    "nat": Case(10, (), "nat-1", 960 + 174, 905 + 165),
}


def _redis_round_trips(port: int) -> int:
    """Script calls redis-server has run so far (EVALSHA and EVAL: a round trip each)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def _scan(folder: Path, emu_url: str, k: int, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetscan",
            "scan",
            *("--endpoint", emu_url, "--instance-id", INSTANCE_ID, "--mode", "hybrid"),
            *options,
            *("-o", str(folder / f"out{k}.ndjson"), "--summary", str(folder / f"s{k}.json")),
            "--quiet",
            str(folder / "ids.txt"),
        ],
        cwd=ROOT,
        env=child_env(credentials=True),
        stderr=subprocess.PIPE,
    )


def _run_once(
    case: Case, *, shared: bool, ids: int, folder: Path, redis: _Redis | None
) -> dict[str, Any]:
    for old in [*folder.glob("out*.ndjson"), *folder.glob("s*.json")]:
        old.unlink()
    with EmulatorProcess("--ip-limit", str(ADDRESS_LIMIT), gc_off=True) as emu:
        round_trips = _redis_round_trips(redis.port) if redis is not None else 0
        procs = []
        if shared:
            assert redis is not None
            for k in range(case.processes):
                options = [
                    *("--shard", f"{k}/{case.processes}"),
                    *("--limiter", f"redis://127.0.0.1:{redis.port}/0"),
                ]
                if case.addresses:
                    options += ["--source-address", case.addresses[k % len(case.addresses)]]
                if case.group:
                    options += ["--address-group", case.group]
                procs.append(_scan(folder, emu.url, k, *options))
        else:
            options = [arg for address in case.addresses for arg in ("--source-address", address)]
            procs.append(_scan(folder, emu.url, 0, *options))
        cpu = 0.0
        codes = []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            codes.append(proc.returncode)
            cpu += usage.ru_utime + usage.ru_stime
        errors = [p.stderr.read().decode()[-400:] for p in procs if p.stderr and p.returncode]
        for proc in procs:
            if proc.stderr:
                proc.stderr.close()
        stats: dict[str, Any] = emu.stats()
        round_trips = (
            (_redis_round_trips(redis.port) - round_trips) if redis is not None and shared else 0
        )
    written = [
        line for out in sorted(folder.glob("out*.ndjson")) for line in out.read_bytes().splitlines()
    ]
    stamps = sorted(datetime.fromisoformat(orjson.loads(line)["checked_at"]) for line in written)
    span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0
    # The middle 80% of the answers: the processes' start-up and the last shard's tail
    # (the shards differ in size and finish apart) left out.
    low, high = len(stamps) // 10, len(stamps) * 9 // 10
    middle = (stamps[high] - stamps[low]).total_seconds() if high > low else 0.0
    calls = sum(a["requests"] for a in stats["actions"].values())
    limiters = [orjson.loads(p.read_bytes()).get("limiter") for p in folder.glob("s*.json")]
    dropped = sum(lim["dropped"] for lim in limiters if lim)
    permits = sum(lim["permits"] for lim in limiters if lim)
    return {
        "codes": codes,
        "errors": errors,
        "whole": (len(stamps) - 1) / max(span, 1e-9),
        "steady": (high - low) / max(middle, 1e-9),
        "records": len(written),
        "unique": len({orjson.loads(line)["client_id"] for line in written}),
        "actions": stats["actions"],
        "addresses": stats["ip_totals"],
        "calls": calls,
        "cpu_per_call": cpu / max(calls, 1),
        "round_trips_per_call": round_trips / max(calls, 1),
        "dropped": dropped,
        "permits": permits,
    }


def _figures(case: Case, kind: str, r: dict[str, Any], ids: int) -> list[Figure]:
    label = f"{case.label}, {kind}"
    if any(r["codes"]):
        return [
            Figure(name=f"{label}: failed", target="exit 0", measured=f"{r['codes']} {r['errors']}")
        ]
    allowed = case.shared_allowed if kind == "shared" else case.local_allowed
    figures = [
        Figure(
            name=f"{label}: IDs/s together, middle 80% of the answers",
            target=f">= 0.95 x {allowed} (what the budgets allow)",
            measured=f"{r['steady']:.0f} ({r['steady'] / allowed:.2f}; "
            f"{r['steady'] / 1500:.2f} of the account's 1,500); first to last answer "
            f"{r['whole']:.0f}",
            passed=r["steady"] >= 0.95 * allowed,
            data={"steady": r["steady"], "whole": r["whole"], "allowed": allowed},
        )
    ]
    for api, limit in LIMITS.items():
        action = r["actions"].get(api, {"max_requests_1s": 0, "throttled": 0, "blocked": 0})
        figures.append(
            Figure(
                name=f"{label}: busiest second of {api}; throttled, blocked",
                target=f"<= {limit}; 0, 0",
                measured=f"{action['max_requests_1s']}; {action['throttled']}, {action['blocked']}",
                passed=action["max_requests_1s"] <= limit
                and action["throttled"] == action["blocked"] == 0,
                data=dict(action),
            )
        )
    per_address = {a: s["max_requests_1s"] for a, s in sorted(r["addresses"].items())}
    figures += [
        Figure(
            name=f"{label}: busiest second per address",
            target=f"<= {ADDRESS_LIMIT}",
            measured=", ".join(f"{a} {n}" for a, n in per_address.items()),
            passed=max(per_address.values(), default=0) <= ADDRESS_LIMIT,
            data=per_address,
        ),
        Figure(
            name=f"{label}: records over the shards",
            target=f"{ids}, each ID once",
            measured=f"{r['records']} records, {r['unique']} IDs",
            passed=r["records"] == ids == r["unique"],
            data={"records": r["records"], "unique": r["unique"]},
        ),
    ]
    return figures


def run(*, cases: list[str], ids: int, log: Any = None) -> list[Figure]:
    binary = shutil.which("redis-server")
    if binary is None:
        return [Figure(name="shared: skipped", target="-", measured="needs redis-server")]
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="fleetscan-shared-") as tmp:
        folder = Path(tmp)
        (folder / "ids.txt").write_text("".join(f"GID_bench@@@d{i}\n" for i in range(ids)))
        redis = _Redis(binary, folder)
        try:
            for name in cases:
                case = CASES[name]
                results = {}
                for kind, shared in (("local pacer, one process", False), ("shared", True)):
                    if log:
                        log(f"shared: {case.label}, {kind}")
                    started = time.monotonic()
                    results[kind] = _run_once(
                        case, shared=shared, ids=ids, folder=folder, redis=redis
                    )
                    results[kind]["elapsed"] = time.monotonic() - started
                    figures += _figures(case, kind, results[kind], ids)
                local, together = results["local pacer, one process"], results["shared"]
                cpu, alone = together["cpu_per_call"], local["cpu_per_call"]
                figures.append(
                    Figure(
                        name=f"{case.label}: Redis round trips per call; CPU per call",
                        target="-",
                        measured=f"{together['round_trips_per_call']:.2f} "
                        f"({together['dropped']} of {together['permits'] + together['dropped']} "
                        "permits dropped, woken too late); shared "
                        f"{cpu * 1e6:.0f} us, local {alone * 1e6:.0f} us "
                        f"({cpu / max(alone, 1e-9):.2f}x, start-up included)",
                        data={
                            "round_trips_per_call": together["round_trips_per_call"],
                            "dropped": together["dropped"],
                            "cpu_per_call": cpu,
                            "local_cpu_per_call": alone,
                        },
                    )
                )
        finally:
            redis.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=(*CASES, "all"), default="all")
    parser.add_argument("--ids", type=int, default=30_000)
    args = parser.parse_args()
    cases = list(CASES) if args.case == "all" else [args.case]
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    print(render(run(cases=cases, ids=args.ids, log=log)))


if __name__ == "__main__":
    main()

"""``fleetscan scan --shard K/N --limiter redis://...``: real processes, a real
redis-server and one emulator whose account limit is lower than the processes would
send together.

Each scan alone may send ``QPS`` calls a second, the emulator's account allows
``LIMIT``; two of them pacing alone would be throttled (2 x 55 > 60). Only the budget
they share in Redis keeps them under it. What is checked is what the emulator saw:
its peak per sliding second, its throttled answers, its per-ID query counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis_fixtures import RedisServer, free_port, redis_binary

from fleetscan.emulator import (
    ACTION_SINGLE,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)
from fleetscan.shard import Shard

REPO = Path(__file__).resolve().parent.parent
LIMIT = 60  # the emulator's account limit for QuerySessionByClientId
QPS = 55  # each process's --qps: the shared budget's rate
PASSWORD = "redis-pw-9f2c71"


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    config = EmulatorConfig(limits=Limits(qps_single=LIMIT, qps_batch=LIMIT, ip_limit=0))
    with run_emulator_in_thread(config) as emulator:
        yield emulator


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that wants a password (given through FLEETSCAN_REDIS_PASSWORD)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(redis_binary(), folder, password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def write_ids(folder: Path, n: int) -> Path:
    path = folder / "ids.txt"
    lines = [f"GID_shared@@@d{i}\n" for i in range(n)]
    # Duplicates and one invalid ID: each must end in one shard's output only.
    lines += [*lines[:20], "not-a-client-id\n"]
    path.write_text("".join(lines))
    return path


def scan(url: str, folder: Path, *options: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "FLEETSCAN"))}
    env.update(
        HOME=str(folder),
        PYTHONPATH=str(REPO),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEFAULT_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEFAULT_ACCESS_KEY_SECRET,
        FLEETSCAN_REDIS_PASSWORD=PASSWORD,
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetscan",
            "scan",
            "--endpoint",
            url,
            "--instance-id",
            DEFAULT_INSTANCE_ID,
            "--qps",
            str(QPS),
            *options,
        ],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    text = (out + err).decode()
    assert PASSWORD not in text
    return proc.returncode, text


def records_of(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def summary_of(path: Path) -> dict[str, Any]:
    text = path.read_bytes()
    assert PASSWORD.encode() not in text
    data: dict[str, Any] = orjson.loads(text)
    return data


def wait_for_records(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(records_of(path)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} records in {path} after {timeout} s")


def assert_under_the_limit(emu: ThreadedEmulator) -> None:
    single = emu.stats().actions[ACTION_SINGLE]
    assert single.throttled == 0
    assert single.max_requests_1s <= LIMIT
    assert emu.stats().requeried() == []  # nothing asked, or billed, twice


def test_two_shard_processes_share_the_account_limit_and_cover_every_id_once(
    emu: ThreadedEmulator, locked_redis: RedisServer, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 400)
    procs = [
        scan(
            emu.url,
            tmp_path,
            "--shard",
            f"{k}/2",
            "--limiter",
            locked_redis.url,
            "-o",
            f"out{k}.ndjson",
            "--summary",
            f"s{k}.json",
            str(source),
        )
        for k in (0, 1)
    ]
    results = [finish(proc) for proc in procs]
    assert [code for code, _ in results] == [0, 0], results
    assert_under_the_limit(emu)
    shards = [records_of(tmp_path / f"out{k}.ndjson") for k in (0, 1)]
    union = [r["client_id"] for records in shards for r in records]
    assert sorted(union) == sorted({*(f"GID_shared@@@d{i}" for i in range(400)), "not-a-client-id"})
    for k, records in enumerate(shards):
        assert all(Shard(index=k, count=2).owns(r["client_id"]) for r in records)
        assert all(
            r["online"] is emu.fleet.is_online(r["client_id"])
            for r in records
            if r["status"] != "invalid"
        )
        summary = summary_of(tmp_path / f"s{k}.json")
        assert summary["shard"] == f"{k}/2"
        assert summary["shard_seed"] == Shard(index=k, count=2).seed_digest
        assert summary["ids_read"] == 421
        # Every line read is this shard's (unique, duplicate) or another shard's.
        assert summary["ids_unique"] == len(records)
        assert summary["ids_unique"] + summary["ids_duplicate"] + summary["ids_other_shards"] == 421
    # Each alone would have sent at its full rate: together they were held to one.
    assert emu.stats().actions[ACTION_SINGLE].requests == 400


def test_each_shard_resumes_alone_and_a_resume_with_another_shard_or_seed_is_refused(
    emu: ThreadedEmulator, locked_redis: RedisServer, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 300)
    out = tmp_path / "out0.ndjson"
    shard = ("--shard", "0/2", "--limiter", locked_redis.url, "-o", str(out))
    first = scan(emu.url, tmp_path, *shard, str(source))
    wait_for_records(out, 40)
    first.send_signal(signal.SIGTERM)
    assert finish(first)[0] == 130
    before = out.read_bytes()
    for other in (("--shard", "1/2"), ("--shard", "0/2", "--shard-seed", "another")):
        code, text = finish(
            scan(
                emu.url,
                tmp_path,
                *other,
                "--limiter",
                locked_redis.url,
                "--resume",
                "-o",
                str(out),
                str(source),
            )
        )
        assert code == 2
        assert "another --shard or --shard-seed" in text
        assert out.read_bytes() == before  # refused before anything changed
    code, _ = finish(scan(emu.url, tmp_path, *shard, "--resume", str(source)))
    assert code == 0
    ids = [r["client_id"] for r in records_of(out)]
    owned = {i for i in (f"GID_shared@@@d{n}" for n in range(300)) if Shard.parse("0/2").owns(i)}
    owned |= {"not-a-client-id"} if Shard.parse("0/2").owns("not-a-client-id") else set()
    assert sorted(ids) == sorted(owned)  # each once
    assert_under_the_limit(emu)


def test_an_unreachable_limiter_at_start_is_exit_2_with_no_call_and_no_password_shown(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 50)
    url = f"redis://fleet:{PASSWORD}@127.0.0.1:{free_port()}/0"
    code, text = finish(scan(emu.url, tmp_path, "--limiter", url, "-o", "out.ndjson", str(source)))
    assert code == 2
    assert "cannot be used" in text
    assert "redis://127.0.0.1:" in text
    assert emu.stats().requests == 0
    assert not (tmp_path / "out.ndjson").exists()


def test_redis_killed_and_restarted_mid_scan_opens_no_burst_and_loses_nothing(
    emu: ThreadedEmulator, locked_redis: RedisServer, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 400)
    out = tmp_path / "out.ndjson"
    proc = scan(
        emu.url,
        tmp_path,
        "--limiter",
        locked_redis.url,
        "-o",
        str(out),
        "--summary",
        "s.json",
        str(source),
    )
    wait_for_records(out, 100)
    locked_redis.kill()  # every key is lost
    time.sleep(1.5)
    locked_redis.start()
    code, text = finish(proc)
    assert code == 0, text
    assert "unreachable" in text
    assert "is back" in text
    assert sorted(r["client_id"] for r in records_of(out)) == sorted(
        {*(f"GID_shared@@@d{i}" for i in range(400)), "not-a-client-id"}
    )
    assert_under_the_limit(emu)
    assert summary_of(tmp_path / "s.json")["outcome"] == "completed"


def test_a_limiter_lost_past_its_timeout_stops_with_exit_3_and_resumes(
    emu: ThreadedEmulator, locked_redis: RedisServer, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 400)
    out = tmp_path / "out.ndjson"
    options = ("--limiter", locked_redis.url, "-o", str(out), "--summary", "s.json")
    proc = scan(emu.url, tmp_path, *options, "--limiter-timeout", "2", str(source))
    wait_for_records(out, 60)
    locked_redis.kill()
    code, text = finish(proc)
    assert code == 3, text
    summary = summary_of(tmp_path / "s.json")
    assert summary["outcome"] == "aborted"
    assert "shared limiter" in summary["abort_reason"]
    assert "resumable" in summary["abort_reason"]
    assert summary["ids_error"] == 0  # the IDs not sent have no record, not an error one
    assert summary["ids_not_scanned"] > 0
    locked_redis.start()
    code, _ = finish(scan(emu.url, tmp_path, *options, "--resume", str(source)))
    assert code == 0
    assert sorted(r["client_id"] for r in records_of(out)) == sorted(
        {*(f"GID_shared@@@d{i}" for i in range(400)), "not-a-client-id"}
    )
    assert_under_the_limit(emu)

"""A scan through a hostile network and a crowded account: nothing lost, nothing doubled,
nothing misreported (issue 5).

- Every fault at once (InternalError, SystemOverFlow with and without a retry hint,
  dropped connections, answers slower than the client's timeout) over 20 thousand
  IDs: one record per unique ID, each status the emulator's truth, every billable
  transaction accounted for. With too few attempts, the IDs that ran out say why.
- A throttling storm: the throttled share falls after the first seconds and the rate
  climbs back when it passes; the source-IP block never trips.
- A key revoked mid-scan: the scan stops within a few calls, exit 3, only true records.
- What a proxy answers instead of the API: classified, recorded, never a crash.

Checks are against the emulator's own truth (its fleet) and counters, never against
what the scanner believes it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from fleetscan.cli import main
from fleetscan.client import BatchAnswer, OnsMqttClient, SessionAnswer
from fleetscan.client import connection as client_module
from fleetscan.credentials import Credentials, StaticCredentials
from fleetscan.emulator import (
    ACTION_SINGLE,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    DEFAULT_KEY,
    DROP,
    EmulatorConfig,
    FaultRule,
    Faults,
    Fleet,
    Limits,
    run_emulator,
    run_emulator_in_thread,
)
from fleetscan.engine import Scanner, ScanSettings
from fleetscan.errors import ApiError
from fleetscan.limiter import INCREASE_SHARE, RateLimiter
from fleetscan.limits import Mode, api_for
from fleetscan.records import Record, Status
from fleetscan.retry import RetryPolicy
from fleetscan.summary import ScanSummary

REPO = Path(__file__).resolve().parent.parent
DEMO = Credentials(access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=DEFAULT_ACCESS_KEY_SECRET)
# The client's per-attempt timeout, and a slow tail just past it.
TIMEOUT = 0.3
SLOW_MS = 450.0
# Every fault the issue names, at once.
FAULTS = Faults(
    error_rate=0.10,
    overflow_rate=0.05,
    overflow_retry_after_share=0.5,
    overflow_retry_after_ms=20,
    drop_rate=0.02,
    slow_rate=0.01,
    slow_ms=SLOW_MS,
)
# What each fault becomes in a record: code and HTTP status.
FAULT_CODES = {
    "InternalError": 417,
    "SystemOverFlow": 403,
    "ConnectionError": None,
    "Timeout": None,
}


def valid_ids(n: int, prefix: str = "GID_fault@@@dev") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def with_noise(ids: Sequence[str], invalid: Sequence[str]) -> list[str]:
    """``ids`` with every seventh repeated later and ``invalid`` mixed in."""
    out = list(ids)
    out.extend(ids[::7])
    for i, bad in enumerate(invalid):
        out.insert(i * 97, bad)
    return out


INVALID = ["GID_fault@@@bad id", "GID_fault@@@a/b", "not-an-id", "GID_fault@@@" + "x" * 60]


# --- the emulator in a process of its own -----------------------------------------------------


@contextlib.contextmanager
def emulator_process(*options: str) -> Iterator[str]:
    """``fleetscan emulator OPTIONS`` in a subprocess (a core of its own); yields its URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetscan", "emulator", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("url: "), first
        yield first.removeprefix("url: ").strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


async def emulator_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url.rstrip('/')}/_emulator/stats") as response:
        data: dict[str, Any] = orjson.loads(await response.read())
        return data


async def emulator_config(session: aiohttp.ClientSession, url: str, changes: object) -> None:
    async with session.post(
        f"{url.rstrip('/')}/_emulator/config", data=orjson.dumps(changes)
    ) as response:
        assert response.status == 200, await response.text()


class AttemptLog(OnsMqttClient):
    """The real client, noting each attempt's outcome (``ok`` or the code), per client ID
    and per call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcomes: defaultdict[str, list[str]] = defaultdict(list)
        self.calls: Counter[str] = Counter()

    def _note(self, client_ids: Sequence[str], outcome: str) -> None:
        self.calls[outcome] += 1
        for cid in client_ids:
            self.outcomes[cid].append(outcome)

    async def query_session(self, client_id: str) -> SessionAnswer:
        try:
            answer = await super().query_session(client_id)
        except ApiError as exc:
            self._note([client_id], exc.code)
            raise
        self._note([client_id], "ok")
        return answer

    async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
        try:
            answer = await super().batch_query_sessions(client_ids)
        except ApiError as exc:
            self._note(client_ids, exc.code)
            raise
        self._note(client_ids, "ok")
        return answer


# --- every fault at once, 20 thousand IDs ----------------------------------------------------


# 20 thousand IDs in batch mode (2 thousand calls and more); in single mode a call
# costs ~0.3 ms of client CPU here, so 20 thousand calls would take 8-13 s: the same
# checks run on fewer IDs there.
@pytest.mark.parametrize(("mode", "count"), [("batch", 20_000), ("single", 2_500)])
async def test_every_fault_at_once_loses_doubles_and_misreports_nothing(
    mode: Mode, count: int
) -> None:
    ids = valid_ids(count)
    inputs = with_noise(ids, INVALID)
    truth = Fleet(seed=0)  # the emulator's fleet: a pure function of seed and ID
    options = ["--qps-single", "100000", "--qps-batch", "100000", "--ip-limit", "0"]
    records: list[Record] = []
    with emulator_process(*options) as url:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
            aiohttp.ClientSession() as control,
        ):
            await emulator_config(control, url, {"faults": dataclasses.asdict(FAULTS)})
            client = AttemptLog(
                session=session,
                credentials=StaticCredentials(DEMO),
                instance_id=DEFAULT_INSTANCE_ID,
                endpoint=url,
                timeout=TIMEOUT,
            )
            settings = ScanSettings(
                instance_id=DEFAULT_INSTANCE_ID,
                mode=mode,
                qps=100_000,
                account_qps=100_000,  # the emulator's limits are off
                concurrency=64,
                retry=RetryPolicy(max_attempts=12, backoff_base=0.002, backoff_max=0.05),
            )
            scanner = Scanner(client=client, settings=settings, pacer=RateLimiter(100_000))
            started = time.monotonic()
            outcome = await scanner.run(inputs, emit=records.append)
            duration = time.monotonic() - started
            stats = await emulator_stats(control, url)

    assert outcome == "completed"
    by_id = {r.client_id: r for r in records}
    assert len(by_id) == len(records), "an ID has two records"
    assert sorted(by_id) == sorted({*ids, *INVALID})
    for cid in INVALID:
        assert by_id[cid].status is Status.INVALID
    wrong = [cid for cid in ids if by_id[cid].online is not truth.is_online(cid)]
    assert wrong == []
    # Every fault kind really happened, and was retried through.
    assert set(client.calls) == {"ok", *FAULT_CODES}, client.calls
    assert all(by_id[cid].attempts == len(client.outcomes[cid]) for cid in ids)

    counters = scanner.counters
    summary = ScanSummary.build(
        counters,
        mode=mode,
        api=api_for(mode),
        instance_id=DEFAULT_INSTANCE_ID,
        qps=100_000,
        started_at=datetime.now(UTC),
        ended_at=datetime.now(UTC),
        duration_seconds=duration,
        not_scanned=counters.unique - counters.done,
        instance_tps=None,
        price_per_million=None,
        outcome=outcome,
    )
    assert (summary.ids_unique, summary.ids_duplicate) == (len(ids) + len(INVALID), len(ids[::7]))
    assert summary.ids_not_scanned == 0
    # Billing. The client counted every attempt it made, and every success it counted is
    # one the server counted. An attempt reached the server unless it timed out: on a
    # loaded machine a request can still sit unread in the server's socket when the
    # client gives up on it and closes the connection.
    assert counters.calls_sent == client.calls.total()
    unseen = counters.calls_sent - stats["requests"]
    assert 0 <= unseen <= client.calls["Timeout"]
    assert summary.billable_transactions == client.calls["ok"]
    if mode == "single":
        assert summary.billable_transactions == len(ids)
    # The server also bills an answer that came after the client's timeout; the client
    # cannot know of it. So the server's count is higher by exactly those late answers,
    # and each of them was a Timeout to the client, for that very ID.
    answers: dict[str, int] = stats["client_id_answers"]
    late = {cid: n - client.outcomes[cid].count("ok") for cid, n in answers.items()}
    assert all(0 <= n <= client.outcomes[cid].count("Timeout") for cid, n in late.items())
    late_calls = stats["successes"] - summary.billable_transactions
    assert 0 <= late_calls <= client.calls["Timeout"]
    if mode == "single":
        assert late_calls == sum(late.values())


# --- the CLI, in-process, against an emulator on a thread ---------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo key in the environment and an empty home (no profile files)."""
    for name in list(os.environ):
        if name.startswith("ALIBABA_CLOUD_") and name != "ALIBABA_CLOUD_ECS_METADATA_DISABLED":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    return tmp_path


def run_cli(
    url: str, folder: Path, ids: Sequence[str], *options: str
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """``fleetscan scan`` of ``ids`` in-process: exit code, records, summary."""
    source = folder / "ids.txt"
    source.write_text("".join(f"{cid}\n" for cid in ids))
    out, summary = folder / "out.ndjson", folder / "summary.json"
    code = main(
        [
            "scan",
            "--endpoint",
            url,
            "--instance-id",
            DEFAULT_INSTANCE_ID,
            "-o",
            str(out),
            "--summary",
            str(summary),
            *options,
            str(source),
        ]
    )
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return code, records, orjson.loads(summary.read_bytes())


# The first attempts of these IDs meet these faults, in order; the record must carry the
# last one's code (and status), never the first's.
SCRIPTED = {
    "GID_fault@@@last-internal": [FaultRule(code=DROP), FaultRule(code="InternalError")],
    "GID_fault@@@last-overflow": [
        FaultRule(code="InternalError"),
        FaultRule(code="SystemOverFlow", retry_after_ms=10),
    ],
    "GID_fault@@@last-drop": [FaultRule(code="SystemOverFlow"), FaultRule(code=DROP)],
    "GID_fault@@@last-timeout": [
        FaultRule(code="SystemOverFlow"),
        FaultRule(code="InternalError", delay_ms=SLOW_MS),
    ],
}
SCRIPTED_LAST = {
    "GID_fault@@@last-internal": ("InternalError", 417),
    "GID_fault@@@last-overflow": ("SystemOverFlow", 403),
    "GID_fault@@@last-drop": ("ConnectionError", None),
    "GID_fault@@@last-timeout": ("Timeout", None),
}


def test_with_too_few_attempts_the_ids_that_ran_out_say_why_and_nothing_else_differs(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [*valid_ids(400), *SCRIPTED]
    rules = tuple(
        dataclasses.replace(rule, client_id=cid)
        for cid, scripted in SCRIPTED.items()
        for rule in scripted
    )
    # The CLI's client, seen through AttemptLog: what each attempt of each ID met.
    clients: list[AttemptLog] = []

    class Logged(AttemptLog):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            clients.append(self)

    monkeypatch.setattr(client_module, "OnsMqttClient", Logged)
    config = EmulatorConfig(limits=Limits(qps_single=5000, ip_limit=0), faults=FAULTS, rules=rules)
    with run_emulator_in_thread(config) as emu:
        code, records, summary = run_cli(
            emu.url,
            cli_env,
            ids,
            "--qps",
            "500",
            "--max-attempts",
            "2",
            "--timeout",
            str(TIMEOUT),
            "--quiet",
        )
        stats = emu.stats()
    assert code == 1
    assert "Traceback" not in capsys.readouterr().err
    (client,) = clients
    by_id = {r["client_id"]: r for r in records}
    assert len(by_id) == len(records) == len(ids)
    errors = {cid: r for cid, r in by_id.items() if r["status"] == "error"}
    # Random faults ran other IDs out of attempts too (about 3% of them).
    assert set(SCRIPTED) < set(errors)
    for cid, record in errors.items():
        error = record["error"]
        # The last attempt's code (the first's was another), with its HTTP status.
        assert client.outcomes[cid] == [client.outcomes[cid][0], error["code"]]
        assert error["code"] in FAULT_CODES
        assert error["http_status"] == FAULT_CODES[error["code"]]
        assert record["attempts"] == 2
        assert record["online"] is None
        assert stats.client_id_queries[cid] == 2  # both attempts reached the service
    for cid, (last, _) in SCRIPTED_LAST.items():
        # As scripted, unless the random slow tail delayed that answer past the timeout.
        assert errors[cid]["error"]["code"] in (last, "Timeout"), cid
    # Nothing else differs: every other ID has its true status.
    for cid, record in by_id.items():
        if cid not in errors:
            assert record["status"] in ("online", "offline")
            assert record["online"] is emu.fleet.is_online(cid)
            assert record["error"] is None
            assert client.outcomes[cid][-1] == "ok"
    assert summary["outcome"] == "completed with errors"
    assert summary["ids_error"] == len(errors)
    assert summary["ids_online"] + summary["ids_offline"] == len(ids) - len(errors)
    assert summary["ids_not_scanned"] == 0


# --- a throttling storm --------------------------------------------------------------------------


STORM_LIMIT = 40  # what another tool sharing the account leaves us, calls/s
STORM_QPS = 100  # what we ask for
STORM_SECONDS = 4.5
IP_LIMIT = 110  # just above --qps: a retry that skipped the limiter would trip it


async def test_a_throttling_storm_slows_the_scan_down_and_it_comes_back_up() -> None:
    ids = valid_ids(260, "GID_storm@@@dev")
    config = EmulatorConfig(
        limits=Limits(qps_single=STORM_LIMIT, ip_limit=IP_LIMIT),
        faults=Faults(latency_ms=5, jitter_ms=5),
    )
    # (seconds since start, requests, throttled, current rate) every quarter second.
    samples: list[tuple[float, int, int, float]] = []
    records: list[Record] = []
    async with run_emulator(config) as emu, _demo_client(emu.url) as client:
        limiter = RateLimiter(STORM_QPS)
        scanner = Scanner(
            client=client,
            settings=ScanSettings(instance_id=DEFAULT_INSTANCE_ID, qps=STORM_QPS),
            pacer=limiter,
        )
        scan = asyncio.create_task(scanner.run(ids, emit=records.append))
        start = time.monotonic()
        while not scan.done():
            await asyncio.wait([scan], timeout=0.25)
            now = time.monotonic() - start
            if now >= STORM_SECONDS and emu.control.limits.qps_single == STORM_LIMIT:
                emu.control.set_limits(qps_single=500)  # the other tool is done
                lifted = now
            single = emu.stats().actions[ACTION_SINGLE]
            samples.append((now, single.requests, single.throttled, limiter.current_rate))
        outcome = await scan
        single = emu.stats().actions[ACTION_SINGLE]

    assert outcome == "completed"
    assert sorted(r.client_id for r in records) == sorted(ids)
    assert all(r.online is emu.fleet.is_online(r.client_id) for r in records)

    def throttled_share(begin: float, end: float) -> float:
        inside = [s for s in samples if begin <= s[0] < end + 0.01]
        before = [s for s in samples if s[0] < begin] or [(0.0, 0, 0, 0.0)]
        requests = inside[-1][1] - before[-1][1]
        return (inside[-1][2] - before[-1][2]) / requests

    # Slowed down when told to: half the first second is refused, the storm's last
    # second hardly any (AIMD: a 30% cut per burst, three bursts from 100/s to 34/s).
    first = throttled_share(0.0, 1.0)
    settled = throttled_share(STORM_SECONDS - 1.0, STORM_SECONDS)
    assert first >= 0.3, samples
    assert settled <= 0.1, samples
    at_lift = next(rate for t, *_, rate in samples if t >= lifted)
    assert at_lift <= 0.6 * STORM_QPS
    # Came back up once the storm passed, without meeting throttling again.
    after = [rate for t, *_, rate in samples if t >= lifted]
    assert max(after) >= at_lift + INCREASE_SHARE * STORM_QPS, samples
    assert samples[-1][0] > lifted + 1.0, "the scan ended too soon to see the climb"
    assert throttled_share(lifted + 0.5, samples[-1][0]) == 0.0
    # The source IP stayed under its limit throughout, retries included.
    assert single.blocked == 0
    assert single.max_requests_1s <= IP_LIMIT
    assert single.throttled > 0


@contextlib.asynccontextmanager
async def _demo_client(url: str) -> AsyncIterator[OnsMqttClient]:
    async with aiohttp.ClientSession() as session:
        yield OnsMqttClient(
            session=session,
            credentials=StaticCredentials(DEMO),
            instance_id=DEFAULT_INSTANCE_ID,
            endpoint=url,
        )


def test_the_rate_climbs_back_only_after_a_whole_step_without_throttling() -> None:
    now = [0.0]
    limiter = RateLimiter(100, clock=lambda: now[0])
    limiter.on_throttled()
    assert limiter.current_rate == pytest.approx(70)
    now[0] = 0.9
    limiter.on_throttled()  # the same storm, still on: no second cut yet ...
    now[0] = 1.2
    limiter.on_success()  # ... and no raise either, though a step passed since the cut
    assert limiter.current_rate == pytest.approx(70)
    now[0] = 1.95
    limiter.on_success()  # a whole step since the last throttled answer
    assert limiter.current_rate == pytest.approx(75)


# --- an account-wide failure mid-scan ----------------------------------------------------------


def test_a_key_revoked_mid_scan_stops_it_within_a_few_calls_with_only_true_records(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = valid_ids(600, "GID_revoke@@@dev")
    config = EmulatorConfig(faults=Faults(latency_ms=2, jitter_ms=2))
    with run_emulator_in_thread(config) as emu:
        revoked = threading.Event()

        def revoke_after_some_answers() -> None:
            while emu.stats().successes < 150:
                time.sleep(0.005)
            emu.control.revoke_key(DEFAULT_ACCESS_KEY_ID)
            revoked.set()

        threading.Thread(target=revoke_after_some_answers, daemon=True).start()
        options = ("--qps", "300", "--concurrency", "8", "--max-attempts", "6")
        code, records, summary = run_cli(emu.url, cli_env, ids, *options)
        stats = emu.stats()
        err = capsys.readouterr().err
        assert revoked.is_set()

        assert code == 3
        assert "stopped: InvalidAccessKeyId.Inactive" in err
        assert "Traceback" not in err
        # Within a few calls: at most the calls already in flight met the revoked key.
        refused = stats.actions[ACTION_SINGLE].rejected
        assert 1 <= refused <= 8
        # Only true records: every answer the server gave is recorded, nothing else is.
        assert all(r["status"] in ("online", "offline") for r in records)
        assert all(r["online"] is emu.fleet.is_online(r["client_id"]) for r in records)
        assert len({r["client_id"] for r in records}) == len(records) == stats.successes
        assert summary["outcome"] == "aborted"
        assert "InvalidAccessKeyId.Inactive" in summary["abort_reason"]
        assert summary["ids_not_scanned"] == len(ids) - len(records) > 0

        # The key is back: --resume finishes the list without asking again what was done.
        emu.control.add_key(DEFAULT_KEY)
        emu.reset()
        done = {r["client_id"] for r in records}
        code, records, summary = run_cli(emu.url, cli_env, ids, *options, "--resume")
        assert code == 0
        assert sorted(r["client_id"] for r in records) == sorted(ids)
        assert not done & set(emu.stats().client_id_queries)
        assert summary["ids_resumed"] == len(done)


# --- what a proxy answers instead of the API --------------------------------------------------


HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
HTML_403 = b"<!DOCTYPE html><html><body><h1>Access denied</h1>by policy</body></html>"
HUGE = b'{"OnlineStatus": true, "Pad": "' + b"x" * (2 << 20) + b'"}'
# Client ID suffix -> (what the proxy answers, the record's error code and HTTP status).
PROXY = {
    "html-502": ("HTTP502", 502),
    "html-403": ("MalformedResponse", 403),
    "empty-200": ("MalformedResponse", 200),
    "missing-field": ("MalformedResponse", 200),
    "wrong-type": ("MalformedResponse", 200),
    "truncated-json": ("MalformedResponse", 200),
    "json-array": ("MalformedResponse", 200),
    "huge": ("MalformedResponse", 200),
    "huge-chunked": ("MalformedResponse", 200),
    "bad-gzip": ("ConnectionError", None),
    "cut-short": ("ConnectionError", None),
}


async def _proxy_answer(request: web.Request) -> web.StreamResponse:
    client_id = request.query.get("ClientId", "")
    kind = client_id.rpartition("@@@")[2]
    PROXY_ATTEMPTS[kind] += 1
    if kind == "html-502" or (kind == "flaky" and PROXY_ATTEMPTS[kind] == 1):
        return web.Response(status=502, body=HTML_502, content_type="text/html")
    if kind == "html-403":
        return web.Response(status=403, body=HTML_403, content_type="text/html")
    if kind == "empty-200":
        return web.Response(body=b"")
    if kind == "missing-field":
        return web.json_response({"RequestId": "R-1"})
    if kind == "wrong-type":
        return web.json_response({"OnlineStatus": "true", "RequestId": "R-1"})
    if kind == "truncated-json":
        return web.Response(body=b'{"OnlineStatus": tr', content_type="application/json")
    if kind == "json-array":
        return web.json_response([])
    if kind == "huge":
        return web.Response(body=HUGE, content_type="application/json")
    if kind in ("huge-chunked", "bad-gzip", "cut-short"):
        headers = {"Content-Type": "application/json"}
        if kind == "bad-gzip":
            headers["Content-Encoding"] = "gzip"
        if kind == "cut-short":
            headers["Content-Length"] = "1000"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        if kind == "huge-chunked":
            for _ in range(40):
                await response.write(b"x" * 65536)
            await response.write_eof()
        elif kind == "bad-gzip":
            await response.write(b"\x1f\x8b this is not gzip at all")
            await response.write_eof()
        else:
            await response.write(b'{"OnlineStatus": true')
            assert request.transport is not None
            request.transport.close()
        return response
    online = sum(client_id.encode()) % 2 == 0
    return web.json_response({"OnlineStatus": online, "RequestId": f"R-{client_id}"})


PROXY_ATTEMPTS: Counter[str] = Counter()


async def _proxy_attempts(request: web.Request) -> web.Response:
    return web.json_response(dict(PROXY_ATTEMPTS))


async def serve_proxy_forever() -> None:
    """The fake proxy: prints its URL, then serves until killed."""
    app = web.Application()
    app.router.add_post("/", _proxy_answer)
    app.router.add_get("/attempts", _proxy_attempts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}/", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def proxy_process() -> Iterator[str]:
    """The fake proxy in a process of its own, as a real one is; yields its URL.

    (Served from a thread of the CLI's own process instead, an answer of more than
    MAX_BODY_BYTES sometimes stalled the next requests past their timeout: the two
    event loops share one interpreter. With the server in its own process, never.)
    """
    main_code = "import asyncio, test_reliability_faults as t; asyncio.run(t.serve_proxy_forever())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", main_code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_what_a_proxy_answers_is_classified_recorded_and_never_a_crash(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = valid_ids(20, "GID_proxy@@@good")
    ids = [*good, *(f"GID_proxy@@@{kind}" for kind in [*PROXY, "flaky"])]
    with proxy_process() as url:
        code, records, summary = run_cli(
            url, cli_env, ids, "--max-attempts", "2", "--timeout", "5", "--quiet"
        )
        with urllib.request.urlopen(url + "attempts") as answer:
            attempts = orjson.loads(answer.read())
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    by_id = {r["client_id"]: r for r in records}
    assert sorted(by_id) == sorted(ids)
    for kind, (error_code, status) in PROXY.items():
        record = by_id[f"GID_proxy@@@{kind}"]
        assert record["status"] == "error", kind
        assert (record["error"]["code"], record["error"]["http_status"]) == (error_code, status)
        assert record["error"]["message"], kind
        assert len(record["error"]["message"]) < 300, kind  # a snippet, not the body
        # Transient: retried, and the retry met the same answer.
        assert record["attempts"] == attempts[kind] == 2, kind
    flaky = by_id["GID_proxy@@@flaky"]
    assert flaky["online"] is (sum(flaky["client_id"].encode()) % 2 == 0)
    assert flaky["attempts"] == 2
    for cid in good:
        assert by_id[cid]["online"] is (sum(cid.encode()) % 2 == 0)
    assert summary["ids_error"] == len(PROXY)
    assert summary["outcome"] == "completed with errors"


def _answers(limiter: RateLimiter, now: list[float], *, seconds: int, every: int) -> None:
    """300 answers a second on a fake clock, every ``every``-th of them throttled."""
    for i in range(seconds * 300):
        now[0] = i / 300
        if i % every == every - 1:
            limiter.on_throttled()
        else:
            limiter.on_success()


def test_odd_throttled_answers_are_noise_and_a_storm_is_not() -> None:
    now = [0.0]
    # 5% of answers refused at random (the fault mix above): not a limit to back off from.
    noisy = RateLimiter(300, clock=lambda: now[0])
    _answers(noisy, now, seconds=10, every=20)
    assert noisy.current_rate == 300
    # A quarter refused: a limit; cut once a step, down towards the floor.
    stormy = RateLimiter(300, clock=lambda: now[0])
    _answers(stormy, now, seconds=3, every=4)
    assert stormy.current_rate == pytest.approx(300 * 0.7**3)

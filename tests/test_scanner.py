"""The scan end to end against the emulator on loopback: records, counters, pacing,
retries, account-wide stops, batch splitting, graceful stops and the library `scan()`.

Each test checks the scanner against the emulator's own truth (`emu.fleet.is_online`)
and counters (`emu.stats()`), never against the scanner's idea of what it did.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, Literal

import pytest
from emulator_fixtures import ids

from fleetscan.client import BatchAnswer, SessionAnswer, SessionApi, connect
from fleetscan.credentials import Credentials
from fleetscan.emulator import (
    ACTION_BATCH,
    ACTION_SINGLE,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    DROP,
    EmulatorConfig,
    FaultRule,
    Faults,
    Limits,
    RunningEmulator,
    run_emulator,
)
from fleetscan.engine import Scanner, ScanSettings, default_concurrency, scan
from fleetscan.engine import settings as settings_module
from fleetscan.errors import AccountError, InputError
from fleetscan.limiter import RateLimiter
from fleetscan.limits import BATCH_API, SINGLE_API, Mode
from fleetscan.records import INVALID_CODE, Record, Status
from fleetscan.retry import RetryPolicy
from fleetscan.summary import ScanSummary
from fleetscan.window import SlidingWindow

DEMO = Credentials(
    access_key_id=DEFAULT_ACCESS_KEY_ID,
    access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
    source="the emulator's demo key",
)
# Retries that wait milliseconds, not seconds: the tests check what is retried, not how long.
FAST_RETRY = RetryPolicy(backoff_base=0.005, backoff_max=0.02)
# Limits far above the API's, for tests about something else than pacing (that one test
# runs under the real limits): a scan of a few hundred IDs then takes a fraction of a second.
ROOMY = Limits(qps_single=5000, qps_batch=5000, ip_limit=0)
FAST_QPS = 2000
INVALID = ["GID_bad@@@has space", "no-at-signs", "GID_x@@@" + "d" * 70, "GID_a@@@b/c"]


def roomy(**options: Any) -> EmulatorConfig:
    """An emulator config with `ROOMY` limits."""
    return EmulatorConfig(limits=ROOMY, **options)


@asynccontextmanager
async def scanner_for(
    emu: RunningEmulator,
    *,
    mode: Mode = "single",
    qps: float = FAST_QPS,
    signature: Literal["v3", "v1"] = "v3",
    retry: RetryPolicy = FAST_RETRY,
    grace_seconds: float = 5.0,
    instance_id: str = DEFAULT_INSTANCE_ID,
    credentials: Credentials = DEMO,
) -> AsyncIterator[Scanner]:
    """A `Scanner` with its own client, pointed at ``emu``."""
    async with connect(
        instance_id=instance_id, credentials=credentials, endpoint=emu.url, signature=signature
    ) as client:
        settings = ScanSettings(
            instance_id=instance_id,
            mode=mode,
            qps=qps,
            account_qps=ROOMY.qps_single,
            retry=retry,
            grace_seconds=grace_seconds,
        )
        yield Scanner(client=client, settings=settings)


async def run_scan(scanner: Scanner, client_ids: Iterable[str]) -> tuple[str, list[Record]]:
    records: list[Record] = []
    outcome = await scanner.run(client_ids, emit=records.append)
    return outcome, records


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the emulator (polled: it has no event to await) to reach a state."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def scan_tasks() -> list[asyncio.Task[Any]]:
    """The scan's workers and batcher still alive on this loop."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(("fleetscan-worker", "batcher")) and not t.done()
    ]


async def collect(records: AsyncIterator[Record], into: list[Record]) -> None:
    async for record in records:
        into.append(record)


def assert_true_records(emu: RunningEmulator, records: list[Record], api: str) -> None:
    """Every record is final and says what the emulator's fleet says."""
    for record in records:
        assert record.status in (Status.ONLINE, Status.OFFLINE), record
        assert record.online is emu.fleet.is_online(record.client_id), record.client_id
        assert record.api == api
        assert record.instance_id == DEFAULT_INSTANCE_ID
        assert record.request_id


def only_once(records: list[Record]) -> dict[str, Record]:
    by_id = {r.client_id: r for r in records}
    assert len(by_id) == len(records), "an ID got more than one record"
    return by_id


# --- records --------------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["v3", "v1"])
@pytest.mark.parametrize("mode", ["single", "batch"])
async def test_every_unique_valid_id_gets_one_true_record(
    mode: Mode, signature: Literal["v3", "v1"]
) -> None:
    valid = ids(157)
    # Duplicates and invalid IDs, interleaved: each unique ID once, invalid never sent.
    inputs = [*valid[:80], *INVALID, *valid[40:], valid[0], INVALID[0]]
    api = SINGLE_API if mode == "single" else BATCH_API
    async with (
        run_emulator(roomy(online_ratio=0.5)) as emu,
        scanner_for(emu, mode=mode, signature=signature) as scanner,
    ):
        outcome, records = await run_scan(scanner, inputs)
        stats = emu.stats()
    assert outcome == "completed"
    by_id = only_once(records)
    assert set(by_id) == set(valid) | set(INVALID)
    answered = [by_id[cid] for cid in valid]
    assert_true_records(emu, answered, api)
    assert {r.online for r in answered} == {True, False}  # both kinds really checked
    assert all(r.attempts == 1 and r.error is None for r in answered)
    for cid in INVALID:
        record = by_id[cid]
        assert record.status is Status.INVALID
        assert record.attempts == 0
        assert record.api is None
        assert record.online is None
        assert record.error is not None
        assert record.error["code"] == INVALID_CODE
    # The emulator saw each valid ID exactly once and never an invalid one.
    assert stats.client_id_queries == dict.fromkeys(valid, 1)
    assert stats.client_id_answers == dict.fromkeys(valid, 1)
    action = ACTION_SINGLE if mode == "single" else ACTION_BATCH
    calls = stats.actions[action].requests
    if mode == "single":
        assert calls == len(valid)
    else:
        # Batches are filled: about a tenth of the calls (a partial batch may go early).
        assert math.ceil(len(valid) / 10) <= calls <= math.ceil(len(valid) / 10) + 2
    c = scanner.counters
    assert (c.read, c.unique, c.duplicates) == (len(inputs), len(by_id), len(inputs) - len(by_id))
    assert (c.invalid, c.online + c.offline, c.errors) == (len(INVALID), len(valid), 0)
    assert c.online == sum(r.online is True for r in answered)


# --- counters against the emulator's ---------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "batch"])
async def test_counters_agree_with_the_emulator(mode: Mode) -> None:
    valid = ids(200)
    throttled_ids = valid[5::50]  # in different batches: a batch meets one rule per attempt
    config = roomy(
        faults=Faults(error_rate=0.08, unavailable_rate=0.04, drop_rate=0.04),
        rules=tuple(FaultRule(code="SystemOverFlow", client_id=c, times=2) for c in throttled_ids),
    )
    async with (
        run_emulator(config) as emu,
        scanner_for(emu, mode=mode) as scanner,
    ):
        outcome, records = await run_scan(scanner, valid)
        stats = emu.stats()
    assert outcome == "completed"
    assert_true_records(emu, records, SINGLE_API if mode == "single" else BATCH_API)
    assert len(only_once(records)) == len(valid)
    c = scanner.counters
    action = stats.actions[ACTION_SINGLE if mode == "single" else ACTION_BATCH]
    assert action.faulted > 0
    assert action.dropped > 0
    assert c.calls_sent == stats.requests == action.requests
    assert c.calls_succeeded == stats.successes
    assert c.calls_failed == stats.requests - stats.successes
    # Injected SystemOverFlow answers are the only throttled ones here.
    assert c.calls_throttled == 2 * len(throttled_ids) + action.throttled
    units = len(valid) if mode == "single" else len({r.request_id for r in records})
    assert c.calls_retried == c.calls_sent - units
    if mode == "single":
        # Every attempt belongs to exactly one ID's call.
        assert sum(r.attempts for r in records) == c.calls_sent
        assert any(r.attempts > 1 for r in records)
    summary = ScanSummary.build(
        c,
        mode=mode,
        api=scanner.settings.api,
        instance_id=DEFAULT_INSTANCE_ID,
        qps=FAST_QPS,
        started_at=records[0].checked_at,
        ended_at=records[-1].checked_at,
        duration_seconds=1.0,
        not_scanned=c.unique - c.done,
        instance_tps=None,
        price_per_million=None,
        outcome=outcome,
    )
    assert summary.billable_transactions == stats.successes
    assert summary.calls_sent == stats.requests
    assert summary.ids_not_scanned == 0


# --- pacing -----------------------------------------------------------------------------


class RecordingLimiter(RateLimiter):
    """The real limiter, noting when it let each attempt through."""

    def __init__(self, qps: float) -> None:
        super().__init__(qps)
        self.window = SlidingWindow()

    async def acquire(self) -> None:
        await super().acquire()
        self.window.add(time.monotonic())


@pytest.mark.parametrize(("mode", "qps", "count"), [("single", 50, 110), ("batch", 20, 300)])
async def test_no_sliding_second_holds_more_than_qps(mode: Mode, qps: int, count: int) -> None:
    """Runs past the first second (where a plain token bucket admits twice the rate)
    under an emulator whose account limit is the qps asked for."""
    config = EmulatorConfig(limits=Limits(qps_single=qps, qps_batch=qps))
    valid = ids(count)
    calls = count if mode == "single" else count // 10
    limiter = RecordingLimiter(qps)
    async with (
        run_emulator(config) as emu,
        connect(instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=emu.url) as client,
    ):
        settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode=mode, qps=qps)
        scanner = Scanner(client=client, settings=settings, pacer=limiter)
        outcome, records = await run_scan(scanner, valid)
        stats = emu.stats()
    assert outcome == "completed"
    assert len(only_once(records)) == count
    assert_true_records(emu, records, SINGLE_API if mode == "single" else BATCH_API)
    seen = stats.actions[ACTION_SINGLE if mode == "single" else ACTION_BATCH]
    # What the limiter controls, exactly: attempts let through in any sliding second.
    assert qps - 2 <= limiter.window.peak <= qps
    # What the server saw. Its clock of arrivals adds the delay from our acquisition to
    # its handler (a loaded test machine: several ms), which can shift one call into
    # a neighbouring second; a plain token bucket would show ~2x qps here.
    assert seen.max_requests_1s <= qps + 1
    assert seen.throttled <= 1
    assert seen.requests == calls + seen.throttled
    # Paced at the rate, not far under it, from the first second on: on a virtual
    # clock, tests/test_engine.py::test_paced_at_the_rate_from_the_first_second.
    # The scan's own peak TPS is the emulator's busiest second of successes.
    assert abs(scanner.counters.success_peak.peak - seen.max_successes_1s) <= 2


# --- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("code", ["SystemOverFlow", "InternalError", DROP])
async def test_faults_are_retried_to_success(mode: Mode, code: str) -> None:
    valid = ids(40)
    faulty = {valid[3]: 1, valid[17]: 2, valid[31]: 4}
    config = roomy(
        rules=tuple(FaultRule(code=code, client_id=c, times=k) for c, k in faulty.items())
    )
    async with (
        run_emulator(config) as emu,
        scanner_for(emu, mode=mode) as scanner,
    ):
        outcome, records = await run_scan(scanner, valid)
        stats = emu.stats()
    assert outcome == "completed"
    by_id = only_once(records)
    assert set(by_id) == set(valid)
    assert_true_records(emu, records, SINGLE_API if mode == "single" else BATCH_API)
    for cid, times in faulty.items():
        assert by_id[cid].attempts == times + 1, cid
        assert stats.client_id_queries[cid] == times + 1
    if mode == "single":
        assert all(r.attempts == 1 for cid, r in by_id.items() if cid not in faulty)
    else:
        # A batch's IDs share its call, so they share its attempts.
        for record in records:
            mates = [r for r in records if r.request_id == record.request_id]
            assert len({r.attempts for r in mates}) == 1
    c = scanner.counters
    assert c.calls_failed == sum(faulty.values()) == c.calls_retried
    assert c.calls_throttled == (sum(faulty.values()) if code == "SystemOverFlow" else 0)


async def test_an_id_that_keeps_failing_gets_an_error_record_and_the_scan_goes_on() -> None:
    valid = ids(20)
    bad = valid[7]
    config = roomy(rules=(FaultRule(code="InternalError", client_id=bad, times=100),))
    async with (
        run_emulator(config) as emu,
        scanner_for(emu, retry=RetryPolicy(max_attempts=3, backoff_base=0.001)) as scanner,
    ):
        outcome, records = await run_scan(scanner, valid)
        stats = emu.stats()
    assert outcome == "completed with errors"
    by_id = only_once(records)
    assert set(by_id) == set(valid)
    error = by_id.pop(bad)
    assert error.status is Status.ERROR
    assert error.online is None
    assert error.attempts == 3 == stats.client_id_queries[bad]
    assert error.error is not None
    assert (error.error["code"], error.error["http_status"]) == ("InternalError", 417)
    assert error.error["message"]
    assert error.request_id  # the server's RequestId of the last answer
    assert_true_records(emu, list(by_id.values()), SINGLE_API)
    assert scanner.counters.errors == 1


# --- account-wide errors ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "batch"])
async def test_a_key_revoked_mid_run_stops_the_scan_within_a_few_calls(mode: Mode) -> None:
    valid = ids(400)
    async with run_emulator() as emu, scanner_for(emu, mode=mode, qps=100) as scanner:
        records: list[Record] = []

        def emit(record: Record) -> None:
            records.append(record)
            if len(records) == 30:
                emu.control.revoke_key(DEFAULT_ACCESS_KEY_ID)

        outcome = await scanner.run(valid, emit=emit)
        stats = emu.stats()
    assert outcome == "aborted"
    assert isinstance(scanner.abort_error, AccountError)
    assert scanner.abort_error.code == "InvalidAccessKeyId.Inactive"
    action = stats.actions[ACTION_SINGLE if mode == "single" else ACTION_BATCH]
    # Refused calls after the revocation: the ones already in flight, no more.
    assert 1 <= action.rejected <= 3
    assert stats.requests == action.successes + action.rejected
    # Only true records: the refused IDs have none (resume asks them later).
    only_once(records)
    assert_true_records(emu, records, SINGLE_API if mode == "single" else BATCH_API)
    assert {r.client_id for r in records} == set(stats.client_id_answers)
    assert 30 <= len(records) < len(valid) / 2
    c = scanner.counters
    assert c.errors == 0
    assert c.unique - c.done > 0


async def test_a_wrong_secret_stops_at_the_first_answer() -> None:
    wrong = Credentials(access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret="not-it")
    async with (
        run_emulator() as emu,
        scanner_for(emu, credentials=wrong, qps=300) as scanner,
    ):
        outcome, records = await run_scan(scanner, ids(300))
        stats = emu.stats()
    assert outcome == "aborted"
    assert scanner.abort_error is not None
    assert scanner.abort_error.code == "SignatureDoesNotMatch"
    assert "not-it" not in str(scanner.abort_error)
    assert records == []
    assert 1 <= stats.requests <= 5  # of 300: the calls already let through, no more


@pytest.mark.parametrize("mode", ["single", "batch"])
async def test_an_abort_on_the_first_answer_sends_nothing_more(mode: Mode) -> None:
    """Workers waiting for the first answer must not send once it aborted the scan
    (that they stop at once: tests/test_engine.py, on a virtual clock)."""
    wrong = Credentials(access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret="not-it")
    async with (
        run_emulator(roomy()) as emu,
        connect(instance_id=DEFAULT_INSTANCE_ID, credentials=wrong, endpoint=emu.url) as client,
    ):
        settings = ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID, mode=mode, qps=20, concurrency=100, grace_seconds=5
        )
        scanner = Scanner(client=client, settings=settings)
        outcome, records = await run_scan(scanner, ids(1000))
        stats = emu.stats()
    assert outcome == "aborted"
    assert records == []
    assert stats.requests == 1


# --- batch splitting ---------------------------------------------------------------------


async def test_a_batch_refused_for_one_id_is_halved_until_it_stands_alone() -> None:
    valid = ids(35)
    bad = valid[14]  # the fifth of the second batch of ten
    config = roomy(
        rules=(FaultRule(code="InvalidParameter", client_id=bad, action=ACTION_BATCH, times=99),)
    )
    async with (
        run_emulator(config) as emu,
        scanner_for(emu, mode="batch") as scanner,
    ):
        outcome, records = await run_scan(scanner, valid)
        stats = emu.stats()
    assert outcome == "completed with errors"
    by_id = only_once(records)
    assert set(by_id) == set(valid)
    error = by_id.pop(bad)
    assert error.status is Status.ERROR
    assert error.api == BATCH_API
    assert error.error is not None
    assert (error.error["code"], error.error["http_status"]) == ("InvalidParameter", 400)
    assert_true_records(emu, list(by_id.values()), BATCH_API)
    # Each good ID answered once; the bad one asked once per halving (10, 5, 3, 2, 1).
    assert stats.client_id_answers == dict.fromkeys(by_id, 1)
    assert stats.client_id_queries[bad] <= 5
    # Each record counts every attempt its ID was part of, the refused calls included.
    assert error.attempts == stats.client_id_queries[bad]
    for client_id, record in by_id.items():
        assert record.attempts == stats.client_id_queries[client_id], client_id
    assert stats.actions[ACTION_BATCH].rejected == 0  # refused by the rule, not the gateway


# --- stopping -------------------------------------------------------------------------------


async def test_stop_lets_calls_in_flight_finish_and_queries_nothing_without_a_record() -> None:
    valid = ids(300)
    config = EmulatorConfig(faults=Faults(latency_ms=40))
    async with run_emulator(config) as emu, scanner_for(emu, qps=200) as scanner:
        records: list[Record] = []

        def emit(record: Record) -> None:
            records.append(record)
            if len(records) == 25:
                scanner.stop()

        outcome = await scanner.run(valid, emit=emit)
        stats = emu.stats()
    assert outcome == "interrupted"
    assert scanner.interrupted
    assert scanner.abort_error is None
    only_once(records)
    assert_true_records(emu, records, SINGLE_API)
    # Calls in flight at the stop finished and have their records; nothing else was sent.
    assert len(records) > 25
    assert set(stats.client_id_queries) == {r.client_id for r in records}
    assert scanner.counters.unique - scanner.counters.done > 0


# The grace period that bounds the wait for calls on the wire:
# tests/test_engine.py::test_the_grace_period_bounds_the_wait_for_calls_on_the_wire.


async def test_a_stop_sends_nothing_for_workers_queued_on_the_pacer() -> None:
    """200 workers wait for tokens at 20/s when the stop comes: none of them sends (that
    the stop does not wait for them: tests/test_engine.py, on a virtual clock)."""
    async with (
        run_emulator(roomy()) as emu,
        connect(instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=emu.url) as client,
    ):
        settings = ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID, qps=20, concurrency=200, grace_seconds=5.0
        )
        scanner = Scanner(client=client, settings=settings)
        task = asyncio.create_task(run_scan(scanner, ids(400)))
        await until(lambda: emu.stats().successes >= 3)
        scanner.stop()
        outcome, records = await task
        stats = emu.stats()
    assert outcome == "interrupted"
    assert {r.client_id for r in records} == set(stats.client_id_queries)


async def test_a_bad_input_line_keeps_the_records_before_it() -> None:
    valid = ids(12)

    def rows() -> Iterator[str]:
        yield from valid
        raise InputError("bytes that are not UTF-8", source="ids.txt", line=13)

    async with run_emulator(roomy()) as emu, scanner_for(emu) as scanner:
        records: list[Record] = []
        with pytest.raises(InputError, match=r"ids\.txt:13"):
            await scanner.run(rows(), emit=records.append)
    assert {r.client_id for r in records} == set(valid)
    assert_true_records(emu, records, SINGLE_API)
    assert scanner.outcome == "input error"


async def test_a_stop_before_the_run_sends_nothing() -> None:
    async with run_emulator(roomy()) as emu, scanner_for(emu) as scanner:
        scanner.stop()
        outcome, records = await run_scan(scanner, ids(30))
        stats = emu.stats()
    assert (outcome, records, stats.requests) == ("interrupted", [], 0)


# --- the library ------------------------------------------------------------------------------


async def test_library_scan_yields_one_true_record_per_unique_id() -> None:
    valid = ids(60)
    async with run_emulator() as emu:
        records = [
            r
            async for r in scan(
                [*valid, *valid[:10], INVALID[1]],
                instance_id=DEFAULT_INSTANCE_ID,
                endpoint=emu.url,
                credentials=DEMO,
                mode="batch",
            )
        ]
        stats = emu.stats()
    by_id = only_once(records)
    assert set(by_id) == {*valid, INVALID[1]}
    assert by_id.pop(INVALID[1]).status is Status.INVALID
    assert_true_records(emu, list(by_id.values()), BATCH_API)
    assert stats.client_id_queries == dict.fromkeys(valid, 1)


async def test_library_scan_raises_the_account_error_after_its_records() -> None:
    async with run_emulator() as emu:
        records: list[Record] = []
        with pytest.raises(AccountError, match="InstanceNotFound"):
            await collect(
                scan(ids(20), instance_id="mqtt-cn-nothere", endpoint=emu.url, credentials=DEMO),
                records,
            )
        assert records == []
        assert emu.stats().requests <= 3


@pytest.mark.parametrize("closing", ["aclosing", "garbage collection"])
async def test_leaving_the_library_loop_early_stops_the_scan(closing: str) -> None:
    config = EmulatorConfig(faults=Faults(latency_ms=20))
    async with run_emulator(config) as emu:
        got: list[Record] = []
        records = scan(
            ids(500), instance_id=DEFAULT_INSTANCE_ID, endpoint=emu.url, credentials=DEMO
        )
        if closing == "aclosing":
            async with aclosing(records):
                async for record in records:
                    got.append(record)
                    if len(got) == 5:
                        break
            sent = emu.stats().requests
        else:
            async for record in records:
                got.append(record)
                if len(got) == 5:
                    break
            del records  # the loop's finalizer closes it
            await until(lambda: not scan_tasks())
            sent = emu.stats().requests
        assert not scan_tasks()  # the scan's workers are gone: nothing more can go out
        await asyncio.sleep(0.2)
        assert emu.stats().requests == sent
    assert sent < 100


def test_settings_default_from_the_mode() -> None:
    single = ScanSettings(instance_id="i")
    batch = ScanSettings(instance_id="i", mode="batch")
    # The single default: its account pace (482) within the address budget (270).
    assert (single.api_rate, single.rate, single.api, single.workers) == (
        482,
        270,
        SINGLE_API,
        136,
    )
    assert (batch.api_rate, batch.rate, batch.api) == (96, 96, BATCH_API)
    assert ScanSettings(instance_id="i", qps=10, concurrency=3).workers == 3
    assert default_concurrency(10) == 16
    assert single.grace_seconds == settings_module.DEFAULT_GRACE_SECONDS


async def test_attempts_that_time_out_are_counted_apart() -> None:
    # The server may answer, and bill, an attempt after the client gave up on it: the
    # summary must say how many such attempts there were.
    valid = ids(10)
    config = roomy(
        rules=(FaultRule(code="InternalError", client_id=valid[2], times=2, delay_ms=1500),)
    )
    async with (
        run_emulator(config) as emu,
        connect(
            instance_id=DEFAULT_INSTANCE_ID,
            credentials=DEMO,
            endpoint=emu.url,
            # Far above a normal answer's time even on a loaded machine, far below the rule's.
            attempt_timeout=0.5,
        ) as client,
    ):
        settings = ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID, qps=FAST_QPS, account_qps=FAST_QPS, retry=FAST_RETRY
        )
        scanner = Scanner(client=client, settings=settings)
        outcome, records = await run_scan(scanner, valid)
    assert outcome == "completed"
    assert only_once(records)[valid[2]].attempts == 3
    c = scanner.counters
    assert (c.calls_timed_out, c.calls_failed, c.calls_succeeded) == (2, 2, 10)


async def test_the_first_call_goes_out_alone_and_the_others_follow_its_answer() -> None:
    # Its cold start (a new connection) must not bunch the calls paced behind it.
    events: list[tuple[str, float]] = []

    class Recording:
        def __init__(self, client: SessionApi) -> None:
            self.client = client

        async def query_session(self, client_id: str) -> SessionAnswer:
            events.append(("sent", time.monotonic()))
            try:
                return await self.client.query_session(client_id)
            finally:
                events.append(("answered", time.monotonic()))

        async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
            raise AssertionError("a single-mode scan made a batch call")

    config = roomy(faults=Faults(latency_ms=100))
    async with (
        run_emulator(config) as emu,
        connect(instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=emu.url) as client,
    ):
        settings = ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID, qps=FAST_QPS, account_qps=FAST_QPS, retry=FAST_RETRY
        )
        scanner = Scanner(client=Recording(client), settings=settings)
        outcome, records = await run_scan(scanner, ids(8))
    assert outcome == "completed"
    assert len(records) == 8
    assert [kind for kind, _ in events[:2]] == ["sent", "answered"]
    # Once it answered, the others went out together (the rate allows it): all of them
    # before any of their answers (each takes the emulator's 100 ms) came back.
    kinds = [kind for kind, _ in events[2:]]
    assert kinds == ["sent"] * 7 + ["answered"] * 7

"""The scan engine's timing and bookkeeping on a virtual clock: the warm-up gate, the
pacing from the first second, batch fill, stops (the grace period, pacer queues,
aborts), the one outcome order, attempt counts after a batch repeat, and the settings
refusing what the command refuses.

The API here is `FakeApi`, a small fake answering after a virtual latency; the IDs
come from `ScriptedFeed` at chosen virtual times. The same engine against the emulator
over loopback is tests/test_scanner.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from emulator_fixtures import ids
from virtual_loop import VirtualLoop

from fleetscan.client import BatchAnswer, SessionAnswer
from fleetscan.engine import (
    BatchLane,
    Outcome,
    ScanJob,
    Scanner,
    ScanSettings,
    outcome_of,
)
from fleetscan.engine.warmup import WARM_UP_SECONDS
from fleetscan.errors import AccountError, ApiError, TransientError, UsageError
from fleetscan.limiter import RateLimiter
from fleetscan.limits import BATCH_API, MAX_QPS, SINGLE_API
from fleetscan.records import Record, Status
from fleetscan.retry import RetryPolicy

INSTANCE = "mqtt-cn-virtual"
FAST_RETRY = RetryPolicy(backoff_base=0.005, backoff_max=0.02)


class FakeApi:
    """Both session calls, answered after ``latency`` virtual seconds (``first`` for
    the scan's first call). ``fail`` maps a call number (0 = the first) to the error it
    raises; ``leave_out`` maps one to the IDs its batch answer omits."""

    def __init__(
        self,
        *,
        latency: float = 0.01,
        first: float | None = None,
        fail: dict[int, ApiError] | None = None,
        leave_out: dict[int, set[str]] | None = None,
    ) -> None:
        self.latency = latency
        self.first = first
        self.fail = fail or {}
        self.leave_out = leave_out or {}
        # (loop time, IDs) of every call sent, and the loop times of the answers.
        self.sent: list[tuple[float, tuple[str, ...]]] = []
        self.answered: list[float] = []
        self._changed: asyncio.Event | None = None

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked as calls go out and answers come."""
        while not condition():
            self._changed = asyncio.Event()
            await self._changed.wait()

    def _note(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _answer(self, client_ids: Sequence[str]) -> int:
        loop = asyncio.get_running_loop()
        number = len(self.sent)
        self.sent.append((loop.time(), tuple(client_ids)))
        self._note()
        delay = self.first if number == 0 and self.first is not None else self.latency
        await asyncio.sleep(delay)
        self.answered.append(loop.time())
        self._note()
        if number in self.fail:
            raise self.fail[number]
        return number

    async def query_session(self, client_id: str) -> SessionAnswer:
        number = await self._answer([client_id])
        return SessionAnswer(online=client_id.endswith(("0", "2", "4")), request_id=f"r{number}")

    async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
        number = await self._answer(client_ids)
        left_out = self.leave_out.get(number, set())
        statuses = {c: c.endswith(("0", "2", "4")) for c in client_ids if c not in left_out}
        return BatchAnswer(statuses=statuses, request_id=f"r{number}")


class ScriptedFeed:
    """Delivers ``script``'s IDs at its virtual times, then ends at ``end``."""

    def __init__(self, script: list[tuple[float, list[str]]], *, end: float | None = None) -> None:
        self.script = script
        self.end = end if end is not None else max(at for at, _ in script)
        self.freed = 0
        self.stopped = False
        self._handles: list[asyncio.TimerHandle] = []

    def start(
        self, on_id: Callable[[str], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        loop = asyncio.get_running_loop()

        def deliver(client_ids: list[str]) -> None:
            for client_id in client_ids:
                if not self.stopped:
                    on_id(client_id)

        for at, client_ids in self.script:
            self._handles.append(loop.call_at(at, deliver, client_ids))
        self._handles.append(loop.call_at(self.end, on_end, None))

    def free(self) -> None:
        self.freed += 1

    def stop(self) -> None:
        self.stopped = True


def settings(**options: Any) -> ScanSettings:
    options.setdefault("retry", FAST_RETRY)
    return ScanSettings(instance_id=INSTANCE, **options)


async def scan(
    api: FakeApi, feed: ScriptedFeed, scan_settings: ScanSettings, **options: Any
) -> tuple[Scanner, list[Record]]:
    scanner = Scanner(client=api, settings=scan_settings, **options)
    records: list[Record] = []
    await scanner.run_feed(feed, emit=records.append)
    return scanner, records


# --- the warm-up gate ----------------------------------------------------------------------


def test_the_first_call_goes_out_alone_and_the_others_follow_its_answer(
    virtual_loop: VirtualLoop,
) -> None:
    api = FakeApi(first=0.3, latency=0.1)
    _, records = virtual_loop.run(lambda: scan(api, ScriptedFeed([(0.0, ids(8))]), settings()))
    assert len(records) == 8
    times = [at for at, _ in api.sent]
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    # All seven others went after the first answer (0.3 s) and before any of theirs.
    assert all(0.3 <= t < 0.3 + 0.1 for t in times[1:]), times
    assert len(times) == 8


def test_a_first_call_slower_than_the_warm_up_holds_the_others_no_longer(
    virtual_loop: VirtualLoop,
) -> None:
    api = FakeApi(first=5.0, latency=0.1)
    virtual_loop.run(lambda: scan(api, ScriptedFeed([(0.0, ids(4))]), settings()))
    times = [at for at, _ in api.sent]
    # Held until the warm-up ran out (the first answer came at 5 s), then paced out.
    assert len(times) == 4
    assert all(WARM_UP_SECONDS <= t < WARM_UP_SECONDS + 0.01 for t in times[1:]), times


# --- pacing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "qps", "count"), [("single", 50, 110), ("batch", 20, 300)])
def test_paced_at_the_rate_from_the_first_second(
    virtual_loop: VirtualLoop, mode: str, qps: int, count: int
) -> None:
    api = FakeApi(latency=0.005)

    async def main() -> tuple[float, list[Record]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, records = await scan(
            api, ScriptedFeed([(0.0, ids(count))]), settings(mode=mode, qps=qps)
        )
        return loop.time() - started, records

    elapsed, records = virtual_loop.run(main)
    calls = count if mode == "single" else count // 10
    assert len(records) == count
    assert len(api.sent) == calls
    # Not far under the rate, never over it: the limiter's 0.8% margin, plus the
    # last answer's latency.
    assert (calls - 1) / qps <= elapsed <= (calls - 1) / qps * 1.01 + 0.05
    times = [at for at, _ in api.sent]
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= qps


# --- batch fill ----------------------------------------------------------------------------


def test_a_partial_batch_waits_briefly_for_more_then_goes_as_it_is(
    virtual_loop: VirtualLoop,
) -> None:
    api = FakeApi(latency=0.001)
    client_ids = ids(18)
    feed = ScriptedFeed([(0.0, client_ids[:15]), (1.0, client_ids[15:])], end=2.0)
    _, records = virtual_loop.run(lambda: scan(api, feed, settings(mode="batch")))
    assert len(records) == 18
    assert [len(batch) for _, batch in api.sent] == [10, 5, 3]
    fill = 0.05  # BATCH_FILL_SECONDS
    expected = [0.0, fill, 1.0 + fill]
    assert [at for at, _ in api.sent] == pytest.approx(expected, abs=2e-3)
    assert feed.freed == 18  # every ID's room went back to the reader


def test_hybrid_lanes_run_out_of_input_together(virtual_loop: VirtualLoop) -> None:
    # Each lane holds about half a second of calls in its workers; the batch lane held
    # another half second in batches filled ahead of them, so at the end of the input
    # it went on alone for that long while the single lane had nothing left to scan.
    class Apis(FakeApi):
        def __init__(self) -> None:
            super().__init__(latency=0.04)
            self.last: dict[str, float] = {}

        async def query_session(self, client_id: str) -> SessionAnswer:
            self.last[SINGLE_API] = asyncio.get_running_loop().time()
            return await super().query_session(client_id)

        async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
            self.last[BATCH_API] = asyncio.get_running_loop().time()
            return await super().batch_query_sessions(client_ids)

    api = Apis()
    count = 1134 * 6
    _, records = virtual_loop.run(
        lambda: scan(api, ScriptedFeed([(0.0, ids(count))]), settings(mode="hybrid"))
    )
    assert len(records) == count
    assert api.last[BATCH_API] - api.last[SINGLE_API] < 0.15


# --- stopping ------------------------------------------------------------------------------


def test_the_grace_period_bounds_the_wait_for_calls_on_the_wire(virtual_loop: VirtualLoop) -> None:
    api = FakeApi(first=0.01, latency=3000.0)

    async def main() -> tuple[Outcome, list[Record], float]:
        loop = asyncio.get_running_loop()
        scanner = Scanner(client=api, settings=settings(grace_seconds=0.2))
        records: list[Record] = []
        task = asyncio.create_task(
            scanner.run_feed(ScriptedFeed([(0.0, ids(50))]), emit=records.append)
        )
        await api.until(lambda: len(api.sent) >= 5)
        stopped = loop.time()
        scanner.stop()
        outcome = await task
        return outcome, records, loop.time() - stopped

    outcome, records, waited = virtual_loop.run(main)
    assert outcome is Outcome.INTERRUPTED
    # Only the first call answered; the slow ones were cut off: no record, --resume asks.
    assert len(records) == 1
    assert waited == pytest.approx(0.2, abs=5e-3)


def test_a_stop_does_not_wait_for_workers_queued_on_the_pacer(virtual_loop: VirtualLoop) -> None:
    """200 workers wait for tokens at 20/s: draining them would take ten seconds."""
    api = FakeApi(latency=0.01)

    async def main() -> tuple[list[Record], float]:
        loop = asyncio.get_running_loop()
        scanner = Scanner(client=api, settings=settings(qps=20, concurrency=200))
        records: list[Record] = []
        task = asyncio.create_task(
            scanner.run_feed(ScriptedFeed([(0.0, ids(400))]), emit=records.append)
        )
        await api.until(lambda: len(api.answered) >= 3)
        stopped = loop.time()
        scanner.stop()
        assert await task is Outcome.INTERRUPTED
        return records, loop.time() - stopped

    records, waited = virtual_loop.run(main)
    # At most the one call on the wire was waited for (its 10 ms), not the queue.
    assert waited <= 0.011
    assert {r.client_id for r in records} == {c for _, batch in api.sent for c in batch}


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_an_abort_on_the_first_answer_ends_the_scan_at_once(
    virtual_loop: VirtualLoop, mode: str
) -> None:
    """Workers waiting for the first answer must not each wait for a token to stop."""
    refused = AccountError("InvalidAccessKeyId.Inactive", "disabled", http_status=400)
    api = FakeApi(latency=0.01, fail={0: refused})

    async def main() -> tuple[Scanner, list[Record], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        scanner, records = await scan(
            api,
            ScriptedFeed([(0.0, ids(1000))]),
            settings(mode=mode, qps=20, concurrency=100, grace_seconds=5),
        )
        return scanner, records, loop.time() - started

    scanner, records, elapsed = virtual_loop.run(main)
    assert scanner.outcome is Outcome.ABORTED
    assert scanner.abort_error is refused
    assert records == []
    assert len(api.sent) == 1
    assert elapsed == pytest.approx(0.01, abs=2e-3)


def test_an_abort_after_an_interrupt_is_an_abort(virtual_loop: VirtualLoop) -> None:
    """The one order: a stop asked for, then the call on the wire answers an
    account-wide error. The outcome says what must be fixed before a resume."""
    refused = AccountError("InvalidAccessKeyId.Inactive", "disabled", http_status=400)
    api = FakeApi(first=1.0, fail={0: refused})

    async def main() -> Scanner:
        scanner = Scanner(client=api, settings=settings())
        task = asyncio.create_task(
            scanner.run_feed(ScriptedFeed([(0.0, ids(5))]), emit=lambda record: None)
        )
        await asyncio.sleep(0.5)  # the first call is on the wire
        scanner.stop()
        await task
        return scanner

    scanner = virtual_loop.run(main)
    assert scanner.interrupted
    assert scanner.abort_error is refused
    assert scanner.outcome is Outcome.ABORTED


def test_the_outcome_order() -> None:
    def of(
        aborted: bool, input_error: bool, interrupted: bool, errors: int = 0, output: bool = False
    ) -> Outcome:
        return outcome_of(
            output_error=output,
            aborted=aborted,
            input_error=input_error,
            interrupted=interrupted,
            errors=errors,
        )

    assert of(True, True, True, 3, output=True) is Outcome.OUTPUT_ERROR
    assert of(True, True, True, 3) is Outcome.ABORTED
    assert of(False, True, True, 3) is Outcome.INPUT_ERROR
    assert of(False, False, True, 3) is Outcome.INTERRUPTED
    assert of(False, False, False, 3) is Outcome.COMPLETED_WITH_ERRORS
    assert of(False, False, False) is Outcome.COMPLETED


# --- attempt counts ------------------------------------------------------------------------


def test_records_count_every_attempt_their_id_was_part_of_after_a_batch_repeat(
    virtual_loop: VirtualLoop,
) -> None:
    client_ids = ids(10)
    late, lost = client_ids[3], client_ids[7]
    fault = TransientError("InternalError", "boom", http_status=417)
    # Call 0 fails and is retried (call 1); call 1's answer leaves out two IDs; the
    # repeat (call 2) answers one of them and leaves out the other again.
    api = FakeApi(fail={0: fault}, leave_out={1: {late, lost}, 2: {lost}})
    scanner, records = virtual_loop.run(
        lambda: scan(api, ScriptedFeed([(0.0, client_ids)]), settings(mode="batch"))
    )
    by_id = {r.client_id: r for r in records}
    assert len(by_id) == len(records) == 10
    in_calls = {c: sum(c in batch for _, batch in api.sent) for c in client_ids}
    assert (in_calls[late], in_calls[lost], in_calls[client_ids[0]]) == (3, 3, 2)
    for client_id, record in by_id.items():
        assert record.attempts == in_calls[client_id], client_id
    assert by_id[late].status in (Status.ONLINE, Status.OFFLINE)
    assert by_id[lost].status is Status.ERROR
    assert by_id[lost].error is not None
    assert by_id[lost].error["code"] == "MissingFromResponse"
    assert scanner.counters.calls_sent == len(api.sent) == 3


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "qps"), [("single", 501), ("batch", 101), ("single", 5000)])
def test_the_settings_refuse_a_rate_above_the_account_limit(mode: Any, qps: int) -> None:
    with pytest.raises(UsageError) as refused:
        ScanSettings(instance_id=INSTANCE, mode=mode, qps=qps)
    assert str(refused.value) == (
        f"--qps {qps} is above the {MAX_QPS[mode]} calls/s that "
        f"{SINGLE_API if mode == 'single' else BATCH_API} allows an account"
    )
    # An account (or an emulator) with a raised limit says so.
    assert ScanSettings(instance_id=INSTANCE, mode=mode, qps=qps, account_qps=qps).api_rate == qps


@pytest.mark.parametrize("instance_id", ["", "mqtt cn x", "mqtt-cn-x;rm", "-leading"])
def test_the_settings_refuse_a_malformed_instance_id(instance_id: str) -> None:
    with pytest.raises(UsageError, match=r"^--instance-id .*: an instance ID has only"):
        ScanSettings(instance_id=instance_id)


@pytest.mark.parametrize("qps", [0, -1, float("inf"), float("nan")])
def test_the_settings_refuse_a_rate_that_is_not_positive(qps: float) -> None:
    with pytest.raises(UsageError, match="positive number of calls/s"):
        ScanSettings(instance_id=INSTANCE, qps=qps)


def test_the_settings_refuse_more_calls_in_flight_than_the_command_allows() -> None:
    assert ScanSettings(instance_id=INSTANCE, concurrency=1000).workers == 1000
    with pytest.raises(UsageError, match=r"^--concurrency 1001: at most 1000 calls in flight"):
        ScanSettings(instance_id=INSTANCE, concurrency=1001)


def test_the_settings_warn_when_the_address_budget_holds_the_rate() -> None:
    assert ScanSettings(instance_id=INSTANCE, qps=270).warnings == ()
    held = ScanSettings(instance_id=INSTANCE, qps=400)
    (warning,) = held.warnings
    assert "one source address carries at most 270 calls/s" in warning
    assert (held.api_rate, held.rate) == (400, 270)
    assert ScanSettings(instance_id=INSTANCE, mode="batch").warnings == ()
    # The default rate is meant to be held by the budget: nothing to warn of.
    assert ScanSettings(instance_id=INSTANCE).warnings == ()
    assert ScanSettings(instance_id=INSTANCE, qps=400, address_budget=300).warnings
    with pytest.raises(UsageError, match=r"^--address-budget must be above 0 and at most 300"):
        ScanSettings(instance_id=INSTANCE, address_budget=301)


# --- lanes and sinks -----------------------------------------------------------------------


def test_the_mode_picks_a_lane_object() -> None:
    from fleetscan.engine import LANES, SingleLane

    assert LANES["single"] is SingleLane
    assert LANES["batch"] is BatchLane
    assert (SingleLane.api, SingleLane.size) == (SINGLE_API, 1)
    assert (BatchLane.api, BatchLane.size) == (BATCH_API, 10)


class ListSink:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.calls: list[str] = []

    def write(self, record: Record) -> None:
        self.records.append(record)

    def flush(self, *, fsync: bool = False) -> None:
        self.calls.append("fsync" if fsync else "flush")

    def close(self) -> None:
        self.calls.append("close")


async def test_a_job_hands_every_record_to_every_sink_then_flushes_to_disk_and_closes() -> None:
    first, second = ListSink(), ListSink()
    job = ScanJob(settings(), session=FakeApi(latency=0.001), pacer=RateLimiter(300))
    result = await job.run([*ids(30), *ids(5), "not-an-id"], sinks=[first, second])
    assert result.outcome is Outcome.COMPLETED
    assert len(first.records) == 31
    assert first.records == second.records
    for sink in (first, second):
        assert sink.calls[-2:] == ["fsync", "close"]
    c = result.counters
    assert (c.read, c.unique, c.duplicates, c.invalid) == (36, 31, 5, 1)
    summary = result.summary()
    assert (summary.outcome, summary.ids_online + summary.ids_offline) == ("completed", 30)

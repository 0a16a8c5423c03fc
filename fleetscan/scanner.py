"""The scan: client IDs in, one record per unique ID out, paced under the API's limits.

::

    reader thread ──► dedup + validate ──► work queue ──► N workers ──► emit(record)
    (blocking I/O)      (event loop)       (bounded)     limiter + retry per attempt

The reader runs in a thread so a slow or never-closing stdin cannot stall the loop,
and the bounded queue gives backpressure: memory stays flat whatever the input size,
apart from the dedup set. Concurrency (workers) and rate (the limiter) are separate
controls; every HTTP attempt, retries included, takes a token from the one limiter.

A stop (SIGINT, SIGTERM, or an account-wide error) stops the reader, lets calls in
flight finish within a grace period, and drops what was queued but not sent: those IDs
have no record, so ``--resume`` scans them later and nothing is billed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from fleetscan.client import DEFAULT_TIMEOUT, SessionApi, connect
from fleetscan.credentials import Credentials, CredentialsProvider
from fleetscan.dedup import SeenSet
from fleetscan.errors import (
    AccountError,
    ApiError,
    ClientIdError,
    ResignError,
    ThrottledError,
    TimedOutError,
)
from fleetscan.ids import client_id_problem
from fleetscan.limiter import RateLimiter
from fleetscan.limits import BATCH_API, BATCH_SIZE, DEFAULT_QPS, SINGLE_API, Mode, api_for
from fleetscan.outage import (
    DEFAULT_OUTAGE_TIMEOUT,
    BudgetEmpty,
    OutageBreaker,
    OutageOver,
    RetryBudget,
    is_no_answer,
)
from fleetscan.records import INVALID_CODE, Record, Status
from fleetscan.retry import DEFAULT_MAX_ATTEMPTS, RetryPolicy, call_with_retry
from fleetscan.summary import ScanCounters

__all__ = ["ScanSettings", "Scanner", "default_concurrency", "scan"]

T = TypeVar("T")
U = TypeVar("U")
# IDs read ahead of the workers: enough to keep them busy, small enough to stay flat.
QUEUE_SIZE = 2_000
DEFAULT_GRACE_SECONDS = 5.0
# How long a partial batch waits for more IDs before it is sent as it is.
BATCH_FILL_SECONDS = 0.05
# The longest the other calls wait for the scan's first answer (see Scanner._call).
WARM_UP_SECONDS = 1.0
# Queue room goes back to the reader thread this many IDs at a time (see _Room), and the
# loop accepts at most this many read IDs per callback (a long step delays sends).
ROOM_BATCH = 64


def default_concurrency(qps: float) -> int:
    """Enough calls in flight to hold ``qps`` with up to half a second of latency."""
    return max(16, int(qps / 2) + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanSettings:
    """How to scan. ``qps`` and ``concurrency`` default from the mode."""

    instance_id: str
    mode: Mode = "single"
    qps: float | None = None
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    queue_size: int = QUEUE_SIZE
    # Seconds without any answer from the service before the scan gives up.
    outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT

    @property
    def rate(self) -> float:
        return self.qps if self.qps is not None else DEFAULT_QPS[self.mode]

    @property
    def workers(self) -> int:
        return self.concurrency or default_concurrency(self.rate)

    @property
    def api(self) -> str:
        return api_for(self.mode)


class Scanner:
    """Scans client IDs with one shared client and limiter; see the module docstring.

    Usage, from a running event loop::

        scanner = Scanner(client=client, settings=ScanSettings(instance_id="mqtt-cn-x"))
        outcome = await scanner.run(ids, emit=writer.write)
        print(scanner.counters.online, scanner.counters.calls_succeeded)

    ``emit`` is called once per unique ID, on the event loop, as results arrive.
    """

    def __init__(
        self,
        *,
        client: SessionApi,
        settings: ScanSettings,
        limiter: RateLimiter | None = None,
        seen: SeenSet | None = None,
        counters: ScanCounters | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        budget: RetryBudget | None = None,
        breaker: OutageBreaker | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.limiter = limiter
        self.seen = seen if seen is not None else SeenSet()
        self.counters = counters if counters is not None else ScanCounters()
        self.clock = clock
        self.monotonic = monotonic
        self.abort_error: ApiError | OutageOver | None = None
        self.input_error: BaseException | None = None
        self.output_error: OSError | None = None
        self.interrupted = False
        # Shared by every call: retries stop when answers stop (see fleetscan.outage).
        self.budget = budget if budget is not None else RetryBudget(clock=monotonic)
        self.breaker = (
            breaker
            if breaker is not None
            else OutageBreaker(timeout=settings.outage_timeout, clock=monotonic)
        )
        # Set by a second stop: calls still on the wire are not waited for.
        self._hurry: asyncio.Event | None = None
        # Set once a stop is asked for: no new ID is taken from the queue.
        self._stopping = False
        self._stop_requested: asyncio.Event | None = None
        self._reader_stop = threading.Event()
        # Workers with a request on the wire: a stop gives these (only) the grace period.
        # Those queued on the limiter or backing off have sent nothing to wait for.
        self._on_wire: set[asyncio.Task[Any]] = set()
        # True once the scan's first attempt has its answer (see _call); until then the
        # first call holds the gate and the others queue on it.
        self._warm = False
        self._warm_gate = asyncio.Lock()
        self._emit: Callable[[Record], None] = lambda record: None

    # --- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the scan to stop gracefully (a signal handler calls this); asked a second
        time, stop at once, without waiting for the calls on the wire."""
        if self.interrupted and self._hurry is not None:
            self._hurry.set()
        self.interrupted = True
        self._begin_stop()

    def output_failed(self, error: OSError) -> None:
        """The records can no longer be written: send nothing more."""
        if self.output_error is None:
            self.output_error = error
        self._begin_stop()

    def _abort(self, error: ApiError | OutageOver) -> None:
        if self.abort_error is None:
            self.abort_error = error
        self._begin_stop()

    def _begin_stop(self) -> None:
        self._stopping = True
        self._reader_stop.set()
        if self._stop_requested is not None:
            self._stop_requested.set()

    @property
    def outcome(self) -> str:
        if self.output_error is not None:
            return "output error"
        if self.abort_error is not None:
            return "aborted"
        if self.input_error is not None:
            return "input error"
        if self.interrupted:
            return "interrupted"
        return "completed" if self.counters.errors == 0 else "completed with errors"

    # --- the run ---------------------------------------------------------------------

    async def run(self, client_ids: Iterable[str], *, emit: Callable[[Record], None]) -> str:
        """Scan ``client_ids`` (read lazily, in a thread); return the outcome."""
        if self.limiter is None:
            self.limiter = RateLimiter(self.settings.rate)
        self._emit = emit
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        if self._stopping:
            self._stop_requested.set()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        room = _Room(self.settings.queue_size)
        workers = self.settings.workers
        # IDs read but not yet accepted. The reader wakes the loop only when no drain is
        # on its way already: a wake-up per ID (a write to the loop's self-pipe, a thread
        # switch) cost ~80 us a call, more than the rest of the scan's own work.
        arrived: deque[str] = deque()
        wake_pending = False

        def drain() -> None:
            nonlocal wake_pending
            wake_pending = False  # before taking: an ID appended from now on wakes us anew
            for _ in range(ROOM_BATCH):
                if not arrived:
                    return
                accept(arrived.popleft())
            wake_pending = True  # more to take: after the workers have had a turn
            loop.call_soon(drain)

        def accept(client_id: str) -> None:
            if self._stopping:
                room.free()
                return
            counters = self.counters
            counters.read += 1
            if not self.seen.add(client_id):
                counters.duplicates += 1
                room.free()
                return
            counters.unique += 1
            problem = client_id_problem(client_id)
            if problem is not None:
                room.free()
                self._record_invalid(client_id, problem)
                return
            queue.put_nowait(client_id)

        def finish(error: BaseException | None) -> None:
            while arrived:
                accept(arrived.popleft())
            # A bad line ends the input, not the scan: what was read before it still
            # gets its records, and --resume carries on once the file is fixed.
            if error is not None and self.input_error is None:
                self.input_error = error
            for _ in range(workers):
                queue.put_nowait(None)

        def read() -> None:
            nonlocal wake_pending
            error: BaseException | None = None
            try:
                for client_id in client_ids:
                    room.take()
                    if self._reader_stop.is_set():
                        break
                    arrived.append(client_id)
                    if not wake_pending:
                        wake_pending = True
                        loop.call_soon_threadsafe(drain)
            except BaseException as exc:  # handed to the loop, raised by the caller
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(finish, error)

        # A daemon thread: a read blocked on a never-closing stdin must not hold exit.
        threading.Thread(target=read, name="fleetscan-reader", daemon=True).start()
        tasks: list[asyncio.Task[None]]
        if self.settings.mode == "single":
            tasks = [
                asyncio.create_task(
                    self._worker(queue, self._scan_one, room.free),
                    name=f"fleetscan-worker-{i}",
                )
                for i in range(workers)
            ]
        else:
            batches: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=workers)
            tasks = [
                asyncio.create_task(
                    self._worker(batches, self._scan_batch, _taken),
                    name=f"fleetscan-worker-{i}",
                )
                for i in range(workers)
            ]
            tasks.append(
                asyncio.create_task(self._batcher(queue, batches, room, workers), name="batcher")
            )
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        try:
            while not stop_wait.done() and not all(t.done() for t in tasks):
                await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if self._stopping:
                room.open(self.settings.queue_size + workers)  # wake a blocked reader
                await self._drain(tasks)
        finally:
            stop_wait.cancel()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result  # a worker's bug: never hide it behind a clean summary
        if self.input_error is not None:
            raise self.input_error
        return self.outcome

    async def _drain(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        """Cancel workers with nothing on the wire at once; give the others the grace
        period, then cancel them too."""
        for task in tasks:
            if task not in self._on_wire:
                task.cancel()
        pending = [t for t in tasks if not t.done()]
        if pending:
            assert self._hurry is not None
            hurry = asyncio.create_task(self._hurry.wait())
            finished = asyncio.create_task(asyncio.wait(pending))
            try:
                await asyncio.wait(
                    [finished, hurry],
                    timeout=self.settings.grace_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                hurry.cancel()
                finished.cancel()

    # --- workers ---------------------------------------------------------------------

    async def _worker(
        self,
        units: asyncio.Queue[U | None],
        scan_unit: Callable[[U], Awaitable[None]],
        taken: Callable[[], None],
    ) -> None:
        """Scan units (an ID, or a batch of IDs) until the input ends or a stop."""
        while not self._stopping:
            unit = await units.get()
            if unit is None or self._stopping:
                return
            taken()
            await scan_unit(unit)

    async def _batcher(
        self,
        queue: asyncio.Queue[str | None],
        batches: asyncio.Queue[list[str] | None],
        room: _Room,
        workers: int,
    ) -> None:
        """Group IDs into batches of up to BATCH_SIZE for the workers.

        One batcher, not every worker grabbing what is there: many idle workers would
        each take one ID and send batches of one. A partial batch waits at most
        BATCH_FILL_SECONDS for more input (a slow stdin), then goes as it is.
        """
        batch: list[str] = []
        while not self._stopping:
            if batch and queue.empty():
                try:
                    # Not wait_for: on 3.11 it swallows a cancel that lands as the get
                    # completes, and a stopped batcher would then block on a full queue.
                    async with asyncio.timeout(BATCH_FILL_SECONDS):
                        item = await queue.get()
                except TimeoutError:
                    await batches.put(batch)
                    batch = []
                    continue
            else:
                item = await queue.get()
            if item is None:
                break
            room.free()
            batch.append(item)
            if len(batch) == BATCH_SIZE:
                await batches.put(batch)
                batch = []
        if batch:
            await batches.put(batch)
        for _ in range(workers):
            await batches.put(None)

    async def _call(self, send: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        # The scan's first attempt goes out alone; the others wait for its answer (up to
        # WARM_UP_SECONDS) before they take a token. It pays the cold start (a new
        # connection, code run for the first time: 5-20 ms on loopback), and calls paced
        # right behind it would reach the server bunched up with it: 301 in its first
        # second at --qps 300 (benchmarks/bench_rate.py). The others then pass the gate
        # one per loop iteration (a Lock wakes one waiter per release): an Event woke
        # them all in one iteration, and that herd of hundreds of workers held up the
        # sends of the first tokens by ~6 ms: 502 in a second at --qps 500.
        first = False
        if not self._warm:
            if self._warm_gate.locked():
                async with self._warm_gate:
                    pass
            else:
                await self._warm_gate.acquire()  # not locked: returns at once
                first = True
                asyncio.get_running_loop().call_later(WARM_UP_SECONDS, self._warmed)

        async def attempt() -> T:
            # Checked after the limiter let this attempt through: once a stop is asked
            # for, nothing new goes on the wire.
            if self.breaker.is_open:
                # No answers across the scan: wait, and go as the probe when it is time.
                try:
                    await self.breaker.admit()
                except OutageOver as exc:
                    self._abort(exc)
                    raise _Stopped from None
            if self._stopping:
                raise _Stopped
            me = asyncio.current_task()
            assert me is not None
            self._on_wire.add(me)
            try:
                return await send()
            finally:
                self._on_wire.discard(me)
                self._warmed()

        policy = self.settings.retry
        # Attempts made before the budget ran dry: the call goes on with the rest.
        used = 0
        try:
            while True:
                try:
                    result, attempts = await call_with_retry(
                        attempt,
                        policy=dataclasses.replace(policy, max_attempts=policy.max_attempts - used),
                        limiter=self.limiter,
                        on_attempt=self._count_attempt,
                        budget=self.budget,
                    )
                except BudgetEmpty as empty:
                    used += empty.error.attempts
                    if used >= policy.max_attempts or self._stopping:
                        empty.error.attempts = used
                        raise empty.error from None
                    # Retries wait for tokens: the budget caps their rate, not the ID's.
                    await self.budget.refilled(self.breaker.sleep)
                    continue
                except ApiError as exc:
                    exc.attempts += used
                    raise
                attempts += used
                break
        except ApiError as exc:
            self.counters.calls_retried += max(0, exc.attempts - 1)
            raise
        finally:
            if first:
                self._warmed()  # even when the first call never reached the wire
        self.counters.calls_retried += attempts - 1
        return result, attempts

    def _warmed(self) -> None:
        """The first answer is in (or was too slow to wait for): open the gate."""
        if not self._warm:
            self._warm = True
            self._warm_gate.release()

    async def _outage_took(self, error: ApiError) -> bool:
        """Whether a call failed because the service stopped answering (then the ID is
        asked again, not recorded as an error): it did if nothing answered since."""
        if not is_no_answer(error) or self._stopping:
            return False
        return await self.breaker.verdict(self.monotonic())

    async def _scan_one(self, client_id: str) -> None:
        while True:
            try:
                answer, attempts = await self._call(lambda: self.client.query_session(client_id))
            except _Stopped:
                return
            except (AccountError, ResignError) as exc:
                self._abort(exc)
            except ApiError as exc:
                if await self._outage_took(exc):
                    continue
                self._record_error(client_id, exc, SINGLE_API)
            else:
                self._record_status(
                    client_id, answer.online, SINGLE_API, answer.request_id, attempts
                )
            return

    async def _scan_batch(self, batch: list[str], *, repeat: bool = True) -> None:
        try:
            answer, attempts = await self._call(lambda: self.client.batch_query_sessions(batch))
        except _Stopped:
            return
        except (AccountError, ResignError) as exc:
            self._abort(exc)
            return
        except ClientIdError as exc:
            if len(batch) == 1:
                self._record_error(batch[0], exc, BATCH_API)
                return
            # One bad ID refuses the whole batch: halve it until the bad one stands alone.
            middle = len(batch) // 2
            await self._scan_batch(batch[:middle])
            await self._scan_batch(batch[middle:])
            return
        except ApiError as exc:
            if await self._outage_took(exc):
                await self._scan_batch(batch, repeat=repeat)
                return
            for client_id in batch:
                self._record_error(client_id, exc, BATCH_API)
            return
        missing = []
        for client_id in batch:
            online = answer.statuses.get(client_id)
            if online is None:
                missing.append(client_id)
            else:
                self._record_status(client_id, online, BATCH_API, answer.request_id, attempts)
        if missing and repeat and not self._stopping:
            await self._scan_batch(missing, repeat=False)
        elif missing:
            error = ApiError(
                "MissingFromResponse",
                "the batch answer did not include this client ID",
                http_status=200,
                request_id=answer.request_id,
            )
            for client_id in missing:
                self._record_error(client_id, error, BATCH_API)

    # --- records ---------------------------------------------------------------------

    def _count_attempt(self, error: BaseException | None) -> None:
        if isinstance(error, _Stopped):
            return
        if error is not None and is_no_answer(error):
            self.breaker.no_answer()
        elif error is None or isinstance(error, ApiError):
            self.breaker.answered()
        counters = self.counters
        counters.calls_sent += 1
        if error is None:
            counters.calls_succeeded += 1
            counters.success_peak.add(self.monotonic())
        else:
            counters.calls_failed += 1
            if isinstance(error, ThrottledError):
                counters.calls_throttled += 1
            elif isinstance(error, TimedOutError):
                counters.calls_timed_out += 1

    def _record_status(
        self, client_id: str, online: bool, api: str, request_id: str | None, attempts: int
    ) -> None:
        if online:
            self.counters.online += 1
        else:
            self.counters.offline += 1
        self._emit(
            Record(
                client_id=client_id,
                instance_id=self.settings.instance_id,
                status=Status.ONLINE if online else Status.OFFLINE,
                checked_at=self.clock(),
                api=api,
                request_id=request_id,
                attempts=attempts,
            )
        )

    def _record_error(self, client_id: str, error: ApiError, api: str) -> None:
        self.counters.errors += 1
        self._emit(
            Record(
                client_id=client_id,
                instance_id=self.settings.instance_id,
                status=Status.ERROR,
                checked_at=self.clock(),
                api=api,
                request_id=error.request_id,
                attempts=error.attempts,
                error=error.to_record(),
            )
        )

    def _record_invalid(self, client_id: str, problem: str) -> None:
        self.counters.invalid += 1
        self._emit(
            Record(
                client_id=client_id,
                instance_id=self.settings.instance_id,
                status=Status.INVALID,
                checked_at=self.clock(),
                error={"code": INVALID_CODE, "message": problem, "http_status": None},
            )
        )


async def scan(
    client_ids: Iterable[str],
    *,
    instance_id: str,
    region: str | None = None,
    endpoint: str | None = None,
    credentials: Credentials | CredentialsProvider | None = None,
    profile: str | None = None,
    mode: Mode = "single",
    qps: float | None = None,
    concurrency: int | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    attempt_timeout: float = DEFAULT_TIMEOUT,
    signature: Literal["v3", "v1"] = "v3",
    ca_bundle: str | None = None,
) -> AsyncGenerator[Record, None]:
    """Scan ``client_ids`` and yield one `Record` per unique ID as answers arrive.

    The library twin of ``fleetscan scan``::

        async for record in scan(ids, instance_id="mqtt-cn-x", region="cn-hangzhou"):
            print(record.client_id, record.status)

    An account-wide API error raises it (after the records that completed); closing
    the generator early (``contextlib.aclosing``, or letting it be collected) stops
    the scan.
    """
    settings = ScanSettings(
        instance_id=instance_id,
        mode=mode,
        qps=qps,
        concurrency=concurrency,
        retry=RetryPolicy(max_attempts=max_attempts),
    )
    async with connect(
        instance_id=instance_id,
        credentials=credentials,
        region=region,
        endpoint=endpoint,
        profile=profile,
        signature=signature,
        attempt_timeout=attempt_timeout,
        ca_bundle=ca_bundle,
    ) as client:
        scanner = Scanner(client=client, settings=settings)
        records: asyncio.Queue[Record | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await scanner.run(client_ids, emit=records.put_nowait)
            finally:
                records.put_nowait(None)

        task = asyncio.create_task(run())
        try:
            while (record := await records.get()) is not None:
                yield record
            await task
        finally:
            if not task.done():
                scanner.stop()
                await asyncio.gather(task, return_exceptions=True)
        if scanner.abort_error is not None:
            raise scanner.abort_error


def _taken() -> None:
    """Batch workers release no queue room: the batcher did, ID by ID."""


class _Room:
    """Room in the work queue: the reader thread takes it ID by ID, the loop frees it.

    Freed room goes back in batches: a release per ID woke the reader thread per call
    (a thread switch and a GIL handoff each). A batch is at most a quarter of the room,
    so a blocked reader always gets room back: the loop then holds all of it, and at
    least three quarters are IDs the workers will take.
    """

    __slots__ = ("_batch", "_freed", "_semaphore")

    def __init__(self, size: int) -> None:
        self._semaphore = threading.Semaphore(size)
        self._batch = max(1, min(ROOM_BATCH, size // 4))
        # Freed on the loop, not yet given back to the reader.
        self._freed = 0

    def take(self) -> None:
        """Wait for room for one more ID (the reader thread)."""
        self._semaphore.acquire()

    def free(self) -> None:
        """One ID left the queue, or never entered it (the loop)."""
        self._freed += 1
        if self._freed >= self._batch:
            self._semaphore.release(self._freed)
            self._freed = 0

    def open(self, n: int) -> None:
        """Give ``n`` at once: a stopping scan wakes a blocked reader."""
        self._semaphore.release(n)


class _Stopped(Exception):
    """Raised instead of sending once the scan is stopping; the ID keeps no record."""

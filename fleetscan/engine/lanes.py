"""Lanes: one API each, with its unit, its request, its pacer and its counters.

::

    admission queue ──► SingleLane: N workers, 1 ID a call  (QuerySessionByClientId)
                   └──► BatchLane:  a batcher filling units of up to 10 IDs,
                                    N workers, 1 unit a call (BatchQuerySessionByClientIds)

A lane takes IDs from the scan's admission queue until it reads an end marker (one per
consumer, `Lane.consumers`), so two lanes can share one queue. Every attempt passes
the scan's warm-up gate, then the lane's pacer and the scan's outage breaker, inside
the retry policy and the scan's retry budget; what the answer says becomes records
through the scan's `Recorder`. A call that failed because the service stopped
answering is the outage's, not the ID's: it is asked again (`fleetscan.outage`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

from fleetscan.client import BatchAnswer, SessionAnswer, SessionApi
from fleetscan.engine.control import Control, Stopped
from fleetscan.engine.feed import Feed
from fleetscan.engine.recorder import Recorder
from fleetscan.engine.stats import CallStats
from fleetscan.engine.warmup import WarmUpGate
from fleetscan.errors import (
    AccountError,
    ApiError,
    ClientIdError,
    LimiterLostError,
    ResignError,
)
from fleetscan.limits import BATCH_API, BATCH_SIZE, SINGLE_API, Mode
from fleetscan.outage import BudgetEmpty, OutageBreaker, OutageOver, RetryBudget, is_no_answer
from fleetscan.pacer import Pacer
from fleetscan.retry import RetryPolicy, call_with_retry

__all__ = [
    "BATCH_FILL_SECONDS",
    "LANES",
    "BatchLane",
    "BatchSession",
    "Lane",
    "Session",
    "SingleLane",
    "SingleSession",
]

T = TypeVar("T")
S = TypeVar("S")

# How long a partial batch waits for more IDs before it is sent as it is.
BATCH_FILL_SECONDS = 0.05


class SingleSession(Protocol):
    """What `SingleLane` calls on the API client (a part of `SessionApi`)."""

    async def query_session(self, client_id: str) -> SessionAnswer: ...


class BatchSession(Protocol):
    """What `BatchLane` calls on the API client (a part of `SessionApi`)."""

    async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer: ...


# What a scan with any of its lanes calls: the client package's protocol, whose real
# implementation is `fleetscan.client.OnsMqttClient`.
Session = SessionApi


class Lane(Generic[S]):
    """Scans IDs from the admission queue through one API; see the module docstring.

    ``session`` is what the lane calls (one method of the API client); ``pacer``
    spaces its attempts; ``stats`` counts them; ``recorder`` turns answers into records.
    ``budget`` and ``breaker`` are the scan's, shared by all its lanes.
    """

    api: ClassVar[str]
    # The most IDs one call of this lane carries.
    size: ClassVar[int]

    def __init__(
        self,
        *,
        session: S,
        pacer: Pacer,
        workers: int,
        retry: RetryPolicy,
        control: Control,
        gate: WarmUpGate,
        recorder: Recorder,
        stats: CallStats,
        budget: RetryBudget,
        breaker: OutageBreaker,
    ) -> None:
        self.session = session
        self.pacer = pacer
        self.workers = workers
        self.retry = retry
        self.control = control
        self.gate = gate
        self.recorder = recorder
        self.stats = stats
        self.budget = budget
        self.breaker = breaker

    @property
    def consumers(self) -> int:
        """Tasks reading the admission queue: the end of input is one marker each."""
        return self.workers

    def start(self, ids: asyncio.Queue[str | None], feed: Feed) -> list[asyncio.Task[None]]:
        """Start the lane's tasks on ``ids``; ``feed.free()`` as each ID leaves it."""
        raise NotImplementedError

    async def _call(self, send: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """One call: through the warm-up gate, then paced and retried per attempt."""
        control = self.control
        gate = self.gate
        breaker = self.breaker
        first = await gate.enter()

        async def attempt() -> T:
            if breaker.is_open:
                # No answers across the scan: wait, and go as the probe when it is time.
                try:
                    await breaker.admit()
                except OutageOver as exc:
                    control.abort(exc)
                    raise Stopped from None
            # Checked after the pacer let this attempt through: once a stop is asked
            # for, nothing new goes on the wire.
            if control.stopping:
                raise Stopped
            me = asyncio.current_task()
            assert me is not None
            control.on_wire.add(me)
            try:
                return await send()
            finally:
                control.on_wire.discard(me)
                gate.open()

        try:
            result, attempts = await self._retried(attempt)
        except LimiterLostError as exc:
            # The shared budget is gone (Redis lost past its timeout): never send at an
            # unshared rate; stop as an account-wide error does, this ID unsent.
            control.abort(exc)
            raise Stopped from None
        except ApiError as exc:
            self.stats.retried(exc.attempts)
            raise
        finally:
            if first:
                gate.open()  # even when the first call never reached the wire
        self.stats.retried(attempts)
        return result, attempts

    async def _retried(self, attempt: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """``attempt`` under the retry policy, paced, within the scan's retry budget: when
        the budget runs dry, the call's remaining attempts wait for tokens (the budget
        caps the rate of retries, never an ID's number of attempts)."""
        policy = self.retry
        # Attempts made before the budget ran dry: the call goes on with the rest.
        used = 0
        while True:
            try:
                result, attempts = await call_with_retry(
                    attempt,
                    policy=policy
                    if not used
                    else dataclasses.replace(policy, max_attempts=policy.max_attempts - used),
                    limiter=self.pacer,
                    on_attempt=self._attempted,
                    budget=self.budget,
                )
            except BudgetEmpty as empty:
                used += empty.error.attempts
                if used >= policy.max_attempts or self.control.stopping:
                    empty.error.attempts = used
                    raise empty.error from None
                await self.budget.refilled(self.breaker.sleep)
                continue
            except ApiError as exc:
                exc.attempts += used
                raise
            return result, attempts + used

    def _attempted(self, error: BaseException | None) -> None:
        """One attempt ended (``error`` None on success): the breaker and the counters."""
        if isinstance(error, Stopped):
            return  # never sent
        if error is not None and is_no_answer(error):
            self.breaker.no_answer()
        elif error is None or isinstance(error, ApiError):
            self.breaker.answered()
        self.stats.attempt(error)

    async def _outage_took(self, error: ApiError) -> bool:
        """Whether a call failed because the service stopped answering (then its IDs are
        asked again, not recorded as errors): it did if nothing answered since."""
        if not is_no_answer(error) or self.control.stopping:
            return False
        return await self.breaker.verdict(self.stats.monotonic())


class SingleLane(Lane[SingleSession]):
    """``QuerySessionByClientId``: one ID a call, real time."""

    api = SINGLE_API
    size = 1

    def start(self, ids: asyncio.Queue[str | None], feed: Feed) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._worker(ids, feed), name=f"fleetscan-worker-{i}")
            for i in range(self.workers)
        ]

    async def _worker(self, ids: asyncio.Queue[str | None], feed: Feed) -> None:
        control = self.control
        while not control.stopping:
            client_id = await ids.get()
            if client_id is None or control.stopping:
                return
            feed.free()
            await self.scan(client_id)

    async def scan(self, client_id: str, *, spent: int = 0, confirm: bool = False) -> None:
        """Ask about one ID and record the answer; again after an outage took it.

        Its record counts the attempts of every call it took, as a batch's does
        (``spent``: those of a batch call before, when it ``confirm``s the batch's
        offline answer: the record then says ``confirmed``).
        """
        session = self.session
        while True:
            try:
                answer, attempts = await self._call(lambda: session.query_session(client_id))
            except Stopped:
                return
            except (AccountError, ResignError) as exc:
                self.control.abort(exc)
            except ApiError as exc:
                spent += exc.attempts
                if await self._outage_took(exc):
                    continue
                self.recorder.error(client_id, exc, SINGLE_API, spent)
            else:
                self.recorder.status(
                    client_id,
                    answer.online,
                    SINGLE_API,
                    answer.request_id,
                    spent + attempts,
                    confirmed=confirm,
                )
            return

    async def confirm(self, client_id: str, spent: int) -> None:
        """Ask again in real time about an ID a batch answer said was offline, and
        write its record from this answer (an error if it fails: --resume asks again)."""
        await self.scan(client_id, spent=spent, confirm=True)


class BatchLane(Lane[BatchSession]):
    """``BatchQuerySessionByClientIds``: up to 10 IDs a call, answers from a cache.

    One batcher fills the units, not every worker grabbing what is there: many idle
    workers would each take one ID and send batches of one. A partial batch waits at
    most ``BATCH_FILL_SECONDS`` for more input (a slow stdin), then goes as it is.
    """

    api = BATCH_API
    size = BATCH_SIZE
    # With --confirm-offline: asks the real-time API about an ID this lane found
    # offline (`SingleLane.confirm`), which writes its record.
    confirm: Callable[[str, int], Awaitable[None]] | None = None

    @property
    def consumers(self) -> int:
        return 1  # the batcher

    def start(self, ids: asyncio.Queue[str | None], feed: Feed) -> list[asyncio.Task[None]]:
        # One batch ready ahead of the workers, not one per worker: a batch filled early
        # holds IDs the single lane beside it could scan, and at the end of the input
        # the single lane sat idle while the batch lane worked off a second of them.
        batches: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=1)
        tasks = [
            asyncio.create_task(self._worker(batches), name=f"fleetscan-worker-{i}")
            for i in range(self.workers)
        ]
        tasks.append(asyncio.create_task(self._batcher(ids, batches, feed), name="batcher"))
        return tasks

    async def _batcher(
        self,
        ids: asyncio.Queue[str | None],
        batches: asyncio.Queue[list[str] | None],
        feed: Feed,
    ) -> None:
        control = self.control
        batch: list[str] = []
        while not control.stopping:
            if batch and ids.empty():
                try:
                    # Not wait_for: on 3.11 it swallows a cancel that lands as the get
                    # completes, and a stopped batcher would then block on a full queue.
                    async with asyncio.timeout(BATCH_FILL_SECONDS):
                        item = await ids.get()
                except TimeoutError:
                    await batches.put(batch)
                    batch = []
                    continue
            else:
                item = await ids.get()
            if item is None:
                break
            feed.free()
            batch.append(item)
            if len(batch) == self.size:
                await batches.put(batch)
                batch = []
        if batch:
            await batches.put(batch)
        for _ in range(self.workers):
            await batches.put(None)

    async def _worker(self, batches: asyncio.Queue[list[str] | None]) -> None:
        control = self.control
        while not control.stopping:
            batch = await batches.get()
            if batch is None or control.stopping:
                return
            await self.scan(batch)

    async def scan(self, batch: list[str], *, spent: int = 0, repeat: bool = True) -> None:
        """Ask about ``batch`` and record each ID's answer.

        ``spent``: attempts already made on these IDs by earlier calls (a batch halved
        around a refused ID, or repeated for IDs its answer left out); each record says
        every attempt its ID was part of.
        """
        session = self.session
        try:
            answer, attempts = await self._call(lambda: session.batch_query_sessions(batch))
        except Stopped:
            return
        except (AccountError, ResignError) as exc:
            self.control.abort(exc)
            return
        except ClientIdError as exc:
            spent += exc.attempts
            if len(batch) == 1:
                self.recorder.error(batch[0], exc, BATCH_API, spent)
                return
            # One bad ID refuses the whole batch: halve it until the bad one stands alone.
            middle = len(batch) // 2
            await self.scan(batch[:middle], spent=spent)
            await self.scan(batch[middle:], spent=spent)
            return
        except ApiError as exc:
            if await self._outage_took(exc):
                await self.scan(batch, spent=spent + exc.attempts, repeat=repeat)
                return
            for client_id in batch:
                self.recorder.error(client_id, exc, BATCH_API, spent + exc.attempts)
            return
        spent += attempts
        missing = []
        offline = []
        confirm = self.confirm
        for client_id in batch:
            online = answer.statuses.get(client_id)
            if online is None:
                missing.append(client_id)
            elif not online and confirm is not None:
                offline.append(client_id)
            else:
                self.recorder.status(client_id, online, BATCH_API, answer.request_id, spent)
        if offline and confirm is not None:
            # The batch's answer comes from a cache: its offline ones are asked again,
            # in real time, before their records are written. The worker waits for them,
            # so the batch lane slows to what the single lane can confirm.
            self.recorder.counters.calls_confirm += len(offline)
            await asyncio.gather(*(confirm(client_id, spent) for client_id in offline))
        if missing and repeat and not self.control.stopping:
            await self.scan(missing, spent=spent, repeat=False)
        elif missing:
            error = ApiError(
                "MissingFromResponse",
                "the batch answer did not include this client ID",
                http_status=200,
                request_id=answer.request_id,
            )
            for client_id in missing:
                self.recorder.error(client_id, error, BATCH_API, spent)


# The lane each mode scans with.
LANES: dict[Mode, type[SingleLane] | type[BatchLane]] = {
    "single": SingleLane,
    "batch": BatchLane,
}

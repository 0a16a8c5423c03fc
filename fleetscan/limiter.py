"""Pacing for every HTTP attempt: never more than ``qps`` in any sliding second.

A leaky bucket of capacity B that leaks at r per second admits at most
``B + r*W`` acquisitions in any window of length W (strictly fewer for a window
shorter than W). The API's "second" is undefined and the server counts arrivals,
not our acquisitions, so the window we guard is ``W = 1 + JITTER_S``; solving
``B + r*W = qps + 1`` gives ``r = (qps + 1 - B) / (1 + JITTER_S)``. Then no window
shorter than W holds more than ``qps`` acquisitions (``ceil(qps)`` for a fractional
qps, which no sustained rate of qps could avoid). (``AsyncLimiter(qps, 1)`` is a
bucket with B = qps: it admits ~2x qps in its first second.)

B is ``1 + qps * LATENESS_S``: the part above 1 is credit for the event loop waking
a waiter late (epoll alone rounds timeouts up to the next millisecond), so a late
wake-up is caught up instead of lost. The sustained rate is then
``qps * (1 - LATENESS_S) / (1 + JITTER_S)``, 0.8% under ``qps`` at any qps. Measured
through the client to a loopback server at qps 100/300/500: -0.8% sustained, and at
most 100/300/499 arrivals in any sliding second of the server's clock.

The bucket is this class's own (its fill and leak on the loop's clock): an attempt
takes a permit at once when nobody waits and the bucket holds one; otherwise it
queues, and one timer grants the queue every permit the bucket holds when it fires,
then sets itself for the next from the bucket's fill. A permit passed from task to
task (a lock, aiolimiter's waiters) costs a loop iteration or two each, and a busy
loop iterates fewer times a second than it should grant: 166/s of 270 at 6 ms an
iteration, and on a loaded machine a tenth of a hybrid scan's slots.

Adaptive (AIMD): ``on_throttled`` cuts the rate multiplicatively, at most once per
``STEP_S`` (a burst of throttled answers in flight is one signal); ``on_success``
raises it back by a fixed share of ``qps`` per ``STEP_S`` of clean answers. Both look
at the answers of the last ``STEP_S``: throttled ones below ``NOISE_SHARE`` of them are
noise, not a limit; they neither cut the rate nor hold back a raise. (Cutting on every
throttled answer sank the rate to its floor, 5% of qps, within 12 s of 5% random
SystemOverFlow; raising one step after a cut, however throttled the answers still
were, climbed straight back over a shared limit mid-storm. See
tests/test_reliability_faults.py.) A change keeps the bucket's fill, so it never opens
a burst: the leak changes at the bucket's next fill (the next attempt or grant),
within one old spacing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

__all__ = [
    "DECREASE_FACTOR",
    "INCREASE_SHARE",
    "JITTER_S",
    "LATENESS_S",
    "MIN_RATE",
    "MIN_RATE_SHARE",
    "NOISE_SHARE",
    "STEP_S",
    "RateLimiter",
    "bucket_shape",
]

# Tolerance between our acquisition and the server's clock of arrival: network and
# event-loop jitter of a few ms must not push one more call into the server's second.
JITTER_S = 0.004
# Wake-up lateness the bucket absorbs without losing rate: epoll rounds timeouts up
# to the next ms, so a timer fires ~1 ms late (measured p99 1.3 ms, p99.9 3-4 ms on an
# idle loop). Costs LATENESS_S of the sustained rate whatever the qps; a fixed B = 1.5
# would cost 0.5/qps instead (50% at qps 1, 5% at 10) and cover only 1 ms at qps 500.
LATENESS_S = 0.004
# AIMD: multiply by this on throttling; add this share of qps per step of successes.
DECREASE_FACTOR = 0.7
INCREASE_SHARE = 0.05
# At most one cut, and at most one raise, per this many seconds.
STEP_S = 1.0
# Throttled answers below this share of the last STEP_S's answers are noise (a shared
# backend's odd refusal, not our rate): they neither cut the rate nor stop a raise.
NOISE_SHARE = 0.1
# The rate never drops below max(MIN_RATE, MIN_RATE_SHARE * qps) (nor above qps).
MIN_RATE = 1.0
MIN_RATE_SHARE = 0.05


def bucket_shape(rate: float, qps: float, credit: float = LATENESS_S) -> tuple[float, float]:
    """(capacity, leak per second) of the bucket pacing ``rate`` under a ``qps`` cap,
    with ``credit`` seconds of catch-up for late wake-ups (the leak does not depend on
    it: only this module's default keeps the bucket alone within the window bound)."""
    capacity = 1.0 + qps * credit
    # At rate == qps this is (qps + 1 - capacity) / (1 + JITTER_S); below it, the
    # same share, so a lowered rate keeps its meaning.
    return capacity, rate * (1.0 - LATENESS_S) / (1.0 + JITTER_S)


class RateLimiter:
    """Paces HTTP attempts at up to ``qps``, lowering the rate while throttled.

    ``await limiter.acquire()`` (or ``async with limiter:``) before each attempt;
    report answers with ``on_throttled()`` / ``on_success()``. Create it in the loop
    that uses it. ``clock`` (seconds, monotonic) times the AIMD steps only; the
    pacing itself runs on the event loop's clock, as aiolimiter does. ``credit`` is the
    catch-up for late wake-ups, in seconds at ``qps`` (`bucket_shape`): above the
    default the bucket alone no longer keeps the window bound, so only a pacer that
    also guards its sends (`fleetscan.pacing`) raises it.
    """

    __slots__ = (
        "_adaptive",
        "_answers",
        "_capacity",
        "_clock",
        "_credit",
        "_cut_at",
        "_filled_at",
        "_floor",
        "_leak",
        "_leak_rate",
        "_level",
        "_qps",
        "_raised_at",
        "_rate",
        "_throttled",
        "_timer",
        "_waiters",
    )

    def __init__(
        self,
        qps: float,
        *,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        credit: float = LATENESS_S,
    ) -> None:
        if not qps > 0:
            raise ValueError(f"qps must be positive, not {qps!r}")
        if not credit >= 0:
            raise ValueError(f"credit must be at least 0 seconds, not {credit!r}")
        self._qps = float(qps)
        self._adaptive = adaptive
        self._clock = clock
        self._floor = min(self._qps, max(MIN_RATE, MIN_RATE_SHARE * self._qps))
        # The AIMD target, in calls per second; the bucket catches up on next acquire.
        self._rate = self._qps
        self._credit = float(credit)
        self._capacity, self._leak = bucket_shape(self._rate, self._qps, self._credit)
        # The leaky bucket, on the loop's clock: its fill, when that was last brought up
        # to date (None: no permit yet), and the rate its leak was built for.
        self._level = 0.0
        self._filled_at: float | None = None
        self._leak_rate = self._rate
        # Clock times of the last cut and the last raise of the rate.
        self._cut_at = self._raised_at = -float("inf")
        # The answers of the last STEP_S, oldest first: (clock time, throttled); and
        # how many of them were throttled.
        self._answers: deque[tuple[float, bool]] = deque()
        self._throttled = 0
        # Waiters in order, each granted by a timer (`_grant`) when its permit is due.
        # The timer grants every permit the bucket holds at once, and is set again
        # from the bucket's fill, not from when a waiter got round to running: a
        # permit passed from task to task (a lock, a leader) costs a loop iteration or
        # two each, and on a busy loop those alone outlast the catch-up credit.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def qps(self) -> float:
        """The configured ceiling, in calls per second."""
        return self._qps

    @property
    def capacity(self) -> float:
        """The bucket's capacity: one permit plus the catch-up credit."""
        return self._capacity

    @property
    def current_rate(self) -> float:
        """The rate now aimed at, in calls per second (``qps`` unless throttled)."""
        return self._rate

    async def acquire(self) -> None:
        """Wait until one more attempt may go out."""
        loop = asyncio.get_running_loop()
        if not self._waiters and self._take(loop.time()):
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if self._timer is None:
            self._grant()
        # Cancelled, it stays queued and is skipped; a permit granted to it as it was
        # cancelled is spent unused (never one too many).
        await waiter

    def _fill(self, now: float) -> None:
        """Bring the bucket's fill up to ``now``, at the leak of the rate in force since
        it was last brought up; then switch to the rate now aimed at (AIMD)."""
        if self._filled_at is not None:
            self._level = max(0.0, self._level - (now - self._filled_at) * self._leak)
            self._filled_at = now
        if self._leak_rate != self._rate:
            _, self._leak = bucket_shape(self._rate, self._qps, self._credit)
            self._leak_rate = self._rate

    def _take(self, now: float) -> bool:
        """Take a permit at ``now`` if the bucket holds one. The first fills the bucket:
        the credit is for wake-ups late in the run, not a burst at its start."""
        self._fill(now)
        if self._filled_at is None:
            self._level, self._filled_at = self._capacity, now
            return True
        if self._level + 1.0 <= self._capacity + 1e-9:
            self._level += 1.0
            return True
        return False

    def _grant(self) -> None:
        """Grant the waiters every permit the bucket holds now, in order; then set the
        timer for the next one's."""
        loop = asyncio.get_running_loop()
        self._timer = None
        waiters = self._waiters
        now = loop.time()
        while waiters:
            if waiters[0].done():
                waiters.popleft()
            elif self._take(now):
                waiters.popleft().set_result(None)
            else:
                due = now + (self._level + 1.0 - self._capacity) / self._leak
                self._timer = loop.call_at(due, self._grant)
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def on_throttled(self) -> None:
        """A throttled answer arrived: cut the rate, at most once per ``STEP_S``, when
        the last ``STEP_S`` of answers were throttled beyond noise."""
        if not self._adaptive:
            return
        now = self._clock()
        self._note(now, throttled=True)
        if now - self._cut_at < STEP_S:
            return  # the same burst of throttled answers, already acted on
        if not self._throttling():
            return
        self._rate = max(self._floor, self._rate * DECREASE_FACTOR)
        self._cut_at = now

    def on_success(self) -> None:
        """A clean answer arrived: raise the rate one step, at most once per ``STEP_S``
        and not within one of a cut, when the last ``STEP_S`` of answers were clean
        (throttled no more than noise)."""
        if not self._adaptive:
            return
        now = self._clock()
        self._note(now, throttled=False)
        if self._rate >= self._qps:
            return
        if now - max(self._cut_at, self._raised_at) < STEP_S or self._throttling():
            return
        self._rate = min(self._qps, self._rate + INCREASE_SHARE * self._qps)
        self._raised_at = now

    def _note(self, now: float, *, throttled: bool) -> None:
        answers = self._answers
        answers.append((now, throttled))
        self._throttled += throttled
        horizon = now - STEP_S
        while answers[0][0] <= horizon:
            self._throttled -= answers.popleft()[1]

    def _throttling(self) -> bool:
        """Whether the last STEP_S of answers hold more throttled ones than noise."""
        return self._throttled >= max(1.0, NOISE_SHARE * len(self._answers))

    def __repr__(self) -> str:
        return f"RateLimiter(qps={self._qps:g}, current_rate={self._rate:g})"

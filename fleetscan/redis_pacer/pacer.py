"""A pacer that takes its permits from Redis, shared by every process of the account.

It has the local `fleetscan.limiter.RateLimiter`'s surface (``await acquire()``,
``on_throttled()``, ``on_success()``), so a scan uses either. Each ``acquire`` spends
one permit leased from the script (`fleetscan.redis_pacer.script`, where the
guarantee is proved); a lease asks for as many permits as there are callers waiting,
up to ``lease``, so a busy process makes one round trip per few permits and an idle
one leases no more than it spends. The next lease goes out while half of the last
remains, so its round trip is off the path.

A permit the caller wakes up for too late (more than ``SPEND_WINDOW_S`` after its
slot) is dropped: spent that late it could crowd a later second. A loop that late on
every wake-up would then drop every leased permit, so after ``CATCH_UP_AFTER`` drops
in a row the pacer takes its next ``CATCH_UP_PERMITS`` one at a time, each only if it
may be spent at once (reach 0): a round trip each, but nothing to wake up for, so
nothing is dropped. When none is free at once (other processes lease the budget
ahead), it leases as usual again: waiting for a free tick at once would wait for as
long as they run.

Where many processes share one budget, its horizon is soon all leased: a lease cut
short is followed by the next only once it is spent, and one that got nothing waits
for a random part of the horizon past the first tick within reach, so the processes
do not race each other a round trip a tick.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

from fleetscan.redis_pacer.link import RedisLink
from fleetscan.redis_pacer.script import HORIZON_S, MIN_QPS, SPEND_WINDOW_S, script_args

__all__ = ["CATCH_UP_AFTER", "CATCH_UP_PERMITS", "DEFAULT_LEASE", "RedisPacer"]

# Permits one round trip may lease, at most.
DEFAULT_LEASE = 8
# After this many permits dropped in a row, the next CATCH_UP_PERMITS are taken one
# at a time, to be spent at once. (One late wake-up at a spacing shorter than the
# lateness drops one or two and spends the next: no need to catch up.)
CATCH_UP_AFTER = 3
CATCH_UP_PERMITS = 4


def _retrieve(task: asyncio.Future[None]) -> None:
    # A lease's error is raised to the caller awaiting it; retrieved here in case none
    # was (asyncio would log it as never retrieved).
    if not task.cancelled():
        task.exception()


class RedisPacer:
    """Paces attempts at up to ``qps`` for one API on the account, and at up to
    ``address_qps`` from the egress address, and at up to ``share_qps`` for its API's
    share of that address's budget, across every process sharing Redis.

    ``keys`` are the script's KEYS: the API's AIMD hash, the API's budget, then the
    address's budget when ``address_qps`` is given, then the API's share of it when
    ``share_qps`` is (see `SharedBudget.pacer`).
    ``clock`` (monotonic seconds) and ``sleep`` time the spending of leased permits:
    only durations are used, so the host's time of day never matters. ``on_grant``,
    when given, hears the server time (µs) of each spent permit's slot.
    """

    __slots__ = (
        "_adaptive",
        "_answers",
        "_catch_up",
        "_clock",
        "_drops_in_a_row",
        "_filling",
        "_keys",
        "_lease",
        "_leased",
        "_link",
        "_lock",
        "_on_grant",
        "_other_rates",
        "_qps",
        "_share",
        "_short",
        "_sleep",
        "_throttled",
        "_waiting",
        "dropped",
        "granted",
    )

    def __init__(
        self,
        link: RedisLink,
        *,
        keys: tuple[str, ...],
        qps: float,
        address_qps: float | None = None,
        share_qps: float | None = None,
        adaptive: bool = True,
        lease: int = DEFAULT_LEASE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_grant: Callable[[int], None] | None = None,
    ) -> None:
        if not qps >= MIN_QPS:
            raise ValueError(f"qps must be at least {MIN_QPS}, not {qps!r}")
        others = tuple(rate for rate in (address_qps, share_qps) if rate is not None)
        if any(not rate >= MIN_QPS for rate in others):
            raise ValueError(
                f"address_qps and share_qps must be at least {MIN_QPS}, not {others!r}"
            )
        if len(keys) != 2 + len(others):
            raise ValueError(
                "keys: the AIMD hash, the API's budget, the address's and the lane's if paced"
            )
        if lease < 1:
            raise ValueError(f"lease must be at least 1, not {lease!r}")
        self._link = link
        self._keys = keys
        self._qps = float(qps)
        self._other_rates = others
        self._adaptive = adaptive
        self._lease = lease
        self._clock = clock
        self._sleep = sleep
        self._on_grant = on_grant
        # Leased permits, in slot order: (clock time of the slot, server µs of the slot).
        self._leased: deque[tuple[float, int]] = deque()
        # Answers not yet reported to the shared AIMD, and how many were throttled.
        self._answers = self._throttled = 0
        # The share of qps in force, as the server last said.
        self._share = 1.0
        # Permits dropped since the last one spent; and permits still to take one at a
        # time, at once, since catching up began.
        self._drops_in_a_row = 0
        self._catch_up = 0
        # Whether the last lease granted fewer permits than it asked for.
        self._short = False
        # The lease in flight, if any.
        self._filling: asyncio.Future[None] | None = None
        # Callers inside acquire: how many permits the next lease asks for.
        self._waiting = 0
        # One caller at a time spends the next permit, in slot order.
        self._lock = asyncio.Lock()
        # Permits spent, and permits dropped because the caller woke too late for them.
        self.granted = self.dropped = 0

    @property
    def qps(self) -> float:
        """The configured ceiling, in calls per second."""
        return self._qps

    @property
    def current_rate(self) -> float:
        """The shared rate in force at the last lease, in calls per second."""
        return self._qps * self._share

    async def acquire(self) -> None:
        """Wait until one more attempt may go out (blocks while Redis is lost)."""
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    self._refill()
                    if not self._leased:
                        assert self._filling is not None
                        # Shielded: a caller cancelled here must not lose the lease.
                        # (Done already, it returns at once, or raises its error.)
                        await asyncio.shield(self._filling)
                        continue
                    due, slot = self._leased[0]
                    now = self._clock()
                    if now < due:
                        await self._sleep(due - now)
                        now = self._clock()
                    self._leased.popleft()
                    if now <= due + SPEND_WINDOW_S:
                        self._drops_in_a_row = 0
                        self.granted += 1
                        if self._on_grant is not None:
                            self._on_grant(slot)
                        return
                    # Spent this late it could crowd a later second (script.py, 2).
                    self.dropped += 1
                    self._drops_in_a_row += 1
                    if self._drops_in_a_row >= CATCH_UP_AFTER:
                        self._catch_up = CATCH_UP_PERMITS
        finally:
            self._waiting -= 1

    def _refill(self) -> None:
        """Start the next lease while half of this one remains, hiding its round trip;
        after a lease cut short (the budget's horizon is taken, by others too), only
        once it is spent: asking again at once would cost a round trip a permit, each
        process racing the others for the few ticks that come within reach."""
        if self._filling is not None and not self._filling.done():
            return
        keep = 0 if self._catch_up or self._short else self._lease // 2
        if len(self._leased) > keep:
            return
        self._filling = asyncio.ensure_future(self._take_lease())
        self._filling.add_done_callback(_retrieve)

    async def aclose(self) -> None:
        """Stop a lease in flight (its permits are wasted, never spent)."""
        if self._filling is not None:
            self._filling.cancel()
            await asyncio.gather(self._filling, return_exceptions=True)

    async def _take_lease(self) -> None:
        while True:
            answers, throttled = self._answers, self._throttled
            other = self._other_rates
            catch_up = self._catch_up > 0
            want = 1 if catch_up else min(self._lease, self._waiting)
            if want == 0:
                # Nobody waits any more (served by the last lease's permits, or gone):
                # asking for none would loop on round trips with nothing to wait for.
                # The next acquire starts a lease of its own.
                return
            args = script_args(
                want=want,
                reach=0.0 if catch_up else HORIZON_S,
                qps=self._qps,
                adaptive=self._adaptive,
                answers=answers,
                throttled=throttled,
                other_rates=other,
            )
            now_us, wait_us, share_ppm, *offsets = await self._link.run(self._keys, args)
            # Counted from the answer's arrival, later than the script's now (script.py, 2).
            arrived = self._clock()
            self._answers -= answers
            self._throttled -= throttled
            self._share = share_ppm / 1e6
            self._short = len(offsets) < want
            if offsets:
                self._catch_up -= catch_up
                self._leased.extend((arrived + off / 1e6, now_us + off) for off in offsets)
                return
            if catch_up:
                # No tick free right now: others lease the budget ahead, and a permit
                # to be spent at once would never come while they do. Lease as usual.
                self._catch_up = 0
                continue
            # Nothing within reach: others hold the budget's horizon. Waking just when
            # its first tick comes within reach, every process waiting would race for
            # it, a round trip each; a random part of the horizon more spreads them,
            # and the horizon the others keep filled loses nothing meanwhile.
            await self._sleep(wait_us / 1e6 + random.uniform(0.0, HORIZON_S / 2))

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
        """A throttled answer arrived: reported to the shared AIMD with the next lease."""
        if self._adaptive:
            self._answers += 1
            self._throttled += 1

    def on_success(self) -> None:
        """A clean answer arrived: reported to the shared AIMD with the next lease."""
        if self._adaptive:
            self._answers += 1

    def __repr__(self) -> str:
        return (
            f"RedisPacer(qps={self._qps:g}, current_rate={self.current_rate:g}, "
            f"limiter={self._link.shown})"
        )

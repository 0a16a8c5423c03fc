"""The scanner: client IDs in, one record per unique ID out, paced under the API's limits.

::

    feed (reader thread) ──► admission ──► work queue ──► lane(s) ──► emit(record)
    (blocking I/O)           (dedup,       (bounded by    warm-up gate, pacer and
                             validation)   the feed)      retry per attempt

Concurrency (a lane's workers) and rate (its pacer) are separate controls; every HTTP
attempt, retries included, takes a token from the pacer.

A stop (SIGINT, SIGTERM, an account-wide error, an outage past its timeout, an output
that failed) stops the reader, lets calls on the wire finish within a grace period (a
second SIGINT cuts it short), and drops what was queued but not sent: those IDs have
no record, so ``--resume`` scans them later and nothing is billed twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fleetscan.dedup import SeenSet
from fleetscan.engine.admit import Admission
from fleetscan.engine.control import Control
from fleetscan.engine.feed import Feed, ThreadFeed
from fleetscan.engine.lanes import LANES, BatchLane, Lane, Session, SingleLane
from fleetscan.engine.outcome import Outcome, outcome_of
from fleetscan.engine.pacers import Route, account_pacer, default_pacer, lane_pacers
from fleetscan.engine.recorder import Recorder
from fleetscan.engine.settings import ScanSettings
from fleetscan.engine.stats import CallStats
from fleetscan.engine.warmup import WarmUpGate
from fleetscan.errors import ApiError, LimiterLostError
from fleetscan.limits import Mode
from fleetscan.outage import OutageBreaker, OutageOver, RetryBudget
from fleetscan.pacer import Pacer
from fleetscan.pacing import CompositePacer
from fleetscan.records import Record
from fleetscan.summary import ScanCounters

__all__ = ["Scanner"]


class Scanner:
    """Scans client IDs with one shared client and pacer; see the module docstring.

    Usage, from a running event loop::

        scanner = Scanner(client=client, settings=ScanSettings(instance_id="mqtt-cn-x"))
        outcome = await scanner.run(ids, emit=writer.write)
        print(scanner.counters.online, scanner.counters.calls_succeeded)

    ``emit`` is called once per unique ID, on the event loop, as results arrive. The
    pacer defaults to the settings' address budget composed with the API's account
    pacer (`fleetscan.engine.pacers`), built in the running loop;
    the retry budget and the outage breaker (`fleetscan.outage`) to the scan's own.
    """

    def __init__(
        self,
        *,
        client: Session,
        settings: ScanSettings,
        pacer: Pacer | None = None,
        seen: SeenSet | None = None,
        counters: ScanCounters | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        budget: RetryBudget | None = None,
        breaker: OutageBreaker | None = None,
        lane_pacers: Mapping[Mode, Pacer] | None = None,
        routes: Sequence[Route] = (),
    ) -> None:
        if settings.two_lanes and pacer is not None:
            raise ValueError(
                "a scan with two lanes (hybrid, --confirm-offline) paces each: give "
                "lane_pacers, not pacer"
            )
        self.client = client
        self.settings = settings
        self.pacer = pacer
        # Hybrid: each lane's pacer, by its API's mode (default: `lane_pacers`).
        self.lane_pacers = lane_pacers
        # Several source addresses: each its client and budget, and lanes of its own
        # on the one admission queue (an ID goes to whichever worker is free); the
        # account pacers are shared by all.
        if routes and (pacer is not None or lane_pacers is not None):
            raise ValueError("routes pace each address from the settings: no pacer with them")
        self.routes = tuple(routes)
        self.seen = seen if seen is not None else SeenSet()
        self.counters = counters if counters is not None else ScanCounters()
        self.clock = clock
        self.monotonic = monotonic
        self.control = Control()
        self.input_error: BaseException | None = None
        # Shared by every call: retries stop when answers stop (see fleetscan.outage).
        self.budget = budget if budget is not None else RetryBudget(clock=monotonic)
        self.breaker = (
            breaker
            if breaker is not None
            else OutageBreaker(timeout=settings.outage_timeout, clock=monotonic)
        )

    # --- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the scan to stop gracefully (a signal handler calls this); asked a second
        time, stop at once, without waiting for the calls on the wire."""
        self.control.interrupt()

    def output_failed(self, error: OSError) -> None:
        """The records can no longer be written: send nothing more."""
        self.control.output_failed(error)

    @property
    def interrupted(self) -> bool:
        return self.control.interrupted

    @property
    def abort_error(self) -> ApiError | OutageOver | LimiterLostError | None:
        return self.control.abort_error

    @property
    def output_error(self) -> OSError | None:
        return self.control.output_error

    @property
    def outcome(self) -> Outcome:
        return outcome_of(
            output_error=self.control.output_error is not None,
            aborted=self.control.abort_error is not None,
            input_error=self.input_error is not None,
            interrupted=self.control.interrupted,
            errors=self.counters.errors,
        )

    # --- the run ---------------------------------------------------------------------

    async def run(self, client_ids: Iterable[str], *, emit: Callable[[Record], None]) -> Outcome:
        """Scan ``client_ids`` (read lazily, in a thread); return the outcome.

        A malformed input line is raised once the IDs before it have their records.
        """
        feed = ThreadFeed(client_ids, room=self.settings.queue_size)
        return await self.run_feed(feed, emit=emit)

    async def run_feed(self, feed: Feed, *, emit: Callable[[Record], None]) -> Outcome:
        """`run`, with the IDs delivered by ``feed``."""
        settings = self.settings
        control = self.control
        counters = self.counters
        if self.routes:
            pass  # each route brings its pacers, or has them composed in _lanes
        elif settings.two_lanes:
            if self.lane_pacers is None:
                self.lane_pacers = lane_pacers(settings)
        elif self.pacer is None:
            self.pacer = default_pacer(settings)
        recorder = Recorder(
            instance_id=settings.instance_id, counters=counters, emit=emit, clock=self.clock
        )
        shard = settings.shard
        admit = Admission(
            counters,
            seen=self.seen,
            on_invalid=recorder.invalid,
            owns=shard.owns if shard is not None else None,
        ).admit
        lanes = self._lanes(recorder)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        consumers = sum(lane.consumers for lane in lanes)

        def on_id(client_id: str) -> None:
            if not control.stopping and admit(client_id):
                queue.put_nowait(client_id)
            else:
                feed.free()

        def on_end(error: BaseException | None) -> None:
            # A bad line ends the input, not the scan: what was read before it still
            # gets its records, and --resume carries on once the file is fixed.
            if error is not None and self.input_error is None:
                self.input_error = error
            for _ in range(consumers):
                queue.put_nowait(None)

        control.on_stop(feed.stop)  # before start: a scan stopped already reads nothing
        feed.start(on_id, on_end)
        tasks = [task for lane in lanes for task in lane.start(queue, feed)]
        stop_wait = asyncio.create_task(control.wait())
        try:
            # Waits on the tasks still running only: with the finished ones in the set,
            # the wait returned at once and the loop spun until the last call answered.
            running = set(tasks)
            while running and not stop_wait.done():
                done, _ = await asyncio.wait(
                    [*running, stop_wait], return_when=asyncio.FIRST_COMPLETED
                )
                running -= done
            if control.stopping:
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

    def _lanes(self, recorder: Recorder) -> tuple[Lane[Any], ...]:
        """The lane of the settings' mode, or hybrid's two (batch first: its batcher
        and the single workers read one admission queue, so an ID goes to whichever
        is free). Lanes share the scan's warm-up gate (one connection pool warms up
        once), its stop and its counters; each counts its own API too."""
        settings = self.settings
        gate = WarmUpGate()
        plan: list[tuple[Session, dict[Mode, Pacer], str | None]] = []
        if self.routes:
            accounts = {
                mode: account_pacer(settings, mode, rate)
                for mode, rate in settings.lane_rates.items()
            }
            for route in self.routes:
                paced: dict[Mode, Pacer] = (
                    dict(route.pacers)
                    if route.pacers is not None
                    else {
                        mode: CompositePacer(route.budget, account)
                        for mode, account in accounts.items()
                    }
                )
                plan.append((route.client, paced, route.budget.address))
        elif settings.two_lanes:
            assert self.lane_pacers is not None
            plan.append((self.client, dict(self.lane_pacers), None))
        else:
            assert self.pacer is not None
            plan.append((self.client, {settings.lane_mode: self.pacer}, None))
        lanes: list[Lane[Any]] = []
        for client, pacers, address in plan:
            mine: dict[str, Lane[Any]] = {}
            for mode in ("batch", "single"):
                if mode not in pacers:
                    continue
                kind = LANES[mode]
                mine[mode] = kind(
                    session=client,
                    pacer=pacers[mode],
                    # Batch confirming: the single lane only confirms, reads no IDs.
                    workers=0
                    if mode == "single" and settings.mode == "batch"
                    else settings.lane_workers(mode, routes=len(plan)),
                    retry=settings.retry,
                    control=self.control,
                    gate=gate,
                    recorder=recorder,
                    stats=CallStats(
                        self.counters, monotonic=self.monotonic, api=kind.api, address=address
                    ),
                    budget=self.budget,
                    breaker=self.breaker,
                )
            if settings.confirm_offline:
                batch, single = mine["batch"], mine["single"]
                assert isinstance(batch, BatchLane)
                assert isinstance(single, SingleLane)
                batch.confirm = single.confirm  # confirmed from the same address
            lanes.extend(mine.values())
        return tuple(lanes)

    async def _drain(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        """Cancel workers with nothing on the wire at once; give the others the grace
        period, then cancel them too."""
        on_wire = self.control.on_wire
        for task in tasks:
            if task not in on_wire:
                task.cancel()
        pending = [t for t in tasks if not t.done()]
        if pending:
            hurry = asyncio.create_task(self.control.hurried())
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

"""One scan, assembled from its settings: the one place a scan is put together.

``fleetscan scan``, the library's `fleetscan.scan` and the benchmarks all run a scan
through `ScanJob`: it opens the one HTTP session (the credential fetches and the calls
share it, so a CA bundle is trusted by both), resolves the credentials, connects the
client (unless given one), builds the pacer, the scanner and its lanes, hands records
to the sinks (flushed every ``flush_interval`` and once more, to disk, at the end),
runs a progress hook, and keeps the collector off the pacing. It returns a
`ScanResult` whose `Outcome` the caller maps to what it shows: the command to an exit
code, the library to an exception.

Usage, from a running event loop::

    job = ScanJob(ScanSettings(instance_id="mqtt-cn-x"), target=Target(region="cn-hangzhou"))
    loop.add_signal_handler(signal.SIGINT, job.stop)
    result = await job.run(client_ids, sinks=[RecordWriter(out)])
    print(result.outcome, result.summary().to_text())
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Protocol

import aiohttp

from fleetscan.client import (
    DEFAULT_TIMEOUT,
    connect,
    endpoint_for_region,
    make_ssl_context,
    open_session,
)
from fleetscan.credentials import Credentials, CredentialsProvider, resolve_credentials
from fleetscan.engine.lanes import Session
from fleetscan.engine.outcome import Outcome, outcome_of
from fleetscan.engine.pacers import Route, shared_rates
from fleetscan.engine.scanner import Scanner
from fleetscan.engine.settings import ScanSettings
from fleetscan.engine.shared import budget_account, egress_address, shared_pacers
from fleetscan.errors import ApiError, FleetscanError, LimiterLostError, UsageError
from fleetscan.limits import Mode, api_for
from fleetscan.outage import OutageOver
from fleetscan.output import FLUSH_INTERVAL, ResumeState
from fleetscan.pacer import Pacer
from fleetscan.pacing import AddressBudget
from fleetscan.sink import Sink, Tee
from fleetscan.source_address import make_connector
from fleetscan.summary import ScanCounters, ScanSummary

__all__ = ["ProgressHook", "ScanJob", "ScanResult", "Target"]

log = logging.getLogger("fleetscan")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where and as whom to scan: the endpoint, credentials and transport.

    Without ``credentials`` the chain of `fleetscan.resolve_credentials` finds them
    (and maybe the region); the endpoint is ``endpoint`` if given, else the region's.
    """

    region: str | None = None
    endpoint: str | None = None
    credentials: Credentials | CredentialsProvider | None = None
    profile: str | None = None
    signature: Literal["v3", "v1"] = "v3"
    attempt_timeout: float = DEFAULT_TIMEOUT
    ca_bundle: str | None = None


class ProgressHook(Protocol):
    """Shows a scan's progress: ``run`` until cancelled, then ``clear``."""

    async def run(self) -> None: ...

    def clear(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    """How a scan ended, and what it did.

    ``input_error`` is the malformed input line that ended the reading (the IDs read
    before it have their records); ``output_error`` what stopped the records being
    written; ``warnings`` what the summary adds (what resume repaired in the output).
    """

    outcome: Outcome
    settings: ScanSettings
    counters: ScanCounters
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    abort_error: ApiError | OutageOver | LimiterLostError | None = None
    input_error: FleetscanError | None = None
    output_error: OSError | None = None
    warnings: tuple[str, ...] = field(default=())
    # With a shared limiter: its permits, dropped permits and round trips.
    limiter: dict[str, int] | None = None

    @property
    def not_scanned(self) -> int:
        """Unique IDs read but left without a record (interrupted or aborted)."""
        return max(0, self.counters.unique - self.counters.done)

    def summary(
        self,
        *,
        instance_tps: float | None = None,
        price_per_million: float | None = None,
        lost: int = 0,
        abort_reason: str | None = None,
    ) -> ScanSummary:
        """The summary. ``lost``: records a sink could not write after it failed (their
        IDs count as not scanned); ``abort_reason`` replaces the error's own words."""
        abort = self.abort_error
        warnings = list(self.warnings)
        if lost:
            warnings.append(
                f"{lost} records could not be written after the output failed; "
                "--resume scans those IDs again"
            )
        if abort_reason is None and abort is not None:
            abort_reason = str(abort)
        return ScanSummary.build(
            self.counters,
            mode=self.settings.mode,
            api=self.settings.api,
            instance_id=self.settings.instance_id,
            qps=self.settings.rate,
            started_at=self.started_at,
            ended_at=self.ended_at,
            duration_seconds=self.duration_seconds,
            not_scanned=self.not_scanned + lost,
            instance_tps=instance_tps,
            price_per_million=price_per_million,
            outcome=self.outcome.value,
            abort_reason=abort_reason,
            warnings=tuple(warnings),
            shard=str(self.settings.shard) if self.settings.shard is not None else None,
            shard_seed=self.settings.shard.seed_digest if self.settings.shard is not None else None,
            limiter=self.limiter,
        )


class ScanJob:
    """Builds and runs one scan from ``settings``; see the module docstring.

    ``session`` replaces the client `connect` would build from ``target`` (tests,
    benchmarks); ``pacer`` the `RateLimiter` at the settings' rate. ``freeze_gc``
    keeps the collector off the pacing. A job runs once. With ``settings.limiter``
    the pacer is the shared budget's (`fleetscan.engine.shared`), connected in
    `prepare` after the credentials, before any call, and closed at the end.

    ``async with job:`` holds its HTTP session from `prepare` to the end of the block
    (a caller with work between the two, as the command has); without it, `run`
    opens and closes the session itself.
    """

    def __init__(
        self,
        settings: ScanSettings,
        *,
        target: Target | None = None,
        session: Session | None = None,
        pacer: Pacer | None = None,
        freeze_gc: bool = True,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        if pacer is not None and settings.limiter is not None:
            raise UsageError("give a pacer or a shared limiter, not both")
        self.settings = settings
        self.target = target if target is not None else Target()
        self.session = session
        self.pacer = pacer
        self.freeze_gc = freeze_gc
        self.flush_interval = flush_interval
        # Live from the start: a progress display may hold them before the run.
        self.counters = ScanCounters()
        self.scanner: Scanner | None = None
        self.started_at = datetime.now(UTC)
        self._started: float | None = None
        self._ended: tuple[datetime, float] | None = None
        self._input_error: FleetscanError | None = None
        # Into the summary: what resume repaired (the rate's warning is said at start).
        self._warnings: tuple[str, ...] = ()
        self._prepared = False
        # A stop, or an output failure, before the scanner exists (a signal during
        # connect): handed to it when it does.
        self._stopped = False
        self._output_error: OSError | None = None
        # The HTTP session (opened on first need) and what closes it: the caller's
        # `async with`, or run's end.
        self._http: aiohttp.ClientSession | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._entered = False
        # The shared limiter's connection (settings.limiter), from prepare to the end,
        # and its pacers: the lanes' (two lanes, one address), or each source address's.
        self._limiter: contextlib.AsyncExitStack | None = None
        self.lane_pacers: Mapping[Mode, Pacer] | None = None
        self._route_pacers: dict[str, dict[Mode, Pacer]] = {}
        self._limiter_stats: Callable[[], dict[str, int]] | None = None

    async def __aenter__(self) -> ScanJob:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        await self._close_limiter()
        await self._close_http()

    # --- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully: calls on the wire finish, nothing new is sent; a second
        stop does not wait for the calls on the wire."""
        self._stopped = True
        if self.scanner is not None:
            self.scanner.stop()

    def output_failed(self, error: OSError) -> None:
        """A sink can no longer write (a closed pipe, a full disk): send nothing more."""
        if self._output_error is None:
            self._output_error = error
        if self.scanner is not None:
            self.scanner.output_failed(error)

    # --- the run -------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Resolve the credentials (and the region they bring) now, so that what can be
        refused is refused before anything is written; `run` does it if not done."""
        if self._prepared:
            return
        self._prepared = True
        target = self.target
        if self.session is None and target.credentials is None:
            http = await self._http_session()
            resolved = await resolve_credentials(profile=target.profile, session=http)
            self.target = dataclasses.replace(
                target, credentials=resolved.provider, region=target.region or resolved.region
            )
        if self.settings.limiter is not None:
            await self._connect_limiter()

    async def _connect_limiter(self) -> None:
        """The shared budget's pacers, for the account of the credentials and each
        address the calls leave from (LimiterUnavailableError: nothing was sent)."""
        settings = self.settings
        limiter = settings.limiter
        assert limiter is not None
        target = self.target
        credentials = target.credentials
        if credentials is not None and not isinstance(credentials, Credentials):
            credentials = await credentials.get()
        addresses = list(settings.source_addresses)
        if not addresses:
            endpoint = target.endpoint or (
                endpoint_for_region(target.region) if target.region else None
            )
            addresses = [await egress_address(endpoint) if limiter.address_group is None else ""]
        stack = contextlib.AsyncExitStack()
        pacers, self._limiter_stats = await stack.enter_async_context(
            shared_pacers(
                limiter,
                account=budget_account(limiter, credentials),
                addresses=addresses,
                rates={api_for(mode): rate for mode, rate in shared_rates(settings).items()},
                address_budget=settings.address_budget,
                ca_bundle=target.ca_bundle,
            )
        )
        self._limiter = stack
        by_address = {
            address: {mode: pacers[address, api_for(mode)] for mode in settings.lane_rates}
            for address in addresses
        }
        if settings.source_addresses:
            self._route_pacers = by_address
        else:
            (lanes,) = by_address.values()
            if settings.two_lanes:
                self.lane_pacers = lanes
            else:
                self.pacer = lanes[settings.lane_mode]
        log.info(
            "pacing through the shared limiter %s (address %s)",
            limiter.shown,
            limiter.address_group or ", ".join(addresses),
        )

    async def _close_limiter(self) -> None:
        stack, self._limiter = self._limiter, None
        if stack is not None:
            await stack.aclose()

    async def run(
        self,
        client_ids: Iterable[str],
        *,
        sinks: Sequence[Sink] = (),
        resume: ResumeState | None = None,
        progress: ProgressHook | None = None,
    ) -> ScanResult:
        """Scan ``client_ids`` (read lazily, in a thread) into ``sinks``; how it ended.

        ``resume`` is what `fleetscan.output.prepare_resume` found in the output file:
        its IDs are skipped and what it repaired is reported. A malformed input line
        ends the reading and becomes ``input_error``; a usage or credentials error
        before the first call is raised.
        """
        if self._started is not None:
            raise RuntimeError("a ScanJob runs once: make a new one for another scan")
        self._started = time.monotonic()
        for warning in self.settings.warnings:
            log.warning("%s", warning)
        if resume is not None:
            self.counters.resumed = resume.carried_over
            self._warnings = resume.repairs
            self._report_resume(resume)
        sink: Sink = sinks[0] if len(sinks) == 1 else Tee(sinks)
        try:
            await self.prepare()
            async with self._session() as session, self._routes() as routes:
                scanner = self.scanner = Scanner(
                    client=session,
                    settings=self.settings,
                    pacer=self.pacer,
                    lane_pacers=self.lane_pacers,
                    routes=routes,
                    seen=resume.seen if resume is not None else None,
                    counters=self.counters,
                )
                if self._output_error is not None:
                    scanner.output_failed(self._output_error)
                if self._stopped:
                    scanner.stop()
                await self._scan(scanner, client_ids, sink, progress)
        finally:
            self._ended = (datetime.now(UTC), time.monotonic() - self._started)
            await self._close_limiter()  # a job runs once
            if not self._entered:
                await self._close_http()
        return self.result()

    async def _scan(
        self,
        scanner: Scanner,
        client_ids: Iterable[str],
        sink: Sink,
        progress: ProgressHook | None,
    ) -> None:
        background = [asyncio.create_task(self._flush_every(sink))]
        if progress is not None:
            background.append(asyncio.create_task(progress.run()))
        with self._gc_frozen():
            try:
                await scanner.run(client_ids, emit=sink.write)
            except FleetscanError as exc:  # a malformed line: what came before is kept
                self._input_error = exc
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                sink.flush(fsync=True)
                sink.close()
                if progress is not None:
                    progress.clear()

    def result(self) -> ScanResult:
        """How the scan ended, or stands: also for a job stopped before it ran."""
        scanner = self.scanner
        if scanner is not None:
            outcome = scanner.outcome
            abort_error = scanner.abort_error
            output_error = scanner.output_error
        else:
            abort_error, output_error = None, self._output_error
            outcome = outcome_of(
                output_error=output_error is not None,
                aborted=False,
                input_error=False,
                interrupted=self._stopped,
                errors=0,
            )
        if self._ended is not None:
            ended_at, duration = self._ended
        else:
            ended_at = datetime.now(UTC)
            duration = 0.0 if self._started is None else time.monotonic() - self._started
        return ScanResult(
            outcome=outcome,
            settings=self.settings,
            counters=self.counters,
            started_at=self.started_at,
            ended_at=ended_at,
            duration_seconds=duration,
            abort_error=abort_error,
            input_error=self._input_error,
            output_error=output_error,
            warnings=self._warnings,
            limiter=self._limiter_stats() if self._limiter_stats is not None else None,
        )

    async def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._stack = contextlib.AsyncExitStack()
            self._http = await self._stack.enter_async_context(open_session(self.target.ca_bundle))
        return self._http

    async def _close_http(self) -> None:
        stack, self._stack, self._http = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        if self.session is not None:
            yield self.session
            return
        target = self.target
        http = await self._http_session()
        async with connect(
            instance_id=self.settings.instance_id,
            credentials=target.credentials,
            region=target.region,
            endpoint=target.endpoint,
            profile=target.profile,
            signature=target.signature,
            attempt_timeout=target.attempt_timeout,
            ca_bundle=target.ca_bundle,
            session=http,
        ) as client:
            yield client

    @contextlib.asynccontextmanager
    async def _routes(self) -> AsyncIterator[tuple[Route, ...]]:
        """One session per source address (``--source-address``), bound to it, with the
        address's budget at the wire; none without addresses or with a given session."""
        addresses = self.settings.source_addresses
        if not addresses or self.session is not None:
            yield ()
            return
        target = self.target
        context = make_ssl_context(target.ca_bundle)
        routes: list[Route] = []
        async with contextlib.AsyncExitStack() as stack:
            for address in addresses:
                budget = AddressBudget(self.settings.address_budget, address=address)
                http = await stack.enter_async_context(
                    aiohttp.ClientSession(
                        connector=make_connector(address, ssl_context=context, limit=0),
                        trace_configs=[budget.trace_config()],
                    )
                )
                client = await stack.enter_async_context(
                    connect(
                        instance_id=self.settings.instance_id,
                        credentials=target.credentials,
                        region=target.region,
                        endpoint=target.endpoint,
                        profile=target.profile,
                        signature=target.signature,
                        attempt_timeout=target.attempt_timeout,
                        ca_bundle=target.ca_bundle,
                        session=http,
                    )
                )
                routes.append(Route(client, budget, pacers=self._route_pacers.get(address)))
            yield tuple(routes)

    @contextlib.contextmanager
    def _gc_frozen(self) -> Iterator[None]:
        # Everything built so far lives for the whole scan: out of the collector's
        # sight, a full collection walks only what the scan creates. Walking the imports
        # as well paused the loop for ~28 ms, long enough to send a paced call late and
        # bunched with the next: 101 in a second at --qps 100 (batch).
        if not self.freeze_gc:
            yield
            return
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # a process may run several scans (tests, a service): no leak

    async def _flush_every(self, sink: Sink) -> None:
        """Flush between records too, so a quiet stretch never holds finished records back."""
        while True:
            await asyncio.sleep(self.flush_interval)
            sink.flush()

    @staticmethod
    def _report_resume(state: ResumeState) -> None:
        if state.carried_over:
            log.info(
                "resuming %s: %d IDs already have a final record and are skipped",
                state.path,
                state.carried_over,
            )
        for note in state.repairs:
            log.warning("%s", note)

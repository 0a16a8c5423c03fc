"""One scan, assembled from its settings: the one place a scan is put together.

``fleetscan scan``, the library's `fleetscan.scan` and the benchmarks all run a scan
through `ScanJob`: it connects the client (unless given one), builds the pacer, the
scanner and its lanes, hands records to the sinks (flushed every ``flush_interval``
and once more, to disk, at the end), runs a progress hook, and keeps the collector
off the pacing. It returns a `ScanResult` whose `Outcome` the caller maps to what it
shows: the command to an exit code, the library to an exception.

Usage, from a running event loop::

    job = ScanJob(ScanSettings(instance_id="mqtt-cn-x"), target=Target(region="cn-hangzhou"),
                  sinks=[RecordWriter(out)])
    loop.add_signal_handler(signal.SIGINT, job.stop)
    result = await job.run(client_ids)
    print(result.outcome, result.summary().to_text())
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from fleetscan.client import DEFAULT_TIMEOUT, connect
from fleetscan.credentials import Credentials, CredentialsProvider
from fleetscan.engine.lanes import Session
from fleetscan.engine.outcome import Outcome
from fleetscan.engine.scanner import Scanner
from fleetscan.engine.settings import ScanSettings
from fleetscan.errors import ApiError, FleetscanError
from fleetscan.output import FLUSH_INTERVAL, ResumeState
from fleetscan.pacer import Pacer
from fleetscan.sink import Sink, Tee
from fleetscan.summary import ScanCounters, ScanSummary

__all__ = ["ProgressHook", "ScanJob", "ScanResult", "Target"]

log = logging.getLogger("fleetscan")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where and as whom to scan: the endpoint, credentials and transport."""

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
    before it have their records); ``warnings`` what the summary adds (what resume
    repaired in the output file).
    """

    outcome: Outcome
    settings: ScanSettings
    counters: ScanCounters
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    abort_error: ApiError | None = None
    input_error: FleetscanError | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def not_scanned(self) -> int:
        """Unique IDs read but left without a record (interrupted or aborted)."""
        return max(0, self.counters.unique - self.counters.done)

    def summary(
        self, *, instance_tps: float | None = None, price_per_million: float | None = None
    ) -> ScanSummary:
        abort = self.abort_error
        return ScanSummary.build(
            self.counters,
            mode=self.settings.mode,
            api=self.settings.api,
            instance_id=self.settings.instance_id,
            qps=self.settings.rate,
            started_at=self.started_at,
            ended_at=self.ended_at,
            duration_seconds=self.duration_seconds,
            not_scanned=self.not_scanned,
            instance_tps=instance_tps,
            price_per_million=price_per_million,
            outcome=self.outcome.value,
            abort_reason=str(abort) if abort is not None else None,
            warnings=self.warnings,
        )


class ScanJob:
    """Builds and runs one scan from ``settings``; see the module docstring.

    ``session`` replaces the client `connect` would build from ``target`` (tests,
    benchmarks); ``pacer`` the `RateLimiter` at the settings' rate; ``resume`` is what
    `fleetscan.output.prepare_resume` found in the output file: its IDs are skipped and
    what it repaired is reported. ``freeze_gc`` keeps the collector off the pacing.
    """

    def __init__(
        self,
        settings: ScanSettings,
        *,
        target: Target | None = None,
        sinks: Sequence[Sink] = (),
        resume: ResumeState | None = None,
        session: Session | None = None,
        pacer: Pacer | None = None,
        freeze_gc: bool = True,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.settings = settings
        self.target = target if target is not None else Target()
        self.sink: Sink = sinks[0] if len(sinks) == 1 else Tee(sinks)
        self.resume = resume
        self.session = session
        self.pacer = pacer
        self.freeze_gc = freeze_gc
        self.flush_interval = flush_interval
        self.counters = ScanCounters(resumed=resume.carried_over if resume else 0)
        # Into the summary: what resume repaired (the rate's warning is said at start).
        self.warnings = resume.repairs if resume else ()
        self.scanner: Scanner | None = None
        # A stop asked before the scanner exists (a signal during connect).
        self._stopped = False

    def stop(self) -> None:
        """Stop gracefully: calls on the wire finish, nothing new is sent."""
        self._stopped = True
        if self.scanner is not None:
            self.scanner.stop()

    async def run(
        self, client_ids: Iterable[str], *, progress: ProgressHook | None = None
    ) -> ScanResult:
        """Scan ``client_ids`` (read lazily, in a thread) and return how it ended.

        A malformed input line ends the reading and becomes ``input_error``; a usage or
        credentials error before the first call is raised. A job runs once.
        """
        if self.scanner is not None:
            raise RuntimeError("a ScanJob runs once: make a new one for another scan")
        for warning in self.settings.warnings:
            log.warning("%s", warning)
        if self.resume is not None:
            self._report_resume(self.resume)
        started_at = datetime.now(UTC)
        started = time.monotonic()
        input_error: FleetscanError | None = None
        async with self._session() as session:
            scanner = self.scanner = Scanner(
                client=session,
                settings=self.settings,
                pacer=self.pacer,
                seen=self.resume.seen if self.resume else None,
                counters=self.counters,
            )
            if self._stopped:
                scanner.stop()
            sink = self.sink
            background = [asyncio.create_task(self._flush_every(sink))]
            if progress is not None:
                background.append(asyncio.create_task(progress.run()))
            with self._gc_frozen():
                try:
                    await scanner.run(client_ids, emit=sink.write)
                except FleetscanError as exc:  # a malformed line: what came before is kept
                    input_error = exc
                finally:
                    for task in background:
                        task.cancel()
                    await asyncio.gather(*background, return_exceptions=True)
                    sink.flush(fsync=True)
                    sink.close()
                    if progress is not None:
                        progress.clear()
        return ScanResult(
            outcome=scanner.outcome,
            settings=self.settings,
            counters=self.counters,
            started_at=started_at,
            ended_at=datetime.now(UTC),
            duration_seconds=time.monotonic() - started,
            abort_error=scanner.abort_error,
            input_error=input_error,
            warnings=self.warnings,
        )

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        if self.session is not None:
            yield self.session
            return
        target = self.target
        async with connect(
            instance_id=self.settings.instance_id,
            credentials=target.credentials,
            region=target.region,
            endpoint=target.endpoint,
            profile=target.profile,
            signature=target.signature,
            attempt_timeout=target.attempt_timeout,
            ca_bundle=target.ca_bundle,
        ) as client:
            yield client

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

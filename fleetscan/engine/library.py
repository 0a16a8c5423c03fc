"""`scan`: the library's twin of ``fleetscan scan``, an async generator of records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Literal

from fleetscan.client import DEFAULT_TIMEOUT
from fleetscan.credentials import Credentials, CredentialsProvider
from fleetscan.engine.job import ScanJob, ScanResult, Target
from fleetscan.engine.outcome import Outcome
from fleetscan.engine.settings import ScanMode, ScanSettings
from fleetscan.engine.shared import LimiterSettings
from fleetscan.pacing import DEFAULT_ADDRESS_BUDGET
from fleetscan.records import Record
from fleetscan.retry import DEFAULT_MAX_ATTEMPTS, RetryPolicy
from fleetscan.shard import Shard

__all__ = ["scan"]


async def scan(
    client_ids: Iterable[str],
    *,
    instance_id: str,
    region: str | None = None,
    endpoint: str | None = None,
    credentials: Credentials | CredentialsProvider | None = None,
    profile: str | None = None,
    mode: ScanMode = "single",
    qps: float | None = None,
    concurrency: int | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    attempt_timeout: float = DEFAULT_TIMEOUT,
    signature: Literal["v3", "v1"] = "v3",
    ca_bundle: str | None = None,
    shard: Shard | None = None,
    limiter: LimiterSettings | None = None,
    address_budget: float = DEFAULT_ADDRESS_BUDGET,
    confirm_offline: bool = False,
    source_addresses: Sequence[str] = (),
) -> AsyncGenerator[Record, None]:
    """Scan ``client_ids`` and yield one `Record` per unique ID as answers arrive.

    The library twin of ``fleetscan scan``, with its rules: a ``qps`` above the
    account's limit or a malformed ``instance_id`` is a `UsageError` before any call::

        async for record in scan(ids, instance_id="mqtt-cn-x", region="cn-hangzhou"):
            print(record.client_id, record.status)

    An account-wide API error raises it (after the records that completed), and so
    does a malformed input line; closing the generator early (``contextlib.aclosing``,
    or letting it be collected) stops the scan. ``shard`` and ``limiter`` are
    ``--shard`` and ``--limiter`` (`fleetscan.engine.ScanSettings`).
    """
    settings = ScanSettings(
        instance_id=instance_id,
        mode=mode,
        qps=qps,
        concurrency=concurrency,
        retry=RetryPolicy(max_attempts=max_attempts),
        shard=shard,
        limiter=limiter,
        address_budget=address_budget,
        confirm_offline=confirm_offline,
        source_addresses=tuple(source_addresses),
    )
    target = Target(
        region=region,
        endpoint=endpoint,
        credentials=credentials,
        profile=profile,
        signature=signature,
        attempt_timeout=attempt_timeout,
        ca_bundle=ca_bundle,
    )
    records: asyncio.Queue[Record | None] = asyncio.Queue()
    job = ScanJob(settings, target=target)

    async def run() -> ScanResult:
        try:
            return await job.run(client_ids, sinks=[_QueueSink(records)])
        finally:
            records.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (record := await records.get()) is not None:
            yield record
        result = await task
    finally:
        if not task.done():
            job.stop()
            await asyncio.gather(task, return_exceptions=True)
    # The one order of precedence (fleetscan.engine.outcome) picks what is raised.
    if result.outcome is Outcome.ABORTED and result.abort_error is not None:
        raise result.abort_error
    if result.outcome is Outcome.INPUT_ERROR and result.input_error is not None:
        raise result.input_error


class _QueueSink:
    """Records onto the queue the generator yields from."""

    __slots__ = ("_queue",)

    def __init__(self, queue: asyncio.Queue[Record | None]) -> None:
        self._queue = queue

    def write(self, record: Record) -> None:
        self._queue.put_nowait(record)

    def flush(self, *, fsync: bool = False) -> None:
        pass

    def close(self) -> None:
        pass

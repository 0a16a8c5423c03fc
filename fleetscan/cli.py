"""The ``fleetscan`` command: parse, build the objects, run the library, map the outcome
to a message and an exit code. ``main(argv)`` is callable in-process from tests.

Exit codes: 0 every ID has a final status; 1 some IDs ended in ``error``; 2 usage,
input or credentials error; 3 aborted on an account-wide API error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from fleetscan import __version__, audit_cli
from fleetscan.errors import FleetscanError, UsageError
from fleetscan.ids import instance_id_problem
from fleetscan.limits import DEFAULT_QPS, IP_SAFE_QPS, MAX_QPS, MODES, Mode, api_for

if TYPE_CHECKING:
    from fleetscan.credentials import Credentials
    from fleetscan.output import RecordWriter, ResumeState
    from fleetscan.scanner import Scanner

__all__ = ["EXIT_ABORTED", "EXIT_ERRORS", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

log = logging.getLogger("fleetscan")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    _configure_logging(quiet=getattr(args, "quiet", False))
    try:
        code: int = args.handler(args)
    except FleetscanError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetscan",
        description="Check the online status of MQTT client IDs on Alibaba Cloud "
        "ApsaraMQ for MQTT, paced under the API's limits.",
    )
    parser.add_argument("--version", action="version", version=f"fleetscan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser(
        "scan",
        help="query the online status of every client ID in the inputs",
        description="Query the online status of every unique client ID in the inputs and "
        "write one NDJSON record per ID.",
    )
    _add_input_arguments(scan)
    _add_rate_arguments(scan)
    target = scan.add_argument_group("target")
    target.add_argument("--instance-id", help="the MQTT instance (or FLEETSCAN_INSTANCE_ID)")
    target.add_argument(
        "--region", help="region ID (or ALIBABA_CLOUD_REGION_ID, or the profile's region)"
    )
    target.add_argument(
        "--endpoint", help="override the regional endpoint URL (http:// only for loopback)"
    )
    target.add_argument("--profile", help="a profile of ~/.aliyun/config.json")
    target.add_argument(
        "--signature", choices=("v3", "v1"), default="v3", help="signature scheme (default v3)"
    )
    target.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="extra CA certificates to trust; verification itself is never disabled",
    )
    target.add_argument(
        "--emulator",
        action="store_true",
        help="start the embedded emulator on loopback and scan against it (a demo)",
    )
    calls = scan.add_argument_group("calls")
    calls.add_argument("--concurrency", type=_positive_int, help="requests in flight")
    calls.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=6,
        help="attempts per call, the first included (default 6)",
    )
    calls.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds per attempt (default 10)"
    )
    output = scan.add_argument_group("output")
    output.add_argument(
        "-o", "--output", metavar="FILE", help="NDJSON destination (default stdout)"
    )
    output.add_argument("--summary", metavar="FILE", help="write the summary as one JSON document")
    output.add_argument(
        "--resume",
        action="store_true",
        help="with -o: skip IDs that already have a final record, and append",
    )
    audit_cli.add_scan_options(output)
    shown = output.add_mutually_exclusive_group()
    shown.add_argument(
        "--quiet", action="store_true", help="no progress and no summary text on stderr"
    )
    shown.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show progress even when stderr is not a terminal",
    )
    scan.set_defaults(handler=_run_scan)

    estimate = commands.add_parser(
        "estimate",
        help="forecast a scan's calls, transactions and duration without any API call",
        description="Read the inputs and forecast both modes side by side, without any call.",
    )
    _add_input_arguments(estimate)
    _add_rate_arguments(estimate)
    estimate.set_defaults(handler=_run_estimate)

    from fleetscan.emulator import command as emulator_command

    emulator = commands.add_parser(
        "emulator",
        help="serve an emulator of the OnsMqtt session APIs on loopback",
        description="Serve an emulator of QuerySessionByClientId and "
        "BatchQuerySessionByClientIds for tests, benchmarks and demos.",
    )
    emulator_command.add_arguments(emulator)
    emulator.set_defaults(handler=emulator_command.run)
    audit_cli.add_commands(commands)
    return parser


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files of client IDs (.csv, text, .gz of either), or - / nothing for stdin",
    )
    parser.add_argument("--column", help="the CSV column holding client IDs")


def _add_rate_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rate and cost")
    group.add_argument(
        "--mode",
        choices=("single", "batch"),
        default="single",
        help="single: QuerySessionByClientId (real time); "
        "batch: BatchQuerySessionByClientIds, 10 IDs a call (cached)",
    )
    group.add_argument(
        "--qps",
        type=_positive_float,
        help="calls per second; default 300 (single) / 100 (batch); "
        "at most 500 (single) / 100 (batch)",
    )
    group.add_argument(
        "--instance-tps",
        type=_positive_float,
        metavar="N",
        help="the instance's purchased TPS spec, for the estimate",
    )
    group.add_argument(
        "--price-per-million",
        type=_non_negative_float,
        metavar="X",
        help="pay-as-you-go price per million transactions, for the estimate",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be zero or a positive number")
    return value


def _configure_logging(*, quiet: bool) -> None:
    """fleetscan's messages go to stderr; --quiet keeps only warnings and errors."""
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("fleetscan: %(message)s"))
        log.addHandler(handler)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it per call)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def checked_qps(mode: Mode, qps: float | None) -> float:
    """The rate to use: the mode's default, refused above the API's limit."""
    rate = qps if qps is not None else float(DEFAULT_QPS[mode])
    if rate > MAX_QPS[mode]:
        raise UsageError(
            f"--qps {rate:g} is above the {MAX_QPS[mode]} calls/s that {api_for(mode)} "
            "allows an account"
        )
    if mode == "single" and rate > IP_SAFE_QPS:
        log.warning(
            "--qps %g: Alibaba blocks a source IP that sends more than %d calls/s of one API; "
            "above that, run from two or more egress IPs, each under %d/s",
            rate,
            IP_SAFE_QPS,
            IP_SAFE_QPS,
        )
    return rate


# --- estimate ----------------------------------------------------------------------------


def _run_estimate(args: argparse.Namespace) -> int:
    from fleetscan.dedup import SeenSet
    from fleetscan.estimate import forecast, render_forecasts
    from fleetscan.ids import client_id_problem
    from fleetscan.inputs import read_client_ids

    # --qps applies to --mode; the other mode is shown at its default rate.
    rates = {mode: float(DEFAULT_QPS[mode]) for mode in MODES}
    rates[args.mode] = checked_qps(args.mode, args.qps)
    seen = SeenSet()
    read = duplicates = invalid = 0
    for row in read_client_ids(args.inputs, column=args.column, stdin=_stdin()):
        read += 1
        if not seen.add(row.client_id):
            duplicates += 1
        elif client_id_problem(row.client_id) is not None:
            invalid += 1
    valid = len(seen) - invalid
    forecasts = [
        forecast(
            valid,
            mode=mode,
            qps=rates[mode],
            instance_tps=args.instance_tps,
            price_per_million=args.price_per_million,
        )
        for mode in MODES
    ]
    sys.stdout.write(
        f"IDs read {read}, unique {len(seen)}, duplicates {duplicates}, invalid {invalid}, "
        f"to query {valid}\n\n"
    )
    sys.stdout.write(render_forecasts(forecasts))
    sys.stdout.flush()
    return EXIT_OK


def _stdin() -> BinaryIO:
    """A reader of its own over fd 0, not ``sys.stdin.buffer``.

    The scan reads stdin in a daemon thread that may still be blocked in a read at
    exit (a pipe that never closes); the interpreter then closes ``sys.stdin`` and
    aborts ("could not acquire lock ... at interpreter shutdown"). Nothing at exit
    touches this second reader, and ``closefd=False`` leaves fd 0 to ``sys.stdin``.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream
        return sys.stdin.buffer
    return open(fd, "rb", closefd=False)  # lives as long as the process


# --- scan --------------------------------------------------------------------------------


def _run_scan(args: argparse.Namespace) -> int:
    from fleetscan.inputs import read_client_ids
    from fleetscan.output import prepare_resume

    rate = checked_qps(args.mode, args.qps)
    if args.resume and not args.output:
        raise UsageError("--resume needs -o FILE: it continues the scan written there")
    instance_id = args.instance_id or os.environ.get("FLEETSCAN_INSTANCE_ID")
    if not args.emulator:
        if not instance_id:
            raise UsageError("no instance: give --instance-id or set FLEETSCAN_INSTANCE_ID")
        problem = instance_id_problem(instance_id)
        if problem:
            raise UsageError(f"--instance-id {instance_id!r}: {problem}")
    # Before any call: a missing input file or a broken output file is a usage error.
    rows = read_client_ids(args.inputs, column=args.column, stdin=_stdin())
    state = prepare_resume(args.output) if args.resume else None
    if state is not None and state.carried_over:
        log.info(
            "resuming %s: %d IDs already have a final record and are skipped",
            args.output,
            state.carried_over,
        )
    hooks = audit_cli.ScanHooks.open(args, state)
    try:
        output: BinaryIO = (
            open(args.output, "ab" if args.resume else "wb")  # noqa: SIM115 - closed below
            if args.output
            else sys.stdout.buffer
        )
        try:
            run = _ScanRun(args, rate, instance_id, state, hooks)
            asyncio.run(run.main((row.client_id for row in rows), output))
        finally:
            if output is not sys.stdout.buffer:
                output.close()
        return run.finish()
    finally:
        hooks.close()


class _ScanRun:
    """One ``fleetscan scan``: the async part, then the summary and the exit code."""

    def __init__(
        self,
        args: argparse.Namespace,
        rate: float,
        instance_id: str | None,
        state: ResumeState | None,
        hooks: audit_cli.ScanHooks,
    ) -> None:
        from fleetscan.summary import ScanCounters

        self.args = args
        self.hooks = hooks
        self.rate = rate
        self.instance_id = instance_id or ""
        self.counters = ScanCounters(resumed=state.carried_over if state else 0)
        self.seen = state.seen if state else None
        self.scanner: Scanner | None = None
        self.input_error: FleetscanError | None = None
        self.started_at = datetime.now(UTC)
        self.duration = 0.0

    async def main(self, client_ids: Iterator[str], output: BinaryIO) -> None:
        if not self.args.emulator:
            await self._scan(client_ids, output, endpoint=self.args.endpoint, credentials=None)
            return
        from fleetscan.credentials import Credentials
        from fleetscan.emulator import (
            DEFAULT_ACCESS_KEY_ID,
            DEFAULT_ACCESS_KEY_SECRET,
            EmulatorConfig,
            Faults,
            run_emulator,
        )

        # The demo: the whole real path (HTTP, signing, limiter, retries) against the
        # in-process emulator, with its throwaway key and a few injected faults.
        config = EmulatorConfig(faults=Faults(error_rate=0.02, latency_ms=20.0, jitter_ms=10.0))
        self.instance_id = config.instance_ids[0]
        demo_key = Credentials(
            access_key_id=DEFAULT_ACCESS_KEY_ID,
            access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
            source="the emulator's throwaway key",
        )
        async with run_emulator(config) as emulator:
            log.info("scanning against the embedded emulator at %s", emulator.url)
            await self._scan(client_ids, output, endpoint=emulator.url, credentials=demo_key)

    async def _scan(
        self,
        client_ids: Iterator[str],
        output: BinaryIO,
        *,
        endpoint: str | None,
        credentials: Credentials | None,
    ) -> None:
        from fleetscan.client import connect
        from fleetscan.output import FLUSH_INTERVAL, RecordWriter
        from fleetscan.progress import LineTotal, Progress
        from fleetscan.retry import RetryPolicy
        from fleetscan.scanner import Scanner, ScanSettings

        args = self.args
        settings = ScanSettings(
            instance_id=self.instance_id,
            mode=args.mode,
            qps=self.rate,
            concurrency=args.concurrency,
            retry=RetryPolicy(max_attempts=args.max_attempts),
        )
        writer = RecordWriter(output)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with connect(
            instance_id=self.instance_id,
            credentials=credentials,
            region=args.region,
            endpoint=endpoint,
            profile=args.profile,
            signature=args.signature,
            attempt_timeout=args.timeout,
            ca_bundle=args.ca_bundle,
        ) as client:
            scanner = self.scanner = Scanner(
                client=client, settings=settings, seen=self.seen, counters=self.counters
            )
            show = not args.quiet and (args.progress or sys.stderr.isatty())
            # Counting the input's lines reads it once more: only when progress shows.
            progress = Progress(
                self.counters,
                stream=sys.stderr,
                live=sys.stderr.isatty(),
                total=LineTotal(args.inputs) if show else lambda: None,
            )
            background = [asyncio.create_task(_flush_every(writer, FLUSH_INTERVAL))]
            if show:
                background.append(asyncio.create_task(progress.run()))
            # Everything built so far lives for the whole scan: out of the collector's
            # sight, a full collection walks only what the scan creates. Walking the
            # imports as well paused the loop for ~28 ms, long enough to send a paced
            # call late and bunched with the next: 101 in a second at --qps 100 (batch).
            gc.collect()
            gc.freeze()
            with _stop_on_signals(loop, scanner.stop):
                try:
                    await scanner.run(client_ids, emit=self.hooks.wrap(writer.write))
                except FleetscanError as exc:  # a malformed line: what came before is kept
                    self.input_error = exc
                finally:
                    gc.unfreeze()  # main() may run again in this process (tests): no leak
                    for task in background:
                        task.cancel()
                    await asyncio.gather(*background, return_exceptions=True)
                    writer.flush(fsync=True)
                    self.duration = loop.time() - started
                    if show:
                        progress.clear()

    def finish(self) -> int:
        """Write the summary and return the exit code."""
        from fleetscan.limits import api_for
        from fleetscan.summary import ScanSummary

        args = self.args
        scanner = self.scanner
        assert scanner is not None
        counters = self.counters
        abort = scanner.abort_error
        summary = ScanSummary.build(
            counters,
            mode=args.mode,
            api=api_for(args.mode),
            instance_id=self.instance_id,
            qps=self.rate,
            started_at=self.started_at,
            ended_at=datetime.now(UTC),
            duration_seconds=self.duration,
            not_scanned=max(0, counters.unique - counters.done),
            instance_tps=args.instance_tps,
            price_per_million=args.price_per_million,
            outcome=scanner.outcome,
            abort_reason=str(abort) if abort is not None else None,
        )
        if args.summary:
            with open(args.summary, "wb") as f:
                f.write(summary.to_json())
        if not args.quiet:
            sys.stderr.write(summary.to_text())
        self.hooks.finish(summary)
        if self.input_error is not None:
            log.error("%s", self.input_error)
            log.error("the IDs read before it have their records; fix the input, then --resume")
            return EXIT_USAGE
        if scanner.interrupted:
            return EXIT_INTERRUPTED
        if abort is not None:
            log.error("stopped: %s", abort)
            return EXIT_ABORTED
        return EXIT_ERRORS if counters.errors else EXIT_OK


async def _flush_every(writer: RecordWriter, interval: float) -> None:
    """Flush between records too, so a quiet stretch never holds finished records back."""
    while True:
        await asyncio.sleep(interval)
        writer.flush()


@contextlib.contextmanager
def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM ask the scan to stop gracefully."""
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)

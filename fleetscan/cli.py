"""The ``fleetscan`` command: parse, check, run the library's scan (`ScanJob`), print,
and map its outcome to an exit code. ``main(argv)`` is callable in-process from tests.

Exit codes: 0 every ID has a final status; 1 some IDs ended in ``error``; 2 usage,
input or credentials error; 3 aborted on an account-wide API error or an outage; 4 the
output could not be written (a closed pipe, a full disk); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from fleetscan.engine.outcome import Outcome
from fleetscan.errors import FleetscanError, UsageError
from fleetscan.limits import MAX_CONCURRENCY, MODES
from fleetscan.outage import DEFAULT_OUTAGE_TIMEOUT
from fleetscan.version import __version__

if TYPE_CHECKING:
    from fleetscan.audit_cli import ScanAudit
    from fleetscan.credentials import Credentials
    from fleetscan.destination import OutputFile
    from fleetscan.engine import ScanJob, ScanSettings, Target
    from fleetscan.estimate import OfflineShare
    from fleetscan.output import RecordWriter

__all__ = [
    "EXIT_ABORTED",
    "EXIT_CODES",
    "EXIT_ERRORS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_USAGE",
    "MAX_CONCURRENCY",
    "main",
]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_OUTPUT = 4
EXIT_INTERRUPTED = 130

# The one map from how a scan ended to the exit code (the order between outcomes, when
# several things happened, is fleetscan.engine.outcome's).
EXIT_CODES: dict[Outcome, int] = {
    Outcome.COMPLETED: EXIT_OK,
    Outcome.COMPLETED_WITH_ERRORS: EXIT_ERRORS,
    Outcome.INPUT_ERROR: EXIT_USAGE,
    Outcome.ABORTED: EXIT_ABORTED,
    Outcome.OUTPUT_ERROR: EXIT_OUTPUT,
    Outcome.INTERRUPTED: EXIT_INTERRUPTED,
}

log = logging.getLogger("fleetscan")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    # First of all, before the heavy imports: a signal at any moment ends with 130.
    with _signals_interrupt():
        try:
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                return int(exc.code or 0)
            _configure_logging(quiet=getattr(args, "quiet", False))
            if args.handler is _run_scan:
                _load_scan_modules()
            _interrupts.now()
            code: int = args.handler(args)
        except FleetscanError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return code


class _Interrupts:
    """SIGINT and SIGTERM as KeyboardInterrupt, from the command's first line on.

    While the modules load, a signal is only noted (an exception raised inside a C
    extension's initialisation can crash the interpreter) and raised once they are in;
    after that it is raised at once, wherever start-up is, and the scan's own handlers
    take over while it runs. Either way: exit 130, the summary, no temporary file left.
    """

    def __init__(self) -> None:
        self.deferred = True
        self.pending = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.deferred:
            self.pending = True
            return
        raise KeyboardInterrupt

    def now(self) -> None:
        """Modules loaded: raise a noted signal, and any later one at once."""
        self.deferred = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


_interrupts = _Interrupts()


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    _interrupts.deferred, _interrupts.pending = True, False
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _interrupts)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _load_scan_modules() -> None:
    """Everything a scan imports, loaded while signals are only noted (see _Interrupts)."""
    import fleetscan.client
    import fleetscan.credentials
    import fleetscan.destination
    import fleetscan.engine.job
    import fleetscan.engine.library
    import fleetscan.history
    import fleetscan.inputs
    import fleetscan.output
    import fleetscan.progress
    import fleetscan.summary  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetscan",
        description="Check the online status of MQTT client IDs on Alibaba Cloud "
        "ApsaraMQ for MQTT, paced under the API's limits.",
    )
    parser.add_argument("--version", action="version", version=f"fleetscan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from fleetscan.audit_cli import add_commands, add_scan_options

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
    calls.add_argument(
        "--concurrency",
        type=_positive_int,
        help=f"requests in flight (at most {MAX_CONCURRENCY})",
    )
    calls.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=6,
        help="attempts per call, the first included (default 6)",
    )
    calls.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds per attempt (default 10)"
    )
    calls.add_argument(
        "--outage-timeout",
        type=_positive_float,
        default=DEFAULT_OUTAGE_TIMEOUT,
        metavar="SECONDS",
        help="stop when the service has given no answer for this long, leaving the rest "
        f"for --resume (default {DEFAULT_OUTAGE_TIMEOUT:g})",
    )
    _add_sharing_arguments(scan)
    output = scan.add_argument_group("output")
    output.add_argument(
        "-o", "--output", metavar="FILE", help="NDJSON destination (default or -: stdout)"
    )
    output.add_argument(
        "--summary", metavar="FILE", help="write the summary as one JSON document (-: stdout)"
    )
    output.add_argument(
        "--resume",
        action="store_true",
        help="with -o: skip IDs that already have a final record, and append",
    )
    add_scan_options(output)
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
    estimate.add_argument(
        "--offline-share",
        type=_share,
        metavar="X",
        help="the share of IDs batch finds offline, for --confirm-offline's forecast "
        "(default: the share in --previous FILE, else 0.2)",
    )
    estimate.add_argument(
        "--previous",
        metavar="FILE",
        help="the output of the last scan (the -o FILE a --resume continues): its share "
        "of offline records is the default --offline-share",
    )
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
    add_commands(commands)
    return parser


def _add_sharing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "many processes and hosts", "share one account's budget in Redis; split the IDs"
    )
    group.add_argument(
        "--limiter",
        metavar="URL",
        help="pace through a budget in Redis shared by every process of the account: "
        "redis://[user:password@]host:port/db or rediss:// (TLS); the password may come "
        "from FLEETSCAN_REDIS_PASSWORD instead",
    )
    group.add_argument(
        "--limiter-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="stop, resumable, when Redis has been lost this long (default 60)",
    )
    group.add_argument(
        "--address-group",
        metavar="NAME",
        help="the egress address's budget to share (hosts behind one NAT gateway give "
        "one name); default: the address the calls leave from",
    )
    group.add_argument(
        "--limiter-account",
        metavar="NAME",
        help="the name of the account's shared budget, the same for every process (e.g. "
        "the account's UID); default: the account an assumed role names, else the "
        "AccessKeyId (give it for temporary keys of an instance's role)",
    )
    group.add_argument(
        "--shard",
        metavar="K/N",
        help="scan only shard K (0-based) of N, a fixed split by a keyed hash of the ID",
    )
    group.add_argument(
        "--shard-seed",
        metavar="SEED",
        help="deal another split (the default seed is fixed; a resume needs the same)",
    )


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files of client IDs (.csv, text, .gz of either), or - / nothing for stdin",
    )
    parser.add_argument("--column", help="the CSV column holding client IDs")
    parser.add_argument(
        "--encoding",
        default="utf-8",
        help="the inputs' text encoding (default utf-8; e.g. cp1252, utf-16)",
    )


def _add_rate_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rate and cost")
    group.add_argument(
        "--mode",
        choices=("single", "batch", "hybrid"),
        default="single",
        help="single: QuerySessionByClientId (real time); "
        "batch: BatchQuerySessionByClientIds, 10 IDs a call (cached); "
        "hybrid: both lanes at once, batch at its pace, single at what the address "
        "budget leaves",
    )
    group.add_argument(
        "--qps",
        type=_positive_float,
        help="the API's calls per second; default 482 (single) / 96 (batch), just under "
        "the account's 500 / 100; within --address-budget",
    )
    group.add_argument(
        "--confirm-offline",
        action="store_true",
        help="batch and hybrid: ask the real-time API again about every ID a (cached) "
        "batch answer says is offline before writing its record",
    )
    group.add_argument(
        "--source-address",
        action="append",
        metavar="ADDR",
        help="a local address the calls leave from, each with its own --address-budget "
        "(repeat for several; the account's limits are shared by all); checked on this "
        "host before any call",
    )
    # Issue 10: the budget of one source address, all APIs together.
    group.add_argument(
        "--address-budget",
        type=_positive_float,
        metavar="N",
        help="calls/s from one source address, all APIs together; default 270, "
        "at most 300 (past it Alibaba blocks the address)",
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


def _share(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be within 0..1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
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


# --- estimate ----------------------------------------------------------------------------


def _run_estimate(args: argparse.Namespace) -> int:
    from fleetscan.engine import checked_rate, default_rate, rate_warnings, tally
    from fleetscan.estimate import forecast, forecast_lanes, render_forecasts
    from fleetscan.inputs import read_client_ids
    from fleetscan.pacing import DEFAULT_ADDRESS_BUDGET, check_address_budget, lane_rates

    # --qps applies to --mode; the other mode is shown at its default rate; both
    # within the address budget.
    budget = check_address_budget(args.address_budget or DEFAULT_ADDRESS_BUDGET)
    rates = {mode: default_rate(mode) for mode in MODES}
    # Each source address given brings its budget (the account's paces stay shared).
    addresses = max(1, len(set(args.source_address or ())))
    if args.mode in MODES and args.qps is not None:
        rates[args.mode] = checked_rate(args.mode, args.qps)
        if addresses == 1:
            for warning in rate_warnings(args.mode, rates[args.mode], budget):
                log.warning("%s", warning)
    rates = {mode: min(rate, budget * addresses) for mode, rate in rates.items()}
    share = _offline_share(args)  # before the inputs: a bad file is refused at once
    rows = read_client_ids(args.inputs, column=args.column, stdin=_stdin(), encoding=args.encoding)
    # The scan's own admission (dedup, validation, counting): the numbers agree with it.
    counters = tally(row.client_id for row in rows)
    valid = counters.unique - counters.invalid
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
    # Two lanes: batch at its pace, single (hybrid's lane, the confirmations) at what
    # the address budgets leave.
    lanes = lane_rates(addresses, budget)
    forecasts += [
        forecast_lanes(
            valid,
            batch_rate=lanes["batch"],
            single_rate=lanes["single"],
            hybrid=hybrid,
            confirm=confirm,
            offline_share=share.value,
            instance_tps=args.instance_tps,
            price_per_million=args.price_per_million,
        )
        for hybrid, confirm in ((False, True), (True, False), (True, True))
        if lanes["single"] > 0
    ]
    sys.stdout.write(
        f"IDs read {counters.read}, unique {counters.unique}, "
        f"duplicates {counters.duplicates}, invalid {counters.invalid}, to query {valid}\n\n"
    )
    if lanes["single"] > 0:
        sys.stdout.write(f"--confirm-offline: {share.describe()}\n\n")
    sys.stdout.write(render_forecasts(forecasts))
    sys.stdout.flush()
    return EXIT_OK


def _offline_share(args: argparse.Namespace) -> OfflineShare:
    """--offline-share if given, else the share in --previous FILE, else the default."""
    from fleetscan.estimate import OfflineShare
    from fleetscan.output import count_records

    if args.offline_share is not None:
        return OfflineShare(value=args.offline_share, given=True)
    if args.previous is None:
        return OfflineShare()
    counts = count_records(args.previous)
    return OfflineShare.of_records(
        source=args.previous,
        online=counts.online,
        offline=counts.offline,
        confirmed_online=counts.confirmed_online,
    )


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
    run = _ScanRun(args)
    try:
        return run.execute()
    except KeyboardInterrupt:  # a signal before or after the scan took them over
        return run.finish(interrupted=True)
    finally:
        if run.audit is not None:
            run.audit.close()


class _ScanRun:
    """One ``fleetscan scan``: the checks, the library's scan, the summary and the exit
    code. Everything that can be refused is refused before a file is opened for
    writing or a call is made (see `execute`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.job: ScanJob | None = None
        self.writer: RecordWriter | None = None
        self.output: OutputFile | None = None
        self.audit: ScanAudit | None = None

    def execute(self) -> int:
        from fleetscan.audit_cli import ScanAudit
        from fleetscan.client import check_endpoint, endpoint_for_region, make_ssl_context
        from fleetscan.destination import check_destinations
        from fleetscan.engine import ScanJob
        from fleetscan.inputs import read_client_ids

        args = self.args
        if args.emulator:
            given = [
                f"--{name.replace('_', '-')}"
                for name in ("endpoint", "instance_id", "region", "profile")
                if getattr(args, name)
            ]
            if given:
                raise UsageError(
                    f"--emulator scans the embedded emulator; {', '.join(given)} would be "
                    "ignored: drop them, or drop --emulator"
                )
        if args.resume and args.output in (None, "-"):
            raise UsageError("--resume needs -o FILE: it continues the scan written there")
        # The library's rules (the account's rate limit, the instance ID, concurrency).
        settings = _settings(args)
        if not args.emulator:
            # Before the credentials chain: a refused endpoint must not first send
            # requests to the metadata service or a credentials URI.
            if args.endpoint is not None:
                check_endpoint(args.endpoint)
            if args.region is not None:
                endpoint_for_region(args.region)
        if args.ca_bundle is not None:
            make_ssl_context(args.ca_bundle)
        check_destinations(
            output=args.output, summary=args.summary, inputs=args.inputs, resume=args.resume
        )
        rows = read_client_ids(
            args.inputs, column=args.column, stdin=_stdin(), encoding=args.encoding
        )
        # Last of the checks: a history that is refused (a newer schema, not SQLite) is
        # a usage error before any call; --metrics-file's directory must exist.
        self.audit = ScanAudit.open(args)
        self.job = ScanJob(settings, target=_target(args))
        asyncio.run(self._main(row.client_id for row in rows))
        return self.finish()

    async def _main(self, client_ids: Iterator[str]) -> None:
        job = self.job
        assert job is not None
        async with _demo_emulator(self.args.emulator) as demo:
            if demo is not None:
                url, key = demo
                job.target = dataclasses.replace(job.target, endpoint=url, credentials=key)
            # The job's one HTTP session serves the credential fetches (STS, ECS) and the
            # calls; the credentials come before the output: a missing key writes nothing.
            async with job:
                await job.prepare()
                await self._scan(job, client_ids)

    async def _scan(self, job: ScanJob, client_ids: Iterator[str]) -> None:
        from fleetscan.destination import OutputFile
        from fleetscan.output import RecordWriter, prepare_resume
        from fleetscan.progress import LineTotal, Progress

        args = self.args
        shard = job.settings.shard
        state = (
            prepare_resume(
                args.output,
                instance_id=job.settings.instance_id,
                owns=shard.owns if shard is not None else None,
            )
            if args.resume
            else None
        )
        audit = self.audit
        assert audit is not None
        audit.begin(job.settings, output=args.output, resume=state)
        output = self.output = OutputFile(args.output, resume=args.resume)
        keep_empty = False
        try:
            writer = self.writer = RecordWriter(output.stream, on_error=self._output_failed)
            show = not args.quiet and (args.progress or sys.stderr.isatty())
            # A live line on the terminal that also shows the records would run into
            # them: then progress comes as whole log lines (with --progress) or not at all.
            records_on_terminal = output.name is None and _isatty(sys.stdout)
            live = sys.stderr.isatty() and not records_on_terminal
            if records_on_terminal and not args.progress:
                show = False
            progress = Progress(
                job.counters,
                stream=sys.stderr,
                live=live,
                # Counting the input's lines reads it once more: only when progress shows.
                total=LineTotal(args.inputs) if show else lambda: None,
            )
            with _stop_on_signals(asyncio.get_running_loop(), job.stop):
                result = await job.run(
                    client_ids,
                    sinks=[writer, *audit.sinks(on_error=job.output_failed)],
                    resume=state,
                    progress=progress if show else None,
                )
            keep_empty = result.outcome in (Outcome.COMPLETED, Outcome.COMPLETED_WITH_ERRORS)
        finally:
            # A run that wrote no record and did not complete leaves an earlier file be.
            output.close(keep_empty=keep_empty)

    def _output_failed(self, error: OSError) -> None:
        if self.job is not None:
            self.job.output_failed(error)
        if self.output is not None and self.output.name is None:
            # stdout is gone: point fd 1 at /dev/null, so nothing at exit writes to it again.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)

    def finish(self, *, interrupted: bool = False) -> int:
        """Write and print the summary; the exit code of the outcome."""
        from fleetscan.destination import write_atomically

        args = self.args
        job = self.job
        if job is None:  # a signal during the checks: nothing was read, written or sent
            log.error("interrupted before the scan started")
            return EXIT_INTERRUPTED
        if interrupted:
            job.stop()
        result = job.result()
        lost = self.writer.lost if self.writer is not None else 0
        reason = None
        if result.output_error is not None:
            reason = _describe_output_error(result.output_error, args.output)
        summary = result.summary(
            instance_tps=args.instance_tps,
            price_per_million=args.price_per_million,
            lost=lost,
            abort_reason=reason,
        )
        if args.summary:
            try:
                write_atomically(args.summary, summary.to_json())
            except OSError as exc:
                log.error("cannot write the summary to %s: %s", args.summary, exc.strerror or exc)
        if not args.quiet:
            with contextlib.suppress(OSError, ValueError):  # stderr may be gone too
                sys.stderr.write(summary.to_text())
                sys.stderr.flush()
        if self.audit is not None:
            self.audit.finish(summary)
        if reason is not None:
            log.error("stopped: %s", reason)
        if result.input_error is not None:
            log.error("%s", result.input_error)
            log.error("the IDs read before it have their records; fix the input, then --resume")
        if result.abort_error is not None:
            log.error("stopped: %s", result.abort_error)
        return EXIT_CODES[result.outcome]


def _settings(args: argparse.Namespace) -> ScanSettings:
    """The scan's settings from the options: the library checks them."""
    from fleetscan.engine import ScanSettings
    from fleetscan.retry import RetryPolicy

    if args.emulator:
        from fleetscan.emulator import EmulatorConfig

        instance_id = EmulatorConfig().instance_ids[0]
    else:
        instance_id = args.instance_id or os.environ.get("FLEETSCAN_INSTANCE_ID") or ""
        if not instance_id:
            raise UsageError("no instance: give --instance-id or set FLEETSCAN_INSTANCE_ID")
    # Only what was given: the settings hold the defaults.
    given: dict[str, Any] = {}
    if args.address_budget is not None:
        given["address_budget"] = args.address_budget
    if getattr(args, "confirm_offline", False):
        given["confirm_offline"] = True
    if getattr(args, "source_address", None):
        given["source_addresses"] = tuple(args.source_address)
    return ScanSettings(
        instance_id=instance_id,
        mode=args.mode,
        qps=args.qps,
        concurrency=args.concurrency,
        retry=RetryPolicy(max_attempts=args.max_attempts),
        outage_timeout=args.outage_timeout,
        **given,
        **_sharing(args),
    )


def _sharing(args: argparse.Namespace) -> dict[str, Any]:
    """``shard`` and ``limiter`` from their options (the library checks them)."""
    from fleetscan.engine import LimiterSettings
    from fleetscan.redis_pacer import DEFAULT_TIMEOUT_S
    from fleetscan.shard import DEFAULT_SEED, Shard

    if args.shard_seed is not None and args.shard is None:
        raise UsageError("--shard-seed deals the split of --shard K/N: give --shard too")
    if args.limiter is None:
        for name in ("limiter_timeout", "address_group", "limiter_account"):
            if getattr(args, name) is not None:
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option} applies to a shared limiter: give --limiter too")
    shard = (
        Shard.parse(
            args.shard, seed=args.shard_seed if args.shard_seed is not None else DEFAULT_SEED
        )
        if args.shard is not None
        else None
    )
    limiter = (
        LimiterSettings(
            url=args.limiter,
            timeout=args.limiter_timeout if args.limiter_timeout is not None else DEFAULT_TIMEOUT_S,
            address_group=args.address_group,
            account=args.limiter_account,
        )
        if args.limiter is not None
        else None
    )
    return {"shard": shard, "limiter": limiter}


def _target(args: argparse.Namespace) -> Target:
    from fleetscan.engine import Target

    return Target(
        region=args.region,
        endpoint=args.endpoint,
        profile=args.profile,
        signature=args.signature,
        attempt_timeout=args.timeout,
        ca_bundle=args.ca_bundle,
    )


@contextlib.asynccontextmanager
async def _demo_emulator(wanted: bool) -> AsyncIterator[tuple[str, Credentials] | None]:
    """With ``--emulator``: the in-process emulator's URL and its throwaway key."""
    if not wanted:
        yield None
        return
    from fleetscan.credentials import Credentials
    from fleetscan.emulator import (
        DEFAULT_ACCESS_KEY_ID,
        DEFAULT_ACCESS_KEY_SECRET,
        EmulatorConfig,
        Faults,
        run_emulator,
    )

    # The demo: the whole real path (HTTP, signing, pacing, retries) against the
    # in-process emulator, with its throwaway key and a few injected faults.
    config = EmulatorConfig(faults=Faults(error_rate=0.02, latency_ms=20.0, jitter_ms=10.0))
    demo_key = Credentials(
        access_key_id=DEFAULT_ACCESS_KEY_ID,
        access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
        source="the emulator's throwaway key",
    )
    async with run_emulator(config) as emulator:
        log.info("scanning against the embedded emulator at %s", emulator.url)
        yield emulator.url, demo_key


def _describe_output_error(error: OSError, output: str | None) -> str:
    from fleetscan.history import HistoryWriteError

    if isinstance(error, HistoryWriteError):  # --history's database, not the records
        return error.describe(output)
    where = "stdout" if output in (None, "-") else output
    name = errno.errorcode.get(error.errno or 0, "")
    why = error.strerror or str(error)
    label = f"{why} ({name})" if name else why
    return (
        f"cannot write the records to {where}: {label}; nothing more was sent, "
        "and --resume -o FILE finishes the scan"
    )


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


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
        # Removing them restored the defaults (SIGTERM: exit 143): take them back.
        for sig in handled:
            with contextlib.suppress(ValueError):
                signal.signal(sig, _interrupts)

"""Running the emulator: in the current event loop, or on a thread of its own.

::

    async with run_emulator(EmulatorConfig()) as emu:
        ...  # call emu.url; check emu.stats(), emu.fleet.is_online(...)

    with run_emulator_in_thread(EmulatorConfig(tls=True)) as emu:
        ...  # trust emu.ca_file; emu.stats() is safe from this thread

With ``tls=True`` it serves HTTPS with a throwaway certificate for 127.0.0.1,
localhost and ::1, signed by a throwaway CA whose PEM is written to ``ca_file``.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from fleetscan.emulator.app import EMULATOR, Emulator, create_app, create_sts_app
from fleetscan.emulator.config import EmulatorConfig
from fleetscan.emulator.control import EmulatorControl
from fleetscan.emulator.fleet import Fleet
from fleetscan.emulator.stats import StatsSnapshot
from fleetscan.emulator.sts import StsService

__all__ = [
    "CA_FILE_NAME",
    "RunningEmulator",
    "ThreadedEmulator",
    "run_emulator",
    "run_emulator_in_thread",
]

CA_FILE_NAME = "fleetscan-emulator-ca.pem"
# Handlers still running (injected slow answers) get this long at shutdown.
_SHUTDOWN_SECONDS = 0.5


class RunningEmulator:
    """A started emulator: where it listens and its state (use on its loop).

    ``sts_url`` is where its STS listens, None when it serves none.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        url: str,
        port: int,
        ca_file: Path | None,
        sts_url: str | None = None,
    ):
        self.emulator = emulator
        self.url = url
        self.port = port
        self.ca_file = ca_file
        self.sts_url = sts_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    @property
    def config(self) -> EmulatorConfig:
        """The configuration it started with."""
        return self.emulator.config

    @property
    def fleet(self) -> Fleet:
        """The devices: ``fleet.is_online(client_id)`` is the truth."""
        return self.emulator.fleet

    @property
    def sts(self) -> StsService:
        """Its STS: roles, fault rules, and ``stats.calls`` (raises when it has none)."""
        if self.emulator.sts is None:
            raise RuntimeError("this emulator was configured without STS")
        return self.emulator.sts

    @property
    def control(self) -> EmulatorControl:
        """Keys, limits, faults and rules to change while it runs."""
        return self.emulator.control

    def stats(self) -> StatsSnapshot:
        """The counters now."""
        return self.emulator.snapshot()

    def reset(self) -> None:
        """Zero the counters."""
        self.emulator.stats.reset()


class ThreadedEmulator(RunningEmulator):
    """A `RunningEmulator` on a background loop; `stats` and `reset` are thread-safe."""

    def __init__(
        self,
        emulator: Emulator,
        *,
        url: str,
        port: int,
        ca_file: Path | None,
        loop: asyncio.AbstractEventLoop,
        sts_url: str | None = None,
    ):
        super().__init__(emulator, url=url, port=port, ca_file=ca_file, sts_url=sts_url)
        self.loop = loop

    def stats(self) -> StatsSnapshot:
        snapshot: StatsSnapshot = self._on_loop(self.emulator.snapshot)
        return snapshot

    def reset(self) -> None:
        self._on_loop(self.emulator.stats.reset)

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10)


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on the running loop until the block ends."""
    async with _serving(config or EmulatorConfig(), clock, sleep) as (app, url, port, ca, sts):
        yield RunningEmulator(app[EMULATOR], url=url, port=port, ca_file=ca, sts_url=sts)


@contextmanager
def run_emulator_in_thread(
    config: EmulatorConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Iterator[ThreadedEmulator]:
    """Serve the emulator on a background thread with its own loop until the block ends."""
    ready = threading.Event()
    started: list[ThreadedEmulator] = []
    failed: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with _serving(config or EmulatorConfig(), clock, sleep) as (
                app,
                url,
                port,
                ca,
                sts,
            ):
                started.append(
                    ThreadedEmulator(
                        app[EMULATOR], url=url, port=port, ca_file=ca, loop=loop, sts_url=sts
                    )
                )
                ready.set()
                await stop.wait()
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            ready.set()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException:  # noqa: S110 - reported through `failed`
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="fleetscan-emulator", daemon=True)
    thread.start()
    ready.wait()
    if failed:
        thread.join()
        raise failed[0]
    try:
        yield started[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()


@asynccontextmanager
async def _serving(
    config: EmulatorConfig,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
) -> AsyncIterator[tuple[web.Application, str, int, Path | None, str | None]]:
    app = create_app(config, clock=clock, sleep=sleep)
    ssl_context, ca_file, scratch = _tls(config) if config.tls else (None, None, None)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
    # STS is its own "host", as it is for real: its own port, same address and TLS.
    sts_runner = None
    if config.sts is not None:
        sts_app = create_sts_app(app[EMULATOR])
        sts_runner = web.AppRunner(sts_app, access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
        await site.start()
        port = int(runner.addresses[0][1])
        sts_url = None
        if sts_runner is not None and config.sts is not None:
            await sts_runner.setup()
            sts_site = web.TCPSite(
                sts_runner, config.host, config.sts.port, ssl_context=ssl_context
            )
            await sts_site.start()
            sts_port = int(sts_runner.addresses[0][1])
            sts_url = _url(config.host, sts_port, tls=config.tls)
        yield app, _url(config.host, port, tls=config.tls), port, ca_file, sts_url
    finally:
        if sts_runner is not None:
            await sts_runner.cleanup()
        await runner.cleanup()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _url(host: str, port: int, *, tls: bool) -> str:
    # A wildcard bind is reachable on loopback, which the certificate also names.
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def _tls(config: EmulatorConfig) -> tuple[ssl.SSLContext, Path, Path | None]:
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "serving TLS needs the trustme package: pip install fleetscan[tls]"
        ) from None
    ca = trustme.CA(organization_name="fleetscan emulator (throwaway)")
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    scratch = None
    folder = config.tls_dir
    if folder is None:
        folder = scratch = Path(tempfile.mkdtemp(prefix="fleetscan-emulator-"))
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = folder / CA_FILE_NAME
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file, scratch

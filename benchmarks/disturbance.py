"""Disturbances for rate benchmarks: a loopback jitter proxy and a CPU hog.

::

    python benchmarks/disturbance.py proxy --target 127.0.0.1:8080 [--max-delay-ms 40]
    python benchmarks/disturbance.py hog [--processes 2] [--cpu 0]

    with JitterProxy("http://127.0.0.1:8080/") as proxy:   # a child process
        ...  # point the client at proxy.url
    with CpuHog(processes=1, cpus={0}):                     # child processes
        ...

The proxy forwards TCP, delaying each chunk the client sends (a request) by a random
0..``max_delay`` seconds, in order per connection (a chunk never overtakes the one
before it), as an ordinary network delays packets. Answers go back undelayed. Its
upstream connection leaves from the address the client came from, so the server
still sees each source address as its own. It listens on loopback and forwards only
to a loopback target.

The hog is ``processes`` busy loops at normal priority, optionally pinned to ``cpus``
(Linux), so a scan pinned there shares its core with them: its event loop is
descheduled for slices of the scheduler's period, as on a busy host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = ["CpuHog", "JitterProxy", "pin", "serve_proxy"]

HERE = Path(__file__).resolve().parent
START_SECONDS = 20.0
STOP_SECONDS = 10.0
READ_SIZE = 65536


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def pin(pid: int, cpus: Iterable[int] | None) -> None:
    """Pin ``pid`` to ``cpus`` (Linux; nothing elsewhere or for None)."""
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, set(cpus))


# --- the proxy --------------------------------------------------------------------------


async def serve_proxy(
    target_host: str,
    target_port: int,
    *,
    max_delay: float,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: asyncio.Future[int] | None = None,
    lateness: list[float] | None = None,
) -> None:
    """Serve the jitter proxy until cancelled; ``ready`` gets the port it listens on.

    ``lateness`` (if given) gets, per chunk, how late it was written after it was due:
    the proxy's own jitter on top of the one it adds, on a busy machine.
    """
    if not (_loopback(target_host) and _loopback(host)):
        raise ValueError("the jitter proxy serves and forwards on loopback only")
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()

    async def delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each chunk is due a random delay after it arrived, never before the chunk
        # ahead of it: the queue holds (due time, bytes) in arrival order.
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if lateness is not None:
                    lateness.append(loop.time() - due)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        last = 0.0
        try:
            while data := await reader.read(READ_SIZE):
                last = max(last, loop.time() + rng.uniform(0.0, max_delay))
                queue.put_nowait((last, data))
        finally:
            queue.put_nowait(None)
            await sender
            writer.close()

    async def straight(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def connection(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        peer = client_writer.get_extra_info("peername")
        try:
            up_reader, up_writer = await asyncio.open_connection(
                target_host, target_port, local_addr=(peer[0], 0)
            )
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                delayed(client_reader, up_writer), straight(up_reader, client_writer)
            )
        except (ConnectionError, OSError):
            pass
        finally:
            up_writer.close()
            client_writer.close()

    server = await asyncio.start_server(connection, host, port)
    async with server:
        if ready is not None:
            ready.set_result(server.sockets[0].getsockname()[1])
        await server.serve_forever()


class JitterProxy:
    """The jitter proxy in a child process in front of ``target_url``, for a ``with``."""

    def __init__(
        self,
        target_url: str,
        *,
        max_delay_ms: float = 40.0,
        seed: int = 0,
        cpus: Iterable[int] | None = None,
    ) -> None:
        parts = urlsplit(target_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"the target needs a host and a port: {target_url}")
        self.target = f"{parts.hostname}:{parts.port}"
        self.scheme = parts.scheme
        self.max_delay_ms = max_delay_ms
        self.seed = seed
        self.cpus = cpus
        self.url = ""
        # Once stopped: the most a chunk was written after it was due, in ms.
        self.max_late_ms: float | None = None
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        args = [
            sys.executable,
            str(HERE / "disturbance.py"),
            "proxy",
            "--target",
            self.target,
            "--max-delay-ms",
            str(self.max_delay_ms),
            "--seed",
            str(self.seed),
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        try:
            pin(self._process.pid, self.cpus)
            assert self._process.stdout is not None
            deadline = time.monotonic() + START_SECONDS
            line = self._process.stdout.readline()
            if not line.startswith("url: ") or time.monotonic() > deadline:
                raise RuntimeError(f"the jitter proxy did not start: {line!r}")
            port = int(line.strip().rstrip("/").rsplit(":", 1)[1])
            self.url = f"{self.scheme}://127.0.0.1:{port}/"
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is not None:
            _stop(process)
            if process.stdout is not None:
                for line in process.stdout.read().splitlines():
                    name, _, value = line.partition(": ")
                    if name == "max_late_ms":
                        self.max_late_ms = float(value)
                process.stdout.close()


# --- the hog ----------------------------------------------------------------------------


class CpuHog:
    """``processes`` busy loops in child processes (pinned to ``cpus``) for a ``with``."""

    def __init__(self, processes: int = 1, *, cpus: Iterable[int] | None = None) -> None:
        self.processes = processes
        self.cpus = None if cpus is None else set(cpus)
        self._children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        code = "while True: pass"
        try:
            for _ in range(self.processes):
                child = subprocess.Popen([sys.executable, "-c", code])
                self._children.append(child)
                pin(child.pid, self.cpus)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        children, self._children = self._children, []
        for child in children:
            _stop(child)


def _stop(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it will not go; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- as a command -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="a jitter proxy in front of a loopback server")
    proxy.add_argument("--target", required=True, help="HOST:PORT on loopback")
    proxy.add_argument("--max-delay-ms", type=float, default=40.0)
    proxy.add_argument("--seed", type=int, default=0)
    proxy.add_argument("--port", type=int, default=0)
    hog = sub.add_parser("hog", help="busy loops until SIGTERM or Ctrl-C")
    hog.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    hog.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "hog":
        with CpuHog(args.processes, cpus=args.cpu):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    host, _, port = args.target.rpartition(":")
    return _run_proxy(host, int(port), args.max_delay_ms / 1000, args.seed, args.port)


def _run_proxy(host: str, port: int, max_delay: float, seed: int, listen: int) -> int:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        lateness: list[float] = []
        task = asyncio.create_task(
            serve_proxy(
                host,
                port,
                max_delay=max_delay,
                seed=seed,
                port=listen,
                ready=ready,
                lateness=lateness,
            )
        )
        done, _ = await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # it failed to start: raise why
        print(f"url: http://127.0.0.1:{ready.result()}/", flush=True)
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        print(f"max_late_ms: {max(lateness, default=0.0) * 1000:.1f}", flush=True)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The emulator in a child process on loopback, so its CPU is not the client's.

::

    with EmulatorProcess("--qps-single", "300", "--latency-ms", "30") as emu:
        ...  # scan emu.url; emu.stats() reads its counters; emu.cpu_seconds()

It runs ``python -m fleetscan emulator`` from this checkout, reads the ``name: value``
lines it prints, and stops it with SIGTERM (SIGKILL if it will not go) on exit.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
# The emulator's documented throwaway key: it opens nothing but a local emulator.
ACCESS_KEY_ID = "FLEETSCAN_DEMO_KEY"
ACCESS_KEY_SECRET = "fleetscan-demo-secret-not-a-real-key"
INSTANCE_ID = "mqtt-cn-emulator"
REGION = "cn-hangzhou"
START_SECONDS = 20.0
STOP_SECONDS = 10.0
# Variables that could send a child's HTTP anywhere but loopback, or lend it real keys.
_SCRUBBED = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


# The emulator with the cyclic garbage collector off (after a last collection): its
# pauses would stamp requests that waited in the socket late and bunched, and count
# them in one second (the instrument's jitter, not the client's).
_GC_OFF = (
    "import gc, sys; from fleetscan.cli import main; gc.collect(); gc.freeze(); gc.disable(); "
    "sys.exit(main(sys.argv[1:]))"
)


def child_env(*, credentials: bool = False) -> dict[str, str]:
    """The environment for a child: this checkout first, no proxies, no real keys.

    With ``credentials`` it holds the emulator's throwaway key, as a user's
    ``ALIBABA_CLOUD_ACCESS_KEY_ID``/``_SECRET`` would be.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SCRUBBED and not k.startswith("ALIBABA_CLOUD_")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # The credentials chain ends at the ECS metadata address: never go there.
    env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    if credentials:
        env["ALIBABA_CLOUD_ACCESS_KEY_ID"] = ACCESS_KEY_ID
        env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = ACCESS_KEY_SECRET
    return env


class EmulatorProcess:
    """``fleetscan emulator`` with ``flags``, in a child process, for one ``with`` block."""

    def __init__(self, *flags: str, tls: bool = False, gc_off: bool = False) -> None:
        self.flags = flags
        self.tls = tls
        self.gc_off = gc_off
        self.url = ""
        self.port = 0
        self.ca_file: str | None = None
        self._process: subprocess.Popen[str] | None = None
        # Holds the CA file (with --tls) and the emulator's stderr.
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Self:
        self._scratch = tempfile.TemporaryDirectory(prefix="fleetscan-bench-emu-")
        command = ["-m", "fleetscan"]
        if self.gc_off:
            command = ["-c", _GC_OFF]
        args = [sys.executable, *command, "emulator", "--host", "127.0.0.1", "--port", "0"]
        if self.tls:
            args += ["--tls", "--tls-dir", self._scratch.name]
        args += list(self.flags)
        with open(Path(self._scratch.name) / "stderr.txt", "w") as err:
            self._process = subprocess.Popen(
                args, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True
            )
        try:
            self._read_banner()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_banner(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        last = "ca_file" if self.tls else "access_key_id"
        deadline = time.monotonic() + START_SECONDS
        fields: dict[str, str] = {}
        while last not in fields:
            line = self._process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start: {self._stderr()}")
            name, _, value = line.strip().partition(": ")
            fields[name] = value
        self.url = fields["url"].rstrip("/") + "/"  # printed without the slash
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        self.ca_file = fields.get("ca_file")

    def _stderr(self) -> str:
        if self._scratch is None:
            return ""
        path = Path(self._scratch.name) / "stderr.txt"
        return path.read_text(errors="replace").strip() if path.exists() else ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # --- its counters -------------------------------------------------------------------

    def _request(self, path: str, method: str = "GET") -> Any:
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        request = urllib.request.Request(self.url + path, method=method)
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        with urllib.request.build_opener(*handlers).open(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self, *, client_ids: bool = False) -> dict[str, Any]:
        """``GET /_emulator/stats``, the per-ID counts only with ``client_ids``."""
        data: dict[str, Any] = self._request(f"_emulator/stats?client_ids={int(client_ids)}")
        return data

    def reset(self) -> None:
        """Zero its counters."""
        self._request("_emulator/reset", method="POST")

    def rss_mib(self) -> float | None:
        """The emulator's resident memory now (Linux; None elsewhere)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the emulator has used so far (Linux; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # Fields 14 and 15 of stat(5), counted from after the command name's ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

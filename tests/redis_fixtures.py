"""A real redis-server for the shared pacer's tests, on a free loopback port.

Debian's ``redis-server`` (``apt-get install redis-server``; ``.ci/run`` installs it).
Without it the tests that need it skip, saying so, except under ``CI=true``, where they
fail: CI must prove the guarantees, not skip them. The server keeps nothing on disk
(``save ""``, ``appendonly no``), so a kill and a restart on the same port lose every
key, as a real restart without persistence does. Its configuration (password
included) goes in a file, never on a command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_binary", "redis_server"]

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    """The redis-server to use; skips (or, under CI=true, fails) when there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "needs redis-server on PATH (Debian/Ubuntu: apt-get install redis-server; "
            ".ci/run installs it)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return binary


class RedisServer:
    """One redis-server process on 127.0.0.1:``port``; ``kill`` and ``start`` again."""

    def __init__(
        self,
        binary: str,
        folder: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        self.binary = binary
        self.folder = folder
        self.port = port or free_port()
        self.password = password
        # With tls, TLS only, with a certificate for 127.0.0.1 from a throwaway CA.
        self.ca_file: Path | None = None
        if tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            self.ca_file = folder / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
            cert.private_key_pem.write_to_path(str(folder / "key.pem"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.ca_file else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        config = self.folder / "redis.conf"
        lines = [
            *(
                (
                    "port 0",
                    f"tls-port {self.port}",
                    f"tls-cert-file {self.folder / 'cert.pem'}",
                    f"tls-key-file {self.folder / 'key.pem'}",
                    f"tls-ca-cert-file {self.ca_file}",
                    "tls-auth-clients no",
                )
                if self.ca_file
                else (f"port {self.port}",)
            ),
            "bind 127.0.0.1",
            'save ""',
            "appendonly no",
            f"dir {self.folder}",
            'logfile ""',
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        self._process = subprocess.Popen(
            [self.binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start ({self._process.returncode})")
            if self._answers():
                return
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer within 10 s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                if self.ca_file:
                    context = ssl.create_default_context(cafile=str(self.ca_file))
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                        sock.sendall(b"PING\r\n")
                        reply = sock.recv(64)
                else:
                    raw.sendall(b"PING\r\n")
                    reply = raw.recv(64)
        except OSError:
            return False
        # +PONG, or -NOAUTH when it wants a password: either way it is serving.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL: every key is lost, as in a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(redis_binary(), folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()

"""Every log line of a scan, at DEBUG, for tests that check no secret is ever logged:
the `logs` fixture (imported by conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from fleetscan import cli

__all__ = ["Everything", "logs"]


class Everything(logging.Handler):
    """Every record of every logger, formatted with its exception, if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Everything]:
    handler = Everything()
    loggers = [logging.getLogger(), logging.getLogger("fleetscan")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    configure = cli._configure_logging

    def configure_then_debug(*, quiet: bool) -> None:
        # The CLI sets its logger's level; keep DEBUG so every line is rendered.
        configure(quiet=quiet)
        logging.getLogger("fleetscan").setLevel(logging.DEBUG)

    monkeypatch.setattr(cli, "_configure_logging", configure_then_debug)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)

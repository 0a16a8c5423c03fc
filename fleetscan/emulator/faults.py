"""Injected faults and latency, from rules first and then from seeded random draws.

Every request that passed authentication, throttling and validation gets a `Fate`:
an error to answer instead of the status, a dropped connection, and a delay. Draws
come from one ``random.Random(seed)``, so the same requests in the same order meet
the same faults on every run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fleetscan.emulator.answers import Refusal
from fleetscan.emulator.config import DROP
from fleetscan.emulator.control import EmulatorControl

__all__ = ["NO_FATE", "Fate", "FaultInjector"]


class Fate:
    """What happens to one request: ``error`` (or None), ``drop``, ``delay`` seconds."""

    __slots__ = ("delay", "drop", "error")

    def __init__(self, error: Refusal | None = None, drop: bool = False, delay: float = 0.0):
        self.error = error
        self.drop = drop
        self.delay = delay

    @property
    def faulted(self) -> bool:
        """True when the request fails (an error or a drop)."""
        return self.drop or self.error is not None


NO_FATE = Fate()


class FaultInjector:
    """Decides each request's `Fate` from the rules and rates in `EmulatorControl`."""

    __slots__ = ("_control", "_rng")

    def __init__(self, control: EmulatorControl, *, seed: int) -> None:
        self._control = control
        # The one source of randomness for faults and latency.
        self._rng = random.Random(f"faults:{seed}")

    def fate(self, action: str, client_ids: Sequence[str]) -> Fate:
        """The `Fate` of an attempt of ``action`` for ``client_ids``."""
        for armed in self._control.rules:
            rule = armed.rule
            if (
                armed.remaining > 0
                and (rule.action is None or rule.action == action)
                and (rule.client_id is None or rule.client_id in client_ids)
            ):
                armed.remaining -= 1
                delay = rule.delay_ms / 1000 + self._latency()
                if rule.code == DROP:
                    return Fate(drop=True, delay=delay)
                refusal = Refusal(rule.code, status=rule.status, retry_after_ms=rule.retry_after_ms)
                return Fate(refusal, delay=delay)
        f = self._control.faults
        error: Refusal | None = None
        drop = False
        rates = f.drop_rate + f.error_rate + f.unavailable_rate + f.overflow_rate
        if rates > 0:
            u = self._rng.random()
            if u < f.drop_rate:
                drop = True
            elif (u := u - f.drop_rate) < f.error_rate:
                error = Refusal("InternalError")
            elif (u := u - f.error_rate) < f.unavailable_rate:
                error = Refusal("ServiceUnavailable")
            elif u - f.unavailable_rate < f.overflow_rate:
                hint = self._rng.random() < f.overflow_retry_after_share
                error = Refusal(
                    "SystemOverFlow", retry_after_ms=f.overflow_retry_after_ms if hint else None
                )
        delay = self._latency()
        if error is None and not drop and delay == 0.0:
            return NO_FATE
        return Fate(error, drop, delay)

    def _latency(self) -> float:
        f = self._control.faults
        ms = f.latency_ms
        if f.jitter_ms > 0:
            ms += self._rng.random() * f.jitter_ms
        if f.slow_rate > 0 and self._rng.random() < f.slow_rate:
            ms += f.slow_ms
        return ms / 1000

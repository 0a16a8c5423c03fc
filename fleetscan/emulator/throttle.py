"""The service's rate limits: per account and action, and per source IP.

Both count on every sliding one-second window (`SlidingWindow`): the docs do not
define a "second", so the emulator takes the strictest reading.

- Account: at most ``qps_single``/``qps_batch`` *admitted* requests of an action in
  any window; one more is answered ``SystemOverFlow`` (403) and not admitted.
- Source IP: every request from one IP counts, of all APIs together by default
  (``ip_limit_scope="all"``, the safe reading of the docs) or of each API on its own
  (``"action"``); the one that takes the window past ``ip_limit`` gets the IP blocked
  for ``ip_block_seconds``, for every action. Blocked requests are answered
  ``Forbidden.SourceIpBlocked`` (403). The real code is undocumented ("the IP
  address is blocked"); this one is the emulator's choice.
"""

from __future__ import annotations

import math

from fleetscan.emulator.answers import Refusal
from fleetscan.emulator.config import ACTIONS
from fleetscan.emulator.control import EmulatorControl, IpBlock
from fleetscan.window import SlidingWindow

__all__ = ["ALL_APIS", "IP_BLOCKED", "Throttle"]

IP_BLOCKED = "Forbidden.SourceIpBlocked"
# The per-IP window's key, and the block's wording, when every API counts together.
ALL_APIS = "all APIs together"


class Throttle:
    """Admits or refuses requests by the limits in `EmulatorControl`."""

    __slots__ = ("_accounts", "_control", "_ips")

    def __init__(self, control: EmulatorControl) -> None:
        self._control = control
        # (account, action) -> admitted requests.
        self._accounts: dict[tuple[str, str], SlidingWindow] = {}
        # (source IP, action or ALL_APIS) -> every request.
        self._ips: dict[tuple[str, str], SlidingWindow] = {}

    def check_ip(self, ip: str, action: str, now: float) -> None:
        """Count a request from ``ip``; raise `Refusal` when the IP is or gets blocked."""
        control = self._control
        block = control.blocks.get(ip)
        if block is not None:
            if now < block.until:
                raise _blocked(ip, block, now)
            control.blocks.pop(ip, None)
        limit = control.limits.ip_limit
        if limit <= 0 or action not in ACTIONS:
            return
        scope = action if control.limits.ip_limit_scope == "action" else ALL_APIS
        window = self._ips.get((ip, scope))
        if window is None:
            window = self._ips[ip, scope] = SlidingWindow()
        if window.add(now) > limit:
            seconds = control.limits.ip_block_seconds
            block = IpBlock(until=now + seconds, seconds=seconds, limit=limit, action=scope)
            control.blocks[ip] = block
            raise _blocked(ip, block, now)

    def admit(self, account: str, action: str, now: float) -> None:
        """Admit one request of ``account``, or raise ``SystemOverFlow``."""
        limits = self._control.limits
        window = self._accounts.get((account, action))
        if window is None:
            window = self._accounts[account, action] = SlidingWindow()
        if window.count(now) >= limits.for_action(action):
            raise Refusal("SystemOverFlow", retry_after_ms=limits.retry_after_ms or None)
        window.add(now)


def _blocked(ip: str, block: IpBlock, now: float) -> Refusal:
    remaining = max(1, math.ceil(block.until - now))
    return Refusal(
        IP_BLOCKED,
        f"The source IP {ip} was blocked for {block.seconds:g} seconds for exceeding "
        f"{block.limit} calls per second of {block.action} from one IP address; "
        f"the block ends in {remaining} seconds.",
    )

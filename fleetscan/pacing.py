"""Pacing with a margin, held at the wire: an address budget and per-API account pacers.

Two kinds of limit bind a scan (onsmqtt-api.md section 2). Over 300 calls/s from one
source address, all APIs together, the address is blocked: the audit is lost. Over an
API's account limit (500 single, 100 batch) a call is throttled: it costs a retry. So
every call holds a permit from two pacers: its address's `AddressBudget` (all APIs
together) and its API's `AccountPacer` (shared by every address); `CompositePacer`
takes both, in that order.

**The margin.** The server counts arrivals, not our sends. A network that delays each
call by 0..J seconds makes the arrivals of any one-second window come from sends
spread over at most 1 + J seconds. A pacer built like `fleetscan.limiter.RateLimiter`
(capacity B, leak r) hands out fewer than ``B + r*W`` permits in any window of W, so
the arrivals of any second number fewer than ``B + r*(1 + J)`` (`worst_second`).
With J = `ARRIVAL_JITTER_S` (40 ms, the jitter the issue measured 305 calls/s under):

- address, budget 270/s: r = 267.8. With the limiter's own B = 2.08, at most 280
  arrivals in any second, under the block at 300 by 20 (the block holding for any J
  up to 116 ms, `jitter_allowance`). The old single default, 300/s with 4 ms of
  allowance, reached 305 at 40 ms. The address's bucket holds more, `CATCH_UP_S`
  (20 ms) of catch-up: B = 6.4, at most 284 arrivals in any second at 40 ms (the
  bucket alone holds the block for J up to 100 ms), and its guard (below) holds the
  budget in every second and the block under 40 ms whatever the bucket lets out.
  Without it a scan waiting for a CPU (a busy machine) lost every slot it woke up
  more than 4 ms late for: 0.70 of the budget beside a CPU hog. (50 ms, B = 14.5,
  left 70 ms: a jitter proxy itself 89 ms late got the address blocked.)
- account: the largest rate whose worst second under 40 ms stays at the limit
  (`pace_under`) is 482/s single (500 limit) and 96/s batch (100 limit): the
  defaults, `ACCOUNT_PACE`. Just under a throttle, since a breach costs only a retry;
  1/(1 + J) is the price of 40 ms of jitter on any ceiling. These buckets keep the
  limiter's 4 ms of credit: 4% under the limit leaves no room for catch-up bursts.

**At the wire.** The buckets bound the permits they hand out; what leaves the machine
can still bunch: calls held back between their permit and the wire (a slow token
refresh that holds the workers, a busy CPU, a connection being opened) go out together
once released, and 0.2 s of calls at 270/s bunched into one instant put 324 into one
second. So each pacer also keeps the times of the calls it let go, a `SendGuard`, and
checks them right before a call goes: a call that would put more than the budget into
any sliding second, or more than the limit into any 1 + J seconds (so no arrival second
holds more than the limit under up to J of jitter, however the calls bunched), waits.
The guard decides on the loop's clock at the moment it checks, never from a time
computed earlier, so a late wake-up cannot let two calls through for one slot; the
check and the count are one synchronous step (no lock: see `admit_all`), so the
bound holds after every count however many calls check in one loop iteration. A
`CompositePacer` checks the guards of all its pacers together, after all permits, and
counts the call in each at that one moment. The address guard can move closer still:
with `AddressBudget.trace_config` on that address's aiohttp session it runs right
before aiohttp writes the request, after the connection is taken from the pool or
opened, so signing and the pool are behind it too. What no guard sees is a call
delayed after its check; from the hook to the write that is a few synchronous steps.

**AIMD.** Throttling is the account's signal: ``on_throttled``/``on_success`` move the
API's `AccountPacer` (a `RateLimiter`) and leave the address budget alone, whose limit
is a block that gives no warning to adapt to.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import aiohttp

from fleetscan.errors import UsageError
from fleetscan.limiter import RateLimiter, bucket_shape
from fleetscan.limits import IP_SAFE_QPS, MAX_QPS, Mode
from fleetscan.pacer import Pacer

__all__ = [
    "ACCOUNT_PACE",
    "ADDRESS_LIMIT",
    "ARRIVAL_JITTER_S",
    "CATCH_UP_S",
    "DEFAULT_ADDRESS_BUDGET",
    "AccountPacer",
    "AddressBudget",
    "CompositePacer",
    "SendGuard",
    "admit_all",
    "check_address_budget",
    "jitter_allowance",
    "lane_rates",
    "pace_under",
    "worst_second",
]

# Calls/s from one source address, all APIs together, past which the address is blocked.
ADDRESS_LIMIT = IP_SAFE_QPS
# The address budget: 10% under the block.
DEFAULT_ADDRESS_BUDGET = 270
# The arrival jitter the margins are sized for: a random 0-40 ms on the way.
ARRIVAL_JITTER_S = 0.040
# Catch-up credit of an address budget's bucket: a wake-up this late (a busy loop, a
# CPU shared with other work) loses no slot. Its guard bounds what the catch-up sends.
CATCH_UP_S = 0.020


def worst_second(rate: float, jitter: float = ARRIVAL_JITTER_S) -> int:
    """The most arrivals in any second from a `RateLimiter` at ``rate``, if each call
    is delayed by 0..``jitter`` seconds on the way."""
    capacity, leak = bucket_shape(rate, rate)
    # Strictly fewer than B + r*W; rounded first so float noise cannot cost a call.
    return math.ceil(round(capacity + leak * (1.0 + jitter), 9)) - 1


def pace_under(limit: int, jitter: float = ARRIVAL_JITTER_S) -> int:
    """The largest whole rate whose `worst_second` under ``jitter`` is within ``limit``."""
    rate = limit
    while rate > 1 and worst_second(rate, jitter) > limit:
        rate -= 1
    return rate


def jitter_allowance(rate: float, limit: int = ADDRESS_LIMIT) -> float:
    """The most arrival jitter (seconds) under which a pacer at ``rate`` keeps every
    second within ``limit``."""
    capacity, leak = bucket_shape(rate, rate)
    return (limit + 1 - capacity) / leak - 1.0


# Per API: the default pace, just under the account limit (see the module docstring).
ACCOUNT_PACE: dict[Mode, int] = {mode: pace_under(limit) for mode, limit in MAX_QPS.items()}


def check_address_budget(budget: float) -> float:
    """``budget`` if it is a usable address budget, else a `UsageError` saying why."""
    if not 0 < budget <= ADDRESS_LIMIT:
        raise UsageError(
            f"--address-budget must be above 0 and at most {ADDRESS_LIMIT} calls/s: past "
            f"{ADDRESS_LIMIT} calls/s from one address, all APIs together, Alibaba blocks "
            f"the address (default {DEFAULT_ADDRESS_BUDGET}); use more source addresses "
            f"for more, not {budget:g}"
        )
    return float(budget)


def lane_rates(
    addresses: int = 1, budget: float = DEFAULT_ADDRESS_BUDGET, *, batch: float | None = None
) -> dict[Mode, float]:
    """The account paces of a batch lane and a single lane sharing ``addresses`` address
    budgets: batch at ``batch`` (default its pace), single at what the budgets leave (at
    most its pace).

    A lane paced above what its addresses leave does not get more: its calls queue on
    the address (first come, first served) ahead of the other lane's, which starves.
    One address: 96 batch + 174 single calls/s = 1,134 IDs/s; two: 96 + 444; three and
    more: 96 + 482, the account's paces.
    """
    if addresses < 1:
        raise ValueError(f"at least one address, not {addresses}")
    total = addresses * check_address_budget(budget)
    batch = min(float(ACCOUNT_PACE["batch"] if batch is None else batch), total)
    return {"batch": batch, "single": min(float(ACCOUNT_PACE["single"]), total - batch)}


class SendGuard:
    """Times of the calls let go; lets another go only within every rule.

    A rule ``(count, seconds)`` means: at most ``count`` calls in any half-open
    window of ``seconds``. ``await guard.admit()`` right before a call goes out.
    """

    __slots__ = ("_rules", "_sent")

    def __init__(self, rules: Sequence[tuple[int, float]]) -> None:
        if not rules or any(count < 1 or seconds <= 0 for count, seconds in rules):
            raise ValueError(f"each rule needs a count >= 1 and seconds > 0, not {rules!r}")
        self._rules = tuple((int(count), float(seconds)) for count, seconds in rules)
        # Send times of the last max(count) calls, oldest first: all any rule looks at.
        self._sent: deque[float] = deque(maxlen=max(count for count, _ in self._rules))

    @property
    def rules(self) -> tuple[tuple[int, float], ...]:
        return self._rules

    def wait(self, now: float) -> float:
        """Seconds until a call may go, if asked at ``now`` (0.0: at once)."""
        sent = self._sent
        longest = 0.0
        for count, seconds in self._rules:
            if len(sent) >= count:
                # The count-th most recent call must have left the window by now. (The
                # gap, not sent + seconds: the same float a window's check computes.)
                gap = now - sent[-count]
                if gap < seconds:
                    longest = max(longest, seconds - gap)
        return longest

    def record(self, now: float) -> None:
        """A call goes out at ``now``."""
        self._sent.append(now)

    def sent(self) -> list[float]:
        """The send times kept (the most recent ``max(count)``), oldest first."""
        return list(self._sent)

    async def admit(self) -> None:
        """Wait until a call may go within every rule, and count it as gone."""
        await admit_all((self,))

    def __repr__(self) -> str:
        return f"SendGuard(rules={self._rules!r})"


class AddressBudget:
    """The pacer of one source address: every call from it, all APIs together.

    ``budget`` calls/s (default 270, at most `ADDRESS_LIMIT`): a bucket hands out
    permits at it, and a `SendGuard` keeps what goes out within ``budget`` in any
    second and within the limit in any ``1 + jitter`` seconds. Not adaptive: a
    throttled answer is the account's limit, not the address's.
    """

    __slots__ = ("_at_wire", "_bucket", "_guard", "address", "budget")

    def __init__(
        self,
        budget: float = DEFAULT_ADDRESS_BUDGET,
        *,
        address: str | None = None,
        limit: int = ADDRESS_LIMIT,
        jitter: float = ARRIVAL_JITTER_S,
    ) -> None:
        if not 0 < budget <= limit:
            raise ValueError(f"an address budget must be within (0, {limit}], not {budget!r}")
        self.budget = float(budget)
        self.address = address
        self._bucket = RateLimiter(self.budget, adaptive=False, credit=CATCH_UP_S)
        self._guard = SendGuard([(max(1, math.floor(self.budget)), 1.0), (limit, 1.0 + jitter)])
        # True once the guard runs in aiohttp's hook (trace_config), not in acquire.
        self._at_wire = False

    @property
    def guard(self) -> SendGuard:
        return self._guard

    @property
    def guard_at_wire(self) -> bool:
        """Whether the guard runs in aiohttp's hook (see `trace_config`)."""
        return self._at_wire

    async def permit(self) -> None:
        """Wait for the bucket's permit only (a `CompositePacer` guards after all)."""
        await self._bucket.acquire()

    async def acquire(self) -> None:
        """Wait for the address's permit (and its guard, unless that runs at the wire)."""
        await self._bucket.acquire()
        if not self._at_wire:
            await self._guard.admit()

    def on_throttled(self) -> None:
        """Throttling is the account's signal: the address budget stays."""

    def on_success(self) -> None:
        """Nothing to raise: the budget is a ceiling, not a target that moved."""

    def trace_config(self) -> aiohttp.TraceConfig:
        """Run the guard right before aiohttp writes each request, not in ``acquire``.

        Give it to the ``ClientSession`` whose connector leaves from this address
        (``trace_configs=[budget.trace_config()]``); every request of that session
        then passes the guard once, when its connection is taken from the pool or has
        just been opened, the last step before the request is written.
        """

        async def at_wire(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: object
        ) -> None:
            await self._guard.admit()

        config = aiohttp.TraceConfig()
        config.on_connection_reuseconn.append(at_wire)
        config.on_connection_create_end.append(at_wire)
        config.freeze()
        self._at_wire = True
        return config

    def __repr__(self) -> str:
        where = f", address={self.address!r}" if self.address else ""
        return f"AddressBudget(budget={self.budget:g}{where})"


class AccountPacer:
    """The pacer of one API for the whole account, shared by every address.

    Paces at ``rate`` (default `ACCOUNT_PACE` of the mode), lowered while throttled
    (AIMD, `RateLimiter`), and guards its sends at the account ``limit`` in any
    ``1 + jitter`` seconds.
    """

    __slots__ = ("_guard", "_limiter", "mode")

    def __init__(
        self,
        mode: Mode,
        rate: float | None = None,
        *,
        limit: int | None = None,
        jitter: float = ARRIVAL_JITTER_S,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limit = MAX_QPS[mode] if limit is None else limit
        rate = ACCOUNT_PACE[mode] if rate is None else rate
        if not 0 < rate <= limit:
            raise ValueError(f"a {mode} rate must be within (0, {limit}], not {rate!r}")
        self.mode = mode
        # The limiter's own 4 ms of credit, not the address's CATCH_UP_S: a pace 4%
        # under its limit leaves no room for catch-up bursts (with 10 ms, two scans
        # through a 0-40 ms jitter proxy met 101-104 batch calls in a second).
        self._limiter = RateLimiter(rate, adaptive=adaptive, clock=clock)
        # Never binds at a rate within pace_under(limit); above it, holds the limit
        # under `jitter` whatever rate was asked for.
        self._guard = SendGuard([(limit, 1.0 + jitter)])

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def guard(self) -> SendGuard:
        return self._guard

    @property
    def current_rate(self) -> float:
        return self._limiter.current_rate

    @property
    def guard_at_wire(self) -> bool:
        return False

    async def permit(self) -> None:
        """Wait for the limiter's permit only (a `CompositePacer` guards after all)."""
        await self._limiter.acquire()

    async def acquire(self) -> None:
        await self._limiter.acquire()
        await self._guard.admit()

    def on_throttled(self) -> None:
        self._limiter.on_throttled()

    def on_success(self) -> None:
        self._limiter.on_success()

    def __repr__(self) -> str:
        return f"AccountPacer({self.mode!r}, rate={self._limiter.current_rate:g})"


class CompositePacer:
    """A permit from every pacer, then every guard at once; answers reach them all.

    Permits are taken in the order given, the address first: a call then never
    holds an API slot while it queues on its address, which would spend the
    account's rate on calls still waiting. One fixed order for every call also means
    two calls never each hold what the other waits for. Then the guards of the
    `AddressBudget`/`AccountPacer` parts (those not at the wire) are checked together
    at one moment and the call is counted in all of them then: a guard counted
    before a later wait would count a send too early. Each pacer judges an answer
    for itself (`AddressBudget` ignores throttling). Lanes sharing an address should
    be paced to fit it together (`lane_rates`).
    """

    __slots__ = ("_pacers",)

    def __init__(self, *pacers: Pacer) -> None:
        if not pacers:
            raise ValueError("a CompositePacer needs at least one pacer")
        self._pacers = pacers

    @property
    def pacers(self) -> tuple[Pacer, ...]:
        return self._pacers

    async def acquire(self) -> None:
        guards: list[SendGuard] = []
        for pacer in self._pacers:
            if isinstance(pacer, AddressBudget | AccountPacer):
                await pacer.permit()
                if not pacer.guard_at_wire:
                    guards.append(pacer.guard)
            else:
                await pacer.acquire()
        await admit_all(guards)

    def on_throttled(self) -> None:
        for pacer in self._pacers:
            pacer.on_throttled()

    def on_success(self) -> None:
        for pacer in self._pacers:
            pacer.on_success()

    def __repr__(self) -> str:
        return f"CompositePacer{self._pacers!r}"


async def admit_all(guards: Sequence[SendGuard]) -> None:
    """Wait until a call may go within every guard, then count it in all, at once.

    The check and the count happen in one synchronous step at one reading of the
    loop's clock, so no other call can come between them: each rule holds after every
    count, whatever order the waiters wake in. No lock: a lock passed from waiter to
    waiter lets one call through per loop iteration, and a busy loop iterates fewer
    times a second than the budget allows calls (at 6 ms an iteration, 166/s).
    Waiters whose slot is the same wake together; the first goes, the others sleep
    again until the next slot.
    """
    if not guards:
        return
    clock = asyncio.get_running_loop().time
    while True:
        now = clock()
        delay = max(guard.wait(now) for guard in guards)
        if delay <= 0.0:
            break
        await asyncio.sleep(delay)  # then decided on the clock anew, however late
    for guard in guards:
        guard.record(now)

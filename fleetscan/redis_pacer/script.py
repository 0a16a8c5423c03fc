"""The GCRA script that hands out permits, on the Redis server's clock, and its shape.

One value per budget key: the server time (µs) of the last slot granted from it. A
slot is the earliest server time a permit may be spent. One call of the script takes
up to ``want`` permits from every key of the call at once (the API's and the egress
address's): each permit's slot is the first time every key allows, and it counts
against all of them, or none is granted.

Why no sliding second holds more than ``qps`` spends, across all processes:

1. Redis runs scripts one at a time and each grant sets ``slot = max(now, last + T)``
   for every key, ``T`` the key's interval in force (``interval_us``). So a key's slots
   rise in the order granted, at least ``T_min`` apart (``T_min``: the interval at the
   full ``qps``; a throttled rate only widens it), and a window of length ``w`` holds at
   most ``1 + w / T_min`` of them.
2. A process spends a permit no earlier than its slot: the script returns the slot as
   an offset from the ``now`` it ran at, and the process counts that offset from when
   the answer arrived, which is later than ``now`` on any clock (causality; only the
   host's monotonic clock's *rate* is used, never its time of day). It spends it no
   later than ``SPEND_WINDOW_S`` after the slot on its own clock, or drops it. So a
   spend lies in ``[slot + l, slot + l + SPEND_WINDOW_S]``, ``l`` the answer's latency.
3. Hence the spends in a window of length ``w`` have slots in a window of length
   ``w + SPEND_WINDOW_S`` (plus the spread of ``l``, which is arrival jitter like the
   network's, inside ``JITTER_S``): at most ``1 + (w + SPEND_WINDOW_S) / T_min``. With
   ``T_min = (1 + JITTER_S + SPEND_WINDOW_S) / qps`` that is fewer than ``qps + 1`` for
   every ``w < 1 + JITTER_S``: at most ``qps`` in any sliding second, with the local
   pacer's margin for arrival jitter (``fleetscan.limiter``). The sustained rate is
   ``qps / (1 + JITTER_S + SPEND_WINDOW_S)``, 1.4% under ``qps`` (the local pacer's:
   0.8%).

Leasing is point 2 with ``want > 1``: a lease of k permits at server time ``now``
reserves the slots ``s, s + T, ..., s + (k-1)T`` and the process spends each at its
slot, not at once, so the bound above holds whatever k is. Slots are reserved at most
``HORIZON_S`` ahead of ``now`` (beyond it the script grants nothing and says how long
to wait), so a lease never holds more than ``HORIZON_S`` of a budget.

A key that is missing (first use, expiry, eviction, or a Redis restart that lost the
data) must not open a burst: permits leased before the loss are still being spent, up
to ``HORIZON_S`` after it. Every slot ever granted was at most ``HORIZON_S`` past the
``now`` of its grant, and that ``now`` came before the loss; so the lost value was at
most ``loss + HORIZON_S``, and the script takes a missing key as ``now + HORIZON_S``
(``now`` after the loss), no earlier. The history before and after the loss is then
one run of point 1: no second across the restart holds more than ``qps``. The price:
after a restart (and on first use) every process waits ``HORIZON_S + T`` for its first
permit. (A server clock stepped forward, or a fail-over to a replica that missed the
last writes, is not covered: it can let through one lease's worth of extra permits.)

The shared AIMD (one slow-down for all) lives in a hash per API key: the share of
``qps`` in force, the server times of the last cut and raise, and the answers of the
current and the previous ``STEP_S`` of server time, which every process adds its own
to with each call. The rules are the local pacer's (``fleetscan.limiter``): a cut by
``DECREASE_FACTOR`` at most once per ``STEP_S`` when throttled answers are more than
``NOISE_SHARE`` of the window's; a raise by ``INCREASE_SHARE`` after a clean step.
"""

from __future__ import annotations

import math

from fleetscan.limiter import (
    DECREASE_FACTOR,
    INCREASE_SHARE,
    JITTER_S,
    MIN_RATE,
    MIN_RATE_SHARE,
    NOISE_SHARE,
    STEP_S,
)

__all__ = [
    "AIMD_TTL_MS",
    "HORIZON_S",
    "KEY_TTL_MS",
    "SCRIPT",
    "SPEND_WINDOW_S",
    "floor_share",
    "interval_us",
    "script_args",
]

# A permit the process cannot spend within this long after its slot (its own clock)
# is dropped: the local pacer's credit for a late wake-up (LATENESS_S), as a spend
# window. Wider than it: a dropped permit loses a whole slot, where the local bucket
# loses only the lateness beyond its credit. On a loaded 2-core machine (load 8),
# 4 ms dropped 5% of the permits at 500/s, 10 ms 0.7%; each ms costs 0.1% of the
# sustained rate (benchmarks/bench_redis_pacer.py).
SPEND_WINDOW_S = 0.010
# How far ahead of the server's now a slot may be reserved. It bounds a lease, the
# queue of processes waiting on one key, and the pause after a restart.
HORIZON_S = 0.25
# An idle budget key is forgotten after this long (its next use waits HORIZON_S);
# a cut rate is remembered for ten minutes of idleness.
KEY_TTL_MS = 60_000
AIMD_TTL_MS = 600_000


def interval_us(rate: float) -> int:
    """The spacing of permits, in µs, that keeps any sliding second at ``rate`` or less."""
    return math.ceil(1e6 * (1.0 + JITTER_S + SPEND_WINDOW_S) / rate)


def floor_share(qps: float) -> float:
    """The lowest share of ``qps`` AIMD may cut to (as ``RateLimiter``'s floor)."""
    return min(1.0, max(MIN_RATE, MIN_RATE_SHARE * qps) / qps)


def script_args(
    *,
    want: int,
    qps: float,
    adaptive: bool,
    answers: int,
    throttled: int,
    other_rates: tuple[float, ...] = (),
    reach: float = HORIZON_S,
) -> list[str]:
    """ARGV for one call: the API's budget first (``qps``, AIMD), then ``other_rates``.

    ``reach``: how far ahead of the server's now a slot may be (at most HORIZON_S);
    0 grants a permit only if it may be spent at once.
    """
    args = [
        str(want),
        str(round(min(reach, HORIZON_S) * 1e6)),
        str(round(HORIZON_S * 1e6)),
        str(KEY_TTL_MS),
        str(AIMD_TTL_MS),
        "1" if adaptive else "0",
        str(answers),
        str(throttled),
        repr(floor_share(qps)),
        str(round(STEP_S * 1e6)),
        repr(NOISE_SHARE),
        repr(DECREASE_FACTOR),
        repr(INCREASE_SHARE),
        str(interval_us(qps)),
        "1",
    ]
    for rate in other_rates:
        args += [str(interval_us(rate)), "0"]
    return args


# KEYS[1]: the API's AIMD hash; KEYS[2..]: the last slot of each budget (the API's,
# then the address's). ARGV: see script_args. Returns {now, wait, share in ppm,
# slot offsets...}, all µs (integers: Redis truncates Lua numbers to integers).
SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = tonumber(ARGV[1])
local reach = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
if reach > horizon then reach = horizon end
local ttl = tonumber(ARGV[4])
local function fmt(x) return string.format('%.0f', x) end

local share = 1
if ARGV[6] == '1' then
  local h = redis.call('HMGET', KEYS[1], 'share', 'cut', 'raised', 'window',
                       'pa', 'pt', 'ca', 'ct')
  share = tonumber(h[1]) or 1
  local never = -1e15
  local cut, raised = tonumber(h[2]) or never, tonumber(h[3]) or never
  local step = tonumber(ARGV[10])
  local window = math.floor(now / step)
  local last = tonumber(h[4]) or window
  local pa, pt = tonumber(h[5]) or 0, tonumber(h[6]) or 0
  local ca, ct = tonumber(h[7]) or 0, tonumber(h[8]) or 0
  if window == last + 1 then
    pa, pt, ca, ct = ca, ct, 0, 0
  elseif window > last + 1 then
    pa, pt, ca, ct = 0, 0, 0, 0
  end
  if window < last then window = last end
  local answers, throttled = tonumber(ARGV[7]), tonumber(ARGV[8])
  ca, ct = ca + answers, ct + throttled
  local throttling = pt + ct >= math.max(1, tonumber(ARGV[11]) * (pa + ca))
  if throttled > 0 and throttling and now - cut >= step then
    share = math.max(tonumber(ARGV[9]), share * tonumber(ARGV[12]))
    cut = now
  elseif answers > throttled and share < 1 and not throttling
      and now - math.max(cut, raised) >= step then
    share = math.min(1, share + tonumber(ARGV[13]))
    raised = now
  end
  redis.call('HSET', KEYS[1], 'share', string.format('%.6f', share), 'cut', fmt(cut),
             'raised', fmt(raised), 'window', fmt(window), 'pa', fmt(pa), 'pt', fmt(pt),
             'ca', fmt(ca), 'ct', fmt(ct))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
end

local n = #KEYS - 1
local last, interval = {}, {}
for i = 1, n do
  -- Missing: no earlier than any slot granted before the data was lost.
  last[i] = tonumber(redis.call('GET', KEYS[i + 1])) or (now + horizon)
  local base = tonumber(ARGV[12 + 2 * i])
  if ARGV[13 + 2 * i] == '1' then base = base / share end
  interval[i] = math.ceil(base)
end
local out = {now, 0, math.floor(share * 1000000 + 0.5)}
for j = 1, want do
  local s = now
  for i = 1, n do
    if last[i] + interval[i] > s then s = last[i] + interval[i] end
  end
  if s > now + reach then
    if j == 1 then out[2] = s - reach - now end
    break
  end
  out[#out + 1] = s - now
  for i = 1, n do last[i] = s end
end
for i = 1, n do
  redis.call('SET', KEYS[i + 1], fmt(last[i]), 'PX',
             math.ceil(math.max(0, last[i] - now) / 1000) + ttl)
end
return out
"""

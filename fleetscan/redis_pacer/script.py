"""The script that hands out permits, on the Redis server's clock, and its shape.

GCRA's spacing, kept on a grid: per budget key, a sorted set of the ticks (server time
in µs over the key's interval) that granted slots hold, from the current one on. A
slot is the earliest server time a permit may be spent. One call of the script takes
up to ``want`` permits from every key of the call at once (the API's, the egress
address's, and in a two-lane scan the API's share of the address): each permit's slot
is the earliest time, from now on, whose tick is free on every one of its keys, and it
takes that tick on all of them, or none is granted.

Why no sliding second holds more than ``qps`` spends, across all processes:

1. Redis runs scripts one at a time, and each grant gives its slot a tick of every
   key of the call that no slot holds yet: a key's time is cut into ticks of its
   interval ``T`` (``interval_us``, at the full ``qps``; while the shared rate is cut
   to a share of it, only that share of the ticks, evenly spread, may be taken), and a
   slot holds the tick it falls in. So a key holds at most one slot a tick, whatever
   order the slots were granted in, and a window of length ``w`` meets at most
   ``ceil(w / T) + 1`` ticks: it holds at most that many slots. (A slot may land
   between two granted earlier: a lease of a slow API, whose slots are far apart,
   holds only its own ticks of an address budget it shares with a fast one, not the
   time between them. Granted in order instead, each slot after the key's last, a
   batch lease took the address for its whole span and the single lane beside it
   starved; kept an interval from every other slot, the batch's slots cut the address's
   time into gaps a single slot fitted in only once.)
2. A process spends a permit no earlier than its slot: the script returns the slot as
   an offset from the ``now`` it ran at, and the process counts that offset from when
   the answer arrived, which is later than ``now`` on any clock (causality; only the
   host's monotonic clock's *rate* is used, never its time of day). It spends it no
   later than ``SPEND_WINDOW_S`` after the slot on its own clock, or drops it. So a
   spend lies in ``[slot + l, slot + l + SPEND_WINDOW_S]``, ``l`` the answer's latency.
3. Hence the spends in a window of length 1 have slots in a window of length
   ``W = 1 + SPEND_WINDOW_S`` (plus the spread of ``l``, which is arrival jitter like
   the network's, inside ``JITTER_S``): at most ``ceil(W / T) + 1`` of them. With
   ``T = (1 + JITTER_S + SPEND_WINDOW_S) / (qps - 1)`` that is at most ``qps`` in any
   sliding second, with the local pacer's margin for arrival jitter
   (``fleetscan.limiter``). The sustained rate is ``(qps - 1) / (1 + JITTER_S +
   SPEND_WINDOW_S)``: 94.3 calls/s at 100, 90.5 at the batch pace of 96 a scan gives
   it by default (`fleetscan.engine.pacers.shared_rates` says why).

Leasing is point 2 with ``want > 1``: a lease of k permits at server time ``now``
reserves k slots, each placed as in point 1, and the process spends each at its slot,
not at once, so the bound above holds whatever k is. Slots are reserved at most
``HORIZON_S`` ahead of ``now`` (beyond it the script grants nothing and says how long
to wait), so a lease never holds more than ``HORIZON_S`` of a budget.

A key that is missing (first use, expiry, eviction, or a Redis restart that lost the
data) must not open a burst: permits leased before the loss are still being spent, up
to ``HORIZON_S`` after it. Every slot ever granted was at most ``HORIZON_S`` past the
``now`` of its grant, and that ``now`` came before the loss; so every lost slot was at
most ``loss + HORIZON_S``, and the script takes a missing key as holding a slot at
``now + HORIZON_S`` (``now`` after the loss) and none may come before it (its
``floor`` member). The history before and after the loss is then
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
    "MIN_QPS",
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
# Below two a second, a tick's grid cannot hold a second to its rate (point 1).
MIN_QPS = 2
AIMD_TTL_MS = 600_000


def interval_us(rate: float) -> int:
    """A budget's tick, in µs: one slot a tick keeps any sliding second at ``rate`` or
    less (point 1 of the module docstring; ``rate`` at least `MIN_QPS`)."""
    if rate < MIN_QPS:
        raise ValueError(f"a shared budget paces at {MIN_QPS} calls/s or more, not {rate!r}")
    return math.ceil(1e6 * (1.0 + JITTER_S + SPEND_WINDOW_S) / (rate - 1))


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


# KEYS[1]: the API's AIMD hash; KEYS[2..]: each budget's taken ticks, a sorted set
# (the API's, then the address's, then the API's share of the address). ARGV: see
# script_args. Returns {now, wait, share in ppm, slot offsets...}, all µs (integers:
# Redis truncates Lua numbers to integers).
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
-- Each budget is a grid of ticks of its interval (server µs / interval): a sorted set
-- of the ticks its slots hold, and the first tick a new slot may hold.
local step, thin, first = {}, {}, {}
local latest = now
for i = 1, n do
  local key = KEYS[i + 1]
  step[i] = tonumber(ARGV[12 + 2 * i])
  thin[i] = ARGV[13 + 2 * i] == '1' and share < 1
  if redis.call('EXISTS', key) == 0 then
    -- Missing: past every tick a slot granted before the data was lost could hold.
    first[i] = math.floor((now + horizon) / step[i]) + 1
    redis.call('ZADD', key, fmt(first[i]), 'floor')
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. fmt(math.floor(now / step[i])))
    first[i] = tonumber(redis.call('ZSCORE', key, 'floor')) or 0
  end
  if first[i] * step[i] > latest then latest = first[i] * step[i] end
end
-- Whether budget i's tick k may take a slot: not before its first, not taken, and,
-- while the shared rate is cut, one of the share's evenly spread ticks.
local function open(i, k)
  if k < first[i] then return false end
  if thin[i] and math.floor(k * share) == math.floor((k - 1) * share) then return false end
  return not redis.call('ZSCORE', KEYS[i + 1], fmt(k))
end
local out = {now, 0, math.floor(share * 1000000 + 0.5)}
for j = 1, want do
  local s, moved = now, true
  while moved and s <= now + reach do
    moved = false
    for i = 1, n do
      local k = math.floor(s / step[i])
      local t = k
      while not open(i, t) do t = t + 1 end
      if t > k then s, moved = t * step[i], true end
    end
  end
  if s > now + reach then
    if j == 1 then out[2] = s - reach - now end
    break
  end
  out[#out + 1] = s - now
  for i = 1, n do
    local k = math.floor(s / step[i])
    redis.call('ZADD', KEYS[i + 1], fmt(k), fmt(k))
  end
  if s > latest then latest = s end
end
for i = 1, n do
  redis.call('PEXPIRE', KEYS[i + 1], math.ceil((latest - now) / 1000) + ttl)
end
return out
"""

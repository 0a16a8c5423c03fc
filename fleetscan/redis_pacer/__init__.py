"""Pacing shared by many processes and hosts, in Redis (the ``fleetscan[redis]`` extra).

- `script`: the GCRA script on the server's clock, and why it keeps every sliding
  second within budget across processes, leases and restarts;
- `keys`: the key of each budget (per account and API, per egress address);
- `link`: the URL, the checks at start, riding out a lost server;
- `pacer`: `RedisPacer`, with the local `RateLimiter`'s surface;
- `budget`: `SharedBudget`, which connects and makes the pacers.

Importing this package needs nothing beyond fleetscan; connecting needs ``redis``.
"""

from fleetscan.redis_pacer.budget import SharedBudget
from fleetscan.redis_pacer.link import DEFAULT_TIMEOUT_S, PASSWORD_ENV, RedisLink, parse_limiter_url
from fleetscan.redis_pacer.pacer import DEFAULT_LEASE, RedisPacer

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TIMEOUT_S",
    "PASSWORD_ENV",
    "RedisLink",
    "RedisPacer",
    "SharedBudget",
    "parse_limiter_url",
]

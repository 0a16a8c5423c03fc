"""The shared pacer against a real redis-server: every guarantee of the shared budget.

Counts are taken on the server's clock: each spent permit's slot, the server time
(``TIME``, inside the script) from which it could be spent. The script proves (see
fleetscan/redis_pacer/script.py) that bounding the slots bounds the spends; the tests
check the slots across pacers, connections and processes, and that no permit is spent
before its slot (``TIME`` read after the spend is never earlier).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import subprocess
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis_fixtures import RedisServer, free_port, redis_binary

from fleetscan.errors import LimiterLostError, LimiterUnavailableError
from fleetscan.redis_pacer import PASSWORD_ENV, RedisPacer, SharedBudget
from fleetscan.redis_pacer.script import HORIZON_S, interval_us, script_args

WORKER = Path(__file__).resolve().parent / "redis_pacer_worker.py"
SECOND_US = 1_000_000
AK = "LTAI-test-account"


def busiest_second(slots: Iterable[int]) -> int:
    """The most slots in any sliding second [t, t + 1 s) of the server's clock."""
    ordered = sorted(slots)
    return max(
        (bisect.bisect_left(ordered, t + SECOND_US) - i for i, t in enumerate(ordered)),
        default=0,
    )


def one_a_tick(slots: Iterable[int], qps: float) -> bool:
    """Whether no two slots share a tick of the budget's grid (script.py, point 1)."""
    ordered = list(slots)
    return len({t // interval_us(qps) for t in ordered}) == len(ordered)


async def connect(server: RedisServer, **kwargs: object) -> SharedBudget:
    return await SharedBudget.connect(server.url, access_key_id=AK, address="nat-a", **kwargs)  # type: ignore[arg-type]


async def until_count(slots: list[int], count: int) -> None:
    """Wait until ``slots`` holds ``count`` (polled: the pacer has no event to await)."""
    while len(slots) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def spend(pacer: RedisPacer, permits: int) -> None:
    for _ in range(permits):
        await pacer.acquire()


async def take(pacer: RedisPacer, slots: list[int], until: int, *, workers: int = 3) -> None:
    async def worker() -> None:
        while len(slots) < until:
            await pacer.acquire()

    await asyncio.gather(*(worker() for _ in range(workers)))


async def test_pacers_sharing_an_api_never_exceed_its_budget_in_any_sliding_second(
    redis_server: RedisServer,
) -> None:
    qps = 50
    budgets = [await connect(redis_server) for _ in range(3)]  # three "processes"
    slots: list[int] = []
    spent_early: list[tuple[int, int]] = []
    probe = aioredis.Redis.from_url(redis_server.url)
    pacers = [
        b.pacer("QuerySessionByClientId", qps, lease=lease, on_grant=slots.append)
        for b, lease in zip(budgets, (1, 4, 8), strict=True)
    ]

    async def worker(pacer: RedisPacer) -> None:
        while len(slots) < 3 * qps:
            await pacer.acquire()
            slot = slots[-1]  # on_grant ran just before acquire returned
            seconds, micros = await probe.time()
            if seconds * SECOND_US + micros < slot:
                spent_early.append((slot, seconds * SECOND_US + micros))

    try:
        await asyncio.gather(*(worker(p) for p in pacers for _ in range(3)))
    finally:
        await probe.aclose()
        for b in budgets:
            await b.aclose()
    assert spent_early == []
    assert busiest_second(slots) <= qps
    # It paced near the budget, not trivially under it.
    assert busiest_second(slots) >= 0.5 * qps
    assert one_a_tick(slots, qps)
    assert all(p.granted > 0 for p in pacers)


async def test_one_acquisition_takes_from_the_api_and_the_address_at_once(
    redis_server: RedisServer,
) -> None:
    # Two APIs behind one address: each API within its own budget, and both together
    # within the address's.
    budget = await connect(redis_server)
    single: list[int] = []
    batch: list[int] = []
    try:
        p1 = budget.pacer("QuerySessionByClientId", 50, address_qps=60, on_grant=single.append)
        p2 = budget.pacer("BatchQuerySessionByClientIds", 40, address_qps=60, on_grant=batch.append)
        await asyncio.gather(take(p1, single, 90), take(p2, batch, 60))
    finally:
        await budget.aclose()
    assert busiest_second(single) <= 50
    assert busiest_second(batch) <= 40
    assert busiest_second(single + batch) <= 60
    assert busiest_second(single + batch) >= 0.5 * 60


async def test_a_busy_address_grants_nothing_from_the_api_either(
    redis_server: RedisServer,
) -> None:
    budget = await connect(redis_server)
    try:
        pacer = budget.pacer("QuerySessionByClientId", 50, address_qps=60, lease=8)
        api_key, address_key = pacer._keys[1], pacer._keys[2]
        await pacer.acquire()
        raw = aioredis.Redis.from_url(redis_server.url)
        seconds, micros = await raw.time()
        # Someone else holds every tick of the address for the next ten seconds.
        start, step = seconds * SECOND_US + micros, interval_us(60)
        held = range(start // step, (start + 10 * SECOND_US) // step + 1)
        await raw.zadd(address_key, {str(k): k for k in held})
        now_tick = start // interval_us(50)
        leased = await raw.zrangebyscore(api_key, now_tick, "+inf")  # by the acquire above
        reply = await budget.link.run(
            pacer._keys,
            script_args(want=4, qps=50, adaptive=True, answers=0, throttled=0, other_rates=(60,)),
        )
        assert reply[3:] == []  # no permit
        assert reply[1] > 9 * SECOND_US  # and how long until one
        after = await raw.zrangebyscore(api_key, now_tick, "+inf")
        assert set(after) <= set(leased)  # no API slot taken
        await raw.aclose()
    finally:
        await budget.aclose()


def test_processes_whose_clocks_disagree_by_seconds_share_one_budget(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    runs = [  # api, qps, lease, permits, clock skew (s)
        ("QuerySessionByClientId", 60, 4, 70, +7.0),
        ("QuerySessionByClientId", 60, 4, 70, -7.0),
        ("BatchQuerySessionByClientIds", 40, 4, 60, 0.0),
    ]
    children = []
    for n, (api, qps, lease, count, skew) in enumerate(runs):
        out = tmp_path / f"slots-{n}.txt"
        args = [redis_server.url, api, qps, 80, lease, count, skew, out]
        children.append(
            (
                subprocess.Popen([sys.executable, str(WORKER), *map(str, args)]),
                out,
            )
        )
    for child, _ in children:
        assert child.wait(timeout=120) == 0
    slots = [[int(x) for x in out.read_text().split()] for _, out in children]
    assert all(len(s) >= count for s, (_, _, _, count, _) in zip(slots, runs, strict=True))
    assert busiest_second(slots[0] + slots[1]) <= 60  # the account's single API
    assert busiest_second(slots[2]) <= 40  # its batch API
    assert busiest_second([t for s in slots for t in s]) <= 80  # the address, all of them
    # The skewed clocks (the only difference between the two single processes)
    # changed nothing: both were served while both were running, neither starved.
    overlap = (max(s[0] for s in slots[:2]), min(s[-1] for s in slots[:2]))
    during = [sum(overlap[0] <= t <= overlap[1] for t in s) for s in slots[:2]]
    assert min(during) > 0.2 * sum(during)


async def test_a_throttled_answer_anywhere_slows_every_process_once(
    redis_server: RedisServer,
) -> None:
    a, b = await connect(redis_server), await connect(redis_server)
    try:
        pa = a.pacer("QuerySessionByClientId", 100, lease=1)
        pb = b.pacer("QuerySessionByClientId", 100, lease=1)
        await pa.acquire()
        await pb.acquire()
        for _ in range(10):
            pa.on_throttled()
        await pa.acquire()
        assert pa.current_rate == pytest.approx(70)
        # The other process slows down without a throttled answer of its own ...
        await pb.acquire()
        assert pb.current_rate == pytest.approx(70)
        # ... and its own throttled answers of the same storm are not a second cut.
        for _ in range(10):
            pb.on_throttled()
        await pb.acquire()
        assert pb.current_rate == pytest.approx(70)
        # The new spacing holds for everyone.
        slots: list[int] = []
        pc = a.pacer("QuerySessionByClientId", 100, lease=4, on_grant=slots.append)
        await take(pc, slots, 22, workers=4)
        # 0.7 of the ticks, evenly spread: 21 steps span at least 21 / 0.7 - 2 ticks.
        assert slots[21] - slots[0] >= (21 / 0.7 - 2) * interval_us(100)
        # A clean step later (the throttled ones out of the window), one raise for all.
        await asyncio.sleep(2.1)
        for _ in range(20):
            pa.on_success()
        await pa.acquire()
        assert pa.current_rate == pytest.approx(75)
        for _ in range(20):
            pb.on_success()
        await pb.acquire()
        assert pb.current_rate == pytest.approx(75)
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_odd_throttled_answer_is_noise_for_the_shared_rate(
    redis_server: RedisServer,
) -> None:
    a, b = await connect(redis_server), await connect(redis_server)
    try:
        pa = a.pacer("BatchQuerySessionByClientIds", 100, lease=1)
        pb = b.pacer("BatchQuerySessionByClientIds", 100, lease=1)
        for _ in range(30):
            pa.on_success()
        await pa.acquire()
        pb.on_throttled()
        await pb.acquire()
        assert pb.current_rate == 100  # 1 of 31 answers: noise
        for _ in range(3):
            pb.on_throttled()
        await pb.acquire()
        assert pb.current_rate == pytest.approx(70)  # 4 of 34: more than 10%
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_lost_redis_blocks_every_acquire_and_the_scan_goes_on_when_it_returns(
    redis_server: RedisServer,
) -> None:
    budget = await connect(redis_server)
    slots: list[int] = []
    pacer = budget.pacer("QuerySessionByClientId", 50, lease=4, on_grant=slots.append)
    running = asyncio.ensure_future(take(pacer, slots, 10**9))
    try:
        await until_count(slots, 10)
        redis_server.kill()
        # Permits leased before the loss run out within the horizon; then nothing.
        await asyncio.sleep(HORIZON_S + 0.1)
        stalled = len(slots)
        await asyncio.sleep(0.6)
        assert len(slots) == stalled
        assert not running.done()
        redis_server.start()
        await until_count(slots, stalled + 10)
        assert not running.done()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await budget.aclose()


async def lease_all(budget: SharedBudget, keys: tuple[str, ...], qps: float) -> list[int]:
    """Every slot the horizon allows, as server times; waits out a hold first."""
    while True:
        args = script_args(want=10_000, qps=qps, adaptive=True, answers=0, throttled=0)
        now, wait, _, *offsets = await budget.link.run(keys, args)
        if offsets:
            return [now + off for off in offsets]
        await asyncio.sleep(wait / SECOND_US)


async def test_after_a_restart_no_slot_lands_among_those_leased_before(
    redis_server: RedisServer,
) -> None:
    qps = 200
    budget = await connect(redis_server)
    keys = budget.pacer("QuerySessionByClientId", qps)._keys
    try:
        await lease_all(budget, keys, qps)  # a new key: past its hold ...
        await asyncio.sleep(HORIZON_S + 0.05)  # ... and idle
        before = await lease_all(budget, keys, qps)
        assert before[-1] - before[0] >= (HORIZON_S - 0.02) * SECOND_US  # a full lease
        redis_server.restart()  # every key lost; those permits are still to be spent
        after = await lease_all(budget, keys, qps)
    finally:
        await budget.aclose()
    assert after[0] // interval_us(qps) > before[-1] // interval_us(qps)
    assert busiest_second(before + after) <= qps


async def test_a_redis_restart_mid_scan_opens_no_burst(
    redis_server: RedisServer,
) -> None:
    qps = 200
    budgets = [await connect(redis_server) for _ in range(2)]
    slots: list[int] = []
    # Four pacers leasing all the horizon allows: a quarter second of permits is
    # reserved ahead when Redis goes, and spent after it is back.
    pacers = [
        b.pacer("QuerySessionByClientId", qps, lease=16, on_grant=slots.append)
        for b in budgets
        for _ in range(2)
    ]
    running = [asyncio.ensure_future(take(p, slots, 10**9, workers=16)) for p in pacers]
    try:
        await until_count(slots, qps)
        # In a thread, so the loop goes on spending what was leased before.
        await asyncio.to_thread(redis_server.restart)
        at_restart = len(slots)
        await until_count(slots, at_restart + qps)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for b in budgets:
            await b.aclose()
    # Sharper than the count: no two slots, before and after the restart, in one tick
    # (without the hold, new slots land among those leased before).
    assert one_a_tick(slots, qps)
    assert busiest_second(slots) <= qps
    assert busiest_second(slots) >= 0.5 * qps


async def test_past_the_limiter_timeout_acquire_raises_for_a_graceful_stop(
    redis_server: RedisServer,
) -> None:
    budget = await connect(redis_server, limiter_timeout=0.5)
    try:
        pacer = budget.pacer("QuerySessionByClientId", 50, lease=1)
        await pacer.acquire()
        redis_server.kill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LimiterLostError, match=r"unreachable for 0.5 s.*resumable"):
            await pacer.acquire()
        assert loop.time() - started >= 0.5 - 0.05
        # Once lost, every acquire fails at once: the scan stops instead of waiting again.
        with pytest.raises(LimiterLostError):
            await asyncio.wait_for(pacer.acquire(), 0.5)
    finally:
        await budget.aclose()


async def test_a_redis_that_is_not_there_at_start_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(LimiterUnavailableError) as caught:
        await SharedBudget.connect(f"redis://127.0.0.1:{port}/0", access_key_id=AK, address="nat-a")
    message = str(caught.value)
    assert f"redis://127.0.0.1:{port}/0 cannot be used" in message
    assert "ConnectionError" in message


async def test_the_password_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-Pa55-word"
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(redis_binary(), folder, password=secret)
    server.start()
    url = server.url.replace("redis://", f"redis://:{secret}@")
    try:
        # In the URL: it works, and nothing shows it.
        with caplog.at_level(logging.DEBUG):
            budget = await SharedBudget.connect(
                url, access_key_id=AK, address="nat-a", limiter_timeout=0.3
            )
            pacer = budget.pacer("QuerySessionByClientId", 50)
            await pacer.acquire()
            shown = [repr(budget), repr(budget.link), repr(pacer), str(budget.link.shown)]
            server.kill()
            with pytest.raises(LimiterLostError) as lost:  # once the leased ones are spent
                await asyncio.wait_for(spend(pacer, 50), 30)
            await budget.aclose()
        shown += [str(lost.value), "".join(traceback.format_exception(lost.value))]
        server.start()
        # From the environment: it works too.
        budget = await SharedBudget.connect(
            server.url, access_key_id=AK, address="nat-a", environ={PASSWORD_ENV: secret}
        )
        await budget.pacer("QuerySessionByClientId", 50).acquire()
        await budget.aclose()
        # A wrong one: refused at start, and neither password shows.
        for wrong_url, env in (
            (server.url.replace("redis://", "redis://:wrong-guess@"), {}),
            (server.url, {PASSWORD_ENV: "wrong-guess"}),
            (server.url, {}),
        ):
            with pytest.raises(LimiterUnavailableError) as refused:
                await SharedBudget.connect(
                    wrong_url, access_key_id=AK, address="nat-a", environ=env
                )
            shown += [str(refused.value), "".join(traceback.format_exception(refused.value))]
    finally:
        server.kill()
    shown.append(caplog.text)
    assert "unreachable" in caplog.text
    for text in shown:
        assert secret not in text
        assert "wrong-guess" not in text
    assert any("Authentication" in text or "NOAUTH" in text for text in shown)


async def test_rediss_verifies_the_server_and_takes_a_ca_bundle(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(redis_binary(), folder, tls=True)
    server.start()
    try:
        budget = await SharedBudget.connect(
            server.url, access_key_id=AK, address="nat-a", ca_bundle=str(server.ca_file)
        )
        await budget.pacer("QuerySessionByClientId", 50).acquire()
        await budget.aclose()
        # Without the CA, the certificate does not verify: refused at start.
        with pytest.raises(LimiterUnavailableError, match="cannot be used"):
            await SharedBudget.connect(server.url, access_key_id=AK, address="nat-a")
    finally:
        server.kill()


async def test_a_lease_with_nobody_left_waiting_ends_instead_of_looping_on_round_trips(
    redis_server: RedisServer,
) -> None:
    # The scan's last caller is served by permits already leased while the next lease is
    # on its way: that lease must end, not ask Redis for none, again and again (a scan
    # process hung at its end, spinning on round trips, until this was fixed).
    budget = await connect(redis_server)
    try:
        # Fast enough that permits are due at once: the caller leaves without yielding,
        # before the lease it started has run.
        pacer = budget.pacer("QuerySessionByClientId", 100_000.0)
        for _ in range(20):
            await pacer.acquire()
        await asyncio.sleep(0.3)
        calls = budget.link.calls
        await asyncio.sleep(0.3)
        assert budget.link.calls == calls  # idle: no round trips
    finally:
        await asyncio.wait_for(budget.aclose(), timeout=5)


async def test_a_lease_ahead_holds_only_its_own_slots_of_a_budget_it_shares(
    redis_server: RedisServer,
) -> None:
    # A slow API leasing permits ahead (batch at 20/s: 50 ms apart) must not take the
    # address's budget between them: the fast API's permits fit in the gaps. Granted in
    # order, every slot after the last one granted, the batch lease held the address
    # for its whole span, and a single pacer beside it got a fraction of its rate
    # (25 of the 60/s the address left it; in a hybrid scan of 12,000 IDs the single
    # lane made 180 calls beside batch's 1,182, where the local pacers made 1,788).
    budget = await connect(redis_server)
    try:
        batch = budget.pacer("BatchQuerySessionByClientIds", 20, address_qps=80)
        single = budget.pacer("QuerySessionByClientId", 200, address_qps=80)
        await batch.acquire()  # new keys: wait out their hold
        await single.acquire()

        async def lease(pacer: RedisPacer, qps: float) -> list[int]:
            now, _, _, *offsets = await budget.link.run(
                pacer._keys,
                script_args(
                    want=8, qps=qps, adaptive=True, answers=0, throttled=0, other_rates=(80,)
                ),
            )
            return [now + offset for offset in offsets]

        slow = await lease(batch, 20)
        fast = await lease(single, 200)
    finally:
        await budget.aclose()
    assert len(slow) >= 4  # 250 ms ahead at 50 ms apart
    assert len(fast) == 8
    # The single permits landed between the batch's, not after the last of them ...
    assert sum(t < max(slow) for t in fast) >= 4
    # ... and every slot of the address is an interval from every other.
    assert one_a_tick(slow + fast, 80)
    assert one_a_tick(fast, 200)

"""The fleet: seeded statuses, CSV fleets, churn, and a batch cache that can be stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from emulator_fixtures import FakeClock, ids, serving

from fleetscan.emulator import EmulatorConfig, Fleet
from fleetscan.emulator.fleet import read_fleet_csv

MANY = ids(4000)


def test_statuses_are_a_function_of_seed_and_id() -> None:
    a, b, c = Fleet(seed=1), Fleet(seed=1), Fleet(seed=2)
    first = [a.is_online(cid) for cid in MANY]
    assert first == [b.is_online(cid) for cid in MANY]
    assert first != [c.is_online(cid) for cid in MANY]


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_online_ratio(ratio: float) -> None:
    share = sum(Fleet(online_ratio=ratio).is_online(cid) for cid in MANY) / len(MANY)
    assert abs(share - ratio) < 0.03


def test_csv_fleet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("client_id,online\nGID_a@@@1,true\nGID_a@@@2,0\n\nGID_a@@@3,Online\n")
    assert read_fleet_csv(path) == {"GID_a@@@1": True, "GID_a@@@2": False, "GID_a@@@3": True}
    fleet = Fleet.from_csv(path)
    assert [fleet.is_online(f"GID_a@@@{i}") for i in (1, 2, 3, 4)] == [True, False, True, False]


def test_csv_without_header_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("GID_a@@@1,1\nGID_a@@@2,maybe\n")
    with pytest.raises(ValueError, match=r"fleet.csv:2: online must be true or false"):
        read_fleet_csv(path)
    path.write_text("GID_a@@@1,1,extra\n")
    with pytest.raises(ValueError, match=r"fleet.csv:1: expected 'client_id,online'"):
        read_fleet_csv(path)


def test_churn_redraws_a_share_per_second_and_keeps_the_ratio() -> None:
    clock = FakeClock()
    fleet = Fleet(churn_rate=0.1, clock=clock)
    still = Fleet(clock=clock)
    before = [fleet.is_online(cid) for cid in MANY]
    assert before == [still.is_online(cid) for cid in MANY]
    clock.advance(1.0)
    after = [fleet.is_online(cid) for cid in MANY]
    flipped = sum(x != y for x, y in zip(before, after, strict=True)) / len(MANY)
    # 10% redrawn per second; a redraw flips with probability 0.5 at ratio 0.5.
    assert 0.03 <= flipped <= 0.08
    assert abs(sum(after) / len(MANY) - 0.5) < 0.03
    assert [still.is_online(cid) for cid in MANY] == before  # no churn, no change
    # The past stays the past: a status at a given time never changes.
    assert [fleet.is_online(cid, at=clock.now - 1.0) for cid in MANY] == before


def test_csv_fleet_churns_only_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("\n".join(f"{cid},{i % 2}" for i, cid in enumerate(MANY)))
    clock = FakeClock()
    fleet = Fleet.from_csv(path, churn_rate=1.0, clock=clock)
    clock.advance(2.0)
    assert sum(fleet.is_online(cid) != bool(i % 2) for i, cid in enumerate(MANY)) > 1000
    assert not fleet.is_online("GID_unknown@@@1")


def test_set_online_overrides_from_now_on() -> None:
    clock = FakeClock()
    fleet = Fleet(online_ratio=0.0, clock=clock)
    start = clock.now
    clock.advance(5)
    fleet.set_online("GID_a@@@1", True)
    assert fleet.is_online("GID_a@@@1")
    assert not fleet.is_online("GID_a@@@1", at=start)


async def test_batch_answers_come_from_a_cache_single_answers_are_current() -> None:
    clock = FakeClock()
    config = EmulatorConfig(online_ratio=0.0, batch_cache_seconds=10)
    async with serving(config, clock=clock) as (emu, caller):
        clock.advance(3)
        emu.fleet.set_online("GID_test@@@dev1", True)
        single = await caller.single("GID_test@@@dev1")
        stale = await caller.batch(["GID_test@@@dev1"])
        clock.advance(7)  # the cache refreshes at 10 s
        fresh = await caller.batch(["GID_test@@@dev1"])
        async with caller.session.get(
            f"{caller.url}_emulator/fleet", params={"ClientId": "GID_test@@@dev1"}
        ) as response:
            truth = await response.json()
    assert single.body["OnlineStatus"] is True
    assert stale.body["OnlineStatusList"][0]["OnlineStatus"] is False
    assert fresh.body["OnlineStatusList"][0]["OnlineStatus"] is True
    assert truth == {
        "ClientId": "GID_test@@@dev1",
        "OnlineStatus": True,
        "BatchOnlineStatus": True,
    }


async def test_without_cache_batch_is_current() -> None:
    clock = FakeClock()
    async with serving(EmulatorConfig(online_ratio=0.0), clock=clock) as (emu, caller):
        emu.fleet.set_online("GID_test@@@dev1", True)
        reply = await caller.batch(["GID_test@@@dev1"])
    assert reply.body["OnlineStatusList"][0]["OnlineStatus"] is True


def test_fleet_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="online_ratio"):
        Fleet(online_ratio=1.5)
    with pytest.raises(ValueError, match="online_ratio"):
        EmulatorConfig(online_ratio=-0.1)

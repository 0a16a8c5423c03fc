"""Shards and the shared limiter's settings inside a scan, without Redis: admission
skips other shards' IDs, resume refuses another shard's file, the options are checked
before anything is written, and a limiter URL's password never shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from log_capture import Everything

from fleetscan.cli import main
from fleetscan.engine import LimiterSettings, ScanSettings, tally
from fleetscan.errors import InputError, UsageError
from fleetscan.output import prepare_resume
from fleetscan.shard import Shard

REPO = Path(__file__).resolve().parent.parent
SECRET = "pw-7d1e0c"


def fleet(n: int) -> list[str]:
    return [f"GID_shard@@@d{i}" for i in range(n)]


def test_admission_skips_other_shards_before_dedup_and_validation() -> None:
    shard = Shard.parse("1/3")
    ids = [*fleet(300), *fleet(300)[:50], "bad id", "bad id"]
    counters = tally(ids, owns=shard.owns)
    ours = [cid for cid in dict.fromkeys(ids) if shard.owns(cid)]
    theirs = [cid for cid in ids if not shard.owns(cid)]
    assert counters.read == len(ids)
    assert counters.other_shards == len(theirs)
    assert counters.unique == len(ours)
    assert counters.duplicates == len(ids) - len(theirs) - len(ours)
    # The invalid ID is one shard's, counted (and recorded) there only.
    assert counters.invalid == (1 if shard.owns("bad id") else 0)


def test_resume_refuses_a_file_with_an_id_the_shard_does_not_own(tmp_path: Path) -> None:
    zero = Shard.parse("0/2")
    path = tmp_path / "out.ndjson"
    lines = [
        {"client_id": cid, "instance_id": "mqtt-cn-x", "status": "offline", "online": False}
        for cid in fleet(40)
        if zero.owns(cid)
    ]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    before = path.read_bytes()
    assert prepare_resume(path, owns=zero.owns).offline == len(lines)
    for other in (Shard.parse("1/2"), Shard.parse("0/2", seed="another")):
        with pytest.raises(InputError, match="another --shard or --shard-seed"):
            prepare_resume(path, owns=other.owns)
        assert path.read_bytes() == before


def test_limiter_settings_never_show_the_url_and_refuse_bad_values() -> None:
    settings = LimiterSettings(url=f"redis://fleet:{SECRET}@127.0.0.1:6379/0")
    scan = ScanSettings(instance_id="mqtt-cn-x", limiter=settings)
    assert SECRET not in repr(scan)
    assert settings.shown == "redis://127.0.0.1:6379/0"
    for bad in (f"http://u:{SECRET}@h:1/0", f"redis://u:{SECRET}@h:1/x", "redis:///0"):
        with pytest.raises(UsageError) as caught:
            LimiterSettings(url=bad)
        assert SECRET not in str(caught.value)
    with pytest.raises(UsageError, match="--limiter-timeout"):
        LimiterSettings(url="redis://h:1/0", timeout=0)
    with pytest.raises(UsageError, match="--address-group"):
        LimiterSettings(url="redis://h:1/0", address_group=" ")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--shard-seed", "s"], "give --shard too"),
        (["--address-group", "nat-1"], "give --limiter too"),
        (["--limiter-timeout", "5"], "give --limiter too"),
        (["--shard", "3/3"], "0 to 2"),
        (["--shard", "1-3"], "K/N"),
        (["--limiter", f"redis://u:{SECRET}@h:1/0?ssl_cert_reqs=none"], "no ?parameters"),
    ],
)
def test_sharing_options_are_checked_before_anything_is_written(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, options: list[str], says: str
) -> None:
    code = main(["scan", "--emulator", *options, "-o", str(tmp_path / "out.ndjson"), "-"])
    err = capsysbinary.readouterr().err.decode()
    assert code == 2
    assert says in err
    assert SECRET not in err
    assert not (tmp_path / "out.ndjson").exists()


def test_a_shard_scan_writes_its_own_ids_and_names_the_shard_in_the_summary(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{cid}\n" for cid in fleet(60)))
    out, summary = tmp_path / "out.ndjson", tmp_path / "s.json"
    code = main(
        [
            "scan",
            "--emulator",
            "--shard",
            "1/2",
            "--shard-seed",
            "x",
            "-o",
            str(out),
            "--summary",
            str(summary),
            "--quiet",
            str(ids),
        ]
    )
    capsysbinary.readouterr()
    assert code == 0
    shard = Shard.parse("1/2", seed="x")
    written = sorted(orjson.loads(line)["client_id"] for line in out.read_bytes().splitlines())
    assert written == sorted(cid for cid in fleet(60) if shard.owns(cid))
    data = orjson.loads(summary.read_bytes())
    assert (data["shard"], data["shard_seed"]) == ("1/2", shard.seed_digest)
    assert data["ids_other_shards"] == 60 - len(written)


def test_without_the_redis_package_the_limiter_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from fleetscan.cli import main\n"
        "sys.exit(main(['scan', '--emulator', '--limiter', 'redis://127.0.0.1:1/0', '-']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "pip install 'fleetscan[redis]'" in done.stderr.decode()


def test_the_shared_budget_is_named_by_the_account_never_by_a_passing_key(
    logs: Everything,
) -> None:
    from fleetscan.credentials import Credentials
    from fleetscan.credentials.value import account_of_role
    from fleetscan.engine.shared import budget_account

    assert account_of_role("acs:ram::1234567890123456:role/fleet-audit") == "1234567890123456"
    assert account_of_role("acs:ram::1234:oidc-provider/x") is None
    assert account_of_role("fleet-audit") is None
    limiter = LimiterSettings(url="redis://h:1/0")
    static = Credentials(access_key_id="LTAIkey", access_key_secret="s")
    assert budget_account(limiter, static) == "LTAIkey"
    assumed = Credentials(
        access_key_id="STS.one", access_key_secret="s", security_token="t", account="42"
    )
    again = Credentials(
        access_key_id="STS.two", access_key_secret="s", security_token="t", account="42"
    )
    assert budget_account(limiter, assumed) == budget_account(limiter, again)
    # A temporary key of no known account: its own budget, and the user hears how to share.
    metadata = Credentials(
        access_key_id="STS.three", access_key_secret="s", security_token="t", source="ECS"
    )
    assert budget_account(limiter, metadata) == "STS.three"
    assert any("--limiter-account" in line for line in logs.lines)
    # --limiter-account names it for every process, whatever the key.
    named = LimiterSettings(url="redis://h:1/0", account="fleet-prod")
    assert budget_account(named, metadata) == budget_account(named, static)
    with pytest.raises(UsageError, match="--limiter-account"):
        LimiterSettings(url="redis://h:1/0", account=" ")

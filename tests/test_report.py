"""``fleetscan report``: one self-contained HTML file, checked in a real headless
Chromium: it renders, its script draws the chart, and every number shown equals the
history database's.

Without Chromium the browser tests skip, saying so, except under ``CI=true``, where
they fail: CI (``.ci/run``) installs it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fleetscan.cli import main
from fleetscan.history import HistoryRecorder, open_database
from fleetscan.records import Record, Status
from fleetscan.summary import ScanCounters, ScanSummary

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
GROUPS = ("GID_meters", "GID_sensors", "GID_gateways")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on PATH: `apt-get install -y chromium` to run the report's browser tests"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: .ci/run installs it)")
    pytest.skip(message)


def browse(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *mode,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )


class Elements(HTMLParser):
    """Every element's tag, attributes and text, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.found.append((tag, dict(attrs), text))
        self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for text in self._open:
            text.append(data)

    def all(self, tag: str, **attrs: str) -> list[tuple[dict[str, str | None], str]]:
        return [
            (a, "".join(t).strip())
            for name, a, t in self.found
            if name == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


def build_history(db: Path, scans: int = 8) -> None:
    """A few nights of a fleet whose devices drift offline, with errors and churn."""
    fleet = [f"{g}@@@dev-{i:03d}" for g in GROUPS for i in range(60)]
    for night in range(scans):
        started = T0 + timedelta(days=night)
        recorder = HistoryRecorder(db)
        recorder.begin(instance_id="mqtt-cn-report", mode="single", output=None, started_at=started)
        for n, cid in enumerate(fleet):
            offline = (n * 7 + night * 3) % 11 < 3 + night % 3 or n % 17 == night
            status = Status.OFFLINE if offline else Status.ONLINE
            if (n + night) % 41 == 0:
                status = Status.ERROR
            recorder.record(
                Record(
                    client_id=cid,
                    instance_id="mqtt-cn-report",
                    status=status,
                    checked_at=started + timedelta(seconds=30 + n),
                )
            )
        counters = ScanCounters(
            calls_sent=200 + night, calls_succeeded=180 + night, calls_throttled=night
        )
        recorder.end(
            ScanSummary.build(
                counters,
                mode="single",
                api="QuerySessionByClientId",
                instance_id="mqtt-cn-report",
                qps=300,
                started_at=started,
                ended_at=started + timedelta(minutes=4),
                duration_seconds=240.5 + night,
                not_scanned=0,
                instance_tps=None,
                price_per_million=None,
                outcome="completed",
            )
        )
        recorder.close()


@pytest.fixture
def report(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> tuple[Path, Path]:
    db = tmp_path / "fleet.db"
    build_history(db)
    out = tmp_path / "report.html"
    assert main(["report", "--history", str(db), "-o", str(out), "--top", "20"]) == 0
    capsysbinary.readouterr()
    return db, out


def db_rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = open_database(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_the_report_is_self_contained(report: tuple[Path, Path]) -> None:
    _, page = report
    html = page.read_text(encoding="utf-8")
    elements = parse(html)
    # Nothing to fetch: no src or href at all, no stylesheet link, and a policy that
    # forbids any connection should a future edit add one.
    for _tag, attrs, _ in elements.found:
        assert "src" not in attrs
        assert "href" not in attrs
    assert not elements.all("link")
    (policy,) = [a for a, _ in elements.all("meta") if a.get("http-equiv")]
    assert "default-src 'none'" in (policy["content"] or "")
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html


def test_the_chart_is_drawn_in_a_browser_with_the_databases_shares(
    report: tuple[Path, Path], tmp_path: Path
) -> None:
    db, page = report
    dom = parse(browse(page, tmp_path, "--dump-dom").stdout)
    scans = db_rows(db, "SELECT id, ids_online, ids_offline FROM scans ORDER BY id")
    (svg,) = dom.all("svg", id="share-chart")
    # data-drawn and the points exist only once the page's script has run.
    assert svg[0]["data-drawn"] == str(len(scans))
    points = dom.all("circle")
    assert [(int(a["data-scan"] or 0), float(a["data-share"] or 0)) for a, _ in points] == [
        (scan_id, round(online / (online + offline), 4)) for scan_id, online, offline in scans
    ]
    assert dom.all("path", id="share-line")
    assert not dom.all("p", id="chart-fallback")
    # Each point sits higher the larger its share.
    heights = {float(a["data-share"] or 0): float(a["cy"] or 0) for a, _ in points}
    ordered = sorted(heights)
    assert all(heights[lo] >= heights[hi] for lo, hi in itertools.pairwise(ordered))


def test_the_tables_show_the_databases_numbers(report: tuple[Path, Path], tmp_path: Path) -> None:
    db, page = report
    dom = parse(browse(page, tmp_path, "--dump-dom").stdout)
    ((last_id,),) = db_rows(db, "SELECT max(id) FROM scans")
    groups = db_rows(
        db,
        "SELECT grp, online, offline, error, invalid FROM scan_groups WHERE scan_id = ?",
        last_id,
    )
    assert len(groups) == len(GROUPS)
    for grp, online, offline, error, invalid in groups:
        cells = {
            a["data-col"]: text
            for a, text in dom.all("td")
            if a.get("data-col") and _in_row(dom, grp, a)
        }
        assert cells["online"] == f"{online:,}"
        assert cells["offline"] == f"{offline:,}"
        assert cells["error"] == f"{error:,}"
        assert cells["invalid"] == f"{invalid:,}"
        assert cells["share"] == f"{online / (online + offline) * 100:.1f}%"
    ((calls, billable, throttled, duration),) = db_rows(
        db,
        "SELECT calls_sent, billable_transactions, calls_throttled, duration_seconds "
        "FROM scans WHERE id = ?",
        last_id,
    )
    cost = {a["data-cost"]: text for a, text in dom.all("td") if a.get("data-cost")}
    assert cost["calls_sent"] == f"{calls:,}"
    assert cost["billable_transactions"] == f"{billable:,}"
    assert cost["calls_throttled"] == f"{throttled:,}"
    assert cost["duration_seconds"] == f"4 min {round(duration) - 240} s"
    ((online, offline, error),) = db_rows(
        db, "SELECT ids_online, ids_offline, ids_error FROM scans WHERE id = ?", last_id
    )
    kpi = {a["data-kpi"]: text for a, text in dom.all("div") if a.get("data-kpi")}
    assert kpi["online"] == f"{online:,}"
    assert kpi["offline"] == f"{offline:,}"
    assert kpi["error"] == f"{error:,}"
    ((newly,),) = db_rows(
        db, "SELECT count(*) FROM transitions WHERE scan_id = ? AND after = 'offline'", last_id
    )
    assert newly > 0
    (total,) = dom.all("span", id="newly-offline-total")
    assert total[1] == f"{newly:,}"
    ((now_offline,),) = db_rows(db, "SELECT count(*) FROM devices WHERE state = 'offline'")
    (offline_total,) = dom.all("span", id="offline-total")
    assert offline_total[1] == f"{now_offline:,}"
    longest = db_rows(
        db,
        "SELECT client_id FROM devices WHERE state = 'offline' "
        "ORDER BY since_high, client_id LIMIT 20",
    )
    shown = [a["data-client"] for a, _ in dom.all("tr") if a.get("data-client")]
    assert shown == [c for (c,) in longest]


def _in_row(dom: Elements, group: str, cell: dict[str, str | None]) -> bool:
    # The cell belongs to the row of ``group``: the nearest <tr> before it says so.
    current = None
    for tag, attrs, _ in dom.found:
        if tag == "tr":
            current = attrs.get("data-group")
        if attrs is cell:
            return current == group
    return False


def test_a_screenshot_is_not_blank(report: tuple[Path, Path], tmp_path: Path) -> None:
    _, page = report
    shot = tmp_path / "report.png"
    browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a blank page compresses to a few kB


def test_an_empty_history_still_makes_a_page(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    db = tmp_path / "empty.db"
    open_database(db).close()
    out = tmp_path / "r.html"
    assert main(["report", "--history", str(db), "-o", str(out)]) == 0
    assert "holds no scan yet" in out.read_text()
    assert main(["report", "--history", str(tmp_path / "none.db"), "-o", str(out)]) == 2
    assert "no such history" in capsysbinary.readouterr().err.decode()
    assert not (tmp_path / "none.db").exists()

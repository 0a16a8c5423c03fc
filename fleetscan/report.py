"""The morning report: one self-contained HTML file from the history database.

::

    conn = open_database("fleet.db", create=False)
    html = render_report(gather(conn, scans=30))

Everything is inline (CSS, the script, the chart's SVG) and a Content-Security-Policy
forbids any fetch, so the file opens the same from a mail attachment, a file share
or an air-gapped laptop. The tables are rendered here; the chart is drawn by the
page's script from the JSON embedded in it (``<script id="report-data">``), so
its points carry the same numbers as the tables and as the database.
"""

from __future__ import annotations

import html
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from fleetscan.history import queries
from fleetscan.records import rfc3339

__all__ = ["DEFAULT_SCANS", "DEFAULT_TOP", "ReportData", "gather", "render_report"]

DEFAULT_SCANS = 30
DEFAULT_TOP = 50
# What an empty cell shows: an en dash.
_NONE = "\u2013"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportData:
    """What the report shows, straight from the database."""

    generated_at: str
    scans: list[dict[str, Any]]  # oldest first
    groups: list[dict[str, Any]]  # the last scan's, with the previous share
    newly_offline: list[dict[str, Any]]
    newly_offline_total: int
    longest_offline: list[dict[str, Any]]
    offline_total: int

    @property
    def last(self) -> dict[str, Any] | None:
        return self.scans[-1] if self.scans else None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def gather(
    conn: sqlite3.Connection,
    *,
    scans: int = DEFAULT_SCANS,
    top: int = DEFAULT_TOP,
    now: datetime | None = None,
) -> ReportData:
    """Read the report's figures: the last ``scans`` scans, ``top`` rows per list."""
    rows = list(reversed(list(queries.scans(conn, last=scans))))
    groups: list[dict[str, Any]] = []
    newly: list[dict[str, Any]] = []
    newly_total = 0
    longest: list[dict[str, Any]] = []
    offline_total = 0
    if rows:
        last_id = rows[-1]["id"]
        previous_id = rows[-2]["id"] if len(rows) > 1 else None
        shares = list(queries.group_shares(conn, last=2))
        before = {g["group"]: g["online_share"] for g in shares if g["scan_id"] == previous_id}
        for g in shares:
            if g["scan_id"] == last_id:
                groups.append({**g, "previous_share": before.get(g["group"])})
        newly_total = conn.execute(
            "SELECT count(*) FROM transitions WHERE scan_id = ? AND after = 'offline'", (last_id,)
        ).fetchone()[0]
        newly = [
            dict(zip(("client_id", "last_online", "first_offline"), r, strict=True))
            for r in conn.execute(
                "SELECT client_id, before_at, at FROM transitions "
                "WHERE scan_id = ? AND after = 'offline' ORDER BY client_id LIMIT ?",
                (last_id, top),
            )
        ]
        offline_total = conn.execute(
            "SELECT count(*) FROM devices WHERE state = 'offline'"
        ).fetchone()[0]
        longest = list(queries.offline(conn, limit=top))
    return ReportData(
        generated_at=rfc3339(now or datetime.now(UTC)),
        scans=rows,
        groups=groups,
        newly_offline=newly,
        newly_offline_total=newly_total,
        longest_offline=longest,
        offline_total=offline_total,
    )


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(share: float | None) -> str:
    return _NONE if share is None else f"{share * 100:.1f}%"


def _int(value: int) -> str:
    return f"{value:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _NONE
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s"


def _when(text: str | None) -> str:
    # 2026-11-25T18:00:00.123Z -> 2026-11-25 18:00 UTC
    return _NONE if not text else f"{text[:10]} {text[11:16]} UTC"


def _delta(now: float | None, before: float | None) -> str:
    if now is None or before is None:
        return f'<span class="muted">{_NONE}</span>'
    points = (now - before) * 100
    kind = "up" if points > 0.05 else "down" if points < -0.05 else "flat"
    return f'<span class="delta {kind}" data-delta="{points:.2f}">{points:+.1f} pt</span>'


def render_report(data: ReportData) -> str:
    """The HTML document."""
    payload = orjson.dumps(
        {
            "scans": [
                {
                    "id": s["id"],
                    "started_at": s["started_at"],
                    "online": s["ids_online"],
                    "offline": s["ids_offline"],
                    "online_share": s["online_share"],
                }
                for s in data.scans
            ]
        }
    )
    # Inside <script>, "</" would end the element: JSON allows "<" escaped.
    embedded = payload.decode().replace("<", "\\u003c")
    last = data.last
    title = "fleetscan report"
    if last:
        title += f" — {last['instance_id']}, {_when(last['started_at'])}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="muted">Generated {_e(_when(data.generated_at))} from '
        f"{len(data.scans)} scan(s) of the history.</p></header>",
    ]
    if last is None:
        parts.append("<main><p>The history holds no scan yet.</p></main></body></html>")
        return "\n".join(parts)
    previous = data.scans[-2] if len(data.scans) > 1 else None
    parts.append("<main>")
    parts.append(_cards(last, previous))
    parts.append(
        "<section><h2>Online share over the last scans</h2>"
        '<div class="chart"><svg id="share-chart" role="img" '
        'aria-label="online share per scan" viewBox="0 0 900 260" '
        'preserveAspectRatio="xMidYMid meet"></svg>'
        '<p id="chart-fallback" class="muted">The chart needs JavaScript.</p></div></section>'
    )
    parts.append('<div class="columns">')
    parts.append(_groups_table(data.groups))
    parts.append(_cost(last))
    parts.append("</div>")
    parts.append(_newly_offline(data))
    parts.append(_longest_offline(data))
    parts.append("</main>")
    parts.append(f'<script type="application/json" id="report-data">{embedded}</script>')
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _cards(last: dict[str, Any], previous: dict[str, Any] | None) -> str:
    share = last["online_share"]
    before = previous["online_share"] if previous else None
    cards = [
        ("online share", _pct(share), "share", _delta(share, before)),
        ("online", _int(last["ids_online"]), "online", ""),
        ("offline", _int(last["ids_offline"]), "offline", ""),
        ("error", _int(last["ids_error"]), "error", ""),
        ("invalid", _int(last["ids_invalid"]), "invalid", ""),
    ]
    out = ['<section class="cards">']
    for label, value, key, extra in cards:
        out.append(
            f'<div class="card {key}"><div class="label">{label}</div>'
            f'<div class="value" data-kpi="{key}">{value}</div>{extra}</div>'
        )
    out.append("</section>")
    return "".join(out)


def _groups_table(groups: list[dict[str, Any]]) -> str:
    out = [
        '<section><h2>Groups in the last scan</h2><table id="groups"><thead><tr>'
        "<th>group</th><th>online</th><th>offline</th><th>error</th><th>invalid</th>"
        "<th>online share</th><th>vs previous</th></tr></thead><tbody>"
    ]
    for g in groups:
        out.append(
            f'<tr data-group="{_e(g["group"])}"><td>{_e(g["group"])}</td>'
            f'<td class="n" data-col="online">{_int(g["online"])}</td>'
            f'<td class="n" data-col="offline">{_int(g["offline"])}</td>'
            f'<td class="n" data-col="error">{_int(g["error"])}</td>'
            f'<td class="n" data-col="invalid">{_int(g["invalid"])}</td>'
            f'<td class="n" data-col="share">{_bar(g["online_share"])}</td>'
            f'<td class="n">{_delta(g["online_share"], g["previous_share"])}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _bar(share: float | None) -> str:
    width = 0 if share is None else round(share * 100, 1)
    return (
        f'<span class="bar"><span style="width:{width}%"></span></span>'
        f'<span class="pct">{_pct(share)}</span>'
    )


def _cost(last: dict[str, Any]) -> str:
    rows = [
        ("outcome", _e(last["outcome"] or "not finished"), "outcome"),
        ("mode", _e(last["mode"]), "mode"),
        ("calls sent", _int(last["calls_sent"]), "calls_sent"),
        ("billable transactions", _int(last["billable_transactions"]), "billable_transactions"),
        ("throttled answers", _int(last["calls_throttled"]), "calls_throttled"),
        ("failed attempts", _int(last["calls_failed"]), "calls_failed"),
        ("duration", _duration(last["duration_seconds"]), "duration_seconds"),
        ("peak TPS", _int(last["peak_tps"]), "peak_tps"),
        ("runs (resumes + 1)", _int(last["runs"]), "runs"),
        ("started", _e(_when(last["started_at"])), "started_at"),
    ]
    body = "".join(
        f'<tr><th>{label}</th><td class="n" data-cost="{key}">{value}</td></tr>'
        for label, value, key in rows
    )
    return f'<section><h2>Cost of the last scan</h2><table id="cost">{body}</table></section>'


def _newly_offline(data: ReportData) -> str:
    shown = len(data.newly_offline)
    out = [
        f'<section><h2>Newly offline <span class="count" id="newly-offline-total">'
        f"{_int(data.newly_offline_total)}</span></h2>"
    ]
    if not shown:
        out.append('<p class="muted">No device went offline in the last scan.</p></section>')
        return "".join(out)
    if shown < data.newly_offline_total:
        out.append(f'<p class="muted">The first {shown} of them, by client ID.</p>')
    out.append(
        '<div class="scroll"><table id="newly-offline"><thead><tr><th>client ID</th>'
        "<th>last seen online</th><th>first seen offline</th></tr></thead><tbody>"
    )
    for d in data.newly_offline:
        out.append(
            f"<tr><td><code>{_e(d['client_id'])}</code></td><td>{_e(_when(d['last_online']))}</td>"
            f"<td>{_e(_when(d['first_offline']))}</td></tr>"
        )
    out.append("</tbody></table></div></section>")
    return "".join(out)


def _longest_offline(data: ReportData) -> str:
    out = [
        f'<section><h2>Longest offline <span class="count" id="offline-total">'
        f"{_int(data.offline_total)}</span></h2>"
    ]
    if not data.longest_offline:
        out.append('<p class="muted">No device is offline.</p></section>')
        return "".join(out)
    out.append(
        '<p class="muted">Every device whose last definite answer was offline (an error '
        "answer does not end a spell). Each went offline between its last answer online "
        "and its first offline; the duration is the least it can be, as of the last "
        "scan.</p>"
        '<div class="scroll"><table id="longest-offline"><thead><tr><th>client ID</th>'
        "<th>offline for at least</th><th>scans</th><th>last seen online</th>"
        "<th>first seen offline</th></tr></thead><tbody>"
    )
    for d in data.longest_offline:
        out.append(
            f'<tr data-client="{_e(d["client_id"])}"><td><code>{_e(d["client_id"])}</code></td>'
            f'<td class="n" data-seconds="{d["offline_for_min_seconds"]}">'
            f"{_duration(d['offline_for_min_seconds'])}</td>"
            f'<td class="n">{d["offline_scans"]}</td>'
            f"<td>{_e(_when(d['last_seen_online']) if d['last_seen_online'] else 'never')}</td>"
            f"<td>{_e(_when(d['offline_since_high']))}</td></tr>"
        )
    out.append("</tbody></table></div></section>")
    return "".join(out)


_CSS = """
:root { --fg:#1d2430; --muted:#6b7686; --line:#e3e7ee; --bg:#f6f8fb; --card:#fff;
  --on:#1f9d62; --off:#d1493f; --err:#d08a12; --inv:#7b6bd6; --accent:#2f6fde; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
header { padding:20px 32px 4px; max-width:1200px; margin:0 auto; }
h1 { font-size:20px; margin:0 0 2px; }
h2 { font-size:15px; margin:0 0 10px; }
main { padding:8px 32px 32px; max-width:1200px; margin:0 auto; }
.scroll { max-height:430px; overflow:auto; border-top:1px solid var(--line); }
.scroll thead th { position:sticky; top:0; background:var(--card); }
section { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:16px 18px; margin:14px 0; }
.muted { color:var(--muted); margin:4px 0 8px; }
.cards { display:grid; grid-template-columns:repeat(5,1fr); gap:12px; background:none;
  border:0; padding:0; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:12px 16px; border-top:4px solid var(--accent); }
.card.online { border-top-color:var(--on); } .card.offline { border-top-color:var(--off); }
.card.error { border-top-color:var(--err); } .card.invalid { border-top-color:var(--inv); }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
  letter-spacing:.04em; }
.card .value { font-size:26px; font-weight:600; font-variant-numeric:tabular-nums; }
.columns { display:grid; grid-template-columns:2fr 1fr; gap:14px; align-items:start; }
.columns section { margin:0; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); }
thead th { font-size:12px; color:var(--muted); font-weight:600; }
#cost th { font-weight:normal; color:var(--muted); }
td.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
code { font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
.bar { display:inline-block; width:80px; height:8px; background:#fbe3e1;
  border-radius:4px; vertical-align:middle; margin-right:8px; overflow:hidden; }
.bar span { display:block; height:100%; background:var(--on); }
.pct { display:inline-block; min-width:48px; }
.delta { font-size:12px; } .delta.up { color:var(--on); } .delta.down { color:var(--off); }
.delta.flat { color:var(--muted); }
.count { display:inline-block; background:var(--bg); border:1px solid var(--line);
  border-radius:10px; padding:0 8px; font-size:12px; color:var(--muted); margin-left:6px; }
.chart svg { width:100%; height:auto; display:block; }
.chart .grid { stroke:var(--line); } .chart .axis { fill:var(--muted); font-size:11px; }
.chart .line { fill:none; stroke:var(--accent); stroke-width:2.5; }
.chart .area { fill:var(--accent); opacity:.08; }
.chart .point { fill:#fff; stroke:var(--accent); stroke-width:2; }
.chart .label { fill:var(--fg); font-size:11px; font-weight:600; }
@media (max-width:800px) { .cards { grid-template-columns:repeat(2,1fr); }
  .columns { grid-template-columns:1fr; } }
"""

# Draws the online share per scan into #share-chart; each point is a <circle> with
# data-scan and data-share, so a test (or a person) can read the values back.
_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var svg = document.getElementById('share-chart');
  var NS = 'http://www.w3.org/2000/svg';
  var scans = data.scans.filter(function (s) { return s.online_share !== null; });
  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (text !== undefined) { node.textContent = text; }
    svg.appendChild(node);
    return node;
  }
  if (!scans.length) { return; }
  document.getElementById('chart-fallback').remove();
  var W = 900, H = 260, left = 48, right = 20, top = 20, bottom = 36;
  var shares = scans.map(function (s) { return s.online_share; });
  var lo = Math.min.apply(null, shares), hi = Math.max.apply(null, shares);
  // A range that shows the changes, padded, within 0..1, at least 5 points wide.
  var pad = Math.max((hi - lo) * 0.25, 0.025);
  lo = Math.max(0, lo - pad); hi = Math.min(1, hi + pad);
  if (hi - lo < 0.05) { if (hi >= 1) { lo = hi - 0.05; } else { hi = lo + 0.05; } }
  function x(i) {
    return scans.length === 1 ? (left + W - right) / 2
      : left + i * (W - left - right) / (scans.length - 1);
  }
  function y(v) { return top + (hi - v) * (H - top - bottom) / (hi - lo); }
  for (var t = 0; t <= 4; t++) {
    var v = lo + t * (hi - lo) / 4;
    el('line', {'class': 'grid', x1: left, x2: W - right, y1: y(v), y2: y(v)});
    el('text', {'class': 'axis', x: left - 8, y: y(v) + 4, 'text-anchor': 'end'},
       (v * 100).toFixed(1) + '%');
  }
  var path = scans.map(function (s, i) {
    return (i ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(s.online_share).toFixed(1);
  }).join(' ');
  el('path', {'class': 'area', d: path + ' L' + x(scans.length - 1).toFixed(1) + ' '
    + (H - bottom) + ' L' + x(0).toFixed(1) + ' ' + (H - bottom) + ' Z'});
  el('path', {'class': 'line', id: 'share-line', d: path});
  var every = Math.ceil(scans.length / 10);
  scans.forEach(function (s, i) {
    var c = el('circle', {'class': 'point', cx: x(i), cy: y(s.online_share), r: 4,
      'data-scan': s.id, 'data-share': s.online_share});
    var tip = document.createElementNS(NS, 'title');
    tip.textContent = 'scan ' + s.id + ', ' + s.started_at.slice(0, 16).replace('T', ' ')
      + ' UTC: ' + (s.online_share * 100).toFixed(2) + '% online ('
      + s.online.toLocaleString('en') + ' of ' + (s.online + s.offline).toLocaleString('en') + ')';
    c.appendChild(tip);
    if (i % every === 0 || i === scans.length - 1) {
      el('text', {'class': 'axis', x: x(i), y: H - bottom + 18, 'text-anchor': 'middle'},
         s.started_at.slice(5, 10));
    }
  });
  var lastIndex = scans.length - 1;
  el('text', {'class': 'label', x: x(lastIndex), y: y(scans[lastIndex].online_share) - 10,
    'text-anchor': lastIndex ? 'end' : 'middle'},
    (scans[lastIndex].online_share * 100).toFixed(1) + '%');
  svg.setAttribute('data-drawn', scans.length);
})();
"""

"""Render the report as one self-contained HTML page (pure: values in, text out).

No network, no external CSS/JS: styles are inline and charts are embedded as base64
``data:image/png`` URIs, so ``report.html`` opens from disk anywhere.
"""
from __future__ import annotations

import base64
import html
import math
import re
from datetime import datetime, timezone
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Chart", "CompareContent", "ReportContent", "table_html", "render_report",
           "render_compare"]

PER_SECOND_HTML_ROWS = 3000


@dataclass(frozen=True)
class Chart:
    """One chart: a title, a one-line caption, and the PNG bytes (``None`` = not drawn)."""

    title: str
    caption: str
    png: bytes | None
    file: str = ""


@dataclass(frozen=True)
class CompareContent:
    """The compare section: base vs this run."""

    base_name: str
    this_name: str
    base_headline: Mapping[str, Any]
    ops: pd.DataFrame
    gates: pd.DataFrame
    chart: Chart | None


@dataclass(frozen=True)
class ReportContent:
    """Everything the report page shows."""

    headline: Mapping[str, Any]
    ops: pd.DataFrame
    codes: pd.DataFrame
    gates: pd.DataFrame
    checks: pd.DataFrame
    per_second: pd.DataFrame
    charts: Sequence[Chart]
    charts_enabled: bool = True
    notes: Sequence[str] = field(default_factory=tuple)
    compare: CompareContent | None = None
    expected: pd.DataFrame | None = None
    cpu: pd.DataFrame | None = None
    files: Sequence[str] = field(default_factory=tuple)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;padding:0 2em 3em;
color:#222;background:#fafafa;line-height:1.4}
h1{margin:.6em 0 .2em;font-size:1.7em}h2{margin-top:1.6em;border-bottom:2px solid #ddd;
padding-bottom:.2em}h3{margin-bottom:.3em}
.verdict{display:inline-block;padding:.25em .8em;border-radius:.3em;color:#fff;font-weight:bold;
font-size:1.3em;margin-right:.6em}.PASS{background:#2ca02c}.FAIL{background:#d62728}
.UNKNOWN{background:#7f7f7f}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.5em 1.5em;
margin:1em 0}.facts div{background:#fff;border:1px solid #e3e3e3;border-radius:.3em;padding:.4em .7em}
.facts b{display:block;font-size:.8em;color:#666;font-weight:normal}
.facts span.v{white-space:nowrap}.facts div.wide{grid-column:1/-1}
.cpu{background:#fdecea;border:2px solid #d62728;border-radius:.3em;padding:.6em 1em;
margin:1em 0;font-size:1.1em}.cpu b{color:#a31515}
ul.examples{margin:.1em 0 .3em;font-size:.9em;color:#444}ul.examples code{white-space:pre-wrap;
word-break:break-all}
ul.files{columns:3;font-size:.92em}
ul.reasons{margin:.3em 0 0 0}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1em;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0;position:sticky;top:0}td.t,th.t{text-align:left}
td.pass{color:#2ca02c;font-weight:bold}td.fail{color:#d62728;font-weight:bold}
td.up{color:#d62728}td.down{color:#2ca02c}tr.flip td{background:#fff3cd}
img.chart{width:100%;max-width:1600px;border:1px solid #ddd;background:#fff}
.note{color:#555;font-size:.92em}.box{overflow-x:auto}
details summary{cursor:pointer;color:#1f5fa8}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


_WORSE_WHEN_UP = ("p50", "p90", "p95", "p99", "max", "error")


def _plain(v: float) -> str:
    """A float below 1 without scientific notation (3 significant digits)."""
    return np.format_float_positional(v, precision=3, unique=False, fractional=False, trim="-")


def _is_unix_s_column(column: str) -> bool:
    return column == "unix_s" or column.endswith("_unix_s")


def _clock(value: float) -> str:
    return datetime.fromtimestamp(float(value), tz=timezone.utc).strftime("%H:%M:%S")


def _fmt(value: Any, column: str = "") -> tuple[str, str]:
    """Cell text and CSS class for one value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–", ""
    if value is pd.NA or value is pd.NaT:
        return "–", ""
    if _is_unix_s_column(column) and isinstance(value, (int, float, np.integer, np.floating)) \
            and not isinstance(value, (bool, np.bool_)) and 0 < float(value) < 1e11:
        return _clock(value), ""
    if isinstance(value, (bool, np.bool_)):
        return ("PASS", "pass") if value else ("FAIL", "fail")
    if column in ("code", "exit_code") and isinstance(value, (int, float, np.integer, np.floating)):
        return str(int(value)), ""
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        return f"{int(value):,}", ""
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "dtype").kind == "f"):
        v = float(value)
        if column.endswith("change_pct"):
            cls = ""
            if column.startswith(_WORSE_WHEN_UP):  # latency / errors: up is worse
                cls = "up" if v > 0.5 else ("down" if v < -0.5 else "")
            return f"{v:+.1f}%", cls
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}", ""
        if abs(v) >= 100:
            return f"{v:,.1f}", ""
        if abs(v) >= 1:
            return f"{v:.2f}", ""
        return _plain(v), ""
    text = str(value)
    if column in ("base", "this") and text in ("pass", "fail"):
        return text.upper(), text
    return text, "t"


def table_html(df: pd.DataFrame, *, index: bool = False, max_rows: int | None = None,
               empty: str = "no rows", row_class: Sequence[str] | None = None) -> str:
    """A DataFrame as an escaped HTML table (numbers right-aligned, NaN as an en dash)."""
    if df is None or df.empty:
        return f'<p class="note">{_esc(empty)}</p>'
    frame = df.reset_index() if index else df
    shown = frame if max_rows is None else frame.head(max_rows)
    cols = [str(c) for c in shown.columns]
    text_cols = {c for c in cols if shown[c].dtype == object or str(shown[c].dtype) in
                 ("str", "string", "category")}
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">'
                   f'{_esc(c.replace("unix_s", "time (UTC)") if _is_unix_s_column(c) else c)}'
                   "</th>" for c in cols)
    rows = []
    for i, rec in enumerate(shown.itertuples(index=False, name=None)):
        cells = []
        for c, v in zip(cols, rec):
            text, cls = _fmt(v, c)
            cells.append(f'<td class="{cls}">{_esc(text)}</td>')
        rc = f' class="{_esc(row_class[i])}"' if row_class is not None and i < len(row_class) \
            and row_class[i] else ""
        rows.append(f"<tr{rc}>{''.join(cells)}</tr>")
    more = ""
    if max_rows is not None and len(frame) > max_rows:
        more = (f'<p class="note">showing the first {max_rows:,} of {len(frame):,} rows; '
                "the full table is in the CSV file</p>")
    return (f'<div class="box"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table></div>{more}")


def _img(chart: Chart) -> str:
    if chart.png is None:
        return '<p class="note">chart not drawn</p>'
    data = base64.b64encode(chart.png).decode("ascii")
    return (f'<img class="chart" alt="{_esc(chart.title)}" '
            f'src="data:image/png;base64,{data}">')


def _fmt_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "unknown"
    s = float(seconds)
    if s >= 120:
        return f"{s / 60:.1f} min ({s:,.0f} s)"
    return f"{s:.1f} s"


def _when_text(value: Any) -> str:
    """ISO 8601 times as ``2026-12-01 21:44:28 UTC`` (one unbreakable value)."""
    if not value:
        return "–"
    text = str(value)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
        return dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _num_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v.is_integer():
            return f"{int(v):,}"
        return f"{v:,.2f}" if abs(v) >= 1 else _plain(v)
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _load_text(load: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Headline facts of the load profile (summary.json ``load``)."""
    facts = []
    if "users" in load:
        spawn = f" (spawn {_num_text(load['spawn_rate'])}/s)" if "spawn_rate" in load else ""
        facts.append(("users (asked)", f"{_num_text(load['users'])}{spawn}"))
    if "run_time" in load:
        rt = load["run_time"]
        facts.append(("run time (asked)", _fmt_duration(rt) if isinstance(rt, (int, float))
                      and not isinstance(rt, bool) else str(rt)))
    if "arrival_rate" in load and load["arrival_rate"] not in (0, 0.0, None):
        facts.append(("arrival rate", f"{_num_text(load['arrival_rate'])} logins/s (open model)"))
    sc = load.get("scenarios")
    if isinstance(sc, Mapping) and sc:
        facts.append(("scenarios (weight)", [f"{k} {_num_text(v)}" for k, v in sc.items()]))
    return facts


def _fact_value(value: Any) -> str:
    """One fact's value: a list wraps only between its items, never inside one."""
    if isinstance(value, (list, tuple)):
        return ", ".join(f'<span class="v">{_esc(v)}</span>' for v in value)
    return f'<span class="v">{_esc(value)}</span>'



def _names(word: str, sentence: str) -> bool:
    """``word`` occurs in ``sentence`` as a whole name (not inside another word)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", sentence) is not None


def _headline_html(h: Mapping[str, Any]) -> str:
    verdict = str(h.get("verdict", "UNKNOWN"))
    code = h.get("exit_code")
    target = str(h.get("target") or "unknown")
    if h.get("target_kind") and h.get("target_kind") not in target:
        target = f"{target} ({h['target_kind']})"
    facts: list[tuple[str, Any]] = [
        ("target", target), ("policy", h.get("policy")),
        ("users (peak)", f"{h['users_peak']:,}" if isinstance(h.get("users_peak"), int) else "unknown"),
        ("duration", _fmt_duration(h.get("duration_s"))),
        ("exit code", code if code is not None else "unknown"),
        ("started", _when_text(h.get("started"))), ("finished", _when_text(h.get("finished"))),
    ]
    if h.get("host"):
        facts.insert(1, ("target URL", h["host"]))  # summary.json host: the URL the load went to
    load = h.get("load") if isinstance(h.get("load"), Mapping) else {}
    facts += _load_text(load)
    if "scenarios" not in load and h.get("scenarios_ran"):
        facts.append(("scenarios (ran)", list(h["scenarios_ran"])))
    versions = h.get("versions") if isinstance(h.get("versions"), Mapping) else {}
    if versions:
        facts.append(("versions", [f"{k} {v}" for k, v in versions.items()]))
    facts_html = "".join(f"<div><b>{_esc(k)}</b>{_fact_value(v)}</div>" for k, v in facts)
    if load.get("argv"):
        facts_html += (f'<div class="wide"><b>command line</b><code>{_esc(load["argv"])}'
                       "</code></div>")
    reasons = list(h.get("reasons") or [])
    examples = list(h.get("check_examples") or [])
    items = []
    shown: set[str] = set()
    for r in reasons:
        items.append(f"<li>{_esc(r)}")
        for ex in examples:  # one example per failing check, under its first reason
            if ex["check"] not in shown and _names(ex["check"], r):
                shown.add(ex["check"])
                items.append(f'<ul class="examples"><li>example: <code>{_esc(ex["example"])}'
                             "</code></li></ul>")
        items.append("</li>")
    for ex in examples:
        if ex["check"] not in shown:
            items.append(f'<li>check {_esc(ex["check"])} failed<ul class="examples"><li>'
                         f'example: <code>{_esc(ex["example"])}</code></li></ul></li>')
    reasons_html = f'<ul class="reasons">{"".join(items)}</ul>' if items else ""
    cpu = list(h.get("cpu_warnings") or [])
    cpu_html = ('<div class="cpu">' + "<br>".join(f"<b>⚠ {_esc(w)}</b>" for w in cpu)
                + "</div>") if cpu else ""
    return (f'<h1>Load test report: {_esc(h.get("run_id", ""))}</h1>'
            f'<div><span class="verdict {_esc(verdict)}">{_esc(verdict)}</span>'
            f'<span>exit code {_esc(code if code is not None else "unknown")}</span></div>'
            f"{reasons_html}{cpu_html}<div class=\"facts\">{facts_html}</div>")


def _compare_body(c: CompareContent, *, level: str = "h2") -> str:
    sub = "h3" if level == "h2" else "h4"
    flips = c.gates
    row_class = None
    n_flip = 0
    if flips is not None and not flips.empty:
        flipped = flips["change"].isin(["pass -> fail", "fail -> pass"])
        n_flip = int(flipped.sum())
        row_class = ["flip" if f else "" for f in flipped]
    bh = c.base_headline
    parts = [
        f"<{level}>Compared with {_esc(c.base_name)}</{level}>",
        f'<p>Base run <b>{_esc(c.base_name)}</b>: {_esc(bh.get("verdict", "UNKNOWN"))} '
        f'(exit code {_esc(bh.get("exit_code") if bh.get("exit_code") is not None else "unknown")}'
        f"); this run <b>{_esc(c.this_name)}</b>. change % = (this - base) / base; for "
        "latencies and errors a positive change is worse (red).</p>",
        f"<{sub}>Per operation: base vs this</{sub}>",
        table_html(c.ops, index=True, empty="no operations in either run"),
        f"<{sub}>Gates ({n_flip} flipped)</{sub}>",
        table_html(flips, empty="no gates in either summary.json", row_class=row_class),
    ]
    if c.chart is not None:
        parts += [f"<{sub}>{_esc(c.chart.title)}</{sub}>",
                  f'<p class="note">{_esc(c.chart.caption)}</p>', _img(c.chart)]
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def _link(path: str) -> str:
    return f'<a href="{_esc(path)}">{_esc(path)}</a>'


def render_report(content: ReportContent) -> str:
    """The full report page as HTML text."""
    h = content.headline
    parts = [_headline_html(h)]
    if content.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in content.notes)
                     + "</ul>")
    expected = content.expected if content.expected is not None else pd.DataFrame()
    parts += [
        "<h2>Operations</h2>",
        '<p class="note">Latency = end - intended (includes time queued before sending, so it '
        "is free of coordinated omission); service = end - start. Percentiles (nearest-rank) "
        "and max are over <b>successful (ok) rows only</b>; – means the op had no ok rows, "
        "or is an event (kind event: a notice the server pushed, not a request, so it has no "
        "latency). expected = the code the scenario provoked on purpose came back: a pass, "
        "not a failure. rate_per_s = count / run duration. All times in milliseconds.</p>",
        table_html(content.ops, index=True, empty="no operations recorded"),
        "<h2>Result codes</h2>",
        '<p class="note">Rows per protocol code over all operations (0 = success, -1 = '
        "transport error or timeout); expected = of those rows, how many the scenario "
        "provoked on purpose (not errors).</p>",
        table_html(content.codes, empty="no operations recorded"),
        "<h2>Expected outcomes</h2>",
        '<p class="note">Codes a scenario asked for on purpose (e.g. a login with a stale '
        "sig must be refused with 70001). They count as passes, never as errors.</p>",
        table_html(expected, empty="no operation of this run expected a failure code"),
        "<h2>Gates</h2>",
        table_html(content.gates, empty="no gates evaluated (none configured, or no summary.json)"),
        "<h2>Correctness checks</h2>",
        table_html(content.checks, empty="no correctness checks evaluated (no summary.json)"),
    ]
    if content.cpu is not None and not content.cpu.empty:
        parts += ["<h2>CPU</h2>",
                  '<p class="note">CPU use (%) of the load generators and the target during '
                  "the run (summary.json cpu).</p>", table_html(content.cpu)]
    parts.append("<h2>Charts</h2>")
    if not content.charts_enabled:
        parts.append('<p class="note">charts were disabled for this report (--no-charts)</p>')
    for chart in content.charts:
        file = f" ({_link(chart.file)})" if chart.file else ""
        parts += [f"<h3>{_esc(chart.title)}</h3>",
                  f'<p class="note">{_esc(chart.caption)}{file}</p>', _img(chart)]
    if content.compare is not None:
        parts.append(_compare_body(content.compare))
    files = list(content.files)
    tables = [f for f in files if f.startswith("tables/")] or [
        f"tables/{n}" for n in ("ops.csv", "codes.csv", "per_second.csv", "gates.csv",
                                "checks.csv")]
    others = [f for f in files if not f.startswith("tables/")]
    parts += [
        "<h2>Per second</h2>",
        "<details><summary>Operations and latency per 1 s bucket of finish time "
        f"({len(content.per_second):,} rows; time in UTC)</summary>",
        table_html(content.per_second, max_rows=PER_SECOND_HTML_ROWS, empty="no operations"),
        "</details>",
        "<h2>Files</h2>",
        '<p class="note">Tables as CSV: ' + ", ".join(_link(t) for t in tables)
        + ". Charts as PNG: " + (", ".join(_link(c.file) for c in content.charts if c.file)
                                 or _link("charts/")) + ".</p>",
    ]
    if others:
        parts.append('<ul class="files">' + "".join(f"<li>{_link(f)}</li>" for f in others)
                     + "</ul>")
    return _page(f"Report {h.get('run_id', '')}", "\n".join(parts))


def render_compare(content: CompareContent, this_headline: Mapping[str, Any]) -> str:
    """The stand-alone compare page (compare.html) as HTML text."""
    body = (f"<h1>Run comparison: {_esc(content.this_name)} vs {_esc(content.base_name)}</h1>"
            f'<div><span class="verdict {_esc(this_headline.get("verdict", "UNKNOWN"))}">'
            f'{_esc(this_headline.get("verdict", "UNKNOWN"))}</span> this run</div>'
            + _compare_body(content))
    return _page(f"Compare {content.this_name} vs {content.base_name}", body)

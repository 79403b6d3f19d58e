"""harness.results.report.html: tables and the page are escaped, self-contained and readable."""
from __future__ import annotations

import math

import pandas as pd

from harness.results.report.html import Chart, ReportContent, render_report, table_html


def test_table_cells():
    df = pd.DataFrame({"code": [70001, -1], "name": ["<b>x</b>", "-1 TRANSPORT"],
                       "count": [12345, 2], "p99_ms": [1.23456, math.nan],
                       "passed": [True, False], "p99_ms_change_pct": [12.0, -40.0],
                       "count_change_pct": [50.0, -10.0]})
    html = table_html(df)
    assert ">70001<" in html and "70,001" not in html  # codes are not numbers to group
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert ">12,345<" in html and ">1.23<" in html and ">–<" in html
    assert 'class="pass">PASS<' in html and 'class="fail">FAIL<' in html
    assert 'class="up">+12.0%<' in html and 'class="down">-40.0%<' in html
    assert 'class="">+50.0%<' in html  # more throughput is not coloured as worse
    assert "no rows" in table_html(pd.DataFrame())


def test_table_row_cap():
    html = table_html(pd.DataFrame({"second": range(10)}), max_rows=3)
    assert html.count("<tr>") == 4 and "first 3 of 10 rows" in html


def test_page_embeds_charts_and_headline():
    empty = pd.DataFrame()
    content = ReportContent(
        headline={"run_id": "run<1>", "verdict": "PASS", "exit_code": 0, "target": "embedded",
                  "policy": "single_platform", "users_peak": 1200, "duration_s": 600.0,
                  "reasons": ["exit code 0: every gate and every correctness check passed"]},
        ops=empty, codes=empty, gates=empty, checks=empty, per_second=empty,
        charts=[Chart("1. Latency", "caption", b"\x89PNG fake"), Chart("2. Missing", "c", None)],
        notes=["3 undecodable journal line(s) were skipped"])
    page = render_report(content)
    assert page.startswith("<!DOCTYPE html>") and "run&lt;1&gt;" in page
    assert 'class="verdict PASS"' in page and "1,200" in page and "10.0 min" in page
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in page
    assert "chart not drawn" in page and "3 undecodable journal line(s)" in page
    assert "http" not in page.replace("http-equiv", "")

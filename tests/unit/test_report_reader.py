"""What a careful reader of the report notices ("Numbers a person can trust"): every chart
and the page, with and without the newer summary.json / journal fields."""
from __future__ import annotations

import csv
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from harness.results.report import aggregate as agg
from harness.results.report import build_report, plot
from harness.results.report.html import table_html
from harness.results.report.load import load_journal
from tests.unit.test_report_data import row, write_run

NO_FAULTS = pd.DataFrame({"start_s": [], "end_s": [], "label": []})


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# --------------------------------------------------------------------------- transform


def test_expect_judges_outcomes(tmp_path):
    write_run(tmp_path, [
        row("login", 100, latency_ms=2, outcome="fail", code=70001, expect=70001),  # asked for
        row("login", 200, latency_ms=2, outcome="ok", code=0, expect=70001),  # stale sig accepted
        row("login", 300, latency_ms=2, outcome="fail", code=6206),  # a plain failure
        row("login", 400, latency_ms=2, expect="junk"),  # an odd extra never costs the row
        row("login", 500, latency_ms=2),
    ])
    df, counts = agg.apply_expect(load_journal(tmp_path))
    assert df["outcome"].astype(str).tolist() == ["expected", "fail", "fail", "ok", "ok"]
    assert counts == {"expected": 1, "unexpected": 1}
    ops = agg.op_summary(df)
    assert (ops.loc["login", "ok"], ops.loc["login", "fail"], ops.loc["login", "expected"]) == (2, 2, 1)
    assert agg.error_code_counts(df).set_index("code")["count"].to_dict() == {0: 1, 6206: 1}
    assert agg.expected_table(df).to_dict("records") == [
        {"op": "login", "code": 70001, "name": "70001 USERSIG_EXPIRED", "count": 1}]
    codes = agg.code_counts(df).set_index("code")
    assert codes.loc[70001, "expected"] == 1 and codes.loc[0, "expected"] == 0
    cps = agg.codes_per_second(df)
    assert cps.loc[cps["code"] == 70001, "expected"].tolist() == [True]


def test_old_journal_is_left_alone(tmp_path):
    write_run(tmp_path, [row("login", 100, latency_ms=2, outcome="fail", code=70001)])
    df = load_journal(tmp_path)
    same, counts = agg.apply_expect(df)
    assert same is df and counts == {"expected": 0, "unexpected": 0}


def test_event_ops_from_summary_kind():
    assert agg.event_ops({}) >= {"kicked_offline", "sig_expired", "disconnect"}
    ev = agg.event_ops({"ops": {"disconnect": {"kind": "request"}, "presence": {"kind": "event"}}})
    assert "presence" in ev and "disconnect" not in ev and "kicked_offline" in ev


# --------------------------------------------------------------------------- chart 1


def _ps(op: str, seconds, p50, ok=20) -> pd.DataFrame:
    seconds = list(seconds)
    p50 = np.asarray(p50, dtype="float64")
    return pd.DataFrame({"second": seconds, "op": op, "ok": ok, "fail": 0, "info": 0,
                         "p50_ms": p50, "p95_ms": p50 * 1.5, "p99_ms": p50 * 2})


def test_latency_over_time_rules():
    ps = pd.concat([_ps("login", [0, 1, 2, 7, 8, 9], [2, 2, 3, 2, 2, 2]),
                    _ps("race", range(10), [500] * 10),
                    _ps("connect", [0, 9], [1, 50])], ignore_index=True)  # connect spans 100x
    points = pd.DataFrame({"op": ["relogin"] * 3, "second": [1.2, 4.5, 8.0],
                           "latency_ms": [3.0, 4.0, 9.0]})
    fig = plot.chart_latency_over_time(ps, ["login", "race", "relogin", "connect"], NO_FAULTS, "t",
                                       gates={"login": {"p99_ms": 5.0}, "race": {"p99_ms": 1e5}},
                                       points=points)
    login, race, relogin, connect = fig.axes[:4]
    # one y-scale rule for every panel (login alone spans < 30x, but the rule is chart-wide)
    assert {ax.get_yscale() for ax in (login, race, relogin, connect)} == {"log"}
    narrow = plot.chart_latency_over_time(ps[ps["op"] == "login"], ["login", "race"], NO_FAULTS,
                                          "t", points=points.iloc[:0])
    assert {ax.get_yscale() for ax in narrow.axes[:2]} == {"linear"}
    assert all(ax.get_ylim()[0] == 0 for ax in narrow.axes[:1])
    # no line across the empty buckets 3..6
    p50 = next(line for line in login.get_lines() if line.get_label() == "p50")
    y = np.asarray(p50.get_ydata(), dtype="float64")
    assert np.isnan(y).sum() >= 4
    # the gate within reach is a line, the one far above is named in a note
    assert "gate p99" in [line.get_label() for line in login.get_lines()]
    assert any("gate p99" in t and "above the chart" in t for t in _texts(race))
    # the sparse op shows its operations as points, not collapsed percentiles
    assert relogin.get_lines() == [] or all(line.get_label() not in ("p50", "p95", "p99")
                                            for line in relogin.get_lines())
    assert len(relogin.collections) == 1 and len(relogin.collections[0].get_offsets()) == 3


def test_sparse_ops_rule():
    ps = pd.concat([_ps("login", range(5), [1] * 5, ok=50), _ps("relogin", range(5), [1] * 5, ok=2)])
    assert agg.sparse_ops(ps, ["login", "relogin"]) == ["relogin"]


def test_latency_gates_from_config():
    cfg = {"gates": {"latency_ms": {"login": {"p99": 2000, "p50_ms": 100}, "x": "junk"}}}
    assert agg.latency_gates(cfg) == {"login": {"p99_ms": 2000.0, "p50_ms": 100.0}}
    assert agg.latency_gates({}) == {}


# --------------------------------------------------------------------------- chart 2


def test_cdf_shared_x_service_line_and_excluded_failures():
    cdf = pd.DataFrame({
        "op": ["login"] * 4 + ["race"] * 4,
        "kind": ["latency", "latency", "service", "service"] * 2,
        "ms": [1.0, 2.0, 0.5, 1.0, 500.0, 600.0, 400.0, 450.0],
        "fraction": [0.5, 1.0, 0.5, 1.0] * 2, "n": [2] * 8})
    fig = plot.chart_latency_cdf(cdf, ["login", "race"], "t", excluded={"login": 3})
    a, b = fig.axes[:2]
    assert a.get_xlim() == b.get_xlim()
    assert a.get_xlim()[0] < 0.5 and a.get_xlim()[1] > 600
    for ax in (a, b):  # the promised service-time line, dashed, beside latency
        styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
        assert styles["service time (end - start)"] == "--"
        assert styles["latency (end - intended)"] == "-"
    assert any("n = 2 ok" in t and "3 failed excluded" in t for t in _texts(a))
    assert any("no failures" in t for t in _texts(b))


# --------------------------------------------------------------------------- chart 3


def test_throughput_failures_visible_and_users_cover_run():
    ps = pd.DataFrame({"second": [0, 1, 2, 3, 4, 5, 5], "op": ["login"] * 6 + ["kicked_offline"],
                       "ok": [900, 900, 900, 900, 900, 900, 50], "fail": [0, 2, 0, 0, 0, 0, 0],
                       "info": [0] * 7, "expected": [0] * 7})
    users = pd.DataFrame({"second": [0.2, 2.0, 3.0], "users": [10, 20, 20]})
    fig = plot.chart_throughput(ps, users, "users (Locust)", NO_FAULTS, "t")
    top, bottom = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["ok", "users (Locust)"]
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == ["fail: 2"]
    assert bottom.get_ylim()[1] < 10  # its own scale: 2 failures are not a hairline under 900
    users_line = fig.axes[2].get_lines()[0]
    assert max(users_line.get_xdata()) == top.get_xlim()[1] == 6.0
    assert min(users_line.get_xdata()) == 0.0
    # the event (kicked_offline) is not a request: the stacked top is 900, not 950
    assert top.get_ylim()[1] < 950


# --------------------------------------------------------------------------- chart 4


def test_error_codes_colour_per_code_integer_ticks_expected_apart():
    codes_ps = pd.DataFrame({"second": [0, 1, 1, 2], "code": [-1, 70001, 6206, 70001],
                             "name": ["-1 TRANSPORT", "70001 USERSIG_EXPIRED", "6206 X",
                                      "70001 USERSIG_EXPIRED"],
                             "expected": [False, False, False, True], "count": [3, 1, 2, 4]})
    totals = pd.DataFrame({"code": [-1, 6206, 70001], "name": ["-1 TRANSPORT", "6206 X",
                                                                "70001 USERSIG_EXPIRED"],
                           "count": [3, 2, 1]})
    expected = pd.DataFrame({"code": [70001], "name": ["70001 USERSIG_EXPIRED"], "count": [4]})
    fig = plot.chart_error_codes(codes_ps, totals, NO_FAULTS, (0.0, 3.0), "t", expected=expected)
    ax_time, ax_tot = fig.axes[:2]
    legend = ax_time.get_legend()
    by_label_time = {t.get_text(): to_rgba(h.get_facecolor())
                     for t, h in zip(legend.get_texts(), legend.legend_handles)}
    labels_tot = [t.get_text() for t in ax_tot.get_yticklabels()]
    by_label_tot = {}
    for bar in ax_tot.patches:
        y = bar.get_y() + bar.get_height() / 2
        idx = min(range(len(ax_tot.get_yticks())), key=lambda i: abs(ax_tot.get_yticks()[i] - y))
        by_label_tot[labels_tot[idx]] = (to_rgba(bar.get_facecolor()), bar.get_hatch())
    for code in ("-1 TRANSPORT", "6206 X", "70001 USERSIG_EXPIRED"):
        assert np.allclose(by_label_time[code][:3], by_label_tot[code][0][:3]), code
    assert len({by_label_time[c][:3] for c in ("-1 TRANSPORT", "6206 X", "70001 USERSIG_EXPIRED")}) == 3
    assert "expected: 70001 USERSIG_EXPIRED" in by_label_time
    color, hatch = by_label_tot["70001 USERSIG_EXPIRED (expected)"]
    assert hatch and np.allclose(color[:3], color[0])  # grey and hatched
    assert all(float(v).is_integer() for v in ax_time.get_yticks())


# --------------------------------------------------------------------------- chart 5


def test_scenarios_only_those_that_ran():
    races = pd.DataFrame({"race": ["r1", "r2", "r3"], "survivors": [1, 1, 2], "devices": [3, 3, 3],
                          "outcome": ["ok", "ok", "fail"], "policy": ["single_platform"] * 3})
    kicks = pd.DataFrame({"reason": ["multi_device"], "delay_ms": [3.0]})
    fig = plot.chart_scenarios(races, kicks, np.empty(0), np.empty(0), None, "t", ran={"kick_race"})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    assert not any("no data" in t for ax in visible for t in _texts(ax))
    surv = visible[0]
    assert surv.get_ylabel() == "% of races"
    assert [int(t) for t in surv.get_xticks()] == [0, 1, 2, 3]  # every possible count
    assert any("2 (67%)" in t for t in _texts(surv))
    for title in _titles(fig):  # no jargon for a reader who does not know the protocol
        assert "kickedOffline" not in title and "ok relogin" not in title and "ok switch" not in title
    none = plot.chart_scenarios(races.iloc[:0], kicks.iloc[:0], np.empty(0), np.empty(0), None,
                                "t", ran={"mass_login"})
    assert len([ax for ax in none.axes if ax.get_visible()]) == 1


def test_scenario_run_names(tmp_path):
    write_run(tmp_path, [row("login", 100, latency_ms=1, scenario="kick_race"),
                         row("fault", 200, scenario="faults")])
    assert agg.scenarios_run(load_journal(tmp_path), {"scenarios": ["mass_login"]}) == {"kick_race"}
    assert agg.scenarios_run(load_journal(tmp_path).iloc[:0],
                             {"load": {"scenarios": {"a": 1, "b": 0}}}) == {"a"}


# --------------------------------------------------------------------------- chart 6


def test_checks_strip_one_entry_per_check():
    checks = pd.DataFrame({"check": ["a", "b", "c", "d", "e"], "violations": [0, 0, 2, 0, 0],
                           "passed": [True, True, False, True, True]})
    fig = plot.chart_checks(pd.DataFrame({"check": [], "second": []}), checks, NO_FAULTS, True,
                            None, "t")
    strip = fig.axes[0]
    names = [t.get_text() for t in strip.texts if (t.get_gid() or "").startswith("check:")]
    assert names == ["✓ a", "✓ b", "✗ c", "✓ d", "✓ e"]
    assert "2 violation(s)" in _texts(strip)
    ok = checks.assign(violations=0, passed=True)
    small = plot.chart_checks(pd.DataFrame({"check": [], "second": []}), ok, NO_FAULTS, True,
                              None, "t")
    assert small.get_size_inches()[1] * plot.DPI < 300  # a strip, not a full-size "0 violations"
    assert len(small.axes) == 1 and "0 violations" not in " ".join(_texts(small.axes[0]))


# --------------------------------------------------------------------------- html


def test_cells_a_reader_can_read():
    df = pd.DataFrame({"gate": ["error_ratio"], "value": [2.0252e-05], "limit": [0.05]}).astype(
        {"value": "object"})
    html = table_html(df)
    assert "e-" not in html and ">0.0000203<" in html and ">0.05<" in html
    ps = pd.DataFrame({"second": [0], "unix_s": [1_700_000_000], "count": [3]})
    html = table_html(ps)
    assert ">22:13:20<" in html and "time (UTC)" in html and "1,700,000,000" not in html


NEW_SUMMARY = {
    "run_id": "r-new", "started": "2026-12-01T21:44:28.423+00:00",
    "finished": "2026-12-01T21:44:59.400+00:00", "duration_s": 3.0, "target": "embedded",
    "target_kind": "reference server", "host": "vm-7", "policy": "single_platform",
    "exit_code": 4, "verdict": "FAIL",
    "reasons": ["check last_login_wins: 1 violation(s)", "gate error_ratio failed"],
    "load": {"users": 40, "spawn_rate": 20, "run_time": "30s",
             "scenarios": {"mass_login": 1, "kick_race": 2}, "arrival_rate": 0,
             "argv": ["locust", "-u", "40"]},
    "versions": {"harness": "0.9.1", "locust": "2.47.0", "python": "3.12.3"},
    "ops": {"login": {"kind": "request"}, "kicked_offline": {"kind": "event"}},
    "gates": {"error_ratio": {"limit": 0.05, "value": 2.0252e-05, "passed": False}},
    "checks": {"last_login_wins": {"violations": 1, "examples": [{"race": "r9", "survivor": "S1"}]},
               "policy_limit": {"violations": 0, "examples": []}},
    "cpu": {"generators": {"w0": {"mean": 97.0, "p95": 100.0, "max": 100.0}},
            "target": {"mean": 40.0, "p95": 60.0, "max": 70.0},
            "generator_saturated": True, "target_saturated": False,
            "notes": ["w0 was above 90 % for 25 s"]},
}


@pytest.fixture(scope="module")
def new_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    rows = [row("login", 100 + i * 20, latency_ms=2 + i % 5, session=f"S{i}") for i in range(100)]
    rows += [row("login", 2100 + i, latency_ms=1, outcome="fail", code=70001, expect=70001,
                 scenario="relogin_expiry") for i in range(5)]
    rows += [row("login", 2200, latency_ms=1, outcome="fail", code=6206)]
    rows += [row("kicked_offline", 2300 + i, by=f"S{i}", scenario="kick_race") for i in range(3)]
    write_run(root, rows, summary=NEW_SUMMARY,
              config="gates:\n  latency_ms:\n    login: {p99: 5}\n  violations: 0\n")
    return root, build_report(root).read_text(encoding="utf-8")


def test_headline_lists_load_target_versions_cpu(new_run):
    _, page = new_run
    for text in ("40 (spawn 20/s)", "30s", ('<span class="v">mass_login 1</span>, '
                                            '<span class="v">kick_race 2</span>'),
                 "embedded (reference server)", "vm-7",
                 '<span class="v">harness 0.9.1</span>', '<span class="v">python 3.12.3</span>',
                 "locust -u 40", "2026-12-01 21:44:28 UTC"):
        assert text in page, text
    assert '<span class="v">2026-12-01 21:44:28 UTC</span>' in page  # one unbreakable value
    assert 'class="cpu"' in page and "latency figures are not valid" in page
    assert page.index('class="cpu"') < page.index("<h2>Operations</h2>")  # prominent
    assert "w0 was above 90 % for 25 s" in page
    # the failure headline shows one example for the failing check
    assert page.count("example: <code>") == 1 and "&quot;survivor&quot;: &quot;S1&quot;" in page


def test_page_events_ratios_links_expected(new_run):
    root, page = new_run
    assert not re.search(r">[-\d.]+e-\d+<", page)  # no scientific notation in any cell
    assert "0.0000203" in page
    ops_table = page[page.index("<h2>Operations</h2>"):page.index("<h2>Result codes</h2>")]
    kick_row = re.search(r"<tr><td class=\"t\">kicked_offline</td>(.*?)</tr>", ops_table).group(1)
    cells = re.findall(r">([^<]*)</td>", kick_row)
    # count, ok, fail, info, expected, rate, p50..max, service p50/p99, kind
    assert cells[6:13] == ["–"] * 7 and cells[-1] == "event"
    for link in ("tables/ops.csv", "tables/expected.csv", "summary.json", "config.yaml",
                 "journal/w0.jsonl", "charts/latency_cdf.png"):
        assert f'<a href="{link}">' in page, link
    expected = page[page.index("<h2>Expected outcomes</h2>"):page.index("<h2>Gates</h2>")]
    assert "70001 USERSIG_EXPIRED" in expected and ">5<" in expected
    ops = {r["op"]: r for r in csv.DictReader((root / "tables" / "ops.csv").open())}
    assert (ops["login"]["fail"], ops["login"]["expected"]) == ("1", "5")  # not counted as errors
    assert ops["kicked_offline"]["p50_ms"] == "" and ops["kicked_offline"]["kind"] == "event"
    with Image.open(root / "charts" / "checks.png") as img:
        assert img.size[0] == 1600


def test_old_run_renders_without_new_keys(tmp_path):
    write_run(tmp_path, [row("login", 100 + i, latency_ms=1) for i in range(5)]
              + [row("disconnect", 300)], summary={"exit_code": 0, "ops": {}})
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "PASS" in page and 'class="cpu"' not in page and "could not be drawn" not in page
    assert '<b>scenarios (ran)</b><span class="v">mass_login</span>' in page  # from the journal
    ops = {r["op"]: r for r in csv.DictReader((tmp_path / "tables" / "ops.csv").open())}
    assert ops["disconnect"]["kind"] == "event" and ops["disconnect"]["p50_ms"] == ""


def test_race_settle_note():
    assert agg.race_settle_note([]) is None
    new = agg.race_settle_note([{"settle_ms": 500, "data": {"settle_ms": 500}}])
    assert new.startswith("race latency excludes the settle wait") and "500 ms" in new
    old = agg.race_settle_note([{"data": {"settle_ms": 500}}])
    assert old.startswith("race latency includes the settle wait") and "500 ms" in old


def test_one_example_per_failing_check_even_when_named_twice():
    from harness.results.report.html import _headline_html

    h = {"run_id": "r", "verdict": "FAIL", "exit_code": 4,
         "reasons": ["check a: 2 violation(s)", "check a failed again (a)", "check b: 1"],
         "check_examples": [{"check": "a", "example": "{x}"}, {"check": "b", "example": "{y}"},
                            {"check": "c", "example": "{z}"}]}
    page = _headline_html(h)
    assert page.count("example: <code>") == 3  # a, b and c (c had no reason line of its own)
    assert page.count("{x}") == 1 and "check c failed" in page


def test_compare_cdf_shares_x_range():
    def curve(op, ms):
        return pd.DataFrame({"op": op, "kind": "latency", "ms": ms, "fraction": [0.5, 1.0],
                             "n": 2})
    base = pd.concat([curve("login", [1.0, 2.0]), curve("race", [500.0, 600.0])])
    this = pd.concat([curve("login", [1.5, 3.0]), curve("race", [400.0, 700.0])])
    fig = plot.chart_compare_cdf(base, this, ["login", "race"], "b", "t")
    a, b = fig.axes[:2]
    assert a.get_xlim() == b.get_xlim() and a.get_xlim()[0] < 1.0 < 700 < a.get_xlim()[1]

"""harness.results.report.plot: each chart function draws into the Axes it is given and says so plainly
when there is nothing to draw."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from harness.results.report import plot

EMPTY_PS = pd.DataFrame({"second": pd.Series([], dtype="int64"), "op": pd.Series([], dtype="str"),
                         "p50_ms": [], "p95_ms": [], "p99_ms": []})
NO_FAULTS = pd.DataFrame({"start_s": [], "end_s": [], "label": []})
FAULTS = pd.DataFrame({"start_s": [2.0], "end_s": [4.0], "label": ["server_stall"]})


def _texts(ax) -> str:
    return " | ".join(t.get_text() for t in ax.texts)


def test_figure_is_1600x900():
    fig, axes = plot.new_figure(2, 2)
    assert axes.shape == (2, 2)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=plot.DPI, format="png")
    assert Image.open(io.BytesIO(buf.getvalue())).size == (1600, 900)


def test_empty_inputs_say_no_data():
    fig, axes = plot.new_figure(2, 4)
    a = axes.ravel()
    plot.draw_latency_over_time(a[0], EMPTY_PS, "login", NO_FAULTS)
    plot.draw_cdf(a[1], pd.DataFrame(columns=["kind", "ms", "fraction"]), "login")
    plot.draw_throughput(a[2], pd.DataFrame(columns=["second", "ok", "fail", "info"]),
                         pd.DataFrame(), "users", NO_FAULTS)
    plot.draw_race_survivors(a[3], pd.DataFrame(columns=["survivors", "outcome", "policy"]))
    plot.draw_ms_histogram(a[4], np.empty(0), "Switch", "switch latency", empty_hint="no switch rows")
    plot.draw_compare_cdf(a[5], pd.DataFrame(columns=["ms", "fraction"]),
                          pd.DataFrame(columns=["ms", "fraction"]), "login", "base", "this")
    for ax in a[:6]:
        assert "no data" in _texts(ax)
    assert "no switch rows" in _texts(a[4])
    plot.draw_codes_over_time(a[6], pd.DataFrame(columns=["second", "code", "count"]),
                              pd.DataFrame(columns=["code", "name", "count"]), NO_FAULTS)
    assert "no failed operations" in _texts(a[6])
    plot.draw_code_totals(a[7], pd.DataFrame(columns=["code", "name", "count"]))
    assert "0 failures" in _texts(a[7])


def test_violations_chart_states():
    checks0 = pd.DataFrame({"check": ["policy_limit"], "violations": [0]})
    checks2 = pd.DataFrame({"check": ["kick_exactly_once", "policy_limit"], "violations": [2, 0]})
    points = pd.DataFrame({"check": ["kick_exactly_once"], "second": [3.0]})
    fig, axes = plot.new_figure(1, 4)
    a = axes.ravel()
    plot.draw_violations(a[0], points.iloc[:0], checks0, NO_FAULTS, evaluated=False)
    assert "checks not evaluated" in _texts(a[0])
    plot.draw_violations(a[1], points.iloc[:0], checks0, NO_FAULTS, evaluated=True)
    assert "0 violations" in _texts(a[1])
    plot.draw_violations(a[2], points, checks2, FAULTS, evaluated=True)
    assert len(a[2].collections) >= 1  # the violation markers
    assert "server_stall" in _texts(a[2])  # fault window labelled
    assert any("2 violations" in t.get_text() for t in a[2].get_yticklabels())
    plot.draw_violations(a[3], points.iloc[:0], checks2, NO_FAULTS, evaluated=True)
    assert len(a[3].patches) == 1  # one bar: the only check with violations


def test_time_charts_shade_and_label_faults():
    ps = pd.DataFrame({"second": [0, 1, 2, 3, 4, 5], "op": ["login"] * 6,
                       "ok": [5] * 6, "fail": [1] * 6, "info": [0] * 6,
                       "p50_ms": [1.0, 2, 3, 4, 5, 6], "p95_ms": [2.0, 3, 4, 5, 6, 7],
                       "p99_ms": [3.0, 4, 5, 6, 7, 8]})
    users = pd.DataFrame({"second": [0.0, 3.0], "users": [10, 20]})
    fig, axes = plot.new_figure(1, 3)
    plot.draw_latency_over_time(axes[0, 0], ps, "login", FAULTS)
    plot.draw_throughput(axes[0, 1], ps[["second", "ok", "fail", "info"]], users, "users (Locust)", FAULTS)
    plot.draw_failures(axes[0, 2], ps[["second", "ok", "fail", "info"]], FAULTS)
    for ax in axes.ravel():
        assert "server_stall" in _texts(ax)
        assert "fault window" in ax.get_legend_handles_labels()[1]
    labels = [t.get_text() for t in axes[0, 1].get_legend().get_texts()]
    # no legend entry without data: info is 0 all run, so it is not listed
    assert labels == ["ok", "fault window", "users (Locust)"]
    fails = [t.get_text() for t in axes[0, 2].get_legend().get_texts()]
    assert fails == ["fail: 6", "fault window"]  # failures visible on their own scale
    assert [line.get_label() for line in axes[0, 0].get_lines()] == ["p50", "p95", "p99"]


def test_code_labels_name_codes():
    codes_ps = pd.DataFrame({"second": [0, 0, 1], "code": [70001, -1, 0], "count": [2, 1, 1]})
    totals = pd.DataFrame({"code": [70001, -1, 0], "name": ["70001 USERSIG_EXPIRED", "-1 TRANSPORT", "0 OK"],
                           "count": [2, 1, 1]})
    fig, axes = plot.new_figure(1, 2)
    plot.draw_codes_over_time(axes[0, 0], codes_ps, totals, NO_FAULTS)
    plot.draw_code_totals(axes[0, 1], totals)
    legend = [t.get_text() for t in axes[0, 0].get_legend().get_texts()]
    assert legend == ["70001 USERSIG_EXPIRED", "-1 TRANSPORT", "0 (check failed, no error code)"]
    bars = [t.get_text() for t in axes[0, 1].get_yticklabels()]
    assert "70001 USERSIG_EXPIRED" in bars


def _bars(ax) -> list[tuple[float, float, float]]:
    return sorted((round(p.get_x(), 6), round(p.get_y(), 6), round(p.get_height(), 6)) for p in ax.patches)


def test_race_survivors_drawn_from_counts_match_one_row_per_race():
    """The digest hands the chart counted races (a long run keeps nothing per race): the bars,
    labels and axis text are those of the same races given one row each."""
    from harness.results.report import aggregate as agg

    per_race = pd.DataFrame({"race": [f"r{i}" for i in range(7)], "survivors": [1, 1, 1, 2, 0, 1, 2],
                             "devices": [3, 3, 3, 3, 2, 3, 3],
                             "outcome": ["ok", "ok", "ok", "fail", "fail", "ok", "info"],
                             "policy": ["single_platform"] * 7})
    counted = agg.race_counts(per_race)
    assert counted["races"].sum() == 7 and len(counted) == 4
    fig, axes = plot.new_figure(1, 2)
    axes = axes.ravel()
    plot.draw_race_survivors(axes[0], per_race)
    plot.draw_race_survivors(axes[1], counted)
    assert _bars(axes[0]) == _bars(axes[1]) and _bars(axes[0])
    assert _texts(axes[0]) == _texts(axes[1])
    assert "4 (57%)" in _texts(axes[1])
    assert axes[0].get_xlabel() == axes[1].get_xlabel() == "sessions still logged in after the race (of 7 races)"


def test_a_histogram_drawn_from_a_sketch_is_the_histogram_of_its_values(monkeypatch):
    """A long run's kick delays reach the chart as a Sketch: while it holds every value the
    chart is the one drawn from the values; beyond, its buckets hold every value (bar heights
    sum to n) and p50 / p99 are the sketch's (never below the true value, within 0.07 %)."""
    from harness.results import digest as digest_mod

    rng = np.random.default_rng(3)
    vals = rng.lognormal(3, 1, 5000)
    sk = digest_mod.Sketch()
    sk.add(vals)
    fig, axes = plot.new_figure(1, 3)
    a = axes.ravel()
    plot.draw_ms_histogram(a[0], vals, "Kick delay", "kick delay")
    plot.draw_ms_histogram(a[1], sk, "Kick delay", "kick delay")
    assert _bars(a[0]) == _bars(a[1])
    assert [t.get_text() for t in a[0].get_legend().get_texts()] == [t.get_text() for t in a[1].get_legend().get_texts()]
    monkeypatch.setattr(digest_mod, "EXACT_VALUES", 100)
    big = digest_mod.Sketch()
    big.add(vals)
    assert not big.exact
    plot.draw_ms_histogram(a[2], big, "Kick delay", "kick delay")
    assert sum(p.get_height() for p in a[2].patches) == len(vals)
    legend = [t.get_text() for t in a[2].get_legend().get_texts()]
    assert legend[0] == "n = 5,000"
    srt = np.sort(vals)
    for q, line in zip((0.5, 0.99), a[2].lines):
        true = srt[int(np.ceil(q * len(vals))) - 1]
        assert true <= line.get_xdata()[0] <= true * 1.0007

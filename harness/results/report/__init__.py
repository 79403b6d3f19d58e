"""The run report: run folder -> tables/*.csv, charts/*.png, report.html (RESULTS.md).

Pipeline: :mod:`.load` (files -> DataFrames) -> :mod:`.aggregate` (pure pandas) ->
:mod:`.plot` (one chart per function, Agg) -> :mod:`.html` (one self-contained page).
:func:`build_report` is the thin shell that wires them; ``python -m harness.report`` is
its command line. matplotlib is only imported when charts are drawn.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.util import atomic_write
from harness.results.report import aggregate as agg
from harness.results.report.compare import compare_ops, gate_flips
from harness.results.report.html import (Chart, CompareContent, ReportContent, render_compare,
                                 render_report)
from harness.results.digest import _V_EXPECTED, _V_FAIL, _V_INFO, EXACT_VALUES, SLACK_S
from harness.results.report.load import (ReportInputError, check_run_dir, load_config, load_summary,
                                 load_users_history)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["build_report", "ReportInputError"]



@dataclass
class _Run:
    """One analysed run (internal to the shell)."""

    root: Path
    name: str
    summary: dict[str, Any]
    config: dict[str, Any]
    origin_ns: int
    ops: pd.DataFrame
    codes: pd.DataFrame
    per_second: pd.DataFrame
    gates: pd.DataFrame
    checks: pd.DataFrame
    cdf: pd.DataFrame
    timed_ops: list[str]
    headline: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    expected: pd.DataFrame | None = None
    cpu: pd.DataFrame | None = None


def _cfg(config: dict[str, Any], *keys: str) -> Any:
    node: Any = config
    for k in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(k)
    return node


def _analyse(root: Path, *, full: bool = True, digest: Any = None) -> _Run:
    """Aggregate one run from its :class:`~harness.results.digest.Digest` (the journals read
    once, here unless the caller passes the digest); ``full=False`` computes only what a
    comparison needs."""
    summary = load_summary(root)
    config = load_config(root)
    if digest is None:
        from harness.results.scan import scan_run

        digest = scan_run(root).digest
    d = digest
    notes: list[str] = []
    if d.files == 0:
        notes.append("no journal files (journal/*.jsonl) in this run folder"
                     + (": the tables come from summary.json" if summary.get("ops") else ""))
    elif d.empty:
        notes.append("the journal has no rows: no operation finished in this run")
    if d.bad_lines:
        notes.append(f"{d.bad_lines:,} undecodable journal line(s) were skipped")
    if not summary:
        notes.append("no summary.json: verdict, gates and checks are unknown; "
                     "everything else is computed from the journal")
    if d.unexpected_rows:
        notes.append(f"{d.unexpected_rows:,} operation(s) did not end with the code their "
                     "scenario expected (e.g. a stale sig accepted): counted as failures")
    if d.late_rows:
        notes.append(f"{d.late_rows:,} journal row(s) were written more than {SLACK_S} s out of "
                     "time order: counted everywhere, but not in their second's percentiles")
    events = agg.event_ops(summary)
    origin = d.origin_ns()
    duration = summary.get("duration_s")
    duration = float(duration) if isinstance(duration, (int, float)) and not isinstance(
        duration, bool) and duration > 0 else None
    if d.empty and summary.get("ops"):
        ops = agg.ops_from_summary(summary)
        codes = agg.codes_from_summary(summary)
    else:
        ops = d.op_table(duration, events)
        codes = d.code_table()
    big = d.histogram_ops()
    if big:
        notes.append(f"percentiles of {', '.join(big)} come from a histogram (more than "
                     f"{EXACT_VALUES:,} successful operations each): at most 0.07 % above the "
                     "exact value, never below; max is exact")
    limit = _cfg(config, "gates", "violations")
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
    timed = d.timed_ops(events)
    cdf = d.latency_cdf(timed)
    per_sec = d.per_second() if full else agg.per_second(pd.DataFrame())
    extra: dict[str, Any] = {"events": events}
    expected = d.expected_table() if not d.empty else agg.expected_from_summary(summary)
    users_peak: int | None = None
    if full:
        history = load_users_history(root)
        if not history.empty:
            users = agg.users_per_second(history, origin)
            extra["users_label"] = "users (Locust)"
        else:
            users = d.connections_per_second()
            extra["users_label"] = "open connections (journal)"
        extra["users"] = users
        if not users.empty:
            users_peak = int(users.iloc[:, 1].max())
        extra["faults"] = d.fault_windows()
        extra["codes_ps"] = d.codes_per_second()
        extra["err_codes"] = d.code_table((_V_FAIL, _V_INFO), with_expected=False, skip_fault=True)
        extra["exp_codes"] = d.code_table((_V_EXPECTED,), with_expected=False)
        sparse = agg.sparse_ops(per_sec, timed)
        extra["points"] = d.latency_points(sparse)
        extra["gates"] = agg.latency_gates(config)
        extra["ran"] = d.scenario_names() - {"faults"} or agg.scenarios_run(pd.DataFrame(), summary) or None
        extra["excluded"] = {str(op): int(r["fail"] + r["info"]) for op, r in ops.iterrows()}
        extra["kicks"] = d.kick_delay_sketch()
        extra["relogin_ms"] = d.ok_latencies("relogin")
        extra["switch_ms"] = d.ok_latencies("switch")
        extra["races"] = d.race_survivors()
        settle = d.race_settle_note()
        if settle:
            notes.append(settle)
        extra["violation_times"] = agg.check_violation_times(summary, origin)
        bound = _cfg(config, "scenarios", "relogin_expiry", "relogin_bound_s")
        ok_bound = isinstance(bound, (int, float)) and not isinstance(bound, bool)
        extra["relogin_bound_ms"] = float(bound) * 1000 if ok_bound else None
    head = agg.headline(summary, config, pd.DataFrame(), users_peak, root.resolve().name)
    if agg._num(summary.get("duration_s")) is None:
        head["duration_s"] = d.span_s()
    head["scenarios_ran"] = sorted((d.scenario_names() - {"faults"}) or agg.scenarios_run(pd.DataFrame(), summary))
    return _Run(root=root, name=head["run_id"], summary=summary, config=config,
                origin_ns=origin, ops=ops, codes=codes, per_second=per_sec,
                gates=agg.gates_table(summary), checks=agg.checks_table(summary, limit),
                cdf=cdf, timed_ops=timed, headline=head, notes=notes, extra=extra,
                expected=expected, cpu=agg.cpu_table(summary))


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))  # 0644 like every result file


def _write_csv(df: pd.DataFrame, path: Path, *, index: bool = False) -> None:
    _write_text_atomic(path, df.to_csv(index=index, float_format="%.6g", lineterminator="\n"))


def _write_tables(run: _Run) -> None:
    tables = run.root / "tables"
    _write_csv(run.ops, tables / "ops.csv", index=True)
    _write_csv(run.codes, tables / "codes.csv")
    _write_csv(run.per_second, tables / "per_second.csv")
    _write_csv(run.gates, tables / "gates.csv")
    _write_csv(run.checks, tables / "checks.csv")
    if run.expected is not None and not run.expected.empty:
        _write_csv(run.expected, tables / "expected.csv")


def _render(name: str, title: str, caption: str, out_dir: Path,
            build: Callable[[], "Figure"], notes: list[str]) -> Chart:
    """Draw one chart to ``out_dir/name``; a drawing error becomes a note, never a crash."""
    from harness.results.report import plot

    path = out_dir / name
    try:
        fig = build()
    except Exception as exc:  # noqa: BLE001 - one odd chart must not lose the whole report
        notes.append(f"chart {name} could not be drawn ({type(exc).__name__}: {exc})")
        fig, axes = plot.new_figure()
        fig.suptitle(title)
        plot.draw_message(axes[0, 0], "chart could not be drawn", sub=str(exc)[:200])
    plot.save_png(fig, path)
    return Chart(title=title, caption=caption, png=path.read_bytes(), file=f"charts/{name}")


def _charts(run: _Run, notes: list[str]) -> list[Chart]:
    from harness.results.report import plot

    out = run.root / "charts"
    x = run.extra
    title = f"Run {run.name}"
    xlim = None
    hi = []
    if not run.per_second.empty:
        hi.append(float(run.per_second["second"].max()) + 1)
    if not x["faults"].empty:
        hi.append(float(x["faults"]["end_s"].max()) + 1)
    if hi:
        xlim = (0.0, max(hi))
    ps = run.per_second
    return [
        _render("latency_over_time.png", "1. Latency percentiles over time, per operation",
                "p50/p95/p99 of latency (end - intended, ms) of successful operations in each "
                "1 s bucket of finish time; gaps: no operation finished; dots: each operation "
                "of an op too sparse for percentiles; dashed lines: latency gates of the "
                "config; grey bands: injected fault windows.", out,
                lambda: plot.chart_latency_over_time(ps, run.timed_ops, x["faults"], title,
                                                     gates=x["gates"], points=x["points"]),
                notes),
        _render("latency_cdf.png", "2. Latency distribution per operation",
                "Share of successful operations finished within x ms (log x, the same range "
                "in every panel). Solid: latency incl. queueing (end - intended); dashed: "
                "service time (end - start). n counts the successful operations; failed ones "
                "are excluded and counted beside it.", out,
                lambda: plot.chart_latency_cdf(run.cdf, run.timed_ops, title,
                                               excluded=x["excluded"]), notes),
        _render("throughput.png", "3. Throughput over time",
                f"Requests finished per second: successes above, failures below on their own "
                f"scale (events are not requests); dashed line: {x['users_label']}.", out,
                lambda: plot.chart_throughput(ps, x["users"], x["users_label"], x["faults"],
                                              title, events=x["events"]), notes),
        _render("error_codes.png", "4. Error codes",
                "Failed (fail or info) operations per time bucket by protocol code, and "
                "totals; each code has one colour in both panels. Codes a scenario provoked "
                "on purpose (expected) are grey and hatched: they are not errors.",
                out, lambda: plot.chart_error_codes(x["codes_ps"], x["err_codes"], x["faults"],
                                                    xlim, title, expected=x["exp_codes"]),
                notes),
        _render("scenarios.png", "5. Scenarios: kick races, relogin, account switch",
                "How many sessions survived each kick race; time from a second login to the "
                "kick notice; time to log in again after the signature expired; time to "
                "switch accounts. Only the scenarios that ran are shown.", out,
                lambda: plot.chart_scenarios(x["races"], x["kicks"], x["relogin_ms"],
                                             x["switch_ms"], x["relogin_bound_ms"], title,
                                             ran=x["ran"]),
                notes),
        _render("checks.png", "6. Correctness checks",
                "Every correctness check with its result (summary.json); violations are "
                "placed in time below when a check failed and its examples carry a time.",
                out,
                lambda: plot.chart_checks(x["violation_times"], run.checks, x["faults"],
                                          isinstance(run.summary.get("checks"), dict), xlim,
                                          title), notes),
    ]


def _compare(run: _Run, base: _Run, charts: bool, notes: list[str]) -> CompareContent:
    table = compare_ops(base.ops, run.ops)
    flips = gate_flips(base.summary, run.summary)
    tables = run.root / "tables"
    _write_csv(table, tables / "compare_ops.csv", index=True)
    _write_csv(flips, tables / "compare_gates.csv")
    chart = None
    if charts:
        from harness.results.report import plot

        ops = agg.ordered_ops(set(run.timed_ops) | set(base.timed_ops))
        chart = _render("compare_cdf.png", "Latency CDF per operation: this run vs base",
                        "Share of successful operations finished within x ms (log x); grey "
                        "dashed = base run, blue = this run.", run.root / "charts",
                        lambda: plot.chart_compare_cdf(base.cdf, run.cdf, ops, base.name,
                                                       run.name), notes)
    return CompareContent(base_name=base.name, this_name=run.name,
                          base_headline=base.headline, ops=table, gates=flips, chart=chart)


_LINKED_FILES = ("summary.json", "config.yaml", "ledger.jsonl", "junit.xml",
                 "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                 "locust_exceptions.csv", "compare.html")


def _present_files(root: Path) -> list[str]:
    """Run-folder files worth a link on the page (relative paths, those that exist)."""
    out = [name for name in _LINKED_FILES if (root / name).is_file()]
    jdir = root / "journal"
    if jdir.is_dir():
        out += [f"journal/{p.name}" for p in sorted(jdir.glob("*.jsonl"))]
    tables = root / "tables"
    if tables.is_dir():
        out += [f"tables/{p.name}" for p in sorted(tables.glob("*.csv"))]
    return out


def build_report(run_dir: str | Path, *, charts: bool = True,
                 compare_to: str | Path | None = None, digest: Any = None) -> Path:
    """Write tables/, charts/ and report.html into a run folder; return report.html's path.

    ``compare_to`` (a base run folder) adds a comparison: tables/compare_ops.csv,
    tables/compare_gates.csv, charts/compare_cdf.png, compare.html and a section in
    report.html. Raises :class:`ReportInputError` (exit code 2) only when a folder does not
    exist; empty, partial or odd runs still get a report. ``digest``: the run's journals
    already read by :func:`harness.results.scan.scan_run` (the end of a run passes it, so
    the journals are read once for checks, summary and report); else they are read here.
    """
    root = check_run_dir(run_dir)
    base_root = check_run_dir(compare_to) if compare_to is not None else None
    run = _analyse(root, digest=digest)
    notes = list(run.notes)
    _write_tables(run)
    chart_list = _charts(run, notes) if charts else []
    compare = None
    if base_root is not None:
        base = _analyse(base_root, full=False)
        compare = _compare(run, base, charts, notes)
        page = render_compare(compare, run.headline)
        _write_text_atomic(root / "compare.html", page)
    content = ReportContent(headline=run.headline, ops=run.ops, codes=run.codes,
                            gates=run.gates, checks=run.checks, per_second=run.per_second,
                            charts=chart_list, charts_enabled=charts, notes=notes,
                            compare=compare, expected=run.expected, cpu=run.cpu,
                            files=_present_files(root))
    out = root / "report.html"
    _write_text_atomic(out, render_report(content))
    return out


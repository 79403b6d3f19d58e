"""Charts of the report: one drawing function per chart, the ``Axes`` passed in.

``draw_*`` functions draw one chart into a given ``Axes`` from already aggregated frames
(:mod:`harness.results.report.aggregate`); ``chart_*`` functions lay out one PNG-sized figure
(1600x900 px: ``figsize=(16, 9)``, ``dpi=100``) from one or more ``draw_*`` calls.
Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas: pyplot and
its global figure registry are never used, so nothing leaks between reports.
Times on x axes are seconds since the run origin (:func:`aggregate.time_origin_ns`);
latencies are milliseconds.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

__all__ = [
    "FIGSIZE", "DPI", "new_figure", "save_png", "draw_message", "shade_faults",
    "draw_latency_over_time", "draw_cdf", "draw_throughput", "draw_codes_over_time",
    "draw_code_totals", "draw_race_survivors", "draw_ms_histogram", "draw_violations",
    "draw_compare_cdf", "chart_latency_over_time", "chart_latency_cdf", "chart_throughput",
    "chart_error_codes", "chart_scenarios", "chart_checks", "chart_compare_cdf",
]

FIGSIZE: tuple[float, float] = (16.0, 9.0)
DPI: int = 100
OUTCOME_COLORS: dict[str, str] = {"ok": "#2ca02c", "fail": "#d62728", "info": "#ff7f0e"}
PCT_COLORS: dict[str, str] = {"p50_ms": "#1f77b4", "p95_ms": "#ff7f0e", "p99_ms": "#d62728"}
_STYLE = {
    "font.size": 12, "axes.titlesize": 14, "axes.labelsize": 12, "legend.fontsize": 11,
    "xtick.labelsize": 11, "ytick.labelsize": 11, "figure.titlesize": 17,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
}
_TIME_LABEL = "time since run start (s)"


@contextmanager
def _style() -> Iterator[None]:
    with rc_context(_STYLE):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, **subplot_kw: object) -> tuple[Figure, np.ndarray]:
    """A 1600x900 px figure (Agg canvas, constrained layout) and a 2-D array of its Axes."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a 1600x900 PNG (no tight bbox, so the size is exact)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def _grid(n: int) -> tuple[int, int]:
    if n <= 1:
        return 1, 1
    if n <= 2:
        return 1, 2
    if n <= 4:
        return 2, 2
    if n <= 6:
        return 2, 3
    if n <= 9:
        return 3, 3
    return math.ceil(n / 4), 4


def draw_message(ax: Axes, text: str, *, color: str = "#555555", size: float = 22,
                 sub: str | None = None) -> None:
    """Replace the plot area with a centred message (``"no data"``, ``"0 violations"``)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.5, 0.55 if sub else 0.5, text, transform=ax.transAxes, ha="center",
            va="center", fontsize=size, color=color, fontweight="bold", wrap=True)
    if sub:
        ax.text(0.5, 0.42, sub, transform=ax.transAxes, ha="center", va="center",
                fontsize=max(10.0, size / 2.2), color="#555555", wrap=True)


def shade_faults(ax: Axes, faults: pd.DataFrame) -> None:
    """Shade injected fault windows (``start_s``..``end_s``) and label them at the top."""
    if faults is None or faults.empty:
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for i, rec in enumerate(faults.itertuples(index=False)):
        label = "fault window" if i == 0 else None
        if rec.end_s > rec.start_s:
            ax.axvspan(rec.start_s, rec.end_s, color="#7f7f7f", alpha=0.22, lw=0, label=label,
                       zorder=1.5)
        else:
            ax.axvline(rec.start_s, color="#7f7f7f", alpha=0.6, lw=2, ls=":", label=label)
        ax.text(rec.start_s, 0.98 - 0.07 * (i % 3), f" {rec.label}", transform=trans,
                ha="left", va="top", fontsize=10, color="#404040", clip_on=True,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})


def _time_axis(ax: Axes, xlim: tuple[float, float] | None, label: bool = True) -> None:
    if label:
        ax.set_xlabel(_TIME_LABEL)
    if xlim is not None and xlim[1] > xlim[0]:
        ax.set_xlim(*xlim)


def _fmt_ms(v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f} ms"
    if abs(v) >= 1:
        return f"{v:.1f} ms"
    return f"{v:.3f} ms"


def _ms_formatter() -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: f"{v:g}")


def _minor_label(v: float, _pos: object = None) -> str:
    if v <= 0:
        return ""
    mant = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if any(abs(mant - m) < 1e-6 for m in (2, 5)) else ""


def _log_axis(axis: object, lo: float = 0.0, hi: float = 0.0) -> None:
    """Plain-number labels on a log axis; minor ticks at 2x and 5x labelled when the view
    spans at most two decades (so short ranges still get readable numbers)."""
    axis.set_major_formatter(_ms_formatter())  # type: ignore[attr-defined]
    vlo, vhi = axis.get_view_interval()  # type: ignore[attr-defined]
    if vlo > 0 and vhi / vlo < 3:  # too narrow for decade ticks: plain evenly spaced ticks
        axis.set_major_locator(MaxNLocator(5))  # type: ignore[attr-defined]
        axis.set_minor_formatter(NullFormatter())  # type: ignore[attr-defined]
    elif vlo > 0 and vhi / vlo <= 100:
        axis.set_minor_formatter(FuncFormatter(_minor_label))  # type: ignore[attr-defined]
    else:
        axis.set_minor_formatter(NullFormatter())  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- chart 1


def draw_latency_over_time(ax: Axes, rows: pd.DataFrame, op: str, faults: pd.DataFrame,
                           xlim: tuple[float, float] | None = None, *,
                           legend: bool = True) -> None:
    """p50/p95/p99 latency (ms) per 1 s bucket of one op (``per_second`` rows of that op)."""
    ax.set_title(f"{op}")
    data = rows.dropna(subset=["p50_ms"]) if not rows.empty else rows
    if data.empty:
        draw_message(ax, "no data", sub=f"no successful {op} rows")
        return
    x = data["second"].to_numpy("float64") + 0.5
    for col, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax.plot(x, data[col].to_numpy("float64"), color=PCT_COLORS[col], lw=1.2, label=label,
                marker="o" if len(x) < 30 else None, ms=4)
    vals = data[["p50_ms", "p99_ms"]].to_numpy("float64")
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    if lo > 0 and hi / lo > 30:
        ax.set_yscale("log")
        _log_axis(ax.yaxis, lo, hi)
        ax.set_ylabel("ms (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("ms")
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    if legend:
        ax.legend(loc="upper right")


def chart_latency_over_time(per_sec: pd.DataFrame, ops: Sequence[str], faults: pd.DataFrame,
                            title: str) -> Figure:
    """Chart 1: small multiples, one panel per op, latency percentiles per second."""
    with _style():
        ops = list(ops)
        nrows, ncols = _grid(max(1, len(ops)))
        fig, axes = new_figure(nrows, ncols)
        fig.suptitle(f"{title}: latency per operation over time\nlatency = end - intended "
                     "(includes queueing), p50/p95/p99 of the successful operations finishing "
                     "in each 1 s bucket")
        xlim = _xlim(per_sec, faults)
        flat = axes.ravel()
        if not ops:
            draw_message(flat[0], "no data", sub="no timed operations in the journal")
            flat[0].set_title("latency over time")
        for i, (ax, op) in enumerate(zip(flat, ops)):
            draw_latency_over_time(ax, per_sec.loc[per_sec["op"] == op], op, faults, xlim,
                                   legend=False)
            ax.set_xlabel(_TIME_LABEL if i + ncols >= len(ops) else "")
        for ax in flat[len(ops) if ops else 1:]:
            ax.set_visible(False)
        _figure_legend(fig, flat[: len(ops)])
        return fig


def _figure_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for all panels (the union of their labelled artists), top right."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        order = sorted(seen, key=lambda lab: {"p50": 0, "p95": 1, "p99": 2}.get(lab, 3))
        fig.legend([seen[k] for k in order], order, loc="outside lower center",
                   ncols=len(order))


def _xlim(per_sec: pd.DataFrame, faults: pd.DataFrame) -> tuple[float, float] | None:
    hi = []
    if not per_sec.empty:
        hi.append(float(per_sec["second"].max()) + 1)
    if faults is not None and not faults.empty:
        hi.append(float(faults["end_s"].max()) + 1)
    return (0.0, max(hi)) if hi else None


# --------------------------------------------------------------------------- chart 2


def draw_cdf(ax: Axes, curves: pd.DataFrame, op: str, *, legend: bool = True) -> None:
    """CDF (log x, ms) of one op: latency solid, service time dashed where it differs."""
    ax.set_title(op)
    if curves.empty:
        draw_message(ax, "no data", sub=f"no successful {op} rows")
        return
    styles = {"latency": ("#1f77b4", "-", "latency (end - intended)"),
              "service": ("#9467bd", "--", "service time (end - start)")}
    for kind, (color, ls, label) in styles.items():
        c = curves.loc[curves["kind"] == kind]
        if c.empty:
            continue
        x = np.maximum(c["ms"].to_numpy("float64"), 1e-3)
        y = c["fraction"].to_numpy("float64") * 100
        ax.step(np.r_[x[0], x], np.r_[0.0, y], where="post", color=color, ls=ls, lw=2,
                label=label)
    ax.set_xscale("log")
    xs = np.maximum(curves["ms"].to_numpy("float64"), 1e-3)
    _log_axis(ax.xaxis, float(xs.min()), float(xs.max()))
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("% of ok ops")
    ax.set_ylim(0, 101)
    for p in (50, 99):
        ax.axhline(p, color="#999999", lw=0.8, ls=":")
    lat = curves.loc[curves["kind"] == "latency"]
    n_text = ""
    if not lat.empty:
        ms = lat["ms"].to_numpy("float64")
        fr = lat["fraction"].to_numpy("float64")
        p50 = ms[min(np.searchsorted(fr, 0.5 - 1e-12), len(ms) - 1)]
        p99 = ms[min(np.searchsorted(fr, 0.99 - 1e-12), len(ms) - 1)]
        n_text = f"n = {int(lat['n'].iloc[0]) if 'n' in lat else len(ms):,}\np50 {_fmt_ms(p50)}\np99 {_fmt_ms(p99)}"
    if legend:
        ax.legend(loc="lower right")
    if n_text:
        ax.text(0.98, 0.05 if not legend else 0.35, n_text, transform=ax.transAxes, ha="right",
                va="bottom", fontsize=11,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#cccccc"})


def chart_latency_cdf(cdf: pd.DataFrame, ops: Sequence[str], title: str) -> Figure:
    """Chart 2: latency distribution per op (CDF on a log x axis)."""
    with _style():
        ops = list(ops)
        nrows, ncols = _grid(max(1, len(ops)))
        fig, axes = new_figure(nrows, ncols)
        fig.suptitle(f"{title}: latency distribution per operation\nshare of successful "
                     "operations finished within x ms; dashed = service time, drawn where "
                     "queueing makes it differ")
        flat = axes.ravel()
        if not ops:
            draw_message(flat[0], "no data", sub="no timed operations in the journal")
            flat[0].set_title("latency distribution")
        for i, (ax, op) in enumerate(zip(flat, ops)):
            draw_cdf(ax, cdf.loc[cdf["op"] == op], op, legend=False)
            if i + ncols < len(ops):
                ax.set_xlabel("")
            if len(ops) > 1:
                ax.set_ylabel("")
        for ax in flat[len(ops) if ops else 1:]:
            ax.set_visible(False)
        _figure_legend(fig, flat[: len(ops)])
        if len(ops) > 1:
            fig.supylabel("% of successful operations")
        return fig


# --------------------------------------------------------------------------- chart 3


def draw_throughput(ax: Axes, outcomes: pd.DataFrame, users: pd.DataFrame, users_label: str,
                    faults: pd.DataFrame, xlim: tuple[float, float] | None = None) -> None:
    """Stacked ops/s by outcome (``second``, ``ok``, ``fail``, ``info``) + users on a 2nd axis."""
    ax.set_title("Throughput: finished operations per second, by outcome")
    if outcomes.empty:
        draw_message(ax, "no data", sub="no operations finished in this run")
        return
    lo, hi = int(outcomes["second"].min()), int(outcomes["second"].max())
    full = outcomes.set_index("second").reindex(range(lo, hi + 1), fill_value=0)
    x = np.r_[full.index.to_numpy("float64"), float(hi + 1)]  # close the last 1 s step
    ys = [np.r_[full[o].to_numpy("float64"), float(full[o].iloc[-1])] for o in ("ok", "fail", "info")]
    ax.stackplot(x, *ys, labels=["ok", "fail", "info (outcome unknown)"],
                 colors=[OUTCOME_COLORS[o] for o in ("ok", "fail", "info")], alpha=0.85,
                 step="post")
    ax.set_ylabel("operations / s")
    ax.set_ylim(bottom=0)
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    handles, labels = ax.get_legend_handles_labels()
    if users is not None and not users.empty:
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.plot(users["second"].to_numpy("float64"), users.iloc[:, 1].to_numpy("float64"),
                 color="black", lw=2, ls="--", drawstyle="steps-post", label=users_label)
        ax2.set_ylabel(users_label)
        ax2.set_ylim(bottom=0)
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        h2, l2 = ax2.get_legend_handles_labels()
        handles += h2
        labels += l2
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.08),
              ncols=len(labels))


def chart_throughput(per_sec: pd.DataFrame, users: pd.DataFrame, users_label: str,
                     faults: pd.DataFrame, title: str) -> Figure:
    """Chart 3: throughput over time by outcome with the user count."""
    with _style():
        fig, axes = new_figure()
        fig.suptitle(title)
        if per_sec.empty:
            outcomes = pd.DataFrame(columns=["second", "ok", "fail", "info"])
        else:
            ops = per_sec.loc[per_sec["op"] != "fault"]
            outcomes = ops.groupby("second", as_index=False)[["ok", "fail", "info"]].sum()
        draw_throughput(axes[0, 0], outcomes, users, users_label, faults, _xlim(per_sec, faults))
        return fig


# --------------------------------------------------------------------------- chart 4


def _top_codes(totals: pd.DataFrame, top: int) -> list[int]:
    return [int(c) for c in totals["code"].head(top)]


_OTHER = -(2**62)


def _code_label(code: int, names: dict[int, str]) -> str:
    if code == _OTHER:
        return "other codes"
    if code == 0:
        return "0 (check failed, no error code)"
    return names.get(code, str(code))


def draw_codes_over_time(ax: Axes, codes_ps: pd.DataFrame, totals: pd.DataFrame,
                         faults: pd.DataFrame, xlim: tuple[float, float] | None = None,
                         top: int = 8, max_buckets: int = 150) -> None:
    """Stacked areas: failed operations per second by code (top ``top`` codes, rest as other).

    Long runs are binned into wider buckets (at most ``max_buckets``) so the chart stays
    readable; the y axis stays a per-second rate.
    """
    if codes_ps.empty:
        ax.set_title("Failed operations per second, by code")
        draw_message(ax, "no failed operations", color=OUTCOME_COLORS["ok"])
        return
    lo, hi = int(codes_ps["second"].min()), int(codes_ps["second"].max())
    if xlim is not None:
        lo, hi = min(lo, int(xlim[0])), max(hi, int(math.ceil(xlim[1])) - 1)
    width = max(1, math.ceil((hi - lo + 1) / max_buckets))
    keep = _top_codes(totals, top)
    names = dict(zip(totals["code"].astype(int), totals["name"]))
    key = codes_ps["code"].where(codes_ps["code"].isin(keep), other=_OTHER)
    bucket = (codes_ps["second"] - lo) // width * width + lo
    wide = (codes_ps.assign(key=key, bucket=bucket)
            .pivot_table(index="bucket", columns="key", values="count", aggfunc="sum",
                         fill_value=0)
            .reindex(range(lo, hi + 1, width), fill_value=0))
    order = [c for c in keep + [_OTHER] if c in wide.columns]
    x = np.r_[wide.index.to_numpy("float64"), float(wide.index[-1] + width)]
    ys = [np.r_[wide[c].to_numpy("float64"), wide[c].to_numpy("float64")[-1:]] / width
          for c in order]
    cmap = matplotlib.colormaps["tab10"]
    colors = [cmap(i % 10) if c != _OTHER else "#bbbbbb" for i, c in enumerate(order)]
    ax.stackplot(x, *ys, labels=[_code_label(c, names) for c in order], colors=colors,
                 step="post", alpha=0.9)
    unit = "1 s" if width == 1 else f"{width} s"
    ax.set_title(f"Failed operations per second, by code ({unit} buckets)")
    ax.set_ylabel("failed operations / s")
    ax.set_ylim(bottom=0)
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)


def draw_code_totals(ax: Axes, totals: pd.DataFrame, top: int = 12) -> None:
    """Horizontal bars: failed operations per code over the whole run."""
    ax.set_title("Failed operations per code (whole run)")
    if totals.empty:
        draw_message(ax, "0 failures", color=OUTCOME_COLORS["ok"])
        return
    t = totals.head(top).iloc[::-1]
    names = dict(zip(totals["code"].astype(int), totals["name"]))
    bars = ax.barh([_code_label(int(c), names) for c in t["code"]], t["count"].to_numpy("float64"),
                   color=OUTCOME_COLORS["fail"])
    ax.bar_label(bars, labels=[f"{int(v):,}" for v in t["count"]], padding=3)
    ax.set_xlabel("failed operations")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)


def chart_error_codes(codes_ps: pd.DataFrame, totals: pd.DataFrame, faults: pd.DataFrame,
                      xlim: tuple[float, float] | None, title: str) -> Figure:
    """Chart 4: error codes over time and their totals."""
    with _style():
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        gs = fig.add_gridspec(1, 3)
        ax_time = fig.add_subplot(gs[0, :2])
        ax_tot = fig.add_subplot(gs[0, 2])
        fig.suptitle(f"{title}\nErrors: operations whose outcome was fail or info "
                     "(-1 = transport error / timeout)")
        draw_codes_over_time(ax_time, codes_ps, totals, faults, xlim)
        draw_code_totals(ax_tot, totals)
        return fig


# --------------------------------------------------------------------------- chart 5


def draw_race_survivors(ax: Axes, races: pd.DataFrame) -> None:
    """Bars: number of kick races by how many sessions survived, split by race verdict."""
    ax.set_title("Kick races: sessions alive after each race")
    if races.empty:
        draw_message(ax, "no data", sub="no kick races (race rows) in this run")
        return
    counts = races.groupby(["survivors", "outcome"]).size().unstack(fill_value=0)
    x = counts.index.to_numpy("int64")
    bottom = np.zeros(len(x))
    for outcome, label in (("ok", "fits the policy"), ("fail", "violates the policy"),
                           ("info", "unknown")):
        if outcome in counts.columns:
            y = counts[outcome].to_numpy("float64")
            ax.bar(x, y, bottom=bottom, color=OUTCOME_COLORS[outcome], label=label, width=0.7)
            bottom += y
    ax.set_xticks(x)
    ax.set_xlim(float(x.min()) - 1, float(x.max()) + 1)
    ax.set_xlabel("surviving sessions per race")
    ax.set_ylabel("races")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    policies = sorted({p for p in races["policy"] if p})
    ax.legend(title=f"policy: {', '.join(policies)}" if policies else None)


def draw_ms_histogram(ax: Axes, values_ms: np.ndarray, title: str, what: str,
                      bound_ms: float | None = None, empty_hint: str = "") -> None:
    """Histogram of durations (ms) with p50/p99 markers and an optional bound line."""
    ax.set_title(title)
    v = np.asarray(values_ms, dtype="float64")
    v = v[np.isfinite(v)]
    if len(v) == 0:
        draw_message(ax, "no data", sub=empty_hint or None)
        return
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo > 50:
        bins = np.geomspace(lo, hi, 40)
        ax.set_xscale("log")
        ax.set_xlabel(f"{what} (ms, log scale)")
    else:
        bins = 40 if hi > lo else 1
        ax.set_xlabel(f"{what} (ms)")
    ax.hist(v, bins=bins, color="#1f77b4", alpha=0.85, label=f"n = {len(v):,}")
    if ax.get_xscale() == "log":
        _log_axis(ax.xaxis)
    srt = np.sort(v)
    for q, color in ((0.5, "#2ca02c"), (0.99, "#d62728")):
        val = srt[max(math.ceil(q * len(srt) - 1e-9), 1) - 1]
        ax.axvline(val, color=color, ls="--", lw=1.8, label=f"p{int(q * 100)} = {_fmt_ms(val)}")
    if bound_ms is not None and bound_ms > 0:
        if bound_ms <= hi * 3:
            ax.axvline(bound_ms, color="black", lw=2, label=f"bound = {_fmt_ms(bound_ms)}")
        else:  # drawing it would squash the data into one corner
            ax.plot([], [], " ", label=f"bound = {_fmt_ms(bound_ms)} (all far below)")
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")


def chart_scenarios(races: pd.DataFrame, kicks: pd.DataFrame, relogin_ms: np.ndarray,
                    switch_ms: np.ndarray, relogin_bound_ms: float | None, title: str) -> Figure:
    """Chart 5: kick races (survivors, kick delay), relogin recovery, switch latency."""
    with _style():
        fig, axes = new_figure(2, 2)
        fig.suptitle(f"{title}\nScenario views: kick races, relogin after expiry, account switch")
        draw_race_survivors(axes[0, 0], races)
        draw_ms_histogram(axes[0, 1], kicks["delay_ms"].to_numpy("float64") if not kicks.empty
                          else np.empty(0),
                          "Kick delay: competing login sent -> kickedOffline received",
                          "kick delay", empty_hint="no kickedOffline events with a 'by' session")
        draw_ms_histogram(axes[1, 0], relogin_ms,
                          "Relogin recovery: expiry -> back online (ok relogin)",
                          "recovery time", bound_ms=relogin_bound_ms,
                          empty_hint="no successful relogin rows")
        draw_ms_histogram(axes[1, 1], switch_ms,
                          "Account switch: login of new account -> checked (ok switch)",
                          "switch latency", empty_hint="no successful switch rows")
        return fig


# --------------------------------------------------------------------------- chart 6


def draw_violations(ax: Axes, points: pd.DataFrame, checks: pd.DataFrame,
                    faults: pd.DataFrame, evaluated: bool,
                    xlim: tuple[float, float] | None = None) -> None:
    """Correctness-check violations over time (examples with times) or per check."""
    ax.set_title("Correctness checks: violations")
    if not evaluated:
        draw_message(ax, "checks not evaluated",
                     sub="summary.json has no 'checks' (run not finished or summary missing)")
        return
    total = int(checks["violations"].sum()) if not checks.empty else 0
    if total == 0:
        names = ", ".join(checks["check"]) if not checks.empty else ""
        draw_message(ax, "0 violations", color=OUTCOME_COLORS["ok"], size=64,
                     sub=f"{len(checks)} checks passed: {names}" if names else None)
        return
    bad = checks.loc[checks["violations"] > 0]
    labels = {r.check: f"{r.check}\n({r.violations:,} violations)" for r in bad.itertuples()}
    if points.empty:
        t = bad.iloc[::-1]
        bars = ax.barh([labels[c] for c in t["check"]], t["violations"].to_numpy("float64"),
                       color=OUTCOME_COLORS["fail"])
        ax.bar_label(bars, labels=[f"{int(v):,}" for v in t["violations"]], padding=3)
        ax.set_xlabel("violations (the examples carry no times, so none are placed in time)")
        ax.margins(x=0.15)
        return
    order = list(bad["check"])
    order += [c for c in points["check"].unique() if c not in order]
    ypos = {c: i for i, c in enumerate(order)}
    ax.scatter(points["second"].to_numpy("float64"), points["check"].map(ypos).to_numpy("float64"),
               marker="x", s=90, color=OUTCOME_COLORS["fail"], lw=2,
               label=f"violation ({len(points):,} of {total:,} have a time and are shown)")
    ax.set_yticks(range(len(order)), [labels.get(c, c) for c in order])
    ax.set_ylim(-0.7, len(order) - 0.3)
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    ax.legend(loc="lower right")


def chart_checks(points: pd.DataFrame, checks: pd.DataFrame, faults: pd.DataFrame,
                 evaluated: bool, xlim: tuple[float, float] | None, title: str) -> Figure:
    """Chart 6: correctness-check violations."""
    with _style():
        fig, axes = new_figure()
        fig.suptitle(title)
        draw_violations(axes[0, 0], points, checks, faults, evaluated, xlim)
        return fig


# --------------------------------------------------------------------------- compare


def draw_compare_cdf(ax: Axes, base: pd.DataFrame, this: pd.DataFrame, op: str,
                     base_name: str, this_name: str) -> None:
    """Overlay of two latency CDFs (log x, ms) of one op: base dashed grey, this run blue."""
    ax.set_title(f"{op}: latency CDF, this run vs base")
    if base.empty and this.empty:
        draw_message(ax, "no data", sub=f"no successful {op} rows in either run")
        return
    for curves, color, ls, name in ((base, "#7f7f7f", "--", f"base: {base_name}"),
                                    (this, "#1f77b4", "-", f"this: {this_name}")):
        if curves.empty:
            ax.plot([], [], color=color, ls=ls, label=f"{name} (no data)")
            continue
        x = np.maximum(curves["ms"].to_numpy("float64"), 1e-3)
        y = curves["fraction"].to_numpy("float64") * 100
        ax.step(np.r_[x[0], x], np.r_[0.0, y], where="post", color=color, ls=ls, lw=2,
                label=name)
    ax.set_xscale("log")
    both = pd.concat([base["ms"], this["ms"]]).to_numpy("float64")
    both = np.maximum(both, 1e-3)
    _log_axis(ax.xaxis, float(both.min()), float(both.max()))
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("% of ok ops")
    ax.set_ylim(0, 101)
    ax.legend(loc="lower right", fontsize=9)


def chart_compare_cdf(base_cdf: pd.DataFrame, this_cdf: pd.DataFrame, ops: Sequence[str],
                      base_name: str, this_name: str) -> Figure:
    """Compare chart: per-op latency CDF overlay of two runs."""
    with _style():
        ops = list(ops)
        nrows, ncols = _grid(max(1, len(ops)))
        fig, axes = new_figure(nrows, ncols)
        fig.suptitle(f"Latency (end - intended) of successful ops: {this_name} vs base {base_name}")
        flat = axes.ravel()
        if not ops:
            draw_message(flat[0], "no data", sub="no timed operations in either run")
        for ax, op in zip(flat, ops):
            b = base_cdf.loc[(base_cdf["op"] == op) & (base_cdf["kind"] == "latency")]
            t = this_cdf.loc[(this_cdf["op"] == op) & (this_cdf["kind"] == "latency")]
            draw_compare_cdf(ax, b, t, op, base_name, this_name)
        for ax in flat[len(ops) if ops else 1:]:
            ax.set_visible(False)
        return fig

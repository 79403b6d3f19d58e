"""Charts of the report: one drawing function per chart, the ``Axes`` passed in.

``draw_*`` functions draw one chart into a given ``Axes`` from already aggregated frames
(:mod:`harness.results.report.aggregate`); ``chart_*`` functions lay out one PNG-sized figure
(1600x900 px: ``figsize=(16, 9)``, ``dpi=100``; the checks chart is a 1600 px wide strip,
taller only when a check failed) from one or more ``draw_*`` calls.
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
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

if TYPE_CHECKING:
    from harness.results.digest import Sketch

__all__ = [
    "FIGSIZE", "DPI", "new_figure", "save_png", "draw_message", "shade_faults",
    "draw_latency_over_time", "draw_cdf", "draw_throughput", "draw_codes_over_time",
    "draw_code_totals", "draw_race_survivors", "draw_ms_histogram", "draw_violations",
    "draw_failures", "draw_checks_strip", "code_colors", "cdf_xlim", "latency_log_scale",
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
    """Write ``fig`` as a PNG of its own size (1600x900 for :func:`new_figure`; no tight
    bbox, so the size is exact)."""
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
        # unlabelled minor ticks at 2x and 5x only: enough to read a wide log axis, and far
        # fewer tick objects to lay out (the charts' main cost)
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- chart 1


_LOG_RATIO = 30.0  # a panel whose values span more than this factor needs a log y axis


def latency_log_scale(per_sec: pd.DataFrame, ops: Sequence[str],
                      points: pd.DataFrame | None = None) -> bool:
    """The one y-scale rule of chart 1: log in every panel when any panel's latencies span
    more than 30x, else linear from 0 in every panel."""
    for op in ops:
        vals = np.empty(0)
        if points is not None and not points.empty and (points["op"] == op).any():
            vals = points.loc[points["op"] == op, "latency_ms"].to_numpy("float64")
        elif not per_sec.empty:
            rows = per_sec.loc[per_sec["op"] == op]
            vals = rows[["p50_ms", "p99_ms"]].to_numpy("float64").ravel()
        vals = vals[np.isfinite(vals)]
        if len(vals) and vals.min() > 0 and vals.max() / vals.min() > _LOG_RATIO:
            return True
    return False


def _full_seconds(data: pd.DataFrame, xlim: tuple[float, float] | None) -> pd.DataFrame:
    """``data`` (one op's per-second rows) reindexed onto every second of the run, NaN in
    the empty buckets, so lines stop there instead of bridging the gap."""
    lo, hi = int(data["second"].min()), int(data["second"].max())
    if xlim is not None:
        lo, hi = min(lo, math.floor(xlim[0])), max(hi, math.ceil(xlim[1]) - 1)
    return data.set_index("second").reindex(range(lo, hi + 1)).rename_axis("second").reset_index()


def _draw_gates(ax: Axes, gates: dict[str, float] | None, data_hi: float) -> None:
    """Horizontal lines at the op's latency gates; a gate far above the data is named in
    a note instead (drawing it would squash the data against the x axis)."""
    if not gates:
        return
    far = []
    for key, limit in sorted(gates.items()):
        name = key.removesuffix("_ms")
        color = PCT_COLORS.get(key, "black")
        if np.isfinite(data_hi) and limit <= data_hi * 3:
            ax.axhline(limit, color=color, lw=1.6, ls=(0, (6, 3)), zorder=3,
                       label=f"gate {name}")
            ax.text(0.01, limit, f" gate {name} ≤ {_fmt_ms(limit)}", color=color, fontsize=9,
                    va="bottom", ha="left", transform=blended_transform_factory(
                        ax.transAxes, ax.transData))
        else:
            far.append(f"gate {name} ≤ {_fmt_ms(limit)}")
    if far:
        ax.text(0.99, 0.03, "\n".join(far) + " (above the chart)", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=9, color="#333333", zorder=5,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#999999", "alpha": 0.85})


def draw_latency_over_time(ax: Axes, rows: pd.DataFrame, op: str, faults: pd.DataFrame,
                           xlim: tuple[float, float] | None = None, *,
                           legend: bool = True, log: bool | None = None,
                           gates: dict[str, float] | None = None,
                           points: pd.DataFrame | None = None) -> None:
    """p50/p95/p99 latency (ms) per 1 s bucket of one op (``per_second`` rows of that op).

    Empty buckets break the lines. ``points`` (``second``, ``latency_ms``: every ok row)
    replaces the percentiles for a sparse op, whose per-second percentiles would collapse.
    ``log`` is the chart-wide y-scale rule (:func:`latency_log_scale`; None: decide here).
    ``gates`` (``{"p99_ms": limit}``) are drawn as horizontal lines.
    """
    ax.set_title(f"{op}")
    sparse = points is not None and not points.empty
    data = rows.dropna(subset=["p50_ms"]) if not rows.empty else rows
    if data.empty and not sparse:
        draw_message(ax, "no data", sub=f"no successful {op} rows")
        return
    if sparse:
        y_all = points["latency_ms"].to_numpy("float64")
        ax.scatter(points["second"].to_numpy("float64"), y_all, s=14, color="#1f77b4",
                   alpha=0.7, lw=0, label="each operation", zorder=2.5)
        ax.set_title(f"{op} (each operation: too few per second for percentiles)",
                     fontsize=11)
    else:
        full = _full_seconds(data, xlim)
        x = full["second"].to_numpy("float64") + 0.5
        for col, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            ax.plot(x, full[col].to_numpy("float64"), color=PCT_COLORS[col], lw=1.2,
                    label=label, marker="o" if len(data) < 30 else None, ms=4)
        y_all = data[["p50_ms", "p99_ms"]].to_numpy("float64").ravel()
    y_all = y_all[np.isfinite(y_all)]
    lo, hi = float(np.min(y_all)), float(np.max(y_all))
    if log is None:
        log = lo > 0 and hi / lo > _LOG_RATIO
    if log:
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")
    else:
        ax.set_ylim(bottom=0, top=max(hi * 1.08, 1e-3))
        ax.set_ylabel("ms")
    _draw_gates(ax, gates, hi)
    if log:
        _log_axis(ax.yaxis, lo, hi)
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    if legend:
        ax.legend(loc="upper right")


def chart_latency_over_time(per_sec: pd.DataFrame, ops: Sequence[str], faults: pd.DataFrame,
                            title: str, gates: dict[str, dict[str, float]] | None = None,
                            points: pd.DataFrame | None = None) -> Figure:
    """Chart 1: small multiples, one panel per op, latency percentiles per second.

    ``points`` holds every ok row of the sparse ops (:func:`aggregate.sparse_ops`), drawn
    as dots instead of percentiles; ``gates`` are the run's ``gates.latency_ms``.
    """
    with _style():
        ops = list(ops)
        nrows, ncols = _grid(max(1, len(ops)))
        fig, axes = new_figure(nrows, ncols)
        log = latency_log_scale(per_sec, ops, points)
        scale = "log y scale in every panel" if log else "linear y scale from 0 in every panel"
        fig.suptitle(f"{title}: latency per operation over time ({scale})\np50/p95/p99 "
                     "latency (end - intended) of ok ops per 1 s · gap: none finished · "
                     "dots: every op of a sparse op")
        xlim = _xlim(per_sec, faults)
        flat = axes.ravel()
        if not ops:
            draw_message(flat[0], "no data", sub="no timed operations in the journal")
            flat[0].set_title("latency over time")
        for i, (ax, op) in enumerate(zip(flat, ops)):
            pts = None
            if points is not None and not points.empty:
                pts = points.loc[points["op"] == op]
            draw_latency_over_time(ax, per_sec.loc[per_sec["op"] == op], op, faults, xlim,
                                   legend=False, log=log, gates=(gates or {}).get(op),
                                   points=pts)
            ax.set_xlabel(_TIME_LABEL if i + ncols >= len(ops) else "")
        for ax in flat[len(ops) if ops else 1:]:
            ax.set_visible(False)
        _figure_legend(fig, flat[: len(ops)])
        return fig


_LEGEND_ORDER = {"p50": 0, "p95": 1, "p99": 2, "each operation": 3}


def _figure_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for all panels (the union of their labelled artists), bottom centre."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        order = sorted(seen, key=lambda lab: (_LEGEND_ORDER.get(lab, 4), lab))
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


def cdf_xlim(curves: pd.DataFrame) -> tuple[float, float] | None:
    """The x range (ms, log axis) that holds every curve of every op: shared by all panels."""
    if curves is None or curves.empty:
        return None
    xs = np.maximum(curves["ms"].to_numpy("float64"), 1e-3)
    lo, hi = float(xs.min()), float(xs.max())
    if hi <= lo:
        hi = lo * 2
    return lo / 1.15, hi * 1.15


def draw_cdf(ax: Axes, curves: pd.DataFrame, op: str, *, legend: bool = True,
             xlim: tuple[float, float] | None = None, excluded: int | None = None) -> None:
    """CDF (log x, ms) of one op: latency (end - intended) solid, service time (end -
    start) dashed. ``xlim`` is the range shared by all panels; ``excluded`` = failed or
    unknown rows of the op, left out of the curves (named beside n)."""
    ax.set_title(op)
    if curves.empty:
        draw_message(ax, "no data", sub=f"no successful {op} rows"
                     + (f" ({excluded:,} failed)" if excluded else ""))
        return
    styles = {"latency": ("#1f77b4", "-", 2.2, "latency (end - intended)"),
              "service": ("#9467bd", "--", 1.6, "service time (end - start)")}
    drawn = {}
    for kind, (color, ls, lw, label) in styles.items():
        c = curves.loc[curves["kind"] == kind]
        if c.empty:
            continue
        x = np.maximum(c["ms"].to_numpy("float64"), 1e-3)
        y = c["fraction"].to_numpy("float64") * 100
        drawn[kind] = x
        ax.step(np.r_[x[0], x], np.r_[0.0, y], where="post", color=color, ls=ls, lw=lw,
                label=label)
    ax.set_xscale("log")
    if xlim is None:
        xlim = cdf_xlim(curves)
    if xlim is not None:
        ax.set_xlim(*xlim)
    _log_axis(ax.xaxis, *(xlim or (0.0, 0.0)))
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
        n = int(lat["n"].iloc[0]) if "n" in lat else len(ms)
        n_text = f"n = {n:,} ok"
        if excluded is not None:
            n_text += f"\n{excluded:,} failed excluded" if excluded else "\nno failures"
        n_text += f"\np50 {_fmt_ms(p50)}\np99 {_fmt_ms(p99)}"
        if "service" in drawn and len(drawn["service"]) == len(drawn["latency"]) and \
                np.allclose(drawn["service"], drawn["latency"]):
            n_text += "\nservice = latency\n(nothing queued)"
    if legend:
        ax.legend(loc="lower right")
    if n_text:
        ax.text(0.98, 0.05 if not legend else 0.35, n_text, transform=ax.transAxes, ha="right",
                va="bottom", fontsize=10,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#cccccc"})


def chart_latency_cdf(cdf: pd.DataFrame, ops: Sequence[str], title: str,
                      excluded: dict[str, int] | None = None) -> Figure:
    """Chart 2: latency distribution per op (CDF on a log x axis shared by all panels).

    ``excluded`` maps an op to its failed + unknown rows (left out of its curves).
    """
    with _style():
        ops = list(ops)
        nrows, ncols = _grid(max(1, len(ops)))
        fig, axes = new_figure(nrows, ncols)
        fig.suptitle(f"{title}: latency distribution per operation (same x range in every "
                     "panel)\nshare of successful operations finished within x ms; solid = "
                     "latency (end - intended), dashed = service time (end - start)")
        flat = axes.ravel()
        if not ops:
            draw_message(flat[0], "no data", sub="no timed operations in the journal")
            flat[0].set_title("latency distribution")
        shown = cdf.loc[cdf["op"].isin(ops)] if not cdf.empty else cdf
        xlim = cdf_xlim(shown)
        for i, (ax, op) in enumerate(zip(flat, ops)):
            draw_cdf(ax, cdf.loc[cdf["op"] == op], op, legend=False, xlim=xlim,
                     excluded=None if excluded is None else int(excluded.get(op, 0)))
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


def _steps(outcomes: pd.DataFrame, cols: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every second from first to last (0 where nothing finished) as post-steps."""
    lo, hi = int(outcomes["second"].min()), int(outcomes["second"].max())
    full = outcomes.set_index("second").reindex(range(lo, hi + 1), fill_value=0)
    x = np.r_[full.index.to_numpy("float64"), float(hi + 1)]  # close the last 1 s step
    ys = [np.r_[full[c].to_numpy("float64"), float(full[c].iloc[-1])] if c in full
          else np.zeros(len(x)) for c in cols]
    return x, ys


def _users_line(ax: Axes, users: pd.DataFrame, users_label: str,
                xlim: tuple[float, float] | None) -> list:
    """The user count on a second y axis, held at its last value to the end of the run."""
    ax2 = ax.twinx()
    ax2.grid(False)
    ux = users["second"].to_numpy("float64")
    uy = users.iloc[:, 1].to_numpy("float64")
    if xlim is not None and len(ux) and ux[-1] < xlim[1]:
        ux, uy = np.r_[ux, xlim[1]], np.r_[uy, uy[-1]]
    if xlim is not None and len(ux) and ux[0] > xlim[0]:
        ux, uy = np.r_[xlim[0], ux], np.r_[uy[0], uy]
    ax2.plot(ux, uy, color="black", lw=2, ls="--", drawstyle="steps-post", label=users_label)
    ax2.set_ylabel(users_label)
    ax2.set_ylim(bottom=0, top=max(1.0, float(np.nanmax(uy)) * 1.1))
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    return list(zip(*ax2.get_legend_handles_labels()))


def draw_throughput(ax: Axes, outcomes: pd.DataFrame, users: pd.DataFrame, users_label: str,
                    faults: pd.DataFrame, xlim: tuple[float, float] | None = None) -> None:
    """Successful requests per second (``second``, ``ok`` and optional ``expected``),
    stacked, + users on a second axis held to the end of the run. Failures are drawn
    by :func:`draw_failures` on their own scale; a layer without data gets no legend entry."""
    ax.set_title("Successful requests per second")
    if outcomes.empty:
        draw_message(ax, "no data", sub="no operations finished in this run")
        return
    layers = [("ok", "ok", OUTCOME_COLORS["ok"])]
    if "expected" in outcomes and outcomes["expected"].sum() > 0:
        layers.append(("expected", "expected outcome (provoked on purpose)", "#9e9e9e"))
    x, ys = _steps(outcomes, [c for c, _, _ in layers])
    keep = [i for i, y in enumerate(ys) if y.sum() > 0]
    if keep:
        ax.stackplot(x, *[ys[i] for i in keep], labels=[layers[i][1] for i in keep],
                     colors=[layers[i][2] for i in keep], alpha=0.85, step="post")
    ax.set_ylabel("requests / s")
    ax.set_ylim(bottom=0)
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    handles, labels = ax.get_legend_handles_labels()
    if users is not None and not users.empty:
        for h, lab in _users_line(ax, users, users_label, xlim):
            handles.append(h)
            labels.append(lab)
    if labels:
        ax.legend(handles, labels, loc="lower right", ncols=len(labels), framealpha=0.9)


def draw_failures(ax: Axes, outcomes: pd.DataFrame, faults: pd.DataFrame,
                  xlim: tuple[float, float] | None = None) -> None:
    """Failed and unknown-outcome requests per second, stacked, on their own y scale."""
    ax.set_title("Failed requests per second (own scale)")
    total = {o: int(outcomes[o].sum()) if o in outcomes and not outcomes.empty else 0
             for o in ("fail", "info")}
    if outcomes.empty or sum(total.values()) == 0:
        draw_message(ax, "no failed requests", color=OUTCOME_COLORS["ok"], size=16)
        _time_axis(ax, xlim, label=False)
        return
    labels = {"fail": "fail", "info": "info (outcome unknown)"}
    cols = [o for o in ("fail", "info") if total[o] > 0]
    x, ys = _steps(outcomes, cols)
    ax.stackplot(x, *ys, labels=[f"{labels[o]}: {total[o]:,}" for o in cols],
                 colors=[OUTCOME_COLORS[o] for o in cols], alpha=0.9, step="post")
    ax.set_ylabel("requests / s")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    ax.legend(loc="upper right")


def chart_throughput(per_sec: pd.DataFrame, users: pd.DataFrame, users_label: str,
                     faults: pd.DataFrame, title: str,
                     events: frozenset[str] | None = None) -> Figure:
    """Chart 3: requests per second (successes above, failures below on their own
    scale) with the user count. Events and fault markers (``events``) are not requests."""
    from harness.results.report.aggregate import EVENT_OPS

    skip = set(EVENT_OPS if events is None else events) | {"fault"}
    with _style():
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
        fig.suptitle(f"{title}: throughput (requests only; events such as kicked_offline "
                     "are not counted)")
        cols = [c for c in ("ok", "fail", "info", "expected") if c in per_sec]
        if per_sec.empty:
            outcomes = pd.DataFrame(columns=["second", "ok", "fail", "info"])
        else:
            ops = per_sec.loc[~per_sec["op"].isin(list(skip))]
            outcomes = ops.groupby("second", as_index=False)[cols].sum()
        xlim = _xlim(per_sec, faults)
        draw_throughput(top, outcomes, users, users_label, faults, xlim)
        top.set_xlabel("")
        draw_failures(bottom, outcomes, faults, xlim)
        return fig


# --------------------------------------------------------------------------- chart 4


def _top_codes(totals: pd.DataFrame, top: int) -> list[int]:
    return [int(c) for c in totals["code"].head(top)]


_OTHER = -(2**62)
_EXPECTED_COLOR = "#c7c7c7"
_EXPECTED_HATCH = "//"


def code_colors(totals: pd.DataFrame, top: int = 8) -> dict[int, object]:
    """One colour per error code (the ``top`` most frequent), the same in every panel."""
    cmap = matplotlib.colormaps["tab10"]
    skip = {3}  # tab10's red is the colour of "fail" elsewhere: not a code colour
    palette = [cmap(i) for i in range(10) if i not in skip]
    out: dict[int, object] = {c: palette[i % len(palette)]
                              for i, c in enumerate(_top_codes(totals, top))}
    out[_OTHER] = "#7f7f7f"
    return out


def _code_label(code: int, names: dict[int, str]) -> str:
    if code == _OTHER:
        return "other codes"
    if code == 0:
        return "0 (check failed, no error code)"
    return names.get(code, str(code))


def draw_codes_over_time(ax: Axes, codes_ps: pd.DataFrame, totals: pd.DataFrame,
                         faults: pd.DataFrame, xlim: tuple[float, float] | None = None,
                         top: int = 8, max_buckets: int = 150,
                         colors: dict[int, object] | None = None) -> None:
    """Stacked areas: failed operations per time bucket by code (top ``top`` codes, rest
    as other), coloured by :func:`code_colors`; expected outcomes (``codes_ps.expected``)
    on top, grey and hatched, labelled "expected".

    Long runs are binned into wider buckets (at most ``max_buckets``); the y axis counts
    operations per bucket, so its ticks are whole numbers.
    """
    if codes_ps.empty:
        ax.set_title("Failed operations over time, by code")
        draw_message(ax, "no failed operations", color=OUTCOME_COLORS["ok"])
        return
    colors = code_colors(totals, top) if colors is None else colors
    lo, hi = int(codes_ps["second"].min()), int(codes_ps["second"].max())
    if xlim is not None:
        lo, hi = min(lo, int(xlim[0])), max(hi, int(math.ceil(xlim[1])) - 1)
    width = max(1, math.ceil((hi - lo + 1) / max_buckets))
    keep = _top_codes(totals, top)
    names = dict(zip(totals["code"].astype(int), totals["name"]))
    if "name" in codes_ps:
        for c, nm in zip(codes_ps["code"].astype(int), codes_ps["name"]):
            names.setdefault(c, nm)
    expected = (codes_ps["expected"].to_numpy(dtype=bool) if "expected" in codes_ps
                else np.zeros(len(codes_ps), dtype=bool))
    err_key = codes_ps["code"].where(codes_ps["code"].isin(keep), other=_OTHER)
    key = np.where(expected, codes_ps["code"].to_numpy("int64"), err_key.to_numpy("int64"))
    tag = np.where(expected, "expected", "error")
    bucket = (codes_ps["second"] - lo) // width * width + lo
    wide = (codes_ps.assign(key=key, tag=tag, bucket=bucket)
            .pivot_table(index="bucket", columns=["tag", "key"], values="count",
                         aggfunc="sum", fill_value=0)
            .reindex(range(lo, hi + 1, width), fill_value=0))
    err_order = [("error", c) for c in keep + [_OTHER] if ("error", c) in wide.columns]
    exp_order = sorted(c for c in wide.columns if c[0] == "expected")
    x = np.r_[wide.index.to_numpy("float64"), float(wide.index[-1] + width)]
    ys = [np.r_[wide[c].to_numpy("float64"), wide[c].to_numpy("float64")[-1:]]
          for c in err_order + exp_order]
    labels = [_code_label(c, names) for _, c in err_order]
    labels += [f"expected: {_code_label(c, names)}" for _, c in exp_order]
    fills = [colors.get(c, "#7f7f7f") for _, c in err_order] + [_EXPECTED_COLOR] * len(exp_order)
    polys = ax.stackplot(x, *ys, labels=labels, colors=fills, step="post", alpha=0.9)
    for poly in polys[len(err_order):]:
        poly.set_hatch(_EXPECTED_HATCH)
        poly.set_edgecolor("#6f6f6f")
    unit = "1 s" if width == 1 else f"{width} s"
    ax.set_title(f"Failed operations per {unit}, by code")
    ax.set_ylabel(f"operations per {unit}")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    shade_faults(ax, faults)
    _time_axis(ax, xlim)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)


def draw_code_totals(ax: Axes, totals: pd.DataFrame, top: int = 12,
                     colors: dict[int, object] | None = None,
                     expected: pd.DataFrame | None = None) -> None:
    """Horizontal bars: failed operations per code over the whole run, coloured like
    :func:`draw_codes_over_time`; expected outcomes (``expected``: code, name, count) as
    grey hatched bars labelled "(expected)", after the errors."""
    ax.set_title("Failed operations per code (whole run)")
    have_exp = expected is not None and not expected.empty
    if totals.empty and not have_exp:
        draw_message(ax, "0 failures", color=OUTCOME_COLORS["ok"])
        return
    colors = code_colors(totals) if colors is None else colors
    names = dict(zip(totals["code"].astype(int), totals["name"]))
    t = totals.head(top)
    labels = [_code_label(int(c), names) for c in t["code"]]
    values = [float(v) for v in t["count"]]
    fills = [colors.get(int(c), "#7f7f7f") for c in t["code"]]
    hatches = [""] * len(labels)
    if have_exp:
        enames = dict(zip(expected["code"].astype(int), expected["name"]))
        for rec in expected.head(top).itertuples(index=False):
            labels.append(f"{_code_label(int(rec.code), enames)} (expected)")
            values.append(float(rec.count))
            fills.append(_EXPECTED_COLOR)
            hatches.append(_EXPECTED_HATCH)
    slots = max(len(labels), 5)
    ypos = np.arange(len(labels))[::-1] + (slots - len(labels))  # bars from the top down
    bars = ax.barh(ypos, values, color=fills, height=0.6, edgecolor="#555555", lw=0.5)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    ax.set_yticks(ypos, labels)
    ax.bar_label(bars, labels=[f"{int(v):,}" for v in values], padding=3)
    ax.set_xlabel("operations")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.7, slots - 0.3)
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)


def chart_error_codes(codes_ps: pd.DataFrame, totals: pd.DataFrame, faults: pd.DataFrame,
                      xlim: tuple[float, float] | None, title: str,
                      expected: pd.DataFrame | None = None) -> Figure:
    """Chart 4: error codes over time and their totals (one colour per code in both);
    expected outcomes (``expected``: code, name, count) drawn apart, grey and hatched."""
    with _style():
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        gs = fig.add_gridspec(1, 3)
        ax_time = fig.add_subplot(gs[0, :2])
        ax_tot = fig.add_subplot(gs[0, 2])
        fig.suptitle(f"{title}\nErrors: operations whose outcome was fail or info "
                     "(-1 = transport error / timeout); grey hatched = expected, not errors")
        colors = code_colors(totals)
        draw_codes_over_time(ax_time, codes_ps, totals, faults, xlim, colors=colors)
        draw_code_totals(ax_tot, totals, colors=colors, expected=expected)
        return fig


# --------------------------------------------------------------------------- chart 5


def draw_race_survivors(ax: Axes, races: pd.DataFrame) -> None:
    """The distribution of surviving sessions per kick race: % of races (bars, every
    count from 0 to the most devices), split by the race's verdict, labelled with counts.
    ``races``: one row per race, or rows with a ``races`` count (aggregate.race_counts)."""
    ax.set_title("Kick races: sessions still logged in after each race")
    if races.empty:
        draw_message(ax, "no data", sub="no kick races (race rows) in this run")
        return
    if "races" in races.columns:  # already counted (aggregate.race_counts, the digest)
        n = int(races["races"].sum())
        counts = races.groupby(["survivors", "outcome"])["races"].sum().unstack(fill_value=0)
    else:  # one row per race (aggregate.race_survivors)
        n = len(races)
        counts = races.groupby(["survivors", "outcome"]).size().unstack(fill_value=0)
    most = int(max(races["survivors"].max(), races["devices"].max() if "devices" in races
                   else 0))
    x = np.arange(0, most + 1)
    counts = counts.reindex(x, fill_value=0)
    bottom = np.zeros(len(x))
    for outcome, label in (("ok", "fits the policy"), ("fail", "violates the policy"),
                           ("info", "unknown")):
        if outcome in counts.columns and counts[outcome].sum() > 0:
            y = counts[outcome].to_numpy("float64") / n * 100
            ax.bar(x, y, bottom=bottom, color=OUTCOME_COLORS[outcome], label=label, width=0.7)
            bottom += y
    total = counts.sum(axis=1).to_numpy("int64")
    for xi, (pct, k) in enumerate(zip(bottom, total)):
        ax.text(x[xi], pct + 1.5, f"{k:,} ({pct:.0f}%)" if k else "0", ha="center",
                va="bottom", fontsize=10, color="#333333")
    ax.set_xticks(x)
    ax.set_xlim(-0.6, most + 0.6)
    ax.set_ylim(0, 115)
    ax.set_xlabel(f"sessions still logged in after the race (of {n:,} races)")
    ax.set_ylabel("% of races")
    policies = sorted({p for p in races["policy"] if p})
    ax.legend(title=f"policy: {', '.join(policies)}" if policies else None, loc="upper right")


def draw_ms_histogram(ax: Axes, values_ms: "np.ndarray | Sketch", title: str, what: str,
                      bound_ms: float | None = None, empty_hint: str = "") -> None:
    """Histogram of durations (ms) with p50/p99 markers and an optional bound line.
    ``values_ms``: the values, or a :class:`harness.results.digest.Sketch` of them (a long
    run's kick delays: drawn from its buckets, its nearest-rank p50 / p99)."""
    ax.set_title(title)
    if hasattr(values_ms, "weighted"):
        sk = values_ms
        v, w = sk.weighted()
        n = int(sk.n)
        p50, p99 = sk.quantiles([0.5, 0.99]) if n else (math.nan, math.nan)
    else:
        v = np.asarray(values_ms, dtype="float64")
        v = v[np.isfinite(v)]
        w = None
        n = len(v)
        if n:
            srt = np.sort(v)
            p50, p99 = (srt[max(math.ceil(q * n - 1e-9), 1) - 1] for q in (0.5, 0.99))
    if n == 0:
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
    ax.hist(v, bins=bins, weights=w, color="#1f77b4", alpha=0.85, label=f"n = {n:,}")
    if ax.get_xscale() == "log":
        _log_axis(ax.xaxis)
    for val, q, color in ((p50, 50, "#2ca02c"), (p99, 99, "#d62728")):
        ax.axvline(val, color=color, ls="--", lw=1.8, label=f"p{q} = {_fmt_ms(val)}")
    if bound_ms is not None and bound_ms > 0:
        if bound_ms <= hi * 3:
            ax.axvline(bound_ms, color="black", lw=2, label=f"bound = {_fmt_ms(bound_ms)}")
        else:  # drawing it would squash the data into one corner
            ax.plot([], [], " ", label=f"bound = {_fmt_ms(bound_ms)} (all far below)")
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")


#: Scenario -> the panels of chart 5 that belong to it.
SCENARIO_PANELS: dict[str, tuple[str, ...]] = {
    "kick_race": ("races", "kicks"), "relogin_expiry": ("relogin",),
    "account_switch": ("switch",),
}


def chart_scenarios(races: pd.DataFrame, kicks: "pd.DataFrame | Sketch", relogin_ms: np.ndarray,
                    switch_ms: np.ndarray, relogin_bound_ms: float | None, title: str,
                    ran: set[str] | None = None) -> Figure:
    """Chart 5: kick races (survivors, kick delay), relogin recovery, switch latency.

    A panel appears when its scenario ran (``ran``: scenario names) or it has data;
    ``ran=None`` (unknown) keeps every panel that has data.
    """
    if isinstance(kicks, pd.DataFrame):
        kick_v = kicks["delay_ms"].to_numpy("float64") if not kicks.empty else np.empty(0)
        n_kicks = len(kick_v)
    else:  # a Sketch of the delays (Digest.kick_delay_sketch)
        kick_v, n_kicks = kicks, kicks.n
    has = {"races": not races.empty, "kicks": n_kicks > 0,
           "relogin": len(relogin_ms) > 0, "switch": len(switch_ms) > 0}
    wanted = {p for p, ok in has.items() if ok}
    for scen in (ran or set()):
        wanted.update(SCENARIO_PANELS.get(scen, ()))
    panels = [p for p in ("races", "kicks", "relogin", "switch") if p in wanted]
    with _style():
        n = max(1, len(panels))
        fig, axes = new_figure(*({1: (1, 1), 2: (1, 2), 3: (1, 3)}.get(n, (2, 2))))
        fig.suptitle(f"{title}\nScenarios: kick races, relogin after the signature expires, "
                     "account switch")
        flat = axes.ravel()
        if not panels:
            draw_message(flat[0], "no scenario views for this run",
                         sub="kick_race, relogin_expiry and account_switch did not run",
                         size=18)
        for ax, panel in zip(flat, panels):
            if panel == "races":
                draw_race_survivors(ax, races)
            elif panel == "kicks":
                draw_ms_histogram(ax, kick_v,
                                  "Kick delay: second login sent -> first device told it is "
                                  "logged out", "kick delay",
                                  empty_hint="no kick notices naming the login that caused them")
            elif panel == "relogin":
                draw_ms_histogram(ax, relogin_ms,
                                  "Relogin: signature expired -> logged in again",
                                  "recovery time", bound_ms=relogin_bound_ms,
                                  empty_hint="no successful relogins")
            else:
                draw_ms_histogram(ax, switch_ms,
                                  "Account switch: log in as another account -> confirmed",
                                  "switch time", empty_hint="no successful account switches")
        for ax in flat[len(panels) if panels else 1:]:
            ax.set_visible(False)
        return fig


# --------------------------------------------------------------------------- chart 6


CHECKS_PER_ROW = 4


def draw_checks_strip(ax: Axes, checks: pd.DataFrame, evaluated: bool) -> None:
    """One cell per correctness check: green ✓ name / red ✗ name + violations."""
    ax.set_axis_off()
    if not evaluated or checks.empty:
        ax.text(0.5, 0.5, "checks not evaluated: summary.json has no 'checks'" if not evaluated
                else "no correctness checks ran", transform=ax.transAxes, ha="center",
                va="center", fontsize=14, color="#555555", fontweight="bold")
        return
    n = len(checks)
    cols = min(CHECKS_PER_ROW, n)
    rows = math.ceil(n / cols)
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    for i, rec in enumerate(checks.itertuples(index=False)):
        r, c = divmod(i, cols)
        y = rows - r - 1
        ok = bool(rec.passed) if hasattr(rec, "passed") else int(rec.violations) == 0
        color = OUTCOME_COLORS["ok"] if ok else OUTCOME_COLORS["fail"]
        ax.add_patch(matplotlib.patches.FancyBboxPatch(
            (c + 0.03, y + 0.1), 0.94, 0.8, boxstyle="round,pad=0,rounding_size=0.08",
            fc=color, ec="none", alpha=0.15 if ok else 0.25))
        mark = "✓" if ok else "✗"
        status = "passed" if ok else f"{int(rec.violations):,} violation(s)"
        ax.text(c + 0.08, y + 0.5, f"{mark} {rec.check}", ha="left", va="center",
                fontsize=13, color="#1a1a1a", fontweight="bold", gid=f"check:{rec.check}")
        ax.text(c + 0.94, y + 0.5, status, ha="right", va="center", fontsize=12,
                color=color, fontweight="bold")


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
        draw_message(ax, "0 violations", color=OUTCOME_COLORS["ok"], size=18,
                     sub=f"{len(checks)} checks passed: {names}" if names else None)
        return
    bad = checks.loc[checks["violations"] > 0]
    labels = {r.check: f"{r.check}\n({r.violations:,} violations)" for r in bad.itertuples()}
    if points.empty:
        t = bad.iloc[::-1]
        bars = ax.barh([labels[c] for c in t["check"]], t["violations"].to_numpy("float64"),
                       color=OUTCOME_COLORS["fail"], height=0.6)
        ax.bar_label(bars, labels=[f"{int(v):,}" for v in t["violations"]], padding=3)
        ax.set_xlabel("violations (the examples carry no times, so none are placed in time)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
    """Chart 6: a compact strip with every check's pass/fail; below it, only when some
    check failed, its violations (in time where the examples carry times)."""
    with _style():
        n = len(checks) if evaluated and not checks.empty else 1
        strip_in = 0.55 * math.ceil(n / min(CHECKS_PER_ROW, n)) + 0.25
        failed = evaluated and not checks.empty and int(checks["violations"].sum()) > 0
        height = strip_in + 0.6 + (5.5 if failed else 0.0)
        fig = Figure(figsize=(FIGSIZE[0], height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(f"{title}: correctness checks", fontsize=14)
        if failed:
            ax_strip, ax_v = fig.subplots(2, 1, height_ratios=[strip_in, 5.5])
            draw_checks_strip(ax_strip, checks, evaluated)
            draw_violations(ax_v, points, checks, faults, evaluated, xlim)
        else:
            ax_strip = fig.subplots(1, 1)
            draw_checks_strip(ax_strip, checks, evaluated)
        return fig


# --------------------------------------------------------------------------- compare


def draw_compare_cdf(ax: Axes, base: pd.DataFrame, this: pd.DataFrame, op: str,
                     base_name: str, this_name: str,
                     xlim: tuple[float, float] | None = None) -> None:
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
    if xlim is not None:
        ax.set_xlim(*xlim)
        _log_axis(ax.xaxis, *xlim)
    else:
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
        lat = [f.loc[(f["kind"] == "latency") & f["op"].isin(ops)]
               for f in (base_cdf, this_cdf) if not f.empty]
        xlim = cdf_xlim(pd.concat(lat)) if lat else None  # one x range for every panel
        for ax, op in zip(flat, ops):
            b = base_cdf.loc[(base_cdf["op"] == op) & (base_cdf["kind"] == "latency")]
            t = this_cdf.loc[(this_cdf["op"] == op) & (this_cdf["kind"] == "latency")]
            draw_compare_cdf(ax, b, t, op, base_name, this_name, xlim=xlim)
        for ax in flat[len(ops) if ops else 1:]:
            ax.set_visible(False)
        return fig

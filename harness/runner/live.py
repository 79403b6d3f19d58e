"""What the web UI shows while a test runs: the checks run incrementally on the journal
(:class:`LiveChecks`, the same check functions the end-of-test pipeline runs, on a
:class:`~harness.results.checks.History` fed row by row), live op/code counters and gate
values, and CPU% of the load generators and the embedded target (:class:`CpuSampler`).

Rows reach :meth:`LiveChecks.feed` from the journal's flusher (``Journal.listeners``; the
master tails its workers' journal files instead, :class:`JournalTail`), never from the
request path. Pure apart from :class:`CpuSampler` (psutil) and the file tails.
"""
from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.results.checks import _CHECKS, _enabled
from harness.results.checks.history import CheckParams, CheckResult, History, Ledger

#: ``detail`` of a row the harness's own stop cut short (harness.runner.users)
STOPPED_BY_HARNESS = "stopped by harness"
#: CPU% of one core at or above which a process counts as saturated (p95 over the test).
SATURATED_PCT = 90.0

_PCTS = (("p50_ms", 0.50), ("p90_ms", 0.90), ("p95_ms", 0.95), ("p99_ms", 0.99), ("p999_ms", 0.999))


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Inverted-CDF quantile (the report's method) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    i = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
    return float(s[i])


class _Op:
    __slots__ = ("count", "ok", "fail", "info", "lat")

    def __init__(self) -> None:
        self.count = self.ok = self.fail = self.info = 0
        self.lat = array("d")  # ms, end - intended, ok rows


class LiveChecks:
    """Checks, counters and gates of one test, updated as journal rows arrive.

    ``config``: the effective config (masked mapping, as the run folder's config.yaml);
    ``started_ns``: the test's start (unix ns; rates are per second of the test so far).
    :meth:`feed` folds rows in (cheap); :meth:`evaluate` re-runs the enabled checks on the
    accumulated history (every ~2 s from a background greenlet); :meth:`snapshot` is the
    JSON the web UI shows. :meth:`set_final` replaces the checks with the end-of-test
    (authoritative) result, so the last thing the live view shows is the verdict's input.
    """

    def __init__(self, config: Mapping, *, started_ns: int, enabled: Sequence[str] | None = None) -> None:
        self.config = config
        self.params = CheckParams.from_config(config)
        self.names = _enabled(enabled, config)
        self.gates_cfg = config.get("gates") or {} if isinstance(config, Mapping) else {}
        self.started_ns = started_ns
        self.history = History()
        self.ledger_rows: list[dict] = []
        self.has_ledger = False
        self.ops: dict[str, _Op] = {}
        self.codes: dict[int, int] = {}
        self.lag = array("d")  # ms, start - intended, every row
        self.rows = 0
        self.stopped: dict[str, int] = {}  # op -> rows the harness's own stop cut short
        self.last_end_ns = 0
        self.results: dict[str, CheckResult] = {}
        self.final = False
        self.evaluations = 0

    # ------------------------------------------------------------------ input
    def feed(self, rows: Iterable[dict], where: str | None = None) -> None:
        rows = list(rows)
        if not rows:
            return
        self.history.feed(rows, where)
        for r in rows:
            if type(r) is not dict:
                continue
            self.rows += 1
            op = r.get("op")
            o = self.ops.get(op)
            if o is None:
                o = self.ops[op] = _Op()
            o.count += 1
            outcome = r.get("outcome")
            st, en, it = r.get("start"), r.get("end"), r.get("intended")
            if outcome == "ok":
                o.ok += 1
                if type(en) is int and type(it) is int:
                    o.lat.append((en - it) / 1e6)
            elif outcome == "fail":
                o.fail += 1
            else:
                o.info += 1
                if r.get("detail") == STOPPED_BY_HARNESS:
                    self.stopped[op] = self.stopped.get(op, 0) + 1
            code = r.get("code")
            if type(code) is int:
                self.codes[code] = self.codes.get(code, 0) + 1
            if type(st) is int and type(it) is int:
                self.lag.append((st - it) / 1e6)
            if type(en) is int and en > self.last_end_ns:
                self.last_end_ns = en

    def feed_ledger(self, rows: Iterable[dict]) -> None:
        self.has_ledger = True
        self.ledger_rows.extend(r for r in rows if isinstance(r, dict))

    # ------------------------------------------------------------------ checks
    def evaluate(self) -> dict[str, CheckResult]:
        """Run the enabled check functions on everything fed so far (no-op once final)."""
        if self.final:
            return self.results
        ledger = Ledger(self.ledger_rows) if self.has_ledger else None
        self.results = {n: _CHECKS[n](self.history, self.params, ledger, None) for n in self.names}
        self.evaluations += 1
        return self.results

    def set_final(self, checks: Mapping[str, CheckResult]) -> None:
        self.results = dict(checks)
        self.final = True

    # ------------------------------------------------------------------ views
    def ops_summary(self, now_ns: int) -> dict[str, dict]:
        elapsed = max(1e-9, (now_ns - self.started_ns) / 1e9)
        out = {}
        for op, o in sorted(self.ops.items(), key=lambda kv: str(kv[0])):
            row: dict[str, Any] = {"count": o.count, "ok": o.ok, "fail": o.fail, "info": o.info,
                                   "rate_per_s": o.count / elapsed}
            if self.stopped.get(op):
                row["stopped"] = self.stopped[op]
            for key, q in _PCTS:
                row[key] = _quantile(o.lat, q)
            row["max_ms"] = max(o.lat) if o.lat else None
            out[str(op)] = row
        return out

    def gates(self, now_ns: int) -> dict[str, dict]:
        from harness.results.gates import SCHEDULE_LAG_KEY, evaluate_gates

        summary = {"ops": self.ops_summary(now_ns), "codes": {str(c): n for c, n in self.codes.items()},
                   "checks": {n: r.to_dict() for n, r in self.results.items()}}
        try:
            return evaluate_gates(self.gates_cfg, {**summary, SCHEDULE_LAG_KEY: _quantile(self.lag, 0.99)})
        except Exception as exc:  # a bad gate config was reported at start already
            return {"gates": {"limit": None, "value": None, "passed": False, "note": str(exc)}}

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        from harness.protocol import code_short

        checks = {n: {"violations": int(r.violations), "examples": list(r.examples[:3])}
                  for n, r in self.results.items()}
        codes = [{"code": c, "name": code_short(c), "count": n}
                 for c, n in sorted(self.codes.items(), key=lambda kv: (-kv[1], kv[0]))]
        return {"rows": self.rows, "checks": checks, "checks_final": self.final,
                "evaluations": self.evaluations, "ops": self.ops_summary(now_ns), "codes": codes,
                "gates": self.gates(now_ns), "sessions_online": self.sessions_online()}

    def sessions_online(self) -> int | None:
        """Sessions online on the embedded target (its ledger: logins minus ends); None without one."""
        if not self.has_ledger:
            return None
        n = 0
        for r in self.ledger_rows:
            ev = r.get("event")
            n += 1 if ev == "login" else -1 if ev == "end" else 0
        return max(0, n)


# ----------------------------------------------------------------------------- files
class JournalTail:
    """Rows appended to JSONL files since the last :meth:`read` (complete lines only)."""

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}

    def read(self, path: Path) -> list[dict]:
        try:
            size = path.stat().st_size
        except OSError:
            return []
        off = self.offsets.get(path, 0)
        if size <= off:
            return []
        with open(path, "rb") as fh:
            fh.seek(off)
            data = fh.read(size - off)
        cut = data.rfind(b"\n")
        if cut < 0:
            return []
        self.offsets[path] = off + cut + 1
        out = []
        for line in data[:cut].splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    out.append(row)
        return out


def ledger_slice(src: Path, dst: Path, started_ns: int, until_ns: int) -> int:
    """Copy into ``dst`` the ledger rows of the sessions that logged in between ``started_ns``
    and ``until_ns`` (unix ns; both their login and end rows), renumbered from 0: one test's
    share of an embedded target that outlives the test. Returns the rows written."""
    rows = []
    try:
        with open(src, "rb") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict):
                    rows.append(r)
    except OSError:
        rows = []
    mine = {r.get("sessionID") for r in rows
            if r.get("event") == "login" and started_ns <= int(r.get("ts") or 0) <= until_ns}
    out = [r for r in rows if r.get("sessionID") in mine]
    out.sort(key=lambda r: int(r.get("seq") or 0))
    with open(dst, "w", encoding="utf-8") as fh:
        for i, r in enumerate(out):
            fh.write(json.dumps({**r, "seq": i}, separators=(",", ":")) + "\n")
    return len(out)


# ----------------------------------------------------------------------------- CPU
def cpu_stats(samples: Sequence[float]) -> dict[str, float] | None:
    """``{"mean", "p95", "max", "last"}`` of CPU% samples (% of one core); None when empty."""
    if not samples:
        return None
    return {"mean": sum(samples) / len(samples), "p95": _quantile(samples, 0.95) or 0.0,
            "max": max(samples), "last": samples[-1], "samples": len(samples)}


def cpu_summary(generators: Mapping[str, Sequence[float]], target: Sequence[float] | None) -> dict[str, Any]:
    """summary.json ``cpu``: per generator and target stats, saturation flags and notes."""
    gens = {w: s for w, s in ((w, cpu_stats(v)) for w, v in generators.items()) if s is not None}
    tgt = cpu_stats(target) if target is not None else None
    gen_sat = [w for w, s in gens.items() if s["p95"] >= SATURATED_PCT]
    tgt_sat = bool(tgt and tgt["p95"] >= SATURATED_PCT)
    notes = []
    if gen_sat:
        notes.append(f"load generator {', '.join(gen_sat)} was CPU-saturated (p95 >= {SATURATED_PCT:g} % of a core): "
                     "the latency figures are not valid (the generator was the bottleneck)")
    if tgt_sat:
        notes.append(f"the embedded target was CPU-saturated (p95 >= {SATURATED_PCT:g} % of a core): "
                     "the latency is the target's")
    out: dict[str, Any] = {"generators": {w: {k: s[k] for k in ("mean", "p95", "max")} for w, s in gens.items()},
                           "target": {k: tgt[k] for k in ("mean", "p95", "max")} if tgt else None,
                           "generator_saturated": bool(gen_sat), "target_saturated": tgt_sat}
    if notes:
        out["notes"] = notes
    return out


class CpuSampler:
    """CPU% (of one core) of named processes, sampled every ``interval`` s by a greenlet."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.procs: dict[str, Any] = {}
        self.samples: dict[str, list[float]] = {}
        self._g: Any = None

    def add(self, name: str, pid: Any) -> None:
        """Sample process ``pid`` as ``name``; ``pid`` may be a callable giving the current pid
        (the embedded target after a ``server_restart`` fault is a new process)."""
        self.procs[name] = [pid, None, None]  # pid or pid getter, psutil.Process, its pid
        self.samples.setdefault(name, [])
        self._proc(name)

    def _proc(self, name: str) -> Any:
        entry = self.procs[name]
        try:
            pid = entry[0]() if callable(entry[0]) else entry[0]
        except Exception:
            pid = None
        if not pid:
            return None
        if entry[2] != pid:
            try:
                import psutil

                entry[1] = psutil.Process(pid)
                entry[1].cpu_percent(None)  # primes the counter; the first value comes a tick later
                entry[2] = pid
            except Exception:
                entry[1] = entry[2] = None
            return None
        return entry[1]

    def sample(self) -> None:
        for name in list(self.procs):
            p = self._proc(name)
            if p is None:
                continue
            try:
                self.samples[name].append(float(p.cpu_percent(None)))
            except Exception:
                self.procs[name][1] = self.procs[name][2] = None

    def start(self) -> "CpuSampler":
        import gevent

        def loop() -> None:
            while True:
                gevent.sleep(self.interval)
                self.sample()

        self._g = gevent.spawn(loop)
        return self

    def stop(self) -> None:
        g, self._g = self._g, None
        if g is not None:
            g.kill(block=False)

    def stats(self) -> dict[str, dict]:
        return {n: s for n, s in ((n, cpu_stats(v)) for n, v in self.samples.items()) if s is not None}


def this_pid() -> int:
    return os.getpid()

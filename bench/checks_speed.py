"""How fast do the correctness checks judge a big run? (target: 10^6 rows in <= 15 s, one core)

Synthesizes a run folder with a realistic mix of journal rows (mass logins with heartbeats,
kick races with evictions and events, relogin cycles with expiries), then times
``harness.results.checks.run_checks`` on it and prints rows/s, peak RSS growth and the ratio to the
15 s budget. Not part of the test run.

    .venv/bin/python bench/checks_speed.py [--rows 1000000] [--workers 4] [--mix mixed|race] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.results.checks import run_checks  # noqa: E402

NS = 1_000_000_000
BUDGET_S = 15.0


class Writer:
    def __init__(self, path: Path, w: str) -> None:
        self.fh = open(path, "w", encoding="utf-8")
        self.w = w
        self.n = 0
        self.k = 0
        self.dumps = json.JSONEncoder(separators=(",", ":")).encode

    def conn(self) -> str:
        self.k += 1
        return f"{self.w}/{self.k}"

    def row(self, scenario: str, op: str, start: int, end: int, *, user: str = "", session: str | None = None,
            platform: str = "Android", instance: str = "", outcome: str = "ok", code: int = 0, detail: str = "",
            **extra: object) -> None:
        r = {"w": self.w, "n": self.n, "scenario": scenario, "op": op, "user": user, "platform": platform,
             "instance": instance, "session": session, "intended": start, "start": start, "end": end,
             "outcome": outcome, "code": code, "detail": detail}
        r.update(extra)
        self.fh.write(self.dumps(r) + "\n")
        self.n += 1


def mass_login(wr: Writer, i: int, t: int) -> int:
    c, user, sid, inst = wr.conn(), f"storm{wr.w}_{i}", f"S{wr.w}_{i}", f"i{wr.w}_{i}"
    wr.row("mass_login", "connect", t, t + 2_000_000, conn=c)
    wr.row("mass_login", "login", t + 3_000_000, t + 9_000_000, user=user, session=sid, instance=inst, conn=c,
           kicked=[], expire_at=t // NS + 86400)
    for h in range(5):
        ht = t + (h + 1) * NS
        wr.row("mass_login", "heartbeat", ht, ht + 500_000, user=user, instance=inst, conn=c)
    e = t + 6 * NS
    wr.row("mass_login", "logout", e, e + 1_000_000, user=user, session=sid, instance=inst, conn=c)
    wr.row("mass_login", "disconnect", e + 2_000_000, e + 2_000_000, user=user, session=None, instance=inst,
           conn=c, detail="closed_by_client")
    return 9


def kick_race(wr: Writer, i: int, t: int) -> int:
    user, race = f"race{wr.w}_{i}", f"r{wr.w}_{i}"
    devs, prev, rows = [], None, 0
    for d, platform in enumerate(("Android", "iOS", "Windows")):
        c, sid = wr.conn(), f"R{wr.w}_{i}_{d}"
        sent, done = t + d * 1_000_000, t + d * 1_000_000 + 5_000_000
        wr.row("kick_race", "connect", sent - 2_000_000, sent - 1_000_000, platform=platform, conn=c, race=race)
        wr.row("kick_race", "login", sent, done, user=user, session=sid, platform=platform, conn=c, race=race,
               kicked=[prev] if prev else [], expire_at=t // NS + 86400)
        rows += 2
        if prev:
            pc = devs[-1]["conn"]
            wr.row("kick_race", "kicked_offline", done + 1_000, done + 1_000, user=user, session=prev,
                   platform=devs[-1]["platform"], conn=pc, race=race, by=sid, detail="multi_device")
            devs[-1]["alive"], devs[-1]["kicked_by"] = False, sid
            rows += 1
        devs.append({"platform": platform, "instance": c, "session": sid, "code": 0, "sent": sent, "done": done,
                     "kicked_by": None, "alive": True, "conn": c})
        prev = sid
    wr.row("kick_race", "race", t, t + 600_000_000, user=user, race=race,
           data={"devices": devs, "settle_ms": 500, "send_spread_ms": 2.0, "survivors": [prev],
                 "online": [{"Platform": "Windows", "Status": "Online"}], "policy": "single_platform"})
    return rows + 1


def relogin(wr: Writer, i: int, t: int) -> int:
    c, user = wr.conn(), f"exp{wr.w}_{i}"
    wr.row("relogin_expiry", "connect", t, t + 1_000_000, conn=c)
    sid, done = f"E{wr.w}_{i}_0", t + 5_000_000
    expire_at = done // NS + 4
    wr.row("relogin_expiry", "login", t + 2_000_000, done, user=user, session=sid, conn=c, kicked=[],
           expire_at=expire_at)
    rows = 2
    for cyc in range(1, 3):
        ex = (expire_at + 5) * NS + 200_000_000  # leeway 5 s, 0.2 s sweep delay
        wr.row("relogin_expiry", "sig_expired", ex, ex, user=user, session=sid, conn=c)
        new, done = f"E{wr.w}_{i}_{cyc}", ex + 4_000_000
        expire_at = done // NS + 4
        wr.row("relogin_expiry", "login", ex + 1_000_000, done, user=user, session=new, conn=c,
               kicked=[], expire_at=expire_at)
        wr.row("relogin_expiry", "relogin", ex, done, user=user, session=new, conn=c,
               data={"trigger": "sig_expired", "old_session": sid, "attempts": 1})
        sid, rows = new, rows + 3
    wr.row("relogin_expiry", "logout", done + NS, done + NS + 1_000_000, user=user, session=sid, conn=c)
    wr.row("relogin_expiry", "disconnect", done + NS + 2_000_000, done + NS + 2_000_000, user=user, conn=c,
           detail="closed_by_client")
    return rows + 2


def synthesize(root: Path, rows: int, workers: int, mix: str = "mixed") -> int:
    """Write ``rows`` journal rows over ``workers`` files; ``mix`` "mixed" (70% mass logins,
    20% kick races, 10% relogin cycles) or "race" (kick races only: every row matters to a
    check, the slowest case)."""
    (root / "journal").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text("target:\n  policy: single_platform\nrun:\n  settle_s: 2\n")
    per = rows // workers
    total = 0
    t0 = 1_700_000_000 * NS
    for k in range(workers):
        wr = Writer(root / "journal" / f"w{k}.jsonl", f"w{k}")
        i = 0
        while wr.n < per:
            t = t0 + i * 3_000_000
            kind = 8 if mix == "race" else i % 10
            if kind < 7:
                mass_login(wr, i, t)
            elif kind < 9:
                kick_race(wr, i, t)
            else:
                relogin(wr, i, t)
            i += 1
        total += wr.n
        wr.fh.close()
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--mix", choices=("mixed", "race"), default="mixed")
    ap.add_argument("--keep", type=Path, default=None,
                    help="write the run here and keep it (a folder already holding a run of --rows is reused)")
    ap.add_argument("--e2e", action="store_true",
                    help="also the whole end of a run in a fresh process: journals read once, checks + summary + "
                         "report (targets at 10^7 rows: <= 90 s CPU, <= 1.5 GiB peak RSS)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "run"
        t = time.perf_counter()
        mark = root / ".rows"
        if mark.is_file() and mark.read_text().split() == [str(args.rows), args.mix]:
            total = sum(1 for p in (root / "journal").glob("*.jsonl") for _ in open(p, "rb"))
        else:
            total = synthesize(root, args.rows, args.workers, args.mix)
            mark.write_text(f"{args.rows} {args.mix}")
        gen = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (root / "journal").glob("*.jsonl"))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t, c = time.perf_counter(), time.process_time()
        results = run_checks(root)
        took, cpu = time.perf_counter() - t, time.process_time() - c
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        e2e = _e2e(root) if args.e2e else None
    print(f"synthesized {total:,} rows ({size / 1e6:.0f} MB, mix {args.mix}) in {gen:.1f} s")
    for name, res in results.items():
        print(f"  {name:<20} violations={res.violations}")
    print(f"run_checks: {took:.2f} s wall, {cpu:.2f} s CPU, {total / cpu:,.0f} rows/CPU-s, "
          f"peak RSS +{(rss1 - rss0) / 1024:.0f} MB")
    print(f"ratio to the {BUDGET_S:.0f} s budget for 10^6 rows (CPU time, one core): "
          f"{cpu * (1_000_000 / total) / BUDGET_S:.2f} (<= 1.00 meets it)")
    if e2e is not None:
        print(f"end of run (fresh process): scan {e2e['scan_cpu_s']:.1f} s + checks {e2e['checks_cpu_s']:.1f} s + "
              f"summary {e2e['summary_cpu_s']:.1f} s + report {e2e['report_cpu_s']:.1f} s = {e2e['cpu_s']:.1f} s CPU "
              f"({e2e['cpu_s'] / total * 1e6:.1f} us/row), {e2e['seconds']:.1f} s wall, peak RSS {e2e['rss_mib']:.0f} MiB, "
              f"violations {e2e['violations']}")
        print(f"  scaled to 10^7 rows: {e2e['cpu_s'] * 1e7 / total:.0f} s CPU (target <= 90); "
              f"peak RSS target <= 1536 MiB at 10^7")
    return 0


def _e2e(root: Path) -> dict:
    """bench/report_scale.py's end-to-end child on this run folder."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).with_name("report_scale.py")), "--child", str(root), "--e2e"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"end-to-end child failed: {proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())

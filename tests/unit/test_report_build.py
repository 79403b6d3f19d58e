"""build_report / python -m harness.report: files a user opens, for normal and odd runs."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from harness.results.report import build_report
from tests.unit.test_report_data import T0_NS, row, write_run

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ["latency_over_time.png", "latency_cdf.png", "throughput.png", "error_codes.png",
          "scenarios.png", "checks.png"]
TABLES = ["ops.csv", "codes.csv", "per_second.csv", "gates.csv", "checks.csv"]


def _full_rows() -> list[dict]:
    """~20 s of a mixed run: logins, heartbeats, kicks, a race, relogins, switches, a fault."""
    rows: list[dict] = []
    for i in range(200):
        t = 100 + i * 100
        w = f"w{i % 2}"
        conn = f"{w}/{i // 10}"
        lat = 5 + (i % 17) * 3 + (400 if 8000 < t < 11000 else 0)
        rows.append(row("connect", t, latency_ms=2, conn=conn, w=w))
        if i % 9 == 0:
            rows.append(row("login", t + lat, latency_ms=lat, outcome="fail", code=70001, conn=conn, w=w,
                            detail="70001 ERR_SVR_ACCOUNT_USERSIG_EXPIRED"))
        elif i % 13 == 0:
            rows.append(row("login", t + lat, latency_ms=lat, outcome="info", code=-1, conn=conn, w=w))
        else:
            rows.append(row("login", t + lat, start_ms=t + 3, intended_ms=t, session=f"S{i}", conn=conn, w=w))
        rows.append(row("heartbeat", t + lat + 20, latency_ms=1 + i % 4, conn=conn, w=w))
        if i % 10 == 5:
            rows.append(row("kicked_offline", t + 40, session=f"S{i - 1}", by=f"S{i}",
                            detail="multi_device", conn=f"w{(i - 1) % 2}/{(i - 1) // 10}", w=w))
        if i % 20 == 7:
            rows.append(row("relogin", t + 900, latency_ms=300 + i, scenario="relogin_expiry", w=w,
                            data={"trigger": "sig_expired", "attempts": 1}))
        if i % 15 == 3:
            rows.append(row("switch", t + 60, latency_ms=20 + i % 7, scenario="account_switch", w=w))
    rows.append(row("fault", 11000, start_ms=8000, outcome="info", detail="server_stall"))
    rows.append(row("race", 15000, latency_ms=600, scenario="kick_race", race="r1", detail="r1",
                    data={"survivors": ["S150"], "devices": [{}, {}, {}], "policy": "single_platform"}))
    rows.append(row("race", 16000, latency_ms=700, scenario="kick_race", race="r2", detail="r2",
                    outcome="fail", data={"survivors": ["S151", "S152"], "devices": [{}, {}, {}],
                                          "policy": "single_platform"}))
    return rows


def _summary(exit_code: int, login_p99_passed: bool) -> dict:
    return {
        "run_id": "20250101-000000-mix", "started": "2023-11-14T22:13:20Z",
        "finished": "2023-11-14T22:13:40Z", "duration_s": 20.0, "target": "embedded",
        "policy": "single_platform", "users_peak": 20, "exit_code": exit_code,
        "gates": {"latency_ms.login.p99": {"limit": 300, "value": 420.0, "passed": login_p99_passed},
                  "error_ratio.overall": {"limit": 0.05, "value": 0.12, "passed": False}},
        "checks": {"kick_exactly_once": {"violations": 2, "examples": [
            {"kind": "double_kick", "t": T0_NS + 9 * 10**9, "session": "S1"},
            {"kind": "double_kick", "t": T0_NS + 15 * 10**9, "session": "S2"}]},
            "policy_limit": {"violations": 0, "examples": []}},
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = write_run(tmp_path_factory.mktemp("full"), _full_rows(), summary=_summary(4, False),
                     config="target:\n  host: ''\n  policy: single_platform\n"
                            "scenarios:\n  relogin_expiry:\n    relogin_bound_s: 1\n",
                     raw_lines=["garbage line"])
    base = write_run(tmp_path_factory.mktemp("base"),
                     [row("login", 100 + i * 10, latency_ms=10) for i in range(50)],
                     summary=_summary(0, True))
    path = build_report(root, compare_to=base)
    return root, path


def _png_ok(path: Path, min_colors: int = 12) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        if path.name == "checks.png":  # a compact strip; taller only when a check failed
            assert img.size[0] == 1600 and 100 <= img.size[1] <= 900
        else:
            assert img.size == (1600, 900)
        colors = img.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colors is not None and len(colors) >= min_colors


def test_full_report_files(full_run):
    root, path = full_run
    assert path == root / "report.html" and path.is_file()
    for name in CHARTS + ["compare_cdf.png"]:
        _png_ok(root / "charts" / name, min_colors=40)
        assert (root / "charts" / name).stat().st_size > 20_000
    with Image.open(root / "charts" / "checks.png") as img:  # a check failed: strip + timeline
        assert img.size[1] > 500
    for name in TABLES + ["compare_ops.csv", "compare_gates.csv"]:
        assert (root / "tables" / name).is_file()


def test_full_report_tables(full_run):
    root, _ = full_run
    ops = {r["op"]: r for r in csv.DictReader((root / "tables" / "ops.csv").open())}
    assert list(ops)[:3] == ["connect", "login", "heartbeat"]
    assert int(ops["login"]["count"]) == 200 and int(ops["login"]["fail"]) == 23
    assert int(ops["login"]["info"]) == 14 and float(ops["fault"]["count"]) == 1
    codes = list(csv.DictReader((root / "tables" / "codes.csv").open()))
    assert {"code": "70001", "name": "70001 USERSIG_EXPIRED", "count": "23", "expected": "0"} in codes
    gates = list(csv.DictReader((root / "tables" / "gates.csv").open()))
    assert [g["gate"] for g in gates] == ["error_ratio.overall", "latency_ms.login.p99"]
    checks = list(csv.DictReader((root / "tables" / "checks.csv").open()))
    assert [(c["check"], c["violations"]) for c in checks] == [("kick_exactly_once", "2"), ("policy_limit", "0")]
    per_sec = list(csv.DictReader((root / "tables" / "per_second.csv").open()))
    assert sum(int(r["count"]) for r in per_sec) == sum(int(float(o["count"])) for o in ops.values())


def test_full_report_html_is_self_contained(full_run):
    root, path = full_run
    page = path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(CHARTS) + 1
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from the network
    assert "<script" not in page
    for text in ("20250101-000000-mix", "FAIL", "exit code 4", "single_platform", "embedded",
                 "gate latency_ms.login.p99 failed", "check kick_exactly_once: 2 violation",
                 "1 undecodable journal line", "successful (ok) rows only",
                 "70001 USERSIG_EXPIRED", "Per second", "pass -&gt; fail"):
        assert text in page, text


def test_compare_page(full_run):
    root, _ = full_run
    page = (root / "compare.html").read_text(encoding="utf-8")
    assert "pass -&gt; fail" in page and "data:image/png;base64," in page
    flips = list(csv.DictReader((root / "tables" / "compare_gates.csv").open()))
    assert flips[0] == {"gate": "latency_ms.login.p99", "base": "pass", "this": "fail",
                        "base_value": "420.0", "this_value": "420.0", "change": "pass -> fail"}
    table = {r["op"]: r for r in csv.DictReader((root / "tables" / "compare_ops.csv").open())}
    assert float(table["login"]["count_base"]) == 50 and float(table["login"]["count_this"]) == 200
    assert float(table["login"]["count_change_pct"]) == 300.0
    assert table["connect"]["count_base"] == ""  # not in the base run


def test_empty_run_still_reports(tmp_path):
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "w0.jsonl").write_text("")
    path = build_report(tmp_path)
    page = path.read_text(encoding="utf-8")
    assert "UNKNOWN" in page and "no operations recorded" in page
    assert "could not be drawn" not in page
    for name in CHARTS:
        _png_ok(tmp_path / "charts" / name, min_colors=2)
    assert (tmp_path / "tables" / "ops.csv").read_text().startswith("op,count,ok,fail,info")


def test_only_failures_one_op(tmp_path):
    write_run(tmp_path, [row("login", 100 + i * 300, latency_ms=50, outcome="fail", code=70001)
                         for i in range(10)], summary={"exit_code": 3, "gates": {
                             "error_ratio.overall": {"limit": 0.05, "value": 1.0, "passed": False}}})
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "could not be drawn" not in page
    assert "FAIL" in page and "gate error_ratio.overall failed" in page
    ops = list(csv.DictReader((tmp_path / "tables" / "ops.csv").open()))
    assert ops[0]["op"] == "login" and ops[0]["fail"] == "10" and ops[0]["p50_ms"] == ""
    for name in CHARTS:
        _png_ok(tmp_path / "charts" / name, min_colors=2)


def test_summary_only_run_and_no_charts(tmp_path):
    (tmp_path / "summary.json").write_text(
        '{"exit_code": 0, "ops": {"login": {"count": 4, "ok": 4, "fail": 0, "info": 0, "p50_ms": 7.5}},'
        ' "codes": {"0": 4}}')
    page = build_report(tmp_path, charts=False).read_text(encoding="utf-8")
    assert "PASS" in page and "charts were disabled" in page and "data:image" not in page
    assert not (tmp_path / "charts").exists()
    ops = list(csv.DictReader((tmp_path / "tables" / "ops.csv").open()))
    assert ops[0]["op"] == "login" and float(ops[0]["p50_ms"]) == 7.5


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_bad_path(tmp_path):
    proc = _cli(str(tmp_path / "no-such-run"))
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    write_run(tmp_path / "run", [row("login", 10, latency_ms=1)])
    proc = _cli(str(tmp_path / "run"), "--compare", str(tmp_path / "nope"), "--no-charts")
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_cli_prints_report_path(tmp_path):
    write_run(tmp_path, [row("login", 10 + i, latency_ms=1 + i) for i in range(5)])
    proc = _cli(str(tmp_path), "--no-charts")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "report.html")
    assert (tmp_path / "report.html").is_file()

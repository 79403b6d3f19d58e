"""junit.xml of a run: one test case per correctness check and per SLO gate, so CI systems
show a run like a test suite. Suite name ``chat-login-harness``; a failed check or gate is a
``<failure>`` with a one-line message and, for checks, the examples as JSON text. Every case,
passing or not, carries its measured value and limit as ``<properties>`` (``value``, ``limit``)
and in ``<system-out>`` for a passing one; the suite carries ``timestamp`` (ISO 8601, the run's
start) and ``time`` (the run's duration, s) from summary.json.
"""
from __future__ import annotations

import io

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.results.gates import check_failed
from harness.results.summary import json_safe
from harness.util import atomic_write

__all__ = ["SUITE_NAME", "write_junit", "junit_tree"]

SUITE_NAME = "chat-login-harness"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: Any) -> str:
    """Text that XML 1.0 can carry (control characters dropped)."""
    return _NOT_XML.sub("", str(text))


def _violations(res: Any) -> tuple[int, list]:
    if hasattr(res, "violations"):
        return int(res.violations), list(getattr(res, "examples", []) or [])
    if isinstance(res, Mapping):
        return int(res.get("violations") or 0), list(res.get("examples") or [])
    return int(res or 0), []


def _props(case: ET.Element, value: Any, limit: Any) -> None:
    props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name="value", value=_x("null" if value is None else value))
    ET.SubElement(props, "property", name="limit", value=_x("null" if limit is None else limit))


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def junit_tree(checks: Mapping[str, Any], gates: Mapping[str, Mapping], *, timestamp: str | None = None,
               duration_s: float | None = None) -> ET.ElementTree:
    """The junit document as an ElementTree (checks first, then gates). ``timestamp`` (ISO 8601)
    and ``duration_s`` become the suite's ``timestamp`` and ``time``."""
    suites = ET.Element("testsuites", name=SUITE_NAME)
    suite = ET.SubElement(suites, "testsuite", name=SUITE_NAME)
    if timestamp:
        suite.set("timestamp", _x(timestamp))
    if isinstance(duration_s, (int, float)) and not isinstance(duration_s, bool) and duration_s >= 0:
        suite.set("time", f"{float(duration_s):.3f}")
        suites.set("time", f"{float(duration_s):.3f}")
    failures = 0
    tests = 0
    for name, res in checks.items():
        tests += 1
        case = ET.SubElement(suite, "testcase", classname=f"{SUITE_NAME}.checks", name=_x(name), time="0")
        count, examples = _violations(res)
        gate = gates.get(f"check.{name}")
        allowed = gate.get("limit") if isinstance(gate, Mapping) else 0
        _props(case, count, allowed)
        if check_failed(name, res, gates):
            failures += 1
            fail = ET.SubElement(case, "failure", type="violation",
                                 message=_x(f"{name}: {count} violation(s)"))
            fail.text = json.dumps(json_safe(examples), indent=2) if examples else ""
        else:
            out = ET.SubElement(case, "system-out")
            out.text = (f"{count} violation(s), within the allowed number; value {count}, limit {allowed}" if count
                        else f"no violations; value 0, limit {allowed}")
    for name, g in gates.items():
        if name.startswith("check."):
            continue  # already a check test case
        tests += 1
        case = ET.SubElement(suite, "testcase", classname=f"{SUITE_NAME}.gates", name=_x(name), time="0")
        g = g if isinstance(g, Mapping) else {}
        _props(case, g.get("value"), g.get("limit"))
        if g.get("passed"):
            rel = ">=" if name.startswith("min_rate.") else "<="
            out = ET.SubElement(case, "system-out")
            out.text = f"value {_fmt(g.get('value'))}, limit {rel} {_fmt(g.get('limit'))}"
        else:
            failures += 1
            if g.get("value") is None:
                msg = f"{name}: {g.get('note') or 'not measured'} (limit {g.get('limit')})"
            else:
                rel = ">=" if name.startswith("min_rate.") else "<="
                msg = f"{name}: value {g.get('value')}, expected {rel} {g.get('limit')}"
            fail = ET.SubElement(case, "failure", type="gate", message=_x(msg))
            fail.text = json.dumps(json_safe(g))
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    suites.set("tests", str(tests))
    suites.set("failures", str(failures))
    suites.set("errors", "0")
    return ET.ElementTree(suites)


def write_junit(run_dir: str | Path, checks: Mapping[str, Any], gates: Mapping[str, Mapping], *,
                summary: Mapping | None = None) -> Path:
    """Write ``<run_dir>/junit.xml`` atomically; returns its path. The suite's timestamp and
    time come from ``summary`` (``started``, ``duration_s``; default: the folder's summary.json)."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "junit.xml"
    if summary is None:
        try:
            summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
    summary = summary if isinstance(summary, Mapping) else {}
    started = summary.get("started")
    tree = junit_tree(checks, gates, timestamp=started if isinstance(started, str) else None,
                      duration_s=summary.get("duration_s"))
    ET.indent(tree)
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    atomic_write(path, buf.getvalue())
    return path

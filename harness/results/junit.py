"""junit.xml of a run: one test case per correctness check and per SLO gate, so CI systems
show a run like a test suite. Suite name ``chat-login-harness``; a failed check or gate is a
``<failure>`` with a one-line message and, for checks, the examples as JSON text.
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


def junit_tree(checks: Mapping[str, Any], gates: Mapping[str, Mapping]) -> ET.ElementTree:
    """The junit document as an ElementTree (checks first, then gates)."""
    suites = ET.Element("testsuites", name=SUITE_NAME)
    suite = ET.SubElement(suites, "testsuite", name=SUITE_NAME)
    failures = 0
    tests = 0
    for name, res in checks.items():
        tests += 1
        case = ET.SubElement(suite, "testcase", classname=f"{SUITE_NAME}.checks", name=_x(name), time="0")
        count, examples = _violations(res)
        if check_failed(name, res, gates):
            failures += 1
            fail = ET.SubElement(case, "failure", type="violation",
                                 message=_x(f"{name}: {count} violation(s)"))
            fail.text = json.dumps(json_safe(examples), indent=2) if examples else ""
        elif count:
            out = ET.SubElement(case, "system-out")
            out.text = f"{count} violation(s), within the allowed number"
    for name, g in gates.items():
        if name.startswith("check."):
            continue  # already a check test case
        tests += 1
        case = ET.SubElement(suite, "testcase", classname=f"{SUITE_NAME}.gates", name=_x(name), time="0")
        g = g if isinstance(g, Mapping) else {}
        if not g.get("passed"):
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


def write_junit(run_dir: str | Path, checks: Mapping[str, Any], gates: Mapping[str, Mapping]) -> Path:
    """Write ``<run_dir>/junit.xml`` atomically; returns its path."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "junit.xml"
    tree = junit_tree(checks, gates)
    ET.indent(tree)
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    atomic_write(path, buf.getvalue())
    return path

"""``python -m harness.report RUN_DIR [--compare BASE_DIR [--fail-on METRIC:LIMIT ...]] [--no-charts]``.

Writes tables/, charts/ and report.html into RUN_DIR and prints the path of report.html.
With ``--compare`` it also prints what changed from BASE to RUN (per-op p50/p99 latency and
error ratio, violations; base -> run, delta %) and warns on stderr when the two runs had a
different load or scenarios. Thresholds (``--fail-on``, repeatable, plus the run config's
``report.compare.fail_on``) make it a CI step: exit 3 on a performance regression, 4 when
violations grew (beats 3).

A path that is not a run folder (no summary.json and no journal/), or a bad threshold, prints
one line to stderr, writes nothing and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def _compare_summary(root: Path) -> dict[str, Any]:
    """summary.json of a run; its ``ops`` computed from the journal when it has none."""
    from harness.results.journal import op_kind
    from harness.results.report.load import load_summary
    from harness.results.scan import scan_run

    summary = load_summary(root)
    if not summary.get("ops"):
        digest = scan_run(root, history=False).digest
        ops = {}
        for op, row in digest.op_table().iterrows():
            rec = {k: (None if v != v else v) for k, v in row.to_dict().items()}  # NaN -> None
            rec["kind"] = op_kind(str(op))
            ops[str(op)] = rec
        summary = {**summary, "ops": ops}
    return summary


def _config_thresholds(root: Path) -> list[str]:
    from harness.results.report.load import load_config

    node: Any = load_config(root)
    for key in ("report", "compare", "fail_on"):
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        return []
    if isinstance(node, str) or not isinstance(node, list):
        from harness.results.report.compare import FailOnError

        raise FailOnError(f"report.compare.fail_on in {root / 'config.yaml'}: expected a list of "
                          f"'METRIC:LIMIT' strings, got {node!r}")
    return [str(x) for x in node]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report command line; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Build report.html (plus tables/*.csv and charts/*.png) for a run folder.")
    parser.add_argument("run_dir", help="run folder, e.g. results/latest")
    parser.add_argument("--compare", metavar="BASE_DIR", default=None,
                        help="base run folder to compare against (writes compare.html too)")
    parser.add_argument("--fail-on", metavar="METRIC:LIMIT", action="append", default=[],
                        help="with --compare: exit 3 (4 for violations) when METRIC grew beyond LIMIT from "
                             "base to run; repeatable. 'latency.login.p99:+10%%', 'error_ratio:+0.01', "
                             "'violations:0' (also report.compare.fail_on in the run's config)")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    args = parser.parse_args(argv)
    from harness.results.report import build_report
    from harness.results.report import compare as cmp
    from harness.results.report.load import check_run_dir

    try:
        root = check_run_dir(args.run_dir)
        base_root = check_run_dir(args.compare) if args.compare is not None else None
        specs = list(args.fail_on)
        if base_root is not None:
            specs += _config_thresholds(root)
        elif specs:
            raise cmp.FailOnError("--fail-on needs --compare BASE_DIR (a threshold is a change from a base run)")
        thresholds = [cmp.parse_fail_on(s) for s in specs]
    except HarnessError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return exc.exit_code
    except cmp.FailOnError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    try:
        path = build_report(root, charts=not args.no_charts, compare_to=base_root)
    except HarnessError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"report: cannot write the report: {exc.strerror or exc} "
              f"({exc.filename or args.run_dir})", file=sys.stderr)
        return 1
    code = 0
    if base_root is not None:
        base, this = _compare_summary(base_root), _compare_summary(root)
        print(f"compare: {base_root} (base) -> {root} (this run)")
        for line in cmp.format_changes(cmp.changes(base, this)):
            print("  " + line)
        for warning in cmp.load_differences(base, this):
            print(f"warning: {warning}", file=sys.stderr)
        found = cmp.regressions(thresholds, base, this)
        for r in found:
            print(f"regression: {r.reason}", file=sys.stderr)
        code = cmp.regression_exit_code(found)
    print(path)
    return code


if __name__ == "__main__":
    sys.exit(main())

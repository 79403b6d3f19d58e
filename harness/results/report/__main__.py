"""``python -m harness.report RUN_DIR [--compare BASE_DIR] [--no-charts]``.

Writes tables/, charts/ and report.html into RUN_DIR and prints the path of report.html.
A bad path prints one line to stderr and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.errors import HarnessError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report command line; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Build report.html (plus tables/*.csv and charts/*.png) for a run folder.")
    parser.add_argument("run_dir", help="run folder, e.g. results/latest")
    parser.add_argument("--compare", metavar="BASE_DIR", default=None,
                        help="base run folder to compare against (writes compare.html too)")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    args = parser.parse_args(argv)
    from harness.results.report import build_report

    try:
        path = build_report(args.run_dir, charts=not args.no_charts, compare_to=args.compare)
    except HarnessError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"report: cannot write the report: {exc.strerror or exc} "
              f"({exc.filename or args.run_dir})", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

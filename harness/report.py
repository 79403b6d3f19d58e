"""Command alias: ``python -m harness.report RUN [--compare BASE]`` (harness.results.report)."""
if __name__ == "__main__":
    import sys

    from harness.results.report.__main__ import main

    sys.exit(main())

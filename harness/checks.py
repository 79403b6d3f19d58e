"""Command alias: ``python -m harness.checks RUN`` re-runs the correctness checks (harness.results.checks)."""
if __name__ == "__main__":
    import sys

    from harness.results.checks import main

    sys.exit(main())

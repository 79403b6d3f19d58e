"""Command alias: ``python -m harness.server`` runs the reference server (harness.targets.server)."""
if __name__ == "__main__":
    import sys

    from harness.targets.server.__main__ import main

    sys.exit(main())

"""Locustfile of bench/journal_overhead.py: the repo's locustfile (mass_login and the harness
plugin, unchanged) plus two bench-only switches read from the environment:

  BENCH_JOURNAL=off  swap ``harness.results.journal.Journal.record`` / ``flush`` for no-ops (monkeypatch in
                     this process only; harness code is not changed) before the run starts
  BENCH_OUT=PATH     at quit, write ``{"ok": [end unix ns of each ok login], "fail": int,
                     "journal": "on"|"off"}``, taken from Locust's request event, so both
                     arms are counted the same way whether the journal runs or not
"""
from __future__ import annotations

import locust  # noqa: F401  (first: gevent monkey-patching)

import json
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

from locust import events  # noqa: E402

from harness.runner.plugin import install as install_harness  # noqa: E402
from scenarios import MassLogin  # noqa: E402,F401  (the User class Locust runs)


def disable_journal() -> None:
    """Make every Journal a no-op: ``record`` only hands out ``n``; ``flush`` writes nothing."""
    from harness.results.journal import Journal

    def record(self: Journal, **_row: Any) -> int:
        n = self._n
        self._n = n + 1
        return n

    def flush(self: Journal) -> None:
        return None

    Journal.record = record  # type: ignore[method-assign]
    Journal.flush = flush  # type: ignore[method-assign]


def install_counter(ev: Any, out_path: str, journal: str) -> None:
    """Count ok/failed ``login`` request events; write them to ``out_path`` at quit."""
    ok = array("q")
    failed = [0]

    def on_request(name: str = "", exception: Any = None, **_kw: Any) -> None:
        if name == "login":
            if exception is None:
                ok.append(time.time_ns())
            else:
                failed[0] += 1

    def on_quitting(**_kw: Any) -> None:
        with open(out_path, "w", encoding="utf-8") as fh:
            json.dump({"ok": ok.tolist(), "fail": failed[0], "journal": journal}, fh)

    ev.request.add_listener(on_request)
    ev.quitting.add_listener(on_quitting)


def install(ev: Any) -> None:
    """The repo locustfile's wiring plus the bench switches (called once, below)."""
    journal = "off" if os.environ.get("BENCH_JOURNAL", "on") == "off" else "on"
    if journal == "off":
        disable_journal()
    if os.environ.get("BENCH_OUT"):
        install_counter(ev, os.environ["BENCH_OUT"], journal)
    install_harness(ev)


install(events)

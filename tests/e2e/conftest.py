"""Helpers for end-to-end runs: locust headless as a subprocess, results in tmp_path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).parent / "locust")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    run_dir: Path | None

    def rows(self, op: str | None = None) -> list[dict]:
        out = []
        for p in sorted((self.run_dir / "journal").glob("*.jsonl")):
            for line in p.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    if op is None or r["op"] == op:
                        out.append(r)
        return out

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())


def run_locust(results: Path, *args: str, timeout: float = 120, env: dict | None = None,
               report: bool = False) -> Run:
    """Run ``locust -f locustfile.py --headless ARGS`` with results under ``results``. The charts
    and HTML report (~5 s of CPU a run) are made only for tests that look at them (``report=True``)."""
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "--stop-timeout", "3",
           "--set", f"run.results_dir={results}", *args]
    if not report and "--no-report" not in args:
        cmd.append("--no-report")
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("CHAT_SECRET_KEY", None) if env is None or "CHAT_SECRET_KEY" not in env else None
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL)
    latest = results / "latest"
    run_dir = latest.resolve() if latest.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, run_dir)


@pytest.fixture
def locust_run(tmp_path):
    def _run(*args: str, **kw) -> Run:
        return run_locust(tmp_path / "results", *args, **kw)
    return _run

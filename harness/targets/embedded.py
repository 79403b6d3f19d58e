"""Embedded target lifecycle: start the reference server on a free loopback port, wait for
/healthz, hand out its URL, stop it (by pid, the one we started) at quit, on Ctrl-C and on errors.

The secret key reaches the server through the environment (CHAT_SECRET_KEY), never argv,
so it does not show in ``ps``. Server output goes to ``<run_dir>/server.log``.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harness.config import TargetConfig
from harness.errors import TargetError

SERVER_KEYS = ("sdkappid", "admin", "policy", "native_instances", "web_instances", "max_sessions",
               "leeway_s",
               "require_import", "lockout_failures", "lockout_window_s", "lockout_s",
               "max_frame_bytes", "handshake_timeout_s", "idle_timeout_s", "max_bad_frames",
               "sweep_interval_s", "faults")


class EmbeddedTarget:
    """The reference server as a child process of this harness process."""

    def __init__(self, cfg: TargetConfig, secret_key: str, run_dir: str | Path, *,
                 host: str = "127.0.0.1", ledger: bool = True, extra_args: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.secret_key = secret_key
        self.run_dir = Path(run_dir)
        self.host = host
        self.ledger = ledger
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log: Any = None
        self.starts = 0

    # ------------------------------------------------------------------ urls
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.cfg.ws_path}"

    def describe(self) -> dict[str, Any]:
        """For summary.json: what ran."""
        return {"kind": "embedded", "server": "harness reference server (harness/targets/server)",
                "policy": self.cfg.policy, "url": self.base_url if self.port else None, "protocol": "tim"}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ------------------------------------------------------------------ lifecycle
    def _command(self, port: int) -> list[str]:
        conf = self.run_dir / "server-config.yaml"
        section = {k: getattr(self.cfg, k) for k in SERVER_KEYS}
        conf.write_text(yaml.safe_dump({"target": section}, sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "harness.targets.server", "--config", str(conf),
               "--host", self.host, "--port", str(port)]
        if self.ledger:
            cmd += ["--ledger", str(self.run_dir / "ledger.jsonl")]
        return cmd + list(self.extra_args)

    def start(self, port: int = 0) -> "EmbeddedTarget":
        """Start the server (``port`` 0 = a free one) and wait until /healthz answers."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / "server.log"
        self._log = open(log_path, "ab")
        env = dict(os.environ)
        env["CHAT_SECRET_KEY"] = self.secret_key
        env["CHAT_EXIT_WITH_PARENT"] = str(os.getpid())  # the server stops itself if we die
        env["PYTHONUNBUFFERED"] = "1"
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        offset = log_path.stat().st_size
        self.proc = subprocess.Popen(self._command(port), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=root, start_new_session=True)
        self.starts += 1
        if self.starts == 1:
            atexit.register(self.stop)
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        self.port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetError(f"the embedded target exited during start (code {self.proc.returncode}); "
                                  f"see {log_path}: {_tail(log_path, offset)}")
            line = _first_listening_line(log_path, offset)
            if line:
                self.port = int(line.rsplit(":", 1)[1])
                break
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise TargetError(f"the embedded target did not start within {self.cfg.startup_timeout_s:g} s; see {log_path}")
        while time.monotonic() < deadline:
            if healthy(self.base_url):
                return self
            time.sleep(0.05)
        self.stop()
        raise TargetError(f"the embedded target did not answer /healthz within {self.cfg.startup_timeout_s:g} s")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (clean shutdown, ledger flushed), SIGKILL after ``timeout`` s. Idempotent."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        elif proc is not None:
            code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        """SIGKILL the server (fault injection: a crash). ``start(self.port)`` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)


def healthy(base_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_reachable(host: str, port: int, timeout: float = 3.0) -> None:
    """Raise TargetError when nothing accepts TCP at host:port."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise TargetError(f"the target {host}:{port} cannot be reached ({exc.strerror or exc})") from None


def _first_listening_line(path: Path, offset: int) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            for raw in fh:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("listening on http://"):
                    return line
    except OSError:
        return None
    return None


def _tail(path: Path, offset: int, limit: int = 400) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return data[-limit:].replace("\n", " | ")

"""Per-process run context (``environment.chat``) and the Locust plugin that builds it.

Roles:
  * local (one process): everything here.
  * master (``--processes N`` parent or ``--master``): run folder, embedded target, Locust CSVs,
    and at quit the merged checks, gates, summary, junit and report. It answers workers'
    ``chat_hello`` with the target URL, run id and (for the local UserSig source) the key.
  * worker: journals its own rows into ``journal/<w>.jsonl`` and reports counters to the
    master with a per-worker sequence number, so a lost report is detected.

``install(events)`` is the only entry: the locustfile calls it; nothing registers at import.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event

from harness import config as config_mod
from harness.config import SCENARIO_NAMES, Config, load_config
from harness.errors import ConfigError, HarnessError, TargetError
from harness.journal import Journal
from harness.sources import HttpSigSource, LocalSigSource, RestAdmin

log = logging.getLogger("harness")


# ----------------------------------------------------------------------------- pools
class AccountPool:
    """Accounts ``<prefix><worker>_<j>``, j < size: acquire() never hands out one in use."""

    def __init__(self, prefix: str, size: int, worker_tag: str) -> None:
        self.prefix = prefix
        self.size = size
        self.tag = worker_tag
        self._free: list[int] = []
        self._next = 0
        self._in_use = 0

    def acquire(self) -> str | None:
        if self._free:
            j = self._free.pop()
        elif self._next < self.size:
            j = self._next
            self._next += 1
        else:
            return None
        self._in_use += 1
        return f"{self.prefix}{self.tag}_{j}"

    def release(self, account: str) -> None:
        try:
            j = int(account.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            return
        self._in_use -= 1
        self._free.append(j)

    @property
    def in_use(self) -> int:
        return self._in_use


def loopback_sources(host: str, configured: Any) -> list[str | None]:
    """Source addresses to spread connections over (avoids ephemeral-port exhaustion)."""
    if configured in ("none", None):
        return [None]
    if isinstance(configured, list):
        return list(configured) or [None]
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return [None]
    if ip.startswith("127.") and sys.platform.startswith("linux"):
        return [f"127.0.0.{i}" for i in range(2, 255)]
    return [None]


# ----------------------------------------------------------------------------- runtime
@dataclass
class Runtime:
    cfg: Config
    role: str                     # local | master | worker
    worker: str = "local"
    worker_tag: str = "0"
    run_id: str = ""
    run_dir: Path | None = None
    ws_url: str = ""
    rest_base: str = ""
    sdk_app_id: int = 0
    secret_key: str = ""
    journal: Journal | None = None
    sig_source: Any = None
    rest: RestAdmin | None = None
    ready: Event = field(default_factory=Event)
    pools: dict[str, AccountPool] = field(default_factory=dict)
    target: Any = None
    started_ns: int = 0
    _sources: list[str | None] = field(default_factory=lambda: [None])
    _src_i: int = 0
    _conn_i: int = 0
    _inst_i: int = 0
    _race_i: int = 0

    def pool(self, scenario: str) -> AccountPool:
        p = self.pools.get(scenario)
        if p is None:
            sc = self.cfg.scenario(scenario)
            p = self.pools[scenario] = AccountPool(sc.account_prefix, sc.accounts, self.worker_tag)
        return p

    def next_conn_id(self) -> str:
        self._conn_i += 1
        return f"{self.worker}/{self._conn_i}"

    def new_instance_id(self) -> str:
        self._inst_i += 1
        return f"{self.worker_tag}-{self._inst_i}"

    def next_race_id(self) -> str:
        self._race_i += 1
        return f"{self.worker}-r{self._race_i}"

    def next_source_address(self) -> str | None:
        self._src_i = (self._src_i + 1) % len(self._sources)
        return self._sources[self._src_i]

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self.ready.wait(timeout)

    def bind_target(self, ws_url: str, rest_base: str, sdk_app_id: int, secret_key: str) -> None:
        """Point this process at the target and build sig source + REST admin."""
        self.ws_url, self.rest_base, self.sdk_app_id, self.secret_key = ws_url, rest_base, sdk_app_id, secret_key
        self._sources = loopback_sources(urlsplit(ws_url).hostname or "", self.cfg.client.source_addresses)
        local = LocalSigSource(sdk_app_id, secret_key) if secret_key else None
        u = self.cfg.usersig
        if u.source == "http":
            url = u.url or f"{rest_base}/biz/usersig?userID={{userID}}&expire={{expire}}"
            self.sig_source = HttpSigSource(url, method=u.method, json_path=u.json_path, timeout=u.timeout_s)
        else:
            if local is None:
                raise ConfigError("target.secret_key", "the local UserSig source needs the secret key "
                                  "(set CHAT_SECRET_KEY or target.secret_key, or use usersig.source: http)")
            self.sig_source = local
        self.rest = RestAdmin(rest_base, sdk_app_id, self.cfg.target.admin, local,
                              timeout=self.cfg.client.request_timeout_s)


def make_run_id(cfg: Config, scenarios: list[str]) -> str:
    if cfg.run.run_id:
        return cfg.run.run_id
    tag = scenarios[0] if len(scenarios) == 1 else "mix"
    return time.strftime("%Y%m%d-%H%M%S-") + tag


def derive_urls(cfg: Config, host: str) -> tuple[str, str]:
    """ws URL (with the ws path) and REST base from ``ws://HOST:PORT`` (or http://)."""
    u = urlsplit(host)
    scheme = {"http": "ws", "https": "wss"}.get(u.scheme, u.scheme)
    path = u.path if u.path not in ("", "/") else cfg.target.ws_path
    ws = f"{scheme}://{u.netloc}{path}"
    rest = cfg.target.rest_base or f"{'https' if scheme == 'wss' else 'http'}://{u.netloc}"
    return ws, rest.rstrip("/")


def update_latest(results: Path, run_id: str) -> None:
    link = results / "latest"
    tmp = results / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_id)
        os.replace(tmp, link)
    except OSError:
        (results / "latest.txt").write_text(run_id + "\n")

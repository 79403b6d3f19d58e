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

import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from gevent.event import Event
from gevent.pool import Group

from harness.config import Config
from harness.errors import ConfigError
from harness.results.journal import Journal
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


# ----------------------------------------------------------------------------- file descriptors
#: descriptors a load process needs besides its users' connections (logs, journal, zmq, REST, ...)
FD_MARGIN = 64
#: and a share on top, for connections still closing and transient REST calls
FD_MARGIN_RATIO = 0.02
#: descriptors the embedded server needs besides one per connection (listener, ledger, log, epoll)
TARGET_FD_MARGIN = 32


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 1 << 20


def raise_nofile_limit(want: int | None = None) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; when ``want`` (a
    number of descriptors) is above the hard limit, also try to raise the hard limit (works
    only with CAP_SYS_RESOURCE, e.g. as root; capped by fs.nr_open). Returns the resulting
    (soft, hard). Never raises; children started later (the embedded target) inherit it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return (1 << 30, 1 << 30)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if want and hard != inf and want > hard:
        new_hard = min(want, _nr_open())
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    goal = hard if hard != inf else _nr_open()
    if soft != inf and soft < goal:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (goal, hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def fds_per_user(cfg: Config, scenario: str) -> int:
    """Connections one Locust user of ``scenario`` holds at once (kick_race: one per device;
    +1 for a REST query or an http UserSig fetch it may have in flight)."""
    extra = 1 if cfg.usersig.source == "http" else 0
    if scenario == "kick_race":
        sc = cfg.scenarios.kick_race
        return sc.devices + (1 if sc.query_online else 0) + extra
    if scenario == "account_switch":
        return 1 + (1 if cfg.scenarios.account_switch.query_online else 0) + extra
    return 1 + extra


def fds_needed(cfg: Config, weights: dict[str, int], users: int, processes: int = 1) -> tuple[int, int]:
    """Descriptors needed for ``users`` Locust users spread over ``processes`` load processes:
    (per load process, for the target's side in total). ``weights``: scenario -> weight of
    the scenarios in the mix (Locust splits users by weight). The open model (mass_login
    ``arrival_rate`` > 0) holds ``min(max_concurrent, rate/processes x (hold_s + 2 s))`` flows
    per process whatever ``users`` is."""
    processes = max(1, processes)
    total_w = sum(w for w in weights.values() if w > 0) or 1
    per_proc = 0.0
    total = 0.0
    for name, w in weights.items():
        if w <= 0:
            continue
        share = users * w / total_w
        fd = fds_per_user(cfg, name)
        if name == "mass_login" and cfg.scenarios.mass_login.arrival_rate > 0:
            ml = cfg.scenarios.mass_login
            flows = min(ml.max_concurrent, math.ceil(ml.arrival_rate / processes * (ml.hold_s + 2.0)))
            per_proc += flows * fd + math.ceil(share / processes)
            total += flows * fd * processes
            continue
        per_proc += math.ceil(share / processes) * fd
        total += share * fd
    return int(math.ceil(per_proc * (1 + FD_MARGIN_RATIO))) + FD_MARGIN, int(math.ceil(total)) + TARGET_FD_MARGIN


def check_fit(cfg: Config, weights: dict[str, int], users: int, processes: int, limit: int,
              target_limit: int | None = None) -> None:
    """Raise ConfigError (exit 2, one sentence) when ``users`` cannot fit in ``limit``
    descriptors per load process (or ``target_limit`` for an embedded target)."""
    per_proc, total = fds_needed(cfg, weights, users, processes)
    mix = ", ".join(f"{n} {fds_per_user(cfg, n)}/user" for n, w in weights.items() if w > 0)
    where = f"each of {processes} load processes" if processes > 1 else "the load process"
    if per_proc > limit:
        raise ConfigError("-u", f"{users} users need about {per_proc} file descriptors in {where} ({mix}) "
                          f"but RLIMIT_NOFILE allows {limit}; use fewer users, more --processes/workers, "
                          f"or raise the hard limit (ulimit -Hn)")
    if target_limit is not None and total > target_limit:
        raise ConfigError("-u", f"{users} users need about {total} connections on the embedded target "
                          f"({mix}) but its RLIMIT_NOFILE allows {target_limit}; use fewer users, "
                          f"raise the hard limit (ulimit -Hn), or run the server separately (target.host)")


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


# ----------------------------------------------------------------------------- cross-worker races
RACE_REQ, RACE_GO, RACE_PART, RACE_END = "chat_race_req", "chat_race_go", "chat_race_part", "chat_race_end"


class RaceHub:
    """The worker side of cross-worker kick races (``scenarios.kick_race.cross_worker``).

    Message flow (the master relays; workers never talk to each other)::

        owner  --chat_race_req-->  master  --chat_race_go (start instant, my devices)-->  each participant
        participant: connect, sleep until the instant, log in, settle, --chat_race_part--> master --> owner
        owner: query_online, journal the ``race`` row, --chat_race_end--> master --> participants close

    Owner: :meth:`request` / :meth:`finish`. Participant: :meth:`on_go` runs its devices in a
    greenlet of :attr:`parts`; :meth:`stop` (at test stop) kills them, so their devices close
    and journal it before the worker's final stats report.
    """

    def __init__(self) -> None:
        self.send: Callable[[str, dict], None] | None = None  # to the master (set on workers)
        self.waits: dict[str, tuple[int, list, Event]] = {}
        self.ends: dict[str, Event] = {}
        self.parts = Group()
        self.helper: Any = None   # a ChatUser that journals this worker's devices of any race

    def request(self, req: dict, expected: int, timeout: float) -> list[dict]:
        """Owner: ask the master to run race ``req["race"]``; the device rows that arrived
        within ``timeout`` seconds (fewer than ``expected`` when a part went missing)."""
        rows: list[dict] = []
        done = Event()
        self.waits[req["race"]] = (expected, rows, done)
        try:
            if self.send is None:
                return rows
            self.send(RACE_REQ, req)
            done.wait(timeout)
            return list(rows)
        finally:
            self.waits.pop(req["race"], None)

    def finish(self, race: str) -> None:
        """Owner: the race row is written; participants may close their devices."""
        if self.send is not None:
            try:
                self.send(RACE_END, {"race": race})
            except Exception:  # pragma: no cover - master gone; participants time out
                log.warning("could not end race %s", race)

    def on_part(self, data: dict) -> None:
        """Owner: one participant's device rows arrived (relayed by the master)."""
        w = self.waits.get(data.get("race"))
        if w is None:
            return  # late (timed out) or not ours
        expected, rows, done = w
        rows.extend(r for r in data.get("devices") or [] if isinstance(r, dict))
        if len(rows) >= expected:
            done.set()

    def on_end(self, data: dict) -> None:
        ev = self.ends.get(data.get("race"))
        if ev is not None:
            ev.set()

    def on_go(self, environment: Any, data: dict) -> None:
        """Participant: run my devices of a race, send their rows, hold them until the end."""
        race = data.get("race")
        # the scenario that runs races names its part class (``race_part``): the harness never
        # imports a scenario
        factory = next((c.race_part for c in getattr(environment, "user_classes", ()) or ()
                        if getattr(c, "race_part", None) is not None), None)
        end = self.ends[race] = Event()

        def run() -> None:
            part = None
            try:
                rows: list[dict] = []
                try:
                    if factory is None:
                        raise RuntimeError("no User class of this run has a race_part")
                    part = factory.for_go(environment, data)
                    rows = part.run(int(data.get("start_ns") or 0))
                except Exception:  # a bug must not leave the owner waiting silently
                    log.exception("race %s: participant failed", race)
                if self.send is not None:
                    try:
                        self.send(RACE_PART, {"race": race, "owner": data.get("owner"), "devices": rows})
                    except Exception:  # pragma: no cover - master gone
                        log.warning("could not send the result of race %s", race)
                end.wait(float(data.get("hold_s") or 10.0))
            finally:
                self.ends.pop(race, None)
                if part is not None:
                    part.close()

        self.parts.spawn(run)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every participant greenlet (their devices close and journal it); release owners."""
        for ev in list(self.ends.values()):
            ev.set()
        self.parts.join(timeout=timeout)
        self.parts.kill(block=True, timeout=timeout)
        for _exp, _rows, done in list(self.waits.values()):
            done.set()


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
    processes: int = 1            # load-generating processes in the run (set by the master)
    worker_index: int = 0         # this process's index among them
    races: RaceHub = field(default_factory=RaceHub)
    pool_caps: dict = field(default_factory=dict)   # scenario -> pool size at most (harness-started XMPP servers: what was created)
    protocol: str = "tim"         # the driver every device uses (harness.drivers.DRIVERS)
    driver_options: dict = field(default_factory=dict)   # the driver's keyword options (xmpp: host, port, domain, ...)
    stopping: bool = False        # the harness is stopping the users (test_stopping .. next test_start)
    _sources: list[str | None] = field(default_factory=lambda: [None])
    _src_i: int = 0
    _conn_i: int = 0
    _inst_i: int = 0
    _race_i: int = 0

    def pool(self, scenario: str) -> AccountPool:
        p = self.pools.get(scenario)
        if p is None:
            sc = self.cfg.scenario(scenario)
            size = min(sc.accounts, self.pool_caps.get(scenario, sc.accounts))
            p = self.pools[scenario] = AccountPool(sc.account_prefix, size, self.worker_tag)
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

    def make_driver(self, *, conn_id: str, source_address: str | None, addresses: Any = None) -> Any:
        """A fresh driver for one device connection to the bound target."""
        if self.protocol == "tim":
            from harness.drivers.tim import TimDriver

            return TimDriver(self.ws_url, sdk_app_id=self.sdk_app_id, source_address=source_address,
                             conn_id=conn_id, addresses=addresses,
                             close_timeout=min(2.0, self.cfg.client.request_timeout_s))
        from harness.drivers import get_driver_class

        return get_driver_class(self.protocol)(sink=None, source_address=source_address,
                                               connect_timeout=self.cfg.client.connect_timeout_s,
                                               **self.driver_options)

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

    def bind_xmpp(self, *, host: str, port: int, credentials: Any, admin: Any = None, url: str = "",
                  **driver_options: Any) -> None:
        """Point this process at an XMPP target: every device gets an ``XmppDriver`` with
        ``driver_options`` (domain, transport, ws_path, mechanism, tls); ``credentials`` is a
        PasswordSource / JwtSource; ``admin`` the server's admin view (``query_online``) or None."""
        self.protocol = "xmpp"
        self.ws_url = url or f"xmpp://{host}:{port}"
        self.driver_options = dict(driver_options, host=host, port=int(port))
        self._sources = loopback_sources(host, self.cfg.client.source_addresses)
        self.sig_source = credentials
        self.rest = admin


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

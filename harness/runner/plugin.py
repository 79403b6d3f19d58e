"""Locust wiring: command-line options, the run folder, the embedded target, journals,
worker coordination, and the end-of-run pipeline (checks -> gates -> summary -> junit ->
report -> exit code). ``install(events)`` registers everything; the locustfile calls it.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import gevent

from harness import config as config_mod
from harness.config import SCENARIO_NAMES, load_config
from harness.errors import ConfigError, HarnessError
from harness.runner.distributed import Tally, TalliedJournal, assign_devices, missing_share, summary_parts
from harness.results.journal import Journal
from harness.runner.runtime import (RACE_END, RACE_GO, RACE_PART, RACE_REQ, Runtime, check_fit, derive_urls,
                             fds_needed, make_run_id, raise_nofile_limit, update_latest)

log = logging.getLogger("harness")

HELLO, TARGET, DONE = "chat_hello", "chat_target", "chat_done"


def _fail(err: HarnessError) -> None:
    """One clear line on stderr and the RESULTS.md §3 exit code; never a traceback."""
    sys.stderr.write(f"error: {err}\n")
    sys.stderr.flush()
    _stop_forked_workers()
    sys.exit(err.exit_code)


def _stop_forked_workers() -> None:
    """``--processes N`` parent quitting early: SIGTERM the workers it forked (our children with
    our own command line). Locust's own atexit clean-up misses children that are still running,
    and they would linger and join the next master on the same port."""
    try:
        import psutil

        me = psutil.Process()
        cmd = me.cmdline()
        for child in me.children():
            try:
                if child.cmdline() == cmd:
                    os.kill(child.pid, signal.SIGTERM)
            except (psutil.Error, OSError):
                pass
    except Exception:  # pragma: no cover - best effort on the way out
        pass


def add_arguments(parser: Any) -> None:
    # Locust's own --config (a locust.conf file) gives way to the harness's config file;
    # locust.conf / pyproject.toml in the working directory are still read as usual.
    old = parser.conflict_handler
    parser.conflict_handler = "resolve"
    try:
        g = parser.add_argument_group("chat login harness")
    finally:
        parser.conflict_handler = old
    g.add_argument("--config", dest="chat_config", default="config.yaml", metavar="PATH",
                   help="harness config file (default config.yaml next to the locustfile)")
    g.add_argument("--scenario", dest="chat_scenario", default="", metavar="NAME[,NAME]",
                   help=f"run only these scenarios ({', '.join(SCENARIO_NAMES)})")
    g.add_argument("--set", dest="chat_set", action="append", default=None, metavar="KEY=VALUE",
                   help="override a config key by dotted path (repeatable)")
    g.add_argument("--no-report", dest="chat_no_report", action="store_true", default=False,
                   help="skip the charts/HTML report at the end")
    g.add_argument("--local-journal", dest="chat_local_journal", action="store_true", default=False,
                   help="worker: journal under this worker's own run.results_dir even when the master's run "
                        "folder is reachable (what a worker on another host does by itself)")


class HarnessPlugin:
    """Registers its listeners in __init__ (locust-plugins style)."""

    def __init__(self, environment: Any, runner: Any, web_ui: Any = None) -> None:
        from locust.runners import MasterRunner, WorkerRunner

        self.env = environment
        self.runner = runner
        self.role = "master" if isinstance(runner, MasterRunner) else "worker" if isinstance(runner, WorkerRunner) else "local"
        opts = environment.parsed_options
        try:
            cfg = self._load(opts)
            self.scenarios = self._select(cfg, opts)
        except ConfigError as err:
            _fail(err)
        self.cfg = cfg
        self.rt = Runtime(cfg=cfg, role=self.role)
        environment.chat = self.rt
        self.csv_writer: Any = None
        self.csv_greenlet: Any = None
        self.report_seq = 0
        self.nodes: dict[str, dict] = {}      # master: worker node id -> what we know of it
        self.race_routes: dict[str, dict] = {}  # master: race id -> {"owner": node, "members": [nodes]}
        self.finished = False
        try:
            self.nofile = self._raise_nofile(opts)
        except ConfigError as err:
            _fail(err)
        if self.role == "worker":
            self._init_worker()
        else:
            try:
                self._init_master_or_local()
            except HarnessError as err:
                self._stop_target()
                _fail(err)
        ev = environment.events
        ev.test_start.add_listener(self.on_test_start)
        ev.quitting.add_listener(self.on_quitting)
        ev.report_to_master.add_listener(self.on_report_to_master)
        ev.worker_report.add_listener(self.on_worker_report)
        ev.test_stop.add_listener(self.on_test_stop)
        ev.spawning_complete.add_listener(self.on_spawning_complete)

    # ------------------------------------------------------------------ setup
    def _load(self, opts: Any) -> Any:
        path = getattr(opts, "chat_config", "config.yaml") or "config.yaml"
        if path == "config.yaml" and not Path(path).exists():
            here = Path(__file__).resolve().parents[2] / "config.yaml"
            path = str(here) if here.exists() else None
        overrides = list(getattr(opts, "chat_set", None) or ())
        host = getattr(opts, "host", None) or self.env.host
        if host:  # Locust's --host wins over the config file and --set
            overrides.append(f"target.host={host}")
        cfg = load_config(path, overrides=overrides)
        if not cfg.target.secret_key and cfg.target.embedded:
            # a per-run key for the embedded target; shared with workers over the master link
            cfg = config_mod.replace(cfg, target__secret_key=secrets.token_hex(16))
        return cfg

    def _select(self, cfg: Any, opts: Any) -> list[str]:
        wanted = [s.strip() for s in (getattr(opts, "chat_scenario", "") or "").split(",") if s.strip()]
        for s in wanted:
            if s not in SCENARIO_NAMES:
                raise ConfigError("--scenario", f"unknown scenario {s!r} (expected {', '.join(SCENARIO_NAMES)})")
        classes = []
        names = []
        self.skipped: dict[str, str] = {}
        if cfg.target.wire == "xmpp":
            from harness.runner.xmpp_binding import unsupported_scenarios

            self.skipped = unsupported_scenarios(cfg, wanted)   # ConfigError when asked for by name
        for cls in list(self.env.user_classes):
            name = getattr(cls, "scenario", "")
            if not name:
                classes.append(cls)
                continue
            if name in self.skipped:
                log.warning("scenario %s not run: %s", name, self.skipped[name])
                continue
            weight = cfg.scenario(name).weight
            if wanted:
                if name not in wanted:
                    continue
                weight = max(weight, 1)
            elif weight == 0:
                continue
            cls.weight = weight
            classes.append(cls)
            names.append(name)
        if not classes:
            raise ConfigError("scenarios", "no scenario left to run (all weights are 0 or --scenario matched none)")
        self.env.user_classes = classes
        return names

    def _init_master_or_local(self) -> None:
        cfg, rt = self.cfg, self.rt
        rt.run_id = make_run_id(cfg, self.scenarios)
        results = Path(cfg.run.results_dir)
        rt.run_dir = results / rt.run_id
        (rt.run_dir / "journal").mkdir(parents=True, exist_ok=True)
        (rt.run_dir / "config.yaml").write_text(config_mod.dump_yaml(cfg), encoding="utf-8")
        update_latest(results, rt.run_id)
        rt.started_ns = time.time_ns()
        if self.role == "master":
            # before the (slow) target start: workers say hello as soon as they are connected
            self.token = secrets.token_hex(8)
            (rt.run_dir / ".master-token").write_text(self.token, encoding="utf-8")
            for name, handler in ((HELLO, self.on_hello), (DONE, self.on_done), (RACE_REQ, self.on_race_req),
                                  (RACE_PART, self.on_race_part), (RACE_END, self.on_race_end)):
                self.runner.register_message(name, handler)
        self.xmpp_spec = None
        if cfg.target.wire == "xmpp":
            from harness.runner import xmpp_binding

            opts = self.env.parsed_options
            processes = max(1, int(getattr(opts, "expect_workers", 1) or 1)) if self.role == "master" else 1
            # headless: -u bounds the accounts in use at once; the web UI may ask for any count later
            users = int(getattr(opts, "num_users", 0) or 0) if getattr(opts, "headless", False) else None
            if cfg.target.started_by_harness:
                rt.target, self.xmpp_spec = xmpp_binding.start_server(cfg, rt.run_dir, self.scenarios, processes,
                                                                      users)
                rt.pool_caps = dict(self.xmpp_spec["accounts"])
            else:
                from harness.targets.embedded import check_reachable

                self.xmpp_spec = xmpp_binding.external_spec(cfg, self.scenarios)
                check_reachable(self.xmpp_spec["host"], self.xmpp_spec["port"])
            xmpp_binding.bind(rt, cfg, self.xmpp_spec, rt.target)
        elif cfg.target.embedded:
            from harness.targets.embedded import EmbeddedTarget

            rt.target = EmbeddedTarget(cfg.target, cfg.target.secret_key, rt.run_dir).start()
            ws, rest = rt.target.ws_url, rt.target.base_url
            log.info("embedded target on %s (policy %s)", rt.target.base_url, cfg.target.policy)
            rt.bind_target(ws, rest, cfg.target.sdkappid, cfg.target.secret_key)
        else:
            from urllib.parse import urlsplit

            from harness.targets.embedded import check_reachable

            ws, rest = derive_urls(cfg, cfg.target.host)
            u = urlsplit(ws)
            check_reachable(u.hostname or "", u.port or (443 if u.scheme == "wss" else 80))
            rt.bind_target(ws, rest, cfg.target.sdkappid, cfg.target.secret_key)
        self._start_csv()
        if self.role == "local":
            rt.worker, rt.worker_tag = "local", "0"
            rt.journal = Journal(rt.run_dir / "journal" / "local.jsonl", "local",
                                 flush_interval=cfg.run.journal_flush_s).open()
            rt.ready.set()
        else:
            rt.worker = "master"
            rt.processes = max(1, int(getattr(self.env.parsed_options, "expect_workers", 1) or 1))
            rt.ready.set()
            for node in list(self.nodes):  # hellos that came while the target was starting
                self._send_target(node)
        self._install_signal_flush()

    def _init_worker(self) -> None:
        rt = self.rt
        for name, handler in ((TARGET, self.on_target), (RACE_GO, lambda environment, msg: rt.races.on_go(environment, msg.data or {})),
                              (RACE_PART, lambda environment, msg: rt.races.on_part(msg.data or {})),
                              (RACE_END, lambda environment, msg: rt.races.on_end(msg.data or {}))):
            self.runner.register_message(name, handler)
        rt.races.send = lambda kind, data: self.runner.send_message(kind, data)
        self.local_journal = bool(getattr(self.env.parsed_options, "chat_local_journal", False))
        idx = max(0, int(getattr(self.runner, "worker_index", 0) or 0))
        rt.worker, rt.worker_tag, rt.worker_index = f"w{idx}-{os.getpid()}", f"{idx}", idx
        # the worker is connected (Locust waited for the master's ack): say hello right away, so
        # the master knows us (and our descriptor limit) before it starts the test
        self._send_hello()

    def _send_hello(self) -> None:
        rt = self.rt
        try:
            self.runner.send_message(HELLO, {"w": rt.worker, "tag": rt.worker_tag, "pid": os.getpid(),
                                             "ppid": os.getppid(), "host": socket.gethostname(),
                                             "nofile": self.nofile})
        except Exception as exc:  # pragma: no cover - not connected yet; test_start retries
            log.debug("hello not sent yet: %s", exc)

    def _raise_nofile(self, opts: Any) -> int:
        """Raise RLIMIT_NOFILE (every process); local/master headless: exit 2 when -u cannot fit."""
        weights = {getattr(c, "scenario", ""): int(getattr(c, "weight", 1) or 0) for c in self.env.user_classes}
        weights = {k: v for k, v in weights.items() if k}
        users = int(getattr(opts, "num_users", 0) or 1)
        procs = 1 if self.role == "local" else max(1, int(getattr(opts, "expect_workers", 1) or 1))
        per_proc, total = fds_needed(self.cfg, weights, users, procs)
        embedded = self.role != "worker" and self.cfg.target.embedded
        # the embedded target (a child process) inherits this process's limit
        want = max(per_proc if self.role == "local" else 0, total if embedded else 0)
        soft, _hard = raise_nofile_limit(want or None if self.role != "worker" else None)
        self.weights, self.users_asked, self.fds_per_worker = weights, users, per_proc
        if self.role != "worker" and getattr(opts, "headless", False):
            # master: its own limit stands in for its workers' (they say theirs in chat_hello)
            check_fit(self.cfg, weights, users, procs, soft, target_limit=soft if embedded else None)
        return soft

    def _start_csv(self) -> None:
        try:
            from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

            self.csv_writer = StatsCSVFileWriter(self.env, PERCENTILES_TO_REPORT, str(self.rt.run_dir / "locust"),
                                                 full_history=True)
        except Exception as exc:  # pragma: no cover - never fatal
            log.warning("Locust CSVs disabled: %s", exc)

    def _install_signal_flush(self) -> None:
        def flush(*_a: Any) -> None:
            if self.rt.journal is not None:
                self.rt.journal.flush()

        try:
            gevent.signal_handler(signal.SIGUSR1, flush)
        except Exception:  # pragma: no cover
            pass

    # ------------------------------------------------------------------ master <-> worker
    # Master: ``nodes`` holds per worker node what it said (chat_hello), its last report
    # (seq, rows, users), the merged tally of its rows (distributed.Tally, from the deltas in
    # every report_to_master and in chat_done), when we last heard from it, and why it is gone.
    def _node(self, node_id: str, data: dict | None = None) -> dict:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = {"id": node_id, "name": node_id, "tag": None, "pid": None, "host": None, "nofile": None,
                                          "seen": time.monotonic(), "seq": 0, "lost": 0, "rows": 0, "users": 0,
                                          "users_max": 0, "tally": Tally(), "done": None, "gone": None,
                                          "shared": None}
        for key in ("tag", "pid", "host", "nofile"):
            if data and data.get(key) is not None:
                node[key] = data[key]
        if data and data.get("w"):
            node["name"] = str(data["w"])
        node["seen"] = time.monotonic()
        return node

    def on_hello(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        if getattr(self.env.parsed_options, "processes", None) and data.get("host") == socket.gethostname() \
                and data.get("ppid") not in (None, os.getpid()):
            # --processes: our workers are our children; this one belongs to another run on the
            # same master port (e.g. a second --processes run): send it away
            from locust.rpc import Message

            log.warning("worker %s (pid %s) is not one of this run's --processes children: told to quit "
                        "(give concurrent runs different --master-bind-port/--master-port)", data.get("w"),
                        data.get("pid"))
            self.runner.server.send_to_client(Message("quit", None, msg.node_id))
            return
        node = self._node(msg.node_id, data)
        if getattr(self.env.parsed_options, "headless", False) and node["nofile"] is not None \
                and int(node["nofile"]) < self.fds_per_worker:
            err = ConfigError("-u", f"worker {node['name']} on {node['host']} allows {node['nofile']} file descriptors "
                                    f"(RLIMIT_NOFILE) but its share of {self.users_asked} users needs about "
                                    f"{self.fds_per_worker}; use fewer users or more workers, or raise its ulimit -n")
            gevent.spawn(self._abort, err)
            return
        if self.rt.ready.is_set():
            self._send_target(msg.node_id)

    def _send_target(self, node_id: str) -> None:
        rt = self.rt
        self.runner.send_message(TARGET, {
            "ws_url": rt.ws_url, "rest_base": rt.rest_base, "sdkappid": rt.sdk_app_id, "secret": rt.secret_key,
            "run_id": rt.run_id, "run_dir": str(rt.run_dir.resolve()), "token": self.token,
            "started_ns": rt.started_ns, "processes": rt.processes, "fds": self.fds_per_worker,
            "xmpp": getattr(self, "xmpp_spec", None), "config": config_mod.masked(self.cfg)}, client_id=node_id)

    def _abort(self, err: HarnessError) -> None:
        """Master: a worker cannot take its share; one line, exit code 2, everyone quits."""
        if getattr(self, "abort_error", None) is not None:
            return
        self.abort_error = err
        sys.stderr.write(f"error: {err}\n")
        sys.stderr.flush()
        self.env.process_exit_code = err.exit_code
        self.runner.quit()
        # the main greenlet may still wait for workers (headless start): leave from here
        self._stop_target()
        sys.exit(err.exit_code)  # gevent re-raises SystemExit in the main greenlet

    def _adopt_config(self, raw: Any, secret: str) -> Any:
        """Worker: run with the master's effective config (scenario parameters, client settings),
        keeping this worker's own ``run.results_dir``; this worker's config when it does not validate."""
        if not isinstance(raw, dict):
            return self.cfg
        try:
            raw = json.loads(json.dumps(raw))
            raw.setdefault("run", {})["results_dir"] = self.cfg.run.results_dir
            raw.setdefault("target", {})["secret_key"] = secret or self.cfg.target.secret_key
            return config_mod.config_from_mapping(raw, env={})
        except (ConfigError, TypeError, ValueError) as err:
            log.warning("keeping this worker's own config (the master's did not validate here: %s)", err)
            return self.cfg

    def on_target(self, environment: Any, msg: Any) -> None:
        d = msg.data or {}
        rt = self.rt
        if rt.ready.is_set():
            return
        self.cfg = rt.cfg = self._adopt_config(d.get("config"), d.get("secret") or "")
        rt.run_id, rt.started_ns = d["run_id"], d["started_ns"]
        rt.processes = max(1, int(d.get("processes") or 1))
        # Share the master's run folder only when we can see its token there (same disk);
        # otherwise (another host, or --local-journal) journal into our own results/<run_id>/.
        shared = False
        if not self.local_journal:
            try:
                shared = (Path(d["run_dir"]) / ".master-token").read_text(encoding="utf-8").strip() == d.get("token")
            except (OSError, KeyError, TypeError):
                shared = False
        self.shared = shared
        rt.run_dir = Path(d["run_dir"]) if shared else Path(self.cfg.run.results_dir) / d["run_id"]
        (rt.run_dir / "journal").mkdir(parents=True, exist_ok=True)
        if not shared and not (rt.run_dir / "config.yaml").exists():
            (rt.run_dir / "config.yaml").write_text(config_mod.dump_yaml(self.cfg), encoding="utf-8")
        if d.get("fds"):
            self.nofile = raise_nofile_limit(int(d["fds"]))[0]
        _warn_unreachable_loopback(d.get("ws_url", ""), getattr(environment.parsed_options, "master_host", ""))
        try:
            if d.get("xmpp"):
                from harness.runner import xmpp_binding

                # the admin view (a harness-started server's) stays with the master: no cross-check here
                xmpp_binding.bind(rt, self.cfg, d["xmpp"], None)
                rt.pool_caps = dict(d["xmpp"].get("accounts") or {})
            else:
                rt.bind_target(d["ws_url"], d["rest_base"], d["sdkappid"], d.get("secret") or self.cfg.target.secret_key)
        except ConfigError as err:
            log.error("%s", err)
            return
        rt.journal = TalliedJournal(rt.run_dir / "journal" / f"{rt.worker}.jsonl", rt.worker,
                                    flush_interval=self.cfg.run.journal_flush_s).open()
        rt.journal.start_flusher()
        self._install_signal_flush()
        rt.ready.set()
        if not shared:
            log.info("journal on this worker's disk: %s", rt.run_dir / "journal" / f"{rt.worker}.jsonl")

    def on_done(self, environment: Any, msg: Any) -> None:
        d = msg.data or {}
        node = self._node(msg.node_id, d)
        node["tally"].merge(Tally.from_wire(d.get("tally")))
        node["done"] = d
        node["shared"] = d.get("shared")

    def on_race_req(self, environment: Any, msg: Any) -> None:
        """Master: split a race's devices over the live workers; one shared start instant."""
        d = msg.data or {}
        race, specs = d.get("race"), [s for s in d.get("devices") or [] if isinstance(s, dict)]
        if not race or not specs:
            return
        live = self._live_nodes()
        plan = assign_devices(len(specs), live, msg.node_id)
        start_ns = time.time_ns() + int(float(d.get("lead_ms") or 0) * 1e6)
        self.race_routes[race] = {"owner": msg.node_id, "members": list(plan)}
        while len(self.race_routes) > 10000:  # owners that died never ended theirs
            self.race_routes.pop(next(iter(self.race_routes)))
        for node_id, idxs in plan.items():
            self.runner.send_message(RACE_GO, {
                "race": race, "user": d.get("user"), "owner": msg.node_id, "start_ns": start_ns,
                "devices": [specs[i] for i in idxs], "window_ms": d.get("window_ms", 0),
                "settle_ms": d.get("settle_ms", 0), "hold_s": d.get("hold_s", 10)}, client_id=node_id)

    def on_race_part(self, environment: Any, msg: Any) -> None:
        d = msg.data or {}
        route = self.race_routes.get(d.get("race"))
        owner = route["owner"] if route else d.get("owner")
        if owner:
            self.runner.send_message(RACE_PART, d, client_id=owner)

    def on_race_end(self, environment: Any, msg: Any) -> None:
        route = self.race_routes.pop((msg.data or {}).get("race"), None)
        for node_id in route["members"] if route else ():
            self.runner.send_message(RACE_END, msg.data, client_id=node_id)

    def _live_nodes(self) -> list[str]:
        """Worker nodes that said hello, are connected and not missing, by worker index."""
        clients = getattr(self.runner, "clients", {})
        live = []
        for node_id, node in self.nodes.items():
            c = clients.get(node_id) if hasattr(clients, "get") else None
            if node["done"] is None and node["gone"] is None and c is not None and getattr(c, "state", "") != "missing":
                live.append(node_id)

        def key(n: str) -> tuple:
            tag = self.nodes[n]["tag"]
            return (int(tag) if str(tag).isdigit() else 1 << 30, n)

        return sorted(live, key=key)

    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        rt = self.rt
        if self.role != "master" and getattr(self, "freezer", None) is None:
            self.spawned = False
            self.freezer = gevent.spawn(self._freeze_while_spawning)
        if self.role == "worker":
            if not rt.ready.is_set():
                self._send_hello()  # the master may have missed it (it was starting its target)
            return
        if self.role == "local" and rt.journal is not None and rt.journal._greenlet is None:
            rt.journal.start_flusher()
        if self.csv_writer is not None and self.csv_greenlet is None:
            self.csv_greenlet = gevent.spawn(self.csv_writer.stats_writer)
        if self.role == "master" and getattr(self, "watcher", None) is None:
            self.watcher = gevent.spawn(self._watch_workers)

    def _watch_workers(self) -> None:
        """Master: remember each worker's user count (Locust forgets it once a worker goes
        missing, and a worker may die before its first report)."""
        while True:
            clients = getattr(self.runner, "clients", None)
            for c in list(clients.values()) if hasattr(clients, "values") else ():
                node = self.nodes.get(getattr(c, "id", None))
                users = sum((getattr(c, "user_classes_count", None) or {}).values())
                if node is not None and users > node["users_max"]:
                    node["users_max"] = users
            gevent.sleep(0.5)

    def _freeze_while_spawning(self) -> None:
        """Load processes, from test start until spawning completes: once a second, move what
        is alive (the users and their held sessions) out of the cyclic GC's reach (gc.freeze).

        A full collection walks every tracked object, ~100 per held session: at 10k sessions
        per process that is a ~0.9 s stall of every heartbeat in the process, and during a
        ramp Python runs one each time the old generation grew by 25 %. Frozen objects are
        still freed by refcount (ChatUser.drop_device breaks the Device <-> ChatClient
        cycle); only cyclic garbage made of objects frozen during the ramp is kept (bounded
        by the ramp: about 1 object per journal row in a churning mix)."""
        import gc

        while not self.spawned:
            gc.freeze()
            gevent.sleep(1.0)

    def on_spawning_complete(self, **_kw: Any) -> None:
        if self.role != "master" and not getattr(self, "spawned", True):
            import gc

            self.spawned = True
            gc.freeze()
            log.debug("gc.freeze after spawning: %d objects frozen", gc.get_freeze_count())

    def on_test_stop(self, environment: Any, **_kw: Any) -> None:
        self.spawned = True  # ends _freeze_while_spawning
        if self.role == "worker":
            self.rt.races.stop()  # before the final stats report: no row may come after it

    def on_report_to_master(self, client_id: str, data: dict, **_kw: Any) -> None:
        j = self.rt.journal
        self.report_seq += 1
        chat: dict[str, Any] = {"w": self.rt.worker, "seq": self.report_seq, "rows": j.rows if j else 0,
                                "users": getattr(self.runner, "user_count", 0)}
        if isinstance(j, TalliedJournal):
            chat["tally"] = j.take().to_wire()
        data["chat"] = chat

    def on_worker_report(self, client_id: str, data: dict, **_kw: Any) -> None:
        c = data.get("chat")
        if not isinstance(c, dict):
            return
        node = self._node(client_id, c)
        seq = int(c.get("seq") or 0)
        if node["seq"] and seq > node["seq"] + 1:
            node["lost"] += seq - node["seq"] - 1
        node["seq"] = max(node["seq"], seq)
        node["rows"] = int(c.get("rows") or 0)
        node["users"] = int(c.get("users") or 0)
        node["users_max"] = max(node["users_max"], node["users"])
        node["tally"].merge(Tally.from_wire(c.get("tally")))

    # ------------------------------------------------------------------ the end
    def on_quitting(self, environment: Any, **_kw: Any) -> None:
        if self.finished:
            return
        self.finished = True
        rt = self.rt
        if self.role == "worker":
            rt.races.stop(timeout=1.0)
            if rt.journal is not None:
                rt.journal.close()
                j = rt.journal
                try:
                    self.runner.send_message(DONE, {
                        "w": rt.worker, "rows": j.rows, "shared": bool(getattr(self, "shared", False)),
                        "journal": str((rt.run_dir / "journal" / f"{rt.worker}.jsonl").resolve()),
                        "host": socket.gethostname(),
                        "tally": j.take().to_wire() if isinstance(j, TalliedJournal) else None})
                except Exception:
                    pass
            return
        if getattr(self, "abort_error", None) is not None:
            self._stop_target()  # the run never really started: exit 2 (set by _abort), no pipeline
            return
        try:
            if self.role == "master":
                self._drain_workers()
            self._finish()
        except HarnessError as err:
            sys.stderr.write(f"error: {err}\n")
            environment.process_exit_code = err.exit_code
        except Exception as exc:  # never lose the run's files over a reporting bug
            log.exception("end-of-run pipeline failed")
            sys.stderr.write(f"error: end-of-run pipeline failed: {exc!r}\n")
            if environment.process_exit_code is None:
                environment.process_exit_code = 1
        finally:
            self._stop_target()

    def _stop_target(self) -> None:
        t = getattr(self.rt, "target", None)
        if t is not None:
            t.stop()

    def _drain_workers(self) -> None:
        """Master, at quit: wait for every worker's final stats report and ``chat_done``.

        Locust's master stops listening 0.5 s after telling workers to quit, but a worker
        may need up to ``--stop-timeout`` to stop its users; their last rows would be missing
        from the master's totals. So we keep receiving (and dispatching ``stats`` to Locust's
        own ``worker_report`` listeners) until each worker has said ``chat_done`` or is gone
        (its process ended, when on this host; else silent for ``SILENT_S``), bounded by
        stop_timeout + 30 s (closing 10k connections takes a worker several seconds).
        """
        runner = self.runner
        if any(not g.dead for g in list(getattr(runner, "greenlet", None) or [])):
            runner.quit()  # web UI / signal: the workers were not told to quit yet
        stop_timeout = float(getattr(self.env, "stop_timeout", 0) or 0)
        deadline = time.monotonic() + stop_timeout + 30.0

        def handle(node_id: str, msg: Any) -> None:
            node = self.nodes.get(node_id)
            if node is not None:
                node["seen"] = time.monotonic()
            if msg.type == "stats":
                self.env.events.worker_report.fire(client_id=node_id, data=msg.data)
            elif msg.type == DONE:
                self.on_done(self.env, msg)
            elif msg.type == "quit" and node is not None and node["done"] is None:
                node["gone"] = node["gone"] or "quit without chat_done"

        def receive() -> None:
            while True:
                try:
                    node_id, msg = runner.server.recv_from_client()
                except Exception:  # a broken frame or a reset: keep going until the deadline
                    gevent.sleep(0.05)
                    continue
                try:
                    handle(node_id, msg)
                except Exception:  # pragma: no cover - a listener bug must not stop the drain
                    log.exception("while receiving a late %s message", getattr(msg, "type", "?"))

        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.kill(block=False)
        host = socket.gethostname()
        receiver = gevent.spawn(receive)
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                waiting = [n for n in self.nodes.values() if n["done"] is None and n["gone"] is None]
                for n in waiting:
                    if n["host"] == host and n["pid"] and not _pid_alive(int(n["pid"])):
                        n["gone"] = "its process ended without saying chat_done (killed?)"
                    elif now - n["seen"] > SILENT_S:
                        n["gone"] = f"no message for {SILENT_S:g} s (killed or disconnected)"
                if not [n for n in waiting if n["gone"] is None]:
                    break
                gevent.sleep(0.05)
            for n in self.nodes.values():
                if n["done"] is None and n["gone"] is None:
                    n["gone"] = "did not finish within stop_timeout + 30 s"
        finally:
            receiver.kill(block=False)

    def _worker_status(self) -> dict:
        """Per worker (by name): finished (said chat_done), rows (its journal's), whether that
        journal is in the master's run folder, lost reports, host/pid, peak users, why gone."""
        out: dict[str, dict] = {}
        if self.role != "master":
            return out
        journal_dir = self.rt.run_dir / "journal"
        for node in self.nodes.values():
            done = node["done"]
            on_disk = (journal_dir / f"{node['name']}.jsonl").exists()
            out[node["name"]] = {
                "finished": done is not None,
                "rows": int(done.get("rows") or 0) if done else node["rows"],
                "journal_on_master": on_disk if done is None else bool(done.get("shared")) and on_disk,
                "lost_reports": node["lost"], "host": node["host"], "pid": node["pid"],
                "users_peak": node["users_max"], "rows_reported": node["tally"].rows}
            if done is None:
                out[node["name"]]["gone"] = node["gone"] or "unknown"
            elif not done.get("shared"):
                out[node["name"]]["journal"] = f"{done.get('host')}:{done.get('journal')}"
        return out

    def _distributed_summary(self, summary: dict, workers: dict) -> dict:
        """Master: add what only the master knows to summary.json (the per-worker totals and
        their reconciliation, workers that went away and their missing share) and, when not
        every journal is on this disk, take ``ops``/``codes``/gates from the workers' merged
        reports (harness.runner.distributed.Tally) instead of the journals found here."""
        if self.role != "master" or not self.nodes:
            return summary
        from harness.results.gates import SCHEDULE_LAG_KEY, evaluate_gates, exit_code

        merged = Tally()
        for node in self.nodes.values():
            merged.merge(node["tally"])
        locust_total = self.runner.stats.total.num_requests
        on_disk = [n for n, w in workers.items() if w["journal_on_master"]]
        elsewhere = [n for n, w in workers.items() if not w["journal_on_master"]]
        users_total = sum(w["users_peak"] for w in workers.values()) or None
        missing = []
        for name, w in workers.items():
            if w["finished"]:
                continue
            node = next(n for n in self.nodes.values() if n["name"] == name)
            missing.append(missing_share(
                name, users=w["users_peak"], users_total=users_total, rows_reported=w["rows_reported"],
                rows_on_disk=_count_lines(self.rt.run_dir / "journal" / f"{name}.jsonl"),
                last_seen_s=max(0.0, time.monotonic() - node["seen"]), reason=w.get("gone", "unknown")))
        summary["distributed"] = {
            "processes": self.rt.processes, "workers": len(workers), "source": "journals" if not elsewhere
            else "worker_reports", "journals_elsewhere": {n: workers[n].get("journal") for n in elsewhere},
            "rows_reported": merged.rows, "locust_total": locust_total, "missing": missing}
        summary["missing_workers"] = [m["worker"] for m in missing]
        gates = dict(summary.get("gates") or {})
        if elsewhere:
            parts = summary_parts(merged, summary.get("duration_s"))
            summary["ops"], summary["codes"] = parts["ops"], parts["codes"]
            summary.update({k: parts[k] for k in ("expected", "events", "codes_by_op")})
            summary["checks_partial"] = {"journals_missing": elsewhere, "journals_checked": on_disk}
            gates_cfg = config_mod.masked(self.cfg)["gates"]
            gates = evaluate_gates(gates_cfg, {**summary, SCHEDULE_LAG_KEY: parts["schedule_lag_p99_ms"]})
        if missing:
            gates["workers.missing"] = {"limit": 0, "value": len(missing), "passed": False,
                                        "note": "load generators went away: " + ", ".join(summary["missing_workers"])}
        summary["gates"] = gates
        if summary.get("exit_code") not in (2, 5):
            summary["exit_code"] = exit_code(summary.get("checks") or {}, gates)
        for m in missing:
            share = f"{m['users']} users ({m['user_share']:.0%} of the peak)" if m["user_share"] is not None \
                else "an unknown share of the users"
            sys.stderr.write(f"worker {m['worker']} went away ({m['reason']}): {share}, {m['rows_reported']} rows "
                             f"reported, {m['rows_on_disk']} on the master's disk; its share is missing from the "
                             f"totals after that point and from the checks\n")
        for n in elsewhere:
            sys.stderr.write(f"worker {n} journaled on its own disk ({workers[n].get('journal')}): ops, codes and "
                             f"gates come from its reports; the checks only saw the journals here\n")
        return summary

    def _finish(self) -> None:
        from harness.results.checks import run_checks
        from harness.results.gates import failure_lines
        from harness.results.junit import write_junit
        from harness.results.summary import _iso, build_summary, load_settings, write_summary

        rt, cfg, env = self.rt, self.cfg, self.env
        if self.csv_greenlet is not None:
            self.csv_greenlet.kill(block=True)
        if self.csv_writer is not None:
            try:
                w = self.csv_writer
                w.requests_csv_filehandle.seek(0)
                w.requests_csv_filehandle.truncate()
                w.requests_csv_writer.writerow(w.requests_csv_columns)
                w._requests_data_rows(w.requests_csv_writer)
                w.failures_csv_filehandle.seek(0)
                w.failures_csv_filehandle.truncate()
                w.failures_csv_writer.writerow(w.failures_columns)
                w._failures_data_rows(w.failures_csv_writer)
                w.close_files()
            except Exception as exc:  # pragma: no cover
                log.warning("could not finish Locust CSVs: %s", exc)
        if rt.journal is not None:
            rt.journal.close()
        workers = self._worker_status()
        self._stop_target()  # flushes the ledger before the checks read it
        finished_ns = time.time_ns()
        stats = self.runner.stats
        locust_total = stats.total.num_requests
        all_on_disk = all(w["journal_on_master"] and w["finished"] for w in workers.values())
        checks = run_checks(rt.run_dir, config=config_mod.masked(cfg), enabled=cfg.checks.enabled,
                            locust_total=locust_total if all_on_disk else None)
        users_peak = max(getattr(self.runner, "user_count", 0) or 0, getattr(self, "_users_peak", 0))
        hist = getattr(stats, "history", None) or []
        for h in hist:
            uc = h.get("user_count", 0) or 0
            users_peak = max(users_peak, int(uc[-1] if isinstance(uc, (list, tuple)) else uc))  # [ts, count]
        meta = {"run_id": rt.run_id, "started": _iso(rt.started_ns), "finished": _iso(finished_ns),
                "duration_s": (finished_ns - rt.started_ns) / 1e9,
                "target": "embedded" if cfg.target.embedded else (cfg.target.host or rt.ws_url),
                "policy": cfg.target.policy, "users_peak": users_peak, "host": rt.ws_url,
                "load": load_settings(env.parsed_options, config_mod.masked(cfg), self.scenarios)}
        describe = getattr(rt.target, "describe", None)
        extra = {"target_server": describe() if callable(describe) else None,
                 "scenarios_not_run": dict(getattr(self, "skipped", {}) or {}),
                 "scenarios": self.scenarios, "locust_total": locust_total,
                 "locust_failures": stats.total.num_failures, "workers": workers,
                 "missing_workers": [n for n, w in workers.items() if not w["finished"]]}
        recovery = _recovery(rt.run_dir) if cfg.faults.specs() else None
        if recovery is not None:
            extra["recovery"] = recovery
        summary = build_summary(rt.run_dir, meta=meta, checks=checks, gates_cfg=config_mod.masked(cfg)["gates"],
                                extra=extra)
        summary = self._distributed_summary(summary, workers)
        write_summary(rt.run_dir, summary)
        write_junit(rt.run_dir, checks, summary.get("gates", {}))
        for line in failure_lines(checks, summary.get("gates", {})):
            sys.stderr.write(line + "\n")
        env.process_exit_code = int(summary.get("exit_code", 0))
        report_path = None
        if cfg.report.enabled and not getattr(env.parsed_options, "chat_no_report", False):
            try:
                from harness.results.report import build_report

                report_path = build_report(rt.run_dir, charts=cfg.report.charts)
            except Exception as exc:
                log.exception("report failed")
                sys.stderr.write(f"warning: report failed: {exc!r}\n")
        verdict = "PASS" if env.process_exit_code == 0 else f"FAIL (exit {env.process_exit_code})"
        sys.stderr.write(f"results: {rt.run_dir}  {verdict}" + (f"  report: {report_path}" if report_path else "") + "\n")


SILENT_S = 10.0  # a (remote) worker silent this long at quit is gone; closing 10k connections can take seconds


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid runs here (a zombie, e.g. a killed --processes child, is not)."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # psutil.NoSuchProcess, AccessDenied (then assume alive), ImportError
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except OSError:
            return True


def _count_lines(path: Path) -> int | None:
    """Lines in a file (None when it does not exist); reads 1 MiB at a time."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None


def _warn_unreachable_loopback(ws_url: str, master_host: str) -> None:
    """A worker on another host cannot reach a target on the master's loopback: say so."""
    from urllib.parse import urlsplit

    from harness.util import is_loopback

    host = urlsplit(ws_url).hostname or ""
    if is_loopback(host) and master_host and not is_loopback(master_host):
        try:
            import socket

            local = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
            if master_host in local:
                return
        except OSError:
            pass
        log.error("the target %s is on the master's loopback, which this worker (on another host than master %s) "
                  "cannot reach: run with --host ws://<reachable address> or set target.host", ws_url, master_host)


def _recovery(run_dir: Path) -> dict | None:
    """Reconnect-storm figures (harness.runner.faults.recovery_stats) when the run injected faults."""
    import json as _json

    files = sorted((run_dir / "journal").glob("*.jsonl"))
    from harness.runner.faults import recovery_stats

    def rows():
        for p in files:
            with open(p, "rb") as fh:
                for line in fh:
                    try:
                        yield _json.loads(line)
                    except ValueError:
                        continue

    return recovery_stats(rows())


def install(events: Any) -> None:
    """Register the harness on Locust's events (called once by the locustfile)."""
    events.init_command_line_parser.add_listener(add_arguments)

    def on_init(environment: Any, runner: Any, web_ui: Any = None, **_kw: Any) -> None:
        environment.chat_plugin = HarnessPlugin(environment, runner, web_ui)
        try:
            from harness.runner.faults import FaultPlugin
        except ImportError:  # fault injection not installed
            return
        environment.chat_faults = FaultPlugin(environment, runner)

    events.init.add_listener(on_init)

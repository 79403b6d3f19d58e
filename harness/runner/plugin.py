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
from dataclasses import dataclass, field
from typing import Any

import gevent

from harness import config as config_mod
from harness.config import SCENARIO_NAMES, load_config
from harness.errors import ConfigError, HarnessError
from harness.runner.distributed import Tally, TalliedJournal, assign_devices, missing_share, summary_parts
from harness.results.journal import Journal
from harness.runner.live import CpuSampler, JournalTail, LiveChecks
from harness.runner.runtime import (RACE_END, RACE_GO, RACE_PART, RACE_REQ, Runtime, check_fit, derive_urls,
                             fds_needed, make_run_id, raise_nofile_limit, update_latest)

log = logging.getLogger("harness")

HELLO, TARGET, RUN, DONE = "chat_hello", "chat_target", "chat_run", "chat_done"


def _fail(err: HarnessError) -> None:
    """One clear line on stderr and the RESULTS.md §3 exit code; never a traceback."""
    sys.stderr.write(f"error: {err}\n")
    sys.stderr.flush()
    _stop_forked_workers()
    sys.exit(err.exit_code)


def set_values(raw: Any) -> list[str]:
    """``--set`` values: a list from the command line (one KEY=VALUE each), or the web UI
    form's text (several, split like a shell line: ``a.b=1 'faults=[{kind: cut, at_s: 5}]'``)."""
    import shlex

    if not raw:
        return []
    if isinstance(raw, str):
        return [p for p in shlex.split(raw) if p.strip()]
    return [str(item) for item in raw if str(item).strip()]


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


class NameList(list):
    """``choices`` of a harness option: the names the web UI's start form offers. Values are
    checked by the harness itself (``--scenario``: "unknown scenario ...", ``--policy``: the
    config's ``target.policy``), one sentence naming what is wrong, so argparse accepts any."""

    def __contains__(self, value: object) -> bool:
        return True


#: dest -> (Locust web-UI flags) of the harness options shown in the start form
_UI_FLAGS = {"chat_scenario": {"is_multiple": True}}


def add_arguments(parser: Any) -> None:
    """The harness options, in their own ``--help`` section and in the web UI's start form.

    Locust's web-UI registration (``include_in_web_ui`` & co.) is done by its parser's own
    ``add_argument``; an argument group's ``add_argument`` is argparse's and skips it, so the
    flags are set here on each action. Locust's own ``--config`` (a locust.conf file) gives
    way to the harness config; locust.conf / pyproject.toml in the working directory are
    still read as usual."""
    from harness.protocol import POLICIES

    old = parser.conflict_handler
    parser.conflict_handler = "resolve"
    try:
        g = parser.add_argument_group(
            "Chat login harness options",
            "Also in the web UI's start form (Custom parameters); a value changed there applies to that test.")
    finally:
        parser.conflict_handler = old

    def add(*args: Any, **kw: Any) -> Any:
        ui = kw.pop("include_in_web_ui", True)
        action = g.add_argument(*args, **kw)
        action.include_in_web_ui = ui
        action.is_secret = False
        action.is_required = False
        action.is_multiple = _UI_FLAGS.get(action.dest, {}).get("is_multiple", False)
        return action

    old = parser.conflict_handler
    parser.conflict_handler = "resolve"
    try:
        add("--config", dest="chat_config", default="config.yaml", metavar="PATH",
            help="the harness's config file, YAML (default config.yaml next to the locustfile); "
                 "not Locust's locust.conf")
    finally:
        parser.conflict_handler = old
    add("--scenario", dest="chat_scenario", default="", metavar="NAME[,NAME]",
        choices=NameList(SCENARIO_NAMES),
        help=f"run only these scenarios ({', '.join(SCENARIO_NAMES)}); default: the config's weights "
             "(in the web UI: all selected = the config's weights)")
    add("--policy", dest="chat_policy", default="", metavar="POLICY", choices=NameList(["", *POLICIES]),
        help=f"the embedded target's multi-device policy ({', '.join(POLICIES)}); default: target.policy "
             "of the config (same as --set target.policy=...)")
    add("--set", dest="chat_set", action="append", default=None, metavar="KEY=VALUE",
        help="override a config key by dotted path (repeatable; in the web UI: several KEY=VALUE "
             "separated by spaces, quoted with '...' when a value has spaces)")
    add("--no-report", dest="chat_no_report", action="store_true", default=False,
        help="skip the charts/HTML report at the end of each test")
    add("--local-journal", dest="chat_local_journal", action="store_true", default=False,
        include_in_web_ui=False,
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
        self.headless = bool(getattr(opts, "headless", False))
        self.all_user_classes = list(environment.user_classes)
        self.weights0 = {c: getattr(c, "weight", 1) for c in self.all_user_classes}
        try:
            cfg = self._load(opts)
            self.scenarios = self._select(cfg, opts)
        except ConfigError as err:
            _fail(err)
        self.cfg = cfg
        self.rt = Runtime(cfg=cfg, role=self.role)
        environment.chat = self.rt
        self.report_seq = 0
        self.nodes: dict[str, dict] = {}      # master: worker node id -> what we know of it
        self.race_routes: dict[str, dict] = {}  # master: race id -> {"owner": node, "members": [nodes]}
        self.finished = False                 # quitting handled
        self.run: TestRun | None = None       # the test running (or the last one, finished)
        self.runs: list[TestRun] = []         # every test of this process, in order
        self.form: dict[str, Any] = {}        # web UI: harness options as the start form sent them
        self.prepared: tuple[str, Path] | None = None
        self.web = None
        self._install_sigint()
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
            if web_ui is not None:
                from harness.runner.webui import HarnessWeb

                self.web = HarnessWeb(self, web_ui)
        ev = environment.events
        ev.test_start.add_listener(self.on_test_start)
        ev.test_stopping.add_listener(self.on_test_stopping)
        ev.quitting.add_listener(self.on_quitting)
        ev.report_to_master.add_listener(self.on_report_to_master)
        ev.worker_report.add_listener(self.on_worker_report)
        ev.test_stop.add_listener(self.on_test_stop)
        ev.spawning_complete.add_listener(self.on_spawning_complete)

    def install_late(self) -> None:
        """Listeners that must run after the other plugins' (the fault plugin ends its faults
        on test_stop; the test's folder is finished after that)."""
        self.env.events.test_stop.add_listener(self.on_test_stop_last)

    # ------------------------------------------------------------------ setup
    def _load(self, opts: Any) -> Any:
        path = getattr(opts, "chat_config", "config.yaml") or "config.yaml"
        if path == "config.yaml" and not Path(path).exists():
            here = Path(__file__).resolve().parents[2] / "config.yaml"
            path = str(here) if here.exists() else None
        overrides = set_values(getattr(opts, "chat_set", None))
        policy = (getattr(opts, "chat_policy", "") or "").strip()
        if policy:
            overrides.append(f"target.policy={policy}")
        host = getattr(opts, "host", None) or self.env.host
        if host and host != getattr(self, "embedded_url", None):
            overrides.append(f"target.host={host}")  # Locust's --host wins over the config file and --set
        cfg = load_config(path, overrides=overrides)
        if not cfg.target.secret_key and cfg.target.embedded:
            # a per-run key for the embedded target; shared with workers over the master link
            key = getattr(getattr(self, "rt", None), "secret_key", "") or secrets.token_hex(16)
            cfg = config_mod.replace(cfg, target__secret_key=key)
        return cfg

    def _select(self, cfg: Any, opts: Any) -> list[str]:
        wanted = [s.strip() for s in (getattr(opts, "chat_scenario", "") or "").split(",") if s.strip()]
        for s in wanted:
            if s not in SCENARIO_NAMES:
                raise ConfigError("--scenario", f"unknown scenario {s!r} (expected {', '.join(SCENARIO_NAMES)})")
        if set(wanted) == set(SCENARIO_NAMES) and not self.headless:
            wanted = []  # the web UI's multiple select starts with every name selected: the config's weights
        classes = []
        names = []
        self.skipped: dict[str, str] = {}
        if cfg.target.wire == "xmpp":
            from harness.runner.xmpp_binding import unsupported_scenarios

            self.skipped = unsupported_scenarios(cfg, wanted)   # ConfigError when asked for by name
        for cls in list(getattr(self, "all_user_classes", None) or self.env.user_classes):
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
        results = Path(cfg.run.results_dir)
        results.mkdir(parents=True, exist_ok=True)
        if self.role == "master":
            # before the (slow) target start: workers say hello as soon as they are connected
            self.token = secrets.token_hex(8)
            for name, handler in ((HELLO, self.on_hello), (DONE, self.on_done), (RACE_REQ, self.on_race_req),
                                  (RACE_PART, self.on_race_part), (RACE_END, self.on_race_end)):
                self.runner.register_message(name, handler)
        if self.headless:
            # one test: its folder now (the embedded target's ledger and log go in it, as ever)
            self.prepared = self._new_run_dir()
            self.target_dir = self.prepared[1]
        else:
            # the web UI: one folder per test, made at its start; the embedded target outlives
            # tests, its files live here and each test gets its own share of the ledger
            self.target_dir = results / f".embedded-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        rt.run_dir = self.target_dir
        self.xmpp_spec = None
        if cfg.target.wire == "xmpp":
            from harness.runner import xmpp_binding

            opts = self.env.parsed_options
            processes = max(1, int(getattr(opts, "expect_workers", 1) or 1)) if self.role == "master" else 1
            # headless: -u bounds the accounts in use at once; the web UI may ask for any count later
            users = int(getattr(opts, "num_users", 0) or 0) if self.headless else None
            if cfg.target.started_by_harness:
                rt.target, self.xmpp_spec = xmpp_binding.start_server(cfg, self.target_dir, self.scenarios,
                                                                      processes, users)
                rt.pool_caps = dict(self.xmpp_spec["accounts"])
            else:
                from harness.targets.embedded import check_reachable

                self.xmpp_spec = xmpp_binding.external_spec(cfg, self.scenarios)
                check_reachable(self.xmpp_spec["host"], self.xmpp_spec["port"])
            xmpp_binding.bind(rt, cfg, self.xmpp_spec, rt.target)
            if rt.target is not None:
                self.embedded_url = rt.ws_url   # the web UI's Host field shows the server the harness started
        elif cfg.target.embedded:
            from harness.targets.embedded import EmbeddedTarget

            rt.target = EmbeddedTarget(cfg.target, cfg.target.secret_key, self.target_dir).start()
            ws, rest = rt.target.ws_url, rt.target.base_url
            self.embedded_url = f"ws://{rt.target.host}:{rt.target.port}"
            log.info("embedded target on %s (policy %s)", rt.target.base_url, cfg.target.policy)
            rt.bind_target(ws, rest, cfg.target.sdkappid, cfg.target.secret_key)
        else:
            ws, rest = self._external_urls(cfg)
            rt.bind_target(ws, rest, cfg.target.sdkappid, cfg.target.secret_key)
        if self.role == "local":
            rt.worker, rt.worker_tag = "local", "0"
        else:
            rt.worker = "master"
            rt.processes = max(1, int(getattr(self.env.parsed_options, "expect_workers", 1) or 1))
        rt.ready.set()
        if self.role == "master":
            for node in list(self.nodes):  # hellos that came while the target was starting
                self._send_target(node)
        self._install_signal_flush()

    def _external_urls(self, cfg: Any) -> tuple[str, str]:
        from urllib.parse import urlsplit

        from harness.targets.embedded import check_reachable

        ws, rest = derive_urls(cfg, cfg.target.host)
        u = urlsplit(ws)
        check_reachable(u.hostname or "", u.port or (443 if u.scheme == "wss" else 80))
        return ws, rest

    def _new_run_dir(self) -> tuple[str, Path]:
        """A new run folder (``results/<run-id>/`` with journal/ and config.yaml); in the web UI a
        suffix keeps two tests started in the same second (or a fixed run.run_id) apart."""
        results = Path(self.cfg.run.results_dir)
        run_id = base = make_run_id(self.cfg, self.scenarios)
        k = 2
        while not self.headless and (results / run_id).exists():
            run_id, k = f"{base}-{k}", k + 1
        run_dir = results / run_id
        (run_dir / "journal").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_mod.dump_yaml(self.cfg), encoding="utf-8")
        if self.role == "master":
            (run_dir / ".master-token").write_text(self.token, encoding="utf-8")
        return run_id, run_dir

    def _init_worker(self) -> None:
        rt = self.rt
        for name, handler in ((TARGET, self.on_target), (RUN, self.on_run), (RACE_GO, lambda environment, msg: rt.races.on_go(environment, msg.data or {})),
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

    def _start_csv(self, run: "TestRun") -> None:
        try:
            from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

            run.csv_writer = StatsCSVFileWriter(self.env, PERCENTILES_TO_REPORT, str(run.run_dir / "locust"),
                                                full_history=True)
            run.csv_greenlet = gevent.spawn(run.csv_writer.stats_writer)
        except Exception as exc:  # pragma: no cover - never fatal
            log.warning("Locust CSVs disabled: %s", exc)

    def _close_csv(self, run: "TestRun") -> None:
        if run.csv_greenlet is not None:
            run.csv_greenlet.kill(block=True)
        if run.csv_writer is None:
            return
        try:
            w = run.csv_writer
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

    def _install_sigint(self) -> None:
        """Ctrl-C: Python raises KeyboardInterrupt in whatever greenlet happens to run (gevent
        then prints it as a failed greenlet before passing it on). Raise it in the main
        greenlet only, where Locust turns it into its shutdown (quitting -> our clean finish);
        a second Ctrl-C while the test's folder is being finished is ignored, with one line."""
        state = {"n": 0}

        def on_sigint(*_a: Any) -> None:
            state["n"] += 1
            if state["n"] > 1:
                sys.stderr.write("stopping: finishing the test's folder first\n")
                return
            hub = gevent.get_hub()
            if hub.parent is not None and not hub.parent.dead:
                hub.parent.throw(KeyboardInterrupt)

        try:
            gevent.signal_handler(signal.SIGINT, on_sigint)
        except Exception:  # pragma: no cover - not the main thread
            pass

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
            "processes": rt.processes, "fds": self.fds_per_worker, "xmpp": getattr(self, "xmpp_spec", None),
            "config": config_mod.masked(self.cfg)},
            client_id=node_id)
        if self.run is not None and not self.run.stopping:
            self._send_run(node_id)  # joined during a test: its rows go in this test's folder

    def _send_run(self, node_id: str | None = None) -> None:
        """Master: tell workers (all, or one) the test's run id and folder: journal there."""
        run, rt = self.run, self.rt
        data = {"ws_url": rt.ws_url, "rest_base": rt.rest_base, "sdkappid": rt.sdk_app_id,
                "secret": rt.secret_key, "run_id": run.run_id, "run_dir": str(run.run_dir.resolve()),
                "token": self.token, "started_ns": run.started_ns, "processes": rt.processes,
                "xmpp": getattr(self, "xmpp_spec", None), "config": config_mod.masked(self.cfg)}
        for nid in [node_id] if node_id else list(self.nodes):
            try:
                self.runner.send_message(RUN, data, client_id=nid)
            except Exception as exc:  # pragma: no cover - a worker that just went away
                log.warning("could not send the test's folder to %s: %s", nid, exc)

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
        """Worker: the master's target and config (bound when the first test starts, so the
        fault proxy's log lands in that test's folder)."""
        d = msg.data or {}
        rt = self.rt
        self.cfg = rt.cfg = self._adopt_config(d.get("config"), d.get("secret") or "")
        rt.processes = max(1, int(d.get("processes") or 1))
        if d.get("fds"):
            self.nofile = raise_nofile_limit(int(d["fds"]))[0]
        if getattr(self, "bound_ws", None) is None:
            _warn_unreachable_loopback(d.get("ws_url", ""), getattr(environment.parsed_options, "master_host", ""))

    def _bind(self, d: dict) -> None:
        rt = self.rt
        if getattr(self, "bound_ws", None) == d.get("ws_url"):
            return  # bound already (and maybe proxied): keep it
        try:
            if d.get("xmpp"):
                from harness.runner import xmpp_binding

                # the admin view (a harness-started server's) stays with the master: no cross-check here
                xmpp_binding.bind(rt, self.cfg, d["xmpp"], None)
                rt.pool_caps = dict(d["xmpp"].get("accounts") or {})
            else:
                rt.bind_target(d["ws_url"], d["rest_base"], d["sdkappid"], d.get("secret") or self.cfg.target.secret_key)
        except (ConfigError, KeyError) as err:
            log.error("%s", err)
            return
        self.bound_ws = d.get("ws_url")

    def on_run(self, environment: Any, msg: Any) -> None:
        """Worker: a test starts: journal into its folder (the master's, when we can see its
        token there, i.e. the same disk; otherwise our own results/<run_id>/)."""
        d = msg.data or {}
        rt = self.rt
        self.on_target(environment, msg)
        if self.run is not None and self.run.run_id == d.get("run_id"):
            return
        if self.run is not None and not self.run.finished:
            self._worker_done()  # the master started a new test without stopping ours
        rt.run_id, rt.started_ns = d["run_id"], d["started_ns"]
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
        self._bind(d)
        journal = TalliedJournal(rt.run_dir / "journal" / f"{rt.worker}.jsonl", rt.worker,
                                 flush_interval=self.cfg.run.journal_flush_s).open()
        journal.start_flusher()
        rt.journal = journal
        self.run = TestRun(seq=len(self.runs) + 1, run_id=rt.run_id, run_dir=rt.run_dir, started_ns=rt.started_ns,
                           journal=journal, cpu=CpuSampler().start())
        self.run.cpu.add(rt.worker, os.getpid())
        self.runs.append(self.run)
        rt.stopping = False
        rt.ready.set()
        if not shared:
            log.info("journal on this worker's disk: %s", rt.run_dir / "journal" / f"{rt.worker}.jsonl")

    def _worker_done(self) -> None:
        """Worker, at test stop (or quit): close this test's journal and say chat_done with
        the rest of the tally and the CPU samples of this process."""
        run, rt = self.run, self.rt
        if run is None or run.finished:
            return
        run.finished = True
        rt.races.stop(timeout=1.0)
        if run.cpu is not None:
            run.cpu.stop()
        j = run.journal
        j.close()
        try:
            self.runner.send_message(DONE, {
                "w": rt.worker, "run_id": run.run_id, "rows": j.rows, "shared": bool(getattr(self, "shared", False)),
                "journal": str((run.run_dir / "journal" / f"{rt.worker}.jsonl").resolve()),
                "host": socket.gethostname(), "cpu": run.cpu.samples.get(rt.worker, []) if run.cpu else [],
                "stopped": dict(getattr(j, "stopped", {}) or {}),
                "tally": j.take().to_wire() if isinstance(j, TalliedJournal) else None})
        except Exception:
            pass

    def on_done(self, environment: Any, msg: Any) -> None:
        d = msg.data or {}
        if self.run is not None and d.get("run_id") not in (None, self.run.run_id):
            return  # a late word about an earlier test
        node = self._node(msg.node_id, d)
        node["cpu"] = [float(x) for x in d.get("cpu") or [] if isinstance(x, (int, float))]
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
        if self.role != "master":
            self.spawned = False
            if getattr(self, "freezer", None) is None or self.freezer.dead:
                self.freezer = gevent.spawn(self._freeze_while_spawning)
        if self.role == "worker":
            if not rt.ready.is_set():
                self._send_hello()  # the master may have missed it (it was starting its target)
            return
        if self.role == "master" and getattr(self, "watcher", None) is None:
            self.watcher = gevent.spawn(self._watch_workers)
        try:
            self._begin_test()
        except HarnessError as err:
            # a bad value in the web UI's form: one line, and this test does not run
            log.error("%s", err)
            sys.stderr.write(f"error: {err}\n")
            if self.web is not None:
                self.web.error = str(err)
            rt.ready.clear()  # users spawned meanwhile wait and stop: no row lands in the last test's folder
            gevent.spawn(self.runner.stop)

    def _begin_test(self) -> None:
        """A test starts (each Start in the web UI, each run of a shape, the one headless run):
        its own run folder, journal, live checks, CPU sampler and Locust CSVs."""
        rt, env = self.rt, self.env
        if self.run is not None and not self.run.finished and self.role == "local":
            self._end_test(self.run)
        if self.web is not None:
            self.web.error = None
        if self.prepared is None:  # every test but a headless run's: the form's options apply
            opts = env.parsed_options
            for key, value in self.form.items():
                setattr(opts, key, value)
            cfg = self._load(opts)
            self.scenarios = self._select(cfg, opts)
            self._retarget(cfg)
            self.cfg = rt.cfg = cfg
            rt.pools.clear()
            if rt.protocol == "tim":   # an XMPP binding (server, accounts, credentials) lasts the process
                rt.bind_target(rt.ws_url, rt.rest_base, cfg.target.sdkappid, cfg.target.secret_key)
            run_id, run_dir = self._new_run_dir()
        else:
            run_id, run_dir = self.prepared
            self.prepared = None
        started = time.time_ns()
        run = TestRun(seq=len(self.runs) + 1, run_id=run_id, run_dir=run_dir, started_ns=started)
        if self.web is not None:  # the live view is for the web UI: headless runs do not pay for it
            run.live = LiveChecks(config_mod.masked(self.cfg), started_ns=started, enabled=self.cfg.checks.enabled)
        run.cpu = CpuSampler().start()
        if self.role == "local":
            run.cpu.add("local", os.getpid())
        if rt.target is not None:
            run.cpu.add("target", lambda: rt.target.pid if rt.target is not None else None)
        rt.run_id, rt.run_dir, rt.started_ns = run_id, run_dir, started
        rt.stopping = False
        if self.role == "local":
            run.journal = Journal(run_dir / "journal" / "local.jsonl", "local",
                                  flush_interval=self.cfg.run.journal_flush_s).open()
            if run.live is not None:
                run.journal.listeners.append(run.live.feed)
            run.journal.start_flusher()
            rt.journal = run.journal  # rows of users still finishing the last test went to its journal
        else:
            for node in self.nodes.values():  # per test: what each worker reports from now on
                node.update(done=None, tally=Tally(), rows=0, users=0, users_max=0, lost=0, cpu=[], cpu_last=None)
        self.run = run
        self.runs.append(run)
        if self.role == "master":
            self._send_run()  # before Locust sends the spawn messages (same socket, in order)
        self._start_csv(run)
        if run.live is not None:
            run.live_greenlet = gevent.spawn(self._live_loop, run)
        rt.ready.set()

    def _retarget(self, cfg: Any) -> None:
        """Web UI: the form changed the target (another --host, or the embedded server's policy
        or limits): point at it, restarting the embedded target (same port) when needed."""
        rt = self.rt
        if rt.protocol != "tim" or cfg.target.wire != "tim":
            if cfg.target.kind != self.cfg.target.kind or cfg.target.host != self.cfg.target.host:
                log.warning("the form changed the XMPP target; it applies when locust is started again with it")
            return
        if not cfg.target.embedded:
            ws, rest = self._external_urls(cfg)
            rt.ws_url, rt.rest_base = ws, rest
            return
        if rt.target is None:
            return
        from harness.targets.embedded import SERVER_KEYS, EmbeddedTarget

        old = {k: getattr(rt.target.cfg, k) for k in SERVER_KEYS}
        if old == {k: getattr(cfg.target, k) for k in SERVER_KEYS}:
            return
        port = rt.target.port
        log.info("restarting the embedded target with the test's settings (policy %s)", cfg.target.policy)
        rt.target.stop()
        rt.target = EmbeddedTarget(cfg.target, cfg.target.secret_key, self.target_dir).start(port or 0)
        rt.ws_url, rt.rest_base = rt.target.ws_url, rt.target.base_url

    def _live_loop(self, run: "TestRun") -> None:
        """Every ~2 s while the test runs: feed what the journals (master: its workers' files)
        and the target's ledger gained, re-run the checks, note the user count."""
        while not run.stopping:
            t0 = time.monotonic()
            try:
                self._live_tick(run)
            except Exception:  # pragma: no cover - the live view must never break a test
                log.exception("live view")
            # the checks re-run on the whole history so far: keep them under ~10 % of this process
            gevent.sleep(max(LIVE_INTERVAL_S, 10 * (time.monotonic() - t0)))

    def _live_tick(self, run: "TestRun") -> None:
        live = run.live
        if self.role == "master":
            for path in sorted((run.run_dir / "journal").glob("*.jsonl")):
                live.feed(run.tail.read(path), where=path.name)
        self._feed_ledger(run)
        run.users_peak = max(run.users_peak, int(getattr(self.runner, "user_count", 0) or 0))
        live.evaluate()

    def _feed_ledger(self, run: "TestRun") -> None:
        """The embedded target's ledger rows of this test's sessions (sessions online)."""
        live = run.live
        ledger = self.target_dir / "ledger.jsonl"
        if live is not None and self.rt.target is not None and getattr(self.rt.target, "ledger", False):
            rows = run.ledger_tail.read(ledger)
            logins = run.ledger_sessions
            mine = []
            for r in rows:
                if r.get("event") == "login" and int(r.get("ts") or 0) >= run.started_ns:
                    logins.add(r.get("sessionID"))
                if r.get("sessionID") in logins:
                    mine.append(r)
            live.feed_ledger(mine)

    def on_test_stopping(self, environment: Any, **_kw: Any) -> None:
        """Before Locust stops the users: what they cut short from here on is the harness's own
        doing (``info``, ``stopped by harness``), never a failure."""
        self.rt.stopping = True
        run = self.run
        if run is not None and run.stopped_ns is None and not run.finished:
            run.stopped_ns = time.time_ns()

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

    def on_test_stop_last(self, environment: Any, **_kw: Any) -> None:
        """The test stopped (its users are gone; faults ended): finish its folder now (master:
        once every worker said chat_done for it)."""
        run = self.run
        if self.role == "worker":
            self._worker_done()
            return
        if run is None or run.finished or run.finishing:
            return
        if run.stopped_ns is None:
            run.stopped_ns = time.time_ns()
        run.stopping = True
        if self.role == "master":
            run.finisher = gevent.spawn(self._finish_after_workers, run)
            return
        self._end_test(run)

    def _finish_after_workers(self, run: "TestRun") -> None:
        """Master, web UI Stop: wait (bounded) for each worker's chat_done for this test."""
        stop_timeout = float(getattr(self.env, "stop_timeout", 0) or 0)
        deadline = time.monotonic() + stop_timeout + 30.0
        while time.monotonic() < deadline:
            clients = getattr(self.runner, "clients", {})
            waiting = [n for nid, n in self.nodes.items() if n["done"] is None and n["gone"] is None
                       and nid in clients]
            if not waiting:
                break
            gevent.sleep(0.1)
        # a worker's final stats report (Locust's request counts) follows its chat_done
        deadline = min(deadline, time.monotonic() + 10.0)
        while time.monotonic() < deadline and any(
                n["done"] is not None and n["gone"] is None and n["rows"] < int(n["done"].get("rows") or 0)
                for n in self.nodes.values()):
            gevent.sleep(0.1)
        self._end_test(run)

    def _end_test(self, run: "TestRun") -> None:
        """Run the end-of-test pipeline on ``run``'s folder; never raises."""
        env = self.env
        if run.finished or run.finishing:
            return
        run.finishing = True
        run.stopping = True
        try:
            self._finish(run)
        except HarnessError as err:
            sys.stderr.write(f"error: {err}\n")
            env.process_exit_code = err.exit_code
        except Exception as exc:  # never lose the run's files over a reporting bug
            log.exception("end-of-test pipeline failed")
            sys.stderr.write(f"error: end-of-test pipeline failed: {exc!r}\n")
            if env.process_exit_code is None:
                env.process_exit_code = 1
        finally:
            run.finished = True

    def on_report_to_master(self, client_id: str, data: dict, **_kw: Any) -> None:
        j = self.rt.journal
        self.report_seq += 1
        chat: dict[str, Any] = {"w": self.rt.worker, "seq": self.report_seq, "rows": j.rows if j else 0,
                                "users": getattr(self.runner, "user_count", 0)}
        if isinstance(j, TalliedJournal):
            chat["tally"] = j.take().to_wire()
        run = self.run
        if run is not None and run.cpu is not None and not run.finished:
            samples = run.cpu.samples.get(self.rt.worker) or []
            chat["cpu"] = samples[-1] if samples else None
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
        node["cpu_last"] = c.get("cpu")
        node["tally"].merge(Tally.from_wire(c.get("tally")))

    # ------------------------------------------------------------------ the end
    def on_quitting(self, environment: Any, **_kw: Any) -> None:
        """The process quits (end of a headless run, Ctrl-C, the web UI's process ending): a test
        still running is stopped users first, finished, and only then the target stops."""
        if self.finished:
            return
        self.finished = True
        rt = self.rt
        if self.role == "worker":
            self._worker_done()
            return
        if getattr(self, "abort_error", None) is not None:
            self._stop_target()  # the run never really started: exit 2 (set by _abort), no pipeline
            return
        try:
            run = self.run
            if run is not None and not run.finished:
                if self.role == "local":
                    if run.stopped_ns is None:
                        self.on_test_stopping(environment)
                    self.runner.stop()  # the users stop (their rows go in the journal); test_stop finishes
                    self._end_test(run)
                else:
                    finisher = run.finisher
                    if finisher is not None and run.finishing:
                        finisher.join()
                    else:
                        if finisher is not None:
                            finisher.kill(block=True)
                        rt.stopping = True
                        if run.stopped_ns is None:
                            run.stopped_ns = time.time_ns()
                        run.stopping = True
                        self._drain_workers()
                        self._end_test(run)
            elif run is None and self.headless and self.prepared is not None:
                pass  # quit before the test started (e.g. an error at spawn): nothing ran
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
        journal_dir = self.run.run_dir / "journal"
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
        locust_total = self.runner.stats.total.num_requests + (self.run.locust_offset if self.run else 0)
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
                rows_on_disk=_count_lines(self.run.run_dir / "journal" / f"{name}.jsonl"),
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

    def _stopped_ops(self, run: "TestRun") -> dict[str, int]:
        """op -> rows the harness's own stop cut short (this process's journal, the workers' chat_done)."""
        out: dict[str, int] = {}
        parts = [getattr(run.journal, "stopped", None) or {}]
        parts += [(n["done"] or {}).get("stopped") or {} for n in self.nodes.values() if n.get("done")]
        for part in parts:
            for op, k in part.items():
                out[str(op)] = out.get(str(op), 0) + int(k or 0)
        return out

    def _cpu_summary(self, run: "TestRun") -> dict:
        from harness.runner.live import cpu_summary

        samples = run.cpu.samples if run.cpu is not None else {}
        if self.role == "master":
            gens = {n["name"]: n.get("cpu") or [] for n in self.nodes.values()}
        else:
            gens = {"local": samples.get("local", [])}
        target = samples.get("target") if self.rt.target is not None else None
        return cpu_summary(gens, target)

    def _finish(self, run: "TestRun") -> None:
        """The end-of-test pipeline on one test's folder: journal closed, checks, gates,
        summary.json (``duration_s`` = the test's own time), junit.xml, report; then
        ``results/latest`` moves to it."""
        from harness.results.checks import run_checks
        from harness.results.gates import failure_lines
        from harness.results.junit import write_junit
        from harness.results.summary import _iso, build_summary, load_settings, write_summary

        rt, cfg, env = self.rt, self.cfg, self.env
        run.stopping = True
        if run.live_greenlet is not None:
            run.live_greenlet.kill(block=True)
        if run.cpu is not None:
            run.cpu.stop()
        self._close_csv(run)
        if run.journal is not None:
            run.journal.close()  # the last rows reach the live view through its flush
        workers = self._worker_status()
        finished_ns = run.stopped_ns or time.time_ns()
        if self.headless or self.finished:
            self._stop_target()  # flushes the ledger before the checks read it
        elif rt.target is not None and getattr(rt.target, "ledger", False) and self.target_dir != run.run_dir:
            from harness.runner.live import ledger_slice

            gevent.sleep(1.2)  # the server writes its ledger every 0.5 s
            ledger_slice(self.target_dir / "ledger.jsonl", run.run_dir / "ledger.jsonl", run.started_ns,
                         time.time_ns())
        if self.role == "master" and run.live is not None:  # the workers' last rows
            for path in sorted((run.run_dir / "journal").glob("*.jsonl")):
                run.live.feed(run.tail.read(path), where=path.name)
        self._feed_ledger(run)  # the live view's last word on sessions online
        stats = self.runner.stats
        locust_total = stats.total.num_requests + run.locust_offset  # + what a Reset in the web UI zeroed
        all_on_disk = all(w["journal_on_master"] and w["finished"] for w in workers.values())
        from harness.results.scan import scan_run

        scan = scan_run(run.run_dir, recovery=bool(cfg.faults.specs()))  # the journals are read once
        checks = run_checks(run.run_dir, config=config_mod.masked(cfg), enabled=cfg.checks.enabled,
                            locust_total=locust_total if all_on_disk else None, history=scan.history)
        scan.history = None  # the checks are done with it: its memory goes before the report
        if run.live is not None:
            run.live.set_final(checks)
        users_peak = max(getattr(self.runner, "user_count", 0) or 0, run.users_peak,
                         int(getattr(self.runner, "final_user_classes_count", None) and
                             sum(self.runner.final_user_classes_count.values()) or 0))
        hist = getattr(stats, "history", None) or []
        for h in hist:
            uc = h.get("user_count", 0) or 0
            users_peak = max(users_peak, int(uc[-1] if isinstance(uc, (list, tuple)) else uc))  # [ts, count]
        meta = {"run_id": run.run_id, "started": _iso(run.started_ns), "finished": _iso(finished_ns),
                "duration_s": (finished_ns - run.started_ns) / 1e9,
                "target": "embedded" if cfg.target.embedded else (cfg.target.host or rt.ws_url),
                "policy": cfg.target.policy, "users_peak": users_peak, "stopped": self._stopped_ops(run),
                "host": rt.ws_url, "load": load_settings(env.parsed_options, config_mod.masked(cfg), self.scenarios)}
        cpu = self._cpu_summary(run)
        describe = getattr(rt.target, "describe", None)
        extra = {"target_server": describe() if callable(describe) else None,
                 "scenarios_not_run": dict(getattr(self, "skipped", {}) or {}),
                 "scenarios": self.scenarios, "locust_total": locust_total,
                 "locust_failures": stats.total.num_failures, "workers": workers,
                 "missing_workers": [n for n, w in workers.items() if not w["finished"]], "cpu": cpu}
        recovery = _recovery(scan.recovery) if scan.recovery is not None else None
        scan.recovery = None
        if recovery is not None:
            extra["recovery"] = recovery
        summary = build_summary(run.run_dir, meta=meta, checks=checks, gates_cfg=config_mod.masked(cfg)["gates"],
                                extra=extra, digest=scan.digest)
        summary = self._distributed_summary(summary, workers)
        write_summary(run.run_dir, summary)
        write_junit(run.run_dir, checks, summary.get("gates", {}))
        for line in failure_lines(checks, summary.get("gates", {})):
            sys.stderr.write(line + "\n")
        for note in cpu.get("notes") or ():
            sys.stderr.write(f"cpu: {note}\n")
        env.process_exit_code = int(summary.get("exit_code", 0))
        report_path = None
        if cfg.report.enabled and not getattr(env.parsed_options, "chat_no_report", False):
            try:
                from harness.results.report import build_report

                report_path = build_report(run.run_dir, charts=cfg.report.charts, digest=scan.digest)
            except Exception as exc:
                log.exception("report failed")
                sys.stderr.write(f"warning: report failed: {exc!r}\n")
        if scan.digest is not None:
            scan.digest.close()  # a big run's kicks on disk (the report is done with them)
        run.summary, run.report, run.exit_code = summary, report_path, env.process_exit_code
        update_latest(Path(cfg.run.results_dir), run.run_id)  # only now: latest is always a finished folder
        verdict = "PASS" if env.process_exit_code == 0 else f"FAIL (exit {env.process_exit_code})"
        sys.stderr.write(f"results: {run.run_dir}  {verdict}" + (f"  report: {report_path}" if report_path else "") + "\n")


LIVE_INTERVAL_S = 2.0  # the live checks re-run this often while a test runs


@dataclass(eq=False)
class TestRun:
    """One test (Start -> Stop in the web UI, one run of a shape, the headless run): its run
    folder, journal, live checks, CPU samples and, once finished, its summary and report."""

    seq: int
    run_id: str
    run_dir: Path
    started_ns: int
    journal: Any = None
    live: Any = None
    cpu: Any = None
    csv_writer: Any = None
    csv_greenlet: Any = None
    live_greenlet: Any = None
    finisher: Any = None
    stopped_ns: int | None = None
    stopping: bool = False
    finishing: bool = False
    finished: bool = False
    users_peak: int = 0
    locust_offset: int = 0        # Locust requests of this test zeroed by a Reset (web UI)
    summary: dict | None = None
    report: Path | None = None
    exit_code: int | None = None
    tail: Any = field(default_factory=lambda: JournalTail())
    ledger_tail: Any = field(default_factory=lambda: JournalTail())
    ledger_sessions: set = field(default_factory=set)


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


def _recovery(rows: list) -> dict | None:
    """Reconnect-storm figures (harness.runner.faults.recovery_stats) of a run that injected
    faults, from the rows the end-of-run scan kept for it."""
    from harness.runner.faults import recovery_stats

    return recovery_stats(rows)


def install(events: Any) -> None:
    """Register the harness on Locust's events (called once by the locustfile)."""
    events.init_command_line_parser.add_listener(add_arguments)

    def on_init(environment: Any, runner: Any, web_ui: Any = None, **_kw: Any) -> None:
        plugin = environment.chat_plugin = HarnessPlugin(environment, runner, web_ui)
        try:
            from harness.runner.faults import FaultPlugin
        except ImportError:  # fault injection not installed
            FaultPlugin = None
        if FaultPlugin is not None:
            environment.chat_faults = FaultPlugin(environment, runner)
        plugin.install_late()

    events.init.add_listener(on_init)

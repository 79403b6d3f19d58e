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
import sys
import time
from pathlib import Path
from typing import Any

import gevent

from harness import config as config_mod
from harness.config import SCENARIO_NAMES, load_config
from harness.errors import ConfigError, HarnessError, TargetError
from harness.journal import Journal
from harness.runtime import Runtime, derive_urls, make_run_id, update_latest

log = logging.getLogger("harness")

HELLO, TARGET, DONE = "chat_hello", "chat_target", "chat_done"


def _fail(err: HarnessError) -> None:
    """One clear line on stderr and the RESULTS.md §3 exit code; never a traceback."""
    sys.stderr.write(f"error: {err}\n")
    sys.stderr.flush()
    os._exit(err.exit_code) if os.environ.get("CHAT_HARD_EXIT") else sys.exit(err.exit_code)


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
        self.worker_reports: dict[str, dict] = {}
        self.lost_reports: dict[str, int] = {}
        self.finished = False
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

    # ------------------------------------------------------------------ setup
    def _load(self, opts: Any) -> Any:
        path = getattr(opts, "chat_config", "config.yaml") or "config.yaml"
        if path == "config.yaml" and not Path(path).exists():
            here = Path(__file__).resolve().parent.parent / "config.yaml"
            path = str(here) if here.exists() else None
        cfg = load_config(path, overrides=getattr(opts, "chat_set", None) or ())
        host = getattr(opts, "host", None) or self.env.host
        if host:
            cfg = config_mod.replace(cfg, target__host=host)
            config_mod._validate_semantics(cfg)
        if not cfg.target.secret_key and cfg.target.embedded:
            # a per-run key for the embedded target; shared with workers over the master link
            cfg = config_mod.replace(cfg, target__secret_key=os.environ.get("CHAT_RUN_SECRET") or secrets.token_hex(16))
        return cfg

    def _select(self, cfg: Any, opts: Any) -> list[str]:
        wanted = [s.strip() for s in (getattr(opts, "chat_scenario", "") or "").split(",") if s.strip()]
        for s in wanted:
            if s not in SCENARIO_NAMES:
                raise ConfigError("--scenario", f"unknown scenario {s!r} (expected {', '.join(SCENARIO_NAMES)})")
        classes = []
        names = []
        for cls in list(self.env.user_classes):
            name = getattr(cls, "scenario", "")
            if not name:
                classes.append(cls)
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
        if self.runner is not None and hasattr(self.runner, "user_classes"):
            pass
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
        if cfg.target.embedded:
            from harness.target import EmbeddedTarget

            rt.target = EmbeddedTarget(cfg.target, cfg.target.secret_key, rt.run_dir).start()
            ws, rest = rt.target.ws_url, rt.target.base_url
            log.info("embedded target on %s (policy %s)", rt.target.base_url, cfg.target.policy)
        else:
            from urllib.parse import urlsplit

            from harness.target import check_reachable

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
            self.runner.register_message(HELLO, self.on_hello)
            self.runner.register_message(DONE, self.on_done)
            self.done: dict[str, dict] = {}
            self.hello: dict[str, str] = {}
            rt.ready.set()
        self._install_signal_flush()

    def _init_worker(self) -> None:
        self.runner.register_message(TARGET, self.on_target)

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
    def on_hello(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        self.hello[msg.node_id] = data.get("w", msg.node_id)
        rt = self.rt
        self.runner.send_message(TARGET, {"ws_url": rt.ws_url, "rest_base": rt.rest_base, "sdkappid": rt.sdk_app_id,
                                          "secret": rt.secret_key, "run_id": rt.run_id, "run_dir": str(rt.run_dir),
                                          "started_ns": rt.started_ns}, client_id=msg.node_id)

    def on_target(self, environment: Any, msg: Any) -> None:
        d = msg.data
        rt = self.rt
        if rt.ready.is_set():
            return
        rt.run_id, rt.started_ns = d["run_id"], d["started_ns"]
        rt.run_dir = Path(d["run_dir"])
        if not rt.run_dir.is_absolute() or not rt.run_dir.parent.exists():
            rt.run_dir = Path(self.cfg.run.results_dir) / d["run_id"]
        (rt.run_dir / "journal").mkdir(parents=True, exist_ok=True)
        try:
            rt.bind_target(d["ws_url"], d["rest_base"], d["sdkappid"], d.get("secret") or self.cfg.target.secret_key)
        except ConfigError as err:
            log.error("%s", err)
            return
        rt.journal = Journal(rt.run_dir / "journal" / f"{rt.worker}.jsonl", rt.worker,
                             flush_interval=self.cfg.run.journal_flush_s).open()
        rt.journal.start_flusher()
        self._install_signal_flush()
        rt.ready.set()

    def on_done(self, environment: Any, msg: Any) -> None:
        self.done[msg.node_id] = msg.data or {}

    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        rt = self.rt
        if self.role == "worker":
            if not rt.ready.is_set():
                idx = getattr(self.runner, "worker_index", 0)
                rt.worker, rt.worker_tag = f"w{idx}-{os.getpid()}", f"{idx}"
                self.runner.send_message(HELLO, {"w": rt.worker})
            return
        if self.role == "local" and rt.journal is not None and rt.journal._greenlet is None:
            rt.journal.start_flusher()
        if self.csv_writer is not None and self.csv_greenlet is None:
            self.csv_greenlet = gevent.spawn(self.csv_writer.stats_writer)

    def on_report_to_master(self, client_id: str, data: dict, **_kw: Any) -> None:
        j = self.rt.journal
        self.report_seq += 1
        data["chat"] = {"w": self.rt.worker, "seq": self.report_seq, "rows": j.rows if j else 0}

    def on_worker_report(self, client_id: str, data: dict, **_kw: Any) -> None:
        c = data.get("chat")
        if not c:
            return
        prev = self.worker_reports.get(client_id)
        if prev and c["seq"] != prev["seq"] + 1:
            self.lost_reports[client_id] = self.lost_reports.get(client_id, 0) + max(0, c["seq"] - prev["seq"] - 1)
        self.worker_reports[client_id] = c

    # ------------------------------------------------------------------ the end
    def on_quitting(self, environment: Any, **_kw: Any) -> None:
        if self.finished:
            return
        self.finished = True
        rt = self.rt
        if self.role == "worker":
            if rt.journal is not None:
                rt.journal.close()
                try:
                    self.runner.send_message(DONE, {"w": rt.worker, "rows": rt.journal.rows})
                except Exception:
                    pass
            return
        try:
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

    def _worker_status(self) -> dict:
        """Per worker: journal rows it reported, whether it said it finished, lost reports."""
        out = {}
        if self.role != "master":
            return out
        deadline = time.monotonic() + max(5.0, float(getattr(self.env, "stop_timeout", 0) or 0) + 5.0)
        journal_dir = self.rt.run_dir / "journal"
        while time.monotonic() < deadline:
            names = set(self.hello.values())
            if all(any(d.get("w") == n for d in self.done.values()) for n in names):
                break
            gevent.sleep(0.1)
        for node, name in self.hello.items():
            done = next((d for d in self.done.values() if d.get("w") == name), None)
            rep = next((r for r in self.worker_reports.values() if r.get("w") == name), {})
            out[name] = {"finished": done is not None, "rows": (done or rep).get("rows"),
                         "journal_on_master": (journal_dir / f"{name}.jsonl").exists(),
                         "lost_reports": self.lost_reports.get(node, 0)}
        return out

    def _finish(self) -> None:
        from harness.checks import run_checks
        from harness.gates import failure_lines
        from harness.junit import write_junit
        from harness.summary import build_summary, write_summary

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
        all_on_disk = all(w["journal_on_master"] for w in workers.values())
        checks = run_checks(rt.run_dir, config=config_mod.masked(cfg), enabled=cfg.checks.enabled,
                            locust_total=locust_total if all_on_disk else None)
        users_peak = max(getattr(self.runner, "user_count", 0) or 0, getattr(self, "_users_peak", 0))
        hist = getattr(stats, "history", None) or []
        for h in hist:
            users_peak = max(users_peak, int(h.get("user_count", 0) or 0))
        meta = {"run_id": rt.run_id, "started": rt.started_ns / 1e9, "finished": finished_ns / 1e9,
                "duration_s": (finished_ns - rt.started_ns) / 1e9,
                "target": "embedded" if cfg.target.embedded else cfg.target.host, "policy": cfg.target.policy,
                "users_peak": users_peak}
        extra = {"scenarios": self.scenarios, "locust_total": locust_total,
                 "locust_failures": stats.total.num_failures, "workers": workers,
                 "missing_workers": [n for n, w in workers.items() if not w["finished"]]}
        summary = build_summary(rt.run_dir, meta=meta, checks=checks, gates_cfg=config_mod.masked(cfg)["gates"],
                                extra=extra)
        write_summary(rt.run_dir, summary)
        write_junit(rt.run_dir, checks, summary.get("gates", {}))
        for line in failure_lines(checks, summary.get("gates", {})):
            sys.stderr.write(line + "\n")
        for name in extra["missing_workers"]:
            sys.stderr.write(f"worker {name} did not finish its journal: its share is missing from the checks\n")
        env.process_exit_code = int(summary.get("exit_code", 0))
        report_path = None
        if cfg.report.enabled and not getattr(env.parsed_options, "chat_no_report", False):
            try:
                from harness.report import build_report

                report_path = build_report(rt.run_dir, charts=cfg.report.charts)
            except Exception as exc:
                log.exception("report failed")
                sys.stderr.write(f"warning: report failed: {exc!r}\n")
        verdict = "PASS" if env.process_exit_code == 0 else f"FAIL (exit {env.process_exit_code})"
        sys.stderr.write(f"results: {rt.run_dir}  {verdict}" + (f"  report: {report_path}" if report_path else "") + "\n")


def install(events: Any) -> None:
    """Register the harness on Locust's events (called once by the locustfile)."""
    events.init_command_line_parser.add_listener(add_arguments)

    def on_init(environment: Any, runner: Any, web_ui: Any = None, **_kw: Any) -> None:
        environment.chat_plugin = HarnessPlugin(environment, runner, web_ui)
        try:
            from harness.faults import FaultPlugin
        except ImportError:  # fault injection not installed
            return
        environment.chat_faults = FaultPlugin(environment, runner)

    events.init.add_listener(on_init)

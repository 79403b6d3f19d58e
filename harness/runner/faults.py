"""Fault injection (``faults:`` in config) and recovery measurement.

Shell: :class:`FaultPlugin` (built by harness/runner/plugin.py in Locust's init event, on every
process).

* Every load-generating process (local, or each worker) runs its own TCP fault proxy
  (harness/targets/faultproxy.py, a child process stopped by pid) when a proxy fault is scheduled (or
  ``faults.proxy: always``), and ``environment.chat.ws_url`` points at it before any user
  starts: on a worker it is started as the master's target URL is bound (users wait for
  that). One proxy per process keeps the proxy off the master and scales with the workers.
* On the master/local process, ``test_start`` schedules every fault of ``faults.schedule``
  (``at_s`` after that moment): ``server_restart`` SIGKILLs the embedded target and starts it
  again on the same port after ``down_s``; ``server_stall`` SIGSTOPs it for ``duration_s``;
  proxy windows (absolute unix times) go to the local proxy, or to every worker
  (message ``chat_fault_windows``; workers answer each window's ``chat_fault_report``);
* journals each fault as one ``fault`` row (INTERNAL, outcome info, code 0, ``detail`` = the
  fault's name, ``data`` = its parameters + what happened) when its window ends, or when the
  test stops first (``data.cut_short``). On a master with workers the rows go to
  ``journal/master.jsonl`` (worker id ``master``);
* ends every fault at ``test_stopping`` (a stalled server is resumed) and stops the proxy
  at ``quitting``.

A restart loses the killed server's session state, so its ledger stops making sense: the
file is moved to ``ledger.before-restart-<k>.jsonl`` and ``ledger.jsonl`` holds the last
incarnation only.

Pure core: :func:`recovery_stats` turns a run's journal rows into reconnect-storm figures.
Times: unix ns in rows, seconds in results and config.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import gevent
from gevent.pool import Group

from harness.config import FaultSpec
from harness.errors import HarnessError, TargetError
from harness.results.journal import Journal

__all__ = ["FaultPlugin", "ProxyProcess", "recovery_stats", "proxied_url", "FAULT_SCENARIO"]

log = logging.getLogger("harness")

#: master -> workers: proxy windows to apply; workers -> master: a window's report.
WINDOWS, REPORT = "chat_fault_windows", "chat_fault_report"

#: ``scenario`` of fault rows (they belong to no scenario).
FAULT_SCENARIO = "faults"
_NS = 1_000_000_000


# ----------------------------------------------------------------------------- recovery (pure)
def _quantile_time(times: list[float], total: int, q: float) -> float | None:
    """Seconds until ``q`` (0..1) of ``total`` sessions were back; None if that never happened."""
    if total <= 0:
        return None
    k = max(1, math.ceil(q * total - 1e-9))
    return times[k - 1] if k <= len(times) else None


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def recovery_stats(rows: Iterable[Mapping], fault_rows: Iterable[Mapping] | None = None, *,
                   grace_s: float = 10.0, baseline_s: float = 10.0) -> dict:
    """Reconnect-storm figures per fault, from journal rows (dicts, RESULTS.md §1).

    A session is *lost* to a fault when its connection dropped (a ``disconnect`` row with
    outcome ``info`` and a session) between the fault's start and ``grace_s`` seconds after
    its end (a loss belongs to the latest fault that started before it). It is *back* when
    the ``reconnect`` row whose ``data.old_conn`` is that connection ended ok, *failed* when
    that row is fail/info. The percentages count back + failed sessions: losses without a
    ``reconnect`` row (recovery off for that device) are ``no_reconnect`` and recoveries the
    harness itself stopped (the user left: detail ``stopped…``) are ``abandoned``.

    ``fault_rows``: the ``fault`` rows (default: those among ``rows``). Returns
    ``{"faults": [...]}``, one dict per fault in start order: ``name``, ``kind``, ``start_ns``,
    ``window_s`` (fault duration), ``lost``, ``back``, ``failed``, ``abandoned``,
    ``no_reconnect``, ``back_s`` ({"50","99","100"}: seconds from the fault's start until that
    share of the lost sessions was back, None = never), ``back_after_end_s`` (the same from
    the fault's end, e.g. the server up again), ``attempts`` ({"mean","max"}),
    ``login_rate_peak_per_s`` (most ok logins in one 1 s bucket from the fault's start to the
    end of the last recovery, back or failed; ``grace_s`` after the fault when there was
    none), ``login_rate_before_per_s`` (mean over the ``baseline_s`` before), ``codes``
    (code -> count of fail/info rows in that span, ``fault``/``disconnect`` rows excluded),
    ``recovery_end_ns``.
    """
    faults_in: list[Mapping] = []
    losses: list[Mapping] = []
    reconnects: dict[Any, Mapping] = {}
    ok_logins: list[int] = []
    failures: list[tuple[int, int]] = []
    for r in rows:
        if not isinstance(r, Mapping):
            continue
        op, outcome, end = r.get("op"), r.get("outcome"), r.get("end")
        if not isinstance(end, int):
            continue
        if op == "fault":
            if fault_rows is None:
                faults_in.append(r)
            continue
        if op == "disconnect":
            if outcome == "info" and r.get("session"):
                losses.append(r)
            continue
        if op == "reconnect":
            d = r.get("data") if isinstance(r.get("data"), Mapping) else {}
            key = d.get("old_conn")
            if key is not None:
                reconnects[key] = r
        if op == "login" and outcome == "ok":
            ok_logins.append(end)
        if outcome in ("fail", "info"):
            code = r.get("code")
            failures.append((end, code if isinstance(code, int) else -1))
    if fault_rows is not None:
        faults_in = [f for f in fault_rows if isinstance(f, Mapping) and isinstance(f.get("start"), int)]
    faults_in.sort(key=lambda f: f["start"])
    ok_logins.sort()
    failures.sort()
    grace = int(grace_s * _NS)
    out: list[dict] = []
    owner: dict[int, list[Mapping]] = {i: [] for i in range(len(faults_in))}
    for loss in losses:
        t = loss["end"]
        best = None
        for i, f in enumerate(faults_in):
            f_end = f.get("end") if isinstance(f.get("end"), int) else f["start"]
            if f["start"] <= t <= f_end + grace:
                best = i
        if best is not None:
            owner[best].append(loss)
    for i, f in enumerate(faults_in):
        start = f["start"]
        f_end = f["end"] if isinstance(f.get("end"), int) else start
        back_t: list[float] = []
        failed = abandoned = none = 0
        attempts: list[int] = []
        last_end = None  # the last recovery (back or failed) to end
        for loss in owner[i]:
            rc = reconnects.get(loss.get("conn"))
            if rc is None:
                none += 1
                continue
            d = rc.get("data") if isinstance(rc.get("data"), Mapping) else {}
            if isinstance(d.get("attempts"), int):
                attempts.append(d["attempts"])
            if str(rc.get("detail") or "").startswith("stopped"):
                abandoned += 1
                continue
            if rc.get("outcome") == "ok":
                back_t.append((rc["end"] - start) / _NS)
            else:
                failed += 1
            last_end = rc["end"] if last_end is None else max(last_end, rc["end"])
        back_t.sort()
        lost = len(owner[i])
        total = len(back_t) + failed
        rec_end = max(last_end if last_end is not None else f_end + grace, f_end)
        # peak ok-login rate in 1 s buckets over [start, rec_end]
        buckets: Counter = Counter()
        for t in ok_logins:
            if start <= t <= rec_end:
                buckets[(t - start) // _NS] += 1
        base_from = start - int(baseline_s * _NS)
        before = sum(1 for t in ok_logins if base_from <= t < start)
        codes = Counter(str(c) for t, c in failures if start <= t <= rec_end)
        down_s = (f_end - start) / _NS
        out.append({
            "name": f.get("detail") or "fault",
            "kind": (f.get("data") or {}).get("kind") if isinstance(f.get("data"), Mapping) else None,
            "start_ns": start,
            "window_s": _r(down_s),
            "lost": lost,
            "back": len(back_t),
            "failed": failed,
            "abandoned": abandoned,
            "no_reconnect": none,
            "back_s": {k: _r(_quantile_time(back_t, total, q)) for k, q in (("50", 0.5), ("99", 0.99), ("100", 1.0))},
            "back_after_end_s": {k: _r(None if v is None else v - down_s) for k, v in
                                 (("50", _quantile_time(back_t, total, 0.5)),
                                  ("99", _quantile_time(back_t, total, 0.99)),
                                  ("100", _quantile_time(back_t, total, 1.0)))},
            "attempts": {"mean": _r(sum(attempts) / len(attempts), 2) if attempts else None,
                         "max": max(attempts) if attempts else None},
            "login_rate_peak_per_s": max(buckets.values()) if buckets else 0,
            "login_rate_before_per_s": _r(before / baseline_s, 2) if baseline_s > 0 else None,
            "codes": dict(sorted(codes.items(), key=lambda kv: -kv[1])),
            "recovery_end_ns": rec_end,
        })
    return {"faults": out}


# ----------------------------------------------------------------------------- the proxy process
class ProxyProcess:
    """``python -m harness.targets.faultproxy`` as a child process (control on stdin, reports on stdout).

    Started with ``start()``, stopped by its own pid with ``stop()`` (SIGTERM, then SIGKILL).
    ``reports`` collects the proxy's ``fault_end`` lines by fault id.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0, log_path: str | Path | None = None,
                 startup_timeout_s: float = 10.0, on_report: Any = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.on_report = on_report
        self.seed = seed
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.reports: dict[str, dict] = {}
        self._reader: Any = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> int:
        """Start the proxy and wait for its ``listening on`` line; returns its port (TargetError on failure)."""
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env.pop("CHAT_SECRET_KEY", None)  # the proxy never needs it
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        host, port = self.upstream
        shown = f"[{host}]" if ":" in host else host
        cmd = [sys.executable, "-m", "harness.targets.faultproxy", "--upstream", f"{shown}:{port}",
               "--seed", str(self.seed), "--control"]
        err = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         cwd=root, env=env, start_new_session=True)
        finally:
            if err is not subprocess.DEVNULL:
                err.close()
        line = b""
        try:
            with gevent.Timeout(self.startup_timeout_s):
                line = self.proc.stdout.readline()  # type: ignore[union-attr]
        except gevent.Timeout:
            pass
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith("listening on tcp://"):
            self.stop()
            raise TargetError(f"the fault proxy did not start (upstream {host}:{port})"
                              + (f"; see {self.log_path}" if self.log_path else ""))
        self.port = int(text.rsplit(":", 1)[1])
        self._reader = gevent.spawn(self._read_reports)
        return self.port

    def _read_reports(self) -> None:
        out = self.proc.stdout if self.proc else None
        if out is None:
            return
        for raw in out:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("event") == "fault_end":
                self.reports[str(msg.get("id"))] = msg
                if self.on_report is not None:
                    try:
                        self.on_report(msg)
                    except Exception:  # pragma: no cover - a relay problem must not stop the reader
                        log.exception("fault proxy report relay failed")

    def send(self, obj: Mapping) -> bool:
        """One control command; False when the proxy is gone."""
        proc = self.proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            return False
        try:
            proc.stdin.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop our proxy by pid (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            except OSError:
                pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        g, self._reader = self._reader, None
        if g is not None:
            g.kill(block=False)


def proxied_url(ws_url: str, port: int, host: str = "127.0.0.1") -> str:
    """``ws_url`` with its host:port replaced by the proxy's (path and query kept)."""
    u = urlsplit(ws_url)
    return urlunsplit((u.scheme, f"{host}:{port}", u.path, u.query, u.fragment))


# ----------------------------------------------------------------------------- the plugin
class FaultPlugin:
    """Schedules and journals the faults of ``faults.schedule`` (see the module docstring)."""

    def __init__(self, environment: Any, runner: Any) -> None:
        from locust.runners import MasterRunner, WorkerRunner

        self.env = environment
        self.runner = runner
        self.role = "master" if isinstance(runner, MasterRunner) else "worker" if isinstance(runner, WorkerRunner) \
            else "local"
        self.rt = getattr(environment, "chat", None)
        self.cfg = self.rt.cfg if self.rt is not None else None
        self.specs: tuple[FaultSpec, ...] = self.cfg.faults.specs() if self.cfg is not None else ()
        self.proxy: ProxyProcess | None = None
        self.group = Group()
        self.restarts = 0
        self.emitted = 0
        self.reports: dict[str, list[dict]] = {}   # fault id -> proxy reports (one per proxy)
        self._windows: list[dict] = []            # worker: windows waiting for the proxy
        self._journal: Journal | None = None
        if self.rt is None:
            return
        ev = environment.events
        use_proxy = self.cfg.faults.use_proxy
        if self.role == "worker":
            # the master's config (adopted when its target arrives) decides whether to proxy
            runner.register_message(WINDOWS, self.on_windows)
            self._wrap_bind_target()
            ev.quitting.add_listener(self.on_quitting)
            return
        if self.role == "master":
            runner.register_message(REPORT, self.on_report)
        elif use_proxy:
            try:
                self._start_proxy()
            except HarnessError as err:
                target = getattr(self.rt, "target", None)
                if target is not None:
                    target.stop()
                sys.stderr.write(f"error: {err}\n")
                sys.stderr.flush()
                sys.exit(err.exit_code)
        ev.test_start.add_listener(self.on_test_start)
        ev.test_stopping.add_listener(self.on_test_stopping)
        ev.test_stop.add_listener(self.on_test_stop)
        ev.quitting.add_listener(self.on_quitting)

    # ------------------------------------------------------------------ proxy
    def _start_proxy(self) -> None:
        """Start this process's proxy in front of ``rt.ws_url`` and point ``rt.ws_url`` at it."""
        rt = self.rt
        u = urlsplit(rt.ws_url)
        port = u.port or (443 if u.scheme == "wss" else 80)
        log_path = Path(rt.run_dir) / f"faultproxy-{rt.worker}.log" if rt.run_dir else None
        relay = self._relay_report if self.role == "worker" else self.on_report
        self.proxy = ProxyProcess(u.hostname or "127.0.0.1", port, seed=self.cfg.faults.seed, log_path=log_path,
                                  on_report=relay)
        pport = self.proxy.start()
        import atexit

        atexit.register(self.proxy.stop)
        rt.direct_ws_url = rt.ws_url  # type: ignore[attr-defined]
        rt.ws_url = proxied_url(rt.ws_url, pport)
        log.info("%s connects through the fault proxy %s -> %s", rt.worker, rt.ws_url, rt.direct_ws_url)
        for w in self._windows:
            self.proxy.send(w)
        self._windows.clear()

    def _wrap_bind_target(self) -> None:
        """Worker: start the proxy right after the master's target is bound (before ``ready``)."""
        rt = self.rt
        bind = rt.bind_target

        def bind_target(ws_url: str, rest_base: str, sdk_app_id: int, secret_key: str) -> None:
            bind(ws_url, rest_base, sdk_app_id, secret_key)
            self.cfg = rt.cfg
            if self.proxy is None and rt.cfg.faults.use_proxy:
                try:
                    self._start_proxy()
                except HarnessError as err:
                    log.error("%s; %s runs without fault injection", err, rt.worker)

        rt.bind_target = bind_target  # type: ignore[method-assign]

    def on_windows(self, environment: Any, msg: Any, **_kw: Any) -> None:
        """Worker: proxy windows from the master (applied now, or once the proxy runs)."""
        for w in (msg.data or {}).get("windows") or []:
            if isinstance(w, dict):
                if self.proxy is not None:
                    self.proxy.send(w)
                else:
                    self._windows.append(w)

    def _relay_report(self, report: dict) -> None:
        try:
            self.runner.send_message(REPORT, report)
        except Exception:  # pragma: no cover - master gone
            pass

    def on_report(self, *args: Any, **kw: Any) -> None:
        """A proxy's ``fault_end`` report (local: a dict; master: a Locust message)."""
        msg = kw.get("msg", args[-1] if args else None)
        data = getattr(msg, "data", msg)
        if isinstance(data, dict) and data.get("id") is not None:
            self.reports.setdefault(str(data["id"]), []).append(data)

    def _send_windows(self, windows: list[dict]) -> None:
        if self.role == "master":
            self.runner.send_message(WINDOWS, {"windows": windows})
        elif self.proxy is not None:
            for w in windows:
                self.proxy.send(w)

    # ------------------------------------------------------------------ journaling
    def journal(self) -> Journal:
        """The local journal, or (master) ``journal/master.jsonl`` created on first use."""
        if self.rt.journal is not None:
            return self.rt.journal
        if self._journal is not None and self._journal.path.parent.parent != Path(self.rt.run_dir):
            self._journal.close()  # the web UI's next test: its own folder
            self._journal = None
        if self._journal is None:
            self._journal = Journal(Path(self.rt.run_dir) / "journal" / "master.jsonl", "master",
                                    flush_interval=self.cfg.run.journal_flush_s).open()
        return self._journal

    def emit(self, spec: FaultSpec, start_ns: int, end_ns: int, data: Mapping[str, Any]) -> None:
        """One ``fault`` row = one Locust request event (INTERNAL) + one journal row."""
        end_ns = max(end_ns, start_ns)
        self.journal().emit(
            self.env.events, request_type="INTERNAL", response_time_ms=(end_ns - start_ns) / 1e6,
            context={"scenario": FAULT_SCENARIO, "code": 0, "fault": spec.name},
            scenario=FAULT_SCENARIO, op="fault", outcome="info", code=0, start=start_ns, end=end_ns,
            detail=spec.name, data={"kind": spec.kind, **spec.params(), **data})
        self.emitted += 1

    # ------------------------------------------------------------------ events
    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        if not self.specs:
            return
        self._end_faults()
        self.reports.clear()
        t0 = time.time()
        windows = [{"cmd": "fault", "id": self._fault_id(i, spec), "kind": spec.kind, "start": t0 + spec.at_s,
                    "end": t0 + spec.at_s + spec.duration_s, "fraction": spec.fraction,
                    "latency_ms": spec.latency_ms, "jitter_ms": spec.jitter_ms, "after_bytes": spec.after_bytes}
                   for i, spec in enumerate(self.specs) if spec.proxy]
        if windows:
            self._send_windows(windows)  # before the master sends the spawn messages
        for i, spec in enumerate(self.specs):
            self.group.spawn(self._run, i, spec, t0)

    @staticmethod
    def _fault_id(i: int, spec: FaultSpec) -> str:
        return f"{i}-{spec.name}"

    def on_test_stopping(self, environment: Any, **_kw: Any) -> None:
        self._end_faults()

    def on_test_stop(self, environment: Any, **_kw: Any) -> None:
        self._end_faults()
        if self._journal is not None:
            self._journal.flush()

    def on_quitting(self, environment: Any, **_kw: Any) -> None:
        if self.role != "worker":
            self._end_faults()
        if self._journal is not None:
            self._journal.close()
        if self.proxy is not None:
            self.proxy.stop()

    def _end_faults(self) -> None:
        """Cut every fault in progress short (each journals its row), at most 10 s."""
        if len(self.group):
            self.group.kill(block=True, timeout=10)

    # ------------------------------------------------------------------ one fault
    def _run(self, i: int, spec: FaultSpec, t0: float) -> None:
        at = t0 + spec.at_s
        if spec.proxy:
            self._run_proxy(i, spec, at)
            return
        gevent.sleep(max(0.0, at - time.time()))
        target = getattr(self.rt, "target", None)
        if target is None:
            log.warning("fault %s skipped: no embedded target", spec.name)
            return
        if spec.kind == "server_restart":
            self._restart(spec, target)
        elif spec.kind == "server_stall":
            self._stall(spec, target)

    def _run_proxy(self, i: int, spec: FaultSpec, at: float) -> None:
        """Wait out a proxy window (the proxies act on their own), then journal it with the
        connections the proxies saw and acted on (``affected``, ``seen``, ``proxies``)."""
        fid = self._fault_id(i, spec)
        start_ns, end_ns = int(at * _NS), int((at + spec.duration_s) * _NS)
        data: dict[str, Any] = {}
        if self.role == "local" and self.proxy is None:
            data["error"] = "the fault proxy is not running"
        try:
            gevent.sleep(max(0.0, at + spec.duration_s - time.time()))
            expected = 1 if self.role == "local" else max(1, int(getattr(self.rt, "processes", 1) or 1))
            deadline = time.time() + 1.0
            while len(self.reports.get(fid, ())) < expected and time.time() < deadline:
                gevent.sleep(0.02)
        except gevent.GreenletExit:
            now = time.time_ns()
            if now < end_ns:
                end_ns = max(start_ns, now)
                data["cut_short"] = True
                self._send_windows([{"cmd": "clear"}])
            raise
        finally:
            if time.time_ns() >= start_ns:
                reps = self.reports.get(fid, [])
                data.update({"affected": sum(int(r.get("affected") or 0) for r in reps),
                             "seen": sum(int(r.get("seen") or 0) for r in reps), "proxies": len(reps)})
                self.emit(spec, start_ns, end_ns, data)

    def _restart(self, spec: FaultSpec, target: Any) -> None:
        port, pid_before = target.port, target.pid
        start_ns = time.time_ns()
        target.kill()
        self.restarts += 1
        data: dict[str, Any] = {"port": port, "pid_before": pid_before}
        ledger = self._set_ledger_aside(target)
        if ledger:
            data["ledger_before"] = ledger
        try:
            gevent.sleep(spec.down_s)
            try:
                target.start(port)
                data["pid_after"] = target.pid
            except TargetError as exc:
                data["error"] = str(exc)
                log.error("server_restart: %s", exc)
        except gevent.GreenletExit:
            data["cut_short"] = True
            raise
        finally:
            self.emit(spec, start_ns, time.time_ns(), data)

    def _set_ledger_aside(self, target: Any) -> str | None:
        """Move the killed incarnation's ledger to ``ledger.before-restart-<k>.jsonl``."""
        run_dir = getattr(target, "run_dir", None)
        if not getattr(target, "ledger", False) or run_dir is None:
            return None
        src = Path(run_dir) / "ledger.jsonl"
        if not src.exists():
            return None
        dst = src.with_name(f"ledger.before-restart-{self.restarts}.jsonl")
        try:
            os.replace(src, dst)
        except OSError as exc:
            log.warning("could not move the ledger aside: %s", exc)
            return None
        return dst.name

    def _stall(self, spec: FaultSpec, target: Any) -> None:
        start_ns = time.time_ns()
        target.pause()
        data: dict[str, Any] = {"pid": target.pid}
        try:
            gevent.sleep(spec.duration_s)
        except gevent.GreenletExit:
            data["cut_short"] = True
            raise
        finally:
            target.resume()
            self.emit(spec, start_ns, time.time_ns(), data)

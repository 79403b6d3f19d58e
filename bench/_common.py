"""Shared helpers of the benchmarks in bench/ (never part of the test run).

Everything here talks to loopback only, starts processes in their own session and stops
exactly the processes it started, by pid (SIGTERM, then SIGKILL after a grace period).

Units: times in unix ns unless a name ends in ``_s`` (seconds); CPU in CPU-seconds.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SDKAPPID = 1400000000
LOOPBACK = "127.0.0.1"


# ----------------------------------------------------------------------------- CPUs
def cpu_plan() -> tuple[int | None, int | None]:
    """(generator CPU, server CPU): CPU 0 and CPU 1 when both are usable, else (None, None)."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(usable) < 2:
        return None, None
    return usable[0], usable[1]


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and everything it starts) to ``cpu``."""
    if cpu is None:
        return None

    def _pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return _pin


# ----------------------------------------------------------------------------- processes
def spawn(cmd: Sequence[str], *, log_path: Path, cpu: int | None, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` pinned to ``cpu`` in its own session; stdout+stderr go to ``log_path``."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(cwd) if cwd else None, preexec_fn=pin_to(cpu),
                                start_new_session=True)
    finally:
        log.close()  # the child holds its own copy


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of ``pid`` (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_tree(proc: subprocess.Popen | None, grace_s: float = 10.0) -> int | None:
    """Stop ``proc`` and whatever it started: SIGTERM by pid, SIGKILL by pid after ``grace_s``.

    Returns the exit code of ``proc`` (None when it was None). Idempotent.
    """
    if proc is None:
        return None
    if proc.poll() is not None:  # exited and reaped: its pid may belong to someone else now
        return proc.returncode
    kids = descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            kids = descendants(proc.pid) or kids
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    for k in kids:  # children that outlived their parent (they were started by us)
        try:
            if k.is_running() and k.status() != psutil.STATUS_ZOMBIE:
                k.send_signal(signal.SIGTERM)
                try:
                    k.wait(2.0)
                except psutil.TimeoutExpired:
                    k.kill()
        except psutil.Error:
            pass
    return proc.returncode


def tree_cpu_s(pid: int) -> float:
    """CPU-seconds (user + system) used so far by ``pid`` and its live descendants."""
    return sum(tree_cpu_split_s(pid))


def tree_cpu_split_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU-seconds used so far by ``pid`` and its live descendants."""
    user = system = 0.0
    try:
        procs = [psutil.Process(pid)]
    except psutil.Error:
        return 0.0, 0.0
    procs += descendants(pid)
    for p in procs:
        try:
            t = p.cpu_times()
            user += t.user
            system += t.system
        except psutil.Error:
            pass
    return user, system


def wait_exit(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """Wait up to ``timeout_s`` for ``proc``; its exit code, or None if it is still running."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


# ----------------------------------------------------------------------------- the reference server
class RefServer:
    """``python -m harness.server`` on a free loopback port, pinned to one CPU; stopped by pid.

    The secret key goes through the environment (CHAT_SECRET_KEY), not argv, as in harness/targets/embedded.py.
    """

    def __init__(self, workdir: Path, *, secret_key: str, policy: str = "multi_platform",
                 cpu: int | None = None, startup_timeout_s: float = 20.0, ledger: Path | None = None) -> None:
        self.workdir = workdir
        self.ledger = ledger  # the session ledger (JSONL, PROTOCOL.md section 7) when set
        self.secret_key = secret_key
        self.policy = policy
        self.cpu = cpu
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = workdir / "server.log"

    @property
    def ws_host(self) -> str:
        """``ws://127.0.0.1:PORT`` (the harness adds the /ws path)."""
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "RefServer":
        env = dict(os.environ, CHAT_SECRET_KEY=self.secret_key, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "harness.targets.server", "--host", LOOPBACK, "--port", "0",
               "--sdkappid", str(SDKAPPID), "--policy", self.policy]
        if self.ledger is not None:
            cmd += ["--ledger", str(self.ledger)]
        self.proc = spawn(cmd, log_path=self.log_path, cpu=self.cpu, env=env, cwd=REPO)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the reference server exited at start (code {self.proc.returncode}); "
                                   f"see {self.log_path}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("listening on http://"):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"the reference server did not start within {self.startup_timeout_s:g} s")

    def cpu_s(self) -> float:
        """CPU-seconds the server has used so far."""
        return tree_cpu_s(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        stop_tree(self.proc)
        self.proc = None

    def __enter__(self) -> "RefServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def ledger_logins(path: Path, prefix: str) -> list[int]:
    """Times (unix ns) of the ledger's ``login`` rows (sessions the server opened) for user IDs
    starting with ``prefix``."""
    out: list[int] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError:
        return out
    with fh:
        for line in fh:
            if '"event":"login"' not in line or prefix not in line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("event") == "login" and str(row.get("userID", "")).startswith(prefix):
                out.append(int(row["ts"]))
    return out


def new_secret() -> str:
    """A fresh per-bench HMAC key (never printed)."""
    return secrets.token_hex(16)


# ----------------------------------------------------------------------------- the harness under test
def mass_login_args(locustfile: Path, server: RefServer, users: int, run_s: int, results_dir: Path) -> list[str]:
    """Arguments after ``python`` for mass_login as connect+login+close flows (hold_s=0, no
    logout), ``users`` users spawned within 1 s, ``run_s`` s, no report, results in ``results_dir``."""
    return ["-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(users),
            "-t", f"{run_s}s", "--scenario", "mass_login", "--host", server.ws_host,
            "--set", "scenarios.mass_login.hold_s=0", "--set", "scenarios.mass_login.logout=false",
            "--set", f"run.results_dir={results_dir}", "--set", "report.enabled=false",
            "--only-summary", "--loglevel", "WARNING"]


# ----------------------------------------------------------------------------- measuring
@dataclass
class Window:
    """One measuring window: bench-clock bounds (unix ns) and CPU-seconds used inside it."""

    a_ns: int
    b_ns: int
    gen_cpu_s: float
    server_cpu_s: float
    gen_sys_s: float = 0.0      # the kernel's part of gen_cpu_s

    @property
    def seconds(self) -> float:
        return (self.b_ns - self.a_ns) / 1e9

    @property
    def gen_util(self) -> float:
        """Generator CPU use in the window, in cores (1.0 = one core fully busy)."""
        return self.gen_cpu_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_util(self) -> float:
        return self.server_cpu_s / self.seconds if self.seconds > 0 else 0.0


def measure_window(proc: subprocess.Popen, server: RefServer, *, warmup_s: float, measure_s: float,
                   launched: float) -> Window | None:
    """Sleep until ``launched + warmup_s`` (monotonic s), then sample CPU for ``measure_s``.

    None when the generator exited before the window closed.
    """
    delay = launched + warmup_s - time.monotonic()
    if delay > 0 and wait_exit(proc, delay) is not None:
        return None
    if proc.poll() is not None:
        return None
    a, (gua, gsa), sa = time.time_ns(), tree_cpu_split_s(proc.pid), server.cpu_s()
    if wait_exit(proc, measure_s) is not None:
        return None
    b, (gub, gsb), sb = time.time_ns(), tree_cpu_split_s(proc.pid), server.cpu_s()
    return Window(a, b, (gub + gsb) - (gua + gsa), sb - sa, gsb - gsa)


@dataclass
class Result:
    """One contender's numbers for one run."""

    name: str
    ok: int = 0                 # successful logins in the window
    failed: int = 0             # failed logins in the window (or in the run, when only totals exist)
    seconds: float = 0.0        # window length, s
    gen_util: float = 0.0       # generator cores used in the window
    gen_sys: float = 0.0        # share of the generator's CPU spent in the kernel
    server_util: float = 0.0    # server cores used in the window
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Successful connect+login+close flows per second (wall)."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_core(self) -> float:
        """Flows per generator CPU-second (= flows/s of one fully busy core)."""
        return self.rate / self.gen_util if self.gen_util > 0 else 0.0


def count_between(times_ns: Iterable[int], a_ns: int, b_ns: int) -> int:
    """How many of ``times_ns`` fall in ``[a_ns, b_ns)``."""
    return sum(1 for t in times_ns if a_ns <= t < b_ns)


def journal_logins(run_root: Path) -> tuple[list[int], list[int]]:
    """End times (unix ns) of ok and of failed ``login`` rows in every journal under ``run_root``."""
    ok: list[int] = []
    bad: list[int] = []
    paths = {p.resolve() for p in run_root.glob("*/journal/*.jsonl")}  # results/latest is a symlink
    for path in sorted(paths):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if '"op":"login"' not in line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get("op") != "login":
                    continue
                (ok if row.get("outcome") == "ok" and row.get("code") == 0 else bad).append(int(row["end"]))
    return ok, bad


# ----------------------------------------------------------------------------- output
def log_tail(path: Path, lines: int = 6) -> str:
    """The last ``lines`` lines of a log file, indented, for a one-glance failure note."""
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path.name}:\n" + "\n".join("      " + t for t in text)


def fmt_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for k, r in enumerate(cells):
        out.append("  ".join(c.rjust(w) if k and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    if not v:
        return 0.0
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def profile_summary(stats_path: Path, *, top: int = 15) -> str:
    """Where the CPU went in a cProfile dump: own time grouped by package, then the top functions."""
    import pstats

    st = pstats.Stats(str(stats_path))
    total = 0.0
    by_pkg: dict[str, float] = {}
    funcs = []
    for (filename, line, name), (_cc, _nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        total += tt
        pkg = _package_of(filename)
        by_pkg[pkg] = by_pkg.get(pkg, 0.0) + tt
        funcs.append((tt, ct, f"{_short_path(filename)}:{line}({name})"))
    lines = [f"profile: {total:.2f} CPU-s of own time (cProfile; gevent hub idle shows as epoll/poll)"]
    lines.append(fmt_table(["package", "own s", "share"],
                           [(p, f"{t:.2f}", f"{t / total:.0%}" if total else "-")
                            for p, t in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:top]]))
    funcs.sort(reverse=True)
    lines.append(fmt_table(["function", "own s", "cum s"],
                           [(f, f"{tt:.2f}", f"{ct:.2f}") for tt, ct, f in funcs[:top]]))
    return "\n\n".join(lines)


#: Phases of one mass_login flow (name, py-spy frame prefix); shares are inclusive, so they overlap.
FLOW_PHASES: tuple[tuple[str, str], ...] = (
    ("whole flow (MassLogin.flow)", "MassLogin.flow "),
    ("  connect: TCP + WebSocket handshake", "ChatClient.connect "),
    ("    gevent create_connection", "create_connection (gevent/socket.py"),
    ("      getaddrinfo via gevent's thread pool", "getaddrinfo (gevent/_socketcommon.py"),
    ("    handshake (wsproto/h11)", "ChatClient._handshake "),
    ("  UserSig signing (local source)", "gen_usersig "),
    ("  login request/response", "ChatClient.login "),
    ("  close (WS close handshake + teardown)", "ChatClient.close "),
    ("  Device set-up (events, rng, client)", "Device.__init__ "),
    ("  request event + journal row (emit)", "ChatUser.emit "),
    ("reader greenlets (ChatClient._read_loop)", "ChatClient._read_loop "),
    ("journal flush (background)", "Journal.flush "),
    ("Locust stats/CSV writer", "StatsCSVFileWriter."),
    ("gevent hub (event loop, timers)", "Hub.run "),
)


def pyspy_summary(raw_path: Path, *, top: int = 15,
                  phases: Sequence[tuple[str, str]] = FLOW_PHASES, substring: bool = False) -> str:
    """Where the CPU went in a ``py-spy record -f raw`` dump: flow phases (inclusive share of
    busy samples) and the top functions by own samples. Thread-pool workers waiting for work
    are idle, not CPU, and are dropped."""
    busy = 0
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n_text = line.rpartition(" ")
        try:
            n = int(n_text)
        except ValueError:
            continue
        frames = stack.split(";")
        if frames and frames[-1].startswith("acquire_with_timeout ") and "_WorkerGreenlet.run" in stack:
            continue  # an idle thread-pool worker
        busy += n
        for name, prefix in phases:
            if any((prefix in f) if substring else f.startswith(prefix) for f in frames):
                incl[name] = incl.get(name, 0) + n
        leaf = frames[-1].rsplit(":", 1)[0] + ")" if frames and ":" in frames[-1] else (frames[-1] if frames else "")
        leaf = leaf.strip() or "(native code, no Python frame)"
        own[leaf] = own.get(leaf, 0) + n
    if not busy:
        return "profile: py-spy recorded no busy samples"
    lines = [f"profile (py-spy, {busy} busy samples; shares of the generator's busy time, inclusive):",
             fmt_table(["phase", "share"], [(name, f"{incl.get(name, 0) / busy:.0%}") for name, _ in phases])]
    lines.append(fmt_table(["function (own samples)", "share"],
                           [(f, f"{c / busy:.1%}") for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:top]]))
    return "\n\n".join(lines)


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _package_of(filename: str) -> str:
    """A coarse owner of a profiled function: a package, a harness module, or ``stdlib:<module>``."""
    if filename.startswith(("~", "<")):
        return "builtins/C"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/")[0].removesuffix(".py")
    if filename.startswith(str(REPO) + "/"):
        parts = Path(filename).relative_to(REPO).parts
        return "/".join(parts[:2]) if parts[0] in ("harness", "scenarios") and len(parts) > 1 else parts[0]
    if "lib/python3" in filename:
        parts = filename.split("lib/python3", 1)[1].split("/")
        return "stdlib:" + (parts[1].removesuffix(".py") if len(parts) > 1 else "?")
    return filename

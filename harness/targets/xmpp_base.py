"""What ejabberd and Prosody targets share: ports, the service user, the child process, readiness, stop.

A target writes a loopback-only config, starts the server in the foreground as a child process
this harness owns (its own session: ``start_new_session``), dropping to the service user with
``setpriv`` (no PAM, so the file limit stays as high as ours), waits until c2s answers a stream
header, and stops what is its own by pid: SIGTERM to the server, SIGKILL after the timeout to
every process left in that session and to any process carrying the target's unique
``HARNESS_TARGET_ID`` in its environment (a daemon the server forked that called setsid(), as
``epmd -daemon`` does). Nothing else is ever signalled. If the harness dies without ``stop()``
(SIGKILL, OOM, its process group killed), a watchdog process of its own (:mod:`harness.targets.watchdog`)
does the same. Output goes to ``<run_dir>/<kind>.log``.

Where the files live: ``<run_dir>/<kind>/`` when the service user can write there; otherwise
(pytest's ``/tmp/pytest-of-root`` is mode 0700) the server runs in a private staging folder under
the system temp dir, and ``stop()`` copies its config and logs back into ``<run_dir>/<kind>/`` and
removes the staging folder (the database spool is not kept).
"""
from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import ConfigError, TargetError
from harness.util import is_loopback

XMPP_POLICIES: tuple[str, ...] = ("single_platform", "max_sessions", "unlimited")
AUTH_KINDS: tuple[str, ...] = ("password", "jwt")
TRANSPORTS: tuple[str, ...] = ("tcp", "websocket", "bosh")
PASSWORD_FORMATS: tuple[str, ...] = ("plain", "scram")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
SETPRIV = "/usr/bin/setpriv"
MARKER_ENV = "HARNESS_TARGET_ID"   # every process the server spawns inherits it, even after setsid()
NS_STREAM = "http://etherx.jabber.org/streams"


class XmppServerTarget:
    """Base class; subclasses set the class attributes and write their config."""

    kind: ClassVar[str] = ""
    package: ClassVar[str] = ""            # Debian package that provides the binary
    default_binary: ClassVar[str] = ""
    service_user: ClassVar[str] = ""
    supported_policies: ClassVar[tuple[str, ...]] = XMPP_POLICIES
    supported_auth: ClassVar[tuple[str, ...]] = AUTH_KINDS
    default_policy: ClassVar[str] = "unlimited"
    default_max_sessions: ClassVar[int | None] = None

    def __init__(self, run_dir: str | Path, *, domain: str = "localhost", host: str = "127.0.0.1",
                 policy: str | None = None, max_sessions: int | None = None, auth: str = "password",
                 jwt_key: bytes | None = None, jwt_field: str = "jid", tls: bool = False,
                 backlog: int = 4096, log_level: str = "warning",
                 transports: Iterable[str] = ("tcp", "websocket"), password_format: str = "plain",
                 c2s_port: int = 0, http_port: int = 0, binary: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.domain = domain
        self.host = host
        if not is_loopback(host):
            raise ConfigError("target.host", f"an XMPP server target listens on loopback only, not {host!r}.")
        self.policy, self.max_sessions = self.resolve_policy(policy, max_sessions)
        if auth not in AUTH_KINDS:
            raise ConfigError("target.auth", f"auth must be one of {', '.join(AUTH_KINDS)}, not {auth!r}.")
        self.check_auth(auth)
        self.auth = auth
        if auth == "jwt" and not jwt_key:
            raise ConfigError("target.jwt_key", "auth jwt needs a jwt_key (the HS256 secret, bytes).")
        self.jwt_key = jwt_key
        self.jwt_field = jwt_field
        self.tls = bool(tls)
        if not isinstance(backlog, int) or backlog < 1:
            raise ConfigError("target.backlog", f"backlog must be a positive integer, not {backlog!r}.")
        self.backlog = backlog
        if log_level not in LOG_LEVELS:
            raise ConfigError("target.log_level", f"log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}.")
        self.log_level = log_level
        self.transports = tuple(dict.fromkeys(transports))
        bad = [t for t in self.transports if t not in TRANSPORTS]
        if bad:
            raise ConfigError("target.transports", f"unknown transport {bad[0]!r}; expected some of {', '.join(TRANSPORTS)}.")
        if password_format not in PASSWORD_FORMATS:
            raise ConfigError("target.password_format",
                              f"password_format must be one of {', '.join(PASSWORD_FORMATS)}, not {password_format!r}.")
        self.password_format = password_format
        self.c2s_port = int(c2s_port)
        self.http_port = int(http_port)
        self.binary = Path(binary) if binary is not None else Path(self.default_binary)
        self.proc: subprocess.Popen | None = None
        self._watch: Any = None  # harness.targets.watchdog.Watch of the running server
        self.server_dir = self.run_dir / self.kind       # the record: config (+ logs after stop)
        self.work_dir = self.server_dir                  # where the server runs (maybe staged)
        self._staged = False
        self._log: Any = None
        self._atexit = False
        self.marker = f"{self.kind}-{uuid.uuid4().hex}"   # in the child's environment: finds escapees

    # ------------------------------------------------------------------ policy and auth
    @classmethod
    def resolve_policy(cls, policy: str | None, max_sessions: int | None) -> tuple[str, int | None]:
        """(policy, max_sessions) after defaults; ConfigError for unknown or unsupported ones."""
        if policy is None:
            policy = cls.default_policy
            if max_sessions is None:
                max_sessions = cls.default_max_sessions
        if policy not in XMPP_POLICIES:
            raise ConfigError("target.policy", f"policy must be one of {', '.join(XMPP_POLICIES)}, not {policy!r}.")
        cls.check_policy(policy)
        if policy == "max_sessions":
            if not isinstance(max_sessions, int) or isinstance(max_sessions, bool) or max_sessions < 1:
                raise ConfigError("target.max_sessions", f"policy max_sessions needs max_sessions >= 1, not {max_sessions!r}.")
            return policy, max_sessions
        if max_sessions is not None:
            raise ConfigError("target.max_sessions", f"max_sessions only applies to policy max_sessions, not {policy}.")
        return policy, None

    @classmethod
    def check_policy(cls, policy: str) -> None:
        """Raise ConfigError when this server cannot enforce ``policy``."""
        if policy not in cls.supported_policies:
            raise ConfigError("target.policy", f"{cls.kind} cannot enforce {policy}.")

    @classmethod
    def check_auth(cls, auth: str) -> None:
        if auth not in cls.supported_auth:
            raise ConfigError("target.auth", f"{cls.kind} cannot use auth {auth}.")

    # ------------------------------------------------------------------ addresses
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def ws_path(self) -> str:
        raise NotImplementedError

    @property
    def ws_url(self) -> str | None:
        return f"ws://{self.host}:{self.http_port}{self.ws_path}" if "websocket" in self.transports else None

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.kind}.log"

    # ------------------------------------------------------------------ checks before start
    def available(self) -> tuple[bool, str]:
        """(True, version) when this target can start here, else (False, one sentence what to install or fix)."""
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            where = "" if str(self.binary) == self.default_binary else f" (no executable {self.binary})"
            return False, f"{self.kind} is not installed{where}: apt-get install {self.package}"
        try:
            pwd.getpwnam(self.service_user)
        except KeyError:
            return False, f"{self.kind}'s service user {self.service_user!r} does not exist: apt-get install {self.package}"
        if os.geteuid() == 0:
            if not os.access(SETPRIV, os.X_OK):
                return False, f"{SETPRIV} is missing (needed to drop to user {self.service_user}): apt-get install util-linux"
        elif pwd.getpwuid(os.geteuid()).pw_name != self.service_user and self.kind == "ejabberd":
            return False, f"{self.kind} must be started by root or by user {self.service_user}"
        return True, self.version()

    def require_available(self) -> None:
        ok, message = self.available()
        if not ok:
            raise TargetError(message)

    def version(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ config (subclasses)
    def config_text(self) -> str:
        """The server config for the current ports and folders (pure: no files, no processes)."""
        raise NotImplementedError

    def _write_files(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.work_dir), "LANG": "C.UTF-8",
                MARKER_ENV: self.marker}

    def _extra_ports(self) -> int:
        """How many more free ports the server needs (ejabberd: Erlang distribution)."""
        return 0

    def _set_extra_ports(self, ports: list[int]) -> None:
        pass

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> XmppServerTarget:
        """Write the config, start the server, wait until c2s answers a stream header (``timeout`` s)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.proc is not None:   # it exited on its own: collect it (and its staging folder) first
            self.stop()
        self.require_available()
        self._prepare_dirs()
        need = [p for p in (self.c2s_port, self.http_port) if p == 0]
        free = free_ports(self.host, len(need) + self._extra_ports())
        if self.c2s_port == 0:
            self.c2s_port = free.pop(0)
        if self.http_port == 0:
            self.http_port = free.pop(0)
        self._set_extra_ports(free)
        self._write_files()
        self._chown_work_dir()
        if self._staged:
            self._copy_record()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- held for the child's lifetime, closed in stop()
        offset = self.log_path.stat().st_size
        cmd = self._command()
        if os.geteuid() == 0:
            cmd = [SETPRIV, f"--reuid={self.service_user}", f"--regid={self.service_user}", "--init-groups"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self._env(), cwd=str(self.work_dir), start_new_session=True)
        from harness.targets.watchdog import Watch

        self._watch = Watch(self.proc.pid, self.marker)  # ends the server if we die without stop()
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise TargetError(f"{self.kind} exited during start (code {code}); see {self.log_path}: "
                                  f"{_tail(self.log_path, offset)}")
            probe_s = min(2.0, max(0.2, deadline - time.monotonic()))
            if stream_answers(self.host, self.c2s_port, self.domain, timeout=probe_s) and self._ready_extra(deadline):
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise TargetError(f"{self.kind} did not answer a c2s stream header on {self.host}:{self.c2s_port} "
                                  f"within {timeout:g} s; see {self.log_path}: {_tail(self.log_path, offset)}")
            time.sleep(0.1)

    def _ready_extra(self, deadline: float) -> bool:
        """Further readiness (HTTP listener) once c2s answers."""
        return port_open(self.host, self.http_port)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the server, SIGKILL everything left in its session after ``timeout`` s. Idempotent.

        The exit code (None when it was not running). A staged work folder is removed here, with its
        database: a later ``start()`` then begins with no accounts (unstaged, they persist).
        """
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            sid = proc.pid

            def owned() -> list[int]:
                return owned_pids(sid, self.marker)

            if proc.poll() is None:
                for pid in self._term_targets(proc.pid):
                    _signal(pid, signal.SIGTERM)
                try:
                    code = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # whatever is still ours (the server's helpers, a daemon it forked, a stuck VM): SIGKILL by pid
            grace = time.monotonic() + (2.0 if proc.poll() is not None else 0.0)
            while owned() and time.monotonic() < grace:
                time.sleep(0.05)
            for _ in range(3):
                left = owned()
                if not left and proc.poll() is not None:
                    break
                for pid in left:
                    _signal(pid, signal.SIGKILL)
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                end = time.monotonic() + 2.0
                while owned() and time.monotonic() < end:
                    time.sleep(0.05)
            code = proc.returncode
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.done()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._staged and self.work_dir.exists():
            self._copy_record()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._staged = False
            self.work_dir = self.server_dir
        return code

    def _term_targets(self, child_pid: int) -> list[int]:
        """Whom SIGTERM goes to first (default: our child, the server itself)."""
        return [child_pid]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """Every live process of this server: its session (the child and what it spawned) and any
        process carrying our marker in its environment (a daemon that left the session)."""
        return owned_pids(self.proc.pid, self.marker) if self.proc is not None else []

    # ------------------------------------------------------------------ accounts and admin views
    def create_accounts(self, users: list[str], password_for: Callable[[str], str], *,
                        exist_ok: bool = False) -> int:
        raise NotImplementedError

    def online_resources(self, user: str) -> list[str] | None:
        return None

    def kick_user(self, user: str) -> int | None:
        return None

    def connected_count(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        """A dict for summary.json."""
        return {"kind": self.kind, "version": self.version(), "policy": self.policy, "marker": self.marker,
                "max_sessions": self.max_sessions, "auth": self.auth, "domain": self.domain,
                "host": self.host, "c2s_port": self.c2s_port, "http_port": self.http_port,
                "ws_url": self.ws_url, "http_base": self.http_base, "tls": self.tls,
                "transports": list(self.transports), "backlog": self.backlog,
                "password_format": self.password_format}

    # ------------------------------------------------------------------ folders
    def _prepare_dirs(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.server_dir.mkdir(parents=True, exist_ok=True)
        if self._user_can_write(self.server_dir):
            self.work_dir = self.server_dir
            self._staged = False
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"xmpp-{self.kind}-"))
            os.chmod(self.work_dir, 0o750)
            self._staged = True

    def _user_can_write(self, path: Path) -> bool:
        if os.geteuid() != 0:
            return os.access(path, os.W_OK | os.X_OK)
        try:
            os.chown(path, pwd.getpwnam(self.service_user).pw_uid, -1)
            rc = subprocess.run([SETPRIV, f"--reuid={self.service_user}", f"--regid={self.service_user}",
                                 "--init-groups", "test", "-w", str(path), "-a", "-x", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=10, check=False).returncode
        except (OSError, subprocess.SubprocessError, KeyError):
            return False
        return rc == 0

    def _chown_work_dir(self) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(self.service_user)
        for root, dirs, files in os.walk(self.work_dir):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)

    def _record_files(self) -> list[str]:
        """Files (relative to the work dir) worth keeping in ``<run_dir>/<kind>/``."""
        return []

    def _copy_record(self) -> None:
        for rel in self._record_files():
            src = self.work_dir / rel
            if src.is_file():
                dst = self.server_dir / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, dst)
                except OSError:
                    pass


# ---------------------------------------------------------------------- helpers
def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (held open together while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stream_header(domain: str) -> bytes:
    return (f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAM}' version='1.0'>").encode()


def stream_answers(host: str, port: int, domain: str, timeout: float = 2.0) -> bool:
    """True when ``host:port`` answers a client stream header with stream features."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(stream_header(domain))
            data = b""
            end = time.monotonic() + timeout
            while time.monotonic() < end and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
                if b"features" in data and (b"</stream:features>" in data or b"/>" in data.split(b"features", 1)[1]):
                    try:
                        sock.sendall(b"</stream:stream>")
                    except OSError:
                        pass
                    return True
    except OSError:
        return False
    return False


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid`` (our child leads its own session)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields[0] = state, [1] = ppid, [2] = pgrp, [3] = session
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(name))
    return sorted(found)


def marker_pids(marker: str) -> list[int]:
    """Live processes whose environment holds ``HARNESS_TARGET_ID=marker`` (readable for root or the owner)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and _state(int(name)) not in ("Z", ""):
            found.append(int(name))
    return sorted(found)


def owned_pids(sid: int, marker: str) -> list[int]:
    """Our server's processes: its session, plus marked ones that left it."""
    return sorted(set(session_pids(sid)) | set(marker_pids(marker)))


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().decode("ascii", "replace").rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return ""


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(name))
    return out


def proc_comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as fh:
            return fh.read().decode("ascii", "replace").strip()
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass


def _tail(path: Path, offset: int, limit: int = 600) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return data[-limit:].replace("\n", " | ")


def yaml_str(value: str) -> str:
    """A double-quoted YAML scalar."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_str(value: str) -> str:
    """A double-quoted Lua string literal (control bytes as decimal escapes)."""
    out = ['"']
    for ch in value:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)

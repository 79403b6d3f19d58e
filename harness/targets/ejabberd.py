"""ejabberd (Debian 23.01) as a target: config, start through ``ejabberdctl foreground``, HTTP admin API.

Erlang distribution: the node gets a fixed loopback distribution port (``ERL_DIST_PORT`` in its
own ctl-config), which makes ejabberdctl pass ``-erl_epmd_port P -start_epmd false``: no epmd
daemon is started at all, so nothing outlives the server and nothing collides with another
ejabberd (or epmd) on this box. ``inet_dist_use_interface`` keeps it on 127.0.0.1 (the same
as ``INET_DIST_INTERFACE=127.0.0.1``, without the extra VM ejabberdctl runs to parse it).
"""
from __future__ import annotations

import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.errors import TargetError
from harness.targets.jwt_helper import jwk_for_key
from harness.targets.xmpp_base import (
    SETPRIV,
    XmppServerTarget,
    child_pids,
    proc_comm,
    yaml_str,
)

API_COMMANDS = ("register", "unregister", "check_account", "registered_users", "user_resources",
                "kick_session", "kick_user", "connected_users", "connected_users_number", "status",
                "stats")
LOG_LEVEL = {"debug": "debug", "info": "info", "warning": "warning", "error": "error"}


def ejabberd_max_user_sessions(policy: str, max_sessions: int | None) -> str:
    """The ``shaper_rules: max_user_sessions`` value for a policy."""
    if policy == "single_platform":
        return "1"
    if policy == "max_sessions":
        return str(int(max_sessions or 0))
    return "infinity"


class EjabberdTarget(XmppServerTarget):
    """ejabberd as a child process. ``default_policy`` is the stock config: max_user_sessions 10."""

    kind = "ejabberd"
    package = "ejabberd"
    default_binary = "/usr/sbin/ejabberdctl"
    service_user = "ejabberd"
    supported_policies = ("single_platform", "max_sessions", "unlimited")
    supported_auth = ("password", "jwt")
    default_policy = "max_sessions"
    default_max_sessions = 10

    def __init__(self, run_dir: str | Path, *, api_workers: int = 16, **kwargs: Any) -> None:
        super().__init__(run_dir, **kwargs)
        self.api_workers = max(1, int(api_workers))
        self.dist_port = 0
        self._local = threading.local()
        self._version: str | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def ws_path(self) -> str:
        return "/ws"

    @property
    def node(self) -> str:
        return f"ejabberd-{self.c2s_port}@localhost"

    def _extra_ports(self) -> int:
        return 1

    def _set_extra_ports(self, ports: list[int]) -> None:
        if ports:
            self.dist_port = ports[0]

    # ------------------------------------------------------------------ version
    def version(self) -> str:
        """The upstream version, ``23.01`` (Debian's ``23.01-1`` without the package revision)."""
        return self.package_version().split("-")[0]

    def package_version(self) -> str:
        """The installed version as built, ``23.01-1`` (ejabberd.app's vsn; dpkg's as a fallback)."""
        if self._version is None:
            found = ""
            for app in sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app")):
                m = re.search(r'\{vsn,\s*"([^"]+)"\}', Path(app).read_text(errors="replace"))
                if m:
                    found = m.group(1)
            if not found and shutil.which("dpkg-query"):
                found = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ejabberd"], capture_output=True,
                                       text=True, check=False).stdout.strip()
            self._version = found or "unknown"
        return self._version

    # ------------------------------------------------------------------ config
    def config_text(self) -> str:
        """ejabberd.yml: loopback listeners only, no fail2ban, no shaper, policy as max_user_sessions."""
        w = self.work_dir
        lines = [
            "# written by harness.targets.ejabberd: loopback only, load-test settings",
            f"hosts: [{yaml_str(self.domain)}]",
            f"loglevel: {LOG_LEVEL[self.log_level]}",
            "log_rotate_count: 0",
            "hide_sensitive_log_data: true",
        ]
        if self.tls:
            lines.append(f"certfiles: [{yaml_str(str(w / 'cert.pem'))}]")
        c2s = [
            "  -",
            f"    port: {self.c2s_port}",
            f"    ip: {yaml_str(self.host)}",
            "    module: ejabberd_c2s",
            f"    backlog: {self.backlog}",
            "    max_stanza_size: 262144",
            "    shaper: none",
            "    access: c2s",
            f"    starttls: {'true' if self.tls else 'false'}",
            f"    starttls_required: {'true' if self.tls else 'false'}",
        ]
        handlers = ["      /api: mod_http_api"]
        if "websocket" in self.transports:
            handlers.append("      /ws: ejabberd_http_ws")
        if "bosh" in self.transports:
            handlers.append("      /bosh: mod_bosh")
        http = [
            "  -",
            f"    port: {self.http_port}",
            f"    ip: {yaml_str(self.host)}",
            "    module: ejabberd_http",
            f"    backlog: {self.backlog}",
            "    request_handlers:",
            *handlers,
        ]
        lines += ["listen:", *c2s, *http]
        if self.auth == "jwt":
            lines += ["auth_method: jwt", f"jwt_key: {yaml_str(str(w / 'jwt_key.jwk'))}",
                      f"jwt_jid_field: {yaml_str(self.jwt_field)}"]
        else:
            lines += ["auth_method: internal", f"auth_password_format: {self.password_format}",
                      "auth_cache_size: 100000"]
        lines += [
            "registration_timeout: infinity",
            "acl:",
            "  loopback:",
            "    ip: [127.0.0.0/8, \"::1/128\"]",
            "access_rules:",
            "  c2s:",
            "    allow: all",
            "  register:",
            "    allow: all",
            "api_permissions:",
            "  \"console commands\":",   # ejabberdctl over Erlang distribution (loopback, cookie in HOME)
            "    from: [ejabberd_ctl]",
            "    who: all",
            "    what: \"*\"",
            "  \"loopback admin\":",
            "    from: [mod_http_api]",
            "    who:",
            "      ip: 127.0.0.0/8",
            f"    what: [{', '.join(API_COMMANDS)}]",
            "shaper_rules:",
            f"  max_user_sessions: {ejabberd_max_user_sessions(self.policy, self.max_sessions)}",
            "  max_user_offline_messages: 100",
            "  c2s_shaper: none",
            "modules:",
            "  mod_admin_extra: {}",
        ]
        if "bosh" in self.transports:
            lines.append("  mod_bosh: {}")
        lines += [
            "  mod_disco: {}",
            "  mod_http_api: {}",
            "  mod_ping: {}",
            "  mod_register:",
            "    ip_access: all",
            "    access: register",
            "  mod_roster: {}",
            "  mod_version:",
            "    show_os: false",
            "",
        ]
        return "\n".join(lines)

    def ctl_config_text(self) -> str:
        """Our own ejabberdctl.cfg (the one in /etc hard-sets the config path)."""
        return "\n".join([
            "# written by harness.targets.ejabberd",
            f"ERLANG_NODE={self.node}",
            f"ERL_DIST_PORT={self.dist_port}",
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"',
            "EJABBERD_BYPASS_WARNINGS=true",
            f"EJABBERD_PID_PATH={self.work_dir / 'ejabberd.pid'}",
            f"CONTRIB_MODULES_CONF_DIR={self.work_dir / 'modules.d'}",
            "",
        ])

    @staticmethod
    def inetrc_text() -> str:
        return ('{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n'
                '{file, resolv, "/etc/resolv.conf"}.\n')

    def _write_files(self) -> None:
        w = self.work_dir
        for sub in ("spool", "logs", "modules.d"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        if self.auth == "jwt":
            assert self.jwt_key is not None
            (w / "jwt_key.jwk").write_text(json.dumps(jwk_for_key(self.jwt_key)))
            (w / "jwt_key.jwk").chmod(0o640)
        if self.tls:
            make_self_signed(w / "cert.pem", None, self.domain)
        (w / "ejabberd.yml").write_text(self.config_text())
        (w / "ejabberdctl.cfg").write_text(self.ctl_config_text())
        (w / "inetrc").write_text(self.inetrc_text())

    def _record_files(self) -> list[str]:
        return ["ejabberd.yml", "ejabberdctl.cfg", "logs/ejabberd.log", "logs/error.log"]

    def _command(self) -> list[str]:
        w = self.work_dir
        return [str(self.binary), "--ctl-config", str(w / "ejabberdctl.cfg"), "--config-dir", str(w),
                "--config", str(w / "ejabberd.yml"), "--spool", str(w / "spool"), "--logs", str(w / "logs"),
                "foreground"]

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``ejabberdctl ARGS`` against this node (Erlang distribution over loopback, no epmd); its stdout.

        One short-lived VM per call (~1-2 s): for a look by hand, never for bulk work (use ``api``).
        """
        if not self.running():
            raise TargetError("ejabberd is not running: start() it before ctl().")
        w = self.work_dir
        cmd = [str(self.binary), "--ctl-config", str(w / "ejabberdctl.cfg"), "--config-dir", str(w),
               "--config", str(w / "ejabberd.yml"), "--spool", str(w / "spool"), "--logs", str(w / "logs"), *args]
        if os.geteuid() == 0:
            cmd = [SETPRIV, f"--reuid={self.service_user}", f"--regid={self.service_user}", "--init-groups", *cmd]
        try:
            out = subprocess.run(cmd, env=self._env(), cwd=str(w), capture_output=True, text=True,
                                 timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TargetError(f"ejabberdctl {' '.join(args)} did not finish within {timeout:g} s") from None
        if out.returncode != 0:
            raise TargetError(f"ejabberdctl {' '.join(args)} failed (code {out.returncode}): "
                              f"{(out.stdout + out.stderr).strip()[-300:]}")
        return out.stdout

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["ERL_EPMD_ADDRESS"] = "127.0.0.1"
        env["INET_DIST_INTERFACE"] = "127.0.0.1"
        return env

    def _term_targets(self, child_pid: int) -> list[int]:
        """The BEAM VM (SIGTERM = clean init:stop); the ejabberdctl shell exits when it does."""
        beams = [p for p in _descendants(child_pid) if proc_comm(p).startswith("beam")]
        return beams or [child_pid]

    # ------------------------------------------------------------------ HTTP admin API
    def api(self, command: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        """POST ``/api/<command>`` with a JSON body; the decoded JSON answer; TargetError on failure."""
        body = json.dumps(args or {}).encode()
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.http_port, timeout=timeout)
                self._local.conn = conn
            try:
                conn.request("POST", f"/api/{command}", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise TargetError(f"ejabberd's admin API {self.http_base}/api/{command} failed: {exc}") from None
        try:
            decoded = json.loads(data.decode("utf-8", "replace")) if data else None
        except ValueError:
            decoded = data.decode("utf-8", "replace")
        if status != 200:
            message = decoded.get("message") if isinstance(decoded, dict) else decoded
            raise ApiError(command, status, decoded, f"ejabberd's admin API {command} answered {status}: {message}")
        return decoded

    def create_accounts(self, users: list[str], password_for: Callable[[str], str], *,
                        exist_ok: bool = False) -> int:
        """Register ``users`` through ``POST /api/register`` from a pool of keep-alive connections.

        With auth jwt there is nothing to create (any JID with a valid token logs in): returns 0.
        ``exist_ok``: an account that already exists is skipped instead of an error.
        """
        if self.auth == "jwt":
            return 0
        if not self.running():
            raise TargetError("ejabberd is not running: start() it before create_accounts().")

        def one(user: str) -> int:
            try:
                self.api("register", {"user": user, "host": self.domain, "password": password_for(user)})
                return 1
            except ApiError as exc:
                if exist_ok and "already registered" in str(exc):
                    return 0
                raise TargetError(f"ejabberd could not register {user!r}: {exc.message}") from None

        users = list(users)
        if not users:
            return 0
        with ThreadPoolExecutor(max_workers=min(self.api_workers, len(users))) as pool:
            return sum(pool.map(one, users))

    def online_resources(self, user: str) -> list[str] | None:
        """The bound resources of ``user`` (``/api/user_resources``)."""
        return list(self.api("user_resources", {"user": user, "host": self.domain}))

    def kick_user(self, user: str) -> int | None:
        """Close every session of ``user`` (the client gets ``<policy-violation/>``); how many were closed."""
        out = self.api("kick_user", {"user": user, "host": self.domain})
        return int(out["num_resources"]) if isinstance(out, dict) else int(out)

    def kick_session(self, user: str, resource: str, reason: str = "Kicked by the harness") -> None:
        """Close one session (the client gets ``<conflict/>`` with ``reason``)."""
        self.api("kick_session", {"user": user, "host": self.domain, "resource": resource, "reason": reason})

    def connected_count(self) -> int | None:
        """Sessions on the node (``/api/connected_users_number``)."""
        out = self.api("connected_users_number", {})
        return int(out["num_sessions"]) if isinstance(out, dict) else int(out)

    def stop(self, timeout: float = 10.0) -> int | None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        return super().stop(timeout)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({"max_user_sessions": ejabberd_max_user_sessions(self.policy, self.max_sessions),
                    "dist_port": self.dist_port, "package_version": self.package_version()})
        return out


class ApiError(TargetError):
    def __init__(self, command: str, status: int, body: Any, sentence: str) -> None:
        super().__init__(sentence)
        self.command = command
        self.status = status
        self.body = body
        self.message = body.get("message") if isinstance(body, dict) else str(body)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = child_pids(todo.pop())
        out += kids
        todo += kids
    return out


def make_self_signed(cert: Path, key: Path | None, domain: str) -> None:
    """A self-signed certificate for ``domain`` (key in the same PEM when ``key`` is None)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise TargetError("tls needs openssl to make a self-signed certificate: apt-get install openssl")
    keyfile = key or cert.with_suffix(".key")
    rc = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                         "-subj", f"/CN={domain}", "-addext", f"subjectAltName=DNS:{domain}",
                         "-keyout", str(keyfile), "-out", str(cert)], capture_output=True, text=True, check=False)
    if rc.returncode != 0:
        raise TargetError(f"openssl could not make a certificate for {domain}: {rc.stderr.strip()[-200:]}")
    if key is None:
        cert.write_text(cert.read_text() + keyfile.read_text())
        keyfile.unlink()

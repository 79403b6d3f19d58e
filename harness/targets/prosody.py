"""Prosody (Debian 0.12) as a target: config, start with ``prosody -F``, admin views over its admin socket.

The admin socket (``mod_admin_socket`` + ``mod_admin_shell``, what ``prosodyctl shell`` talks to)
is a Unix socket speaking a tiny XML stream: ``<repl-input>LINE</repl-input>`` in,
``<repl-output>``... ``<repl-result type='error'?>TEXT</repl-result>`` out. This module talks to it
directly (no prosodyctl process): accounts are ``user:create(jid, password)`` lines pipelined over
one connection, and the admin views are one-line Lua expressions over ``prosody.hosts``.
"""
from __future__ import annotations

import hashlib
import json
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

from harness.errors import ConfigError, TargetError
from harness.targets.xmpp_base import XmppServerTarget, lua_str

LOG_LEVEL = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}
ADMIN_NS = "xmpp:prosody.im/admin"
BATCH = 200   # repl lines in flight on the admin socket
ACCOUNTS_PER_CHUNK = 500
CREATE_CHUNK = (
    "(function() local um = require'core.usermanager'; local nodeprep = require'util.encodings'.stringprep.nodeprep; "
    "local H = {host}; local n, bad = 0, {{}}; "
    "for _, x in ipairs({{{table}}}) do local u = nodeprep(x[1]); "
    "if not u then bad[#bad+1] = x[1] .. ': invalid username' "
    "elseif um.user_exists(u, H) then bad[#bad+1] = x[1] .. ': User exists' "
    "else local ok, err = um.create_user(u, x[2], H); "
    "if ok then n = n + 1 else bad[#bad+1] = x[1] .. ': ' .. tostring(err) end end end; "
    "return require'util.json'.encode({{created = n, failed = bad}}) end)()")


class ProsodyTarget(XmppServerTarget):
    """Prosody as a child process. Its core has no per-account session limit: policy unlimited only."""

    kind = "prosody"
    package = "prosody"
    default_binary = "/usr/bin/prosody"
    service_user = "prosody"
    supported_policies = ("unlimited",)
    supported_auth = ("password",)
    default_policy = "unlimited"
    default_max_sessions = None
    version_file = "/usr/lib/prosody/prosody.version"

    @classmethod
    def check_policy(cls, policy: str) -> None:
        if policy not in cls.supported_policies:
            raise ConfigError("target.policy", f"prosody cannot enforce {policy}: its core has no per-account "
                                               f"session limit; use policy unlimited")

    @classmethod
    def check_auth(cls, auth: str) -> None:
        if auth not in cls.supported_auth:
            raise ConfigError("target.auth", f"prosody cannot use auth {auth}: Debian's Prosody 0.12 has no working "
                                             f"expiring-token login; use auth password or target ejabberd")

    # ------------------------------------------------------------------ addresses
    @property
    def ws_path(self) -> str:
        return "/xmpp-websocket"

    @property
    def admin_socket(self) -> Path:
        """The admin socket path: in the work dir, or (a path too long for AF_UNIX) a name in the temp dir."""
        path = self.work_dir / "prosody.sock"
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha1(str(self.work_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"xmpp-prosody-{digest}.sock"

    def version(self) -> str:
        """``0.12.3`` (Prosody's installed version file)."""
        try:
            return Path(self.version_file).read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    # ------------------------------------------------------------------ config
    def config_text(self) -> str:
        """prosody.cfg.lua: loopback listeners only, no s2s, plain auth allowed, registration unthrottled."""
        w = self.work_dir
        modules = ["roster", "saslauth", "disco", "ping", "register", "admin_shell", "posix"]
        if self.tls:
            modules.append("tls")
        if "websocket" in self.transports:
            modules.append("websocket")
        if "bosh" in self.transports:
            modules.append("bosh")
        lines = [
            "-- written by harness.targets.prosody: loopback only, load-test settings",
            f"pidfile = {lua_str(str(w / 'prosody.pid'))}",
            f"data_path = {lua_str(str(w / 'data'))}",
            f"admin_socket = {lua_str(str(self.admin_socket))}",
            f"log = {{ {{ levels = {{ min = {lua_str(LOG_LEVEL[self.log_level])} }}, to = \"console\" }} }}",
            f"interfaces = {{ {lua_str(self.host)} }}",
            f"local_interfaces = {{ {lua_str(self.host)} }}",
            f"c2s_ports = {{ {self.c2s_port} }}",
            f"c2s_interfaces = {{ {lua_str(self.host)} }}",
            "c2s_direct_tls_ports = { }",
            "s2s_ports = { }",
            "s2s_direct_tls_ports = { }",
            "component_ports = { }",
            f"http_ports = {{ {self.http_port} }}",
            f"http_interfaces = {{ {lua_str(self.host)} }}",
            "https_ports = { }",
            f"network_settings = {{ tcp_backlog = {self.backlog} }}",
            "modules_enabled = { " + ", ".join(lua_str(m) for m in modules) + " }",
            "modules_disabled = { \"s2s\" }",
            f"authentication = {lua_str('internal_plain' if self.password_format == 'plain' else 'internal_hashed')}",
            f"certificates = {lua_str(str(w / 'certs'))}",
            "storage = \"internal\"",
            f"c2s_require_encryption = {'true' if self.tls else 'false'}",
            "s2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            "allow_registration = true",
            "min_seconds_between_registrations = 0",
            "limits = { }",
            "consider_websocket_secure = true",
            "cross_domain_websocket = true",
            "statistics = nil",
        ]
        if self.tls:
            lines.append(f"ssl = {{ certificate = {lua_str(str(w / 'cert.pem'))}, key = {lua_str(str(w / 'cert.key'))} }}")
        lines += [f"VirtualHost {lua_str(self.domain)}", ""]
        return "\n".join(lines)

    def _write_files(self) -> None:
        w = self.work_dir
        (w / "data").mkdir(parents=True, exist_ok=True)
        (w / "certs").mkdir(parents=True, exist_ok=True)
        if self.tls:
            from harness.targets.ejabberd import make_self_signed
            make_self_signed(w / "cert.pem", w / "cert.key", self.domain)
        (w / "prosody.cfg.lua").write_text(self.config_text())

    def _record_files(self) -> list[str]:
        return ["prosody.cfg.lua"]

    def _command(self) -> list[str]:
        return [str(self.binary), "-F", "--config", str(self.work_dir / "prosody.cfg.lua")]

    def _ready_extra(self, deadline: float) -> bool:
        from harness.targets.xmpp_base import port_open
        return port_open(self.host, self.http_port) and self.admin_socket.exists()

    def stop(self, timeout: float = 10.0) -> int | None:
        sock = self.admin_socket
        code = super().stop(timeout)
        if sock.parent != self.server_dir and sock.name.startswith("xmpp-prosody-"):
            try:
                sock.unlink()     # Prosody removes it on a clean exit; not after SIGKILL
            except OSError:
                pass
        return code

    # ------------------------------------------------------------------ admin socket
    def shell(self, lines: list[str], timeout: float = 60.0) -> list[tuple[bool, str]]:
        """Run admin-shell ``lines`` over one admin socket connection: (ok, text) per line."""
        if not self.running():
            raise TargetError("prosody is not running: start() it before using its admin socket.")
        results: list[tuple[bool, str]] = []
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.admin_socket))
            sock.sendall(f"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                         f"xmlns='{ADMIN_NS}'>".encode())
            parser = ET.XMLPullParser(events=("start", "end"))
            depth = 0
            pending = list(lines)
            while pending or len(results) < len(lines):
                sent = len(lines) - len(pending)
                if pending and sent - len(results) < BATCH:
                    chunk, pending = pending[:BATCH], pending[BATCH:]
                    sock.sendall("".join(f"<repl-input>{escape(line)}</repl-input>" for line in chunk).encode())
                    continue
                data = sock.recv(65536)
                if not data:
                    raise TargetError(f"prosody's admin socket closed after {len(results)} of {len(lines)} commands")
                parser.feed(data)
                for event, elem in parser.read_events():
                    if event == "start":
                        depth += 1
                        continue
                    depth -= 1
                    if depth == 1 and elem.tag == f"{{{ADMIN_NS}}}repl-result":
                        results.append((elem.get("type") != "error", elem.text or ""))
                    if depth == 1:
                        elem.clear()
            try:
                sock.sendall(b"</stream:stream>")
            except OSError:
                pass
        except OSError as exc:
            raise TargetError(f"prosody's admin socket {self.admin_socket} failed: {exc}") from None
        finally:
            sock.close()
        return results

    def lua(self, expression: str) -> str:
        """Evaluate one Lua expression in Prosody's global environment; its string result."""
        ok, text = self.shell([">" + expression])[0]
        if not ok:
            raise TargetError(f"prosody's admin shell refused {expression[:60]!r}: {text}")
        return text.removeprefix("Result: ")

    def create_accounts(self, users: list[str], password_for: Callable[[str], str], *,
                        exist_ok: bool = False) -> int:
        """Create ``users`` through the admin socket: one Lua chunk per 500 accounts over one connection.

        (One ``user:create(jid, password)`` line per account works too, but took 20 s for 10,000 here
        against 4 s for these chunks: the per-line cost grows with the session.)
        """
        users = list(users)
        if not users:
            return 0
        lines = []
        for i in range(0, len(users), ACCOUNTS_PER_CHUNK):
            table = ",".join(f"{{{lua_str(u)},{lua_str(password_for(u))}}}" for u in users[i:i + ACCOUNTS_PER_CHUNK])
            lines.append(">" + CREATE_CHUNK.format(host=lua_str(self.domain), table=table))
        created, failed = 0, []
        for ok, text in self.shell(lines, timeout=max(60.0, len(users) / 100)):
            if not ok:
                raise TargetError(f"prosody's admin shell refused an account chunk: {text[:200]}")
            out = json.loads(text.removeprefix("Result: "))
            created += int(out["created"])
            failed += [f for f in (out.get("failed") or []) if not (exist_ok and f.endswith(": User exists"))]
        if failed:
            raise TargetError(f"prosody could not create {len(failed)} of {len(users)} accounts, first {failed[0]}")
        return created

    def _user_expr(self, user: str, body: str) -> str:
        return (f"(function() local h = prosody.hosts[{lua_str(self.domain)}]; "
                f"local u = h and h.sessions and h.sessions[{lua_str(user)}]; {body} end)()")

    def online_resources(self, user: str) -> list[str] | None:
        """The bound resources of ``user`` (``prosody.hosts[domain].sessions[user].sessions``)."""
        text = self.lua(self._user_expr(user, "local r = {}; if u then for res in pairs(u.sessions) do "
                                              "r[#r+1] = res end end; return require'util.json'.encode(r)"))
        out = json.loads(text)
        return sorted(out) if isinstance(out, list) else []

    def kick_user(self, user: str) -> int | None:
        """Close every session of ``user`` with ``<policy-violation/>``; how many were closed."""
        text = self.lua(self._user_expr(user, "local n = 0; if u then local all = {}; for _, s in pairs(u.sessions) "
                                              "do all[#all+1] = s end; for _, s in ipairs(all) do n = n + 1; "
                                              "s:close({condition = 'policy-violation', text = 'Kicked by the harness'}) "
                                              "end end; return tostring(n)"))
        return int(text)

    def connected_count(self) -> int | None:
        """Bound c2s sessions (``prosody.full_sessions``)."""
        text = self.lua("(function() local n = 0; for _ in pairs(prosody.full_sessions) do n = n + 1 end; "
                        "return tostring(n) end)()")
        return int(text)


"""config.yaml -> frozen dataclasses. Validated once; every error names the dotted key path.

The dataclass defaults below are the single source of truth for defaults; config.yaml in the
repo root shows the same values with comments (a unit test keeps the two in step).

Rules:
  * unknown keys are errors (with a "did you mean" hint), so typos never pass silently;
  * ``--set a.b.c=VALUE`` overrides any key; VALUE is parsed as YAML (``5``, ``true``, ``[a, b]``);
  * environment CHAT_SDKAPPID / CHAT_SECRET_KEY / CHAT_ADMIN win over the file;
  * the secret key is never printed: :func:`masked` gives the dict to save.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from harness.errors import ConfigError
from harness.protocol import PLATFORMS, POLICIES

SCENARIO_NAMES = ("mass_login", "relogin_expiry", "account_switch", "kick_race")
CHECK_NAMES = (
    "kick_exactly_once",
    "policy_limit",
    "last_login_wins",
    "switch_consistency",
    "relogin_recovers",
    "expiry_on_time",
    "journal_integrity",
    "expected_rejections",
)
PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "p999", "max")


def _rng(lo: float | None = None, hi: float | None = None, choices: Sequence[Any] | None = None) -> dict:
    return {"lo": lo, "hi": hi, "choices": tuple(choices) if choices else None}


def f(default: Any, lo: float | None = None, hi: float | None = None, choices: Sequence[Any] | None = None):
    """A dataclass field with a validation range/choices."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=_rng(lo, hi, choices))
    return field(default=default, metadata=_rng(lo, hi, choices))


TARGET_KINDS = ("embedded", "external", "ejabberd", "prosody")
PROTOCOLS = ("tim", "xmpp")


@dataclass(frozen=True)
class XmppConfig:
    """How the harness talks XMPP (``target.protocol: xmpp``; kinds ejabberd, prosody, external)."""
    domain: str = f("localhost")
    transport: str = f("tcp", choices=("tcp", "ws"))
    ws_path: str = f("")               # default: /ws (ejabberd), /xmpp-websocket (prosody)
    mechanism: str = f("auto", choices=("auto", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"))
    tls: str = f("auto", choices=("auto", "never", "always"))
    auth: str = f("auto", choices=("auto", "password", "jwt"))
    password: str = f("")              # external targets: every account's password (default: derived per account)
    jwt_key: str = f("")               # external ejabberd with auth jwt: the HS256 key (default: generated per run)
    jwt_field: str = f("jid")
    accounts_max: int = f(10000, 1, 1_000_000)


@dataclass(frozen=True)
class TargetConfig:
    kind: str = f("embedded", choices=TARGET_KINDS)
    protocol: str = f("", choices=("",) + PROTOCOLS)
    host: str = f("")
    rest_base: str = f("")
    ws_path: str = f("/ws")
    sdkappid: int = f(1400000000, 1, 2**63 - 1)
    secret_key: str = f("")
    admin: str = f("administrator")
    policy: str = f("auto", choices=("auto",) + POLICIES)
    native_instances: int = f(1, 1, 3)
    web_instances: int = f(1, 1, 10)
    max_sessions: int = f(10, 1, 100)
    leeway_s: int = f(5, 0, 3600)
    require_import: bool = f(False)
    lockout_failures: int = f(10, 1, 1_000_000)
    lockout_window_s: float = f(60, 0.001, 86400)
    lockout_s: float = f(60, 0, 86400)
    max_frame_bytes: int = f(65536, 256, 16 * 1024 * 1024)
    handshake_timeout_s: float = f(10, 0.05, 3600)
    idle_timeout_s: float = f(90, 0.05, 86400)
    max_bad_frames: int = f(20, 1, 1_000_000)
    sweep_interval_s: float = f(0.25, 0.01, 1)
    faults: list = f([])
    startup_timeout_s: float = f(15, 0.5, 600)
    xmpp: XmppConfig = field(default_factory=XmppConfig)

    @property
    def embedded(self) -> bool:
        return self.kind == "embedded" and not self.host

    @property
    def started_by_harness(self) -> bool:
        """The harness starts (and stops) this target itself: the reference server or a real XMPP server."""
        return self.embedded or self.kind in ("ejabberd", "prosody")

    @property
    def wire(self) -> str:
        """The protocol spoken: ``target.protocol``, else the kind's, else from the host's scheme."""
        if self.protocol:
            return self.protocol
        if self.kind in ("ejabberd", "prosody") or self.host.startswith("xmpp://"):
            return "xmpp"
        return "tim"


@dataclass(frozen=True)
class UserSigConfig:
    source: str = f("local", choices=("local", "http"))
    expire_s: int = f(86400, 1, 10 * 365 * 86400)
    url: str = f("")
    method: str = f("GET", choices=("GET", "POST"))
    json_path: str = f("userSig")
    timeout_s: float = f(5, 0.01, 600)


@dataclass(frozen=True)
class ClientConfig:
    connect_timeout_s: float = f(10, 0.01, 600)
    request_timeout_s: float = f(10, 0.01, 600)
    heartbeat_interval_s: float = f(30, 0.05, 3600)
    platform: str = f("Android", choices=PLATFORMS)
    source_addresses: Any = f("auto")
    reconnect: bool = f(True)
    reconnect_base_s: float = f(0.2, 0.001, 600)
    reconnect_cap_s: float = f(5, 0.001, 3600)
    reconnect_max_attempts: int = f(8, 1, 1000)


@dataclass(frozen=True)
class RunConfig:
    results_dir: str = f("results")
    run_id: str = f("")
    settle_s: float = f(2.0, 0, 600)
    journal_flush_s: float = f(0.5, 0.01, 60)


@dataclass(frozen=True)
class MassLoginConfig:
    weight: int = f(1, 0, 1000)
    account_prefix: str = f("storm")
    accounts: int = f(100000, 1, 10**9)
    hold_s: float = f(5, 0, 86400)
    heartbeat_s: float = f(2, 0.05, 3600)
    logout: bool = f(True)
    arrival_rate: float = f(0, 0, 1_000_000)
    max_concurrent: int = f(10000, 1, 10**7)


@dataclass(frozen=True)
class ReloginExpiryConfig:
    weight: int = f(1, 0, 1000)
    account_prefix: str = f("exp")
    accounts: int = f(10000, 1, 10**9)
    sig_lifetime_s: int = f(4, 1, 86400)
    sig_jitter_s: int = f(2, 0, 86400)
    cycles: int = f(3, 1, 10**6)
    relogin_bound_s: float = f(10, 0.1, 86400)
    stale_login_ratio: float = f(0.2, 0, 1)
    max_attempts: int = f(3, 1, 100)


@dataclass(frozen=True)
class AccountSwitchConfig:
    weight: int = f(1, 0, 1000)
    account_prefix: str = f("sw")
    accounts: int = f(10000, 2, 10**9)
    chain: int = f(5, 2, 1000)
    pause_s: float = f(0.1, 0, 3600)
    query_online: bool = f(True)


@dataclass(frozen=True)
class KickRaceConfig:
    weight: int = f(1, 0, 1000)
    account_prefix: str = f("race")
    accounts: int = f(10000, 1, 10**9)
    devices: int = f(3, 2, 50)
    platforms: list = f(["Android", "iOS", "Windows", "Web"])
    same_instance: bool = f(False)
    window_ms: float = f(5, 0, 60000)
    settle_ms: float = f(500, 0, 600000)
    query_online: bool = f(True)
    pause_s: float = f(0.5, 0, 3600)
    cross_worker: bool = f(False)
    lead_ms: float = f(200, 0, 60000)


@dataclass(frozen=True)
class ScenariosConfig:
    mass_login: MassLoginConfig = field(default_factory=MassLoginConfig)
    relogin_expiry: ReloginExpiryConfig = field(default_factory=ReloginExpiryConfig)
    account_switch: AccountSwitchConfig = field(default_factory=AccountSwitchConfig)
    kick_race: KickRaceConfig = field(default_factory=KickRaceConfig)


@dataclass(frozen=True)
class ChecksConfig:
    expiry_tolerance_s: float = f(3, 0, 3600)
    clock_skew_s: float = f(1, 0, 3600)
    enabled: list = f(list(CHECK_NAMES))


@dataclass(frozen=True)
class GatesConfig:
    latency_ms: dict = f({"login": {"p99": 2000}})
    error_ratio: dict = f({"overall": 0.05})
    min_rate_per_s: dict = f({})
    max_schedule_lag_ms: float = f(0, 0, 10**9)
    violations: int = f(0, 0, 10**9)


#: Fault kinds (``faults.schedule[].kind``): the embedded server's process, or the TCP fault proxy.
SERVER_FAULT_KINDS = ("server_restart", "server_stall")
PROXY_FAULT_KINDS = ("latency", "reset", "blackhole", "cut")
FAULT_KINDS = SERVER_FAULT_KINDS + PROXY_FAULT_KINDS
#: Keys each kind takes besides ``kind``, ``at_s`` and ``name`` (value = default; None = required).
FAULT_KEYS: dict[str, dict[str, Any]] = {
    "server_restart": {"down_s": 1.0},
    "server_stall": {"duration_s": None},
    "latency": {"duration_s": None, "fraction": 1.0, "latency_ms": 100.0, "jitter_ms": 0.0},
    "reset": {"duration_s": None, "fraction": 1.0},
    "blackhole": {"duration_s": None, "fraction": 1.0},
    "cut": {"duration_s": None, "fraction": 1.0, "after_bytes": 0},
}
_FAULT_RANGES: dict[str, tuple[type, float, float]] = {
    "at_s": (float, 0, 86400), "down_s": (float, 0, 3600), "duration_s": (float, 0.001, 86400),
    "fraction": (float, 0, 1), "latency_ms": (float, 0, 600_000), "jitter_ms": (float, 0, 600_000),
    "after_bytes": (int, 0, 1 << 40),
}


@dataclass(frozen=True)
class FaultSpec:
    """One scheduled fault. Times in seconds (``at_s`` after the test starts), latency in ms.

    ``name`` labels the journal's ``fault`` row (default: the kind). Proxy kinds act on
    ``fraction`` of the connections through the TCP fault proxy during
    ``[at_s, at_s + duration_s)``; ``server_restart`` is down for ``down_s`` then starts
    again on the same port; ``server_stall`` is SIGSTOP for ``duration_s``.
    """

    kind: str
    at_s: float
    name: str
    duration_s: float = 0.0
    down_s: float = 0.0
    fraction: float = 1.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    after_bytes: int = 0

    @property
    def proxy(self) -> bool:
        """True when the TCP fault proxy carries out this fault."""
        return self.kind in PROXY_FAULT_KINDS

    def params(self) -> dict[str, Any]:
        """The parameters that matter for this kind (journal ``data`` of the fault row)."""
        return {k: getattr(self, k) for k in ("at_s", *FAULT_KEYS[self.kind])}


def parse_fault_schedule(items: Any, path: str = "faults.schedule") -> tuple[FaultSpec, ...]:
    """Validate ``faults.schedule`` (a list of mappings); errors name ``faults.schedule[i].key``."""
    if not isinstance(items, list):
        raise ConfigError(path, f"expected a list of faults, got {items!r}")
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, f"expected a mapping like {{kind: server_restart, at_s: 10}}, got {item!r}")
        kind = item.get("kind")
        if kind not in FAULT_KINDS:
            raise ConfigError(f"{where}.kind", f"expected one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        allowed = {"kind", "at_s", "name", *FAULT_KEYS[kind]}
        for key in item:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else f" for kind {kind}"
                raise ConfigError(f"{where}.{key}", f"unknown key{extra}")
        values: dict[str, Any] = {}
        for key, default in (("at_s", None), *FAULT_KEYS[kind].items()):
            if key not in item:
                if default is None:
                    raise ConfigError(f"{where}.{key}", f"required for kind {kind}")
                values[key] = default
                continue
            tp, lo, hi = _FAULT_RANGES[key]
            values[key] = _coerce(item[key], tp, {"lo": lo, "hi": hi}, f"{where}.{key}")
        name = item.get("name", kind)
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ConfigError(f"{where}.name", f"expected a label of 1-64 characters, got {name!r}")
        out.append(FaultSpec(kind=kind, name=name, **values))
    return tuple(out)


@dataclass(frozen=True)
class FaultsConfig:
    """``faults:``: injected faults (none by default). See :class:`FaultSpec` and docs."""

    seed: int = f(0, 0, 2**63 - 1)
    proxy: str = f("auto", choices=("auto", "always"))
    schedule: list = f([])

    def specs(self) -> tuple[FaultSpec, ...]:
        """The validated schedule."""
        return parse_fault_schedule(self.schedule)

    @property
    def use_proxy(self) -> bool:
        """Route the harness through the TCP fault proxy (``always``, or a proxy fault is scheduled)."""
        return self.proxy == "always" or any(s.proxy for s in self.specs())


@dataclass(frozen=True)
class ReportConfig:
    enabled: bool = f(True)
    charts: bool = f(True)
    compare: dict = f({"fail_on": []})   # python -m harness.report RUN --compare BASE: thresholds (--fail-on)


@dataclass(frozen=True)
class Config:
    target: TargetConfig = field(default_factory=TargetConfig)
    usersig: UserSigConfig = field(default_factory=UserSigConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    run: RunConfig = field(default_factory=RunConfig)
    scenarios: ScenariosConfig = field(default_factory=ScenariosConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    def scenario(self, name: str) -> Any:
        return getattr(self.scenarios, name)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- building

def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list", dict: "a mapping"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, meta: Mapping, path: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(path, f"expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            else:
                raise ConfigError(path, f"expected a string, got {value!r}")
    elif tp is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {value!r}")
    elif tp is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(path, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
    if (lo is not None or hi is not None) and isinstance(value, (int, float)):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = "" if lo is None else _num(lo)
            hi_s = "" if hi is None else _num(hi)
            raise ConfigError(path, f"expected {lo_s}..{hi_s}, got {_num(value)}")
    return value


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {fl.name: fl for fl in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{path}.{key}" if path else str(key), f"unknown key{extra}")
    kwargs = {}
    for name, fl in fields.items():
        sub = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data.get(name), sub)
        elif name in data:
            kwargs[name] = _coerce(data[name], tp, fl.metadata, sub)
    return cls(**kwargs)


def _apply_set(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", f"bad key {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _validate_semantics(cfg: Config) -> None:
    t = cfg.target
    if t.kind in ("ejabberd", "prosody") and t.host:
        raise ConfigError("target.host", f"target.kind {t.kind} is started by the harness on loopback; "
                          f"use target.kind=external to point at a server you run ({t.host!r})")
    if t.kind == "external" and not t.host:
        raise ConfigError("target.host", "target.kind external needs a host (--host ws://HOST:PORT or xmpp://HOST:PORT)")
    if t.kind in ("ejabberd", "prosody") and t.protocol == "tim":
        raise ConfigError("target.protocol", f"{t.kind} speaks xmpp, not tim")
    if t.host:
        from urllib.parse import urlsplit

        u = urlsplit(t.host)
        if u.scheme not in ("ws", "wss", "http", "https", "xmpp") or not u.hostname:
            raise ConfigError("target.host", f"expected ws://HOST:PORT or xmpp://HOST:PORT, got {t.host!r}")
        if u.scheme == "xmpp" and t.protocol == "tim":
            raise ConfigError("target.protocol", f"an xmpp:// host speaks xmpp, not tim ({t.host!r})")
        try:
            u.port
        except ValueError:
            raise ConfigError("target.host", f"bad port in {t.host!r}") from None
    if not t.ws_path.startswith("/"):
        raise ConfigError("target.ws_path", f"expected a path starting with '/', got {t.ws_path!r}")
    for i, fault in enumerate(t.faults):
        if not isinstance(fault, str) or not fault:
            raise ConfigError(f"target.faults[{i}]", f"expected NAME[:RATE], got {fault!r}")
    if cfg.usersig.source == "http" and not cfg.usersig.url and t.host:
        raise ConfigError("usersig.url", "the http UserSig source needs a URL template when the target is not embedded")
    if cfg.usersig.url and "{userID}" not in cfg.usersig.url and cfg.usersig.method == "GET":
        raise ConfigError("usersig.url", "the URL template must contain {userID}")
    sa = cfg.client.source_addresses
    if not (sa in ("auto", "none", None) or (isinstance(sa, list) and all(isinstance(a, str) for a in sa))):
        raise ConfigError("client.source_addresses", f"expected auto, none or a list of IP addresses, got {sa!r}")
    plats = cfg.scenarios.kick_race.platforms
    if not plats:
        raise ConfigError("scenarios.kick_race.platforms", "expected at least one platform")
    for i, p in enumerate(plats):
        if p not in PLATFORMS:
            raise ConfigError(f"scenarios.kick_race.platforms[{i}]", f"expected one of {', '.join(PLATFORMS)}, got {p!r}")
    for name in SCENARIO_NAMES:
        prefix = cfg.scenario(name).account_prefix
        if not prefix or len(prefix) > 16 or not all(c.isalnum() or c in "_-" for c in prefix):
            raise ConfigError(f"scenarios.{name}.account_prefix", f"expected 1-16 chars of [A-Za-z0-9_-], got {prefix!r}")
    for i, name in enumerate(cfg.checks.enabled):
        if name not in CHECK_NAMES:
            raise ConfigError(f"checks.enabled[{i}]", f"expected one of {', '.join(CHECK_NAMES)}, got {name!r}")
    _validate_gates(cfg.gates)
    _validate_faults(cfg)
    _validate_compare(cfg.report.compare)


def _validate_compare(compare: Any) -> None:
    """``report.compare``: ``{fail_on: ['METRIC:LIMIT', ...]}`` (harness.results.thresholds)."""
    from harness.results.thresholds import FailOnError, parse_fail_on

    if not isinstance(compare, dict):
        raise ConfigError("report.compare", f"expected a mapping like {{fail_on: []}}, got {compare!r}")
    for key in compare:
        if key != "fail_on":
            raise ConfigError(f"report.compare.{key}", "unknown key (expected fail_on)")
    fail_on = compare.get("fail_on") or []
    if isinstance(fail_on, str) or not isinstance(fail_on, list):
        raise ConfigError("report.compare.fail_on", f"expected a list of 'METRIC:LIMIT', got {fail_on!r}")
    for i, spec in enumerate(fail_on):
        try:
            parse_fail_on(str(spec))
        except FailOnError as exc:
            raise ConfigError(f"report.compare.fail_on[{i}]", str(exc).replace("--fail-on ", "")) from None


def _validate_faults(cfg: Config) -> None:
    c = cfg.client
    if c.reconnect_cap_s < c.reconnect_base_s:
        raise ConfigError("client.reconnect_cap_s", f"expected >= client.reconnect_base_s "
                          f"({_num(c.reconnect_base_s)}), got {_num(c.reconnect_cap_s)}")
    for i, spec in enumerate(cfg.faults.specs()):
        if spec.kind in SERVER_FAULT_KINDS and not cfg.target.embedded:
            raise ConfigError(f"faults.schedule[{i}].kind",
                              f"{spec.kind} needs the embedded target (target.host empty); "
                              "against your own server use the proxy faults (latency, reset, blackhole, cut)")


def _validate_gates(g: GatesConfig) -> None:
    for op, limits in g.latency_ms.items():
        if not isinstance(limits, dict):
            raise ConfigError(f"gates.latency_ms.{op}", f"expected a mapping of percentile -> ms, got {limits!r}")
        for pct, ms in limits.items():
            if pct not in PERCENTILE_KEYS:
                raise ConfigError(f"gates.latency_ms.{op}.{pct}", f"expected one of {', '.join(PERCENTILE_KEYS)}")
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms <= 0:
                raise ConfigError(f"gates.latency_ms.{op}.{pct}", f"expected a positive number of ms, got {ms!r}")
    for key, ratio in g.error_ratio.items():
        if key == "per_code":
            if not isinstance(ratio, dict):
                raise ConfigError("gates.error_ratio.per_code", f"expected a mapping of code -> ratio, got {ratio!r}")
            items = [(f"gates.error_ratio.per_code.{c}", r) for c, r in ratio.items()]
            for c in ratio:
                try:
                    int(c)
                except (TypeError, ValueError):
                    raise ConfigError(f"gates.error_ratio.per_code.{c}", "expected an integer code") from None
        elif key == "overall":
            items = [("gates.error_ratio.overall", ratio)]
        else:
            raise ConfigError(f"gates.error_ratio.{key}", "unknown key (expected overall or per_code)")
        for path, r in items:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
                raise ConfigError(path, f"expected 0..1, got {r!r}")
    for op, rate in g.min_rate_per_s.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
            raise ConfigError(f"gates.min_rate_per_s.{op}", f"expected a number >= 0, got {rate!r}")


def load_config(path: str | Path | None = None, *, overrides: Sequence[str] = (),
                env: Mapping[str, str] | None = None) -> Config:
    """Read YAML at ``path`` (None = defaults only), apply ``--set`` overrides and env, validate."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {p}") from None
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {p}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError("--config", f"{p} is not valid YAML{where}") from None
        if not isinstance(raw, dict):
            raise ConfigError("--config", f"{p} must hold a mapping at the top level")
    return config_from_mapping(raw, overrides=overrides, env=env)


#: The policy of each kind's stock configuration (``target.policy: auto``): the reference server's
#: default; ejabberd's stock config sets ``max_user_sessions: 10`` (with target.max_sessions 10);
#: Prosody's core has no per-account limit, only same-resource replacement; an XMPP server the
#: user runs is assumed to be RFC 6120's many-resources default unless the config says otherwise.
KIND_POLICIES = {"embedded": "single_platform", "ejabberd": "max_sessions", "prosody": "unlimited"}


def default_policy(t: "TargetConfig") -> str:
    """The policy ``auto`` stands for on target ``t``."""
    if t.kind == "external":
        return "unlimited" if t.wire == "xmpp" else "single_platform"
    return KIND_POLICIES[t.kind]


def config_from_mapping(raw: Mapping, *, overrides: Sequence[str] = (),
                        env: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from a plain mapping (a parsed config file, or the
    master's effective config sent to a worker); ``overrides`` and ``env`` as in load_config."""
    raw = _deepcopy(dict(raw))
    _faults_list_form(raw)
    for item in overrides:
        _apply_set(raw, item)
        _faults_list_form(raw)
    env = os.environ if env is None else env
    target = raw.setdefault("target", {}) if isinstance(raw.get("target", {}), dict) else raw["target"]
    if isinstance(target, dict):
        if env.get("CHAT_SDKAPPID"):
            try:
                target["sdkappid"] = int(env["CHAT_SDKAPPID"])
            except ValueError:
                raise ConfigError("CHAT_SDKAPPID", f"expected an integer, got {env['CHAT_SDKAPPID']!r}") from None
        if env.get("CHAT_SECRET_KEY"):
            target["secret_key"] = env["CHAT_SECRET_KEY"]
        if env.get("CHAT_ADMIN"):
            target["admin"] = env["CHAT_ADMIN"]
    cfg = _build(Config, raw, "")
    if cfg.target.kind == "embedded" and cfg.target.host:  # a host given: the target is the user's server
        cfg = replace(cfg, target__kind="external")
    if cfg.target.policy == "auto":
        cfg = replace(cfg, target__policy=default_policy(cfg.target))
    _validate_semantics(cfg)
    return cfg


def _faults_list_form(raw: Any) -> None:
    """``faults: [...]`` (a bare list) is short for ``faults: {schedule: [...]}``."""
    if isinstance(raw, dict) and isinstance(raw.get("faults"), list):
        raw["faults"] = {"schedule": raw["faults"]}


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def replace(cfg: Config, **sections: Any) -> Config:
    """A copy of ``cfg`` with whole sections or ``section__key`` values replaced."""
    out: dict[str, Any] = {}
    for key, value in sections.items():
        sec, _, name = key.partition("__")
        if name:
            base = out.get(sec, getattr(cfg, sec))
            out[sec] = dataclasses.replace(base, **{name: value})
        else:
            out[sec] = value
    return dataclasses.replace(cfg, **out)


SECRET_KEYS = ("secret_key",)


def masked(cfg: Config) -> dict:
    """The effective config as a plain dict with secrets replaced by ``***``."""
    d = cfg.as_dict()
    if d["target"].get("secret_key"):
        d["target"]["secret_key"] = "***"
    return d


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(masked(cfg), sort_keys=False, default_flow_style=None)

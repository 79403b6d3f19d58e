"""Settings of the reference login server: one frozen dataclass, validated from a table.

Rules (the table ``_SPECS`` below is the single source of truth for types and ranges):

* ``ServerSettings(...)`` validates itself (errors name ``target.<field>``).
* ``ServerSettings.from_mapping(d)`` reads the ``target:`` section of config.yaml; it ignores
  keys that are not server settings and NEVER reads ``host``/``port`` from the mapping (there
  ``host`` is the URL of an external target; the bind address comes from CLI flags only).
* Faults are ``NAME[:RATE]`` strings, RATE a fraction 0..1 (default 1.0).

Times are seconds (float unless noted), sizes bytes.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from harness.errors import ConfigError
from harness.protocol import POLICIES as POLICY_NAMES  # one list of policies (PROTOCOL.md §4)

#: Seeded faults (all off by default); see harness/targets/server/core.py for what each one does.
FAULT_NAMES: tuple[str, ...] = ("drop_kick", "dup_kick", "double_login", "kick_newest", "delay_expiry")

#: Keys of a config mapping that belong to the client side or to the bind address; never read.
_NOT_READ = frozenset({"host", "port"})


def parse_fault(text: str) -> tuple[str, float]:
    """Parse ``NAME[:RATE]`` into ``(name, rate)``; raises ``ValueError`` with one sentence."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected NAME[:RATE], got {text!r}")
    name, sep, rate_text = text.strip().partition(":")
    if name not in FAULT_NAMES:
        raise ValueError(f"unknown fault {name!r}; expected one of {', '.join(FAULT_NAMES)}")
    rate = 1.0
    if sep:
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(f"fault {name!r}: RATE must be a number 0..1, got {rate_text!r}") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {name!r}: RATE must be within 0..1, got {rate_text!r}")
    return name, rate





# ---------------------------------------------------------------------------------------
# Validation table: field -> (kind, check). kind: "int" | "float" | "bool" | "str" | ...
# check(value) returns an error sentence or None.
# ---------------------------------------------------------------------------------------


def _between(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"expected a value within {lo:g}..{hi:g}, got {v!r}"

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else f"expected one of {', '.join(options)}, got {v!r}"

    return check


def _nonempty(v: Any) -> str | None:
    return None if v else "must not be empty (set it, or env CHAT_SECRET_KEY / --secret-key)"


def _admin(v: Any) -> str | None:
    ok = 1 <= len(v) <= 32 and all(c.isascii() and (c.isalnum() or c in "_-") for c in v)
    return None if ok else f"expected a userID of 1-32 characters [A-Za-z0-9_-], got {v!r}"


def _host(v: Any) -> str | None:
    if v == "localhost":
        return None
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return f"expected an IP address, got {v!r}"
    return None


def _faults(v: Any) -> str | None:
    for item in v:
        try:
            parse_fault(item)
        except ValueError as exc:
            return str(exc)
    return None


def _none(_: Any) -> str | None:
    return None


_SPECS: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "host": ("str", _host),
    "port": ("int", _between(0, 65535)),
    "sdkappid": ("int", _between(1, 2**63 - 1)),
    "secret_key": ("str", _nonempty),
    "admin": ("str", _admin),
    "policy": ("str", _choice(POLICY_NAMES)),
    "native_instances": ("int", _between(1, 3)),
    "web_instances": ("int", _between(1, 10)),
    "max_sessions": ("int", _between(1, 100)),
    "leeway_s": ("int", _between(0, 3600)),
    "require_import": ("bool", _none),
    "lockout_failures": ("int", _between(1, 1_000_000)),
    "lockout_window_s": ("float", _between(0.001, 86400)),
    "lockout_s": ("float", _between(0, 86400)),
    "max_frame_bytes": ("int", _between(256, 16 * 1024 * 1024)),
    "handshake_timeout_s": ("float", _between(0.05, 3600)),
    "idle_timeout_s": ("float", _between(0.05, 86400)),
    "max_bad_frames": ("int", _between(1, 1_000_000)),
    "sweep_interval_s": ("float", _between(0.01, 1)),
    "ledger": ("optstr", _none),
    "faults": ("faults", _faults),
    "fault_seed": ("optint", _none),
    "fault_delay_s": ("float", _between(0, 3600)),
}


def _coerce(key: str, kind: str, value: Any) -> Any:
    """Type-check one value (no silent conversion of strings); raises ConfigError."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(key, f"expected {expected}, got {value!r}")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "optstr":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise bad("a path (string)")
        return value
    if kind == "optint":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer or null")
        return value
    if kind == "faults":
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise bad("a list of NAME[:RATE] strings")
        return tuple(value)
    raise AssertionError(kind)  # pragma: no cover - table is static


@dataclass(frozen=True)
class ServerSettings:
    """Every knob of the reference server (seconds for ``*_s``, bytes for sizes).

    ``faults`` holds ``NAME[:RATE]`` strings (see ``FAULT_NAMES``); ``fault_seed`` seeds
    their random source; ``fault_delay_s`` is how late ``delay_expiry`` pushes userSigExpired.
    """

    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8080
    sdkappid: int = 1400000000
    admin: str = "administrator"
    policy: str = "single_platform"
    native_instances: int = 1
    web_instances: int = 1
    max_sessions: int = 10
    leeway_s: int = 5
    require_import: bool = False
    lockout_failures: int = 10
    lockout_window_s: float = 60.0
    lockout_s: float = 60.0
    max_frame_bytes: int = 65536
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 90.0
    max_bad_frames: int = 20
    sweep_interval_s: float = 0.25
    ledger: str | None = None
    faults: tuple[str, ...] = ()
    fault_seed: int | None = None
    fault_delay_s: float = 8.0

    def __post_init__(self) -> None:
        for f in fields(self):
            kind, check = _SPECS[f.name]
            key = f"target.{f.name}"
            value = _coerce(key, kind, getattr(self, f.name))
            if value is not getattr(self, f.name):
                object.__setattr__(self, f.name, value)
            msg = check(value)
            if msg:
                raise ConfigError(key, msg)

    @property
    def fault_rates(self) -> dict[str, float]:
        """Enabled faults as ``{name: rate}`` (a later entry for the same name wins)."""
        return dict(parse_fault(x) for x in self.faults)

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], key_prefix: str = "target", **bind: Any) -> "ServerSettings":
        """Build settings from a config section (e.g. config.yaml's ``target:``).

        Keys that are not server settings are ignored, and so are ``host``/``port`` (pass the
        bind address as keyword arguments ``host=``/``port=`` instead). Errors are
        :class:`ConfigError` naming ``<key_prefix>.<key>``.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(key_prefix, f"expected a mapping of settings, got {type(d).__name__}")
        if d.get("policy") == "auto":  # the harness config's "the kind's stock policy": this server's default
            d = {**d, "policy": cls.policy}
        values: dict[str, Any] = {}
        for name, (kind, check) in _SPECS.items():
            if name in _NOT_READ:
                if name in bind:
                    raw = bind[name]
                else:
                    continue
            elif name in d:
                raw = d[name]
            else:
                continue
            key = f"{key_prefix}.{name}" if key_prefix else name
            value = _coerce(key, kind, raw)
            msg = check(value)
            if msg:
                raise ConfigError(key, msg)
            values[name] = value
        if "secret_key" not in values:
            key = f"{key_prefix}.secret_key" if key_prefix else "secret_key"
            raise ConfigError(key, _nonempty(""))
        return cls(**values)

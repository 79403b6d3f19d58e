"""``python -m harness.server``: run the reference login server.

Precedence: ``--config`` file (``target:`` section) < env (CHAT_SECRET_KEY, CHAT_ADMIN,
CHAT_SDKAPPID) < command-line flags. The first stdout line is exactly
``listening on http://HOST:PORT``. Bad flags/config: one line on stderr, exit 2.
SIGINT/SIGTERM: clean shutdown (websockets closed, ledger flushed), exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any, Callable, NoReturn, Sequence

from harness.errors import ConfigError
from harness.targets.server.settings import FAULT_NAMES, POLICY_NAMES, ServerSettings
from harness.util import is_loopback

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2

#: (flag dest = settings field, argparse kwargs). Every setting except secret_key's source rules.
_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("host", {"help": "bind address (default 127.0.0.1; a non-loopback address is announced on stderr)"}),
    ("port", {"type": int, "help": "bind port; 0 picks a free one (default 8080)"}),
    ("sdkappid", {"type": int, "help": "SDKAppID served (default 1400000000)"}),
    ("secret_key", {"help": "HMAC secret key (prefer env CHAT_SECRET_KEY: argv shows in ps)"}),
    ("admin", {"help": "REST admin identifier (default administrator; env CHAT_ADMIN)"}),
    ("policy", {"choices": POLICY_NAMES, "help": "multi-client login policy (default single_platform)"}),
    ("native_instances", {"type": int, "help": "multi_platform: sessions per native platform, 1-3"}),
    ("web_instances", {"type": int, "help": "Web sessions allowed, 1-10"}),
    ("max_sessions", {"type": int, "help": "max_sessions: sessions per user, all platforms together, 1-100 (default 10)"}),
    ("leeway_s", {"type": int, "help": "UserSig clock leeway, s (default 5)"}),
    ("require_import", {"action": argparse.BooleanOptionalAction, "help": "unknown accounts get 70107"}),
    ("lockout_failures", {"type": int, "help": "UserSig failures per user that lock it out (default 10)"}),
    ("lockout_window_s", {"type": float, "help": "... within this window, s (default 60)"}),
    ("lockout_s", {"type": float, "help": "lockout duration, s (default 60)"}),
    ("max_frame_bytes", {"type": int, "help": "largest frame; bigger -> close 1009 (default 65536)"}),
    ("handshake_timeout_s", {"type": float, "help": "TCP closed if no request within this, s (default 10)"}),
    ("idle_timeout_s", {"type": float, "help": "close 1001 after this long without a frame, s (default 90)"}),
    ("max_bad_frames", {"type": int, "help": "malformed frames in a row before close 1008 (default 20)"}),
    ("sweep_interval_s", {"type": float, "help": "expiry sweeper period, s, <= 1 (default 0.25)"}),
    ("ledger", {"metavar": "PATH", "help": "append the session ledger (JSONL) to PATH"}),
    ("faults", {"metavar": "NAME[:RATE]", "action": "append", "dest": "faults", "flag": "--fault",
                "help": "seeded fault (repeatable): " + ", ".join(FAULT_NAMES)}),
    ("fault_seed", {"type": int, "help": "seed of the fault random source"}),
    ("fault_delay_s", {"type": float, "help": "delay_expiry lateness, s (default 8)"}),
)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (every default is None so the config file can fill gaps)."""
    p = _Parser(prog="python -m harness.server", description="Reference chat login server (PROTOCOL.md).")
    p.add_argument("--config", metavar="PATH", help="YAML file; its target: section gives defaults")
    flags: dict[str, str] = {}
    for field, spec in _FLAGS:
        spec = dict(spec)
        flag = spec.pop("flag", _flag(field))
        spec.setdefault("dest", field)
        spec["default"] = None
        p.add_argument(flag, **spec)
        flags[field] = flag
    p.set_defaults(_flags=flags)
    return p


def _load_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError("--config", f"{path} is not valid YAML{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError("--config", f"{path} must hold a mapping with a target: section")
    section = doc.get("target", {})
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError("target", f"expected a mapping in {path}, got {type(section).__name__}")
    return dict(section)


def settings_from_args(argv: Sequence[str] | None, environ: dict[str, str]) -> ServerSettings:
    """Parse flags (+ config file + env) into settings; raises ConfigError (or exits 2 on bad syntax)."""
    args = build_parser().parse_args(argv)
    flags: dict[str, str] = args._flags
    merged: dict[str, Any] = _load_config(args.config) if args.config else {}
    origin: dict[str, str] = {}
    for env_name, field in (("CHAT_SECRET_KEY", "secret_key"), ("CHAT_ADMIN", "admin"), ("CHAT_SDKAPPID", "sdkappid")):
        value = environ.get(env_name)
        if value:
            if field == "sdkappid":
                try:
                    value = int(value)  # type: ignore[assignment]
                except ValueError:
                    raise ConfigError(env_name, f"expected an integer, got {value!r}") from None
            merged[field] = value
            origin[field] = env_name
    bind: dict[str, Any] = {"host": "127.0.0.1", "port": 8080}
    for field in flags:
        value = getattr(args, field)
        if value is None:
            continue
        if field in bind:
            bind[field] = value
        else:
            merged[field] = value
        origin[field] = flags[field]
    try:
        return ServerSettings.from_mapping(merged, "target", **bind)
    except ConfigError as exc:
        field = exc.key.rpartition(".")[2]
        if field in origin:
            raise ConfigError(origin[field], exc.message) from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        settings = settings_from_args(argv, dict(os.environ))
    except ConfigError as exc:
        print(f"python -m harness.server: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not is_loopback(settings.host):
        print(f"python -m harness.server: warning: binding non-loopback address {settings.host}; "
              "the server is reachable from other hosts", file=sys.stderr, flush=True)
    if settings.ledger:
        try:
            open(settings.ledger, "a", encoding="utf-8").close()
        except OSError as exc:
            print(f"python -m harness.server: error: --ledger: cannot open {settings.ledger}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        _runner_run(_amain(settings))
    except OSError as exc:
        print(f"python -m harness.server: error: cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _announce(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"listening on http://{shown}:{port}\n")
    sys.stdout.flush()


async def _amain(settings: ServerSettings) -> None:
    from harness.targets.server.app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    watcher = None
    parent = os.environ.get("CHAT_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        watcher = asyncio.create_task(_watch_parent(int(parent), stop))
    try:
        await serve(settings, stop, _announce)
    finally:
        if watcher is not None:
            watcher.cancel()


async def _watch_parent(pid: int, stop: asyncio.Event, period_s: float = 0.5) -> None:
    """Embedded use: shut down cleanly when the harness process that started us is gone
    (e.g. it was SIGKILLed), so no orphan server outlives its run."""
    while not stop.is_set():
        if os.getppid() != pid:
            print("python -m harness.server: the harness that started this server is gone; shutting down",
                  file=sys.stderr, flush=True)
            stop.set()
            return
        await asyncio.sleep(period_s)


def _runner_run(coro: Any) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional (not on Windows)
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


if __name__ == "__main__":
    sys.exit(main())

"""TCP fault proxy: between the harness and any target, no root needed.

On a seeded ``fraction`` of the connections and during a time window it adds latency and
jitter, resets connections (RST), black-holes them (bytes silently dropped), or cuts them
after N bytes (FIN mid-stream, so a frame is torn). Everything else is forwarded unchanged.

    python -m harness.targets.faultproxy --upstream HOST:PORT [--listen 127.0.0.1:0] [--seed N]
                                 [--fault JSON ...] [--control]

The first stdout line is ``listening on tcp://HOST:PORT``. ``--fault`` takes
``{"kind": ..., "at_s": s, "duration_s": s, ...}`` (times after the proxy starts). With
``--control`` the proxy reads JSON commands on stdin, one per line, and exits at EOF (its
parent went away):

* ``{"cmd": "fault", "id": str, "kind": ..., "start": unix_s, "end": unix_s, "fraction": 0..1,
  "latency_ms": ms, "jitter_ms": ms, "after_bytes": n}`` (absolute window)
* ``{"cmd": "stats"}`` -> one JSON line on stdout
* ``{"cmd": "clear"}`` -> every open window closes now (each reports ``fault_end``)

Whenever a window closes the proxy prints ``{"event": "fault_end", "id", "kind",
"affected": connections it acted on, "seen": connections alive during the window}``.

Semantics per kind (``picked(seed, connection, fault, fraction)`` decides, per connection):

* ``latency``: each chunk read from a picked connection during the window is written
  ``latency_ms + uniform(0, jitter_ms)`` ms later, in each direction (a request/response
  round trip gains about twice that); order is kept per direction.
* ``reset``: picked connections alive at the window's start, and picked new ones while it
  lasts, are aborted with RST on both sides.
* ``blackhole``: the first chunk of a picked connection inside the window starts the black
  hole: from then on nothing is forwarded either way until a side closes (the stream is
  broken, so it never resumes).
* ``cut``: a picked connection that forwards data inside the window is closed (FIN, both
  sides) as soon as it has carried ``after_bytes`` bytes in total; the chunk that crosses the
  limit is forwarded only up to it.

The proxy listens on loopback only. Times: unix seconds (float) unless a name says ms.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from harness.util import is_loopback

KINDS: tuple[str, ...] = ("latency", "reset", "blackhole", "cut")
CHUNK = 65536
#: Stop reading a side while this many bytes wait to be written to the other one.
HIGH_WATER = 1 << 20

EXIT_OK, EXIT_CONFIG = 0, 2


# ----------------------------------------------------------------------------- pure core
@dataclass(frozen=True)
class ProxyFault:
    """One fault window: ``start`` <= now < ``end`` (unix s) on ``fraction`` of the connections."""

    id: str
    kind: str
    start: float
    end: float
    fraction: float = 1.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    after_bytes: int = 0

    def active(self, now: float) -> bool:
        """True while the window is open at ``now`` (unix s)."""
        return self.start <= now < self.end


def parse_fault(obj: Any, *, now: float, default_id: str) -> ProxyFault:
    """A :class:`ProxyFault` from a command mapping; absolute ``start``/``end`` (unix s) or
    ``at_s``/``duration_s`` relative to ``now``. Raises ValueError with one sentence."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"a fault must be a JSON object, got {obj!r}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def num(key: str, default: float, lo: float, hi: float) -> float:
        v = obj.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"fault {key} must be a number within {lo:g}..{hi:g}, got {v!r}")
        return float(v)

    if "start" in obj or "end" in obj:
        start = num("start", 0.0, 0.0, 1e11)
        end = num("end", 0.0, start, 1e11)
    else:
        start = now + num("at_s", 0.0, 0.0, 86400.0)
        end = start + num("duration_s", 0.0, 0.0, 86400.0)
    fid = obj.get("id", default_id)
    return ProxyFault(id=str(fid)[:64], kind=kind, start=start, end=end,
                      fraction=num("fraction", 1.0, 0.0, 1.0),
                      latency_ms=num("latency_ms", 0.0, 0.0, 600_000.0),
                      jitter_ms=num("jitter_ms", 0.0, 0.0, 600_000.0),
                      after_bytes=int(num("after_bytes", 0, 0, float(1 << 40))))


def picked(seed: int, conn_id: int, fault_id: str, fraction: float) -> bool:
    """Whether fault ``fault_id`` acts on connection ``conn_id``: a deterministic draw per
    (seed, fault, connection), uniform in [0, 1), compared with ``fraction``."""
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    h = hashlib.blake2b(f"{seed}:{fault_id}:{conn_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64 < fraction


@dataclass
class ChunkPlan:
    """What to do with one chunk: ``reset`` both sides; ``drop`` it (black hole); forward only
    ``keep`` bytes then close (``cut``; None = all, no cut); write it ``delay_s`` later.
    ``acted``: ids of the faults that changed something (a connection they act on is *affected*)."""

    reset: bool = False
    drop: bool = False
    keep: int | None = None
    delay_s: float = 0.0
    acted: list[str] = field(default_factory=list)


def plan_chunk(faults: Sequence[ProxyFault], *, seed: int, conn_id: int, now: float, size: int,
               forwarded: int, blackholed: bool, rng: random.Random) -> ChunkPlan:
    """Decide the fate of a ``size``-byte chunk of connection ``conn_id`` that has already
    forwarded ``forwarded`` bytes (both directions), under the faults active at ``now``."""
    plan = ChunkPlan(drop=blackholed)
    for f in faults:
        if not f.active(now) or not picked(seed, conn_id, f.id, f.fraction):
            continue
        if f.kind == "reset":
            plan.reset = True
        elif f.kind == "blackhole":
            plan.drop = True
        elif f.kind == "cut":
            budget = max(0, f.after_bytes - forwarded)
            if budget >= size:
                continue  # not yet: nothing done to this chunk
            plan.keep = budget if plan.keep is None else min(plan.keep, budget)
        elif f.kind == "latency":
            plan.delay_s += (f.latency_ms + rng.uniform(0.0, f.jitter_ms)) / 1000.0
        plan.acted.append(f.id)
    return plan


# ----------------------------------------------------------------------------- the proxy
class _Conn:
    __slots__ = ("cid", "cw", "uw", "forwarded", "blackholed", "done", "release", "pending", "queue", "then")

    def __init__(self, cid: int, cw: asyncio.StreamWriter) -> None:
        self.cid = cid
        self.cw = cw
        self.uw: asyncio.StreamWriter | None = None
        self.forwarded = 0
        self.blackholed = False
        self.done = False
        self.release = [0.0, 0.0]   # per direction: when the last delayed chunk is due (loop time)
        self.pending = [0, 0]       # per direction: delayed bytes not yet written
        # per direction: FIFO of (due, bytes); timers may fire out of order (uvloop rounds to
        # ms), so one timer per direction drains the queue head-first: order is always kept
        self.queue: tuple[deque, deque] = (deque(), deque())
        self.then: list[Callable[[], None] | None] = [None, None]  # run once the queue drained


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST (SO_LINGER 0)."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.is_closing():
        writer.close()


class FaultProxy:
    """The asyncio proxy. ``start()`` binds; ``add_fault()`` schedules a window; ``close()``."""

    def __init__(self, upstream: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0), seed: int = 0,
                 out: Callable[[dict], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.upstream = upstream
        self.listen = listen
        self.seed = seed
        self.out = out or (lambda _obj: None)
        self.clock = clock
        self.faults: list[ProxyFault] = []
        self.conns: dict[int, _Conn] = {}
        self.accepted = 0
        self.affected: dict[str, set[int]] = {}
        self.seen: dict[str, set[int]] = {}
        self._next_id = 0
        self._rng = random.Random(seed)
        self._server: asyncio.AbstractServer | None = None
        self._closed: set[str] = set()
        self._tasks: set[asyncio.Future] = set()
        self.port = 0

    async def start(self) -> int:
        """Bind the listening socket; returns the port."""
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1], backlog=4096,
                                                  limit=CHUNK)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self.conns.values()):
            self._finish(c, reset=False)
        for t in list(self._tasks):
            t.cancel()

    # ------------------------------------------------------------------ faults
    def add_fault(self, fault: ProxyFault) -> None:
        """Schedule ``fault`` (absolute window): the reset sweep at its start, the report at its end.
        Fault ids are unique: adding an id again replaces nothing and is ignored."""
        if fault.id in self.affected:
            return
        loop = asyncio.get_running_loop()
        self.faults.append(fault)
        self.affected.setdefault(fault.id, set())
        self.seen.setdefault(fault.id, set())
        now = self.clock()
        loop.call_later(max(0.0, fault.start - now), self._window_opens, fault)
        loop.call_later(max(0.0, fault.end - now), self._window_closes, fault)

    def _window_opens(self, fault: ProxyFault) -> None:
        if fault.id in self._closed:
            return
        self.seen[fault.id].update(self.conns)
        if fault.kind != "reset":
            return
        for c in list(self.conns.values()):
            if picked(self.seed, c.cid, fault.id, fault.fraction):
                self.affected[fault.id].add(c.cid)
                self._finish(c, reset=True)

    def clear(self) -> None:
        """Close every open or pending window now (each reports ``fault_end``)."""
        for f in list(self.faults):
            self._window_closes(f)
        self.faults = []

    def _window_closes(self, fault: ProxyFault) -> None:
        if fault.id in self._closed:
            return
        self._closed.add(fault.id)
        self.out({"event": "fault_end", "id": fault.id, "kind": fault.kind,
                  "affected": len(self.affected.get(fault.id, ())), "seen": len(self.seen.get(fault.id, ()))})
        self.faults = [f for f in self.faults if f is not fault and f.end > self.clock() - 1.0]

    def stats(self) -> dict:
        return {"event": "stats", "accepted": self.accepted, "live": len(self.conns),
                "affected": {k: len(v) for k, v in self.affected.items()}}

    # ------------------------------------------------------------------ connections
    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self._next_id += 1
        self.accepted += 1
        c = _Conn(self._next_id, cw)
        self.conns[c.cid] = c
        now = self.clock()
        for f in self.faults:
            if f.active(now):
                self.seen[f.id].add(c.cid)
                if f.kind == "reset" and picked(self.seed, c.cid, f.id, f.fraction):
                    self.affected[f.id].add(c.cid)
                    self._finish(c, reset=True)
                    return
        try:
            host, port = self.upstream
            local = None
            peer = cw.get_extra_info("peername")
            if peer and _is_loopback(host) and _is_loopback(peer[0]) and ":" not in peer[0]:
                local = (peer[0], 0)  # spread upstream ports over 127.0.0.x like the harness does
            ur, uw = await asyncio.open_connection(host, port, local_addr=local, limit=CHUNK)
        except OSError:
            self._finish(c, reset=True)  # like a refused connection
            return
        if c.done:
            _close(uw)
            return
        c.uw = uw
        up = asyncio.ensure_future(self._pump(c, cr, uw, 0))
        down = asyncio.ensure_future(self._pump(c, ur, cw, 1))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.gather(up, down, return_exceptions=True)
        self._finish(c, reset=False)

    async def _pump(self, c: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, d: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not c.done:
                data = await src.read(CHUNK)
                if not data:
                    if c.queue[d]:
                        c.then[d] = lambda: _close(dst)  # after the delayed bytes
                    elif dst.can_write_eof() and not dst.is_closing():
                        try:
                            dst.write_eof()
                        except (OSError, RuntimeError):
                            pass
                    return
                if c.done:
                    return
                now = self.clock()
                plan = plan_chunk(self.faults, seed=self.seed, conn_id=c.cid, now=now, size=len(data),
                                  forwarded=c.forwarded, blackholed=c.blackholed, rng=self._rng) \
                    if self.faults else ChunkPlan(drop=c.blackholed)
                for fid in plan.acted:
                    self.affected.setdefault(fid, set()).add(c.cid)
                if plan.reset:
                    self._finish(c, reset=True)
                    return
                if plan.drop:
                    c.blackholed = True
                    continue
                if plan.keep is not None:
                    data = data[:plan.keep]
                c.forwarded += len(data)
                if plan.delay_s > 0 or c.queue[d]:
                    at = max(loop.time() + plan.delay_s, c.release[d])
                    c.release[d] = at
                    self._enqueue(c, dst, d, at, data)
                    if c.pending[d] > HIGH_WATER:
                        await asyncio.sleep(max(0.0, at - loop.time()))
                elif data:
                    dst.write(data)
                    if dst.transport.get_write_buffer_size() > HIGH_WATER:
                        await dst.drain()
                if plan.keep is not None:  # cut: close both sides once this chunk is out
                    if c.queue[d]:
                        c.then[d] = lambda: self._finish(c, False)
                    else:
                        self._finish(c, False)
                    return
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            self._finish(c, reset=True)

    def _enqueue(self, c: _Conn, dst: asyncio.StreamWriter, d: int, at: float, data: bytes) -> None:
        q = c.queue[d]
        q.append((at, data))
        c.pending[d] += len(data)
        if len(q) == 1:
            asyncio.get_running_loop().call_at(at, self._drain_queue, c, dst, d)

    def _drain_queue(self, c: _Conn, dst: asyncio.StreamWriter, d: int) -> None:
        """Write every queued chunk that is due, oldest first; re-arm for the next one."""
        loop = asyncio.get_running_loop()
        q = c.queue[d]
        now = loop.time() + 0.001  # timers fire up to a ms early
        while q and q[0][0] <= now:
            _at, data = q.popleft()
            c.pending[d] -= len(data)
            if data and not c.done and not dst.is_closing():
                dst.write(data)
        if q:
            loop.call_at(q[0][0], self._drain_queue, c, dst, d)
        elif c.then[d] is not None:
            then, c.then[d] = c.then[d], None
            then()

    def _finish(self, c: _Conn, reset: bool = False) -> None:
        if c.done:
            return
        c.done = True
        self.conns.pop(c.cid, None)
        if reset:
            _abort(c.cw)
            _abort(c.uw)
        else:
            _close(c.cw)
            _close(c.uw)


_is_loopback = is_loopback


# ----------------------------------------------------------------------------- CLI
def _hostport(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag}: expected HOST:PORT, got {text!r}")
    return host, int(port)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness.targets.faultproxy", description="TCP fault proxy (loopback only).")
    p.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the target to forward to")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="loopback address to listen on (default 127.0.0.1:0 = a free port)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-connection picks and the jitter")
    p.add_argument("--fault", action="append", default=[], metavar="JSON",
                   help='a fault, e.g. {"kind": "reset", "at_s": 5, "duration_s": 1, "fraction": 0.5} (repeatable)')
    p.add_argument("--control", action="store_true", help="read JSON commands on stdin; exit at EOF")
    return p


def _print(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on bad arguments, one line on stderr)."""
    args = build_parser().parse_args(argv)
    prog = "python -m harness.targets.faultproxy"
    try:
        upstream = _hostport(args.upstream, "--upstream")
        listen = _hostport(args.listen, "--listen")
        if not _is_loopback(listen[0]):
            raise ValueError(f"--listen: the proxy listens on loopback only, got {listen[0]!r}")
        now = time.time()
        faults = [parse_fault(json.loads(text), now=now, default_id=f"f{i}") for i, text in enumerate(args.fault)]
    except json.JSONDecodeError as exc:
        print(f"{prog}: error: --fault: not valid JSON ({exc.msg})", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        _run(_amain(upstream, listen, args.seed, faults, args.control))
    except OSError as exc:
        print(f"{prog}: error: cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return EXIT_OK


async def _amain(upstream: tuple[str, int], listen: tuple[str, int], seed: int, faults: list[ProxyFault],
                 control: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass
    proxy = FaultProxy(upstream, listen=listen, seed=seed, out=_print)
    port = await proxy.start()
    shown = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
    sys.stdout.write(f"listening on tcp://{shown}:{port}\n")
    sys.stdout.flush()
    for f in faults:
        proxy.add_fault(f)
    if control:
        _start_control(loop, proxy, stop)
    try:
        await stop.wait()
    finally:
        await proxy.close()


def _start_control(loop: asyncio.AbstractEventLoop, proxy: FaultProxy, stop: asyncio.Event) -> None:
    """A thread reads stdin lines and hands them to the loop; EOF stops the proxy."""
    counter = [0]

    def handle(line: str) -> None:
        try:
            cmd = json.loads(line)
        except ValueError:
            _print({"event": "error", "error": "command is not valid JSON"})
            return
        what = cmd.get("cmd") if isinstance(cmd, dict) else None
        if what == "fault":
            counter[0] += 1
            try:
                proxy.add_fault(parse_fault(cmd, now=time.time(), default_id=f"c{counter[0]}"))
            except ValueError as exc:
                _print({"event": "error", "error": str(exc)})
        elif what == "stats":
            _print(proxy.stats())
        elif what == "clear":
            proxy.clear()
        else:
            _print({"event": "error", "error": f"unknown command {what!r} (expected fault, stats, clear)"})

    def reader() -> None:
        for raw in sys.stdin:
            if raw.strip():
                loop.call_soon_threadsafe(handle, raw)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, name="faultproxy-control", daemon=True).start()


def _run(coro: Any) -> None:
    factory = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


if __name__ == "__main__":
    sys.exit(main())

"""Hostile input against the reference server (a benchmark, not a test: prints figures).

Starts ``python -m harness.server`` on 127.0.0.1 (a free port; stopped by its pid) and, from
this process (asyncio, raw sockets: frames are built by hand so that anything can be sent):

1. **fuzz**: >= 100,000 random and mutated frames and UserSigs over real connections:
   random text and JSON, mutated valid requests, random/mutated/oversized sigs and zlib
   bombs, deep nesting and huge numbers, plus the frames that must end a connection
   (binary -> 1003, oversize -> 1009, invalid UTF-8 -> 1007, unmasked / broken framing /
   compressed frames never negotiated -> 1002, 20 malformed frames in a row -> 1008). Every text frame
   must get exactly one answer (``{"seq", "code", "desc"}``, seq echoed when it was an int,
   a known code) or the documented close; 0 crashes, 0 tracebacks, server RSS bounded.
2. **siege**: N connections that never finish the handshake and N that log in and never
   speak must be closed by the limits, while other users log in: their p99 login latency
   is compared with a clean run (ratio; target <= 2).
3. **bruteforce**: random and bit-flipped sigs for one user from many connections: no forged
   sig is ever accepted, the 70050 lockout engages after ``lockout_failures`` failures, and
   other users' logins stay unaffected (codes, p99).

    .venv/bin/python bench/hostile.py                      # everything, 100,000 fuzz frames
    .venv/bin/python bench/hostile.py --only fuzz --frames 20000 --seed 7
    .venv/bin/python bench/hostile.py --only siege --siege 1000

The functions (``fuzz``, ``siege``, ``login_latencies``, ``bruteforce``) are also used, at
small scale, by tests/integration/test_hostile_*.py. Times: ms for latencies, s elsewhere.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import signal
import string
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.usersig import gen_usersig  # noqa: E402

SDKAPPID = 1400000000
#: Every code the reference server may answer a frame with (PROTOCOL.md §1, §3).
KNOWN_CODES = frozenset({0, 6014, 6017, 7003, 70001, 70002, 70003, 70009, 70013, 70014, 70020, 70050, 70052, 70107})
#: Codes that mean "this frame was malformed" (they count towards max_bad_frames).
BAD_FRAME_CODES = frozenset({6017, 7003})
PLATFORMS = ("Android", "iOS", "iPad", "Windows", "Mac", "Linux", "Web")
OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10


# ----------------------------------------------------------------------------- server process
@dataclass
class Server:
    """A server subprocess started by :func:`start_server` (stop it with :meth:`stop`)."""

    proc: subprocess.Popen
    host: str
    port: int
    secret: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident set size of the server process (bytes)."""
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM our own server by pid; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_server(*flags: str, secret: str = "hostile-bench-key", workdir: Path | None = None) -> Server:
    """``python -m harness.server --port 0 FLAGS`` with the key in the environment (never argv)."""
    workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    stderr_path = workdir / f"hostile-server-{os.getpid()}-{time.monotonic_ns()}.err"
    env = dict(os.environ, CHAT_SECRET_KEY=secret, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "harness.targets.server", "--port", "0", *flags],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
                                start_new_session=True)
    line = proc.stdout.readline().decode() if proc.stdout else ""  # type: ignore[union-attr]
    if not line.startswith("listening on http://"):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        raise RuntimeError(f"server did not start: {line!r} {stderr_path.read_text(errors='replace')[-500:]}")
    host, _, port = line.strip().removeprefix("listening on http://").rpartition(":")
    return Server(proc, host, int(port), secret, stderr_path)


def raise_fd_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ----------------------------------------------------------------------------- raw WebSocket
def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
                 key: bytes = b"\x11\x22\x33\x44") -> bytes:
    """One client WebSocket frame, built by hand (any opcode, RSV bits, masked or not)."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    return head + (key + _mask(payload, key) if mask else payload)


class RawWS:
    """A WebSocket client on a plain asyncio stream, sending hand-made frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, *, path: str = "/ws", timeout: float = 10.0,
                   local_addr: tuple[str, int] | None = None) -> "RawWS":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local_addr,
                                                                        limit=1 << 22), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            writer.close()
            raise ConnectionError(f"handshake refused: {head[:80]!r}")
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send(encode_frame(OP_TEXT, text.encode("utf-8", "surrogatepass")))

    async def recv(self, timeout: float) -> tuple[str, Any]:
        """("text", str) | ("close", code or None) | ("eof", None) | ("timeout", None); pings answered."""
        try:
            while True:
                h = await asyncio.wait_for(self.reader.readexactly(2), timeout)
                op, n = h[0] & 0x0F, h[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
                if op == OP_TEXT:
                    return "text", payload.decode("utf-8", "replace")
                if op == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return "close", code
                if op == OP_PING:
                    await self.send(encode_frame(OP_PONG, payload))
        except asyncio.TimeoutError:
            return "timeout", None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return "eof", None

    def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass


# ----------------------------------------------------------------------------- fuzz cases
@dataclass
class Case:
    """One frame to send. ``expect``: "answer" (a text frame that must be answered) or a close code."""

    kind: str
    frame: bytes
    expect: Any = "answer"
    text: str | None = None


_ALPHABET = string.printable + "éß漢字😀\u0000\u2028\ud7ff"


def _rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def _rand_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([None, True, False, rng.randint(-2**70, 2**70), rng.random() * 1e10, _rand_text(rng, rng.randint(0, 12)),
                           "login", "status", -1, 0, 2**63, 1.5])
    if r < 0.6:
        keys = ["cmd", "seq", "userID", "userSig", "platform", "instanceID", "sdkAppID"] + [_rand_text(rng, 3)]
        return {rng.choice(keys): _rand_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}
    return [_rand_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _flip_bits(rng: random.Random, text: str, flips: int) -> str:
    chars = list(text)
    for _ in range(flips):
        if not chars:
            break
        i = rng.randrange(len(chars))
        chars[i] = rng.choice(string.ascii_letters + string.digits + "*-_+/=")
    return "".join(chars)


def _zlib_bomb_sig(rng: random.Random, user: str) -> str:
    """A sig that inflates far beyond the 16 KiB cap yet stays under 4096 chars."""
    doc = ('{"TLS.ver":"2.0","TLS.identifier":"%s","TLS.sdkappid":%d,"TLS.expire":86400,"TLS.time":%d,'
           '"TLS.sig":"x","pad":"%s"}' % (user, SDKAPPID, int(time.time()), "A" * rng.choice([20_000, 500_000, 2_500_000])))
    raw = base64.b64encode(zlib.compress(doc.encode(), 9)).decode()
    return raw.replace("+", "*").replace("/", "-").replace("=", "_")


def _weird_sig(rng: random.Random, user: str, secret: str) -> str:
    good = gen_usersig(SDKAPPID, secret, user, 3600)
    pick = rng.randrange(9)
    if pick == 0:
        return _flip_bits(rng, good, rng.randint(1, 4))
    if pick == 1:
        return good[: rng.randrange(len(good))]
    if pick == 2:
        return "".join(rng.choice(string.ascii_letters + "*-_") for _ in range(rng.randint(0, 300)))
    if pick == 3:
        return _zlib_bomb_sig(rng, user)
    if pick == 4:
        return good * rng.randint(2, 40)                      # long, up to ~60 KB
    if pick == 5:
        return gen_usersig(SDKAPPID, "wrong-key", user, 3600)  # valid shape, wrong HMAC
    if pick == 6:
        return gen_usersig(SDKAPPID + 1, secret, user, 3600)   # other app
    if pick == 7:
        return gen_usersig(SDKAPPID, secret, user, 1, now=int(time.time()) - 3600)  # expired
    doc = json.dumps({"TLS.ver": "2.0", "TLS.identifier": rng.choice([user, 7, None]),
                      "TLS.sdkappid": rng.choice([SDKAPPID, "x", 1.5]), "TLS.expire": rng.choice([1, -5, "9"]),
                      "TLS.time": rng.choice([0, 2**40, None]), "TLS.sig": rng.choice(["", "AAAA", 3])})
    raw = base64.b64encode(zlib.compress(doc.encode())).decode()
    return raw.replace("+", "*").replace("/", "-").replace("=", "_")


def _valid_request(rng: random.Random, seq: int, user: str, secret: str) -> dict:
    cmd = rng.choice(["login", "login", "status", "heartbeat", "logout"])
    if cmd != "login":
        return {"cmd": cmd, "seq": seq}
    return {"cmd": "login", "seq": seq, "sdkAppID": SDKAPPID, "userID": user,
            "userSig": gen_usersig(SDKAPPID, secret, user, 3600), "platform": rng.choice(PLATFORMS),
            "instanceID": f"fz-{rng.randrange(1000)}"}


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        if not text:
            break
        i = rng.randrange(len(text))
        op = rng.randrange(6)
        if op == 0:
            text = text[:i] + text[i + 1:]
        elif op == 1:
            text = text[:i] + rng.choice(_ALPHABET) + text[i:]
        elif op == 2:
            text = text[:i] + rng.choice('{}[]",:0123456789-.eE\\') + text[i + 1:]
        elif op == 3:
            j = rng.randrange(len(text))
            text = text[:i] + text[min(i, j):max(i, j)] + text[i:]
        elif op == 4:
            text = text[:i]
        else:
            text = text.replace('"seq":', rng.choice(['"seq":"', '"seq":-', '"seq":1e9', '"seq":[', '"seq":true,"x":']), 1)
    return text


def make_case(rng: random.Random, seq: int, user: str, secret: str, max_frame: int) -> Case:
    """One fuzz case (weights favour frames that keep the connection open)."""
    r = rng.random()
    if r < 0.15:
        obj = _valid_request(rng, seq, user, secret)
        return _text_case("valid", json.dumps(obj))
    if r < 0.35:
        return _text_case("mutated", _mutate(rng, json.dumps(_valid_request(rng, seq, user, secret))))
    if r < 0.55:
        obj = {"cmd": "login", "seq": seq, "sdkAppID": SDKAPPID, "userID": user, "userSig": _weird_sig(rng, user, secret),
               "platform": rng.choice(PLATFORMS), "instanceID": "fz-sig"}
        return _text_case("sig", json.dumps(obj))
    if r < 0.70:
        return _text_case("json", json.dumps(_rand_json(rng)))
    if r < 0.82:
        return _text_case("text", _rand_text(rng, rng.randint(0, 200)))
    if r < 0.86:  # deep nesting, always within the frame limit
        if rng.random() < 0.5:
            depth = rng.choice([100, 1000, 20000, max_frame // 2 - 16])
            return _text_case("deep", "[" * depth + "]" * depth)
        depth = rng.choice([100, 1000, 5000, max_frame // 6 - 16])
        return _text_case("deep", '{"a":' * depth + "1" + "}" * depth)
    if r < 0.90:
        digits = rng.choice([20, 4299, 4301, 20000])
        return _text_case("bignum", '{"cmd":"status","seq":%s}' % ("9" * digits)
                          if rng.random() < 0.5 else '{"seq":1,"cmd":"login","sdkAppID":%s}' % ("1" * digits))
    if r < 0.92:
        return _text_case("surrogate", '{"cmd":"\\ud800","seq":%d,"userID":"\\udfff\\u0000"}' % seq)
    # frames that must end the connection
    r2 = rng.random()
    if r2 < 0.25:
        return Case("binary", encode_frame(OP_BIN, os.urandom(rng.randint(0, 64))), 1003)
    if r2 < 0.45:
        return Case("oversize", encode_frame(OP_TEXT, b"x" * (max_frame + 1 + rng.randrange(100_000))), 1009)
    if r2 < 0.65:
        bad = bytes([rng.choice([0xC0, 0xFF, 0xED, 0xF8])]) + b"\xa0\x80"
        return Case("invalid_utf8", encode_frame(OP_TEXT, b'{"cmd":"status","seq":1,"x":"' + bad + b'"}'), 1007)
    if r2 < 0.80:
        return Case("deflate_bomb", encode_frame(OP_TEXT, _DEFLATE_BOMB, rsv=4), 1002)   # RSV1 never negotiated
    if r2 < 0.90:
        return Case("unmasked", encode_frame(OP_TEXT, b'{"cmd":"status","seq":1}', mask=False), 1002)
    return Case("bad_opcode", encode_frame(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"x"), 1002)


def _deflate_bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(b"A" * 5_000_000) + c.flush(zlib.Z_SYNC_FLUSH)[:-4]


_DEFLATE_BOMB = _deflate_bomb()  # 5 MB of text in ~5 KB


def _text_case(kind: str, text: str) -> Case:
    return Case(kind, encode_frame(OP_TEXT, text.encode("utf-8", "surrogatepass")), "answer", text)


def _expected_seq(text: str) -> tuple[bool, Any]:
    """(parsed as an object with an int seq?, that seq) - as the server's parser sees it."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return False, None
    if isinstance(obj, dict):
        seq = obj.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            return True, seq
    return False, None


# ----------------------------------------------------------------------------- fuzz
@dataclass
class FuzzResult:
    """What a fuzz run saw. ``problems`` holds up to 20 examples of what went wrong."""

    frames: int = 0
    answered: int = 0
    unanswered: int = 0
    closes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    bad_answers: int = 0
    unexpected_closes: int = 0
    connections: int = 0
    problems: list = field(default_factory=list)
    seconds: float = 0.0
    rss_before: int = 0
    rss_after: int = 0
    rss_peak: int = 0

    def note(self, what: str, case: Case | None, got: Any) -> None:
        if len(self.problems) < 20:
            self.problems.append({"what": what, "kind": case.kind if case else None,
                                  "frame": (case.text or repr(case.frame[:60]))[:120] if case else None, "got": str(got)[:200]})

    @property
    def ok(self) -> bool:
        return self.unanswered == 0 and self.bad_answers == 0 and self.unexpected_closes == 0


async def fuzz(host: str, port: int, *, frames: int, secret: str, seed: int = 0, concurrency: int = 32,
               max_frame: int = 65536, max_bad_frames: int = 20, timeout: float = 10.0,
               rss: Any = None) -> FuzzResult:
    """Send ``frames`` fuzz frames over real connections (``concurrency`` at a time).

    Lockstep per connection: every text frame must get one answer (events are skipped) with
    a known code, ``seq`` echoed when the frame was an object with an int ``seq`` (else null),
    or the connection must close with the documented code: 1003 binary, 1009 oversize, 1007
    invalid UTF-8, 1002 broken framing, 1008 after ``max_bad_frames`` malformed frames in a
    row. ``rss``: a callable returning the server's RSS (bytes), sampled during the run.
    """
    res = FuzzResult()
    budget = [frames]
    t0 = time.monotonic()
    if rss is not None:
        res.rss_before = res.rss_peak = rss()

    async def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        k = 0
        while budget[0] > 0:
            k += 1
            user = f"fz{seed}w{w}c{k}"
            try:
                ws = await RawWS.open(host, port, timeout=timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                res.unanswered += 1
                res.note("connect failed", None, repr(exc))
                await asyncio.sleep(0.05)
                continue
            res.connections += 1
            try:
                await _fuzz_connection(ws, rng, user, res, budget, secret, max_frame, max_bad_frames, timeout)
            finally:
                ws.close()
            if rss is not None and res.connections % 50 == 0:
                res.rss_peak = max(res.rss_peak, rss())

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    res.seconds = time.monotonic() - t0
    if rss is not None:
        res.rss_after = rss()
        res.rss_peak = max(res.rss_peak, res.rss_after)
    return res


async def _fuzz_connection(ws: RawWS, rng: random.Random, user: str, res: FuzzResult, budget: list[int], secret: str,
                           max_frame: int, max_bad: int, timeout: float) -> None:
    seq = 0
    bad_in_row = 0
    burst = rng.random() < 0.05  # a connection that sends nothing but garbage: 1008 after max_bad
    while budget[0] > 0:
        seq += 1
        case = _text_case("burst", _rand_text(rng, rng.randint(1, 80))) if burst else \
            make_case(rng, seq, user, secret, max_frame)
        budget[0] -= 1
        res.frames += 1
        res.kinds[case.kind] += 1
        try:
            await ws.send(case.frame)
        except (OSError, ConnectionError) as exc:
            res.unanswered += 1
            res.note("send failed (connection dropped)", case, repr(exc))
            return
        if case.expect != "answer":
            kind, got = await _next_frame(ws, timeout)
            res.closes[got if kind == "close" else kind] += 1
            if kind != "close" or got != case.expect:
                res.unexpected_closes += 1
                res.note(f"expected close {case.expect}", case, (kind, got))
            return
        kind, got = await _next_frame(ws, timeout)
        if kind == "text":
            res.answered += 1
            try:
                ans = json.loads(got)
            except ValueError:
                ans = None
            has_seq, want = _expected_seq(case.text or "")
            if not (isinstance(ans, dict) and isinstance(ans.get("code"), int) and isinstance(ans.get("desc"), str)
                    and "seq" in ans and ans["code"] in KNOWN_CODES and ans["seq"] == (want if has_seq else None)):
                res.bad_answers += 1
                res.note("bad answer", case, got)
                return
            res.codes[ans["code"]] += 1
            bad_in_row = bad_in_row + 1 if ans["code"] in BAD_FRAME_CODES else 0
            if bad_in_row >= max_bad:
                kind, got = await _next_frame(ws, timeout)
                res.closes[got if kind == "close" else kind] += 1
                if kind != "close" or got != 1008:
                    res.unexpected_closes += 1
                    res.note(f"expected close 1008 after {max_bad} malformed frames", case, (kind, got))
                return
            continue
        res.unanswered += 1
        res.note("no answer", case, (kind, got))
        return


async def _next_frame(ws: RawWS, timeout: float) -> tuple[str, Any]:
    """The next non-event frame (events are server pushes, not answers)."""
    while True:
        kind, got = await ws.recv(timeout)
        if kind == "text" and got.startswith('{"event"'):
            continue
        return kind, got


# ----------------------------------------------------------------------------- logins
def _login_frame(seq: int, user: str, sig: str, platform: str = "Android", instance: str = "h-1") -> str:
    return json.dumps({"cmd": "login", "seq": seq, "sdkAppID": SDKAPPID, "userID": user, "userSig": sig,
                       "platform": platform, "instanceID": instance})


async def login_once(host: str, port: int, user: str, sig: str, *, timeout: float = 10.0,
                     keep: bool = False) -> tuple[int, float, RawWS | None]:
    """Connect + login; (code or -1, ms from connect start to the answer, the open ws if ``keep``)."""
    t = time.perf_counter()
    try:
        ws = await RawWS.open(host, port, timeout=timeout)
    except (OSError, ConnectionError, asyncio.TimeoutError):
        return -1, (time.perf_counter() - t) * 1000, None
    await ws.send_text(_login_frame(1, user, sig))
    kind, got = await _next_frame(ws, timeout)
    ms = (time.perf_counter() - t) * 1000
    code = -1
    if kind == "text":
        try:
            code = int(json.loads(got).get("code", -1))
        except (ValueError, AttributeError, TypeError):
            code = -1
    if keep and code == 0:
        return code, ms, ws
    ws.close()
    return code, ms, None


async def login_latencies(host: str, port: int, secret: str, *, n: int, concurrency: int = 20,
                          prefix: str = "lat") -> tuple[list[float], Counter]:
    """``n`` connect+login+close flows, ``concurrency`` at a time: (latencies ms, codes)."""
    lat: list[float] = []
    codes: Counter = Counter()
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            user = f"{prefix}{i}"
            code, ms, _ = await login_once(host, port, user, gen_usersig(SDKAPPID, secret, user, 3600))
            lat.append(ms)
            codes[code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, codes


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]


# ----------------------------------------------------------------------------- siege
@dataclass
class SiegeResult:
    """``silent``/``idle`` connections opened; how many the server closed and the slowest close (s)."""

    silent: int = 0
    silent_closed: int = 0
    silent_slowest_s: float = 0.0
    idle: int = 0
    idle_logged_in: int = 0
    idle_closed: int = 0
    idle_close_codes: Counter = field(default_factory=Counter)
    idle_slowest_s: float = 0.0
    during: tuple[list[float], Counter] = field(default_factory=lambda: ([], Counter()))


async def _wait_closed_tcp(reader: asyncio.StreamReader, deadline: float) -> float | None:
    t0 = time.monotonic()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = await asyncio.wait_for(reader.read(4096), left)
            if not data:
                return time.monotonic() - t0
    except asyncio.TimeoutError:
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - t0


async def siege(host: str, port: int, secret: str, *, silent: int, idle: int, wait_s: float,
                during_logins: int = 0, concurrency: int = 20, prefix: str = "sg") -> SiegeResult:
    """Open ``silent`` TCP connections that never send a byte (half of them a partial request
    line) and ``idle`` WebSocket connections that log in and never speak; wait up to
    ``wait_s`` for the server to close them all while ``during_logins`` other users log in."""
    res = SiegeResult(silent=silent, idle=idle)
    sources = [f"127.0.0.{i}" for i in range(2, 255)] if host.startswith("127.") else [None]
    silent_conns = []
    for i in range(silent):
        src = sources[i % len(sources)]
        r, w = await asyncio.open_connection(host, port, local_addr=(src, 0) if src else None)
        if i % 2:
            w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finished
        silent_conns.append((r, w))
    opened = time.monotonic()

    async def idle_one(i: int) -> tuple[int, RawWS | None]:
        user = f"{prefix}i{i}"
        code, _ms, ws = await login_once(host, port, user, gen_usersig(SDKAPPID, secret, user, 3600), keep=True)
        return code, ws

    idle_ws: list[RawWS] = []
    for chunk in range(0, idle, 100):
        got = await asyncio.gather(*(idle_one(i) for i in range(chunk, min(idle, chunk + 100))))
        idle_ws.extend(ws for code, ws in got if ws is not None)
    res.idle_logged_in = len(idle_ws)
    logged_in_at = time.monotonic()
    deadline = opened + wait_s

    async def watch_idle(ws: RawWS) -> None:
        kind, got = await ws.recv(max(0.1, logged_in_at + wait_s - time.monotonic()))
        if kind in ("close", "eof"):
            res.idle_closed += 1
            res.idle_close_codes[got if kind == "close" else "eof"] += 1
            res.idle_slowest_s = max(res.idle_slowest_s, time.monotonic() - logged_in_at)
        ws.close()

    async def watch_silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        took = await _wait_closed_tcp(r, deadline)
        if took is not None:
            res.silent_closed += 1
            res.silent_slowest_s = max(res.silent_slowest_s, time.monotonic() - opened)
        w.close()

    watchers = [watch_silent(r, w) for r, w in silent_conns] + [watch_idle(ws) for ws in idle_ws]
    jobs = [asyncio.gather(*watchers)]
    if during_logins:
        jobs.append(login_latencies(host, port, secret, n=during_logins, concurrency=concurrency, prefix=f"{prefix}d"))
    out = await asyncio.gather(*jobs)
    if during_logins:
        res.during = out[1]
    return res


# ----------------------------------------------------------------------------- brute force
@dataclass
class BruteResult:
    attempts: int = 0
    codes: Counter = field(default_factory=Counter)
    forged_accepted: int = 0
    first_lockout_at: int | None = None        # attempt index (1-based) of the first 70050
    valid_after_lockout: int | None = None     # code of a valid sig once locked out
    others: tuple[list[float], Counter] = field(default_factory=lambda: ([], Counter()))


async def bruteforce(host: str, port: int, secret: str, *, victim: str, attempts: int, connections: int = 8,
                     others: int = 0, seed: int = 0) -> BruteResult:
    """Guess sigs for ``victim`` (``attempts`` logins over ``connections`` connections, random and
    bit-flipped sigs) while ``others`` other users log in; then try the victim's valid sig."""
    res = BruteResult()
    rng = random.Random(seed)
    good = gen_usersig(SDKAPPID, secret, victim, 3600)
    counter = iter(range(attempts))

    async def guesser(c: int) -> None:
        ws = await RawWS.open(host, port)
        try:
            seq = 0
            for i in counter:
                seq += 1
                sig = _flip_bits(rng, good, rng.randint(1, 3)) if rng.random() < 0.7 else \
                    gen_usersig(SDKAPPID, f"guess{rng.random()}", victim, 3600)
                if sig == good:
                    continue
                await ws.send_text(_login_frame(seq, victim, sig, instance=f"bf{c}"))
                kind, got = await _next_frame(ws, 10)
                if kind != "text":
                    res.codes[f"closed:{got}"] += 1
                    return
                code = json.loads(got).get("code")
                res.attempts += 1
                res.codes[code] += 1
                if code == 0:
                    res.forged_accepted += 1
                if code == 70050 and res.first_lockout_at is None:
                    res.first_lockout_at = res.attempts
        finally:
            ws.close()

    jobs = [asyncio.gather(*(guesser(c) for c in range(connections)))]
    if others:
        jobs.append(login_latencies(host, port, secret, n=others, concurrency=min(others, 16), prefix=f"{victim}o"))
    out = await asyncio.gather(*jobs)
    if others:
        res.others = out[1]
    res.valid_after_lockout, _ms, _ = await login_once(host, port, victim, good)
    return res


# ----------------------------------------------------------------------------- main
def _fmt_counter(c: Counter, n: int = 12) -> str:
    return ", ".join(f"{k}: {v}" for k, v in c.most_common(n))


def _health(srv: Server) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{srv.host}:{srv.port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def run_fuzz(args: argparse.Namespace) -> bool:
    srv = start_server()
    try:
        res = asyncio.run(fuzz(srv.host, srv.port, frames=args.frames, secret=srv.secret, seed=args.seed,
                               concurrency=args.concurrency, rss=srv.rss_bytes))
        alive, healthy = srv.alive(), _health(srv)
    finally:
        code = srv.stop()
    err = srv.stderr()
    tracebacks = err.count("Traceback")
    grow = (res.rss_after - res.rss_before) / 2**20
    print(f"fuzz: {res.frames:,} frames over {res.connections:,} connections in {res.seconds:.1f} s "
          f"({res.frames / max(res.seconds, 1e-9):,.0f} frames/s)")
    print(f"  answered {res.answered:,}; unanswered {res.unanswered}; bad answers {res.bad_answers}; "
          f"unexpected closes {res.unexpected_closes}")
    print(f"  kinds: {_fmt_counter(res.kinds, 20)}")
    print(f"  codes: {_fmt_counter(res.codes)}")
    print(f"  closes: {_fmt_counter(res.closes)}")
    print(f"  server: alive {alive}, /healthz {healthy}, exit {code} on SIGTERM, tracebacks in stderr {tracebacks}")
    print(f"  server RSS: {res.rss_before / 2**20:.1f} MiB before, {res.rss_peak / 2**20:.1f} MiB peak, "
          f"{res.rss_after / 2**20:.1f} MiB after (growth {grow:+.1f} MiB; bound {args.rss_bound_mib} MiB)")
    for p in res.problems[:10]:
        print("  problem:", p)
    return res.ok and alive and healthy and tracebacks == 0 and grow <= args.rss_bound_mib


def run_siege(args: argparse.Namespace) -> bool:
    raise_fd_limit()
    hs, idle = 2.0, 2.0
    srv = start_server("--handshake-timeout-s", str(hs), "--idle-timeout-s", str(idle))
    try:
        clean, clean_codes = asyncio.run(login_latencies(srv.host, srv.port, srv.secret, n=args.logins,
                                                          concurrency=20, prefix="clean"))
        res = asyncio.run(siege(srv.host, srv.port, srv.secret, silent=args.siege, idle=args.siege,
                                wait_s=max(hs, idle) + 10, during_logins=args.logins, prefix="sg"))
        alive = srv.alive()
    finally:
        srv.stop()
    during, during_codes = res.during
    p99c, p99h = pct(clean, 0.99), pct(during, 0.99)
    ratio = (p99h / p99c) if p99c and p99h else float("nan")
    print(f"siege: {res.silent} connections that never finish the handshake, {res.idle_logged_in}/{res.idle} "
          f"that log in and never speak (handshake timeout {hs:g} s, idle timeout {idle:g} s)")
    print(f"  closed by the server: silent {res.silent_closed}/{res.silent} (slowest {res.silent_slowest_s:.2f} s), "
          f"idle {res.idle_closed}/{res.idle_logged_in} (slowest {res.idle_slowest_s:.2f} s after login; "
          f"codes {_fmt_counter(res.idle_close_codes)})")
    print(f"  {args.logins} concurrent logins (20 at a time): clean p50 {pct(clean, .5):.1f} ms p99 {p99c:.1f} ms; "
          f"under siege p50 {pct(during, .5):.1f} ms p99 {p99h:.1f} ms -> p99 ratio {ratio:.2f} (target <= 2)")
    print(f"  codes clean {_fmt_counter(clean_codes)}; under siege {_fmt_counter(during_codes)}; server alive {alive}")
    return (alive and res.silent_closed == res.silent and res.idle_closed == res.idle_logged_in
            and set(during_codes) == {0} and ratio <= 2.0)


def run_bruteforce(args: argparse.Namespace) -> bool:
    srv = start_server("--lockout-failures", "10", "--lockout-window-s", "60", "--lockout-s", "60")
    try:
        clean, _ = asyncio.run(login_latencies(srv.host, srv.port, srv.secret, n=args.logins, prefix="bfclean"))
        res = asyncio.run(bruteforce(srv.host, srv.port, srv.secret, victim="victim", attempts=args.brute,
                                     connections=16, others=args.logins, seed=args.seed))
        alive = srv.alive()
    finally:
        srv.stop()
    lat, codes = res.others
    p99c, p99o = pct(clean, .99), pct(lat, .99)
    print(f"bruteforce: {res.attempts:,} guessed sigs for one user over 16 connections: codes {_fmt_counter(res.codes)}")
    print(f"  forged sigs accepted {res.forged_accepted}; first 70050 at attempt {res.first_lockout_at} "
          f"(lockout_failures 10); the valid sig afterwards -> {res.valid_after_lockout}")
    print(f"  {len(lat)} other users meanwhile: codes {_fmt_counter(codes)}; p99 {p99o:.1f} ms vs clean {p99c:.1f} ms "
          f"(ratio {p99o / p99c:.2f}); server alive {alive}")
    return (alive and res.forged_accepted == 0 and res.first_lockout_at is not None
            and res.valid_after_lockout == 70050 and set(codes) == {0})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("fuzz", "siege", "bruteforce"), default=None)
    p.add_argument("--frames", type=int, default=100_000, help="fuzz frames (default 100,000)")
    p.add_argument("--concurrency", type=int, default=32, help="fuzz connections at a time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--siege", type=int, default=1000, help="silent and idle connections (each)")
    p.add_argument("--logins", type=int, default=2000, help="logins measured clean and under attack")
    p.add_argument("--brute", type=int, default=5000, help="guessed sigs")
    p.add_argument("--rss-bound-mib", type=float, default=64.0, help="allowed server RSS growth over the fuzz run")
    args = p.parse_args(argv)
    ok = True
    for name, fn in (("fuzz", run_fuzz), ("siege", run_siege), ("bruteforce", run_bruteforce)):
        if args.only in (None, name):
            good = fn(args)
            print(f"  => {name}: {'PASS' if good else 'FAIL'}\n")
            ok = ok and good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

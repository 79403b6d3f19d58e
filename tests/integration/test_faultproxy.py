"""The TCP fault proxy (harness/targets/faultproxy.py): pure decisions, then the real process between
a loopback client and a loopback echo server (every process and thread stopped in a finally)."""
from __future__ import annotations

import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.targets.faultproxy import ProxyFault, parse_fault, picked, plan_chunk

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- pure core
def test_picks_are_deterministic_per_seed_fault_and_connection():
    draws = [picked(7, cid, "f1", 0.3) for cid in range(2000)]
    assert draws == [picked(7, cid, "f1", 0.3) for cid in range(2000)]
    assert 450 < sum(draws) < 750                       # about 30 %
    assert draws != [picked(8, cid, "f1", 0.3) for cid in range(2000)]
    assert all(picked(1, c, "x", 1.0) for c in range(50)) and not any(picked(1, c, "x", 0.0) for c in range(50))


def test_plan_chunk_applies_only_active_faults_on_picked_connections():
    rng = random.Random(0)
    cut = ProxyFault("c", "cut", start=10, end=20, after_bytes=100)
    lat = ProxyFault("l", "latency", start=10, end=20, latency_ms=50, jitter_ms=0)

    def plan(now, size, forwarded, faults=(cut, lat)):
        return plan_chunk(list(faults), seed=0, conn_id=1, now=now, size=size, forwarded=forwarded,
                          blackholed=False, rng=rng)

    before = plan(9.9, 500, 0)
    assert (before.keep, before.delay_s, before.acted) == (None, 0.0, [])
    inside = plan(15, 500, 40)                          # 60 bytes left of the budget of 100
    assert inside.keep == 60 and inside.delay_s == pytest.approx(0.05) and inside.acted == ["c", "l"]
    assert plan(15, 50, 40).keep is None                # still under the budget: not cut yet
    assert plan(20, 500, 400).keep is None              # the window is over
    bh = plan_chunk([ProxyFault("b", "blackhole", 0, 5)], seed=0, conn_id=1, now=1, size=9, forwarded=0,
                    blackholed=False, rng=rng)
    assert bh.drop and not bh.reset


@pytest.mark.parametrize("obj, words", [
    ({"kind": "flood"}, "kind must be one of"),
    ({"kind": "reset", "fraction": 1.5}, "fraction must be a number within 0..1"),
    ({"kind": "cut", "after_bytes": "ten"}, "after_bytes"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_faults_are_one_sentence(obj, words):
    with pytest.raises(ValueError, match=words):
        parse_fault(obj, now=0.0, default_id="x")


# ----------------------------------------------------------------------------- processes
class Echo:
    """A threaded TCP echo server on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.received: list[bytes] = []  # per connection, in accept order
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(c)
            self.received.append(b"")
            threading.Thread(target=self._serve, args=(c, len(self.received) - 1), daemon=True).start()

    def _serve(self, c: socket.socket, i: int) -> None:
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                self.received[i] += data
                c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class Proxy:
    """``python -m harness.targets.faultproxy --control`` (stopped by pid)."""

    def __init__(self, upstream_port: int, seed: int = 3) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.targets.faultproxy", "--upstream",
                                      f"127.0.0.1:{upstream_port}", "--seed", str(seed), "--control"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=ROOT, env=env)
        line = self.readline(20)
        assert line.startswith("listening on tcp://127.0.0.1:"), line
        self.port = int(line.rsplit(":", 1)[1])
        self.seed = seed

    def readline(self, timeout: float = 5.0) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        ready = sel.select(timeout)
        sel.close()
        return self.proc.stdout.readline().decode().strip() if ready else ""  # type: ignore[union-attr]

    def fault(self, **kw) -> None:
        self.proc.stdin.write((json.dumps({"cmd": "fault", **kw}) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def report(self, fid: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.readline(max(0.05, deadline - time.monotonic()))
            if line:
                msg = json.loads(line)
                if msg.get("event") == "fault_end" and msg.get("id") == fid:
                    return msg
        raise AssertionError(f"no fault_end report for {fid}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def proxy(echo: Echo) -> Iterator[Proxy]:
    p = Proxy(echo.port)
    try:
        yield p
    finally:
        p.stop()


def connect(proxy: Proxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def roundtrip(s: socket.socket, data: bytes, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_bytes_pass_through_unchanged_without_faults(proxy):
    s = connect(proxy)
    payload = os.urandom(200_000)
    assert roundtrip(s, payload) == payload
    s.close()


def test_latency_delays_each_direction_and_keeps_order(proxy):
    s = connect(proxy)
    assert roundtrip(s, b"warm") == b"warm"
    now = time.time()
    proxy.fault(id="lat", kind="latency", start=now, end=now + 30, latency_ms=150, jitter_ms=50)
    time.sleep(0.1)
    t = time.monotonic()
    assert roundtrip(s, b"ping") == b"ping"
    assert time.monotonic() - t >= 0.3                   # 150 ms at least, each way
    s.settimeout(5)
    for i in range(30):                                  # many chunks, random jitter: order kept
        s.sendall(f"<{i}>".encode())
        time.sleep(0.002)
    want = "".join(f"<{i}>" for i in range(30)).encode()
    got = b""
    while len(got) < len(want):
        got += s.recv(65536)
    assert got == want
    s.close()


def test_reset_hits_exactly_the_picked_fraction_and_spares_the_rest(proxy):
    socks = []
    for _ in range(40):                                  # accepted in this order: ids 1..40
        s = connect(proxy)
        assert roundtrip(s, b"x") == b"x"
        socks.append(s)
    now = time.time()
    proxy.fault(id="rst", kind="reset", start=now + 0.2, end=now + 0.6, fraction=0.5)
    time.sleep(0.4)
    was_reset = []
    for s in socks:
        try:
            ok = roundtrip(s, b"y", timeout=2) == b"y"
        except (ConnectionResetError, BrokenPipeError):
            ok = False
        was_reset.append(not ok)
    expected = [picked(proxy.seed, cid, "rst", 0.5) for cid in range(1, 41)]
    assert was_reset == expected and 0 < sum(expected) < 40
    assert proxy.report("rst")["affected"] == sum(expected)
    time.sleep(0.3)
    s = connect(proxy)                                   # after the window: new connections are fine
    assert roundtrip(s, b"z") == b"z"
    for s2 in socks + [s]:
        s2.close()


def test_blackhole_swallows_bytes_for_good_but_new_connections_work_after(proxy):
    s = connect(proxy)
    assert roundtrip(s, b"a") == b"a"
    now = time.time()
    proxy.fault(id="bh", kind="blackhole", start=now, end=now + 0.5)
    time.sleep(0.05)
    s.settimeout(0.4)
    s.sendall(b"lost")
    with pytest.raises(TimeoutError):
        s.recv(10)
    time.sleep(0.6)
    s.sendall(b"still lost")                             # the stream is broken: it never resumes
    with pytest.raises(TimeoutError):
        s.recv(10)
    fresh = connect(proxy)
    assert roundtrip(fresh, b"new") == b"new"
    s.close()
    fresh.close()


def test_cut_forwards_exactly_after_bytes_then_closes(proxy, echo):
    s = connect(proxy)
    assert roundtrip(s, b"0123456789") == b"0123456789"  # 20 bytes carried (both directions)
    now = time.time()
    proxy.fault(id="cut", kind="cut", start=now, end=now + 30, after_bytes=30)
    time.sleep(0.05)
    s.settimeout(3)
    s.sendall(bytes(range(100)))
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    assert got == b""                                    # the budget is spent: nothing comes back
    deadline = time.monotonic() + 3
    while echo.received[0] != b"0123456789" + bytes(range(10)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo.received[0] == b"0123456789" + bytes(range(10))   # torn after exactly 30 bytes
    s.close()


def test_upstream_down_refuses_like_a_dead_server_and_the_proxy_lives_on(echo):
    p = Proxy(echo.port)
    try:
        echo.close()                                     # nothing listens upstream any more
        # The proxy resets the connection as soon as the upstream connect is refused: the
        # client sees the RST at its connect (when it lands before the connect completes,
        # as gevent's connect checks SO_ERROR after the socket turns writable), its send or
        # its receive. An orderly close (b"" from recv) or a timeout would fail this.
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            s = connect(p)
            try:
                s.settimeout(3)
                s.sendall(b"hello")
                s.recv(10)
            finally:
                s.close()
        assert p.proc.poll() is None
    finally:
        assert p.stop() == 0                             # SIGTERM: clean exit


@pytest.mark.parametrize("args, words", [
    (["--upstream", "127.0.0.1:1", "--listen", "0.0.0.0:0"], "loopback only"),
    (["--upstream", "nohost"], "expected HOST:PORT"),
    (["--upstream", "127.0.0.1:1", "--fault", "{nope"], "not valid JSON"),
    (["--upstream", "127.0.0.1:1", "--fault", '{"kind": "reset", "fraction": 7}'], "fraction"),
])
def test_bad_command_lines_exit_2_with_one_line(args, words):
    proc = subprocess.run([sys.executable, "-m", "harness.targets.faultproxy", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr

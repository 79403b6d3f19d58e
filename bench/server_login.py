"""Benchmark of the reference server (not a test): logins/s it sustains and RSS per idle session.

Starts ``python -m harness.server`` on 127.0.0.1 (a free port), drives it from this process
(a separate process: asyncio + aiohttp client, uvloop when available) and prints:

1. connect+login+close per second (each worker: new WebSocket, login, close; own userID);
2. login/logout per second on held connections;
3. server RSS per 1,000 idle logged-in sessions (psutil on the server pid);
plus the server's CPU share in each phase (near 100 % = the server is the bottleneck) and
the ratios between phases. Bounded: every phase stops at ``--seconds`` or ``--max-ops``.

    .venv/bin/python bench/server_login.py [--seconds 5] [--workers 64] [--idle 2000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.usersig import gen_usersig  # noqa: E402

SECRET = "bench-secret"
APP = 1400000000


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(policy: str) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, CHAT_SECRET_KEY=SECRET, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.targets.server", "--host", "127.0.0.1", "--port", "0", "--policy", policy],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
        preexec_fn=_raise_nofile)
    line = proc.stdout.readline().decode()  # type: ignore[union-attr]
    if not line.startswith("listening on http://"):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def login_frame(seq: int, user: str, sig: str, instance: str) -> str:
    return json.dumps({"cmd": "login", "seq": seq, "sdkAppID": APP, "userID": user, "userSig": sig,
                       "platform": "Android", "instanceID": instance}, separators=(",", ":"))


async def _answer(ws: aiohttp.ClientWebSocketResponse) -> dict:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"unexpected {msg.type}")
        frame = json.loads(msg.data)
        if "seq" in frame:
            return frame


async def phase_connect_login_close(url: str, workers: int, seconds: float, max_ops: int) -> tuple[int, int, float]:
    users = [f"bcl{i}" for i in range(workers)]
    sigs = [gen_usersig(APP, SECRET, u, 3600) for u in users]
    deadline = time.monotonic() + seconds
    done = 0
    errors = 0

    async def worker(i: int, http: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        frame = login_frame(1, users[i], sigs[i], "d")
        while time.monotonic() < deadline and done < max_ops:
            try:
                async with http.ws_connect(url, autoclose=True) as ws:
                    await ws.send_str(frame)
                    r = await _answer(ws)
                    if r["code"] == 0:
                        done += 1
                    else:
                        errors += 1
            except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
                errors += 1

    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.gather(*(worker(i, http) for i in range(workers)))
    return done, errors, time.monotonic() - t0


async def phase_held(url: str, workers: int, seconds: float, max_ops: int) -> tuple[int, int, float]:
    users = [f"bh{i}" for i in range(workers)]
    sigs = [gen_usersig(APP, SECRET, u, 3600) for u in users]
    done = 0
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        socks = [await http.ws_connect(url) for _ in range(workers)]
        deadline = time.monotonic() + seconds

        async def worker(i: int) -> None:
            nonlocal done, errors
            ws, seq = socks[i], 0
            logout = '{"cmd":"logout","seq":%d}'
            while time.monotonic() < deadline and done < max_ops:
                seq += 2
                await ws.send_str(login_frame(seq, users[i], sigs[i], "d"))
                r = await _answer(ws)
                await ws.send_str(logout % (seq + 1))
                await _answer(ws)
                if r["code"] == 0:
                    done += 1
                else:
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(workers)))
        elapsed = time.monotonic() - t0
        for ws in socks:
            await ws.close()
    return done, errors, elapsed


async def phase_idle_rss(url: str, n: int, server: psutil.Process) -> tuple[float, float, int]:
    """Returns (baseline RSS MiB, RSS MiB with n idle sessions, sessions actually live)."""
    base = server.memory_info().rss
    users = [f"idle{i}" for i in range(n)]
    live = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sem = asyncio.Semaphore(200)

        async def one(i: int):
            nonlocal live
            async with sem:
                ws = await http.ws_connect(url)
                await ws.send_str(login_frame(1, users[i], gen_usersig(APP, SECRET, users[i], 3600), "d"))
                if (await _answer(ws))["code"] == 0:
                    live += 1
                return ws

        socks = await asyncio.gather(*(one(i) for i in range(n)))
        await asyncio.sleep(1.0)
        loaded = server.memory_info().rss
        for ws in socks:
            await ws.close()
    return base / 2**20, loaded / 2**20, live


async def run(args: argparse.Namespace) -> None:
    proc, port = start_server("single_platform")
    url = f"ws://127.0.0.1:{port}/ws"
    server = psutil.Process(proc.pid)
    try:
        results = {}
        for name, phase in (("connect+login+close", phase_connect_login_close), ("login/logout held", phase_held)):
            server.cpu_percent(None)
            done, errors, elapsed = await phase(url, args.workers, args.seconds, args.max_ops)
            cpu = server.cpu_percent(None)
            results[name] = done / elapsed
            print(f"{name:22s} {done / elapsed:9.0f} logins/s  ({done} ok, {errors} errors, {elapsed:.1f} s, "
                  f"{args.workers} concurrent, server CPU {cpu:.0f}%)")
        base, loaded, live = await phase_idle_rss(url, args.idle, server)
        per_k = (loaded - base) / max(1, live) * 1000
        print(f"{'idle sessions':22s} {live} live: server RSS {base:.1f} MiB -> {loaded:.1f} MiB "
              f"= {per_k:.1f} MiB per 1,000 idle logged-in sessions")
        ratio = results["login/logout held"] / max(1e-9, results["connect+login+close"])
        print(f"ratio held/connect: {ratio:.2f}x (logins on held connections vs. with a new connection each)")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each rate phase (s)")
    p.add_argument("--max-ops", type=int, default=200_000, help="cap on logins per phase")
    p.add_argument("--workers", type=int, default=64, help="concurrent client flows")
    p.add_argument("--idle", type=int, default=2000, help="idle logged-in sessions for the RSS figure")
    args = p.parse_args()
    if not (0 < args.seconds <= 120 and 0 < args.workers <= 2000 and 0 < args.idle <= 15000):
        p.error("keep --seconds in 0..120, --workers in 1..2000, --idle in 1..15000")
    _raise_nofile()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(args))


if __name__ == "__main__":
    main()

"""Process lifecycle: CLI errors, config file, SIGTERM/SIGINT shutdown, the ledger (§7)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import aiohttp

from tests.integration.conftest import ROOT, SECRET, Chat, rest, run, uid

REASONS = {None, "logout", "switch", "relogin", "multi_device", "same_instance", "rest_kick", "sig_expired",
           "disconnect"}


def _cli(*args: str, env_secret: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CHAT_SECRET_KEY", "CHAT_ADMIN", "CHAT_SDKAPPID")}
    if env_secret:
        env["CHAT_SECRET_KEY"] = SECRET
    return subprocess.run([sys.executable, "-m", "harness.server", "--port", "0", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=20)


def test_bad_flags_and_config_exit_2_with_one_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("target: [1, 2\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("target:\n  policy: quad_platform\n")
    cases = [
        (("--policy", "nope"), True, "--policy"),
        (("--native-instances", "9"), True, "--native-instances"),
        (("--sweep-interval-s", "2"), True, "--sweep-interval-s"),
        (("--fault", "explode"), True, "--fault"),
        (("--fault", "drop_kick:1.5"), True, "--fault"),
        (("--port", "abc"), True, "--port"),
        (("--host", "not-an-ip"), True, "--host"),
        ((), False, "secret_key"),
        (("--config", str(tmp_path / "missing.yaml")), True, "--config"),
        (("--config", str(bad_yaml)), True, "--config"),
        (("--config", str(wrong)), True, "target.policy"),
        (("--ledger", str(tmp_path / "no-such-dir" / "l.jsonl")), True, "--ledger"),
    ]
    for args, secret, key in cases:
        res = _cli(*args, env_secret=secret)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_config_file_target_section_and_flags_win(launch_server, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "target:\n  host: ws://10.0.0.1:9999\n  rest_base: ''\n  ws_path: /ws\n  startup_timeout_s: 3\n"
        "  policy: multi_platform\n  native_instances: 2\n  web_instances: 3\n  sdkappid: 1400000000\n"
        "  faults: []\n")
    srv = launch_server("--config", str(conf), "--native-instances", "1")
    assert srv.host == "127.0.0.1"  # `host` in the file is the client-side target URL, not the bind address

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            a = await Chat.open(http, srv)
            b = await Chat.open(http, srv)
            w = await Chat.open(http, srv)
            assert (await a.login(user, platform="Android", instance="a1"))["code"] == 0
            assert (await w.login(user, platform="iOS", instance="i1"))["code"] == 0  # multi_platform: no kick
            rb = await b.login(user, platform="Android", instance="a2")  # native_instances 1 (flag wins)
            assert len(rb["data"]["kicked"]) == 1
            assert await w.drain(0.2) == []

    run(body())


def test_sigterm_flushes_ledger_in_order(launch_server):
    srv = launch_server(ledger=True)

    async def body():
        u1, u2, u3 = uid("led"), uid("led"), uid("led")
        async with aiohttp.ClientSession() as http:
            d1 = await Chat.open(http, srv)
            d2 = await Chat.open(http, srv)
            s1 = (await d1.login(u1, instance="one"))["data"]["sessionID"]
            s2 = (await d2.login(u1, instance="two"))["data"]["sessionID"]  # evicts s1
            s3 = (await d2.login(u2))["data"]["sessionID"]  # switch
            s4 = (await d2.login(u2))["data"]["sessionID"]  # relogin
            await d2.request("logout")
            s5 = (await d1.login(u3))["data"]["sessionID"]
            await rest(http, srv, "im_open_login_svc/kick", {"UserID": u3})
            await d1.drain(0.1)
            s6 = (await d2.login(u1))["data"]["sessionID"]  # still live at shutdown
            return s1, s2, s3, s4, s5, s6, u1, u2, u3

    s1, s2, s3, s4, s5, s6, u1, u2, u3 = run(body())
    assert srv.stop(signal.SIGTERM) == 0  # right away: the 0.5 s flush has likely not run yet
    assert "Traceback" not in srv.stderr()
    rows = srv.ledger_rows()
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    assert all(r["ts"] > 0 and r["reason"] in REASONS for r in rows)
    brief = [(r["event"], r["sessionID"], r["reason"], r["by"]) for r in rows]
    assert brief == [
        ("login", s1, None, None),
        ("end", s1, "multi_device", s2),  # the evicted session's end comes before the evictor's login
        ("login", s2, None, None),
        ("end", s2, "switch", None),
        ("login", s3, None, None),
        ("end", s3, "relogin", None),
        ("login", s4, None, None),
        ("end", s4, "logout", None),
        ("login", s5, None, None),
        ("end", s5, "rest_kick", None),
        ("login", s6, None, None),
        ("end", s6, "disconnect", None),
    ]
    assert rows[0]["userID"] == u1 and rows[0]["instanceID"] == "one" and rows[0]["platform"] == "Android"


def test_sigint_exits_cleanly_with_open_connections(launch_server):
    srv = launch_server()

    async def body():
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, srv)
            assert (await c.login(uid()))["code"] == 0
            os.kill(srv.pid, signal.SIGINT)
            code = await c.wait_closed(timeout=5)
            assert code == 1001

    run(body())
    assert srv.proc.wait(10) == 0
    assert "Traceback" not in srv.stderr()

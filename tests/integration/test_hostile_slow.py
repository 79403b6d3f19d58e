"""1,000 connections that open and never finish the handshake, or log in and never speak, are
closed by the server's limits (small limits here), while other users keep logging in."""
from __future__ import annotations

import asyncio

from bench.hostile import raise_fd_limit, siege


def test_a_thousand_silent_and_idle_connections_are_closed_by_the_limits(launch_server):
    assert raise_fd_limit() >= 2200, "needs ~2,000 sockets (the server inherits this limit)"
    srv = launch_server("--handshake-timeout-s", "1", "--idle-timeout-s", "1")
    res = asyncio.run(siege(srv.host, srv.port, srv.secret, silent=500, idle=500, wait_s=15, during_logins=100,
                            prefix="slow"))
    assert res.silent_closed == 500                      # TCP closed: no request within the handshake limit
    assert res.idle_logged_in == 500
    assert res.idle_closed == 500 and res.idle_close_codes == {1001: 500}   # close 1001 after the idle limit
    lat, codes = res.during
    assert codes == {0: 100}                             # everybody else logged in meanwhile
    assert srv.proc.poll() is None

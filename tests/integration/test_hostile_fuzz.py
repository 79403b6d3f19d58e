"""Fuzz at test scale (~2,000 random and mutated frames and sigs over real connections; the
100,000-frame run is ``bench/hostile.py``): every text frame is answered, every breach ends
with the documented close, and the server neither crashes nor grows."""
from __future__ import annotations

import asyncio
import urllib.request

import psutil

from bench.hostile import fuzz


def test_two_thousand_hostile_frames_all_answered_or_closed_as_documented(launch_server):
    srv = launch_server()
    proc = psutil.Process(srv.pid)
    res = asyncio.run(fuzz(srv.host, srv.port, frames=2000, secret=srv.secret, seed=11, concurrency=16,
                           rss=lambda: proc.memory_info().rss))
    assert res.frames == 2000
    assert res.unanswered == 0 and res.bad_answers == 0 and res.unexpected_closes == 0, res.problems
    # the mix really was hostile: each family of frames was sent and met its fate
    for kind in ("valid", "mutated", "sig", "json", "text", "deep", "bignum", "binary", "oversize",
                 "invalid_utf8", "deflate_bomb", "unmasked", "bad_opcode", "burst"):
        assert res.kinds[kind] > 0, kind
    assert res.closes[1003] and res.closes[1007] and res.closes[1002] and res.closes[1008] and res.closes[1009]
    assert "eof" not in res.closes and "timeout" not in res.closes   # every close came with its code
    assert {6017, 70003, 70009, 0} <= set(res.codes)
    # no crash, no traceback, memory bounded, still serving
    assert srv.proc.poll() is None
    with urllib.request.urlopen(f"{srv.base_url}/healthz", timeout=5) as r:
        assert r.status == 200
    assert "Traceback" not in srv.stderr() and "internal error" not in srv.stderr()
    assert res.rss_peak - res.rss_before < 64 * 2**20

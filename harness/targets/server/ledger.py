"""Session ledger (shared PROTOCOL.md section 7): one JSON object per line per session change.

Rows are appended to an in-memory buffer (never a file write on the request path) and written
by :meth:`Ledger.flush`, which the server calls at least every 0.5 s and on shutdown.
"""
from __future__ import annotations

import json
import time
from typing import IO

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Ledger:
    """Buffered JSONL writer. ``seq`` numbers rows in server order from 0; ``ts`` is unix ns."""

    __slots__ = ("path", "_fh", "_buf", "_seq")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8")
        self._buf: list[str] = []
        self._seq = 0

    def record(
        self,
        event: str,
        session_id: str,
        user_id: str,
        platform: str,
        instance_id: str,
        reason: str | None = None,
        by: str | None = None,
    ) -> None:
        """Append one row (``event`` is ``login`` or ``end``) to the buffer."""
        self._buf.append(_dumps({
            "seq": self._seq, "ts": time.time_ns(), "event": event, "sessionID": session_id,
            "userID": user_id, "platform": platform, "instanceID": instance_id,
            "reason": reason, "by": by,
        }))
        self._seq += 1

    @property
    def pending(self) -> int:
        """Rows buffered but not yet written."""
        return len(self._buf)

    def flush(self) -> None:
        """Write buffered rows and flush the file (no-op after :meth:`close`)."""
        if self._fh is None:
            return
        if self._buf:
            buf, self._buf = self._buf, []
            self._fh.write("\n".join(buf) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Flush and close; idempotent."""
        if self._fh is None:
            return
        self.flush()
        self._fh.close()
        self._fh = None

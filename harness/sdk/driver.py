"""The driver interface: what a wire protocol implements so the simulated SDK can run over it.

The SDK (``harness.sdk.ChatClient``) is protocol-free: the V2TIM status machine (1/2/3), 7501
while a login is in flight, ``getLoginUser`` empty after a failure, listener callbacks,
timeouts -> ``info``, heartbeats on a timer, reconnect pacing, the OpResult/journal fields.
A :class:`Driver` owns one transport (socket + its reader greenlet) and the protocol's codec;
it turns SDK calls into wire exchanges and pushes what the server does up to a :class:`Sink`.

Rules every driver keeps (the conformance suite in ``harness.drivers.conformance`` checks them):

1. Calls block the calling greenlet until answered, timed out or lost; they **never raise**
   on network or protocol trouble: they return a :class:`Reply` (``code`` -1 for transport
   trouble, ``outcome`` ``info`` when it is unknown whether the request took effect).
2. ``connect(deadline)`` opens the transport (TCP, WebSocket handshake, XMPP stream + STARTTLS
   ...). ``None`` when connected, else ``(outcome, desc)``.
3. ``login`` answers with the session it opened (``Reply.session_id``: a string unique per
   session on this server, e.g. the server's sessionID, or stream id + full JID). It calls
   ``sink.login_answered(reply, user_id)`` from the reader greenlet *before* it handles any
   later server frame, so an event that follows the answer on the wire is applied after it.
4. Events: ``sink.kicked(session_id, reason, by, at_ns)`` (``reason`` ``multi_device`` |
   ``same_instance`` | ``rest_kick`` | protocol text), ``sink.credential_expired(session_id,
   at_ns)``, ``sink.lost(reason, at_ns)`` once when the transport ends without ``close()``
   (``reason``: ``closed_by_server`` or ``error:<what>``; the condition goes in the text).
   Events run in the reader greenlet and must not block.
5. ``close()`` returns at once (a bounded background wait for the server's goodbye is fine);
   afterwards ``connect()`` may be called again. ``abort(reason)`` ends the transport at once,
   with no goodbye and no ``sink.lost`` (the SDK declared the link dead itself); calls still
   waiting end ``info``.
6. Unsupported calls (``status`` on a protocol with no server-side view) return ``None``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

__all__ = ["Driver", "Reply", "Sink", "UNSUPPORTED"]


@dataclass(slots=True)
class Reply:
    """A driver's answer to one call.

    ``outcome``: ``ok`` / ``fail`` (certainly did not take effect) / ``info`` (unknown: timeout,
    connection lost); ``code``: protocol code mapped onto the PROTOCOL.md table (0 ok, -1
    transport); ``desc``: short text (for XMPP: the condition, e.g. ``not-authorized``);
    ``data``: protocol answer (login: ``sessionID``, ``userID``, ``sigExpireAt``, ``kicked`` ...
    where the protocol has them); ``session_id``: the session the call produced or concerned.
    """

    outcome: str
    code: int
    desc: str
    data: dict | None = None
    session_id: str | None = None


#: Returned by ``Driver.status`` (and other optional calls) when the protocol has no such thing.
UNSUPPORTED = None


class Sink(Protocol):
    """What the SDK gives its driver: state changes and events, in wire order."""

    def login_answered(self, reply: Reply, user_id: str) -> None: ...
    def kicked(self, session_id: str | None, reason: str, by: dict | None, at_ns: int) -> None: ...
    def credential_expired(self, session_id: str | None, at_ns: int) -> None: ...
    def lost(self, reason: str, at_ns: int) -> None: ...


class Driver(Protocol):
    """One connection of one protocol. Times: ``timeout`` seconds, ``deadline`` ``time.monotonic()`` seconds."""

    #: protocol name as in ``target.protocol`` (``tim``, ``xmpp``)
    protocol: ClassVar[str]
    #: what this protocol offers beyond login/logout/heartbeat: ``status`` (server's view of the
    #: connection), ``expiry_push`` (the server ends a session when its credential expires),
    #: ``switch_in_place`` (a login for another user on the same transport), ``heartbeat_logged_out``
    #: (heartbeats work before a login; else the SDK skips beats while logged out)
    capabilities: ClassVar[frozenset[str]]

    sink: Sink

    def connect(self, deadline: float) -> tuple[str, str] | None: ...
    def login(self, user_id: str, credential: str, platform: str, instance_id: str, timeout: float) -> Reply: ...
    def logout(self, timeout: float) -> Reply: ...
    def heartbeat(self, timeout: float) -> Reply: ...
    def status(self, timeout: float) -> Reply | None: ...
    def close(self) -> None: ...
    def abort(self, reason: str) -> None: ...
    @property
    def connected(self) -> bool: ...
    def describe(self) -> dict[str, Any]: ...

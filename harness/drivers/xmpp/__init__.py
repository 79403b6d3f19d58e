"""XMPP driver (RFC 6120 / 6121 over TCP, RFC 7395 over WebSocket) for the protocol-free SDK.

* ``codec``  sans-IO: streaming parser -> events, builders, SASL PLAIN / SCRAM, condition -> code table.
* ``jwt``    HS256 tokens for ejabberd ``auth_method: jwt`` (sent as the PLAIN password).
* ``driver`` :class:`XmppDriver`, the gevent transport implementing ``harness.sdk.driver.Driver``.
"""
from harness.drivers.xmpp.driver import XmppDriver

__all__ = ["XmppDriver"]

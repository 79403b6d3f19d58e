"""Sans-IO XMPP client codec (RFC 6120 / 6121, RFC 7395 WebSocket framing): bytes in, events out.

No sockets, no clocks, no gevent: :class:`XmppCodec` is fed what the server sent and returns
high-level events; the builders return the text to send; :class:`ScramClient` does the SASL
SCRAM arithmetic (RFC 5802 / RFC 7677); :func:`map_condition` turns an XMPP error condition
into the harness's code table (``harness.protocol``). The gevent transport lives in
``driver.py``.

Parsing rules
-------------

* Streaming XML on expat + ElementTree's C ``TreeBuilder`` reporting ``start`` / ``end`` events
  (what ``XMLPullParser`` does, minus its per-event generator). In
  TCP mode one parser covers one XML stream: ``<stream:stream>`` is depth 1, each stanza or
  nonza is a depth-2 element, handled when its end tag arrives and then dropped from the tree
  (memory stays bounded by one stanza). In WebSocket mode (RFC 7395) every text frame must be
  exactly one complete element: the frames are fed into one parser under a private wrapper
  element, and a frame that does not leave the parser back at the wrapper with exactly one
  finished element is an error (``xml-not-well-formed``). The framing ``<open/>`` and
  ``<close/>`` are :class:`StreamOpened` and :class:`StreamClosed`.
* No entity expansion, ever: any ``<!DOCTYPE`` or ``<!ENTITY`` in the byte stream (also split
  across reads) is refused before the parser sees it (:class:`ParseError` ``restricted-xml``);
  undeclared entities are a well-formedness error of expat.
* Bounded: a stanza larger than ``max_stanza_bytes`` (default 256 KiB, measured as the bytes
  received since the last finished stanza, at 16 KiB granularity) gives
  ``ParseError(policy-violation, stanza-too-big)``; nesting deeper than ``max_depth`` the same
  with ``too-deep``.
* A restart (after :class:`SaslSuccess` or :class:`TlsProceed`) resets the parser by itself:
  events that followed in the same read are dropped (a compliant server sends nothing after
  ``<success/>`` until the client's new stream header). :meth:`XmppCodec.reset` does it by hand.
  After ``<success/>`` the codec keeps its expat parser when the read ended cleanly with it
  (building a parser costs more than a stanza): the new stream is parsed as a child of the
  old one (its XML declaration, when it is a plain ``version='1.x'`` [UTF-8] one, is checked
  and taken off first; anything else gets a fresh parser, as before). WebSocket mode keeps its
  parser across ``<success/>`` anyway (each frame is one element under the wrapper).
* TCP streams start in *fast mode* (``fast=True``, the default): complete stanzas made only of a
  strict subset of XML (plain ASCII tags, attributes and text, no references, comments, PIs,
  CDATA or ``<!``) are read without expat into the same elements, and what repeats verbatim
  (headers but their id, features, ``<success/>``) is memoised; the first byte outside the
  subset hands the stream to expat (stream header replayed), which then reads it as before.
  Same events, same verdicts, same limits (see "The fast path" below; the tests compare both
  modes on transcripts, at every byte boundary and under fuzzing). ``fast=False``: expat only.
* :meth:`XmppCodec.feed` never raises on input: malformed XML is a :class:`ParseError` event
  (``condition`` is the stream error to send back, ``reason`` the short detail for the journal:
  ``xml-not-well-formed``, ``restricted-xml``, ``stanza-too-big``, ``too-deep``). After a
  ParseError or the end of the stream the codec ignores further input.

Conditions -> codes (:func:`map_condition`; ``where`` is the step that failed)
-------------------------------------------------------------------------------

==================  ===========================  ======  ==================================
where               condition                    code    meaning in the harness's table
==================  ===========================  ======  ==================================
sasl                not-authorized               70009   bad credential (ejabberd JWT: also
                                                         expired / wrong-JID tokens)
sasl                credentials-expired          70001   USERSIG_EXPIRED
sasl                account-disabled             60004   INVALID_ACCOUNT (not a bad secret)
sasl                temporary-auth-failure       70169   INTERNAL_TIMEOUT (retry later)
sasl                invalid-authzid,             70402   ACCOUNT_INVALID_PARAMETERS
                    invalid-mechanism,
                    malformed-request,
                    mechanism-too-weak,
                    encryption-required,
                    incorrect-encoding
sasl                aborted, other               70500   INTERNAL_ERROR (name kept in desc)
bind                conflict                     6208    KICKED_OFF_BY_OTHER (Prosody
                                                         ``kick_new``: the resource is held)
bind                resource-constraint,         70050   LOGIN_FREQ_LIMIT (too many sessions)
                    policy-violation
bind                not-allowed, forbidden,      70009
                    not-authorized
bind                bad-request, jid-malformed   70402
bind                other                        70500
stream              conflict                     6208    replaced (while logging in)
stream              policy-violation             70050   ejabberd fail2ban / session limit
stream              not-authorized               70009
stream              host-unknown,                70402   wrong domain / bad addressing
                    improper-addressing
stream              other (system-shutdown,      -1      transport trouble (name in desc)
                    see-other-host, reset, ...)
==================  ===========================  ======  ==================================

``desc`` is always the bare condition name (``not-authorized``), so the journal keeps the
XMPP word; :func:`condition_label` gives the chart label (``NOT_AUTHORIZED``).
"""
from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Union

from harness import protocol

__all__ = [
    "NS_BIND", "NS_CLIENT", "NS_FRAMING", "NS_PING", "NS_SASL", "NS_SESSION", "NS_STANZAS",
    "NS_STREAM", "NS_STREAMS", "NS_TLS",
    "DEFAULT_MAX_STANZA_BYTES", "DEFAULT_MAX_DEPTH",
    "StreamOpened", "Features", "SaslChallenge", "SaslSuccess", "SaslFailure", "TlsProceed",
    "TlsFailure", "IqResult", "IqError", "IqRequest", "Ping", "StreamError", "StreamClosed",
    "ParseError", "Other", "Event", "EVENT_TYPES",
    "XmppCodec", "ScramClient", "ScramError", "salted_password", "plain_initial",
    "stream_header", "stream_close", "starttls", "auth", "sasl_response", "bind", "session",
    "presence", "unavailable_presence", "ping", "pong", "iq_error", "stream_error",
    "choose_mechanism", "map_condition", "condition_label", "xml_escape",
]

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_CLIENT = "jabber:client"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_PING = "urn:xmpp:ping"

DEFAULT_MAX_STANZA_BYTES = 256 * 1024
DEFAULT_MAX_DEPTH = 32
_PIECE = 16384  # input is fed to expat in pieces of at most this many bytes (size-check granularity)

_T_STREAM = f"{{{NS_STREAM}}}stream"
_T_FEATURES = f"{{{NS_STREAM}}}features"
_T_ERROR = f"{{{NS_STREAM}}}error"
_T_IQ = f"{{{NS_CLIENT}}}iq"
_T_OPEN = f"{{{NS_FRAMING}}}open"
_T_CLOSE = f"{{{NS_FRAMING}}}close"
_T_MECHS = f"{{{NS_SASL}}}mechanisms"
_T_MECH = f"{{{NS_SASL}}}mechanism"
_T_STARTTLS = f"{{{NS_TLS}}}starttls"
_T_REQUIRED = f"{{{NS_TLS}}}required"
_T_BIND = f"{{{NS_BIND}}}bind"
_T_JID = f"{{{NS_BIND}}}jid"
_T_SESSION = f"{{{NS_SESSION}}}session"
_T_OPTIONAL = f"{{{NS_SESSION}}}optional"
_T_PING = f"{{{NS_PING}}}ping"
_T_ERR = f"{{{NS_CLIENT}}}error"
_SASL_PREFIX = f"{{{NS_SASL}}}"
_TLS_PREFIX = f"{{{NS_TLS}}}"


# --------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The server's stream header (TCP ``<stream:stream>``, WebSocket ``<open/>``)."""

    id: str | None
    from_: str | None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Features:
    """``<stream:features>``: what the server offers at this point of the stream."""

    mechanisms: tuple[str, ...] = ()
    starttls: bool = False
    starttls_required: bool = False
    bind: bool = False
    session: bool = False  # <session/> advertised at all
    session_optional: bool = True  # True when absent or marked <optional/> (RFC 6121 errata)


@dataclass(frozen=True, slots=True)
class SaslChallenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class SaslSuccess:
    data: bytes  # additional data (SCRAM: the server-final message), b"" when none


@dataclass(frozen=True, slots=True)
class SaslFailure:
    condition: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class TlsProceed:
    pass


@dataclass(frozen=True, slots=True)
class TlsFailure:
    pass


@dataclass(frozen=True, slots=True)
class IqResult:
    id: str | None
    jid: str | None = None  # the bound full JID (bind result), else None
    element: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IqError:
    id: str | None
    condition: str
    text: str | None = None
    element: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IqRequest:
    """An iq get/set from the server that is not a ping (the client answers it with an error)."""

    id: str | None
    type: str
    from_: str | None
    element: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ping:
    """A server -> client XEP-0199 ping (iq get); answer it with :func:`pong`."""

    id: str | None
    from_: str | None


@dataclass(frozen=True, slots=True)
class StreamError:
    condition: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """``</stream:stream>`` (TCP) or ``<close/>`` (WebSocket)."""

    see_other_uri: str | None = None


@dataclass(frozen=True, slots=True)
class ParseError:
    """The input is not acceptable XMPP: ``condition`` is the stream error to answer with,
    ``reason`` the short detail (``xml-not-well-formed``, ``restricted-xml``,
    ``stanza-too-big``, ``too-deep``), ``text`` a human sentence."""

    condition: str
    reason: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class Other:
    """Any other stanza (message, presence, unknown nonza)."""

    stanza: Any = field(compare=False)

    @property
    def tag(self) -> str:
        return self.stanza.tag


Event = Union[StreamOpened, Features, SaslChallenge, SaslSuccess, SaslFailure, TlsProceed, TlsFailure,
              IqResult, IqError, IqRequest, Ping, StreamError, StreamClosed, ParseError, Other]
EVENT_TYPES: tuple[type, ...] = (StreamOpened, Features, SaslChallenge, SaslSuccess, SaslFailure, TlsProceed,
                                 TlsFailure, IqResult, IqError, IqRequest, Ping, StreamError, StreamClosed,
                                 ParseError, Other)


# --------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------

_FORBIDDEN_B = (b"<!DOCTYPE", b"<!ENTITY")
_FORBIDDEN_S = ("<!DOCTYPE", "<!ENTITY")
_WRAP = "<w>"
_XML_DECL_START = b"<?xml"
_XML_DECL = re.compile(rb"<\?xml\s+version\s*=\s*(['\"])1\.[0-9]+\1"
                       rb"(?:\s+encoding\s*=\s*(['\"])(?i:utf-8)\2)?(?:\s+standalone\s*=\s*(['\"])(?:yes|no)\3)?\s*\?>")


def _new_parser() -> tuple[Any, Any]:
    """(parser, event deque): expat + the C TreeBuilder reporting start/end events into the deque.

    The same wiring ``XMLPullParser`` does, without its per-event generator (about a third of
    the parse cost for small stanzas); ``feed`` raises ``ET.ParseError`` directly. Falls back
    to ``XMLPullParser`` where ``XMLParser._setevents`` is missing."""
    queue: Any = collections.deque()
    parser = ET.XMLParser(target=ET.TreeBuilder())
    setevents = getattr(parser, "_setevents", None)
    if setevents is None:  # pragma: no cover - other Python implementations
        pull = ET.XMLPullParser(events=("start", "end"))
        return _PullAdapter(pull), pull._events_queue
    setevents(queue, ("start", "end"))
    return parser, queue


class _PullAdapter:  # pragma: no cover - fallback only
    __slots__ = ("pull",)

    def __init__(self, pull: Any) -> None:
        self.pull = pull

    def feed(self, data: Any) -> None:
        self.pull.feed(data)
        q = self.pull._events_queue
        if q and isinstance(q[-1], Exception):
            raise q.pop()


# --------------------------------------------------------------------------------------
# The fast path (TCP): a strict subset of XML read without expat
# --------------------------------------------------------------------------------------
#
# What a login flow receives from ejabberd / Prosody is a handful of small, plain stanzas: the
# stream header, features, <success/>, the bind result, a presence. Building an expat parser
# and walking its events for them costs more than the stanzas are worth, so a stream starts in
# *fast mode*: complete items made only of the subset below are turned into the same
# ElementTree elements the TreeBuilder would build (then into events by the same code). The
# first byte that is not in the subset -- a partial item at the end of a read, a comment or
# PI, ``<!`` (so also DOCTYPE / ENTITY), ``&`` (any reference), CDATA, non-ASCII, a control
# character, ``]]>``, ``\r`` in text, tab / line feed / ``\r`` in an attribute value, an
# unbound or reserved prefix, a duplicate attribute, an item larger than ``max_stanza_bytes``
# or deeper than ``max_depth``, a self-closing or foreign stream header -- ends fast mode for
# the rest of the stream: an expat parser is made, the stream header read so far is replayed
# into it (silently: its event was already reported), and the bytes from that item on go
# through expat exactly as without the fast path. The subset accepts only what expat accepts,
# and builds the same tree for it; tests/unit/test_xmpp_codec.py checks both on every
# transcript and under fuzzing (fast vs ``fast=False`` give the same events).
#
# The subset: an optional ``<?xml version='1.0'?>`` (optionally ``encoding='UTF-8'``) at the
# very start of the stream; whitespace; tags ``<name (attr='value')*>`` / ``</name>`` /
# ``<name .../>`` with ASCII names ``[A-Za-z_][A-Za-z0-9_.-]*`` with at most one ``prefix:``;
# attribute values of printable ASCII without ``<``, ``&`` and the quote; text of printable
# ASCII, tab and line feed without ``<`` and ``&``.

_F_TOKEN = re.compile(rb"<(/?)([A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?)"
                      rb"((?:\s+[A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?\s*=\s*(?:'[^'<&\t\n\r]*'|\"[^\"<&\t\n\r]*\"))*)"
                      rb"\s*(/?)>")
_F_ATTR = re.compile(r"([A-Za-z_][\w.-]*)(?::([A-Za-z_][\w.-]*))?\s*=\s*(?:'([^']*)'|\"([^\"]*)\")", re.ASCII)
_F_VALUE = re.compile(rb"[^'<&\t\n\r]*")
_F_TEXT = re.compile(rb"[^<&\r]+")
_F_INSIDE = b"\t\n\r" + bytes(range(0x20, 0x7F))  # bytes the subset may contain; also never b"]]>"
_F_DECL = re.compile(rb"<\?xml\s+version\s*=\s*(['\"])1\.0\1(?:\s+encoding\s*=\s*(['\"])(?i:utf-8)\2)?\s*\?>")
_F_SPACE = re.compile(rb"[ \t\n\r]*")
_NS_XML = "http://www.w3.org/XML/1998/namespace"
_NS_XMLNS = "http://www.w3.org/2000/xmlns/"
_F_RESERVED = frozenset({_NS_XML, _NS_XMLNS})
# Memos (pure functions of their keys; bounded, cleared when full). Namespace contexts are
# canonical dicts (one per distinct set of bindings, never mutated), so a context's id() can key
# the memos; every entry keeps the context it was made in alive, so an id is never reused while
# an entry names it.
_F_SCOPES: dict = {}  # sorted bindings -> the canonical context dict
_F_TAGS: dict = {}  # (id(context), start tag bytes) -> (tag, attrib, inner context, context)
_F_ITEMS: dict = {}  # (id(context) + limits, first bytes) -> [(item bytes, event)], items that repeat
_F_ITEM_HEAD = 24  # the first bytes of an item that key its memo entries
_F_HEADS: dict = {}  # stream header bytes with the id's value taken out -> (context, raw name, attrib but id)
_F_MAX_SCOPES = 256
_F_MAX_TAGS = 2048
_F_MAX_TAG_BYTES = 256
_F_MAX_ITEMS = 64
_F_MAX_ITEM_BYTES = 4096
_F_CACHED = (Features, SaslSuccess)  # events without elements: shared safely


def _f_scope(scope: dict) -> dict:
    key = tuple(sorted(scope.items()))
    canon = _F_SCOPES.get(key)
    if canon is None:
        if len(_F_SCOPES) >= _F_MAX_SCOPES:
            _F_SCOPES.clear()
            _F_TAGS.clear()
            _F_ITEMS.clear()
        canon = _F_SCOPES[key] = scope
    return canon


_F_ROOT: dict = {}  # no bindings (the document level)


class _NotFast(Exception):
    """An item outside the fast subset: hand the stream to expat from that item on."""


def _f_tag(m: Any, ctx: dict) -> tuple[str, dict, dict]:
    """(expanded tag, attrib, context in scope) of a start-tag match; _NotFast when outside the subset."""
    raw_attrs = m.group(3)
    scope = ctx
    attrib: dict = {}
    if raw_attrs:
        pairs = _F_ATTR.findall(raw_attrs.decode("ascii"))
        decls = None
        seen = set()
        for prefix, local, v1, v2 in pairs:
            key = (prefix, local)
            if key in seen:
                raise _NotFast  # duplicate attribute
            seen.add(key)
            if prefix == "xmlns":
                value = v1 or v2
                if (local and (local in ("xml", "xmlns") or not value)) or value in _F_RESERVED:
                    raise _NotFast
                if decls is None:
                    decls = {}
                decls[local] = value
        if decls is not None:
            scope = dict(ctx)
            scope.update(decls)
        for prefix, local, v1, v2 in pairs:  # in document order, as expat reports them
            if prefix == "xmlns":
                continue
            if local:
                ns = _NS_XML if prefix == "xml" else scope.get(prefix)
                if not ns:
                    raise _NotFast  # unbound prefix (expat's error to report)
                name = f"{{{ns}}}{local}"
                if name in attrib:
                    raise _NotFast  # the same expanded name twice
                attrib[name] = v1 or v2
            else:
                attrib[prefix] = v1 or v2
    qname = m.group(2).decode("ascii")
    prefix, colon, local = qname.partition(":")
    if colon:
        ns = scope.get(prefix) if prefix not in ("xml", "xmlns") else None
        if not ns:
            raise _NotFast
        return f"{{{ns}}}{local}", attrib, scope
    ns = scope.get("")
    return (f"{{{ns}}}{qname}" if ns else qname), attrib, scope


def _f_element(data: bytes, pos: int, ctx: dict, max_depth: int) -> tuple[Any, int]:
    """One complete element at ``data[pos]`` (a stanza at depth 2) -> (element, end); _NotFast else."""
    stack: list = []  # (raw name, element, context, last closed child)
    root = None
    n = len(data)
    token = _F_TOKEN.match
    text = _F_TEXT.match
    while pos < n:
        if data[pos] != 60:  # text ('<' is 60)
            if not stack:
                raise _NotFast
            t = text(data, pos)
            if t is None:
                raise _NotFast
            pos = t.end()
            if pos >= n or data[pos] == 38:  # '&' or the end of the read
                raise _NotFast
            s = t.group().decode("ascii")
            top = stack[-1]
            if top[3] is not None:
                top[3].tail = s
            else:
                top[1].text = s
            continue
        m = token(data, pos)
        if m is None:
            raise _NotFast
        pos = m.end()
        if m.group(1):  # end tag
            if m.group(3) or m.group(4) or not stack or stack[-1][0] != m.group(2):
                raise _NotFast
            done = stack.pop()
            if not stack:
                return done[1], pos
            stack[-1][3] = done[1]
            continue
        if len(stack) + 2 > max_depth:
            raise _NotFast
        outer = stack[-1][2] if stack else ctx
        raw = m.group()
        hit = _F_TAGS.get((id(outer), raw))
        if hit is None:
            tag, attrib, scope = _f_tag(m, outer)
            if scope is not outer:
                scope = _f_scope(scope)
            if len(raw) <= _F_MAX_TAG_BYTES:
                if len(_F_TAGS) >= _F_MAX_TAGS:
                    _F_TAGS.clear()
                _F_TAGS[(id(outer), raw)] = (tag, attrib, scope, outer)
        else:
            tag, attrib, scope, _outer = hit
        if stack:
            parent = stack[-1]
            elem = ET.SubElement(parent[1], tag, attrib)
            parent[3] = None
        else:
            elem = root = ET.Element(tag, attrib)
        if m.group(4):  # self-closing
            if not stack:
                return root, pos
            stack[-1][3] = elem
            continue
        stack.append([m.group(2), elem, scope, None])
    raise _NotFast  # the read ended inside the element


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _b64(text: str | None) -> bytes:
    """SASL payload (RFC 6120 6.4.2: empty or ``=`` is no data). Raises ValueError on bad base64."""
    if not text:
        return b""
    text = text.strip()
    if text == "=" or not text:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64") from None


def _condition(elem: Any, ns: str) -> tuple[str, str | None]:
    """(first child condition in ``ns`` other than <text/>, the <text/>), ``undefined-condition`` if none."""
    cond = None
    text = None
    prefix = f"{{{ns}}}"
    for child in elem:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        local = _local(tag)
        if local == "text":
            text = child.text
        elif cond is None and (tag.startswith(prefix) or not tag.startswith("{") or ns == NS_SASL):
            cond = local
    return cond or "undefined-condition", text


class XmppCodec:
    """One XML stream's parser (client side). ``ws``: RFC 7395 framing (feed one frame per call).

    ``feed(data)`` -> list of events (see the module docstring); never raises on input.
    """

    __slots__ = ("ws", "max_stanza_bytes", "max_depth", "fast", "_parser", "_queue", "_root", "_depth", "_size",
                 "_tail", "_done", "_restarted", "_base", "_clean", "_decl", "_fctx", "_fhead", "_fraw", "_fkey")

    def __init__(self, *, ws: bool = False, max_stanza_bytes: int = DEFAULT_MAX_STANZA_BYTES,
                 max_depth: int = DEFAULT_MAX_DEPTH, fast: bool = True) -> None:
        self.ws = ws
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.fast = fast and not ws  # the fast path (TCP only; see "The fast path" above)
        self._parser: Any = None
        self.reset()

    @property
    def done(self) -> bool:
        """True after a ParseError or the end of the stream: further input is ignored."""
        return self._done

    def reset(self) -> None:
        """A new XML stream (stream restart after SASL success / STARTTLS). In fast mode the
        expat parser is made only when the stream leaves the fast subset."""
        self._depth = 0
        self._root: Any = None
        self._parser = None
        self._queue = None
        self._fctx: dict | None = None  # fast mode: namespaces in scope after the stream header
        self._fhead = b""  # fast mode: the stream header's bytes (replayed into expat on leaving)
        self._fraw = b""  # fast mode: the stream element's name as written (stream:stream)
        self._fkey: Any = None
        if not self.fast:
            self._start_parser()
        self._size = 0
        self._tail: bytes | str = b"" if not self.ws else ""
        self._done = False
        self._restarted = False
        self._base = 0  # TCP: how many restarted-over streams enclose the current one (same parser)
        self._clean = False  # the restart element ended the read (the parser can be kept)
        self._decl: bytes | None = None  # after a kept-parser restart: bytes held until the XML declaration is off

    def feed(self, data: bytes | str) -> list[Event]:
        """Parse ``data`` (TCP: any slice of the byte stream; WS: one whole text frame)."""
        if self._done or not data:
            return []
        try:
            if self.ws:
                return self._feed_frame(data)
            out: list[Event] = []
            if self._parser is None:  # fast mode
                data = self._feed_fast(data, out)
                if not data:
                    return out
            if self._decl is not None:
                data = self._strip_decl(data, out)
                if not data:
                    return out
            n = len(data)
            if n <= _PIECE:
                self._feed_piece(data, out)
            else:
                for at in range(0, n, _PIECE):
                    if self._done or self._restarted:
                        break
                    self._clean = False
                    self._feed_piece(data[at:at + _PIECE], out)
                    if at + _PIECE < n:
                        self._clean = False  # more bytes of this read follow the restart: not clean
            if self._restarted:
                self._restarted = False
                if self._clean and not self._done and not self.fast:
                    self._continue_stream()
                else:
                    self.reset()
            return out
        except Exception as exc:  # never let a parser problem escape to the transport
            return [self._fail("xml-not-well-formed", "xml-not-well-formed", f"{type(exc).__name__}: {exc}")]

    # ------------------------------------------------------------------ internals

    def _fail(self, condition: str, reason: str, text: str) -> ParseError:
        self._done = True
        self._parser = None
        self._root = None
        return ParseError(condition, reason, text)

    def _start_parser(self) -> None:
        parser, queue = _new_parser()
        self._queue = queue
        if self.ws:
            parser.feed(_WRAP)
            while queue:
                self._root = queue.popleft()[1]
            self._depth = 1
        self._parser = parser

    def _feed_fast(self, data: bytes | str, out: list[Event]) -> bytes | str:
        """Fast mode: read the complete items of ``data`` in the fast subset; returns what is left
        for expat (b"" when nothing: all read, the stream ended or restarted). On leaving fast
        mode the parser is made and the stream header replayed first."""
        old_tail = self._tail
        if type(data) is not bytes:
            return self._to_expat(data, 0, old_tail, False)
        if self._forbidden(data):  # before anything, as the expat path does
            out.append(self._fail("restricted-xml", "restricted-xml", "DOCTYPE / ENTITY declarations are refused"))
            return b""
        n = len(data)
        if n > _PIECE or data.translate(None, _F_INSIDE) or b"]]>" in data:
            return self._to_expat(data, 0, old_tail, False)
        start = pos = 0
        completed = False
        try:
            ctx = self._fctx
            if ctx is None:  # the stream header, at the very start of the stream
                pos, ctx, raw, sid, attrib = self._f_header(data)
                self._fhead = data[:pos]
                self._fraw = raw
                self._fctx = ctx
                self._fkey = (id(ctx), self.max_depth, self.max_stanza_bytes)
                out.append(StreamOpened(sid, attrib.get("from"), attrib.get("version")))
            elif data[1:2] == b"/" and data[2:-1] == self._fraw and data[-1:] == b">":  # </stream:stream>
                self._depth = 0
                self._done = True
                out.append(StreamClosed())
                return b""
            space = _F_SPACE.match
            while True:
                start = pos = space(data, pos).end()
                if pos >= n:
                    break
                if data[pos + 1:pos + 2] == b"/":  # only the stream's own end tag can come at depth 1
                    m = _F_TOKEN.match(data, pos)
                    if m is None or m.group(3) or m.group(4) or m.group(2) != self._fraw:
                        raise _NotFast
                    self._depth = 0
                    self._done = True
                    out.append(StreamClosed())
                    return b""
                ev = None
                known = _F_ITEMS.get((self._fkey, data[start:start + _F_ITEM_HEAD]))
                if known is not None:
                    for item, item_ev, _ctx in known:  # a memoised item is a whole element: if the bytes
                        if data.startswith(item, start):  # here start with it, it is the next one
                            ev = item_ev
                            pos = start + len(item)
                            break
                if ev is None:
                    elem, pos = _f_element(data, start, ctx, self.max_depth)
                    if pos - start > self.max_stanza_bytes:
                        raise _NotFast
                    ev = self._stanza(elem)
                    if type(ev) in _F_CACHED and _F_ITEM_HEAD <= pos - start <= _F_MAX_ITEM_BYTES:
                        if len(_F_ITEMS) >= _F_MAX_ITEMS:
                            _F_ITEMS.clear()
                        same = _F_ITEMS.setdefault((self._fkey, data[start:start + _F_ITEM_HEAD]), [])
                        if len(same) < 8:  # (the entry keeps its context alive: its id is in the key)
                            same.append((data[start:pos], ev, ctx))
                completed = True
                out.append(ev)
                cls = type(ev)
                if cls is SaslSuccess or cls is TlsProceed:
                    self.reset()  # a new stream; what followed in this read is dropped (as with expat)
                    return b""
                if cls is ParseError:
                    return b""
        except _NotFast:
            return self._to_expat(data, start, old_tail, completed)
        self._size = 0 if completed else self._size + n
        if self._size > self.max_stanza_bytes:
            out.append(self._fail("policy-violation", "stanza-too-big", f"a stanza exceeds {self.max_stanza_bytes} bytes"))
        return b""

    @staticmethod
    def _f_header(data: bytes) -> tuple[int, dict, bytes, str | None, dict]:
        """The stream header at the start of ``data``: (end, context, raw name, id, attrib); _NotFast
        when outside the subset. Headers differ per stream only in their id, so they are memoised
        with the id's value taken out (when the header spells ``id`` exactly once, as `` id='...'``,
        and its start tag ends at the first ``>`` after it): another value in the subset there
        cannot change how the rest reads."""
        template = None
        i = data.find(b" id='", 0, 1024)
        if i > 0:
            j = data.find(b"'", i + 5)
            gt = data.find(b">", j)
            if j > 0 and gt > 0 and _F_VALUE.fullmatch(data, i + 5, j) is not None:
                template = data[:i + 5] + data[j:gt + 1]
                hit = _F_HEADS.get(template)
                if hit is not None:
                    ctx, raw, attrib = hit
                    return gt + 1, ctx, raw, data[i + 5:j].decode("ascii"), attrib
        m = _F_DECL.match(data)
        at = _F_SPACE.match(data, m.end() if m is not None else 0).end()
        m = _F_TOKEN.match(data, at)
        if m is None or m.group(1) or m.group(4):
            raise _NotFast
        tag, attrib, ctx = _f_tag(m, _F_ROOT)
        if tag != _T_STREAM:
            raise _NotFast
        ctx = _f_scope(ctx)
        end = m.end()
        raw = m.group(2)
        sid = attrib.get("id")
        if (i > 0 and template is not None and gt + 1 == end and data.count(b"id", 0, end) == 1
                and sid == data[i + 5:j].decode("ascii")):
            if len(_F_HEADS) >= _F_MAX_ITEMS:
                _F_HEADS.clear()
            rest = dict(attrib)
            del rest["id"]
            _F_HEADS[template] = (ctx, raw, rest)
        return end, ctx, raw, sid, attrib

    def _to_expat(self, data: bytes | str, at: int, old_tail: bytes | str, completed: bool) -> bytes | str:
        """Leave fast mode at ``data[at]``: make the parser, replay the stream header into it
        (its event was reported already), and leave the byte accounting as the expat path would
        have it had it read ``data`` whole."""
        self._start_parser()
        head = self._fhead
        if head:
            queue = self._queue
            self._parser.feed(head)  # bytes the subset accepted: expat accepts them too
            while queue:
                kind, elem = queue.popleft()
                if kind == "start" and self._root is None:
                    self._root = elem
            self._depth = 1
        self._tail = (old_tail + data[:at])[-8:] if at else old_tail
        rest = data[at:] if at else data
        if completed:  # a stanza ended in this read: the expat path would not count its bytes
            self._size = -len(rest)
        else:
            self._size += at
        return rest

    def _continue_stream(self) -> None:
        """After <success/>: keep the parser; the new stream will be a child of the old one."""
        self._clean = False
        self._base = self._depth
        self._size = 0
        self._tail = b""
        self._decl = b""

    def _strip_decl(self, data: bytes | str, out: list[Event]) -> bytes | str:
        """The first bytes of a stream continued on the kept parser: leading whitespace and a plain
        XML declaration are taken off (expat would refuse a declaration there); an unusual one
        (other encoding, other pseudo-attributes, a PI) gets a fresh parser with all the held bytes."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        buf = self._decl + data
        text = buf.lstrip()
        if len(text) < 5 and _XML_DECL_START.startswith(text):
            if len(buf) > 1024:  # whitespace flood: let the fresh parser judge it
                self.reset()
                return buf
            self._decl = buf
            return b""
        if not text.startswith(_XML_DECL_START):
            self._decl = None
            return text
        end = text.find(b"?>")
        if end < 0 and len(text) <= 256:
            self._decl = buf
            return b""
        self._decl = None
        if end >= 0 and _XML_DECL.fullmatch(text, 0, end + 2):
            return text[end + 2:]
        self.reset()  # not a plain declaration: a fresh parser, as without the kept one
        return buf

    def _forbidden(self, data: bytes | str) -> bool:
        lt = b"<!" if isinstance(data, bytes) else "<!"
        tail = self._tail
        if isinstance(data, bytes) != isinstance(tail, bytes):
            tail = tail.encode() if isinstance(tail, str) else tail.decode("utf-8", "replace")
        window = tail + data if tail else data
        self._tail = window[-8:]
        if lt not in window:
            return False
        pats = _FORBIDDEN_B if isinstance(window, bytes) else _FORBIDDEN_S
        return any(p in window for p in pats)

    def _feed_piece(self, data: bytes | str, out: list[Event]) -> None:
        if self._forbidden(data):
            out.append(self._fail("restricted-xml", "restricted-xml", "DOCTYPE / ENTITY declarations are refused"))
            return
        self._size += len(data)
        queue = self._queue
        try:
            self._parser.feed(data)
        except ET.ParseError as exc:
            # the events before the error still count: a <proceed/> or <success/> followed by
            # bytes of the next layer in the same read is a restart, not an error
            self._handle(queue, out)
            if not (self._restarted or self._done):
                out.append(self._fail("xml-not-well-formed", "xml-not-well-formed", str(exc)))
            return
        self._handle(queue, out)
        if self._restarted:  # kept parser only when nothing (not even part of a tag) followed
            self._clean = not queue and data.rstrip()[-1:] in (b">", ">")
            return
        if not self._done and self._size > self.max_stanza_bytes:
            out.append(self._fail("policy-violation", "stanza-too-big",
                                  f"a stanza exceeds {self.max_stanza_bytes} bytes"))

    def _handle(self, queue: Any, out: list[Event]) -> None:
        """Consume the parser's (kind, element) events: depth 1 start = stream header, depth 2
        end = one stanza, depth 0 end = end of stream. Hot path: kept to a few operations per event."""
        base = self._base
        depth = self._depth - base  # relative to the current stream: 1 = the stream element
        max_depth = self.max_depth
        popleft = queue.popleft
        while queue:
            kind, elem = popleft()
            if kind == "start":
                depth += 1
                if depth > 2:
                    if depth > max_depth:
                        self._depth = depth + base
                        out.append(self._fail("policy-violation", "too-deep", f"nesting deeper than {max_depth}"))
                        return
                    continue
                if depth == 1:
                    if elem.tag != _T_STREAM:
                        self._depth = depth + base
                        out.append(self._fail("invalid-namespace", "xml-not-well-formed",
                                              f"expected a stream header, got {elem.tag!r}"))
                        return
                    old = self._root
                    if old is not None:  # a stream continued on the kept parser: drop it from the old one
                        try:
                            old.remove(elem)
                        except ValueError:
                            pass
                    self._root = elem
                    out.append(StreamOpened(elem.get("id"), elem.get("from"), elem.get("version")))
                continue
            depth -= 1
            if depth > 1:
                continue
            if depth == 1:
                self._size = 0
                root = self._root
                if root is not None:
                    try:
                        root.remove(elem)
                    except ValueError:
                        pass
                ev = self._stanza(elem)
                out.append(ev)
                cls = type(ev)
                if cls is SaslSuccess:
                    self._depth = depth + base
                    self._restarted = True  # feed() keeps the parser or resets it
                    return
                if cls is TlsProceed:
                    self.reset()
                    self._restarted = True
                    return
                if cls is ParseError:
                    return
            elif depth < 0:  # an end tag of a stream restarted over: a fresh parser would refuse it too
                self._depth = 0
                out.append(self._fail("xml-not-well-formed", "xml-not-well-formed", "end tag of a finished stream"))
                return
            else:
                self._depth = 0
                self._done = True
                out.append(StreamClosed())
                return
        self._depth = depth + base

    def _feed_frame(self, frame: bytes | str) -> list[Event]:
        if isinstance(frame, bytes):
            try:
                frame = frame.decode("utf-8")
            except UnicodeDecodeError:
                return [self._fail("xml-not-well-formed", "xml-not-well-formed", "frame is not UTF-8")]
        if len(frame) > self.max_stanza_bytes:
            return [self._fail("policy-violation", "stanza-too-big", f"a frame exceeds {self.max_stanza_bytes} bytes")]
        text = frame.lstrip()
        if not text:
            return []  # whitespace keepalive
        if text.startswith("<?xml"):
            end = text.find("?>")
            if end < 0:
                return [self._fail("xml-not-well-formed", "xml-not-well-formed", "unterminated XML declaration")]
            text = text[end + 2:].lstrip()
        if self._forbidden(text):
            return [self._fail("restricted-xml", "restricted-xml", "DOCTYPE / ENTITY declarations are refused")]
        self._tail = ""
        if not text.startswith("<") or text.startswith("</"):
            return [self._fail("xml-not-well-formed", "xml-not-well-formed", "a frame must hold one element")]
        out: list[Event] = []
        queue = self._queue
        try:
            self._parser.feed(text)
        except ET.ParseError as exc:
            return [self._fail("xml-not-well-formed", "xml-not-well-formed", str(exc))]
        depth = 1
        finished = 0
        while queue:
            kind, elem = queue.popleft()
            if kind == "start":
                depth += 1
                if depth > self.max_depth:
                    return [self._fail("policy-violation", "too-deep", f"nesting deeper than {self.max_depth}")]
                continue
            depth -= 1
            if depth == 1:
                finished += 1
                if finished > 1:
                    return [self._fail("xml-not-well-formed", "xml-not-well-formed", "a frame holds more than one element")]
                root = self._root
                if root is not None:
                    try:
                        root.remove(elem)
                    except ValueError:
                        pass
                out.append(self._stanza(elem))
            elif depth < 1:
                return [self._fail("xml-not-well-formed", "xml-not-well-formed", "unbalanced end tag")]
        if depth != 1 or finished != 1:
            return [self._fail("xml-not-well-formed", "xml-not-well-formed", "a frame must hold one complete element")]
        ev = out[0]
        if isinstance(ev, ParseError):
            self._done = True
        elif isinstance(ev, StreamClosed):
            self._done = True
        elif isinstance(ev, TlsProceed):
            self.reset()
        # SaslSuccess: the next <open/> is one more frame under the same wrapper, no new parser
        return out

    def _stanza(self, elem: Any) -> Event:
        """A finished depth-2 element -> its event."""
        tag = elem.tag
        if tag == _T_IQ:
            return _iq(elem)
        if tag.startswith(_SASL_PREFIX):
            local = tag[len(_SASL_PREFIX):]
            try:
                if local == "challenge":
                    return SaslChallenge(_b64(elem.text))
                if local == "success":
                    return SaslSuccess(_b64(elem.text))
            except ValueError:
                return self._fail("bad-format", "xml-not-well-formed", f"bad base64 in <{local}/>")
            if local == "failure":
                cond, text = _condition(elem, NS_SASL)
                return SaslFailure(cond, text)
            return Other(elem)
        if tag == _T_FEATURES:
            return _features(elem)
        if tag == _T_ERROR:
            cond, text = _condition(elem, NS_STREAMS)
            return StreamError(cond, text)
        if tag.startswith(_TLS_PREFIX):
            local = tag[len(_TLS_PREFIX):]
            if local == "proceed":
                return TlsProceed()
            if local == "failure":
                return TlsFailure()
            return Other(elem)
        if self.ws:
            if tag == _T_OPEN:
                return StreamOpened(elem.get("id"), elem.get("from"), elem.get("version"))
            if tag == _T_CLOSE:
                return StreamClosed(elem.get("see-other-uri"))
        return Other(elem)


def _features(elem: Any) -> Features:
    mechs: list[str] = []
    starttls = required = bind_ = session_ = False
    optional = True
    for child in elem:
        tag = child.tag
        if tag == _T_MECHS:
            for m in child:
                if m.tag == _T_MECH and m.text:
                    mechs.append(m.text.strip())
        elif tag == _T_STARTTLS:
            starttls = True
            required = any(c.tag == _T_REQUIRED for c in child)
        elif tag == _T_BIND:
            bind_ = True
        elif tag == _T_SESSION:
            session_ = True
            optional = any(c.tag == _T_OPTIONAL for c in child)
    return Features(tuple(mechs), starttls, required, bind_, session_, optional)


def _iq(elem: Any) -> Event:
    typ = elem.get("type")
    iq_id = elem.get("id")
    if typ == "result":
        jid = None
        for child in elem:
            if child.tag == _T_BIND:
                j = child.find(_T_JID)
                if j is not None and j.text:
                    jid = j.text.strip()
                break
        return IqResult(iq_id, jid, elem)
    if typ == "error":
        err = elem.find(_T_ERR)
        if err is None:
            return IqError(iq_id, "undefined-condition", None, elem)
        cond, text = _condition(err, NS_STANZAS)
        return IqError(iq_id, cond, text, elem)
    if typ == "get" or typ == "set":
        if typ == "get" and len(elem) == 1 and elem[0].tag == _T_PING:
            return Ping(iq_id, elem.get("from"))
        return IqRequest(iq_id, typ, elem.get("from"), elem)
    return Other(elem)


# --------------------------------------------------------------------------------------
# Builders (text to send; the driver encodes TCP output as UTF-8, WS sends one frame each)
# --------------------------------------------------------------------------------------

def xml_escape(value: str) -> str:
    """Escape for both text and single-quoted attributes."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "'" in value:
        value = value.replace("'", "&apos;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    return value


def stream_header(domain: str, ws: bool = False, lang: str | None = None) -> str:
    """The client's stream header (TCP) or framing ``<open/>`` (WebSocket)."""
    d = xml_escape(domain)
    extra = f" xml:lang='{xml_escape(lang)}'" if lang else ""
    if ws:
        return f"<open xmlns='{NS_FRAMING}' to='{d}' version='1.0'{extra}/>"
    return (f"<?xml version='1.0'?><stream:stream to='{d}' version='1.0'{extra} xmlns='{NS_CLIENT}' "
            f"xmlns:stream='{NS_STREAM}'>")


def stream_close(ws: bool = False) -> str:
    return f"<close xmlns='{NS_FRAMING}'/>" if ws else "</stream:stream>"


def starttls() -> str:
    return f"<starttls xmlns='{NS_TLS}'/>"


def _b64out(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "="


def auth(mechanism: str, initial: bytes | None = None) -> str:
    """``<auth mechanism=...>`` with the initial response (``None``: no initial response)."""
    body = "" if initial is None else _b64out(initial)
    return f"<auth xmlns='{NS_SASL}' mechanism='{xml_escape(mechanism)}'>{body}</auth>"


def sasl_response(data: bytes) -> str:
    return f"<response xmlns='{NS_SASL}'>{_b64out(data) if data else ''}</response>"


def bind(iq_id: str, resource: str | None) -> str:
    res = f"<resource>{xml_escape(resource)}</resource>" if resource else ""
    return f"<iq xmlns='{NS_CLIENT}' type='set' id='{xml_escape(iq_id)}'><bind xmlns='{NS_BIND}'>{res}</bind></iq>"


def session(iq_id: str) -> str:
    return f"<iq xmlns='{NS_CLIENT}' type='set' id='{xml_escape(iq_id)}'><session xmlns='{NS_SESSION}'/></iq>"


def presence() -> str:
    return f"<presence xmlns='{NS_CLIENT}'/>"


def unavailable_presence() -> str:
    return f"<presence xmlns='{NS_CLIENT}' type='unavailable'/>"


def ping(iq_id: str, to: str | None) -> str:
    to_attr = f" to='{xml_escape(to)}'" if to else ""
    return f"<iq xmlns='{NS_CLIENT}' type='get' id='{xml_escape(iq_id)}'{to_attr}><ping xmlns='{NS_PING}'/></iq>"


def pong(iq_id: str | None, to: str | None) -> str:
    """The result answering a server's ping ``iq_id``."""
    to_attr = f" to='{xml_escape(to)}'" if to else ""
    id_attr = f" id='{xml_escape(iq_id)}'" if iq_id is not None else ""
    return f"<iq xmlns='{NS_CLIENT}' type='result'{id_attr}{to_attr}/>"


def iq_error(iq_id: str | None, to: str | None, condition: str = "service-unavailable", kind: str = "cancel") -> str:
    to_attr = f" to='{xml_escape(to)}'" if to else ""
    id_attr = f" id='{xml_escape(iq_id)}'" if iq_id is not None else ""
    return (f"<iq xmlns='{NS_CLIENT}' type='error'{id_attr}{to_attr}><error type='{kind}'>"
            f"<{condition} xmlns='{NS_STANZAS}'/></error></iq>")


def stream_error(condition: str, text: str | None = None) -> str:
    t = f"<text xmlns='{NS_STREAMS}'>{xml_escape(text)}</text>" if text else ""
    return f"<stream:error xmlns:stream='{NS_STREAM}'><{condition} xmlns='{NS_STREAMS}'/>{t}</stream:error>"


# --------------------------------------------------------------------------------------
# SASL
# --------------------------------------------------------------------------------------

SCRAM_HASHES: dict[str, str] = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: 'auto' picks the first of these the server offers (a JWT credential always goes as PLAIN).
MECHANISM_PREFERENCE: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
MAX_SCRAM_ITERATIONS = 1_000_000  # a server asking for more is refused (CPU bound on the client)


def choose_mechanism(wanted: str, offered: tuple[str, ...] | list[str], plain_only: bool = False) -> str | None:
    """The mechanism to use: ``wanted`` if offered (``auto``: the best offered, PLAIN for a JWT);
    None when the server does not offer it."""
    if wanted == "auto":
        if plain_only:
            return "PLAIN" if "PLAIN" in offered else None
        for m in MECHANISM_PREFERENCE:
            if m in offered:
                return m
        return None
    return wanted if wanted in offered else None


def _saslprep(text: str) -> str:
    """A light SASLprep (RFC 4013): ASCII unchanged; otherwise NFKC with non-ASCII spaces mapped to
    space and 'commonly mapped to nothing' characters removed. Enough for test credentials."""
    if text.isascii():
        return text
    text = "".join(" " if unicodedata.category(c) == "Zs" else c for c in text if c not in "\u00ad\u200b\u2060\ufeff")
    return unicodedata.normalize("NFKC", text)


def plain_initial(authcid: str, password: str, authzid: str = "") -> bytes:
    """RFC 4616 PLAIN message ``authzid NUL authcid NUL passwd``."""
    return f"{authzid}\0{authcid}\0{password}".encode("utf-8")


@lru_cache(maxsize=16384)
def salted_password(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(Normalize(password), salt, i)`` (PBKDF2-HMAC). Memoised: a pure function, and a real
    client caches it too (RFC 5802 5.1); a load test logs the same accounts in many times."""
    return hashlib.pbkdf2_hmac(hash_name, _saslprep(password).encode("utf-8"), salt, iterations)


class ScramError(Exception):
    """The server's SCRAM messages are invalid, or its signature does not verify.
    ``condition`` is a short name for the journal (e.g. ``scram-server-signature-mismatch``)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(text or condition)
        self.condition = condition


def _attrs(msg: bytes) -> dict[str, str]:
    try:
        text = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError("scram-malformed", "not UTF-8") from None
    out: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("scram-malformed", f"bad attribute {part[:20]!r}")
        out.setdefault(part[0], part[2:])
    return out


class ScramClient:
    """RFC 5802 / RFC 7677 client side, no channel binding (gs2 header ``n,,``).

    ``first()`` -> client-first message; ``final(server_first)`` -> client-final message;
    ``verify(server_final)`` raises :class:`ScramError` unless the server signature matches.
    """

    __slots__ = ("mechanism", "hash_name", "username", "password", "nonce", "_first_bare", "_server_sig")

    def __init__(self, mechanism: str, username: str, password: str, nonce: str | None = None) -> None:
        if mechanism not in SCRAM_HASHES:
            raise ValueError(f"unknown SCRAM mechanism {mechanism!r}")
        self.mechanism = mechanism
        self.hash_name = SCRAM_HASHES[mechanism]
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        name = _saslprep(username).replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self.nonce}"
        self._server_sig: bytes | None = None

    def first(self) -> bytes:
        return ("n,," + self._first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        a = _attrs(server_first)
        if "m" in a:
            raise ScramError("scram-malformed", "mandatory extension not supported")
        if "e" in a:
            raise ScramError(f"scram-{a['e'] or 'error'}", "server error")
        nonce, salt_b64, iters = a.get("r"), a.get("s"), a.get("i")
        if not nonce or salt_b64 is None or not iters:
            raise ScramError("scram-malformed", "server-first lacks r, s or i")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ScramError("scram-nonce-mismatch", "server nonce does not extend the client nonce")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ScramError("scram-malformed", "bad salt") from None
        if not iters.isdigit() or not 1 <= int(iters) <= MAX_SCRAM_ITERATIONS:
            raise ScramError("scram-malformed", f"bad iteration count {iters[:12]!r}")
        h = self.hash_name
        salted = salted_password(h, self.password, salt, int(iters))
        client_key = hmac.digest(salted, b"Client Key", h)
        stored_key = hashlib.new(h, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{server_first.decode('utf-8')},{without_proof}".encode("utf-8")
        client_sig = hmac.digest(stored_key, auth_message, h)
        proof = bytes(x ^ y for x, y in zip(client_key, client_sig))
        server_key = hmac.digest(salted, b"Server Key", h)
        self._server_sig = hmac.digest(server_key, auth_message, h)
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        if self._server_sig is None:
            raise ScramError("scram-out-of-order", "success before the client-final message")
        a = _attrs(server_final) if server_final else {}
        if "e" in a:
            raise ScramError(f"scram-{a['e'] or 'error'}", "server error")
        v = a.get("v")
        if v is None:
            raise ScramError("scram-server-signature-missing", "success without a server signature")
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ScramError("scram-malformed", "bad server signature encoding") from None
        # compare the canonical base64 text: a variant with other padding bits is not the signature
        if not hmac.compare_digest(v.encode("ascii", "replace"), base64.b64encode(self._server_sig)):
            raise ScramError("scram-server-signature-mismatch", "the server signature does not verify")


# --------------------------------------------------------------------------------------
# Conditions -> codes
# --------------------------------------------------------------------------------------

_SASL_CODES: dict[str, int] = {
    "not-authorized": protocol.ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY,
    "credentials-expired": protocol.ERR_SVR_ACCOUNT_USERSIG_EXPIRED,
    "account-disabled": protocol.ERR_SVR_COMM_INVALID_ACCOUNT,
    "temporary-auth-failure": protocol.ERR_SVR_ACCOUNT_INTERNAL_TIMEOUT,
    "invalid-authzid": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "invalid-mechanism": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "malformed-request": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "mechanism-too-weak": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "encryption-required": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "incorrect-encoding": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
}
_BIND_CODES: dict[str, int] = {
    "conflict": protocol.ERR_LOGIN_KICKED_OFF_BY_OTHER,
    "resource-constraint": protocol.ERR_SVR_ACCOUNT_FREQ_LIMIT,
    "policy-violation": protocol.ERR_SVR_ACCOUNT_FREQ_LIMIT,
    "not-allowed": protocol.ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY,
    "forbidden": protocol.ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY,
    "not-authorized": protocol.ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY,
    "bad-request": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "jid-malformed": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
}
_STREAM_CODES: dict[str, int] = {
    "conflict": protocol.ERR_LOGIN_KICKED_OFF_BY_OTHER,
    "policy-violation": protocol.ERR_SVR_ACCOUNT_FREQ_LIMIT,
    "not-authorized": protocol.ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY,
    "host-unknown": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
    "improper-addressing": protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS,
}
_TABLES = {"sasl": (_SASL_CODES, protocol.ERR_SVR_ACCOUNT_INTERNAL_ERROR),
           "bind": (_BIND_CODES, protocol.ERR_SVR_ACCOUNT_INTERNAL_ERROR),
           "session": (_BIND_CODES, protocol.ERR_SVR_ACCOUNT_INTERNAL_ERROR),
           "stream": (_STREAM_CODES, protocol.ERR_TRANSPORT)}


def map_condition(where: str, condition: str) -> tuple[int, str]:
    """``(code, desc)`` for an XMPP error ``condition`` met at step ``where`` (``sasl``, ``bind``,
    ``session``, ``stream``): the table in the module docstring; ``desc`` is the condition name
    (an unknown condition keeps its name). Pure."""
    table, default = _TABLES.get(where, (_STREAM_CODES, protocol.ERR_TRANSPORT))
    return table.get(condition, default), condition


#: Conditions with a fixed chart label (all RFC 6120 stream / stanza / SASL conditions get the
#: mechanical one: upper case, ``-`` -> ``_``); local client-side conditions are listed here.
_LABELS: dict[str, str] = {
    "scram-server-signature-mismatch": "SCRAM_BAD_SERVER_SIG",
    "xml-not-well-formed": "XML_NOT_WELL_FORMED",
    "stanza-too-big": "STANZA_TOO_BIG",
    "restricted-xml": "RESTRICTED_XML",
}


def condition_label(condition: str | None) -> str:
    """Short chart / table label for an XMPP condition: ``not-authorized`` -> ``NOT_AUTHORIZED``;
    None or empty -> ``UNKNOWN``."""
    if not condition:
        return protocol.UNKNOWN_CODE_NAME
    label = _LABELS.get(condition)
    if label is None:
        label = condition.upper().replace("-", "_")
    return label

"""A hostile XMPP server for end-to-end tests: plain threads and sockets, loopback only.

Connection k (from 0) behaves as ``BEHAVIOURS[k % len(BEHAVIOURS)]``: it logs the client in
properly (stream, SASL PLAIN, restart, bind, presence; any password) and then misbehaves, or
misbehaves before that. ``python tests/e2e/hostile_xmpp.py`` prints ``port N`` and serves until
killed (the test stops it by pid).
"""
from __future__ import annotations

import re
import socket
import sys
import threading

DOMAIN = "localhost"
NS = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
HEADER = "<?xml version='1.0'?><stream:stream from='localhost' id='s{n}{k}' version='1.0' {ns}>"
FEATURES_AUTH = ("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                 "<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
FEATURES_BIND = ("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>")
BEHAVIOURS = ("malformed", "oversize", "unknown_stream_error", "half_close", "silent", "good", "garbage_at_auth")

RE_HEADER = re.compile(rb"<stream:stream[^>]*>")
RE_AUTH = re.compile(rb"<auth [^>]*>([^<]*)</auth>")
RE_BIND = re.compile(rb"<iq[^>]*id=['\"]([^'\"]+)['\"][^>]*>\s*<bind[^>]*>(?:<resource>([^<]*)</resource>)?")
RE_PRESENCE = re.compile(rb"<presence\s*/>|<presence[^>]*>")
RE_PING = re.compile(rb"<iq[^>]*id=['\"]([^'\"]+)['\"][^>]*>\s*<ping")
RE_CLOSE = re.compile(rb"</stream:stream>")


class Conn:
    def __init__(self, sock: socket.socket, n: int) -> None:
        self.sock, self.n, self.buf = sock, n, b""
        sock.settimeout(20)

    def expect(self, rx: re.Pattern) -> re.Match:
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("client left")
            self.buf += data

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())


def login(c: Conn) -> None:
    c.expect(RE_HEADER)
    c.send(HEADER.format(n=c.n, k="a", ns=NS) + FEATURES_AUTH)
    c.expect(RE_AUTH)
    c.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    c.expect(RE_HEADER)
    c.send(HEADER.format(n=c.n, k="b", ns=NS) + FEATURES_BIND)
    m = c.expect(RE_BIND)
    res = (m.group(2) or b"r").decode()
    c.send(f"<iq type='result' id='{m.group(1).decode()}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           f"<jid>u{c.n}@{DOMAIN}/{res}</jid></bind></iq>")
    c.expect(RE_PRESENCE)


def serve_well(c: Conn) -> None:
    while True:
        m = c.expect(re.compile(RE_PING.pattern + b"|" + RE_CLOSE.pattern))
        if m.group(1):
            c.send(f"<iq type='result' id='{m.group(1).decode()}' from='{DOMAIN}'/>")
        else:
            c.send("</stream:stream>")
            return


def handle(sock: socket.socket, n: int) -> None:
    c = Conn(sock, n)
    kind = BEHAVIOURS[n % len(BEHAVIOURS)]
    try:
        if kind == "silent":
            threading.Event().wait(15)          # accept, say nothing
            return
        if kind == "garbage_at_auth":
            c.expect(RE_HEADER)
            c.send(HEADER.format(n=n, k="a", ns=NS) + FEATURES_AUTH)
            c.expect(RE_AUTH)
            c.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><<<&&& not xml")
            threading.Event().wait(2)
            return
        login(c)
        threading.Event().wait(0.3)
        if kind == "malformed":
            c.send("<message><body>unclosed & broken <<</message>")
        elif kind == "oversize":
            c.send("<message><body>" + "x" * 400_000 + "</body></message>")
        elif kind == "unknown_stream_error":
            c.send("<stream:error><made-up-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                   "</stream:error></stream:stream>")
        elif kind == "half_close":
            sock.shutdown(socket.SHUT_WR)
        elif kind == "good":
            serve_well(c)
            return
        threading.Event().wait(3)
    except (OSError, ConnectionError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main() -> None:
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(512)
    print(f"port {lsock.getsockname()[1]}", flush=True)
    n = 0
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=handle, args=(sock, n), daemon=True).start()
        n += 1


if __name__ == "__main__":
    sys.exit(main())

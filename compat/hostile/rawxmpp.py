"""A small XMPP client on raw sockets, for the hostile suite.

It does exactly what a test tells it, including what no real client would do: send bytes
that are not XML, stop reading its socket, bind from another loopback address, time one
SASL round trip. Everything it does is visible: the bytes it wrote and read (after TLS,
i.e. what the server wrote), the elements it received, the stream error that ended the
stream.

* `Conn(server)` opens TCP (or direct TLS with `direct_tls=True`); `open()` sends a stream
  header and reads the features; `starttls()`, `auth_plain()`, `auth_scram()`, `bind()`
  do one step each; `login()` does them all.
* `next()` returns the next top-level element the server sent (stanza or nonza), raising
  `StreamEnded` when the server closed the stream (its error condition, if any, attached).
* `wait_for(pred)` keeps what does not match in `inbox` for later calls.

Every read has a deadline: nothing here can block forever.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import secrets
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from typing import Callable

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_ROSTER = "jabber:iq:roster"
NS_PING = "urn:xmpp:ping"
NS_DELAY = "urn:xmpp:delay"
NS_BLOCKING = "urn:xmpp:blocking"
NS_XMPP_ERRORS = "urn:xmpp:errors"

# Default deadline for one expected element. Loopback answers take milliseconds; this only
# turns a missing answer into a failure instead of a hang.
WAIT = 8.0

_ids = itertools.count(1)


def new_id(prefix: str = "h") -> str:
    return f"{prefix}{next(_ids)}-{secrets.token_hex(3)}"


def stream_header(domain: str, *, extra: str = "", close: bool = False) -> str:
    end = "/>" if close else ">"
    return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' "
            f"to='{domain}' version='1.0'{extra}{end}")


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ns_of(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def show(el: ET.Element | None, limit: int = 600) -> str:
    if el is None:
        return "None"
    text = ET.tostring(el, encoding="unicode")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def stanza_error(el: ET.Element) -> tuple[str | None, str | None, list[str]]:
    """(defined condition, text, application conditions as '{ns}name') of a stanza error."""
    err = el.find(f"{{{NS_CLIENT}}}error")
    if err is None:
        return None, None, []
    cond = text = None
    app = []
    for c in err:
        if ns_of(c.tag) == NS_STANZAS:
            if local(c.tag) == "text":
                text = c.text or ""
            else:
                cond = local(c.tag)
        else:
            app.append(c.tag)
    return cond, text, app


def is_kind(kind: str, **attrs) -> Callable[[ET.Element], bool]:
    """Predicate: a jabber:client `kind` element whose attributes equal `attrs` (use
    `type_` for `type`, `from_` for `from`; None = attribute absent)."""
    want = {k.rstrip("_"): v for k, v in attrs.items()}

    def pred(el: ET.Element) -> bool:
        if el.tag != f"{{{NS_CLIENT}}}{kind}":
            return False
        return all(el.get(k) == v for k, v in want.items())
    pred.__doc__ = f"<{kind} {want}>"
    return pred


class StreamEnded(Exception):
    """The server ended the stream (or the connection)."""

    def __init__(self, condition: str | None, text: str | None, app: list[str], how: str, elapsed: float):
        self.condition = condition  # stream error condition, None if closed without one
        self.text = text
        self.app = app  # application-specific conditions, '{ns}name'
        self.how = how  # 'closed' (</stream:stream>), 'error' (<stream:error/>), 'eof', 'reset', 'bad-xml'
        self.elapsed = elapsed  # seconds since the connection was opened
        super().__init__(f"stream ended ({how}) condition={condition} text={text!r} app={app}")


class Timeout(AssertionError):
    pass


class Conn:
    """One client connection. Not thread-safe; one test drives it."""

    def __init__(self, host: str, port: int, domain: str, ca: str | None, *, direct_tls: bool = False,
                 source_ip: str | None = None, rcvbuf: int | None = None, connect_timeout: float = 5.0):
        self.host, self.port, self.domain, self.ca = host, port, domain, ca
        self.opened_at = time.monotonic()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so that the window announced in the handshake is small too.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source_ip is not None:
            s.bind((source_ip, 0))
        s.settimeout(connect_timeout)
        s.connect((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw = s
        self.local_port = s.getsockname()[1]
        self.sock: socket.socket | ssl.SSLSocket = s
        self.tls = False
        self.bytes_in = 0  # bytes read after TLS: what the server wrote
        self.bytes_out = 0
        self.inbox: list[ET.Element] = []
        self.header: ET.Element | None = None
        self.features: ET.Element | None = None
        self.ended: StreamEnded | None = None
        self.jid: str | None = None
        self.sasl_times: list[float] = []
        self._sent_at = time.perf_counter()
        self._reset_parser()
        if direct_tls:
            self._wrap_tls()

    # --- bytes ---------------------------------------------------------------------------

    def _reset_parser(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._root: ET.Element | None = None
        self._ready: list[ET.Element] = []

    def _wrap_tls(self) -> None:
        ctx = ssl.create_default_context(cafile=self.ca) if self.ca else ssl._create_unverified_context()
        self.sock.settimeout(10)
        self.sock = ctx.wrap_socket(self.raw, server_hostname=self.domain)
        self.tls = True

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.settimeout(10)
        self.sock.sendall(data)
        self.bytes_out += len(data)
        self._sent_at = time.perf_counter()

    def try_send(self, data: str | bytes, timeout: float = 2.0) -> bool:
        """Send, or give up after `timeout` (the server stopped reading or closed): False."""
        if isinstance(data, str):
            data = data.encode()
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
            self.bytes_out += len(data)
            return True
        except (OSError, ssl.SSLError):
            return False

    def _fill(self, deadline: float) -> None:
        """Read once (until `deadline`) and parse. Raises Timeout, or StreamEnded at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise Timeout("no data")
        except ssl.SSLWantReadError:
            raise Timeout("no data")
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError) as e:
            self._end(None, None, [], f"reset ({e.__class__.__name__})")
        if not data:
            self._end(None, None, [], "eof")
        self.bytes_in += len(data)
        try:
            self._parser.feed(data)
            events = list(self._parser.read_events())
        except ET.ParseError as e:
            self._end(None, f"the server sent XML that does not parse: {e}; last bytes: {data[-300:]!r}", [], "bad-xml")
        for kind, el in events:
            if kind == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = el
                    self.header = el
            else:
                self._depth -= 1
                if self._depth == 1:
                    self._ready.append(el)
                    self._root.remove(el)  # keep memory flat on long streams
                elif self._depth == 0:
                    self._ready.append(_CLOSE)

    def _end(self, condition, text, app, how) -> None:
        self.ended = StreamEnded(condition, text, app, how, time.monotonic() - self.opened_at)
        raise self.ended

    def _pop(self, deadline: float) -> ET.Element:
        while not self._ready:
            if self.ended:
                raise self.ended
            self._fill(deadline)
        el = self._ready.pop(0)
        if el is _CLOSE:
            self._end(None, None, [], "closed")
        if el.tag == f"{{{NS_STREAMS}}}error":
            cond = text = None
            app = []
            for c in el:
                if ns_of(c.tag) == NS_STREAM_ERRORS:
                    if local(c.tag) == "text":
                        text = c.text
                    else:
                        cond = local(c.tag)
                else:
                    app.append(c.tag)
            # The closing tag usually follows; the error is what matters.
            self._end(cond, text, app, "error")
        return el

    # --- elements ------------------------------------------------------------------------

    def next(self, timeout: float = WAIT) -> ET.Element:
        """The next top-level element (from `inbox` first)."""
        if self.inbox:
            return self.inbox.pop(0)
        return self._pop(time.monotonic() + timeout)

    def wait_for(self, pred: Callable[[ET.Element], bool], timeout: float = WAIT, what: str | None = None) -> ET.Element:
        """The first element matching `pred`; others stay in `inbox`."""
        for i, el in enumerate(self.inbox):
            if pred(el):
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            try:
                el = self._pop(deadline)
            except Timeout:
                recent = "\n  ".join(show(e, 300) for e in self.inbox[-8:])
                raise Timeout(f"{self.jid or 'connection'}: no {what or pred.__doc__ or 'matching element'} within "
                              f"{timeout}s; unclaimed:\n  {recent}") from None
            if pred(el):
                return el
            self.inbox.append(el)

    def collect(self, duration: float) -> list[ET.Element]:
        """Everything that arrives within `duration` seconds (plus the inbox), inbox emptied.
        Stops early if the stream ends."""
        out = list(self.inbox)
        self.inbox.clear()
        deadline = time.monotonic() + duration
        while True:
            try:
                out.append(self._pop(deadline))
            except Timeout:
                return out
            except StreamEnded:
                return out

    def expect_end(self, timeout: float = WAIT) -> StreamEnded:
        """Read (and drop) elements until the stream ends; return how it ended."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._pop(deadline)
            except StreamEnded as e:
                return e
            except Timeout:
                raise Timeout(f"the stream did not end within {timeout}s") from None

    # --- negotiation ---------------------------------------------------------------------

    def open(self, timeout: float = WAIT) -> ET.Element:
        """Send a stream header, read the server's header and features."""
        self._reset_parser()
        self.send(stream_header(self.domain))
        self.features = self.wait_for(lambda e: e.tag == f"{{{NS_STREAMS}}}features", timeout, "stream features")
        return self.features

    def mechanisms(self) -> list[str]:
        m = self.features.find(f"{{{NS_SASL}}}mechanisms") if self.features is not None else None
        return [x.text for x in m.findall(f"{{{NS_SASL}}}mechanism")] if m is not None else []

    def starttls(self) -> None:
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = self.next()
        assert el.tag == f"{{{NS_TLS}}}proceed", f"expected <proceed/>, got {show(el)}"
        self._wrap_tls()
        self._reset_parser()

    def secure(self) -> "Conn":
        """Header + STARTTLS (unless already TLS) + header again: ready for SASL."""
        self.open()
        if not self.tls:
            self.starttls()
            self.open()
        return self

    def _sasl_result(self, timeout: float) -> tuple[str, ET.Element]:
        el = self.next(timeout)
        # Seconds from the last write to this answer: one server step of the exchange.
        self.sasl_times.append(time.perf_counter() - self._sent_at)
        if el.tag == f"{{{NS_SASL}}}success":
            return "success", el
        if el.tag == f"{{{NS_SASL}}}failure":
            conds = [local(c.tag) for c in el if local(c.tag) != "text"]
            return (conds[0] if conds else "failure"), el
        if el.tag == f"{{{NS_SASL}}}challenge":
            return "challenge", el
        raise AssertionError(f"unexpected answer during SASL: {show(el)}")

    def auth_plain(self, username: str, password: str, timeout: float = WAIT) -> str:
        """One PLAIN attempt: 'success' or the failure condition (e.g. 'not-authorized')."""
        data = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{data}</auth>")
        result, _ = self._sasl_result(timeout)
        return result

    def auth_scram(self, username: str, password: str, hash_name: str = "SHA-256", timeout: float = WAIT, *,
                   gs2: str = "n", cb_data: bytes = b"") -> str:
        """One SCRAM-SHA-1/256 attempt (RFC 5802): 'success' or the failure condition. Checks
        the server signature on success. `gs2` is the channel-binding flag: 'n' (none), 'y'
        (the client could bind but thinks the server cannot), or a binding type such as
        'tls-server-end-point' (then the -PLUS mechanism, with `cb_data` as the binding)."""
        h = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256}[hash_name]
        user = username.replace("=", "=3D").replace(",", "=2C")
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={cnonce}"
        header = f"{gs2},," if gs2 in ("n", "y") else f"p={gs2},,"
        mech = f"SCRAM-{hash_name}" + ("" if gs2 in ("n", "y") else "-PLUS")
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>"
                  f"{base64.b64encode((header + first_bare).encode()).decode()}</auth>")
        result, el = self._sasl_result(timeout)
        if result != "challenge":
            return result
        server_first = base64.b64decode(el.text or "").decode()
        fields = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert fields["r"].startswith(cnonce), f"server nonce {fields['r']!r} does not extend ours"
        salted = hashlib.pbkdf2_hmac(h().name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", h).digest()
        stored_key = h(client_key).digest()
        cbind = base64.b64encode(header.encode() + (cb_data if gs2 not in ("n", "y") else b"")).decode()
        final_wo_proof = f"c={cbind},r={fields['r']}"
        auth_message = f"{first_bare},{server_first},{final_wo_proof}".encode()
        signature = hmac.new(stored_key, auth_message, h).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = f"{final_wo_proof},p={base64.b64encode(proof).decode()}"
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</response>")
        result, el = self._sasl_result(timeout)
        if result == "success":
            server_key = hmac.new(salted, b"Server Key", h).digest()
            expected = base64.b64encode(hmac.new(server_key, auth_message, h).digest()).decode()
            got = base64.b64decode(el.text or "").decode()
            assert got == f"v={expected}", f"wrong server signature {got!r}"
        return result

    def tls_server_end_point(self) -> bytes:
        """RFC 5929 tls-server-end-point: the hash of the server's certificate (SHA-256 for the
        ECDSA/RSA-with-SHA-256 certificates the server generates)."""
        return hashlib.sha256(self.sock.getpeercert(binary_form=True)).digest()

    def auth(self, username: str, password: str, mech: str = "PLAIN") -> str:
        if mech == "PLAIN":
            return self.auth_plain(username, password)
        return self.auth_scram(username, password, mech.removeprefix("SCRAM-"))

    def bind(self, resource: str | None = None) -> str:
        self.open()
        payload = f"<bind xmlns='{NS_BIND}'>" + (f"<resource>{resource}</resource>" if resource else "") + "</bind>"
        reply = self.iq(payload, type="set")
        if reply.get("type") != "result":
            raise BindRefused(reply)
        self.jid = reply.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text
        return self.jid

    # --- stanzas -------------------------------------------------------------------------

    def iq(self, payload: str, *, type: str = "get", to: str | None = None, timeout: float = WAIT) -> ET.Element:
        """Send an iq and return its reply (result or error)."""
        iq_id = new_id("iq")
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='{type}' id='{iq_id}'{to_attr}>{payload}</iq>")
        return self.wait_for(lambda e: e.tag == f"{{{NS_CLIENT}}}iq" and e.get("id") == iq_id
                             and e.get("type") in ("result", "error"), timeout, f"reply to iq {iq_id}")

    def ping_rtt(self, timeout: float = WAIT) -> float:
        """Seconds until the server answers a XEP-0199 ping."""
        start = time.monotonic()
        reply = self.iq(f"<ping xmlns='{NS_PING}'/>", to=self.domain, timeout=timeout)
        assert reply.get("type") == "result", f"ping failed: {show(reply)}"
        return time.monotonic() - start

    def presence(self, extra: str = "", **attrs) -> None:
        a = "".join(f" {k.rstrip('_')}='{v}'" for k, v in attrs.items())
        self.send(f"<presence{a}>{extra}</presence>")

    def message(self, to: str, body: str, *, id: str | None = None, type: str = "chat", extra: str = "") -> str:
        mid = id or new_id("m")
        self.send(f"<message to='{to}' type='{type}' id='{mid}'><body>{body}</body>{extra}</message>")
        return mid

    def roster(self) -> dict[str, dict]:
        reply = self.iq(f"<query xmlns='{NS_ROSTER}'/>")
        assert reply.get("type") == "result", f"roster get failed: {show(reply)}"
        q = reply.find(f"{{{NS_ROSTER}}}query")
        return {i.get("jid"): {"subscription": i.get("subscription"), "ask": i.get("ask")}
                for i in q.findall(f"{{{NS_ROSTER}}}item")}

    def close(self) -> None:
        """Close politely if possible, then the socket; never raises."""
        try:
            if self.ended is None:
                self.try_send("</stream:stream>", 0.5)
        except Exception:
            pass
        self.abort()

    def abort(self) -> None:
        try:
            self.raw.close()
            self.sock.close()
        except Exception:
            pass


class BindRefused(AssertionError):
    def __init__(self, reply: ET.Element):
        self.reply = reply
        super().__init__(f"bind refused: {show(reply)}")


_CLOSE = ET.Element("__close__")

#!/usr/bin/env python3
"""Federation flows between a.example and b.example, driven by slixmpp clients.

Started by compat/federation/run.sh once both servers listen and have their accounts. Every
client runs inside the network namespace of its own server: each side has a thread that
enters that namespace (setns) and runs an asyncio loop, so the sockets of alice's clients are
created in stfed-a and bob's in stfed-b. The flows themselves are plain sequential code in the
main thread, which hands each step to the right side and waits for it with a deadline.

Prints one line per flow (PASS/FAIL/KNOWN name seconds detail), appends the same as a
tab-separated row to --results, and exits 1 if a flow failed (a failure listed in the
known-issues file counts as KNOWN, not as a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import copy
import ctypes
import fnmatch
import hashlib
import inspect
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional
from xml.sax.saxutils import escape, quoteattr

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_ROSTER = "jabber:iq:roster"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_NICK = "http://jabber.org/protocol/nick"
NS_TUNE = "http://jabber.org/protocol/tune"
NS_XDATA = "jabber:x:data"

# One expected stanza across the federation link. A first s2s connection (TLS, dialback or
# SASL EXTERNAL) takes well under a second here; this only bounds a missing stanza.
WAIT = 10.0
C2S_PORT = 5222

# What our clients announce (XEP-0115 caps, answered by our own disco#info handler): the
# +notify features make the remote PEP service send nick and tune notifications (XEP-0163).
CAPS_NODE = "https://starling.invalid/compat/federation"
IDENTITY = ("client", "pc", "", "starling-federation-test")
FEATURES = sorted([NS_CAPS, NS_DISCO_INFO, NS_MUC, NS_NICK + "+notify", NS_TUNE + "+notify"])


def caps_ver() -> str:
    s = "/".join(IDENTITY) + "<" + "".join(f + "<" for f in FEATURES)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


CAPS_VER = caps_ver()

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (ip netns add NAME)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


# --- stanzas ----------------------------------------------------------------------------------

def q(tag_ns: str, name: str) -> str:
    return f"{{{tag_ns}}}{name}"


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def text(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")


def body_of(el: ET.Element) -> Optional[str]:
    b = el.find(q(NS_CLIENT, "body"))
    return b.text if b is not None else None


def error_condition(el: ET.Element) -> Optional[str]:
    err = el.find(q(NS_CLIENT, "error"))
    if err is None:
        return None
    for c in err:
        if c.tag.startswith("{" + NS_STANZAS + "}") and local(c.tag) != "text":
            return local(c.tag)
    return None


def error_text(el: ET.Element) -> str:
    err = el.find(q(NS_CLIENT, "error"))
    t = err.find(q(NS_STANZAS, "text")) if err is not None else None
    return (t.text or "") if t is not None else ""


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def is_message(*, frm: Optional[str] = None, type: object = ..., body: Optional[str] = None,
               body_prefix: Optional[str] = None, id: Optional[str] = None) -> Callable:
    def pred(el: ET.Element) -> bool:
        if el.tag != q(NS_CLIENT, "message"):
            return False
        if frm is not None and el.get("from") != frm:
            return False
        if type is not ... and el.get("type") != type:
            return False
        if id is not None and el.get("id") != id:
            return False
        b = body_of(el)
        if body is not None and b != body:
            return False
        if body_prefix is not None and not (b or "").startswith(body_prefix):
            return False
        return True
    pred.__doc__ = f"<message from={frm!r} type={type if type is not ... else '*'!r} body={body or body_prefix!r}>"
    return pred


def is_presence(*, frm: Optional[str] = None, type: object = ..., bare_from: Optional[str] = None,
                show: Optional[str] = None, status: Optional[str] = None,
                muc_status: Optional[str] = None) -> Callable:
    """type=None: an available presence (no type attribute); show="": no <show/>."""
    def pred(el: ET.Element) -> bool:
        if el.tag != q(NS_CLIENT, "presence"):
            return False
        if frm is not None and el.get("from") != frm:
            return False
        if bare_from is not None and bare(el.get("from", "")) != bare_from:
            return False
        if type is not ... and el.get("type") != type:
            return False
        if show is not None and (el.findtext(q(NS_CLIENT, "show")) or "") != show:
            return False
        if status is not None and (el.findtext(q(NS_CLIENT, "status")) or "") != status:
            return False
        if muc_status is not None:
            x = el.find(q(NS_MUC_USER, "x"))
            if x is None or muc_status not in [s.get("code") for s in x.findall(q(NS_MUC_USER, "status"))]:
                return False
        return True
    pred.__doc__ = (f"<presence from={frm or bare_from!r} type={type if type is not ... else '*'!r}"
                    f"{' show=' + show if show else ''}{' status=' + status if status else ''}"
                    f"{' muc-status=' + muc_status if muc_status else ''}>")
    return pred


def pep_event(frm: str, node: str, check: Callable[[ET.Element], bool]) -> Callable:
    def pred(el: ET.Element) -> bool:
        if el.tag != q(NS_CLIENT, "message") or bare(el.get("from", "")) != frm:
            return False
        ev = el.find(q(NS_PUBSUB_EVENT, "event"))
        if ev is None:
            return False
        items = ev.find(q(NS_PUBSUB_EVENT, "items"))
        if items is None or items.get("node") != node:
            return False
        return any(check(it) for it in items.findall(q(NS_PUBSUB_EVENT, "item")))
    pred.__doc__ = f"PEP event from {frm} on node {node}"
    return pred


def presence_xml(to: Optional[str] = None, type: Optional[str] = None, show: Optional[str] = None,
                 status: Optional[str] = None, extra: str = "", caps: bool = True) -> str:
    attrs = (f" to={quoteattr(to)}" if to else "") + (f" type={quoteattr(type)}" if type else "")
    inner = ""
    if show:
        inner += f"<show>{escape(show)}</show>"
    if status:
        inner += f"<status>{escape(status)}</status>"
    inner += extra
    if caps and type is None:
        inner += f"<c xmlns='{NS_CAPS}' hash='sha-1' node='{CAPS_NODE}' ver={quoteattr(CAPS_VER)}/>"
    return f"<presence{attrs}>{inner}</presence>"


def message_xml(to: str, body: str, type: str = "chat", id: Optional[str] = None) -> str:
    id_attr = f" id={quoteattr(id)}" if id else ""
    return f"<message to={quoteattr(to)} type={quoteattr(type)}{id_attr}><body>{escape(body)}</body></message>"


# --- a side: one server's namespace, its own thread and event loop --------------------------------

class Side:
    def __init__(self, spec: str):
        (self.key, self.netns, self.ip, self.domain, self.user, self.password, trust) = spec.split(",", 6)
        self.trust = Path(trust)
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.clients: list[Client] = []
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=f"side-{self.key}", daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"side {self.key}: event loop did not start")
        if self._error:
            raise self._error

    @property
    def bare(self) -> str:
        return f"{self.user}@{self.domain}"

    def _run(self) -> None:
        try:
            enter_netns(self.netns)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            self._error = e
            self._ready.set()
            return
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        loop.run_forever()

    def run(self, coro, timeout: float):
        """Run a coroutine on this side's loop; its result, or an AssertionError after timeout."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"side {self.key}: step did not finish within {timeout:.0f}s") from None

    def call(self, fn, *args) -> None:
        """Call a plain function on this side's loop, in order with earlier calls."""
        self.loop.call_soon_threadsafe(fn, *args)

    def client(self, resource: str, presence: bool = True, timeout: float = 20.0) -> "Client":
        async def make():
            c = Client(self, resource)
            await c.connect(timeout)
            # As real clients do: the roster first. It makes this session an "interested
            # resource" (RFC 6121 2.1.6), the only kind Prosody delivers inbound subscription
            # stanzas (subscribed, unsubscribe...) and roster pushes to.
            rid = "roster-" + secrets.token_hex(4)
            c.xmpp.send_raw(f"<iq type='get' id='{rid}'><query xmlns='{NS_ROSTER}'/></iq>")
            await c._wait(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == rid, WAIT, "roster result")
            if presence:
                c.xmpp.send_raw(presence_xml())
            return c
        c = self.run(make(), timeout + 5)
        self.clients.append(c)
        return c

    def shutdown(self) -> None:
        for c in self.clients:
            try:
                self.run(c.aclose(), 8)
            except Exception:  # noqa: BLE001 - best effort at the end
                pass
        if self.loop:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Client:
    """One slixmpp connection; lives on its side's loop. Records every stanza it receives (a
    copy of the XML, before slixmpp's handlers see it); the sync methods are for the main thread."""

    def __init__(self, side: Side, resource: str):
        self.side = side
        self.resource = resource
        x = slixmpp.ClientXMPP(f"{side.bare}/{resource}", side.password,
                               plugin_config={"feature_mechanisms": {"use_mech": "SCRAM-SHA-1"}})
        self.xmpp = x
        # c2s TLS is verified: in ca mode against the test CA, in dialback mode against the
        # server's own self-signed certificate; the name checked is the domain.
        # SCRAM-SHA-1 without -PLUS, so the client must say it does not do channel binding
        # (gs2 flag 'n'). slixmpp 1.8.3 puts the socket's tls-unique in the credentials and
        # then sends 'y' ("I could, I think you cannot"), which a server offering
        # SCRAM-SHA-1-PLUS must refuse as a downgrade (RFC 5802 section 6; Starling does,
        # Prosody 0.12 and ejabberd 23.01 offer no -PLUS here). README quirk 15.
        mechs = x["feature_mechanisms"]
        creds = mechs.sasl_callback

        def no_channel_binding(required, optional, creds=creds):
            values = creds(required, optional)
            if "channel_binding" in values:
                values["channel_binding"] = None
            return values
        mechs.sasl_callback = no_channel_binding
        x.ca_certs = side.trust
        x.default_domain = side.domain
        x.whitespace_keepalive = False
        x.auto_authorize = None  # subscriptions are answered by the flows, not by slixmpp
        x.auto_subscribe = False

        async def fixed_address(domain, port=None):  # no DNS: this side's server, by address
            return [(side.domain, side.ip, C2S_PORT)]
        x.get_dns_records = fixed_address
        self.received: list[ET.Element] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        self._events: asyncio.Queue = asyncio.Queue()
        x.add_filter("in", self._record)
        x.register_handler(Callback("federation disco#info", MatchXPath(f"{{{NS_CLIENT}}}iq/{{{NS_DISCO_INFO}}}query"),
                                    self._disco_info))
        for ev in ("session_start", "failed_auth", "connection_failed", "ssl_invalid_chain", "disconnected"):
            x.add_event_handler(ev, lambda arg=None, ev=ev: self._events.put_nowait((ev, arg)))

    # -- inside the loop --

    def _record(self, stanza):
        self.received.append(copy.deepcopy(stanza.xml))
        self._changed.set()
        return stanza

    def _disco_info(self, iq) -> None:
        if iq["type"] != "get":
            return
        node = iq.xml.find(q(NS_DISCO_INFO, "query")).get("node")
        node_attr = f" node={quoteattr(node)}" if node else ""
        cat, typ, _lang, name = IDENTITY
        feats = "".join(f"<feature var={quoteattr(f)}/>" for f in FEATURES)
        self.xmpp.send_raw(
            f"<iq type='result' id={quoteattr(iq['id'])} to={quoteattr(str(iq['from']))}>"
            f"<query xmlns='{NS_DISCO_INFO}'{node_attr}><identity category='{cat}' type='{typ}' name='{name}'/>"
            f"{feats}</query></iq>")

    async def connect(self, timeout: float) -> None:
        x = self.xmpp
        if "address" in inspect.signature(x.connect).parameters:  # slixmpp < 1.9
            x.connect(address=(self.side.ip, C2S_PORT))
        else:
            x.connect(self.side.ip, C2S_PORT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                x.cancel_connection_attempt()
                raise AssertionError(f"{self.side.bare}/{self.resource}: no session within {timeout:.0f}s")
            try:
                ev, arg = await asyncio.wait_for(self._events.get(), remaining)
            except asyncio.TimeoutError:
                continue
            if ev == "session_start":
                return
            if ev in ("failed_auth", "connection_failed", "ssl_invalid_chain"):
                x.cancel_connection_attempt()
                raise AssertionError(f"{self.side.bare}/{self.resource}: {ev}: {arg!r}")

    async def aclose(self) -> None:
        x = self.xmpp
        x.cancel_connection_attempt()
        if x.transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(x.disconnect(wait=1.0)), 4)
        except Exception:  # noqa: BLE001
            x.abort()

    async def _wait(self, pred: Callable, timeout: float, what: Optional[str]) -> ET.Element:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, el in enumerate(self.received):
                if i not in self._taken and pred(el):
                    self._taken.add(i)
                    return el
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n    ".join(text(el)[:400] for el in self.received[-8:])
                raise AssertionError(f"{self.jid}: no {what or pred.__doc__ or 'matching stanza'} within "
                                     f"{timeout:.0f}s; last stanzas received:\n    {recent}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    # -- from the main thread --

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    @property
    def bare(self) -> str:
        return self.side.bare

    def send(self, xml: str) -> None:
        self.side.call(self.xmpp.send_raw, xml)

    def wait(self, pred: Callable, timeout: float = WAIT, what: Optional[str] = None) -> ET.Element:
        return self.side.run(self._wait(pred, timeout, what), timeout + 5)

    def try_wait(self, pred: Callable, timeout: float = WAIT) -> Optional[ET.Element]:
        try:
            return self.wait(pred, timeout)
        except AssertionError:
            return None

    def wait_all(self, pred: Callable, count: int, timeout: float = WAIT, what: Optional[str] = None) -> list:
        async def all_of():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            out = []
            for _ in range(count):
                out.append(await self._wait(pred, max(0.05, deadline - loop.time()), what))
            return out
        return self.side.run(all_of(), timeout + 5)

    def iq(self, payload: str, type: str = "get", to: Optional[str] = None, timeout: float = WAIT) -> ET.Element:
        """Send an iq, return its reply (result or error)."""
        iq_id = "fed-" + secrets.token_hex(5)
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.send(f"<iq type='{type}' id='{iq_id}'{to_attr}>{payload}</iq>")

        def reply(el: ET.Element) -> bool:
            return el.tag == q(NS_CLIENT, "iq") and el.get("id") == iq_id and el.get("type") in ("result", "error")
        reply.__doc__ = f"reply to iq {iq_id} ({type} to {to or 'own account'})"
        return self.wait(reply, timeout)

    def roster(self) -> dict:
        r = self.iq(f"<query xmlns='{NS_ROSTER}'/>")
        assert r.get("type") == "result", f"roster get failed: {text(r)}"
        query = r.find(q(NS_ROSTER, "query"))
        return {it.get("jid"): {"subscription": it.get("subscription"), "ask": it.get("ask")}
                for it in query.findall(q(NS_ROSTER, "item"))}

    def close(self) -> None:
        self.side.run(self.aclose(), 8)


# --- the run: flows, timing, results ------------------------------------------------------------

class Known:
    """known-issues.txt: "pair mode flow reason..." per line, fnmatch patterns, # comments."""

    def __init__(self, path: Optional[str]):
        self.rules: list[tuple[str, str, str, str]] = []
        if path and Path(path).is_file():
            for line in Path(path).read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 3)
                if len(parts) == 4:
                    self.rules.append((parts[0], parts[1], parts[2], parts[3]))

    def reason(self, pair: str, mode: str, flow: str) -> Optional[str]:
        for p, m, f, why in self.rules:
            if fnmatch.fnmatch(pair, p) and fnmatch.fnmatch(mode, m) and fnmatch.fnmatch(flow, f):
                return why
        return None


class Run:
    def __init__(self, args):
        self.pair, self.mode = args.pair, args.mode
        self.kind_a, self.kind_b = args.pair.split("-", 1)
        self.results = args.results
        self.known = Known(args.known)
        self.a = Side(args.side[0])
        self.b = Side(args.side[1])
        self.failed = 0
        self.notes: list[str] = []
        self.alice: Optional[Client] = None
        self.bob: Optional[Client] = None

    def note(self, s: str) -> None:
        self.notes.append(s)

    def tok(self) -> str:
        return secrets.token_hex(4)

    def record(self, flow: str, result: str, seconds: float, detail: str) -> None:
        detail = " ".join(detail.split())[:300]
        print(f"{result:5} {flow:15} {seconds:6.1f}s  {detail}", flush=True)
        with open(self.results, "a") as f:
            f.write(f"{self.pair}\t{self.mode}\t{flow}\t{result}\t{seconds:.1f}\t{detail}\n")

    def flow(self, name: str, fn: Callable[["Run"], None]) -> bool:
        self.notes = []
        t0 = time.monotonic()
        try:
            fn(self)
            ok, err = True, ""
        except Exception as e:  # noqa: BLE001 - any failure of a flow is reported as such
            ok = False
            err = f"{type(e).__name__}: {e}" if not isinstance(e, AssertionError) else str(e)
            print(f"--- {name} failed:\n{err}\n{traceback.format_exc()}", flush=True)
        secs = time.monotonic() - t0
        notes = "; ".join(self.notes)
        known = self.known.reason(self.pair, self.mode, name)
        if ok:
            self.record(name, "PASS", secs, notes + (f" (listed as known issue, not reproduced: {known})" if known else ""))
        elif known:
            self.record(name, "KNOWN", secs, f"{known} | {err.splitlines()[0] if err else ''}")
        else:
            self.failed += 1
            self.record(name, "FAIL", secs, (err.splitlines()[0] if err else "") + (f" | {notes}" if notes else ""))
        return ok


# --- the flows ----------------------------------------------------------------------------------

def f_connect(r: Run) -> None:
    r.alice = r.a.client("main")
    r.bob = r.b.client("main")
    r.note(f"{r.alice.jid} on {r.kind_a}, {r.bob.jid} on {r.kind_b}")


def f_messages(r: Run) -> None:
    A, B = r.alice, r.bob
    t = r.tok()
    first = time.monotonic()
    A.send(message_xml(B.bare, f"a2b bare {t}"))  # the first stanza: opens the s2s link a->b
    m = B.wait(is_message(body=f"a2b bare {t}", type="chat"), timeout=20)
    assert m.get("from") == A.jid, f"from={m.get('from')!r}, expected {A.jid}"
    r.note(f"first a->b {time.monotonic() - first:.2f}s")
    first = time.monotonic()
    B.send(message_xml(A.jid, f"b2a full {t}"))  # opens b->a
    m = A.wait(is_message(body=f"b2a full {t}"), timeout=20)
    assert m.get("from") == B.jid and m.get("to") == A.jid, text(m)
    r.note(f"first b->a {time.monotonic() - first:.2f}s")
    B.send(message_xml(A.bare, f"b2a bare {t}"))
    A.wait(is_message(frm=B.jid, body=f"b2a bare {t}"))
    A.send(message_xml(B.jid, f"a2b full {t}"))
    B.wait(is_message(frm=A.jid, body=f"a2b full {t}"))
    for sender, rcpt, label in ((A, B, "a->b"), (B, A, "b->a")):
        prefix = f"burst {label} {t} "
        for i in range(20):
            sender.send(message_xml(rcpt.bare, f"{prefix}{i}"))
        got = rcpt.wait_all(is_message(frm=sender.jid, body_prefix=prefix), 20, timeout=20)
        order = [int(body_of(m).rsplit(" ", 1)[1]) for m in got]
        assert order == list(range(20)), f"burst {label} arrived as {order}"
    r.note("bare+full both ways, 2x20 in order")


def f_subscription(r: Run) -> None:
    A, B = r.alice, r.bob
    # alice subscribes to bob, bob approves; then bob to alice, alice approves.
    for asker, contact in ((A, B), (B, A)):
        asker.send(presence_xml(contact.bare, "subscribe"))
        contact.wait(is_presence(frm=asker.bare, type="subscribe"))
        contact.send(presence_xml(asker.bare, "subscribed"))
        asker.wait(is_presence(frm=contact.bare, type="subscribed"))
    # The roster of each side must reach subscription='both' (bounded polling).
    deadline = time.monotonic() + WAIT
    states = {}
    while True:
        states = {"alice": A.roster().get(B.bare, {}), "bob": B.roster().get(A.bare, {})}
        if all(s.get("subscription") == "both" and not s.get("ask") for s in states.values()):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"rosters did not reach 'both': alice has {B.bare}: {states['alice']}, "
                                 f"bob has {A.bare}: {states['bob']}")
        time.sleep(0.3)
    # Once subscribed, each sees the other's available presence.
    A.wait(is_presence(frm=B.jid, type=None))
    B.wait(is_presence(frm=A.jid, type=None))
    r.note("rosters: alice:bob=both, bob:alice=both; available presence seen both ways")


def f_presence(r: Run) -> None:
    A, B = r.alice, r.bob
    t = r.tok()
    A.send(presence_xml(show="away", status=f"away {t}"))
    B.wait(is_presence(frm=A.jid, type=None, show="away", status=f"away {t}"))
    B.send(presence_xml(show="dnd", status=f"dnd {t}"))
    A.wait(is_presence(frm=B.jid, type=None, show="dnd", status=f"dnd {t}"))
    # A second resource on each side: available seen across, then unavailable, once sent
    # explicitly (alice) and once generated by the server when the stream closes (bob).
    A2 = r.a.client("second")
    B.wait(is_presence(frm=A2.jid, type=None))
    A2.send(presence_xml(type="unavailable", status=f"bye {t}"))
    B.wait(is_presence(frm=A2.jid, type="unavailable"))
    A2.close()
    B2 = r.b.client("second")
    A.wait(is_presence(frm=B2.jid, type=None))
    B2.close()
    A.wait(is_presence(frm=B2.jid, type="unavailable"))
    # Back to plain available (no <show/>) on both sides, seen across.
    A.send(presence_xml(status=f"back {t}"))
    B.send(presence_xml(status=f"back {t}"))
    B.wait(is_presence(frm=A.jid, type=None, show="", status=f"back {t}"))
    A.wait(is_presence(frm=B.jid, type=None, show="", status=f"back {t}"))
    r.note("show/status both ways; 2nd resource available+unavailable both ways (explicit, on close)")


def f_unknown_user(r: Run) -> None:
    for sender, domain, kind in ((r.alice, r.b.domain, r.kind_b), (r.bob, r.a.domain, r.kind_a)):
        to = f"nosuchuser@{domain}"
        mid = "fed-" + r.tok()
        sender.send(message_xml(to, "anyone there?", id=mid))
        e = sender.wait(is_message(frm=to, type="error", id=mid))
        cond = error_condition(e)
        assert cond in ("service-unavailable", "item-not-found"), f"{kind} answered with {cond}: {text(e)}"
        r.note(f"{kind} sends {cond}")


def f_disco(r: Run) -> None:
    for asker, domain, kind in ((r.alice, r.b.domain, r.kind_b), (r.bob, r.a.domain, r.kind_a)):
        res = asker.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=domain)
        assert res.get("type") == "result", f"disco#info of {domain}: {text(res)}"
        assert res.get("from") == domain, f"reply from {res.get('from')!r}"
        query = res.find(q(NS_DISCO_INFO, "query"))
        ids = [(i.get("category"), i.get("type")) for i in query.findall(q(NS_DISCO_INFO, "identity"))]
        feats = [f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature"))]
        assert ("server", "im") in ids, f"no server/im identity: {ids}"
        assert NS_DISCO_INFO in feats, "disco#info not among the features"
        r.note(f"{kind}: server/im, {len(feats)} features")


def muc_round(r: Run, owner: Client, guest: Client, service: str) -> str:
    t = r.tok()
    room = f"fed-{t}@{service}"
    o_nick, g_nick = owner.side.user, guest.side.user
    owner.send(presence_xml(f"{room}/{o_nick}", extra=f"<x xmlns='{NS_MUC}'/>", caps=False))
    me = owner.wait(is_presence(frm=f"{room}/{o_nick}", type=None, muc_status="110"))
    created = is_presence(muc_status="201")(me)
    if created:  # a new room: accept the default configuration (an instant room, XEP-0045 10.1.2)
        res = owner.iq(f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='{NS_XDATA}' type='submit'/></query>", "set", room)
        assert res.get("type") == "result", f"instant room config: {text(res)}"
    guest.send(presence_xml(f"{room}/{g_nick}", extra=f"<x xmlns='{NS_MUC}'/>", caps=False))
    guest.wait(is_presence(frm=f"{room}/{g_nick}", type=None, muc_status="110"), timeout=20)
    owner.wait(is_presence(frm=f"{room}/{g_nick}", type=None))
    guest.send(message_xml(room, f"from guest {t}", "groupchat"))
    owner.wait(is_message(frm=f"{room}/{g_nick}", type="groupchat", body=f"from guest {t}"))
    guest.wait(is_message(frm=f"{room}/{g_nick}", type="groupchat", body=f"from guest {t}"))  # reflection
    owner.send(message_xml(room, f"from owner {t}", "groupchat"))
    guest.wait(is_message(frm=f"{room}/{o_nick}", type="groupchat", body=f"from owner {t}"))
    guest.send(presence_xml(f"{room}/{g_nick}", "unavailable"))
    owner.wait(is_presence(frm=f"{room}/{g_nick}", type="unavailable"))
    owner.send(presence_xml(f"{room}/{o_nick}", "unavailable"))
    return f"{service}: {'created (201)' if created else 'joined'}, remote join, groupchat both ways"


def f_muc(r: Run) -> None:
    # The room the issue asks for (on conference.b.example, joined from a.example), then the
    # mirror image, so that both servers' MUC serve a remote occupant.
    r.note(muc_round(r, r.bob, r.alice, f"conference.{r.b.domain}"))
    r.note(muc_round(r, r.alice, r.bob, f"conference.{r.a.domain}"))


def pep_round(r: Run, publisher: Client, contact: Client, node: str, payload: str,
              check: Callable[[ET.Element], bool], kind: str) -> str:
    res = publisher.iq(f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item>{payload}</item></publish></pubsub>", "set")
    assert res.get("type") == "result", f"PEP publish on {kind}: {text(res)}"
    pred = pep_event(publisher.bare, node, check)
    if contact.try_wait(pred, WAIT) is not None:
        return f"{kind} PEP -> {contact.side.domain}: notified"
    # Not yet: the remote PEP service may not have learnt the contact's +notify interest
    # (XEP-0115 caps, a disco#info query across the link). Presence again: the service
    # answers an available presence with the last item (XEP-0163 4.3.2).
    contact.send(presence_xml())
    ev = contact.try_wait(pred, WAIT)
    assert ev is not None, f"no {node} notification from {publisher.bare} ({kind}) to {contact.jid}, " \
                           f"neither after publishing nor after presence"
    return f"{kind} PEP -> {contact.side.domain}: notified after re-sent presence"


def f_pep(r: Run) -> None:
    # Both directions always run (a failure of the first is raised after the second), so
    # that a failing row still says which PEP service did notify across the link.
    t = r.tok()
    nick = f"Bob {t}"
    title = f"Federation {t}"
    rounds = [
        (r.bob, r.alice, NS_NICK, f"<nick xmlns='{NS_NICK}'>{nick}</nick>",
         lambda it: it.findtext(q(NS_NICK, "nick")) == nick, r.kind_b),
        (r.alice, r.bob, NS_TUNE, f"<tune xmlns='{NS_TUNE}'><title>{title}</title></tune>",
         lambda it: (it.find(q(NS_TUNE, "tune")) is not None
                     and it.find(q(NS_TUNE, "tune")).findtext(q(NS_TUNE, "title")) == title), r.kind_a),
    ]
    failures = []
    for args in rounds:
        try:
            r.note(pep_round(r, *args))
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        raise AssertionError("; ".join(failures))


def stop_namespace(ns: str, grace: float = 10.0) -> None:
    """Stop the peer server: SIGTERM every process in its namespace, SIGKILL after `grace`."""
    def pids() -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=5).stdout
        return [int(p) for p in out.split()]
    for p in pids():
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in pids():
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


LINK_FAILURE_WAIT = 60.0


def f_link_failure(r: Run) -> None:
    A, B = r.alice, r.bob
    t0 = time.monotonic()
    stop_namespace(r.b.netns)
    r.note(f"{r.kind_b} stopped in {time.monotonic() - t0:.1f}s")
    mid = "fed-" + r.tok()
    t0 = time.monotonic()
    A.send(message_xml(B.bare, "are you there?", id=mid))
    e = A.wait(is_message(type="error", id=mid), timeout=LINK_FAILURE_WAIT)
    secs = time.monotonic() - t0
    cond = error_condition(e)
    assert cond in ("remote-server-not-found", "remote-server-timeout"), \
        f"{r.kind_a} bounced with {cond} ({error_text(e)!r}) after {secs:.1f}s: {text(e)}"
    r.note(f"{r.kind_a} bounced {cond} after {secs:.1f}s" + (f" ({error_text(e)})" if error_text(e) else ""))


FLOWS = [
    ("connect", f_connect),
    ("a-messages", f_messages),
    ("b-subscription", f_subscription),
    ("c-presence", f_presence),
    ("d-unknown-user", f_unknown_user),
    ("e-disco", f_disco),
    ("f-muc", f_muc),
    ("g-pep", f_pep),
    ("h-link-failure", f_link_failure),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--known")
    ap.add_argument("--side", action="append", required=True,
                    help="key,netns,ip,domain,user,password,trust-pem (twice: a then b)")
    ap.add_argument("--only", help="comma-separated flow names (connect always runs)")
    args = ap.parse_args()
    assert len(args.side) == 2, "--side twice"
    print(f"INFO slixmpp {getattr(slixmpp, '__version__', '?')} from {Path(slixmpp.__file__).parent}; "
          f"python {sys.version.split()[0]}", flush=True)
    r = Run(args)
    only = set(args.only.split(",")) if args.only else None
    connected = True
    try:
        for name, fn in FLOWS:
            if only and name != "connect" and name not in only:
                continue
            if not connected:
                r.record(name, "SKIP", 0.0, "not run: the clients could not connect")
                continue
            ok = r.flow(name, fn)
            if name == "connect" and not ok:
                connected = False  # nothing else can run
    finally:
        r.a.shutdown()
        r.b.shutdown()
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the compat suite.

* `Server`: the instance under test, described by the COMPAT_* variables that run.sh exports.
* `Net.account()`: a fresh account, created with the real `starling user add` CLI.
* `Client`: a slixmpp `ClientXMPP` that records every stanza it receives (a copy, before
  slixmpp's own handlers touch it), so a test can wait for a stanza matching a predicate and
  then assert on its exact contents.
* `xmpp_test`: runs an async test in its own event loop with a hard deadline and always
  disconnects the test's clients afterwards.

Everything waits with a deadline: no loop here can run forever.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import os
import secrets
import ssl
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import slixmpp

# Default deadline for one expected stanza. Loopback answers arrive in milliseconds; this is
# only there so a missing stanza fails the test instead of hanging it.
WAIT = 8.0
# How long `expect_none` watches for a stanza that must not arrive.
QUIET = 1.0

NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_STREAMS = "http://etherx.jabber.org/streams"


# A throwaway self-signed certificate for CN=localhost that the server does NOT use: trusting
# only this must make the TLS handshake fail (proves that the tests really verify the server cert).
UNRELATED_CA = """-----BEGIN CERTIFICATE-----
MIIBljCCATugAwIBAgIUF9jTZmzJh5VUJLBV57EVIC6DQgwwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNDA0MTg1NVoYDzIxMjYxMDMx
MDQxODU1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARu4mofK3U3YLqZ/sffeT6gylv2APQlNTwQCHZc21zO0Y8hCbqueH1V
NmNfeNlcV5DkEpi72lAwNX4ofK7KNwS7o2kwZzAdBgNVHQ4EFgQUg9pdiptfjkg9
CRz5ayhFhW11piwwHwYDVR0jBBgwFoAUg9pdiptfjkg9CRz5ayhFhW11piwwDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
SQAwRgIhAOvqfx523FdCx6De1/FNDuAqpgrEHwiI1hTvpSW5RZ+xAiEAki4Xf2AL
LlwewnZWdvxtxl5fLCYWJrPrMT7b8Rl+5/Q=
-----END CERTIFICATE-----
"""


@dataclass(frozen=True)
class Server:
    bin: str
    config: str
    domain: str
    host: str
    port: int
    tls_port: int
    ca: Path
    log: Path

    @classmethod
    def from_env(cls) -> "Server":
        missing = [v for v in ("STARLING_BIN", "COMPAT_CONFIG", "COMPAT_PORT", "COMPAT_TLS_PORT", "COMPAT_CA") if not os.environ.get(v)]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not set: run the suite through compat/run.sh, which starts the server")
        return cls(
            bin=os.environ["STARLING_BIN"],
            config=os.environ["COMPAT_CONFIG"],
            domain=os.environ.get("COMPAT_DOMAIN", "localhost"),
            host=os.environ.get("COMPAT_HOST", "127.0.0.1"),
            port=int(os.environ["COMPAT_PORT"]),
            tls_port=int(os.environ["COMPAT_TLS_PORT"]),
            ca=Path(os.environ["COMPAT_CA"]),
            log=Path(os.environ.get("COMPAT_SERVER_LOG", "/dev/null")),
        )

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.bin, "--config", self.config, *args],
            input=stdin, capture_output=True, text=True, timeout=30, check=False,
        )


@dataclass(frozen=True)
class Account:
    jid: str  # bare JID
    password: str

    @property
    def local(self) -> str:
        return self.jid.split("@", 1)[0]


_serial = itertools.count(1)


def create_account(server: Server, prefix: str) -> Account:
    """A new account on the server under test, made with `starling user add --password-stdin`."""
    jid = f"{prefix}{next(_serial)}x{secrets.token_hex(2)}@{server.domain}"
    password = "pw-" + secrets.token_urlsafe(12)
    res = server.cli("user", "add", jid, "--password-stdin", stdin=password + "\n")
    assert res.returncode == 0 and f"created {jid}" in res.stdout, f"user add {jid} failed: {res.returncode} {res.stdout!r} {res.stderr!r}"
    return Account(jid, password)


# --- reading stanzas ------------------------------------------------------------------------

def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def xml_of(stanza) -> ET.Element:
    return stanza.xml if hasattr(stanza, "xml") else stanza


def text_of(stanza) -> str:
    """The stanza serialised, for failure messages."""
    return ET.tostring(xml_of(stanza), encoding="unicode")


def child(stanza, namespace: str, name: str) -> ET.Element | None:
    return xml_of(stanza).find(f"{{{namespace}}}{name}")


def error_condition(stanza) -> str | None:
    """The defined condition of a stanza error (e.g. 'service-unavailable'), or None."""
    err = xml_of(stanza).find(f"{{{NS_CLIENT}}}error")
    if err is None:
        return None
    for c in err:
        if ns(c.tag) == NS_STANZAS and local(c.tag) != "text":
            return local(c.tag)
    return None


def is_stanza(kind: str, *, type: str | None | object = ..., frm: str | None = None, to: str | None = None,
              has: tuple[str, str] | None = None) -> Callable:
    """A predicate on recorded stanzas. `type=None` means "no type attribute"; `frm`/`to`
    match the exact attribute; `has=(ns, name)` requires that child element."""
    def pred(s) -> bool:
        x = xml_of(s)
        if x.tag != f"{{{NS_CLIENT}}}{kind}":
            return False
        if type is not ...:
            if x.get("type") != type:
                return False
        if frm is not None and x.get("from") != frm:
            return False
        if to is not None and x.get("to") != to:
            return False
        if has is not None and x.find(f"{{{has[0]}}}{has[1]}") is None:
            return False
        return True
    attrs = [f"type={type!r}" if type is not ... else "", f"from={frm!r}" if frm else "", f"to={to!r}" if to else "",
             f"with <{has[1]} xmlns={has[0]!r}/>" if has else ""]
    pred.__doc__ = f"<{kind} {' '.join(a for a in attrs if a)}>"
    return pred


def roster_items(stanza) -> dict[str, dict]:
    """{jid: {'name', 'subscription', 'ask', 'groups'}} of a roster query (result or push)."""
    q = child(stanza, NS_ROSTER, "query")
    assert q is not None, f"no roster query in {text_of(stanza)}"
    items = {}
    for it in q.findall(f"{{{NS_ROSTER}}}item"):
        items[it.get("jid")] = {
            "name": it.get("name"),
            "subscription": it.get("subscription"),
            "ask": it.get("ask"),
            "groups": sorted((g.text or "") for g in it.findall(f"{{{NS_ROSTER}}}group")),
        }
    return items


def roster_push(jid: str | None = None) -> Callable:
    """Predicate: a roster push (iq set with a roster query), optionally about `jid`."""
    def pred(s) -> bool:
        x = xml_of(s)
        if x.tag != f"{{{NS_CLIENT}}}iq" or x.get("type") != "set":
            return False
        q = x.find(f"{{{NS_ROSTER}}}query")
        if q is None:
            return False
        return jid is None or any(i.get("jid") == jid for i in q.findall(f"{{{NS_ROSTER}}}item"))
    pred.__doc__ = f"roster push about {jid}"
    return pred


# --- the client -----------------------------------------------------------------------------

DEFAULT_PLUGINS = ("xep_0030", "xep_0054", "xep_0049", "xep_0092", "xep_0115", "xep_0191", "xep_0199", "xep_0202",
                   "xep_0203", "xep_0012", "xep_0077")
# What a modern client loads on top (slixmpp's own implementations of the XEPs): stream
# management, carbons, archive with RSM, PEP, bookmarks (both generations), avatars, CSI.
MODERN_PLUGINS = ("xep_0198", "xep_0280", "xep_0297", "xep_0059", "xep_0313", "xep_0060", "xep_0163", "xep_0223",
                  "xep_0048", "xep_0402", "xep_0084", "xep_0352", "xep_0359", "xep_0334")


class Client:
    """One slixmpp connection under test."""

    def __init__(self, server: Server, account: Account, resource: str | None = None, *,
                 mech: str | None = "SCRAM-SHA-256", transport: str = "starttls", password: str | None = None,
                 ca: Path | None = None, plugins: Iterable[str] = DEFAULT_PLUGINS):
        self.server = server
        self.account = account
        self.transport = transport
        jid = f"{account.jid}/{resource}" if resource else account.jid
        plugin_config = {"feature_mechanisms": {"use_mech": mech}} if mech else {}
        x = slixmpp.ClientXMPP(jid, password if password is not None else account.password, plugin_config=plugin_config)
        self.xmpp = x
        # Real certificate verification against the server's generated self-signed cert.
        x.ca_certs = Path(ca or server.ca)
        x.enable_plaintext = False
        x.enable_starttls = transport == "starttls"
        x.enable_direct_tls = transport == "direct_tls"
        x.whitespace_keepalive = False
        # The tests drive subscriptions explicitly: no automatic approval or subscribe-back.
        x.auto_authorize = None
        x.auto_subscribe = False
        for p in plugins:
            x.register_plugin(p)
        self.received: list = []  # every stanza received, copied, in order (stream features too)
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        self.events: asyncio.Queue = asyncio.Queue()
        x.add_filter("in", self._record)
        x.add_event_handler("session_start", lambda _: self.events.put_nowait(("session_start", None)))
        x.add_event_handler("failed_auth", lambda f: self.events.put_nowait(("failed_auth", copy.copy(f))))
        x.add_event_handler("no_auth", lambda _: self.events.put_nowait(("no_auth", None)))
        x.add_event_handler("ssl_invalid_chain", self._invalid_chain)
        x.add_event_handler("connection_failed", lambda e: self.events.put_nowait(("connection_failed", e)))
        x.add_event_handler("disconnected", lambda r: self.events.put_nowait(("disconnected", r)))
        self.connected = False

    def _record(self, stanza):
        self.received.append(copy.copy(stanza))
        self._changed.set()
        return stanza

    def _invalid_chain(self, err):
        self.events.put_nowait(("ssl_invalid_chain", err))
        self.xmpp.cancel_connection_attempt()
        self.xmpp.abort()

    @property
    def jid(self) -> str:
        """The bound full JID."""
        return str(self.xmpp.boundjid.full)

    @property
    def bare(self) -> str:
        return self.account.jid

    def _port(self) -> int:
        return self.server.tls_port if self.transport == "direct_tls" else self.server.port

    async def connect(self, *, presence: bool = True, timeout: float = 15.0) -> "Client":
        """Connect, authenticate, bind; optionally send initial presence. Fails the test on
        anything but a started session."""
        kind, detail = await self.try_connect(timeout=timeout)
        assert kind == "session_start", f"{self.account.jid}: expected a session, got {kind}: {detail!r}"
        if presence:
            self.xmpp.send_presence()
        return self

    async def try_connect(self, timeout: float = 15.0):
        """Connect and report the first decisive event: ('session_start'|'failed_auth'|
        'ssl_invalid_chain'|'connection_failed'|'disconnected'|'no_auth', detail)."""
        self.xmpp.connect(self.server.host, self._port())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.xmpp.cancel_connection_attempt()
                return ("timeout", f"no session within {timeout}s")
            try:
                kind, detail = await asyncio.wait_for(self.events.get(), remaining)
            except asyncio.TimeoutError:
                continue
            if kind == "session_start":
                self.connected = True
                return kind, detail
            if kind in ("failed_auth", "ssl_invalid_chain", "no_auth", "connection_failed", "disconnected"):
                # Do not let slixmpp retry in the background.
                self.xmpp.cancel_connection_attempt()
                return kind, detail

    async def close(self, timeout: float = 5.0) -> None:
        x = self.xmpp
        x.cancel_connection_attempt()
        if x.transport is None:
            return
        try:
            fut = x.disconnect(wait=1.0)
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except (asyncio.TimeoutError, Exception):
            x.abort()
        self.connected = False

    # --- waiting for stanzas ---

    async def wait_for(self, pred: Callable, timeout: float = WAIT, what: str | None = None):
        """The first received stanza matching `pred` not returned before (waiting up to
        `timeout` seconds). Raises AssertionError listing what did arrive otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, s in enumerate(self.received):
                if i not in self._taken and pred(s):
                    self._taken.add(i)
                    return s
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n  ".join(text_of(s) for s in self.received[-12:])
                raise AssertionError(
                    f"{self.account.jid}: no {what or pred.__doc__ or 'matching stanza'} within {timeout}s; "
                    f"last stanzas received:\n  {recent}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_all(self, pred: Callable, count: int, timeout: float = WAIT, what: str | None = None) -> list:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        out = []
        for _ in range(count):
            out.append(await self.wait_for(pred, max(0.05, deadline - loop.time()), what))
        return out

    async def expect_none(self, pred: Callable, duration: float = QUIET, what: str | None = None) -> None:
        """Assert that no (untaken) stanza matching `pred` arrives within `duration` seconds."""
        await asyncio.sleep(duration)
        bad = [s for i, s in enumerate(self.received) if i not in self._taken and pred(s)]
        assert not bad, f"{self.account.jid}: unexpected {what or pred.__doc__}:\n  " + "\n  ".join(text_of(s) for s in bad)

    def event(self, name: str) -> asyncio.Future:
        """A future for the next slixmpp event `name` (its argument). Ask for it before the
        action that raises the event; await it with `asyncio.wait_for`."""
        fut = asyncio.get_running_loop().create_future()

        def handler(arg=None):
            if not fut.done():
                fut.set_result(arg)
        self.xmpp.add_event_handler(name, handler, disposable=True)
        return fut

    async def wait_event(self, fut: asyncio.Future, what: str, timeout: float = WAIT):
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            recent = "\n  ".join(text_of(s) for s in self.received[-12:])
            raise AssertionError(f"{self.account.jid}: no {what} within {timeout}s; last stanzas received:\n  {recent}")

    def take(self, stanzas: Iterable) -> None:
        """Mark these received stanzas as seen: later waits and checks skip them."""
        for s in stanzas:
            self._taken.add(next(i for i, r in enumerate(self.received) if r is s))

    def untaken(self, pred: Callable) -> list:
        return [s for i, s in enumerate(self.received) if i not in self._taken and pred(s)]

    def features(self) -> list[ET.Element]:
        """The <stream:features/> elements received on this connection, in order."""
        return [xml_of(s) for s in self.received if xml_of(s).tag == f"{{{NS_STREAMS}}}features"]

    # --- sending ---

    def send_raw_stanza(self, xml: str):
        """Send hand-written XML (it must carry xmlns='jabber:client' where needed)."""
        self.xmpp.send_raw(xml)

    async def iq(self, payload: str, *, type: str = "get", to: str | None = None, timeout: float = WAIT):
        """Send an iq with a raw payload and return the reply (result or error) as a recorded
        stanza; does not raise on type='error'."""
        iq_id = "compat-" + secrets.token_hex(6)
        to_attr = f" to='{to}'" if to else ""
        self.xmpp.send_raw(f"<iq xmlns='jabber:client' type='{type}' id='{iq_id}'{to_attr}>{payload}</iq>")

        def reply(s) -> bool:
            x = xml_of(s)
            return x.tag == f"{{{NS_CLIENT}}}iq" and x.get("id") == iq_id and x.get("type") in ("result", "error")
        reply.__doc__ = f"reply to iq {iq_id}"
        return await self.wait_for(reply, timeout)


async def befriend(a: Client, b: Client) -> None:
    """A mutual presence subscription between two online clients (initial presence sent),
    through the plain RFC 6121 handshake; returns once each has the other's presence."""
    for sub, contact in ((a, b), (b, a)):
        sub.xmpp.send_presence_subscription(pto=contact.bare)
        await contact.wait_for(is_stanza("presence", type="subscribe", frm=sub.bare))
        contact.xmpp.send_presence(pto=sub.bare, ptype="subscribed")
        await sub.wait_for(is_stanza("presence", type="subscribed", frm=contact.bare))
        await sub.wait_for(is_stanza("presence", type=None, frm=contact.jid),
                           what=f"presence of {contact.jid} after approval")


def data_form(form_type: str, fields: dict[str, str | list[str]]):
    """A submitted XEP-0004 form with a hidden FORM_TYPE (publish-options, configuration)."""
    from slixmpp.plugins.xep_0004.stanza import Form
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for var, value in fields.items():
        form.add_field(var=var, value=value)
    return form


def publish_options(**fields: str):
    """XEP-0060 §7.1.5 publish-options, e.g. publish_options(access_model="open")."""
    return data_form("http://jabber.org/protocol/pubsub#publish-options",
                     {f"pubsub#{k}": v for k, v in fields.items()})


class Net:
    """Per-test access to the server: accounts and clients, all closed at the end."""

    def __init__(self, server: Server):
        self.server = server
        self.clients: list[Client] = []

    def account(self, prefix: str = "u") -> Account:
        return create_account(self.server, prefix)

    def client(self, account: Account, resource: str | None = None, **kw) -> Client:
        c = Client(self.server, account, resource, **kw)
        self.clients.append(c)
        return c

    async def online(self, account: Account, resource: str | None = None, *, presence: bool = True, **kw) -> Client:
        return await self.client(account, resource, **kw).connect(presence=presence)

    async def online_notified(self, account: Account, resource: str, nodes: Iterable[str], **kw) -> Client:
        """Online with `NODE+notify` for each of `nodes` in its XEP-0115 caps from its first
        presence on (XEP-0163 §4.3.2: the server asks for the caps once it sees them), through
        slixmpp's xep_0163 `add_interest`. `plugins` must include xep_0163."""
        c = await self.client(account, resource, **kw).connect(presence=False)
        for node in nodes:
            c.xmpp.plugin["xep_0163"].add_interest(node)
        # add_interest updates the caps in the background; this waits for that.
        await c.xmpp.plugin["xep_0115"].update_caps(broadcast=False)
        info = await c.xmpp.plugin["xep_0030"].get_info(jid=c.jid, local=True)  # a DiscoInfo, not an Iq
        missing = [n for n in nodes if f"{n}+notify" not in info["features"]]
        assert not missing, f"slixmpp's caps lack {missing}"
        c.xmpp.send_presence()
        return c

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def xmpp_test(timeout: float = 45.0):
    """Decorator: run `async def test_x(net, ...)` in a fresh event loop with a deadline and
    close every client it opened afterwards, pass or fail."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(net: Net, *args, **kwargs):
            async def main():
                try:
                    await asyncio.wait_for(fn(net, *args, **kwargs), timeout)
                finally:
                    await asyncio.wait_for(net.close_all(), 15)
            asyncio.run(main())
        return wrapper
    return deco


def tls_version(client: Client) -> str | None:
    sock = client.xmpp.socket
    return sock.version() if isinstance(sock, (ssl.SSLSocket, ssl.SSLObject)) else None

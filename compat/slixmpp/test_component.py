"""External components (XEP-0114) through slixmpp's own ComponentXMPP: an echo component on
the domain run.sh configures ([components.domains."echo.localhost"]), driven by slixmpp
clients through the real server."""

import asyncio
import os

import pytest
import slixmpp

from harness import WAIT, child, error_condition, is_stanza, text_of, xml_of, xmpp_test

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def component_env() -> tuple[str, str, int]:
    missing = [v for v in ("COMPAT_COMPONENT_DOMAIN", "COMPAT_COMPONENT_SECRET", "COMPAT_COMPONENT_PORT") if not os.environ.get(v)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run the suite through compat/run.sh, which configures the component")
    return os.environ["COMPAT_COMPONENT_DOMAIN"], os.environ["COMPAT_COMPONENT_SECRET"], int(os.environ["COMPAT_COMPONENT_PORT"])


class Echo:
    """A slixmpp ComponentXMPP that answers every chat message with "echo: <body>", from the
    JID it was addressed to, and records what it receives."""

    def __init__(self, host: str, secret: str | None = None):
        domain, right_secret, port = component_env()
        self.domain, self.host, self.port = domain, host, port
        x = slixmpp.ComponentXMPP(domain, secret if secret is not None else right_secret, host, port)
        x.register_plugin("xep_0030")
        x.plugin["xep_0030"].add_identity(category="gateway", itype="echo", name="Echo")
        self.xmpp = x
        self.received: list = []
        self.events: asyncio.Queue = asyncio.Queue()
        x.add_event_handler("message", self._echo)
        x.add_event_handler("session_start", lambda _: self.events.put_nowait(("session_start", None)))
        x.add_event_handler("stream_error", lambda e: self.events.put_nowait(("stream_error", e)))
        x.add_event_handler("disconnected", lambda r: self.events.put_nowait(("disconnected", r)))

    def _echo(self, msg):
        self.received.append(msg)
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply(f"echo: {msg['body']}").send()

    async def start(self) -> tuple[str, object]:
        """Connect and report the first decisive event."""
        self.xmpp.connect(self.host, self.port)
        kind, detail = await asyncio.wait_for(self.events.get(), WAIT)
        return kind, detail

    async def close(self) -> None:
        x = self.xmpp
        x.cancel_connection_attempt()
        if x.transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(x.disconnect(wait=1.0)), 5)
        except Exception:
            x.abort()


@xmpp_test()
async def test_echo_component(net):
    echo = Echo(net.server.host)
    try:
        kind, detail = await echo.start()
        assert kind == "session_start", f"the component's handshake failed: {kind} {detail!r}"
        alice = await net.online(net.account("alice"), "r")

        # A message to a JID at the component's domain reaches it with alice's full JID, and
        # the echo comes back from that JID, untouched by the server.
        bot = f"bot@{echo.domain}/desk"
        msg = alice.xmpp.make_message(mto=bot, mbody="hello component", mtype="chat")
        msg["id"] = "c1"
        msg.send()
        got = await alice.wait_for(is_stanza("message", type="chat", frm=bot))
        assert got["body"] == "echo: hello component", text_of(got)
        assert xml_of(got).get("to") == alice.jid, text_of(got)
        assert any(m["from"].full == alice.jid and m["to"].full == bot for m in echo.received)

        # To the component's domain itself, bare.
        alice.xmpp.send_message(mto=echo.domain, mbody="to the domain", mtype="chat")
        got = await alice.wait_for(is_stanza("message", type="chat", frm=echo.domain))
        assert got["body"] == "echo: to the domain", text_of(got)

        # disco#info of the component, answered by slixmpp's xep_0030 on the component.
        info = await alice.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=echo.domain)
        assert xml_of(info).get("type") == "result" and xml_of(info).get("from") == echo.domain, text_of(info)
        identity = child(info, NS_DISCO_INFO, "query").find(f"{{{NS_DISCO_INFO}}}identity")
        assert identity is not None and identity.get("category") == "gateway", text_of(info)

        # The served domain's disco#items lists the connected component.
        items = await alice.iq(f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=net.server.domain)
        jids = [i.get("jid") for i in child(items, NS_DISCO_ITEMS, "query")]
        assert echo.domain in jids, text_of(items)

        # The component asks the server itself (disco#info of the served domain) and gets the
        # server's answer.
        server_info = await echo.xmpp.plugin["xep_0030"].get_info(jid=net.server.domain, ifrom=echo.domain, timeout=WAIT)
        assert ("server", "im") in {(c, t) for (c, t, _l, _n) in server_info["disco_info"]["identities"]}, text_of(server_info)
    finally:
        await echo.close()

    # Gone: a message to it is answered with service-unavailable by the server.
    await asyncio.sleep(0.2)
    alice.xmpp.send_message(mto=f"bot@{echo.domain}", mbody="still there?", mtype="chat")
    err = await alice.wait_for(is_stanza("message", type="error", frm=f"bot@{echo.domain}"))
    assert error_condition(err) == "service-unavailable", text_of(err)


@xmpp_test()
async def test_wrong_secret_is_refused(net):
    echo = Echo(net.server.host, secret="not the secret")
    try:
        kind, detail = await echo.start()
        assert kind == "stream_error", f"expected a stream error, got {kind} {detail!r}"
        condition = detail["condition"]
        assert condition == "not-authorized", text_of(detail)
        assert detail["text"], f"the stream error says what was wrong: {text_of(detail)}"
    finally:
        await echo.close()

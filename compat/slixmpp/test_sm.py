"""XEP-0198 Stream Management through slixmpp's own plugin (`xep_0198`): enabling with
resumption, acknowledgements both ways, and a resumption after the TCP connection is cut
under the client, which the plugin performs by itself when it reconnects."""

import asyncio

from harness import (DEFAULT_PLUGINS, NS_CLIENT, NS_DELAY, befriend, child, is_stanza, text_of, xml_of,
                     xmpp_test)

SM = "urn:xmpp:sm:3"
SM_PLUGINS = DEFAULT_PLUGINS + ("xep_0198",)


def sm_element(name: str, **attrs: str):
    """Predicate: a stream management nonza `<name xmlns='urn:xmpp:sm:3'/>` with these attributes."""
    def pred(s) -> bool:
        x = xml_of(s)
        return x.tag == f"{{{SM}}}{name}" and all(x.get(k) == v for k, v in attrs.items())
    pred.__doc__ = f"<{name} xmlns='{SM}' {attrs or ''}/>"
    return pred


def message_with_body(text: str):
    def pred(s) -> bool:
        x = xml_of(s)
        return x.tag == f"{{{NS_CLIENT}}}message" and x.findtext(f"{{{NS_CLIENT}}}body") == text
    pred.__doc__ = f"message with body {text!r}"
    return pred


def cut(client) -> None:
    """The TCP connection dies under the client: the socket is closed at once (no
    `</stream:stream>`, no TLS close_notify; unread data makes the kernel send a reset).
    slixmpp sees a lost connection and keeps its stream management state."""
    transport = client.xmpp.transport
    assert transport is not None, "not connected"
    transport.abort()


async def sm_online(net, account, resource: str):
    """A client with slixmpp's xep_0198 that logged in, enabled stream management with
    resumption and sent initial presence; returns (client, the <enabled/> element)."""
    c = net.client(account, resource, plugins=SM_PLUGINS)
    enabled = c.event("sm_enabled")
    await c.connect()
    await c.wait_event(enabled, "<enabled/> after <enable resume='true'/>")
    return c, c.untaken(sm_element("enabled"))[0]


@xmpp_test()
async def test_sm_enabled_and_acks_both_ways(net):
    alice, enabled = await sm_online(net, net.account("alice"), "phone")
    bob = await net.online(net.account("bob"), "r")
    sm = alice.xmpp.plugin["xep_0198"]

    # §2: offered after authentication only, next to <bind/>.
    features = alice.features()
    assert features[-1].find(f"{{{SM}}}sm") is not None, "no <sm/> with <bind/>"
    assert all(f.find(f"{{{SM}}}sm") is None for f in features[:-1]), "<sm/> offered before authentication"
    # §3: resumption granted with an SM-ID and a max the server chose.
    e = xml_of(enabled)
    assert e.get("resume") in ("true", "1") and e.get("id"), text_of(enabled)
    assert e.get("max") is None or int(e.get("max")) > 0, text_of(enabled)
    assert sm.sm_id == e.get("id") and sm.enabled_in and sm.enabled_out

    # Stanzas to the client: the server asks for an ack by itself (<r/>) and slixmpp answers
    # with the number it handled.
    for i in range(3):
        bob.xmpp.send_message(mto=alice.jid, mbody=f"to phone {i}", mtype="chat")
    for i in range(3):
        await alice.wait_for(message_with_body(f"to phone {i}"))
    await alice.wait_for(sm_element("r"), what="the server's <r/> after it sent stanzas")
    assert sm.handled >= 3

    # Stanzas from the client: every one counts (message, presence, iq), and an <r/> from the
    # plugin gets an <a h/> covering all of them; the plugin then holds nothing unacknowledged.
    for i in range(2):
        alice.xmpp.send_message(mto=bob.jid, mbody=f"from phone {i}", mtype="chat")
    await alice.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    for i in range(2):
        await bob.wait_for(message_with_body(f"from phone {i}"))
    acked = alice.event("stanza_acked")
    sm.request_ack()
    ack = await alice.wait_for(sm_element("a", h=str(sm.seq)), what=f"<a h='{sm.seq}'/>")
    assert int(xml_of(ack).get("h")) == sm.seq, text_of(ack)
    await alice.wait_event(acked, "stanza_acked")
    assert len(sm.unacked_queue) == 0, list(sm.unacked_queue)


@xmpp_test(timeout=50)
async def test_sm_resumption_after_the_connection_is_cut(net):
    alice_acc = net.account("alice")
    alice, enabled = await sm_online(net, alice_acc, "phone")
    bob = await net.online(net.account("bob"), "r")
    await befriend(alice, bob)
    sm = alice.xmpp.plugin["xep_0198"]
    sm_id = xml_of(enabled).get("id")
    full = alice.jid

    bob.xmpp.send_message(mto=full, mbody="before the cut", mtype="chat")
    await alice.wait_for(message_with_body("before the cut"))

    # A message on its way when the connection dies: written by the server, never read.
    alice.xmpp.transport.pause_reading()
    bob.xmpp.send_message(mto=full, mbody="in flight", mtype="chat")
    await bob.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    await asyncio.sleep(0.3)
    assert not alice.untaken(message_with_body("in flight")), "read although reading was paused"
    handled_at_cut = sm.handled
    lost = alice.event("disconnected")
    cut(alice)
    await alice.wait_event(lost, "the disconnected event")
    assert sm.sm_id == sm_id, "slixmpp dropped its SM-ID on a lost connection"

    # While the connection is down: messages to the full and to the bare JID, and one the
    # user types (slixmpp queues it until the stream is back).
    bob.xmpp.send_message(mto=full, mbody="meanwhile to the full JID", mtype="chat")
    bob.xmpp.send_message(mto=alice_acc.jid, mbody="meanwhile to the bare JID", mtype="chat")
    alice.xmpp.send_message(mto=bob.bare, mbody="typed while offline", mtype="chat")
    await asyncio.sleep(0.5)
    # §5: the session waits to be resumed; contacts do not see it go.
    await bob.expect_none(is_stanza("presence", type="unavailable", frm=full), 0.5,
                          what="unavailable presence of a session waiting to be resumed")

    # The plugin resumes on the next connection: <resume previd h/> instead of binding.
    resumed_event = alice.event("session_resumed")
    alice.xmpp.connect(net.server.host, net.server.port)
    await alice.wait_event(resumed_event, "session_resumed", timeout=15)
    resumed = await alice.wait_for(sm_element("resumed"), what="<resumed/>")
    r = xml_of(resumed)
    assert r.get("previd") == sm_id, text_of(resumed)
    assert alice.jid == full, "the resumed session has another JID"
    binds = [s for s in alice.received if xml_of(s).find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
             and xml_of(s).tag == f"{{{NS_CLIENT}}}iq"]
    assert len(binds) == 1, "bound again instead of resuming"

    # What the client had not handled comes again, then what arrived meanwhile: each once.
    texts = ["in flight", "meanwhile to the full JID", "meanwhile to the bare JID"]
    got = [await alice.wait_for(message_with_body(t), timeout=10) for t in texts]
    order = [alice.received.index(m) for m in got]
    assert order == sorted(order), "re-sent and new messages out of order: " + ", ".join(text_of(m) for m in got)
    # The one written before the cut carries its original time (a XEP-0203 delay).
    delay = child(got[0], NS_DELAY, "delay")
    assert delay is not None and delay.get("from") == net.server.domain, text_of(got[0])
    for m in got:
        assert xml_of(m).get("from") == bob.jid, text_of(m)
    # The message the user typed while offline reaches bob once.
    typed = await bob.wait_for(message_with_body("typed while offline"))
    assert xml_of(typed).get("from") == full, text_of(typed)

    # Nothing twice, on either side (the one read before the cut is not sent again).
    await asyncio.sleep(1.0)
    for t in ["before the cut"] + texts:
        assert len([s for s in alice.received if message_with_body(t)(s)]) == 1, f"{t!r} delivered twice"
    assert len([s for s in bob.received if message_with_body("typed while offline")(s)]) == 1
    assert int(r.get("h")) <= sm.seq

    # The counters carried over: after an <r/> the server acknowledges everything the
    # client ever sent on this session, and the client's own count went on from the cut.
    assert sm.handled >= handled_at_cut + 3
    sm.request_ack()
    await alice.wait_for(sm_element("a", h=str(sm.seq)), what=f"<a h='{sm.seq}'/> after resumption")
    assert len(sm.unacked_queue) == 0, list(sm.unacked_queue)
    # And the session works as before.
    bob.xmpp.send_message(mto=full, mbody="after resumption", mtype="chat")
    await alice.wait_for(message_with_body("after resumption"))
    await bob.expect_none(is_stanza("presence", type="unavailable", frm=full), 0.2)


@xmpp_test()
async def test_sm_unknown_session_falls_back_to_binding(net):
    """A resumption the server cannot honour (here: an SM-ID it never gave, as after a server
    restart) gets <failed><item-not-found/></failed>; the plugin then binds a new session on
    the same stream and the client goes on."""
    alice, _ = await sm_online(net, net.account("alice"), "phone")
    sm = alice.xmpp.plugin["xep_0198"]
    lost = alice.event("disconnected")
    cut(alice)
    await alice.wait_event(lost, "the disconnected event")
    sm.sm_id = "no-such-session-" + sm.sm_id[:8]

    started = alice.event("session_start")
    alice.xmpp.connect(net.server.host, net.server.port)
    await alice.wait_event(started, "a new session after the failed resumption", timeout=15)
    failed = await alice.wait_for(sm_element("failed"))
    assert xml_of(failed).find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None, text_of(failed)
    pong = await alice.iq("<ping xmlns='urn:xmpp:ping'/>", to=net.server.domain)
    assert xml_of(pong).get("type") == "result", text_of(pong)

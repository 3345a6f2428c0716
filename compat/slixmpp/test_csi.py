"""XEP-0352 Client State Indication through slixmpp's own plugin (`xep_0352`: the stream
feature, send_inactive / send_active): while inactive, presence updates and chat states wait
(only the newest of each), a message with a body comes at once after them, and <active/>
releases the rest before the answer to the next request."""

import asyncio

from harness import DEFAULT_PLUGINS, NS_CLIENT, befriend, is_stanza, text_of, xml_of, xmpp_test

CSI = "urn:xmpp:csi:0"
CHATSTATES = "http://jabber.org/protocol/chatstates"
PLUGINS = DEFAULT_PLUGINS + ("xep_0352",)
CONTACT_PLUGINS = DEFAULT_PLUGINS + ("xep_0085",)


def status_of(s) -> str | None:
    return xml_of(s).findtext(f"{{{NS_CLIENT}}}status")


def presence_from(jid: str):
    return is_stanza("presence", type=None, frm=jid)


def chat_state_from(jid: str):
    def pred(s) -> bool:
        x = xml_of(s)
        return x.tag == f"{{{NS_CLIENT}}}message" and x.get("from") == jid and \
            x.find(f"{{{NS_CLIENT}}}body") is None and any(c.tag.startswith(f"{{{CHATSTATES}}}") for c in x)
    pred.__doc__ = f"chat state from {jid}"
    return pred


async def round_trip(c):
    """A ping answered by the server: everything sent before it has been handled."""
    await c.xmpp.plugin["xep_0199"].ping(jid=c.server.domain, timeout=5)


@xmpp_test()
async def test_csi_holds_what_can_wait(net):
    alice_acc = net.account("alice")
    alice = net.client(alice_acc, "phone", plugins=PLUGINS)
    csi_on = alice.event("csi_enabled")
    await alice.connect()
    await alice.wait_event(csi_on, "the plugin's csi_enabled (the <csi/> stream feature)")
    assert alice.features()[-1].find(f"{{{CSI}}}csi") is not None, "no <csi/> after authentication"
    assert alice.xmpp.plugin["xep_0352"].enabled
    bob = await net.online(net.account("bob"), "r", plugins=CONTACT_PLUGINS)
    carol = await net.online(net.account("carol"), "r")
    await befriend(alice, bob)
    await befriend(alice, carol)

    await asyncio.sleep(0.3)  # the presences of the subscriptions above have all arrived
    mark = len(alice.received)
    alice.xmpp.plugin["xep_0352"].send_inactive()
    await round_trip(alice)  # the server has read <inactive/> (it answers neither nonza)
    for i in (1, 2, 3):
        bob.xmpp.send_presence(pshow="away", pstatus=f"bob {i}")
    carol.xmpp.send_presence(pstatus="carol 1")
    state = bob.xmpp.make_message(mto=alice.jid, mtype="chat")
    state["chat_state"] = "composing"
    state.send()
    await round_trip(bob)
    await round_trip(carol)
    quiet = lambda s: presence_from(bob.jid)(s) or presence_from(carol.jid)(s) or chat_state_from(bob.jid)(s)
    await asyncio.sleep(0.6)
    held = [s for s in alice.received[mark:] if quiet(s)]
    assert not held, "written while inactive: " + " ".join(text_of(s) for s in held)

    # A message with a body is urgent: it comes at once, after what was held, and of each
    # contact only the newest presence is left.
    bob.xmpp.send_message(mto=alice.jid, mbody="wake up", mtype="chat")
    message = await alice.wait_for(lambda s: xml_of(s).findtext(f"{{{NS_CLIENT}}}body") == "wake up",
                                   what="bob's message")
    index = alice.received.index(message)
    released = [s for s in alice.received[mark:index] if quiet(s)]
    bob_presences = [status_of(s) for s in released if presence_from(bob.jid)(s)]
    assert bob_presences == ["bob 3"], "bob's presence while inactive: " + ", ".join(text_of(s) for s in released)
    assert [status_of(s) for s in released if presence_from(carol.jid)(s)] == ["carol 1"]
    states = [s for s in released if chat_state_from(bob.jid)(s)]
    assert len(states) == 1 and xml_of(states[0]).find(f"{{{CHATSTATES}}}composing") is not None, \
        " ".join(text_of(s) for s in states)
    alice.take(released)  # later checks see only what comes next

    # Still inactive: more updates wait; <active/> releases only the newest, before the
    # answer to the request that follows it (§5.1).
    bob.xmpp.send_presence(pshow="xa", pstatus="bob 4")
    bob.xmpp.send_presence(pshow="dnd", pstatus="bob 5")
    await round_trip(bob)
    await alice.expect_none(presence_from(bob.jid), 0.5, what="bob's presence while still inactive")
    alice.xmpp.plugin["xep_0352"].send_active()
    ping_at = len(alice.received)
    await round_trip(alice)
    pres = await alice.wait_for(presence_from(bob.jid), 2, what="bob's newest presence after <active/>")
    assert status_of(pres) == "bob 5" and xml_of(pres).findtext(f"{{{NS_CLIENT}}}show") == "dnd", text_of(pres)
    pong = next(s for s in alice.received[ping_at:] if is_stanza("iq", type="result")(s))
    assert alice.received.index(pres) < alice.received.index(pong), "the held presence came after the pong"
    assert not alice.untaken(presence_from(bob.jid)), "an older presence was released too"

    # Active again: updates come at once.
    bob.xmpp.send_presence(pstatus="bob 6")
    again = await alice.wait_for(presence_from(bob.jid), 2)
    assert status_of(again) == "bob 6", text_of(again)

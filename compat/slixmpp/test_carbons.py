"""XEP-0280 Message Carbons between two resources of one account, through slixmpp's own
plugin (`xep_0280`: enable/disable and its carbon_received / carbon_sent events)."""

import asyncio

from harness import DEFAULT_PLUGINS, NS_CLIENT, is_stanza, text_of, xml_of, xmpp_test

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
PLUGINS = DEFAULT_PLUGINS + ("xep_0297", "xep_0280")


def body_is(text: str):
    def pred(s) -> bool:
        x = xml_of(s)
        return x.tag == f"{{{NS_CLIENT}}}message" and x.findtext(f"{{{NS_CLIENT}}}body") == text
    pred.__doc__ = f"message with body {text!r}"
    return pred


def carbon(kind: str, text: str):
    """Predicate: a <received/> or <sent/> carbon whose forwarded message has body `text`."""
    def pred(s) -> bool:
        x = xml_of(s)
        inner = x.find(f"{{{CARBONS}}}{kind}/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
        return x.tag == f"{{{NS_CLIENT}}}message" and inner is not None and \
            inner.findtext(f"{{{NS_CLIENT}}}body") == text
    pred.__doc__ = f"<{kind}/> carbon of {text!r}"
    return pred


def forwarded(copy):
    return xml_of(copy).find(f"{{{CARBONS}}}*/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")


@xmpp_test()
async def test_carbons_between_two_resources(net):
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    phone = await net.online(alice_acc, "phone", plugins=PLUGINS)
    laptop = await net.online(alice_acc, "laptop", plugins=PLUGINS)
    bob = await net.online(bob_acc, "desk", plugins=PLUGINS)

    # §3: advertised by the server; §4: the plugin's <enable/> is accepted, answered from
    # the account's bare JID.
    info = await laptop.xmpp.plugin["xep_0030"].get_info(jid=net.server.domain, timeout=5)
    assert CARBONS in info["disco_info"]["features"], text_of(info)
    for c in (phone, laptop):
        res = await c.xmpp.plugin["xep_0280"].enable(timeout=5)
        assert res["type"] == "result" and str(res["from"]) in ("", alice_acc.jid), text_of(res)

    # §7 received: bob writes to the phone; the laptop gets a copy, the phone the original.
    got_copy = laptop.event("carbon_received")
    bob.xmpp.send_message(mto=phone.jid, mbody="to the phone", mtype="chat")
    original = await phone.wait_for(body_is("to the phone"))
    assert xml_of(original).get("from") == bob.jid and xml_of(original).get("to") == phone.jid, text_of(original)
    copy = await laptop.wait_for(carbon("received", "to the phone"))
    await laptop.wait_event(got_copy, "slixmpp's carbon_received event")
    x = xml_of(copy)
    assert x.get("from") == alice_acc.jid and x.get("to") == laptop.jid and x.get("type") == "chat", text_of(copy)
    inner = forwarded(copy)
    assert inner.get("from") == bob.jid and inner.get("to") == phone.jid and inner.get("type") == "chat", text_of(copy)
    await phone.expect_none(carbon("received", "to the phone"), 0.3, what="a carbon of a message it got itself")

    # §8 sent: the laptop writes to bob; the phone gets a <sent/> copy, bob the message.
    got_sent = phone.event("carbon_sent")
    laptop.xmpp.send_message(mto=bob.jid, mbody="from the laptop", mtype="chat")
    to_bob = await bob.wait_for(body_is("from the laptop"))
    assert xml_of(to_bob).get("from") == laptop.jid, text_of(to_bob)
    sent = await phone.wait_for(carbon("sent", "from the laptop"))
    await phone.wait_event(got_sent, "slixmpp's carbon_sent event")
    assert xml_of(sent).get("from") == alice_acc.jid and xml_of(sent).get("to") == phone.jid, text_of(sent)
    inner = forwarded(sent)
    assert inner.get("from") == laptop.jid and inner.get("to") == bob.jid, text_of(sent)
    await laptop.expect_none(carbon("sent", "from the laptop"), 0.3, what="a carbon of its own message")

    # A message to the bare JID: each resource sees it exactly once (delivered or copied).
    bob.xmpp.send_message(mto=alice_acc.jid, mbody="to the account", mtype="chat")
    await asyncio.sleep(0.6)
    for c in (phone, laptop):
        seen = c.untaken(lambda s: body_is("to the account")(s) or carbon("received", "to the account")(s))
        assert len(seen) == 1, f"{c.jid} saw it {len(seen)} times: " + " ".join(text_of(s) for s in seen)

    # §6: <private/> keeps a message out of the copies; the recipient still gets it.
    msg = bob.xmpp.make_message(mto=phone.jid, mbody="private one", mtype="chat")
    msg.enable("carbon_private")
    msg.send()
    private = await phone.wait_for(body_is("private one"))
    assert private.xml.find(f"{{{CARBONS}}}private") is not None, text_of(private)
    await laptop.expect_none(carbon("received", "private one"), 0.5, what="a carbon of a <private/> message")

    # §5: after <disable/> the laptop gets no more copies; the phone still does.
    res = await laptop.xmpp.plugin["xep_0280"].disable(timeout=5)
    assert res["type"] == "result", text_of(res)
    bob.xmpp.send_message(mto=phone.jid, mbody="after disable", mtype="chat")
    await phone.wait_for(body_is("after disable"))
    laptop.xmpp.send_message(mto=bob.jid, mbody="laptop still talks", mtype="chat")
    await phone.wait_for(carbon("sent", "laptop still talks"))
    await laptop.expect_none(carbon("received", "after disable"), 0.5, what="a carbon after <disable/>")


@xmpp_test()
async def test_carbons_are_not_sent_to_a_resource_that_did_not_enable_them(net):
    alice_acc = net.account("alice")
    phone = await net.online(alice_acc, "phone", plugins=PLUGINS)
    laptop = await net.online(alice_acc, "laptop", plugins=PLUGINS)
    bob = await net.online(net.account("bob"), "desk")
    await phone.xmpp.plugin["xep_0280"].enable(timeout=5)
    bob.xmpp.send_message(mto=phone.jid, mbody="only the phone", mtype="chat")
    await phone.wait_for(body_is("only the phone"))
    # And a copy is only made of messages for the account itself: one from the laptop to bob
    # reaches the enabled phone as <sent/>, while bob's to the laptop is received there only.
    bob.xmpp.send_message(mto=laptop.jid, mbody="for the laptop", mtype="chat")
    await laptop.wait_for(body_is("for the laptop"))
    copy = await phone.wait_for(carbon("received", "for the laptop"))
    assert forwarded(copy).get("to") == laptop.jid, text_of(copy)
    await laptop.expect_none(lambda s: carbon("received", "only the phone")(s), 0.5,
                             what="a carbon for a resource that did not enable carbons")
    # A headline is not copied (§6.1).
    bob.xmpp.send_message(mto=laptop.jid, mbody="a headline", mtype="headline")
    await laptop.wait_for(body_is("a headline"))
    await phone.expect_none(carbon("received", "a headline"), 0.5, what="a carbon of a headline")
    assert not phone.untaken(is_stanza("message", type="error"))

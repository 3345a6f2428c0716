"""All of a modern client's plugins at once (harness.MODERN_PLUGINS: stream management,
carbons, CSI, PEP interests, archive...), the way a phone uses them: it goes inactive, loses
its connection, comes back with a resumption and finds the copies of what its other client
said and got meanwhile, once each, then its history in the archive with the same ids."""

import asyncio

from harness import MODERN_PLUGINS, NS_CLIENT, befriend, is_stanza, text_of, xml_of, xmpp_test

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
SID = "urn:xmpp:sid:0"
SM = "urn:xmpp:sm:3"
MAM = "urn:xmpp:mam:2"
PLUGINS = MODERN_PLUGINS + ("xep_0004", "xep_0030", "xep_0115", "xep_0199", "xep_0203", "xep_0054", "xep_0049")


def carbon(kind: str, text: str):
    def pred(s) -> bool:
        inner = xml_of(s).find(f"{{{CARBONS}}}{kind}/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
        return inner is not None and inner.findtext(f"{{{NS_CLIENT}}}body") == text
    pred.__doc__ = f"<{kind}/> carbon of {text!r}"
    return pred


def body_is(text: str):
    def pred(s) -> bool:
        return xml_of(s).tag == f"{{{NS_CLIENT}}}message" and xml_of(s).findtext(f"{{{NS_CLIENT}}}body") == text
    pred.__doc__ = f"message {text!r}"
    return pred


async def modern_online(net, account, resource):
    c = net.client(account, resource, plugins=PLUGINS)
    sm_on, csi_on = c.event("sm_enabled"), c.event("csi_enabled")
    await c.connect()
    await c.wait_event(csi_on, "csi_enabled")
    await c.wait_event(sm_on, "sm_enabled")
    res = await c.xmpp.plugin["xep_0280"].enable(timeout=5)
    assert res["type"] == "result", text_of(res)
    return c


@xmpp_test(timeout=50)
async def test_modern_client_inactive_cut_resumed(net):
    alice_acc = net.account("alice")
    phone = await modern_online(net, alice_acc, "phone")
    laptop = await modern_online(net, alice_acc, "laptop")
    bob = await net.online(net.account("bob"), "desk")
    await befriend(phone, bob)
    await asyncio.sleep(0.3)

    # The phone's screen goes off, then its connection dies.
    phone.xmpp.plugin["xep_0352"].send_inactive()
    await phone.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    bob.xmpp.send_presence(pstatus="bob while the phone sleeps")
    await bob.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    await asyncio.sleep(0.3)
    lost = phone.event("disconnected")
    phone.xmpp.transport.abort()
    await phone.wait_event(lost, "disconnected")

    # Meanwhile the laptop talks with bob: copies for the phone wait in its session.
    laptop.xmpp.send_message(mto=bob.jid, mbody="from the laptop", mtype="chat")
    await bob.wait_for(body_is("from the laptop"))
    bob.xmpp.send_message(mto=laptop.jid, mbody="to the laptop", mtype="chat")
    live = await laptop.wait_for(body_is("to the laptop"))
    live_sid = [e.get("id") for e in xml_of(live).findall(f"{{{SID}}}stanza-id") if e.get("by") == alice_acc.jid]

    resumed = phone.event("session_resumed")
    phone.xmpp.connect(net.server.host, net.server.port)
    await phone.wait_event(resumed, "session_resumed", timeout=15)
    sent = await phone.wait_for(carbon("sent", "from the laptop"))
    received = await phone.wait_for(carbon("received", "to the laptop"))
    assert phone.received.index(sent) < phone.received.index(received), "copies out of order"
    # The presence held while the phone was inactive is not lost.
    held = await phone.wait_for(lambda s: is_stanza("presence", type=None, frm=bob.jid)(s)
                                and xml_of(s).findtext(f"{{{NS_CLIENT}}}status") == "bob while the phone sleeps",
                                what="bob's presence held while inactive")
    assert held is not None
    # §5.2 of XEP-0352: a resumed stream is active: updates come at once.
    bob.xmpp.send_presence(pstatus="bob after")
    await phone.wait_for(lambda s: is_stanza("presence", type=None, frm=bob.jid)(s)
                         and xml_of(s).findtext(f"{{{NS_CLIENT}}}status") == "bob after", 3)
    await asyncio.sleep(0.5)
    for pred in (carbon("sent", "from the laptop"), carbon("received", "to the laptop")):
        assert len([s for s in phone.received if pred(s)]) == 1, f"{pred.__doc__} delivered twice"

    # The received copy carries the archive's stanza-id, the one the laptop got live, and
    # the archive (newest first) has the conversation.
    inner = xml_of(received).find(f"{{{CARBONS}}}received/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
    copy_sid = [e.get("id") for e in inner.findall(f"{{{SID}}}stanza-id") if e.get("by") == alice_acc.jid]
    info = await phone.xmpp.plugin["xep_0030"].get_info(jid=alice_acc.jid, timeout=5)
    if MAM in info["disco_info"]["features"]:
        assert live_sid and copy_sid == live_sid, f"copy {copy_sid}, live {live_sid}: {text_of(received)}"
        newest = await phone.xmpp.plugin["xep_0313"].retrieve(
            jid=alice_acc.jid, with_jid=bob.bare, reverse=True, iterator=True, rsm={"max": 2}).next()
        results = list(newest["mam_fin"]["results"])
        bodies = [xml_of(r).findtext(f".//{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message/{{{NS_CLIENT}}}body")
                  for r in results]
        assert bodies == ["from the laptop", "to the laptop"], bodies
        assert results[-1]["mam_result"]["id"] == live_sid[0]
    # Stream management still counts right after all this.
    sm = phone.xmpp.plugin["xep_0198"]
    sm.request_ack()
    await phone.wait_for(lambda s: xml_of(s).tag == f"{{{SM}}}a" and xml_of(s).get("h") == str(sm.seq),
                         what=f"<a h='{sm.seq}'/>")

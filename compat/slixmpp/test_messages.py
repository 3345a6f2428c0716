"""1:1 messages (RFC 6121 §5, §8.5) and offline storage (XEP-0160 with XEP-0203 delay)."""

import asyncio
from datetime import datetime, timedelta, timezone

from harness import NS_CLIENT, NS_DELAY, child, error_condition, is_stanza, text_of, xml_of, xmpp_test

EXT_NS = "urn:example:starling-compat:0"


def body(m) -> str | None:
    el = child(m, NS_CLIENT, "body")
    return None if el is None else el.text


def message_with_body(text: str):
    def pred(s) -> bool:
        return xml_of(s).tag == f"{{{NS_CLIENT}}}message" and body(s) == text
    pred.__doc__ = f"message with body {text!r}"
    return pred


def parse_stamp(stamp: str) -> datetime:
    # XEP-0082 DateTime, e.g. 2026-01-01T12:00:00Z or with fractional seconds / offset.
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@xmpp_test()
async def test_chat_both_ways(net):
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await net.online(alice_acc, "desk")
    bob = await net.online(bob_acc, "phone")

    # alice -> bob's full JID, with an id, a thread and an unknown extension element that the
    # server must route untouched.
    msg = alice.xmpp.make_message(mto=bob.jid, mbody="Hello Bob <&> ünïcode ✓", mtype="chat")
    msg["id"] = "compat-m1"
    msg["thread"] = "thread-42"
    ext = msg.xml.makeelement(f"{{{EXT_NS}}}payload", {"n": "1"})
    ext.text = "keep me"
    msg.xml.append(ext)
    msg.send()

    got = await bob.wait_for(message_with_body("Hello Bob <&> ünïcode ✓"))
    x = xml_of(got)
    assert x.get("from") == alice.jid, text_of(got)       # stamped with the sender's full JID
    assert x.get("to") == bob.jid, text_of(got)
    assert x.get("type") == "chat" and x.get("id") == "compat-m1", text_of(got)
    assert got["thread"] == "thread-42", text_of(got)
    e = x.find(f"{{{EXT_NS}}}payload")
    assert e is not None and e.get("n") == "1" and e.text == "keep me", text_of(got)
    assert x.find(f"{{{NS_DELAY}}}delay") is None, "a live message must not carry a delay"

    # bob -> alice's bare JID: delivered to her only resource, 'to' left bare (§8.5.2.1.1).
    bob.xmpp.send_message(mto=alice.bare, mbody="Hi Alice", mtype="chat")
    got = await alice.wait_for(message_with_body("Hi Alice"))
    x = xml_of(got)
    assert (x.get("from"), x.get("to"), x.get("type")) == (bob.jid, alice.bare, "chat"), text_of(got)

    # slixmpp's own parsing agrees.
    assert str(got["from"]) == bob.jid and got["type"] == "chat" and got["body"] == "Hi Alice"

    # A type='normal' message (no type attribute) arrives too, without a type added.
    bob.xmpp.send_message(mto=alice.jid, mbody="plain normal")
    got = await alice.wait_for(message_with_body("plain normal"))
    assert xml_of(got).get("type") in (None, "normal"), text_of(got)


@xmpp_test()
async def test_bare_jid_message_skips_negative_priority(net):
    """RFC 6121 §8.5.2.1.1: never deliver to a resource with negative priority."""
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await net.online(alice_acc, "r")
    bob_hi = await net.online(bob_acc, "hi", presence=False)
    bob_neg = await net.online(bob_acc, "neg", presence=False)
    bob_hi.xmpp.send_presence(ppriority=5)
    bob_neg.xmpp.send_presence(ppriority=-1)
    await asyncio.sleep(0.3)

    alice.xmpp.send_message(mto=bob_acc.jid, mbody="to the bare JID", mtype="chat")
    got = await bob_hi.wait_for(message_with_body("to the bare JID"))
    assert xml_of(got).get("to") == bob_acc.jid, text_of(got)
    await bob_neg.expect_none(message_with_body("to the bare JID"), 0.7, what="message on a negative-priority resource")


@xmpp_test()
async def test_chat_to_unknown_resource_goes_to_the_account(net):
    """RFC 6121 §8.5.3.2.1: a chat message to a full JID with no matching resource is
    handled as if sent to the bare JID: the one non-negative resource MUST get it."""
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await net.online(alice_acc, "r")
    bob = await net.online(bob_acc, "real")
    alice.xmpp.send_message(mto=f"{bob_acc.jid}/gone-away", mbody="anyone there?", mtype="chat")
    got = await bob.wait_for(message_with_body("anyone there?"))
    assert xml_of(got).get("from") == alice.jid, text_of(got)


@xmpp_test()
async def test_iq_to_unknown_account_is_service_unavailable(net):
    """RFC 6121 §8.5.1: an IQ to an account that does not exist gets <service-unavailable/>."""
    alice = await net.online(net.account("alice"), "r")
    reply = await alice.iq("<query xmlns='jabber:iq:version'/>", to=f"nobody-here@{net.server.domain}/x")
    assert reply.xml.get("type") == "error" and error_condition(reply) == "service-unavailable", text_of(reply)
    assert reply.xml.get("from") == f"nobody-here@{net.server.domain}/x", text_of(reply)


@xmpp_test(timeout=50)
async def test_offline_messages_delivered_in_order_with_delay(net):
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    # bob has used his account before but is offline now.
    first = await net.online(bob_acc, "old")
    await first.close()

    alice = await net.online(alice_acc, "desk")
    before = datetime.now(timezone.utc) - timedelta(seconds=2)
    texts = [f"offline #{i} — ✓" for i in range(1, 4)]
    alice.xmpp.send_message(mto=bob_acc.jid, mbody=texts[0], mtype="chat")
    # A headline to an account with no available resource is dropped (RFC 6121 §8.5.2.2.1),
    # never stored.
    alice.xmpp.send_message(mto=bob_acc.jid, mbody="headline: do not store", mtype="headline")
    alice.xmpp.send_message(mto=bob_acc.jid, mbody=texts[1], mtype="normal")
    alice.xmpp.send_message(mto=bob_acc.jid, mbody=texts[2], mtype="chat")
    # Give the server a moment to store them; a ping round-trip orders after the messages.
    await alice.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    after = datetime.now(timezone.utc) + timedelta(seconds=2)

    # Stored messages wait for initial presence (XEP-0160 §3): not delivered at bind time.
    bob = await net.online(bob_acc, "new", presence=False)
    await bob.expect_none(is_stanza("message"), 0.8, what="offline message before initial presence")

    bob.xmpp.send_presence()
    got = await bob.wait_all(is_stanza("message"), 3, what="the 3 stored messages")
    assert [body(m) for m in got] == texts, "offline messages out of order or altered:\n" + "\n".join(map(text_of, got))
    for m, mtype in zip(got, ["chat", "normal", "chat"]):
        x = xml_of(m)
        assert x.get("from") == alice.jid, text_of(m)
        assert x.get("to") == bob_acc.jid, text_of(m)
        assert (x.get("type") or "normal") == mtype, text_of(m)
        delay = x.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None, f"no XEP-0203 delay on an offline message: {text_of(m)}"
        stamp = delay.get("stamp")
        assert stamp, text_of(m)
        when = parse_stamp(stamp)
        assert when.tzinfo is not None, f"stamp without UTC designator: {stamp}"
        assert before <= when <= after, f"delay stamp {stamp} outside [{before}, {after}]"
        assert delay.get("from") in (None, net.server.domain), text_of(m)
        # slixmpp's XEP-0203 plugin reads the same stamp.
        assert m["delay"]["stamp"] == when
    await bob.expect_none(message_with_body("headline: do not store"), 0.5)

    # Delivered once: a later login gets nothing more.
    await bob.close()
    again = await net.online(bob_acc, "again")
    await again.expect_none(is_stanza("message"), 1.0, what="offline message delivered twice")


@xmpp_test()
async def test_chat_to_full_jid_of_offline_account_is_stored_or_bounced(net):
    """RFC 6121 §8.5.3.2.1: with no available resource, a chat message to a full JID is
    either stored offline or bounced with <service-unavailable/>; never silently lost."""
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await net.online(alice_acc, "r")
    alice.xmpp.send_message(mto=f"{bob_acc.jid}/phone", mbody="where did it go?", mtype="chat")
    await alice.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    bounced = alice.untaken(lambda s: is_stanza("message", type="error")(s))
    bob = await net.online(bob_acc, "phone")
    if bounced:
        assert error_condition(bounced[0]) == "service-unavailable", text_of(bounced[0])
        await bob.expect_none(message_with_body("where did it go?"), 0.5)
    else:
        got = await bob.wait_for(message_with_body("where did it go?"), what="stored message sent to an offline full JID")
        assert xml_of(got).find(f"{{{NS_DELAY}}}delay") is not None, text_of(got)


@xmpp_test()
async def test_spoofed_from_is_not_delivered_as_is(net):
    """RFC 6120 §8.1.2.1: the server stamps 'from' with the sender's full JID (or refuses a
    wrong one with <invalid-from/>): a client cannot speak for another account."""
    alice_acc, bob_acc, carol_acc = net.account("alice"), net.account("bob"), net.account("carol")
    alice = await net.online(alice_acc, "r")
    carol = await net.online(carol_acc, "r")
    alice.send_raw_stanza(f"<message xmlns='jabber:client' type='chat' from='{bob_acc.jid}/fake' to='{carol.jid}'>"
                          "<body>who am I?</body></message>")

    def stream_error(s) -> bool:
        return xml_of(s).tag == "{http://etherx.jabber.org/streams}error"

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        if carol.untaken(message_with_body("who am I?")) or alice.untaken(stream_error) \
                or alice.untaken(is_stanza("message", type="error")):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    delivered = carol.untaken(message_with_body("who am I?"))
    if delivered:
        assert xml_of(delivered[0]).get("from") == alice.jid, "spoofed 'from' delivered: " + text_of(delivered[0])
        return
    refused = alice.untaken(stream_error) or alice.untaken(is_stanza("message", type="error"))
    assert refused, "the spoofed message was neither delivered (re-stamped) nor refused with an error"
    if stream_error(refused[0]):
        assert refused[0].xml.find("{urn:ietf:params:xml:ns:xmpp-streams}invalid-from") is not None, text_of(refused[0])


@xmpp_test()
async def test_resource_conflict(net):
    """RFC 6120 §7.7.2.2: binding a resource that is in use ends the old session with a
    <conflict/> stream error, gives the new one another resource, or refuses the new bind;
    never two sessions with one full JID."""
    acc = net.account("alice")
    first = await net.online(acc, "same")
    second = net.client(acc, "same")
    kind, detail = await second.try_connect()
    if kind != "session_start":
        return  # refused: allowed
    if second.jid != first.jid:
        return  # a different resource was assigned: allowed
    # Same full JID: the first session must be gone, told why.
    err = await first.wait_for(lambda s: xml_of(s).tag == "{http://etherx.jabber.org/streams}error", 5,
                               what="stream error on the replaced session")
    assert err.xml.find("{urn:ietf:params:xml:ns:xmpp-streams}conflict") is not None, text_of(err)
    # And the new session works.
    await second.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)

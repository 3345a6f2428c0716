"""Presence and the subscription state machine (RFC 6121 §3, §4) between slixmpp clients."""

import asyncio

from harness import NS_CLIENT, child, error_condition, is_stanza, roster_items, roster_push, text_of, xml_of, xmpp_test


async def roster_of(c) -> dict:
    c.xmpp.client_roster.version = ""  # full roster, not a versioned delta
    return roster_items(await c.xmpp.get_roster(timeout=5))


async def interested(c):
    """Request the roster once so the server treats the resource as interested (§2.1.6)."""
    await roster_of(c)
    return c


def presence_text(p, name: str) -> str | None:
    el = child(p, NS_CLIENT, name)
    return None if el is None else el.text


async def expect_item(c, contact: str, subscription: str, ask=None):
    push = await c.wait_for(roster_push(contact), what=f"roster push {contact} subscription={subscription} ask={ask}")
    item = roster_items(push)[contact]
    assert (item["subscription"], item["ask"]) == (subscription, ask), f"{c.bare}: {text_of(push)}"
    return push


async def subscribe(sub, contact):
    """`sub` subscribes to `contact`'s presence and `contact` approves; asserts every stanza
    RFC 6121 §3.1 requires on the way. Both must be online with initial presence sent."""
    before_sub = (await roster_of(sub)).get(contact.bare, {}).get("subscription") or "none"
    before_con = (await roster_of(contact)).get(sub.bare, {}).get("subscription") or "none"

    sub.xmpp.send_presence_subscription(pto=contact.bare)
    # §3.1.2: the user's server pushes the item with ask='subscribe' (state unchanged).
    await expect_item(sub, contact.bare, before_sub, ask="subscribe")
    # §3.1.3: the request reaches the contact stamped with the user's bare JID.
    req = await contact.wait_for(is_stanza("presence", type="subscribe", frm=sub.bare))
    assert xml_of(req).get("to") == contact.bare, text_of(req)

    contact.xmpp.send_presence(pto=sub.bare, ptype="subscribed")
    # §3.1.5: the contact's server pushes the new state (from / both) to the contact.
    after_con = {"none": "from", "to": "both"}[before_con]
    await expect_item(contact, sub.bare, after_con)
    # §3.1.6: the user gets the 'subscribed' from the contact's bare JID, a push without ask,
    # and the contact's current presence from each available resource.
    ok = await sub.wait_for(is_stanza("presence", type="subscribed", frm=contact.bare))
    assert xml_of(ok).get("to") in (sub.bare, sub.jid), text_of(ok)
    after_sub = {"none": "to", "from": "both"}[before_sub]
    await expect_item(sub, contact.bare, after_sub)
    pres = await sub.wait_for(is_stanza("presence", type=None, frm=contact.jid),
                              what=f"available presence of {contact.jid} after approval")
    return pres


@xmpp_test()
async def test_subscription_handshake_both_ways(net):
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await interested(await net.online(alice_acc, "home"))
    bob = await interested(await net.online(bob_acc, "work"))

    # Before anything: no presence leaks between strangers.
    await alice.expect_none(is_stanza("presence", frm=bob.jid), 0.3)

    await subscribe(alice, bob)   # alice -> bob: alice 'to', bob 'from'
    await subscribe(bob, alice)   # bob -> alice: both

    a_roster, b_roster = await roster_of(alice), await roster_of(bob)
    assert a_roster == {bob.bare: {"name": None, "subscription": "both", "ask": None, "groups": []}}, a_roster
    assert b_roster == {alice.bare: {"name": None, "subscription": "both", "ask": None, "groups": []}}, b_roster

    # Presence updates now flow both ways, from the full JID, with their contents.
    alice.xmpp.send_presence(pshow="away", pstatus="compat: back soon", ppriority=3)
    p = await bob.wait_for(is_stanza("presence", type=None, frm=alice.jid), what="alice's away presence")
    assert (presence_text(p, "show"), presence_text(p, "status"), presence_text(p, "priority")) == ("away", "compat: back soon", "3"), text_of(p)
    bob.xmpp.send_presence(pshow="dnd", pstatus="busy — ünïcode ✓")
    p = await alice.wait_for(is_stanza("presence", type=None, frm=bob.jid), what="bob's dnd presence")
    assert (presence_text(p, "show"), presence_text(p, "status")) == ("dnd", "busy — ünïcode ✓"), text_of(p)

    # Going offline is broadcast as unavailable from the full JID (§4.5.2).
    bob_jid = bob.jid
    await bob.close()
    gone = await alice.wait_for(is_stanza("presence", type="unavailable", frm=bob_jid))
    assert xml_of(gone).get("to") in (alice.bare, alice.jid), text_of(gone)

    # Coming back: the server probes for the new session (§4.3), so bob learns alice's
    # current presence, and alice sees bob's new resource.
    bob2 = await net.online(bob_acc, "phone")
    p = await bob2.wait_for(is_stanza("presence", type=None, frm=alice.jid), what="alice's presence via probe")
    assert (presence_text(p, "show"), presence_text(p, "status")) == ("away", "compat: back soon"), text_of(p)
    await alice.wait_for(is_stanza("presence", type=None, frm=bob2.jid))


@xmpp_test()
async def test_subscription_request_to_offline_contact_is_delivered_later(net):
    """§3.1.3: a subscription request for an offline contact is kept and delivered when the
    contact comes online."""
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await interested(await net.online(alice_acc, "r"))
    alice.xmpp.send_presence_subscription(pto=bob_acc.jid)
    await expect_item(alice, bob_acc.jid, "none", ask="subscribe")

    bob = await net.online(bob_acc, "later")
    req = await bob.wait_for(is_stanza("presence", type="subscribe", frm=alice_acc.jid))
    assert text_of(req)
    bob.xmpp.send_presence(pto=alice_acc.jid, ptype="subscribed")
    await alice.wait_for(is_stanza("presence", type="subscribed", frm=bob_acc.jid))
    await expect_item(alice, bob_acc.jid, "to")
    await alice.wait_for(is_stanza("presence", type=None, frm=bob.jid))


@xmpp_test()
async def test_unsubscribe_and_cancel(net):
    alice_acc, bob_acc = net.account("alice"), net.account("bob")
    alice = await interested(await net.online(alice_acc, "r"))
    bob = await interested(await net.online(bob_acc, "r"))
    await subscribe(alice, bob)
    await subscribe(bob, alice)

    # §3.3: alice unsubscribes from bob's presence: both -> from (alice), both -> to (bob),
    # and bob's server sends alice unavailable presence from bob's resources.
    alice.xmpp.send_presence(pto=bob.bare, ptype="unsubscribe")
    await expect_item(alice, bob.bare, "from")
    await bob.wait_for(is_stanza("presence", type="unsubscribe", frm=alice.bare))
    await expect_item(bob, alice.bare, "to")
    await alice.wait_for(is_stanza("presence", type="unavailable", frm=bob.jid),
                         what="unavailable from bob after unsubscribe (RFC 6121 §3.3.3)")

    # §3.2: alice now cancels bob's subscription to her: from -> none (alice), to -> none
    # (bob), and bob gets unavailable presence from alice's resources.
    alice.xmpp.send_presence(pto=bob.bare, ptype="unsubscribed")
    await expect_item(alice, bob.bare, "none")
    await bob.wait_for(is_stanza("presence", type="unsubscribed", frm=alice.bare))
    await expect_item(bob, alice.bare, "none")
    await bob.wait_for(is_stanza("presence", type="unavailable", frm=alice.jid),
                       what="unavailable from alice after cancel (RFC 6121 §3.2.2)")

    # No presence flows any more.
    alice.xmpp.send_presence(pstatus="nobody sees this")
    await bob.expect_none(is_stanza("presence", frm=alice.jid), 0.5)
    assert await roster_of(alice) == {bob.bare: {"name": None, "subscription": "none", "ask": None, "groups": []}}


@xmpp_test()
async def test_no_presence_to_unsubscribed_entities(net):
    alice_acc, eve_acc = net.account("alice"), net.account("eve")
    eve = await net.online(eve_acc, "r")
    alice = await net.online(alice_acc, "r")
    alice.xmpp.send_presence(pstatus="private")
    await eve.expect_none(is_stanza("presence", frm=alice.jid), 0.5, what="presence leaked to a stranger")
    # A directed presence does reach the stranger (RFC 6121 §4.6).
    alice.xmpp.send_presence(pto=eve.jid, pstatus="just for you")
    p = await eve.wait_for(is_stanza("presence", type=None, frm=alice.jid))
    assert presence_text(p, "status") == "just for you", text_of(p)


@xmpp_test()
async def test_last_activity_of_contacts(net):
    """XEP-0012 §3-§5 via slixmpp: 0 seconds while online, the idle time once offline, and
    <forbidden/> for someone without a presence subscription."""
    alice_acc, bob_acc, eve_acc = net.account("alice"), net.account("bob"), net.account("eve")
    alice = await interested(await net.online(alice_acc, "r"))
    bob = await interested(await net.online(bob_acc, "r"))
    eve = await net.online(eve_acc, "r")
    await subscribe(alice, bob)  # alice may see bob's presence, so also his last activity

    last = alice.xmpp.plugin["xep_0012"]
    online = await last.get_last_activity(bob_acc.jid, timeout=5)
    assert str(online["from"]) == bob_acc.jid and online["last_activity"]["seconds"] == 0, text_of(online)

    bob.xmpp.send_presence(ptype="unavailable", pstatus="gone fishing")
    await alice.wait_for(is_stanza("presence", type="unavailable", frm=bob.jid))
    await bob.close()
    await asyncio.sleep(1.2)
    offline = await last.get_last_activity(bob_acc.jid, timeout=5)
    secs = offline["last_activity"]["seconds"]
    assert 1 <= secs <= 30, text_of(offline)

    nosy = await eve.iq("<query xmlns='jabber:iq:last'/>", to=bob_acc.jid)
    assert nosy.xml.get("type") == "error" and error_condition(nosy) == "forbidden", text_of(nosy)

"""Presence leaks and spoofing: blocked contacts probing, a revoked subscription, strangers
probing, spoofed `from`, forged roster pushes, offline messages and negative priority
(SECURITY.md T23, T24, T28, §3 C16; issue 10 items 2, 3, 12)."""

from __future__ import annotations

from hostile_common import available_from, presence_from, subscribe_both, wait_until
from rawxmpp import NS_BLOCKING, NS_CLIENT, NS_ROSTER, StreamEnded, show

QUIET = 1.0  # how long we watch for a presence that must not come


def block(c, jid: str, on: bool = True) -> None:
    verb = "block" if on else "unblock"
    reply = c.iq(f"<{verb} xmlns='{NS_BLOCKING}'><item jid='{jid}'/></{verb}>", type="set")
    assert reply.get("type") == "result", f"{verb} {jid}: {show(reply)}"


def assert_no_presence(c, bare: str, what: str, duration: float = QUIET, only_available: bool = False) -> None:
    got = c.collect(duration)
    pred = available_from(bare) if only_available else presence_from(bare)
    bad = [e for e in got if pred(e)]
    assert not bad, f"{what}: got {[show(e, 200) for e in bad]}"


def test_blocked_contact_gets_no_presence_by_probe_or_login(main):
    """Issue 10 item 2 (XEP-0191 §3.3.2): alice and mallory are subscribed both ways; alice
    blocks mallory. mallory's <presence type='probe'/> to alice, and mallory logging in again,
    yield no presence from alice at all."""
    alice_acc, mallory_acc = main.account("alice"), main.account("mallory")
    alice = main.login(alice_acc, "r", presence="<status>here</status>")
    mallory = main.login(mallory_acc, "m")
    try:
        subscribe_both(alice, alice_acc.jid, mallory, mallory_acc.jid)
        block(alice, mallory_acc.jid)
        mallory.collect(0.5)  # the unavailable presence blocking sends (§3.3.1), if any
        mallory.presence(to=alice_acc.jid, type_="probe")
        assert_no_presence(mallory, alice_acc.jid, "after a probe from the blocked contact")
        mallory.close()
        mallory = main.login(mallory_acc, "m2")
        assert_no_presence(mallory, alice_acc.jid, "at the blocked contact's next login")
        # Control: alice is still online and available to others.
        assert alice.ping_rtt() < 1.0
    finally:
        mallory.close()
        alice.close()


def test_revoked_subscription_while_blocking(main):
    """Issue 10 item 3: mallory (subscribed to the victim both ways) blocks the victim; the
    victim revokes mallory's subscription (<presence type='unsubscribed'/>). When mallory
    unblocks and probes, or logs in again, no presence of the victim arrives, and mallory's
    roster no longer says 'to' or 'both' for the victim."""
    victim_acc, mallory_acc = main.account("victim"), main.account("mallory")
    victim = main.login(victim_acc, "v", presence="<status>secret plans</status>")
    mallory = main.login(mallory_acc, "m")
    try:
        subscribe_both(victim, victim_acc.jid, mallory, mallory_acc.jid)
        block(mallory, victim_acc.jid)
        victim.presence(to=mallory_acc.jid, type_="unsubscribed")
        wait_until(lambda: victim.roster().get(mallory_acc.jid, {}).get("subscription") in ("to", "none"), 5,
                   "the victim's roster updated")
        victim.ping_rtt()
        block(mallory, victim_acc.jid, on=False)
        mallory.collect(0.3)
        mallory.presence(to=victim_acc.jid, type_="probe")
        assert_no_presence(mallory, victim_acc.jid, "probe after the revocation", only_available=True)
        sub = mallory.roster().get(victim_acc.jid, {}).get("subscription")
        assert sub not in ("to", "both"), f"mallory's roster still says {sub!r} for the victim"
        mallory.close()
        mallory = main.login(mallory_acc, "m2")
        assert_no_presence(mallory, victim_acc.jid, "mallory's next login after the revocation", only_available=True)
        sub = mallory.roster().get(victim_acc.jid, {}).get("subscription")
        assert sub not in ("to", "both"), f"after re-login mallory's roster says {sub!r} for the victim"
    finally:
        mallory.close()
        victim.close()


def test_strangers_get_no_presence(main):
    """T28: a user without a subscription probes, and gets no presence of the victim."""
    victim_acc, stranger_acc = main.account("victim"), main.account("stranger")
    victim = main.login(victim_acc, "v")
    stranger = main.login(stranger_acc, "s")
    try:
        stranger.collect(0.2)
        stranger.presence(to=victim_acc.jid, type_="probe")
        assert_no_presence(stranger, victim_acc.jid, "a stranger's probe", only_available=True)
    finally:
        stranger.close()
        victim.close()


def test_spoofed_from(main):
    """T23/C16: a message claiming another sender's address either ends the stream with
    <invalid-from/> or arrives stamped with the real sender's full JID; never as the victim."""
    alice_acc, bob_acc, victim_acc = main.account("alice"), main.account("bob"), main.account("victim")
    bob = main.login(bob_acc, "r")
    alice = main.login(alice_acc, "a", presence=False)
    try:
        alice.send(f"<message from='{victim_acc.jid}/x' to='{bob.jid}' type='chat' id='spoof'><body>it is me</body></message>")
        try:
            alice.ping_rtt()
            stamped = True
        except StreamEnded as e:
            assert e.condition == "invalid-from", f"ended with {e}"
            stamped = False
        got = bob.collect(0.5)
        for m in got:
            if m.get("id") == "spoof":
                assert stamped and m.get("from") == alice.jid, f"delivered as {show(m)}"
        assert not any((m.get("from") or "").startswith(victim_acc.jid) for m in got), "delivered from the victim"
    finally:
        alice.close()
        bob.close()


def test_forged_roster_push(main, figure):
    """T24: another user sends a roster push (iq set, jabber:iq:roster) to the victim's full JID.
    It is not delivered (RFC 6121 §2.1.6: only the account's own server pushes; a careless
    client would otherwise take it), the sender gets `service-unavailable`, and the victim's
    roster does not change."""
    victim_acc, mallory_acc = main.account("victim"), main.account("mallory")
    victim = main.login(victim_acc, "v")
    mallory = main.login(mallory_acc, "m")
    try:
        victim.roster()  # interested in pushes from now on
        victim.collect(0.2)
        mallory.collect(0.2)
        mallory.send(f"<iq type='set' id='forged' to='{victim.jid}'><query xmlns='{NS_ROSTER}'>"
                     f"<item jid='{mallory_acc.jid}' subscription='both'/></query></iq>")
        got = victim.collect(1.0)
        pushes = [e for e in got if e.tag == f"{{{NS_CLIENT}}}iq" and e.find(f"{{{NS_ROSTER}}}query") is not None]
        replies = [e for e in mallory.collect(0.5) if e.get("id") == "forged"]
        figure("forged roster push: delivered to the victim / answered to the sender",
               f"{len(pushes)} / {[r.get('type') for r in replies]}")
        assert not pushes, f"delivered: {show(pushes[0])}"
        assert [r.get("type") for r in replies] == ["error"], [show(r) for r in replies]
        assert replies[0].find(f".//{{urn:ietf:params:xml:ns:xmpp-stanzas}}service-unavailable") is not None, show(replies[0])
        assert mallory_acc.jid not in victim.roster(), "the victim's roster changed"
    finally:
        mallory.close()
        victim.close()


def test_offline_messages_wait_for_non_negative_priority(main, figure):
    """Issue 10 item 12: offline messages are not flushed to a resource with priority -1; they
    arrive, in order, when the resource sends priority >= 0."""
    alice_acc, bob_acc = main.account("alice"), main.account("bob")
    alice = main.login(alice_acc, "a", presence=False)
    try:
        ids = [alice.message(bob_acc.jid, f"offline {i}", id=f"off{i}") for i in range(3)]
        alice.ping_rtt()
    finally:
        alice.close()
    bob = main.login(bob_acc, "neg", presence="<priority>-1</priority>")
    try:
        early = [e for e in bob.collect(QUIET) if e.tag == f"{{{NS_CLIENT}}}message"]
        figure("offline messages delivered to a priority -1 resource", len(early), "== 0")
        assert not early, f"delivered at priority -1: {[show(e, 200) for e in early]}"
        bob.presence("<priority>0</priority>")
        got = []
        while len(got) < len(ids):
            el = bob.next()
            if el.tag == f"{{{NS_CLIENT}}}message":
                got.append(el.get("id"))
        assert got == ids, f"after priority 0: {got}"
    finally:
        bob.close()

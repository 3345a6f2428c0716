"""Server services through slixmpp's plugins: disco and caps, ping, version, time, last
activity, vcard-temp, private XML storage, blocking, password change."""

import asyncio
import re
from datetime import datetime, timezone

from harness import Account, NS_CLIENT, child, error_condition, is_stanza, text_of, xml_of, xmpp_test

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"

# What the server must advertise for the modules enabled by default.
EXPECTED_SERVER_FEATURES = {
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "jabber:iq:roster",
    "jabber:iq:version",
    "jabber:iq:last",
    "jabber:iq:private",
    "urn:xmpp:ping",
    "urn:xmpp:time",
    "urn:xmpp:blocking",
    "vcard-temp",
    "msgoffline",
}


@xmpp_test()
async def test_disco_info_and_caps(net):
    c = await net.online(net.account("alice"), "r")
    info = await c.xmpp.plugin["xep_0030"].get_info(jid=net.server.domain, timeout=5)
    assert str(info["from"]) == net.server.domain, text_of(info)
    identities = {(cat, typ) for (cat, typ, _lang, _name) in info["disco_info"]["identities"]}
    assert ("server", "im") in identities, text_of(info)
    features = set(info["disco_info"]["features"])
    missing = EXPECTED_SERVER_FEATURES - features
    assert not missing, f"server disco#info lacks {sorted(missing)}: {text_of(info)}"

    # XEP-0115 §6.3: the caps in the stream features hash exactly this disco#info, as slixmpp
    # computes it.
    caps = [f.find("{http://jabber.org/protocol/caps}c") for f in c.features()]
    caps = [x for x in caps if x is not None]
    assert caps, "no <c/> stream feature"
    c_el = caps[-1]
    assert c_el.get("hash") == "sha-1"
    computed = c.xmpp.plugin["xep_0115"].generate_verstring(info["disco_info"], "sha-1")
    assert c_el.get("ver") == computed, f"caps ver {c_el.get('ver')} != slixmpp's {computed}"
    # ...and the node#ver query answers the same features.
    node = f"{c_el.get('node')}#{c_el.get('ver')}"
    by_node = await c.xmpp.plugin["xep_0030"].get_info(jid=net.server.domain, node=node, timeout=5)
    assert set(by_node["disco_info"]["features"]) == features

    items = await c.xmpp.plugin["xep_0030"].get_items(jid=net.server.domain, timeout=5)
    assert items["type"] == "result", text_of(items)

    # An account's own bare JID answers disco#info for the account (XEP-0030 account/registered).
    mine = await c.xmpp.plugin["xep_0030"].get_info(jid=c.bare, timeout=5)
    assert ("account", "registered") in {(i[0], i[1]) for i in mine["disco_info"]["identities"]}, text_of(mine)


@xmpp_test()
async def test_ping_server_and_client(net):
    alice = await net.online(net.account("alice"), "r")
    bob = await net.online(net.account("bob"), "r")
    rtt = await alice.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)
    assert rtt >= 0
    # An iq to another client's full JID is routed to it; slixmpp answers the ping itself.
    reply = await alice.iq("<ping xmlns='urn:xmpp:ping'/>", to=bob.jid)
    assert reply.xml.get("type") == "result" and reply.xml.get("from") == bob.jid, text_of(reply)
    seen = await bob.wait_for(is_stanza("iq", type="get", frm=alice.jid, has=("urn:xmpp:ping", "ping")))
    assert xml_of(seen).get("to") == bob.jid
    # An iq to a full JID that is not connected: <service-unavailable/> (RFC 6121 §8.5.3.2.1).
    gone = await alice.iq("<ping xmlns='urn:xmpp:ping'/>", to=f"{bob.bare}/not-here")
    assert gone.xml.get("type") == "error" and error_condition(gone) == "service-unavailable", text_of(gone)


@xmpp_test()
async def test_version_time_last(net):
    c = await net.online(net.account("alice"), "r")
    v = await c.xmpp.plugin["xep_0092"].get_version(net.server.domain, timeout=5)
    assert v["software_version"]["name"] == "Starling", text_of(v)
    assert v["software_version"]["version"], text_of(v)

    t = await c.xmpp.plugin["xep_0202"].get_entity_time(net.server.domain, timeout=5)
    # Read the raw elements: slixmpp 1.17's EntityTime.get_utc() appends its own 'Z' to the
    # <utc/> text and so cannot parse a conformant '...Z' value (see compat/slixmpp.md).
    utc_text = t.xml.findtext("{urn:xmpp:time}time/{urn:xmpp:time}utc")
    tzo_text = t.xml.findtext("{urn:xmpp:time}time/{urn:xmpp:time}tzo")
    assert utc_text and utc_text.endswith("Z"), f"<utc/> must be XEP-0082 UTC: {text_of(t)}"
    utc = datetime.fromisoformat(utc_text.replace("Z", "+00:00"))
    assert abs((utc - datetime.now(timezone.utc)).total_seconds()) < 30, text_of(t)
    assert re.fullmatch(r"Z|[+-]\d\d:\d\d", tzo_text or ""), f"bad <tzo/>: {text_of(t)}"

    last = await c.xmpp.plugin["xep_0012"].get_last_activity(net.server.domain, timeout=5)
    assert last["type"] == "result" and last["last_activity"]["seconds"] >= 0, text_of(last)


@xmpp_test()
async def test_vcard_set_and_get(net):
    alice = await net.online(net.account("alice"), "r")
    bob = await net.online(net.account("bob"), "r")
    vc = alice.xmpp.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice Ünïcode Compat"
    vc["NICKNAME"] = "ally"
    vc["URL"] = "https://example.org/alice"
    await alice.xmpp.plugin["xep_0054"].publish_vcard(vc, timeout=5)

    own = await alice.xmpp.plugin["xep_0054"].get_vcard(alice.bare, timeout=5)
    assert own["vcard_temp"]["FN"] == "Alice Ünïcode Compat", text_of(own)
    assert own["vcard_temp"]["NICKNAME"] == ["ally"], text_of(own)
    # Anyone can read a vCard (XEP-0054 §3.2), answered by the server for the account.
    other = await bob.xmpp.plugin["xep_0054"].get_vcard(alice.bare, timeout=5)
    assert str(other["from"]) == alice.bare, text_of(other)
    assert other["vcard_temp"]["FN"] == "Alice Ünïcode Compat", text_of(other)
    assert other["vcard_temp"]["URL"] == "https://example.org/alice", text_of(other)

    # Replacing it replaces it entirely.
    vc2 = alice.xmpp.plugin["xep_0054"].make_vcard()
    vc2["FN"] = "Alice Two"
    await alice.xmpp.plugin["xep_0054"].publish_vcard(vc2, timeout=5)
    again = await bob.xmpp.plugin["xep_0054"].get_vcard(alice.bare, timeout=5)
    assert again["vcard_temp"]["FN"] == "Alice Two" and not again["vcard_temp"]["NICKNAME"], text_of(again)


@xmpp_test()
async def test_private_xml_storage(net):
    alice_acc = net.account("alice")
    alice = await net.online(alice_acc, "r")
    data = "<prefs xmlns='urn:example:starling-compat:private'><colour>blue</colour><x a='1'/></prefs>"
    stored = await alice.iq(f"<query xmlns='jabber:iq:private'>{data}</query>", type="set")
    assert stored.xml.get("type") == "result", text_of(stored)
    await alice.close()

    # From a new session: the same fragment comes back.
    again = await net.online(alice_acc, "other")
    got = await again.iq("<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:starling-compat:private'/></query>")
    assert got.xml.get("type") == "result", text_of(got)
    prefs = got.xml.find("{jabber:iq:private}query/{urn:example:starling-compat:private}prefs")
    assert prefs is not None, text_of(got)
    assert prefs.findtext("{urn:example:starling-compat:private}colour") == "blue", text_of(got)
    assert prefs.find("{urn:example:starling-compat:private}x").get("a") == "1", text_of(got)

    # Another account cannot read it.
    bob = await net.online(net.account("bob"), "r")
    nosy = await bob.iq("<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:starling-compat:private'/></query>",
                        to=alice_acc.jid)
    assert nosy.xml.get("type") == "error", f"private data readable by another account: {text_of(nosy)}"


def blocked_jids(iq) -> set:
    return {i.get("jid") for i in iq.xml.iter(f"{{{NS_BLOCKING}}}item")}


@xmpp_test()
async def test_blocking(net):
    alice_acc, carol_acc = net.account("alice"), net.account("carol")
    alice = await net.online(alice_acc, "main")
    alice2 = await net.online(alice_acc, "second")
    carol = await net.online(carol_acc, "r")
    for c in (alice, alice2):  # both request the list, so both get pushes
        lst = await c.xmpp.plugin["xep_0191"].get_blocked(timeout=5)
        assert blocked_jids(lst) == set(), text_of(lst)

    await alice.xmpp.plugin["xep_0191"].block(carol.bare, timeout=5)
    push = await alice2.wait_for(is_stanza("iq", type="set", has=(NS_BLOCKING, "block")))
    assert [i.get("jid") for i in push.xml.iter(f"{{{NS_BLOCKING}}}item")] == [carol.bare], text_of(push)
    lst = await alice2.xmpp.plugin["xep_0191"].get_blocked(timeout=5)
    assert blocked_jids(lst) == {carol.bare}, text_of(lst)

    # The blocked contact's message is not delivered (XEP-0191 §3.5); an error, if any, is
    # <service-unavailable/>.
    carol.xmpp.send_message(mto=alice.jid, mbody="can you hear me?", mtype="chat")
    await alice.expect_none(is_stanza("message", frm=carol.jid), 0.7, what="message from a blocked contact")
    for err in carol.untaken(is_stanza("message", type="error")):
        assert error_condition(err) == "service-unavailable", text_of(err)
    # Its iq gets <service-unavailable/> as if alice were not there.
    ping = await carol.iq("<ping xmlns='urn:xmpp:ping'/>", to=alice.jid)
    assert ping.xml.get("type") == "error" and error_condition(ping) == "service-unavailable", text_of(ping)

    # The user cannot send to a blocked contact: <not-acceptable/> + <blocked/> (§3.6).
    alice.xmpp.send_message(mto=carol.jid, mbody="going out", mtype="chat")
    err = await alice.wait_for(is_stanza("message", type="error"))
    assert error_condition(err) == "not-acceptable", text_of(err)
    assert err.xml.find(f"{{{NS_CLIENT}}}error/{{{NS_BLOCKING_ERRORS}}}blocked") is not None, text_of(err)
    await carol.expect_none(lambda s: is_stanza("message", frm=alice.jid)(s) and s["body"] == "going out", 0.3,
                            what="message sent to a contact the user blocked")

    # Unblock: push to the other resource, and messages flow again.
    await alice.xmpp.plugin["xep_0191"].unblock(carol.bare, timeout=5)
    push = await alice2.wait_for(is_stanza("iq", type="set", has=(NS_BLOCKING, "unblock")))
    assert [i.get("jid") for i in push.xml.iter(f"{{{NS_BLOCKING}}}item")] == [carol.bare], text_of(push)
    carol.xmpp.send_message(mto=alice.jid, mbody="now?", mtype="chat")
    got = await alice.wait_for(is_stanza("message", frm=carol.jid))
    assert child(got, NS_CLIENT, "body").text == "now?"


@xmpp_test()
async def test_password_change_xep0077(net):
    acc = net.account("henry")
    c = await net.online(acc, "r")
    await asyncio.wait_for(c.xmpp.plugin["xep_0077"].change_password("n3w-pässword", timeout=5), 6)
    await c.close()

    new = await net.online(Account(acc.jid, "n3w-pässword"), "new", presence=False)
    assert new.xmpp.plugin["feature_mechanisms"].mech.name == "SCRAM-SHA-256"
    old = net.client(acc, "old")
    kind, failure = await old.try_connect()
    assert kind == "failed_auth" and failure["condition"] == "not-authorized", (kind, failure)

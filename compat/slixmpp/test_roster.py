"""Roster management (RFC 6121 §2) through slixmpp's roster API."""

import asyncio

import pytest

from harness import NS_ROSTER, child, error_condition, roster_items, roster_push, text_of, xml_of, xmpp_test


async def fetch_roster(c):
    """A full roster get through slixmpp (ver='' asks for everything, RFC 6121 §2.6.2);
    returns the result stanza."""
    c.xmpp.client_roster.version = ""
    return await c.xmpp.get_roster(timeout=5)


@xmpp_test()
async def test_roster_set_push_get_update_remove(net):
    alice = net.account("alice")
    carol = net.account("carol")
    r1 = await net.online(alice, "r1")
    r2 = await net.online(alice, "r2")
    # Both resources request the roster, so both are "interested" and get pushes (§2.1.6).
    for c in (r1, r2):
        res = await fetch_roster(c)
        assert roster_items(res) == {}, text_of(res)

    await r1.xmpp.update_roster(carol.jid, name="Carol Compat", groups=["Friends", "Work"], timeout=5)
    for c in (r1, r2):
        push = await c.wait_for(roster_push(carol.jid))
        # A push comes from the account itself (bare JID) or has no 'from' (§2.1.6).
        assert xml_of(push).get("from") in (None, alice.jid), text_of(push)
        assert roster_items(push)[carol.jid] == {
            "name": "Carol Compat", "subscription": "none", "ask": None, "groups": ["Friends", "Work"],
        }, text_of(push)

    got = roster_items(await fetch_roster(r2))
    assert got == {carol.jid: {"name": "Carol Compat", "subscription": "none", "ask": None, "groups": ["Friends", "Work"]}}

    # Update: new name, one group fewer.
    await r2.xmpp.update_roster(carol.jid, name="Carol Renamed", groups=["Work"], timeout=5)
    for c in (r1, r2):
        push = await c.wait_for(roster_push(carol.jid))
        item = roster_items(push)[carol.jid]
        assert (item["name"], item["groups"], item["subscription"]) == ("Carol Renamed", ["Work"], "none"), text_of(push)
    got = roster_items(await fetch_roster(r1))
    assert got[carol.jid]["name"] == "Carol Renamed" and got[carol.jid]["groups"] == ["Work"]

    # Remove: pushes with subscription='remove', then the roster is empty.
    await asyncio.wait_for(r1.xmpp.del_roster_item(carol.jid), 5)
    for c in (r1, r2):
        push = await c.wait_for(roster_push(carol.jid))
        assert roster_items(push)[carol.jid]["subscription"] == "remove", text_of(push)
    assert roster_items(await fetch_roster(r2)) == {}


@xmpp_test()
async def test_roster_survives_reconnect_and_is_per_account(net):
    alice = net.account("alice")
    bob = net.account("bob")
    friend = net.account("friend")
    a = await net.online(alice, "r")
    await a.xmpp.update_roster(friend.jid, name="Fr. Iend", groups=["Ünïcode grøup"], timeout=5)
    await a.close()
    a2 = await net.online(alice, "again")
    got = roster_items(await fetch_roster(a2))
    assert got == {friend.jid: {"name": "Fr. Iend", "subscription": "none", "ask": None, "groups": ["Ünïcode grøup"]}}
    b = await net.online(bob, "r")
    assert roster_items(await fetch_roster(b)) == {}, "another account's roster leaked"


@xmpp_test()
async def test_roster_versioning(net):
    """RFC 6121 §2.6: 'ver' on results and pushes; a get with the current version returns
    either an empty result or the full roster; with an older version either the full roster
    or an empty result followed by the missed pushes."""
    alice = net.account("alice")
    x1 = net.account("xone")
    x2 = net.account("xtwo")
    c = await net.online(alice, "r")
    assert "rosterver" in c.xmpp.features, "server did not advertise roster versioning"

    first = await c.iq(f"<query xmlns='{NS_ROSTER}' ver=''/>")
    assert first.xml.get("type") == "result", text_of(first)
    v0 = child(first, NS_ROSTER, "query").get("ver")
    assert v0 is not None, f"no ver on roster result: {text_of(first)}"

    await c.xmpp.update_roster(x1.jid, name="One", timeout=5)
    push1 = await c.wait_for(roster_push(x1.jid))
    v1 = child(push1, NS_ROSTER, "query").get("ver")
    assert v1 is not None and v1 != v0, f"push without a new ver: {text_of(push1)}"
    await c.xmpp.update_roster(x2.jid, name="Two", timeout=5)
    push2 = await c.wait_for(roster_push(x2.jid))
    v2 = child(push2, NS_ROSTER, "query").get("ver")
    assert v2 is not None and v2 not in (v0, v1), text_of(push2)

    # Up to date: empty result, or the whole roster at v2.
    same = await c.iq(f"<query xmlns='{NS_ROSTER}' ver='{v2}'/>")
    assert same.xml.get("type") == "result", text_of(same)
    q = child(same, NS_ROSTER, "query")
    if q is not None:
        assert q.get("ver") == v2 and set(roster_items(same)) == {x1.jid, x2.jid}, text_of(same)

    # One change behind: full roster, or empty result + the push for x2 (with ver v2).
    behind = await c.iq(f"<query xmlns='{NS_ROSTER}' ver='{v1}'/>")
    assert behind.xml.get("type") == "result", text_of(behind)
    q = child(behind, NS_ROSTER, "query")
    if q is not None:
        assert q.get("ver") == v2, text_of(behind)
        assert {j: i["name"] for j, i in roster_items(behind).items()} == {x1.jid: "One", x2.jid: "Two"}, text_of(behind)
    else:
        push = await c.wait_for(roster_push(x2.jid), what="roster push replaying the change after ver v1")
        assert child(push, NS_ROSTER, "query").get("ver") == v2, text_of(push)
        assert roster_items(push)[x2.jid]["name"] == "Two"


# RFC 6121 §2.3.3: "The server MUST return a <bad-request/> stanza error ... if the roster set
# contains ... more than one <item/> child element ... [or] duplicate groups", and "MUST return
# a <not-acceptable/> stanza error ... [if] the XML character data of the <group/> element is
# of zero length".
BAD_ROSTER_SETS = {
    "two-items": ("<item jid='{a}'/><item jid='{b}'/>", "bad-request"),
    "duplicate-groups": ("<item jid='{a}'><group>G</group><group>G</group></item>", "bad-request"),
    "empty-group": ("<item jid='{a}'><group/></item>", "not-acceptable"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROSTER_SETS))
@xmpp_test()
async def test_roster_set_errors(net, case):
    payload, condition = BAD_ROSTER_SETS[case]
    alice = net.account("alice")
    a = net.account("aaa")
    b = net.account("bbb")
    c = await net.online(alice, "r")
    await fetch_roster(c)  # become an interested resource, so a wrongful push would show

    reply = await c.iq(f"<query xmlns='{NS_ROSTER}'>{payload.format(a=a.jid, b=b.jid)}</query>", type="set")
    assert reply.xml.get("type") == "error" and error_condition(reply) == condition, (
        f"roster set {case}: expected <{condition}/>, got {text_of(reply)}")
    # The refused set changed nothing.
    assert roster_items(await fetch_roster(c)) == {}
    await c.expect_none(roster_push(), 0.3)

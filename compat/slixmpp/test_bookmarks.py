"""Bookmarks, both generations, through slixmpp's own plugins: XEP-0402 (`xep_0402`'s
<conference/> items published with `xep_0060` and the §3 publish-options) read back as
XEP-0048 (`xep_0048` over private XML storage, `xep_0049`, and over PEP, `xep_0223`), and a
XEP-0048 list written by a legacy client seen by a modern one as XEP-0402 items and
notifications (XEP-0402 §5.3 compatibility)."""

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.plugins.xep_0402.stanza import Conference

from harness import DEFAULT_PLUGINS, NS_CLIENT, publish_options, text_of, xml_of, xmpp_test

BOOKMARKS2 = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_EVENT = f"{PUBSUB}#event"
PUBSUB_ERRORS = f"{PUBSUB}#errors"
PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0060", "xep_0163", "xep_0223", "xep_0045", "xep_0048", "xep_0402")
ROOM1 = "theplay@conference.example.org"
ROOM2 = "orchard@conference.example.org"


def conference(name: str, nick: str, autojoin: bool) -> Conference:
    c = Conference()
    c["name"] = name
    c["autojoin"] = autojoin
    c["nick"] = nick
    return c


async def publish_bookmark(client, room: str, conf: Conference):
    """XEP-0402 §3.1 exactly: item id = the room's JID, with the §3 publish-options."""
    return await client.xmpp.plugin["xep_0060"].publish(
        None, BOOKMARKS2, id=room, payload=conf.xml,
        options=publish_options(persist_items="true", max_items="max", send_last_published_item="never",
                                access_model="whitelist"),
        timeout=5)


def legacy_rooms(storage) -> dict:
    """{jid: (name, autojoin, nick)} of an XEP-0048 <storage/>."""
    return {c["jid"]: (c["name"], c["autojoin"], c["nick"]) for c in storage["conferences"]}


async def modern_rooms(client) -> dict:
    """{room jid: (name, autojoin, nick)} of the XEP-0402 node, read with xep_0060."""
    res = await client.xmpp.plugin["xep_0060"].get_items(None, BOOKMARKS2, timeout=5)
    out = {}
    for item in res["pubsub"]["items"]:
        c = item["conference"]
        out[item["id"]] = (c["name"], c["autojoin"], c["nick"])
    return out


def bookmark_event(kind: str, room: str):
    """Predicate: a XEP-0402 notification (`item` or `retract`) about `room`."""
    def pred(s) -> bool:
        x = xml_of(s)
        items = x.find(f"{{{PUBSUB_EVENT}}}event/{{{PUBSUB_EVENT}}}items")
        return x.tag == f"{{{NS_CLIENT}}}message" and items is not None and items.get("node") == BOOKMARKS2 \
            and any(el.get("id") == room for el in items.findall(f"{{{PUBSUB_EVENT}}}{kind}"))
    pred.__doc__ = f"a bookmarks:1 <{kind}/> notification for {room}"
    return pred


@xmpp_test()
async def test_xep0402_bookmark_read_back_as_xep0048(net):
    acc = net.account("alice")
    modern = await net.online(acc, "modern", plugins=PLUGINS)
    legacy = await net.online(acc, "legacy", plugins=PLUGINS)

    # The account says it keeps the generations together (XEP-0402 §5.3).
    info = await modern.xmpp.plugin["xep_0030"].get_info(jid=acc.jid, timeout=5)
    assert f"{BOOKMARKS2}#compat" in info["disco_info"]["features"], text_of(info)

    res = await publish_bookmark(modern, ROOM1, conference("The Play's the Thing", "JC", True))
    assert res["type"] == "result", text_of(res)
    assert await modern_rooms(modern) == {ROOM1: ("The Play's the Thing", True, "JC")}

    # A legacy client reads it through private XML storage (the most common XEP-0048 way)...
    priv = await legacy.xmpp.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    assert legacy_rooms(priv["private"]["bookmarks"]) == {ROOM1: ("The Play's the Thing", True, "JC")}, text_of(priv)
    # ...and through PEP (XEP-0048 §3, node storage:bookmarks, item current).
    pep = await legacy.xmpp.plugin["xep_0048"].get_bookmarks(method="xep_0223", timeout=5)
    items = list(pep["pubsub"]["items"])
    assert [i["id"] for i in items] == ["current"], text_of(pep)
    assert legacy_rooms(items[0]["bookmarks"]) == {ROOM1: ("The Play's the Thing", True, "JC")}, text_of(pep)

    # Retracting the room (§3.3) removes it from the legacy stores too.
    res = await modern.xmpp.plugin["xep_0060"].retract(None, BOOKMARKS2, ROOM1, notify=True, timeout=5)
    assert res["type"] == "result", text_of(res)
    priv = await legacy.xmpp.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    assert legacy_rooms(priv["private"]["bookmarks"]) == {}, text_of(priv)


@xmpp_test()
async def test_xep0048_bookmarks_seen_as_xep0402(net):
    acc = net.account("alice")
    legacy = await net.online(acc, "legacy", plugins=PLUGINS)
    modern = await net.online_notified(acc, "modern", [BOOKMARKS2], plugins=PLUGINS)

    # A legacy client writes two rooms to private XML storage.
    storage = Bookmarks()
    storage.add_conference(ROOM1, "Romeo", name="Capulet feast", autojoin=True)
    storage.add_conference(ROOM2, "Juliet", name="Orchard", autojoin=False)
    res = await legacy.xmpp.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=5)
    assert res["type"] == "result", text_of(res)

    # The modern client is notified room by room and reads them as XEP-0402 items.
    for room in (ROOM1, ROOM2):
        await modern.wait_for(bookmark_event("item", room))
    assert await modern_rooms(modern) == {
        ROOM1: ("Capulet feast", True, "Romeo"),
        ROOM2: ("Orchard", False, "Juliet"),
    }

    # Dropping a room in the legacy list retracts it (§5.3.2); the unchanged room is not
    # notified again.
    storage = Bookmarks()
    storage.add_conference(ROOM2, "Juliet", name="Orchard", autojoin=False)
    await legacy.xmpp.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=5)
    await modern.wait_for(bookmark_event("retract", ROOM1))
    await modern.expect_none(bookmark_event("item", ROOM2), 0.4, what="a notification for an unchanged room")
    assert await modern_rooms(modern) == {ROOM2: ("Orchard", False, "Juliet")}

    # The same through XEP-0048's PEP storage (xep_0223 publishes node storage:bookmarks).
    storage = Bookmarks()
    storage.add_conference(ROOM2, "Juliet", name="Orchard at night", autojoin=True)
    res = await legacy.xmpp.plugin["xep_0048"].set_bookmarks(storage, method="xep_0223", timeout=5)
    assert res["type"] == "result", text_of(res)
    await modern.wait_for(bookmark_event("item", ROOM2))
    assert await modern_rooms(modern) == {ROOM2: ("Orchard at night", True, "Juliet")}
    priv = await legacy.xmpp.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    assert legacy_rooms(priv["private"]["bookmarks"]) == {ROOM2: ("Orchard at night", True, "Juliet")}, text_of(priv)

    # The bookmark node is private to the owner (whitelist): another account cannot read it.
    other = await net.online(net.account("eve"), "r", plugins=PLUGINS)
    try:
        await other.xmpp.plugin["xep_0060"].get_items(acc.jid, BOOKMARKS2, timeout=5)
        raise AssertionError("another account read the bookmarks")
    except IqError as e:
        # XEP-0060 §6.5.9, "Not on Whitelist": <not-allowed/> with <closed-node/>.
        assert e.iq["error"]["condition"] == "not-allowed", text_of(e.iq)
        assert xml_of(e.iq).find(f"{{{NS_CLIENT}}}error/{{{PUBSUB_ERRORS}}}closed-node") is not None, text_of(e.iq)

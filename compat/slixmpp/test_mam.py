"""XEP-0313 Message Archive Management through slixmpp's own plugin (`xep_0313` with
`xep_0059` RSM paging and `xep_0359` stanza ids): history paged newest first, as a client
fills a chat window upwards, and oldest first, with the archive ids equal to the stanza-ids
the messages carried when they were delivered live.

These tests run only against a server that advertises `urn:xmpp:mam:2` on the account (they
skip, saying so, otherwise)."""

import pytest
from slixmpp.exceptions import IqError

from harness import DEFAULT_PLUGINS, NS_CLIENT, text_of, xml_of, xmpp_test

MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
FORWARD = "urn:xmpp:forward:0"
DELAY = "urn:xmpp:delay"
PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0059", "xep_0297", "xep_0313", "xep_0359")


async def require_mam(client) -> None:
    info = await client.xmpp.plugin["xep_0030"].get_info(jid=client.bare, timeout=5)
    if MAM not in info["disco_info"]["features"]:
        pytest.skip(f"the server under test does not advertise {MAM} on the account (no archive)")


def body_of(m) -> str | None:
    return xml_of(m).findtext(f"{{{NS_CLIENT}}}body")


async def pages_newest_first(mam, archive: str, size: int, with_jid: str | None = None):
    """Yield (fin, results) pages of the archive from the newest backwards, with slixmpp's
    xep_0313/xep_0059: the first page from its RSM iterator (<before/> empty), the older ones
    with `retrieve(rsm={'before': first})`. (The iterator cannot go on by itself: slixmpp
    1.17 ends a backward paging as soon as a page carries <first index/> with index + size =
    count, a test that is only right going forwards; see compat/slixmpp.md.)"""
    first_page = mam.retrieve(jid=archive, with_jid=with_jid, reverse=True, iterator=True, rsm={"max": size})
    page = await first_page.next()
    while True:
        fin = page["mam_fin"]
        # The iterator's pages have the results on <fin/>, retrieve()'s on the query.
        results = list(fin["results"]) or list(page["mam"]["results"])
        if not results:
            return
        yield fin, results
        if fin["complete"] in (True, "true"):
            return
        page = await mam.retrieve(jid=archive, with_jid=with_jid, rsm={"max": size, "before": fin["rsm"]["first"]},
                                  timeout=5)


def forwarded_of(result):
    """The archived message inside a MAM result message."""
    return xml_of(result).find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")


def result_body(result) -> str | None:
    return forwarded_of(result).findtext(f"{{{NS_CLIENT}}}body")


async def exchange(alice, bob, n: int) -> tuple[dict[str, str], list[str]]:
    """bob sends n numbered messages to alice, alice answers every fourth once she has it (so
    the archive order is the conversation's); returns, for each message alice got, the
    stanza-id by her bare JID it carried (XEP-0359), and all bodies in conversation order."""
    bodies: list[str] = []
    ids: dict[str, str] = {}
    for i in range(1, n + 1):
        text = f"m{i:02}"
        bob.xmpp.send_message(mto=alice.jid, mbody=text, mtype="chat")
        bodies.append(text)
        if i % 4 == 0 or i == n:
            for t in bodies:
                if t.startswith("m") and t not in ids:
                    m = await alice.wait_for(lambda s, t=t: body_of(s) == t)
                    sids = [e for e in xml_of(m).findall(f"{{{SID}}}stanza-id") if e.get("by") == alice.bare]
                    assert len(sids) == 1 and sids[0].get("id"), f"no single stanza-id by {alice.bare}: {text_of(m)}"
                    ids[t] = sids[0].get("id")
        if i % 4 == 0:
            answer = f"re {i:02}"
            alice.xmpp.send_message(mto=bob.jid, mbody=answer, mtype="chat")
            bodies.append(answer)
            await bob.wait_for(lambda s, t=answer: body_of(s) == t)
    # A round trip each, so that every message has been handled (and so archived: queries
    # wait for what was queued before them).
    await alice.xmpp.plugin["xep_0199"].ping(jid=alice.server.domain, timeout=5)
    await bob.xmpp.plugin["xep_0199"].ping(jid=bob.server.domain, timeout=5)
    return ids, bodies


@xmpp_test(timeout=50)
async def test_mam_pages_newest_first_with_rsm(net):
    alice = await net.online(net.account("alice"), "phone", plugins=PLUGINS)
    await require_mam(alice)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    live_ids, bodies = await exchange(alice, bob, 12)
    assert len(bodies) == 15  # 12 from bob, 3 answers
    mam = alice.xmpp.plugin["xep_0313"]

    # Page by page, backwards from the end (<before/> empty, then <before>first</before>), as a
    # client scrolls up a chat window: each page is in archive order within itself.
    seen_pages = []
    async for fin, results in pages_newest_first(mam, alice.bare, 6):
        seen_pages.append(([result_body(r) for r in results], fin, results))
        assert len(seen_pages) <= 4, "paging does not end"
    expected = [bodies[9:15], bodies[3:9], bodies[0:3]]
    assert [p[0] for p in seen_pages] == expected, [p[0] for p in seen_pages]
    for i, (page_bodies, fin, results) in enumerate(seen_pages):
        last_page = i == len(seen_pages) - 1
        # §4.3: complete only on the page that reaches the start of the archive.
        assert (fin["complete"] in (True, "true")) == last_page, text_of(fin)
        rsm = fin["rsm"]
        assert rsm["first"] == results[0]["mam_result"]["id"] and rsm["last"] == results[-1]["mam_result"]["id"], \
            text_of(fin)
        # The whole archive: the count is known (XEP-0059 §2.6).
        assert int(rsm["count"]) == 15, text_of(fin)
        for r in results:
            x = xml_of(r)
            assert x.get("from") == alice.bare and x.get("to") == alice.jid, text_of(r)
            fwd = x.find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded")
            assert fwd.find(f"{{{DELAY}}}delay") is not None, text_of(r)
            inner = forwarded_of(r)
            body = inner.findtext(f"{{{NS_CLIENT}}}body")
            if body.startswith("m"):
                # Archive id = the stanza-id delivered live (§3.5 / XEP-0359).
                assert r["mam_result"]["id"] == live_ids[body], text_of(r)
                assert inner.get("from") == bob.jid and inner.get("type") == "chat", text_of(r)
            else:
                assert inner.get("from") == alice.jid and inner.get("to") == bob.jid, text_of(r)

    # The plugin's message iterator oldest first (<after/>), stopping by the count.
    oldest_first = [result_body(m) async for m in mam.iterate(jid=alice.bare, rsm={"max": 7})]
    assert oldest_first == bodies, oldest_first

    # Filtered by correspondent (§4.1.1): carol's message is not in the history with bob.
    carol = await net.online(net.account("carol"), "r", plugins=PLUGINS)
    carol.xmpp.send_message(mto=alice.jid, mbody="from carol", mtype="chat")
    await alice.wait_for(lambda s: body_of(s) == "from carol")
    with_bob = []
    async for _fin, results in pages_newest_first(mam, alice.bare, 5, with_jid=bob.bare):
        with_bob[:0] = [result_body(r) for r in results]
    assert with_bob == bodies, with_bob
    with_carol = [result_body(m) async for m in mam.iterate(jid=alice.bare, with_jid=carol.bare)]
    assert with_carol == ["from carol"], with_carol

    # Bob's own archive has the same conversation, from his side.
    bob_side = [result_body(m) async for m in bob.xmpp.plugin["xep_0313"].iterate(
        jid=bob.bare, with_jid=alice.bare, rsm={"max": 10})]
    assert bob_side == bodies, bob_side


@xmpp_test()
async def test_mam_metadata_and_another_accounts_archive(net):
    alice = await net.online(net.account("alice"), "phone", plugins=PLUGINS)
    await require_mam(alice)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    live_ids, bodies = await exchange(alice, bob, 3)
    mam = alice.xmpp.plugin["xep_0313"]
    # §5: the first and last message of the archive, by id.
    meta = await mam.get_archive_metadata(timeout=5)
    assert meta["mam_metadata"]["start"]["id"] == live_ids["m01"], text_of(meta)
    async for _fin, results in pages_newest_first(mam, alice.bare, 1):
        assert meta["mam_metadata"]["end"]["id"] == results[-1]["mam_result"]["id"], text_of(meta)
        break
    # §8.1: another account's archive is not readable.
    try:
        await bob.xmpp.plugin["xep_0313"].retrieve(jid=alice.bare, timeout=5)
        raise AssertionError("bob read alice's archive")
    except IqError as e:
        assert e.iq["error"]["condition"] == "forbidden", text_of(e.iq)

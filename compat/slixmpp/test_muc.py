"""XEP-0045 multi-user chat on conference.<domain>, through slixmpp's own plugins: `xep_0045`
(joining, configuration, moderation, administration), `xep_0030` (disco), `xep_0004`
(the configuration form), `xep_0313` (the room's archive), `xep_0410` (self-ping) and
`xep_0249` (direct invitations).

Each test makes rooms of its own (random names) with accounts of its own. The assertions
are on what the plugins return and on the stanzas the clients recorded: status codes,
items, ids, order. `test_muc_with_debian_slixmpp` runs a short room flow with Debian's
python3-slixmpp (1.8.3), as `test_debian_slixmpp.py` does for login and chat.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0410 import PingStatus

from harness import NS_CLIENT, NS_DELAY, error_condition, text_of, xml_of, xmpp_test
from muc import (CONFERENCE, DATA, DISCO_INFO, FORWARD, MAM, MUC, MUC_USER, OCCUPANT_ID, PLUGINS, ROOMINFO, SID,
                 body_of, create_room, delay_of, enter, groupchat, item_of, live_bodies, new_room, occupant_id,
                 occupant_presence, ping_reply, recent, refused_entry, room_stanza_id, roster_of, send_groupchat,
                 service, status_codes, subject_message, subject_text, user_x)


# --- tests ---------------------------------------------------------------------------------------

@xmpp_test(timeout=30)
async def test_muc_creator_join_completes(net):
    """slixmpp's join_muc_wait (what a slixmpp or poezio-style client calls to enter, and to
    create, a room) returns once the room has sent the self-presence and then the subject
    (§7.2.15: after the history the room SHALL send the subject, an empty <subject/> if
    none). The creator of a new room (§10.1.1: "add the owner to the room") must get it too,
    or the call never returns and the client cannot go on to configure the room."""
    alice = await net.online(net.account("alice"), "desk", plugins=PLUGINS)
    room = new_room(net, "instant")
    me, subject, _occupants, history = await enter(alice, room, "alice")
    assert {110, 201} <= status_codes(me), text_of(me)
    assert (item_of(me)["affiliation"], item_of(me)["role"]) == ("owner", "moderator"), text_of(me)
    assert subject_text(subject) == "" and not history, text_of(subject)
    # The instant room (§10.1.2): an empty submitted form unlocks it; bob can enter.
    await alice.xmpp.plugin["xep_0045"].set_room_config(room, Form(), timeout=5)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    me_bob, _subject, occupants, _history = await enter(bob, room, "bob")
    assert 201 not in status_codes(me_bob) and "alice" in {p["from"].resource for p in occupants}, text_of(me_bob)


@xmpp_test(timeout=50)
async def test_muc_enter_talk_subject_history_private(net):
    alice = await net.online(net.account("alice"), "desk", plugins=PLUGINS)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    carol = await net.online(net.account("carol"), "desk", plugins=PLUGINS)
    room = new_room(net, "coven")

    # alice creates the room; it is locked until she configures it (§7.2.10: entering is
    # item-not-found meanwhile); she makes it persistent and public through the form (§10.1.3).
    async def bob_is_refused():
        assert await refused_entry(bob, room, "bob") == "item-not-found"
    await create_room(alice, room, "alice", {"muc#roomconfig_persistentroom": "1", "muc#roomconfig_publicroom": "1"},
                      while_locked=bob_is_refused)
    await roster_of(alice, room, ["alice"])

    # bob and carol enter; each sees the others, the others see them.
    me_bob, subject_bob, occupants_bob, history_bob = await enter(bob, room, "bob")
    assert 201 not in status_codes(me_bob) and 110 in status_codes(me_bob), text_of(me_bob)
    assert (item_of(me_bob)["affiliation"], item_of(me_bob)["role"]) == ("none", "participant"), text_of(me_bob)
    assert subject_text(subject_bob) == "" and history_bob == [], text_of(subject_bob)
    assert {p["from"].resource for p in occupants_bob} >= {"alice"}, [text_of(p) for p in occupants_bob]
    await enter(carol, room, "carol")
    for c in (alice, bob, carol):
        await roster_of(c, room, ["alice", "bob", "carol"])
    # Semi-anonymous (the default, §7.2.3/§7.2.4): the moderator sees real JIDs, a
    # participant does not.
    seen_by_alice = await alice.wait_for(occupant_presence(room, "bob"))
    assert item_of(seen_by_alice).get("jid") == bob.jid, text_of(seen_by_alice)
    seen_by_bob = await bob.wait_for(occupant_presence(room, "alice"))
    assert "jid" not in item_of(seen_by_bob), text_of(seen_by_bob)
    assert (item_of(seen_by_bob)["affiliation"], item_of(seen_by_bob)["role"]) == ("owner", "moderator")
    # XEP-0421: one occupant-id per occupant, the same for every viewer.
    ids = {c.bare: occupant_id(await c.wait_for(occupant_presence(room, "carol"))) for c in (alice, bob)}
    assert len(set(ids.values())) == 1 and None not in ids.values(), ids

    # Messages reach every occupant, the sender included (its own id reflected), in the
    # room's order, each with one stanza-id by the room, the same for everyone.
    sent: list[tuple[object, str, str]] = []   # (sender, body, id)
    reflected = {}  # (receiver, body) -> the message, for those already waited for
    for sender, body in ((alice, "one from alice"), (bob, "two from bob ✓"), (carol, "three from carol")):
        sent.append((sender, body, send_groupchat(sender, room, body)))
        reflected[(sender.bare, body)] = await sender.wait_for(groupchat(room, body))
    for i in range(3):  # a burst, not waited for in between
        body = f"burst {i} from bob"
        sent.append((bob, body, send_groupchat(bob, room, body)))
    bodies = [b for _s, b, _i in sent]
    nick = {alice.bare: "alice", bob.bare: "bob", carol.bare: "carol"}
    live_ids: dict[str, str] = {}
    for c in (alice, bob, carol):
        for sender, body, mid in sent:
            m = reflected.get((c.bare, body)) or await c.wait_for(groupchat(room, body))
            x = xml_of(m)
            assert x.get("from") == f"{room}/{nick[sender.bare]}" and x.get("to") == c.jid, text_of(m)
            if c is sender:
                assert x.get("id") == mid, f"own reflection without the sent id {mid}: {text_of(m)}"
            sid = room_stanza_id(m, room)
            assert sid, f"no stanza-id by {room}: {text_of(m)}"
            assert live_ids.setdefault(body, sid) == sid, f"{c.bare} got another stanza-id for {body!r}: {text_of(m)}"
            assert occupant_id(m), text_of(m)
        assert live_bodies(c, room) == bodies, f"{c.bare}: {live_bodies(c, room)}"
    assert len(set(live_ids.values())) == len(bodies), live_ids

    # The subject, set by the owner, reaches everyone from her occupant JID.
    topic = "Fire burn ✓ and cauldron bubble"
    alice.xmpp.plugin["xep_0045"].set_subject(room, topic)
    for c in (alice, bob, carol):
        s = await c.wait_for(subject_message(room, topic))
        assert xml_of(s).get("from") == f"{room}/alice", text_of(s)

    # A late joiner gets the last messages as history (oldest first, each with a delay
    # from the room and the stanza-id it had live), then the subject.
    dave = await net.online(net.account("dave"), "desk", plugins=PLUGINS)
    _me, subject_dave, occupants_dave, history = await enter(dave, room, "dave")
    assert {p["from"].resource for p in occupants_dave} >= {"alice", "bob", "carol"}
    assert [m["body"] for m in history] == bodies, [text_of(m) for m in history]
    for m in history:
        d = delay_of(m)
        assert d is not None and d.get("from") == room and d.get("stamp"), text_of(m)
        assert room_stanza_id(m, room) == live_ids[m["body"]], text_of(m)
    assert subject_text(subject_dave) == topic and subject_dave["from"] == JID(f"{room}/alice"), text_of(subject_dave)
    # On the wire: every history message before the one subject (§7.2.15).
    past = [i for i, s in enumerate(dave.received) if any(groupchat(room, b, live=False)(s) for b in bodies)]
    subjects = [i for i, s in enumerate(dave.received) if subject_message(room)(s)]
    assert len(past) == len(bodies) and len(subjects) == 1 and max(past) < subjects[0], \
        f"§7.2.15: the subject after the history:\n  {recent(dave, 20)}"
    # With a limit (§7.2.14 maxstanzas): only the newest ones.
    erin = await net.online(net.account("erin"), "desk", plugins=PLUGINS)
    _me, _subject, _occ, last_two = await enter(erin, room, "erin", maxstanzas=2)
    assert [m["body"] for m in last_two] == bodies[-2:], [text_of(m) for m in last_two]

    # A private message through the room (§7.5): from bob's occupant JID, to carol only.
    pm = bob.xmpp.make_message(mto=f"{room}/carol", mbody="psst, carol", mtype="chat")
    pm["id"] = "pm-" + secrets.token_hex(4)
    pm.send()
    got = await carol.wait_for(lambda s: body_of(s) == "psst, carol", what="bob's private message")
    x = xml_of(got)
    assert x.get("from") == f"{room}/bob" and x.get("to") == carol.jid and x.get("type") == "chat", text_of(got)
    assert x.get("id") == pm["id"] and user_x(got) is not None, text_of(got)
    carol.xmpp.send_message(mto=f"{room}/bob", mbody="psst back", mtype="chat")
    back = await bob.wait_for(lambda s: body_of(s) == "psst back", what="carol's private answer")
    assert xml_of(back).get("from") == f"{room}/carol", text_of(back)
    for c in (alice, dave):
        await c.expect_none(lambda s: body_of(s) in ("psst, carol", "psst back"), 0.5, "a private message of others")

    # XEP-0410 self-ping to one's own occupant JID: answered with a result by the room.
    status = await bob.xmpp.plugin["xep_0410"].send_self_ping(JID(f"{room}/bob"), timeout=5)
    assert status == PingStatus.JOINED, status
    reply = await ping_reply(bob, f"{room}/bob")
    assert xml_of(reply).get("type") == "result", text_of(reply)


@xmpp_test(timeout=45)
async def test_muc_archive_and_disco(net):
    alice = await net.online(net.account("alice"), "desk", plugins=PLUGINS)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    room = new_room(net, "archive")
    await create_room(alice, room, "alice", {
        "muc#roomconfig_persistentroom": "1",
        "muc#roomconfig_publicroom": "1",
        "muc#roomconfig_roomname": "Archive ✓ room",
    })
    await enter(bob, room, "bob")
    live_ids: dict[str, str] = {}
    bodies = []
    for i in range(5):
        sender = (alice, bob)[i % 2]
        body = f"archived {i}"
        send_groupchat(sender, room, body)
        m = await alice.wait_for(groupchat(room, body))
        live_ids[body] = room_stanza_id(m, room)
        assert live_ids[body], text_of(m)
        bodies.append(body)
    await bob.wait_for(groupchat(room, bodies[-1]))
    topic = "archived topic"
    alice.xmpp.plugin["xep_0045"].set_subject(room, topic)
    await bob.wait_for(subject_message(room, topic))
    # A round trip through the room: what it took before is archived (queries wait for it).
    await alice.xmpp.plugin["xep_0199"].ping(jid=room, timeout=5)

    # XEP-0313 on the room's JID: the messages, from the room, with the ids they had live.
    iq = await bob.xmpp.plugin["xep_0313"].retrieve(jid=JID(room), timeout=5)
    results = list(iq["mam"]["results"])
    fin = xml_of(iq).find(f"{{{MAM}}}fin")
    assert fin is not None and fin.get("complete") in ("true", "1"), text_of(iq)
    got = []
    for r in results:
        x = xml_of(r)
        assert x.get("from") == room and x.get("to") == bob.jid, text_of(r)
        inner = x.find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
        assert inner is not None and inner.get("type") == "groupchat", text_of(r)
        assert JID(inner.get("from")).bare == room and JID(inner.get("from")).resource in ("alice", "bob"), text_of(r)
        assert x.find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded/{{{NS_DELAY}}}delay") is not None, text_of(r)
        body = inner.findtext(f"{{{NS_CLIENT}}}body")
        got.append(body)
        assert r["mam_result"]["id"] == live_ids.get(body), \
            f"{body!r}: archive id {r['mam_result']['id']}, live stanza-id {live_ids.get(body)}"
    assert got == bodies, f"room archive {got}; recorded:\n  {recent(bob, 10)}"

    # Service discovery: the service, the public room in its items, the room's features.
    disco = alice.xmpp.plugin["xep_0030"]
    info = await disco.get_info(jid=service(net), timeout=5)
    ids = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert ("conference", "text") in ids and MUC in info["disco_info"]["features"], text_of(info)
    items = await disco.get_items(jid=service(net), timeout=5)
    listed = {str(i[0]): i[2] for i in items["disco_items"]["items"]}
    assert room in listed and listed[room] == "Archive ✓ room", text_of(items)
    info = await disco.get_info(jid=room, timeout=5)
    features = set(info["disco_info"]["features"])
    expected = {MUC, MAM, SID, OCCUPANT_ID, "muc_persistent", "muc_public", "muc_open", "muc_unmoderated",
                "muc_semianonymous", "muc_unsecured"}
    assert expected <= features, f"missing {expected - features}: {text_of(info)}"
    assert not features & {"muc_temporary", "muc_hidden", "muc_membersonly", "muc_passwordprotected"}, text_of(info)
    assert any(i[0] == "conference" and i[1] == "text" and i[3] == "Archive ✓ room"
               for i in info["disco_info"]["identities"]), text_of(info)
    form = xml_of(info).find(f"{{{DISCO_INFO}}}query/{{{DATA}}}x")
    assert form is not None, text_of(info)
    values = {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in form.findall(f"{{{DATA}}}field")}
    assert values.get("FORM_TYPE") == ROOMINFO, text_of(info)
    assert values.get("muc#roominfo_subject") == topic and values.get("muc#roominfo_occupants") == "2", values

    # The archive outlives the occupants of a persistent room: both leave, it is still there.
    for c, n in ((alice, "alice"), (bob, "bob")):
        c.xmpp.plugin["xep_0045"].leave_muc(JID(room), n)
        await c.wait_for(occupant_presence(room, n, available=False))
    iq = await alice.xmpp.plugin["xep_0313"].retrieve(jid=JID(room), timeout=5)
    assert [body_of(xml_of(r).find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message"))
            for r in iq["mam"]["results"]] == bodies, text_of(iq)
    items = await disco.get_items(jid=service(net), timeout=5)
    assert room in {str(i[0]) for i in items["disco_items"]["items"]}, text_of(items)


@xmpp_test(timeout=50)
async def test_muc_kick_ban_affiliations_destroy(net):
    alice = await net.online(net.account("alice"), "desk", plugins=PLUGINS)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    carol = await net.online(net.account("carol"), "desk", plugins=PLUGINS)
    room = new_room(net, "moderated")
    await create_room(alice, room, "alice")
    await enter(bob, room, "bob")
    await enter(carol, room, "carol")
    for c in (alice, bob, carol):
        await roster_of(c, room, ["alice", "bob", "carol"])
    muc = alice.xmpp.plugin["xep_0045"]

    # Kick (§8.2): carol gets 110 + 307 with the reason and actor, the others see her leave
    # with 307.
    await muc.set_role(room, "carol", "none", reason="too loud", timeout=5)
    gone = await carol.wait_for(occupant_presence(room, "carol", available=False), what="carol's kick")
    assert {110, 307} <= status_codes(gone), text_of(gone)
    it = item_of(gone)
    assert it["role"] == "none" and it.get("reason") == "too loud" and it.get("actor") == "alice", text_of(gone)
    for c in (alice, bob):
        seen = await c.wait_for(occupant_presence(room, "carol", available=False), what="carol kicked")
        assert 307 in status_codes(seen) and 110 not in status_codes(seen), text_of(seen)
        assert item_of(seen)["role"] == "none", text_of(seen)
        await roster_of(c, room, ["alice", "bob"])
    # Kicked, carol's self-ping says she is not in the room (XEP-0410 §3.2: not-acceptable).
    status = await carol.xmpp.plugin["xep_0410"].send_self_ping(JID(f"{room}/carol"), timeout=5)
    assert status == PingStatus.DISCONNECTED, status
    reply = await ping_reply(carol, f"{room}/carol")
    assert error_condition(reply) == "not-acceptable", text_of(reply)

    # Ban (§9.1): carol becomes an outcast and cannot come back (forbidden).
    await muc.set_affiliation(room, "outcast", jid=carol.bare, reason="for good", timeout=5)
    assert await refused_entry(carol, room, "carol") == "forbidden"
    outcasts = await muc.get_affiliation_list(room, "outcast", timeout=5)
    assert [str(j) for j in outcasts] == [carol.bare], outcasts

    # bob: member (§9.3), then admin (§10.6); the occupants see each change.
    await muc.set_affiliation(room, "member", jid=bob.bare, timeout=5)
    for c in (alice, bob):
        p = await c.wait_for(lambda s: occupant_presence(room, "bob")(s) and item_of(s).get("affiliation") == "member",
                             what="bob as member")
        assert item_of(p)["role"] == "participant", text_of(p)
        assert (110 in status_codes(p)) == (c is bob), text_of(p)
    assert [str(j) for j in await muc.get_affiliation_list(room, "member", timeout=5)] == [bob.bare]
    await muc.set_affiliation(room, "admin", jid=bob.bare, timeout=5)
    for c in (alice, bob):
        p = await c.wait_for(lambda s: occupant_presence(room, "bob")(s) and item_of(s).get("affiliation") == "admin",
                             what="bob as admin")
        assert item_of(p)["role"] == "moderator", text_of(p)
    lists = {a: sorted(str(j) for j in await muc.get_affiliation_list(room, a, timeout=5))
             for a in ("owner", "admin", "member", "outcast")}
    assert lists == {"owner": [alice.bare], "admin": [bob.bare], "member": [], "outcast": [carol.bare]}, lists
    # bob, admin now, reads the lists too; carol (outcast, outside) may not.
    assert [str(j) for j in await bob.xmpp.plugin["xep_0045"].get_affiliation_list(room, "admin", timeout=5)] == [bob.bare]
    try:
        await carol.xmpp.plugin["xep_0045"].get_affiliation_list(room, "member", timeout=5)
        raise AssertionError("an outcast read the member list")
    except IqError as e:
        assert e.iq["error"]["condition"] == "forbidden", text_of(e.iq)

    # Destroy (§10.9): every occupant leaves with the <destroy/> and its reason.
    await muc.destroy(room, reason="the play is over", timeout=5)
    for c, n in ((alice, "alice"), (bob, "bob")):
        p = await c.wait_for(occupant_presence(room, n, available=False), what=f"{n}'s destroy presence")
        destroy = user_x(p).find(f"{{{MUC_USER}}}destroy")
        assert destroy is not None and destroy.findtext(f"{{{MUC_USER}}}reason") == "the play is over", text_of(p)
        assert item_of(p)["role"] == "none", text_of(p)
    # And it is gone: not listed, no info.
    disco = bob.xmpp.plugin["xep_0030"]
    items = await disco.get_items(jid=service(net), timeout=5)
    assert room not in {str(i[0]) for i in items["disco_items"]["items"]}, text_of(items)
    try:
        info = await disco.get_info(jid=room, timeout=5)
        raise AssertionError(f"a destroyed room answers disco#info: {text_of(info)}")
    except IqError as e:
        assert e.iq["error"]["condition"] == "item-not-found", text_of(e.iq)


@xmpp_test(timeout=40)
async def test_muc_invitations(net):
    alice = await net.online(net.account("alice"), "desk", plugins=PLUGINS)
    bob = await net.online(net.account("bob"), "desk", plugins=PLUGINS)
    carol = await net.online(net.account("carol"), "desk", plugins=PLUGINS)
    room = new_room(net, "party")
    await create_room(alice, room, "alice")

    # Mediated (§7.8.2): through the room, which says who invites.
    invited = bob.event("groupchat_invite")
    alice.xmpp.plugin["xep_0045"].invite(room, bob.bare, reason="come in")
    inv = await bob.wait_event(invited, "the mediated invitation")
    x = xml_of(inv)
    assert x.get("from") == room, text_of(inv)
    invite = user_x(inv).find(f"{{{MUC_USER}}}invite")
    assert invite is not None and invite.get("from") == alice.bare, text_of(inv)
    assert invite.findtext(f"{{{MUC_USER}}}reason") == "come in", text_of(inv)
    # bob declines: the room passes it back to alice, saying who declined.
    bob.xmpp.plugin["xep_0045"].decline(room, alice.bare, reason="not now")
    dec = await alice.wait_for(lambda s: user_x(s) is not None and user_x(s).find(f"{{{MUC_USER}}}decline") is not None,
                               what="the decline")
    decline = user_x(dec).find(f"{{{MUC_USER}}}decline")
    assert xml_of(dec).get("from") == room and decline.get("from") == bob.bare, text_of(dec)
    assert decline.findtext(f"{{{MUC_USER}}}reason") == "not now", text_of(dec)

    # Direct (XEP-0249): from alice to carol, untouched, and carol enters with it.
    direct = carol.event("groupchat_direct_invite")
    alice.xmpp.plugin["xep_0249"].send_invitation(JID(carol.jid), JID(room), reason="direct")
    msg = await carol.wait_event(direct, "the direct invitation")
    conf = xml_of(msg).find(f"{{{CONFERENCE}}}x")
    assert xml_of(msg).get("from") == alice.jid and conf is not None and conf.get("jid") == room, text_of(msg)
    assert conf.get("reason") == "direct", text_of(msg)
    await enter(carol, str(msg["groupchat_invite"]["jid"]), "carol")
    await roster_of(alice, room, ["alice", "carol"])


# --- Debian's slixmpp --------------------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_CLIENT = Path(__file__).with_name("debian_muc_client.py")


@xmpp_test(timeout=55)
async def test_muc_with_debian_slixmpp(net):
    """The same kind of flow with Debian's python3-slixmpp (1.8.3) and its xep_0045: create
    (join_muc_wait), instant configuration, a second client enters, messages both ways, a
    kick, the destruction. debian_muc_client.py prints what each step gave."""
    a, b = net.account("deb"), net.account("deb")
    room = new_room(net, "debian")
    res = await asyncio.to_thread(
        subprocess.run,
        [SYSTEM_PYTHON, str(DEBIAN_CLIENT), net.server.host, str(net.server.port), str(net.server.ca), room,
         a.jid, a.password, b.jid, b.password],
        capture_output=True, text=True, timeout=50, check=False,
    )
    assert res.returncode == 0, \
        f"debian_muc_client.py failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["slixmpp"].startswith("1."), out
    assert out["created"]["codes"] and {110, 201} <= set(out["created"]["codes"]), out["created"]
    assert out["configured"] == "result", out
    assert out["guest"]["codes"] and 110 in out["guest"]["codes"] and 201 not in out["guest"]["codes"], out["guest"]
    assert out["guest"]["occupants"] == ["guest", "owner"] and out["guest"]["subject"] == "", out["guest"]
    both = [{"from": f"{room}/owner", "body": "hello from the owner"},
            {"from": f"{room}/guest", "body": "and back from the guest"}]
    assert out["guest"]["received"] == both and out["owner"]["received"] == both, out
    assert {110, 307} <= set(out["kicked"]["codes"]) and out["kicked"]["role"] == "none", out["kicked"]
    assert out["destroyed"]["reason"] == "done", out["destroyed"]
    # Last, so that the rest is checked too: the creator's join_muc_wait returned (it needs
    # the subject after the self-presence; see test_muc_creator_join_completes).
    assert out["created"]["join_completed"], out["created"]

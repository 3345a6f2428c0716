"""Profanity in a group chat (XEP-0045) on conference.<domain>: it enters a room that a
slixmpp owner created (`/join`), talks with a slixmpp occupant both ways, and is kicked by
the owner. Both sides are checked: the stanzas slixmpp receives and what Profanity shows."""

from __future__ import annotations

import asyncio
import re

from driver import profanity_log, profanity_login, quit_profanity
from harness import text_of, xml_of, xmpp_test
from muc import (PLUGINS, body_of, create_room, enter, groupchat, item_of, new_room, occupant_presence, refused_entry,
                 roster_of, status_codes)


@xmpp_test(timeout=55)
async def test_profanity_joins_talks_and_is_kicked(net, profanity_env):
    tmux, env, home = profanity_env
    srv = net.server
    pat = net.account("pat")        # typed into Profanity
    alice = await net.online(net.account("alice"), "slix", plugins=PLUGINS)   # the owner
    room = new_room(net, "tavern")
    await create_room(alice, room, "alice")

    profanity_jid = await profanity_login(tmux, env, srv, pat)
    # Profanity's default nick in a room is the local part of the account.
    nick = pat.local
    tmux.type(f"/join {room}")
    joined = await alice.wait_for(occupant_presence(room, nick), 15, what=f"Profanity entering {room} as {nick}")
    it = item_of(joined)
    assert (it.get("affiliation"), it.get("role"), it.get("jid")) == ("none", "participant", profanity_jid), \
        text_of(joined)
    await roster_of(alice, room, ["alice", nick])
    # The room window says so, with the role and affiliation of the self-presence, and lists
    # alice among the moderators (the occupant list on the right).
    await asyncio.to_thread(
        tmux.wait_screen, rf"-> You have joined the room as {re.escape(nick)}, role: participant, affiliation: none",
        10, "the room window")
    await asyncio.to_thread(tmux.wait_screen, r"Moderators[^\n]*\n[^\n]*\balice\b", 5, "alice among the moderators")
    # On the wire: the join presence Profanity sent carried the MUC <x/>, and it got its
    # self-presence with 110 and then the (empty) subject.
    log = profanity_log(home).splitlines()
    sent = [i for i, line in enumerate(log) if "SENT: <presence" in line and f'to="{room}/{nick}"' in line]
    assert sent and 'xmlns="http://jabber.org/protocol/muc"' in log[sent[0]], "\n".join(log[i] for i in sent)
    me = [i for i, line in enumerate(log) if "RECV: <presence" in line and f'from="{room}/{nick}"' in line]
    subject = [i for i, line in enumerate(log)
               if "RECV: <message" in line and f'from="{room}"' in line and "<subject" in line]
    assert me and 'code="110"' in log[me[0]] and subject and subject[0] > me[0], \
        "\n".join(log[i] for i in me + subject)

    # Profanity -> the room: typed in the room window, received by alice from the nick.
    out_text = "Hello room from Profanity ✓ 7"
    tmux.type(out_text)
    got = await alice.wait_for(groupchat(room, out_text), 15, what="Profanity's groupchat message")
    assert xml_of(got).get("from") == f"{room}/{nick}", text_of(got)
    # Profanity shows its own message once: the reflection (same id) is recognised as its own.
    await asyncio.to_thread(tmux.wait_screen, rf"{re.escape(nick)}: {re.escape(out_text)}", 10,
                            "Profanity's own message in the room window")
    await asyncio.sleep(0.5)
    assert tmux.screen().count(out_text) == 1, tmux.screen()

    # The room -> Profanity: alice's message appears in the room window, from her nick.
    in_text = "Welcome, says alice ✓ 8"
    alice.xmpp.send_message(mto=room, mbody=in_text, mtype="groupchat")
    await asyncio.to_thread(tmux.wait_screen, rf"alice: {re.escape(in_text)}", 10, "alice's message in the room")
    assert any("RECV: <message" in line and f'from="{room}/alice"' in line and in_text in line
               for line in profanity_log(home).splitlines()), "alice's message not in Profanity's log"

    # The owner kicks Profanity's occupant (§8.2): alice sees it leave with 307, Profanity
    # says it was kicked.
    await alice.xmpp.plugin["xep_0045"].set_role(room, nick, "none", reason="closing time", timeout=5)
    left = await alice.wait_for(occupant_presence(room, nick, available=False), 10, what="the kick")
    assert 307 in status_codes(left) and item_of(left)["role"] == "none", text_of(left)
    await roster_of(alice, room, ["alice"])
    # Profanity closes the room window and says so in the console, with actor and reason.
    await asyncio.to_thread(tmux.wait_screen, rf"<- Kicked from {re.escape(room)} by alice, reason: closing time", 10,
                            "the kick in Profanity")
    log = profanity_log(home)
    kicked = [line for line in log.splitlines() if "RECV: <presence" in line and f'from="{room}/{nick}"' in line
              and 'type="unavailable"' in line]
    assert kicked and 'code="307"' in kicked[-1] and 'code="110"' in kicked[-1], "\n".join(kicked)

    # On entering, Profanity asks the room for its member, admin and owner lists whatever its
    # own affiliation. An unaffiliated occupant of a semi-anonymous room may read none of them
    # (§5.2 table "Retrieve Member List"; §10.5/§10.8: owner and admin lists MUST be
    # forbidden in semi-anonymous rooms): each is refused with <forbidden/>. Anything else
    # the room refused is a failure.
    asked = dict(re.findall(r'SENT: <iq id="([^"]+)" to="' + re.escape(room) +
                            r'" type="get"><query xmlns="http://jabber.org/protocol/muc#admin"><item affiliation="(\w+)"/>',
                            log))
    assert sorted(asked.values()) == ["admin", "member", "owner"], asked
    errors = [line for line in log.splitlines() if "RECV:" in line and room in line and 'type="error"' in line]
    for line in errors:
        rid = re.search(r' id="([^"]+)"', line).group(1)
        assert rid in asked and "<forbidden " in line, f"the room refused something of Profanity's:\n{line}"
    assert len(errors) == len(asked), "\n".join(errors)
    assert body_of(got) == out_text
    await quit_profanity(tmux)


@xmpp_test(timeout=55)
async def test_profanity_creates_a_room_and_kicks(net, profanity_env):
    """Profanity as the creator and owner: `/join` of a room that does not exist creates it
    locked (§10.1.1, 201), `/room accept` sends the instant configuration (§10.1.2), a
    slixmpp client can then enter, and `/kick` removes it (§8.2)."""
    tmux, env, _home = profanity_env
    pat = net.account("pat")
    bob = await net.online(net.account("bob"), "slix", plugins=PLUGINS)
    room = new_room(net, "made")
    profanity_jid = await profanity_login(tmux, env, net.server, pat)
    nick = pat.local
    tmux.type(f"/join {room}")
    await asyncio.to_thread(
        tmux.wait_screen, rf"-> You have joined the room as {re.escape(nick)}, role: moderator, affiliation: owner",
        10, "the new room's window")
    await asyncio.to_thread(tmux.wait_screen, r"Room locked, requires configuration", 5, "the locked room notice")
    # Locked: bob cannot enter yet (§7.2.10).
    assert await refused_entry(bob, room, "bob") == "item-not-found"
    tmux.type("/room accept")
    await asyncio.to_thread(tmux.wait_screen, r"Room unlocked", 10, "the unlocked room notice")
    await enter(bob, room, "bob")
    seen = await bob.wait_for(occupant_presence(room, nick), what="Profanity's occupant")
    assert (item_of(seen)["affiliation"], item_of(seen)["role"]) == ("owner", "moderator"), text_of(seen)
    # Semi-anonymous by default: bob, a participant, does not see Profanity's real JID.
    assert item_of(seen).get("jid") is None and profanity_jid.startswith(pat.jid), text_of(seen)
    await asyncio.to_thread(tmux.wait_screen, r"Participants[^\n]*\n[^\n]*\bbob\b", 10, "bob among the participants")
    # The owner's /kick (§8.2): bob gets 110 + 307 with the reason and Profanity's nick as actor.
    tmux.type("/kick bob enough for today")
    gone = await bob.wait_for(occupant_presence(room, "bob", available=False), 10, what="bob kicked by Profanity")
    assert {110, 307} <= status_codes(gone), text_of(gone)
    assert item_of(gone).get("reason") == "enough for today" and item_of(gone).get("actor") == nick, text_of(gone)
    await asyncio.to_thread(
        tmux.wait_screen, rf"<- bob has been kicked from the room by {re.escape(nick)}, reason: enough for today", 10,
        "the kick in Profanity's room window")
    await quit_profanity(tmux)

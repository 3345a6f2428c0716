"""Shared pieces of the multi-user chat (XEP-0045) tests of compat/slixmpp and
compat/profanity: reading what a room sends (status codes, items, ids) from the stanzas a
`harness.Client` recorded, and doing things through slixmpp's own `xep_0045` plugin
(entering with join_muc_wait, creating and configuring a room). Every wait is bounded."""

from __future__ import annotations

import asyncio
import secrets
import time

from slixmpp import JID
from slixmpp.exceptions import PresenceError
from slixmpp.plugins.xep_0004 import Form

from harness import DEFAULT_PLUGINS, NS_CLIENT, NS_DELAY, WAIT, data_form, text_of, xml_of

MUC = "http://jabber.org/protocol/muc"
MUC_USER = f"{MUC}#user"
ROOMCONFIG = f"{MUC}#roomconfig"
ROOMINFO = f"{MUC}#roominfo"
MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
FORWARD = "urn:xmpp:forward:0"
CONFERENCE = "jabber:x:conference"
DATA = "jabber:x:data"
DISCO_INFO = "http://jabber.org/protocol/disco#info"

PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0045", "xep_0059", "xep_0297", "xep_0313", "xep_0359", "xep_0249",
                             "xep_0410")


# --- reading what the room sent -------------------------------------------------------------

def service(net) -> str:
    return f"conference.{net.server.domain}"


def new_room(net, prefix: str = "room") -> str:
    return f"{prefix}{secrets.token_hex(3)}@{service(net)}"


def user_x(s):
    return xml_of(s).find(f"{{{MUC_USER}}}x")


def status_codes(s) -> set[int]:
    x = user_x(s)
    return set() if x is None else {int(c.get("code")) for c in x.findall(f"{{{MUC_USER}}}status")}


def item_of(s) -> dict:
    """The attributes of the muc#user <item/> (with 'reason' and 'actor' when present)."""
    x = user_x(s)
    it = None if x is None else x.find(f"{{{MUC_USER}}}item")
    assert it is not None, f"no muc#user <item/> in {text_of(s)}"
    out = dict(it.attrib)
    reason = it.find(f"{{{MUC_USER}}}reason")
    if reason is not None:
        out["reason"] = reason.text or ""
    actor = it.find(f"{{{MUC_USER}}}actor")
    if actor is not None:
        out["actor"] = actor.get("nick")
    return out


def occupant_id(s) -> str | None:
    el = xml_of(s).find(f"{{{OCCUPANT_ID}}}occupant-id")
    return None if el is None else el.get("id")


def body_of(s) -> str | None:
    return xml_of(s).findtext(f"{{{NS_CLIENT}}}body")


def room_stanza_id(s, room: str) -> str | None:
    ids = [e.get("id") for e in xml_of(s).findall(f"{{{SID}}}stanza-id") if e.get("by") == room]
    assert len(ids) <= 1, f"more than one stanza-id by {room}: {text_of(s)}"
    return ids[0] if ids else None


def subject_text(s) -> str | None:
    """The text of a message's <subject/> ('' for an empty one), None without one."""
    el = xml_of(s).find(f"{{{NS_CLIENT}}}subject")
    return None if el is None else (el.text or "")


def delay_of(s):
    return xml_of(s).find(f"{{{NS_DELAY}}}delay")


def occupant_presence(room: str, nick: str, *, available: bool = True):
    """Predicate: a presence about room/nick with the room's muc#user <x/>."""
    def pred(s) -> bool:
        x = xml_of(s)
        return (x.tag == f"{{{NS_CLIENT}}}presence" and x.get("from") == f"{room}/{nick}"
                and x.get("type") == (None if available else "unavailable") and user_x(s) is not None)
    pred.__doc__ = f"{'available' if available else 'unavailable'} presence of {room}/{nick}"
    return pred


def groupchat(room: str, body: str, *, live: bool = True):
    """Predicate: a groupchat message of the room with this body (live: without <delay/>)."""
    def pred(s) -> bool:
        x = xml_of(s)
        return (x.tag == f"{{{NS_CLIENT}}}message" and x.get("type") == "groupchat"
                and JID(x.get("from") or "").bare == room and body_of(s) == body
                and (delay_of(s) is None) == live)
    pred.__doc__ = f"groupchat {body!r} from {room}"
    return pred


def subject_message(room: str, text: str | None = None):
    """Predicate: a subject message of the room (<subject/>, no <body/>; §8.1)."""
    def pred(s) -> bool:
        x = xml_of(s)
        subject = x.find(f"{{{NS_CLIENT}}}subject")
        return (x.tag == f"{{{NS_CLIENT}}}message" and x.get("type") == "groupchat"
                and JID(x.get("from") or "").bare == room and subject is not None
                and x.find(f"{{{NS_CLIENT}}}body") is None and (text is None or (subject.text or "") == text))
    pred.__doc__ = f"subject {text!r} from {room}"
    return pred


def live_bodies(client, room: str) -> list[str]:
    """The bodies of the live groupchat messages of `room` the client received, in order."""
    out = []
    for s in client.received:
        x = xml_of(s)
        if (x.tag == f"{{{NS_CLIENT}}}message" and x.get("type") == "groupchat" and JID(x.get("from") or "").bare == room
                and body_of(s) is not None and delay_of(s) is None):
            out.append(body_of(s))
    return out


def recent(client, n: int = 12) -> str:
    return "\n  ".join(text_of(s) for s in client.received[-n:])


# --- doing things through the plugin -----------------------------------------------------------

async def enter(client, room: str, nick: str, **history):
    """join_muc_wait (presences, self-presence, history, subject); returns its tuple
    (self-presence, subject, occupants' presences, history messages)."""
    muc = client.xmpp.plugin["xep_0045"]
    try:
        return await muc.join_muc_wait(JID(room), nick, timeout=WAIT, **history)
    except asyncio.TimeoutError:
        raise AssertionError(f"{client.bare}: join_muc_wait({room}/{nick}) did not complete within {WAIT}s "
                             f"(it waits for the self-presence, then the subject); last stanzas:\n  {recent(client)}")


async def refused_entry(client, room: str, nick: str) -> str:
    """join_muc_wait that must be refused: the error condition of the presence error."""
    try:
        got = await client.xmpp.plugin["xep_0045"].join_muc_wait(JID(room), nick, timeout=WAIT)
    except PresenceError as e:
        x = xml_of(e.presence)
        assert x.get("from") == f"{room}/{nick}" and x.get("type") == "error", text_of(e.presence)
        return e.condition
    except asyncio.TimeoutError:
        raise AssertionError(f"{client.bare}: no answer to entering {room}/{nick}; last stanzas:\n  {recent(client)}")
    raise AssertionError(f"{client.bare} entered {room} as {nick}: {text_of(got[0])}")


async def create_room(owner, room: str, nick: str, fields: dict[str, str] | None = None, while_locked=None):
    """Create `room` (§10.1.1) with the plugin's join_muc_wait and configure it: the instant
    configuration (an empty submitted form, §10.1.2) when `fields` is None, else the
    configuration form fetched and submitted with `fields` (§10.1.3). `while_locked`, if
    given, is awaited between the creation and the configuration. Returns the
    self-presence (status 110 and 201, owner, moderator).

    join_muc_wait returns only once a subject arrives, which Starling does not send to the
    creator of a locked room: so it runs in the background here and the self-presence is
    taken from the recorded stanzas (`test_muc_creator_join_completes` is about that)."""
    muc = owner.xmpp.plugin["xep_0045"]
    join = asyncio.ensure_future(muc.join_muc_wait(JID(room), nick, timeout=WAIT))
    try:
        me = await owner.wait_for(occupant_presence(room, nick), what=f"the self-presence creating {room}")
        codes = status_codes(me)
        assert {110, 201} <= codes, f"§10.1.1: a new room, owner's self-presence has 110 and 201: {text_of(me)}"
        item = item_of(me)
        assert (item.get("affiliation"), item.get("role")) == ("owner", "moderator"), text_of(me)
        if while_locked is not None:
            await while_locked()
        if fields is None:
            await muc.set_room_config(room, Form(), timeout=5)
        else:
            form = await muc.get_room_config(room, timeout=5)
            x = form.xml
            assert x.get("type") == "form", text_of(form)
            have = {f.get("var") for f in x.findall(f"{{{DATA}}}field")}
            assert "FORM_TYPE" in have and set(fields) <= have, f"fields {set(fields) - have} not in {text_of(form)}"
            await muc.set_room_config(room, data_form(ROOMCONFIG, fields), timeout=5)
        return me
    finally:
        await asyncio.wait([join], timeout=0.2)
        join.cancel()
        await asyncio.gather(join, return_exceptions=True)


async def roster_of(client, room: str, nicks: list[str]) -> None:
    """The plugin's occupant list of `room` becomes exactly `nicks`."""
    muc = client.xmpp.plugin["xep_0045"]
    deadline = time.monotonic() + WAIT
    while sorted(muc.get_roster(JID(room))) != sorted(nicks):
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.bare}: occupants {sorted(muc.get_roster(JID(room)))}, expected {sorted(nicks)}; "
                                 f"last stanzas:\n  {recent(client)}")
        await asyncio.sleep(0.05)


def send_groupchat(client, room: str, body: str) -> str:
    msg = client.xmpp.make_message(mto=room, mbody=body, mtype="groupchat")
    msg["id"] = "gc-" + secrets.token_hex(5)
    msg.send()
    return msg["id"]


async def ping_reply(client, target: str):
    """The recorded answer to the newest ping the client sent to `target` (the plugin's
    PingStatus folds several answers together)."""
    replies = [s for s in client.received
               if xml_of(s).tag == f"{{{NS_CLIENT}}}iq" and xml_of(s).get("from") == target
               and xml_of(s).get("type") in ("result", "error")]
    assert replies, f"{client.bare}: no answer from {target}; last stanzas:\n  {recent(client)}"
    return replies[-1]

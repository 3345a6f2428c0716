"""A room flow on Debian's own slixmpp (python3-slixmpp, 1.8.3 on Debian 12) and its xep_0045,
run by test_muc.py with /usr/bin/python3, outside the compat venv (which has slixmpp from
PyPI). Login as in debian_client.py (slixmpp picks its mechanism).

"owner" creates ROOM with join_muc_wait and accepts the instant configuration (an empty
submitted form), "guest" enters with join_muc_wait, each sends a message, the owner kicks the
guest and destroys the room. Prints one JSON object on stdout (last line): what each step
gave. Every wait is bounded.

    /usr/bin/python3 debian_muc_client.py HOST PORT CA ROOM JID1 PASSWORD1 JID2 PASSWORD2
"""

import asyncio
import json
import sys

import slixmpp
from slixmpp.plugins.xep_0004 import Form

DEADLINE = 8.0
MUC_USER = "http://jabber.org/protocol/muc#user"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca):
        super().__init__(jid, password)
        self.ca_certs = ca
        for p in ("xep_0030", "xep_0004", "xep_0045", "xep_0199"):
            self.register_plugin(p)
        self.ready = asyncio.Event()
        self.outcome = None
        self.groupchat = []
        self.presences = []
        self.changed = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_all_auth", lambda _: self.finish("failed_all_auth"))
        self.add_event_handler("disconnected", lambda reason: self.finish(f"disconnected: {reason}"))
        self.add_event_handler("groupchat_message", self.on_groupchat)
        self.add_event_handler("groupchat_presence", self.on_presence)

    def finish(self, outcome):
        if self.outcome is None:
            self.outcome = outcome
        self.ready.set()

    async def on_start(self, _):
        self.send_presence()
        self.finish("session_started")

    def on_groupchat(self, msg):
        if msg.get_plugin("delay", check=True) is None:
            self.groupchat.append({"from": str(msg["from"]), "body": msg["body"]})
            self.changed.set()

    def on_presence(self, pres):
        x = pres.xml.find(f"{{{MUC_USER}}}x")
        item = x.find(f"{{{MUC_USER}}}item") if x is not None else None
        destroy = x.find(f"{{{MUC_USER}}}destroy") if x is not None else None
        self.presences.append({
            "from": str(pres["from"]),
            "type": pres["type"],
            "codes": sorted(int(s.get("code")) for s in x.findall(f"{{{MUC_USER}}}status")) if x is not None else [],
            "role": item.get("role") if item is not None else None,
            "reason": destroy.findtext(f"{{{MUC_USER}}}reason") if destroy is not None else None,
            "destroy": destroy is not None,
        })
        self.changed.set()

    async def wait(self, pred, what):
        """The first of the recorded items (groupchat and presences) matching `pred`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            for entry in self.groupchat + self.presences:
                if pred(entry):
                    return entry
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{self.boundjid}: no {what}; presences {self.presences}, messages {self.groupchat}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def online(jid, password, ca, host, port):
    c = Client(jid, password, ca)
    c.connect((host, port), use_ssl=False, force_starttls=True, disable_starttls=False)
    await asyncio.wait_for(c.ready.wait(), 15)
    if c.outcome != "session_started":
        raise RuntimeError(f"{jid}: {c.outcome}")
    return c


async def main(host, port, ca, room, jid1, pw1, jid2, pw2):
    owner = await online(jid1, pw1, ca, host, port)
    guest = await online(jid2, pw2, ca, host, port)
    result = {"slixmpp": slixmpp.__version__}
    muc = owner.plugin["xep_0045"]

    # Creation: join_muc_wait returns after the self-presence and the subject.
    join = asyncio.ensure_future(muc.join_muc_wait(room, "owner", timeout=DEADLINE))
    me = await owner.wait(lambda e: e.get("from") == f"{room}/owner" and e.get("type") != "unavailable",
                          "self-presence creating the room")
    done, _ = await asyncio.wait([join], timeout=2.0)
    completed = bool(done) and join.exception() is None
    if not done:
        join.cancel()
        await asyncio.gather(join, return_exceptions=True)
    result["created"] = {"codes": me["codes"], "join_completed": completed}

    # The instant room.
    try:
        await muc.set_room_config(room, Form(), timeout=5)
        result["configured"] = "result"
    except Exception as e:  # reported, and checked by the test
        result["configured"] = repr(e)

    # The guest enters.
    pres, subject, _occupants, _history = await guest.plugin["xep_0045"].join_muc_wait(room, "guest", timeout=DEADLINE)
    x = pres.xml.find(f"{{{MUC_USER}}}x")
    result["guest"] = {
        "codes": sorted(int(s.get("code")) for s in x.findall(f"{{{MUC_USER}}}status")),
        "occupants": sorted(guest.plugin["xep_0045"].get_roster(room)),
        "subject": subject["subject"],
    }

    # Each message reaches both, the sender's own copy included.
    owner.send_message(mto=room, mbody="hello from the owner", mtype="groupchat")
    for c in (guest, owner):
        await c.wait(lambda e: e.get("body") == "hello from the owner", "the owner's message")
    guest.send_message(mto=room, mbody="and back from the guest", mtype="groupchat")
    for c in (owner, guest):
        await c.wait(lambda e: e.get("body") == "and back from the guest", "the guest's message")
    result["guest"]["received"] = list(guest.groupchat)
    result["owner"] = {"received": list(owner.groupchat)}

    # Kick, then destroy.
    await muc.set_role(room, "guest", "none", reason="bye", timeout=5)
    kicked = await guest.wait(lambda e: e.get("from") == f"{room}/guest" and e.get("type") == "unavailable",
                              "the kick")
    result["kicked"] = kicked
    await muc.destroy(room, reason="done", timeout=5)
    destroyed = await owner.wait(lambda e: e.get("from") == f"{room}/owner" and e.get("destroy"), "the destroy")
    result["destroyed"] = destroyed

    for c in (owner, guest):
        c.disconnect()
    print(json.dumps(result))


if __name__ == "__main__":
    host, port, ca, room, jid1, pw1, jid2, pw2 = sys.argv[1:9]
    asyncio.run(asyncio.wait_for(main(host, int(port), ca, room, jid1, pw1, jid2, pw2), 45))

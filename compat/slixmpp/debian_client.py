"""A minimal client on Debian's own slixmpp (python3-slixmpp, 1.8.3 on Debian 12: the library
under Debian's poezio), run by test_debian_slixmpp.py with /usr/bin/python3, outside the
compat venv (which has slixmpp from PyPI).

Two accounts log in over STARTTLS, with slixmpp choosing the SASL mechanism itself as a user's
client would, and exchange a message each way. Prints one JSON object on stdout: the library
version, the mechanism each client ended with, every SASL <failure/> it saw (condition and
text) in order, and the messages received.

    /usr/bin/python3 debian_client.py HOST PORT CA JID1 PASSWORD1 JID2 PASSWORD2
"""

import asyncio
import json
import sys
import time
import xml.etree.ElementTree as ET

import slixmpp

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
DEADLINE = 15.0


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca):
        super().__init__(jid, password)
        self.ca_certs = ca
        self.failures = []
        self.received = []
        self.ready = asyncio.Event()
        self.got_message = asyncio.Event()
        self.outcome = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("failed_all_auth", lambda _: self.finish("failed_all_auth"))
        self.add_event_handler("disconnected", lambda reason: self.finish(f"disconnected: {reason}"))
        self.add_event_handler("message", self.on_message)

    def finish(self, outcome):
        if self.outcome is None:
            self.outcome = outcome
        self.ready.set()

    def on_failed_auth(self, stanza):
        xml = stanza.xml
        text = xml.find(f"{{{NS_SASL}}}text")
        self.failures.append({
            "mechanism": self.plugin["feature_mechanisms"].mech.name,
            "condition": stanza["condition"],
            "text": text.text if text is not None else None,
            "at": round(time.monotonic() - STARTED, 3),
        })

    async def on_start(self, _):
        self.send_presence()
        self.finish("session_started")

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.received.append({"from": str(msg["from"].bare), "body": msg["body"]})
            self.got_message.set()


async def online(jid, password, ca, host, port):
    c = Client(jid, password, ca)
    c.connect((host, port), use_ssl=False, force_starttls=True, disable_starttls=False)
    await asyncio.wait_for(c.ready.wait(), DEADLINE)
    return c


def report(c):
    mech = c.plugin["feature_mechanisms"].mech
    return {
        "outcome": c.outcome,
        "mechanism": mech.name if mech is not None else None,
        "failures": c.failures,
        "received": c.received,
    }


async def main(host, port, ca, jid1, pw1, jid2, pw2):
    a = await online(jid1, pw1, ca, host, port)
    b = await online(jid2, pw2, ca, host, port)
    result = {"slixmpp": slixmpp.__version__, "a": report(a), "b": report(b)}
    if a.outcome == b.outcome == "session_started":
        a.send_message(mto=jid2, mbody="hello from debian slixmpp", mtype="chat")
        await asyncio.wait_for(b.got_message.wait(), DEADLINE)
        b.send_message(mto=jid1, mbody="and back", mtype="chat")
        await asyncio.wait_for(a.got_message.wait(), DEADLINE)
        result["a"]["received"] = a.received
        result["b"]["received"] = b.received
    for c in (a, b):
        c.disconnect()
    print(json.dumps(result))


if __name__ == "__main__":
    STARTED = time.monotonic()
    host, port, ca, jid1, pw1, jid2, pw2 = sys.argv[1:8]
    asyncio.run(asyncio.wait_for(main(host, int(port), ca, jid1, pw1, jid2, pw2), 45))

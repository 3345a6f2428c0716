"""Profanity's XEP-0313 history after a restart of the server: a conversation held by other
clients (slixmpp) before the restart appears, from the server's archive, when a fresh
Profanity (no local history) opens the chat window with `/mam on`.

The test runs a server process of its own (compat/hostile/instance.py: own directory, config
and ports) so that it can stop and start it without touching the shared one."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from driver import profanity_home, profanity_log, profanity_login, quit_profanity
from harness import NS_CLIENT, Net, text_of, xml_of, xmpp_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
from instance import Instance  # noqa: E402

MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"


def body_of(s) -> str | None:
    return xml_of(s).findtext(f"{{{NS_CLIENT}}}body")


@pytest.fixture
def own_server(server, tmp_path_factory):
    """A server process of this test's own, stopped (and checked) afterwards."""
    root = Path(os.environ.get("COMPAT_WORK") or tmp_path_factory.mktemp("own"))
    inst = Instance("mam-restart", root, server.bin, {})
    inst.start()
    yield inst
    rc = inst.stop()
    assert rc == 0, f"the server exited with {rc} on SIGTERM:\n{inst.log_tail()}"
    assert not inst.panics(), "\n".join(inst.panics())


@pytest.mark.timeout(90)
@xmpp_test(timeout=80)
async def test_profanity_mam_history_after_server_restart(net, own_server):
    inst = own_server
    alice, bob = inst.account("alice"), inst.account("bob")

    # Before the restart: alice (on another client) and bob talk; the server archives it.
    other = Net(inst.server)
    try:
        a = await other.online(alice, "laptop")
        info = await a.xmpp.plugin["xep_0030"].get_info(jid=alice.jid, timeout=5)
        if MAM not in info["disco_info"]["features"]:
            pytest.skip(f"the server under test does not advertise {MAM} (no archive)")
        b = await other.online(bob, "desk")
        lines, sent_at, live_ids = [], [], {}
        for i in range(3):
            text = f"history from bob {i}"
            b.xmpp.send_message(mto=alice.jid, mbody=text, mtype="chat")
            got = await a.wait_for(lambda s, t=text: body_of(s) == t)
            sid = [e.get("id") for e in xml_of(got).findall(f"{{{SID}}}stanza-id") if e.get("by") == alice.jid]
            assert len(sid) == 1, text_of(got)
            live_ids[text] = sid[0]
            lines.append((re.escape(b.jid), text))
            sent_at.append(datetime.now(timezone.utc))
            text = f"answer from alice {i}"
            a.xmpp.send_message(mto=bob.jid, mbody=text, mtype="chat")
            await b.wait_for(lambda s, t=text: body_of(s) == t)
            lines.append(("me", text))
            sent_at.append(datetime.now(timezone.utc))
        await a.xmpp.plugin["xep_0199"].ping(jid=inst.server.domain, timeout=5)
    finally:
        await other.close_all()

    # The restart (SIGTERM: a clean stop, then a new process on the same data).
    assert inst.stop() == 0, inst.log_tail()
    inst.start()
    await asyncio.sleep(1.0)  # so that the login time differs from the sending times

    # A fresh Profanity (no local history) with MAM on opens the chat with bob.
    tmux, env, home = profanity_home(Path(inst.ca))
    try:
        await profanity_login(tmux, env, inst.server, alice, before=("/mam on",))
        tmux.type(f"/msg {bob.jid}")
        last_who, last_text = lines[-1]
        await asyncio.to_thread(tmux.wait_screen, rf"{last_who}: {re.escape(last_text)}", 15,
                                "the last message of the history")
        screen = tmux.screen()
        # Every message, in the conversation's order, shown at the time it was sent (the
        # archive's delay stamp), not at the time it was fetched.
        position = 0
        for (who, text), when in zip(lines, sent_at):
            m = re.compile(rf"(\d\d:\d\d:\d\d) - {who}: {re.escape(text)}").search(screen, position)
            assert m, f"{text!r} not shown after position {position}:\n{screen}"
            ok = {(when + timedelta(seconds=d)).strftime("%H:%M:%S") for d in (-2, -1, 0)}
            assert m.group(1) in ok, f"{text!r} shown at {m.group(1)}, sent at {when:%H:%M:%S}:\n{screen}"
            position = m.end()

        # On the wire: Profanity asked the archive (with = bob) and got each message with
        # the archive id it had live before the restart (ids survive restarts).
        log = profanity_log(home)
        queries = [l for l in log.splitlines() if "SENT: <iq" in l and f'xmlns="{MAM}"' in l]
        assert queries and bob.jid in queries[0], "\n".join(queries)
        results = re.findall(rf'RECV: <message[^>]*><result id="([^"]+)" xmlns="{MAM}".*?<body>([^<]*)</body>', log)
        got_ids = {body: rid for rid, body in results}
        for text, sid in live_ids.items():
            assert got_ids.get(text) == sid, f"{text!r}: archive id {got_ids.get(text)}, live stanza-id {sid}"
        await quit_profanity(tmux)
    finally:
        tmux.kill()

"""Profanity (Debian's package, a real end-user terminal client) against Starling.

Profanity runs inside a private tmux server (its own socket), is typed at with `send-keys`
and read with `capture-pane`. It logs in over STARTTLS with real certificate verification
(OpenSSL's SSL_CERT_FILE points at the server's generated certificate), chats with an account
driven by slixmpp, and both sides are checked: the stanza slixmpp receives and the text
Profanity shows.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from datetime import datetime, timedelta, timezone

from driver import profanity_log, profanity_login, quit_profanity
from harness import NS_CLIENT, UNRELATED_CA, child, is_stanza, text_of, xml_of, xmpp_test


@xmpp_test(timeout=55)
async def test_profanity_login_and_chat(net, profanity_env):
    tmux, env, home = profanity_env
    srv = net.server
    alice = net.account("alice")   # typed into Profanity
    bob_acc = net.account("bob")   # driven by slixmpp
    bob = await net.online(bob_acc, "slix")

    profanity_jid = await profanity_login(tmux, env, srv, alice)

    # Profanity negotiated STARTTLS and SCRAM-SHA-256 (its libstrophe debug log shows the wire).
    log = profanity_log(home)
    assert '<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>' in log, "profanity did not use STARTTLS"
    assert re.search(r'<auth [^>]*mechanism="SCRAM-SHA-(1|256)', log), "profanity did not authenticate with SCRAM"

    # Profanity -> slixmpp.
    out_text = "Hello from Profanity ✓ 42"
    tmux.type(f"/msg {bob_acc.jid} {out_text}")
    got = await bob.wait_for(lambda s: is_stanza("message")(s) and s["body"] == out_text, 15,
                             what=f"message {out_text!r} from profanity")
    x = xml_of(got)
    assert x.get("from") == profanity_jid, text_of(got)
    assert x.get("to") in (bob_acc.jid, bob.jid), text_of(got)
    assert x.get("type") == "chat", text_of(got)
    assert child(got, NS_CLIENT, "body").text == out_text

    # slixmpp -> Profanity's full JID; it appears in the open chat window.
    in_text = "Reply from slixmpp ✓ 43"
    bob.xmpp.send_message(mto=profanity_jid, mbody=in_text, mtype="chat")
    await asyncio.to_thread(tmux.wait_screen, rf"{re.escape(bob_acc.jid)}\S*: {re.escape(in_text)}", 15,
                            "the incoming message in the chat window")
    screen = tmux.screen()
    assert re.search(rf"me: {re.escape(out_text)}", screen), f"own message not shown:\n{screen}"
    # The stanza as Profanity's libstrophe received it, from bob's full JID.
    log = profanity_log(home)
    assert re.search(rf'RECV: <message[^>]*from="{re.escape(bob.jid)}"', log), "no message from bob in profanity's log"

    # Quit cleanly: the program exits.
    await quit_profanity(tmux)


@xmpp_test(timeout=55)
async def test_profanity_offline_messages_roster_and_subscription(net, profanity_env):
    tmux, env, home = profanity_env
    srv = net.server
    alice = net.account("alice")   # typed into Profanity
    bob_acc = net.account("bob")   # driven by slixmpp
    bob = await net.online(bob_acc, "slix")

    # While alice is offline, bob sends two messages: stored (XEP-0160).
    bob.xmpp.send_message(mto=alice.jid, mbody="stored one", mtype="chat")
    bob.xmpp.send_message(mto=alice.jid, mbody="stored two", mtype="chat")
    sent_at = datetime.now(timezone.utc)
    await bob.xmpp.plugin["xep_0199"].ping(jid=srv.domain, timeout=5)
    await asyncio.sleep(2.2)  # so the delay stamp is visibly older than the login time

    profanity_jid = await profanity_login(tmux, env, srv, alice)
    await asyncio.to_thread(tmux.wait_screen, rf"<< chat message: {re.escape(bob.jid)}", 10,
                            "the console notice about the stored messages")
    log = profanity_log(home)
    recv = [line for line in log.splitlines() if "RECV: <message" in line and "stored " in line]
    assert len(recv) == 2 and "stored one" in recv[0] and "stored two" in recv[1], "\n".join(recv)
    assert all('xmlns="urn:xmpp:delay"' in line for line in recv), "\n".join(recv)

    # --- roster and subscriptions, typed in the console window ---
    tmux.type(f"/roster add {bob_acc.jid} Bobby")
    await asyncio.to_thread(tmux.wait_screen, rf"Roster item added: {re.escape(bob_acc.jid)} \(Bobby\)", 10)
    tmux.type(f"/sub request {bob_acc.jid}")
    req = await bob.wait_for(is_stanza("presence", type="subscribe", frm=alice.jid), 10)
    assert xml_of(req).get("to") == bob_acc.jid, text_of(req)
    bob.xmpp.send_presence(pto=alice.jid, ptype="subscribed")
    await asyncio.to_thread(tmux.wait_screen, rf"Subscription received from {re.escape(bob_acc.jid)}", 10)
    # Once subscribed, Profanity shows bob's presence (sent by the server on approval).
    await asyncio.to_thread(tmux.wait_screen, r"\+\+ Bobby \(slix\) is online", 10)

    bob.xmpp.send_presence_subscription(pto=alice.jid)
    await asyncio.to_thread(tmux.wait_screen, rf"Received authorization request from {re.escape(bob_acc.jid)}", 10)
    tmux.type(f"/sub allow {bob_acc.jid}")
    ok = await bob.wait_for(is_stanza("presence", type="subscribed", frm=alice.jid), 10)
    assert text_of(ok)
    # Approval makes the server send alice's presence to bob, from Profanity's full JID.
    await bob.wait_for(is_stanza("presence", type=None, frm=profanity_jid), 10)

    bob.xmpp.send_presence(pshow="away", pstatus="compat status")
    await asyncio.to_thread(tmux.wait_screen, r'\+\+ Bobby \(slix\) is away, "compat status"', 10)
    tmux.type("/roster")
    await asyncio.to_thread(tmux.wait_screen, rf"{re.escape(bob_acc.jid)} \(Bobby\) - both", 10,
                            "bob with subscription both in /roster")

    # --- the stored messages, in order, shown with their delay timestamps ---
    tmux.type(f"/msg {bob_acc.jid}")
    m1 = await asyncio.to_thread(tmux.wait_screen, rf"(\d\d:\d\d:\d\d) - {re.escape(bob.jid)}: stored one", 10)
    m2 = await asyncio.to_thread(tmux.wait_screen, rf"(\d\d:\d\d:\d\d) - {re.escape(bob.jid)}: stored two", 5)
    screen = tmux.screen()
    assert screen.index("stored one") < screen.index("stored two"), screen
    ok_times = {(sent_at + timedelta(seconds=d)).strftime("%H:%M:%S") for d in (-2, -1, 0, 1)}
    for m in (m1, m2):
        assert m.group(1) in ok_times, f"shown at {m.group(1)}, sent at {sent_at:%H:%M:%S}: delay stamp not used?\n{screen}"

    await quit_profanity(tmux)
    # Quitting makes the server broadcast unavailable to the now-subscribed bob.
    await bob.wait_for(is_stanza("presence", type="unavailable", frm=profanity_jid), 10)


@xmpp_test(timeout=40)
async def test_profanity_rejects_an_untrusted_certificate(net, profanity_env, tmp_path):
    """Control for the tests above: with a trust store that lacks the server's certificate,
    Profanity must stop at certificate verification (so the passing logins really verified)."""
    tmux, env, home = profanity_env
    bogus = tmp_path / "unrelated.pem"
    bogus.write_text(UNRELATED_CA)
    env = dict(env, SSL_CERT_FILE=str(bogus))
    alice = net.account("alice")
    tmux.start([shutil.which("profanity"), "-l", "DEBUG"], env)
    await asyncio.to_thread(tmux.wait_screen, r"Type '/help' to show complete help", 15, "the welcome screen")
    tmux.type(f"/connect {alice.jid} server {net.server.host} port {net.server.port} tls force")
    await asyncio.to_thread(tmux.wait_screen, r"Enter password:", 10)
    tmux.type(alice.password)
    await asyncio.to_thread(tmux.wait_screen, r"TLS certificate verification failed", 15)
    tmux.type("/tls deny")
    await asyncio.sleep(1.0)
    screen = tmux.screen()
    assert "logged in successfully" not in screen, screen
    assert '<auth ' not in profanity_log(home), "credentials were sent over an unverified connection"
    await quit_profanity(tmux)

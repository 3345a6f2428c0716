"""OMEMO between two Profanity clients (Debian's 0.13.1, built with OMEMO on libsignal), each
in its own tmux, on two fresh accounts: keys generated with `/omemo gen`, device lists and
bundles published to PEP and fetched from it, fingerprints compared and trusted, an encrypted
message each way decrypted on the other side. What crossed the server is checked to be
ciphertext: a slixmpp observer on the sender's account (carbons) sees the stanzas as routed,
and the server's database (archive, offline store) holds no plaintext."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import sqlite3
from pathlib import Path

import pytest

from driver import profanity_log, profanity_login, quit_profanity
from harness import DEFAULT_PLUGINS, NS_CLIENT, text_of, xml_of, xmpp_test

AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICELIST = f"{AXOLOTL}.devicelist"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
OBSERVER_PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0060", "xep_0297", "xep_0280")


def data_dir() -> Path:
    work = os.environ.get("COMPAT_WORK")
    if not work:
        pytest.fail("COMPAT_WORK not set: run through compat/run.sh", pytrace=False)
    return Path(work) / "data"


async def published_devices(observer, jid: str) -> list[int] | None:
    """The device ids in `jid`'s OMEMO device list as the server gives it to anyone (the
    node is open), or None if there is none."""
    from slixmpp.exceptions import IqError
    try:
        res = await observer.xmpp.plugin["xep_0060"].get_items(jid, DEVICELIST, timeout=5)
    except IqError:
        return None
    return [int(d.get("id")) for d in xml_of(res).iter(f"{{{AXOLOTL}}}device")]


async def wait_published(observer, jid: str, device: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        devices = await published_devices(observer, jid)
        if devices is not None and device in devices:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"{jid}'s OMEMO device {device} is not in a device list on the server "
                f"(the server has {devices!r}); see compat/profanity.md, 'OMEMO': Profanity 0.13.1 publishes "
                f"its device list only when fetching its own ends in a list or in an error with code='404'")
        await asyncio.sleep(0.3)


async def identity_fingerprint(observer, jid: str, device: int) -> str:
    """The fingerprint of a device as Profanity shows it, computed from the identity key in
    the bundle the server holds: the key's bytes after the type byte 0x05, in hex, in
    groups of eight."""
    res = await observer.xmpp.plugin["xep_0060"].get_items(jid, f"{AXOLOTL}.bundles:{device}", timeout=5)
    key = xml_of(res).find(f".//{{{AXOLOTL}}}identityKey")
    assert key is not None, text_of(res)
    raw = base64.b64decode(key.text)
    assert raw[0] == 5 and len(raw) == 33, f"not a Curve25519 identity key: {raw.hex()}"
    hexed = raw[1:].hex()
    return "-".join(hexed[i:i + 8] for i in range(0, len(hexed), 8))


def encrypted_copy(kind: str, to: str):
    """Predicate: a carbon (`sent`/`received`) of an OMEMO message to `to`'s bare JID."""
    def pred(s) -> bool:
        inner = xml_of(s).find(f"{{{CARBONS}}}{kind}/{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
        return inner is not None and (inner.get("to") or "").split("/")[0] == to \
            and inner.find(f"{{{AXOLOTL}}}encrypted") is not None
    pred.__doc__ = f"a <{kind}/> carbon of an OMEMO message to {to}"
    return pred


def check_ciphertext(copy, secret: str, sender_device: int, recipient_device: int) -> None:
    text = text_of(copy)
    assert secret not in text, f"the plaintext crossed the server: {text}"
    inner = xml_of(copy).find(f".//{{{FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
    enc = inner.find(f"{{{AXOLOTL}}}encrypted")
    header = enc.find(f"{{{AXOLOTL}}}header")
    assert header.get("sid") == str(sender_device), text
    rids = [k.get("rid") for k in header.findall(f"{{{AXOLOTL}}}key")]
    assert str(recipient_device) in rids, text
    assert header.findtext(f"{{{AXOLOTL}}}iv") and enc.findtext(f"{{{AXOLOTL}}}payload"), text


def stored_stanzas(owners: list[str]) -> list[str] | None:
    """Every archived stanza of these accounts, read from the server's SQLite database
    (read-only, while it runs); None if the server keeps no archive."""
    db = data_dir() / "starling.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "archive_messages" not in tables:
            return None
        marks = ",".join("?" * len(owners))
        return [r[0] for r in con.execute(f"SELECT stanza FROM archive_messages WHERE owner IN ({marks})", owners)]
    finally:
        con.close()


def raw_data_contains(needle: str) -> list[str]:
    """Files under the server's data directory (database, its WAL, anything) that contain
    `needle` as bytes."""
    hits = []
    for path in data_dir().rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


async def generate_keys(tmux) -> int:
    tmux.type("/win 1")  # the console, where the answers are shown
    tmux.type("/omemo gen")
    m = await asyncio.to_thread(tmux.wait_screen, r"Your Device ID is (\d+)", 30, "OMEMO keys generated")
    return int(m.group(1))


async def own_fingerprint(tmux, jid: str) -> str:
    tmux.type("/win 1")
    tmux.type("/omemo fingerprint")
    m = await asyncio.to_thread(tmux.wait_screen, rf"{re.escape(jid)}'s OMEMO fingerprint: ([0-9a-f-]+)", 10)
    return m.group(1)


async def trust_contact(tmux, contact: str, expected: str) -> None:
    """In the open chat window: start OMEMO, read the contact's fingerprint as Profanity
    fetched it, check it, trust it."""
    tmux.type("/omemo start")
    # Profanity fetches the device list, then the bundle: ask until it knows the key.
    pattern = rf"{re.escape(contact)}'s OMEMO fingerprint: ([0-9a-f-]+)"
    for attempt in range(15):
        tmux.type(f"/omemo fingerprint {contact}")
        try:
            m = await asyncio.to_thread(tmux.wait_screen, pattern, 1.0 if attempt < 14 else 3.0,
                                        f"{contact}'s fingerprint")
            break
        except AssertionError:
            if attempt == 14:
                raise
    assert m.group(1) == expected, f"Profanity shows {m.group(1)} for {contact}, the server's bundle says {expected}"
    tmux.type(f"/omemo trust {contact} {expected}")
    await asyncio.to_thread(tmux.wait_screen, rf"{re.escape(expected)} \(trusted\)", 10, "the fingerprint trusted")


@pytest.mark.timeout(110)
@xmpp_test(timeout=100)
async def test_profanity_omemo_between_two_profanity_clients(net, profanity_pair):
    (tmux_a, env_a, home_a), (tmux_b, env_b, home_b) = profanity_pair
    srv = net.server
    alice, bob = net.account("alice"), net.account("bob")
    # The observer: alice's account too, carbons on, priority -1 (it takes no message for the
    # bare JID), so it sees a copy of each message alice's Profanity sends or gets.
    observer = await net.online(alice, "observer", presence=False, plugins=OBSERVER_PLUGINS)
    await observer.xmpp.plugin["xep_0280"].enable(timeout=5)
    observer.xmpp.send_presence(ppriority=-1)

    alice_full = await profanity_login(tmux_a, env_a, srv, alice)
    bob_full = await profanity_login(tmux_b, env_b, srv, bob)

    # A control message in clear, so that the checks of the database below can fail.
    control = f"plain control {secrets.token_hex(4)}"
    tmux_a.type(f"/msg {bob.jid} {control}")
    await asyncio.to_thread(tmux_b.wait_screen, r"<< chat message: " + re.escape(alice_full), 10, "the control message")

    # Keys, device lists and bundles (XEP-0384 0.3 as Profanity does it).
    alice_device = await generate_keys(tmux_a)
    bob_device = await generate_keys(tmux_b)
    await wait_published(observer, alice.jid, alice_device)
    await wait_published(observer, bob.jid, bob_device)
    alice_fp = await identity_fingerprint(observer, alice.jid, alice_device)
    bob_fp = await identity_fingerprint(observer, bob.jid, bob_device)
    assert await own_fingerprint(tmux_a, alice.jid) == alice_fp
    assert await own_fingerprint(tmux_b, bob.jid) == bob_fp

    # alice: OMEMO on in the chat with bob, bob's key (fetched from bob's PEP) trusted; send.
    secret = f"omemo secret {secrets.token_hex(6)} ✓"
    tmux_a.type(f"/msg {bob.jid}")
    await trust_contact(tmux_a, bob.jid, bob_fp)
    tmux_a.type(secret)
    copy = await observer.wait_for(encrypted_copy("sent", bob.jid), 15)
    check_ciphertext(copy, secret, alice_device, bob_device)
    # bob's Profanity decrypts it (shown in the chat window it opens for alice).
    await asyncio.to_thread(tmux_b.wait_screen, r"<< chat message: " + re.escape(alice_full), 10)
    tmux_b.type("/win 2")
    await asyncio.to_thread(tmux_b.wait_screen, rf"{re.escape(alice_full)}: {re.escape(secret)}", 10,
                            "the decrypted message in bob's window")
    recv = [line for line in profanity_log(home_b).splitlines() if "RECV: <message" in line and AXOLOTL in line]
    assert recv and all(secret not in line for line in recv), "bob's client did not receive ciphertext"

    # And back: bob trusts alice's key and answers, encrypted; alice decrypts.
    reply = f"omemo reply {secrets.token_hex(6)}"
    await trust_contact(tmux_b, alice.jid, alice_fp)
    tmux_b.type(reply)
    back = await observer.wait_for(encrypted_copy("received", alice.jid), 15)
    check_ciphertext(back, reply, bob_device, alice_device)
    await asyncio.to_thread(tmux_a.wait_screen, rf"{re.escape(bob_full)}: {re.escape(reply)}", 10,
                            "the decrypted reply in alice's window")

    # The server keeps the messages (archive) only as ciphertext; nothing under its data
    # directory holds the plaintext. The control message shows that the checks see text.
    rows = stored_stanzas([alice.jid, bob.jid])
    if rows is not None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        # Two messages, each in two archives (the writer commits in groups: poll briefly).
        while len([r for r in rows if AXOLOTL in r and "<payload" in r]) < 4 and loop.time() < deadline:
            await asyncio.sleep(0.2)
            rows = stored_stanzas([alice.jid, bob.jid])
        assert any(control in r for r in rows), "the control message is not in the archive"
        encrypted_rows = [r for r in rows if AXOLOTL in r and "<payload" in r]
        assert len(encrypted_rows) == 4, f"the OMEMO messages are not archived as sent: {rows}"
        assert not [r for r in rows if secret in r or reply in r], "plaintext in the archive"
        assert raw_data_contains(control), "the control message is in no file of the data directory"
    assert raw_data_contains(secret) == [] and raw_data_contains(reply) == [], "plaintext in the server's files"

    await quit_profanity(tmux_a)
    await quit_profanity(tmux_b)

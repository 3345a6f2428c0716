"""Checks shared by the hostile tests."""

from __future__ import annotations

import sqlite3
import time

from instance import Instance
from rawxmpp import NS_CLIENT, NS_XMPP_ERRORS, Conn, StreamEnded, is_kind, show

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")


def hostile_input(inst: Instance, data: bytes | str, *, conn: Conn | None = None, timeout: float = 10.0) -> StreamEnded:
    """Send `data` on a fresh plain connection (or `conn`) and return how the server ended
    the stream. Fails if it did not within `timeout`."""
    c = conn or inst.conn()
    try:
        c.try_send(data, timeout=5)
        return c.expect_end(timeout)
    finally:
        c.abort()


def assert_ended(end: StreamEnded, condition: str, what: str, *, too_big: bool = False) -> None:
    assert end.condition == condition, f"{what}: expected <{condition}/>, the stream ended with {end}"
    if too_big:
        assert f"{{{NS_XMPP_ERRORS}}}stanza-too-big" in end.app, f"{what}: no <stanza-too-big/> in {end}"


def assert_serves(inst: Instance, account, what: str) -> None:
    """A fresh client can log in and get a ping answered within 1 s: the server survived."""
    c = inst.login(account, "check", presence=False)
    try:
        rtt = c.ping_rtt()
        assert rtt < 1.0, f"after {what}: a ping took {rtt:.2f}s"
    finally:
        c.close()


def assert_nothing_delivered(inst: Instance, sender_account, recipient: Conn, what: str) -> None:
    """After hostile senders: the first message the recipient gets is a control message from a
    well-behaved sender, so nothing of theirs arrived before it."""
    c = inst.login(sender_account, "control", presence=False)
    try:
        c.message(recipient.jid, "control", id="control")
        first = recipient.wait_for(is_kind("message"), what="the control message")
        assert first.get("id") == "control", f"{what}: the recipient got {show(first)} before the control message"
    finally:
        c.close()


def settle_rss(inst: Instance, seconds: float = 1.0) -> int:
    """RSS after letting the server finish what it was doing (closing connections)."""
    time.sleep(seconds)
    return inst.rss_kib()


def offline_rows(inst: Instance, owner: str) -> list[str]:
    """The stored offline stanzas of `owner`, read from the SQLite file read-only."""
    db = sqlite3.connect(f"file:{inst.db_path}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in db.execute("SELECT stanza FROM offline_messages WHERE owner = ? ORDER BY id", (owner,))]
    finally:
        db.close()


def wait_until(pred, timeout: float, what: str, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(step)


def presence_from(bare: str):
    def pred(el) -> bool:
        return el.tag == f"{{{NS_CLIENT}}}presence" and (el.get("from") or "").split("/")[0] == bare
    pred.__doc__ = f"presence from {bare}"
    return pred


def available_from(bare: str):
    def pred(el) -> bool:
        return presence_from(bare)(el) and el.get("type") is None
    pred.__doc__ = f"available presence from {bare}"
    return pred


def subscribe_both(a, a_bare: str, b, b_bare: str) -> None:
    """Mutual subscription between two logged-in connections, checked on both rosters."""
    for x, x_bare, y, y_bare in ((a, a_bare, b, b_bare), (b, b_bare, a, a_bare)):
        x.presence(to=y_bare, type_="subscribe")
        y.wait_for(lambda e: is_kind("presence", type_="subscribe")(e) and e.get("from") == x_bare,
                   what=f"subscribe from {x_bare}")
        y.presence(to=x_bare, type_="subscribed")
    for x, y_bare in ((a, b_bare), (b, a_bare)):
        wait_until(lambda: x.roster().get(y_bare, {}).get("subscription") == "both", 5,
                   f"{y_bare} in the roster as 'both'")
    # Each side sees the other's presence once subscribed.
    a.wait_for(available_from(b_bare))
    b.wait_for(available_from(a_bare))

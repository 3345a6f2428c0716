"""Bad XML: restricted XML, invalid UTF-8, nested streams, oversized and deep stanzas, attribute
floods, namespace amplification, a self-closed stream header (SECURITY.md T1-T4, T6, T7,
T9, T10, T10a; issue 10 items 1 and 11)."""

from __future__ import annotations

import time

import pytest

from hostile_common import (HEADER, assert_ended, assert_nothing_delivered, assert_serves, hostile_input,
                            offline_rows, settle_rss)
from rawxmpp import NS_STREAMS, is_kind, stream_header

MiB = 1024


def billion_laughs_dtd(levels: int = 10) -> str:
    dtd = "<!DOCTYPE lolz [<!ENTITY lol0 'lol'>"
    for i in range(1, levels):
        dtd += f"<!ENTITY lol{i} '{('&lol%d;' % (i - 1)) * 10}'>"
    return dtd + "]>"


RESTRICTED = [
    # T1: billion laughs, before the header and inside the stream.
    ("billion laughs before the header", "<?xml version='1.0'?>" + billion_laughs_dtd() +
     f"<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' to='localhost' version='1.0'>&lol9;"),
    ("billion laughs in the stream", HEADER + billion_laughs_dtd() + "<message>&lol9;</message>"),
    ("an undefined entity", HEADER + "<message>&lol9;</message>"),
    # T2: external entity (XXE).
    ("an external entity", "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
     f"<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' to='localhost' version='1.0'>&xxe;"),
    ("an external entity in a stanza", HEADER + "<!DOCTYPE s [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]><iq type='get' id='1'>&xxe;</iq>"),
    # T3: comments, processing instructions, a second declaration, standalone='no'.
    ("a comment", HEADER + "<!-- hello -->"),
    ("a comment in a stanza", HEADER + "<iq type='get' id='1'><!-- hello --></iq>"),
    ("a processing instruction", HEADER + "<?php echo 1; ?>"),
    ("a processing instruction in a stanza", HEADER + "<iq type='get' id='1'><?foo bar?></iq>"),
    ("a second XML declaration", HEADER + "<?xml version='1.0'?>"),
    ("standalone='no'", "<?xml version='1.0' standalone='no'?><stream:stream>"),
]


def test_restricted_xml_is_refused_at_once_and_small(mem, figure):
    """T1-T3: DTDs, entities, comments, PIs end the stream with <restricted-xml/> in < 100 ms
    (median), nothing expanded, nothing read from disk; 10 rounds leave RSS flat."""
    account = mem.account("rx")
    # A warm-up round: the first connections allocate what every later one reuses.
    for _, data in RESTRICTED:
        hostile_input(mem, data)
    before = settle_rss(mem, 0.5)
    times = []
    for _round in range(10):
        for what, data in RESTRICTED:
            c = mem.conn()
            start = time.monotonic()
            end = hostile_input(mem, data, conn=c)
            times.append(time.monotonic() - start)
            assert_ended(end, "restricted-xml", what)
            assert "root:" not in (end.text or ""), f"{what}: file content leaked: {end.text}"
    grown = settle_rss(mem) - before
    times.sort()
    median, worst = times[len(times) // 2], times[-1]
    figure("restricted XML: median time to <restricted-xml/> (s)", median, "< 0.1")
    figure("restricted XML: slowest (s)", worst, "< 1")
    figure(f"restricted XML: RSS growth after {len(times)} documents (KiB)", grown, "< 2048")
    assert median < 0.1, f"median {median:.3f}s"
    assert worst < 1.0, f"slowest {worst:.3f}s"
    assert grown < 2 * MiB, f"RSS grew by {grown} KiB"
    assert_serves(mem, account, "restricted XML")


@pytest.fixture
def pair(main):
    """alice (sender) and bob (an available recipient that must receive nothing)."""
    alice, bob_account = main.account("alice"), main.account("bob")
    bob = main.login(bob_account, "r")
    yield main, alice, bob
    bob.close()


INVALID_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
                b"\xf0\x9f\x98", b"\xc3"]


def test_invalid_utf8_in_a_body(pair, figure):
    """T4: invalid UTF-8 inside a body (overlong, surrogate, truncated, above U+10FFFF) ends the
    sender's stream with <not-well-formed/>; the recipient gets nothing."""
    inst, alice, bob = pair
    for i, seq in enumerate(INVALID_UTF8):
        c = inst.login(alice, f"u{i}", presence=False)
        data = f"<message to='{bob.jid}' type='chat' id='bad{i}'><body>caf".encode() + seq + b"</body></message>"
        assert_ended(hostile_input(inst, data, conn=c), "not-well-formed", repr(seq))
    assert_nothing_delivered(inst, alice, bob, "invalid UTF-8")
    figure("invalid UTF-8 sequences refused with <not-well-formed/>", len(INVALID_UTF8))


def test_nested_stream_header_in_a_message(pair):
    """T6 (CVE-2022-20917 class): a <stream:stream> inside a message ends the stream; nothing
    is forwarded."""
    inst, alice, bob = pair
    cases = [
        f"<message to='{bob.jid}' type='chat'><body>hi</body><stream:stream to='localhost' version='1.0'>",
        f"<message to='{bob.jid}' type='chat'><body>hi</body><stream:stream/></message>",
        f"<message to='{bob.jid}' type='chat'><x xmlns='urn:x'><stream xmlns='{NS_STREAMS}'/></x></message>",
    ]
    for i, data in enumerate(cases):
        c = inst.login(alice, f"n{i}", presence=False)
        end = hostile_input(inst, data, conn=c)
        assert end.condition in ("not-well-formed", "invalid-xml"), f"{data}: {end}"
    assert_nothing_delivered(inst, alice, bob, "nested stream headers")


def test_oversized_stanza(mem, figure):
    """T7: a 300 KiB stanza after login: <policy-violation/> + <stanza-too-big/>, not delivered,
    and the server's memory does not follow (5 in a row)."""
    alice, bob_account = mem.account("alice"), mem.account("bob")
    bob = mem.login(bob_account, "r")
    try:
        body = "x" * (300 * 1024)
        c = mem.login(alice, "warm", presence=False)
        assert_ended(hostile_input(mem, f"<message to='{bob.jid}' type='chat'><body>{body}</body></message>", conn=c),
                     "policy-violation", "300 KiB", too_big=True)
        before = settle_rss(mem, 0.5)
        for i in range(5):
            c = mem.login(alice, f"big{i}", presence=False)
            start = time.monotonic()
            end = hostile_input(mem, f"<message to='{bob.jid}' type='chat'><body>{body}</body></message>", conn=c)
            assert_ended(end, "policy-violation", "300 KiB", too_big=True)
            assert time.monotonic() - start < 2.0
        grown = settle_rss(mem) - before
        figure("300 KiB stanzas x5: RSS growth (KiB)", grown, "< 4096")
        assert grown < 4 * MiB, f"RSS grew by {grown} KiB"
        assert_nothing_delivered(mem, alice, bob, "oversized stanzas")
    finally:
        bob.close()


def test_deep_nesting(pair):
    """T9: 10,000 nested elements: refused at the depth limit (policy-violation), no crash."""
    inst, alice, bob = pair
    for i, data in enumerate([
        f"<message to='{bob.jid}' type='chat'>" + "<a>" * 10_000,
        f"<message to='{bob.jid}' type='chat'>" + "<a xmlns='urn:x'>" * 10_000 + "</a>" * 10_000 + "</message>",
    ]):
        c = inst.login(alice, f"deep{i}", presence=False)
        assert_ended(hostile_input(inst, data, conn=c), "policy-violation", "10k-deep nesting")
    # Pre-auth too (the limit holds before login).
    assert_ended(hostile_input(inst, HEADER + "<iq type='get' id='d'>" + "<a>" * 10_000), "policy-violation",
                 "10k-deep nesting before login")
    assert_nothing_delivered(inst, alice, bob, "deep nesting")
    assert_serves(inst, alice, "deep nesting")


def test_attribute_floods(mem, figure):
    """T10: 100,000 attributes, a 1 MiB attribute value, 10,000 namespace declarations: ended
    with <policy-violation/> at the size or count cap; RSS bounded."""
    alice, bob_account = mem.account("alice"), mem.account("bob")
    bob = mem.login(bob_account, "r")
    try:
        to = f"to='{bob.jid}' type='chat'"
        cases = [
            ("100k attributes", f"<message {to} " + " ".join(f"a{i}=''" for i in range(100_000)) + "/>", True),
            ("a 1 MiB attribute value", f"<message {to} id='" + "v" * (1 << 20) + "'/>", True),
            ("10k namespace declarations", f"<message {to} " + " ".join(f"xmlns:p{i}='urn:{i}'" for i in range(10_000)) + "/>", False),
        ]
        before = settle_rss(mem, 0.3)
        for i, (what, data, too_big) in enumerate(cases):
            c = mem.login(alice, f"attr{i}", presence=False)
            start = time.monotonic()
            assert_ended(hostile_input(mem, data, conn=c), "policy-violation", what, too_big=too_big)
            figure(f"{what}: time to <policy-violation/> (s)", time.monotonic() - start, "< 2")
        grown = settle_rss(mem) - before
        figure("attribute floods: RSS growth (KiB)", grown, "< 8192")
        assert grown < 8 * MiB, f"RSS grew by {grown} KiB"
        # Before login the caps are smaller still (16 KiB).
        assert_ended(hostile_input(mem, HEADER + "<iq type='get' id='x' " + " ".join(f"a{i}=''" for i in range(100_000)) + "/>"),
                     "policy-violation", "100k attributes before login", too_big=True)
        assert_nothing_delivered(mem, alice, bob, "attribute floods")
    finally:
        bob.close()


def amplification_header(uri: str) -> str:
    return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' "
            f"xmlns:x='{uri}' to='localhost' version='1.0'><message>" + "<x:b/>" * 2_600)


def test_namespace_amplification_before_login(mem, figure):
    """T10a, issue 10 item 1: a prefix bound on the stream header to a 15,000-character URI and
    used 2,600 times in an unclosed <message>: refused at once with <invalid-namespace/>; with a
    60-character URI: <policy-violation/> + <stanza-too-big/>. 100 such connections: RSS grows
    < 20 MiB, and is back near the baseline after they are closed."""
    long_uri = "urn:" + "u" * 15_000
    short_uri = "urn:" + "s" * 60
    account = mem.account("amp")
    # Warm-up (first-use allocations), then the baseline.
    for uri, cond in ((long_uri, "invalid-namespace"), (short_uri, "policy-violation")):
        hostile_input(mem, amplification_header(uri))
    baseline = settle_rss(mem, 0.5)
    held = []
    slowest = 0.0
    try:
        for i in range(100):
            long = i % 2 == 0
            c = mem.conn()
            held.append(c)
            start = time.monotonic()
            c.try_send(amplification_header(long_uri if long else short_uri), timeout=5)
            end = c.expect_end(10)
            slowest = max(slowest, time.monotonic() - start)
            if long:
                assert_ended(end, "invalid-namespace", "a 15,000-character namespace on the stream header")
            else:
                assert_ended(end, "policy-violation", "2,600 uses of a 60-character namespace", too_big=True)
        peak = mem.rss_kib() - baseline
    finally:
        for c in held:
            c.abort()
    after = settle_rss(mem) - baseline
    figure("namespace amplification pre-auth: slowest answer (s)", slowest, "< 1")
    figure("namespace amplification pre-auth: RSS growth with 100 connections (KiB)", peak, "< 20480")
    figure("namespace amplification pre-auth: RSS growth after closing them (KiB)", after, "< 4096")
    assert slowest < 1.0, f"an answer took {slowest:.2f}s"
    assert peak < 20 * MiB, f"RSS grew by {peak} KiB with 100 connections"
    assert after < 4 * MiB, f"RSS stayed {after} KiB above the baseline after the connections closed"
    assert_serves(mem, account, "namespace amplification")


def test_namespace_amplification_after_login(main, figure):
    """T10a, issue 10 item 1, logged in: a stanza that declares a 15,000-character namespace once
    and uses it 1,000 times. The online recipient receives < 2x the bytes sent; the row stored
    for an offline recipient is < 2x the bytes sent."""
    alice, bob_account, carol = main.account("alice"), main.account("bob"), main.account("carol")
    uri = "urn:" + "u" * 15_000
    bob = main.login(bob_account, "r")
    sender = main.login(alice, "amp", presence=False)
    try:
        payload = f"<x xmlns='urn:x' xmlns:y='{uri}'>" + "<y:b/>" * 1_000 + "</x>"
        stanza = f"<message to='{bob.jid}' type='chat' id='amp'><body>hi</body>{payload}</message>"
        sent = len(stanza.encode())
        bob.collect(0.3)  # presence and the like, before counting
        before = bob.bytes_in
        cpu0 = main.cpu()
        sender.send(stanza)
        got = bob.wait_for(is_kind("message", id="amp"), timeout=30)
        received = bob.bytes_in - before
        # Not asserted (the build may be a debug one): how much work the server does for it.
        figure("namespace amplification online: server CPU for the stanza (s)", main.cpu() - cpu0)
        x = got.find("{urn:x}x")
        assert x is not None and len(x.findall(f"{{{uri}}}b")) == 1_000, "the payload did not arrive intact"
        figure("namespace amplification online: bytes sent", sent)
        figure("namespace amplification online: bytes the recipient received", received, f"< {2 * sent}")
        assert received < 2 * sent, f"bob received {received} bytes for {sent} sent"

        offline = stanza.replace(f"to='{bob.jid}'", f"to='{carol.jid}'")
        sender.send(offline)
        sender.ping_rtt()
        rows = []
        deadline = time.monotonic() + 5
        while not rows and time.monotonic() < deadline:
            rows = offline_rows(main, carol.jid)
            time.sleep(0.05)
        assert len(rows) == 1, f"expected 1 stored message for {carol.jid}, found {len(rows)}"
        stored = len(rows[0].encode())
        figure("namespace amplification offline: stored row (bytes)", stored, f"< {2 * sent}")
        assert stored < 2 * sent, f"stored {stored} bytes for {sent} sent"
    finally:
        sender.close()
        bob.close()


def test_self_closed_stream_header(main, figure):
    """Issue 10 item 11: `<stream:stream .../>` (an empty stream) is answered with the closing
    of the stream at once (< 1 s), not after the authentication timeout: on a new plain
    connection, on direct TLS, and as the restarted stream after STARTTLS."""
    for what in ("plain", "direct TLS", "after STARTTLS"):
        c = main.conn(direct_tls=what == "direct TLS")
        try:
            if what == "after STARTTLS":
                c.open()
                c.starttls()
            start = time.monotonic()
            c.send(stream_header("localhost", close=True))
            end = c.expect_end(10)
            took = time.monotonic() - start
        finally:
            c.abort()
        figure(f"self-closed header ({what}): time to the end of the stream (s)", took, "< 1")
        assert took < 1.0, f"{what}: the stream ended after {took:.2f}s ({end})"


def test_malformed_and_misdirected_streams(main, figure):
    """§3 C3, C5, C7, C12, C22: another encoding in the XML declaration, malformed XML, a wrong
    stream or content namespace, a stanza before authentication, a compression request: each
    ends the stream at once with its error, after the server's own header."""
    cases = [
        ("C3: encoding ISO-8859-1", "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>",
         {"unsupported-encoding", "restricted-xml"}),
        ("C5: malformed XML", HEADER + "<'a'/>", {"not-well-formed"}),
        ("C7: wrong stream namespace", "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' "
         "version='1.0'>", {"invalid-namespace"}),
        ("C7: wrong content namespace", "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/"
         "streams' to='localhost' version='1.0'>", {"invalid-namespace"}),
        ("C12: a message before authentication", HEADER + "<message to='someone@localhost'><body>x</body></message>",
         {"not-authorized"}),
        ("C22: compression (XEP-0138)", HEADER + "<compress xmlns='http://jabber.org/protocol/compress'>"
         "<method>zlib</method></compress>", {"unsupported-stanza-type", "unsupported-feature", "policy-violation"}),
    ]
    for what, data, conditions in cases:
        c = main.conn()
        start = time.monotonic()
        end = hostile_input(main, data, conn=c)
        took = time.monotonic() - start
        assert c.header is not None, f"{what}: no stream header from the server before the error"
        assert end.condition in conditions, f"{what}: expected one of {conditions}, got {end}"
        assert took < 1.0, f"{what}: answered after {took:.2f}s"
        figure(f"{what}: stream error", end.condition)
    c = main.conn()
    try:
        features = c.open()
        assert features.find("{http://jabber.org/features/compress}compression") is None, "compression is offered"
    finally:
        c.abort()

"""Connections that say nothing, or too little too slowly, before authenticating: closed at
c2s.auth_timeout, counted from the connection, whatever stage they stopped at (SECURITY.md
T8, §3 C25; issue 10 item 8). The `main` instance runs with auth_timeout = 3 s."""

from __future__ import annotations

import socket
import ssl
import time

from hostile_common import HEADER
from rawxmpp import StreamEnded, Timeout

AUTH_TIMEOUT = 3.0  # conftest.MAIN_CONFIG
MARGIN = 1.0


def closed_after(c, start: float, limit: float) -> tuple[float, StreamEnded | None]:
    """Seconds from `start` until the server ended the connection (reading, up to `limit`)."""
    try:
        end = c.expect_end(limit)
    except Timeout:
        return float("inf"), None
    except (ssl.SSLError, OSError):
        end = None
    return time.monotonic() - start, end


def test_silent_tcp_connection(main, figure):
    """T8/C25: a TCP connection that sends nothing is closed at auth_timeout."""
    start = time.monotonic()
    c = main.conn()
    try:
        took, end = closed_after(c, start, 3 * AUTH_TIMEOUT)
    finally:
        c.abort()
    figure("silent TCP connection: closed after (s)", took, f"<= {AUTH_TIMEOUT + MARGIN}")
    assert AUTH_TIMEOUT - 0.5 <= took <= AUTH_TIMEOUT + MARGIN, f"closed after {took:.2f}s"


def test_slowloris_before_auth(main, figure):
    """T8: a stanza that grows by one byte every 0.3 s and never ends: closed at auth_timeout
    with <connection-timeout/>, not kept alive by the trickle."""
    start = time.monotonic()
    c = main.conn()
    try:
        c.send(HEADER + "<iq type='get' id='")
        took = None
        while time.monotonic() - start < 3 * AUTH_TIMEOUT:
            if not c.try_send("a", timeout=0.5):
                break
            try:
                end = c.expect_end(0.3)
                took = time.monotonic() - start
                break
            except Timeout:
                continue
            except (OSError, ssl.SSLError):
                took = time.monotonic() - start
                end = None
                break
        if took is None:
            took, end = closed_after(c, start, 1.0)
    finally:
        c.abort()
    figure("slowloris (1 byte / 0.3 s): closed after (s)", took, f"<= {AUTH_TIMEOUT + MARGIN}")
    assert took <= AUTH_TIMEOUT + MARGIN, f"the trickling connection lived {took:.2f}s"
    assert end is None or end.condition == "connection-timeout", f"ended with {end}"


def test_direct_tls_idle_after_handshake(main, figure):
    """Issue 10 item 8: direct TLS (XEP-0368), handshake completed, then silence: closed within
    auth_timeout (+1 s) of the connection, not after twice that (handshake time + a fresh
    negotiation deadline)."""
    start = time.monotonic()
    c = main.conn(direct_tls=True)  # completes the handshake
    try:
        handshake = time.monotonic() - start
        took, end = closed_after(c, start, 3 * AUTH_TIMEOUT)
    finally:
        c.abort()
    figure("direct TLS, idle after the handshake: closed after (s)", took, f"<= {AUTH_TIMEOUT + MARGIN}")
    assert handshake < 1.0
    assert took <= AUTH_TIMEOUT + MARGIN, f"closed after {took:.2f}s"


def test_direct_tls_slow_handshake(main, figure):
    """The handshake itself dragged out to just under auth_timeout, then silence: still closed
    at auth_timeout from the connection, not auth_timeout after the handshake."""
    start = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", main.tls_port), timeout=5)
    try:
        time.sleep(AUTH_TIMEOUT - 1.0)
        ctx = ssl.create_default_context(cafile=main.ca)
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        tls.settimeout(3 * AUTH_TIMEOUT)
        try:
            data = tls.recv(4096)
            while data:
                data = tls.recv(4096)
        except (OSError, ssl.SSLError):
            pass
        took = time.monotonic() - start
    finally:
        raw.close()
    figure("direct TLS, slow handshake then idle: closed after (s)", took, f"<= {AUTH_TIMEOUT + MARGIN}")
    assert took <= AUTH_TIMEOUT + MARGIN, f"closed after {took:.2f}s"


def test_starttls_idle_after_handshake(main, figure):
    """Issue 10 item 8, STARTTLS: header, <starttls/>, TLS handshake, then silence: closed within
    auth_timeout (+1 s) of the connection."""
    start = time.monotonic()
    c = main.conn()
    try:
        c.open()
        c.starttls()
        took, end = closed_after(c, start, 3 * AUTH_TIMEOUT)
    finally:
        c.abort()
    figure("STARTTLS, idle after the handshake: closed after (s)", took, f"<= {AUTH_TIMEOUT + MARGIN}")
    assert took <= AUTH_TIMEOUT + MARGIN, f"closed after {took:.2f}s"


def test_authenticated_but_never_bound(main, figure):
    """A client that authenticates and never binds a resource is closed at auth_timeout too
    (it holds memory and a connection slot like any other)."""
    account = main.account("nb")
    start = time.monotonic()
    c = main.conn()
    try:
        c.secure()
        assert c.auth(account.local, account.password) == "success"
        c.open()
        took, end = closed_after(c, start, 3 * AUTH_TIMEOUT)
    finally:
        c.abort()
    figure("authenticated, never bound: closed after (s)", took, f"<= {AUTH_TIMEOUT + MARGIN}")
    assert took <= AUTH_TIMEOUT + MARGIN, f"closed after {took:.2f}s"


def test_timeout_on_a_restarted_stream_is_well_formed(main, figure):
    """RFC 6120 §4.9.1.2: when the client never opens the restarted stream (after STARTTLS, or
    after SASL success), the server's <connection-timeout/> must still come after a stream
    header of its own: otherwise the `stream:` prefix is unbound and the client cannot parse
    the error. Both connections wait for the same timeout, side by side."""
    account = main.account("rs")
    tls_only = main.conn()
    authed = main.conn()
    try:
        tls_only.open()
        tls_only.starttls()
        authed.secure()
        assert authed.auth(account.local, account.password) == "success"
        authed._reset_parser()  # the stream restarts; we do not open it
        ends = {what: c.expect_end(3 * AUTH_TIMEOUT) for what, c in (("after STARTTLS", tls_only), ("after SASL", authed))}
    finally:
        tls_only.abort()
        authed.abort()
    for what, end in ends.items():
        figure(f"timeout {what} without a new header: how the stream ended", f"{end.how} {end.condition}")
    bad = {what: end.text for what, end in ends.items() if end.how == "bad-xml"}
    assert not bad, f"the stream error is not well-formed XML (no stream header before it): {bad}"
    for what, end in ends.items():
        assert end.condition == "connection-timeout", f"{what}: {end}"

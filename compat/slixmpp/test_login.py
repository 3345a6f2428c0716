"""Stream negotiation as slixmpp does it: STARTTLS, direct TLS, SASL mechanisms, binding."""

import pytest

from harness import NS_SASL, NS_TLS, UNRELATED_CA, tls_version, xmpp_test


def mechanisms_of(features):
    mechs = features.find(f"{{{NS_SASL}}}mechanisms")
    return [] if mechs is None else [m.text for m in mechs.findall(f"{{{NS_SASL}}}mechanism")]


@xmpp_test()
async def test_scram_sha256_over_starttls(net):
    alice = net.account("alice")
    c = await net.online(alice, "laptop", mech="SCRAM-SHA-256", presence=False)

    # slixmpp negotiated STARTTLS (the only transport it was allowed) and SCRAM-SHA-256.
    assert "starttls" in c.xmpp.features
    assert tls_version(c) in ("TLSv1.2", "TLSv1.3")
    assert c.xmpp.plugin["feature_mechanisms"].mech.name == "SCRAM-SHA-256"
    assert c.jid == f"{alice.jid}/laptop"

    feats = c.features()
    assert len(feats) == 3, f"expected pre-TLS, pre-auth and post-auth features, got {len(feats)}"
    pre_tls, pre_auth, post_auth = feats
    # Before TLS: STARTTLS offered and required (require_encryption = true), no mechanism
    # offered in the clear (PLAIN must never be usable without TLS).
    starttls = pre_tls.find(f"{{{NS_TLS}}}starttls")
    assert starttls is not None and starttls.find(f"{{{NS_TLS}}}required") is not None
    assert "PLAIN" not in mechanisms_of(pre_tls)
    # After TLS: the SCRAM family is offered, and no STARTTLS again.
    offered = mechanisms_of(pre_auth)
    for m in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        assert m in offered, offered
    assert pre_auth.find(f"{{{NS_TLS}}}starttls") is None
    # After SASL: resource binding, no mechanisms.
    assert post_auth.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
    assert mechanisms_of(post_auth) == []


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "PLAIN"])
@xmpp_test()
async def test_other_mechanisms_over_starttls(net, mech):
    bob = net.account("bob")
    c = await net.online(bob, "r", mech=mech, presence=False)
    assert c.xmpp.plugin["feature_mechanisms"].mech.name == mech
    assert c.jid == f"{bob.jid}/r"


@xmpp_test()
async def test_direct_tls_xep0368(net):
    carol = net.account("carol")
    c = await net.online(carol, "tls", transport="direct_tls", presence=False)
    assert "starttls" not in c.xmpp.features, "direct TLS must not negotiate STARTTLS inside TLS"
    assert tls_version(c) in ("TLSv1.2", "TLSv1.3")
    assert c.xmpp.plugin["feature_mechanisms"].mech.name == "SCRAM-SHA-256"
    first = c.features()[0]
    assert first.find(f"{{{NS_TLS}}}starttls") is None
    assert "SCRAM-SHA-256" in mechanisms_of(first)
    # The session works: a ping to the server is answered.
    await c.xmpp.plugin["xep_0199"].ping(jid=net.server.domain, timeout=5)


@xmpp_test()
async def test_server_generates_resource_when_none_requested(net):
    dave = net.account("dave")
    c = await net.online(dave, None, presence=False)
    assert c.xmpp.boundjid.bare == dave.jid
    assert c.xmpp.boundjid.resource, f"no resource bound: {c.jid}"


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
@xmpp_test()
async def test_wrong_password_is_not_authorized(net, mech):
    erin = net.account("erin")
    c = net.client(erin, "r", mech=mech, password="definitely-not-" + erin.password)
    kind, failure = await c.try_connect()
    assert kind == "failed_auth", (kind, failure)
    assert failure["condition"] == "not-authorized", str(failure)
    assert not c.connected


@xmpp_test()
async def test_unknown_account_looks_like_wrong_password(net):
    real = net.account("frank")
    from harness import Account
    ghost = Account(f"ghost-{real.local}@{net.server.domain}", "whatever-password")
    c = net.client(ghost, "r", mech="SCRAM-SHA-256")
    kind, failure = await c.try_connect()
    assert kind == "failed_auth", (kind, failure)
    assert failure["condition"] == "not-authorized", str(failure)


@xmpp_test()
async def test_certificate_is_really_verified(net, tmp_path):
    gina = net.account("gina")
    bogus = tmp_path / "unrelated-ca.pem"
    bogus.write_text(UNRELATED_CA)
    c = net.client(gina, "r", ca=bogus)
    kind, detail = await c.try_connect(timeout=10)
    # slixmpp reports the failed handshake either as ssl_invalid_chain or as the reason of
    # the disconnection; either way it must be a certificate verification failure.
    assert kind in ("ssl_invalid_chain", "disconnected"), (kind, detail)
    assert "CERTIFICATE_VERIFY_FAILED" in str(detail), (kind, detail)
    assert not c.connected
    assert "mechanisms" not in c.xmpp.features, "SASL must not run over an unverified connection"

"""Storage quotas: offline messages by bytes, roster items, private XML, vCards (SECURITY.md T35,
T37b; issue 10 item 9). A refusal is a stanza error with a defined condition and a <text/>;
what was accepted is delivered, in order, without the server's memory following the store."""

from __future__ import annotations

import threading
import time

import pytest

from rawxmpp import NS_CLIENT, NS_ROSTER, Timeout, show, stanza_error

# The refusal conditions the server may use for a full store (XEP-0160 and RFC 6120 §8.3.3).
QUOTA_CONDITIONS = {"resource-constraint", "policy-violation", "service-unavailable", "not-acceptable"}
MiB = 1024

QUOTA = {
    # Bodies of 200 KB: allowed through the stanza limit, not throttled, so that the test is
    # about storage, not about the socket.
    "c2s": {"max_bytes_per_second": 0, "max_stanza_size": 524288, "auth_timeout": 10},
    # The defaults, written out: the tests rely on them.
    "offline": {"max_bytes_per_user": 10 * 1024 * 1024},
    "private": {"max_bytes_per_user": 1024 * 1024},
    "vcard": {"max_bytes": 262144},
    # Lower than the default (1000), so that the test adds few items.
    "roster": {"max_items": 200},
}
QUOTA_KEYS = ("offline.max_bytes_per_user", "private.max_bytes_per_user", "vcard.max_bytes", "roster.max_items")


@pytest.fixture(scope="module")
def quota(instances, main):
    return instances.new("quota", QUOTA)


def assert_refusal(reply, what: str) -> str:
    cond, text, _ = stanza_error(reply)
    assert reply.get("type") == "error" and cond in QUOTA_CONDITIONS, f"{what}: expected a quota error, got {show(reply)}"
    assert text, f"{what}: the error has no <text/> saying why: {show(reply)}"
    return cond


class RssSampler(threading.Thread):
    def __init__(self, inst):
        super().__init__(daemon=True)
        self.inst, self.peak, self.stop = inst, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.inst.rss_kib())
            except Exception:  # noqa: BLE001
                return
            time.sleep(0.01)


@pytest.mark.timeout(150)
def test_offline_byte_quota_and_bounded_flush(quota, figure):
    """T35/T37b: up to 1,000 messages of 200 KB to one offline account: past the byte quota the
    sender gets a stanza error (condition + text) for each further one. At the owner's next
    login every stored message arrives in order while the server's RSS grows < 64 MiB."""
    quota.require("offline.max_bytes_per_user")
    alice_acc, bob_acc = quota.account("alice"), quota.account("bob")
    alice = quota.login(alice_acc, "a", presence=False)
    body = "b" * (200 * 1000)
    accepted, refused = [], []
    conditions = set()
    try:
        for i in range(1000):
            mid = f"q{i}"
            alice.message(bob_acc.jid, f"{i} {body}", id=mid)
            if i % 5 == 4 or refused:
                # A ping lets errors for earlier messages arrive (most of them: see below).
                alice.ping_rtt(timeout=30)
                for el in alice.collect(0):
                    if el.tag == f"{{{NS_CLIENT}}}message" and el.get("type") == "error":
                        conditions.add(assert_refusal(el, "a message past the offline quota"))
                        refused.append(el.get("id"))
            if len(refused) >= 5:
                break
        sent = i + 1
        # A refusal comes once the group commit has run, which may be after the ping's
        # answer: wait for the last ones.
        alice.ping_rtt(timeout=30)
        for el in alice.collect(1.5):
            if el.tag == f"{{{NS_CLIENT}}}message" and el.get("type") == "error":
                conditions.add(assert_refusal(el, "a message past the offline quota"))
                refused.append(el.get("id"))
    finally:
        alice.close()
    accepted = [f"q{k}" for k in range(sent) if f"q{k}" not in refused]
    figure("offline quota: 200 KB messages sent / stored / refused", f"{sent} / {len(accepted)} / {len(refused)}")
    figure("offline quota: refusal conditions", sorted(conditions))
    assert refused, f"{sent} messages of 200 KB stored without a refusal"
    # Refusals only once full: everything before the first refusal was stored.
    first = min(int(r[1:]) for r in refused)
    assert accepted == [f"q{k}" for k in range(first)] + [a for a in accepted if int(a[1:]) > first], accepted

    before = quota.rss_kib()
    sampler = RssSampler(quota)
    sampler.start()
    bob = quota.login(bob_acc, "b")
    got = []
    try:
        t0 = time.monotonic()
        while len(got) < len(accepted) and time.monotonic() - t0 < 60:
            try:
                el = bob.next(5)
            except Timeout:
                break
            if el.tag == f"{{{NS_CLIENT}}}message":
                got.append(el.get("id"))
        took = time.monotonic() - t0
    finally:
        sampler.stop.set()
        sampler.join(2)
        bob.close()
    growth = sampler.peak - before
    figure("offline flush: messages / MB delivered / seconds",
           f"{len(got)} / {len(got) * 0.2:.1f} / {took:.2f}")
    figure("offline flush: server RSS growth during the flush (KiB)", growth, "< 65536")
    assert got == accepted, f"delivered {len(got)} of {len(accepted)}, or out of order"
    assert growth < 64 * MiB, f"the server's RSS grew by {growth} KiB during the flush"


def test_roster_item_limit(quota, figure):
    """T37b: a roster past roster.max_items (200 here) is refused with an error; the items
    before it are kept, and existing items can still be changed."""
    quota.require("roster.max_items")
    acc = quota.account("ro")
    c = quota.login(acc, "r", presence=False)
    try:
        ids = []
        for i in range(260):
            iq_id = f"ri{i}"
            c.send(f"<iq type='set' id='{iq_id}'><query xmlns='{NS_ROSTER}'>"
                   f"<item jid='contact{i}@example.org' name='Contact {i}'><group>g</group></item></query></iq>")
            ids.append(iq_id)
        results = {}
        deadline = time.monotonic() + 60
        while len(results) < len(ids) and time.monotonic() < deadline:
            el = c.next(10)
            if el.tag == f"{{{NS_CLIENT}}}iq" and el.get("id") in ids and el.get("type") in ("result", "error"):
                results[el.get("id")] = el
        ok = [i for i in ids if results.get(i) is not None and results[i].get("type") == "result"]
        errors = [results[i] for i in ids if results.get(i) is not None and results[i].get("type") == "error"]
        figure("roster: items accepted / refused (of 260, limit 200)", f"{len(ok)} / {len(errors)}")
        assert len(ok) == 200, f"{len(ok)} roster items accepted"
        conds = {assert_refusal(e, "a roster item past the limit") for e in errors}
        figure("roster: refusal conditions", sorted(conds))
        assert len(c.roster()) == 200
        reply = c.iq(f"<query xmlns='{NS_ROSTER}'><item jid='contact0@example.org' name='renamed'/></query>", type="set")
        assert reply.get("type") == "result", f"changing an existing item at the limit: {show(reply)}"
    finally:
        c.close()


def test_private_xml_quota(quota, figure):
    """T37b: private XML (XEP-0049) past its per-account byte quota is refused; what was stored
    stays readable."""
    quota.require("private.max_bytes_per_user")
    acc = quota.account("pr")
    c = quota.login(acc, "r", presence=False)
    blob = "p" * (200 * 1000)
    stored, refused = 0, None
    try:
        for i in range(40):  # 8 MB at most
            reply = c.iq(f"<query xmlns='jabber:iq:private'><data xmlns='urn:hostile:{i}'>{blob}</data></query>", type="set")
            if reply.get("type") == "error":
                refused = reply
                break
            stored += 1
        figure("private XML: 200 KB items stored before the refusal", stored)
        assert refused is not None, f"{stored} private XML items of 200 KB stored without a refusal"
        figure("private XML: refusal condition", assert_refusal(refused, "private XML past the quota"))
        reply = c.iq("<query xmlns='jabber:iq:private'><data xmlns='urn:hostile:0'/></query>")
        assert reply.get("type") == "result" and blob in (reply.find(".//{urn:hostile:0}data").text or "")
    finally:
        c.close()


def test_vcard_quota(quota, figure):
    """T37b: a vCard larger than vcard.max_bytes (256 KiB by default; the stanza limit is raised
    to 512 KiB here so that the vCard limit is what refuses) gets an error; a 200 KB one is
    stored."""
    quota.require("vcard.max_bytes")
    acc = quota.account("vc")
    c = quota.login(acc, "r", presence=False)
    try:
        ok = c.iq(f"<vCard xmlns='vcard-temp'><DESC>{'v' * 200_000}</DESC></vCard>", type="set")
        assert ok.get("type") == "result", f"a 200 KB vCard: {show(ok)}"
        big = c.iq(f"<vCard xmlns='vcard-temp'><DESC>{'v' * 400_000}</DESC></vCard>", type="set")
        figure("vCard of 400 KB: refusal condition", assert_refusal(big, "a 400 KB vCard"))
        got = c.iq("<vCard xmlns='vcard-temp'/>")
        desc = got.find(".//{vcard-temp}DESC")
        assert desc is not None and len(desc.text or "") == 200_000, "the stored vCard changed"
    finally:
        c.close()

"""Faults and the files on disk: kill -9 during an offline flood, graceful SIGTERM, file modes
(SECURITY.md T38 (lite), T43, T37d; issue 10 item 10)."""

from __future__ import annotations

import os
import stat
import threading
import time
import xml.etree.ElementTree as ET

from hostile_common import offline_rows
from rawxmpp import NS_CLIENT, StreamEnded, Timeout


def test_kill_9_during_an_offline_flood(instances, figure):
    """T38-lite: alice floods offline bob with messages, a ping after every 10; the server is
    killed with SIGKILL in the middle, then restarted on the same data. What was stored is a
    prefix of what was sent, in order, without holes or duplicates (a crash loses only the
    end of the flood, never a message in the middle), nothing was refused, and bob receives
    exactly the stored messages, in order, at his next login.

    Without stream management (XEP-0198, not implemented) a client has no acknowledgement:
    the figure "answered by a later ping but lost" shows how many messages a client that took
    a ping answer as one would lose (stores are group-committed while the session goes on)."""
    # The per-account offline cap out of the way: this is about durability, not quotas.
    inst = instances.new("crash", {"c2s": {"auth_timeout": 10}, "offline": {"max_per_user": 100000}})
    alice_acc, bob_acc = inst.account("alice"), inst.account("bob")
    alice = inst.login(alice_acc, "a", presence=False)
    acked: list[str] = []
    sent: list[str] = []
    errors: set[str] = set()
    killer = threading.Timer(1.0, inst.kill9)
    try:
        killer.start()
        batch = 0
        while batch < 1000:
            ids = [f"k{batch}-{i}" for i in range(10)]
            try:
                for mid in ids:
                    alice.message(bob_acc.jid, f"flood {mid}", id=mid)
                    sent.append(mid)
                ping_id = f"ping{batch}"
                alice.send(f"<iq type='get' id='{ping_id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
                while True:
                    el = alice.next(5)
                    if el.get("type") == "error" and el.tag == f"{{{NS_CLIENT}}}message":
                        errors.add(el.get("id"))
                    if el.get("id") == ping_id:
                        acked.extend(ids)
                        break
            except (StreamEnded, Timeout, OSError):
                break
            batch += 1
    finally:
        killer.cancel()
        killer.join()
        alice.abort()
    assert not inst.alive(), "the kill did not happen during the flood"
    inst.start()
    stored_ids = [ET.fromstring(r).get("id") for r in offline_rows(inst, bob_acc.jid)]
    lost_after_ping = [m for m in acked if m not in stored_ids]
    figure("kill -9: messages sent / answered by a later ping / refused", f"{len(sent)} / {len(acked)} / {len(errors)}")
    figure("kill -9: stored after the restart", len(stored_ids))
    figure("kill -9: answered by a later ping but lost (no XEP-0198 acks)", len(lost_after_ping))
    assert len(acked) >= 100, "the kill came before the flood got going"
    assert not errors, f"messages refused: {sorted(errors)[:5]}"
    assert stored_ids == sent[:len(stored_ids)], "what survived is not a prefix of what was sent (a hole, a duplicate or reordering)"
    assert len(stored_ids) >= len(acked) - 1000, "more was lost than a group commit can hold"
    bob = inst.login(bob_acc, "b")
    try:
        got = []
        try:
            while True:
                el = bob.next(1.5)
                if el.tag == f"{{{NS_CLIENT}}}message":
                    got.append(el.get("id"))
        except Timeout:
            pass
    finally:
        bob.close()
    figure("kill -9: delivered at login", len(got), f"== {len(stored_ids)}")
    assert got == stored_ids, "bob did not receive exactly the stored messages, in order"


def test_sigterm_sends_system_shutdown(instances, figure):
    """T43: SIGTERM: every stream, bound or still negotiating, gets <system-shutdown/>; contacts
    are told; the process exits 0 promptly."""
    inst = instances.new("shutdown", {"c2s": {"auth_timeout": 30}})
    accounts = [inst.account("s") for _ in range(3)]
    conns = [inst.login(a, "r") for a in accounts]
    pending = inst.conn()
    pending.open()  # negotiating, not authenticated
    try:
        start = time.monotonic()
        inst.proc.send_signal(15)
        ends = []
        for c in conns + [pending]:
            try:
                ends.append(c.expect_end(10))
            except Timeout:
                ends.append(None)
        rc = inst.proc.wait(15)
        took = time.monotonic() - start
        inst.exits.append(rc)
        inst.proc = None
    finally:
        for c in conns + [pending]:
            c.abort()
    figure("SIGTERM: streams ended with <system-shutdown/>", sum(1 for e in ends if e and e.condition == "system-shutdown"),
           f"== {len(ends)}")
    figure("SIGTERM: exit status / seconds to exit", f"{rc} / {took:.2f}", "0 / < 10")
    assert all(e is not None and e.condition == "system-shutdown" for e in ends), ends
    assert rc == 0 and took < 10


def test_file_modes(main, figure):
    """T37d (issue 10 item 10): started under umask 022, the data directory is 0700 and the
    database files and the private key 0600: nothing readable by other users."""
    data = main.data
    modes = {}
    for path in [data, *sorted(data.rglob("*"))]:
        modes[str(path.relative_to(data.parent))] = stat.S_IMODE(os.stat(path).st_mode)
    figure("file modes", {k: oct(v) for k, v in modes.items()})
    bad = []
    if stat.S_IMODE(os.stat(data).st_mode) != 0o700:
        bad.append(f"{data.name}: {oct(stat.S_IMODE(os.stat(data).st_mode))}")
    for path in data.rglob("*"):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if path.name.startswith("starling.db") or path.suffix == ".key":
            if mode & 0o077:
                bad.append(f"{path.relative_to(data)}: {oct(mode)}")
        elif path.is_dir() and mode & 0o077:
            bad.append(f"{path.relative_to(data)}/: {oct(mode)}")
    assert not bad, "readable by others under umask 022: " + ", ".join(bad)

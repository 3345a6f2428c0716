"""Resource exhaustion: clients that do not read, floods, thousands of idle connections, too
many resources (SECURITY.md T31-T33, T37, T37a; issue 10 items 4 and 5)."""

from __future__ import annotations

import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from hostile_common import offline_rows, settle_rss, subscribe_both
from instance import tcp_socket
from rawxmpp import NS_CLIENT, NS_XMPP_ERRORS, BindRefused, StreamEnded, Timeout, is_kind, stanza_error

MiB = 1024


class Collector(threading.Thread):
    """Reads a connection continuously (a well-behaved client) and keeps what arrives."""

    def __init__(self, conn):
        super().__init__(daemon=True)
        self.conn = conn
        self.got: list = []
        self.stop = threading.Event()
        self.ended: StreamEnded | None = None

    def run(self):
        while not self.stop.is_set():
            try:
                self.got.append(self.conn.next(0.2))
            except Timeout:
                continue
            except StreamEnded as e:
                self.ended = e
                return
            except Exception as e:  # noqa: BLE001
                self.ended = StreamEnded(None, str(e), [], "exception", 0)
                return

    def finish(self, timeout: float = 5.0) -> list:
        self.stop.set()
        self.join(timeout)
        return self.got


class Watch(threading.Thread):
    """Samples the TCP queues of non-reading clients every 20 ms (from /proc/net/tcp): the
    client's receive queue and the server's send queue, until the server's end of the
    connection leaves ESTABLISHED (it closed it)."""

    def __init__(self, server_port: int, client_ports: list[int]):
        super().__init__(daemon=True)
        self.server_port = server_port
        self.ports = client_ports
        self.samples = {p: [] for p in client_ports}  # (time, client rx queue, server tx queue)
        self.closed_at = {p: None for p in client_ports}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            now = time.monotonic()
            for p in self.ports:
                if self.closed_at[p] is not None:
                    continue
                client = tcp_socket(p, self.server_port)
                server = tcp_socket(self.server_port, p)
                if server is None or server[0] != "ESTABLISHED":
                    self.closed_at[p] = now
                    continue
                self.samples[p].append((now, client[2] if client else 0, server[1]))
            time.sleep(0.02)

    def rx(self, p: int) -> int:
        return max((s[1] for s in self.samples[p]), default=0)

    def tx(self, p: int) -> int:
        return max((s[2] for s in self.samples[p]), default=0)

    def stalled_at(self, p: int) -> float | None:
        """When the server's writes stopped making progress: the first moment both queues
        were within 5% of the most they ever held (a few bytes may still trickle in later,
        e.g. when the kernel compacts its buffers or the server writes its closing)."""
        rx, tx = self.rx(p), self.tx(p)
        if tx == 0:
            return None
        for t, r, x in self.samples[p]:
            if r >= 0.95 * rx and x >= 0.95 * tx:
                return t
        return None


SLOW = {
    # The sender is not throttled, so that it can push more than the kernel buffers of the
    # non-reading clients hold (several MB): only then do the server's writes to them stall.
    "c2s": {"max_bytes_per_second": 0},
}


@pytest.mark.timeout(150)
def test_slow_readers_do_not_stall_their_contacts_and_lose_nothing(instances, figure):
    """Issue 10 items 4 and 5 (T37, T37a). bob has three resources that never read their sockets
    (small receive buffers) and one that does; alice, subscribed to bob both ways, changes her
    status 20 times and sends bob 2,500 messages (to the bare JID and to each full JID): 1,000
    of 8 KB first, more than the kernel buffers of a non-reading resource take (so the
    server's writes to it stall), then 1,500 small ones, more than its queue
    (c2s.max_queue = 1,000) holds.
    * alice is never stalled: every ping of hers is answered in < 1 s;
    * each non-reading resource is disconnected within 10 s (+3 s margin) of the moment its
      server-side writes stopped progressing (its receive queue stopped growing);
    * bob's reading resource is not disconnected (it reads everything it is sent, also what
      is rerouted to it from the resources that were cut);
    * nothing alice sent is lost: every message is found at bob's reading resource, in what a
      non-reading resource had received before it was cut, or in offline storage (at bob's
      next login, or left in the database), unless alice got an error for it. Duplicates
      are allowed, counted and reported."""
    main = instances.new("slow", SLOW)
    alice_acc, bob_acc = main.account("alice"), main.account("bob")
    alice = main.login(alice_acc, "a")
    good = main.login(bob_acc, "good")
    stuck = []
    collector = watch = None
    try:
        subscribe_both(alice, alice_acc.jid, good, bob_acc.jid)
        for i in range(3):
            s = main.login(bob_acc, f"stuck{i}", rcvbuf=4096)
            stuck.append(s)
            alice.wait_for(lambda e, j=s.jid: is_kind("presence")(e) and e.get("from") == j, what=f"{s.jid} online")
        # From here on the stuck resources never read again.
        collector = Collector(good)
        collector.start()
        watch = Watch(main.port, [s.local_port for s in stuck])
        watch.start()

        sent: list[str] = []
        rtts: list[float] = []
        targets = [bob_acc.jid] * 7 + [s.jid for s in stuck]
        n = 0
        filler = "x" * 8000
        phase_start = time.monotonic()
        # 100 rounds of 25 messages (big ones in the first 40), a status change every 5 rounds,
        # a ping after each: the ping waits only for the server to get through one round.
        for rnd in range(100):
            if rnd % 5 == 0:
                alice.presence(f"<status>status {rnd // 5} {'s' * 2000}</status>")
            for k in range(25):
                to = targets[k % len(targets)]
                sent.append(alice.message(to, f"m{n} {filler if rnd < 40 else ''}", id=f"sr{n}"))
                n += 1
            try:
                rtts.append(alice.ping_rtt(timeout=15))
            except Timeout:
                rtts.append(float("inf"))
                break
            if time.monotonic() - phase_start > 30:
                break
        sending_took = time.monotonic() - phase_start

        # Wait until every stuck resource is cut, at most 13 s after its writes stalled.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = time.monotonic()
            pending = [p for p in watch.ports if watch.closed_at[p] is None]
            if not pending:
                break
            if all(watch.stalled_at(p) is not None and now - watch.stalled_at(p) > 13 for p in pending):
                break
            time.sleep(0.1)
        watch.stop.set()
        watch.join(2)

        cut = {}
        for s in stuck:
            p = s.local_port
            stalled, closed = watch.stalled_at(p), watch.closed_at[p]
            cut[s.jid] = (closed - stalled) if (closed is not None and stalled is not None) else None
            figure(f"{s.jid.split('/')[1]}: server send queue (max bytes) / client receive queue (bytes)",
                   f"{watch.tx(p)} / {watch.rx(p)}")
            figure(f"{s.jid.split('/')[1]}: disconnected after its writes stalled (s)",
                   "not within 13 s" if cut[s.jid] is None else cut[s.jid], "<= 13")
        # What the stuck clients did receive (their kernel buffers, and whatever the server
        # still sends once they read): drain them now.
        at_stuck = set()
        for s in stuck:
            for el in s.collect(2.0):
                if el.tag == f"{{{NS_CLIENT}}}message" and el.get("id"):
                    at_stuck.add(el.get("id"))
            s.abort()
        time.sleep(0.5)
        at_good_list = [e.get("id") for e in collector.finish() if e.tag == f"{{{NS_CLIENT}}}message" and e.get("id")]
        good.close()
        # bob's next login: whatever went to offline storage.
        again = main.login(bob_acc, "again")
        offline = []
        try:
            while True:
                el = again.next(1.5)
                if el.tag == f"{{{NS_CLIENT}}}message" and el.get("id"):
                    offline.append(el.get("id"))
        except Timeout:
            pass
        finally:
            again.close()
        # And whatever was rerouted to offline storage after that login's flush.
        time.sleep(0.5)
        stored_later = [ET.fromstring(r).get("id") for r in offline_rows(main, bob_acc.jid)]
        offline += [i for i in stored_later if i]
        # Errors for alice come last: a message rerouted late (when a session ended during the
        # draining above) may have been refused by a full offline store only now.
        alice_errors = [e for e in alice.collect(1.0) if e.get("type") == "error"]

        errored = {e.get("id") for e in alice_errors}
        found = set(at_good_list) | at_stuck | set(offline)
        lost = [i for i in sent if i not in found and i not in errored]
        dupes = (len(at_good_list) - len(set(at_good_list))) + len(set(offline) & set(at_good_list))
        worst = max(rtts) if rtts else float("inf")
        figure("alice: messages sent / pings answered / sending took (s)", f"{len(sent)} / {len(rtts)} / {sending_took:.1f}")
        figure("alice: slowest ping during the run (s)", worst, "< 1")
        figure("messages found: at the reading resource / at the stuck ones / offline",
               f"{len(set(at_good_list))} / {len(at_stuck)} / {len(set(offline))}")
        conds = {}
        for e in alice_errors:
            c = stanza_error(e)[0]
            conds[c] = conds.get(c, 0) + 1
        figure("messages bounced to alice with an error (by condition)", conds)
        figure("streams ended during the run: alice / the reading resource",
               f"{alice.ended} / {collector.ended}")
        figure("messages lost", len(lost), "== 0")
        figure("duplicates delivered", dupes)
        cut_by = [l.split("jid=", 1)[1].split("}", 1)[0] for l in main.log_text().splitlines()
                  if "does not read its stanzas" in l and l.rstrip().endswith(f"jid={good.jid}") and "jid=" in l]
        figure("the reading resource was told to close by the task of", cut_by or "nobody")
        assert collector.ended is None, (f"bob's reading resource was disconnected: {collector.ended}; the server log "
                                         f"names the task that found its queue full: {cut_by}")
        assert worst < 1.0, f"alice's session was stalled: slowest ping {worst:.2f}s (all: {[round(r, 2) for r in rtts]})"
        late = {j: c for j, c in cut.items() if c is None or c > 13}
        assert not late, f"non-reading resources not cut within 10 s (+3 s) of their writes stalling: {late}"
        assert not lost, f"{len(lost)} messages lost, e.g. {lost[:10]}"
    finally:
        if watch:
            watch.stop.set()
        if collector:
            collector.stop.set()
        for s in stuck:
            s.abort()
        good.abort()
        alice.close()


def test_authenticated_flood_does_not_slow_others(main, figure):
    """T32 (C13): one client writes as fast as it can (10 MB/s offered) for 4 s; it is slowed to
    c2s.max_bytes_per_second, not disconnected, and another client's pings stay fast (p99)."""
    flooder_acc, sink_acc, other_acc = main.account("flood"), main.account("sink"), main.account("other")
    flooder = main.login(flooder_acc, "f", presence=False)
    other = main.login(other_acc, "o", presence=False)
    # Headlines to an offline account are dropped (never stored, no error): the flood costs the
    # server parsing and routing only.
    chunk = "".join(f"<message to='{sink_acc.jid}' type='headline'><body>{'f' * 10_000}</body></message>"
                    for _ in range(10)).encode()
    stop = threading.Event()
    offered = [0]

    def flood():
        t0 = time.monotonic()
        while not stop.is_set():
            # 10 MB/s offered: one 100 KB chunk every 10 ms at most.
            if flooder.try_send(chunk, timeout=0.2):
                offered[0] += len(chunk)
            elapsed = time.monotonic() - t0
            ahead = offered[0] / 10e6 - elapsed
            if ahead > 0:
                time.sleep(ahead)
    t = threading.Thread(target=flood, daemon=True)
    rtts = []
    try:
        t.start()
        end = time.monotonic() + 4
        while time.monotonic() < end:
            rtts.append(other.ping_rtt(timeout=5))
            time.sleep(0.03)
        stop.set()
        t.join(5)
        # What the server actually read: what we wrote minus what still waits in the two
        # kernel queues (our send queue, its receive queue).
        mine = tcp_socket(flooder.local_port, main.port)
        theirs = tcp_socket(main.port, flooder.local_port)
        alive = theirs is not None and theirs[0] == "ESTABLISHED"
        consumed = offered[0] - (mine[1] if mine else 0) - (theirs[2] if theirs else 0)
    finally:
        stop.set()
        flooder.abort()
        other.close()
    rtts.sort()
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
    figure("flood: bytes the flooder got into its socket in 4 s", offered[0])
    figure("flood: bytes the server read from it in 4 s", consumed, "< 2,000,000 (100 KB/s + 400 KB burst)")
    figure(f"flood: other client's ping p50 / p99 over {len(rtts)} pings (ms)",
           f"{rtts[len(rtts) // 2] * 1000:.1f} / {p99 * 1000:.1f}", "p99 < 250")
    assert p99 < 0.25, f"p99 ping {p99 * 1000:.0f} ms while another client floods"
    assert alive, "the flooder was disconnected (it should be slowed down, not cut)"
    assert consumed < 2_000_000, f"the server read {consumed} bytes in 4 s from a client limited to 100 KB/s"


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full."""
    lines = open("/proc/net/netstat").read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:])))["ListenOverflows"]
    return 0


def open_many(inst, n: int, header: bytes) -> tuple[list, float]:
    """`n` connections that each send a stream header and never read, opened in batches of
    100 that wait for the server to have accepted the previous ones (its accept queue is
    short: a burst would mostly measure the clients' SYN retries)."""
    socks = []
    fds0 = inst.fds()
    t0 = time.monotonic()
    try:
        while len(socks) < n:
            for _ in range(min(100, n - len(socks))):
                s = socket.create_connection(("127.0.0.1", inst.port), timeout=5)
                s.sendall(header)
                socks.append(s)
            deadline = time.monotonic() + 5
            while inst.fds() - fds0 < len(socks) and time.monotonic() < deadline:
                time.sleep(0.01)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks, time.monotonic() - t0


def test_thousands_of_unauthenticated_connections(instances, figure):
    """T31: 2,000 connections that open a stream and never authenticate, eight rounds: the server
    keeps serving (a ping < 1 s), an idle connection costs little, and the RSS stops growing
    from round to round (nothing is leaked per connection: the memory is reused).

    The RSS does not go back to the baseline after the connections close: glibc keeps freed
    memory in its per-thread arenas (malloc_trim(0) gives back about a third of it) and tokio
    keeps its grown I/O slab; it reaches a plateau after a few rounds (measured: +12.9, +13.1,
    +15.7, +16.8, +16.8 MiB..., in steps of about 1 MiB at rounds that vary from run to run).
    The figures show it; the test bounds the RSS after all 16,000 connections by 1.5 times
    the first round's peak, which a leak of 400 bytes per connection would exceed. There is no per-IP
    connection cap; the process may hold 20,000 open files."""
    inst = instances.new("conns", {"c2s": {"auth_timeout": 30}})
    account = inst.account("c")
    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>").encode()
    warm, _ = open_many(inst, 20, header)
    time.sleep(0.3)
    for s in warm:
        s.close()
    baseline = settle_rss(inst, 1.0)
    fds0 = inst.fds()
    overflows0 = listen_overflows()
    rounds = []
    for rnd in range(8):
        socks, opened = open_many(inst, 2000, header)
        try:
            time.sleep(0.5)
            fds = inst.fds() - fds0
            peak = inst.rss_kib() - baseline
            c = inst.login(account, presence=False)
            rtt = c.ping_rtt()
            c.close()
        finally:
            for s in socks:
                s.close()
        after = settle_rss(inst, 1.0) - baseline
        rounds.append((opened, fds, peak, rtt, after))
    for i, (opened, fds, peak, rtt, after) in enumerate(rounds):
        figure(f"round {i + 1}: opened in (s) / descriptors added / RSS growth open (KiB) / after closing (KiB) / ping (s)",
               f"{opened:.2f} / {fds} / {peak} ({peak / 2000:.1f} per connection) / {after} / {rtt:.3f}")
    figure("accept-queue overflows while opening (kernel ListenOverflows)", listen_overflows() - overflows0)
    assert min(r[1] for r in rounds) >= 1900, "the server did not hold the connections: refused?"
    assert max(r[3] for r in rounds) < 1.0, "a ping took 1 s or more while the connections were open"
    assert rounds[0][2] < 2000 * 64, f"{rounds[0][2] / 2000:.1f} KiB per idle unauthenticated connection"
    first_peak, last = rounds[0][2], rounds[-1][4]
    figure("RSS above the baseline after 16,000 connections / first round's peak (KiB)", f"{last} / {first_peak}",
           "< 1.5 x the peak")
    assert last < 1.5 * first_peak, (f"RSS is {last} KiB above the baseline after 8 rounds of 2,000 connections, "
                                     f"against a first peak of {first_peak} KiB: a leak?")


def test_too_many_resources(main, figure):
    """T33 (C9): 50 resources for one account: the ones past c2s.max_resources (10) are refused
    with <resource-constraint/> + <resource-limit-exceeded/>; the bound ones keep working."""
    account = main.account("res")
    bound, refused = [], []
    try:
        for i in range(50):
            c = main.conn()
            try:
                c.secure()
                assert c.auth(account.local, account.password) == "success"
                c.bind(f"r{i}")
                bound.append(c)
            except BindRefused as e:
                cond, text, app = stanza_error(e.reply)
                refused.append((cond, app))
                c.abort()
        figure("50 binds: bound / refused", f"{len(bound)} / {len(refused)}", "10 / 40")
        assert len(bound) == 10, f"{len(bound)} resources bound"
        assert all(cond == "resource-constraint" and f"{{{NS_XMPP_ERRORS}}}resource-limit-exceeded" in app
                   for cond, app in refused), refused[:3]
        assert bound[0].ping_rtt() < 1.0
    finally:
        for c in bound:
            c.close()

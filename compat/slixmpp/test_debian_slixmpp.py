"""Debian's own slixmpp (python3-slixmpp 1.8.3 on Debian 12, the library under Debian's poezio)
logs in and exchanges messages.

It is not the PyPI slixmpp of the venv: the test runs `debian_client.py` with the system
interpreter, /usr/bin/python3, which imports the Debian package (compat/run.sh installs it).
1.8.3 picks SCRAM-SHA-256-PLUS with `p=tls-unique`, which TLS 1.3 does not have, then
SCRAM-SHA-1-PLUS, then SCRAM with the `y` flag, which RFC 5802 §6 makes us refuse while we
offer -PLUS. Starling refuses each of these at once as `malformed-request` (not as a wrong
password, so no delay and no stream closed after three), and the client ends on PLAIN over
TLS. See compat/slixmpp.md.
"""

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

from harness import xmpp_test

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT = Path(__file__).with_name("debian_client.py")


def debian_slixmpp_version() -> str:
    res = subprocess.run([SYSTEM_PYTHON, "-c", "import slixmpp; print(slixmpp.__version__)"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, f"Debian's python3-slixmpp is not installed (compat/run.sh installs it): {res.stderr}"
    return res.stdout.strip()


@xmpp_test(timeout=55)
async def test_debian_slixmpp_logs_in_and_chats(net):
    version = debian_slixmpp_version()
    a, b = net.account("deb"), net.account("deb")
    log_before = net.server.log.read_text(errors="replace") if net.server.log.exists() else ""
    started = time.monotonic()
    res = await asyncio.to_thread(
        subprocess.run,
        [SYSTEM_PYTHON, str(CLIENT), net.server.host, str(net.server.port), str(net.server.ca),
         a.jid, a.password, b.jid, b.password],
        capture_output=True, text=True, timeout=50, check=False,
    )
    elapsed = time.monotonic() - started
    assert res.returncode == 0, f"debian_client.py failed ({res.returncode}):\n{res.stdout}\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["slixmpp"] == version
    for who, account, other, body in (("a", a, b, "and back"), ("b", b, a, "hello from debian slixmpp")):
        r = out[who]
        assert r["outcome"] == "session_started", r
        assert r["received"] == [{"from": other.jid, "body": body}], r
        # Whatever it tried first, every refusal was a protocol failure with a reason, not a
        # wrong password, and the client got to a mechanism that works.
        for f in r["failures"]:
            assert f["condition"] == "malformed-request", f
            assert f["text"] and f["text"].startswith(("unsupported channel binding type", "channel binding downgrade")), f
        if version.startswith("1.8."):
            # Debian 12's exact path down the list.
            assert [(f["mechanism"], f["condition"]) for f in r["failures"]] == [
                ("SCRAM-SHA-256-PLUS", "malformed-request"),
                ("SCRAM-SHA-1-PLUS", "malformed-request"),
                ("SCRAM-SHA-256", "malformed-request"),
                ("SCRAM-SHA-1", "malformed-request"),
            ], r["failures"]
            assert r["mechanism"] == "PLAIN", r
    # No failure was delayed (failure_delay_ms applies to wrong passwords only).
    assert elapsed < 30, elapsed
    # And none was logged as a failed authentication (fail2ban must not ban such users).
    log_after = net.server.log.read_text(errors="replace") if net.server.log.exists() else ""
    new = log_after[len(log_before):]
    for account in (a, b):
        assert f'account="{account.jid}"' not in new, re.findall(r".*authentication failed.*", new)

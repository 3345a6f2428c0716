"""Every failed authentication is logged at info in one stable line, and the fail2ban filter
that the README documents finds the client's address in it (issue 10 defect 7)."""

import re
from pathlib import Path

from harness import Account, xmpp_test

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_failregex() -> re.Pattern:
    """The `failregex` of the README's fail2ban filter, with fail2ban's <HOST> as a group."""
    lines = [l for l in README.read_text().splitlines() if l.startswith("failregex = ")]
    assert len(lines) == 1, f"expected one failregex line in the README, got {lines}"
    regex = lines[0].removeprefix("failregex = ")
    return re.compile(regex.replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)"))


@xmpp_test()
async def test_failed_login_is_logged_for_fail2ban(net):
    erin = net.account("logged")
    ghost = Account(f"ghost-{erin.local}@{net.server.domain}", "whatever")
    for account, password in ((erin, "not-" + erin.password), (ghost, ghost.password)):
        c = net.client(account, "r", mech="SCRAM-SHA-256", password=password)
        kind, failure = await c.try_connect()
        assert kind == "failed_auth" and failure["condition"] == "not-authorized", (kind, failure)
    failregex = readme_failregex()
    log = net.server.log.read_text(errors="replace")
    for account in (erin, ghost):
        lines = [l for l in log.splitlines() if f'account="{account.jid}"' in l]
        assert len(lines) == 1, lines
        line = lines[0]
        # The documented format: level info, the address first, the username quoted.
        assert " INFO " in line, line
        assert line.endswith(f'authentication failed: ip={net.server.host} account="{account.jid}" '
                             "mechanism=SCRAM-SHA-256 reason=not-authorized"), line
        m = failregex.search(line)
        assert m is not None and m.group("host") == net.server.host, (failregex.pattern, line)

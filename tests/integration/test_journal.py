#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Structured journal logging (issue 7): tunnelgated's events reach a real
systemd-journald as native journal entries with their fields, as they do
when the daemon runs under systemd.

These machines do not boot systemd, so the test brings the journal itself:
it re-executes in a private mount namespace (unshare --mount), mounts tmpfs
on /run/systemd and /run/log there (the host's are untouched), and runs
/lib/systemd/systemd-journald with Storage=volatile. The daemon is started
through systemd-cat, which connects its stdout and stderr to the journal's
stream socket exactly as systemd does for a service; GLib's writer then sees
the journal on stderr and sends each event natively. The world's `ip netns
exec` inherits the mount namespace, so the daemon, in the client network
namespace, reaches the same journald.

Checked with journalctl --directory: entries come by the native protocol
(_TRANSPORT=journal, not as stdout lines), from the daemon's pid, with
TG_EVENT and TUNNEL_ID, USER, UID, FORWARD, DECISION, RULE, BYTES, METHOD as
documented in tunnelgated(8): a tunnel's policy decision (allow,
file:line keyword), its opening, connections and closing with byte counts
that add up, a reconnect (CAUSE, ATTEMPT, DOWNTIME), a policy denial, and a
polkit denial naming the action. The
stderr fallback (no journal: plain lines)
is what every other integration test reads.

Users: ONLY tg-jlog and tg-jlog2.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_journal.py -v
(exits 77 = skipped when not root).
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
from tgtest import (BUS, TIFACE, BUSCTL_TIMEOUT, agent_option, busctl_open,  # noqa: E402
                    busctl_open_ok, curl, free_port, wait_for)

USER, USER2 = "tg-jlog", "tg-jlog2"
USERS = (USER, USER2)
NS_MARK = "TG_JOURNAL_NAMESPACE"
JOURNALD = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
JOURNAL_DIR = "/run/log/journal"

POLKIT_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") != 0)
        return;
    if (subject.user == "tg-jlog" && action.id == "org.tunnelgate.open")
        return polkit.Result.YES;
    return polkit.Result.NO;
});
"""

POLICY = ("# journal tests\n"
          "PermitOpen intra:80\n")          # line 2

JOURNALD_CONF = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
"""


class Journal:
    """systemd-journald in this (private) mount namespace, on tmpfs."""

    def __init__(self):
        self.proc = None
        self.created = []

    def start(self):
        binary = next((p for p in JOURNALD if os.access(p, os.X_OK)), None)
        if binary is None:
            raise RuntimeError(f"systemd-journald not found at {' or '.join(JOURNALD)} "
                               "(package systemd)")
        machine_id = Path("/etc/machine-id")
        if not machine_id.exists() or len(machine_id.read_text().strip()) != 32:
            raise RuntimeError("/etc/machine-id is missing or empty: journald needs it "
                               "(systemd-machine-id-setup makes one)")
        for d in ("/run/systemd", "/run/log"):
            if not os.path.isdir(d):          # a mount point: the host keeps an empty dir
                os.makedirs(d)
                self.created.append(d)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d],
                           check=True)
        os.makedirs("/run/systemd/journald.conf.d")
        Path("/run/systemd/journald.conf.d/tunnelgate-test.conf").write_text(JOURNALD_CONF)
        self.log = tempfile.TemporaryFile()
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1

        def die_with_parent():
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

        self.proc = subprocess.Popen([binary], stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        sockets = ("/run/systemd/journal/socket", "/run/systemd/journal/stdout")
        deadline = time.monotonic() + 10
        while not all(os.path.exists(s) for s in sockets):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-journald did not start:\n{self.output()}")
            time.sleep(0.05)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for d in ("/run/log", "/run/systemd"):
            subprocess.run(["umount", d], stderr=subprocess.DEVNULL)
        for d in self.created:
            os.rmdir(d)

    def entries(self, *matches):
        """Journal entries (dicts) matching journalctl FIELD=VALUE `matches`."""
        r = subprocess.run(["journalctl", "--directory", JOURNAL_DIR, "--output", "json",
                            "--no-pager", "--all", *matches],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"journalctl failed: {r.stderr.strip()}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


JOURNAL = Journal()


def setUpModule():
    JOURNAL.start()
    try:
        w = tgtest.start_module_world(USERS, agents=USERS, polkit_rules=POLKIT_RULES,
                                      policy=POLICY, daemon=False)
        w.start_daemon(prefix=["systemd-cat", "--identifier=tunnelgated"])
    except BaseException:
        if tgtest.DaemonTestCase.W is not None:
            tgtest.DaemonTestCase.W.cleanup()
        JOURNAL.stop()
        raise


def tearDownModule():
    try:
        tgtest.stop_module_world()
    finally:
        JOURNAL.stop()


class JournalTest(tgtest.DaemonTestCase):

    def events(self, *matches):
        return JOURNAL.entries(f"_PID={self.w.daemon.pid}", *matches)

    def wait_events(self, *matches, count=1, what=None):
        found = []

        def enough():
            found[:] = self.events(*matches)
            return len(found) >= count

        wait_for(enough, timeout=15, what=what or f"journal entries {' '.join(matches)}")
        return found

    def close(self, user, path):
        r = self.w.busctl(user, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_entries_are_native_with_fields(self):
        """Messages come by the native protocol, with the GLib domain and
        priority notice; nothing the daemon logs arrives as a stdout line."""
        ready = []

        def started():
            ready[:] = [e for e in self.events()
                        if "ready on the bus" in e.get("MESSAGE", "")]
            return bool(ready)

        wait_for(started, timeout=15, what="the daemon's start-up message in the journal")
        e = ready[0]
        self.assertEqual(e["_TRANSPORT"], "journal", e)
        self.assertEqual(e["GLIB_DOMAIN"], "tunnelgate", e)
        self.assertEqual(e["PRIORITY"], "5", e)            # notice
        self.assertEqual(e["_COMM"], "tunnelgated", e)
        for e in self.events("_TRANSPORT=journal"):
            if "TG_EVENT" in e:
                self.assertEqual(e.get("GLIB_DOMAIN"), "tunnelgate", e)
        stdout_lines = self.events("_TRANSPORT=stdout")
        self.assertEqual([], [e.get("MESSAGE") for e in stdout_lines],
                         "the daemon wrote plain lines although the journal was there")
        # and nothing reached the plain log file the world gives the daemon
        self.assertEqual(self.w.daemon.log().strip(), "")

    def test_tunnel_lifecycle(self):
        """A tunnel's decision, opening, connection and closing, with byte counts."""
        w = self.w
        port = free_port(w)
        path = busctl_open_ok(w, USER, "gw", [f"L 127.0.0.1:{port}:intra:80"],
                              agent_option(w, USER))
        tid = tgtest.prop(w, USER, path, "Id")
        page = curl(w, USER, f"http://127.0.0.1:{port}/")
        self.assertEqual(page.returncode, 0, page.stderr)
        self.assertIn("intranet", page.stdout.lower())
        self.close(USER, path)
        self.wait_events(f"TUNNEL_ID={tid}", "TG_EVENT=TUNNEL_CLOSED",
                         what=f"TUNNEL_CLOSED of tunnel {tid}")
        uid = str(w.users[USER].uid)

        by_event = {}
        for e in self.events(f"TUNNEL_ID={tid}"):
            self.assertEqual(e["_TRANSPORT"], "journal", e)
            by_event.setdefault(e["TG_EVENT"], []).append(e)
        for name in ("POLICY_DECISION", "TUNNEL_OPENING", "TUNNEL_UP", "CONNECTION_OPENED",
                     "CONNECTION_CLOSED", "TUNNEL_CLOSING", "TUNNEL_CLOSED"):
            self.assertIn(name, by_event, f"no {name} for tunnel {tid}: {sorted(by_event)}")

        decisions = {e["FORWARD"]: e for e in by_event["POLICY_DECISION"]}
        spec = f"L 127.0.0.1:{port}:intra:80"
        # the server, the forward and the tunnel count, each decided and logged
        self.assertIn("server gw port 22", decisions)
        self.assertIn(spec, decisions)
        for e in decisions.values():
            self.assertEqual(e["USER"], USER, e)
            self.assertEqual(e["UID"], uid, e)
            self.assertEqual(e["DECISION"], "allow", e)
            self.assertRegex(e["RULE"], r"^(/\S+:[0-9]+|<default>:0) [A-Za-z]+$", e)
        self.assertEqual(decisions[spec]["RULE"],
                         f"{w.config_dir / 'policy.conf'}:2 PermitOpen")

        for name in ("TUNNEL_UP", "CONNECTION_OPENED", "CONNECTION_CLOSED", "TUNNEL_CLOSED"):
            self.assertEqual(by_event[name][0]["USER"], USER, name)
        opened = by_event["CONNECTION_OPENED"][0]
        self.assertEqual(opened["FORWARD"], spec)

        def split(b):
            sent, received = b.split("/")
            return int(sent), int(received)

        per_connection = [split(e["BYTES"]) for e in by_event["CONNECTION_CLOSED"]]
        for e in by_event["CONNECTION_CLOSED"]:
            self.assertEqual(e["RESULT"], "done", e)
            self.assertEqual(e["DESTINATION"], "intra port 80", e)
        sent, received = split(by_event["TUNNEL_CLOSED"][0]["BYTES"])
        # the HTTP request went out, the page came back, and the tunnel's
        # totals are the sum of its connections
        self.assertGreater(sent, 0)
        self.assertGreaterEqual(received, len(page.stdout.encode()))
        self.assertEqual((sent, received), (sum(s for s, _ in per_connection),
                                            sum(r for _, r in per_connection)))

    def test_reconnect_events(self):
        """A tunnel with reconnect whose session is killed: TUNNEL_RECONNECTING
        with the cause and the attempt, then TUNNEL_RECONNECTED with the
        downtime."""
        w = self.w
        port = free_port(w)
        path = busctl_open_ok(w, USER, "gw", [f"L 127.0.0.1:{port}:intra:80"],
                              agent_option(w, USER) + [("reconnect", "b", True),
                                                       ("keepalive", "u", 2)])
        tid = tgtest.prop(w, USER, path, "Id")
        netns = os.stat(f"/run/netns/{w.gateway_ns}").st_ino

        def sessions():
            """(pid, cmdline) of the user's sshd processes on the gateway."""
            found = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if (os.stat(f"/proc/{pid}/ns/net").st_ino == netns
                            and USER.encode() in cmdline):
                        found.append((int(pid), cmdline.strip(b"\0 ")))
                except OSError:
                    pass
            return found
        # once authenticated ("sshd: USER" without a [bracket]), or the
        # session's child may be forked after the kill and live on
        wait_for(lambda: any(not c.endswith(b"]") for _, c in sessions()), timeout=10,
                 what="the session settled")
        for pid, _ in sessions():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        back = self.wait_events(f"TUNNEL_ID={tid}", "TG_EVENT=TUNNEL_RECONNECTED",
                                what=f"TUNNEL_RECONNECTED of tunnel {tid}")[0]
        lost = self.events(f"TUNNEL_ID={tid}", "TG_EVENT=TUNNEL_RECONNECTING")
        self.assertEqual(len(lost), 1, lost)
        self.assertEqual(lost[0]["USER"], USER)
        self.assertEqual(lost[0]["ATTEMPT"], "1")
        self.assertRegex(lost[0]["CAUSE"], r"\S")
        self.assertEqual(back["USER"], USER)
        self.assertRegex(back["DOWNTIME"], r"^[0-9]+\.[0-9]$")
        self.assertEqual(tgtest.prop(w, USER, path, "State"), "up")
        self.close(USER, path)

    def test_policy_denial(self):
        w = self.w
        r = busctl_open(w, USER, "gw", ["L 0:intra:9000"], agent_option(w, USER))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("PermitOpen at", r.stderr)
        ev = self.wait_events("TG_EVENT=POLICY_DECISION", "DECISION=deny",
                              what="the denied decision")
        e = [x for x in ev if "intra:9000" in x.get("FORWARD", "")]
        self.assertEqual(len(e), 1, ev)
        # the request's number: a refused request uses it up
        self.assertRegex(e[0]["TUNNEL_ID"], r"^[0-9]+$")
        self.assertEqual(e[0]["USER"], USER)
        self.assertEqual(e[0]["UID"], str(w.users[USER].uid))
        self.assertEqual(e[0]["RULE"], f"{w.config_dir / 'policy.conf'}:2 PermitOpen")

    def test_polkit_denial(self):
        w = self.w
        r = busctl_open(w, USER2, "gw", ["L 0:intra:80"], agent_option(w, USER2))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not allowed org.tunnelgate.open by polkit", r.stderr)
        ev = self.wait_events("TG_EVENT=AUTHZ_DENIED", f"USER={USER2}",
                              what="the polkit denial")
        self.assertEqual(ev[-1]["UID"], str(w.users[USER2].uid))
        self.assertEqual(ev[-1]["METHOD"], "OpenTunnel")
        self.assertEqual(ev[-1]["RULE"], "org.tunnelgate.open")
        self.assertEqual(ev[-1]["DECISION"], "deny")


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network and mount namespaces, journald)",
              file=sys.stderr)
        sys.exit(77)
    if os.environ.get(NS_MARK) != "1":
        # a private mount namespace, so that the tmpfs mounts never reach the host
        env = dict(os.environ, **{NS_MARK: "1"})
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private",
                               sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   env)
    unittest.main()

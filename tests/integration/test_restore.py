#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Tunnels that outlive the daemon: OpenTunnel's `persist`, restored at start,
and profiles with Autostart yes, with the real daemon killed (kill -9) and
started again, sshd, polkitd and the firewall of the test world.

  * a user's persist tunnel (agent path) with an L port-0 listener, an R
    forward and a D forward added later: saved once up (the record names the
    real ports), the daemon killed with SIGKILL; while it is dead the table
    inet tunnelgate stays (lockdown, guard element); started again: the same
    object path, Created, Persistent, the L and D listeners on their old
    ports, up, data through L and R; a new tunnel gets a higher id;
  * a persist tunnel its owner closed, and a tunnel without persist, are not
    restored; tunnelgatectl open --persist passes the agent's path;
  * persist with agent-fd, identity-fd, bind-to-caller or reconnect false is
    InvalidArgument;
  * a corrupt record is skipped with a warning naming it (and its id is not
    given to a new tunnel), the others are restored;
  * a record whose server the policy now forbids is dropped, with a log line;
  * an Autostart profile (AutostartUser tg-bob) is up after start, owned by
    tg-bob, Persistent, not stored; up again after kill -9 and a start; a
    reload with Autostart no closes it; an AutostartUser the profile does not
    admit is refused with a log line.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_restore.py -v
(exits 77 = skipped when not root).
"""

import configparser
import json
import os
import shutil
import signal
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import names  # noqa: E402
import tgtest  # noqa: E402
from tgtest import (ALICE, BOB, ADMIN, BUS, MPATH, MIFACE, TIFACE, V,  # noqa: E402
                    BUSCTL_TIMEOUT, FdConnect, FdOpen, close_all_tunnels, daemon_listeners,
                    free_port, list_tunnels, prop, user_bus, wait_for)

USERS = (ALICE, BOB, ADMIN)
SLOW = 3 if tgtest.VALGRIND else 1

# alice and bob may open tunnels with remote forwards, admin may do all
OPENERS = [names.ACTION_ID_OPEN, names.ACTION_ID_OPEN_REMOTE]
POLKIT_RULES = tgtest.polkit_rules({ALICE: OPENERS, BOB: OPENERS, ADMIN: ["*"]})

# the firewall in force, so that what it does while the daemon is dead shows
POLICY = """\
EgressLockdown yes
SshPorts 22
PermitServer gw
LogRejections no
"""


def setUpModule():
    tgtest.start_module_world(USERS, agents=USERS, polkit_rules=POLKIT_RULES,
                              policy=POLICY)


def tearDownModule():
    tgtest.stop_module_world()


def nft(w, *args, check=True):
    return w.run(["nft", *args], ns="client", check=check)


def set_elements(w, name):
    """The elements of a set of table inet tunnelgate, as nft -j prints them."""
    out = json.loads(nft(w, "-j", "list", "set", "inet", "tunnelgate", name).stdout)
    for o in out["nftables"]:
        if "set" in o:
            return [json.dumps(e, sort_keys=True) for e in o["set"].get("elem", [])]
    return []


def read_record(path):
    """A record file ([Tunnel] group of a GKeyFile) as a dict of strings."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(path)
    return dict(parser["Tunnel"])


class RestoreTestCase(tgtest.DaemonTestCase):

    def setUp(self):
        self.addCleanup(self.clean)

    def clean(self):
        """A running daemon with the module's policy, no tunnel, no record."""
        w = self.w
        changed = False
        if (w.config_dir / "profiles.d").exists():
            shutil.rmtree(w.config_dir / "profiles.d")
            changed = True
        if (w.config_dir / "policy.conf").read_text() != POLICY:
            w.write_config("policy.conf", POLICY)
            changed = True
        if w.daemon is None or not w.daemon.alive():
            w.start_daemon()
        elif changed:
            self.reload()
        close_all_tunnels(w)
        for f in self.records_dir().glob("*"):
            f.unlink()

    # -- the daemon -----------------------------------------------------------------

    def kill_daemon(self):
        d = self.w.daemon
        d.send_signal(signal.SIGKILL)
        d.wait(10)
        d.stop(check=False)

    def restart(self):
        """kill -9 and a new daemon: its log starts empty."""
        self.kill_daemon()
        return self.w.start_daemon()

    def reload(self):
        r = self.w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.assertEqual(r.returncode, 0, r.stderr)

    def records_dir(self):
        return self.w.state_dir / "tunnels"

    def record_of(self, path):
        return self.records_dir() / (path.rsplit("/", 1)[1] + ".tunnel")

    # -- tunnels ----------------------------------------------------------------------

    def open(self, forwards, user=ALICE, destination="gw", **options):
        opts = {"agent": V("s", str(self.w.users[user].agent_sock))}
        for key, value in options.items():
            key = key.replace("_", "-")
            opts[key] = value if isinstance(value, V) else V("b", value)
        return user_bus(user).call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                                   [destination, list(forwards), opts], timeout=120)[0]

    def state(self, path, user=ALICE):
        return prop(self.w, user, path, "State")

    def wait_up(self, path, user=ALICE, timeout=40):
        wait_for(lambda: self.state(path, user) == "up", timeout=timeout * SLOW,
                 interval=0.2, what=f"{path} up")

    def ports(self, path, spec, user=ALICE):
        return sorted(p for s, _, p in prop(self.w, user, path, "Listeners") if s == spec)

    def echo(self, ns, port, data=b"hello"):
        s = self.w.connect(ns, "127.0.0.1", port, timeout=10)
        try:
            s.settimeout(10)
            return self.w.data_echo(s, data)
        finally:
            s.close()

    def paths(self, user=ADMIN):
        return [t[0] for t in list_tunnels(self.w, user)]


class PersistTest(RestoreTestCase):

    def test_killed_and_started_again(self):
        w = self.w
        local, remote, socks = "L 127.0.0.1:0:intra:9000", "R 0:127.0.0.1:9000", "D 127.0.0.1:0"
        path = self.open([local, remote], persist=True)
        self.assertTrue(prop(w, ALICE, path, "Persistent"))
        self.assertTrue(prop(w, ALICE, path, "Reconnect"))
        created = prop(w, ALICE, path, "Created")
        [lport] = self.ports(path, local)
        [rport] = self.ports(path, remote)
        self.assertEqual(self.echo("client", lport), b"hello")
        self.assertEqual(self.echo("gateway", rport), b"hello")
        # a forward added later is in the record too
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "AddForward", "s", socks)
        self.assertEqual(r.returncode, 0, r.stderr)
        [dport] = self.ports(path, socks)

        record = self.record_of(path)
        wait_for(lambda: socks in read_record(record).get("forwards", ""),
                 timeout=10 * SLOW, what="the added forward saved")
        st = os.stat(record)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (0, 0o600))
        saved = read_record(record)
        self.assertEqual(saved["uid"], str(w.users[ALICE].uid))
        self.assertEqual(saved["agent"], str(w.users[ALICE].agent_sock))
        self.assertEqual(saved["forwards"], f"{local};{remote};{socks};")
        self.assertIn(f"0 127.0.0.1 {lport};", saved["listeners"])
        self.assertIn(f"2 127.0.0.1 {dport};", saved["listeners"])
        self.assertNotIn(str(rport), saved["listeners"])
        self.assertIn("org.tunnelgate.open-remote", saved["granted"])

        self.kill_daemon()
        # fail closed while the daemon is dead: the table, the lockdown and the
        # listener's guard element stay
        self.assertEqual(nft(w, "list", "table", "inet", "tunnelgate",
                             check=False).returncode, 0)
        self.assertTrue(any(str(lport) in e for e in set_elements(w, "owned_listeners_v4")))
        self.assertTrue(record.exists())

        d = w.start_daemon()
        self.wait_up(path)
        self.assertEqual(self.paths(), [path])
        self.assertEqual(prop(w, ALICE, path, "Owner"), w.users[ALICE].uid)
        self.assertEqual(prop(w, ALICE, path, "Created"), created)
        self.assertTrue(prop(w, ALICE, path, "Persistent"))
        self.assertEqual(prop(w, ALICE, path, "Forwards"), [local, remote, socks])
        self.assertEqual(self.ports(path, local), [lport])
        self.assertEqual(self.ports(path, socks), [dport])
        self.assertIn(("127.0.0.1", lport), daemon_listeners(d.pid))
        self.assertTrue(any(str(lport) in e for e in set_elements(w, "owned_listeners_v4")))
        self.assertEqual(self.echo("client", lport, b"again"), b"again")
        wait_for(lambda: len(self.ports(path, remote)) == 1, timeout=10 * SLOW,
                 what="the R forward's port")
        self.assertEqual(self.echo("gateway", self.ports(path, remote)[0], b"back"), b"back")
        tid = path.rsplit("/", 1)[1]
        self.assertRegex(d.log(), rf"restoring persistent tunnel {tid} of {ALICE}")

        # a new tunnel does not take a restored id
        other = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"])
        self.assertGreater(int(other.rsplit("/", 1)[1]), int(tid))
        self.assertFalse(prop(w, ALICE, other, "Persistent"))
        self.assertFalse(self.record_of(other).exists())

        # closed by its owner: the record goes, nothing comes back
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(record.exists())

    def test_closed_and_plain_tunnels_are_not_restored(self):
        w = self.w
        closed = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], persist=True)
        plain = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], reconnect=True)
        self.assertTrue(self.record_of(closed).exists())
        self.assertFalse(self.record_of(plain).exists())
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o",
                     closed)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(self.record_of(closed).exists())
        d = self.restart()
        self.assertEqual(self.paths(), [])
        self.assertNotIn("restoring persistent tunnel", d.log())

    def test_stopped_daemon_keeps_the_record(self):
        """SIGTERM closes every tunnel, and a persistent one comes back."""
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], persist=True)
        tgtest.check_daemon_stopped_cleanly(w)
        self.assertTrue(self.record_of(path).exists())
        w.start_daemon()
        self.wait_up(path)
        self.assertEqual(self.echo("client", port), b"hello")

    def test_tunnelgatectl_persist(self):
        w = self.w
        port = free_port(w)
        r = w.ctl(ALICE, "open", "gw", "-L", f"127.0.0.1:{port}:intra:9000", "--persist",
                  "--json", timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        opened = json.loads(r.stdout)
        self.assertTrue(opened["persistent"])
        self.assertTrue(opened["reconnect"])
        saved = read_record(self.record_of(opened["path"]))
        self.assertEqual(saved["agent"], str(w.users[ALICE].agent_sock))

    def test_persist_needs_credentials_it_can_open_again(self):
        w = self.w
        forwards = [f"L 127.0.0.1:{free_port(w)}:intra:9000"]
        cases = (
            ({"agent-fd": V("h", FdConnect(w.users[ALICE].agent_sock))}, "agent-fd"),
            ({"identity-fd": V("h", FdOpen(w.users[ALICE].key))}, "identity-fd"),
            ({"agent": V("s", str(w.users[ALICE].agent_sock)),
              "bind-to-caller": V("b", True)}, "bind-to-caller"),
            ({"agent": V("s", str(w.users[ALICE].agent_sock)),
              "reconnect": V("b", False)}, "reconnect false"),
        )
        for options, words in cases:
            with self.subTest(words):
                options["persist"] = V("b", True)
                self.assertDBusError("InvalidArgument", user_bus(ALICE).call, BUS, MPATH,
                                     MIFACE, "OpenTunnel", "sasa{sv}",
                                     ["gw", forwards, options],
                                     contains=["Option 'persist'", words])
        self.assertEqual(self.paths(), [])
        self.assertEqual(list(self.records_dir().glob("*.tunnel")), [])


class BrokenRecordTest(RestoreTestCase):

    def test_corrupt_record_is_skipped(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], persist=True)
        self.kill_daemon()
        corrupt = self.records_dir() / "9000.tunnel"
        corrupt.write_text("[Tunnel]\nid=9000\nthis is not a record\n")
        os.chmod(corrupt, 0o600)
        d = w.start_daemon()
        self.wait_up(path)
        self.assertEqual(self.echo("client", port), b"hello")
        self.assertRegex(d.log(), r"WARNING.*persistent tunnels: .*9000\.tunnel")
        self.assertTrue(corrupt.exists())                  # left in place
        other = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"])
        self.assertGreater(int(other.rsplit("/", 1)[1]), 9000)

    def test_forbidden_server_is_dropped(self):
        w = self.w
        kept = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], persist=True)
        dropped = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], persist=True,
                            destination="gw:2222")
        self.assertTrue(self.record_of(dropped).exists())
        self.kill_daemon()
        w.write_config("policy.conf", POLICY.replace("PermitServer gw",
                                                     "PermitServer gw:22"))
        d = w.start_daemon()
        self.wait_up(kept)
        tid = dropped.rsplit("/", 1)[1]
        d.wait_log(rf"persistent tunnel {tid} of {ALICE} not restored: PermitServer .*"
                   r"its record is removed", timeout=10 * SLOW)
        self.assertEqual(self.paths(), [kept])
        self.assertFalse(self.record_of(dropped).exists())
        self.assertTrue(self.record_of(kept).exists())


class AutostartTest(RestoreTestCase):

    def write_profile(self, autostart="yes", allow=BOB, user=BOB):
        w = self.w
        key = tgtest.profile_key(w, BOB, "auto_ed25519")
        text = ("Description autostarted\n"
                "Server gw\n"
                "User tg-bob\n"
                f"IdentityFile {key}\n"
                f"HostKey {w.host_key_fingerprint}\n"
                f'Forward "L 127.0.0.1:{self.port}:intra:9000"\n'
                f"AllowUsers {allow}\n"
                f"Autostart {autostart}\n"
                f"AutostartUser {user}\n")
        return w.write_config("profiles.d/auto.conf", text)

    def autostarted(self):
        return [t for t in list_tunnels(self.w, ADMIN) if t[3] == "tg-bob@gw:22"]

    def test_autostart_profile(self):
        w = self.w
        self.port = free_port(w)
        self.write_profile()
        d = self.restart()
        wait_for(lambda: len(self.autostarted()) == 1, timeout=10 * SLOW, what="the tunnel")
        path = self.autostarted()[0][0]
        self.wait_up(path, user=ADMIN)
        self.assertEqual(prop(w, ADMIN, path, "Owner"), w.users[BOB].uid)
        self.assertTrue(prop(w, ADMIN, path, "Persistent"))
        self.assertTrue(prop(w, ADMIN, path, "Reconnect"))
        self.assertIn("autostarted", prop(w, ADMIN, path, "Description"))
        self.assertEqual(self.echo("client", self.port), b"hello")
        self.assertRegex(d.log(), r"profile auto autostarted as tunnel \d+ of tg-bob")
        self.assertEqual(list(self.records_dir().glob("*.tunnel")), [])   # not stored

        # kill -9 and a start: up again, from the profile
        self.restart()
        wait_for(lambda: len(self.autostarted()) == 1, timeout=10 * SLOW,
                 what="the tunnel again")
        path = self.autostarted()[0][0]
        self.wait_up(path, user=ADMIN)
        self.assertEqual(self.echo("client", self.port, b"again"), b"again")

        # a reload with another tunnel running starts no second one
        self.reload()
        self.assertEqual(len(self.autostarted()), 1)
        # Autostart no: the reload closes it
        self.write_profile(autostart="no")
        mark = len(w.daemon.log())
        self.reload()
        wait_for(lambda: self.autostarted() == [], timeout=10 * SLOW,
                 what="the tunnel closed")
        self.assertIn("no longer autostarts it for tg-bob", w.daemon.log()[mark:])
        # and yes again: the reload opens it
        self.write_profile()
        self.reload()
        wait_for(lambda: len(self.autostarted()) == 1, timeout=10 * SLOW,
                 what="the tunnel back")

    def test_autostart_user_not_admitted(self):
        w = self.w
        self.port = free_port(w)
        self.write_profile(allow=ALICE)
        d = self.restart()
        d.wait_log(r"profile auto not autostarted for tg-bob: AllowUsers at .*auto\.conf:7",
                   timeout=10 * SLOW)
        self.assertEqual(self.paths(), [])


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, nftables)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

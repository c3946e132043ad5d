#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Who may do what with tunnelgated: the polkit gate (real polkitd with
50-tunnelgate-test.rules: alice and bob may open, admin may do everything,
mallory nothing) and the project's bus policy, exercised as the real users;
a caller whose account is gone; a real authentication agent (pkttyagent)
asked only when the call allows interaction, never for optional actions.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_authorization.py -v
(exits 77 = skipped when not root).
"""

import os
import shlex
import shutil
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busclient  # noqa: E402
import tgtest  # noqa: E402
import world  # noqa: E402
from tgtest import (ALICE, BOB, MALLORY, ADMIN, BUS, MPATH, MIFACE, TIFACE, PROPS, OM,  # noqa: E402
                    BUSCTL_TIMEOUT, V, UserBus, DaemonTestCase, agent_option, busctl_open,
                    busctl_open_ok, can_listen, close_all_tunnels, daemon_listeners,
                    daemon_tcp_sockets, free_port, list_tunnels, prop, wait_for)

NOT_AUTHORIZED = "org.tunnelgate.Error.NotAuthorized"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
COUNTERS = {"BytesSent", "BytesReceived", "ActiveConnections", "TotalConnections"}
ALLOW_INTERACTIVE = busclient.ALLOW_INTERACTIVE_AUTHORIZATION


def setUpModule():
    tgtest.start_module_world([ALICE, BOB, MALLORY, ADMIN], [ALICE, BOB, MALLORY, ADMIN])


def tearDownModule():
    tgtest.stop_module_world()


class AuthzTestCase(DaemonTestCase):
    """Each test gets a fresh tunnel of alice's (self.path, port self.port)."""

    def setUp(self):
        w = self.w
        self.addCleanup(close_all_tunnels, w)
        self.port = free_port(w)
        self.spec = f"L 127.0.0.1:{self.port}:intra:80"
        self.path = busctl_open_ok(w, ALICE, "tg-alice@gw", [self.spec], agent_option(w, ALICE))
        self.assertEqual(prop(w, ALICE, self.path, "State"), "up")

    def user_bus(self, user):
        ub = UserBus(self.w, user)
        self.addCleanup(ub.close)
        return ub

    def snapshot(self):
        """What must not change: alice's tunnel (minus counters), all tunnels, listeners."""
        w = self.w
        out = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, self.path, PROPS, "GetAll", "s",
                       TIFACE, json=True)
        props = {k: v["data"] for k, v in out["data"][0].items() if k not in COUNTERS}
        return props, list_tunnels(w, ADMIN), daemon_listeners(w.daemon.pid)

    def assertAliceTunnelWorks(self):
        w = self.w
        self.assertEqual(prop(w, ALICE, self.path, "State"), "up")
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{self.port}/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.encode(), w.intranet_page)

    def denied(self, ub, path, iface, member, signature="", args=(), flags=0,
               error=NOT_AUTHORIZED):
        with self.assertRaises(busclient.DBusError) as cm:
            ub.call(BUS, path, iface, member, signature, args, flags=flags)
        self.assertEqual(cm.exception.name, error,
                         f"{iface}.{member} as {ub.user}: {cm.exception}")
        return cm.exception.message


# ----------------------------------------------------------------------------


class MalloryTest(AuthzTestCase):
    """polkit denies mallory everything: every method, nothing changes."""

    def calls(self, mallory_port):
        sock = str(self.w.users[MALLORY].agent_sock)
        p = self.path
        return [
            (MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
             ["tg-mallory@gw", [f"L 127.0.0.1:{mallory_port}:intra:80"],
              {"agent": V("s", sock)}]),
            (MPATH, MIFACE, "CloseTunnel", "o", [p]),
            (MPATH, MIFACE, "ListTunnels", "", []),
            (MPATH, MIFACE, "CheckForward", "ss", ["tg-mallory@gw", "L 127.0.0.1:0:intra:80"]),
            (MPATH, MIFACE, "ReloadPolicy", "", []),
            (MPATH, MIFACE, "GetFirewall", "", []),
            (MPATH, MIFACE, "Audit", "", []),
            (MPATH, OM, "GetManagedObjects", "", []),
            (p, TIFACE, "Close", "", []),
            (p, TIFACE, "AddForward", "s", ["L 127.0.0.1:0:intra:9000"]),
            (p, TIFACE, "RemoveForward", "s", [self.spec]),
            (p, PROPS, "Get", "ss", [TIFACE, "State"]),
            (p, PROPS, "Get", "ss", [TIFACE, "Forwards"]),
            (p, PROPS, "GetAll", "s", [TIFACE]),
        ]

    def test_every_method_denied_and_nothing_changes(self):
        w = self.w
        observer = self.user_bus(ADMIN)
        observer.add_match(f"type='signal',sender='{BUS}'")
        observer.call(BUS, MPATH, MIFACE, "ListTunnels")   # manage: hears every tunnel
        observer.signals()
        mallory = self.user_bus(MALLORY)
        before = self.snapshot()
        mport = free_port(w)
        for flags in (0, ALLOW_INTERACTIVE):
            for path, iface, member, sig, args in self.calls(mport):
                with self.subTest(method=f"{iface}.{member}", flags=flags):
                    msg = self.denied(mallory, path, iface, member, sig, args, flags=flags)
                    # polkit said no (not "needs authentication")
                    self.assertIn("tg-mallory", msg)
                    self.assertIn("org.tunnelgate.", msg)
        self.assertEqual(self.snapshot(), before)
        self.assertTrue(can_listen(w, mport))
        self.assertEqual(daemon_tcp_sockets(w.daemon.pid, mport), [])
        # no tunnel came or went, no state changed: the daemon said nothing
        time.sleep(1.5)      # counters would be published within a second
        self.assertEqual(observer.signals(), [])
        self.assertAliceTunnelWorks()
        self.assertEqual([e[0] for e in list_tunnels(w, ADMIN)], [self.path])
        # and it would have heard: alice's traffic is announced to it
        heard = []
        wait_for(lambda: heard.extend(observer.signals()) or
                 any(s["path"] == self.path and "BytesSent" in s["body"][1] for s in heard),
                 timeout=5, what="the observer to hear alice's counters")

        # the denials are logged, with mallory's uid and the method
        log = w.daemon.log()
        uid = w.users[MALLORY].uid
        for member in ("OpenTunnel", "CloseTunnel", "ListTunnels", "CheckForward",
                       "ReloadPolicy", "GetFirewall", "Audit", "GetManagedObjects", "Close",
                       "AddForward",
                       "RemoveForward", "Get", "GetAll"):
            self.assertRegex(log, rf"denied {member} from :\S+ \(uid {uid}\)",
                             f"no denial of {member} logged")

    def test_busctl_as_mallory(self):
        w = self.w
        r = busctl_open(w, MALLORY, "tg-mallory@gw", ["L 127.0.0.1:0:intra:80"],
                        agent_option(w, MALLORY))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not allowed org.tunnelgate.open", r.stderr)
        for args in (["call", BUS, MPATH, MIFACE, "ListTunnels"],
                     ["call", BUS, self.path, TIFACE, "Close"],
                     ["get-property", BUS, self.path, TIFACE, "Forwards"],
                     ["introspect", BUS, self.path, TIFACE]):
            with self.subTest(args=args):
                r = w.busctl(MALLORY, BUSCTL_TIMEOUT, *args)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertNotIn("intra", r.stdout)
        self.assertEqual(list_tunnels(w, ADMIN)[0][0], self.path)
        self.assertAliceTunnelWorks()

    def test_public_parts_stay_public(self):
        """Manager properties and introspection need no authorization."""
        w = self.w
        mallory = self.user_bus(MALLORY)
        self.assertIsInstance(mallory.get(BUS, MPATH, MIFACE, "Version"), str)
        # the default policy's ListenerGuard yes puts the firewall in force
        self.assertIs(mallory.get(BUS, MPATH, MIFACE, "Enforcing"), True)
        (xml,) = mallory.call(BUS, MPATH, "org.freedesktop.DBus.Introspectable", "Introspect")
        self.assertIn("org.tunnelgate.Manager1", xml)
        r = w.busctl(MALLORY, BUSCTL_TIMEOUT, "get-property", BUS, MPATH, MIFACE, "Version")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_malformed_calls_refused_before_polkit(self):
        """Validation comes first: mallory's malformed call gets InvalidArgument."""
        mallory = self.user_bus(MALLORY)
        self.denied(mallory, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                    ["tg-mallory@gw", ["L nonsense"], {}],
                    error="org.tunnelgate.Error.InvalidArgument")
        self.denied(mallory, self.path, TIFACE, "AddForward", "s", ["L nonsense"],
                    error="org.tunnelgate.Error.InvalidArgument")
        self.assertAliceTunnelWorks()


# ----------------------------------------------------------------------------


class BusPolicyTest(AuthzTestCase):

    def test_properties_set_refused_by_bus(self):
        for user in (MALLORY, ALICE, BOB):
            ub = self.user_bus(user)
            with self.subTest(user=user):
                self.denied(ub, self.path, PROPS, "Set", "ssv", [TIFACE, "State", V("s", "up")],
                            error=ACCESS_DENIED)
                self.denied(ub, MPATH, PROPS, "Set", "ssv",
                            [MIFACE, "Enforcing", V("b", False)], error=ACCESS_DENIED)
                # an interface the policy does not list
                self.denied(ub, MPATH, "org.tunnelgate.Secret1", "Anything", error=ACCESS_DENIED)
        r = self.w.busctl(ALICE, BUSCTL_TIMEOUT, "set-property", BUS, self.path, TIFACE,
                          "State", "s", "closed")
        self.assertNotEqual(r.returncode, 0)
        self.assertAliceTunnelWorks()

    def test_only_root_owns_the_name(self):
        ub = self.user_bus(ALICE)
        with self.assertRaises(busclient.DBusError) as cm:
            ub.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                    "RequestName", "su", [BUS, 4])
        self.assertEqual(cm.exception.name, ACCESS_DENIED, str(cm.exception))
        (owner,) = ub.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", [BUS])
        self.assertEqual(owner, self.w.daemon.pid)


class UnidentifiedCallerTest(AuthzTestCase):
    """A caller the daemon cannot name is denied everything before polkit is
    asked, and nothing changes. The bus itself refuses to connect a uid with
    no account, so the caller is a user whose account was deleted while their
    connection stayed open."""

    GHOST = "tg-ghost"

    def test_deleted_account_denied(self):
        w = self.w
        u = w.add_user(self.GHOST)
        ub = UserBus(w, self.GHOST)
        self.addCleanup(self.remove_ghost, u, ub)
        # while the account exists, the caller is identified and polkit decides
        self.assertIn("org.tunnelgate.open needs authentication",
                      self.denied(ub, MPATH, MIFACE, "ListTunnels"))
        r = subprocess.run(["userdel", "--force", self.GHOST], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        before = self.snapshot()
        port = free_port(w)
        calls = [(MPATH, MIFACE, "ListTunnels", "", []),
                 (MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                  ["tg-alice@gw", [f"L 127.0.0.1:{port}:intra:80"],
                   {"agent": V("s", str(w.users[ALICE].agent_sock))}]),
                 (MPATH, MIFACE, "CloseTunnel", "o", [self.path]),
                 (self.path, TIFACE, "Close", "", []),
                 (self.path, PROPS, "Get", "ss", [TIFACE, "Forwards"])]
        for path, iface, member, sig, args in calls:
            with self.subTest(member=member):
                message = self.denied(ub, path, iface, member, sig, args,
                                      flags=ALLOW_INTERACTIVE)
                self.assertIn(f"Caller uid {u.uid} has no user account", message)
        self.assertEqual(self.snapshot(), before)
        self.assertTrue(can_listen(w, port))
        self.assertIn(f"(uid {u.uid}): Caller uid {u.uid} has no user account",
                      w.daemon.log())
        self.assertAliceTunnelWorks()

    def remove_ghost(self, u, ub):
        ub.close()
        self.w.users.pop(self.GHOST, None)
        subprocess.run(["userdel", "--force", "--remove", self.GHOST], capture_output=True)
        subprocess.run(["groupdel", self.GHOST], capture_output=True)
        shutil.rmtree(u.home, ignore_errors=True)


# ----------------------------------------------------------------------------


class OtherUserTest(AuthzTestCase):
    """bob may open tunnels, but not see or touch alice's."""

    def test_bob_cannot_touch_alices_tunnel(self):
        bob = self.user_bus(BOB)
        before = self.snapshot()
        p = self.path
        for path, iface, member, sig, args in [
                (p, PROPS, "Get", "ss", [TIFACE, "State"]),
                (p, PROPS, "Get", "ss", [TIFACE, "Destination"]),
                (p, PROPS, "GetAll", "s", [TIFACE]),
                (p, TIFACE, "Close", "", []),
                (p, TIFACE, "AddForward", "s", ["L 127.0.0.1:0:intra:9000"]),
                (p, TIFACE, "RemoveForward", "s", [self.spec]),
                (MPATH, MIFACE, "CloseTunnel", "o", [p])]:
            with self.subTest(method=f"{iface}.{member}"):
                msg = self.denied(bob, path, iface, member, sig, args)
                self.assertIn("org.tunnelgate.manage", msg)
        self.assertEqual(self.snapshot(), before)
        self.assertAliceTunnelWorks()

    def test_lists_show_own_tunnels_only(self):
        w = self.w
        bpath = busctl_open_ok(w, BOB, "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                               agent_option(w, BOB))
        self.assertEqual([e[0] for e in list_tunnels(w, BOB)], [bpath])
        self.assertEqual([e[0] for e in list_tunnels(w, ALICE)], [self.path])
        bob = self.user_bus(BOB)
        (objects,) = bob.call(BUS, MPATH, OM, "GetManagedObjects")
        self.assertEqual(list(objects), [bpath])
        self.assertEqual(objects[bpath][TIFACE]["Owner"], w.users[BOB].uid)
        alice = self.user_bus(ALICE)
        (objects,) = alice.call(BUS, MPATH, OM, "GetManagedObjects")
        self.assertEqual(list(objects), [self.path])
        # and alice cannot touch bob's
        self.denied(alice, bpath, TIFACE, "Close")
        self.denied(alice, bpath, PROPS, "GetAll", "s", [TIFACE])
        self.assertEqual(prop(w, BOB, bpath, "State"), "up")
        self.assertAliceTunnelWorks()

    def test_interactive_authorization_messages(self):
        """bob lacks manage; the rules leave it to the defaults (auth_admin_keep),
        so polkit asks for authentication, and there is no authentication agent."""
        w = self.w
        msgs = {}
        for flag in ("no", "yes"):
            r = w.busctl(BOB, BUSCTL_TIMEOUT, f"--allow-interactive-authorization={flag}",
                         "call", BUS, self.path, TIFACE, "Close")
            self.assertNotEqual(r.returncode, 0, r.stdout)
            msgs[flag] = r.stderr.strip()
        bob = self.user_bus(BOB)
        self.denied(bob, self.path, TIFACE, "Close", flags=0)
        self.denied(bob, self.path, TIFACE, "Close", flags=ALLOW_INTERACTIVE)
        self.assertAliceTunnelWorks()
        # without the flag: the message says the call did not allow interaction
        self.assertIn("org.tunnelgate.manage", msgs["no"])
        self.assertRegex(msgs["no"], r"does not allow interactive authorization")
        self.assertIn("--allow-interactive-authorization", msgs["no"])
        # with it: it must not claim the call did not allow interaction, nor
        # advise a flag the caller already set
        self.assertIn("org.tunnelgate.manage", msgs["yes"])
        self.assertNotEqual(msgs["yes"], msgs["no"])
        self.assertNotRegex(msgs["yes"], r"does not allow interactive authorization")
        self.assertNotIn("--allow-interactive-authorization=yes", msgs["yes"])
        self.assertRegex(msgs["yes"], r"(?i)authenticat")


# ----------------------------------------------------------------------------


class AdminTest(AuthzTestCase):

    def test_admin_sees_and_closes_everyones_tunnels(self):
        w = self.w
        bpath = busctl_open_ok(w, BOB, "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                               agent_option(w, BOB))
        entries = {e[0]: e for e in list_tunnels(w, ADMIN)}
        self.assertEqual(set(entries), {self.path, bpath})
        self.assertEqual(entries[self.path][2], w.users[ALICE].uid)
        self.assertEqual(entries[self.path][3], "tg-alice@gw:22")
        self.assertEqual(entries[self.path][5], [self.spec])
        self.assertEqual(entries[bpath][2], w.users[BOB].uid)
        admin = self.user_bus(ADMIN)
        (objects,) = admin.call(BUS, MPATH, OM, "GetManagedObjects")
        self.assertEqual(set(objects), {self.path, bpath})
        self.assertEqual(objects[self.path][TIFACE]["Forwards"], [self.spec])
        self.assertEqual(prop(w, ADMIN, self.path, "Destination"), "tg-alice@gw:22")
        self.assertEqual(prop(w, ADMIN, bpath, "State"), "up")
        # close alice's with CloseTunnel, bob's with Tunnel1.Close
        r = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o",
                     self.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(can_listen(w, self.port))
        self.assertEqual(daemon_tcp_sockets(w.daemon.pid, self.port), [])
        r = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, bpath, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(list_tunnels(w, ADMIN), [])
        self.assertEqual(list_tunnels(w, ALICE), [])
        self.assertIn(f"Close() by {ADMIN}", w.daemon.log())

    def test_manage_only_methods(self):
        """ReloadPolicy passes authorization for admin only; CheckForward
        answers alice (open)."""
        admin = self.user_bus(ADMIN)
        alice = self.user_bus(ALICE)
        self.assertEqual(admin.call(BUS, MPATH, MIFACE, "ReloadPolicy", "", []), [])
        msg = self.denied(alice, MPATH, MIFACE, "ReloadPolicy")
        self.assertIn("org.tunnelgate.manage", msg)
        allowed, why = alice.call(BUS, MPATH, MIFACE, "CheckForward", "ss",
                                  ["tg-alice@gw", "L 127.0.0.1:0:intra:80"])
        self.assertTrue(allowed)
        self.assertIn("PermitOpen", why)
        msg = self.denied(alice, self.path, TIFACE, "AddForward", "s", ["R 0:intra:9000"])
        self.assertIn("org.tunnelgate.open-remote", msg)
        self.assertAliceTunnelWorks()


# ----------------------------------------------------------------------------


class BindAnyTest(AuthzTestCase):

    def setUp(self):
        super().setUp()
        # the policy must allow non-loopback listeners, so that polkit decides
        self.w.write_config("policy.d/50-gateway-ports.conf", "GatewayPorts clientspecified\n")
        self.assertEqual(self.w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE,
                                       "ReloadPolicy").returncode, 0)

    def tearDown(self):
        (self.w.config_dir / "policy.d/50-gateway-ports.conf").unlink()
        self.w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        super().tearDown()

    def test_non_loopback_listener_needs_bind_any(self):
        w = self.w
        alice = self.user_bus(ALICE)
        asock = {"agent": V("s", str(w.users[ALICE].agent_sock))}
        port = free_port(w, hosts=("0.0.0.0",))
        for bind in ("0.0.0.0", w.client_ip, "*", "[::]", ""):
            spec = f"L {bind}:{port}:intra:80" if bind else f"L :{port}:intra:80"
            with self.subTest(spec=spec):
                msg = self.denied(alice, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                                  ["tg-alice@gw", [spec], asock])
                self.assertIn("org.tunnelgate.bind-any", msg)
                self.assertEqual(daemon_tcp_sockets(w.daemon.pid, port), [])
        self.assertEqual([e[0] for e in list_tunnels(w, ADMIN)], [self.path])
        # admin may
        admin = self.user_bus(ADMIN)
        spec = f"L 0.0.0.0:{port}:intra:80"
        (path,) = admin.call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                             ["tg-admin@gw", [spec],
                              {"agent": V("s", str(w.users[ADMIN].agent_sock))}], timeout=120)
        self.assertEqual(prop(w, ADMIN, path, "Listeners"), [[spec, "0.0.0.0", port]])
        self.assertIn(("0.0.0.0", port), daemon_listeners(w.daemon.pid))
        r = tgtest.curl(w, ADMIN, f"http://{w.client_ip}:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        # another local user is kept out of it (ListenerUsers owner)
        r = tgtest.curl(w, ALICE, f"http://{w.client_ip}:{port}/")
        self.assertEqual(r.returncode, 7, r.stderr)
        r = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(can_listen(w, port, "0.0.0.0"))
        self.assertAliceTunnelWorks()


# ----------------------------------------------------------------------------


class PolkitDetailsTest(AuthzTestCase):
    """polkit rules see the destination and the forwards of OpenTunnel."""

    RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") != 0)
        return;
    if (subject.user == "tg-admin")
        return polkit.Result.YES;
    if (subject.user != "tg-alice" || action.id != "org.tunnelgate.open")
        return polkit.Result.NO;
    var dest = action.lookup("destination");
    var fwds = action.lookup("forwards");
    polkit.log("tunnelgate-details: destination=" + dest + " forwards=" + fwds);
    if (dest === undefined)
        return polkit.Result.YES;           // Close, Get, List ...
    var each = [];
    for (var i = 0; i < parseInt(action.lookup("forward.count")); i++)
        each.push(action.lookup("forward." + i));
    polkit.log("tunnelgate-details: each=" + JSON.stringify(each));
    if (fwds === undefined)                  // a ';' in a spec: only forward.N
        return polkit.Result.NO;
    if (dest == "tg-alice@gw:22" && fwds.indexOf(":intra:9000") < 0)
        return polkit.Result.YES;
    return polkit.Result.NO;
});
"""

    def test_rules_see_destination_and_forwards(self):
        w = self.w
        w.set_polkit_rules(self.RULES)
        self.addCleanup(w.restore_polkit_rules)
        alice = self.user_bus(ALICE)
        asock = {"agent": V("s", str(w.users[ALICE].agent_sock))}
        (ok,) = alice.call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                           ["tg-alice@gw", ["L 127.0.0.1:0:intra:80", "L 127.0.0.1:0:intra:81"],
                            asock], timeout=120)
        self.assertEqual(prop(w, ALICE, ok, "State"), "up")
        self.denied(alice, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                    ["tg-alice@gw", ["L 127.0.0.1:0:intra:80", "L 127.0.0.1:0:intra:9000"],
                     asock])
        self.denied(alice, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                    ["tg-alice@gw:2222", ["L 127.0.0.1:0:intra:80"], asock])
        # the user defaults to the caller's name in the detail too
        (ok2,) = alice.call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                            ["gw", ["L 127.0.0.1:0:intra:80"], asock], timeout=120)
        self.assertEqual(prop(w, ALICE, ok2, "Destination"), "tg-alice@gw:22")
        log = w.proc("polkitd").log()
        self.assertIn("tunnelgate-details: destination=tg-alice@gw:22 forwards="
                      "L 127.0.0.1:0:intra:80;L 127.0.0.1:0:intra:9000", log)
        self.assertIn("tunnelgate-details: destination=tg-alice@gw:2222", log)
        self.assertIn('tunnelgate-details: each=["L 127.0.0.1:0:intra:80",'
                      '"L 127.0.0.1:0:intra:9000"]', log)
        # a ';' in a socket path: the joined form could not be split back, so
        # it is left out and each forward is its own detail
        self.denied(alice, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                    ["tg-alice@gw", ["L 127.0.0.1:0:intra:80",
                                     "L /tmp/tg;x.sock:intra:80"], asock])
        log = w.proc("polkitd").log()
        self.assertIn('tunnelgate-details: each=["L 127.0.0.1:0:intra:80",'
                      '"L /tmp/tg;x.sock:intra:80"]', log)
        self.assertIn("tunnelgate-details: destination=tg-alice@gw:22 forwards=undefined", log)
        self.assertEqual(sorted(e[0] for e in list_tunnels(w, ADMIN)),
                         sorted([self.path, ok, ok2]))


# ----------------------------------------------------------------------------


class InteractiveAgentTest(AuthzTestCase):
    """A real polkit authentication agent (pkttyagent, registered for the
    caller's process) and a user with a password: polkit asks the agent only
    when the call allows interactive authorization, and never for an optional
    action. The caller runs in a mount namespace where the private bus is at
    the system bus's path, because polkit-agent-helper-1 is setuid and so
    ignores DBUS_SYSTEM_BUS_ADDRESS; it answers the agent through a pty."""

    USER, ADMIN2 = "tg-pkuser", "tg-pkadmin"
    PASSWORD = "Tg-agent-pw-7"
    RULES = """
polkit.addRule(function(action, subject) {
    if (subject.user == "tg-pkuser" && action.id == "org.tunnelgate.open")
        return polkit.Result.AUTH_SELF;
    if (subject.user == "tg-pkadmin" && action.id == "org.tunnelgate.open")
        return polkit.Result.YES;
    if (subject.user == "tg-pkadmin" && action.id == "org.tunnelgate.manage")
        return polkit.Result.AUTH_SELF;
});
"""
    DRIVER = r"""
import os, pty, select, sys, time
password, script = sys.argv[1].encode(), sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", script])
out, answered, deadline = b"", 0, time.time() + 90
while time.time() < deadline:
    if select.select([fd], [], [], 0.5)[0]:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
        if out.count(b"Password:") > answered:
            time.sleep(1)         # the agent turns echo off with TCSAFLUSH first
            os.write(fd, password + b"\n")
            answered += 1
sys.stdout.write(out.decode(errors="replace"))
print("EXIT", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""

    @classmethod
    def setUpClass(cls):
        w = cls.W
        for name in (cls.USER, cls.ADMIN2):
            if name not in w.users:
                w.add_user(name)
                w.start_agent(name)
                subprocess.run(["chpasswd"], input=f"{name}:{cls.PASSWORD}\n", text=True,
                               check=True)
        w.set_polkit_rules(cls.RULES, name="60-interactive.rules")

    @classmethod
    def tearDownClass(cls):
        cls.W.restore_polkit_rules()

    def with_agent(self, user, busctl_args, interactive=True, password=None):
        """busctl ARGS as `user`, with pkttyagent registered for busctl's process
        and answering `password`; returns (exit status, what the terminal showed)."""
        w = self.w
        u = w.users[user]
        d = w.dir / f"agent-{user}"
        d.mkdir(exist_ok=True)
        os.chown(d, u.uid, u.gid)
        fifo = d / "registered"
        if fifo.exists():
            fifo.unlink()
        flag = "yes" if interactive else "no"
        script = (f"mkfifo {fifo}\n"
                  # the agent serves this shell's process, which becomes busctl
                  f"pkttyagent --process $$ --notify-fd 3 3>{fifo} &\n"
                  f"cat {fifo} >/dev/null\n"
                  f"exec busctl --system --allow-interactive-authorization={flag} "
                  f"--timeout=60 {' '.join(shlex.quote(str(a)) for a in busctl_args)}\n")
        (d / "driver.py").write_text(self.DRIVER)
        bus = w.dir / "bus" / "system_bus_socket"
        inner = ("mkdir -p /run/dbus && mount -t tmpfs -o mode=0755 tmpfs /run/dbus && "
                 f"ln -s {bus} /run/dbus/system_bus_socket && "
                 f"exec setpriv --reuid={u.uid} --regid={u.gid} --init-groups "
                 f"env HOME={u.home} DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket "
                 f"/usr/bin/python3 {d / 'driver.py'} \"$0\" \"$1\"")
        r = w.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner,
                   password or self.PASSWORD, script], ns="client", timeout=150)
        self.assertEqual(r.returncode, 0, r.stderr)
        status = int(r.stdout.rsplit("EXIT ", 1)[1].split()[0])
        return status, r.stdout

    def open_args(self, user, port):
        return ["call", BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}", f"{user}@gw", "1",
                f"L 127.0.0.1:{port}:intra:80", "1", "agent", "s",
                self.w.users[user].agent_sock]

    def polkit_log(self):
        return self.w.proc("polkitd").log()

    def test_agent_asked_only_when_the_call_allows_it(self):
        w = self.w
        port = free_port(w)
        # not allowed by the call: the agent is never asked, nothing opens
        mark = len(self.polkit_log())
        status, tty = self.with_agent(self.USER, self.open_args(self.USER, port),
                                      interactive=False)
        self.assertNotEqual(status, 0, tty)
        self.assertIn("does not allow interactive authorization", tty)
        self.assertNotIn("AUTHENTICATING", tty)
        self.assertNotIn("authenticated", self.polkit_log()[mark:])
        self.assertTrue(can_listen(w, port))
        # allowed: the agent asks for the password, polkit grants, the tunnel opens
        status, tty = self.with_agent(self.USER, self.open_args(self.USER, port))
        self.assertEqual(status, 0, tty)
        self.assertIn("AUTHENTICATING FOR org.tunnelgate.open", tty)
        self.assertIn("AUTHENTICATION COMPLETE", tty)
        self.assertRegex(self.polkit_log()[mark:],
                         r"successfully authenticated as unix-user:tg-pkuser to gain "
                         r"ONE-SHOT authorization for action org.tunnelgate.open")
        (path,) = [e[0] for e in list_tunnels(w, ADMIN) if e[2] == w.users[self.USER].uid]
        r = tgtest.curl(w, self.USER, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page)

    def test_wrong_password_opens_nothing(self):
        w = self.w
        port = free_port(w)
        status, tty = self.with_agent(self.USER, self.open_args(self.USER, port),
                                      password="not-the-password")
        self.assertNotEqual(status, 0, tty)
        self.assertIn("AUTHENTICATING FOR org.tunnelgate.open", tty)
        self.assertNotIn("AUTHENTICATION COMPLETE", tty)
        self.assertIn("org.tunnelgate.open", tty.rsplit("Call failed:", 1)[-1])
        self.assertTrue(can_listen(w, port))
        self.assertEqual([e for e in list_tunnels(w, ADMIN) if e[2] == w.users[self.USER].uid],
                         [])

    def test_optional_action_never_asks(self):
        """ListTunnels checks manage only as an option (to show others' tunnels):
        no prompt even with an agent and the call allowing it; the caller sees
        their own tunnels only. CloseTunnel of alice's tunnel needs manage, and
        asks."""
        w = self.w
        mark = len(self.polkit_log())
        status, tty = self.with_agent(self.ADMIN2, ["--json=short", "call", BUS, MPATH, MIFACE,
                                                    "ListTunnels"])
        self.assertEqual(status, 0, tty)
        self.assertNotIn("AUTHENTICATING", tty)
        self.assertNotIn(self.path, tty)
        status, tty = self.with_agent(self.ADMIN2, ["call", BUS, MPATH, MIFACE, "CloseTunnel",
                                                    "o", self.path])
        self.assertEqual(status, 0, tty)
        self.assertIn("AUTHENTICATING FOR org.tunnelgate.manage", tty)
        self.assertRegex(self.polkit_log()[mark:], r"authorization for action "
                         r"org.tunnelgate.manage")
        wait_for(lambda: self.path not in [e[0] for e in list_tunnels(w, ADMIN)], timeout=10,
                 what="alice's tunnel to be closed")


class ZDaemonExitTest(AuthzTestCase):
    """Last: after all the denials, the daemon stops cleanly on SIGTERM (under
    TG_VALGRIND=1: no valgrind errors, no definite leaks)."""

    def test_daemon_stops_cleanly(self):
        w = self.w
        res = tgtest.check_daemon_stopped_cleanly(w)
        self.assertEqual(res.returncode, 0)
        self.assertIn("denied", res.log)
        self.assertTrue(can_listen(w, self.port))


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

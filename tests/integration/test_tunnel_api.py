#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The D-Bus API of tunnelgated, used the way users use it: busctl and busclient
run as tg-alice (and bob), against the real daemon, sshd and polkitd of the
test world (world.py).

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_tunnel_api.py -v
(exits 77 = skipped when not root).
"""

import os
import re
import shutil
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
import world  # noqa: E402
from tgtest import (ALICE, BOB, MALLORY, ADMIN, BUS, MPATH, MIFACE, TIFACE, PROPS, OM,  # noqa: E402
                    BUSCTL_TIMEOUT, V, FdConnect, FdOpen, FdPipe, UserBus, DaemonTestCase,
                    agent_option, busctl_open, busctl_open_ok, can_listen, close_all_tunnels,
                    daemon_listeners, daemon_tcp_sockets, free_port, list_tunnels,
                    parse_object_path, prop, wait_for)

ALL_PROPERTIES = {"Id", "Owner", "Destination", "Description", "State", "Forwards",
                  "Listeners", "BytesSent", "BytesReceived", "ActiveConnections",
                  "TotalConnections", "LastError", "Created", "Reconnect", "Persistent",
                  "RetryAttempt", "NextRetry", "Reconnects"}
COUNTERS = ("BytesSent", "BytesReceived", "ActiveConnections", "TotalConnections")


def setUpModule():
    tgtest.start_module_world([ALICE, BOB, MALLORY, ADMIN], [ALICE, BOB, ADMIN])


def tearDownModule():
    tgtest.stop_module_world()


class ApiTestCase(DaemonTestCase):
    def setUp(self):
        self.addCleanup(close_all_tunnels, self.w)

    @property
    def pid(self):
        return self.w.daemon.pid

    def user_bus(self, user=ALICE):
        ub = UserBus(self.w, user)
        self.addCleanup(ub.close)
        return ub

    def open_as(self, ub, destination, forwards, options):
        """OpenTunnel through a UserBus; returns the path (raises DBusError)."""
        return ub.call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                       [destination, list(forwards), options], timeout=120)[0]

    def get_all(self, path, user=ALICE):
        """GetAll as `user` with busctl (json with types): {name: (type, value)}."""
        out = self.w.busctl(user, BUSCTL_TIMEOUT, "call", BUS, path, PROPS, "GetAll", "s",
                            TIFACE, json=True)
        return {k: (v["type"], v["data"]) for k, v in out["data"][0].items()}

    def values(self, path, user=ALICE):
        return {k: v for k, (t, v) in self.get_all(path, user).items()}

    def listener_port(self, path, user=ALICE):
        listeners = prop(self.w, user, path, "Listeners")
        self.assertEqual(len(listeners), 1, listeners)
        return listeners[0][2]

    def assertPortFree(self, port, hosts=("127.0.0.1",)):
        held = daemon_tcp_sockets(self.pid, port)
        self.assertEqual(held, [], f"tunnelgated still holds sockets on port {port}")
        for h in hosts:
            self.assertTrue(can_listen(self.w, port, h), f"{h}:{port} is not free")

    def assertNoTunnels(self, user=ALICE):
        self.assertEqual(list_tunnels(self.w, user), [])

    def assertGone(self, path):
        r = self.w.busctl(ALICE, "get-property", BUS, path, TIFACE, "State")
        self.assertNotEqual(r.returncode, 0, f"{path} still answers: {r.stdout}")
        self.assertNotIn(path, [e[0] for e in list_tunnels(self.w, ADMIN)])


# ----------------------------------------------------------------------------


class OpenTunnelTest(ApiTestCase):

    def test_busctl_open_properties_traffic_close(self):
        w = self.w
        alice = w.users[ALICE]
        port = free_port(w)
        spec = f"L 127.0.0.1:{port}:intra:80"
        # exactly as a user types it, with $SSH_AUTH_SOCK from her environment
        cmd = (f"busctl --system {BUSCTL_TIMEOUT} call {BUS} {MPATH} {MIFACE} OpenTunnel "
               f"'sasa{{sv}}' tg-alice@gw 1 '{spec}' 1 agent s \"$SSH_AUTH_SOCK\"")
        t0 = time.time()
        r = w.run_as(ALICE, ["sh", "-c", cmd], timeout=150)
        t1 = time.time()
        self.assertEqual(r.returncode, 0, r.stderr)
        path = parse_object_path(r.stdout)
        self.assertRegex(path, r"^/org/tunnelgate/TunnelGate1/tunnel/[0-9]+$")
        tid = path.rsplit("/", 1)[1]

        # the call returned once the tunnel was up: listening at once
        self.assertIn(("127.0.0.1", port), daemon_listeners(self.pid))

        # introspection, with the values busctl reads through GetAll
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "introspect", BUS, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^org\.tunnelgate\.Tunnel1\s+interface")
        for method in ("Close", "AddForward", "RemoveForward"):
            self.assertRegex(r.stdout, rf"(?m)^\.{method}\s+method")
        self.assertRegex(r.stdout, r'(?m)^\.State\s+property\s+s\s+"up"\s')
        self.assertRegex(r.stdout, rf'(?m)^\.Owner\s+property\s+u\s+{alice.uid}\s')
        self.assertRegex(r.stdout, rf'(?m)^\.Listeners\s+property\s+a\(ssq\)\s+1 "{spec}" '
                         rf'"127\.0\.0\.1" {port}\s')

        # get-property, one by one
        self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.assertEqual(prop(w, ALICE, path, "Forwards"), [spec])
        self.assertEqual(prop(w, ALICE, path, "Listeners"), [[spec, "127.0.0.1", port]])
        self.assertEqual(prop(w, ALICE, path, "Owner"), alice.uid)
        self.assertEqual(prop(w, ALICE, path, "Id"), tid)
        self.assertEqual(prop(w, ALICE, path, "Destination"), "tg-alice@gw:22")
        self.assertEqual(prop(w, ALICE, path, "LastError"), "")
        created = prop(w, ALICE, path, "Created")
        self.assertGreaterEqual(created, int((t0 - 1) * 1e6))
        self.assertLessEqual(created, int((t1 + 1) * 1e6))

        # every property, with its D-Bus type
        props = self.get_all(path)
        self.assertEqual(set(props), ALL_PROPERTIES)
        types = {k: t for k, (t, v) in props.items()}
        self.assertEqual(types, {"Id": "s", "Owner": "u", "Destination": "s",
                                 "Description": "s", "State": "s", "Forwards": "as",
                                 "Listeners": "a(ssq)", "BytesSent": "t",
                                 "BytesReceived": "t", "ActiveConnections": "u",
                                 "TotalConnections": "t", "LastError": "s", "Created": "t",
                                 "Reconnect": "b", "Persistent": "b", "RetryAttempt": "u",
                                 "NextRetry": "t", "Reconnects": "u"})
        for name, value in (("Reconnect", False), ("Persistent", False), ("RetryAttempt", 0),
                            ("NextRetry", 0), ("Reconnects", 0)):
            self.assertEqual(props[name][1], value, name)
        for c in COUNTERS:
            self.assertEqual(props[c][1], 0, c)

        # in ListTunnels
        self.assertIn((path, tid, alice.uid, "tg-alice@gw:22", "up", [spec]),
                      list_tunnels(w, ALICE))

        # traffic: the intranet page, through the tunnel
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.encode(), w.intranet_page)
        page = len(w.intranet_page)

        def counted(total):
            v = self.values(path)
            ok = (v["TotalConnections"] == total and v["ActiveConnections"] == 0 and
                  v["BytesReceived"] > page * total and v["BytesSent"] > 0)
            return v if ok else None
        v1 = wait_for(lambda: counted(1), timeout=5, what="counters after one request")
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/big.bin", text=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(tgtest.sha256_hex(r.stdout), w.intranet_big_sha256)
        v2 = wait_for(lambda: counted(2), timeout=5, what="counters after two requests")
        self.assertGreaterEqual(v2["BytesReceived"] - v1["BytesReceived"], 4 << 20)
        self.assertGreater(v2["BytesSent"], v1["BytesSent"])

        # Tunnel1.Close: when it returns, the port is free
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertPortFree(port)
        self.assertGone(path)

    def test_port_zero_and_close_tunnel(self):
        w = self.w
        spec = "L 127.0.0.1:0:intra:80"
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", [spec], agent_option(w, ALICE))
        listeners = prop(w, ALICE, path, "Listeners")
        self.assertEqual(len(listeners), 1, listeners)
        fwd, addr, port = listeners[0]
        self.assertEqual((fwd, addr), (spec, "127.0.0.1"))
        self.assertGreater(port, 0)
        self.assertIn(("127.0.0.1", port), daemon_listeners(self.pid))
        self.assertEqual(prop(w, ALICE, path, "Forwards"), [spec])
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        # Manager1.CloseTunnel
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "")
        self.assertPortFree(port)
        self.assertGone(path)

    def test_default_bind_is_both_loopbacks(self):
        w = self.w
        port = free_port(w, hosts=("127.0.0.1", "::1"))
        spec = f"L {port}:intra:80"
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", [spec], agent_option(w, ALICE))
        listeners = sorted(tuple(x[1:]) for x in prop(w, ALICE, path, "Listeners"))
        self.assertEqual(listeners, [("127.0.0.1", port), ("::1", port)])
        self.assertEqual(sorted(daemon_listeners(self.pid)), [("127.0.0.1", port), ("::1", port)])
        for url in (f"http://127.0.0.1:{port}/", f"http://[::1]:{port}/"):
            r = tgtest.curl(w, ALICE, url)
            self.assertEqual(r.stdout.encode(), w.intranet_page, f"{url}: {r.stderr}")
        # and "localhost" with port 0: one port chosen, on both addresses
        path0 = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L localhost:0:intra:80"],
                               agent_option(w, ALICE))
        l0 = prop(w, ALICE, path0, "Listeners")
        self.assertEqual(sorted(x[1] for x in l0), ["127.0.0.1", "::1"])
        self.assertEqual(len({x[2] for x in l0}), 1, l0)
        port0 = l0[0][2]
        self.assertGreater(port0, 0)
        r = tgtest.curl(w, ALICE, f"http://[::1]:{port0}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        for p, pt in ((path, port), (path0, port0)):
            r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, p, TIFACE, "Close")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertPortFree(pt, hosts=("127.0.0.1", "::1"))
        self.assertEqual(daemon_listeners(self.pid), [])

    def test_signals(self):
        w = self.w
        ub = self.user_bus(ALICE)
        ub.add_match(f"type='signal',sender='{BUS}'")
        ub.call(BUS, MPATH, MIFACE, "ListTunnels")   # the daemon now tells it about alice's
        spec = "L 127.0.0.1:0:intra:80"
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", [spec], agent_option(w, ALICE))
        port = self.listener_port(path)

        sigs = []

        def collect(pred, what, timeout=10):
            def step():
                sigs.extend(ub.signals())
                return [s for s in sigs if pred(s)]
            return wait_for(step, timeout=timeout, interval=0.1, what=what)

        def changed(s):
            return (s["member"] == "PropertiesChanged" and s["path"] == path and
                    s["interface"] == PROPS and s["body"][0] == TIFACE)

        added = collect(lambda s: s["member"] == "InterfacesAdded" and s["body"][0] == path,
                        "InterfacesAdded")
        self.assertEqual(len(added), 1)
        self.assertEqual(added[0]["path"], MPATH)
        self.assertEqual(added[0]["interface"], OM)
        # sent to alice's connection only: every property, as GetManagedObjects
        props = added[0]["body"][1][TIFACE]
        self.assertEqual(set(props), ALL_PROPERTIES)
        self.assertEqual((props["Id"], props["Owner"], props["State"], props["Forwards"]),
                         (path.rsplit("/", 1)[1], w.users[ALICE].uid, "connecting", [spec]))
        self.assertEqual(added[0]["destination"], ub.unique_name)
        up = collect(lambda s: changed(s) and s["body"][1].get("State") == "up", "State up")
        self.assertEqual(len(up), 1)

        # traffic: counters are announced (at most once a second) with values
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 3.2:
            r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
            self.assertEqual(r.returncode, 0, r.stderr)
            n += 1
        final = collect(lambda s: changed(s) and s["body"][1].get("TotalConnections") == n,
                        f"TotalConnections == {n} in PropertiesChanged")
        counter_sigs = [s for s in sigs if changed(s) and
                        set(s["body"][1]) & {"BytesSent", "BytesReceived", "TotalConnections"}]
        self.assertLessEqual(len(counter_sigs), 6,
                             f"counters announced more than once a second: {counter_sigs}")
        self.assertGreaterEqual(len(counter_sigs), 2, counter_sigs)
        last = self.values(path)
        self.assertEqual(final[0]["body"][1]["TotalConnections"], last["TotalConnections"])

        # a failed open: State and LastError with its text
        r = busctl_open(w, ALICE, "tg-alice@gw", [spec], [("identity", "s", "/etc/shadow")])
        self.assertNotEqual(r.returncode, 0)
        failed = collect(lambda s: s["member"] == "PropertiesChanged" and s["path"] != path
                         and s["body"][1].get("State") == "failed", "State failed")
        self.assertIn("/etc/shadow", failed[0]["body"][1]["LastError"])
        self.assertEqual(failed[0]["body"][2], [])
        bad_path = failed[0]["path"]
        collect(lambda s: s["member"] == "InterfacesRemoved" and s["body"][0] == bad_path,
                "InterfacesRemoved of the failed tunnel")

        # close: State closed, then InterfacesRemoved
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        collect(lambda s: changed(s) and s["body"][1].get("State") == "closed", "State closed")
        removed = collect(lambda s: s["member"] == "InterfacesRemoved" and s["body"][0] == path,
                          "InterfacesRemoved")
        self.assertEqual(removed[0]["body"][1], [TIFACE])
        self.assertEqual(removed[0]["path"], MPATH)
        # every signal was addressed to alice's connection, none broadcast
        for s in sigs:
            self.assertEqual(s["destination"], ub.unique_name, s)

    def test_others_hear_nothing(self):
        """Signals about a tunnel reach only connections that may read it: bob
        (open, not manage) hears nothing of alice's tunnel, even with a match
        rule for everything the daemon sends and after an authorized call of
        his own; the admin (manage) hears it all; a connection that never made
        an authorized call hears nothing at all."""
        w = self.w
        bob, admin, silent = self.user_bus(BOB), self.user_bus(ADMIN), self.user_bus(ADMIN)
        for ub in (bob, admin, silent):
            ub.add_match(f"type='signal',sender='{BUS}'")
        bob.call(BUS, MPATH, MIFACE, "ListTunnels")
        admin.call(BUS, MPATH, MIFACE, "ListTunnels")
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        port = self.listener_port(path)
        self.assertEqual(tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/").returncode, 0)
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        def daemons(ub):          # the bus's own NameAcquired aside
            return [s for s in ub.signals() if s["path"].startswith(MPATH)]

        got = []
        wait_for(lambda: got.extend(daemons(admin)) or
                 any(s["member"] == "InterfacesRemoved" for s in got), timeout=10,
                 what="the admin to hear the tunnel go")
        members = {s["member"] for s in got}
        self.assertEqual(members, {"InterfacesAdded", "PropertiesChanged", "InterfacesRemoved"})
        time.sleep(1.5)                      # counters are published once a second
        self.assertEqual(daemons(bob), [])
        self.assertEqual(daemons(silent), [])

    def test_manage_watchers_are_checked_again(self):
        """A connection hears everyone's tunnels only while polkit still grants
        it manage: the daemon asks again (without interaction) every 10 s, so
        a revoked rule ends it."""
        w = self.w
        admin = self.user_bus(ADMIN)
        admin.add_match(f"type='signal',sender='{BUS}'")
        admin.call(BUS, MPATH, MIFACE, "ListTunnels")
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        port = self.listener_port(path)
        wait_for(lambda: [s for s in admin.signals() if s["member"] == "InterfacesAdded"
                          and s["body"][0] == path], timeout=10,
                 what="the admin to hear alice's tunnel")
        # the administrator's manage is revoked (a rule evaluated before the test's)
        w.set_polkit_rules("""
polkit.addRule(function(action, subject) {
    if (subject.user == "tg-admin" && action.id == "org.tunnelgate.manage")
        return polkit.Result.NO;
});
""", name="40-revoke-manage.rules")
        self.addCleanup(w.restore_polkit_rules)
        time.sleep(10 + 3)                  # one re-check period, and its answer

        def traffic_heard():
            admin.signals()
            r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
            self.assertEqual(r.returncode, 0, r.stderr)
            time.sleep(2.2)                 # counters are published once a second
            return [s for s in admin.signals() if s["path"] == path]
        self.assertEqual(traffic_heard(), [])
        # alice still hears her own
        self.assertGreater(prop(w, ALICE, path, "TotalConnections"), 0)

    def test_get_managed_objects_full_properties(self):
        w = self.w
        ub = self.user_bus(ALICE)
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        (objects,) = ub.call(BUS, MPATH, OM, "GetManagedObjects")
        self.assertEqual(list(objects), [path])
        props = objects[path][TIFACE]
        self.assertEqual(set(objects[path]), {TIFACE})
        self.assertEqual(set(props), ALL_PROPERTIES)
        self.assertEqual(props["Forwards"], ["L 127.0.0.1:0:intra:80"])
        self.assertEqual(props["Destination"], "tg-alice@gw:22")
        self.assertEqual(props["State"], "up")
        self.assertEqual(props["Owner"], w.users[ALICE].uid)
        now = self.values(path)
        for k in ALL_PROPERTIES - set(COUNTERS):
            self.assertEqual(props[k], now[k], k)
        # bob's tunnel is not among alice's objects, nor hers among his
        bpath = busctl_open_ok(w, BOB, "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                               agent_option(w, BOB))
        (objects,) = ub.call(BUS, MPATH, OM, "GetManagedObjects")
        self.assertEqual(list(objects), [path])
        ubb = self.user_bus(BOB)
        (objects,) = ubb.call(BUS, MPATH, OM, "GetManagedObjects")
        self.assertEqual(list(objects), [bpath])

    def test_bind_to_caller(self):
        w = self.w
        ub = UserBus(w, ALICE)
        self.addCleanup(ub.close)
        sock = str(w.users[ALICE].agent_sock)
        bound = self.open_as(ub, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                             {"agent": V("s", sock), "bind-to-caller": V("b", True)})
        loose = self.open_as(ub, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                             {"agent": V("s", sock), "bind-to-caller": V("b", False)})
        bport = self.listener_port(bound)
        lport = self.listener_port(loose)
        self.assertEqual(prop(w, ALICE, bound, "State"), "up")
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{bport}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        ub.close()      # the caller leaves the bus
        wait_for(lambda: bound not in [e[0] for e in list_tunnels(w, ALICE)], timeout=10,
                 what="the bind-to-caller tunnel to go away")
        self.assertPortFree(bport)
        # the other one stays
        self.assertEqual(prop(w, ALICE, loose, "State"), "up")
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{lport}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        self.assertIn("left the bus", w.daemon.log())


# ----------------------------------------------------------------------------


class CredentialsTest(ApiTestCase):

    def open_ok_and_check(self, ub, options):
        path = self.open_as(ub, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"], options)
        self.assertEqual(prop(self.w, ALICE, path, "State"), "up")
        port = self.listener_port(path)
        r = tgtest.curl(self.w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), self.w.intranet_page, r.stderr)
        r = self.w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertPortFree(port)
        return path

    def open_fails(self, error, options, contains=(), user=ALICE, destination="tg-alice@gw"):
        """OpenTunnel must fail with `error`, leave no tunnel and hold no port."""
        w = self.w
        ub = self.user_bus(user)
        port = free_port(w)
        e = self.assertDBusError(error, self.open_as, ub, destination,
                                 [f"L 127.0.0.1:{port}:intra:80"], options, contains=contains)
        self.assertPortFree(port)
        self.assertNoTunnels(user)
        return e

    def test_agent_fd(self):
        ub = self.user_bus(ALICE)
        self.open_ok_and_check(ub, {"agent-fd": V("h", FdConnect(self.w.users[ALICE].agent_sock))})

    def test_identity_file(self):
        ub = self.user_bus(ALICE)
        self.open_ok_and_check(ub, {"identity": V("s", str(self.w.users[ALICE].key))})

    def test_identity_fd_file_and_pipe(self):
        w = self.w
        ub = self.user_bus(ALICE)
        key = w.users[ALICE].key
        self.open_ok_and_check(ub, {"identity-fd": V("h", FdOpen(key))})
        self.open_ok_and_check(ub, {"identity-fd": V("h", FdPipe(key.read_text()))})

    def test_identity_root_only_files_refused(self):
        w = self.w
        # /etc/shadow is readable by root only: the daemon opens it as alice
        self.open_fails("InvalidArgument", {"identity": V("s", "/etc/shadow")},
                        contains=["/etc/shadow", "Permission denied"])
        # a root-only copy of alice's VALID key: opened as root it would work
        copy = w.dir / "root-only-key"
        shutil.copy(w.users[ALICE].key, copy)
        os.chown(copy, 0, 0)
        os.chmod(copy, 0o600)
        logins = w.proc("sshd").log().count("Accepted publickey for tg-alice")
        self.open_fails("InvalidArgument", {"identity": V("s", str(copy))},
                        contains=[str(copy), "Permission denied"])
        self.assertEqual(w.proc("sshd").log().count("Accepted publickey for tg-alice"), logins)

    def test_other_users_identity_refused(self):
        w = self.w
        bob_key = w.users[BOB].key
        self.open_fails("InvalidArgument", {"identity": V("s", str(bob_key))},
                        contains=[str(bob_key), "Permission denied"])

    def test_other_users_agent_refused_by_peer_check(self):
        w = self.w
        bob = w.users[BOB]
        sock = bob.agent_sock
        # let alice reach bob's agent socket, to prove the daemon's own check
        old_dir, old_sock = os.stat(bob.dir).st_mode & 0o7777, os.stat(sock).st_mode & 0o7777
        os.chmod(bob.dir, 0o711)
        os.chmod(sock, 0o777)
        self.addCleanup(os.chmod, sock, old_sock)
        self.addCleanup(os.chmod, bob.dir, old_dir)
        r = w.run_as(ALICE, [world.PYTHON, "-c",
                             "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                             "s.connect(sys.argv[1]); print('connected')", str(sock)])
        self.assertEqual(r.stdout.strip(), "connected", r.stderr)
        msg = f"belongs to uid {bob.uid}"
        self.open_fails("InvalidArgument", {"agent": V("s", str(sock))}, contains=[msg])
        self.open_fails("InvalidArgument", {"agent-fd": V("h", FdConnect(sock))}, contains=[msg])
        # and bob's own agent still works for bob
        path = busctl_open_ok(w, BOB, "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, BOB))
        self.assertEqual(prop(w, BOB, path, "State"), "up")

    def test_agent_path_that_is_no_socket(self):
        w = self.w
        self.open_fails("InvalidArgument",
                        {"agent": V("s", str(w.users[ALICE].dir / "no-such-agent.sock"))},
                        contains=["no-such-agent.sock"])
        self.open_fails("InvalidArgument", {"agent": V("s", "relative/agent.sock")},
                        contains=["relative/agent.sock"])

    def test_passphrase_protected_key_refused(self):
        w = self.w
        alice = w.users[ALICE]
        key = alice.dir / "id_passphrase"
        r = w.run_as(ALICE, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse",
                             "-f", str(key)])
        self.assertEqual(r.returncode, 0, r.stderr)
        # the server would accept it: only the passphrase stands in the way
        ak = w.dir / "authorized_keys" / ALICE
        saved = ak.read_text()
        self.addCleanup(ak.write_text, saved)
        ak.write_text(saved + key.with_suffix(".pub").read_text())
        self.open_fails("InvalidArgument", {"identity": V("s", str(key))},
                        contains=["passphrase"])
        self.open_fails("InvalidArgument", {"identity-fd": V("h", FdOpen(key))},
                        contains=["passphrase"])

    def test_identity_that_is_not_a_key(self):
        w = self.w
        self.open_fails("InvalidArgument", {"identity": V("s", str(w.users[ALICE].pubkey_path))})
        self.open_fails("InvalidArgument", {"identity": V("s", "/dev/zero")})
        self.open_fails("InvalidArgument", {"identity": V("s", "/tmp")})


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DescriptorLimitTest(ApiTestCase):
    """Out of descriptors (issue 12, finding 2): a listener whose accept()
    fails with EMFILE rests instead of spinning, the daemon answers, says so
    once, and serves again when descriptors are free."""

    def test_emfile_backs_off_and_recovers(self):
        w = self.w
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        port = self.listener_port(path)
        pid = self.pid
        soft, hard = [int(x) for x in w.run(["prlimit", "--pid", str(pid), "--nofile",
                                              "--noheadings", "--output=SOFT,HARD"],
                                             check=True).stdout.split()]
        mark = len(w.daemon.log())
        limit = tgtest.settled_fd_count(pid) + 4
        w.run(["prlimit", "--pid", str(pid), f"--nofile={limit}:{hard}"], check=True)
        restored = []

        def restore():
            if not restored:
                restored.append(1)
                w.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:{hard}"], check=True)
        self.addCleanup(restore)
        held = [w.connect("client", "127.0.0.1", port, timeout=10) for _ in range(12)]
        try:
            w.daemon.wait_log(r"cannot accept a connection for L 127\.0\.0\.1:0:intra:80: "
                              r"Too many open files", timeout=30, start=mark)
            before = cpu_seconds(pid)
            time.sleep(3)
            spent = cpu_seconds(pid) - before
            self.assertLess(spent, 1.0, f"the daemon used {spent:.2f} s of CPU in 3 s "
                            "while out of descriptors (a listener spinning)")
            # it answers meanwhile, at once (NSS needs a descriptor to
            # identify the caller: the answer may be that it could not)
            r = w.busctl(ALICE, "--timeout=10", "get-property", BUS, path, TIFACE, "State")
            print(f"at the descriptor limit: status {r.returncode} {r.stdout.strip()} "
                  f"{r.stderr.strip()}", file=sys.stderr)
            if r.returncode != 0:
                self.assertNotIn("timed out", r.stderr)
                self.assertIn(f"uid {w.users[ALICE].uid}", r.stderr)
            else:
                self.assertEqual(r.stdout.strip(), 's "up"')
        finally:
            for s in held:
                s.close()
        restore()
        # descriptors free again: the listener serves
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        self.assertEqual(w.daemon.log()[mark:].count("cannot accept a connection"), 1)


def pids_cgroup_root():
    """The root of a pids controller to make a group in (cgroup v1 or v2), or None."""
    v1 = "/sys/fs/cgroup/pids"
    if os.path.exists(os.path.join(v1, "cgroup.procs")):
        return v1
    for v2 in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        control = os.path.join(v2, "cgroup.subtree_control")
        if os.path.exists(control) and "pids" in open(control).read().split():
            return v2
    return None


class ThreadLimitTest(ApiTestCase):
    """No thread left for a tunnel (issue 12, finding 2): the daemon is put
    in a pids cgroup with no room for another task, as TasksMax would; the
    tunnel fails with LimitExceeded, the daemon answers and, given room,
    opens the next one."""

    def test_no_thread_fails_the_tunnel_not_the_daemon(self):
        w = self.w
        root = pids_cgroup_root()
        if root is None:
            self.skipTest("no pids cgroup controller on this machine to limit threads with")
        group = os.path.join(root, f"tg-test-{os.getpid()}")
        os.mkdir(group)
        pid = self.pid

        def back():
            with open(os.path.join(root, "cgroup.procs"), "w") as f:
                f.write(str(pid))
            os.rmdir(group)
        self.addCleanup(back)
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        tasks = len(os.listdir(f"/proc/{pid}/task"))
        with open(os.path.join(group, "pids.max"), "w") as f:
            f.write(str(tasks))
        r = busctl_open(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                        agent_option(w, ALICE))
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("no thread for it", r.stderr)
        self.assertTrue(w.daemon.alive())
        self.assertEqual(list_tunnels(w, ALICE), [])
        r = w.busctl(BOB, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(group, "pids.max"), "w") as f:
            f.write("max")
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        port = self.listener_port(path)
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)


class AddForwardCloseRaceTest(ApiTestCase):
    """AddForward racing the tunnel's end (issue 12, finding 3): every call is
    answered, added or with a clear error; the daemon never reads a tunnel
    it freed (the valgrind pass runs this too); nothing is left behind."""

    ROUNDS = 8 if tgtest.VALGRIND else 40
    CALLS = 50
    ANSWERS = re.compile(r"R 0 |R 1 .*(is closing|is closed|is failed|No tunnel|"
                         r"tunnel closed before the change|Unknown object|No such object|"
                         r"At most 32 forwards per tunnel|"
                         # once gone, its id is answered as anyone's (no oracle)
                         r"org.tunnelgate.manage needs authentication)")

    def test_add_forward_racing_close(self):
        w = self.w
        answers = 0
        for round_ in range(self.ROUNDS):
            path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                                  agent_option(w, ALICE))
            calls = " ".join(
                f"( out=$(busctl --system {BUSCTL_TIMEOUT} call {BUS} {path} {TIFACE} "
                f"AddForward s 'L 127.0.0.1:0:intra:{1000 + i}' 2>&1); "
                f"echo \"R $? $out\" ) &" for i in range(self.CALLS))
            # the Close goes out while the AddForwards are in flight
            script = (f"{calls} sleep 0.0{round_ % 10}; busctl --system {BUSCTL_TIMEOUT} "
                      f"call {BUS} {path} {TIFACE} Close; wait")
            r = w.run(["sh", "-c", script], user=ALICE, timeout=300)
            lines = [line for line in r.stdout.splitlines() if line.startswith("R ")]
            self.assertEqual(len(lines), self.CALLS, r.stdout + r.stderr)
            for line in lines:
                self.assertRegex(line, self.ANSWERS)
            answers += len(lines)
            self.assertTrue(w.daemon.alive(), "tunnelgated died")
        self.assertEqual(answers, self.ROUNDS * self.CALLS)
        wait_for(lambda: list_tunnels(w, ALICE) == [], timeout=30, what="no tunnel left")
        self.assertNotRegex(w.daemon.log(), r"-(CRITICAL|ERROR) \*\*")


class LiveForwardsTest(ApiTestCase):
    """AddForward and RemoveForward on a running tunnel (like ssh -O forward /
    ssh -O cancel): the same gates as OpenTunnel, and a removed forward's
    port is free when the call returns."""

    def setUp(self):
        super().setUp()
        self.path = busctl_open_ok(self.w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                                   agent_option(self.w, ALICE))
        self.addCleanup(close_all_tunnels, self.w)

    def forward_call(self, user, method, spec):
        return self.w.busctl(user, BUSCTL_TIMEOUT, "call", BUS, self.path, TIFACE, method,
                             "s", spec)

    def test_add_use_remove(self):
        w = self.w
        ub = self.user_bus(ALICE)
        ub.add_match(f"type='signal',sender='{BUS}'")
        ub.call(BUS, MPATH, MIFACE, "ListTunnels")     # tells the daemon who listens
        port = free_port(w)
        spec = f"L 127.0.0.1:{port}:intra:{w.data_port}"
        r = self.forward_call(ALICE, "AddForward", spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(spec, prop(w, ALICE, self.path, "Forwards"))
        self.assertIn([spec, "127.0.0.1", port], prop(w, ALICE, self.path, "Listeners"))
        s = w.connect("client", "127.0.0.1", port, timeout=30)
        self.addCleanup(s.close)
        payload = os.urandom(256 * 1024)
        self.assertEqual(world.roundtrip(s, b"ECHO\n", payload, None), payload)

        # an open connection of the forward is closed with it
        held = w.connect("client", "127.0.0.1", port, timeout=30)
        self.addCleanup(held.close)
        held.sendall(b"ECHO\nx")
        self.assertEqual(held.recv(1), b"x")
        r = self.forward_call(ALICE, "RemoveForward", spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertPortFree(port)
        self.assertNotIn(spec, prop(w, ALICE, self.path, "Forwards"))
        held.settimeout(10)
        try:
            self.assertEqual(held.recv(1), b"")
        except ConnectionResetError:
            pass
        # the first forward works on
        first = prop(w, ALICE, self.path, "Listeners")[0][2]
        self.assertEqual(tgtest.curl(w, ALICE, f"http://127.0.0.1:{first}/").stdout.encode(),
                         w.intranet_page)
        self.assertEqual(prop(w, ALICE, self.path, "State"), "up")
        # Forwards and Listeners changed, announced with their values to alice
        sigs = wait_for(lambda: [s for s in ub.signals() if s["member"] == "PropertiesChanged"
                                 and s["path"] == self.path], timeout=10,
                        what="PropertiesChanged for the added forward")
        self.assertTrue(any([spec, "127.0.0.1", port] in s["body"][1].get("Listeners", [])
                            for s in sigs), sigs)
        self.assertTrue(any(spec in s["body"][1].get("Forwards", []) for s in sigs), sigs)

    def test_refusals(self):
        w = self.w
        port = free_port(w)
        spec = f"L 127.0.0.1:{port}:intra:80"
        self.assertEqual(self.forward_call(ALICE, "AddForward", spec).returncode, 0)
        cases = [
            (ALICE, "AddForward", spec, "already has the forward"),
            (ALICE, "AddForward", "L 127.0.0.1:nope:intra:80", "nope"),
            # remote forwards need polkit's open-remote, which alice lacks here
            (ALICE, "AddForward", "R 0:intra:80", "org.tunnelgate.open-remote"),
            (ALICE, "AddForward", "R /tmp/tg.sock:intra:80", "libssh 0.10"),
            (ALICE, "AddForward", "R 0", "not supported"),
            (ALICE, "AddForward", f"L 0.0.0.0:{free_port(w)}:intra:80", "bind-any"),
            (ALICE, "RemoveForward", "L 127.0.0.1:1:intra:80", "has no forward"),
            (BOB, "AddForward", f"L 127.0.0.1:{free_port(w)}:intra:80",
             "org.tunnelgate.manage"),
            (BOB, "RemoveForward", spec, "org.tunnelgate.manage"),
        ]
        for user, method, arg, text in cases:
            with self.subTest(user=user, method=method, arg=arg):
                r = self.forward_call(user, method, arg)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertIn(text, r.stderr)
        self.assertIn(spec, prop(w, ALICE, self.path, "Forwards"))
        self.assertEqual(len(prop(w, ALICE, self.path, "Forwards")), 2)

    def test_removing_the_last_forward_closes_the_tunnel(self):
        spec = prop(self.w, ALICE, self.path, "Forwards")[0]
        port = prop(self.w, ALICE, self.path, "Listeners")[0][2]
        r = self.forward_call(ALICE, "RemoveForward", spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGone(self.path)
        self.assertPortFree(port)


# ----------------------------------------------------------------------------


class ErrorsTest(ApiTestCase):

    def setUp(self):
        super().setUp()
        self.ub = self.user_bus(ALICE)
        self.agent = {"agent": V("s", str(self.w.users[ALICE].agent_sock))}

    def fails(self, error, destination, forwards, options=None, contains=()):
        e = self.assertDBusError(error, self.open_as, self.ub, destination, forwards,
                                 self.agent if options is None else options, contains=contains)
        self.assertNoTunnels()
        self.assertEqual(daemon_listeners(self.pid), [])
        return e

    def test_bad_forward_specs(self):
        good = "L 127.0.0.1:0:intra:80"
        for bad, part in [("L 127.0.0.1:notaport:intra:80", "notaport"),
                          ("L 127.0.0.1:70000:intra:80", "70000"),
                          ("X 1234:intra:80", "X 1234:intra:80"),
                          ("L 1234", "L 1234"),
                          ("L 1234:intra:0", "port 0"),
                          ("", "empty"),
                          ("L 1234:bad host!:80", "bad host!")]:
            with self.subTest(spec=bad):
                e = self.fails("InvalidArgument", "tg-alice@gw", [good, bad], contains=part)
                self.assertNotIn("'" + good + "'", e.message)
        # also through busctl: the user sees the message
        r = busctl_open(self.w, ALICE, "tg-alice@gw", ["L 127.0.0.1:notaport:intra:80"],
                        agent_option(self.w, ALICE))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("notaport", r.stderr)

    def test_bad_destinations(self):
        for bad in ("tg-alice@", "bad host!", "tg-alice@gw:0", "tg-alice@gw:99999", ""):
            with self.subTest(destination=bad):
                self.fails("InvalidArgument", bad, ["L 127.0.0.1:0:intra:80"])

    def test_unknown_option(self):
        self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                   dict(self.agent, frobnicate=V("s", "x")), contains="frobnicate")

    def test_wrong_option_type(self):
        for key, value in [("agent", V("u", 1)), ("bind-to-caller", V("s", "yes")),
                           ("keepalive", V("i", 5)), ("identity-fd", V("s", "/x"))]:
            with self.subTest(option=key):
                opts = {key: value}
                if key in ("bind-to-caller", "keepalive"):
                    opts.update(self.agent)
                self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"], opts,
                           contains=[f"'{key}'", value.signature])

    def test_credentials_count(self):
        self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"], {},
                   contains="credentials")
        self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                   dict(self.agent, identity=V("s", str(self.w.users[ALICE].key))),
                   contains="only one")

    def test_unsupported_and_limits(self):
        self.fails("NotAuthorized", "tg-alice@gw", ["R 0:intra:80"],
                   contains="org.tunnelgate.open-remote")
        self.fails("NotSupported", "tg-alice@gw", ["R /tmp/tg.sock:intra:80"],
                   contains="libssh 0.10")
        self.fails("NotSupported", "tg-alice@gw", ["R 8022"], contains="remote dynamic")
        self.fails("NotSupported", "tg-alice@gw", ["R 8022:/tmp/tg.sock"],
                   contains="local Unix socket")
        self.fails("InvalidArgument", "@someprofile", ["L 127.0.0.1:0:intra:80"],
                   contains="defines its own forwards")
        self.fails("InvalidArgument", "@someprofile", [], contains="brings its own key")
        self.fails("LimitExceeded", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"] * 33)
        self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                   dict(self.agent, description=V("s", "x" * 257)), contains="description")
        self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                   dict(self.agent, description=V("s", "a\nb")), contains="description")
        self.fails("InvalidArgument", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                   dict(self.agent, ciphers=V("s", "3des-cbc")), contains="3des-cbc")

    def test_connect_failed(self):
        w = self.w
        t0 = time.monotonic()
        self.fails("ConnectFailed", "tg-alice@gw:2", ["L 127.0.0.1:0:intra:80"],
                   contains=["gw", "refused"])
        self.fails("ConnectFailed", "tg-alice@nosuchhost.invalid", ["L 127.0.0.1:0:intra:80"],
                   contains=["nosuchhost.invalid", "resolve"])
        # no route from the client to the intranet
        self.fails("ConnectFailed", f"tg-alice@{w.intranet_ip}", ["L 127.0.0.1:0:intra:80"],
                   contains=[w.intranet_ip])
        # a port that speaks, but not SSH (the data service on the client's loopback)
        self.fails("ConnectFailed", f"tg-alice@127.0.0.1:{w.data_port}",
                   ["L 127.0.0.1:0:intra:80"])
        self.assertLess(time.monotonic() - t0, 60)

    def test_authentication_failed(self):
        w = self.w
        alice = w.users[ALICE]
        fresh = alice.dir / "id_fresh"
        r = w.run_as(ALICE, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(fresh)])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.fails("AuthenticationFailed", "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                   {"identity": V("s", str(fresh))}, contains=["tg-alice"])
        # alice's agent has no key that bob's account accepts
        self.fails("AuthenticationFailed", "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                   contains=["tg-bob"])

    def test_address_in_use(self):
        w = self.w
        port = free_port(w, hosts=("127.0.0.1", "::1"))
        # someone else listens there
        held = w.listen("client", "127.0.0.1", port)
        try:
            self.fails("AddressInUse", "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:80"],
                       contains=[str(port)])
            self.assertEqual(daemon_tcp_sockets(self.pid, port), [])
        finally:
            held.close()
        # ::1 taken, 127.0.0.1 free: the default pair fails and releases 127.0.0.1
        s6 = w.socket("client", socket.AF_INET6)
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s6.bind(("::1", port))
        s6.listen(1)
        try:
            self.fails("AddressInUse", "tg-alice@gw", [f"L {port}:intra:80"],
                       contains=[str(port)])
            self.assertEqual(daemon_tcp_sockets(self.pid, port), [])
            self.assertTrue(can_listen(w, port, "127.0.0.1"))
        finally:
            s6.close()
        # a port another tunnel listens on
        path = self.open_as(self.ub, "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:80"],
                            self.agent)
        e = self.assertDBusError("AddressInUse", self.open_as, self.ub, "tg-alice@gw",
                                 [f"L 127.0.0.1:{port}:intra:9000"], self.agent)
        self.assertIn(str(port), e.message)
        self.assertEqual([x[0] for x in list_tunnels(w, ALICE)], [path])
        self.assertEqual(daemon_listeners(self.pid), [("127.0.0.1", port)])
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)

    def test_same_port_twice_in_one_request(self):
        w = self.w
        port = free_port(w)
        self.fails("AddressInUse", "tg-alice@gw",
                   [f"L 127.0.0.1:{port}:intra:80", f"L 127.0.0.1:{port}:intra:9000"],
                   contains=[str(port)])
        self.assertTrue(can_listen(w, port))

    def test_concurrent_opens_of_one_port(self):
        """Two OpenTunnel calls for the same port at the same time: one wins, the
        other gets AddressInUse (not a late, generic failure)."""
        import threading
        w = self.w
        port = free_port(w)
        buses = [self.user_bus(ALICE) for _ in range(2)]
        results = [None, None]

        def opener(i):
            try:
                results[i] = ("ok", self.open_as(buses[i], "tg-alice@gw",
                                                 [f"L 127.0.0.1:{port}:intra:80"], self.agent))
            except tgtest.DBusError as e:
                results[i] = ("error", e.name, e.message)

        threads = [threading.Thread(target=opener, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        oks = [r for r in results if r and r[0] == "ok"]
        errors = [r for r in results if r and r[0] == "error"]
        self.assertEqual(len(oks), 1, results)
        self.assertEqual(len(errors), 1, results)
        self.assertEqual(errors[0][1], tgtest.ERR + "AddressInUse", results)
        self.assertEqual([e[0] for e in list_tunnels(w, ALICE)], [oks[0][1]])
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)

    def test_privileged_port(self):
        w = self.w
        self.fails("NotAuthorized", "tg-alice@gw", ["L 127.0.0.1:80:intra:80"],
                   contains=["80", "privileged"])
        self.assertTrue(can_listen(w, 80))
        self.fails("NotAuthorized", "tg-alice@gw", ["L 1023:intra:80"], contains=["1023"])

    def test_not_found(self):
        # what is not a tunnel path at all: NotFound, which tells nothing
        for bad in (MPATH + "/tunnel/x", MPATH + "/tunnel/0", "/", MPATH):
            with self.subTest(path=bad):
                self.assertDBusError("NotFound", self.ub.call, BUS, MPATH, MIFACE,
                                     "CloseTunnel", "o", [bad])
        # a tunnel id nobody has: to alice, who may not manage, the same answer
        # as bob's tunnel (no existence oracle); to an administrator, NotFound
        w = self.w
        bpath = busctl_open_ok(w, BOB, "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                               agent_option(w, BOB))
        missing = MPATH + "/tunnel/999999"
        for how in ("CloseTunnel", "Close", "GetAll"):
            answers = []
            for path in (bpath, missing):
                if how == "CloseTunnel":
                    args = (BUS, MPATH, MIFACE, "CloseTunnel", "o", [path])
                elif how == "Close":
                    args = (BUS, path, TIFACE, "Close")
                else:
                    args = (BUS, path, PROPS, "GetAll", "s", [TIFACE])
                e = self.assertDBusError("NotAuthorized", self.ub.call, *args,
                                         contains="org.tunnelgate.manage")
                answers.append(e.message)
            self.assertEqual(answers[0], answers[1], how)
        admin = self.user_bus(ADMIN)
        self.assertDBusError("NotFound", admin.call, BUS, MPATH, MIFACE, "CloseTunnel", "o",
                             [missing], contains="999999")
        self.assertDBusError("NotFound", admin.call, BUS, missing, TIFACE, "Close",
                             contains="999999")
        self.assertEqual(prop(w, BOB, bpath, "State"), "up")
        r = self.w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE,
                          "CloseTunnel", "o", missing)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("999999", r.stderr)

    def test_introspection_lists_only_visible_tunnels(self):
        """busctl tree / Introspect of the tunnel subtree shows a caller the
        tunnels it may see: its own (an administrator's: everyone's)."""
        w = self.w
        apath = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                               agent_option(w, ALICE))
        bpath = busctl_open_ok(w, BOB, "tg-bob@gw", ["L 127.0.0.1:0:intra:80"],
                               agent_option(w, BOB))
        root = MPATH + "/tunnel"
        for user, sees, hidden in ((ALICE, apath, bpath), (BOB, bpath, apath)):
            ub = self.user_bus(user)
            ub.call(BUS, MPATH, MIFACE, "ListTunnels")   # an authorized call first
            (xml,) = ub.call(BUS, root, "org.freedesktop.DBus.Introspectable", "Introspect")
            nodes = re.findall(r'<node name="([^"]+)"', xml)
            self.assertIn(sees.rsplit("/", 1)[1], nodes, xml)
            self.assertNotIn(hidden.rsplit("/", 1)[1], nodes, xml)
        admin = self.user_bus(ADMIN)
        admin.call(BUS, MPATH, MIFACE, "ListTunnels")
        (xml,) = admin.call(BUS, root, "org.freedesktop.DBus.Introspectable", "Introspect")
        nodes = re.findall(r'<node name="([^"]+)"', xml)
        for path in (apath, bpath):
            self.assertIn(path.rsplit("/", 1)[1], nodes, xml)


# ----------------------------------------------------------------------------


class HostKeyTest(ApiTestCase):
    """Host key checking, with daemons started on other known hosts files."""

    @classmethod
    def setUpClass(cls):
        w = cls.W
        cls.previous_daemon_problem = None
        try:
            close_all_tunnels(w)
            tgtest.check_daemon_stopped_cleanly(w)
        except AssertionError as e:
            cls.previous_daemon_problem = str(e)
        cls.n = 0
        cls.other_pub = cls.make_key("other_host_key")
        cls.other_fp = world._ssh_fingerprint(cls.other_pub)

    @classmethod
    def tearDownClass(cls):
        w = cls.W
        if w.daemon is None or not w.daemon.alive():
            w.start_daemon()      # the standard daemon for the other tests

    def test_daemon_before_stopped_cleanly(self):
        """The daemon that served the tests before this class exited cleanly."""
        self.assertIsNone(self.previous_daemon_problem)

    def stop_daemon(self, d):
        if d.alive():
            close_all_tunnels(self.W)
        tgtest.check_daemon_stopped_cleanly(self.W, d)

    @classmethod
    def make_key(cls, name):
        w = cls.W
        key = w.dir / name
        w.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        return (w.dir / (name + ".pub")).read_text().strip()

    def restart(self, system_known_hosts="", state_known_hosts=None, args=()):
        """Start a daemon with these known hosts files (stopping this test's
        previous one); it is stopped, and checked, when the test ends."""
        w = self.W
        if w.daemon is not None and w.daemon.alive():
            self.stop_daemon(w.daemon)
        type(self).n += 1
        d = w.dir / f"hostkeys-{self.n}"
        d.mkdir()
        kh = d / "ssh_known_hosts"
        kh.write_text(system_known_hosts)
        state = d / "state"
        state.mkdir(mode=0o700)
        if state_known_hosts is not None:
            (state / "known_hosts").write_text(state_known_hosts)
        d = w.start_daemon(known_hosts=kh, state_dir=state, args=list(args))
        self.addCleanup(self.stop_daemon, d)
        self.ub = self.user_bus(ALICE)
        self.agent = {"agent": V("s", str(w.users[ALICE].agent_sock))}

    def open(self, **extra):
        opts = dict(self.agent)
        opts.update({k.replace("_", "-"): V("s", v) for k, v in extra.items()})
        return self.open_as(self.ub, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"], opts)

    def works(self, path):
        port = self.listener_port(path)
        r = tgtest.curl(self.W, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), self.W.intranet_page, r.stderr)

    def test_agent_that_never_answers(self):
        """A tunnel stuck connecting (here: an ssh-agent that accepts and never
        answers, which libssh waits for without a timeout) is given up after
        three connect timeouts, with ConnectFailed, and leaves nothing behind."""
        w = self.W
        self.restart(system_known_hosts=w.known_hosts_line + "\n", args=["--connect-timeout", "1"])
        sock = w.users[ALICE].dir / "silent-agent.sock"
        script = ("import socket,time\n"
                  f"s=socket.socket(socket.AF_UNIX); s.bind({str(sock)!r}); s.listen(8)\n"
                  "held=[]\n"
                  "while True: held.append(s.accept()[0])\n")
        agent = w.spawn_as(ALICE, [world.PYTHON, "-c", script], name="silent-agent")
        self.addCleanup(agent.stop)
        tgtest.wait_for(sock.exists, timeout=10, what="the silent agent's socket")
        port = free_port(w)
        t0 = time.monotonic()
        e = self.assertDBusError("ConnectFailed", self.open_as, self.ub, "tg-alice@gw",
                                 [f"L 127.0.0.1:{port}:intra:80"],
                                 {"agent": V("s", str(sock))}, contains="not up after 3")
        self.assertLess(time.monotonic() - t0, 30, e.message)
        self.assertNoTunnels()
        self.assertPortFree(port)

    def test_unknown_host_key_then_pinned(self):
        w = self.W
        self.restart("")
        fp = w.host_key_fingerprint
        e = self.assertDBusError("HostKeyUnknown", self.open, contains=[fp])
        self.assertNoTunnels()
        self.assertEqual(daemon_listeners(self.pid), [])
        # busctl users see the fingerprint too
        r = busctl_open(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                        agent_option(w, ALICE))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(fp, r.stderr)
        # pinned with the right fingerprint: works
        path = self.open(host_key=fp)
        self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.works(path)
        # pinned with a wrong one: refused, naming the real key
        e = self.assertDBusError("HostKeyChanged", self.open, host_key=self.other_fp,
                                 contains=[fp])
        self.assertIn(self.other_fp, e.message)
        self.assertEqual([x[0] for x in list_tunnels(w, ALICE)], [path])
        # malformed fingerprints are refused before anything happens
        for bad in ("MD5:aa:bb", fp[:-1], "SHA256:" + "!" * 43, fp.replace("SHA256:", "")):
            with self.subTest(host_key=bad):
                self.assertDBusError("InvalidArgument", self.open, host_key=bad,
                                     contains=["host-key"])

    def test_changed_host_key(self):
        w = self.W
        fp = w.host_key_fingerprint
        kt, blob = self.other_pub.split()[:2]
        self.restart(f"gw,{w.gateway_ip} {kt} {blob}\n")
        self.assertDBusError("HostKeyChanged", self.open, contains=[fp])
        # a pin does not override a known, different key
        self.assertDBusError("HostKeyChanged", self.open, host_key=fp, contains=[fp])
        self.assertNoTunnels()
        self.assertEqual(daemon_listeners(self.pid), [])
        # the same in the daemon's own known_hosts (state dir)
        self.restart("", state_known_hosts=f"gw {kt} {blob}\n")
        self.assertDBusError("HostKeyChanged", self.open, contains=[fp])

    def test_state_dir_known_hosts_trusted(self):
        w = self.W
        self.restart("", state_known_hosts=w.known_hosts_line + "\n")
        path = self.open()
        self.works(path)

    def test_users_own_known_hosts_never_read(self):
        w = self.W
        alice = w.users[ALICE]
        ssh_dir = alice.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "known_hosts").write_text(w.known_hosts_line + "\n")
        for p in (ssh_dir, ssh_dir / "known_hosts"):
            os.chown(p, alice.uid, alice.gid)
        self.addCleanup(shutil.rmtree, ssh_dir, True)
        self.restart("")
        self.assertDBusError("HostKeyUnknown", self.open, contains=[w.host_key_fingerprint])

    def test_world_known_hosts_works(self):
        w = self.W
        self.restart(w.known_hosts.read_text())
        path = self.open()
        self.works(path)
        # port 2222 is known as [gw]:2222
        path2 = self.open_as(self.ub, "tg-alice@gw:2222", ["L 127.0.0.1:0:intra:80"], self.agent)
        self.assertEqual(prop(w, ALICE, path2, "Destination"), "tg-alice@gw:2222")
        self.works(path2)


# ----------------------------------------------------------------------------


class ZDaemonExitTest(ApiTestCase):
    """Last: the daemon stops cleanly on SIGTERM with a tunnel open (under
    TG_VALGRIND=1: no valgrind errors, no definite leaks)."""

    def test_daemon_stops_cleanly(self):
        w = self.w
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        port = self.listener_port(path)
        r = tgtest.curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)
        res = tgtest.check_daemon_stopped_cleanly(w)
        self.assertEqual(res.returncode, 0)
        self.assertTrue(can_listen(w, port))


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

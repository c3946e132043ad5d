#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Remote (R) forwards (issue 5) and connect-back pinning (issue 4), end to
end: the real daemon in the client namespace asks the gateway's real sshd to
listen; connections made in the gateway namespace come back through the SSH
session and the daemon connects to the data service in the client namespace.

  * R with a fixed port: 64 MiB each way with SHA-256, through the server's
    listener on the gateway's loopback;
  * R 0: the server's chosen port is in Listeners, the opener's connection
    gets it in a PropertiesChanged with the value, and it works;
  * a server that refuses to listen (sshd PermitListen none for tg-bob):
    a clear error, nothing left behind; polkit's open-remote is required;
  * AddForward/RemoveForward of an R forward on a live tunnel carrying
    traffic on another forward;
  * connect-back pinning: while the forward exists the kernel lets the
    daemon's connect-back sockets reach its destination and nothing else;
    the element goes with the forward;
  * R destinations are resolved off the D-Bus thread: while the resolver
    waits for a DNS server that never answers, the daemon answers others.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_remote.py -v
(exits 77 = skipped when not root).
"""

import errno
import json
import os
import socket
import sys
import threading
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
from tgtest import (ALICE, BOB, ADMIN, MALLORY, BUS, MPATH, MIFACE, TIFACE, V,  # noqa: E402
                    BUSCTL_TIMEOUT, close_all_tunnels, free_port, list_tunnels, prop, user_bus,
                    wait_for)

USERS = (ALICE, BOB, MALLORY, ADMIN)
MIB = 1024 * 1024
BIG = 64 * MIB
DATA_PORT = 9000              # the data service on the client's loopback (world.py)
CONNECT_BACK_MARK = 0x54470002
SO_MARK = 36

POLKIT_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") != 0)
        return;
    if (subject.user == "tg-admin")
        return polkit.Result.YES;
    if (subject.user == "tg-alice" &&
        (action.id == "org.tunnelgate.open" || action.id == "org.tunnelgate.open-remote"))
        return polkit.Result.YES;
    if (subject.user == "tg-bob" &&
        (action.id == "org.tunnelgate.open" || action.id == "org.tunnelgate.open-remote"))
        return polkit.Result.YES;
    if (subject.user == "tg-mallory" && action.id == "org.tunnelgate.open")
        return polkit.Result.YES;
    return polkit.Result.NO;
});
"""

def setUpModule():
    # sshd refuses tg-bob's remote listens: the refusal path, with real sshd
    tgtest.start_module_world(USERS, agents=USERS, polkit_rules=POLKIT_RULES,
                              policy="ConnectBackPinning yes\n",
                              sshd_config_extra="Match User tg-bob\n  PermitListen none\n")


def tearDownModule():
    tgtest.stop_module_world()


def free_gateway_port(w):
    s = w.listen("gateway", "127.0.0.1", 0)
    port = s.getsockname()[1]
    s.close()
    return port


def connect_back_elements(w):
    out = json.loads(w.run(["nft", "-j", "list", "set", "inet", "tunnelgate",
                            "connect_back_v4"], ns="client", check=True).stdout)
    for o in out["nftables"]:
        if "set" in o:
            return [json.dumps(e, sort_keys=True) for e in o["set"].get("elem", [])]
    return []


class RemoteTestCase(tgtest.DaemonTestCase):

    def setUp(self):
        self.addCleanup(close_all_tunnels, self.w)

    def open(self, user, forwards):
        return user_bus(user).call(
            BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
            ["gw", list(forwards), {"agent": V("s", str(self.w.users[user].agent_sock))}],
            timeout=120)[0]

    def remote_port(self, path, spec, user=ALICE):
        ports = [p for s, _, p in prop(self.w, user, path, "Listeners") if s == spec]
        self.assertEqual(len(ports), 1, prop(self.w, user, path, "Listeners"))
        return ports[0]

    def gateway_connect(self, port, timeout=30):
        return self.w.connect("gateway", "127.0.0.1", port, timeout=timeout)


class RemoteForwardTest(RemoteTestCase):

    def test_64_mib_each_way(self):
        w = self.w
        port = free_gateway_port(w)
        spec = f"R 127.0.0.1:{port}:127.0.0.1:{DATA_PORT}"
        path = self.open(ALICE, [spec])
        self.assertEqual(self.remote_port(path, spec), port)

        # gateway -> client: the data service hashes what it got
        data = os.urandom(BIG)
        s = self.gateway_connect(port)
        self.assertEqual(w.data_hash(s, data), tgtest.sha256_hex(data))
        s.close()
        # client -> gateway: the data service sends a known pattern
        s = self.gateway_connect(port)
        s.sendall(f"SEND {BIG}\n".encode())
        s.shutdown(socket.SHUT_WR)
        n, digest = tgtest.recv_hashed(s)
        s.close()
        self.assertEqual(n, BIG)
        self.assertEqual(digest, w.pattern_sha256(BIG))
        wait_for(lambda: prop(w, ALICE, path, "TotalConnections") == 2, timeout=10,
                 what="two connections counted")
        self.assertGreaterEqual(prop(w, ALICE, path, "BytesSent"), BIG)
        self.assertGreaterEqual(prop(w, ALICE, path, "BytesReceived"), BIG)

    def test_port_0_is_reported(self):
        w = self.w
        ub = user_bus(ALICE)
        ub.add_match(f"type='signal',sender='{BUS}',interface='org.freedesktop.DBus.Properties'")
        ub.signals()
        spec = f"R 0:127.0.0.1:{DATA_PORT}"
        path = self.open(ALICE, [spec])
        port = self.remote_port(path, spec)
        self.assertNotEqual(port, 0)
        self.assertEqual(prop(w, ALICE, path, "Listeners"), [[spec, "localhost", port]])
        # the opener heard the value (signals go to the connections that may read it)
        changes = [s for s in ub.signals() if s["path"] == path
                   and s["member"] == "PropertiesChanged"]
        values = [c["body"][1]["Listeners"] for c in changes if "Listeners" in c["body"][1]]
        self.assertTrue(any([spec, "localhost", port] in [list(x) for x in v] for v in values),
                        changes)
        s = self.gateway_connect(port)
        self.assertEqual(w.data_echo(s, b"hello through R 0"), b"hello through R 0")
        s.close()
        # the server listens on its loopback only ("localhost", as OpenSSH sends)
        with self.assertRaises(OSError):
            w.connect("gateway", w.gateway_ip, port, timeout=5).close()

    def test_server_refuses_to_listen(self):
        w = self.w
        port = free_gateway_port(w)
        spec = f"R 127.0.0.1:{port}:127.0.0.1:{DATA_PORT}"
        with self.assertRaises(tgtest.DBusError) as cm:
            self.open(BOB, [spec])
        e = cm.exception
        self.assertEqual(e.name, "org.tunnelgate.Error.Failed")
        self.assertIn("refused to listen on 127.0.0.1 port", e.message)
        self.assertIn(spec, e.message)
        self.assertEqual(tgtest.list_tunnels(w, ADMIN), [])
        self.assertEqual(connect_back_elements(w), [])

    def test_open_remote_needs_polkit(self):
        """tg-mallory may open tunnels, but not remote forwards."""
        w = self.w
        with self.assertRaises(tgtest.DBusError) as cm:
            self.open(MALLORY, [f"R 0:127.0.0.1:{DATA_PORT}"])
        self.assertEqual(cm.exception.name, "org.tunnelgate.Error.NotAuthorized")
        self.assertIn("org.tunnelgate.open-remote", cm.exception.message)
        self.assertEqual(tgtest.list_tunnels(w, ADMIN), [])
        path = self.open(MALLORY, ["L 127.0.0.1:0:intra:9000"])
        self.assertEqual(prop(w, MALLORY, path, "State"), "up")

    def test_unix_remote_forward_is_refused_clearly(self):
        with self.assertRaises(tgtest.DBusError) as cm:
            self.open(ALICE, ["R /tmp/remote.sock:127.0.0.1:9000"])
        self.assertEqual(cm.exception.name, "org.tunnelgate.Error.NotSupported")
        self.assertIn("libssh 0.10", cm.exception.message)


class LiveChangeTest(RemoteTestCase):

    def test_add_and_remove_remote_forward_while_traffic_flows(self):
        w = self.w
        lport = free_port(w)
        path = self.open(ALICE, [f"L 127.0.0.1:{lport}:intra:9000"])
        # a transfer on the L forward keeps running through the changes
        busy = w.connect("client", "127.0.0.1", lport, timeout=60)
        busy.sendall(f"SEND {BIG}\n".encode())
        busy.shutdown(socket.SHUT_WR)
        result = {}
        t = threading.Thread(target=lambda: result.update(r=tgtest.recv_hashed(busy)))
        t.start()

        spec = f"R 0:127.0.0.1:{DATA_PORT}"
        user_bus(ALICE).call(BUS, path, TIFACE, "AddForward", "s", [spec])
        port = self.remote_port(path, spec)
        s = self.gateway_connect(port)
        self.assertEqual(w.data_echo(s, b"added"), b"added")
        s.close()
        self.assertTrue(any(str(DATA_PORT) in e for e in connect_back_elements(w)))

        user_bus(ALICE).call(BUS, path, TIFACE, "RemoveForward", "s", [spec])
        with self.assertRaises(OSError) as cm:
            self.gateway_connect(port, timeout=5).close()
        self.assertEqual(cm.exception.errno, errno.ECONNREFUSED)
        self.assertEqual(connect_back_elements(w), [])
        self.assertNotIn(spec, prop(w, ALICE, path, "Forwards"))

        t.join(120)
        busy.close()
        self.assertEqual(result["r"], (BIG, w.pattern_sha256(BIG)))


class PinningTest(RemoteTestCase):

    def marked_connect(self, port):
        """As root in the client namespace, a socket with the connect-back mark
        (what the daemon's connect-back sockets carry) connecting to
        127.0.0.1:port: None when connected, else the errno."""
        s = self.w.socket("client")
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, CONNECT_BACK_MARK)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            return None
        except OSError as e:
            return e.errno
        finally:
            s.close()

    def test_connect_back_reaches_only_its_destination(self):
        w = self.w
        other = w.listen("client", "127.0.0.1", 0)
        other_port = other.getsockname()[1]
        self.addCleanup(other.close)
        # nothing sanctioned yet: the kernel refuses connect-back sockets
        self.assertEqual(self.marked_connect(DATA_PORT), errno.ECONNREFUSED)

        spec = f"R 0:127.0.0.1:{DATA_PORT}"
        path = self.open(ALICE, [spec])
        elements = connect_back_elements(w)
        self.assertEqual(len(elements), 1, elements)
        self.assertIn(str(DATA_PORT), elements[0])
        self.assertIsNone(self.marked_connect(DATA_PORT))
        # anywhere else: reset by the kernel, although something listens there
        self.assertEqual(self.marked_connect(other_port), errno.ECONNREFUSED)
        # the daemon's own connect-back works
        port = self.remote_port(path, spec)
        s = self.gateway_connect(port)
        self.assertEqual(w.data_echo(s, b"pinned"), b"pinned")
        s.close()

        w.busctl(ALICE, tgtest.BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        wait_for(lambda: connect_back_elements(w) == [], timeout=5,
                 what="the connect-back element to go with the tunnel")
        self.assertEqual(self.marked_connect(DATA_PORT), errno.ECONNREFUSED)


# A DNS server that never answers: it only says that a query came.
DNS_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    print("query", len(data), flush=True)
"""


class SlowResolverTest(RemoteTestCase):
    """A daemon whose resolver asks a DNS server that never answers (a sink
    in the gateway namespace, through /etc/netns/<client>/resolv.conf)."""

    def restart_daemon(self):
        w = self.w
        tgtest.close_user_buses()
        if w.daemon is not None and w.daemon.alive():
            close_all_tunnels(w)
            tgtest.check_daemon_stopped_cleanly(w)
        w.start_daemon()

    def slow_dns(self, name):
        """The sink (returned), resolv.conf pointing at it, and a daemon started
        after it ("ip netns exec" binds resolv.conf at start); all undone after
        the test."""
        w = self.w
        sink = w.spawn(["/usr/bin/python3", "-u", "-c", DNS_SINK, w.gateway_ip], ns="gateway",
                       name=name)
        sink.wait_log(r"^listening$", timeout=10)
        self.addCleanup(sink.stop)
        resolv = Path("/etc/netns") / w.ns["client"] / "resolv.conf"
        resolv.write_text(f"nameserver {w.gateway_ip}\noptions timeout:5 attempts:1\n")

        def back():
            resolv.unlink()
            self.restart_daemon()
        self.addCleanup(back)
        self.restart_daemon()
        return sink

    def test_resolving_does_not_stall_the_bus(self):
        w = self.w
        sink = self.slow_dns("dns-sink")

        name = "slow.tunnelgate-test.example"
        spec = f"R 0:{name}:{DATA_PORT}"
        opener = w.spawn_as(ALICE, ["busctl", "--system", BUSCTL_TIMEOUT, "call", BUS, MPATH,
                                    MIFACE, "OpenTunnel", "sasa{sv}", "gw", "1", spec, "1",
                                    "agent", "s", str(w.users[ALICE].agent_sock)],
                            name="slow-open")
        # the daemon asks the sink, which never answers: it is resolving now
        sink.wait_log(r"^query ", timeout=30)
        self.assertTrue(opener.alive())
        # and meanwhile it answers other callers
        for user in (BOB, ADMIN):
            r = w.busctl(user, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels")
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(opener.alive(), "OpenTunnel returned before the resolver gave up: "
                        "the other calls were not answered while it resolved")
        # then the call fails naming the name, and nothing is left
        self.assertNotEqual(opener.wait(timeout=60), 0)
        self.assertRegex(opener.log(), rf"Forward '{spec}': cannot resolve {name}")
        self.assertEqual(list_tunnels(w, ADMIN), [])
        self.assertEqual(connect_back_elements(w), [])

    def test_per_user_limit_and_stopping_while_resolving(self):
        """At most 4 calls of one user wait for the resolver at a time (the 5th
        gets LimitExceeded at once); SIGTERM while they wait: the daemon waits
        for the resolver, refuses them, opens nothing, and exits cleanly."""
        w = self.w
        sink = self.slow_dns("dns-sink-2")

        def slow_open(i):
            spec = f"R 0:slow{i}.tunnelgate-test.example:{DATA_PORT}"
            return w.spawn_as(ALICE, ["busctl", "--system", BUSCTL_TIMEOUT, "call", BUS, MPATH,
                                      MIFACE, "OpenTunnel", "sasa{sv}", "gw", "1", spec, "1",
                                      "agent", "s", str(w.users[ALICE].agent_sock)],
                              name=f"slow-open-{i}")
        waiting = [slow_open(i) for i in range(4)]
        wait_for(lambda: len([x for x in sink.log().splitlines() if x.startswith("query")]) >= 4,
                 timeout=30, what="four names being resolved")
        fifth = slow_open(4)
        self.assertNotEqual(fifth.wait(timeout=30), 0)
        self.assertIn("4 calls of yours already wait for names to be resolved", fifth.log())
        self.assertTrue(all(p.alive() for p in waiting))
        # bob is not limited by alice's calls
        r = w.busctl(BOB, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels")
        self.assertEqual(r.returncode, 0, r.stderr)

        tgtest.check_daemon_stopped_cleanly(w)      # SIGTERM; exit status 0, no criticals
        for p in waiting:
            self.assertNotEqual(p.wait(timeout=30), 0)
            self.assertRegex(p.log(), r"tunnelgated is stopping|cannot resolve")
        self.assertEqual(connect_back_elements(w), [])

    def test_max_pending_calls(self):
        """MaxPendingCalls 2: two of alice's calls wait for the resolver, her
        third is refused at once naming the line; bob is answered."""
        w = self.w
        original = (w.config_dir / "policy.conf").read_text()
        w.write_config("policy.conf", original + "MaxPendingCalls 2\n")
        self.addCleanup(w.write_config, "policy.conf", original)
        line = len(original.splitlines()) + 1
        sink = self.slow_dns("dns-sink-pending")

        def slow_open(i):
            spec = f"R 0:pending{i}.tunnelgate-test.example:{DATA_PORT}"
            return w.spawn_as(ALICE, ["busctl", "--system", BUSCTL_TIMEOUT, "call", BUS, MPATH,
                                      MIFACE, "OpenTunnel", "sasa{sv}", "gw", "1", spec, "1",
                                      "agent", "s", str(w.users[ALICE].agent_sock)],
                              name=f"pending-open-{i}")
        waiting = [slow_open(i) for i in range(2)]
        wait_for(lambda: len([x for x in sink.log().splitlines() if x.startswith("query")]) >= 2,
                 timeout=30, what="two names being resolved")
        third = slow_open(2)
        self.assertNotEqual(third.wait(timeout=30), 0)
        self.assertIn(f"MaxPendingCalls 2 at {w.config_dir}/policy.conf:{line} does not "
                      "allow another pending call (2 in use)", third.log())
        self.assertTrue(all(p.alive() for p in waiting))
        r = w.busctl(BOB, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels")
        self.assertEqual(r.returncode, 0, r.stderr)
        for p in waiting:
            self.assertNotEqual(p.wait(timeout=60), 0)

    # -- the one admission path, interrupted while it waits for the resolver --

    def open_alice_up(self):
        """Alice's tunnel with one L forward, up; its path."""
        w = self.w
        return tgtest.busctl_open_ok(w, ALICE, "gw", [f"L 127.0.0.1:0:127.0.0.1:{DATA_PORT}"],
                                     tgtest.agent_option(w, ALICE))

    def add_forward_waiting(self, sink, path, spec, name):
        """AddForward(spec) as alice, in the background, once the daemon asks
        the sink for its name (the call is then inside the admission)."""
        w = self.w
        queries = len([x for x in sink.log().splitlines() if x.startswith("query")])
        adder = w.spawn_as(ALICE, ["busctl", "--system", BUSCTL_TIMEOUT, "call", BUS, path,
                                   TIFACE, "AddForward", "s", spec], name=name)
        wait_for(lambda: len([x for x in sink.log().splitlines()
                              if x.startswith("query")]) > queries,
                 timeout=30, what="the daemon resolving the new forward's name")
        self.assertTrue(adder.alive())
        return adder

    def assert_nothing_left(self, fds_before, listeners_before):
        w = self.w
        pid = w.daemon.pid
        self.assertEqual(connect_back_elements(w), [])
        self.assertEqual(tgtest.daemon_listeners(pid), listeners_before)
        self.assertEqual(tgtest.settled_fd_count(pid), fds_before)

    def test_policy_changed_while_admitting(self):
        """AddForward of an R forward waits for the resolver; meanwhile the
        policy is reloaded to forbid remote forwards: the call gets the new
        policy's PolicyDenied naming its rule, nothing of it is left (no pin,
        listener or descriptor), the tunnel runs on with its forward."""
        w = self.w
        sink = self.slow_dns("dns-sink-3")
        path = self.open_alice_up()
        pid = w.daemon.pid
        fds_before = tgtest.settled_fd_count(pid)
        listeners_before = tgtest.daemon_listeners(pid)
        spec = f"R 0:mid-reload.tunnelgate-test.example:{DATA_PORT}"
        adder = self.add_forward_waiting(sink, path, spec, "add-mid-reload")

        original = (w.config_dir / "policy.conf").read_text()
        w.write_config("policy.conf", original + "AllowTcpForwarding local\n")

        def restore():
            w.write_config("policy.conf", original)
            if w.daemon is not None and w.daemon.alive():
                w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.addCleanup(restore)
        r = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.assertEqual(r.returncode, 0, r.stderr)

        self.assertNotEqual(adder.wait(timeout=60), 0)
        self.assertIn("AllowTcpForwarding local", adder.log())
        self.assertRegex(adder.log(), r"policy\.conf:\d+")
        self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.assertEqual(prop(w, ALICE, path, "Forwards"),
                         [f"L 127.0.0.1:0:127.0.0.1:{DATA_PORT}"])
        self.assert_nothing_left(fds_before, listeners_before)

    def test_tunnel_closed_while_admitting(self):
        """AddForward of an R forward waits for the resolver; meanwhile its
        tunnel is closed: the call fails naming the tunnel, and nothing of it
        is left (no pin, listener or descriptor)."""
        w = self.w
        sink = self.slow_dns("dns-sink-4")
        pid = w.daemon.pid
        fds_before = tgtest.settled_fd_count(pid)     # no tunnel yet
        path = self.open_alice_up()
        spec = f"R 0:mid-close.tunnelgate-test.example:{DATA_PORT}"
        adder = self.add_forward_waiting(sink, path, spec, "add-mid-close")

        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(list_tunnels(w, ADMIN), [])

        self.assertNotEqual(adder.wait(timeout=60), 0)
        self.assertRegex(adder.log(), r"No tunnel /org/tunnelgate/TunnelGate1/tunnel/\d+")
        self.assert_nothing_left(fds_before, [])


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, nftables)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

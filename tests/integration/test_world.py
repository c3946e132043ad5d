#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks that the integration-test world itself works, without tunnelgated.

Run as root: /usr/bin/python3 tests/integration/test_world.py [-v] [Test.test_x]
(exits 77 = skipped when not root).
"""

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busclient  # noqa: E402
import world  # noqa: E402

ALICE, BOB, MALLORY, ADMIN = "tg-alice", "tg-bob", "tg-mallory", "tg-admin"


class WorldTest(world.WorldTestCase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = world.World(users=[ALICE, BOB, MALLORY, ADMIN]).start()
        cls.addClassCleanup(cls.world.cleanup)
        print(f"\nworld {cls.world.id} set up in {cls.world.setup_seconds:.2f}s",
              file=sys.stderr)

    # -- network -----------------------------------------------------------------

    def test_names_resolve_per_namespace(self):
        w = self.world
        r = w.run(["getent", "hosts", "gw"], ns="client", check=True)
        self.assertEqual(r.stdout.split()[0], w.gateway_ip)
        r = w.run(["getent", "hosts", "intra"], ns="gateway", check=True)
        self.assertEqual(r.stdout.split()[0], w.intranet_ip)
        # the client does not even know the intranet's name
        self.assertNotEqual(w.run(["getent", "hosts", "intra"], ns="client").returncode, 0)
        # and the host's /etc/hosts is untouched
        self.assertNotIn(w.id, Path("/etc/hosts").read_text())

    def test_client_has_no_route_to_intranet(self):
        w = self.world
        r = w.run(["ip", "route", "get", w.intranet_ip], ns="client")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("unreachable", r.stderr.lower())
        r = w.run_as(ALICE, ["curl", "-sS", "--max-time", "3", "http://intra/"])
        self.assertNotEqual(r.returncode, 0)
        r = w.run_as(ALICE, ["curl", "-sS", "--max-time", "3", f"http://{w.intranet_ip}/"])
        self.assertNotEqual(r.returncode, 0)
        with self.assertRaises(OSError):
            w.connect("client", w.intranet_ip, w.data_port, timeout=2).close()
        # ... while the gateway reaches it
        r = w.run(["curl", "-sS", "--max-time", "5", "http://intra/"], ns="gateway", check=True)
        self.assertEqual(r.stdout.encode(), w.intranet_page)

    # -- sshd ----------------------------------------------------------------------

    def test_host_key_fingerprint_and_known_hosts(self):
        w = self.world
        r = w.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(w.host_key) + ".pub"], check=True)
        self.assertEqual(r.stdout.split()[1], w.host_key_fingerprint)
        self.assertTrue(w.known_hosts_line.startswith(f"gw,{w.gateway_ip} ssh-ed25519 AAAA"))
        self.assertIn(w.known_hosts_line, w.known_hosts.read_text())

    def test_ssh_login_with_key(self):
        w = self.world
        for user in (ALICE, MALLORY):
            r = w.run_as(user, w.ssh_argv(user, ["id", "-un"]), timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), user)
        # the brief's exact form, and the second port
        u = w.users[ALICE]
        r = w.run_as(ALICE, ["ssh", "-i", u.key, "-o", f"UserKnownHostsFile={w.known_hosts}",
                             "-o", "BatchMode=yes", f"{ALICE}@gw", "true"], timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = w.run_as(ALICE, w.ssh_argv(ALICE, ["true"], port=2222), timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_ssh_rejects_wrong_key_and_unknown_host_key(self):
        w = self.world
        argv = w.ssh_argv(ALICE, ["true"])
        argv[argv.index(f"{ALICE}@gw")] = f"{BOB}@gw"    # alice's key is not bob's
        r = w.run_as(ALICE, argv, timeout=30)
        self.assertEqual(r.returncode, 255)
        self.assertIn("Permission denied", r.stderr)
        empty = w.dir / "empty_known_hosts"
        empty.write_text("")
        r = w.run_as(ALICE, w.ssh_argv(ALICE, ["true"], known_hosts=empty), timeout=30)
        self.assertEqual(r.returncode, 255)

    def test_local_forward_with_agent(self):
        w = self.world
        sock = w.start_agent(ALICE)
        self.assertTrue(os.path.exists(sock))
        r = w.run_as(ALICE, ["ssh-add", "-l", "-E", "sha256"], check=True)
        fp = w.run(["ssh-keygen", "-l", "-f", w.users[ALICE].pubkey_path], check=True)
        self.assertIn(fp.stdout.split()[1], r.stdout)
        # the key is NOT passed with -i: ssh must use the agent
        argv = w.ssh_argv(ALICE, identity=False,
                          options=["-N", "-o", "ExitOnForwardFailure=yes",
                                   "-L", "127.0.0.1:18080:intra:80"])
        p = w.spawn_as(ALICE, argv, name="ssh-L-alice")
        try:
            w.wait_port("client", "127.0.0.1", 18080, timeout=15, proc=p)
            r = w.run_as(ALICE, ["curl", "-sS", "--max-time", "10", "http://127.0.0.1:18080/"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.encode(), w.intranet_page)
            r = w.run_as(ALICE, ["curl", "-sS", "--max-time", "20",
                                 "http://127.0.0.1:18080/big.bin"], text=False)
            self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), w.intranet_big_sha256)
            # and the data service through the same tunnel kind, from Python
            p2 = w.spawn_as(ALICE, w.ssh_argv(ALICE, identity=False, options=[
                "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:19000:intra:{w.data_port}"]),
                name="ssh-L-alice-data")
            w.wait_port("client", "127.0.0.1", 19000, timeout=15, proc=p2)
            data = os.urandom(3 << 20)
            with w.connect("client", "127.0.0.1", 19000) as s:
                self.assertEqual(w.data_hash(s, data), hashlib.sha256(data).hexdigest())
            p2.stop()
            self.assertIn("Accepted publickey for tg-alice", w.proc("sshd").log())
        finally:
            p.stop()
        w.stop_agent(ALICE)
        self.assertNotIn("SSH_AUTH_SOCK", w.user_env(ALICE))

    # -- data service ----------------------------------------------------------------

    def _data(self, ns="gateway", host=None):
        w = self.world
        return w.connect(ns, host or w.intranet_ip, w.data_port)

    def test_dataserver_modes(self):
        w = self.world
        data = os.urandom(1 << 20)
        with self._data() as s:
            self.assertEqual(w.data_echo(s, data), data)
        big = os.urandom(16 << 20)
        with self._data() as s:
            self.assertEqual(w.data_hash(s, big), hashlib.sha256(big).hexdigest())
        with self._data() as s:
            self.assertEqual(w.data_hash(s, b""), hashlib.sha256(b"").hexdigest())
        n = 5 * (1 << 20) + 17
        with self._data() as s:
            got = w.data_send(s, n)
        self.assertEqual(len(got), n)
        self.assertEqual(got, w.pattern_bytes(n))
        self.assertEqual(hashlib.sha256(got).hexdigest(), w.pattern_sha256(n))
        with self._data() as s:
            s.sendall(b"WHOAMI\n")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(world.recv_all(s).split()[0].decode(), w.gateway_inner_ip)
        with self._data() as s:       # not a command: plain echo, including the first line
            self.assertEqual(world.roundtrip(s, b"", b"hello\nworld", None), b"hello\nworld")
        with self._data(host=w.intranet_ip6) as s:
            self.assertEqual(w.data_echo(s, b"v6"), b"v6")
        # the helper services: gateway loopback + unix socket, client loopback
        with w.connect("gateway", "127.0.0.1", w.data_port) as s:
            self.assertEqual(w.data_echo(s, b"gw-lo"), b"gw-lo")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(w.gateway_data_socket))
            self.assertEqual(w.data_echo(s, b"unix"), b"unix")
        with w.connect("client", "127.0.0.1", w.data_port) as s:
            self.assertEqual(w.data_echo(s, b"client-lo"), b"client-lo")

    def test_dataserver_many_connections(self):
        w = self.world
        n = 300
        socks = [self._data() for _ in range(n)]   # all open at the same time
        errors, results = [], [None] * n

        def worker(i):
            try:
                payload = hashlib.sha256(str(i).encode()).digest() * 1024    # 32 KiB
                results[i] = w.data_echo(socks[i], payload) == payload
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                socks[i].close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertTrue(all(results))
        # throughput sanity: 128 MiB through HASH
        t0 = time.monotonic()
        with self._data() as s:
            s.sendall(b"HASH\n")
            chunk = os.urandom(1 << 20)
            h = hashlib.sha256()
            for _ in range(128):
                s.sendall(chunk)
                h.update(chunk)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(world.recv_all(s).decode().strip(), h.hexdigest())
        print(f"\n128 MiB HASH in {time.monotonic() - t0:.2f}s", file=sys.stderr)

    # -- bus and polkit ---------------------------------------------------------------------

    def test_polkit_answers_per_rules(self):
        w = self.world
        expect = [
            (ALICE, "org.tunnelgate.open", (True, False)),
            (BOB, "org.tunnelgate.open", (True, False)),
            (MALLORY, "org.tunnelgate.open", (False, False)),
            (MALLORY, "org.tunnelgate.manage", (False, False)),
            (ADMIN, "org.tunnelgate.manage", (True, False)),
            (ADMIN, "org.tunnelgate.open-remote", (True, False)),
            # not handled by the rules: the action's allow_any (auth_admin_keep) applies
            (ALICE, "org.tunnelgate.open-remote", (False, True)),
            (BOB, "org.tunnelgate.manage", (False, True)),
        ]
        for user, action, (authorized, challenge) in expect:
            with self.subTest(user=user, action=action):
                got = w.polkit_check(user, action)
                self.assertEqual(got[:2], (authorized, challenge), got)
        # unix-process subject, the way pkcheck / busctl users do it
        r = w.run_as(MALLORY, ["sh", "-c", (
            'exec busctl --system call org.freedesktop.PolicyKit1 '
            '/org/freedesktop/PolicyKit1/Authority org.freedesktop.PolicyKit1.Authority '
            'CheckAuthorization "(sa{sv})sa{ss}us" unix-process 2 pid u $$ start-time t 0 '
            'org.tunnelgate.open 0 0 ""')], check=True)
        self.assertTrue(r.stdout.startswith("(bba{ss}) false false"), r.stdout)
        self.assertEqual(w.polkit_check(ALICE, "org.tunnelgate.open", subject="pid")[:2],
                         (True, False))
        # the decisions really came from our rules file
        log = w.proc("polkitd").log()
        self.assertIn("tunnelgate-test rules: org.tunnelgate.open for tg-mallory", log)
        self.assertIn("Finished loading, compiling and executing 1 rules", log)

    def test_polkit_reads_only_our_files(self):
        w = self.world
        with w.bus_connection() as bus:
            (actions,) = bus.call(busclient.POLKIT_NAME, busclient.POLKIT_PATH,
                                  busclient.POLKIT_IFACE, "EnumerateActions", "s", [""])
        ids = {a[0] for a in actions}
        self.assertTrue({"org.tunnelgate.open", "org.tunnelgate.open-remote",
                         "org.tunnelgate.bind-any", "org.tunnelgate.use-profile",
                         "org.tunnelgate.manage"} <= ids)
        self.assertIn("org.freedesktop.policykit.exec", ids)   # the host's actions too
        # polkitd sees our directories through bind mounts in its own mount
        # namespace; the host's mount table and directories are untouched
        pk = w.proc("polkitd")
        mounts = {line.split()[4] for line in
                  Path(f"/proc/{pk.pid}/mountinfo").read_text().splitlines()}
        host_mounts = {line.split()[4] for line in
                       Path("/proc/self/mountinfo").read_text().splitlines()}
        for d in ("/usr/share/polkit-1/actions", "/etc/polkit-1/rules.d",
                  "/usr/share/polkit-1/rules.d"):
            self.assertIn(d, mounts)
            self.assertNotIn(d, host_mounts)
        self.assertNotEqual(os.stat(f"/proc/{pk.pid}/ns/mnt").st_ino,
                            os.stat("/proc/self/ns/mnt").st_ino)
        self.assertEqual(sorted(os.listdir(w.dir / "polkit" / "rules.d")),
                         ["50-tunnelgate-test.rules"])

    def test_polkit_rules_can_be_changed(self):
        w = self.world
        try:
            w.set_polkit_rules('polkit.addRule(function(action, subject) {\n'
                               '  if (action.id == "org.tunnelgate.manage" && subject.user == "tg-bob")\n'
                               '    return polkit.Result.YES;\n});\n')
            self.assertEqual(w.polkit_check(BOB, "org.tunnelgate.manage")[:2], (True, False))
        finally:
            w.restore_polkit_rules()
        self.assertEqual(w.polkit_check(BOB, "org.tunnelgate.manage")[:2], (False, True))

    def test_bus_uses_project_policy(self):
        w = self.world
        tool = str(w.dbus_tool)
        # only root may own the daemon's name
        r = w.run_as(ALICE, [world.PYTHON, "-c", (
            "import sys; sys.path.insert(0, sys.argv[1]); import busclient\n"
            "c = busclient.Connection()\n"
            "try:\n    c.request_name('org.tunnelgate.TunnelGate1')\n    print('owned')\n"
            "except busclient.DBusError as e:\n    print(e.name)\n"), os.path.dirname(tool)])
        self.assertEqual(r.stdout.strip(), "org.freedesktop.DBus.Error.AccessDenied", r.stderr)
        with w.bus_connection() as owner:
            self.assertEqual(owner.request_name(world.BUS_NAME), 1)
            stop = threading.Event()

            def pump():
                while not stop.is_set():
                    owner.pending_signals()
                    time.sleep(0.005)
            t = threading.Thread(target=pump)
            t.start()
            try:
                # allowed interface: reaches the owner (GDBus answers Peer.Ping)
                r = w.run_as(ALICE, [world.PYTHON, tool, "call", world.BUS_NAME, "/",
                                     "org.freedesktop.DBus.Peer", "Ping"])
                self.assertEqual(r.stdout.strip(), "[]", r.stdout + r.stderr)
                # Properties.Set is not in the policy: the bus refuses it
                r = w.run_as(ALICE, [world.PYTHON, tool, "call", world.BUS_NAME, world.MANAGER_PATH,
                                     "org.freedesktop.DBus.Properties", "Set", "ssv",
                                     '["org.tunnelgate.Manager1", "Enforcing", {"$v": ["b", false]}]'])
                self.assertIn("org.freedesktop.DBus.Error.AccessDenied", r.stdout)
                # busctl as a user works against the private bus too
                r = w.busctl(ALICE, "call", world.BUS_NAME, "/", "org.freedesktop.DBus.Peer",
                             "Ping")
                self.assertEqual(r.returncode, 0, r.stderr)
            finally:
                stop.set()
                t.join()

    # -- logind (fake_login1.py) -------------------------------------------------------

    def test_fake_login1(self):
        w = self.world
        login1 = (world.LOGIN1_BUS_NAME, "/org/freedesktop/login1",
                  "org.freedesktop.login1.Manager")
        fake = w.start_fake_login1()
        try:
            with w.bus_connection() as bus:
                self.assertEqual(bus.get_name_owner(world.LOGIN1_BUS_NAME), fake.unique_name)
                bus.add_match(f"type='signal',sender='{login1[0]}',path='{login1[1]}',"
                              f"interface='{login1[2]}',member='PrepareForSleep'")
                (fd,), fds = bus.call_message(*login1, "Inhibit", "ssss",
                                              ["sleep", "test", "testing", "delay"])
                self.assertEqual(fds, [fd])
                os.fstat(fd)                   # a real descriptor, ours now
                self.assertEqual(fake.inhibitors(), 1)
                (info,) = fake.inhibitor_list()
                self.assertEqual((info["what"], info["who"], info["why"], info["mode"],
                                  info["sender"], info["uid"]),
                                 ("sleep", "test", "testing", "delay", bus.unique_name, 0))
                (listed,) = bus.call(*login1, "ListInhibitors")
                self.assertEqual(listed, [("sleep", "test", "testing", "delay", 0,
                                           info["pid"])])
                # as logind: what and mode are checked; and it can be made to refuse
                with self.assertRaises(busclient.DBusError) as cm:
                    bus.call(*login1, "Inhibit", "ssss", ["sleep", "test", "x", "later"])
                self.assertEqual(cm.exception.name, "org.freedesktop.DBus.Error.InvalidArgs")
                fake.refuse()
                with self.assertRaises(busclient.DBusError) as cm:
                    bus.call(*login1, "Inhibit", "ssss", ["sleep", "test", "x", "delay"])
                self.assertEqual(cm.exception.name, "org.freedesktop.DBus.Error.AccessDenied")
                fake.refuse(False)
                self.assertEqual(fake.inhibitors(), 1)
                # closing the fd releases the inhibitor, and it sees that
                os.close(fd)
                fake.wait_inhibitors(0, timeout=5)
                # PrepareForSleep(true), then (false), from the name's owner
                fake.sleep()
                s = bus.wait_signal(member="PrepareForSleep", timeout=5)
                self.assertEqual((s.sender, s.body, s.destination),
                                 (fake.unique_name, [True], None))
                fake.resume()
                s = bus.wait_signal(member="PrepareForSleep", timeout=5)
                self.assertEqual(s.body, [False])
            # only root may own the name or call it
            tool = str(w.dbus_tool)
            r = w.run_as(ALICE, [world.PYTHON, "-c", (
                "import sys; sys.path.insert(0, sys.argv[1]); import busclient\n"
                "c = busclient.Connection()\n"
                "try:\n    c.request_name('org.freedesktop.login1')\n    print('owned')\n"
                "except busclient.DBusError as e:\n    print(e.name)\n"), os.path.dirname(tool)])
            self.assertEqual(r.stdout.strip(), "org.freedesktop.DBus.Error.AccessDenied",
                             r.stderr)
            r = w.run_as(ALICE, [world.PYTHON, tool, "call", *login1, "Inhibit", "ssss",
                                 '["sleep", "alice", "x", "delay"]'])
            self.assertIn("org.freedesktop.DBus.Error.AccessDenied", r.stdout)
            self.assertEqual(fake.inhibitors(), 0)
        finally:
            fake.stop()
        with w.bus_connection() as bus:
            self.assertFalse(bus.name_has_owner(world.LOGIN1_BUS_NAME))

    # -- changing the network ------------------------------------------------------------

    def _link(self, ns, dev):
        return self.world.run(["ip", "-o", "link", "show", dev], ns=ns, check=True).stdout

    def _wait_link(self, ns, dev, text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while text not in self._link(ns, dev):
            if time.monotonic() > deadline:
                self.fail(f"{dev} in {ns} never showed {text!r}: {self._link(ns, dev)}")
            time.sleep(0.02)

    def test_links_and_default_routes(self):
        w = self.world
        uplink = w.CLIENT_UPLINK
        self.assertEqual(w.default_route(), "")
        try:
            w.replace_default_route()
            self.assertIn(f"default via {w.gateway_ip} dev {uplink}", w.default_route())
            w.replace_default_route(via="ipv6")
            self.assertIn(f"default via {w.gateway_ip6} dev {uplink}",
                          w.default_route(ipv6=True))
            # down: the routes go, the addresses (IPv6 too) stay
            w.link_down("client", uplink)
            self.assertIn("state DOWN", self._link("client", uplink))
            self.assertEqual(w.default_route(), "")
            w.link_up("client", uplink)
            self._wait_link("client", uplink, "state UP")
            addresses = w.run(["ip", "-o", "addr", "show", uplink], ns="client").stdout
            self.assertIn(f"{w.client_ip}/24", addresses)
            self.assertIn(f"{w.client_ip6}/64", addresses)
            self.assertEqual(w.default_route(), "")
            w.wait_port("client", w.gateway_ip, w.sshd_ports[0])
            # the cable pulled at the gateway's end: the client's link loses its carrier
            w.link_down("gateway", w.GATEWAY_CLIENT_LINK)
            self._wait_link("client", uplink, "NO-CARRIER")
            self.assertIn(",UP>", self._link("client", uplink))
            w.link_up("gateway", w.GATEWAY_CLIENT_LINK)
            self._wait_link("client", uplink, "state UP")
            w.replace_default_route()
            w.delete_default_route()
            w.delete_default_route(ipv6=True)
            w.delete_default_route()                 # none: not an error
            self.assertEqual(w.default_route(), "")
        finally:
            w.link_up("client", uplink)
            w.link_up("gateway", w.GATEWAY_CLIENT_LINK)
            w.delete_default_route()
            w.delete_default_route(ipv6=True)
        w.wait_port("client", w.gateway_ip, w.sshd_ports[0])
        with w.listen("gateway", w.gateway_ip6) as server:
            w.wait_port("client", w.gateway_ip6, server.getsockname()[1])

    # -- daemon launcher (with a stand-in for tunnelgated) --------------------------------

    STANDIN = r'''#!/usr/bin/python3
import os, signal, sys, time
args = sys.argv[1:]
opt = dict(zip(args[::2], args[1::2]))
sys.path.insert(0, os.environ["STANDIN_TOOLS"])
import busclient
print("standin args:", " ".join(args), flush=True)
print("standin env bus:", os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"), flush=True)
if os.environ.get("STANDIN_FAIL"):
    print("standin: failing on purpose", flush=True)
    sys.exit(3)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
c = busclient.Connection(opt["--bus-address"])
assert c.request_name("org.tunnelgate.TunnelGate1") == 1
while not stop:
    c.pending_signals()
    time.sleep(0.01)
print("standin: terminated cleanly", flush=True)
'''

    def _standin(self):
        w = self.world
        path = w.dir / "tools" / "tunnelgated-standin"
        path.write_text(self.STANDIN)
        os.chmod(path, 0o755)
        return path, {"STANDIN_TOOLS": str(w.dir / "tools")}

    def test_start_daemon_with_standin(self):
        w = self.world
        binary, env = self._standin()
        d = w.start_daemon(binary, env=env, valgrind=False)
        self.assertTrue(d.alive())
        with w.bus_connection() as bus:
            self.assertTrue(bus.name_has_owner(world.BUS_NAME))
            self.assertEqual(bus.connection_unix_pid(bus.get_name_owner(world.BUS_NAME)), d.pid)
        # it runs in the client namespace
        self.assertEqual(os.stat(f"/proc/{d.pid}/ns/net").st_ino,
                         os.stat(f"/run/netns/{w.client_ns}").st_ino)
        res = d.stop()
        self.assertEqual(res.returncode, 0)
        self.assertIn(f"--bus-address {w.bus_address} --state-dir {w.state_dir} "
                      f"--config-dir {w.config_dir} --system-known-hosts {w.known_hosts} "
                      "--verbose", res.log)
        self.assertIn(f"standin env bus: {w.bus_address}", res.log)
        self.assertIn("terminated cleanly", res.log)
        self.assertIs(d.stop(), res)

    def test_start_daemon_failure_shows_log(self):
        w = self.world
        binary, env = self._standin()
        with self.assertRaises(world.DaemonError) as cm:
            w.start_daemon(binary, env=dict(env, STANDIN_FAIL="1"), valgrind=False)
        self.assertIn("failing on purpose", str(cm.exception))
        self.assertIn("exited with status 3", str(cm.exception))
        with self.assertRaises(world.DaemonError):
            w.start_daemon(w.dir / "no-such-binary")

    def test_dump_logs(self):
        w = self.world
        import io
        buf = io.StringIO()
        text = w.dump_logs(file=buf, tail=5)
        self.assertEqual(text, buf.getvalue())
        for name in ("sshd", "polkitd", "dbus-daemon", "intranet-http", "intranet-data"):
            self.assertIn(f"----- {name} (", text)


class CleanupTest(unittest.TestCase):
    """A second, separate world: after cleanup() nothing of it is left."""

    def test_cleanup_removes_everything(self):
        user = "tg-cleanup"
        w = world.World(users=[user], groups={user: ["tg-cleanup-grp"]}).start()
        try:
            w.start_agent(user)
            ssh = w.spawn_as(user, w.ssh_argv(user, identity=False, options=[
                "-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:18081:intra:80"]))
            w.wait_port("client", "127.0.0.1", 18081, timeout=15, proc=ssh)
            uid = w.users[user].uid
            home = w.users[user].home
            nsnames = list(w.ns.values())
            pids = [p.pid for p in w._procs]
            for ns in nsnames:
                pids += world._ns_pids(ns)
            pids += world._uids_processes(uid)     # incl. the sshd session on the gateway
            self.assertTrue(world._uids_processes(uid))
            wdir = w.dir
            self.assertTrue(wdir.is_dir())
        except BaseException:
            w.cleanup()
            raise
        self.assertEqual(w.cleanup(), [])
        self.assertEqual(w.cleanup(), [])           # idempotent
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in nsnames:
            self.assertNotIn(ns, listed)
            self.assertFalse(os.path.exists(f"/run/netns/{ns}"))
            self.assertFalse(os.path.exists(f"/etc/netns/{ns}"))
        self.assertNotEqual(subprocess.run(["getent", "passwd", user]).returncode, 0)
        self.assertNotEqual(subprocess.run(["getent", "group", user]).returncode, 0)
        self.assertNotEqual(subprocess.run(["getent", "group", "tg-cleanup-grp"]).returncode, 0)
        self.assertFalse(home.exists())
        self.assertFalse(wdir.exists())
        self.assertEqual(world._uids_processes(uid), [])
        time.sleep(0.05)
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                 "Z" not in world._read(f"/proc/{p}/stat").split(")")[-1].split()[:1]]
        self.assertEqual(alive, [])
        self.assertNotIn(w, world._LIVE_WORLDS)


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

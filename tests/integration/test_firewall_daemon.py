#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The firewall as tunnelgated runs it (issue 4), end to end: the real daemon
in the test world's client namespace manages table `inet tunnelgate` there
(through libnftnl; the host's ruleset is never touched), the users run the
real OpenSSH client, and the kernel decides.

  * egress lockdown: a user's own `ssh -L` to the gateway is reset by the
    kernel (standard port by SshPorts, a custom port because gw is a
    PermitServer, over IPv6 too), while the same user's tunnel through the
    daemon works; an exempt user's ssh works; rejections are counted;
  * listener guard: a daemon listener on 0.0.0.0 is reachable from the
    gateway namespace only when ListenerSources allows that address; a
    loopback listener puts nothing in the way of the outside (a service on
    the same port of another address stays reachable);
  * ListenerUsers: another local user's connection to a tunnel's L or D
    listener (a profile's too) is reset by the kernel, counted, and named in
    the journal and `tunnelgatectl firewall`; a policy can widen it; without
    the firewall the daemon refuses it on accept;
  * fail closed: after kill -9 the lockdown still holds; a restarted daemon
    replaces the table in one go, without the dead tunnels' elements;
  * tamper repair: a table or element deleted by hand is back within a second;
    with the table owned (kernel >= 6.9) root's nft cannot change it at all;
  * Manager1.Enforcing, GetFirewall (manage only), a reload that turns the
    firewall off removes the table, and a daemon that cannot install the
    table the policy asks for does not start.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_firewall_daemon.py -v
(exits 77 = skipped when not root).
"""

import json
import re
import os
import shutil
import signal
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
from tgtest import (ALICE, BOB, ADMIN, BUS, MPATH, MIFACE, BUSCTL_TIMEOUT,  # noqa: E402
                    agent_option, busctl_open_ok, close_all_tunnels, curl, free_port,
                    prop, wait_for)

USERS = (ALICE, BOB, ADMIN)
SLOW = 3 if tgtest.VALGRIND else 1

POLKIT_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") != 0)
        return;
    if (subject.user == "tg-admin")
        return polkit.Result.YES;
    if ((subject.user == "tg-alice" || subject.user == "tg-bob") &&
        (action.id == "org.tunnelgate.open" || action.id == "org.tunnelgate.bind-any" ||
         action.id == "org.tunnelgate.use-profile"))
        return polkit.Result.YES;
    return polkit.Result.NO;
});
"""

LOCKDOWN = """\
EgressLockdown yes
SshPorts 22
PermitServer gw
LogRejections no
Match User tg-bob
  LockdownExempt yes
"""


def setUpModule():
    tgtest.start_module_world(USERS, agents=USERS, polkit_rules=POLKIT_RULES, daemon=False)


def tearDownModule():
    tgtest.stop_module_world()


def nft(w, *args, check=True):
    return w.run(["nft", *args], ns="client", check=check)


def _normal(o):
    """A JSON object without kernel handles and with set elements sorted, so
    that two tables with the same content compare equal."""
    if isinstance(o, dict):
        return {k: (sorted((_normal(x) for x in v), key=lambda e: json.dumps(e, sort_keys=True))
                    if k == "elem" else _normal(v))
                for k, v in o.items() if k != "handle"}
    if isinstance(o, list):
        return [_normal(x) for x in o]
    return o


def table_json(w):
    """`nft -j list table inet tunnelgate` as a list of objects (no metainfo,
    no handles, elements sorted)."""
    out = json.loads(nft(w, "-j", "list", "table", "inet", "tunnelgate").stdout)
    return [_normal(o) for o in out["nftables"] if "metainfo" not in o]


def set_elements(w, name):
    """The elements of one set, as nft -j prints them (sorted reprs)."""
    for o in table_json(w):
        if "set" in o and o["set"]["name"] == name:
            return sorted(json.dumps(e, sort_keys=True) for e in o["set"].get("elem", []))
    raise AssertionError(f"no set {name} in table inet tunnelgate")


def counter(w, name):
    for o in table_json(w):
        if "counter" in o and o["counter"]["name"] == name:
            return o["counter"]["packets"]
    raise AssertionError(f"no counter {name}")


def table_exists(w):
    return nft(w, "list", "table", "inet", "tunnelgate", check=False).returncode == 0


def own_ssh(w, user, host="gw", port=None, kind="L"):
    """The user's own OpenSSH client with a forward of `kind` (L, R or D),
    running `true` on the server: (returncode, stderr)."""
    lport = free_port(w)
    forward = {"L": ["-L", f"127.0.0.1:{lport}:intra:80"],
               "R": ["-R", f"127.0.0.1:{lport}:127.0.0.1:9000"],
               "D": ["-D", f"127.0.0.1:{lport}"]}[kind]
    argv = w.ssh_argv(user, ["true"], host=host, port=port,
                      options=["-o", "ExitOnForwardFailure=yes", "-o", "HostKeyAlias=gw",
                               *forward])
    r = w.run_as(user, argv, timeout=60)
    return r.returncode, r.stderr


class FirewallTestCase(tgtest.DaemonTestCase):

    def start(self, policy, args=()):
        w = self.w
        if w.daemon is not None and w.daemon.alive():
            close_all_tunnels(w)
            tgtest.check_daemon_stopped_cleanly(w)
        w.write_config("policy.conf", policy)
        d = w.start_daemon(args=list(args))
        self.addCleanup(close_all_tunnels, w)
        return d

    def reload(self, policy):
        self.w.write_config("policy.conf", policy)
        return self.w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")

    def enforcing(self, user=ALICE):
        return self.w.busctl(user, BUSCTL_TIMEOUT, "get-property", BUS, MPATH, MIFACE,
                             "Enforcing", json=True)["data"]

    def wait_server_resolved(self):
        """PermitServer names are resolved in a thread after start and reload."""
        w = self.w
        wait_for(lambda: any(w.gateway_ip in e for e in set_elements(w, "ssh_servers_v4")),
                 timeout=10 * SLOW, what=f"{w.gateway_ip} (gw) in ssh_servers_v4")

    def open_web_tunnel(self, user, bind="127.0.0.1"):
        w = self.w
        port = free_port(w)
        path = busctl_open_ok(w, user, "gw", [f"L {bind}:{port}:intra:80"],
                              agent_option(w, user))
        return path, port


class LockdownTest(FirewallTestCase):

    def test_own_ssh_is_refused_by_the_kernel_the_tunnel_works(self):
        w = self.w
        # without the lockdown the user's own ssh works: the test can fail
        self.start("EgressLockdown no\n")
        rc, err = own_ssh(w, ALICE)
        self.assertEqual(rc, 0, f"plain ssh should work without the lockdown: {err}")

        self.reload(LOCKDOWN)
        self.assertTrue(self.enforcing())
        self.wait_server_resolved()
        before = counter(w, "lockdown_rejects")
        for kind in ("L", "R", "D"):
            rc, err = own_ssh(w, ALICE, kind=kind)
            self.assertEqual(rc, 255, f"ssh -{kind}: {err}")
            self.assertIn("Connection refused", err)
        # a custom port: gw is a PermitServer, so every port of it is closed
        rc, err = own_ssh(w, ALICE, port=2222)
        self.assertEqual(rc, 255)
        self.assertIn("Connection refused", err)
        # IPv6: gw6 is the gateway's IPv6 address; port 22 is an SSH port
        rc, err = own_ssh(w, ALICE, host="gw6")
        self.assertEqual(rc, 255)
        self.assertIn("Connection refused", err)
        self.assertGreaterEqual(counter(w, "lockdown_rejects") - before, 5)

        # the same user through the daemon: its socket carries the mark
        path, port = self.open_web_tunnel(ALICE)
        r = curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("intranet", r.stdout.lower())

        # an exempt user's own ssh goes through
        for kind in ("L", "R", "D"):
            rc, err = own_ssh(w, BOB, kind=kind)
            self.assertEqual(rc, 0, f"ssh -{kind}: {err}")

    def test_custom_ssh_port_and_any_server(self):
        """PermitServer * puts no address in the server set: SshPorts decides,
        on every address."""
        w = self.w
        self.start("EgressLockdown yes\nSshPorts 22,2222\nPermitServer *\n")
        self.assertEqual(set_elements(w, "ssh_servers_v4"), [])
        for port in (None, 2222):
            rc, err = own_ssh(w, ALICE, port=port)
            self.assertEqual(rc, 255, f"port {port}: {err}")
            self.assertIn("Connection refused", err)
        path, port = self.open_web_tunnel(ALICE)
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.1:{port}/").returncode, 0)

    def test_kill_9_keeps_the_lockdown_restart_rebuilds(self):
        w = self.w
        d = self.start(LOCKDOWN)
        self.wait_server_resolved()
        fresh = table_json(w)
        # a tunnel with a guarded listener: its elements are in the table
        path, port = self.open_web_tunnel(ALICE)
        owned = set_elements(w, "owned_listeners_v4")
        self.assertTrue(any(str(port) in e for e in owned), owned)

        d.send_signal(signal.SIGKILL)
        d.wait(10)
        d.stop(check=False)
        # the table stays, and with it the lockdown
        self.assertTrue(table_exists(w))
        rc, err = own_ssh(w, ALICE)
        self.assertEqual(rc, 255, err)
        self.assertIn("Connection refused", err)

        # a new daemon replaces the table in one transaction: the same table as
        # a fresh start, nothing of the dead tunnel
        w.start_daemon()
        self.wait_server_resolved()
        self.assertEqual(table_json(w), fresh)
        self.assertFalse(any(str(port) in e for e in set_elements(w, "owned_listeners_v4")))
        rc, err = own_ssh(w, ALICE)
        self.assertEqual(rc, 255, err)


class BannerTest(FirewallTestCase):
    """DetectSshBanner: an sshd on a port that is not an SSH port, at an
    address that is not in the server set, is still found by the banner the
    client sends first."""

    POLICY = """\
EgressLockdown yes
SshPorts 22
# a wildcard: the daemon may go to gw, but no address goes into the server set
PermitServer g*
DetectSshBanner {banner}
Match User tg-bob
  LockdownExempt yes
"""

    def test_ssh_on_another_port_is_reset(self):
        w = self.w
        self.start(self.POLICY.format(banner="no"))
        self.assertEqual(set_elements(w, "ssh_servers_v4"), [])
        rc, err = own_ssh(w, ALICE, port=2222)
        self.assertEqual(rc, 0, f"without banner detection port 2222 is open: {err}")

        self.assertEqual(self.reload(self.POLICY.format(banner="yes")).returncode, 0)
        before = counter(w, "lockdown_rejects")
        rc, err = own_ssh(w, ALICE, port=2222)
        self.assertEqual(rc, 255, err)
        self.assertIn("reset", err.lower())
        self.assertGreater(counter(w, "lockdown_rejects"), before)
        # an exempt user, and the daemon's own session, pass
        rc, err = own_ssh(w, BOB, port=2222)
        self.assertEqual(rc, 0, err)
        path, port = self.open_web_tunnel(ALICE)
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.1:{port}/").returncode, 0)
        # ssh through a sanctioned tunnel (to the loopback listener) passes
        lport = free_port(w)
        busctl_open_ok(w, ALICE, "gw", [f"L 127.0.0.1:{lport}:gw:2222"],
                       agent_option(w, ALICE))
        rc, err = own_ssh(w, ALICE, host="127.0.0.1", port=lport)
        self.assertEqual(rc, 0, err)


class ListenerGuardTest(FirewallTestCase):

    POLICY = """\
GatewayPorts clientspecified
ListenerSources {sources}
"""

    def fetch_from_gateway(self, port, timeout=5):
        w = self.w
        r = w.run(["curl", "-sS", "--max-time", str(timeout),
                   f"http://{w.client_ip}:{port}/"], ns="gateway", timeout=timeout + 10)
        return r.returncode, r.stdout, r.stderr

    def test_allowed_source_reaches_the_listener_others_are_reset(self):
        w = self.w
        self.start(self.POLICY.format(sources=w.gateway_ip))
        path, port = self.open_web_tunnel(ALICE, bind="0.0.0.0")
        rc, out, err = self.fetch_from_gateway(port)
        self.assertEqual(rc, 0, err)
        self.assertIn("intranet", out.lower())
        # loopback is always allowed
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.1:{port}/").returncode, 0)

        # another source only: the gateway's connection is reset by the kernel
        # (counted there; the daemon never sees it)
        self.start(self.POLICY.format(sources="192.0.2.7"))
        path, port = self.open_web_tunnel(ALICE, bind="0.0.0.0")
        before = counter(w, "listener_rejects")
        rc, out, err = self.fetch_from_gateway(port)
        self.assertEqual(rc, 7, f"curl should fail to connect: {rc} {out} {err}")
        self.assertGreater(counter(w, "listener_rejects"), before)
        self.assertNotIn("not an allowed source", w.daemon.log())
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.1:{port}/").returncode, 0)

        # the guard follows the tunnel: closed, the element goes
        w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o", path)
        wait_for(lambda: not any(str(port) in e for e in set_elements(w, "listener_ports")),
                 timeout=5 * SLOW, what="the closed tunnel's listener element to go")

    def test_guard_off_the_daemon_still_checks_sources(self):
        """ListenerGuard no: no element, but the daemon refuses the source on
        accept (defence in depth)."""
        w = self.w
        self.start("ListenerGuard no\nEgressLockdown no\nConnectBackPinning no\n" +
                   self.POLICY.format(sources="192.0.2.7"))
        self.assertFalse(self.enforcing())
        self.assertFalse(table_exists(w))
        path, port = self.open_web_tunnel(ALICE, bind="0.0.0.0")
        rc, out, err = self.fetch_from_gateway(port)
        self.assertNotEqual(rc, 0)
        self.assertNotIn("intranet", out.lower())
        wait_for(lambda: "not an allowed source (ListenerSources)" in w.daemon.log(),
                 timeout=5 * SLOW, what="the daemon's refusal in its log")


class ListenerUsersTest(FirewallTestCase):
    """A tunnel's listener serves its owner (and root) only: the kernel
    resets another local user's connection (ListenerUsers, default owner)."""

    def socks_curl(self, user, port):
        return self.w.run_as(user, ["curl", "-sS", "--max-time", "20", "--socks5-hostname",
                                    f"127.0.0.1:{port}", "http://intra/"], timeout=30)

    def test_another_users_connection_is_reset_by_the_kernel(self):
        w = self.w
        bob = w.users[BOB]
        self.start("")
        self.assertTrue(self.enforcing())
        path, port = self.open_web_tunnel(ALICE)
        tunnel_id = prop(w, ALICE, path, "Id")
        socks = free_port(w)
        busctl_open_ok(w, ALICE, "gw", [f"D 127.0.0.1:{socks}"], agent_option(w, ALICE))
        # the test can fail: alice's own connections work
        r = curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("intranet", r.stdout.lower())
        self.assertEqual(self.socks_curl(ALICE, socks).returncode, 0)

        before = counter(w, "owner_rejects")
        mark = len(w.daemon.log())
        r = curl(w, BOB, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.returncode, 7, f"bob's curl should be refused: {r.stdout} {r.stderr}")
        self.assertIn("connect", r.stderr.lower())
        r = self.socks_curl(BOB, socks)
        self.assertEqual(r.returncode, 7, f"{r.stdout} {r.stderr}")
        self.assertNotIn("intranet", r.stdout.lower())
        self.assertEqual(counter(w, "owner_rejects") - before, 2)
        # who, in the journal and in tunnelgatectl firewall
        expected = (f"tunnel {tunnel_id}: the kernel reset a connection from uid {bob.uid} "
                    f"(tg-bob) to 127.0.0.1 port {port}: the listener is tg-alice's "
                    "(ListenerUsers)")
        wait_for(lambda: expected in w.daemon.log()[mark:], timeout=5 * SLOW,
                 what="the refusal in the daemon's log")
        self.assertIn(f"from uid {bob.uid} (tg-bob) to 127.0.0.1 port {socks}",
                      w.daemon.log()[mark:])
        r = w.ctl(ADMIN, "firewall")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("refused local connections (ListenerUsers), newest first:", r.stdout)
        self.assertRegex(r.stdout, rf"uid {bob.uid} \(tg-bob\) to 127.0.0.1 port {port}: "
                                   rf"tunnel {tunnel_id} of tg-alice")
        self.assertRegex(r.stdout, rf"listener 127.0.0.1 port {port} \(tunnel {tunnel_id}\): "
                                   rf"other hosts not guarded; local users root, uid "
                                   rf"{w.users[ALICE].uid}\n")
        # root is not kept out (documented)
        r = w.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{port}/"],
                  ns="client", timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_policy_widens_it_and_a_profile_is_guarded_too(self):
        w = self.w
        self.start("Match User tg-alice\n  ListenerUsers owner user:tg-bob\n")
        path, port = self.open_web_tunnel(ALICE)
        self.assertEqual(curl(w, BOB, f"http://127.0.0.1:{port}/").returncode, 0)
        self.assertEqual(curl(w, ADMIN, f"http://127.0.0.1:{port}/").returncode, 7)
        # a profile only tg-alice may start: bob (outside AllowUsers) cannot
        # use her instance of it either
        keys = w.dir / "listener-users-keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        key = keys / "profile_ed25519"
        shutil.copy(w.users[BOB].key, key)
        os.chmod(key, 0o600)
        pport = free_port(w)
        w.write_config("profiles.d/web.conf",
                       "Description intranet web\nServer gw\nUser tg-bob\n"
                       f"IdentityFile {key}\nHostKey {w.host_key_fingerprint}\n"
                       f'Forward "L 127.0.0.1:{pport}:intra:80"\nAllowUsers tg-alice\n')
        self.addCleanup(shutil.rmtree, w.config_dir / "profiles.d", True)
        self.start("")
        busctl_open_ok(w, ALICE, "@web", [])
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.1:{pport}/").returncode, 0)
        r = curl(w, BOB, f"http://127.0.0.1:{pport}/")
        self.assertEqual(r.returncode, 7, f"{r.stdout} {r.stderr}")

    def test_without_the_firewall_the_daemon_refuses_on_accept(self):
        w = self.w
        bob = w.users[BOB]
        self.start("ListenerGuard no\nEgressLockdown no\nConnectBackPinning no\n")
        self.assertFalse(table_exists(w))
        path, port = self.open_web_tunnel(ALICE)
        tunnel_id = prop(w, ALICE, path, "Id")
        mark = len(w.daemon.log())
        r = curl(w, BOB, f"http://127.0.0.1:{port}/")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("intranet", r.stdout.lower())
        wait_for(lambda: f"tunnel {tunnel_id}: refusing a connection from uid {bob.uid} "
                         f"(tg-bob) to L 127.0.0.1:{port}:intra:80: the listener is "
                         "tg-alice's (ListenerUsers)" in w.daemon.log()[mark:],
                 timeout=5 * SLOW, what="the daemon's refusal in its log")
        r = curl(w, ALICE, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_loopback_listener_leaves_the_same_port_elsewhere_alone(self):
        """Guards are keyed by address and port: alice's 127.0.0.1:P puts
        nothing in the way of a service on the client's own address, port P,
        and takes nothing from bob's listener on 127.0.0.2:P."""
        w = self.w
        self.start("")
        path, port = self.open_web_tunnel(ALICE)
        self.assertFalse(any(str(port) in e for e in set_elements(w, "listener_ports") +
                             set_elements(w, "listener_addrs_v4")))
        service = w.listen("client", w.client_ip, port)
        self.addCleanup(service.close)
        outside = w.connect("gateway", w.client_ip, port)    # raises if reset
        outside.close()
        bob_path = busctl_open_ok(w, BOB, "gw", [f"L 127.0.0.2:{port}:intra:80"],
                                  agent_option(w, BOB))
        self.assertEqual(prop(w, BOB, bob_path, "State"), "up")
        self.assertEqual(curl(w, BOB, f"http://127.0.0.2:{port}/").returncode, 0)
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.2:{port}/").returncode, 7)
        self.assertEqual(curl(w, ALICE, f"http://127.0.0.1:{port}/").returncode, 0)


class TableLifeTest(FirewallTestCase):

    def test_repair_within_a_second(self):
        w = self.w
        self.start(LOCKDOWN, args=["--no-firewall-owner"])
        self.wait_server_resolved()
        fresh = table_json(w)
        path, port = self.open_web_tunnel(ALICE)
        with_tunnel = table_json(w)

        nft(w, "delete", "table", "inet", "tunnelgate")
        t0 = time.monotonic()
        wait_for(lambda: table_exists(w), timeout=1.0 * SLOW, interval=0.02,
                 what="the deleted table to be back")
        wait_for(lambda: table_json(w) == with_tunnel, timeout=1.0 * SLOW, interval=0.02,
                 what="the table to be as before")
        took = time.monotonic() - t0
        # the lockdown holds again
        rc, err = own_ssh(w, ALICE)
        self.assertEqual(rc, 255, err)

        # one element by hand
        nft(w, "delete", "element", "inet", "tunnelgate", "ssh_ports", "{ 22 }")
        wait_for(lambda: table_json(w) == with_tunnel, timeout=1.0 * SLOW, interval=0.02,
                 what="the deleted element to be back")
        wait_for(lambda: re.search(r"changed by nft\[\d+\] \(DELSETELEM ssh_ports.*restored",
                                   w.daemon.log()),
                 timeout=5, what="the repair, naming who did it, in the log")
        print(f"\n  table repaired {took * 1000:.0f} ms after `nft delete table`",
              file=sys.stderr)
        self.assertNotEqual(fresh, with_tunnel)

    def test_owned_table_refuses_root(self):
        w = self.w
        self.start(LOCKDOWN)
        text = nft(w, "list", "table", "inet", "tunnelgate").stdout
        if "owner" not in text:
            self.skipTest("this kernel has no owner|persist tables (< 6.9): "
                          "tamper repair covers it (test_repair_within_a_second)")
        r = nft(w, "delete", "table", "inet", "tunnelgate", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Operation not permitted", r.stderr)
        self.assertTrue(table_exists(w))

    def test_enforcing_get_firewall_and_switching_off(self):
        w = self.w
        self.start(LOCKDOWN)
        self.assertTrue(self.enforcing(ALICE))   # public property
        path, port = self.open_web_tunnel(ALICE)
        tunnel_id = prop(w, ALICE, path, "Id")
        out = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "GetFirewall",
                       json=True)["data"][0]
        self.assertRegex(out, rf"port {port}\b.*tunnel {tunnel_id}\b")
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "GetFirewall")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not allowed org.tunnelgate.manage", r.stderr)
        # the same through tunnelgatectl
        r = w.ctl(ADMIN, "firewall")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, out)
        self.assertIn(f"ssh servers: {w.gateway_ip}", r.stdout)
        r = w.ctl(ALICE, "firewall")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not allowed org.tunnelgate.manage", r.stderr)
        self.assertIn("org.tunnelgate.Error.NotAuthorized", r.stderr)

        r = self.reload("EgressLockdown no\nListenerGuard no\nConnectBackPinning no\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(self.enforcing())
        self.assertFalse(table_exists(w))
        rc, err = own_ssh(w, ALICE)
        self.assertEqual(rc, 0, err)
        # and back on
        self.assertEqual(self.reload(LOCKDOWN).returncode, 0)
        self.assertTrue(self.enforcing())
        self.wait_server_resolved()
        self.assertEqual(own_ssh(w, ALICE)[0], 255)

    def test_no_net_admin_is_a_start_error(self):
        """A policy that asks for the firewall where it cannot be installed:
        the daemon says why and does not start."""
        w = self.w
        if w.daemon is not None and w.daemon.alive():
            close_all_tunnels(w)
            tgtest.check_daemon_stopped_cleanly(w)
        w.write_config("policy.conf", LOCKDOWN)
        argv = ["setpriv", "--bounding-set=-net_admin", "--", str(w.daemon_binary),
                "--bus-address", w.bus_address, "--config-dir", str(w.config_dir),
                "--state-dir", str(w.dir / "state-nocap")]
        r = w.run(argv, ns="client", timeout=30 * SLOW)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot be installed", r.stderr)
        self.assertIn("EgressLockdown", r.stderr)
        # without the firewall in the policy the daemon starts (and stops) as usual
        w.write_config("policy.conf",
                       "EgressLockdown no\nListenerGuard no\nConnectBackPinning no\n")
        d = w.start_daemon(args=[])
        self.assertFalse(self.enforcing())
        tgtest.check_daemon_stopped_cleanly(w, d)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: the firewall tests need root (network namespaces, nftables)",
              file=sys.stderr)
        sys.exit(77)
    unittest.main()

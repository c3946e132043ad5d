#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's netwatch (src/daemon/netwatch.c) against the real kernel and a
stand-in logind, through tg-netwatch-probe (netwatch-probe.c), which runs it
alone in the client namespace and prints what it reports.

  network  real route, address and link changes in the client namespace (World's
           replace_default_route, link_down, link_up): one report per burst,
           none for what changes nothing, none for messages not from the kernel
  sleep    fake_login1.py: the delay inhibitor taken, held over PrepareForSleep(true)
           until released (or the safety timeout), taken again after the
           resume; logind coming late, leaving, refusing; forged signals ignored

Under TG_VALGRIND=1 the probe runs under valgrind and must exit without errors
or leaks. Run as root: /usr/bin/python3 tests/integration/test_netwatch.py [-v]
(exits 77 = skipped when not root).
"""

import os
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busclient  # noqa: E402
import world  # noqa: E402

DEBOUNCE = 0.3          # TG_NETWATCH_DEBOUNCE_MS
DEBOUNCE_MAX = 2.0      # TG_NETWATCH_DEBOUNCE_MAX_MS
SLEEP_HOLD = 3.0        # TG_NETWATCH_SLEEP_HOLD_MS
LOGIN1 = (world.LOGIN1_BUS_NAME, "/org/freedesktop/login1", "org.freedesktop.login1.Manager")


class Probe:
    """A running tg-netwatch-probe: events as they come, commands on stdin."""

    def __init__(self, proc, unique_name, valgrind_log):
        self.proc = proc
        self.unique_name = unique_name
        self.valgrind_log = valgrind_log
        self.events = []                    # (kind, cause) read but not taken

    def _line(self, timeout):
        got = world._readline_timeout(self.proc.popen.stdout, max(timeout, 0.0))
        if got and not got.endswith(b"\n"):
            raise world.WorldError(f"probe: half a line {got!r}:\n{self.proc.log(tail=40)}")
        return got.decode().rstrip("\n") if got else None

    def _read(self, timeout):
        """Reads one line within timeout: an event is queued, anything else returned."""
        line = self._line(timeout)
        if line is not None and line.startswith("event "):
            kind, _, cause = line[6:].partition(" ")
            self.events.append((kind, cause))
            return ""
        return line

    def wait_event(self, kind, timeout=5.0):
        """The next event (it must be of `kind`); returns its cause."""
        deadline = time.monotonic() + timeout
        while not self.events:
            if self._read(deadline - time.monotonic()) is None:
                if time.monotonic() >= deadline or not self.proc.alive():
                    raise AssertionError(f"no {kind} event within {timeout}s:\n"
                                         f"{self.proc.log(tail=40)}")
        got, cause = self.events.pop(0)
        if got != kind:
            raise AssertionError(f"expected a {kind} event, got {got}: {cause}")
        return cause

    def events_within(self, seconds):
        """Every event reported in the next `seconds` (and any queued before)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        events, self.events = self.events, []
        return events

    def command(self, line, timeout=10.0):
        self.proc.popen.stdin.write(f"{line}\n".encode())
        self.proc.popen.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            got = self._read(deadline - time.monotonic())
            if got is None:
                raise AssertionError(f"probe did not answer {line!r}:\n{self.proc.log(tail=40)}")
            if got:
                return got

    def holds(self):
        return {"holds yes": True, "holds no": False}[self.command("holds?")]

    def wait_holds(self, expected, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.holds() != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"probe holds an inhibitor: {not expected} after "
                                     f"{timeout}s:\n{self.proc.log(tail=40)}")
            time.sleep(0.02)

    def release(self):
        self.assert_equal(self.command("release"), "released")

    @staticmethod
    def assert_equal(a, b):
        if a != b:
            raise AssertionError(f"{a!r} != {b!r}")

    def quit(self, timeout=60.0):
        """Ends the probe with "quit"; returns (exit status, log)."""
        self.proc.popen.stdin.write(b"quit\n")
        self.proc.popen.stdin.flush()
        try:
            rc = self.proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = self.proc.stop()
        log = self.proc.log()
        if self.valgrind_log is not None:
            log += "\n--- valgrind ---\n" + world._read(self.valgrind_log)
        self.proc.stop()
        return rc, log


class NetwatchTest(world.WorldTestCase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = world.World(users=[], polkit=False, sshd=False, services=False).start()
        cls.addClassCleanup(cls.world.cleanup)
        cls.settle()

    @classmethod
    def settle(cls, timeout=10.0):
        """Wait until the client's link is up and its IPv6 addresses are done with
        duplicate address detection (a link-local address becoming usable is a
        change the tests would see)."""
        w = cls.world
        deadline = time.monotonic() + timeout
        while True:
            link = w.run(["ip", "-o", "link", "show", w.CLIENT_UPLINK], ns="client").stdout
            tentative = w.run(["ip", "-6", "addr", "show", "tentative"], ns="client").stdout
            if "state UP" in link and not tentative.strip():
                break
            if time.monotonic() > deadline:
                raise world.WorldError(f"the client's network did not settle: {link}{tentative}")
            time.sleep(0.05)
        time.sleep(DEBOUNCE)

    def setUp(self):
        self.probes = []

    def tearDown(self):
        w = self.world
        for p in self.probes:
            p.proc.stop()
        w.link_up("client", w.CLIENT_UPLINK)
        w.link_up("gateway", w.GATEWAY_CLIENT_LINK)
        w.delete_default_route()
        w.delete_default_route(ipv6=True)
        self.settle()

    def probe(self, bus=False, inhibit=False):
        w = self.world
        binary = w.build_root / "tests" / "integration" / "tg-netwatch-probe"
        argv = [binary] + (["--bus", w.bus_address] if bus else []) + \
            (["--inhibit"] if inhibit else [])
        vg_log = None
        env = {"G_MESSAGES_DEBUG": "tunnelgate"}
        if os.environ.get("TG_VALGRIND") == "1":
            vg_log = w.dir / "logs" / f"valgrind-probe-{len(self.probes)}.log"
            argv = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                    "--errors-for-leak-kinds=definite",
                    f"--error-exitcode={world.VALGRIND_ERROR_EXIT}", "--num-callers=40",
                    f"--log-file={vg_log}"] + \
                ([f"--suppressions={world.GLIB_VALGRIND_SUPP}"]
                 if os.path.exists(world.GLIB_VALGRIND_SUPP) else []) + \
                [f"--suppressions={world.HERE / 'valgrind.supp'}"] + argv
            env.update(G_SLICE="always-malloc", G_DEBUG="gc-friendly")
        proc = w.spawn(argv, ns="client", env=env, name="netwatch-probe",
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = world._readline_timeout(proc.popen.stdout, 60.0).decode().split()
        if not line or line[0] != "ready":
            proc.stop()
            self.fail(f"tg-netwatch-probe did not start:\n{proc.log(tail=40)}")
        p = Probe(proc, line[1] if len(line) > 1 else None, vg_log)
        self.probes.append(p)
        return p

    def quit(self, p):
        rc, log = p.quit()
        self.assertEqual(rc, 0, log[-6000:])
        self.assertNotIn("CRITICAL", log)
        if p.valgrind_log is not None:
            self.assertIn("ERROR SUMMARY: 0 errors", log)

    def ip(self, *args, ns="client"):
        self.world.run(["ip"] + list(args), ns=ns, check=True)

    # -- the network -----------------------------------------------------------------------

    def test_default_route_and_links(self):
        w = self.world
        up = w.CLIENT_UPLINK
        p = self.probe()
        self.assertEqual(p.events_within(0.5), [])

        w.replace_default_route()
        self.assertEqual(p.wait_event("network-changed"),
                         f"default route added via {w.gateway_ip} dev {up}")
        w.replace_default_route(via="ipv6")
        self.assertEqual(p.wait_event("network-changed"),
                         f"IPv6 default route added via {w.gateway_ip6} dev {up}")
        w.delete_default_route(ipv6=True)
        self.assertEqual(p.wait_event("network-changed"),
                         f"IPv6 default route removed via {w.gateway_ip6} dev {up}")

        # the link down: one report for the burst, the link named in it
        w.link_down("client", up)
        events = p.events_within(1.5)
        self.assertEqual(len(events), 1, events)
        self.assertIn(f"link {up} down", events[0][1])
        # up: the addresses' routes come back before the carrier (the cause is the
        # first change of the burst); the IPv6 link-local address about a second
        # later, after duplicate address detection
        w.link_up("client", up)
        events = p.events_within(1.5)
        self.assertRegex(events[0][1], rf"^(link {up} up|route .* dev {up}) \(and \d+ more ")
        for _, cause in events[1:]:
            self.assertRegex(cause, rf"^address fe80:.* added to {up}$", events)
        self.settle()                       # the IPv6 link-local address comes back late
        p.events_within(0.5)

        # the cable pulled at the other end: the carrier goes, the link stays up
        w.link_down("gateway", w.GATEWAY_CLIENT_LINK)
        # (down or lowerlayerdown: the kernel says lowerlayerdown when the peer's
        # ifindex differs from the link's own)
        self.assertRegex(p.wait_event("network-changed"),
                         rf"^link {up} down \(operstate (down|lowerlayerdown)\)$")
        w.link_up("gateway", w.GATEWAY_CLIENT_LINK)
        self.assertEqual(p.wait_event("network-changed"), f"link {up} up")
        self.quit(p)

    def test_addresses(self):
        w = self.world
        up = w.CLIENT_UPLINK
        x = w.subnet
        p = self.probe()
        self.ip("addr", "add", f"10.{x}.1.9/24", "dev", up)
        self.assertEqual(p.wait_event("network-changed"),
                         f"address 10.{x}.1.9/24 added to {up}")
        # a DHCP client renewing its lease: the same address, new lifetimes
        for lifetime in (600, 500, 400):
            self.ip("addr", "change", f"10.{x}.1.9/24", "dev", up, "valid_lft", str(lifetime),
                    "preferred_lft", str(lifetime))
        self.assertEqual(p.events_within(1.0), [])
        self.ip("addr", "del", f"10.{x}.1.9/24", "dev", up)
        self.assertEqual(p.wait_event("network-changed"),
                         f"address 10.{x}.1.9/24 removed from {up}")
        self.ip("-6", "addr", "add", f"fd00:{x}:1::9/64", "dev", up, "nodad")
        self.assertEqual(p.wait_event("network-changed"),
                         f"address fd00:{x}:1::9/64 added to {up}")
        self.ip("-6", "addr", "del", f"fd00:{x}:1::9/64", "dev", up)
        self.assertEqual(p.wait_event("network-changed"),
                         f"address fd00:{x}:1::9/64 removed from {up}")
        self.quit(p)

    def test_what_changes_nothing(self):
        w = self.world
        up = w.CLIENT_UPLINK
        x = w.subnet
        p = self.probe()
        # another routing table, the MTU, a neighbour, a routing rule, the link's
        # own address refreshed
        self.ip("route", "add", f"10.{x}.8.0/24", "dev", up, "table", "100")
        self.ip("route", "add", "default", "via", w.gateway_ip, "table", "100")
        self.ip("link", "set", up, "mtu", "1400")
        self.ip("link", "set", up, "mtu", "1500")
        self.ip("neigh", "replace", f"10.{x}.1.77", "lladdr", "02:00:00:00:00:77", "dev", up)
        self.ip("rule", "add", "from", f"10.{x}.8.1", "table", "100")
        self.ip("rule", "del", "from", f"10.{x}.8.1", "table", "100")
        self.ip("addr", "change", f"{w.client_ip}/24", "dev", up)
        self.ip("route", "flush", "table", "100")
        self.assertEqual(p.events_within(1.0), [])
        # ... and then what does
        self.ip("route", "add", f"10.{x}.8.0/24", "dev", up)
        self.assertEqual(p.wait_event("network-changed"), f"route 10.{x}.8.0/24 added dev {up}")
        self.ip("route", "del", f"10.{x}.8.0/24", "dev", up)
        self.assertEqual(p.wait_event("network-changed"),
                         f"route 10.{x}.8.0/24 removed dev {up}")
        self.quit(p)

    def test_only_the_kernel_is_believed(self):
        """A privileged process can send rtnetlink messages to the route groups;
        a made-up default route from it is not a change (nl_pid != 0)."""
        w = self.world
        p = self.probe()

        def forge():
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)    # NETLINK_ROUTE
            try:
                s.bind((0, 0))
                gateway = socket.inet_aton("192.0.2.66")
                attrs = struct.pack("=HHI", 8, 15, 254)                  # RTA_TABLE main
                attrs += struct.pack("=HH", 8, 5) + gateway             # RTA_GATEWAY
                # struct rtmsg: family, dst_len, src_len, tos, table (main), protocol
                # (boot), scope (universe), type (unicast), flags
                body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
                # RTM_NEWROUTE (24), no NLM_F_REQUEST: the kernel itself ignores it
                header = struct.pack("=IHHII", 16 + len(body) + len(attrs), 24, 0, 1, 0)
                # to the listeners of RTMGRP_IPV4_ROUTE (group 7), and to one port
                s.sendto(header + body + attrs, (0, 1 << 6))
                return s.getsockname()[0]
            finally:
                s.close()
        port = world.in_netns(w.client_ns, forge)
        self.assertEqual(p.events_within(1.0), [])
        p.proc.wait_log(rf"ignored a netlink message from port {port}, not the kernel")
        self.quit(p)

    def test_bursts_and_flapping(self):
        w = self.world
        up = w.CLIENT_UPLINK
        x = w.subnet
        p = self.probe()
        # a burst: one report, after it, with how many came
        batch = "".join(f"route add 10.{x}.{9 + i}.0/24 dev {up}\n" for i in range(5))
        subprocess.run(["ip", "-n", w.client_ns, "-batch", "-"], input=batch, text=True,
                       check=True)
        events = p.events_within(1.5)
        self.assertEqual(events, [("network-changed",
                                   f"route 10.{x}.9.0/24 added dev {up} (and 4 more changes)")])
        # changes that never stop are still reported (at most DEBOUNCE_MAX after the first)
        start = time.monotonic()
        flapping_until = start + 3.5
        first = None
        while time.monotonic() < flapping_until:
            verb = "del" if int((time.monotonic() - start) * 10) % 2 else "add"
            subprocess.run(["ip", "-n", w.client_ns, "route", verb, f"10.{x}.20.0/24", "dev",
                            up], capture_output=True)
            if first is None and p.events_within(0.1):
                first = time.monotonic() - start
            time.sleep(0.05)
        self.assertIsNotNone(first, "nothing reported while the changes went on")
        self.assertLess(first, DEBOUNCE_MAX + 0.5)
        self.quit(p)
        batch = "".join(f"route del 10.{x}.{9 + i}.0/24\n" for i in range(5))
        subprocess.run(["ip", "-n", w.client_ns, "-batch", "-"], input=batch, text=True,
                       check=True)
        subprocess.run(["ip", "-n", w.client_ns, "route", "del", f"10.{x}.20.0/24"],
                       capture_output=True)

    # -- sleep -------------------------------------------------------------------------------

    def test_sleep_inhibitor(self):
        w = self.world
        fake = w.start_fake_login1()
        try:
            p = self.probe(bus=True, inhibit=True)
            fake.wait_inhibitors(1)
            p.wait_holds(True)
            (info,) = fake.inhibitor_list()
            self.assertEqual((info["what"], info["who"], info["why"], info["mode"],
                              info["sender"], info["uid"]),
                             ("sleep", "tunnelgated", "Close SSH tunnels cleanly before sleep",
                              "delay", p.unique_name, 0))

            # held while the daemon closes its tunnels, released when it says so
            fake.sleep()
            self.assertEqual(p.wait_event("sleeping"), "the system is going to sleep")
            self.assertTrue(p.holds())
            self.assertEqual(fake.inhibitors(), 1)
            p.release()
            fake.wait_inhibitors(0, timeout=2)
            self.assertFalse(p.holds())
            p.release()                         # harmless twice
            fake.resume()
            self.assertEqual(p.wait_event("resumed"), "the system resumed")
            fake.wait_inhibitors(1)
            p.wait_holds(True)
            # a release after the resume leaves the next sleep's inhibitor alone
            p.release()
            self.assertTrue(p.holds())
            self.assertEqual(fake.inhibitors(), 1)

            # nobody releases: the safety timeout lets the system sleep
            fake.sleep()
            p.wait_event("sleeping")
            took = fake.wait_inhibitors(0, timeout=SLEEP_HOLD + 3)
            self.assertGreater(took, SLEEP_HOLD - 1.0)
            p.proc.wait_log(r"letting the system sleep after 3000 ms")
            fake.resume()
            p.wait_event("resumed")
            fake.wait_inhibitors(1)

            # PrepareForSleep from anyone but logind is not believed: sent to the
            # probe directly, or broadcast by another connection
            with w.bus_connection() as bus:
                for destination in (p.unique_name, None):
                    bus.conn.emit_signal(destination, LOGIN1[1], LOGIN1[2], "PrepareForSleep",
                                         busclient.to_variant("(b)", [True]))
                bus.conn.flush_sync(None)
            self.assertEqual(p.events_within(1.0), [])
            self.assertEqual(fake.inhibitors(), 1)

            # logind refusing: logged, not fatal, and no inhibitor
            fake.sleep()
            p.wait_event("sleeping")
            p.release()
            fake.wait_inhibitors(0)
            fake.refuse()
            fake.resume()
            p.wait_event("resumed")
            p.proc.wait_log(r"logind gave no sleep inhibitor: .*AccessDenied")
            self.assertFalse(p.holds())
            fake.refuse(False)
            self.assertEqual(fake.inhibitors(), 0)

            # logind leaving and coming back: the inhibitor is dropped, then taken again
            fake.stop()
            fake = w.start_fake_login1()
            fake.wait_inhibitors(1)
            p.wait_holds(True)
            fake.stop()
            p.wait_holds(False)
            p.proc.wait_log(r"logind left the bus")
            self.quit(p)
        finally:
            fake.stop()

    def test_logind_later_and_no_inhibit(self):
        w = self.world
        p = self.probe(bus=True, inhibit=True)
        q = self.probe(bus=True)
        self.assertFalse(p.holds())
        fake = w.start_fake_login1()
        try:
            fake.wait_inhibitors(1)
            p.wait_holds(True)
            self.assertEqual(fake.inhibitor_list()[0]["sender"], p.unique_name)
            # without inhibit: the events, never an inhibitor
            fake.sleep()
            self.assertEqual(q.wait_event("sleeping"), "the system is going to sleep")
            p.wait_event("sleeping")
            q.release()
            self.assertFalse(q.holds())
            # resumed before p released (or its safety timeout): p keeps the one it has
            fake.resume()
            self.assertEqual(q.wait_event("resumed"), "the system resumed")
            p.wait_event("resumed")
            self.assertTrue(p.holds())
            self.assertEqual([i["sender"] for i in fake.inhibitor_list()], [p.unique_name])
            self.assertEqual(p.events_within(SLEEP_HOLD + 0.5), [])
            self.assertEqual(fake.inhibitors(), 1)
            # freeing the netwatch closes its inhibitor
            self.quit(p)
            fake.wait_inhibitors(0, timeout=5)
            self.quit(q)
        finally:
            fake.stop()


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

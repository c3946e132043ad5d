#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Dynamic (D) forwards (issue 5): the daemon's SOCKS4/4a/5 server, end to
end with curl and raw SOCKS clients. Every request is checked against the
policy's PermitOpen for the tunnel's owner before a channel opens; a denied
one gets the protocol's refusal and a POLICY_DECISION line.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_dynamic.py -v
(exits 77 = skipped when not root).
"""

import os
import random
import socket
import struct
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
from tgtest import (ALICE, ADMIN, BUS, MPATH, MIFACE, BUSCTL_TIMEOUT,  # noqa: E402
                    agent_option, busctl_open_ok, close_all_tunnels, fd_count, free_port,
                    prop, wait_for)

USERS = (ALICE, ADMIN)


def setUpModule():
    tgtest.start_module_world(USERS, agents=USERS)


def tearDownModule():
    tgtest.stop_module_world()


def socks5_connect(w, port, atyp, address, dport, timeout=20):
    """A raw SOCKS5 CONNECT from the client namespace; returns (socket, reply code)."""
    s = w.connect("client", "127.0.0.1", port, timeout=timeout)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    if atyp == 3:
        addr = bytes([len(address)]) + address.encode()
    elif atyp == 1:
        addr = socket.inet_pton(socket.AF_INET, address)
    else:
        addr = socket.inet_pton(socket.AF_INET6, address)
    s.sendall(b"\x05\x01\x00" + bytes([atyp]) + addr + struct.pack(">H", dport))
    reply = b""
    while len(reply) < 10:
        chunk = s.recv(10 - len(reply))
        if not chunk:
            break
        reply += chunk
    return s, (reply[1] if len(reply) >= 2 else None)


class DynamicTest(tgtest.DaemonTestCase):

    @classmethod
    def setUpClass(cls):
        w = cls.W
        w.write_config("policy.conf",
                       f"PermitOpen intra:80 {w.intranet_ip}:80 intra:9000 "
                       f"[{w.intranet_ip6}]:9000\n")
        r = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        assert r.returncode == 0, r.stderr
        cls.port = free_port(w)
        cls.path = busctl_open_ok(w, ALICE, "gw", [f"D 127.0.0.1:{cls.port}"],
                                  agent_option(w, ALICE))

    @classmethod
    def tearDownClass(cls):
        close_all_tunnels(cls.W)

    def curl(self, *args):
        return self.w.run_as(ALICE, ["curl", "-sS", "--max-time", "30", *args], timeout=40)

    def test_curl_socks5_hostname_and_socks4a(self):
        w = self.w
        for flag in ("--socks5-hostname", "--socks4a"):
            with self.subTest(flag=flag):
                r = self.curl(flag, f"127.0.0.1:{self.port}", "http://intra/")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.encode(), w.intranet_page)

    def test_curl_socks5_and_socks4_with_addresses(self):
        w = self.w
        for flag in ("--socks5", "--socks4"):
            with self.subTest(flag=flag):
                r = self.curl(flag, f"127.0.0.1:{self.port}", f"http://{w.intranet_ip}/")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.encode(), w.intranet_page)

    def test_ipv6_destination(self):
        w = self.w
        s, code = socks5_connect(w, self.port, 4, w.intranet_ip6, 9000)
        self.assertEqual(code, 0)
        self.assertEqual(w.data_echo(s, b"over IPv6 through SOCKS"), b"over IPv6 through SOCKS")
        s.close()

    def test_forbidden_destination_is_refused(self):
        w = self.w
        before = w.daemon.log()
        # SOCKS5: "connection not allowed by ruleset" (2)
        s, code = socks5_connect(w, self.port, 3, "intra", 22)
        self.assertEqual(code, 2)
        self.assertEqual(s.recv(1), b"")          # and closed
        s.close()
        # SOCKS4: "request rejected" (0x5b), and closed
        s = w.connect("client", "127.0.0.1", self.port, timeout=20)
        s.sendall(b"\x04\x01" + struct.pack(">H", 80) + b"\x00\x00\x00\x01tg\x00gw\x00")
        self.assertEqual(s.recv(8)[:2], b"\x00\x5b")
        s.close()
        # and curl gives up (a proxy error, not a page)
        r = self.curl("--socks5-hostname", f"127.0.0.1:{self.port}", "http://intra:8080/")
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("<html", r.stdout.lower())
        log = w.daemon.log()[len(before):]
        self.assertRegex(log, r"policy denies SOCKS intra port 22 via 'D 127\.0\.0\.1:\d+' "
                              r"for tg-alice \(uid \d+\): PermitOpen")
        self.assertEqual(prop(w, ALICE, self.path, "State"), "up")

    def test_garbage_does_no_harm(self):
        w = self.w
        pid = w.daemon.pid
        baseline = fd_count(pid)
        rng = random.Random(4)
        inputs = [b"", b"\x00", b"GET / HTTP/1.0\r\n\r\n", b"\x05", b"\x05\x00",
                  b"\x05\x01\x02", b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",
                  b"\x05\x01\x00\x05\x01\x00\x09", b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50",
                  b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", b"\x04\x01\x00\x50" + b"A" * 1000,
                  b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 600]
        inputs += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 700)))
                   for _ in range(200)]
        for data in inputs:
            s = w.connect("client", "127.0.0.1", self.port, timeout=10)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
            except OSError:
                pass
            s.close()
        # still serving, nothing leaked
        r = self.curl("--socks5-hostname", f"127.0.0.1:{self.port}", "http://intra/")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: fd_count(pid) <= baseline, timeout=10,
                 what=f"the daemon's descriptors back to {baseline}")
        self.assertEqual(prop(w, ALICE, self.path, "ActiveConnections"), 0)

    def test_all_addresses_need_bind_any(self):
        """D *:port listens beyond loopback: polkit's bind-any, which the test
        rules do not give alice."""
        w = self.w
        port = free_port(w)
        r = tgtest.busctl_open(w, ALICE, "gw", [f"D *:{port}"], agent_option(w, ALICE))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("org.tunnelgate.bind-any", r.stderr)
        self.assertTrue(tgtest.can_listen(w, port))

    def test_silent_client_is_dropped(self):
        """A client that never finishes its handshake does not hold a
        connection for ever (30 s)."""
        w = self.w
        s = w.connect("client", "127.0.0.1", self.port, timeout=60)
        s.sendall(b"\x05\x01")          # and nothing more
        s.settimeout(60)
        self.assertEqual(s.recv(1), b"")
        s.close()
        self.assertIn("SOCKS handshake not finished in time", w.daemon.log())


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

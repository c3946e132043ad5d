#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Relay quality of tunnelgated: big transfers both ways, half-close, many
concurrent connections, back-pressure from a slow reader, a server that goes
away, and no descriptor leaks. Everything runs through a tunnel of tg-alice
to the intranet data service (dataserver.py on intranet:9000).

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_relay.py -v
(exits 77 = skipped when not root). Environment:
  TG_RELAY_MIB   size of the big transfers in MiB (default 256; 16 under TG_VALGRIND=1)
  TG_VALGRIND=1  run the daemon under valgrind; its exit must report no errors
"""

import hashlib
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
import world  # noqa: E402
from tgtest import (ALICE, ADMIN, BUS, MPATH, MIFACE, TIFACE, BUSCTL_TIMEOUT, V,  # noqa: E402
                    UserBus, DaemonTestCase, agent_option, busctl_open, busctl_open_ok,
                    can_listen, close_all_tunnels, daemon_listeners, daemon_tcp_sockets,
                    fd_count, fd_table, list_tunnels, prop, vm_rss_kib, wait_for)

MIB = 1 << 20
BIG = int(os.environ.get("TG_RELAY_MIB", "16" if tgtest.VALGRIND else "256")) * MIB
CHUNK = MIB
IO_TIMEOUT = 300 if tgtest.VALGRIND else 120


def setUpModule():
    tgtest.start_module_world([ALICE, ADMIN], [ALICE])


def tearDownModule():
    tgtest.stop_module_world()


def open_data_tunnel(w, extra_options=()):
    """A tunnel of alice's to intra:9000 on a kernel-chosen port: (path, port)."""
    path = busctl_open_ok(w, ALICE, "tg-alice@gw", [f"L 127.0.0.1:0:intra:{w.data_port}"],
                          agent_option(w, ALICE) + list(extra_options))
    return path, prop(w, ALICE, path, "Listeners")[0][2]


def close_tunnel(w, path):
    r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
    if r.returncode != 0:
        raise AssertionError(f"Close {path} failed: {r.stderr}")


class RelayTestCase(DaemonTestCase):

    def connect(self, port, timeout=IO_TIMEOUT):
        s = self.w.connect("client", "127.0.0.1", port, timeout=timeout)
        self.addCleanup(s.close)
        return s

    def counters(self, path):
        out = self.w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path,
                            "org.freedesktop.DBus.Properties", "GetAll", "s", TIFACE, json=True)
        return {k: v["data"] for k, v in out["data"][0].items()}


# ----------------------------------------------------------------------------


class BigTransferTest(RelayTestCase):

    @classmethod
    def setUpClass(cls):
        cls.path, cls.port = open_data_tunnel(cls.W)

    @classmethod
    def tearDownClass(cls):
        close_all_tunnels(cls.W)

    def test_echo_both_ways_at_once(self):
        s = self.connect(self.port)
        sent = hashlib.sha256()
        err = []

        def writer():
            try:
                s.sendall(b"ECHO\n")
                for _ in range(BIG // CHUNK):
                    chunk = os.urandom(CHUNK)
                    sent.update(chunk)
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)

        t0 = time.monotonic()
        t = threading.Thread(target=writer)
        t.start()
        got = hashlib.sha256()
        n = 0
        try:
            while True:
                c = s.recv(256 * 1024)
                if not c:
                    break
                got.update(c)
                n += len(c)
        finally:
            t.join()
        self.assertEqual(err, [])
        self.assertEqual(n, BIG)
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        print(f"\n  ECHO {BIG // MIB} MiB each way in {time.monotonic() - t0:.1f}s",
              file=sys.stderr)

    def test_send_from_server(self):
        s = self.connect(self.port)
        t0 = time.monotonic()
        s.sendall(f"SEND {BIG}\n".encode())
        s.shutdown(socket.SHUT_WR)
        n, digest = tgtest.recv_hashed(s)
        self.assertEqual(n, BIG)
        self.assertEqual(digest, self.w.pattern_sha256(BIG))
        print(f"\n  SEND {BIG // MIB} MiB in {time.monotonic() - t0:.1f}s", file=sys.stderr)

    def test_hash_upload_with_half_close(self):
        s = self.connect(self.port)
        t0 = time.monotonic()
        s.sendall(b"HASH\n")
        h = hashlib.sha256()
        for _ in range(BIG // CHUNK):
            chunk = os.urandom(CHUNK)
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        reply = world.recv_all(s)
        self.assertEqual(reply, h.hexdigest().encode() + b"\n")
        print(f"\n  HASH {BIG // MIB} MiB in {time.monotonic() - t0:.1f}s", file=sys.stderr)

    def test_half_close(self):
        w = self.w
        # the client's EOF reaches the server, whose reply still comes back whole
        for data in (b"", b"x", os.urandom(3 * MIB + 7)):
            with self.subTest(size=len(data)):
                s = self.connect(self.port)
                s.sendall(b"HASH\n" + data)
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(world.recv_all(s).decode().strip(),
                                 hashlib.sha256(data).hexdigest())
        # ECHO: after our EOF we still read everything, then the server's EOF
        data = os.urandom(2 * MIB)
        s = self.connect(self.port)
        s.sendall(b"ECHO\n")
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(world.recv_all(s), data)
        # the server's EOF first (SEND ends, then closes): the client can still send
        s = self.connect(self.port)
        s.sendall(b"SEND 1000\n")
        self.assertEqual(world.recv_all(s), w.pattern_bytes(1000))
        s.sendall(b"late bytes after the server's EOF do not break anything")

    def test_small_messages_interactive(self):
        """Request/response with small writes: no data held back in buffers."""
        s = self.connect(self.port, timeout=10)
        s.sendall(b"ECHO\n")
        for i in range(200):
            msg = f"ping {i}\n".encode()
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                c = s.recv(100)
                self.assertTrue(c, "EOF in the middle of the exchange")
                got += c
            self.assertEqual(got, msg)


# ----------------------------------------------------------------------------


class ConcurrencyTest(RelayTestCase):

    @classmethod
    def setUpClass(cls):
        cls.path, cls.port = open_data_tunnel(cls.W)

    @classmethod
    def tearDownClass(cls):
        close_all_tunnels(cls.W)

    def test_200_concurrent_connections(self):
        w = self.w
        n = 200
        base = self.counters(self.path)
        socks = [self.connect(self.port, timeout=120) for _ in range(n)]
        for s in socks:
            s.sendall(b"ECHO\n")
        # all 200 are open at the same time
        wait_for(lambda: self.counters(self.path)["ActiveConnections"] == n, timeout=15,
                 what=f"ActiveConnections == {n}")
        results, errors = [None] * n, []

        def worker(i):
            try:
                payload = hashlib.sha256(str(i).encode()).digest() * (8 * 1024)   # 256 KiB
                results[i] = world.roundtrip(socks[i], b"", payload, None) == payload
            except Exception as e:  # noqa: BLE001
                errors.append((i, e))
            finally:
                socks[i].close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual(errors, [])
        self.assertEqual(results, [True] * n)
        print(f"\n  {n} x 256 KiB ECHO in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        after = wait_for(lambda: (lambda c: c if c["ActiveConnections"] == 0 and
                                  c["TotalConnections"] == base["TotalConnections"] + n
                                  else None)(self.counters(self.path)),
                         timeout=10, what="ActiveConnections 0, TotalConnections +200")
        self.assertGreaterEqual(after["BytesSent"] - base["BytesSent"], n * (256 * 1024 + 5))
        self.assertGreaterEqual(after["BytesReceived"] - base["BytesReceived"], n * 256 * 1024)
        self.assertEqual(prop(w, ALICE, self.path, "State"), "up")

    def test_slow_reader_back_pressure(self):
        w = self.w
        pid = w.daemon.pid
        rss0 = vm_rss_kib(pid)
        stalled = self.connect(self.port)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        stalled.sendall(f"SEND {BIG}\n".encode())
        stalled.shutdown(socket.SHUT_WR)
        time.sleep(4)               # the server wants to send; nobody reads
        rss1 = vm_rss_kib(pid)
        # meanwhile other connections through the same SSH session still flow
        t0 = time.monotonic()
        for _ in range(3):
            s = self.connect(self.port, timeout=20)
            data = os.urandom(4 * MIB)
            self.assertEqual(w.data_echo(s, data), data)
            s.close()
        other = time.monotonic() - t0
        rss2 = vm_rss_kib(pid)
        growth = max(rss1, rss2) - rss0
        self.assertLess(growth, 64 * 1024,
                        f"daemon RSS grew by {growth} KiB while a reader stalled "
                        f"({rss0} -> {rss1} -> {rss2} KiB)")
        self.assertLess(other, 30, "a stalled reader held up other connections")
        # now read everything: nothing was lost
        n, digest = tgtest.recv_hashed(stalled)
        self.assertEqual(n, BIG)
        self.assertEqual(digest, w.pattern_sha256(BIG))
        print(f"\n  RSS {rss0} -> {rss1} -> {rss2} KiB during a stalled {BIG // MIB} MiB SEND",
              file=sys.stderr)


# ----------------------------------------------------------------------------


class ManyTunnelsTest(RelayTestCase):
    """Many tunnels at once, each with its own worker thread, and a busy one
    that must not stall the D-Bus side or the other tunnels."""

    N = 8 if tgtest.VALGRIND else 20

    def tearDown(self):
        close_all_tunnels(self.w)
        super().tearDown()

    def test_many_tunnels_and_a_busy_one(self):
        w = self.w
        fds_before = fd_count(w.daemon.pid)
        opened, errors = [None] * self.N, []

        def open_one(i):
            try:
                opened[i] = open_data_tunnel(w)
            except Exception as e:  # noqa: BLE001
                errors.append((i, e))

        threads = [threading.Thread(target=open_one, args=(i,)) for i in range(self.N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len({port for _, port in opened}), self.N)
        self.assertEqual(len(list_tunnels(w, ALICE)), self.N)

        # tunnel 0 is kept busy with a big download; the others each carry
        # their own transfer meanwhile, and the bus keeps answering
        busy = self.connect(opened[0][1])
        busy_result = {}
        busy_thread = threading.Thread(
            target=lambda: busy_result.update(data=world.World.data_send(busy, BIG)))
        busy_thread.start()
        size = 4 * MIB
        for path, port in opened[1:]:
            s = self.connect(port)
            self.assertEqual(hashlib.sha256(world.World.data_send(s, size)).hexdigest(),
                             world.World.pattern_sha256(size))
            # D-Bus calls are served by the main thread, never by a worker
            self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.assertEqual(len(list_tunnels(w, ALICE)), self.N)
        busy_thread.join(IO_TIMEOUT)
        self.assertFalse(busy_thread.is_alive())
        self.assertEqual(hashlib.sha256(busy_result["data"]).hexdigest(),
                         world.World.pattern_sha256(BIG))

        for path, port in opened:
            close_tunnel(w, path)
            self.assertTrue(can_listen(w, port), f"port {port} still taken after Close")
        wait_for(lambda: fd_count(w.daemon.pid) == fds_before, timeout=10,
                 what=f"descriptor count back to {fds_before}")


class FdLeakTest(RelayTestCase):

    def settled_fd_count(self, expect=None, timeout=10):
        pid = self.w.daemon.pid
        if expect is None:
            return tgtest.settled_fd_count(pid, timeout)
        try:
            return wait_for(lambda: fd_count(pid) == expect, timeout=timeout,
                            what=f"{expect} descriptors") and expect
        except AssertionError:
            return fd_count(pid)

    def one_round(self):
        w = self.w
        alice = w.users[ALICE]
        # tunnels that came up, with traffic, closed in both ways
        path, port = open_data_tunnel(w)
        socks = [self.connect(port, timeout=30) for _ in range(20)]
        for i, s in enumerate(socks):
            data = os.urandom(64 * 1024 + i)
            self.assertEqual(w.data_echo(s, data), data)
            s.close()
        held = [self.connect(port, timeout=30) for _ in range(5)]
        for s in held:
            s.sendall(b"HOLD\n")
        wait_for(lambda: self.counters(path)["ActiveConnections"] == 5, timeout=10,
                 what="5 held connections")
        close_tunnel(w, path)              # closed with connections still open
        for s in held:
            s.close()
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o",
                     open_data_tunnel(w)[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        # other credentials
        ub = UserBus(w, ALICE)
        try:
            for opts in ({"agent-fd": V("h", tgtest.FdConnect(alice.agent_sock))},
                         {"identity": V("s", str(alice.key))},
                         {"identity-fd": V("h", tgtest.FdOpen(alice.key))}):
                (p,) = ub.call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                               ["tg-alice@gw", ["L 127.0.0.1:0:intra:80"], opts], timeout=120)
                close_tunnel(w, p)
            # bind-to-caller, ended by the caller leaving
            ub.call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                    ["tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                     {"agent": V("s", str(alice.agent_sock)), "bind-to-caller": V("b", True)}],
                    timeout=120)
        finally:
            ub.close()
        wait_for(lambda: list_tunnels(w, ALICE) == [], timeout=10, what="no tunnels")
        # failed opens
        agent = agent_option(w, ALICE)
        busy = w.listen("client", "127.0.0.1", 0)
        busy_port = busy.getsockname()[1]
        try:
            failures = [
                ("tg-alice@gw", agent + [("host-key", "s", "SHA256:" + "A" * 43)]),   # bad key
                ("tg-alice@gw", [("identity", "s", str(self.fresh_key))]),            # auth
                ("tg-alice@gw", [("identity", "s", "/etc/shadow")]),                  # unreadable
                ("tg-alice@gw:2", agent),                                             # refused
                ("tg-alice@nosuchhost.invalid", agent),                               # no name
                ("tg-bob@gw", agent),                                                 # auth
            ]
            for dest, opts in failures:
                r = busctl_open(w, ALICE, dest, ["L 127.0.0.1:0:intra:80"], opts)
                self.assertNotEqual(r.returncode, 0, f"{dest} {opts} worked?")
            r = busctl_open(w, ALICE, "tg-alice@gw", [f"L 127.0.0.1:{busy_port}:intra:80"], agent)
            self.assertIn("in use", r.stderr)
        finally:
            busy.close()
        self.assertEqual(list_tunnels(w, ALICE), [])
        self.assertEqual(daemon_listeners(w.daemon.pid), [])

    def test_no_descriptor_leaks(self):
        w = self.w
        self.fresh_key = w.users[ALICE].dir / "id_not_authorized"
        if not self.fresh_key.exists():
            r = w.run_as(ALICE, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                                 str(self.fresh_key)])
            self.assertEqual(r.returncode, 0, r.stderr)
        self.one_round()                 # warm-up: lazily created descriptors
        pid = w.daemon.pid
        before = self.settled_fd_count()
        table0 = fd_table(pid)
        for _ in range(3):
            self.one_round()
        after = self.settled_fd_count(expect=before)
        table1 = fd_table(pid)
        extra = {fd: t for fd, t in table1.items() if table0.get(fd) != t}
        self.assertEqual(after, before, f"descriptor leak: {before} -> {after}; new: {extra}")
        # the sockets the daemon holds are its bus connection and nothing TCP
        self.assertEqual(daemon_tcp_sockets(pid), [])


# ----------------------------------------------------------------------------


class ServerGoneTest(RelayTestCase):
    """The SSH server disappears under a running tunnel."""

    def gateway_sshd_pids(self):
        pids = []
        for pid in world._ns_pids(self.w.gateway_ns):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "sshd":
                        pids.append(pid)
            except OSError:
                pass
        return pids

    def check_failed_then_close(self, path, port, held, observer):
        w = self.w
        state = wait_for(lambda: prop(w, ALICE, path, "State") == "failed", timeout=30,
                         what="State failed")
        self.assertTrue(state)
        last_error = prop(w, ALICE, path, "LastError")
        self.assertTrue(last_error, "LastError is empty")
        self.assertEqual(prop(w, ALICE, path, "Listeners"), [])
        self.assertEqual(self.counters(path)["ActiveConnections"], 0)
        # its listener is closed and the port free
        self.assertEqual(daemon_tcp_sockets(w.daemon.pid, port), [])
        self.assertTrue(can_listen(w, port))
        # the client's connection was ended
        held.settimeout(10)
        try:
            self.assertEqual(held.recv(100), b"")
        except ConnectionResetError:
            pass
        # still listed (as failed) until closed; the signal said so
        self.assertIn((path, "failed"), [(e[0], e[4]) for e in list_tunnels(w, ALICE)])
        wait_for(lambda: [s for s in observer.signals() if s["path"] == path and
                          s["member"] == "PropertiesChanged" and
                          s["body"][1].get("State") == "failed"], timeout=5,
                 what="PropertiesChanged State failed")
        close_tunnel(w, path)
        self.assertEqual(list_tunnels(w, ALICE), [])
        return last_error

    def test_sshd_killed(self):
        w = self.w
        observer = UserBus(w, ALICE)
        self.addCleanup(observer.close)
        observer.add_match(f"type='signal',sender='{BUS}'")
        observer.call(BUS, MPATH, MIFACE, "ListTunnels")  # the daemon tells it about alice's
        path, port = open_data_tunnel(w)
        held = self.connect(port, timeout=30)
        held.sendall(b"HOLD\n")
        wait_for(lambda: self.counters(path)["ActiveConnections"] == 1, timeout=10,
                 what="the held connection")
        self.addCleanup(w.restart_sshd)
        pids = self.gateway_sshd_pids()
        self.assertGreaterEqual(len(pids), 2, "sshd listener and session")
        world._kill_pids(pids, signal.SIGKILL)
        last_error = self.check_failed_then_close(path, port, held, observer)
        self.assertRegex(last_error, r"gw")
        # a new sshd: tunnels work again
        w.restart_sshd()
        path2, port2 = open_data_tunnel(w)
        s = self.connect(port2)
        self.assertEqual(w.data_echo(s, b"back"), b"back")
        close_tunnel(w, path2)

    def test_silent_server_detected_by_keepalive(self):
        """The network to the server goes dark (no FIN, no RST): with keepalive
        1 s the tunnel must fail within seconds, not hang."""
        w = self.w
        observer = UserBus(w, ALICE)
        self.addCleanup(observer.close)
        observer.add_match(f"type='signal',sender='{BUS}'")
        observer.call(BUS, MPATH, MIFACE, "ListTunnels")  # the daemon tells it about alice's
        path, port = open_data_tunnel(w, [("keepalive", "u", 1)])
        held = self.connect(port, timeout=30)
        held.sendall(b"ECHO\n")
        held.sendall(b"alive")
        self.assertEqual(held.recv(5), b"alive")

        def link(state):
            w.run(["ip", "link", "set", "client0", state], ns="gateway", check=True)
        link("down")
        self.addCleanup(w.wait_port, "client", w.gateway_ip, 22, 15)
        self.addCleanup(link, "up")
        t0 = time.monotonic()
        self.check_failed_then_close(path, port, held, observer)
        took = time.monotonic() - t0
        self.assertLess(took, 20, f"a dead server was noticed only after {took:.0f}s")


# ----------------------------------------------------------------------------


class ZDaemonExitTest(RelayTestCase):
    """Last: the daemon stops cleanly on SIGTERM with a tunnel still open (under
    TG_VALGRIND=1: valgrind reports no errors and no definite leaks)."""

    def test_daemon_stops_cleanly(self):
        w = self.w
        path, port = open_data_tunnel(w)
        s = self.connect(port)
        self.assertEqual(w.data_echo(s, b"bye"), b"bye")
        held = self.connect(port)
        held.sendall(b"HOLD\n")
        res = tgtest.check_daemon_stopped_cleanly(w)
        self.assertEqual(res.returncode, 0)
        self.assertTrue(can_listen(w, port))
        self.assertRegex(res.log, r"received SIGTERM")
        self.assertRegex(res.log, r"tunnel \d+ of tg-alice to tg-alice@gw:22 closed")


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

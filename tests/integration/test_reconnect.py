#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Tunnels that last (issue 13): keepalive and reconnect with the real
daemon, sshd and network namespaces, every fault made for real.

  * sshd killed (listener and sessions) and started again: the tunnel goes
    reconnecting (RetryAttempt, NextRetry, LastError), keeps its listener
    (the port stays the daemon's), comes back up on the same port
    (Reconnects 1), and the journal says TUNNEL_RECONNECTING/RECONNECTED;
  * a connection made while the server is gone is held and served when the
    tunnel is back; one that waits too long is reset;
  * the client's link down for 15 s and up: keepalive notices with no
    connection open, the tunnel comes back;
  * a silent server (its session process stopped): keepalive × count;
  * R forwards asked for again: port 0 re-reported in Listeners; a fixed
    port the old (frozen) session still holds is reclaimed once it is free;
  * a changed host key ends the tunnel (failed, HostKeyChanged words, no
    further attempt); MaxReconnectAttempts gives up; an agent restarted
    without keys is waited for until the key is added;
  * the forwards are re-admitted: a group the owner left no longer grants
    its forward, which is removed at the reconnect; AddForward while
    reconnecting is refused; option validation;
  * a lossy, slow path (30 % loss each way by nftables, since this kernel
    has no sch_netem, and 500 ms more each way by a relay): a transfer
    completes intact and the tunnel is not taken for lost.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_reconnect.py -v
(exits 77 = skipped when not root).
"""

import hashlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
from tgtest import (ALICE, BOB, ADMIN, BUS, MPATH, MIFACE, TIFACE, V,  # noqa: E402
                    close_all_tunnels, free_port, prop, user_bus, wait_for)

USERS = (ALICE, BOB, ADMIN)
SLOW = 3 if tgtest.VALGRIND else 1
SSHD = "/usr/sbin/sshd"
EXTRA = "tgxtra"           # a group that grants alice one more forward

OPEN = ("org.tunnelgate.open", "org.tunnelgate.open-remote")
POLKIT_RULES = tgtest.polkit_rules({ADMIN: ["*"], ALICE: OPEN, BOB: OPEN})

def setUpModule():
    tgtest.start_module_world(USERS, agents=USERS, polkit_rules=POLKIT_RULES,
                              groups={ALICE: [EXTRA]})


def tearDownModule():
    tgtest.stop_module_world()


def gateway_sshd_pids(w, user=None):
    """sshd processes in the gateway namespace: the listener and the sessions
    (those of `user` only, when given)."""
    netns = os.stat(f"/run/netns/{w.gateway_ns}").st_ino
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != netns:
                continue
            if os.readlink(f"/proc/{entry}/exe") != SSHD:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if user is None or user.encode() in cmdline:
            pids.append(int(entry))
    return pids


def cmdline_of(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class ReconnectTestCase(tgtest.DaemonTestCase):

    def setUp(self):
        self.addCleanup(close_all_tunnels, self.w)
        self.addCleanup(self.ensure_sshd)

    def ensure_sshd(self):
        """Each test leaves a listening sshd behind, whatever it did to it."""
        listening = [p for p in gateway_sshd_pids(self.w) if b" -D " in cmdline_of(p)]
        if not listening:
            self.w.restart_sshd()

    def kill_sshd(self):
        """sshd gone: the listener and every session (sessions are in their own
        process groups, so the world's restart alone would leave them)."""
        def gone():
            # the listener first, then the sessions: a reconnect the listener
            # accepted meanwhile is killed at the next round
            pids = gateway_sshd_pids(self.w)
            kill_pids([p for p in pids if b" -D " in cmdline_of(p)])
            kill_pids(pids)
            return not gateway_sshd_pids(self.w)
        wait_for(gone, timeout=10, interval=0.1, what="sshd gone")

    def kill_session(self, user=ALICE):
        """The session's sshd processes killed, once authentication is over (a
        process named "sshd: USER" without a [bracket] exists): killed earlier,
        the monitor may not have forked the session's child yet, which then
        lives on."""
        def settled():
            return any(not cmdline_of(p).strip().endswith(b"]")
                       for p in gateway_sshd_pids(self.w, user))
        wait_for(settled, timeout=10, interval=0.05, what=f"{user}'s session settled")
        for _ in range(3):
            kill_pids(gateway_sshd_pids(self.w, user))
            time.sleep(0.05)

    def stop_sessions(self, user=ALICE):
        """Freezes (SIGSTOP) every sshd process of `user`'s sessions, also one
        forked while they are being stopped; they are killed at cleanup."""
        stopped = set()
        for _ in range(3):
            pids = set(gateway_sshd_pids(self.w, user)) - stopped
            kill_pids(pids, signal.SIGSTOP)
            stopped |= pids
            time.sleep(0.2)
        self.assertTrue(stopped)
        self.addCleanup(kill_pids, list(stopped), signal.SIGKILL)
        return list(stopped)

    def open(self, forwards, user=ALICE, **options):
        return self.open_to("gw", forwards, user, **options)

    def open_to(self, destination, forwards, user=ALICE, **options):
        opts = {"agent": V("s", str(self.w.users[user].agent_sock)),
                "reconnect": V("b", options.pop("reconnect", True))}
        for key, value in options.items():
            key = key.replace("_", "-")
            opts[key] = value if isinstance(value, V) else (
                V("b", value) if isinstance(value, bool) else V("u", value))
        return user_bus(user).call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                                   [destination, list(forwards), opts], timeout=120)[0]

    def state(self, path, user=ALICE):
        return prop(self.w, user, path, "State")

    def wait_state(self, path, state, timeout=30, user=ALICE):
        wait_for(lambda: self.state(path, user) == state, timeout=timeout * SLOW,
                 interval=0.2, what=f"{path} {state}")

    def echo_on_gateway(self, port, data):
        """An echo through an R forward: from the gateway's loopback."""
        return self.echo(port, data, ns="gateway")

    def echo(self, port, data=b"hello", timeout=10, ns="client"):
        s = self.w.connect(ns, "127.0.0.1", port, timeout=timeout)
        try:
            s.settimeout(timeout)
            s.sendall(b"ECHO\n" + data)
            out = b""
            while len(out) < len(data):
                chunk = s.recv(len(data) - len(out))
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def log_mark(self):
        return len(self.w.daemon.log())

    def log_since(self, mark):
        return self.w.daemon.log()[mark:]


class SshdRestartTest(ReconnectTestCase):

    def test_sshd_killed_and_restarted(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        tid = path.rsplit("/", 1)[1]
        self.assertTrue(prop(w, ALICE, path, "Reconnect"))
        self.assertEqual(prop(w, ALICE, path, "Reconnects"), 0)
        self.assertEqual(self.echo(port), b"hello")
        mark = self.log_mark()

        self.kill_sshd()
        self.wait_state(path, "reconnecting")
        attempt = prop(w, ALICE, path, "RetryAttempt")
        next_retry = prop(w, ALICE, path, "NextRetry")
        self.assertGreaterEqual(attempt, 1)
        self.assertGreater(next_retry, (time.time() - 5) * 1e6)
        self.assertLess(next_retry, (time.time() + 61) * 1e6)
        self.assertNotEqual(prop(w, ALICE, path, "LastError"), "")
        # the listener stays the daemon's: nobody else can take the port
        self.assertFalse(tgtest.can_listen(w, port))
        # attempts fail while sshd is gone, and the backoff grows
        wait_for(lambda: prop(w, ALICE, path, "RetryAttempt") >= 3, timeout=20 * SLOW,
                 interval=0.2, what="a third attempt")
        self.assertEqual(self.state(path), "reconnecting")
        self.assertRegex(prop(w, ALICE, path, "LastError"), r"Cannot connect to gw port 22")

        w.restart_sshd()
        self.wait_state(path, "up", timeout=40)
        self.assertEqual(prop(w, ALICE, path, "RetryAttempt"), 0)
        self.assertEqual(prop(w, ALICE, path, "NextRetry"), 0)
        self.assertEqual(prop(w, ALICE, path, "Reconnects"), 1)
        self.assertEqual(self.echo(port, b"again"), b"again")
        log = self.log_since(mark)
        self.assertRegex(log, rf"tunnel {tid} of tg-alice to tg-alice@gw:22 lost: .*; "
                              r"reconnecting \(attempt 1 in [0-9.]+ s\)")
        self.assertRegex(log, rf"tunnel {tid} of tg-alice to tg-alice@gw:22 is up again "
                              r"after [0-9.]+ s \(attempt \d+\)")

    def test_transfer_through_an_outage(self):
        """What happens to a connection in flight: SSH channels do not outlive
        their session, so the client sees its connection end (reset or EOF)
        at the loss, never a silent hang or wrong bytes; a new transfer after
        the reconnect completes intact."""
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        s = w.connect("client", "127.0.0.1", port, timeout=10)
        self.addCleanup(s.close)
        s.settimeout(30 * SLOW)
        s.sendall(b"SEND 1073741824\n")      # 1 GiB: still running at the loss
        got = len(s.recv(65536))
        self.assertGreater(got, 0)
        self.kill_session()
        ended = False
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    ended = True
                    break
                got += len(chunk)
        except ConnectionResetError:
            ended = True
        self.assertTrue(ended)
        self.assertLess(got, 1 << 30)
        self.wait_state(path, "up", timeout=40)
        c = w.connect("client", "127.0.0.1", port, timeout=10)
        self.addCleanup(c.close)
        c.settimeout(60 * SLOW)
        data = w.data_send(c, 8 << 20)
        self.assertEqual(hashlib.sha256(data).hexdigest(), w.pattern_sha256(8 << 20))

    def test_24_outages_leak_nothing(self):
        """24 losses in a row (the session's sshd processes killed): each time
        the tunnel comes back and works; the daemon ends with the same
        descriptors and threads, and its RSS is printed."""
        w = self.w
        pid = w.daemon.pid
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000", "R 0:127.0.0.1:9000"],
                         keepalive=2)
        self.assertEqual(self.echo(port), b"hello")
        fds = tgtest.settled_fd_count(pid)
        threads = len(os.listdir(f"/proc/{pid}/task"))
        rss = tgtest.vm_rss_kib(pid)
        for i in range(24):
            with self.subTest(outage=i + 1):
                self.kill_session()
                wait_for(lambda: prop(w, ALICE, path, "Reconnects") == i + 1,
                         timeout=30 * SLOW, interval=0.1, what=f"reconnect {i + 1}")
                self.assertEqual(self.state(path), "up")
                self.assertEqual(self.echo(port, b"n%d" % i), b"n%d" % i)
        fds_after = tgtest.settled_fd_count(pid)
        threads_after = len(os.listdir(f"/proc/{pid}/task"))
        rss_after = tgtest.vm_rss_kib(pid)
        print(f"\n24 outages: descriptors {fds} -> {fds_after}, threads {threads} -> "
              f"{threads_after}, RSS {rss} -> {rss_after} KiB", file=sys.stderr)
        self.assertEqual(fds_after, fds)
        self.assertEqual(threads_after, threads)
        # allocator noise, not growth per outage: well under 24 sessions' worth
        self.assertLess(rss_after - rss, 2048 if not tgtest.VALGRIND else 65536)

    def test_connection_held_while_down(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        self.kill_sshd()
        self.wait_state(path, "reconnecting")
        # a client connecting now waits for the session instead of an error
        s = w.connect("client", "127.0.0.1", port, timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"ECHO\nheld")
        time.sleep(1)
        w.restart_sshd()
        s.settimeout(30 * SLOW)
        out = b""
        while len(out) < 4:
            chunk = s.recv(4 - len(out))
            if not chunk:
                break
            out += chunk
        self.assertEqual(out, b"held")
        self.assertEqual(self.state(path), "up")

    def test_held_connection_reset_after_15s(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        self.kill_sshd()
        self.wait_state(path, "reconnecting")
        mark = self.log_mark()
        s = w.connect("client", "127.0.0.1", port, timeout=10)
        self.addCleanup(s.close)
        started = time.monotonic()
        s.settimeout(40 * SLOW)
        with self.assertRaises(ConnectionResetError):
            s.recv(10)
        waited = time.monotonic() - started
        self.assertGreater(waited, 13)
        self.assertLess(waited, 25 * SLOW)
        self.w.daemon.wait_log(r"the connection waited 15 s for it", start=mark,
                               timeout=10 * SLOW)
        self.assertEqual(self.state(path), "reconnecting")

    def test_max_reconnect_attempts(self):
        w = self.w
        w.write_config("policy.conf", "MaxReconnectAttempts 2\n")
        w.busctl(ADMIN, tgtest.BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.addCleanup(self.reset_policy)
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        self.kill_sshd()
        self.wait_state(path, "failed", timeout=30)
        self.assertRegex(prop(w, ALICE, path, "LastError"),
                         r"^Gave up after 2 attempts to reconnect: ")
        self.assertTrue(tgtest.can_listen(w, port))

    def reset_policy(self):
        self.w.write_config("policy.conf", "")
        self.w.busctl(ADMIN, tgtest.BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE,
                      "ReloadPolicy")


class KeepaliveTest(ReconnectTestCase):

    def test_silent_server_detected(self):
        """The session process stopped: TCP is answered by the kernel, the SSH
        server says nothing; keepalive 1 × count 3 finds it, with no
        connection open."""
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=1,
                         keepalive_count=3)
        self.assertEqual(self.echo(port), b"hello")    # the session's processes settled
        sessions = self.stop_sessions()
        started = time.monotonic()
        self.wait_state(path, "reconnecting", timeout=20)
        took = time.monotonic() - started
        self.assertGreater(took, 1.5)
        self.assertLess(took, 8 * SLOW)
        self.assertRegex(prop(w, ALICE, path, "LastError"),
                         r"^No answer from gw for 3 s \(keepalive every 1 s, 3 unanswered\)"
                         r"|attempt|Cannot connect|handshake")
        self.wait_state(path, "up", timeout=40)
        self.assertEqual(self.echo(port), b"hello")

    def test_link_down_15s(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2,
                         keepalive_count=2)
        self.assertEqual(self.echo(port), b"hello")
        old_session = gateway_sshd_pids(w, "tg-alice")
        self.assertTrue(old_session)
        w.run(["ip", "link", "set", "gw0", "down"], ns="client", check=True)
        self.addCleanup(w.run, ["ip", "link", "set", "gw0", "up"], ns="client")
        self.wait_state(path, "reconnecting", timeout=15)
        time.sleep(max(0, 15 - 4))
        self.assertEqual(self.state(path), "reconnecting")
        w.run(["ip", "link", "set", "gw0", "up"], ns="client", check=True)
        self.wait_state(path, "up", timeout=70)
        self.assertEqual(self.echo(port, b"after"), b"after")
        # the server hears that the old session is over once the path is
        # back (the daemon's FIN outlives the 15 s): no stale session, no
        # stale remote ports on the server
        try:
            wait_for(lambda: not set(old_session) & set(gateway_sshd_pids(w, "tg-alice")),
                     timeout=30 * SLOW, interval=0.5,
                     what="the old session gone on the server")
        except AssertionError:
            print(w.run(["ss", "-tanoi"], ns="gateway").stdout,
                  w.run(["ss", "-tanoi"], ns="client").stdout, old_session,
                  gateway_sshd_pids(w, "tg-alice"), file=sys.stderr)
            raise

    def test_healthy_session_is_not_dropped(self):
        """keepalive 1 s x 2 on a quiet, healthy session for 15 s: the answers
        (which libssh reads inside its own calls) count, no loss is made up."""
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=1,
                         keepalive_count=2)
        mark = self.log_mark()
        time.sleep(15)
        self.assertEqual(prop(w, ALICE, path, "Reconnects"), 0)
        self.assertEqual(self.state(path), "up")
        self.assertNotIn("No answer from", self.log_since(mark))

    def test_options_validated(self):
        for key, value, words in (
                ("keepalive-count", V("u", 0), "must be from 1 to 10, not 0"),
                ("keepalive-count", V("u", 11), "must be from 1 to 10, not 11"),
                ("keepalive-count", V("s", "3"), "must be of type 'u'"),
                ("reconnect", V("u", 1), "must be of type 'b'")):
            with self.subTest(key=key, value=value):
                opts = {"agent": V("s", str(self.w.users[ALICE].agent_sock)), key: value}
                self.assertDBusError(
                    "InvalidArgument", user_bus(ALICE).call, BUS, MPATH, MIFACE,
                    "OpenTunnel", "sasa{sv}", ["gw", ["L 0:intra:9000"], opts],
                    contains=[words])


class DelayRelay:
    """A TCP relay in the gateway namespace that holds every chunk `delay`
    seconds each way before passing it on (in order): 500 ms more on the
    SSH connection's path, as a slow link would add."""

    def __init__(self, w, target_port, delay):
        self.w, self.target_port, self.delay = w, target_port, delay
        self.listener = w.listen("gateway", w.gateway_ip, 0)
        self.port = self.listener.getsockname()[1]
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = self.w.connect("gateway", self.w.gateway_ip, self.target_port)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                q = queue.Queue()
                threading.Thread(target=self._read, args=(a, q), daemon=True).start()
                threading.Thread(target=self._write, args=(b, q), daemon=True).start()

    def _read(self, sock, q):
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay, data))
            if not data:
                return

    @staticmethod
    def _write(sock, q):
        while True:
            due, data = q.get()
            time.sleep(max(0, due - time.monotonic()))
            try:
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    return
                sock.sendall(data)
            except OSError:
                return

    def close(self):
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


class NetworkAndSleepTest(ReconnectTestCase):

    def test_link_up_brings_an_attempt_at_once(self):
        """The link comes back while the next attempt is seconds away: the
        kernel's route and link events (netlink) bring it at once."""
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=1,
                         keepalive_count=2)
        mark = self.log_mark()
        w.link_down("client", w.CLIENT_UPLINK)
        self.addCleanup(w.link_up, "client", w.CLIENT_UPLINK)
        self.wait_state(path, "reconnecting", timeout=15)
        # wait until the backoff has grown: the next attempt is > 4 s away
        wait_for(lambda: prop(w, ALICE, path, "NextRetry") / 1e6 - time.time() > 4,
                 timeout=60 * SLOW, interval=0.2, what="an attempt more than 4 s away")
        next_retry = prop(w, ALICE, path, "NextRetry") / 1e6
        up_at = time.time()
        w.link_up("client", w.CLIENT_UPLINK)
        self.wait_state(path, "up", timeout=20)
        took = time.time() - up_at
        print(f"\nlink up -> tunnel up in {took:.2f} s (the next attempt was "
              f"{next_retry - up_at:.1f} s away)", file=sys.stderr)
        self.assertLess(time.time(), next_retry)
        self.assertEqual(self.echo(port), b"hello")
        self.assertRegex(self.log_since(mark), r"the network changed \(.*\): reconnecting "
                                               r"tunnels try at once")

    def test_sleep_closes_cleanly_and_resume_reconnects(self):
        w = self.w
        login1 = w.start_fake_login1()
        self.addCleanup(login1.stop)
        # the daemon sees logind appear and holds a delay inhibitor
        login1.wait_inhibitors(1, timeout=10 * SLOW)
        held = login1.inhibitor_list()[0]
        self.assertEqual((held["what"], held["mode"]), ("sleep", "delay"))
        s = w.listen("gateway", "127.0.0.1", 0)
        rport = s.getsockname()[1]
        s.close()
        lport = free_port(w)
        spec = f"R 127.0.0.1:{rport}:127.0.0.1:9000"
        path = self.open([f"L 127.0.0.1:{lport}:intra:9000", spec])
        other = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], reconnect=False,
                          user=BOB)
        mark = self.log_mark()

        login1.sleep()
        # closed cleanly: the server gives the remote port back at once, the
        # inhibitor goes, and no attempt is made while asleep
        self.wait_state(path, "reconnecting", timeout=10)
        took = login1.wait_inhibitors(0, timeout=5 * SLOW)
        self.assertLess(took, 3 * SLOW)
        self.assertEqual(prop(w, ALICE, path, "RetryAttempt"), 0)
        self.assertEqual(prop(w, ALICE, path, "NextRetry"), 0)
        self.assertEqual(prop(w, ALICE, path, "LastError"), "Closed while the system sleeps")
        wait_for(lambda: not gateway_sshd_pids(w, "tg-alice"), timeout=10,
                 what="the server's session gone")
        g = w.listen("gateway", "127.0.0.1", rport)     # the remote port is free
        g.close()
        self.assertFalse(tgtest.can_listen(w, lport))   # the local one is kept
        self.assertEqual(self.state(other, BOB), "up")  # without reconnect: untouched
        time.sleep(2)
        self.assertEqual(self.state(path), "reconnecting")
        self.assertNotIn("TUNNEL_RETRY", self.log_since(mark))

        login1.resume()
        self.wait_state(path, "up", timeout=15)
        login1.wait_inhibitors(1, timeout=10 * SLOW)     # taken again for the next sleep
        wait_for(lambda: self.remote_ports(path, spec) == [rport], timeout=10,
                 what="the remote port again")
        self.assertEqual(self.echo(lport), b"hello")
        log = self.log_since(mark)
        self.assertIn("the system is going to sleep", log)
        self.assertIn("is closed while the system sleeps", log)
        self.assertIn("the system may sleep", log)

    def remote_ports(self, path, spec):
        return [p for s, _, p in prop(self.w, ALICE, path, "Listeners") if s == spec]


class LossyPathTest(ReconnectTestCase):

    def test_loss_and_delay_transfer_completes(self):
        """30 % of the packets on the client's link dropped each way and 500 ms
        more each way on the SSH path: a transfer through the tunnel still
        completes, intact, and the tunnel is not taken for lost. The kernel
        here has no sch_netem (CONFIG_NET_SCH_NETEM unset), so the loss is
        made by nftables (numgen random) and the delay by a relay in the
        gateway namespace. A packet here is what the veth carries: with GSO,
        a dropped one can be a whole 64 KiB burst of segments."""
        w = self.w
        relay = DelayRelay(w, 22, 0.5)
        self.addCleanup(relay.close)
        port = free_port(w)
        path = self.open_to(f"gw:{relay.port}", [f"L 127.0.0.1:{port}:intra:9000"],
                            host_key=V("s", w.host_key_fingerprint))
        w.run(["nft", "-f", "-"], ns="client", check=True, input=(
            "table inet tgtest_loss {\n"
            "  chain in { type filter hook input priority -10; "
            "iifname \"gw0\" numgen random mod 100 < 30 counter drop; }\n"
            "  chain out { type filter hook output priority -10; "
            "oifname \"gw0\" numgen random mod 100 < 30 counter drop; }\n"
            "}\n"))
        self.addCleanup(w.run, ["nft", "delete", "table", "inet", "tgtest_loss"],
                        ns="client")
        data = os.urandom(512 * 1024)
        s = w.connect("client", "127.0.0.1", port, timeout=30)
        self.addCleanup(s.close)
        s.settimeout(240 * SLOW)
        started = time.monotonic()
        digest = w.data_hash(s, data)
        took = time.monotonic() - started
        self.assertEqual(digest, hashlib.sha256(data).hexdigest())
        # the loss was real: both rules dropped packets
        rules = w.run(["nft", "list", "table", "inet", "tgtest_loss"], ns="client",
                      check=True).stdout
        dropped = [int(n) for n in re.findall(r"counter packets (\d+)", rules)]
        self.assertEqual(len(dropped), 2, rules)
        self.assertTrue(all(n > 0 for n in dropped), rules)
        print(f"\n512 KiB through 30 % loss and +500 ms each way in {took:.1f} s "
              f"({dropped[0]} packets dropped in, {dropped[1]} out)", file=sys.stderr)
        self.assertEqual(self.state(path), "up")
        self.assertEqual(prop(w, ALICE, path, "Reconnects"), 0)


class RemoteAgainTest(ReconnectTestCase):

    def remote_ports(self, path, spec):
        return [p for s, _, p in prop(self.w, ALICE, path, "Listeners") if s == spec]

    def test_port_zero_reported_again(self):
        w = self.w
        spec = "R 0:127.0.0.1:9000"
        path = self.open([spec], keepalive=2)
        first = self.remote_ports(path, spec)
        self.assertEqual(len(first), 1)
        self.kill_session()
        self.wait_state(path, "reconnecting")
        wait_for(lambda: self.remote_ports(path, spec) == [], timeout=10,
                 what="the old remote port gone from Listeners")
        self.wait_state(path, "up", timeout=40)
        wait_for(lambda: len(self.remote_ports(path, spec)) == 1, timeout=10,
                 what="a remote port again")
        self.assertEqual(self.echo_on_gateway(self.remote_ports(path, spec)[0], b"back"),
                         b"back")

    def test_fixed_port_reclaimed_when_free(self):
        w = self.w
        s = w.listen("gateway", "127.0.0.1", 0)
        rport = s.getsockname()[1]
        s.close()
        spec = f"R 127.0.0.1:{rport}:127.0.0.1:9000"
        path = self.open([spec], keepalive=1, keepalive_count=2)
        mark = self.log_mark()
        # the old session freezes with the port: the server cannot give it back
        old = self.stop_sessions()
        self.wait_state(path, "reconnecting", timeout=20)
        self.wait_state(path, "up", timeout=40)
        self.w.daemon.wait_log(rf"asking again until the server gives the port", start=mark,
                               timeout=20 * SLOW)
        self.assertEqual(self.remote_ports(path, spec), [])
        kill_pids(old, signal.SIGKILL)          # the old session goes, the port is free
        wait_for(lambda: self.remote_ports(path, spec) == [rport], timeout=40 * SLOW,
                 interval=0.3, what="the fixed port reclaimed")
        self.assertEqual(self.echo_on_gateway(rport, b"mine"), b"mine")


class FinalErrorsTest(ReconnectTestCase):

    def test_host_key_changed_fails_without_loop(self):
        w = self.w
        key = w.host_key
        saved = {}
        for p in (key, f"{key}.pub", w.known_hosts):
            with open(p, "rb") as f:
                saved[p] = f.read()

        def restore():
            for p, data in saved.items():
                with open(p, "wb") as f:
                    f.write(data)
            kill_pids(gateway_sshd_pids(w))
            w.restart_sshd()
            with open(w.known_hosts, "wb") as f:
                f.write(saved[w.known_hosts])
        self.addCleanup(restore)

        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        self.kill_sshd()
        os.unlink(key)
        os.unlink(f"{key}.pub")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, stdout=subprocess.DEVNULL)
        w.restart_sshd()           # rewrites the world's known_hosts: put the old back
        with open(w.known_hosts, "wb") as f:
            f.write(saved[w.known_hosts])
        self.wait_state(path, "failed", timeout=40)
        error = prop(w, ALICE, path, "LastError")
        self.assertRegex(error, r"(?i)host key")
        mark = self.log_mark()
        time.sleep(3)
        self.assertNotIn("TUNNEL_RETRY", self.log_since(mark))
        self.assertEqual(self.state(path), "failed")
        self.assertTrue(tgtest.can_listen(w, port))

    def test_key_refused_for_good_fails_without_loop(self):
        """The server no longer accepts the key (authorized_keys emptied while
        the session was lost): AuthenticationFailed, state failed, no retry."""
        w = self.w
        keys = w.dir / "authorized_keys" / ALICE
        saved = keys.read_bytes()
        self.addCleanup(keys.write_bytes, saved)
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        keys.write_bytes(b"")
        self.kill_session()
        self.wait_state(path, "failed", timeout=30)
        self.assertRegex(prop(w, ALICE, path, "LastError"),
                         r"gw refused the keys in the ssh-agent for user tg-alice")
        mark = self.log_mark()
        time.sleep(3)
        self.assertNotIn("TUNNEL_RETRY", self.log_since(mark))
        self.assertEqual(self.state(path), "failed")
        self.assertTrue(tgtest.can_listen(w, port))

    def test_server_no_longer_allowed_fails(self):
        """A group that allowed the server is left while the session is lost:
        the readmission refuses the server, the tunnel fails (PolicyDenied's
        words, file and line), no retry."""
        w = self.w
        w.write_config("policy.conf", f"Match Group {EXTRA}\n  PermitServer gw\n"
                                      "Match All\n  PermitServer none\n")
        w.busctl(ADMIN, tgtest.BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.addCleanup(self.restore_group_and_policy)
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        subprocess.run(["gpasswd", "-d", ALICE, EXTRA], check=True, capture_output=True)
        self.kill_session()
        self.wait_state(path, "failed", timeout=30)
        self.assertIn(f"PermitServer none at {w.config_dir / 'policy.conf'}:4 does not "
                      "allow gw:22", prop(w, ALICE, path, "LastError"))
        self.assertTrue(tgtest.can_listen(w, port))

    def restore_group_and_policy(self):
        subprocess.run(["gpasswd", "-a", ALICE, EXTRA], capture_output=True)
        self.w.write_config("policy.conf", "")
        self.w.busctl(ADMIN, tgtest.BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE,
                      "ReloadPolicy")

    def test_agent_restarted_without_keys_is_waited_for(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        self.addCleanup(w.start_agent, ALICE)
        w.stop_agent(ALICE)
        w.start_agent(ALICE, add_key=False)       # the same path, no key yet
        self.kill_session()
        self.wait_state(path, "reconnecting")
        wait_for(lambda: "holds no keys" in prop(w, ALICE, path, "LastError"),
                 timeout=20 * SLOW, interval=0.3, what="the empty agent said")
        self.assertEqual(self.state(path), "reconnecting")
        u = w.users[ALICE]
        r = w.run_as(u, ["ssh-add", "-q", u.key], env={"SSH_AUTH_SOCK": str(u.agent_sock)})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_state(path, "up", timeout=70)
        self.assertEqual(self.echo(port), b"hello")


class SetCredentialsTest(ReconnectTestCase):

    def new_agent(self, user, name):
        """A second ssh-agent of `user` at another path, with their key."""
        w, u = self.w, self.w.users[user]
        sock = u.dir / name
        p = w.spawn_as(u, ["ssh-agent", "-D", "-a", sock], name=f"agent-{name}")
        self.addCleanup(p.stop)
        wait_for(sock.exists, timeout=10, what=f"{sock}")
        r = w.run_as(u, ["ssh-add", "-q", u.key], env={"SSH_AUTH_SOCK": str(sock)})
        self.assertEqual(r.returncode, 0, r.stderr)
        return str(sock)

    def test_agent_restarted_at_a_new_path(self):
        w = self.w
        port = free_port(w)
        path = self.open([f"L 127.0.0.1:{port}:intra:9000"], keepalive=2)
        tid = path.rsplit("/", 1)[1]
        self.addCleanup(w.start_agent, ALICE)
        w.stop_agent(ALICE)                  # the agent the tunnel knows is gone
        self.kill_session()
        self.wait_state(path, "reconnecting")
        wait_for(lambda: "agent" in prop(w, ALICE, path, "LastError").lower() or
                 "No such file" in prop(w, ALICE, path, "LastError"),
                 timeout=20 * SLOW, interval=0.3, what="the missing agent said")
        self.assertEqual(self.state(path), "reconnecting")
        sock = self.new_agent(ALICE, "agent-2.sock")
        mark = self.log_mark()
        r = w.ctl(ALICE, "credentials", tid, env={"SSH_AUTH_SOCK": sock})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), f"Tunnel {tid} has new credentials ({sock})")
        self.wait_state(path, "up", timeout=20)        # at once, not at the next attempt
        self.assertEqual(self.echo(port), b"hello")
        self.assertIn(f"tunnel {tid} of tg-alice: new credentials ({sock}) for its next "
                      "attempt", self.log_since(mark))

    def test_refusals(self):
        w = self.w
        path = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"])
        plain = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], reconnect=False)
        agent = str(w.users[ALICE].agent_sock)
        call = user_bus(ALICE).call
        for creds, words in (
                ({}, "exactly one of agent"),
                ({"agent": V("s", agent), "identity": V("s", agent)}, "exactly one of agent"),
                ({"agent": V("s", "agent.sock")}, "must be an absolute path"),
                ({"agent": V("u", 1)}, "must be of type 's'"),
                ({"password": V("s", "x")}, "Unknown credential 'password'")):
            with self.subTest(creds=sorted(creds)):
                self.assertDBusError("InvalidArgument", call, BUS, path, TIFACE,
                                     "SetCredentials", "a{sv}", [creds], contains=[words])
        self.assertDBusError("InvalidArgument", call, BUS, plain, TIFACE, "SetCredentials",
                             "a{sv}", [{"agent": V("s", agent)}],
                             contains=["opened without reconnect"])
        # another user, even one who may manage: credentials are the owner's
        for user in (BOB, ADMIN):
            with self.subTest(user=user):
                self.assertDBusError("NotAuthorized", user_bus(user).call, BUS, path,
                                     TIFACE, "SetCredentials", "a{sv}",
                                     [{"agent": V("s", agent)}],
                                     contains=["Only the owner"] if user == ADMIN else [])
        self.assertEqual(self.state(path), "up")


class ReadmissionTest(ReconnectTestCase):

    def test_group_left_drops_its_forward(self):
        w = self.w
        w.write_config("policy.conf",
                       f"Match Group {EXTRA}\n  PermitOpen intra:9000 intra:9001\n"
                       "Match All\n  PermitOpen intra:9000\n")
        w.busctl(ADMIN, tgtest.BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.addCleanup(self.restore)
        p1, p2 = free_port(w), free_port(w)
        s1, s2 = f"L 127.0.0.1:{p1}:intra:9000", f"L 127.0.0.1:{p2}:intra:9001"
        path = self.open([s1, s2], keepalive=2)
        self.assertEqual(sorted(prop(w, ALICE, path, "Forwards")), sorted([s1, s2]))
        mark = self.log_mark()
        subprocess.run(["gpasswd", "-d", ALICE, EXTRA], check=True,
                       capture_output=True)
        self.kill_session()
        self.wait_state(path, "reconnecting")
        self.wait_state(path, "up", timeout=40)
        self.assertEqual(prop(w, ALICE, path, "Forwards"), [s1])
        self.assertTrue(tgtest.can_listen(w, p2))
        self.assertEqual(self.echo(p1), b"hello")
        tid = path.rsplit("/", 1)[1]
        self.assertRegex(self.log_since(mark),
                         rf"tunnel {tid}: removing forward '{re.escape(s2)}': not "
                         r"re-admitted at the reconnect: PermitOpen")

    def restore(self):
        subprocess.run(["gpasswd", "-a", ALICE, EXTRA], capture_output=True)
        self.w.write_config("policy.conf", "")
        self.w.busctl(ADMIN, tgtest.BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE,
                      "ReloadPolicy")

    def test_add_forward_refused_while_reconnecting(self):
        w = self.w
        path = self.open([f"L 127.0.0.1:{free_port(w)}:intra:9000"], keepalive=2)
        self.kill_sshd()
        self.wait_state(path, "reconnecting")
        self.assertDBusError("Disconnected", user_bus(ALICE).call, BUS, path, TIFACE,
                             "AddForward", "s", [f"L 127.0.0.1:{free_port(w)}:intra:9000"],
                             contains=["is reconnecting; add the forward once it is up"])


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, nftables)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Unix-socket forwards (issue 5): a local socket the daemon creates for the
caller (as the caller, mode 0600, removed when the forward ends), and
sockets on the server (direct-streamlocal@openssh.com), end to end with the
real sshd (AllowStreamLocalForwarding yes) and the world's data services.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_unix.py -v
(exits 77 = skipped when not root).
"""

import os
import shlex
import stat
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
from tgtest import (ALICE, BOB, ADMIN, BUS, TIFACE, BUSCTL_TIMEOUT, agent_option,  # noqa: E402
                    busctl_open, busctl_open_ok, close_all_tunnels, free_port, prop,
                    wait_for)

USERS = (ALICE, BOB, ADMIN)


def setUpModule():
    tgtest.start_module_world(USERS, agents=USERS)


def tearDownModule():
    tgtest.stop_module_world()


class UnixTest(tgtest.DaemonTestCase):

    def setUp(self):
        self.addCleanup(close_all_tunnels, self.w)

    def sock_path(self, user, name):
        return str(self.w.users[user].home / name)

    def unix_echo(self, user, path, payload):
        """ECHO through a Unix socket, from a process of `user`."""
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])\n"
                "s.sendall(b'ECHO\\n' + sys.argv[2].encode()); s.shutdown(socket.SHUT_WR)\n"
                "d=b''\n"
                "while True:\n"
                "    c=s.recv(65536)\n"
                "    if not c: break\n"
                "    d+=c\n"
                "sys.stdout.write(d.decode())\n")
        return self.w.run_as(user, ["/usr/bin/python3", "-c", code, path, payload],
                             timeout=60)

    def test_local_socket_to_tcp(self):
        w = self.w
        path = self.sock_path(ALICE, "intra.sock")
        tunnel = busctl_open_ok(w, ALICE, "gw", [f"L {path}:intra:80"],
                                agent_option(w, ALICE))
        st = os.lstat(path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(st.st_uid, w.users[ALICE].uid)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(prop(w, ALICE, tunnel, "Listeners"), [[f"L {path}:intra:80", path, 0]])
        r = w.run_as(ALICE, ["curl", "-sS", "--max-time", "20", "--unix-socket", path,
                             "http://intra/"], timeout=40)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.encode(), w.intranet_page)
        # another user cannot use it (the file is alice's, 0600)
        r = w.run_as(BOB, ["curl", "-sS", "--max-time", "10", "--unix-socket", path,
                           "http://intra/"], timeout=30)
        self.assertNotEqual(r.returncode, 0)
        # closed: the file goes
        w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, tunnel, TIFACE, "Close")
        wait_for(lambda: not os.path.lexists(path), timeout=10,
                 what="the socket file to be removed")

    def test_tcp_to_remote_socket_and_socket_to_socket(self):
        w = self.w
        remote = str(w.gateway_data_socket)
        port = free_port(w)
        local = self.sock_path(ALICE, "data.sock")
        tunnel = busctl_open_ok(w, ALICE, "gw",
                                [f"L 127.0.0.1:{port}:{remote}", f"L {local}:{remote}"],
                                agent_option(w, ALICE))
        s = w.connect("client", "127.0.0.1", port, timeout=20)
        data = os.urandom(4 * 1024 * 1024)
        self.assertEqual(w.data_echo(s, data), data)
        s.close()
        r = self.unix_echo(ALICE, local, "socket to socket")
        self.assertEqual((r.returncode, r.stdout), (0, "socket to socket"), r.stderr)
        # AddForward / RemoveForward of a Unix listener on the live tunnel
        extra = self.sock_path(ALICE, "extra.sock")
        spec = f"L {extra}:{remote}"
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, tunnel, TIFACE, "AddForward", "s", spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.unix_echo(ALICE, extra, "added").stdout, "added")
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, tunnel, TIFACE, "RemoveForward", "s",
                     spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.lexists(extra))
        self.assertEqual(self.unix_echo(ALICE, local, "still there").stdout, "still there")

    def test_where_the_caller_may_not_write(self):
        """The socket is created as the caller: not in root's places, and an
        existing file is never replaced."""
        w = self.w
        for path, text in (("/etc/tg-evil.sock", "Permission denied"),
                           (str(w.users[BOB].home / "bob.sock"), "Permission denied")):
            with self.subTest(path=path):
                r = busctl_open(w, ALICE, "gw", [f"L {path}:intra:80"],
                                agent_option(w, ALICE))
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(text, r.stderr)
                self.assertFalse(os.path.lexists(path))
        taken = self.sock_path(ALICE, "taken")
        w.run_as(ALICE, ["touch", taken], check=True)
        r = busctl_open(w, ALICE, "gw", [f"L {taken}:intra:80"], agent_option(w, ALICE))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Address already in use", r.stderr)
        self.assertTrue(os.path.isfile(taken))      # untouched
        self.assertEqual(tgtest.list_tunnels(w, ADMIN), [])

    def test_in_the_callers_view(self):
        """Paths mean what they mean to the calling process: a caller in a
        mount namespace of its own (a tmpfs over a directory of its home, as a
        sandboxed app or a service with PrivateTmp has) gets its socket in that
        tmpfs, which the daemon and the host never see; a symbolic link to an
        absolute path is followed in the caller's view too (openat2, which
        valgrind 3.19 lacks: not checked under valgrind). The socket is removed
        from there when the tunnel closes, after the caller has gone."""
        w = self.w
        u = w.users[ALICE]
        private = u.home / "private"
        link = u.home / "to-private"
        w.run_as(ALICE, ["mkdir", "-p", str(private)], check=True)
        w.run_as(ALICE, ["ln", "-sfn", str(private), str(link)], check=True)
        sock = private / "web.sock"
        forwards = [f"L {sock}:intra:80"]
        if not tgtest.VALGRIND:
            forwards.append(f"L {link}/linked.sock:intra:80")
        open_call = shlex.join(["busctl", "--system", "--no-pager", BUSCTL_TIMEOUT,
                                *tgtest.busctl_open_args("gw", forwards,
                                                         agent_option(w, ALICE))])
        checks = [f"test -S {shlex.quote(str(sock))}"]
        if not tgtest.VALGRIND:
            checks.append(f"test -S {shlex.quote(str(private / 'linked.sock'))}")
        as_alice = (f"{open_call} >&2 && {' && '.join(checks)} && "
                    f"stat -c '%u %a' {shlex.quote(str(sock))} >&2 && "
                    f"exec curl -sS --max-time 20 --unix-socket {shlex.quote(str(sock))} "
                    "http://intra/")
        script = (f"mount -t tmpfs -o mode=0700,uid={u.uid},gid={u.gid} tg-private "
                  f"{shlex.quote(str(private))} && "
                  f"exec setpriv --reuid={u.uid} --regid={u.gid} --init-groups -- "
                  f"sh -c {shlex.quote(as_alice)}")
        r = w.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                  ns="client", env=w.user_env(ALICE), cwd=str(u.home), timeout=180,
                  text=False)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertEqual(r.stdout, w.intranet_page)
        self.assertIn(f"{u.uid} 600".encode(), r.stderr)
        # neither the host nor the daemon's own view has it
        self.assertFalse(os.path.lexists(sock))
        self.assertFalse(os.path.lexists(private / "linked.sock"))
        entries = tgtest.list_tunnels(w, ALICE)
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(prop(w, ALICE, entries[0][0], "State"), "up")
        # closed with the caller's namespace gone: removed where it was made,
        # and nothing is removed in the host's view
        w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, entries[0][0], TIFACE, "Close",
                 check=True)
        wait_for(lambda: tgtest.list_tunnels(w, ALICE) == [], timeout=20,
                 what="the tunnel to close")
        self.assertEqual(sorted(os.listdir(private)), [])
        self.assertTrue(os.path.islink(link))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

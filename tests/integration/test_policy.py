#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The organisation policy (issue 3) as the daemon applies it, end to end: the
real tunnelgated, polkitd, sshd and the test users of world.py, with policy
files written into the daemon's --config-dir and every call made by a real
client running as the user (busctl, or busclient in a process of the user).

  * polkit allows, the policy denies: PolicyDenied naming file:line keyword,
    nothing opened (no tunnel, no listening socket);
  * Match Group / Match User (negation, supplementary groups);
  * precedence across policy.d/*.conf, policy.conf and the default file;
  * CheckForward: the same answer and reason as OpenTunnel;
  * ReloadPolicy and SIGHUP: a broken file changes nothing; a good one closes
    exactly the forbidden tunnels and forwards, keeps the rest, logs each;
  * profiles (@NAME): started by an allowed user who never sees the key;
  * limits: MaxTunnels, MaxConnections, MaxLifetime, IdleTimeout, HostKeyPolicy;
  * the audit trail: POLICY_DECISION lines naming user, uid and file:line.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_policy.py -v
(exits 77 = skipped when not root).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
import world  # noqa: E402
from tgtest import (ALICE, BOB, ADMIN, BUS, MPATH, MIFACE, TIFACE, ERR,  # noqa: E402
                    BUSCTL_TIMEOUT, V, UserBus, DaemonTestCase, agent_option,
                    busctl_open, busctl_open_ok, can_listen, close_all_tunnels,
                    daemon_listeners, free_port, list_tunnels, prop, wait_for)

CAROL = "tg-carol"
USERS = (ALICE, BOB, CAROL, ADMIN)
# bob is a DBA; carol is a DBA and a contractor (both supplementary groups)
DBA, CONTRACTORS = "tgdbs", "tgcontr"
GROUPS = {BOB: [DBA], CAROL: [DBA, CONTRACTORS]}

# polkit for this file: everyone here may ask (open), so that what is refused
# below is refused by the policy. alice may also listen beyond loopback and
# start profiles; carol may start profiles; bob may not; admin may do all.
POLKIT_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") != 0)
        return;
    var grants = {
        "tg-admin": ["*"],
        "tg-alice": ["org.tunnelgate.open", "org.tunnelgate.use-profile",
                     "org.tunnelgate.bind-any"],
        "tg-carol": ["org.tunnelgate.open", "org.tunnelgate.use-profile"],
        "tg-bob": ["org.tunnelgate.open"],
    };
    var mine = grants[subject.user] || [];
    var verdict = (mine.indexOf("*") >= 0 || mine.indexOf(action.id) >= 0)
        ? polkit.Result.YES : polkit.Result.NO;
    polkit.log("tunnelgate-policy-test rules: " + action.id + " for " + subject.user +
               " -> " + verdict);
    return verdict;
});
"""

DEFAULT_POLICY = None     # the --default-policy file of this world (setUpModule)
SHIPPED_DEFAULT = world.source_root() / "data" / "policy.conf"
_BUSES = {}               # user -> UserBus, shared by the tests
SLOW = 3 if tgtest.VALGRIND else 1     # time limits' upper bounds under valgrind


def start_policy_daemon(w, **kw):
    """tunnelgated with this file's default policy file (see DEFAULT_POLICY)."""
    return w.start_daemon(args=["--default-policy", str(DEFAULT_POLICY)], **kw)


def setUpModule():
    global DEFAULT_POLICY
    w = world.World(users=list(USERS), groups=GROUPS).start()
    try:
        w.set_polkit_rules(POLKIT_RULES)
        for u in USERS:
            w.start_agent(u)
        share = w.dir / "share"
        share.mkdir(mode=0o755)
        DEFAULT_POLICY = share / "policy.conf"
        shutil.copy(SHIPPED_DEFAULT, DEFAULT_POLICY)
        start_policy_daemon(w)
    except BaseException:
        w.cleanup()
        raise
    DaemonTestCase.W = w


def tearDownModule():
    w = DaemonTestCase.W
    try:
        for ub in _BUSES.values():
            ub.close()
        close_all_tunnels(w)
        tgtest.check_daemon_stopped_cleanly(w)
    finally:
        w.cleanup()


def user_bus(user):
    ub = _BUSES.get(user)
    if ub is None or ub.closed or not ub.proc.alive():
        ub = _BUSES[user] = UserBus(DaemonTestCase.W, user)
    return ub


# ----------------------------------------------------------------------------


class PolicyTestCase(DaemonTestCase):
    """Each test starts with no tunnels and the default policy only."""

    def setUp(self):
        w = self.w
        if w.daemon is None or not w.daemon.alive():
            start_policy_daemon(w)
        close_all_tunnels(w)
        self.set_policy({})
        self.addCleanup(close_all_tunnels, w)

    # -- the policy files ------------------------------------------------------

    def cfg(self, relpath):
        """The absolute name of a file in the daemon's config dir, as reasons name it."""
        return str(self.w.config_dir / relpath)

    def write_policy(self, files, default=None):
        """Replace policy.conf and policy.d/* by `files` ({relpath: text}); the default
        file gets `default` (None: the shipped data/policy.conf)."""
        w = self.w
        main = w.config_dir / "policy.conf"
        if main.exists():
            main.unlink()
        dropins = w.config_dir / "policy.d"
        if dropins.exists():
            shutil.rmtree(dropins)
        for rel, text in files.items():
            w.write_config(rel, text)
        DEFAULT_POLICY.write_text(SHIPPED_DEFAULT.read_text() if default is None else default)

    def set_policy(self, files, default=None):
        """write_policy(), then ReloadPolicy as tg-admin (must succeed)."""
        self.write_policy(files, default)
        self.reload()

    def reload(self):
        return user_bus(ADMIN).call(BUS, MPATH, MIFACE, "ReloadPolicy", "", [], timeout=60)

    # -- calls as the users ----------------------------------------------------

    def options(self, user, **extra):
        opts = {"agent": V("s", str(self.w.users[user].agent_sock))}
        opts.update({k.replace("_", "-"): V("s", v) for k, v in extra.items()})
        return opts

    def open(self, user, destination, forwards, options=None):
        """OpenTunnel as `user` through busclient; returns the object path."""
        if options is None:
            options = self.options(user)
        return user_bus(user).call(BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}",
                                   [destination, list(forwards), options], timeout=120)[0]

    def check(self, user, destination, forward):
        """CheckForward as `user`: (allowed, why)."""
        allowed, why = user_bus(user).call(BUS, MPATH, MIFACE, "CheckForward", "ss",
                                           [destination, forward])
        return [allowed, why]

    def denied(self, name, user, destination, forwards, options=None, reason=None,
               contains=()):
        """OpenTunnel must fail with `name`; with `reason`, the message must be exactly
        that. Returns the message."""
        e = self.assertDBusError(name, self.open, user, destination, forwards, options,
                                 contains=contains)
        if reason is not None:
            self.assertEqual(e.message, reason)
        return e.message

    def tunnels(self, user=ADMIN):
        return [e[0] for e in list_tunnels(self.w, user)]

    def listener_ports(self, path, user=ADMIN):
        return [x[2] for x in prop(self.w, user, path, "Listeners")]

    # -- what the daemon holds ---------------------------------------------------

    def assertNothingOpened(self, ports=()):
        w = self.w
        self.assertEqual(list_tunnels(w, ADMIN), [])
        self.assertEqual(daemon_listeners(w.daemon.pid), [])
        for p in ports:
            self.assertTrue(can_listen(w, p), f"port {p} is taken")

    def assertListenerGone(self, port):
        w = self.w
        wait_for(lambda: port not in [p for a, p in daemon_listeners(w.daemon.pid)],
                 timeout=10, what=f"the daemon's listener on port {port} to close")
        self.assertTrue(can_listen(w, port), f"port {port} is still taken")
        with self.assertRaises(ConnectionRefusedError):
            w.connect("client", "127.0.0.1", port, timeout=5).close()

    def assertGone(self, path, timeout=10):
        wait_for(lambda: path not in self.tunnels(), timeout=timeout,
                 what=f"{path} to disappear from ListTunnels")

    def assertHttpWorks(self, port, user=ALICE):
        r = tgtest.curl(self.w, user, f"http://127.0.0.1:{port}/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.encode(), self.w.intranet_page)

    def echo_connection(self, port, data=b"hello"):
        """A live ECHO connection through the tunnel listening on `port`."""
        s = self.w.connect("client", "127.0.0.1", port, timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"ECHO\n" + data)
        self.assertEqual(self.recv_exactly(s, len(data)), data)
        return s

    @staticmethod
    def recv_exactly(s, n):
        out = b""
        while len(out) < n:
            c = s.recv(n - len(out))
            if not c:
                break
            out += c
        return out

    def assertConnectionRefused(self, port, data, message):
        """A connection to `port` is closed at once, unanswered."""
        s = self.w.connect("client", "127.0.0.1", port, timeout=10)
        self.addCleanup(s.close)
        try:
            s.sendall(b"ECHO\n" + data)
            got = s.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        self.assertEqual(got, b"", message)

    def assertEchoes(self, s, data=b"again"):
        s.sendall(data)
        self.assertEqual(self.recv_exactly(s, len(data)), data)

    # -- the log -----------------------------------------------------------------

    def log_mark(self):
        return len(self.w.daemon.log())

    def log_since(self, mark):
        return self.w.daemon.log()[mark:]

    def wait_log(self, pattern, mark, timeout=10):
        return self.w.daemon.wait_log(pattern, timeout=timeout, start=mark)

    def decision_rx(self, verb, what, user, reason):
        """The message of a POLICY_DECISION event (src/daemon/policy-gate.c)."""
        uid = self.w.users[user].uid
        return (rf"policy {verb} {re.escape(what)} for {re.escape(user)} \(uid {uid}\): "
                + re.escape(reason))


# ----------------------------------------------------------------------------


class PolicyDeniedTest(PolicyTestCase):
    """polkit allows (open, and bind-any for alice); the policy denies."""

    POLICY = ("PermitServer gw:22\n"              # 1
              "PermitOpen intra:80\n"             # 2
              "GatewayPorts no\n"                 # 3
              "Match User tg-carol\n"             # 4
              "\tAllowTcpForwarding no\n")        # 5

    def test_add_forward_is_checked(self):
        """AddForward passes the same policy as OpenTunnel: the owner's."""
        w = self.w
        self.set_policy({"policy.conf": self.POLICY})
        f = self.cfg("policy.conf")
        path = busctl_open_ok(w, ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                              agent_option(w, ALICE))
        port = free_port(w)
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "AddForward", "s",
                     f"L 127.0.0.1:{port}:intra:9000")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn(f"PermitOpen at {f}:2 does not allow intra:9000", r.stderr)
        self.assertEqual(len(prop(w, ALICE, path, "Forwards")), 1)
        self.assertNotIn(("127.0.0.1", port), daemon_listeners(w.daemon.pid))
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "AddForward", "s",
                     f"L 127.0.0.1:{port}:intra:80")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(prop(w, ALICE, path, "Forwards")), 2)

    def test_denials_name_file_line_keyword_and_open_nothing(self):
        w = self.w
        self.set_policy({"policy.conf": self.POLICY})
        f = self.cfg("policy.conf")
        port = free_port(w, hosts=("127.0.0.1", "0.0.0.0"))
        port2 = free_port(w)
        pk_mark = len(w.proc("polkitd").log())
        cases = [
            ("PermitOpen", ALICE, "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:9000"],
             f"PermitOpen at {f}:2 does not allow intra:9000"),
            ("PermitServer", ALICE, "tg-alice@gw:2222", [f"L 127.0.0.1:{port}:intra:80"],
             f"PermitServer at {f}:1 does not allow gw:2222"),
            ("AllowTcpForwarding", CAROL, "tg-carol@gw", [f"L 127.0.0.1:{port}:intra:80"],
             f"AllowTcpForwarding no at {f}:5 does not allow L 127.0.0.1:{port}:intra:80"),
            ("GatewayPorts", ALICE, "tg-alice@gw", [f"L 0.0.0.0:{port}:intra:80"],
             f"GatewayPorts no at {f}:3 does not allow L 0.0.0.0:{port}:intra:80 "
             "(a listener beyond loopback)"),
            # an allowed forward next to a forbidden one: neither is opened
            ("one of two", ALICE, "tg-alice@gw",
             [f"L 127.0.0.1:{port}:intra:80", f"L 127.0.0.1:{port2}:intra:9000"],
             f"PermitOpen at {f}:2 does not allow intra:9000"),
        ]
        for what, user, dest, forwards, reason in cases:
            with self.subTest(what):
                self.denied("PolicyDenied", user, dest, forwards, reason=reason)
                self.assertNothingOpened([port, port2])

        # busctl, as a user types it, shows the reason too
        r = busctl_open(w, ALICE, "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:9000"],
                        agent_option(w, ALICE))
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn(f"PermitOpen at {f}:2 does not allow intra:9000", r.stderr)
        self.assertNothingOpened([port])

        # it was the policy, not polkit: polkit said yes to every one of these
        pk = w.proc("polkitd").log()[pk_mark:]
        self.assertIn("org.tunnelgate.bind-any for tg-alice -> yes", pk)
        self.assertIn("org.tunnelgate.open for tg-carol -> yes", pk)
        self.assertNotIn("-> no", pk)

        # and what the policy allows opens (same users, same port)
        path = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:80"])
        self.assertHttpWorks(port)
        close_all_tunnels(w)
        self.set_policy({"policy.conf": self.POLICY.replace("GatewayPorts no",
                                                            "GatewayPorts clientspecified")})
        path = self.open(ALICE, "tg-alice@gw", [f"L 0.0.0.0:{port}:intra:80"])
        self.assertEqual(prop(w, ALICE, path, "Listeners"),
                         [[f"L 0.0.0.0:{port}:intra:80", "0.0.0.0", port]])
        r = tgtest.curl(w, ALICE, f"http://{w.client_ip}:{port}/")
        self.assertEqual(r.stdout.encode(), w.intranet_page, r.stderr)

    def test_default_gateway_ports_names_default(self):
        """Without any policy line, a decision made by a built-in default names <default>."""
        port = free_port(self.w, hosts=("127.0.0.1", "0.0.0.0"))
        self.denied("PolicyDenied", ALICE, "tg-alice@gw", [f"L 0.0.0.0:{port}:intra:80"],
                    reason=f"GatewayPorts no at <default> does not allow "
                           f"L 0.0.0.0:{port}:intra:80 (a listener beyond loopback)")
        self.assertNothingOpened([port])


# ----------------------------------------------------------------------------


class MatchTest(PolicyTestCase):

    POLICY = ("# everyone: the data service only\n"    # 1
              "PermitOpen intra:9000\n"                # 2
              "\n"                                     # 3
              f"Match Group {DBA},!{CONTRACTORS}\n"    # 4
              "\tPermitOpen intra:80\n"                # 5
              "\tPermitOpen intra:9000\n"              # 6
              "Match User tg-alice\n"                  # 7
              "\tPermitServer gw:2222\n")              # 8

    def test_match_group_gives_a_group_more(self):
        w = self.w
        self.set_policy({"policy.conf": self.POLICY})
        f = self.cfg("policy.conf")
        # bob is in tgdbs (a supplementary group): the Match block's list applies
        self.assertEqual(self.check(BOB, "tg-bob@gw", "L 127.0.0.1:0:intra:80"),
                         [True, f"PermitOpen at {f}:5 allows intra:80"])
        self.assertEqual(self.check(BOB, "tg-bob@gw", "L 127.0.0.1:0:intra:9000"),
                         [True, f"PermitOpen at {f}:6 allows intra:9000"])
        port = free_port(w)
        path = self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{port}:intra:80"])
        self.assertEqual(prop(w, BOB, path, "State"), "up")
        self.assertHttpWorks(port, BOB)
        # alice is not: the global line decides
        port2 = free_port(w)
        reason = f"PermitOpen at {f}:2 does not allow intra:80"
        self.assertEqual(self.check(ALICE, "tg-alice@gw:2222", "L 127.0.0.1:0:intra:80"),
                         [False, reason])
        self.denied("PolicyDenied", ALICE, "tg-alice@gw:2222",
                    [f"L 127.0.0.1:{port2}:intra:80"], reason=reason)
        # carol is a DBA but also a contractor: "!tgcontr" excludes her
        self.assertEqual(self.check(CAROL, "tg-carol@gw", "L 127.0.0.1:0:intra:80"),
                         [False, reason])
        self.denied("PolicyDenied", CAROL, "tg-carol@gw", [f"L 127.0.0.1:{port2}:intra:80"],
                    reason=reason)
        self.assertEqual(self.tunnels(), [path])
        self.assertEqual(daemon_listeners(w.daemon.pid), [("127.0.0.1", port)])

    def test_match_user(self):
        w = self.w
        self.set_policy({"policy.conf": self.POLICY})
        f = self.cfg("policy.conf")
        port = free_port(w)
        # alice's own block: only gw:2222
        reason = f"PermitServer at {f}:8 does not allow gw:22"
        self.assertEqual(self.check(ALICE, "tg-alice@gw", "L 127.0.0.1:0:intra:9000"),
                         [False, reason])
        self.denied("PolicyDenied", ALICE, "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:9000"],
                    reason=reason)
        self.assertNothingOpened([port])
        path = self.open(ALICE, "tg-alice@gw:2222", [f"L 127.0.0.1:{port}:intra:9000"])
        self.assertEqual(prop(w, ALICE, path, "Destination"), "tg-alice@gw:2222")
        self.assertEchoes(self.echo_connection(port))
        # the block is alice's only: bob and carol may use gw:22
        self.assertEqual(self.check(BOB, "tg-bob@gw", "L 127.0.0.1:0:intra:9000"),
                         [True, f"PermitOpen at {f}:6 allows intra:9000"])
        self.assertEqual(self.check(CAROL, "tg-carol@gw", "L 127.0.0.1:0:intra:9000"),
                         [True, f"PermitOpen at {f}:2 allows intra:9000"])


# ----------------------------------------------------------------------------


class PrecedenceTest(PolicyTestCase):
    """policy.d/*.conf in lexical order, then policy.conf, then the default file:
    the first value obtained wins; a matching Match block beats any global line."""

    A = "# site-wide\nPermitOpen intra:80\n"                       # PermitOpen at 2
    B = "PermitOpen intra:9000\nPermitServer gw:22\n"               # 1, 2
    MAIN = ("PermitOpen any\n"                                      # 1
            "PermitServer any\n"                                    # 2
            "GatewayPorts no\n"                                     # 3
            "Match User tg-bob\n"                                   # 4
            "\tPermitOpen intra:9000\n")                            # 5
    DEFAULT = "GatewayPorts clientspecified\nPermitOpen none\n"

    def test_first_value_wins_across_files(self):
        w = self.w
        self.set_policy({"policy.d/10-a.conf": self.A, "policy.d/50-b.conf": self.B,
                         "policy.conf": self.MAIN}, default=self.DEFAULT)
        a, b = self.cfg("policy.d/10-a.conf"), self.cfg("policy.d/50-b.conf")
        main, default = self.cfg("policy.conf"), str(DEFAULT_POLICY)
        self.assertEqual(prop(w, CAROL, MPATH, "PolicyFiles", iface=MIFACE),
                         [a, b, main, default])
        # 10-a.conf beats 50-b.conf and policy.conf (PermitOpen)
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80"),
                         [True, f"PermitOpen at {a}:2 allows intra:80"])
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:9000"),
                         [False, f"PermitOpen at {a}:2 does not allow intra:9000"])
        # 50-b.conf beats policy.conf (PermitServer)
        self.assertEqual(self.check(ALICE, "tg-alice@gw:2222", "L 127.0.0.1:0:intra:80"),
                         [False, f"PermitServer at {b}:2 does not allow gw:2222"])
        # policy.conf beats the default file (GatewayPorts)
        self.assertEqual(self.check(ALICE, "gw", "L 0.0.0.0:0:intra:80"),
                         [False, f"GatewayPorts no at {main}:3 does not allow "
                                 "L 0.0.0.0:0:intra:80 (a listener beyond loopback)"])
        # bob's Match block in policy.conf beats the global line of 10-a.conf
        self.assertEqual(self.check(BOB, "gw", "L 127.0.0.1:0:intra:9000"),
                         [True, f"PermitOpen at {main}:5 allows intra:9000"])
        self.assertEqual(self.check(BOB, "gw", "L 127.0.0.1:0:intra:80"),
                         [False, f"PermitOpen at {main}:5 does not allow intra:80"])

        # the order is the file names': 10-a.conf renamed to 60-a.conf comes after 50-b
        os.rename(a, self.cfg("policy.d/60-a.conf"))
        self.reload()
        a2 = self.cfg("policy.d/60-a.conf")
        self.assertEqual(prop(w, CAROL, MPATH, "PolicyFiles", iface=MIFACE),
                         [b, a2, main, default])
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:9000"),
                         [True, f"PermitOpen at {b}:1 allows intra:9000"])
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80"),
                         [False, f"PermitOpen at {b}:1 does not allow intra:80"])

        # only the default file left: it decides
        self.set_policy({}, default=self.DEFAULT)
        self.assertEqual(prop(w, CAROL, MPATH, "PolicyFiles", iface=MIFACE), [default])
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80"),
                         [False, f"PermitOpen none at {default}:2 does not allow intra:80"])
        # and with nothing at all, the built-in defaults
        self.set_policy({}, default="")
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80"),
                         [True, "PermitOpen any at <default> allows intra:80"])


# ----------------------------------------------------------------------------


class CheckForwardTest(PolicyTestCase):

    POLICY = ("PermitServer gw:22\n"                  # 1
              "PermitOpen intra:80\n")                # 2

    def test_answers_like_open_tunnel(self):
        w = self.w
        self.set_policy({"policy.conf": self.POLICY})
        f = self.cfg("policy.conf")
        port = free_port(w)
        mark = self.log_mark()
        # denied: the same reason as OpenTunnel's PolicyDenied, word for word
        for dest, fwd, reason in [
                ("tg-alice@gw", f"L 127.0.0.1:{port}:intra:9000",
                 f"PermitOpen at {f}:2 does not allow intra:9000"),
                ("tg-alice@gw:2222", f"L 127.0.0.1:{port}:intra:80",
                 f"PermitServer at {f}:1 does not allow gw:2222")]:
            with self.subTest(dest=dest, forward=fwd):
                self.assertEqual(self.check(ALICE, dest, fwd), [False, reason])
                msg = self.denied("PolicyDenied", ALICE, dest, [fwd])
                self.assertEqual(msg, reason)
        # a dry run: nothing opened
        self.assertNothingOpened([port])
        # allowed, and OpenTunnel indeed opens it
        spec = f"L 127.0.0.1:{port}:intra:80"
        self.assertEqual(self.check(ALICE, "tg-alice@gw", spec),
                         [True, f"PermitOpen at {f}:2 allows intra:80"])
        self.assertNothingOpened([port])
        self.open(ALICE, "tg-alice@gw", [spec])
        self.assertHttpWorks(port)
        # with busctl, as a user types it
        out = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CheckForward",
                       "ss", "tg-alice@gw", "L 127.0.0.1:0:intra:9000", json=True)
        self.assertEqual(out["type"], "bs")
        self.assertEqual(out["data"], [False, f"PermitOpen at {f}:2 does not allow intra:9000"])
        # the checks are logged as decisions for the caller
        log = self.log_since(mark)
        self.assertRegex(log, self.decision_rx(
            "denies", f"L 127.0.0.1:{port}:intra:9000", ALICE,
            f"PermitOpen at {f}:2 does not allow intra:9000"))

    def test_default_policy_answer(self):
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80"),
                         [True, "PermitOpen any at <default> allows intra:80"])

    def test_refuses_profiles_and_malformed_requests(self):
        ub = user_bus(ALICE)
        for dest, fwd, contains in [("@dbtunnel", "L 127.0.0.1:0:intra:80", "profile"),
                                    ("tg-alice@gw", "L nonsense", "nonsense"),
                                    ("bad host!", "L 127.0.0.1:0:intra:80", "bad host")]:
            with self.subTest(dest=dest, forward=fwd):
                self.assertDBusError("InvalidArgument", ub.call, BUS, MPATH, MIFACE,
                                     "CheckForward", "ss", [dest, fwd], contains=contains)
        self.assertNothingOpened()


# ----------------------------------------------------------------------------


class ReloadTest(PolicyTestCase):

    def test_broken_file_changes_nothing(self):
        w = self.w
        self.set_policy({"policy.conf": "PermitOpen intra:80\n"})
        main = self.cfg("policy.conf")
        port = free_port(w)
        path = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{port}:intra:80"])
        self.assertHttpWorks(port)
        files_before = prop(w, ALICE, MPATH, "PolicyFiles", iface=MIFACE)

        # a drop-in that would forbid the tunnel, with a syntax error on line 3
        broken = w.write_config("policy.d/20-new.conf",
                                "PermitServer gw:2222\nPermitOpen intra:9000\nFrobnicate yes\n")
        e = self.assertDBusError(ERR + "InvalidArgument", user_bus(ADMIN).call, BUS, MPATH,
                                 MIFACE, "ReloadPolicy", "", [])
        self.assertIn(f"{broken}:3", e.message)
        self.assertIn("Frobnicate", e.message)
        # busctl shows it as well
        r = w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ReloadPolicy")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{broken}:3", r.stderr)
        # nothing changed: the tunnel is up and works, the old policy decides
        time.sleep(1)
        self.assertEqual(self.tunnels(), [path])
        self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.assertHttpWorks(port)
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80"),
                         [True, f"PermitOpen at {main}:1 allows intra:80"])
        self.assertEqual(prop(w, ALICE, MPATH, "PolicyFiles", iface=MIFACE), files_before)

        # a bad value (not a bad keyword) is refused the same way
        broken.write_text("PermitServer gw:2222\n\nPermitOpen intra:99999\n")
        e = self.assertDBusError(ERR + "InvalidArgument", user_bus(ADMIN).call, BUS, MPATH,
                                 MIFACE, "ReloadPolicy", "", [])
        self.assertIn(f"{broken}:3", e.message)
        self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.assertHttpWorks(port)
        # a drop-in that cannot be read (a dangling link) is an error, not "missing"
        broken.unlink()
        gone = w.config_dir / "policy.d" / "30-gone.conf"
        os.symlink(w.dir / "no-such-policy.conf", gone)
        e = self.assertDBusError(ERR + "InvalidArgument", user_bus(ADMIN).call, BUS, MPATH,
                                 MIFACE, "ReloadPolicy", "", [])
        self.assertIn(str(gone), e.message)
        self.assertEqual(self.tunnels(), [path])
        self.assertHttpWorks(port)
        self.assertEqual(prop(w, ALICE, MPATH, "PolicyFiles", iface=MIFACE), files_before)

    def test_reload_closes_exactly_what_is_forbidden(self):
        w = self.w
        f = self.cfg("policy.conf")
        ports = [free_port(w) for _ in range(5)]
        while len(set(ports)) < 5:
            ports = [free_port(w) for _ in range(5)]
        p1, p2, p3, p4, p5 = ports
        s1 = f"L 127.0.0.1:{p1}:intra:80"
        s3, s4 = f"L 127.0.0.1:{p3}:intra:80", f"L 127.0.0.1:{p4}:intra:9000"
        s5 = f"L 127.0.0.1:{p5}:intra:9000"
        t1 = self.open(ALICE, "tg-alice@gw", [s1])                        # stays
        t2 = self.open(ALICE, "tg-alice@gw:2222", [f"L 127.0.0.1:{p2}:intra:80"])  # server
        t3 = self.open(ALICE, "tg-alice@gw", [s3, s4])                    # loses s4
        t4 = self.open(BOB, "tg-bob@gw", [s5])                            # loses all
        live = self.echo_connection(p4)       # a connection on the doomed forward
        self.assertEqual(len(self.tunnels()), 4)

        mark = self.log_mark()
        self.set_policy({"policy.conf": "PermitServer gw:22\nPermitOpen intra:80\n"})
        self.assertGone(t2)
        self.assertGone(t4)
        self.assertEqual(self.tunnels(), [t1, t3])
        for p in (p2, p4, p5):
            self.assertListenerGone(p)
        # the others keep working
        self.assertEqual(prop(w, ALICE, t1, "State"), "up")
        self.assertHttpWorks(p1)
        self.assertEqual(prop(w, ALICE, t3, "State"), "up")
        self.assertEqual(prop(w, ALICE, t3, "Forwards"), [s3])
        self.assertEqual(prop(w, ALICE, t3, "Listeners"), [[s3, "127.0.0.1", p3]])
        self.assertHttpWorks(p3)
        self.assertEqual(sorted(daemon_listeners(w.daemon.pid)),
                         sorted([("127.0.0.1", p1), ("127.0.0.1", p3)]))
        entries = {e[0]: e for e in list_tunnels(w, ALICE)}
        self.assertEqual(entries[t3][5], [s3])
        # the connection that was open on the removed forward is closed too
        live.settimeout(10)
        try:
            self.assertEqual(live.recv(100), b"")
        except ConnectionResetError:
            pass

        # every closure and removal is logged, with the rule that decided
        log = self.log_since(mark)
        id2, id3, id4 = (t.rsplit("/", 1)[1] for t in (t2, t3, t4))
        self.assertIn(f"closing tunnel {id2} of tg-alice: the reloaded policy forbids it: "
                      f"PermitServer at {f}:1 does not allow gw:2222", log)
        self.assertIn(f"tunnel {id3}: removing forward '{s4}': "
                      f"PermitOpen at {f}:2 does not allow intra:9000", log)
        self.assertIn(f"tunnel {id4}: removing forward '{s5}': "
                      f"PermitOpen at {f}:2 does not allow intra:9000", log)
        self.assertIn(f"closing tunnel {id4} of tg-bob: no forward is left", log)
        self.assertRegex(log, self.decision_rx("denies", "server gw port 2222", ALICE,
                                               f"PermitServer at {f}:1 does not allow gw:2222"))
        self.assertRegex(log, self.decision_rx("allows", s1, ALICE,
                                               f"PermitOpen at {f}:2 allows intra:80"))
        # nothing else was closed
        id1 = t1.rsplit("/", 1)[1]
        self.assertNotIn(f"closing tunnel {id1} ", log)
        self.assertNotIn(f"closing tunnel {id3} ", log)

    def test_reload_looks_at_group_membership_again(self):
        """A user who left the group that granted a forward loses it at the next
        reload (the owner's groups are looked up again, not remembered)."""
        w = self.w
        policy = ("PermitOpen intra:9000\n"            # 1
                  f"Match Group {DBA}\n"               # 2
                  "\tPermitOpen intra:80\n")          # 3
        self.set_policy({"policy.conf": policy})
        f = self.cfg("policy.conf")
        port = free_port(w)
        spec = f"L 127.0.0.1:{port}:intra:80"
        t = self.open(BOB, "tg-bob@gw", [spec])
        self.assertHttpWorks(port, BOB)
        self.reload()                           # nothing changed: it stays
        self.assertEqual(self.tunnels(), [t])
        r = subprocess.run(["gpasswd", "--delete", BOB, DBA], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, ["gpasswd", "--add", BOB, DBA], capture_output=True)
        mark = self.log_mark()
        self.reload()
        self.assertGone(t)
        self.assertListenerGone(port)
        self.assertRegex(self.log_since(mark), self.decision_rx(
            "denies", spec, BOB, f"PermitOpen at {f}:1 does not allow intra:80"))

    def test_reload_rechecks_host_key_policy(self):
        """Tightening HostKeyPolicy to pinned-only closes the tunnels without a
        pin and keeps the pinned ones."""
        w = self.w
        fp = w.host_key_fingerprint
        p1, p2 = free_port(w), free_port(w)
        unpinned = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{p1}:intra:80"])
        pinned = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{p2}:intra:80"],
                           self.options(ALICE, host_key=fp))
        mark = self.log_mark()
        self.set_policy({"policy.conf": "HostKeyPolicy pinned-only\n"})
        f = self.cfg("policy.conf")
        self.assertGone(unpinned)
        self.assertEqual(self.tunnels(), [pinned])
        self.assertHttpWorks(p2)
        uid = unpinned.rsplit("/", 1)[1]
        self.assertIn(f"closing tunnel {uid} of tg-alice: the reloaded policy forbids it: "
                      f"HostKeyPolicy pinned-only at {f}:1 requires the host-key option",
                      self.log_since(mark))

    def test_sighup_reloads(self):
        w = self.w
        self.set_policy({"policy.conf": "PermitOpen intra:80 intra:9000\n"})
        f = self.cfg("policy.conf")
        pa, pb = free_port(w), free_port(w)
        ta = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pa}:intra:80"])
        tb = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pb}:intra:9000"])

        # a broken file, SIGHUP: logged, nothing changes
        w.write_config("policy.conf", "PermitOpen intra:80 intra:9000\nMaxTunnels lots\n")
        mark = self.log_mark()
        os.kill(w.daemon.pid, signal.SIGHUP)
        m = self.wait_log(r"policy not reloaded.*", mark)
        self.assertIn(f"{f}:2", m.group(0))
        self.assertEqual(sorted(self.tunnels()), sorted([ta, tb]))
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:9000"),
                         [True, f"PermitOpen at {f}:1 allows intra:9000"])
        self.assertEchoes(self.echo_connection(pb))

        # a good one: applied at once, as ReloadPolicy would
        w.write_config("policy.conf", "# data service closed\nPermitOpen intra:80\n")
        mark = self.log_mark()
        os.kill(w.daemon.pid, signal.SIGHUP)
        self.wait_log(r"policy reloaded", mark)
        self.assertGone(tb)
        self.assertListenerGone(pb)
        self.assertEqual(self.tunnels(), [ta])
        self.assertHttpWorks(pa)
        self.assertEqual(self.check(ALICE, "gw", "L 127.0.0.1:0:intra:9000"),
                         [False, f"PermitOpen at {f}:2 does not allow intra:9000"])
        self.assertIn(f"closing tunnel {tb.rsplit('/', 1)[1]} of tg-alice: no forward is left",
                      self.log_since(mark))
        self.assertTrue(w.daemon.alive())

    def test_reload_needs_manage(self):
        e = self.assertDBusError("NotAuthorized", user_bus(ALICE).call, BUS, MPATH, MIFACE,
                                 "ReloadPolicy", "", [])
        self.assertIn("org.tunnelgate.manage", e.message)

    def test_reload_with_a_failed_tunnel(self):
        """A tunnel whose server went away stays in state failed; a reload that
        forbids its only forward removes it (and the daemon survives it, also when
        the new policy sets a MaxLifetime for its owner)."""
        w = self.w
        port, okport = free_port(w), free_port(w)
        t = self.open(CAROL, "tg-carol@gw", [f"L 127.0.0.1:{port}:intra:9000"])
        self.addCleanup(lambda: w.proc("sshd").alive() or w.restart_sshd())

        def kill_sshd_and_check():
            # again and again: sshd may fork the session's user child after a listing
            world._kill_pids([p for p in world._ns_pids(w.gateway_ns)
                              if world._read(f"/proc/{p}/comm").strip() == "sshd"],
                             signal.SIGKILL)
            return prop(w, CAROL, t, "State") == "failed"
        wait_for(kill_sshd_and_check, timeout=30, interval=0.3, what="the tunnel to fail")
        w.restart_sshd()
        ok = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{okport}:intra:80"])
        mark = self.log_mark()
        self.set_policy({"policy.conf": "PermitOpen intra:80\n"
                                        "Match User tg-carol\n\tMaxLifetime 1\n"})
        self.assertGone(t)
        self.assertIn("no forward is left", self.log_since(mark))
        time.sleep(2.5)          # past carol's MaxLifetime
        self.assertTrue(w.daemon.alive(), "tunnelgated died:\n" + w.daemon.log(tail=60))
        self.assertEqual(self.tunnels(), [ok])
        self.assertHttpWorks(okport)


# ----------------------------------------------------------------------------


class ProfileTest(PolicyTestCase):

    def setUp(self):
        super().setUp()
        w = self.w
        self.keys = w.dir / "profile-keys"
        self.keys.mkdir(mode=0o700, exist_ok=True)
        self.key = self.make_key("dbtunnel_ed25519", 0o600)
        self.port = free_port(w)
        self.spec = f"L 127.0.0.1:{self.port}:intra:80"
        self.write_profile("dbtunnel", self.key, AllowUsers="tg-alice")
        self.addCleanup(shutil.rmtree, w.config_dir / "profiles.d", True)

    def make_key(self, name, mode, owner=None):
        """A copy of bob's private key, owned by `owner` (default root), with `mode`."""
        path = self.keys / name
        shutil.copy(self.w.users[BOB].key, path)
        uid, gid = (0, 0) if owner is None else (owner.uid, owner.gid)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        return path

    def write_profile(self, name, key, **extra):
        w = self.w
        text = ("Description Intranet web, as tg-bob\n"
                "Server gw\n"
                "User tg-bob\n"
                f"IdentityFile {key}\n"
                f"HostKey {w.host_key_fingerprint}\n"
                f'Forward "{self.spec}"\n')
        text += "".join(f"{k} {v}\n" for k, v in extra.items())
        return w.write_config(f"profiles.d/{name}.conf", text)

    def test_allowed_user_starts_profile_without_the_key(self):
        w = self.w
        alice = w.users[ALICE]
        # alice can read neither bob's key nor the profile's copy
        for key in (w.users[BOB].key, self.key):
            r = w.run_as(ALICE, ["cat", str(key)])
            self.assertNotEqual(r.returncode, 0, f"alice can read {key}")
        sshd_mark = len(w.proc("sshd").log())
        path = self.open(ALICE, "@dbtunnel", [], {})
        self.assertEqual(prop(w, ALICE, path, "State"), "up")
        self.assertEqual(prop(w, ALICE, path, "Owner"), alice.uid)
        self.assertEqual(prop(w, ALICE, path, "Destination"), "tg-bob@gw:22")
        self.assertEqual(prop(w, ALICE, path, "Forwards"), [self.spec])
        self.assertIn("dbtunnel", prop(w, ALICE, path, "Description"))
        self.assertEqual(self.tunnels(ALICE), [path])
        self.assertIn(("127.0.0.1", self.port), daemon_listeners(w.daemon.pid))
        self.assertHttpWorks(self.port)
        # she logged in as tg-bob on the gateway, with the profile's key
        self.assertRegex(w.proc("sshd").log()[sshd_mark:], r"Accepted publickey for tg-bob ")
        # she may not extend it beyond the profile's forwards (the key is not hers)
        extra = free_port(w)
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "AddForward", "s",
                     f"L 127.0.0.1:{extra}:intra:9000")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("org.tunnelgate.manage", r.stderr)
        self.assertEqual(prop(w, ALICE, path, "Forwards"), [self.spec])
        self.assertNotIn(("127.0.0.1", extra), daemon_listeners(w.daemon.pid))
        # and she may close it as her own
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, path, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNothingOpened([self.port])
        # busctl works too
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "OpenTunnel",
                     "sasa{sv}", "@dbtunnel", "0", "0", timeout=150)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertHttpWorks(self.port)

    def test_who_may_not(self):
        w = self.w
        # carol may use profiles (polkit) but is not in AllowUsers
        f = self.cfg("profiles.d/dbtunnel.conf")
        reason = f"AllowUsers at {f}:7 of profile 'dbtunnel' does not allow user tg-carol"
        mark = self.log_mark()
        self.denied("PolicyDenied", CAROL, "@dbtunnel", [], {}, reason=reason)
        # logged like every decision
        self.assertRegex(self.log_since(mark),
                         self.decision_rx("denies", "profile @dbtunnel", CAROL, reason))
        # bob lacks org.tunnelgate.use-profile: polkit refuses (even though the key is his)
        self.denied("NotAuthorized", BOB, "@dbtunnel", [], {},
                    contains="org.tunnelgate.use-profile")
        # no such profile; names that are no profile names are not looked up
        self.denied("NotFound", ALICE, "@nosuch", [], {}, contains="nosuch")
        for bad in ("@../policy", "@.hidden", "@a/b", "@"):
            with self.subTest(destination=bad):
                self.denied("InvalidArgument", ALICE, bad, [], {})
        self.assertNothingOpened([self.port])
        # AllowGroups: carol is a DBA, and a contractor
        self.write_profile("dbas", self.key, AllowGroups=DBA)
        self.write_profile("dbas-staff", self.key, AllowGroups=f"{DBA},!{CONTRACTORS}")
        self.denied("PolicyDenied", ALICE, "@dbas", [], {}, contains="tg-alice")
        self.denied("PolicyDenied", CAROL, "@dbas-staff", [], {}, contains="tg-carol")
        self.assertNothingOpened([self.port])
        path = self.open(CAROL, "@dbas", [], {})
        self.assertHttpWorks(self.port, CAROL)
        self.assertEqual(prop(w, CAROL, path, "Owner"), w.users[CAROL].uid)

    def test_reload_rechecks_the_profile(self):
        w = self.w
        path = self.open(ALICE, "@dbtunnel", [], {})
        self.assertHttpWorks(self.port)
        self.reload()
        self.assertEqual(self.tunnels(), [path])
        self.write_profile("dbtunnel", self.key, AllowUsers="tg-carol")     # line 7
        mark = self.log_mark()
        self.reload()
        self.assertGone(path)
        self.assertListenerGone(self.port)
        f = self.cfg("profiles.d/dbtunnel.conf")
        reason = f"AllowUsers at {f}:7 of profile 'dbtunnel' does not allow user tg-alice"
        log = self.log_since(mark)
        self.assertIn(f"the reloaded policy forbids it: {reason}", log)
        self.assertRegex(log, self.decision_rx("denies", "profile @dbtunnel", ALICE, reason))
        # a profile that is gone ends its tunnels at the next reload
        self.write_profile("dbtunnel", self.key, AllowUsers="tg-alice")
        path = self.open(ALICE, "@dbtunnel", [], {})
        (w.config_dir / "profiles.d" / "dbtunnel.conf").unlink()
        mark = self.log_mark()
        self.reload()
        self.assertGone(path)
        self.assertIn("its profile 'dbtunnel' cannot be read any more", self.log_since(mark))

    def test_key_file_must_be_root_only(self):
        w = self.w
        for name, mode, owner, contains in [
                ("group-readable", 0o640, None, "0640"),
                ("world-readable", 0o644, None, "0644"),
                ("owned-by-bob", 0o644, w.users[BOB], "owned by uid")]:
            with self.subTest(name):
                key = self.make_key(f"{name}_key", mode, owner)
                self.write_profile(name, key, AllowUsers="tg-alice")
                msg = self.denied("Failed", ALICE, f"@{name}", [], {}, contains=[str(key)])
                self.assertIn(contains, msg)
                self.assertNothingOpened([self.port])
        # 0400 is fine
        key = self.make_key("readonly_key", 0o400)
        self.write_profile("readonly", key, AllowUsers="tg-alice")
        self.open(ALICE, "@readonly", [], {})
        self.assertHttpWorks(self.port)

    def test_profile_pins_the_host_key(self):
        """The profile's HostKey decides, even for a host the known hosts list."""
        profile = self.write_profile("wrongkey", self.key, AllowUsers="tg-alice")
        profile.write_text(profile.read_text().replace(self.w.host_key_fingerprint,
                                                       "SHA256:" + "A" * 43))
        self.denied("HostKeyChanged", ALICE, "@wrongkey", [], {},
                    contains=[self.w.host_key_fingerprint])
        self.assertNothingOpened([self.port])

    def test_profile_does_not_bypass_the_policy(self):
        self.set_policy({"policy.conf": "PermitOpen intra:9000\n"})
        f = self.cfg("policy.conf")
        self.denied("PolicyDenied", ALICE, "@dbtunnel", [], {},
                    reason=f"PermitOpen at {f}:1 does not allow intra:80")
        self.set_policy({"policy.conf": "PermitServer gw:2222\n"})
        self.denied("PolicyDenied", ALICE, "@dbtunnel", [], {},
                    reason=f"PermitServer at {f}:1 does not allow gw:22")
        self.assertNothingOpened([self.port])
        # MaxTunnels counts profile tunnels too
        self.set_policy({"policy.conf": "MaxTunnels 0\n"})
        self.denied("LimitExceeded", ALICE, "@dbtunnel", [], {},
                    reason=f"MaxTunnels 0 at {f}:1 does not allow another tunnel (0 in use)")


# ----------------------------------------------------------------------------


class LimitsTest(PolicyTestCase):

    def test_max_tunnels(self):
        w = self.w
        self.set_policy({"policy.conf": "# per user\nMaxTunnels 2\n"})
        f = self.cfg("policy.conf")
        ports = [free_port(w) for _ in range(3)]
        t1 = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{ports[0]}:intra:80"])
        self.open(ALICE, "tg-alice@gw:2222", [f"L 127.0.0.1:{ports[1]}:intra:80"])
        self.denied("LimitExceeded", ALICE, "tg-alice@gw", [f"L 127.0.0.1:{ports[2]}:intra:80"],
                    reason=f"MaxTunnels 2 at {f}:2 does not allow another tunnel (2 in use)")
        self.assertTrue(can_listen(w, ports[2]))
        self.assertEqual(len(self.tunnels(ALICE)), 2)
        # per user: bob may still open his
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{ports[2]}:intra:80"])
        close_all_tunnels(w)
        # closing one makes room again
        t1 = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{ports[0]}:intra:80"])
        self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{ports[1]}:intra:80"])
        r = w.busctl(ALICE, BUSCTL_TIMEOUT, "call", BUS, t1, TIFACE, "Close")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{ports[2]}:intra:80"])
        self.assertHttpWorks(ports[2])

    def test_max_listeners_and_daemon_max_tunnels(self):
        """MaxListeners counts a user's listening sockets over all tunnels (a
        refused tunnel binds nothing), DaemonMaxTunnels everyone's tunnels;
        each refusal names its line, and the other users are served."""
        w = self.w
        self.set_policy({"policy.conf": "# limits\nMaxListeners 3\nDaemonMaxTunnels 3\n"})
        f = self.cfg("policy.conf")
        ports = [free_port(w) for _ in range(6)]
        listeners = tgtest.daemon_listeners(w.daemon.pid)
        self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{ports[0]}:intra:80",
                                        f"L 127.0.0.1:{ports[1]}:intra:80"])
        self.denied("LimitExceeded", ALICE, "tg-alice@gw",
                    [f"L 127.0.0.1:{ports[2]}:intra:80", f"L 127.0.0.1:{ports[3]}:intra:80"],
                    reason=f"MaxListeners 3 at {f}:2 does not allow 2 more of listeners "
                           "(2 in use)")
        self.assertTrue(can_listen(w, ports[2]) and can_listen(w, ports[3]))
        self.assertEqual(len(tgtest.daemon_listeners(w.daemon.pid)), len(listeners) + 2)
        # per user: bob's two are his own
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{ports[2]}:intra:80",
                                    f"L 127.0.0.1:{ports[3]}:intra:80"])
        self.open(CAROL, "tg-carol@gw", [f"L 127.0.0.1:{ports[4]}:intra:80"])
        self.denied("LimitExceeded", BOB, "tg-bob@gw", [f"L 127.0.0.1:{ports[5]}:intra:80"],
                    reason=f"DaemonMaxTunnels 3 at {f}:3 does not allow another tunnel in "
                           "the daemon (3 in use)")
        self.assertTrue(can_listen(w, ports[5]))
        for port in (ports[0], ports[2], ports[4]):
            self.assertHttpWorks(port, user={ports[0]: ALICE, ports[2]: BOB,
                                             ports[4]: CAROL}[port])

    def test_max_buffered_refuses_the_connection_not_the_others(self):
        """MaxBuffered 640K holds two connections' buffers: alice's third is
        closed at once and logged with the line; her two and bob's work."""
        w = self.w
        self.set_policy({"policy.conf": "MaxBuffered 640K\n"})
        f = re.escape(self.cfg("policy.conf"))
        pa, pb = free_port(w), free_port(w)
        self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pa}:intra:9000"])
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{pb}:intra:9000"])
        held = [self.echo_connection(pa, b"one"), self.echo_connection(pa, b"two")]
        mark = self.log_mark()
        self.assertConnectionRefused(pa, b"three", "a third connection got through")
        self.wait_log(rf"tg-alice has reached MaxBuffered 655360 \({f}:1\), refusing a new "
                      r"connection", mark)
        for s in held:
            self.assertEchoes(s)
        for i in range(2):       # bob's own two (held until the test ends)
            self.assertEchoes(self.echo_connection(pb, b"bob%d" % i))

    def test_daemon_max_connections_and_listeners(self):
        """The daemon's own limits count everyone: with DaemonMaxConnections
        2, bob's connection after alice's two is closed and logged naming
        the daemon's limit; DaemonMaxListeners refuses a tunnel naming its
        line."""
        w = self.w
        self.set_policy({"policy.conf": "DaemonMaxConnections 2\nDaemonMaxListeners 2\n"})
        f = self.cfg("policy.conf")
        pa, pb, pc = free_port(w), free_port(w), free_port(w)
        self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pa}:intra:9000"])
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{pb}:intra:9000"])
        self.denied("LimitExceeded", CAROL, "tg-carol@gw", [f"L 127.0.0.1:{pc}:intra:80"],
                    reason=f"DaemonMaxListeners 2 at {f}:2 does not allow another "
                           "listener in the daemon (2 in use)")
        held = [self.echo_connection(pa, b"one"), self.echo_connection(pa, b"two")]
        mark = self.log_mark()
        self.assertConnectionRefused(pb, b"three", "a third connection got through")
        self.wait_log(rf"the daemon has reached DaemonMaxConnections 2 "
                      rf"\({re.escape(f)}:1\), refusing a new connection", mark)
        held[0].close()
        wait_for(lambda: self.echo_works(pb), timeout=10, what="room for bob again")

    def echo_works(self, port):
        try:
            s = self.echo_connection(port, b"again")
            s.close()
            return True
        except (OSError, AssertionError):
            return False

    def test_open_tunnel_flood_to_a_black_hole(self):
        """Forty OpenTunnel calls at once to a server that never answers (its
        SYNs are dropped): MaxTunnels 5 lets five wait for it, the others are
        refused at once; other users are answered meanwhile, and nothing is
        left once the five give up."""
        w = self.w
        self.set_policy({"policy.conf": "MaxTunnels 5\n"})
        w.run(["nft", "add table inet blackhole; add chain inet blackhole input "
               "{ type filter hook input priority 0; }; add rule inet blackhole input "
               "tcp dport 2299 drop"], ns="gateway")
        self.addCleanup(w.run, ["nft", "delete", "table", "inet", "blackhole"], ns="gateway",
                        check=False)
        fds = tgtest.settled_fd_count(w.daemon.pid)
        openers = [w.spawn_as(ALICE, ["busctl", "--system", "--timeout=120", "call", BUS,
                                      MPATH, MIFACE, "OpenTunnel", "sasa{sv}", "gw:2299", "0",
                                      "1", "agent", "s", str(w.users[ALICE].agent_sock)],
                              name=f"flood-{i}") for i in range(40)]
        refused = lambda: [p for p in openers if not p.alive() and
                           "MaxTunnels 5" in p.log()]
        wait_for(lambda: len(refused()) == 35, timeout=60,
                 what="35 of the 40 calls refused by MaxTunnels")
        t0 = time.monotonic()
        r = w.busctl(BOB, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(len([p for p in openers if p.alive()]), 5)
        self.assertEqual(len(self.tunnels(ADMIN)), 5)
        port = free_port(w)
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{port}:intra:80"])
        self.assertHttpWorks(port, user=BOB)
        close_all_tunnels(w)
        for p in openers:
            self.assertNotEqual(p.wait(timeout=150), 0)
        self.assertEqual(tgtest.settled_fd_count(w.daemon.pid), fds)

    def test_max_connections_over_all_tunnels(self):
        w = self.w
        self.set_policy({"policy.conf": "MaxConnections 3\n"})
        pa, pb = free_port(w), free_port(w)
        ta = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pa}:intra:9000"])
        tb = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pb}:intra:9000"])
        held = [self.echo_connection(pa, b"one"), self.echo_connection(pa, b"two"),
                self.echo_connection(pb, b"three")]
        mark = self.log_mark()
        # the 4th concurrent connection (either tunnel) is closed at once, unanswered
        for port in (pb, pa):
            with self.subTest(port=port):
                self.assertConnectionRefused(port, b"four", "a 4th connection got through")
        f = re.escape(self.cfg("policy.conf"))
        self.wait_log(rf"tg-alice has reached MaxConnections 3 \({f}:1\), refusing a new "
                      r"connection", mark)
        # the three keep working
        for s in held:
            self.assertEchoes(s)
        self.assertEqual(prop(w, ALICE, ta, "ActiveConnections") +
                         prop(w, ALICE, tb, "ActiveConnections"), 3)
        # per user: bob is not limited by alice's connections
        pbob = free_port(w)
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{pbob}:intra:9000"])
        self.assertEchoes(self.echo_connection(pbob, b"bob"))
        # one of alice's closes: a new one may come
        held[0].close()

        def new_one_works():
            s = w.connect("client", "127.0.0.1", pb, timeout=10)
            try:
                s.sendall(b"ECHO\nfive")
                s.settimeout(5)
                return self.recv_exactly(s, 4) == b"five"
            finally:
                s.close()
        wait_for(new_one_works, timeout=10, interval=0.3, what="a free connection slot")

    def test_max_lifetime(self):
        w = self.w
        pold, pnew = free_port(w), free_port(w)
        # the lifetime counts from the tunnel's creation, which comes after the call
        # was sent and before it returned: time from before each call
        t_old = time.monotonic()
        old = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pold}:intra:9000"])
        time.sleep(1)
        mark = self.log_mark()
        # a reload applies the new limit to the open tunnel too (counted from its start)
        self.set_policy({"policy.conf": "MaxLifetime 3s\n"})
        t_new = time.monotonic()
        new = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pnew}:intra:9000"])
        conn = self.echo_connection(pnew)         # an active connection does not help
        self.assertEqual(sorted(self.tunnels()), sorted([old, new]))
        self.assertGone(old, timeout=8 * SLOW)
        took_old = time.monotonic() - t_old
        self.assertGone(new, timeout=8 * SLOW)
        took_new = time.monotonic() - t_new
        self.assertGreater(took_old, 2.9)
        self.assertLess(took_old, 6.5 * SLOW)
        self.assertGreater(took_new, 2.9)
        self.assertLess(took_new, 6.5 * SLOW)
        self.assertListenerGone(pnew)
        conn.settimeout(5)
        try:
            self.assertEqual(conn.recv(100), b"")
        except ConnectionResetError:
            pass
        log = self.log_since(mark)
        f = self.cfg("policy.conf")
        for t in (old, new):
            self.assertIn(f"closing tunnel {t.rsplit('/', 1)[1]} of tg-alice: MaxLifetime "
                          f"3s at {f}:1 ends the tunnel", log)

    def test_idle_timeout(self):
        w = self.w
        self.set_policy({"policy.conf": "IdleTimeout 2s\n"})
        mark = self.log_mark()
        pidle, pbusy = free_port(w), free_port(w)
        idle = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pidle}:intra:9000"])
        t0 = time.monotonic()
        busy = self.open(ALICE, "tg-alice@gw", [f"L 127.0.0.1:{pbusy}:intra:9000"])
        held = w.connect("client", "127.0.0.1", pbusy, timeout=10)
        self.addCleanup(held.close)
        held.sendall(b"HOLD\n")             # open, but silent
        wait_for(lambda: prop(w, ALICE, busy, "ActiveConnections") == 1, timeout=5,
                 what="the held connection")
        self.assertGone(idle, timeout=8 * SLOW)
        self.assertGreater(time.monotonic() - t0, 1.5)
        self.assertListenerGone(pidle)
        time.sleep(3)                       # well past the timeout: still there
        self.assertIn(busy, self.tunnels())
        self.assertEqual(prop(w, ALICE, busy, "State"), "up")
        held.close()
        t1 = time.monotonic()
        self.assertGone(busy, timeout=8 * SLOW)
        self.assertGreater(time.monotonic() - t1, 1.0)
        f = self.cfg("policy.conf")
        self.assertIn(f"closing tunnel {idle.rsplit('/', 1)[1]} of tg-alice: IdleTimeout "
                      f"2s at {f}:1 ends the tunnel", self.log_since(mark))
        self.assertRegex(self.log_since(mark), self.decision_rx(
            "denies", "idle tunnel", ALICE, f"IdleTimeout 2s at {f}:1 ends the tunnel"))


# ----------------------------------------------------------------------------


class HostKeyPolicyTest(PolicyTestCase):
    """HostKeyPolicy, with a daemon whose known hosts files are empty."""

    def setUp(self):
        w = self.w
        close_all_tunnels(w)
        tgtest.check_daemon_stopped_cleanly(w)
        d = w.dir / f"hostkey-policy-{self._testMethodName}"
        d.mkdir()
        kh = d / "ssh_known_hosts"
        kh.write_text("")
        state = d / "state"
        state.mkdir(mode=0o700)
        start_policy_daemon(w, known_hosts=kh, state_dir=state)

        def back():
            close_all_tunnels(w)
            tgtest.check_daemon_stopped_cleanly(w)
            start_policy_daemon(w)
        self.addCleanup(back)
        super().setUp()

    def test_strict_pin_does_not_admit_unknown_host(self):
        w = self.w
        fp = w.host_key_fingerprint
        port = free_port(w)
        fwd = [f"L 127.0.0.1:{port}:intra:80"]
        # known-or-pinned (default): the pin lets the unknown host in
        self.open(ALICE, "tg-alice@gw", fwd, self.options(ALICE, host_key=fp))
        self.assertHttpWorks(port)
        close_all_tunnels(w)
        self.set_policy({"policy.conf": "HostKeyPolicy strict\n"})
        self.denied("HostKeyUnknown", ALICE, "tg-alice@gw", fwd,
                    self.options(ALICE, host_key=fp), contains=[fp, "strict"])
        self.denied("HostKeyUnknown", ALICE, "tg-alice@gw", fwd, contains=[fp])
        self.assertNothingOpened([port])

    def test_pinned_only_requires_the_pin(self):
        w = self.w
        fp = w.host_key_fingerprint
        port = free_port(w)
        fwd = [f"L 127.0.0.1:{port}:intra:80"]
        self.set_policy({"policy.conf": "# pins only\nHostKeyPolicy pinned-only\n"})
        f = self.cfg("policy.conf")
        self.denied("PolicyDenied", ALICE, "tg-alice@gw", fwd,
                    reason=f"HostKeyPolicy pinned-only at {f}:2 requires the host-key option")
        self.assertNothingOpened([port])
        self.open(ALICE, "tg-alice@gw", fwd, self.options(ALICE, host_key=fp))
        self.assertHttpWorks(port)


# ----------------------------------------------------------------------------


class AuditTest(PolicyTestCase):

    def test_decisions_are_logged(self):
        w = self.w
        self.set_policy({"policy.conf": "PermitServer gw:22\nPermitOpen intra:80\n"
                                        "MaxTunnels 5\n"})
        f = self.cfg("policy.conf")
        port = free_port(w)
        mark = self.log_mark()
        self.open(BOB, "tg-bob@gw", [f"L 127.0.0.1:{port}:intra:80"])
        self.denied("PolicyDenied", ALICE, "tg-alice@gw", ["L 127.0.0.1:0:intra:9000"])
        self.denied("PolicyDenied", CAROL, "tg-carol@gw:2222", ["L 127.0.0.1:0:intra:80"])
        self.check(ALICE, "gw", "L 127.0.0.1:0:intra:80")
        log = self.log_since(mark)
        expected = [
            ("allows", "server gw port 22", BOB, f"PermitServer at {f}:1 allows gw:22"),
            ("allows", f"L 127.0.0.1:{port}:intra:80", BOB,
             f"PermitOpen at {f}:2 allows intra:80"),
            ("allows", "one more tunnel", BOB,
             f"MaxTunnels 5 at {f}:3 allows another tunnel (0 in use)"),
            ("allows", "server gw port 22", ALICE, f"PermitServer at {f}:1 allows gw:22"),
            ("denies", "L 127.0.0.1:0:intra:9000", ALICE,
             f"PermitOpen at {f}:2 does not allow intra:9000"),
            ("denies", "server gw port 2222", CAROL,
             f"PermitServer at {f}:1 does not allow gw:2222"),
            ("allows", "L 127.0.0.1:0:intra:80", ALICE, f"PermitOpen at {f}:2 allows intra:80"),
        ]
        for verb, what, user, reason in expected:
            with self.subTest(user=user, what=what):
                self.assertRegex(log, self.decision_rx(verb, what, user, reason))
        # the host key rule too
        self.assertRegex(log, self.decision_rx(
            "allows", "host key", BOB,
            "HostKeyPolicy known-or-pinned at <default> allows a host key in known_hosts or "
            "pinned"))
        # nothing after a denial is decided: carol's forward was never checked
        self.assertNotRegex(log, r"policy \w+ L 127\.0\.0\.1:0:intra:80 for tg-carol")


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Server mode (issue 6): tunnelgated on the SSH server (the gateway
namespace) makes "no forwarding" hold for SFTP-only users and "only these
destinations" for jump-host users, with the real sshd, ssh and sftp.

DirectoryUsersTest (issue 12, finding 6) adds users of a second NSS source
that, like sssd with enumerate = false, answers lookups but is never listed
(tests/nss/nss-tgtest.c, only in the world's namespaces), with names as
directories give them: alice@corp, CORP\bob, "carol smith".

The world's sshd_config deliberately lets the SFTP-only group forward
(ForceCommand internal-sftp alone does not stop `ssh -N -L`): that is the
mistake server mode is for.

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_server_mode.py -v
(exits 77 = skipped when not root).
"""

import hashlib
import os
import re
import shutil
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
import world  # noqa: E402
from tgtest import BUS, MPATH, MIFACE, BUSCTL_TIMEOUT, free_port, wait_for  # noqa: E402

SFTP, SFTP2, NORM, JUMP, SADMIN = "tg-sftp1", "tg-sftp2", "tg-norm", "tg-jump", "tg-sadmin"
USERS = (SFTP, SFTP2, NORM, JUMP, SADMIN)
SFTP_GROUP, JUMP_GROUP = "tgsftp", "tgjump"

BROKEN_SSHD = f"""
# the mistake: SFTP-only by ForceCommand, but forwarding left on
Match Group {SFTP_GROUP}
  ForceCommand internal-sftp
  AllowTcpForwarding yes
"""

POLKIT_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") == 0 && subject.user == "tg-sadmin")
        return polkit.Result.YES;
});
"""


def policy(w, dropin, reload=True, sshd_config=None, sshd_binary=None):
    return f"""ServerMode yes
SshdBinary {sshd_binary or world.SSHD}
SshdConfig {sshd_config or w.sshd_config_path}
SshdDropIn {dropin}
SshdReload {"yes" if reload else "no"}
Match Group {SFTP_GROUP}
  SftpOnly yes
Match Group {JUMP_GROUP}
  ServerPermitOpen intra:80
"""


def directory_policy(w, dropin, reload=True):
    """policy() and the directory's SFTP-only group, and a user NSS does not know."""
    return policy(w, dropin, reload=reload) + f"""Match Group {D_SFTP_GROUP[0]}
  SftpOnly yes
Match User {D_GHOST}
  SftpOnly yes
"""


# The test directory: groups and users NSS resolves but never enumerates.
# alice is listed as a member of the SFTP-only group; bob's primary group is
# it (no group lists him: only the kernel's first sight of him finds him);
# carol and dave are unrestricted unless a test's policy names them.
D_USERS_GROUP, D_SFTP_GROUP = ("corp users", 71000), ("sftp@corp", 71010)
D_ALICE, D_BOB, D_CAROL = ("alice@corp", 71001), ("CORP\\bob", 71002), ("carol smith", 71003)
D_DAVE = ("dave@corp", 71004)
D_GHOST = "ghost@corp"


def setUpModule():
    w = tgtest.start_module_world(USERS, agents=(), polkit_rules=POLKIT_RULES, daemon=False,
                                  groups={SFTP: [SFTP_GROUP], JUMP: [JUMP_GROUP]},
                                  sshd_config_extra=BROKEN_SSHD)
    try:
        w.enable_directory()
        w.add_directory_group(D_USERS_GROUP[0], D_USERS_GROUP[1])
        w.add_directory_group(D_SFTP_GROUP[0], D_SFTP_GROUP[1], members=[D_ALICE[0]])
        w.add_directory_user(D_ALICE[0], D_ALICE[1], D_USERS_GROUP[1])
        w.add_directory_user(D_BOB[0], D_BOB[1], D_SFTP_GROUP[1])
        w.add_directory_user(D_CAROL[0], D_CAROL[1], D_USERS_GROUP[1])
        w.add_directory_user(D_DAVE[0], D_DAVE[1], D_USERS_GROUP[1])
        w.restart_sshd()                  # sshd must load the directory too
    except BaseException:
        tgtest.stop_module_world()
        raise


def tearDownModule():
    tgtest.stop_module_world()


def echo_through(connect):
    """ECHO "hello" over the connection connect() makes: what came back before
    the end (b"" when the connection was refused or reset, or carried
    nothing)."""
    got = b""
    try:
        s = connect()
        try:
            s.sendall(b"ECHO\nhello")
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
    except OSError:
        pass
    return got


class ServerModeCase(tgtest.DaemonTestCase):
    """The helpers of both test classes."""

    def start(self, text):
        w = self.w
        if w.daemon is not None and w.daemon.alive():
            tgtest.check_daemon_stopped_cleanly(w)
        w.write_config("policy.conf", text)
        return w.start_daemon(ns="gateway")

    @property
    def dropin(self):
        return self.w.sshd_dropin_dir / "00-tunnelgate.conf"

    def not_included_dropin(self):
        d = self.w.dir / "not-included"
        d.mkdir(exist_ok=True)
        return d / "00-tunnelgate.conf"

    def audit(self):
        out = self.w.busctl(SADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "Audit",
                            json=True)
        return [tuple(x) for x in out["data"][0]]

    def sshd_T(self, user):
        r = self.w.run([world.SSHD, "-T", "-f", str(self.w.sshd_config_path), "-C",
                        f"user={user},host=localhost,addr=127.0.0.1"], ns="gateway",
                       check=True)
        return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)

    # -- clients ---------------------------------------------------------------

    def ssh_forward(self, user, *forward):
        """`ssh -N` with a forward, as `user`, in the background; returns the Proc."""
        w = self.w
        argv = w.ssh_argv(user, options=["-N", "-o", "ExitOnForwardFailure=yes", *forward])
        p = w.spawn_as(user, argv, name=f"ssh-{user}")
        self.addCleanup(p.stop)
        return p

    def local_fetch(self, user, port, timeout=5):
        """curl through a local forward: (returncode, body)."""
        r = self.w.run_as(user, ["curl", "-sS", "--max-time", str(timeout),
                                 f"http://127.0.0.1:{port}/"], timeout=timeout + 10)
        return r.returncode, r.stdout

    def wait_listening(self, port, ns="client"):
        self.w.wait_port(ns, "127.0.0.1", port, timeout=20)



class ServerModeTest(ServerModeCase):

    def test_a_sftp_still_works(self):
        w = self.w
        self.start(policy(w, self.dropin))
        data = os.urandom(1024 * 1024)
        src = w.users[SFTP].home / "up.bin"
        src.write_bytes(data)
        os.chown(src, w.users[SFTP].uid, w.users[SFTP].gid)
        batch = w.users[SFTP].home / "batch"
        batch.write_text("put up.bin remote.bin\nget remote.bin down.bin\n")
        os.chown(batch, w.users[SFTP].uid, w.users[SFTP].gid)
        argv = ["sftp", "-F", "none", "-b", str(batch), "-i", str(w.users[SFTP].key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={w.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", f"{SFTP}@gw"]
        r = w.run_as(SFTP, argv, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = (w.users[SFTP].home / "down.bin").read_bytes()
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())

    def test_b_kernel_blocks_forwarding_when_sshd_allows_it(self):
        """No drop-in reaches sshd (it is written where sshd does not look):
        sshd allows the forwards, the kernel makes them carry nothing, and the
        audit reports the drift. A normal user's forwards work."""
        w = self.w
        if self.dropin.exists():            # an earlier test's daemon installed it
            self.dropin.unlink()
        w.restart_sshd()                    # sshd reads its files at start and SIGHUP only
        self.start(policy(w, self.not_included_dropin(), reload=False))
        self.assertEqual(self.sshd_T(SFTP)["allowtcpforwarding"], "yes")
        findings = self.audit()
        self.assertIn((SFTP, "allowtcpforwarding", "yes"), findings)
        self.assertRegex(w.daemon.log(), rf"SFTP-only user {SFTP}: sshd allows allowtcpforwarding")
        r = w.ctl(SADMIN, "audit")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{SFTP}\tallowtcpforwarding\tyes", r.stdout)

        # -L: the connection sshd opens for it is refused by the kernel
        lport = free_port(w)
        self.ssh_forward(SFTP, "-L", f"127.0.0.1:{lport}:intra:80")
        self.wait_listening(lport)
        rc, body = self.local_fetch(SFTP, lport)
        self.assertNotEqual(rc, 0)
        self.assertNotIn("intranet", body.lower())
        # -D: likewise
        dport = free_port(w)
        self.ssh_forward(SFTP, "-D", f"127.0.0.1:{dport}")
        self.wait_listening(dport)
        r = w.run_as(SFTP, ["curl", "-sS", "--max-time", "5", "--socks5-hostname",
                            f"127.0.0.1:{dport}", "http://intra/"], timeout=20)
        self.assertNotEqual(r.returncode, 0)
        # -R: the server-side listener carries no data
        rport = free_port(w, hosts=("127.0.0.1",))
        self.ssh_forward(SFTP, "-R", f"127.0.0.1:{rport}:127.0.0.1:9000")
        wait_for(lambda: f":{rport} " in w.run(["ss", "-Hltn"], ns="gateway").stdout,
                 timeout=20, what=f"sshd listening on port {rport} for the -R")
        # the listener's SYN-ACK already belongs to the user's socket: no
        # handshake; if one got through, no data may
        self.assertEqual(echo_through(lambda: w.connect("gateway", "127.0.0.1", rport,
                                                        timeout=5)), b"")
        # a normal user's forward works
        nport = free_port(w)
        self.ssh_forward(NORM, "-L", f"127.0.0.1:{nport}:intra:80")
        self.wait_listening(nport)
        rc, body = self.local_fetch(NORM, nport)
        self.assertEqual(rc, 0)
        self.assertEqual(body.encode(), w.intranet_page)
        # the kernel counted it
        out = w.run(["nft", "list", "counter", "inet", "tunnelgate", "server_rejects"],
                    ns="gateway", check=True).stdout
        self.assertGreater(int(re.search(r"packets (\d+)", out).group(1)), 0)

    def test_c_dropin_installed_and_audit_clean(self):
        w = self.w
        self.start(policy(w, self.dropin))
        wait_for(lambda: self.dropin.exists(), timeout=10, what="the drop-in")
        text = self.dropin.read_text()
        # the policy's condition, not a list of users: sshd resolves the group
        self.assertIn(f"\nMatch Group {SFTP_GROUP}\n", text)
        self.assertNotIn("Match User", text)
        self.assertIn("DisableForwarding yes", text)
        effective = self.sshd_T(SFTP)
        self.assertEqual(effective["disableforwarding"], "yes")
        self.assertEqual(effective["allowtcpforwarding"], "no")
        self.assertEqual(self.sshd_T(NORM)["allowtcpforwarding"], "yes")
        self.assertEqual(self.audit(), [])
        r = w.ctl(SADMIN, "audit")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # sshd itself now refuses the forward: the channel is prohibited
        lport = free_port(w)
        self.ssh_forward(SFTP, "-L", f"127.0.0.1:{lport}:intra:80")
        self.wait_listening(lport)
        rc, body = self.local_fetch(SFTP, lport)
        self.assertNotEqual(rc, 0)
        wait_for(lambda: re.search(r"refused local port forward: .* target intra port 80",
                                   w.proc("sshd").log()),
                 timeout=10, what="sshd to refuse the forward itself")

    def test_d_bad_dropin_is_never_installed(self):
        w = self.w
        broken = w.dir / "sshd-broken.conf"
        shutil.copy(w.sshd_config_path, broken)
        with open(broken, "a") as f:
            f.write("\nNoSuchKeyword yes\n")
        target = self.not_included_dropin().with_name("01-never.conf")
        self.start(policy(w, target, sshd_config=broken))
        self.assertFalse(target.exists())
        self.assertFalse(any(p.name.startswith(".tunnelgate") for p in target.parent.iterdir()))
        findings = self.audit()
        self.assertTrue(any(f[1] == "drop-in" and "NoSuchKeyword" in f[2] for f in findings),
                        findings)

    def test_e_group_change_takes_effect(self):
        w = self.w
        self.start(policy(w, self.dropin))
        uid = w.users[SFTP2].uid

        def in_set():
            out = w.run(["nft", "list", "set", "inet", "tunnelgate", "sftp_only_uids"],
                        ns="gateway", check=True).stdout
            return re.search(rf"\b{uid}\b", out) is not None

        self.assertFalse(in_set())
        wait_for(self.dropin.exists, timeout=10, what="the drop-in")
        dropin = self.dropin.read_text()
        self.assertEqual(self.sshd_T(SFTP2)["disableforwarding"], "no")
        w.run(["gpasswd", "-a", SFTP2, SFTP_GROUP], check=True)
        try:
            wait_for(in_set, timeout=10, what=f"uid {uid} in sftp_only_uids")
            # the drop-in stays as it is: sshd finds the new member itself
            self.assertEqual(self.sshd_T(SFTP2)["disableforwarding"], "yes")
            self.assertEqual(self.dropin.read_text(), dropin)
        finally:
            w.run(["gpasswd", "-d", SFTP2, SFTP_GROUP], check=True)
        wait_for(lambda: not in_set(), timeout=10, what=f"uid {uid} out of sftp_only_uids")
        self.assertEqual(self.sshd_T(SFTP2)["disableforwarding"], "no")

    def test_f_jump_host_allow_list(self):
        w = self.w
        self.start(policy(w, self.dropin))
        good, bad = free_port(w), free_port(w)
        self.ssh_forward(JUMP, "-L", f"127.0.0.1:{good}:intra:80",
                         "-L", f"127.0.0.1:{bad}:intra:9000")
        self.wait_listening(good)
        rc, body = self.local_fetch(JUMP, good)
        self.assertEqual(rc, 0)
        self.assertEqual(body.encode(), w.intranet_page)
        # ssh's own listener takes the connection; ssh may already have
        # closed it, because the server's channel failed
        s = w.connect("client", "127.0.0.1", bad, timeout=10)
        self.assertEqual(echo_through(lambda: s), b"")

    def test_g_calls_answered_while_sshd_runs_and_bursts_coalesce(self):
        """Server mode's work (user walk, sshd -t/-T) runs off the D-Bus
        thread: with its sshd held, calls are still answered; a burst of
        /etc/passwd changes meanwhile costs one more run, not one each."""
        w = self.w
        d = w.dir / "held-sshd"
        d.mkdir(exist_ok=True)
        hold, started = d / "hold", d / "started"
        wrapper = d / "sshd"
        wrapper.write_text(f"""#!/bin/sh
if [ -e {hold} ]; then
  touch {started}
  while [ -e {hold} ]; do sleep 0.05; done
fi
exec {world.SSHD} "$@"
""")
        os.chmod(wrapper, 0o755)
        self.start(policy(w, self.dropin, reload=False, sshd_binary=wrapper))

        def runs():
            return w.daemon.log().count(" jump-host users (")

        def resyncs():
            return w.daemon.log().count("users or groups changed; re-reading them")

        wait_for(lambda: runs() >= 1, timeout=10, what="server mode's first run")
        before, resynced = runs(), resyncs()
        hold.touch()
        self.addCleanup(hold.unlink, missing_ok=True)
        self.addCleanup(w.run, ["usermod", "-c", "", SFTP], check=True)
        w.run(["usermod", "-c", "held", SFTP], check=True)
        wait_for(started.exists, timeout=20, what="server mode's worker to run sshd")
        self.assertEqual(runs(), before + 1)
        # the worker waits in sshd; the D-Bus thread answers
        out = w.busctl(SADMIN, "--timeout=10", "call", BUS, MPATH, MIFACE, "GetFirewall",
                       json=True)["data"][0]
        self.assertIn("table inet tunnelgate", out)
        r = w.busctl(NORM, "--timeout=10", "get-property", BUS, MPATH, MIFACE, "Enforcing")
        self.assertEqual(r.returncode, 0, r.stderr)
        for i in range(4):  # apart by more than the 300 ms the file watch waits
            w.run(["usermod", "-c", f"burst {i}", SFTP], check=True)
            time.sleep(0.6)
        wait_for(lambda: resyncs() >= resynced + 3, timeout=10, what="the changes seen")
        self.assertEqual(runs(), before + 1, "nothing ran while the worker was busy")
        hold.unlink()
        # Audit answers after what was asked before it: the one coalesced run
        self.assertEqual(self.audit(), [])
        self.assertEqual(runs(), before + 2, w.daemon.log(tail=40))



class DirectoryUsersTest(ServerModeCase):
    """Directory users: not enumerable, names with '@', '\\' and ' '."""

    def getent(self, *args):
        return self.w.run(["getent", *args], ns="gateway")

    def uid_in(self, set_name, uid):
        out = self.w.run(["nft", "list", "set", "inet", "tunnelgate", set_name],
                         ns="gateway", check=True).stdout
        return re.search(rf"\b{uid}\b", out) is not None

    def test_d1_directory_resolves_but_does_not_enumerate(self):
        """The premise: NSS gives the directory's users and groups by name and
        id, with their groups, but enumerating lists none of them."""
        for name, uid in (D_ALICE, D_BOB, D_CAROL, D_DAVE):
            r = self.getent("passwd", name)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith(f"{name}:*:{uid}:"), r.stdout)
            self.assertEqual(self.getent("passwd", str(uid)).stdout, r.stdout)
        self.assertEqual(self.getent("group", D_SFTP_GROUP[0]).stdout.strip(),
                         f"{D_SFTP_GROUP[0]}:*:{D_SFTP_GROUP[1]}:{D_ALICE[0]}")
        listing = self.getent("passwd").stdout
        self.assertIn(f"\n{SFTP}:", "\n" + listing)            # files: listed
        for name, _ in (D_ALICE, D_BOB, D_CAROL):
            self.assertNotIn(f"\n{name}:", "\n" + listing)
        self.assertNotIn(D_SFTP_GROUP[0], self.getent("group").stdout)
        r = self.w.run(["id", "-Gn", D_BOB[0]], ns="gateway", check=True)
        self.assertEqual(r.stdout.strip(), D_SFTP_GROUP[0])
        # and the host itself knows none of them
        r = self.w.run(["getent", "passwd", D_ALICE[0]])
        self.assertEqual(r.returncode, 2)

    def test_d2_dropin_matches_the_group_and_audit_names_the_unresolved(self):
        """sshd gets the policy's conditions (Match Group sftp@corp, Match User
        ghost@corp) and so covers directory users it was never told about;
        the audit names the user NSS does not know and the group whose
        members cannot be listed."""
        w = self.w
        self.start(directory_policy(w, self.dropin))
        wait_for(lambda: self.dropin.exists() and D_SFTP_GROUP[0] in self.dropin.read_text(),
                 timeout=10, what="the drop-in")
        text = self.dropin.read_text()
        self.assertIn(f"\nMatch Group {SFTP_GROUP}\n", text)
        self.assertIn(f"\nMatch Group {D_SFTP_GROUP[0]}\n", text)
        self.assertIn(f"\nMatch User {D_GHOST}\n", text)
        for name in (D_ALICE[0], D_BOB[0]):
            self.assertEqual(self.sshd_T(name)["disableforwarding"], "yes", name)
        self.assertEqual(self.sshd_T(D_CAROL[0])["disableforwarding"], "no")
        findings = self.audit()
        self.assertTrue(any(f[0] == D_GHOST and f[1] == "unknown-user" and "does not know" in f[2]
                            for f in findings), findings)
        self.assertTrue(any(f[1] == "unlisted-members" and D_SFTP_GROUP[0] in f[2]
                            for f in findings), findings)
        # alice (listed in the group) is audited with sshd -T: no drift
        self.assertFalse([f for f in findings if f[0] in (D_ALICE[0], D_BOB[0])], findings)
        self.assertRegex(w.daemon.log(), rf"server mode: Match User at .*names {D_GHOST}, "
                                         r"which NSS does not know")
        r = w.ctl(SADMIN, "audit")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{D_GHOST}\tunknown-user\t", r.stdout)
        # the name with a backslash as sshd reads it, from the drop-in
        both = D_BOB[0].replace("\\", "\\\\") + "," + D_CAROL[0]   # "\\" in quotes
        self.start(directory_policy(w, self.dropin) + f'Match User "{both}"\n  SftpOnly yes\n')
        wait_for(lambda: D_CAROL[0] in self.dropin.read_text(), timeout=10,
                 what="the drop-in to name carol")
        self.assertIn(f'\nMatch User "{D_BOB[0]},{D_CAROL[0]}"\n', self.dropin.read_text())
        self.assertEqual(self.sshd_T(D_CAROL[0])["disableforwarding"], "yes")

    def test_d3_kernel_places_directory_users_when_it_first_sees_them(self):
        """No drop-in reaches sshd: the kernel alone stops the directory's
        SFTP-only users. alice is found through her group's member list at
        start; bob, whom nothing lists, is found by the kernel: his -R
        listener's first SYN-ACK is dropped and reported, the daemon places
        him, and from then on his sockets carry nothing. carol, a jump-host
        user through a Match User with a blank, is placed the same way: her
        forward to intra:80 works, to intra:9000 it carries nothing. dave,
        unrestricted and named nowhere, is placed when his first SYN is
        dropped, and the one TCP sends again goes through."""
        w = self.w
        if self.dropin.exists():
            self.dropin.unlink()
        w.restart_sshd()
        self.start(directory_policy(w, self.not_included_dropin(), reload=False)
                   + f'Match User "{D_CAROL[0]}"\n  ServerPermitOpen intra:80\n')
        wait_for(lambda: self.uid_in("sftp_only_uids", D_ALICE[1]), timeout=10,
                 what="alice in sftp_only_uids")
        for uid in (D_BOB[1], D_DAVE[1]):
            self.assertFalse(self.uid_in("server_known_uids", uid))
        # carol is named by the policy: placed at start, no need to see her
        self.assertTrue(self.uid_in("jump_uids", D_CAROL[1]))
        self.assertEqual(self.sshd_T(D_BOB[0])["allowtcpforwarding"], "yes")

        # bob's first socket is an -R listener: nothing of his went out before
        rport = free_port(w, hosts=("127.0.0.1",))
        self.ssh_forward(D_BOB[0], "-R", f"127.0.0.1:{rport}:127.0.0.1:9000")
        wait_for(lambda: f":{rport} " in w.run(["ss", "-Hltn"], ns="gateway").stdout,
                 timeout=20, what=f"sshd listening on port {rport} for bob's -R")
        self.assertEqual(echo_through(lambda: w.connect("gateway", "127.0.0.1", rport,
                                                        timeout=5)), b"")
        wait_for(lambda: self.uid_in("sftp_only_uids", D_BOB[1]), timeout=10,
                 what="bob placed as SFTP-only")
        self.assertRegex(w.daemon.log(), rf"uid {D_BOB[1]} \(CORP\\bob\): SFTP-only "
                                         r"\(first seen by the kernel\)")
        self.assertEqual(echo_through(lambda: w.connect("gateway", "127.0.0.1", rport,
                                                        timeout=5)), b"")
        # his -L, and alice's, carry nothing
        for name in (D_BOB[0], D_ALICE[0]):
            lport = free_port(w)
            self.ssh_forward(name, "-L", f"127.0.0.1:{lport}:intra:80")
            self.wait_listening(lport)
            rc, body = self.local_fetch(name, lport)
            self.assertNotEqual(rc, 0, name)
            self.assertNotIn("intranet", body.lower())
        # carol: only her allowed destination
        good, bad = free_port(w), free_port(w)
        self.ssh_forward(D_CAROL[0], "-L", f"127.0.0.1:{good}:intra:80",
                         "-L", f"127.0.0.1:{bad}:intra:9000")
        self.wait_listening(good)
        rc, body = self.local_fetch(D_CAROL[0], good, timeout=15)
        self.assertEqual(rc, 0)
        self.assertEqual(body.encode(), w.intranet_page)
        s = w.connect("client", "127.0.0.1", bad, timeout=10)
        self.assertEqual(echo_through(lambda: s), b"")
        self.assertFalse(self.uid_in("sftp_only_uids", D_CAROL[1]))
        # dave: his first SYN waits for the daemon, then goes through
        lport = free_port(w)
        self.ssh_forward(D_DAVE[0], "-L", f"127.0.0.1:{lport}:intra:80")
        self.wait_listening(lport)
        rc, body = self.local_fetch(D_DAVE[0], lport, timeout=15)
        self.assertEqual(rc, 0)
        self.assertEqual(body.encode(), w.intranet_page)
        self.assertTrue(self.uid_in("server_known_uids", D_DAVE[1]))
        for set_name in ("sftp_only_uids", "jump_uids"):
            self.assertFalse(self.uid_in(set_name, D_DAVE[1]))
        self.assertRegex(w.daemon.log(), rf"uid {D_DAVE[1]} \(dave@corp\): unrestricted "
                                         r"\(first seen by the kernel\)")
        out = w.run(["nft", "list", "counter", "inet", "tunnelgate", "server_unknown_drops"],
                    ns="gateway", check=True).stdout
        self.assertGreater(int(re.search(r"packets (\d+)", out).group(1)), 0)
        # the audit now asks sshd about bob too: it would let him forward
        findings = self.audit()
        self.assertIn((D_BOB[0], "allowtcpforwarding", "yes"), findings)
        self.assertIn((D_ALICE[0], "allowtcpforwarding", "yes"), findings)
        # a reload places him again, without waiting for his next packet
        w.ctl(SADMIN, "reload", check=True)
        self.assertTrue(self.uid_in("sftp_only_uids", D_BOB[1]))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, users, sshd)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

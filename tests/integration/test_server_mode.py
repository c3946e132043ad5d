#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Server mode (issue 6): tunnelgated on the SSH server (the gateway
namespace) makes "no forwarding" hold for SFTP-only users and "only these
destinations" for jump-host users, with the real sshd, ssh and sftp.

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


def setUpModule():
    tgtest.start_module_world(USERS, agents=(), polkit_rules=POLKIT_RULES, daemon=False,
                              groups={SFTP: [SFTP_GROUP], JUMP: [JUMP_GROUP]},
                              sshd_config_extra=BROKEN_SSHD)


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


class ServerModeTest(tgtest.DaemonTestCase):

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

    # -- the tests -------------------------------------------------------------

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
        self.assertIn(f"Match User {SFTP}\n", text)
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
        w.run(["gpasswd", "-a", SFTP2, SFTP_GROUP], check=True)
        try:
            wait_for(in_set, timeout=10, what=f"uid {uid} in sftp_only_uids")
            wait_for(lambda: f"Match User {SFTP2}\n" in self.dropin.read_text(), timeout=10,
                     what="the drop-in to name the new member")
        finally:
            w.run(["gpasswd", "-d", SFTP2, SFTP_GROUP], check=True)
        wait_for(lambda: not in_set(), timeout=10, what=f"uid {uid} out of sftp_only_uids")

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


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, users, sshd)", file=sys.stderr)
        sys.exit(77)
    unittest.main()

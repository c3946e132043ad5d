#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgatectl check-policy: the built binary against the shipped default,
the example policies and broken files made here, asserting exact output.

Needs no root, no bus and no daemon. Environment (set by meson):
TUNNELGATECTL (the binary), TG_SOURCE_ROOT, TG_VERSION."""

import grp
import os
import pwd
import re
import subprocess
import tempfile
import unittest

CTL = os.environ["TUNNELGATECTL"]
SOURCE_ROOT = os.environ["TG_SOURCE_ROOT"]
VERSION = os.environ["TG_VERSION"]
DATA = os.path.join(SOURCE_ROOT, "data")
SHIPPED_DEFAULT = os.path.join(DATA, "policy.conf")
EXAMPLES = os.path.join(DATA, "examples")

# doc/policy.md, in the order of its tables (the order of the dump)
KEYWORDS = [
    "AllowTcpForwarding", "AllowStreamLocalForwarding", "AllowDynamicForwarding",
    "GatewayPorts", "ListenerSources", "ListenerUsers", "PermitOpen", "PermitRemoteOpen",
    "PermitListen", "PermitServer",
    "MaxTunnels", "MaxConnections", "MaxListeners", "MaxBuffered", "MaxPendingCalls",
    "DaemonMaxTunnels", "DaemonMaxListeners", "DaemonMaxConnections", "DaemonMaxBuffered",
    "DaemonMaxPendingCalls", "MaxLifetime", "IdleTimeout", "MaxReconnectAttempts",
    "HostKeyPolicy",
    "EgressLockdown", "SshPorts", "LockdownExempt", "ListenerGuard",
    "ConnectBackPinning", "DetectSshBanner", "LogRejections", "ServerMode",
    "SftpOnly", "ServerPermitOpen", "SshdConfig", "SshdBinary", "SshdDropIn",
    "SshdReload",
]
BUILT_IN_DEFAULTS = [
    "allowtcpforwarding yes",
    "allowstreamlocalforwarding yes",
    "allowdynamicforwarding yes",
    "gatewayports no",
    "listenersources any",
    "listenerusers owner",
    "permitopen any",
    "permitremoteopen any",
    "permitlisten any",
    "permitserver any",
    "maxtunnels 64",
    "maxconnections 2048",
    "maxlisteners 256",
    "maxbuffered 1G",
    "maxpendingcalls 64",
    "daemonmaxtunnels 4096",
    "daemonmaxlisteners 8192",
    "daemonmaxconnections 32768",
    "daemonmaxbuffered 4G",
    "daemonmaxpendingcalls 1024",
    "maxlifetime none",
    "idletimeout none",
    "maxreconnectattempts none",
    "hostkeypolicy known-or-pinned",
    "egresslockdown no",
    "sshports 22",
    "lockdownexempt no",
    "listenerguard yes",
    "connectbackpinning yes",
    "detectsshbanner no",
    "logrejections yes",
    "servermode no",
    "sftponly no",
    "serverpermitopen any",
    "sshdconfig /etc/ssh/sshd_config",
    "sshdbinary /usr/sbin/sshd",
    "sshddropin /etc/ssh/sshd_config.d/00-tunnelgate.conf",
    "sshdreload yes",
]
USAGE_HINT = "tunnelgatectl: try 'tunnelgatectl check-policy --help'"


def run(*args):
    """(exit status, stdout, stderr) of tunnelgatectl ARGS; messages untranslated."""
    env = dict(os.environ, LC_ALL="C.UTF-8")
    result = subprocess.run([CTL, *args], capture_output=True, text=True, env=env,
                            timeout=60)
    return result.returncode, result.stdout, result.stderr


def lines(text):
    return text.splitlines()


def line_of(path, text):
    """1-based number of the first line of PATH that contains TEXT."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} not in {path}")


def policy_examples():
    return sorted(os.path.join(EXAMPLES, name) for name in os.listdir(EXAMPLES)
                  if name.endswith(".conf") and not name.startswith("profile-"))


class Case(unittest.TestCase):
    def setUp(self):
        self._dir = tempfile.TemporaryDirectory(prefix="tg-cli-")
        self.dir = self._dir.name

    def tearDown(self):
        self._dir.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assert_valid(self, *args, stdout=""):
        self.assertEqual(run("check-policy", *args), (0, stdout, ""))

    def assert_error(self, args, message):
        """Exit 1, nothing on stdout, exactly one line on stderr."""
        self.assertEqual(run(*args), (1, "", f"tunnelgatectl: {message}\n"))

    def effective(self, *args):
        """The effective policy as {keyword: line}; no warnings expected."""
        status, out, err = run("check-policy", *args)
        self.assertEqual((status, err), (0, ""))
        dump = lines(out)
        self.assertEqual([line.split()[0] for line in dump],
                         [k.lower() for k in KEYWORDS])
        return {line.split()[0]: line for line in dump}


class ValidFiles(Case):
    def test_shipped_default_is_valid_and_silent(self):
        self.assert_valid(SHIPPED_DEFAULT)
        self.assert_valid("--strict", SHIPPED_DEFAULT)

    def test_examples_are_valid_and_silent(self):
        examples = policy_examples()
        self.assertGreaterEqual(len(examples), 4)
        for path in examples:
            with self.subTest(example=os.path.basename(path)):
                self.assert_valid(path)
                self.assert_valid("--strict", path)

    def test_strict_fails_on_warnings(self):
        path = self.write("repeat.conf", "ServerMode yes\nSshdReload no\n"
                          "SshdReload yes\n")
        status, out, err = run("check-policy", "--strict", path)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(lines(err), [f"tunnelgatectl: warning: {path}:3: SshdReload "
                                      "ignored: already set in this block at line 2"])
        self.assert_valid("--strict", os.path.join(EXAMPLES, "workstation.conf"))

    def test_firewall_keywords_do_not_warn(self):
        path = self.write("firewall.conf", "EgressLockdown yes\nSshPorts 22,2222\n"
                          "ListenerGuard yes\nConnectBackPinning yes\n"
                          "LogRejections no\nListenerSources 192.0.2.1\n"
                          "Match Group neteng\n  LockdownExempt yes\n"
                          "  ListenerSources none\n")
        self.assert_valid("--strict", path)
        path = self.write("banner.conf", "EgressLockdown yes\nDetectSshBanner yes\n")
        self.assert_valid("--strict", path)

    def test_no_keyword_is_reserved(self):
        # every keyword set once (the dump of the built-in defaults): no warning
        every = self.write("every.conf", "".join(f"{line}\n"
                                                 for line in BUILT_IN_DEFAULTS))
        self.assert_valid("--strict", every)
        path = self.write("server.conf", "ServerMode yes\n"
                          "SshdConfig /etc/ssh/sshd_config\n"
                          "SshdBinary /usr/sbin/sshd\n"
                          "SshdDropIn /etc/ssh/sshd_config.d/00-tunnelgate.conf\n"
                          "SshdReload yes\n"
                          "Match Group sftponly\n  SftpOnly yes\n"
                          "Match Group jump\n  ServerPermitOpen intra:80\n"
                          "  ServerPermitOpen 10.20.0.0/16:22\n")
        self.assert_valid("--strict", path)

    def test_repeated_keyword_warns_naming_both_lines(self):
        path = self.write("repeat.conf", "MaxTunnels 2\nMaxTunnels 3\n")
        self.assertEqual(run("check-policy", path), (0, "", (
            f"tunnelgatectl: warning: {path}:2: MaxTunnels ignored: already set in "
            "this block at line 1\n")))
        self.assertEqual(run("check-policy", "--strict", path)[0], 1)

    def test_all_examples_together_in_precedence_order(self):
        examples = policy_examples()
        status, out, _ = run("check-policy", *examples)
        self.assertEqual((status, out), (0, ""))


class BrokenFiles(Case):
    # (file text, line, message): each error must name file and line once
    BROKEN = [
        ("PermitOpen db:5432\nFrobnicate yes\n", 2, "unknown keyword 'Frobnicate'"),
        ("PermitOpen db:5432\nMatch Group dba\n  PermitOpen db:5433\n"
         "  AllowTcpForwarding nope\n", 4,
         "AllowTcpForwarding: invalid value 'nope' (expected yes, all, no, local or "
         "remote)"),
        ("# comment\n\nMatch User alice\n  EgressLockdown yes\n", 4,
         "EgressLockdown is not allowed in a Match block (global only)"),
        ("PermitOpen none db:5432\n", 1,
         "PermitOpen: 'any' and 'none' cannot be combined with other entries in the "
         "same block"),
        ("PermitOpen 10.1.2.3/8:22\n", 1,
         "PermitOpen: invalid value '10.1.2.3/8:22' (host bits set in '10.1.2.3/8' "
         "(the network is 10.0.0.0/8))"),
        ("Match Host gw\n", 1, "unknown Match criterion 'Host' (expected User, Group or "
         "All)"),
        ("MaxLifetime 0\n", 1, "MaxLifetime: invalid value '0' (expected a time such as "
         "90, 30m or 1h30m, not 0, or 'none')"),
        ("\n\nSshdDropIn \"/etc/x\n", 3, "unterminated quote"),
        ("MaxTunnels\n", 1, "MaxTunnels: missing value"),
        ("GatewayPorts yes\nMatch User alice\n  ListenerSources 10.0.0.0/8\n", 3,
         "ListenerSources takes single IP addresses (the firewall's listener sets hold "
         "addresses, not networks): 10.0.0.0/8"),
        ("ServerMode yes\nSshdBinary sbin/sshd\n", 2,
         "SshdBinary: invalid value 'sbin/sshd' (expected an absolute path)"),
        ("SshdConfig\n", 1, "SshdConfig: missing value"),
        ("Match Group sftponly\n  SftpOnly yes\n  SshdConfig /etc/ssh/x\n", 3,
         "SshdConfig is not allowed in a Match block (global only)"),
        ("Match Group jump\n  ServerPermitOpen intra:80\n"
         "  ServerPermitOpen *.intra:22\n", 3,
         "ServerPermitOpen: invalid value '*.intra:22' (the firewall holds addresses: "
         "names, addresses or networks, not wildcards ('any' allows every "
         "destination))"),
    ]

    def test_errors_name_file_and_line(self):
        for i, (text, line, message) in enumerate(self.BROKEN):
            with self.subTest(message=message):
                path = self.write(f"bad{i}.conf", text)
                self.assert_error(["check-policy", path], f"{path}:{line}: {message}")

    def test_error_in_a_later_file_names_that_file(self):
        good = self.write("10-good.conf", "MaxTunnels 2\n")
        bad = self.write("20-bad.conf", "MaxTunnels 2\n\nGatewayPorts maybe\n")
        self.assert_error(["check-policy", good, bad, SHIPPED_DEFAULT],
                          f"{bad}:3: GatewayPorts: invalid value 'maybe' (expected no, "
                          "yes or clientspecified)")

    def test_a_tunnel_profile_is_not_a_policy(self):
        path = os.path.join(EXAMPLES, "profile-intranet-db.conf")
        line = line_of(path, "Description")
        self.assert_error(["check-policy", path],
                          f"{path}:{line}: unknown keyword 'Description'")

    def test_nul_byte(self):
        path = os.path.join(self.dir, "nul.conf")
        with open(path, "wb") as f:
            f.write(b"MaxTunnels 1\nMaxConnections 2\x00\n")
        self.assert_error(["check-policy", path], f"{path}:2: NUL byte")

    def test_named_files_must_exist_and_be_regular(self):
        missing = os.path.join(self.dir, "missing.conf")
        self.assert_error(["check-policy", SHIPPED_DEFAULT, missing],
                          f"{missing}: cannot open: No such file or directory")
        self.assert_error(["check-policy", self.dir], f"{self.dir}: not a regular file")
        fifo = os.path.join(self.dir, "fifo.conf")
        os.mkfifo(fifo)
        self.assert_error(["check-policy", fifo], f"{fifo}: not a regular file")


class Precedence(Case):
    def test_first_file_wins(self):
        a = self.write("a.conf", "MaxTunnels 2\nPermitOpen db:5432\n")
        b = self.write("b.conf", "MaxTunnels 5\nIdleTimeout 1h\n")
        status, out, err = run("check-policy", "--user", "alice", "--groups", "",
                               "--origins", a, b)
        self.assertEqual(status, 0)
        self.assertEqual(lines(err), [f"tunnelgatectl: warning: {b}:1: MaxTunnels "
                                      f"ignored: already set at {a}:1"])
        dump = lines(out)
        self.assertIn(f"maxtunnels 2  # {a}:1", dump)
        self.assertIn(f"permitopen db:5432  # {a}:2", dump)
        self.assertIn(f"idletimeout 3600  # {b}:2", dump)
        self.assertIn("maxconnections 2048  # <default>", dump)

        status, out, err = run("check-policy", "--user", "alice", "--groups", "",
                               "--origins", b, a)
        self.assertEqual(status, 0)
        self.assertEqual(lines(err), [f"tunnelgatectl: warning: {a}:1: MaxTunnels "
                                      f"ignored: already set at {b}:1"])
        self.assertIn(f"maxtunnels 5  # {b}:1", lines(out))

    def test_match_block_of_a_later_file_beats_global_line(self):
        a = self.write("a.conf", "MaxTunnels 2\n")
        b = self.write("b.conf", "Match User alice\n  MaxTunnels 9\n")
        alice = self.effective("--user", "alice", "--groups", "", "--origins", a, b)
        self.assertEqual(alice["maxtunnels"], f"maxtunnels 9  # {b}:2")
        bob = self.effective("--user", "bob", "--groups", "", "--origins", a, b)
        self.assertEqual(bob["maxtunnels"], f"maxtunnels 2  # {a}:1")

    def test_installed_locations(self):
        etc = os.path.join(self.dir, "etc")
        main = self.write("etc/policy.conf", "MaxTunnels 1\nMaxConnections 10\n"
                          "IdleTimeout 1m\nMaxLifetime 1d\n")
        first = self.write("etc/policy.d/10-site.conf", "MaxTunnels 3\n")
        second = self.write("etc/policy.d/50-team.conf", "MaxTunnels 4\nIdleTimeout 5m\n")
        # not drop-ins: hidden, or not *.conf
        self.write("etc/policy.d/.hidden.conf", "Frobnicate yes\n")
        self.write("etc/policy.d/05-old.conf.disabled", "Frobnicate yes\n")
        default = self.write("share/policy.conf", "MaxLifetime 8h\nGatewayPorts yes\n"
                             "MaxConnections 20\n")
        status, out, err = run("check-policy", "--config-dir", etc, "--default",
                               default, "--user", "alice", "--groups", "", "--origins")
        self.assertEqual(status, 0)
        self.assertEqual(lines(err), [
            f"tunnelgatectl: warning: {second}:1: MaxTunnels ignored: already set at "
            f"{first}:1",
            f"tunnelgatectl: warning: {main}:1: MaxTunnels ignored: already set at "
            f"{first}:1",
            f"tunnelgatectl: warning: {main}:3: IdleTimeout ignored: already set at "
            f"{second}:2",
            f"tunnelgatectl: warning: {default}:1: MaxLifetime ignored: already set at "
            f"{main}:4",
            f"tunnelgatectl: warning: {default}:3: MaxConnections ignored: already set "
            f"at {main}:2",
        ])
        dump = lines(out)
        self.assertIn(f"maxtunnels 3  # {first}:1", dump)
        self.assertIn(f"idletimeout 300  # {second}:2", dump)
        self.assertIn(f"maxconnections 10  # {main}:2", dump)
        self.assertIn(f"maxlifetime 86400  # {main}:4", dump)
        self.assertIn(f"gatewayports yes  # {default}:2", dump)
        self.assertIn("permitopen any  # <default>", dump)
        # tunnelgated's name for --default
        self.assertEqual(run("check-policy", "--config-dir", etc, "--default-policy",
                             default, "--user", "alice", "--groups", "", "--origins"),
                         (status, out, err))

    def test_installed_locations_broken_drop_in(self):
        etc = os.path.join(self.dir, "etc")
        self.write("etc/policy.conf", "MaxTunnels 1\n")
        bad = self.write("etc/policy.d/20-bad.conf", "\nPermitListen 70000\n")
        status, out, err = run("check-policy", "--config-dir", etc, "--default",
                               SHIPPED_DEFAULT)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(lines(err)), 1)
        self.assertTrue(err.startswith(f"tunnelgatectl: {bad}:2: PermitListen: "
                                       "invalid value '70000'"), err)

    def test_installed_locations_dangling_drop_in(self):
        etc = os.path.join(self.dir, "etc")
        os.makedirs(os.path.join(etc, "policy.d"))
        link = os.path.join(etc, "policy.d", "30-gone.conf")
        os.symlink("nowhere.conf", link)
        self.assert_error(["check-policy", "--config-dir", etc, "--default",
                           SHIPPED_DEFAULT],
                          f"{link}: cannot open: No such file or directory")

    def test_installed_locations_may_be_missing(self):
        etc = os.path.join(self.dir, "etc")
        os.makedirs(etc)
        self.assert_valid("--config-dir", etc, "--default", SHIPPED_DEFAULT)
        dump = self.effective("--config-dir", etc, "--default", SHIPPED_DEFAULT,
                              "--user", "alice", "--groups", "")
        self.assertEqual(list(dump.values()), BUILT_IN_DEFAULTS)

    def test_named_config_dir_and_default_must_exist(self):
        missing = os.path.join(self.dir, "missing")
        self.assert_error(["check-policy", "--config-dir", missing, "--default",
                           SHIPPED_DEFAULT], f"{missing}: No such file or directory")
        self.assert_error(["check-policy", "--config-dir", self.dir, "--default",
                           missing], f"{missing}: No such file or directory")


class EffectivePolicy(Case):
    def test_shipped_default_is_the_built_in_defaults(self):
        status, out, err = run("check-policy", "--user", "alice", "--groups", "",
                               SHIPPED_DEFAULT)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(lines(out), BUILT_IN_DEFAULTS)
        empty = self.write("empty.conf", "")
        self.assert_valid("--user", "alice", "--groups", "", empty, stdout=out)
        status, out, err = run("check-policy", "--user", "alice", "--groups", "",
                               "--origins", SHIPPED_DEFAULT)
        self.assertEqual(lines(out), [f"{line}  # <default>"
                                      for line in BUILT_IN_DEFAULTS])

    def test_shipped_default_comments_show_the_built_in_defaults(self):
        # every "#Keyword value" line of data/policy.conf, as the dump prints it
        shown = []
        with open(SHIPPED_DEFAULT, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"^#([A-Z][A-Za-z]+) (\S.*)$", line.rstrip("\n"))
                if m and m.group(1) in KEYWORDS:
                    shown.append(f"{m.group(1).lower()} {m.group(2)}")
        self.assertEqual(shown, BUILT_IN_DEFAULTS)

    def test_match_group_override(self):
        path = self.write("groups.conf", """\
AllowTcpForwarding no
PermitOpen none
MaxTunnels 1

Match Group dba,!contractors
  AllowTcpForwarding local
  PermitOpen db1.corp:5432
  PermitOpen 10.50.0.0/24:5432
  MaxTunnels 3

Match Group ops
  MaxTunnels 5
  GatewayPorts clientspecified
""")
        dba = self.effective("--user", "alice", "--groups", "staff,dba", "--origins",
                             path)
        self.assertEqual(dba["allowtcpforwarding"],
                         f"allowtcpforwarding local  # {path}:6")
        self.assertEqual(dba["permitopen"],
                         f"permitopen db1.corp:5432 10.50.0.0/24:5432  # {path}:7")
        self.assertEqual(dba["maxtunnels"], f"maxtunnels 3  # {path}:9")
        self.assertEqual(dba["gatewayports"], "gatewayports no  # <default>")

        # the first matching block that sets a keyword wins
        both = self.effective("--user", "alice", "--groups", "ops,dba", "--origins",
                              path)
        self.assertEqual(both["maxtunnels"], f"maxtunnels 3  # {path}:9")
        self.assertEqual(both["gatewayports"],
                         f"gatewayports clientspecified  # {path}:13")

        # a negated group excludes; then the global lines apply
        for groups in ("staff", "dba,contractors", ""):
            with self.subTest(groups=groups):
                other = self.effective("--user", "alice", "--groups", groups,
                                       "--origins", path)
                self.assertEqual(other["allowtcpforwarding"],
                                 f"allowtcpforwarding no  # {path}:1")
                self.assertEqual(other["permitopen"], f"permitopen none  # {path}:2")
                self.assertEqual(other["maxtunnels"], f"maxtunnels 1  # {path}:3")

    def test_example_enterprise_lockdown(self):
        path = os.path.join(EXAMPLES, "enterprise-lockdown.conf")
        status, out, _ = run("check-policy", "--user", "dora", "--groups", "dba",
                             "--origins", path)
        self.assertEqual(status, 0)
        dump = lines(out)
        first = line_of(path, "PermitOpen db1.corp.example.com:5432")
        self.assertIn("permitopen db1.corp.example.com:5432 db2.corp.example.com:5432 "
                      f"10.50.0.0/24:5432  # {path}:{first}", dump)
        self.assertIn(f"maxlifetime 28800  # {path}:{line_of(path, 'MaxLifetime 8h')}",
                      dump)
        self.assertIn(f"egresslockdown yes  # {path}:"
                      f"{line_of(path, 'EgressLockdown yes')}", dump)

        status, out, _ = run("check-policy", "--user", "carl", "--groups",
                             "dba,contractors", path)
        self.assertEqual(status, 0)
        self.assertIn("permitopen none", lines(out))
        self.assertIn("maxtunnels 0", lines(out))

    def test_example_server_mode(self):
        sftp = os.path.join(EXAMPLES, "sftp-only-server.conf")
        sam = self.effective("--user", "sam", "--groups", "users,sftponly", "--origins",
                             sftp)
        self.assertEqual(sam["sftponly"],
                         f"sftponly yes  # {sftp}:{line_of(sftp, '  SftpOnly yes')}")
        self.assertEqual(sam["servermode"],
                         f"servermode yes  # {sftp}:{line_of(sftp, 'ServerMode yes')}")
        self.assertEqual(sam["sshdconfig"], f"sshdconfig /etc/ssh/sshd_config  # {sftp}:"
                         f"{line_of(sftp, 'SshdConfig ')}")
        self.assertEqual(sam["serverpermitopen"], "serverpermitopen any  # <default>")
        web = self.effective("--user", "web", "--groups", "users", sftp)
        self.assertEqual(web["sftponly"], "sftponly no")

        jump = os.path.join(EXAMPLES, "jump-host.conf")
        first = line_of(jump, "ServerPermitOpen 10.20.0.0/16:22")
        op = self.effective("--user", "op", "--groups", "staff,operators", "--origins",
                            jump)
        self.assertEqual(op["serverpermitopen"], "serverpermitopen 10.20.0.0/16:22 "
                         "10.20.0.0/16:443 bastion.internal.example.com:22  "
                         f"# {jump}:{first}")
        # contractors come first: a contractor who is an operator too
        both = self.effective("--user", "c", "--groups", "operators,contractors", jump)
        self.assertEqual(both["serverpermitopen"], "serverpermitopen "
                         "app1.internal.example.com:22 app2.internal.example.com:22")
        nobody = self.effective("--user", "j", "--groups", "jump", jump)
        self.assertEqual(nobody["serverpermitopen"], "serverpermitopen none")
        other = self.effective("--user", "joe", "--groups", "", jump)
        self.assertEqual(other["serverpermitopen"], "serverpermitopen any")
        self.assertEqual(other["sftponly"], "sftponly no")

    def test_match_user(self):
        path = self.write("users.conf", "Match User a*,!admin\n  PermitServer gw:22 "
                          "10.0.0.0/8\n")
        self.assertEqual(self.effective("--user", "alice", "--groups", "", path)
                         ["permitserver"], "permitserver gw:22 10.0.0.0/8")
        self.assertEqual(self.effective("--user", "admin", "--groups", "", path)
                         ["permitserver"], "permitserver any")

    def test_dump_is_a_policy_meaning_the_same(self):
        for path in policy_examples():
            for groups in ("", "dba", "operators", "oncall", "sysadmin", "neteng",
                           "sftponly", "jump,developers", "contractors"):
                with self.subTest(example=os.path.basename(path), groups=groups):
                    args = ["check-policy", "--user", "u", "--groups", groups]
                    status, dump, _ = run(*args, path)
                    self.assertEqual(status, 0)
                    again = self.write("dump.conf", dump)
                    status, out, _ = run(*args, again)
                    self.assertEqual((status, out), (0, dump))

    def test_groups_from_nss(self):
        me = pwd.getpwuid(os.getuid())
        primary = grp.getgrgid(me.pw_gid).gr_name
        path = self.write("nss.conf", f"Match Group {primary}\n  MaxTunnels 7\n"
                          f"Match User {me.pw_name}\n  MaxConnections 70\n")
        by_name = self.effective("--user", me.pw_name, "--origins", path)
        self.assertEqual(by_name["maxtunnels"], f"maxtunnels 7  # {path}:2")
        self.assertEqual(by_name["maxconnections"], f"maxconnections 70  # {path}:4")
        by_uid = self.effective("--uid", str(os.getuid()), "--origins", path)
        self.assertEqual(by_uid, by_name)
        # --groups replaces what NSS says; the name still comes from NSS
        by_uid = self.effective("--uid", str(os.getuid()), "--groups", "", path)
        self.assertEqual(by_uid["maxtunnels"], "maxtunnels 64")
        self.assertEqual(by_uid["maxconnections"], "maxconnections 70")

    def test_unknown_user(self):
        self.assert_error(["check-policy", "--user", "tg-no-such-user",
                           SHIPPED_DEFAULT], "unknown user 'tg-no-such-user'")
        uid = 4294967290
        while True:
            try:
                pwd.getpwuid(uid)
                uid -= 1
            except KeyError:
                break
        self.assert_error(["check-policy", "--uid", str(uid), SHIPPED_DEFAULT],
                          f"No user with uid {uid}")

    def test_a_broken_policy_prints_no_dump(self):
        path = self.write("bad.conf", "MaxTunnels many\n")
        self.assert_error(["check-policy", "--user", "alice", "--groups", "", path],
                          f"{path}:1: MaxTunnels: invalid value 'many' (expected a "
                          "number from 0 to 4294967295 or 'none')")


class Usage(Case):
    def assert_usage_error(self, args, message):
        self.assertEqual(run(*args), (1, "", f"tunnelgatectl: {message}\n"
                                             f"{USAGE_HINT}\n"))

    def test_bad_combinations(self):
        d = SHIPPED_DEFAULT
        cases = [
            (["--config-dir", self.dir, d], "--config-dir and --default choose the "
             "installed files; they cannot be combined with FILE arguments"),
            (["--default", d, d], "--config-dir and --default choose the installed "
             "files; they cannot be combined with FILE arguments"),
            (["--user", "a", "--uid", "0", d], "--user and --uid cannot be combined"),
            (["--user", "", d], "--user needs a user name"),
            (["--groups", "a", d], "--groups needs --user or --uid"),
            (["--origins", d], "--origins needs --user or --uid"),
            (["--bogus", d], "Unknown option --bogus"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assert_usage_error(["check-policy", *args], message)

    def test_bad_values(self):
        d = SHIPPED_DEFAULT
        for uid in ("-1", "4294967295", "abc", "1e3", ""):
            with self.subTest(uid=uid):
                self.assert_error(["check-policy", "--uid", uid, d],
                                  f"--uid: '{uid}' is not a user ID")
        self.assert_error(["check-policy", "--user", "a", "--groups", "a,,b", d],
                          "--groups: empty group name in 'a,,b'")

    def test_verbs(self):
        self.assertEqual(run(), (1, "", "tunnelgatectl: no verb given; try "
                                        "'tunnelgatectl --help'\n"))
        self.assertEqual(run("frobnicate"), (1, "", "tunnelgatectl: unknown verb "
                                             "'frobnicate'; try 'tunnelgatectl "
                                             "--help'\n"))
        self.assertEqual(run("--bogus", "check-policy"), (
            1, "", "tunnelgatectl: Unknown option --bogus\n"
                   "tunnelgatectl: try 'tunnelgatectl --help'\n"))

    def test_version(self):
        self.assertEqual(run("--version"), (0, f"tunnelgatectl {VERSION}\n", ""))

    def test_help(self):
        status, out, err = run("--help")
        self.assertEqual((status, err), (0, ""))
        out = lines(out)
        self.assertIn("  check-policy [FILE…]", out)
        for line in ["Exit status:", "  0  success",
                     "  1  invalid policy, bad usage, or an unknown user",
                     "  2  the daemon could not be reached, or it returned an error"]:
            self.assertIn(line, out)

        status, out, err = run("check-policy", "--help")
        self.assertEqual((status, err), (0, ""))
        for option in ["--config-dir=DIR", "--default=FILE", "--user=NAME", "--uid=UID",
                       "--groups=GROUP", "--origins", "--strict"]:
            self.assertIn(option, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgated's own command line, without root, bus or network:
--version, --help, and --check-config (every policy file and profile read
and reported, nothing started; exit 0 valid, 1 not, naming file and line)."""

import os
import shutil
import subprocess
import tempfile
import unittest

DAEMON = os.environ["TUNNELGATED"]
SOURCE = os.environ["TG_SOURCE_ROOT"]
VERSION = os.environ["TG_VERSION"]
EXAMPLES = os.path.join(SOURCE, "data", "examples")


def run(*args):
    r = subprocess.run([DAEMON, *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


class DaemonOptionsTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tg-daemon-options-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.default = os.path.join(SOURCE, "data", "policy.conf")

    def write(self, relative, text):
        path = os.path.join(self.dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self):
        return run("--check-config", "--config-dir", self.dir, "--default-policy",
                   self.default)

    def test_version_and_help(self):
        self.assertEqual(run("--version"), (0, f"tunnelgated {VERSION}\n", ""))
        status, out, _ = run("--help")
        self.assertEqual(status, 0)
        for option in ("--bus-address", "--config-dir", "--state-dir", "--check-config",
                       "--default-policy", "--version"):
            self.assertIn(option, out)
        status, _, err = run("--no-such-option")
        self.assertEqual(status, 1)
        self.assertIn("no-such-option", err)

    def test_check_config_valid(self):
        main = self.write("policy.conf", "MaxTunnels 3\n")
        dropin = self.write("policy.d/10-lockdown.conf",
                            open(os.path.join(EXAMPLES, "enterprise-lockdown.conf")).read())
        self.write("profiles.d/intranet-db.conf",
                   open(os.path.join(EXAMPLES, "profile-intranet-db.conf")).read())
        status, out, err = self.check()
        self.assertEqual(status, 0, err)
        self.assertEqual(out.splitlines(), [
            f"policy file {dropin}: valid",
            f"policy file {main}: valid",
            f"policy file {self.default}: valid",
            "profile intranet-db: valid",
        ])

    def test_check_config_broken_policy(self):
        path = self.write("policy.conf", "MaxTunnels 3\nAllowTcpForwarding sometimes\n")
        status, out, err = self.check()
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertIn(f"{path}:2", err)
        self.assertIn("AllowTcpForwarding", err)

    def test_check_config_broken_profile(self):
        self.write("policy.conf", "MaxTunnels 3\n")
        self.write("profiles.d/good.conf",
                   open(os.path.join(EXAMPLES, "profile-intranet-db.conf")).read())
        self.write("profiles.d/bad.conf", "Server\n")
        status, out, err = self.check()
        self.assertEqual(status, 1)
        self.assertIn("profile good: valid", out)
        self.assertIn("profile bad:", err)


if __name__ == "__main__":
    unittest.main()

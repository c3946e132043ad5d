#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test world's private system bus (dbus-daemon with the project's bus
policy) and the real polkitd with the project's actions and the test rules
(BusMixin).
"""

import glob
import os
import re
import shutil
import subprocess
import time

import busclient
from world_base import (HERE, HOST_ACTIONS_DIR, POLKIT_BUS_NAME, POLKIT_BUS_POLICY, POLKITD,
                        PYTHON, WorldError, _readline_timeout)

LOGIN1_BUS_NAME = "org.freedesktop.login1"


class FakeLogin1:
    """A running fake_login1.py (World.start_fake_login1()): org.freedesktop.login1
    on the private bus, driven through its stdin.

    sleep() / resume() emit PrepareForSleep(true/false); inhibitors() is how many
    inhibitor fds handed out are still open; inhibitor_list() their details
    (what, who, why, mode, sender, uid, pid); wait_inhibitors(n) waits until
    that many are open; refuse(True) makes Inhibit fail; stop() ends it (the
    name leaves the bus). .unique_name is its bus connection's name.
    """

    def __init__(self, proc, unique_name):
        self.proc = proc
        self.unique_name = unique_name

    def command(self, line, timeout=10.0):
        """Send one command; returns the lines it printed before "ok"."""
        if not self.proc.alive():
            raise WorldError(f"fake_login1 is not running:\n{self.proc.log(tail=40)}")
        self.proc.popen.stdin.write(f"{line}\n".encode())
        self.proc.popen.stdin.flush()
        out = []
        while True:
            got = _readline_timeout(self.proc.popen.stdout, timeout)
            if not got.endswith(b"\n"):
                raise WorldError(f"fake_login1 did not answer {line!r}:\n"
                                 f"{self.proc.log(tail=40)}")
            text = got.decode().rstrip("\n")
            if text == "ok":
                return out
            if text.startswith("error "):
                raise WorldError(f"fake_login1: {text[6:]}")
            out.append(text)

    def sleep(self):
        self.command("sleep")

    def resume(self):
        self.command("resume")

    def inhibitors(self):
        return int(self.command("inhibitors?")[0])

    def inhibitor_list(self):
        import json
        return [json.loads(line) for line in self.command("list")]

    def wait_inhibitors(self, n, timeout=10.0):
        """Wait until exactly n inhibitors are open; returns how long it took (s)."""
        start = time.monotonic()
        while True:
            have = self.inhibitors()
            if have == n:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise WorldError(f"fake_login1: {have} inhibitors open, not {n}, "
                                 f"after {timeout}s:\n{self.proc.log(tail=40)}")
            time.sleep(0.02)

    def refuse(self, on=True):
        self.command("refuse on" if on else "refuse off")

    def alive(self):
        return self.proc.alive()

    def stop(self):
        return self.proc.stop()


class BusMixin:
    """World's bus and polkitd: bus_config(), bus_connection(), set_polkit_rules(),
    restore_polkit_rules(), polkit_check()."""

    # -- private system bus --------------------------------------------------------

    def bus_config(self, listen):
        """The dbus-daemon configuration: Debian's system.conf minus activation,
        syslog, pidfile, <user> and the system.d include directories, plus exactly
        the project's and polkit's bus policy files, and root's right to own and
        call org.freedesktop.login1 (for fake_login1.py)."""
        return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- private system bus of the tunnelgate test world {self.id}
     (after /usr/share/dbus-1/system.conf) -->
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>{listen}</listen>

  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus" />
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Containers1"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>

  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>

  <!-- fake_login1.py (start_fake_login1) stands in for systemd-logind: as
       logind's own bus policy has it, root may own its name and call it -->
  <policy user="root">
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>

  <include>{POLKIT_BUS_POLICY}</include>
  <include>{self.bus_policy}</include>
</busconfig>
"""

    def _start_bus(self):
        sock = self.dir / "bus" / "system_bus_socket"
        conf = self.dir / "bus" / "system.conf"
        conf.write_text(self.bus_config(f"unix:path={sock}"))
        p = self.spawn(["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
                       name="dbus-daemon", stdout=subprocess.PIPE)
        line = _readline_timeout(p.popen.stdout, 10.0)
        if not line:
            raise WorldError(f"dbus-daemon did not print its address:\n{p.log()}")
        self.bus_address = line.decode().strip()
        self.bus_socket = sock

    def bus_connection(self, timeout=25.0):
        """A new busclient.Connection to the private bus, as root (close it when done)."""
        return busclient.Connection(self.bus_address, timeout=timeout)

    # -- logind (a stand-in) -----------------------------------------------------------

    def start_fake_login1(self, timeout=10.0):
        """Start fake_login1.py as root: org.freedesktop.login1 on the private bus
        (its log: logs/fake_login1.log). Returns a FakeLogin1 once it owns the name."""
        p = self.spawn([PYTHON, "-u", HERE / "fake_login1.py"], name="fake_login1",
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = _readline_timeout(p.popen.stdout, timeout).decode()
        if not line.startswith("ready "):
            p.stop()
            raise WorldError(f"fake_login1 did not start:\n{p.log(tail=40)}")
        return FakeLogin1(p, line.split()[1])

    # -- polkitd -----------------------------------------------------------------------

    def _start_polkit(self):
        pk = self.dir / "polkit"
        actions, rules, empty = pk / "actions", pk / "rules.d", pk / "empty"
        for d in (actions, rules, empty):
            d.mkdir()
            os.chmod(d, 0o755)
        for f in glob.glob(os.path.join(HOST_ACTIONS_DIR, "*.policy")):
            if os.path.basename(f) != self.polkit_policy.name:
                shutil.copy(f, actions)
        shutil.copy(self.polkit_policy, actions / self.polkit_policy.name)
        shutil.copy(self.polkit_rules, rules / self.polkit_rules.name)
        for f in list(actions.iterdir()) + list(rules.iterdir()):
            os.chmod(f, 0o644)
        self.polkit_rules_dir = rules
        # polkitd 122 starts as root and switches to the "polkitd" user itself
        # ("Successfully changed to user polkitd"). It reads actions only from
        # /usr/share/polkit-1/actions and rules from /etc/polkit-1/rules.d and
        # /usr/share/polkit-1/rules.d: replace those three in a private mount
        # namespace so that the host's files are neither used nor modified.
        script = ('set -e; mount --bind "$1" /usr/share/polkit-1/actions; '
                  'mount --bind "$2" /etc/polkit-1/rules.d; '
                  'mount --bind "$3" /usr/share/polkit-1/rules.d; '
                  'exec "$4"')
        p = self.spawn(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                        "polkitd-world", actions, rules, empty, POLKITD],
                       name="polkitd")

        def wait():
            with self.bus_connection() as bus:
                if not bus.wait_for_name(POLKIT_BUS_NAME, timeout=10.0, alive=p.alive):
                    raise WorldError(f"polkitd did not appear on the bus:\n{p.log()}")
        return wait

    def set_polkit_rules(self, text, name=None, timeout=10.0):
        """Replace the test rules with `text` (JavaScript) and wait until polkitd reloaded."""
        p = self.proc("polkitd")
        before = len(re.findall(r"Finished loading", p.log()))
        target = self.polkit_rules_dir / (name or self.polkit_rules.name)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        deadline = time.monotonic() + timeout
        while len(re.findall(r"Finished loading", p.log())) <= before:
            if time.monotonic() > deadline:
                raise WorldError(f"polkitd did not reload its rules:\n{p.log(tail=40)}")
            time.sleep(0.02)

    def restore_polkit_rules(self):
        for f in self.polkit_rules_dir.iterdir():
            if f.name != self.polkit_rules.name:
                f.unlink()
        self.set_polkit_rules(self.polkit_rules.read_text())

    def polkit_check(self, user, action, subject="self", flags=0, details=None, ns="client"):
        """CheckAuthorization run by a process of `user` connected to the private bus.

        subject='self': the system-bus-name of that process's own connection (as
        tunnelgated will use it); 'pid': a unix-process subject for its pid.
        Returns (authorized, challenge, details).
        """
        import json
        argv = [PYTHON, self.dbus_tool, "check-auth", action, "--subject", subject,
                "--flags", str(flags)]
        for k, v in (details or {}).items():
            argv += ["--detail", f"{k}={v}"]
        r = self.run(argv, ns=ns, user=user, timeout=30)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            raise WorldError(f"busclient check-auth failed: {r.stdout}{r.stderr}") from None
        if "error" in out:
            raise busclient.DBusError(out["error"], out.get("message", ""))
        return out["authorized"], out["challenge"], out["details"]


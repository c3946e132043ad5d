#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The README's main job: scripts/demo.py, run once against the build tree.

Runs `/usr/bin/python3 scripts/demo.py --build-root $TG_BUILD_ROOT` the way
scripts/demo does (without installing or building; without --stay it runs
every step once and exits), with stdin closed, and checks that it really
worked:

  * exit status 0 and "Demo succeeded", nothing on stderr from a failed cleanup;
  * every step's "== ..." header, in order;
  * direct access from the client to the intranet failed;
  * busctl OpenTunnel answered with a tunnel object that is "up" and listens on
    127.0.0.1:8080, owned by the demo user;
  * the intranet page of THIS demo's world (it names the world, tg-<pid>-...)
    was printed after the curl through the tunnel, the counters saw bytes,
    Close() answered, and the daemon logged the tunnel closing;
  * nothing is left behind: no namespaces or /etc/netns entries of the world,
    no world directory in /tmp, no demo rules directory, no tunnelgated or other
    process of the world (its TG_WORLD environment or directory), no process
    of the demo user's uid, no user or group tg-demo and no home directory, and
    the group "tunnelgate" exists afterwards only if it existed before.

Users: ONLY tg-demo (made and removed by demo.py itself).

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_demo.py -v
(exits 77 = skipped when not root).
"""

import glob
import grp
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True        # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402

DEMO_USER = "tg-demo"                 # demo.py's DEMO_USER
DEMO_GROUP = "tunnelgate"             # the group the example polkit rules allow
DEMO_TIMEOUT = 240

# The step headers demo.py prints, in order.
STEPS = [
    "Building the world: namespaces, private system bus, polkitd, sshd, intranet",
    "The client has no route to the intranet: direct access fails",
    "Starting tunnelgated (root) on the private system bus",
    f"{DEMO_USER} starts an ssh-agent holding their key",
    f"{DEMO_USER} asks tunnelgated for a local forward, with plain busctl",
    "The tunnel object: state and the listener it bound",
    "Fetching the intranet page through the tunnel",
    "Counters and the list of tunnels",
    "Closing the tunnel",
    "The daemon's journal events",
    "Removing the world",
]


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def sections(out):
    """{step header: its text} of demo.py's output, and the headers in order."""
    order, body, current = [], {}, None
    for line in out.splitlines():
        m = re.fullmatch(r"== (.*)", line)
        if m:
            current = m.group(1)
            order.append(current)
            body[current] = ""
        elif current is not None:
            body[current] += line + "\n"
    return order, body


class DemoTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        src = world.source_root()
        cls.demo = src / "scripts" / "demo.py"
        cls.build = world.build_root()
        cls.group_before = group_exists(DEMO_GROUP)
        cls.rules_before = set(glob.glob("/tmp/tg-demo-rules-*"))
        env = {k: v for k, v in os.environ.items() if k != "TG_KEEP_WORLD"}
        env.update(TG_SOURCE_ROOT=str(src), TG_BUILD_ROOT=str(cls.build))
        t0 = time.monotonic()
        p = subprocess.Popen(["/usr/bin/python3", str(cls.demo), "--build-root", str(cls.build)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=str(src),
                             start_new_session=True)
        cls.pid = p.pid                     # the world's id is tg-<this pid>-...
        try:
            cls.out, cls.err = p.communicate(timeout=DEMO_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)        # demo.py's world cleans up on SIGTERM
            try:
                cls.out, cls.err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                cls.out, cls.err = p.communicate()
            cls.out += f"\n[test: demo.py did not finish within {DEMO_TIMEOUT}s; killed]\n"
        cls.rc = p.returncode
        cls.seconds = time.monotonic() - t0
        print(f"\ndemo.py (pid {cls.pid}) exited with {cls.rc} after {cls.seconds:.1f}s",
              file=sys.stderr)
        cls.order, cls.body = sections(cls.out)
        m = re.search(rf"<p>world (tg-{cls.pid}-[A-Za-z0-9_]+)</p>", cls.out)
        cls.world_id = m.group(1) if m else None
        m = re.search(r"^u (\d+)$", cls.out, re.M)            # the tunnel's Owner
        cls.demo_uid = int(m.group(1)) if m else None
        m = re.search(r"^tunnelgated pid (\d+) owns", cls.out, re.M)
        cls.daemon_pid = int(m.group(1)) if m else None

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        r = result if result is not None else out
        if r is not None and len(r.failures) + len(r.errors) > before:
            print(f"--- demo.py stdout ---\n{self.out}--- demo.py stderr ---\n{self.err}",
                  file=sys.stderr)
        return out

    def test_exit_status_and_verdict(self):
        self.assertEqual(self.rc, 0)
        self.assertIn("Demo succeeded: the intranet page came through tunnelgated.", self.out)
        self.assertNotIn("FAILED", self.out)
        self.assertNotIn("world cleanup", self.err)
        self.assertNotIn("Traceback", self.err)

    def test_every_step_printed_in_order(self):
        self.assertEqual(self.order, STEPS)
        self.assertNotIn("\033[", self.out)         # no colours when not on a terminal

    def test_direct_access_fails(self):
        text = self.body.get(STEPS[1], "")
        self.assertIn(f"[{DEMO_USER}]$ curl", text)
        self.assertRegex(text, r"curl: \(\d+\)")
        self.assertNotIn("tunnelgate intranet page", text)

    def test_tunnel_opened_with_busctl(self):
        text = self.body.get(STEPS[4], "")
        self.assertIn(f"[{DEMO_USER}]$ busctl call {world.BUS_NAME} {world.MANAGER_PATH} "
                      f"{world.MANAGER_IFACE} OpenTunnel", text)
        self.assertRegex(text, r'(?m)^o "/org/tunnelgate/TunnelGate1/tunnel/\d+"$')
        text = self.body.get(STEPS[5], "")
        self.assertIn('s "up"', text)
        self.assertIn(f's "{DEMO_USER}@gw:22"', text)
        self.assertIn('a(ssq) 1 "L 127.0.0.1:8080:intra:80" "127.0.0.1" 8080', text)
        self.assertIsNotNone(self.demo_uid, "no Owner printed")

    def test_page_came_through_the_tunnel(self):
        text = self.body.get(STEPS[6], "")
        self.assertIn(f"[{DEMO_USER}]$ curl -sS --max-time 5 http://127.0.0.1:8080/", text)
        self.assertIn("<title>tunnelgate intranet</title>", text)
        self.assertIn("<h1>tunnelgate intranet page</h1>", text)
        self.assertIsNotNone(self.world_id, "the page does not name this demo's world")
        self.assertIn(f"<p>world {self.world_id}</p>", text)
        # the daemon counted the bytes, and relayed exactly one connection
        text = self.body.get(STEPS[7], "")
        sent, received, conns = (int(x) for x in re.findall(r"(?m)^t (\d+)$", text))
        self.assertGreater(sent, 0)
        self.assertGreater(received, len("<h1>tunnelgate intranet page</h1>"))
        self.assertEqual(conns, 1)
        # closed by the user, and the daemon said so
        self.assertIn("closed\n", self.body.get(STEPS[8], ""))
        events = self.body.get(STEPS[9], "")
        self.assertRegex(events, rf"tunnel \d+ of {DEMO_USER} to {DEMO_USER}@gw:22 is up")
        self.assertRegex(events, r"connection from 127\.0\.0\.1 port \d+ to intra port 80 ended")
        self.assertRegex(events, rf"tunnel \d+ of {DEMO_USER} to {DEMO_USER}@gw:22 closed")

    def test_nothing_left_behind(self):
        # (also when the demo failed: the world's names all start with tg-<its pid>-)
        prefix = f"tg-{self.pid}-"
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        self.assertEqual([line for line in listed.splitlines() if line.startswith(prefix)], [])
        self.assertEqual(glob.glob(f"/run/netns/{prefix}*"), [])
        self.assertEqual(glob.glob(f"/etc/netns/{prefix}*"), [])
        self.assertEqual(glob.glob(f"/tmp/{prefix}*"), [])
        self.assertEqual(set(glob.glob("/tmp/tg-demo-rules-*")) - self.rules_before, set())
        # tunnelgated, sshd, polkitd, ...
        self.assertEqual(world.world_processes(prefix, f"/tmp/{prefix}", prefix=True), {})
        if self.daemon_pid is not None:
            cmd = world._read(f"/proc/{self.daemon_pid}/cmdline")
            self.assertNotIn("tunnelgated", cmd, f"tunnelgated pid {self.daemon_pid} still runs")
        self.assertFalse(user_exists(DEMO_USER), f"user {DEMO_USER} left behind")
        self.assertFalse(group_exists(DEMO_USER), f"group {DEMO_USER} left behind")
        self.assertFalse(os.path.exists(f"/home/{DEMO_USER}"))
        if self.demo_uid is not None:
            try:
                pwd.getpwuid(self.demo_uid)     # the uid given to someone else since? then
            except KeyError:                    # its processes are not the demo's
                self.assertEqual(world._uids_processes(self.demo_uid), [])
        self.assertEqual(group_exists(DEMO_GROUP), self.group_before,
                         f"group {DEMO_GROUP} was {'removed' if self.group_before else 'left'}")


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

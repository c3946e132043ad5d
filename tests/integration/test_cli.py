#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgatectl against the running daemon (issue 7): every verb that talks
to tunnelgated, run as the normal users tg-cli and tg-cli2 and as the
administrator tg-cliadmin, in the test world (world.py): a private system bus,
the real polkitd, sshd and namespaces.

  * open (ssh-agent passed as a descriptor, --identity, --no-wait, --json,
    -L/-D, @profile), list (table and --json), show (human units, local ISO
    8601 times, --json), close (by Id and by object path), watch (state
    changes and counters, --count), forward add/remove, check, reload, and
    the admin's firewall and audit;
  * data flows through a tunnel the CLI opened (curl to the intranet page);
  * the agent's socket need not be reachable by root: tunnelgatectl runs in
    a mount namespace of its own where the socket is, the daemon cannot see
    the path, and the tunnel comes up with the descriptor;
  * exit statuses and messages: denials name the policy file:line or the
    polkit action; tg-cli2 cannot close tg-cli's tunnel;
  * --help for every verb; the bash completion.

Users: ONLY tg-cli, tg-cli2 and tg-cliadmin (other test files run at the same
time with other names).

Run as root: TG_BUILD_ROOT=build /usr/bin/python3 tests/integration/test_cli.py -v
(exits 77 = skipped when not root).
"""

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tgtest  # noqa: E402
import world  # noqa: E402
from tgtest import (BUS, MPATH, MIFACE, BUSCTL_TIMEOUT, can_listen, daemon_listeners,  # noqa: E402
                    free_port, wait_for)

CLI, CLI2, ADMIN = "tg-cli", "tg-cli2", "tg-cliadmin"
USERS = (CLI, CLI2, ADMIN)
VERBS = ("open", "close", "list", "show", "watch", "forward", "check", "reload",
         "check-policy", "firewall", "audit")

# tg-cliadmin may do everything; tg-cli and tg-cli2 may open (their own) tunnels
POLKIT_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") != 0)
        return;
    if (subject.user == "tg-cliadmin")
        return polkit.Result.YES;
    if ((subject.user == "tg-cli" || subject.user == "tg-cli2") &&
        action.id == "org.tunnelgate.open")
        return polkit.Result.YES;
    return polkit.Result.NO;
});
"""

POLICY = ("# tunnelgatectl tests\n"
          "PermitOpen intra:80 127.0.0.1:9000\n")          # line 2

UP = re.compile(r"^Tunnel (\d+) is up: (\S+)$", re.M)
LISTENING = re.compile(r"^  (. .+): (listening on|SOCKS proxy on|the server listens on) "
                       r"(\S+):(\d+)$", re.M)


def setUpModule():
    tgtest.start_module_world(USERS, agents=USERS, polkit_rules=POLKIT_RULES, policy=POLICY)


def tearDownModule():
    w = tgtest.DaemonTestCase.W
    if w.daemon is not None and w.daemon.alive():
        close_all(w)
    tgtest.stop_module_world()


def tunnel_paths(w, user=ADMIN):
    out = w.busctl(user, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels", json=True)
    return [e[0] for e in out["data"][0]]


def close_all(w):
    if w.daemon is None or not w.daemon.alive():
        return
    for path in tunnel_paths(w):
        w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o", path)


def human(n):
    """What tunnelgatectl prints for a byte count."""
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    i = 0
    while value >= 1023.95 and i + 1 < len(units):
        value /= 1024
        i += 1
    return f"{value:.1f} {units[i]}"


def local_iso(usec):
    return datetime.datetime.fromtimestamp(usec // 1_000_000).astimezone().isoformat(
        timespec="seconds")


class CliTestCase(tgtest.DaemonTestCase):

    def setUp(self):
        self.addCleanup(close_all, self.w)

    def ctl(self, user, *args, env=None, timeout=150):
        return self.w.ctl(user, *[str(a) for a in args], env=env, timeout=timeout)

    def ctl_ok(self, user, *args, env=None):
        r = self.ctl(user, *args, env=env)
        self.assertEqual(r.returncode, 0, f"tunnelgatectl {' '.join(map(str, args))} as "
                         f"{user}: {r.stderr}")
        self.assertEqual(r.stderr, "")
        return r.stdout

    def ctl_fails(self, status, user, *args, contains=(), env=None):
        """Exit status `status`, nothing on stdout, stderr names everything in `contains`."""
        r = self.ctl(user, *args, env=env)
        self.assertEqual(r.returncode, status, f"{args}: stdout {r.stdout!r} stderr {r.stderr!r}")
        self.assertEqual(r.stdout, "")
        self.assertTrue(r.stderr.startswith("tunnelgatectl: "), r.stderr)
        for text in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(text, r.stderr)
        return r.stderr

    def open_ok(self, user, *args, env=None):
        """tunnelgatectl open as `user`: (id, [(forward, kind, address, port)])."""
        out = self.ctl_ok(user, "open", *args, env=env)
        m = UP.search(out)
        self.assertIsNotNone(m, out)
        self.assertTrue(out.startswith(m.group(0)), out)
        listeners = [(f, kind, a, int(p)) for f, kind, a, p in LISTENING.findall(out)]
        self.assertEqual(len(out.splitlines()), 1 + len(listeners), out)
        return m.group(1), listeners

    def curl_page(self, user, port, *args):
        r = self.w.run_as(user, ["curl", "-sS", "--max-time", "30", *args,
                                 f"http://127.0.0.1:{port}/" if not args else "http://intra/"],
                          timeout=40)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.encode(), self.w.intranet_page)

    def list_json(self, user):
        out = self.ctl_ok(user, "list", "--json")
        data = json.loads(out)
        self.assertIsInstance(data, list)
        return {t["id"]: t for t in data}

    def show_json(self, user, tid):
        return json.loads(self.ctl_ok(user, "show", "--json", tid))

    def assertPortFree(self, port):
        self.assertEqual(tgtest.daemon_tcp_sockets(self.w.daemon.pid, port), [])
        self.assertTrue(can_listen(self.w, port))


# ----------------------------------------------------------------------------


class OpenListShowCloseTest(CliTestCase):

    def test_open_traffic_list_show_close(self):
        w = self.w
        uid = w.users[CLI].uid
        spec = "L 127.0.0.1:0:intra:80"
        t0 = time.time()
        tid, listeners = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80",
                                      "--description", "cli test", "--keepalive", "30")
        t1 = time.time()
        self.assertEqual(len(listeners), 1, listeners)
        fwd, kind, address, port = listeners[0]
        self.assertEqual((fwd, kind, address), (spec, "listening on", "127.0.0.1"))
        self.assertGreater(port, 0)
        self.assertIn(("127.0.0.1", port), daemon_listeners(w.daemon.pid))

        # data flows through the tunnel the CLI opened
        self.curl_page(CLI, port)
        r = w.run_as(CLI, ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w",
                           "%{size_download}", f"http://127.0.0.1:{port}/big.bin"], timeout=40)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(int(r.stdout), 4 << 20)

        # list: the table
        out = self.ctl_ok(CLI, "list")
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^ID\s+OWNER\s+STATE\s+DESTINATION\s+FORWARDS$")
        self.assertEqual(len(lines), 2, out)
        self.assertEqual(lines[1].split(None, 4), [tid, CLI, "up", "tg-cli@gw:22", spec])

        # list --json: everything, typed
        t = wait_for(lambda: (lambda x: x if x["total_connections"] == 2 and
                              x["bytes_received"] > 4 << 20 else None)(self.list_json(CLI)[tid]),
                     timeout=10, what="counters in list --json")
        self.assertEqual(t["path"], f"{MPATH}/tunnel/{tid}")
        self.assertEqual((t["owner"], t["user"]), (uid, CLI))
        self.assertEqual(t["destination"], "tg-cli@gw:22")
        self.assertEqual(t["description"], "cli test")
        self.assertEqual(t["state"], "up")
        self.assertEqual(t["forwards"], [spec])
        self.assertEqual(t["listeners"], [{"forward": spec, "address": "127.0.0.1",
                                           "port": port}])
        self.assertEqual(t["active_connections"], 0)
        self.assertGreater(t["bytes_sent"], 0)
        self.assertEqual(t["last_error"], "")
        self.assertGreaterEqual(t["created_usec"], int((t0 - 1) * 1e6))
        self.assertLessEqual(t["created_usec"], int((t1 + 1) * 1e6))
        self.assertEqual(t["created"], local_iso(t["created_usec"]))

        # show: every property, counters in binary units, local ISO 8601
        out = self.ctl_ok(CLI, "show", tid)
        fields = dict(re.findall(r"^(\w+):\s+(.*)$", out, re.M))
        self.assertEqual(set(fields), {"Id", "Path", "Owner", "Destination", "Description",
                                       "State", "Created", "Reconnect", "Persistent",
                                       "Forwards", "Listeners",
                                       "BytesSent", "BytesReceived", "ActiveConnections",
                                       "TotalConnections", "LastError"}, out)
        self.assertEqual(fields["Reconnect"], "no")
        self.assertEqual(fields["Persistent"], "no")
        self.assertEqual(fields["Id"], tid)
        self.assertEqual(fields["Owner"], f"{CLI} (uid {uid})")
        self.assertEqual(fields["Destination"], "tg-cli@gw:22")
        self.assertEqual(fields["Description"], "cli test")
        self.assertEqual(fields["State"], "up")
        self.assertEqual(fields["Created"], local_iso(t["created_usec"]))
        self.assertEqual(fields["Forwards"], spec)
        self.assertEqual(fields["Listeners"], f"127.0.0.1:{port} ({spec})")
        for name in ("BytesSent", "BytesReceived"):
            m = re.fullmatch(r"(\d+(?:\.\d)? (?:B|KiB|MiB|GiB)) \((\d+) bytes\)", fields[name])
            self.assertIsNotNone(m, fields[name])
            self.assertEqual(m.group(1), human(int(m.group(2))))
        self.assertRegex(fields["BytesReceived"], r"^4\.\d MiB ")
        self.assertEqual(fields["TotalConnections"], "2")
        self.assertEqual(fields["LastError"], "")
        self.assertEqual(human(1023), "1023 B")
        self.assertEqual(human(12_900_000), "12.3 MiB")

        # show by object path, and --json
        self.assertEqual(self.ctl_ok(CLI, "show", f"{MPATH}/tunnel/{tid}"), out)
        sj = self.show_json(CLI, tid)
        self.assertEqual({k: v for k, v in sj.items() if not k.startswith(("bytes", "total"))},
                         {k: v for k, v in t.items() if not k.startswith(("bytes", "total"))})

        # close: the port is free when it returns
        self.assertEqual(self.ctl_ok(CLI, "close", tid), f"Tunnel {tid} closed\n")
        self.assertPortFree(port)
        self.assertEqual(self.ctl_ok(CLI, "list"), "No tunnels.\n")
        self.assertEqual(self.list_json(CLI), {})
        self.assertEqual(json.loads(self.ctl_ok(CLI, "list", "--json")), [])

    def test_default_user_socks_json_and_close_by_path(self):
        """Destination without a user (the caller's), -L and -D in one tunnel, --json."""
        w = self.w
        out = self.ctl_ok(CLI, "open", "gw", "-L", "127.0.0.1:0:intra:80",
                          "-D", "127.0.0.1:0", "--json")
        t = json.loads(out)
        self.assertEqual(t["destination"], "tg-cli@gw:22")
        self.assertEqual(t["state"], "up")
        self.assertEqual(t["forwards"], ["L 127.0.0.1:0:intra:80", "D 127.0.0.1:0"])
        ports = {x["forward"][0]: x["port"] for x in t["listeners"]}
        self.assertEqual(set(ports), {"L", "D"})
        self.curl_page(CLI, ports["L"])
        self.curl_page(CLI, ports["D"], "--socks5-hostname", f"127.0.0.1:{ports['D']}")
        # several IDs at once, one given as the object path
        tid2, _ = self.open_ok(CLI, "tg-cli@gw", "L", "127.0.0.1:0:intra:80")
        out = self.ctl_ok(CLI, "close", t["path"], tid2)
        self.assertEqual(out, f"Tunnel {t['id']} closed\nTunnel {tid2} closed\n")
        self.assertEqual(tunnel_paths(w), [])
        for p in ports.values():
            self.assertPortFree(p)

    def test_no_wait(self):
        out = self.ctl_ok(CLI, "open", "--no-wait", "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        m = re.fullmatch(r"Tunnel (\d+) is connecting \((/\S+)\); see 'tunnelgatectl show "
                         r"(\d+)'\n", out)
        self.assertIsNotNone(m, out)
        tid, path = m.group(1), m.group(2)
        self.assertEqual(path, f"{MPATH}/tunnel/{tid}")
        t = wait_for(lambda: (lambda x: x if x["state"] == "up" else None)(
            self.show_json(CLI, tid)), timeout=30, what="the tunnel to come up")
        self.curl_page(CLI, t["listeners"][0]["port"])
        # --json too
        t2 = json.loads(self.ctl_ok(CLI, "open", "--no-wait", "--json", "tg-cli@gw",
                                    "-L", "127.0.0.1:0:intra:80"))
        self.assertEqual(set(t2), {"id", "path", "state"})
        self.assertEqual(t2["state"], "connecting")
        wait_for(lambda: self.show_json(CLI, t2["id"])["state"] == "up", timeout=30,
                 what="the second tunnel to come up")
        # an error before the tunnel exists is still reported
        self.ctl_fails(1, CLI, "open", "--no-wait", "tg-cli@gw", "-L", "127.0.0.1:0:intra:9999",
                       contains=["PermitOpen", "org.tunnelgate.Error.PolicyDenied"])
        self.ctl_ok(CLI, "close", tid, t2["id"])

    def test_interrupted_open_closes_the_tunnel(self):
        """A server that never answers: open --no-wait returns at once; an open
        interrupted while it waits closes the tunnel it asked for."""
        w = self.w
        silent = w.listen("gateway", w.gateway_ip, 0)     # accepts, never speaks SSH
        self.addCleanup(silent.close)
        dest = f"tg-cli@{w.gateway_ip}:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        t = json.loads(self.ctl_ok(CLI, "open", "--no-wait", "--json", dest,
                                   "-L", "127.0.0.1:0:intra:80"))
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(t["state"], "connecting")
        self.assertEqual(self.show_json(CLI, t["id"])["state"], "connecting")
        self.ctl_ok(CLI, "close", t["id"])
        self.assertEqual(tunnel_paths(w), [])

        p = w.spawn_as(CLI, [w.ctl_binary, "open", dest, "-L", "127.0.0.1:0:intra:80"],
                       name="open-interrupted", stdout=subprocess.PIPE)
        self.addCleanup(p.stop)
        paths = wait_for(lambda: tunnel_paths(w), timeout=20, what="the tunnel to be made")
        self.assertTrue(p.alive())
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(timeout=30), 130, p.log())
        self.assertIn(f"tunnelgatectl: interrupted; tunnel {paths[0].rsplit('/', 1)[1]} "
                      "closed", p.log())
        self.assertEqual(p.popen.stdout.read(), b"")
        self.assertEqual(tunnel_paths(w), [])

    def test_identity_file(self):
        w = self.w
        key = w.users[CLI].key
        no_agent = {"SSH_AUTH_SOCK": None}
        tid, listeners = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80",
                                      "--identity", key, env=no_agent)
        self.curl_page(CLI, listeners[0][3])
        self.ctl_ok(CLI, "close", tid)
        # opened by tunnelgatectl as the user: root-only files stay closed
        self.ctl_fails(1, CLI, "open", "tg-cli@gw", "-L", "127.0.0.1:0:intra:80",
                       "--identity", "/etc/shadow", env=no_agent,
                       contains="cannot open /etc/shadow: Permission denied")
        self.ctl_fails(1, CLI, "open", "tg-cli@gw", "-L", "127.0.0.1:0:intra:80",
                       env=no_agent, contains="no credentials")
        self.ctl_fails(1, CLI, "open", "tg-cli@gw", "-L", "127.0.0.1:0:intra:80",
                       env={"SSH_AUTH_SOCK": str(w.dir / "no-such-agent")},
                       contains=["cannot connect to the ssh-agent", "no-such-agent"])
        self.assertEqual(tunnel_paths(w), [])

    def test_agent_fd_from_a_socket_root_cannot_reach(self):
        """The agent's socket exists only in tunnelgatectl's own mount namespace:
        the daemon could not open the path, it gets the connected descriptor."""
        w = self.w
        u = w.users[CLI]
        hidden = w.dir / "hidden-agent"
        hidden.mkdir(mode=0o755, exist_ok=True)
        sock = hidden / "agent.sock"
        self.assertFalse(sock.exists())
        # the path as an `agent` option: the daemon cannot reach it
        r = tgtest.busctl_open(w, CLI, "tg-cli@gw", ["L 127.0.0.1:0:intra:80"],
                               [("agent", "s", str(sock))])
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn(str(sock), r.stderr)
        # tunnelgatectl in a private mount namespace where the agent's directory is
        # bind-mounted at that path, run as the user
        script = ('mount --bind "$1" "$2" && shift 2 && '
                  f'exec setpriv --reuid={u.uid} --regid={u.gid} --init-groups -- "$@"')
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                "sh", str(u.dir), str(hidden), str(w.ctl_binary), "open", "tg-cli@gw",
                "-L", "127.0.0.1:0:intra:80"]
        env = w.user_env(CLI, {"SSH_AUTH_SOCK": str(sock)})
        env["PATH"] = world.ROOT_PATH
        r = w.run(argv, ns="client", env=env, timeout=150)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = UP.search(r.stdout)
        self.assertIsNotNone(m, r.stdout)
        port = int(LISTENING.search(r.stdout).group(4))
        self.assertFalse(sock.exists(), "the bind mount leaked out of the namespace")
        t = self.show_json(CLI, m.group(1))
        self.assertEqual((t["owner"], t["state"]), (u.uid, "up"))
        self.curl_page(CLI, port)
        self.assertRegex(w.proc("sshd").log(), r"Accepted publickey for tg-cli ")

    def test_profile(self):
        w = self.w
        keys = w.dir / "cli-profile-keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        key = keys / "cliprofile_ed25519"
        shutil.copy(w.users[CLI2].key, key)
        os.chown(key, 0, 0)
        os.chmod(key, 0o600)
        port = free_port(w)
        spec = f"L 127.0.0.1:{port}:intra:80"
        w.write_config("profiles.d/cliweb.conf",
                       "Description CLI test profile\nServer gw\nUser tg-cli2\n"
                       f"IdentityFile {key}\nHostKey {w.host_key_fingerprint}\n"
                       f'Forward "{spec}"\nAllowUsers tg-cliadmin\n')
        self.addCleanup(shutil.rmtree, w.config_dir / "profiles.d", True)
        # the admin's own agent is not handed over for a profile (it takes none)
        tid, listeners = self.open_ok(ADMIN, "@cliweb")
        self.assertEqual(listeners, [(spec, "listening on", "127.0.0.1", port)])
        t = self.show_json(ADMIN, tid)
        self.assertEqual(t["destination"], "tg-cli2@gw:22")
        self.assertIn("cliweb", t["description"])
        self.curl_page(ADMIN, port)
        self.ctl_ok(ADMIN, "close", tid)
        # tg-cli may not use profiles (polkit), and no such profile
        self.ctl_fails(2, CLI, "open", "@cliweb", contains=[
            "org.tunnelgate.use-profile", "org.tunnelgate.Error.NotAuthorized"])
        self.ctl_fails(1, ADMIN, "open", "@nosuchprofile",
                       contains=["nosuchprofile", "org.tunnelgate.Error.NotFound"])


# ----------------------------------------------------------------------------


class OwnershipTest(CliTestCase):

    def test_other_user_cannot_close_and_admin_can(self):
        tid, listeners = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        port = listeners[0][3]
        # tg-cli2 does not see it, and may neither read nor close it
        self.assertEqual(self.ctl_ok(CLI2, "list"), "No tunnels.\n")
        self.assertEqual(self.list_json(CLI2), {})
        err = self.ctl_fails(2, CLI2, "close", tid, contains=[
            "CloseTunnel", "org.tunnelgate.manage", "org.tunnelgate.Error.NotAuthorized"])
        self.assertIn(CLI2, err)
        self.ctl_fails(2, CLI2, "show", tid, contains=[
            "org.tunnelgate.manage", "org.tunnelgate.Error.NotAuthorized"])
        self.ctl_fails(2, CLI2, "forward", "add", tid, "-L", "127.0.0.1:0:intra:80",
                       contains=["org.tunnelgate.manage", "NotAuthorized"])
        self.assertEqual(self.show_json(CLI, tid)["state"], "up")
        self.curl_page(CLI, port)
        # the administrator sees everyone's tunnels and closes them
        tid2, _ = self.open_ok(CLI2, "tg-cli2@gw", "-L", "127.0.0.1:0:intra:80")
        out = self.ctl_ok(ADMIN, "list")
        rows = [line.split(None, 4) for line in out.splitlines()[1:]]
        self.assertEqual([r[:4] for r in rows], [[tid, CLI, "up", "tg-cli@gw:22"],
                                                 [tid2, CLI2, "up", "tg-cli2@gw:22"]])
        everyone = self.list_json(ADMIN)
        self.assertEqual({k: v["user"] for k, v in everyone.items()}, {tid: CLI, tid2: CLI2})
        self.assertEqual(self.show_json(ADMIN, tid)["listeners"][0]["port"], port)
        self.assertEqual(self.ctl_ok(ADMIN, "close", tid, tid2),
                         f"Tunnel {tid} closed\nTunnel {tid2} closed\n")
        self.assertPortFree(port)


class ForwardTest(CliTestCase):

    def test_forward_add_remove(self):
        w = self.w
        tid, listeners = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        port = free_port(w)
        spec = f"L 127.0.0.1:{port}:intra:80"
        out = self.ctl_ok(CLI, "forward", "add", tid, "-L", f"127.0.0.1:{port}:intra:80")
        self.assertEqual(out, f"Tunnel {tid}: added {spec}\n"
                              f"  {spec}: listening on 127.0.0.1:{port}\n")
        self.curl_page(CLI, port)
        self.assertEqual(self.show_json(CLI, tid)["forwards"],
                         ["L 127.0.0.1:0:intra:80", spec])
        # the same forward again: invalid
        self.ctl_fails(1, CLI, "forward", "add", tid, spec,
                       contains=["already has", "org.tunnelgate.Error.InvalidArgument"])
        # one the policy forbids: denied, naming the file and line
        policy = str(w.config_dir / "policy.conf")
        self.ctl_fails(1, CLI, "forward", "add", tid, "L", "127.0.0.1:0:intra:9999",
                       contains=[f"{policy}:2", "org.tunnelgate.Error.PolicyDenied"])
        # remove ("L SPEC" as one argument): the port is free
        self.assertEqual(self.ctl_ok(CLI, "forward", "remove", tid, spec),
                         f"Tunnel {tid}: removed {spec}\n")
        self.assertPortFree(port)
        self.ctl_fails(1, CLI, "forward", "remove", tid, spec,
                       contains=["org.tunnelgate.Error.NotFound"])
        # a -D forward added with its port printed
        out = self.ctl_ok(CLI, "forward", "add", f"{MPATH}/tunnel/{tid}", "-D", "127.0.0.1:0")
        m = re.fullmatch(rf"Tunnel {tid}: added D 127\.0\.0\.1:0\n"
                         r"  D 127\.0\.0\.1:0: SOCKS proxy on 127\.0\.0\.1:(\d+)\n", out)
        self.assertIsNotNone(m, out)
        socks = int(m.group(1))
        self.curl_page(CLI, socks, "--socks5-hostname", f"127.0.0.1:{socks}")
        self.assertEqual(self.show_json(CLI, tid)["forwards"],
                         ["L 127.0.0.1:0:intra:80", "D 127.0.0.1:0"])
        # usage errors
        self.ctl_fails(1, CLI, "forward", "add", tid, contains="needs a forward")
        self.ctl_fails(1, CLI, "forward", "rename", tid, "L 1:a:2", contains="usage")
        self.ctl_fails(1, CLI, "forward", "add", tid, "8080:intra:80",
                       contains="is not a forward")


class PolicyTest(CliTestCase):

    def test_check(self):
        w = self.w
        policy = str(w.config_dir / "policy.conf")
        r = self.ctl(CLI, "check", "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^allowed: .*\n$")
        err = self.ctl(CLI, "check", "gw", "L 127.0.0.1:0:intra:9999")
        self.assertEqual(err.returncode, 1, err.stderr)
        self.assertEqual(err.stdout,
                         f"denied: PermitOpen at {policy}:2 does not allow intra:9999\n")
        # several forwards: one line each, 1 if any is denied
        r = self.ctl(CLI, "check", "gw", "-L", "127.0.0.1:0:intra:80", "-L",
                     "127.0.0.1:0:intra:9999")
        self.assertEqual(r.returncode, 1)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        self.assertTrue(lines[0].startswith("L 127.0.0.1:0:intra:80: allowed: "), lines)
        self.assertTrue(lines[1].startswith("L 127.0.0.1:0:intra:9999: denied: PermitOpen"))
        self.assertEqual(tunnel_paths(w), [])
        # malformed: InvalidArgument
        self.ctl_fails(1, CLI, "check", "gw", "L nonsense",
                       contains="org.tunnelgate.Error.InvalidArgument")

    def test_reload_and_policy_denial(self):
        w = self.w
        policy = w.config_dir / "policy.conf"
        tid, listeners = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        self.addCleanup(self.restore_policy)
        # a normal user may not reload
        self.ctl_fails(2, CLI, "reload", contains=["ReloadPolicy", "org.tunnelgate.manage",
                                                   "org.tunnelgate.Error.NotAuthorized"])
        # a broken policy changes nothing; the error names file and line
        w.write_config("policy.conf", POLICY + "Frobnicate yes\n")
        self.ctl_fails(1, ADMIN, "reload", contains=[f"{policy}:3", "Frobnicate",
                                                     "org.tunnelgate.Error.InvalidArgument"])
        self.assertEqual(self.show_json(CLI, tid)["state"], "up")
        # the new policy forbids intra:80 for tg-cli: the tunnel closes, opening is denied
        w.write_config("policy.conf", "# tunnelgatectl tests, stricter\n"
                                      "PermitOpen 127.0.0.1:9000\n"
                                      "Match User tg-cliadmin\n"
                                      "  PermitOpen intra:80\n")
        out = self.ctl_ok(ADMIN, "reload")
        self.assertEqual(out.splitlines()[0], "Policy reloaded; in force:")
        self.assertIn(f"  {policy}", out.splitlines())
        wait_for(lambda: tunnel_paths(w) == [], timeout=10, what="the forbidden tunnel to close")
        self.assertPortFree(listeners[0][3])
        self.ctl_fails(1, CLI, "open", "tg-cli@gw", "-L", "127.0.0.1:0:intra:80",
                       contains=["OpenTunnel", f"{policy}:2", "PermitOpen",
                                 "org.tunnelgate.Error.PolicyDenied"])
        self.assertEqual(tunnel_paths(w), [])
        r = self.ctl(CLI, "check", "tg-cli@gw", "L 127.0.0.1:0:intra:80")
        self.assertEqual((r.returncode, r.stdout),
                         (1, f"denied: PermitOpen at {policy}:2 does not allow intra:80\n"))
        # the Match block lets the administrator
        tid, _ = self.open_ok(ADMIN, "tg-cliadmin@gw", "-L", "127.0.0.1:0:intra:80")
        self.ctl_ok(ADMIN, "close", tid)

    def restore_policy(self):
        self.w.write_config("policy.conf", POLICY)
        self.ctl_ok(ADMIN, "reload")


class ErrorTest(CliTestCase):

    def test_exit_statuses(self):
        w = self.w
        # usage: 1
        self.ctl_fails(1, CLI, "open", contains="needs a destination")
        self.ctl_fails(1, CLI, "open", "gw", contains="needs at least one forward")
        self.ctl_fails(1, CLI, "open", "gw", "-L", contains="Missing argument for -L")
        self.ctl_fails(1, CLI, "open", "gw", "-L", "1:a:2", "--keepalive", "x",
                       contains="--keepalive")
        self.ctl_fails(1, CLI, "list", "--frob", contains="Unknown option --frob")
        self.ctl_fails(1, CLI, "show", contains="one tunnel ID")
        self.ctl_fails(1, CLI, "show", "abc", contains="'abc' is not a tunnel")
        self.ctl_fails(1, CLI, "close", contains="needs a tunnel ID")
        self.ctl_fails(1, CLI, "watch", "--count", "-1", contains="negative")
        # not found: 1 to an administrator; a user who may not manage is told
        # it is not theirs (the daemon answers as for another user's): 2
        self.ctl_fails(1, ADMIN, "show", "999999",
                       contains="no tunnel 999999 (org.tunnelgate.Error.NotFound)")
        self.ctl_fails(1, ADMIN, "close", "999999",
                       contains="no tunnel 999999 (org.tunnelgate.Error.NotFound)")
        self.ctl_fails(1, ADMIN, "forward", "add", "999999", "-L", "0:intra:80",
                       contains="no tunnel 999999")
        for verb in (["show", "999999"], ["close", "999999"],
                     ["forward", "add", "999999", "-L", "0:intra:80"]):
            self.ctl_fails(2, CLI, *verb,
                           contains=["not allowed org.tunnelgate.manage",
                                     "no tunnel 999999 of yours: another user's, or none"])
        # invalid input the daemon refuses: 1, naming the D-Bus error
        self.ctl_fails(1, CLI, "open", "gw", "-L", "nonsense",
                       contains=["OpenTunnel", "org.tunnelgate.Error.InvalidArgument"])
        self.ctl_fails(1, CLI, "open", "gw", "-L", "127.0.0.1:0:intra:80",
                       "--host-key", "MD5:00", contains="InvalidArgument")
        # polkit says no: 2, naming the action
        self.ctl_fails(2, CLI, "open", "gw", "-R", "0:127.0.0.1:9000",
                       contains=["org.tunnelgate.open-remote",
                                 "org.tunnelgate.Error.NotAuthorized"])
        self.ctl_fails(2, CLI, "firewall", contains="org.tunnelgate.manage")
        self.ctl_fails(2, CLI, "audit", contains="org.tunnelgate.manage")
        # the daemon cannot be reached: 2
        nobus = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={w.dir}/no-such-bus"}
        for args in (["list"], ["show", "1"], ["close", "1"], ["watch"], ["reload"],
                     ["check", "gw", "L 0:intra:80"], ["open", "gw", "-L", "0:intra:80"]):
            with self.subTest(args=args):
                self.ctl_fails(2, CLI, *args, env=nobus,
                               contains="cannot connect to the system bus")
        # a failure to connect: 2
        self.ctl_fails(2, CLI, "open", "tg-cli@gw:2", "-L", "127.0.0.1:0:intra:80",
                       contains="org.tunnelgate.Error.ConnectFailed")
        self.assertEqual(tunnel_paths(w), [])

    def test_help_for_every_verb(self):
        out = self.ctl_ok(CLI, "--help")
        for verb in VERBS:
            self.assertRegex(out, rf"(?m)^  {re.escape(verb)}\b")
        for line in ("Exit status:", "  0  success",
                     "  1  invalid policy, bad usage, or an unknown user",
                     "  2  the daemon could not be reached, or it returned an error"):
            self.assertIn(line, out.splitlines())
        for verb in VERBS:
            with self.subTest(verb=verb):
                out = self.ctl_ok(CLI, verb, "--help")
                self.assertIn(f"tunnelgatectl {verb} [OPTION", out)
        out = self.ctl_ok(CLI, "open", "--help")
        for option in ("--local=SPEC", "--remote=SPEC", "--dynamic=SPEC", "--identity=FILE",
                       "--host-key=FINGERPRINT", "--description=TEXT", "--keepalive=N",
                       "--no-wait", "--json"):
            self.assertIn(option, out)


class AdminTest(CliTestCase):

    def test_admin_verbs(self):
        out = self.ctl_ok(ADMIN, "firewall")
        self.assertTrue(out)
        r = self.ctl(ADMIN, "audit")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn("no drift", r.stdout)
        # the admin's own tunnel with a remote forward (open-remote granted)
        tid, listeners = self.open_ok(ADMIN, "tg-cliadmin@gw", "-R", "0:127.0.0.1:9000")
        self.assertEqual(len(listeners), 1, listeners)
        fwd, kind, address, port = listeners[0]
        self.assertEqual((fwd, kind), ("R 0:127.0.0.1:9000", "the server listens on"))
        self.assertGreater(port, 0)
        self.ctl_ok(ADMIN, "close", tid)


class WatchTest(CliTestCase):

    def read_lines(self, proc, want, timeout=30):
        """Lines from proc's stdout until want(lines) is true."""
        lines = []
        deadline = time.monotonic() + timeout
        while not want(lines):
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"watch printed only {lines}")
            line = world._readline_timeout(proc.popen.stdout, left)
            if not line:
                self.assertTrue(proc.alive() or want(lines), f"watch ended: {lines}")
                continue
            lines.append(line.decode().rstrip("\n"))
        return lines

    def start_watch(self, user, *args):
        w = self.w
        p = w.spawn_as(user, [w.ctl_binary, "watch", *args], name=f"watch-{user}",
                       stdout=subprocess.PIPE)
        self.addCleanup(p.stop)
        p.wait_log(r"^Watching tunnels; interrupt to stop\.$", timeout=20)
        return p

    def test_watch_state_changes_and_counters(self):
        p = self.start_watch(CLI, "--count", "1000")
        tid, listeners = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        self.curl_page(CLI, listeners[0][3])
        ts = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "
        mine = rf"{ts}tunnel {tid} "
        lines = self.read_lines(p, lambda ls: any(re.match(mine + "traffic: ", x) for x in ls))
        self.ctl_ok(CLI, "close", tid)
        lines += self.read_lines(p, lambda ls: any(re.match(mine + "removed$", x) for x in ls))
        events = [re.sub(ts, "", x) for x in lines if re.match(mine, x)]
        self.assertEqual(events[0], f"tunnel {tid} added: owner {CLI}, state connecting")
        self.assertIn(f"tunnel {tid} state up", events)
        self.assertRegex(events[-2], rf"^tunnel {tid} state closed(; changed: [A-Za-z, ]+)?$")
        self.assertEqual(events[-1], f"tunnel {tid} removed")
        traffic = [x for x in events if "traffic:" in x][0]
        self.assertRegex(traffic, r"received \d+(\.\d)? (B|KiB)")
        self.assertRegex(traffic, r"1 connections in all")
        self.assertEqual(p.stop(), 0)

    def test_watch_count_and_other_users(self):
        """--count N stops after N events; tg-cli2 hears nothing of tg-cli's
        tunnels, the administrator (manage) hears them."""
        p2 = self.start_watch(CLI2, "--count", "2")
        pa = self.start_watch(ADMIN, "--count", "2")
        tid, _ = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        self.assertEqual(pa.wait(timeout=20), 0)
        lines = pa.popen.stdout.read().decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], rf" tunnel {tid} added: owner {CLI}, state connecting$")
        self.assertRegex(lines[1], rf" tunnel {tid} state up$")
        # tg-cli2's watch heard nothing of it: its own tunnel gives its first events
        tid2, _ = self.open_ok(CLI2, "tg-cli2@gw", "-L", "127.0.0.1:0:intra:80")
        self.assertEqual(p2.wait(timeout=20), 0)
        out = p2.popen.stdout.read().decode()
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertRegex(lines[0], rf" tunnel {tid2} added: owner {CLI2}, state connecting$")
        self.assertRegex(lines[1], rf" tunnel {tid2} state up$")
        self.assertNotIn(f"tunnel {tid} ", out)
        # a failing open shows up as failed, with the reason for its owner
        p = self.start_watch(CLI, "--count", "3")
        self.ctl_fails(2, CLI, "open", "tg-cli@gw:2", "-L", "127.0.0.1:0:intra:80",
                       contains="ConnectFailed")
        self.assertEqual(p.wait(timeout=20), 0)
        lines = p.popen.stdout.read().decode().splitlines()
        self.assertRegex(lines[0], r" added: owner tg-cli, state connecting$")
        self.assertRegex(lines[1], r" state failed( \(.+\))?(; changed: .*)?$")
        self.assertRegex(lines[2], r" removed$")


class CompletionTest(CliTestCase):

    def complete(self, *words):
        """COMPREPLY of the bash completion for `tunnelgatectl WORDS`, the last word
        being the one completed, as tg-cli."""
        w = self.w
        script = (f"source {w.source_root}/data/bash-completion/tunnelgatectl\n"
                  'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"\n'
                  'COMP_POINT=${#COMP_LINE}\n'
                  "_tunnelgatectl\n"
                  'printf "%s\\n" "${COMPREPLY[@]}"\n')
        r = w.run_as(CLI, ["bash", "-c", script, "bash", str(w.ctl_binary), *words])
        self.assertEqual(r.returncode, 0, r.stderr)
        return sorted(x for x in r.stdout.splitlines() if x)

    def test_bash_completion(self):
        self.assertEqual(self.complete("c"), ["check", "check-policy", "close", "credentials"])
        self.assertEqual(self.complete("credentials", "--"), ["--help", "--identity"])
        self.assertEqual(self.complete("-"), ["--help", "--version"])
        self.assertIn("--no-wait", self.complete("open", "gw", "--"))
        self.assertEqual(self.complete("watch", "--"), ["--count", "--help"])
        self.assertEqual(self.complete("forward", ""), ["add", "remove"])
        self.assertEqual(self.complete("show", ""), [])
        tid, _ = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        tid2, _ = self.open_ok(CLI, "tg-cli@gw", "-L", "127.0.0.1:0:intra:80")
        self.assertEqual(self.complete("show", ""), sorted([tid, tid2]))
        self.assertEqual(self.complete("close", tid, ""), sorted([tid, tid2]))
        self.assertEqual(self.complete("credentials", ""), sorted([tid, tid2]))
        self.assertEqual(self.complete("forward", "add", tid[0]),
                         sorted(x for x in (tid, tid2) if x.startswith(tid[0])))
        self.assertEqual(self.complete("show", tid, ""), [])


if __name__ == "__main__":
    world.require_root()
    unittest.main(verbosity=2)

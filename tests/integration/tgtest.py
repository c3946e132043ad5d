# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers shared by the tunnelgated integration tests (test_tunnel_api.py,
test_authorization.py, test_relay.py). Standard library only.

Everything a test does as a user goes through a real client running as that
user: busctl (world.busctl) or busclient (GDBus) in a process of the user
(userbus.py).
"""

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import busclient  # noqa: E402
import names  # noqa: E402
import userbus  # noqa: E402
import world  # noqa: E402

ALICE, BOB, MALLORY, ADMIN = "tg-alice", "tg-bob", "tg-mallory", "tg-admin"
BUS = world.BUS_NAME
MPATH = world.MANAGER_PATH
MIFACE = world.MANAGER_IFACE
TIFACE = world.TUNNEL_IFACE
PROPS = names.DBUS_PROPERTIES_INTERFACE
OM = names.DBUS_OBJECT_MANAGER_INTERFACE
TUNNEL_PREFIX = names.TUNNEL_PATH_PREFIX
ERR = names.ERROR_PREFIX
BUSCTL_TIMEOUT = "--timeout=120"
VALGRIND = os.environ.get("TG_VALGRIND") == "1"

V = busclient.Variant
FdConnect, FdOpen, FdPipe = userbus.FdConnect, userbus.FdOpen, userbus.FdPipe
UserBus = userbus.UserBus
DBusError = busclient.DBusError


# ----------------------------------------------------------------------------
# busctl as a user


def busctl_open_args(destination, forwards, options=()):
    """busctl arguments of Manager1.OpenTunnel; options: [(key, sig, value)]."""
    args = ["call", BUS, MPATH, MIFACE, "OpenTunnel", "sasa{sv}", destination,
            str(len(forwards)), *forwards, str(len(options))]
    for key, sig, value in options:
        args += [key, sig, str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def parse_object_path(stdout):
    m = re.fullmatch(r'o "(/[^"]*)"\s*', stdout)
    if not m:
        raise AssertionError(f"busctl did not print an object path: {stdout!r}")
    return m.group(1)


def busctl_open(w, user, destination, forwards, options=(), busctl_args=()):
    """OpenTunnel with busctl as `user`; returns the CompletedProcess."""
    return w.busctl(user, BUSCTL_TIMEOUT, *busctl_args,
                    *busctl_open_args(destination, forwards, options), timeout=150)


def busctl_open_ok(w, user, destination, forwards, options=()):
    r = busctl_open(w, user, destination, forwards, options)
    if r.returncode != 0:
        raise AssertionError(f"OpenTunnel as {user} failed: {r.stderr.strip()}")
    return parse_object_path(r.stdout)


def agent_option(w, user):
    return [("agent", "s", str(w.users[user].agent_sock))]


def prop(w, user, path, name, iface=TIFACE):
    """A property read with busctl get-property as `user` (raises on failure)."""
    return w.busctl(user, BUSCTL_TIMEOUT, "get-property", BUS, path, iface, name,
                    json=True)["data"]


def list_tunnels(w, user):
    """ListTunnels as `user` via busctl: list of (path, id, uid, dest, state, forwards)."""
    out = w.busctl(user, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "ListTunnels", json=True)
    return [tuple(e) for e in out["data"][0]]


def close_all_tunnels(w):
    """Close every tunnel as tg-admin (org.tunnelgate.manage) - test cleanup."""
    if w.daemon is None or not w.daemon.alive():
        return
    for entry in list_tunnels(w, ADMIN):
        w.busctl(ADMIN, BUSCTL_TIMEOUT, "call", BUS, MPATH, MIFACE, "CloseTunnel", "o", entry[0])


# ----------------------------------------------------------------------------
# users' own bus clients, polkit rules


_USER_BUSES = {}


def user_bus(user):
    """The busclient connection (userbus.py) of `user` in the module's world:
    made on first use and kept for the file's tests, made again when it was
    closed or its process died; stop_module_world() closes them all."""
    kept = _USER_BUSES.get(user)
    if kept is not None and not kept.closed and kept.proc.alive():
        return kept
    _USER_BUSES[user] = UserBus(DaemonTestCase.W, user)
    return _USER_BUSES[user]


def close_user_buses():
    while _USER_BUSES:
        _USER_BUSES.popitem()[1].close()


def profile_key(w, user, name):
    """A copy of `user`'s private key at `name` in the world's profile-keys
    directory (0700), as an administrator's profile wants it: a regular file
    owned by root with mode 0600. Returns its path."""
    keys = w.dir / "profile-keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    path = keys / name
    shutil.copy(w.users[user].key, path)
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    return path


def polkit_rules(grants):
    """polkit rules (JavaScript, for start_module_world) for the tunnelgate
    actions: `grants` maps a user to the action ids granted ("*": all of
    them); every other tunnelgate action, and every other user, gets NO."""
    return ("polkit.addRule(function(action, subject) {\n"
            '    if (action.id.indexOf("org.tunnelgate.") != 0) return;\n'
            f"    var mine = {json.dumps(grants)}[subject.user] || [];\n"
            '    var yes = mine.indexOf("*") >= 0 || mine.indexOf(action.id) >= 0;\n'
            "    return yes ? polkit.Result.YES : polkit.Result.NO;\n"
            "});\n")


# ----------------------------------------------------------------------------
# sockets of the daemon, ports


def _proc_net_entries(pid):
    """(family, address, port, state, inode) of every TCP socket in pid's netns."""
    out = []
    for fname, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{fname}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr_hex, port_hex = f[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out.append((fam, socket.inet_ntop(fam, raw), int(port_hex, 16), int(f[3], 16),
                        int(f[9])))
    return out


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m:
            inodes.add(int(m.group(1)))
    return inodes


TCP_LISTEN = 0x0A
TCP_CLOSE = 0x07


def daemon_tcp_sockets(pid, port=None):
    """TCP sockets the process holds: list of (address, port, state)."""
    mine = socket_inodes(pid)
    return [(a, p, st) for fam, a, p, st, ino in _proc_net_entries(pid)
            if ino in mine and (port is None or p == port)]


def daemon_listeners(pid):
    """(address, port) of every listening TCP socket the process holds."""
    return sorted((a, p) for a, p, st in daemon_tcp_sockets(pid) if st == TCP_LISTEN)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_table(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def settled_fd_count(pid, timeout=10):
    """pid's descriptor count once it has stayed the same for a second (or
    what it is when `timeout` runs out)."""
    last, since = fd_count(pid), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        n = fd_count(pid)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 1.0:
            break
    return last


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def can_listen(w, port, host="127.0.0.1"):
    """True if a new socket in the client namespace can bind and listen on host:port
    (SO_REUSEADDR, so TIME_WAIT does not count; a listener or bound socket does)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = w.socket("client", fam)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(1)
        return True
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        s.close()


def free_port(w, hosts=("127.0.0.1",)):
    """A port number that is free on all `hosts` in the client namespace."""
    for _ in range(100):
        fam = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
        s = w.socket("client", fam)
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        if port >= 1024 and all(can_listen(w, port, h) for h in hosts):
            return port
    raise AssertionError("no free port")


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll predicate() until it returns a true value; returns it, or fails."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - retried, reported on timeout
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def curl(w, user, url, timeout=30, text=True):
    return w.run_as(user, ["curl", "-sS", "--max-time", str(timeout), url], timeout=timeout + 10,
                    text=text)


def recv_hashed(sock, chunk=256 * 1024):
    """Reads sock to EOF: (byte count, hex SHA-256 of what came)."""
    h = hashlib.sha256()
    n = 0
    while True:
        c = sock.recv(chunk)
        if not c:
            return n, h.hexdigest()
        h.update(c)
        n += len(c)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------
# the daemon's end


def check_daemon_stopped_cleanly(w, daemon=None):
    """Stop the daemon (SIGTERM). It must exit with status 0, must not have logged
    GLib criticals, and under valgrind (TG_VALGRIND=1) its own valgrind log must
    report 0 errors (definite leaks count as errors). Processes it forks (to open
    credentials as the caller) get their own valgrind logs: there, memory errors
    count, but leak records do not (after fork() in a threaded program the other
    threads' stacks are gone, so everything they referenced looks lost).
    Returns the DaemonResult; raises AssertionError listing every problem."""
    d = daemon or w.daemon
    if d is None:
        return None
    if getattr(d, "tg_checked", False):       # checked (and reported) before
        return d.result
    res = d.stop(check=False)
    d.tg_checked = True
    problems = []
    if res.returncode != 0:
        why = (f"exit status {res.returncode}" if res.returncode > 0
               else f"killed by signal {-res.returncode}")
        if d.valgrind and res.returncode == world.VALGRIND_ERROR_EXIT:
            why += " (valgrind found errors)"
        if d.hang_report:
            why += f"; it did not stop on SIGTERM, and was:\n{d.hang_report}"
        problems.append(f"tunnelgated: {why}")
    bad = [line for line in res.log.splitlines() if re.search(r"-(CRITICAL|ERROR) \*\*", line)]
    if bad:
        problems.append("tunnelgated logged criticals:\n" + "\n".join(bad[:20]))
    if d.valgrind:
        main_seen = False
        for f in sorted(glob.glob(d.valgrind_pattern)):
            m = re.search(r"\.(\d+)\.log$", f)
            pid = int(m.group(1)) if m else -1
            text = world._read(f)
            counts = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors", text)]
            if pid == d.pid:
                main_seen = True
                if not counts or any(counts):
                    problems.append(f"valgrind, daemon pid {pid} ({f}):\n{text[-12000:]}")
            else:
                leaks = len(re.findall(r"are definitely lost in loss record", text))
                if counts and sum(counts) - leaks > 0:
                    head = text.split("HEAP SUMMARY")[0]
                    problems.append(f"valgrind, forked child {pid} ({f}): "
                                    f"{sum(counts) - leaks} memory errors:\n{head[-6000:]}")
        if not main_seen:
            problems.append(f"no valgrind log of the daemon (pid {d.pid}) in {d.valgrind_pattern}")
    if problems:
        raise AssertionError("\n\n".join(problems))
    return res


class DaemonTestCase(world.WorldTestCase, unittest.TestCase):
    """Base class: self.w is the module's world (set by the module's setUpModule)."""
    W = None

    @property
    def w(self):
        return type(self).W

    @property
    def world(self):            # for WorldTestCase.dump_logs on failure
        return type(self).W

    # error assertions for busclient calls
    def assertDBusError(self, name, fn, *args, contains=(), **kw):
        with self.assertRaises(busclient.DBusError) as cm:
            fn(*args, **kw)
        e = cm.exception
        full = name if "." in name else ERR + name
        self.assertEqual(e.name, full, f"expected {full}, got {e.name}: {e.message}")
        for text in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(text, e.message, f"{e.name}: {e.message}")
        return e


def start_module_world(users, agents, polkit_rules=None, policy=None, daemon=True,
                       **world_args):
    """setUpModule of a test file: one world for the whole file (World(users,
    **world_args)), with `polkit_rules` (JavaScript) if given, ssh-agents for
    `agents`, `policy` as the daemon's policy.conf if given, and a running
    daemon unless daemon=False (DaemonTestCase.W)."""
    w = world.World(users=list(users), **world_args).start()
    try:
        if polkit_rules is not None:
            w.set_polkit_rules(polkit_rules)
        for u in agents:
            w.start_agent(u)
        if policy is not None:
            w.write_config("policy.conf", policy)
        if daemon:
            w.start_daemon()
    except BaseException:
        w.cleanup()
        raise
    DaemonTestCase.W = w
    return w


def stop_module_world():
    """tearDownModule: close what is left, check the daemon stopped cleanly
    (and, under valgrind, without errors), remove the world."""
    w = DaemonTestCase.W
    try:
        close_user_buses()
        if w.daemon is not None and w.daemon.alive():
            if ADMIN in w.users:      # others close their own tunnels first
                close_all_tunnels(w)
            check_daemon_stopped_cleanly(w)
    finally:
        w.cleanup()

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The tunnelgate integration-test world (Python 3.11; D-Bus through python3-gi).

Builds, as root, a small real network and the real system services that
tunnelgated talks to, and tears all of it down again:

  client   network namespace where tunnelgated and the users' commands run;
           "gw" resolves to the gateway; NO route to the intranet
  gateway  network namespace running the real OpenSSH sshd (ports 22, 2222);
           "intra" resolves to the intranet host; IP forwarding is off
  intranet network namespace with an HTTP server (port 80, a known page) and
           the data service (dataserver.py, port 9000)

      client (gw0) 10.X.1.1 ---- 10.X.1.2 (client0) gateway (intra0) 10.X.2.1 ---- 10.X.2.2 (gw0) intranet

  * a private system bus (dbus-daemon) using Debian's system.conf defaults plus
    exactly the project's bus policy and polkit's bus policy,
  * the real polkitd with the host's actions, the project's actions and the
    test rules file only (bind mounts in a private mount namespace),
  * test users made with useradd, each with an ed25519 key pair that the
    gateway's sshd accepts, commands run as them with setpriv,
  * tunnelgated itself (start_daemon), optionally under valgrind (TG_VALGRIND=1).

Typical use::

    import world
    world.require_root()
    with world.World(users=["tg-alice", "tg-mallory"]) as w:
        sock = w.start_agent("tg-alice")
        d = w.start_daemon()
        w.busctl("tg-alice", "call", world.BUS_NAME, world.MANAGER_PATH, ...)
        result = d.stop()

Everything the world starts is tracked and killed in cleanup(), which is
idempotent and also runs from atexit and on SIGTERM. Set TG_KEEP_WORLD=1 to
keep the temporary directory (logs, configs) after cleanup. Run this file
directly (``world.py --help``) for an interactive world.

World is put together from one mixin per part, each in its own module;
this module keeps what ties them together (start, processes, services,
logs, cleanup) and re-exports the others' public names, so that tests
only ever import world:

  world_base.py    constants, errors, finding and killing processes, Proc,
                   in_netns(), the live-world registry, socket helpers
  world_netns.py   NetnsMixin: the three namespaces, links, hosts files, sockets,
                   links down and up, default routes
  world_users.py   UsersMixin, User: useradd'ed test users, key pairs, user_env()
  world_bus.py     BusMixin: the private dbus-daemon and polkitd, FakeLogin1
                   (fake_login1.py, a stand-in for logind)
  world_sshd.py    SshdMixin: sshd on the gateway, ssh argv, ssh-agents
  world_daemon.py  DaemonMixin, Daemon, DaemonResult: tunnelgated, busctl, tunnelgatectl
"""

import glob
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import dataserver  # noqa: E402
from world_base import *  # noqa: E402,F401,F403 - world.X stays the public API
# the helpers' underscore names too: tests use some of them as world._name
from world_base import (DATA_PORT, DEFAULT_USERS, HTTP_PORT,  # noqa: E402,F401
                        PASSTHROUGH_PREFIXES, PYTHON, ROOT_PATH, USER_MARKER, Proc, WorldError,
                        _LIVE_WORLDS, _install_handlers, _kill_pids, _merge_env, _ns_pids,
                        _pid_alive,
                        _process_snapshot, _read, _readline_timeout, _recv_all, _roundtrip,
                        _ssh_fingerprint, _tail, _uids_processes, _world_pids, missing_tools,
                        require_root)
from world_bus import LOGIN1_BUS_NAME, BusMixin, FakeLogin1  # noqa: E402,F401
from world_daemon import Daemon, DaemonMixin, DaemonResult  # noqa: E402,F401
from world_netns import NetnsMixin  # noqa: E402
from world_sshd import SshdMixin  # noqa: E402
from world_users import User, UsersMixin  # noqa: E402,F401


class World(NetnsMixin, UsersMixin, BusMixin, SshdMixin, DaemonMixin):
    """The test world. Use as a context manager, or call start() and cleanup().

    Parameters (all optional):
      users            user names to create (default tg-alice, tg-bob, tg-mallory, tg-admin)
      groups           {user: [supplementary group, ...]}; missing groups are created
                       (and removed again at cleanup)
      source_root, build_root   default: $TG_SOURCE_ROOT / $TG_BUILD_ROOT (see source_root())
      bus_policy       the project's bus policy (default <src>/dbus/org.tunnelgate.TunnelGate1.conf)
      polkit_policy    the project's polkit actions (default <src>/polkit/org.tunnelgate.policy)
      polkit_rules     rules file for polkitd (default tests/integration/50-tunnelgate-test.rules)
      bus, polkit, sshd, services   which parts to start (polkit needs bus)
      sshd_ports       ports sshd listens on at the gateway address (default 22 and 2222)
      sshd_config_extra  text appended to the generated sshd_config
      subnet           the X in 10.X.1.0/24 and 10.X.2.0/24 (default from the pid)
      keep             keep the temp dir after cleanup (default $TG_KEEP_WORLD)

    Attributes after start(): id, dir, ns {"client","gateway","intranet"} (and
    client_ns, gateway_ns, intranet_ns), client_ip, gateway_ip (the client-side
    address of the gateway), gateway_inner_ip, intranet_ip (+ *_ip6), bus_address,
    users {name: User}, known_hosts (file), host_key_fingerprint, known_hosts_line,
    intranet_page (bytes served at http://intra/), http_port, data_port,
    gateway_data_socket (unix socket of a data service on the gateway),
    config_dir / state_dir (for tunnelgated), daemon (last start_daemon()).
    """

    def __init__(self, users=DEFAULT_USERS, *, groups=None, source_root=None, build_root=None,
                 bus_policy=None, polkit_policy=None, polkit_rules=None, bus=True, polkit=True,
                 sshd=True, services=True, sshd_ports=(22, 2222), sshd_config_extra="",
                 subnet=None, keep=None):
        src = Path(source_root) if source_root else globals()["source_root"]()
        self.source_root = src
        self.build_root = (Path(build_root) if build_root else globals()["build_root"]()).resolve()
        self.bus_policy = Path(bus_policy or src / "dbus" / "org.tunnelgate.TunnelGate1.conf")
        self.polkit_policy = Path(polkit_policy or src / "polkit" / "org.tunnelgate.policy")
        self.polkit_rules = Path(polkit_rules or HERE / "50-tunnelgate-test.rules")
        self.want_users = list(users)
        self.want_groups = dict(groups or {})
        self.want_bus = bus
        self.want_polkit = polkit and bus
        self.want_sshd = sshd
        self.want_services = services
        self.sshd_ports = tuple(sshd_ports)
        self.sshd_config_extra = sshd_config_extra
        self.subnet = subnet if subnet is not None else 16 + os.getpid() % 200
        self.keep = keep if keep is not None else os.environ.get("TG_KEEP_WORLD") == "1"

        x = self.subnet
        self.client_ip, self.gateway_ip = f"10.{x}.1.1", f"10.{x}.1.2"
        self.gateway_inner_ip, self.intranet_ip = f"10.{x}.2.1", f"10.{x}.2.2"
        self.client_ip6, self.gateway_ip6 = f"fd00:{x}:1::1", f"fd00:{x}:1::2"
        self.gateway_inner_ip6, self.intranet_ip6 = f"fd00:{x}:2::1", f"fd00:{x}:2::2"
        self.http_port = HTTP_PORT
        self.data_port = DATA_PORT

        self.id = None
        self.dir = None
        self.ns = {}
        self.users = {}
        self.bus_address = None
        self.daemon = None
        self.known_hosts = None
        self.known_hosts_line = None
        self.host_key_fingerprint = None
        self.host_pubkey = None
        self.intranet_page = None
        self.gateway_data_socket = None
        self.config_dir = None
        self.state_dir = None
        self.setup_seconds = None
        self._procs = []
        self._named = {}
        self._groups_created = []
        self._directory_users = set()     # names: users of the test directory (NSS)
        self._nss_env = {}                # what makes processes load it
        self._etc_netns_created = False
        self._started = False
        self._cleaned = False
        self._lock = threading.RLock()

    # -- context manager -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            try:
                self.dump_logs()
            except Exception:  # noqa: BLE001
                pass
        self.cleanup()
        return False

    def __repr__(self):
        return f"<World {self.id} dir={self.dir}>"

    def proc(self, name):
        """A process started by the world, by name (e.g. 'sshd', 'polkitd', 'dbus-daemon')."""
        return self._named.get(name)

    # -- start -------------------------------------------------------------------

    def start(self):
        if self._started:
            return self
        self._started = True
        t0 = time.monotonic()
        missing = missing_tools()
        if missing:
            raise WorldError("missing programs: " + ", ".join(missing))
        for p in (self.bus_policy, self.polkit_policy, self.polkit_rules):
            if not p.is_file():
                raise WorldError(f"missing file {p} (source root {self.source_root}; "
                                 "set TG_SOURCE_ROOT?)")
        _install_handlers()
        self.cleanup_stale()
        _LIVE_WORLDS.append(self)
        try:
            self._make_dirs()
            self._make_network()
            keygens = self._make_users()
            if self.want_sshd:
                keygens.append(self._sshd_keygen())
            for p in keygens:
                if p.wait() != 0:
                    raise WorldError(f"ssh-keygen failed: {p.args}")
            self._finish_users()
            waits = []
            if self.want_bus:
                self._start_bus()
                if self.want_polkit:
                    waits.append(self._start_polkit())
            if self.want_sshd:
                waits.append(self._start_sshd())
            if self.want_services:
                waits.extend(self._start_services())
            for w in waits:
                w()
        except BaseException:
            try:
                self.dump_logs()
            finally:
                self.cleanup()
            raise
        self.setup_seconds = time.monotonic() - t0
        return self

    def _make_dirs(self):
        prefix = f"tg-{os.getpid()}-"
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.id = self.dir.name
        for d in ("logs", "bus", "polkit", "sshd", "authorized_keys", "users", "www",
                  "tools", "tunnelgate/etc", "tunnelgate/state"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir / d, 0o755)
        os.chmod(self.dir / "tunnelgate/state", 0o700)
        self.config_dir = self.dir / "tunnelgate/etc"
        self.state_dir = self.dir / "tunnelgate/state"
        # Tools that test users run must be readable by them even when the
        # source tree is not (e.g. under a 0700 home directory).
        for f in ("busclient.py", "dataserver.py"):
            shutil.copy(HERE / f, self.dir / "tools" / f)
            os.chmod(self.dir / "tools" / f, 0o644)
        self.dbus_tool = self.dir / "tools" / "busclient.py"

    # -- generic process helpers ------------------------------------------------

    def _root_env(self, env=None):
        e = {k: v for k, v in os.environ.items() if k.startswith(PASSTHROUGH_PREFIXES)}
        e.update({"PATH": ROOT_PATH, "LANG": "C.UTF-8", "HOME": "/root", "USER": "root",
                  "LOGNAME": "root", "TG_WORLD": self.id})
        if self.bus_address:
            e["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        e.update(self._nss_env)
        return _merge_env(e, env)

    def command(self, argv, ns=None, user=None):
        """The full argv that runs `argv` in namespace `ns` as `user` (None: root)."""
        pre = []
        nsname = self.nsname(ns)
        if nsname:
            pre += ["ip", "netns", "exec", nsname]
        if user is not None:
            u = self.user(user)
            pre += ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", "--"]
        return pre + [str(a) for a in argv]

    def _env_cwd(self, user, env, cwd):
        if user is not None:
            u = self.user(user)
            return self.user_env(u, env), cwd or str(u.home)
        return self._root_env(env), cwd or str(self.dir)

    def run(self, argv, ns=None, user=None, env=None, input=None, timeout=60, check=False,
            cwd=None, text=True):
        """Run a command to completion; returns subprocess.CompletedProcess (stdout, stderr).

        ns: 'client' | 'gateway' | 'intranet' | None (host); user: name or None (root).
        On timeout the whole process group is killed and WorldError raised.
        check=True raises WorldError on a non-zero exit status.
        """
        full = self.command(argv, ns, user)
        e, cwd = self._env_cwd(user, env, cwd)
        p = subprocess.Popen(full, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=cwd,
                             text=text, start_new_session=True)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            raise WorldError(f"timed out after {timeout}s: {shlex.join(full)}\n"
                             f"stdout: {out}\nstderr: {err}")
        cp = subprocess.CompletedProcess(full, p.returncode, out, err)
        if check and p.returncode != 0:
            raise WorldError(f"exit status {p.returncode}: {shlex.join(full)}\n"
                             f"stdout: {out}\nstderr: {err}")
        return cp

    def run_as(self, user, argv, ns="client", **kw):
        """run() as `user`, by default in the client namespace."""
        return self.run(argv, ns=ns, user=user, **kw)

    def spawn(self, argv, ns=None, user=None, env=None, name=None, cwd=None,
              stdin=subprocess.DEVNULL, stdout=None):
        """Start a tracked background process; its output goes to logs/<name>.log.

        Returns a Proc. It is killed (with its process group) at cleanup, or
        earlier with proc.stop(). stdout=subprocess.PIPE gives a pipe instead
        (stderr still goes to the log).
        """
        full = self.command(argv, ns, user)
        e, cwd = self._env_cwd(user, env, cwd)
        with self._lock:
            base = name or Path(str(argv[0])).name
            name, n = base, 1
            while name in self._named:
                n += 1
                name = f"{base}-{n}"
            log_path = self.dir / "logs" / f"{name}.log"
            logf = open(log_path, "ab")
            try:
                p = subprocess.Popen(full, stdin=stdin, stdout=stdout or logf, stderr=logf,
                                     env=e, cwd=cwd, start_new_session=True)
            finally:
                logf.close()
            proc = Proc(name, full, p, log_path)
            self._procs.append(proc)
            self._named[name] = proc
        return proc

    def spawn_as(self, user, argv, ns="client", **kw):
        """spawn() as `user`, by default in the client namespace."""
        return self.spawn(argv, ns=ns, user=user, **kw)

    def _track(self, proc):
        with self._lock:
            self._procs.append(proc)
            self._named[proc.name] = proc

    # -- data service helpers (for tests) --------------------------------------

    @staticmethod
    def data_echo(sock, data):
        """ECHO round trip on a connected data-service socket; returns what came back."""
        return _roundtrip(sock, b"ECHO\n", data, len(data))

    @staticmethod
    def data_hash(sock, data):
        """HASH on a connected data-service socket; returns the server's hex digest."""
        return _roundtrip(sock, b"HASH\n", data, None).decode().strip()

    @staticmethod
    def data_send(sock, n):
        """SEND n on a connected data-service socket; returns the bytes received."""
        sock.sendall(f"SEND {n}\n".encode())
        sock.shutdown(socket.SHUT_WR)
        return _recv_all(sock)

    pattern_bytes = staticmethod(dataserver.pattern_bytes)
    pattern_sha256 = staticmethod(dataserver.pattern_sha256)

    # -- intranet (and helper) services ----------------------------------------------

    def _start_services(self):
        www = self.dir / "www"
        self.intranet_page = (f"<!DOCTYPE html>\n<html><head><title>tunnelgate intranet</title>"
                              f"</head><body><h1>tunnelgate intranet page</h1>"
                              f"<p>world {self.id}</p></body></html>\n").encode()
        (www / "index.html").write_bytes(self.intranet_page)
        big = dataserver.pattern_bytes(4 << 20)
        (www / "big.bin").write_bytes(big)
        self.intranet_big_sha256 = hashlib.sha256(big).hexdigest()
        http = self.spawn([PYTHON, "-u", "-m", "http.server", str(HTTP_PORT), "--directory", www],
                          ns="intranet", name="intranet-http")
        tool = self.dir / "tools" / "dataserver.py"
        data = self.spawn([PYTHON, "-u", tool, "--listen", f"[::]:{DATA_PORT}"],
                          ns="intranet", name="intranet-data")
        self.gateway_data_socket = self.dir / "gateway-data.sock"
        gwdata = self.spawn([PYTHON, "-u", tool, "--listen", f"127.0.0.1:{DATA_PORT}",
                             "--listen", f"unix:{self.gateway_data_socket}"],
                            ns="gateway", name="gateway-data")
        cdata = self.spawn([PYTHON, "-u", tool, "--listen", f"127.0.0.1:{DATA_PORT}"],
                           ns="client", name="client-data")

        def wait_http():
            http.wait_log(r"Serving HTTP on", timeout=10.0)

        def wait_data():
            for p in (data, gwdata, cdata):
                p.wait_log(r"^READY", timeout=10.0)
        return [wait_http, wait_data]

    # -- logs ------------------------------------------------------------------------

    def logs(self):
        """{name: path} of every log the world has (daemon, valgrind, sshd, polkitd, bus, ...)."""
        out = {}
        if self.dir is None:
            return out
        order = ["tunnelgated", "sshd", "polkitd", "dbus-daemon"]
        procs = sorted(self._named.values(),
                       key=lambda p: (order.index(p.name) if p.name in order else len(order)))
        for p in procs:
            if p.log_path:
                out[p.name] = p.log_path
        for f in sorted(glob.glob(str(self.dir / "logs" / "*.log"))):
            name = Path(f).stem
            if name not in out and Path(f) not in out.values():
                out[name] = Path(f)
        return out

    def dump_logs(self, file=None, tail=200, names=None):
        """Print the logs (last `tail` lines each; None = all) to `file` (default stderr).
        Returns the text. names: only these logs."""
        file = file or sys.stderr
        chunks = [f"===== tunnelgate test world {self.id} ({self.dir}) ====="]
        for name, path in self.logs().items():
            if names and name not in names:
                continue
            text = _read(path)
            chunks.append(f"----- {name} ({path}) -----\n" + (_tail(text, tail) or "(empty)\n"))
        out = "\n".join(chunks) + "\n"
        try:
            file.write(out)
            file.flush()
        except (OSError, ValueError):
            pass
        return out

    # -- cleanup -----------------------------------------------------------------------

    def cleanup(self):
        """Kill everything, delete namespaces, hosts files, users, groups and the temp dir.

        Idempotent. Returns a list of problems (empty when everything went).
        """
        with self._lock:
            if self._cleaned or not self._started:
                return []
            self._cleaned = True
        errors = []

        def step(what, fn, *a):
            try:
                fn(*a)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{what}: {e}")

        if self.daemon is not None and self.daemon.alive():
            step("stop tunnelgated", lambda: self.daemon.stop(check=False, timeout=10))
        for p in reversed(self._procs):
            if isinstance(p, Daemon):
                step(f"stop {p.name}", lambda p=p: p.stop(timeout=10.0, check=False))
            else:
                step(f"stop {p.name}", p.stop, 3.0)
        for role, nsname in self.ns.items():
            step(f"kill processes in {nsname}", lambda n=nsname: _kill_pids(_ns_pids(n)))
        step("kill leftover processes", lambda: _kill_pids(_world_pids(self.id, self.dir)))
        for name in list(self.users):
            step(f"remove user {name}", self._remove_user, name)
        for g in self._groups_created:
            step(f"remove group {g}", lambda g=g: subprocess.run(["groupdel", g],
                                                                  capture_output=True))
        for role, nsname in self.ns.items():
            def delns(n=nsname):
                if os.path.exists(f"/run/netns/{n}"):
                    r = subprocess.run(["ip", "netns", "del", n], capture_output=True, text=True)
                    if r.returncode != 0:
                        raise WorldError(r.stderr.strip())
            step(f"delete netns {nsname}", delns)
            step(f"remove /etc/netns/{nsname}",
                 lambda n=nsname: shutil.rmtree(f"/etc/netns/{n}", ignore_errors=False)
                 if os.path.exists(f"/etc/netns/{n}") else None)
        step("remove the test directory", self._remove_directory)
        if self._etc_netns_created:
            try:
                os.rmdir("/etc/netns")
            except OSError:
                pass
        if self.dir is not None and self.dir.exists():
            if self.keep:
                print(f"tunnelgate test world {self.id}: kept {self.dir}", file=sys.stderr)
            else:
                step(f"remove {self.dir}", shutil.rmtree, self.dir)
        if self in _LIVE_WORLDS:
            _LIVE_WORLDS.remove(self)
        for e in errors:
            print(f"world cleanup: {e}", file=sys.stderr)
        return errors

    @staticmethod
    def cleanup_stale():
        """Remove what worlds of dead processes left behind (tg-<pid>-* namespaces,
        /etc/netns entries, /tmp dirs, test users). Things of live processes are kept."""
        def dead(name):
            m = re.match(r"tg-(\d+)-", name)
            return bool(m) and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))

        for d in glob.glob("/tmp/tg-*-*"):
            name = os.path.basename(d)
            if os.path.isdir(d) and dead(name):
                _kill_pids(_world_pids(name, d))
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if dead(name):
                _kill_pids(_ns_pids(name))
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if os.path.isdir("/etc/netns"):
            for name in os.listdir("/etc/netns"):
                if dead(name):
                    shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)
        for pw in pwd.getpwall():
            m = re.match(rf"{USER_MARKER} (tg-\d+-\S+)", pw.pw_gecos)
            if m and dead(m.group(1)):
                _kill_pids(_uids_processes(pw.pw_uid))
                subprocess.run(["userdel", "--remove", pw.pw_name], capture_output=True)
                subprocess.run(["groupdel", pw.pw_name], capture_output=True)
        for d in glob.glob("/tmp/tg-*-*"):
            if os.path.isdir(d) and dead(os.path.basename(d)):
                shutil.rmtree(d, ignore_errors=True)
        try:
            owner = (NSS_DIR / "owner").read_text().strip()
        except OSError:
            owner = None
        if owner is not None and dead(owner):
            shutil.rmtree(NSS_DIR, ignore_errors=True)



class WorldTestCase:
    """Mixin for unittest.TestCase: on a failing test, dump the world's logs.

    class T(world.WorldTestCase, unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.world = world.World(...).start()
            cls.addClassCleanup(cls.world.cleanup)
    """
    world = None
    dump_log_tail = 200

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        r = result if result is not None else out
        if r is not None and self.world is not None and \
                len(r.failures) + len(r.errors) > before:
            self.world.dump_logs(tail=self.dump_log_tail)
        return out


# ----------------------------------------------------------------------------
# demo / interactive use


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="Bring up the tunnelgate test world and wait "
                                "(Ctrl-C tears it down).")
    p.add_argument("--users", default=",".join(DEFAULT_USERS))
    p.add_argument("--daemon", action="store_true", help="also start tunnelgated")
    p.add_argument("--agent", action="append", default=[], help="start an ssh-agent for USER")
    a = p.parse_args(argv)
    require_root()
    with World(users=[u for u in a.users.split(",") if u]) as w:
        for u in a.agent:
            w.start_agent(u)
        if a.daemon:
            w.start_daemon()
        print(f"world {w.id} up in {w.setup_seconds:.2f}s, files in {w.dir}")
        print(f"  export DBUS_SYSTEM_BUS_ADDRESS={w.bus_address}")
        for role, ns in w.ns.items():
            print(f"  {role:9s} ip netns exec {ns} bash")
        print(f"  gateway {w.gateway_ip} (sshd ports {', '.join(map(str, w.sshd_ports))}), "
              f"intranet {w.intranet_ip} (http {HTTP_PORT}, data {DATA_PORT})")
        print(f"  host key {w.host_key_fingerprint}; known_hosts {w.known_hosts}")
        for u in w.users.values():
            print(f"  user {u.name} uid {u.uid} key {u.key}"
                  + (f" agent {u.agent_sock}" if u.agent_sock else ""))
        u0 = next(iter(w.users.values()), None)
        if u0:
            print("  e.g. " + shlex.join(w.command(w.ssh_argv(u0, ["true"]), "client", u0)))
        print("Ctrl-C to tear down")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

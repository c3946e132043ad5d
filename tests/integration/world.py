#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The tunnelgate integration-test world (Python 3.11, standard library only).

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
"""

import atexit
import base64
import ctypes
import glob
import hashlib
import os
import pwd
import grp
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

import busclient  # noqa: E402
import dataserver  # noqa: E402
import names  # noqa: E402

PYTHON = "/usr/bin/python3"
# tunnelgate's public names come from src/common/tg-names.h (names.py)
BUS_NAME = names.BUS_NAME
MANAGER_PATH = names.MANAGER_PATH
MANAGER_IFACE = names.MANAGER_INTERFACE
TUNNEL_IFACE = names.TUNNEL_INTERFACE
POLKIT_BUS_NAME = "org.freedesktop.PolicyKit1"

POLKITD = "/usr/lib/polkit-1/polkitd"
SSHD = "/usr/sbin/sshd"
HOST_ACTIONS_DIR = "/usr/share/polkit-1/actions"
POLKIT_BUS_POLICY = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
GLIB_VALGRIND_SUPP = "/usr/share/glib-2.0/valgrind/glib.supp"
VALGRIND_ERROR_EXIT = 97
USER_MARKER = "tunnelgate-test"      # GECOS prefix of users made by a world
DEFAULT_USERS = ("tg-alice", "tg-bob", "tg-mallory", "tg-admin")
HTTP_PORT = 80
DATA_PORT = 9000

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
# Variables handed on from the test runner to processes the world starts as root.
PASSTHROUGH_PREFIXES = ("G_", "ASAN_", "UBSAN_", "LSAN_", "MSAN_", "TSAN_", "MALLOC_",
                        "LIBSSH_", "TG_", "VALGRIND_")

REQUIRED_TOOLS = ("ip", "setpriv", "unshare", "mount", "useradd", "userdel", "groupadd",
                  "groupdel", "ssh", "ssh-keygen", "ssh-agent", "ssh-add", "dbus-daemon",
                  "busctl", "curl", SSHD, POLKITD)

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class WorldError(Exception):
    """Something in the test world did not work (the message says what, with logs)."""


class DaemonError(WorldError):
    """tunnelgated failed to start or to stop cleanly; .log holds its log."""

    def __init__(self, message, log=""):
        super().__init__(message)
        self.log = log


# ----------------------------------------------------------------------------
# environment checks


def source_root():
    """The source tree: $TG_SOURCE_ROOT, else two directories up from this file."""
    env = os.environ.get("TG_SOURCE_ROOT")
    return Path(env).resolve() if env else HERE.parents[1]


def build_root():
    """The build tree: $TG_BUILD_ROOT, else <source>/build."""
    env = os.environ.get("TG_BUILD_ROOT")
    return Path(env).resolve() if env else source_root() / "build"


def missing_tools():
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None and not os.access(t, os.X_OK)]


def require_root():
    """Exit with 77 (meson's "skipped") unless we can build a world here.

    Skips when not root, or when network namespaces cannot be made (e.g. an
    unprivileged container). Missing programs are an error, not a skip, so
    that a CI image without a package fails loudly.
    """
    if os.geteuid() != 0:
        print("SKIP: the tunnelgate integration tests need root (they create network "
              "namespaces, users, a private system bus, polkitd and sshd); "
              "run them with sudo or as root", file=sys.stderr)
        sys.exit(77)
    r = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        print("SKIP: cannot create network/mount namespaces here "
              f"(unshare --net --mount: {r.stderr.strip()})", file=sys.stderr)
        sys.exit(77)
    missing = missing_tools()
    if missing:
        print("ERROR: programs needed by the integration tests are missing: "
              + ", ".join(missing) + " (Debian: iproute2 util-linux passwd openssh-server "
              "openssh-client dbus-daemon dbus-bin systemd curl polkitd)", file=sys.stderr)
        sys.exit(1)


def _pid_alive(pid):
    """True if `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("State:"):
            return line.split()[1] not in ("Z", "X")
    return False


def _read(path, default=""):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def _tail(text, lines):
    if lines is None:
        return text
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return f"[... {len(parts) - lines} earlier lines ...]\n" + "\n".join(parts[-lines:]) + "\n"


def _ssh_fingerprint(pubkey_line):
    blob = base64.b64decode(pubkey_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _uids_processes(uid):
    """PIDs of live (not zombie) processes whose real or effective uid is `uid`."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        zombie = False
        for line in _read(f"/proc/{d}/status").splitlines():
            if line.startswith("State:"):
                zombie = line.split()[1] in ("Z", "X")
            elif line.startswith("Uid:"):
                if not zombie and str(uid) in line.split()[1:3]:
                    pids.append(int(d))
                break
    return pids


def _process_snapshot(pid):
    """What a process that would not stop was doing: each thread's name and
    kernel wait channel, and its children (a hang's first clue)."""
    lines = []

    def describe(p, indent):
        try:
            comm = _read(f"/proc/{p}/comm").strip()
            lines.append(f"{indent}pid {p} ({comm}) state "
                         f"{_read(f'/proc/{p}/stat').split(')')[-1].split()[0]}")
            for t in sorted(os.listdir(f"/proc/{p}/task"), key=int):
                lines.append(f"{indent}  thread {t} {_read(f'/proc/{p}/task/{t}/comm').strip()}"
                             f" waits in {_read(f'/proc/{p}/task/{t}/wchan').strip() or '-'}")
            children = _read(f"/proc/{p}/task/{p}/children").split()
        except (OSError, ValueError):
            return
        for c in children:
            describe(int(c), indent + "  ")

    describe(pid, "")
    return "\n".join(lines)


def _kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def world_processes(world_id, world_dir=None, prefix=False):
    """{pid: command line} of the live (not zombie) processes started for a
    world: TG_WORLD=<id> in their environment, or the world's directory in
    their command line. prefix=True: of any world whose id and directory start
    with world_id and world_dir (a world whose full id is not known)."""
    marker = f"TG_WORLD={world_id}".encode()
    wdir = None
    if world_dir:
        wdir = str(world_dir) if prefix else str(world_dir).rstrip("/") + "/"
        wdir = wdir.encode()
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        ours = any(e.startswith(marker) for e in env) if prefix else marker in env
        if state not in ("Z", "X") and (ours or (wdir and wdir in cmd)):
            found[int(d)] = cmd.replace(b"\0", b" ").decode(errors="replace")
    return found


def _world_pids(world_id, world_dir=None):
    """PIDs of the processes started for a world (world_processes())."""
    return list(world_processes(world_id, world_dir))


def _ns_pids(nsname):
    r = subprocess.run(["ip", "netns", "pids", nsname], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def in_netns(nsname, fn, *args, **kwargs):
    """Run fn(*args) in a fresh thread that has joined network namespace `nsname`.

    Sockets created there stay in that namespace, so this is how Python code
    connects to or listens on addresses inside the world. Returns fn's result.
    """
    box = {}

    def runner():
        try:
            fd = os.open(f"/run/netns/{nsname}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({nsname}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: B902 - handed back to the caller
            box["error"] = e

    t = threading.Thread(target=runner, name=f"netns-{nsname}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


# ----------------------------------------------------------------------------
# processes


class Proc:
    """A process started by the world. Output (stdout+stderr) goes to .log_path."""

    def __init__(self, name, argv, popen, log_path):
        self.name = name
        self.argv = argv
        self.popen = popen
        self.pid = popen.pid
        self.log_path = Path(log_path) if log_path else None

    def __repr__(self):
        return f"<Proc {self.name} pid={self.pid} rc={self.popen.returncode}>"

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def log(self, tail=None):
        return _tail(_read(self.log_path), tail) if self.log_path else ""

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def send_signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=5.0, sig=signal.SIGTERM, group=True):
        """Signal the process (and its process group), wait, SIGKILL if needed.

        Returns the exit status (negative: killed by that signal).
        """
        if self.alive():
            try:
                if group:
                    os.killpg(self.pid, sig)
                else:
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.alive() or group:
            try:
                os.killpg(self.pid, signal.SIGKILL)   # stragglers of the group
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.popen.stdout, self.popen.stdin, self.popen.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        return self.popen.returncode

    def wait_log(self, pattern, timeout=10.0, start=0):
        """Wait until the log matches regex `pattern` (from byte offset `start`)."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = _read(self.log_path)[start:]
            m = rx.search(text)
            if m:
                return m
            if not self.alive():
                raise WorldError(f"{self.name} exited with status {self.returncode} before "
                                 f"its log matched {pattern!r}:\n{self.log(tail=80)}")
            if time.monotonic() > deadline:
                raise WorldError(f"{self.name}: timed out after {timeout}s waiting for "
                                 f"{pattern!r} in its log:\n{self.log(tail=80)}")
            time.sleep(0.01)


class DaemonResult:
    """What stop() learned about a tunnelgated run."""

    def __init__(self, returncode, log, valgrind_log=""):
        self.returncode = returncode
        self.log = log
        self.valgrind_log = valgrind_log

    @property
    def ok(self):
        return self.returncode == 0

    def __repr__(self):
        return f"<DaemonResult rc={self.returncode}>"


class Daemon(Proc):
    """A running tunnelgated (see World.start_daemon)."""

    def __init__(self, name, argv, popen, log_path, *, valgrind_pattern=None,
                 config_dir=None, state_dir=None, known_hosts=None):
        super().__init__(name, argv, popen, log_path)
        self.valgrind_pattern = valgrind_pattern
        self.config_dir = config_dir
        self.state_dir = state_dir
        self.known_hosts = known_hosts
        self.result = None
        self.hang_report = ""

    @property
    def valgrind(self):
        return self.valgrind_pattern is not None

    def valgrind_log(self):
        if not self.valgrind_pattern:
            return ""
        return "".join(_read(p) for p in sorted(glob.glob(self.valgrind_pattern)))

    def stop(self, timeout=None, check=True, sig=signal.SIGTERM):
        """SIGTERM the daemon, wait for it, and return a DaemonResult.

        With check=True (default) raise DaemonError unless it exited with
        status 0 (under valgrind: VALGRIND_ERROR_EXIT means valgrind found errors).
        Calling stop() again returns the same result.
        """
        if self.result is not None:
            return self.result
        if timeout is None:
            timeout = 60.0 if self.valgrind else 10.0
        killed = False
        if self.alive():
            self.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.hang_report = _process_snapshot(self.pid)
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        rc = self.popen.returncode
        self.result = DaemonResult(rc, self.log(), self.valgrind_log())
        if check:
            why = None
            if killed:
                why = (f"did not exit within {timeout}s of {signal.Signals(sig).name}; "
                       f"killed. It was:\n{self.hang_report}")
            elif rc == VALGRIND_ERROR_EXIT and self.valgrind:
                why = "valgrind reported errors"
            elif rc != 0:
                why = (f"exited with status {rc}" if rc > 0
                       else f"was killed by {signal.Signals(-rc).name}")
            if why:
                text = f"tunnelgated {why}\n--- daemon log ---\n{_tail(self.result.log, 200)}"
                if self.result.valgrind_log:
                    text += f"--- valgrind log ---\n{_tail(self.result.valgrind_log, 300)}"
                raise DaemonError(text, self.result.log)
        return self.result


class User:
    """A test user made by the world."""

    def __init__(self, name, uid, gid, home, directory, groups):
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = Path(home)
        self.dir = Path(directory)            # per-world dir owned by the user (0700)
        self.key = self.dir / "id_ed25519"    # private key (owned by the user, 0600)
        self.pubkey_path = self.dir / "id_ed25519.pub"
        self.groups = list(groups)
        self.agent_sock = None                # set by World.start_agent
        self.agent = None                     # its Proc

    @property
    def pubkey(self):
        return _read(self.pubkey_path).strip()

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<User {self.name} uid={self.uid}>"


# ----------------------------------------------------------------------------
# the world

_LIVE_WORLDS = []
_sigterm_installed = False


def _cleanup_all_worlds():
    for w in list(_LIVE_WORLDS):
        try:
            w.cleanup()
        except Exception as e:  # noqa: BLE001
            print(f"world cleanup failed: {e}", file=sys.stderr)


def _on_sigterm(signum, frame):
    _cleanup_all_worlds()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers():
    global _sigterm_installed
    if _sigterm_installed:
        return
    _sigterm_installed = True
    atexit.register(_cleanup_all_worlds)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_sigterm)


class World:
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

    # -- names -------------------------------------------------------------------

    @property
    def client_ns(self):
        return self.ns.get("client")

    @property
    def gateway_ns(self):
        return self.ns.get("gateway")

    @property
    def intranet_ns(self):
        return self.ns.get("intranet")

    def nsname(self, ns):
        """'client'/'gateway'/'intranet' -> the namespace's real name; None/'host' -> None."""
        if ns in (None, "host", ""):
            return None
        return self.ns.get(ns, ns)

    def user(self, user):
        if isinstance(user, User):
            return user
        if user not in self.users:
            raise WorldError(f"{user!r} is not a user of this world ({', '.join(self.users)})")
        return self.users[user]

    def proc(self, name):
        """A process started by the world, by name (e.g. 'sshd', 'polkitd', 'dbus-daemon')."""
        return self._named.get(name)

    @property
    def daemon_binary(self):
        env = os.environ.get("TG_DAEMON")
        return Path(env) if env else self.build_root / "src" / "tunnelgated"

    @property
    def ctl_binary(self):
        env = os.environ.get("TG_CTL")
        return Path(env) if env else self.build_root / "src" / "ctl" / "tunnelgatectl"

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

    def _ip(self, *args, ns=None, input=None):
        argv = ["ip"] + (["-n", self.nsname(ns)] if ns else []) + list(args)
        r = subprocess.run(argv, input=input, capture_output=True, text=True)
        if r.returncode != 0:
            raise WorldError(f"{' '.join(argv)} failed: {r.stderr.strip()}\n{input or ''}")
        return r.stdout

    def _make_network(self):
        for role in ("client", "gateway", "intranet"):
            name = f"{self.id}-{role}"
            self._ip("netns", "add", name)
            self.ns[role] = name
        c, g, i = self.client_ns, self.gateway_ns, self.intranet_ns
        self._ip("link", "add", "gw0", "netns", c, "type", "veth", "peer", "name", "client0",
                 "netns", g)
        self._ip("link", "add", "intra0", "netns", g, "type", "veth", "peer", "name", "gw0",
                 "netns", i)
        self._ip("-batch", "-", ns="client", input="\n".join([
            "link set lo up",
            f"addr add {self.client_ip}/24 dev gw0",
            f"addr add {self.client_ip6}/64 dev gw0 nodad",
            "link set gw0 up", ""]))
        self._ip("-batch", "-", ns="gateway", input="\n".join([
            "link set lo up",
            f"addr add {self.gateway_ip}/24 dev client0",
            f"addr add {self.gateway_ip6}/64 dev client0 nodad",
            f"addr add {self.gateway_inner_ip}/24 dev intra0",
            f"addr add {self.gateway_inner_ip6}/64 dev intra0 nodad",
            "link set client0 up", "link set intra0 up", ""]))
        self._ip("-batch", "-", ns="intranet", input="\n".join([
            "link set lo up",
            f"addr add {self.intranet_ip}/24 dev gw0",
            f"addr add {self.intranet_ip6}/64 dev gw0 nodad",
            "link set gw0 up", ""]))

        def no_forwarding():
            for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
                with open(path, "w") as f:
                    f.write("0")
        in_netns(g, no_forwarding)

        # Names, via iproute2's per-namespace /etc/netns/<ns>/hosts (bind-mounted
        # over /etc/hosts by "ip netns exec").
        base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts = {
            "client": f"{self.client_ip}\tclient\n{self.gateway_ip}\tgw gateway\n"
                      f"{self.gateway_ip6}\tgw6\n",
            "gateway": f"{self.gateway_ip}\tgw gateway\n{self.client_ip}\tclient\n"
                       f"{self.intranet_ip}\tintra intranet\n{self.client_ip6}\tclient6\n"
                       f"{self.intranet_ip6}\tintra6\n",
            "intranet": f"{self.intranet_ip}\tintra intranet\n{self.gateway_inner_ip}\tgw gateway\n"
                        f"{self.gateway_inner_ip6}\tgw6\n",
        }
        if not os.path.isdir("/etc/netns"):
            os.makedirs("/etc/netns", mode=0o755, exist_ok=True)
            self._etc_netns_created = True
        for role, text in hosts.items():
            d = Path("/etc/netns") / self.ns[role]
            d.mkdir(mode=0o755)
            (d / "hosts").write_text(f"# tunnelgate test world {self.id}, {role}\n" + base + text)
            os.chmod(d / "hosts", 0o644)

    # -- users -------------------------------------------------------------------

    def _make_users(self):
        keygens = []
        for name in self.want_users:
            keygens.append(self._add_user(name, self.want_groups.get(name, ())))
        return keygens

    def add_user(self, name, groups=()):
        """Create another test user (with key pair and authorized key) on a running world."""
        p = self._add_user(name, groups)
        if p.wait() != 0:
            raise WorldError(f"ssh-keygen for {name} failed")
        self._finish_users([name])
        return self.users[name]

    def _add_user(self, name, groups):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            pw = None
        if pw is not None:
            m = re.match(rf"{USER_MARKER} (tg-(\d+)-\S+)", pw.pw_gecos)
            if not m:
                raise WorldError(f"user {name} already exists and was not made by a test world; "
                                 "refusing to touch it")
            owner, pid = m.group(1), int(m.group(2))
            if any(w.id == owner and not w._cleaned for w in _LIVE_WORLDS) or \
                    (pid != os.getpid() and _pid_alive(pid)):
                raise WorldError(f"user {name} belongs to the live test world {owner}")
            self._remove_user(name)
        for g in groups:
            try:
                grp.getgrnam(g)
            except KeyError:
                self._run_checked(["groupadd", g])
                self._groups_created.append(g)
        argv = ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*",
                "--user-group", "--comment", f"{USER_MARKER} {self.id}"]
        if groups:
            argv += ["--groups", ",".join(groups)]
        self._run_checked(argv + [name])
        pw = pwd.getpwnam(name)
        udir = self.dir / "users" / name
        udir.mkdir(mode=0o700)
        os.chown(udir, pw.pw_uid, pw.pw_gid)
        u = User(name, pw.pw_uid, pw.pw_gid, pw.pw_dir, udir, groups)
        self.users[name] = u
        return subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                 f"{name}@{self.id}", "-f", str(u.key)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def _finish_users(self, names=None):
        for name in names or list(self.users):
            u = self.users[name]
            for f, mode in ((u.key, 0o600), (u.pubkey_path, 0o644)):
                os.chown(f, u.uid, u.gid)
                os.chmod(f, mode)
            ak = self.dir / "authorized_keys" / name
            ak.write_text(u.pubkey + "\n")
            os.chmod(ak, 0o644)

    def _remove_user(self, name):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return
        for _ in range(3):
            pids = _uids_processes(pw.pw_uid)
            if not pids:
                break
            _kill_pids(pids)
            time.sleep(0.05)
        r = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        if r.returncode not in (0, 12):      # 12: could not remove home (already gone)
            raise WorldError(f"userdel {name} failed: {r.stderr.strip()}")
        try:
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True)
        except KeyError:
            pass

    def _run_checked(self, argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise WorldError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    # -- generic process helpers ------------------------------------------------

    def _root_env(self, env=None):
        e = {k: v for k, v in os.environ.items() if k.startswith(PASSTHROUGH_PREFIXES)}
        e.update({"PATH": ROOT_PATH, "LANG": "C.UTF-8", "HOME": "/root", "USER": "root",
                  "LOGNAME": "root", "TG_WORLD": self.id})
        if self.bus_address:
            e["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        return e

    def user_env(self, user, env=None):
        """The environment of a command run as `user`: HOME USER LOGNAME SHELL PATH LANG,
        DBUS_SYSTEM_BUS_ADDRESS, SSH_AUTH_SOCK (once start_agent ran); `env` overrides
        (a value of None removes the variable)."""
        u = self.user(user)
        e = {"HOME": str(u.home), "USER": u.name, "LOGNAME": u.name, "SHELL": "/bin/bash",
             "PATH": USER_PATH, "LANG": "C.UTF-8", "TG_WORLD": self.id}
        if self.bus_address:
            e["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        if u.agent_sock:
            e["SSH_AUTH_SOCK"] = str(u.agent_sock)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        return e

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

    # -- sockets inside namespaces ---------------------------------------------

    def socket(self, ns, family=socket.AF_INET, type=socket.SOCK_STREAM):
        """A new socket that lives in namespace `ns` ('client', 'gateway', 'intranet')."""
        return in_netns(self.nsname(ns), socket.socket, family, type)

    def connect(self, ns, host, port, timeout=10.0):
        """A TCP connection made from inside namespace `ns` to host:port (addresses, not names)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = self.socket(ns, family)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except BaseException:
            s.close()
            raise
        return s

    def listen(self, ns, host="127.0.0.1", port=0, backlog=128):
        """A listening TCP socket inside namespace `ns`; port 0 = any (see getsockname())."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = self.socket(ns, family)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
        return s

    def wait_port(self, ns, host, port, timeout=10.0, proc=None):
        """Wait until host:port accepts TCP connections from namespace `ns`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self.connect(ns, host, port, timeout=1.0).close()
                return
            except OSError as e:
                last = e
            if proc is not None and not proc.alive():
                raise WorldError(f"{proc.name} exited ({proc.returncode}) while waiting for "
                                 f"{host}:{port} in {ns}:\n{proc.log(tail=50)}")
            time.sleep(0.02)
        raise WorldError(f"{host}:{port} not reachable from {ns} after {timeout}s: {last}")

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

    # -- private system bus --------------------------------------------------------

    def bus_config(self, listen):
        """The dbus-daemon configuration: Debian's system.conf minus activation,
        syslog, pidfile, <user> and the system.d include directories, plus exactly
        the project's and polkit's bus policy files."""
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

    # -- sshd ----------------------------------------------------------------------------

    def _sshd_keygen(self):
        d = self.dir / "sshd"
        self.host_key = d / "ssh_host_ed25519_key"
        return subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                 f"gateway@{self.id}", "-f", str(self.host_key)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def sshd_config(self, extra=None):
        d = self.dir / "sshd"
        listen = "\n".join(f"ListenAddress {self.gateway_ip}:{p}" for p in self.sshd_ports)
        extra = self.sshd_config_extra if extra is None else extra
        (d / "sshd_config.d").mkdir(mode=0o755, exist_ok=True)
        return f"""# sshd of the tunnelgate test world {self.id} (gateway namespace)
# First, as Debian's sshd_config does: drop-ins (server mode writes one) win.
Include {d / 'sshd_config.d'}/*.conf
{listen}
HostKey {self.host_key}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {self.dir / 'authorized_keys'}/%u
# The authorized_keys files live under /tmp (mode 1777), which StrictModes rejects.
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
GatewayPorts no
PermitTunnel no
X11Forwarding no
AllowAgentForwarding no
PrintMotd no
UseDNS no
LogLevel VERBOSE
MaxStartups 200:30:400
MaxSessions 200
ClientAliveInterval 0
Subsystem sftp internal-sftp
{extra}
"""

    def _start_sshd(self, extra=None):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # privilege separation dir
        cfg = self.dir / "sshd" / "sshd_config"
        self.sshd_config_path = cfg
        self.sshd_dropin_dir = self.dir / "sshd" / "sshd_config.d"
        cfg.write_text(self.sshd_config(extra))
        t = self.run([SSHD, "-t", "-f", cfg], ns="gateway")
        if t.returncode != 0:
            raise WorldError(f"sshd -t rejected {cfg}:\n{t.stderr}\n{cfg.read_text()}")
        pub = Path(str(self.host_key) + ".pub").read_text().strip()
        kt, blob = pub.split()[:2]
        self.host_pubkey = f"{kt} {blob}"
        self.host_key_fingerprint = _ssh_fingerprint(pub)
        self.known_hosts_line = f"gw,{self.gateway_ip} {kt} {blob}"
        lines = [self.known_hosts_line]
        for port in self.sshd_ports:
            if port != 22:
                lines.append(f"[gw]:{port},[{self.gateway_ip}]:{port} {kt} {blob}")
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("\n".join(lines) + "\n")
        os.chmod(self.known_hosts, 0o644)
        p = self.spawn([SSHD, "-D", "-e", "-f", cfg], ns="gateway", name="sshd")

        def wait():
            for port in self.sshd_ports:
                p.wait_log(rf"Server listening on {re.escape(self.gateway_ip)} port {port}\b",
                           timeout=10.0)
        return wait

    def restart_sshd(self, extra_config=None):
        """Restart sshd with a new sshd_config tail (None: the one given to World())."""
        old = self._named.pop("sshd", None)
        if old:
            old.stop()
            self._procs.remove(old)
            os.rename(old.log_path, old.log_path.with_suffix(f".{int(time.time() * 1000)}.log"))
        self._start_sshd(extra_config)()

    def ssh_argv(self, user, command=(), *, options=(), host="gw", port=None, identity=True,
                 known_hosts=None):
        """argv of an OpenSSH client call as `user`: batch mode, the world's known_hosts,
        strict host key checking, no ~/.ssh/config. identity=False: use the agent
        (SSH_AUTH_SOCK) or nothing."""
        u = self.user(user)
        argv = ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                "-o", "LogLevel=ERROR"]
        if identity:
            argv += ["-i", str(u.key), "-o", "IdentitiesOnly=yes"]
        if port is not None:
            argv += ["-p", str(port)]
        argv += list(options)
        argv += [f"{u.name}@{host}"]
        argv += list(command)
        return argv

    def start_agent(self, user, add_key=True, ns="client"):
        """Start `ssh-agent -D` as `user` and ssh-add their key; returns the socket path.

        Later commands run as the user get SSH_AUTH_SOCK automatically.
        """
        u = self.user(user)
        if u.agent is not None and u.agent.alive():
            return str(u.agent_sock)
        sock = u.dir / "agent.sock"
        try:
            sock.unlink()
        except FileNotFoundError:
            pass
        p = self.spawn_as(u, ["ssh-agent", "-D", "-a", sock], ns=ns, name=f"ssh-agent-{u.name}")
        deadline = time.monotonic() + 10
        while not sock.exists():
            if not p.alive() or time.monotonic() > deadline:
                raise WorldError(f"ssh-agent for {u.name} did not start:\n{p.log()}")
            time.sleep(0.005)
        u.agent, u.agent_sock = p, sock
        if add_key:
            r = self.run_as(u, ["ssh-add", "-q", u.key], ns=ns, env={"SSH_AUTH_SOCK": sock})
            if r.returncode != 0:
                raise WorldError(f"ssh-add for {u.name} failed: {r.stderr}")
        return str(sock)

    def stop_agent(self, user):
        u = self.user(user)
        if u.agent is not None:
            u.agent.stop()
        u.agent, u.agent_sock = None, None

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

    # -- tunnelgated ---------------------------------------------------------------------

    def write_config(self, relpath, text, mode=0o644):
        """Write a file under the daemon's --config-dir (e.g. 'policy.conf', 'profiles.d/x.conf')."""
        p = self.config_dir / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, mode)
        return p

    def start_daemon(self, binary=None, *, args=(), env=None, config_dir=None, state_dir=None,
                     known_hosts=None, ns="client", timeout=None, valgrind=None, wait=True,
                     verbose=True, prefix=()):
        """Start tunnelgated as root in the client namespace on the private bus.

        Runs `tunnelgated --bus-address ADDR --state-dir DIR --config-dir DIR
        --system-known-hosts FILE --verbose [args]` with DBUS_SYSTEM_BUS_ADDRESS
        set; output goes to logs/tunnelgated.log. Waits until the bus name
        org.tunnelgate.TunnelGate1 has an owner (timeout 10 s, 60 s under
        valgrind), else raises DaemonError with the log. valgrind: default
        $TG_VALGRIND == "1". `prefix`: a command that is handed the daemon's
        command line (e.g. systemd-cat, which execs it with stdout and stderr
        connected to the journal). Returns a Daemon (also stored in self.daemon).
        """
        binary = Path(binary) if binary else self.daemon_binary
        if not os.access(binary, os.X_OK):
            raise DaemonError(f"tunnelgated binary {binary} does not exist or is not executable "
                              "(build first; TG_BUILD_ROOT / TG_DAEMON select it)")
        if valgrind is None:
            valgrind = os.environ.get("TG_VALGRIND") == "1"
        if timeout is None:
            timeout = 60.0 if valgrind else 10.0
        config_dir = Path(config_dir or self.config_dir)
        state_dir = Path(state_dir or self.state_dir)
        known_hosts = Path(known_hosts or self.known_hosts or (self.dir / "known_hosts"))
        if not known_hosts.exists():
            known_hosts.touch()
        argv = [str(binary), "--bus-address", self.bus_address, "--state-dir", str(state_dir),
                "--config-dir", str(config_dir), "--system-known-hosts", str(known_hosts)]
        if verbose:
            argv.append("--verbose")
        argv += [str(a) for a in args]
        denv = dict(env or {})
        vg_pattern = None
        n = sum(1 for k in self._named if k.startswith("tunnelgated"))
        name = "tunnelgated" if n == 0 else f"tunnelgated-{n + 1}"
        if valgrind:
            vg_pattern = str(self.dir / "logs" / f"valgrind-{name}.%p.log")
            vg = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                  "--errors-for-leak-kinds=definite", f"--error-exitcode={VALGRIND_ERROR_EXIT}",
                  "--num-callers=40", "--track-fds=no", f"--log-file={vg_pattern}"]
            if os.path.exists(GLIB_VALGRIND_SUPP):
                vg.append(f"--suppressions={GLIB_VALGRIND_SUPP}")
            local_supp = HERE / "valgrind.supp"
            if local_supp.exists():
                vg.append(f"--suppressions={local_supp}")
            argv = vg + argv
            vg_pattern = vg_pattern.replace("%p", "*")
            denv.setdefault("G_SLICE", "always-malloc")
            denv.setdefault("G_DEBUG", "gc-friendly")
        argv = [str(a) for a in prefix] + argv
        full = self.command(argv, ns)
        e = self._root_env(denv)
        log_path = self.dir / "logs" / f"{name}.log"
        with open(log_path, "ab") as logf:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=e,
                                 cwd="/", start_new_session=True)
        d = Daemon(name, full, p, log_path, valgrind_pattern=vg_pattern, config_dir=config_dir,
                   state_dir=state_dir, known_hosts=known_hosts)
        self._track(d)
        self.daemon = d
        if wait:
            self.wait_daemon(d, timeout)
        return d

    def wait_daemon(self, daemon=None, timeout=10.0):
        d = daemon or self.daemon
        with self.bus_connection() as bus:
            ok = bus.wait_for_name(BUS_NAME, timeout=timeout, alive=d.alive)
        if not ok:
            if d.alive():
                what = f"did not own {BUS_NAME} within {timeout}s"
                d.stop(check=False, timeout=5)
            else:
                what = f"exited with status {d.returncode} before owning {BUS_NAME}"
            log = d.log()
            text = f"tunnelgated {what}\n--- daemon log ---\n{_tail(log, 200)}"
            vg = d.valgrind_log()
            if vg:
                text += f"--- valgrind log ---\n{_tail(vg, 200)}"
            raise DaemonError(text, log)
        return d

    def stop_daemon(self, check=True, timeout=None):
        """Stop the last started daemon; returns its DaemonResult (None if none)."""
        if self.daemon is None:
            return None
        return self.daemon.stop(timeout=timeout, check=check)

    def busctl(self, user, *args, json=False, check=False, timeout=60, ns="client", env=None):
        """Run `busctl --system ARGS` (the private bus via DBUS_SYSTEM_BUS_ADDRESS) as `user`
        (None: root) in `ns`. Note busctl allows interactive authorization by default.
        Returns CompletedProcess, or the parsed output with json=True (raises on failure)."""
        import json as _json
        argv = ["busctl", "--system", "--no-pager"] + (["--json=short"] if json else [])
        argv += [str(a) for a in args]
        r = self.run(argv, ns=ns, user=user, timeout=timeout, env=env, check=check or json)
        if json:
            return _json.loads(r.stdout) if r.stdout.strip() else None
        return r

    def ctl(self, user, *args, check=False, timeout=60, ns="client", env=None):
        """Run tunnelgatectl ARGS as `user` (None: root) in `ns`."""
        return self.run([self.ctl_binary] + list(args), ns=ns, user=user, timeout=timeout,
                        env=env, check=check)

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


# ----------------------------------------------------------------------------
# small helpers


def _readline_timeout(f, timeout):
    import select
    fd = f.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        c = os.read(fd, 1)
        if not c:
            break
        buf += c
    return buf


def _recv_all(sock):
    chunks = []
    while True:
        c = sock.recv(256 * 1024)
        if not c:
            break
        chunks.append(c)
    return b"".join(chunks)


def _roundtrip(sock, header, data, expect_len):
    """Send header+data from a thread while receiving until EOF (no deadlock on big data)."""
    err = []

    def writer():
        try:
            sock.sendall(header)
            view = memoryview(data)
            for off in range(0, len(view), 256 * 1024):
                sock.sendall(view[off:off + 256 * 1024])
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        got = _recv_all(sock)
    finally:
        t.join()
    if err:
        raise err[0]
    return got


recv_all = _recv_all       # public names for tests
roundtrip = _roundtrip


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

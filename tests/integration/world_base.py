#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The parts of the test world (world.py) that every other part uses:
constants, errors, the environment checks, finding and killing processes,
in_netns(), Proc, the registry of live worlds and small socket helpers.
"""

import atexit
import base64
import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

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
# The test directory's data (tests/nss/nss-tgtest.c reads it from here).
NSS_DIR = Path("/run/tunnelgate-test-nss")
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


def _merge_env(e, env):
    """`e` with `env` laid over it: a value None removes the name. Returns e."""
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


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


# ----------------------------------------------------------------------------
# live worlds (cleaned up at exit and on SIGTERM/SIGHUP)

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


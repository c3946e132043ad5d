#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The systemd unit, for real (issue 12): tunnelgate.service as `meson install
--prefix=/usr` installs it, started by a real systemd (PID 1 of a container)
through D-Bus activation, with its whole sandbox applied by systemd.

These machines do not boot systemd, so the test boots one: a minimal Debian
12 tree (debootstrap, made once and cached in $TG_SANDBOX_CACHE, default
/var/cache/tunnelgate-test) with systemd, dbus, polkitd, OpenSSH and curl,
used through an overlay so that the cache stays clean, and booted with
`systemd-nspawn --boot` on a network of its own. Everything runs inside:

  * the unit is activated by a user's OpenTunnel call and is active; its
    sandbox is in force in the kernel, not only in `systemctl show`: the
    daemon's /proc status (no new privileges, seccomp, the capability
    bounding set), its mounts (/usr and /home read-only) and its cgroup's
    pids.max and memory limit are checked against the unit;
  * a user with an ssh-agent named by path under /tmp (ssh-agent's default)
    opens a tunnel to the container's sshd on loopback with Unix-socket
    listeners in /tmp and in their home, and fetches a page through both:
    the sockets are theirs, mode 0600, where they see them;
  * root, whose processes the kernel does not show the daemon, gets its
    paths resolved in the daemon's own view: its agent in /tmp is found, and
    a socket it asks for in /tmp is refused (read-only), not hidden;
  * TasksMax bites (lowered with `systemctl set-property --runtime`, a
    drop-in): a new tunnel is refused with LimitExceeded naming the thread
    it could not start, the daemon answers, the open tunnel still carries,
    and with the limit back a tunnel opens again.

Cgroups: on a host whose controllers are cgroup v1 hierarchies (these
machines: no systemd, hybrid mounts), nspawn gives the container its
controllers read-only, so systemd inside could not set pids.max. The
container runs in a cgroup of its own below the test's in every hierarchy
(removed at the end), and the pids and memory hierarchies are remounted
read-write inside the container, whose systemd is then re-executed to see
them. Mounts are made in a private mount namespace of the test (the overlay,
a tmpfs over /run for nspawn's state): nothing is left mounted.

Time: debootstrap about 1.5 minutes the first time, the /usr build half a
minute, the rest under a minute.

Run as root: TG_SOURCE_ROOT=. /usr/bin/python3 tests/integration/test_unit_sandbox.py -v
(exits 77 = skipped when not root). Needs systemd-nspawn (systemd-container)
and debootstrap (scripts/install-deps installs both).
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import names  # noqa: E402

SOURCE = Path(os.environ.get("TG_SOURCE_ROOT", HERE.parent.parent))
CACHE = Path(os.environ.get("TG_SANDBOX_CACHE", "/var/cache/tunnelgate-test"))
NS_MARK = "TG_SANDBOX_NAMESPACE"
SUITE = "bookworm"
PACKAGES = sorted("""
    systemd systemd-sysv libpam-systemd dbus polkitd
    openssh-server openssh-client curl busybox libglib2.0-bin
    libglib2.0-0 libssh-4 libpolkit-gobject-1-0 libnftnl11 libmnl0
""".split())
BUS = names.BUS_NAME
MPATH = names.MANAGER_PATH
MIFACE = names.MANAGER_INTERFACE
TIFACE = names.TUNNEL_INTERFACE
ERR = names.ERROR_PREFIX
UNIT = "tunnelgate.service"
USER = "alice"
PAGE = "tunnelgate sandbox test page\n"
WEB = "127.0.0.1:8080"
POLICY = """# test_unit_sandbox.py
PermitServer 127.0.0.1:22
PermitOpen 127.0.0.1:8080
"""
# what the unit must say, as systemctl show prints it
SANDBOX = {
    "ProtectSystem": "strict",
    "ProtectHome": "read-only",
    "PrivateTmp": "no",
    "PrivateMounts": "yes",
    "PrivateDevices": "yes",
    "ProtectProc": "invisible",
    "NoNewPrivileges": "yes",
    "RestrictNamespaces": "yes",
    "MemoryDenyWriteExecute": "yes",
    "TasksMax": "12288",
    "MemoryMax": str(8 * 1024 ** 3),
}
CAPABILITIES = {"cap_setuid", "cap_setgid", "cap_kill", "cap_net_admin",
                "cap_net_bind_service"}
CAP_BITS = {"cap_setuid": 7, "cap_setgid": 6, "cap_kill": 5, "cap_net_admin": 12,
            "cap_net_bind_service": 10}
BOOT_TIMEOUT = 90


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(argv, check=True, timeout=600, **kw):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(str(a) for a in argv)}: exit {r.returncode}\n"
                           f"{r.stdout[-4000:]}{r.stderr[-4000:]}")
    return r


# ----------------------------------------------------------------------------
# the tree: debootstrap once, cached


def debian_mirror():
    """The Debian archive apt uses here (deb822 or one-line sources)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if ("deb" in fields.get("Types", "").split() and
                    SUITE in fields.get("Suites", "").split() and fields.get("URIs")):
                return fields["URIs"].split()[0]
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == SUITE:
                    return m.group(1)
    return "http://deb.debian.org/debian"


def cached_tree():
    """The cached tree, made now if it is not there (one maker at a time)."""
    key = hashlib.sha256(" ".join([SUITE] + PACKAGES).encode()).hexdigest()[:12]
    tree = CACHE / f"{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / ".tunnelgate-complete").exists():
            log(f"tree: cached {tree}")
            return tree
        for stale in CACHE.glob(f"{SUITE}-*"):      # other package lists, unfinished
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(f"{tree}.partial")
        mirror = debian_mirror()
        log(f"tree: debootstrap {SUITE} from {mirror} into {partial}")
        started = time.monotonic()
        r = run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, partial, mirror], check=False, timeout=900)
        if r.returncode != 0:
            log_file = partial / "debootstrap" / "debootstrap.log"
            detail = log_file.read_text()[-4000:] if log_file.exists() else ""
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"debootstrap failed ({r.returncode}):\n{r.stderr[-3000:]}\n"
                               f"{detail}")
        shutil.rmtree(partial / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (partial / ".tunnelgate-complete").write_text(" ".join(PACKAGES) + "\n")
        partial.rename(tree)
        log(f"tree: made in {time.monotonic() - started:.0f}s")
        return tree


# ----------------------------------------------------------------------------
# cgroups: the container's own, below the test's, in every hierarchy


class Cgroups:
    """systemd's own hierarchies and the two controllers the unit's limits
    use (the others stay as they are: a new cpuset cgroup, for one, takes no
    process until it is given CPUs)."""
    CONTROLLERS = ("pids", "memory", "name=systemd", "")

    def __init__(self, name):
        self.dirs = []
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                mount = ("/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers")
                         else "/sys/fs/cgroup/unified")
            elif any(c in self.CONTROLLERS for c in controllers.split(",")):
                first = controllers.split(",")[0]
                mount = f"/sys/fs/cgroup/{first.removeprefix('name=')}"
            else:
                continue
            base = os.path.join(mount, path.lstrip("/"))
            if os.path.exists(os.path.join(base, "cgroup.procs")):
                self.dirs.append(os.path.join(base, name))

    def enter(self):
        """For preexec_fn: this process into the container's cgroups."""
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def processes(self):
        found = set()
        for top in self.dirs:
            for d, _, _ in os.walk(top):
                try:
                    found.update(int(p) for p in Path(d, "cgroup.procs").read_text().split())
                except OSError:
                    pass
        return found

    def remove(self):
        """Whatever still runs in them is killed (the container's processes
        end when its PID 1 does, but not at once), then they are removed."""
        deadline = time.monotonic() + 30
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for top in self.dirs:
            for d, _, _ in sorted(os.walk(top, topdown=False), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log(f"cannot remove cgroup {d}: {e}")


# ----------------------------------------------------------------------------
# the container


class Container:
    def __init__(self, tree, workdir):
        self.tree = tree
        self.dir = Path(workdir)
        self.root = self.dir / "root"
        self.cgroups = Cgroups(f"tunnelgate-sandbox-{os.getpid()}")
        self.proc = None
        self.leader = None
        self.mounted = []

    def build_and_install(self):
        build = self.dir / "build"
        started = time.monotonic()
        run(["meson", "setup", build, SOURCE, "--prefix=/usr", "-Dtests=false",
             "-Dman=false", "-Dwerror=true"])
        run(["ninja", "-C", build])
        run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", self.root])
        log(f"build: tunnelgate --prefix=/usr built and installed in "
            f"{time.monotonic() - started:.0f}s")

    def mount(self):
        for d in ("upper", "work", "root"):
            (self.dir / d).mkdir()
        run(["mount", "-t", "overlay", "tg-sandbox", "-o",
             f"lowerdir={self.tree},upperdir={self.dir / 'upper'},"
             f"workdir={self.dir / 'work'}", self.root])
        self.mounted.append(self.root)
        # nspawn's own state (/run/systemd/nspawn) stays in this namespace
        run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tg-sandbox-run", "/run"])
        self.mounted.append(Path("/run"))

    def prepare(self):
        """What the tree needs before it boots: the user, their key, the
        policy, polkit rules, a page to serve, sshd's known host keys."""
        r = self.root
        Path(r / "etc/hostname").write_text("tg-sandbox\n")
        (r / "etc/tunnelgate").mkdir(exist_ok=True)
        Path(r / "etc/tunnelgate/policy.conf").write_text(POLICY)
        (r / "etc/polkit-1/rules.d").mkdir(parents=True, exist_ok=True)
        shutil.copy(SOURCE / "polkit/50-tunnelgate.rules.example",
                    r / "etc/polkit-1/rules.d/50-tunnelgate.rules")
        (r / "srv/www").mkdir(parents=True, exist_ok=True)
        Path(r / "srv/www/index.html").write_text(PAGE)
        # a web server on loopback for the tunnels to reach
        Path(r / "etc/systemd/system/tg-web.service").write_text(
            "[Service]\nExecStart=/bin/busybox httpd -f -p " + WEB + " -h /srv/www\n"
            "[Install]\nWantedBy=multi-user.target\n")
        os.symlink("/etc/systemd/system/tg-web.service",
                   r / "etc/systemd/system/multi-user.target.wants/tg-web.service")

    def start(self):
        log_file = open(self.dir / "nspawn.log", "wb")
        env = dict(os.environ, SYSTEMD_LOG_LEVEL="info")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--directory", str(self.root), "--boot",
             "--machine", "tg-sandbox", "--register=no", "--keep-unit",
             "--private-network", "--console=passive"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            preexec_fn=self.cgroups.enter, start_new_session=True)
        log_file.close()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.leader is None:
            self.leader = self.find_leader()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the container did not start:\n{self.console()}")
            time.sleep(0.1)
        while True:
            r = self.run(["systemctl", "is-system-running"], check=False)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the container did not boot ({state}):\n{self.console()}")
            time.sleep(0.2)
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-pager"], check=False).stdout
            log(f"container: degraded:\n{failed}")
        self.writable_controllers()

    def find_leader(self):
        """The container's PID 1: a descendant of nspawn whose NSpid ends in 1."""
        children = {}
        for status in glob.glob("/proc/[0-9]*/status"):
            try:
                text = Path(status).read_text()
            except OSError:
                continue
            ppid = int(re.search(r"^PPid:\s*(\d+)", text, re.M).group(1))
            nspid = re.search(r"^NSpid:\s*(.*)$", text, re.M).group(1).split()
            children.setdefault(ppid, []).append((int(status.split("/")[2]), nspid))
        todo = [self.proc.pid]
        while todo:
            for pid, nspid in children.get(todo.pop(), []):
                if len(nspid) > 1 and nspid[-1] == "1":
                    return pid
                todo.append(pid)
        return None

    def writable_controllers(self):
        """nspawn mounts cgroup v1 controllers read-only in the container (on a
        host without systemd); the unit's TasksMax and MemoryMax need pids and
        memory. Those two are made writable (below the container's own cgroup
        on the host), and systemd re-executed to see them."""
        changed = False
        for controller in ("pids", "memory"):
            mount = f"/sys/fs/cgroup/{controller}"
            r = self.run(["findmnt", "-n", "-o", "OPTIONS", mount], check=False)
            if r.returncode == 0 and "ro" in r.stdout.strip().split(","):
                self.run(["mount", "-o", "remount,bind,rw", mount])
                changed = True
        if changed:
            self.run(["systemctl", "daemon-reexec"])
            deadline = time.monotonic() + 30
            while self.run(["systemctl", "is-system-running"], check=False).stdout.strip() \
                    not in ("running", "degraded"):
                if time.monotonic() > deadline:
                    raise RuntimeError("systemd did not come back after daemon-reexec")
                time.sleep(0.1)

    def command(self, argv, user=None):
        inside = ["nsenter", "--target", str(self.leader), "--all"]
        if user is None:
            env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                   "LANG=C.UTF-8"]
        else:
            env = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
                   "env", "-i", "PATH=/usr/bin:/bin", f"HOME=/home/{user}", f"USER={user}",
                   "LANG=C.UTF-8"]
        return inside + env + [str(a) for a in argv]

    def run(self, argv, user=None, check=True, timeout=120, input=None):
        return run(self.command(argv, user), check=check, timeout=timeout, input=input)

    def sh(self, script, user=None, check=True, timeout=120):
        return self.run(["sh", "-ec", script], user=user, check=check, timeout=timeout)

    def console(self):
        try:
            return (self.dir / "nspawn.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def journal(self, *args):
        if self.leader is None or self.proc.poll() is not None:
            return ""
        return self.run(["journalctl", "--no-pager", "-o", "short-precise", *args],
                        check=False).stdout[-12000:]

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)      # nspawn: a clean poweroff
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for m in reversed(self.mounted):
            subprocess.run(["umount", "--lazy", str(m)], stderr=subprocess.DEVNULL)
        self.mounted = []
        self.cgroups.remove()


# ----------------------------------------------------------------------------
# the test


def busctl_value(stdout):
    """The first value busctl printed: 'o "/path"' -> /path, 's "x"' -> x."""
    m = re.match(r'^[a-z]+ "?(.*?)"?\s*$', stdout.strip())
    return m.group(1) if m else stdout.strip()


class UnitSandboxTest(unittest.TestCase):
    C = None

    @classmethod
    def setUpClass(cls):
        started = time.monotonic()
        tree = cached_tree()
        cls.workdir = tempfile.mkdtemp(prefix="tg-sandbox-", dir="/var/tmp")
        c = cls.C = Container(tree, cls.workdir)
        try:
            c.mount()
            c.build_and_install()
            c.prepare()
            c.start()
            log(f"container: booted; set up in {time.monotonic() - started:.0f}s")
            cls.setup_inside(c)
        except BaseException:
            log(f"container console:\n{c.console()}")
            log(f"container journal:\n{c.journal('-n', '200')}")
            c.stop()
            shutil.rmtree(cls.workdir, ignore_errors=True)
            raise

    @classmethod
    def setup_inside(cls, c):
        """What a package's postinst and an administrator do, and the user."""
        c.run(["systemd-sysusers"])
        c.run(["systemd-tmpfiles", "--create", "tunnelgate.conf"])
        c.run(["systemctl", "daemon-reload"])
        c.run(["systemctl", "enable", UNIT])            # the D-Bus activation alias
        c.run(["busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
               "org.freedesktop.DBus", "ReloadConfig"])
        c.run(["useradd", "--create-home", "--groups", "tunnelgate", "--shell", "/bin/sh",
               USER])
        c.sh("""
            for k in /etc/ssh/ssh_host_*_key.pub; do
              printf '127.0.0.1 %s\\n' "$(cut -d' ' -f1,2 "$k")"
            done > /etc/ssh/ssh_known_hosts
            systemctl is-active --quiet ssh tg-web polkit
        """)
        c.sh("""
            mkdir -m 700 -p ~/.ssh
            ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519
            cp ~/.ssh/id_ed25519.pub ~/.ssh/authorized_keys
        """, user=USER)
        c.sh("""
            mkdir -m 700 -p /root/.ssh
            ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
            cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys
        """)
        # the agents: ssh-agent's own default place, /tmp/ssh-XXXXXXXXXX/agent.<pid>
        cls.agent = {}
        for user, key in ((USER, f"/home/{USER}/.ssh/id_ed25519"),
                          (None, "/root/.ssh/id_ed25519")):
            out = c.sh(f"eval \"$(ssh-agent -s)\" >/dev/null; ssh-add -q {key}; "
                       "echo \"$SSH_AUTH_SOCK\"", user=user).stdout.strip()
            if not out.startswith("/tmp/ssh-"):
                raise RuntimeError(f"ssh-agent's socket is not under /tmp: {out}")
            cls.agent[user] = out

    @classmethod
    def tearDownClass(cls):
        if cls.C is not None:
            cls.C.stop()
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.c = type(self).C

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        out = super().run(result)
        r = result if result is not None else out
        if r is not None and len(r.failures) + len(r.errors) > before and self.C is not None:
            log(f"container journal:\n{self.C.journal('-n', '150')}")
        return out

    def busctl(self, user, *args, check=False, timeout=120):
        return self.c.run(["busctl", "--system", "--no-pager", "--timeout=60", *args],
                          user=user, check=check, timeout=timeout)

    def open_tunnel(self, user, forwards):
        """OpenTunnel with gdbus (busctl does not print an error's name);
        stdout is the object path."""
        def text(value):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

        r = self.c.run(["gdbus", "call", "--system", "--timeout=60", "--dest", BUS,
                        "--object-path", MPATH, "--method", f"{MIFACE}.OpenTunnel",
                        text(f"{user or 'root'}@127.0.0.1"),
                        "[" + ", ".join(text(f) for f in forwards) + "]",
                        "{'agent': <" + text(self.agent[user]) + ">}"],
                       user=user, check=False, timeout=120)
        m = re.fullmatch(r"\(objectpath '([^']*)',\)\s*", r.stdout)
        r.stdout = m.group(1) if m else r.stdout
        return r

    def fetch(self, user, socket_path):
        return self.c.run(["curl", "-sS", "--max-time", "20", "--unix-socket", socket_path,
                           "http://tunnel/"], user=user, check=False, timeout=60)

    def show(self, *properties):
        out = self.c.run(["systemctl", "show", UNIT,
                          *(f"--property={p}" for p in properties)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def daemon_pid(self):
        return int(self.show("MainPID")["MainPID"])

    def tasks(self):
        return int(self.show("TasksCurrent")["TasksCurrent"])

    def cgroup_file(self, controller, name):
        """A file of the unit's cgroup in `controller`, as the container sees it."""
        for line in self.c.run(["cat", f"/proc/{self.daemon_pid()}/cgroup"]).stdout.splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return self.c.run(["cat", f"/sys/fs/cgroup/{controller}{path}/{name}"]
                                  ).stdout.strip()
        unified = [ln for ln in self.c.run(
            ["cat", f"/proc/{self.daemon_pid()}/cgroup"]).stdout.splitlines()
            if ln.startswith("0::")]
        if unified:
            return self.c.run(["cat", f"/sys/fs/cgroup{unified[0][3:]}/{name}"]
                              ).stdout.strip()
        raise AssertionError(f"no {controller} cgroup for {UNIT}")

    # -- the tests, in order (unittest sorts them by name)

    def test_1_activation_sandbox_and_sockets(self):
        c = self.c
        # bus activation: the unit is not running until a user calls
        self.assertEqual(self.show("ActiveState")["ActiveState"], "inactive")
        r = self.open_tunnel(USER, [f"L /tmp/web.sock:{WEB}",
                                    f"L /home/{USER}/web.sock:{WEB}"])
        self.assertEqual(r.returncode, 0, r.stderr)
        type(self).tunnel = r.stdout
        shown = self.show("ActiveState", "Type", "BusName", *SANDBOX)
        self.assertEqual(shown["ActiveState"], "active")
        for key, value in SANDBOX.items():
            self.assertEqual(shown[key], value, key)

        # the sandbox in the kernel, from the daemon's /proc
        pid = self.daemon_pid()
        status = c.run(["cat", f"/proc/{pid}/status"]).stdout
        self.assertRegex(status, r"NoNewPrivs:\s+1")
        self.assertRegex(status, r"Seccomp:\s+2")
        bounding = int(re.search(r"CapBnd:\s+([0-9a-f]+)", status).group(1), 16)
        self.assertEqual(bounding, sum(1 << b for b in CAP_BITS.values()), hex(bounding))
        mounts = {}
        for line in c.run(["cat", f"/proc/{pid}/mountinfo"]).stdout.splitlines():
            fields = line.split()
            mounts[fields[4]] = fields[5].split(",")
        for path in ("/usr", "/home", "/etc", "/tmp"):
            covering = max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")
                            or m == "/"), key=len)
            self.assertIn("ro", mounts[covering], f"{path} (mount {covering}) in the daemon")
        self.assertIn("rw", mounts["/var/lib/tunnelgate"])
        self.assertEqual(self.cgroup_file("pids", "pids.max"), SANDBOX["TasksMax"])
        limit = self.cgroup_file("memory", "memory.limit_in_bytes"
                                 if c.run(["test", "-d", "/sys/fs/cgroup/memory"],
                                          check=False).returncode == 0 else "memory.max")
        self.assertEqual(limit, SANDBOX["MemoryMax"])

        # the sockets: where the user sees them, theirs, 0600, and they carry
        uid = c.run(["id", "-u", USER]).stdout.strip()
        for path in ("/tmp/web.sock", f"/home/{USER}/web.sock"):
            with self.subTest(path=path):
                st = c.run(["stat", "-c", "%F %u %a", path], user=USER).stdout.strip()
                self.assertEqual(st, f"socket {uid} 600")
                r = self.fetch(USER, path)
                self.assertEqual((r.returncode, r.stdout), (0, PAGE), r.stderr)

    def test_2_root_paths_in_the_daemons_view(self):
        r = self.open_tunnel(None, [f"L /tmp/root.sock:{WEB}"])
        self.assertNotEqual(r.returncode, 0)
        # its agent in /tmp was found and used (authenticated), and the socket
        # was refused, not made where root cannot see it
        self.assertIn("Read-only file system", r.stderr)
        self.assertNotEqual(self.c.run(["test", "-e", "/tmp/root.sock"],
                                       check=False).returncode, 0)

    def test_3_tasks_max_bites(self):
        c = self.c
        before = self.tasks()
        limit = before
        c.run(["systemctl", "set-property", "--runtime", UNIT, f"TasksMax={limit}"])
        try:
            self.assertEqual(self.cgroup_file("pids", "pids.max"), str(limit))
            r = self.open_tunnel(USER, [f"L /tmp/more.sock:{WEB}"])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(f"{ERR}LimitExceeded", r.stderr)
            self.assertIn("thread", r.stderr)
            # the daemon answers, and the open tunnel still carries
            r = self.busctl(USER, "get-property", BUS, MPATH, MIFACE, "Version", check=True)
            self.assertTrue(r.stdout.startswith("s "), r.stdout)
            r = self.busctl(USER, "get-property", BUS, self.tunnel, TIFACE, "State",
                            check=True)
            self.assertEqual(busctl_value(r.stdout), "up")
            r = self.fetch(USER, "/tmp/web.sock")
            self.assertEqual((r.returncode, r.stdout), (0, PAGE), r.stderr)
            self.assertEqual(self.show("ActiveState")["ActiveState"], "active")
            self.assertEqual(self.show("NRestarts")["NRestarts"], "0")
        finally:
            c.run(["systemctl", "set-property", "--runtime", UNIT,
                   f"TasksMax={SANDBOX['TasksMax']}"])
        # with room again, a tunnel opens
        r = self.open_tunnel(USER, [f"L /tmp/more.sock:{WEB}"])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.fetch(USER, "/tmp/more.sock")
        self.assertEqual((r.returncode, r.stdout), (0, PAGE), r.stderr)

    def test_4_closed_sockets_go(self):
        c = self.c
        out = self.busctl(USER, "--json=short", "call", BUS, MPATH, MIFACE, "ListTunnels",
                          check=True).stdout
        for entry in json.loads(out)["data"][0]:
            self.busctl(USER, "call", BUS, entry[0], TIFACE, "Close", check=True)
        deadline = time.monotonic() + 20
        left = ["/tmp/web.sock", f"/home/{USER}/web.sock", "/tmp/more.sock"]
        while left and time.monotonic() < deadline:
            left = [p for p in left if c.run(["test", "-e", p], check=False).returncode == 0]
            time.sleep(0.1)
        self.assertEqual(left, [])
        self.assertEqual(self.show("NRestarts")["NRestarts"], "0")


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (systemd-nspawn, debootstrap, mounts)", file=sys.stderr)
        sys.exit(77)
    for tool in ("systemd-nspawn", "debootstrap", "meson", "ninja"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (scripts/install-deps installs it)", file=sys.stderr)
            sys.exit(1)
    if os.environ.get(NS_MARK) != "1":
        # a private mount namespace: the overlay and /run's tmpfs end with it
        env = dict(os.environ, **{NS_MARK: "1"})
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private",
                               sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)
    unittest.main(verbosity=2)

# SPDX-License-Identifier: GPL-2.0-or-later
"""What the benchmark scripts that build the integration-test world share.

throughput.py and reconnect.py both build tests/integration/world.py's world
with one bench user of their own, allowed org.tunnelgate.open by a generated
polkit rule, start tunnelgated from a build, and read processes in /proc.
This module holds those pieces once: importing it also makes `world`
importable (it is re-exported here).

Not a script: `import benchworld` from a script in bench/ (its own folder is
on sys.path when it runs).
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = HERE.parent
sys.path.insert(0, str(SOURCE_ROOT / "tests" / "integration"))

import world  # noqa: E402

RULES_TEMPLATE = """// polkit rules of the tunnelgate {bench} benchmark (bench/{bench}.py):
// {user} may open tunnels; everything else falls back to the action defaults.
polkit.addRule(function(action, subject) {{
    if (action.id == "org.tunnelgate.open" && subject.user == "{user}")
        return polkit.Result.YES;
}});
"""


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


# ---------------------------------------------------------------------------
# /proc


def proc_status(pid):
    """/proc/PID/status as {key: value string}; {} if gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def proc_status_kib(pid, key):
    """One "NNN kB" field of /proc/PID/status, in KiB; None if gone."""
    v = proc_status(pid).get(key)
    return int(v.split()[0]) if v else None


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def tcp_table(pid):
    """IPv4 and IPv6 TCP sockets in the network namespace of `pid`:
    [(local port, remote port, state, inode)]."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    out.append((int(parts[1].rsplit(":", 1)[1], 16),
                                int(parts[2].rsplit(":", 1)[1], 16), parts[3], int(parts[9])))
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return out


def listening_ports(pid):
    """Local TCP ports in LISTEN state in the network namespace of `pid`."""
    return {lp for lp, _, st, _ in tcp_table(pid) if st == "0A"}


# ---------------------------------------------------------------------------
# the world


def free_client_port(w):
    """A TCP port free on 127.0.0.1 in the client namespace (free now)."""
    with w.listen("client", "127.0.0.1", 0) as s:
        return s.getsockname()[1]


def gateway_sshd_pids(w):
    """The gateway's per-connection sshd processes (its listener left out)."""
    master = w.proc("sshd").pid
    return [pid for pid in world._ns_pids(w.gateway_ns)
            if pid != master and proc_comm(pid) == "sshd"]


class BenchRun:
    """What bench_world() yields: the world, and the exit status once it is over."""

    def __init__(self, w):
        self.world = w
        self.status = 0


@contextlib.contextmanager
def bench_world(args, build_root, bench):
    """Builds and starts the world of bench/<bench>.py with the user args.user
    (its polkit rule, no services) and yields a BenchRun. A BenchError or
    WorldError inside is printed as "ERROR: ..." and makes the status 1,
    Ctrl-C makes it 130, both after the world is torn down."""
    with tempfile.TemporaryDirectory(prefix="tg-bench-rules-") as tmp:
        rules = Path(tmp) / "50-tunnelgate-bench.rules"
        rules.write_text(RULES_TEMPLATE.format(bench=bench, user=args.user))
        os.chmod(tmp, 0o755)
        run = BenchRun(world.World(users=(args.user,), polkit_rules=rules, services=False,
                                   build_root=build_root, keep=args.keep_world or None))
        try:
            with run.world:
                yield run
        except (BenchError, world.WorldError) as e:
            print(f"ERROR: {e}", file=sys.stderr)
            run.status = 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            run.status = 130


def daemon_binary(args):
    """(build root, tunnelgated) from --build-root and --daemon."""
    build_root = Path(args.build_root) if args.build_root else world.build_root()
    daemon = Path(args.daemon or os.environ.get("TG_DAEMON") or
                  build_root / "src" / "tunnelgated")
    return build_root, daemon


def no_daemon(daemon):
    """True, after an ERROR line, when `daemon` cannot be run."""
    if os.access(daemon, os.X_OK):
        return False
    print(f"ERROR: no tunnelgated at {daemon} (build it, or --build-root/--daemon)",
          file=sys.stderr)
    return True


def build_type(build_root):
    try:
        opts = json.loads((build_root / "meson-info" / "intro-buildoptions.json").read_text())
    except (OSError, ValueError):
        return None
    return {o["name"]: o["value"] for o in opts}.get("buildtype")


def source_version():
    r = subprocess.run(["git", "-C", str(SOURCE_ROOT), "describe", "--always", "--dirty"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# options


def add_daemon_args(p, user, verbose_help):
    """--build-root, --daemon, --user (default `user`) and --verbose-daemon."""
    p.add_argument("--build-root", default=None,
                   help="meson build dir with src/tunnelgated (default $TG_BUILD_ROOT, "
                        "else <source>/build)")
    p.add_argument("--daemon", default=None, help="tunnelgated binary (overrides "
                   "--build-root; default $TG_DAEMON)")
    p.add_argument("--user", default=user,
                   help="the bench user (created and removed; must not be one the "
                        "integration tests use)")
    p.add_argument("--verbose-daemon", action="store_true", help=verbose_help)


def add_output_args(p, json_help):
    """--json FILE and --keep-world."""
    p.add_argument("--json", metavar="FILE", default=None, help=json_help)
    p.add_argument("--keep-world", action="store_true", help="keep the world's temp dir "
                   "(logs) after cleanup")


def check_user(p, a):
    if a.user in world.DEFAULT_USERS:
        p.error(f"{a.user} is a user of the integration tests; pick another")

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Policy reload time in the running daemon (issue 3's benchmark).

Builds the integration-test world with its own user (tg-bench-pol), opens
--tunnels tunnels through the real gateway sshd, writes a policy with
--entries PermitOpen entries (exact names, *.suffix wildcards and CIDRs, plus
the one entry the tunnels need), and times ReloadPolicy() over D-Bus: the
daemon parses and indexes every entry and re-checks every open tunnel before
it answers. For scale it also times the same reload with 10 entries, and the
same D-Bus round trip for a cheap call (the Version property). All tunnels
must still be up afterwards (the policy keeps allowing them).

Run as root: bench/policy_reload.py --build-root /tmp/bb [--tunnels 100] [--entries 10000]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
import world  # noqa: E402

USER = "tg-bench-pol"
RULES = """polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.tunnelgate.") == 0 && subject.user == "%s")
        return polkit.Result.YES;
});
""" % USER


def policy_text(entries):
    lines = ["PermitOpen intra:80"]
    for i in range(entries - 1):
        kind = i % 3
        if kind == 0:
            lines.append(f"PermitOpen host{i}.corp.example.com:{1024 + i % 60000}")
        elif kind == 1:
            lines.append(f"PermitOpen *.zone{i}.example.net:443")
        else:
            lines.append(f"PermitOpen 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32:22")
    return "\n".join(lines) + "\n"


def busctl(w, *args):
    r = w.busctl(USER, "--timeout=120", *args)
    if r.returncode != 0:
        raise SystemExit(f"busctl {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def time_call(w, *args, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.monotonic()
        busctl(w, *args)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-root", default=str(HERE.parent / "build"))
    p.add_argument("--tunnels", type=int, default=100)
    p.add_argument("--entries", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    world.require_root()

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "50-bench.rules"
        rules.write_text(RULES)
        with world.World(users=(USER,), polkit_rules=rules, build_root=a.build_root) as w:
            w.write_config("policy.conf", policy_text(10))
            w.start_daemon()
            agent = w.start_agent(USER)
            paths = []
            t0 = time.monotonic()
            for _ in range(a.tunnels):
                out = busctl(w, "call", world.BUS_NAME, world.MANAGER_PATH,
                             world.MANAGER_IFACE, "OpenTunnel", "sasa{sv}", f"{USER}@gw", "1",
                             "L 127.0.0.1:0:intra:80", "1", "agent", "s", agent)
                paths.append(out.split('"')[1])
            print(f"opened {a.tunnels} tunnels in {time.monotonic() - t0:.1f} s")

            reload_args = ("call", world.BUS_NAME, world.MANAGER_PATH, world.MANAGER_IFACE,
                           "ReloadPolicy")
            version_args = ("get-property", world.BUS_NAME, world.MANAGER_PATH,
                            world.MANAGER_IFACE, "Version")
            rtt = time_call(w, *version_args, repeat=a.repeat)
            small = time_call(w, *reload_args, repeat=a.repeat)
            w.write_config("policy.conf", policy_text(a.entries))
            big = time_call(w, *reload_args, repeat=a.repeat)

            up = sum(busctl(w, "get-property", world.BUS_NAME, path, world.TUNNEL_IFACE,
                            "State").strip() == 's "up"' for path in paths)
            print(f"busctl round trip (Version property): {rtt * 1000:8.1f} ms")
            print(f"ReloadPolicy, 10 entries, {a.tunnels} tunnels open: {small * 1000:8.1f} ms")
            print(f"ReloadPolicy, {a.entries} entries, {a.tunnels} tunnels open: "
                  f"{big * 1000:8.1f} ms  (ratio to 10 entries: {big / small:.2f}; "
                  f"minus the round trip: {(big - rtt) * 1000:.1f} ms)")
            print(f"tunnels still up after the reloads: {up}/{a.tunnels}")
            w.daemon.stop()
            return 0 if up == a.tunnels else 1


if __name__ == "__main__":
    sys.exit(main())

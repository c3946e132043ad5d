#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The tunnelgate demo: a small world with real parts, and a real tunnel.

It builds three network namespaces ("client", "gateway", "intranet"), a
private system bus that uses tunnelgate's own bus policy, the real polkitd
with tunnelgate's actions and the shipped example rules, OpenSSH sshd on the
gateway, a web server in the intranet, and tunnelgated in the client. Then,
as an unprivileged demo user with an ssh-agent, it asks tunnelgated for a
local forward with plain busctl and fetches the intranet page through it.
Every step is printed with the command it runs. Everything is removed at the
end (or on Ctrl-C); with --stay the world stays up until Ctrl-C.
"""
import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
import world as W  # noqa: E402

DEMO_USER = "tg-demo"
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


def step(text):
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def show(argv, who):
    print(f"{DIM}[{who}]${RESET} {shlex.join(str(a) for a in argv)}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-root", default=str(HERE.parent / "build"),
                   help="meson build directory with src/tunnelgated (default: build)")
    p.add_argument("--stay", action="store_true", help="keep the world up until Ctrl-C")
    a = p.parse_args()
    W.require_root()
    color = sys.stdout.isatty()
    if not color:
        global BOLD, DIM, RESET
        BOLD = DIM = RESET = ""

    step("Building the world: namespaces, private system bus, polkitd, sshd, intranet")
    example = HERE.parent / "polkit" / "50-tunnelgate.rules.example"
    tmp = tempfile.TemporaryDirectory(prefix="tg-demo-rules-")
    rules = Path(tmp.name) / "50-tunnelgate.rules"  # polkitd reads only *.rules
    shutil.copy(example, rules)
    with tmp, W.World(users=(DEMO_USER,), groups={DEMO_USER: ["tunnelgate"]},
                 build_root=a.build_root, polkit_rules=rules) as w:
        print(f"client {w.client_ip}  --  gateway 'gw' {w.gateway_ip} (OpenSSH sshd)  --  "
              f"intranet 'intra' {w.intranet_ip} (web server on port {w.http_port})")
        print(f"private system bus: {w.bus_address} (bus policy dbus/org.tunnelgate.TunnelGate1.conf)")
        print(f"polkitd: actions polkit/org.tunnelgate.policy, rules {example.name}: "
              f"members of group 'tunnelgate' may open tunnels")
        print(f"demo user {DEMO_USER} (in group tunnelgate), gateway host key "
              f"{w.host_key_fingerprint} (in tunnelgate's known_hosts)")

        step("The client has no route to the intranet: direct access fails")
        curl = ["curl", "-sS", "--max-time", "3", f"http://{w.intranet_ip}/"]
        show(curl, DEMO_USER)
        r = w.run_as(DEMO_USER, curl)
        print((r.stderr or r.stdout).strip())

        step("Starting tunnelgated (root) on the private system bus")
        w.start_daemon()
        print(f"tunnelgated pid {w.daemon.pid} owns {W.BUS_NAME}")

        step(f"{DEMO_USER} starts an ssh-agent holding their key")
        sock = w.start_agent(DEMO_USER)
        print(f"SSH_AUTH_SOCK={sock}")

        step(f"{DEMO_USER} asks tunnelgated for a local forward, with plain busctl")
        args = ["call", W.BUS_NAME, W.MANAGER_PATH, W.MANAGER_IFACE, "OpenTunnel", "sasa{sv}",
                f"{DEMO_USER}@gw", "1", "L 127.0.0.1:8080:intra:80", "1", "agent", "s", sock]
        show(["busctl"] + args, DEMO_USER)
        r = w.busctl(DEMO_USER, *args)
        print((r.stdout + r.stderr).strip())
        if r.returncode != 0:
            w.dump_logs()
            return 1
        path = r.stdout.split('"')[1]

        step("The tunnel object: state and the listener it bound")
        for prop in ("State", "Destination", "Listeners", "Owner"):
            args = ["get-property", W.BUS_NAME, path, W.TUNNEL_IFACE, prop]
            show(["busctl"] + args, DEMO_USER)
            print(w.busctl(DEMO_USER, *args).stdout.strip())

        step("Fetching the intranet page through the tunnel")
        curl = ["curl", "-sS", "--max-time", "5", "http://127.0.0.1:8080/"]
        show(curl, DEMO_USER)
        r = w.run_as(DEMO_USER, curl)
        print(r.stdout.strip() or r.stderr.strip())
        ok = r.returncode == 0 and w.intranet_page.decode() in r.stdout

        time.sleep(1.2)  # counters are published once a second
        step("Counters and the list of tunnels")
        for prop in ("BytesSent", "BytesReceived", "TotalConnections"):
            args = ["get-property", W.BUS_NAME, path, W.TUNNEL_IFACE, prop]
            show(["busctl"] + args, DEMO_USER)
            print(w.busctl(DEMO_USER, *args).stdout.strip())
        args = ["call", W.BUS_NAME, W.MANAGER_PATH, W.MANAGER_IFACE, "ListTunnels"]
        show(["busctl"] + args, DEMO_USER)
        print(w.busctl(DEMO_USER, *args).stdout.strip())

        if a.stay:
            print(f"\nThe world stays up. As {DEMO_USER}:\n  "
                  + shlex.join(w.command(["bash"], "client", DEMO_USER))
                  + "\nCtrl-C ends it.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print()

        step("Closing the tunnel")
        args = ["call", W.BUS_NAME, path, W.TUNNEL_IFACE, "Close"]
        show(["busctl"] + args, DEMO_USER)
        print(w.busctl(DEMO_USER, *args).returncode == 0 and "closed" or "close failed")

        step("The daemon's journal events")
        result = w.daemon.stop()
        for line in result.log.splitlines():
            if "tunnelgate-Message" in line:
                print("  " + line.split(": ", 2)[-1])
        step("Removing the world")
    print("\n" + ("Demo succeeded: the intranet page came through tunnelgated."
                  if ok else "Demo FAILED: the page did not come through."))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgate reconnect benchmark: time from link-up to tunnel-up, tunnelgated vs autossh.

Builds the integration-test world (tests/integration/world.py: network
namespaces client / gateway / intranet, a private system bus, the real
polkitd, OpenSSH sshd on the gateway) with its own user (default
tg-bench-rc) and a data service (dataserver.py, ECHO) on intra:9000, and
opens, as that user, in the client namespace:

  * tunnelgate: a tunnel over the real D-Bus API (busctl OpenTunnel with the
    options agent, reconnect true, keepalive 2, keepalive-count 2) with the
    forward L 127.0.0.1:P1:intra:9000;
  * autossh:    autossh -M 0 -N -L 127.0.0.1:P2:intra:9000 -o ServerAliveInterval=2
                -o ServerAliveCountMax=2 -o ExitOnForwardFailure=yes, with the
                same agent and the world's known_hosts, AUTOSSH_GATETIME=0 and
                AUTOSSH_POLL=30 (printed at the start).

Then it makes --outages outages of the client's link, the same ones for
both: `ip link set gw0 down` in the client namespace, at least --down
seconds and until both tools have noticed (tunnelgate: the tunnel's State
is `reconnecting`; autossh: the ssh it ran has exited), then
`ip link set gw0 up`. From that moment two pollers, one per forward, run
side by side: every --interval (20 ms) a real connection to the forward
sends "ECHO\\n" and a random payload and waits for it to come back. The
time from link-up to the first echo is the figure, for each tool. Between
outages both stay up for --gap seconds (autossh counts an ssh that lived
less than 10 s as a fast failure and backs off more).

It prints every outage, a table (median, p95, min, max, mean, and the
ratio tunnelgate/autossh), and tunnelgated's descriptors, threads and
resident memory before the first and after the last outage (autossh's too).
Exit status 0 whatever the figures (it is a benchmark, not a test); 1 if
it could not run or something broke (a tunnel not back within --timeout,
a process gone, a tunnel failed); 77 when not root.

Run as root:  bench/reconnect.py --build-root /tmp/bb [--outages 24] [--down 8]
See bench/README.md.
"""

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchworld import (BenchError, add_daemon_args, add_output_args, bench_world,
                        build_type, check_user, daemon_binary, fmt, free_client_port,
                        gateway_sshd_pids, loadavg, log, no_daemon, proc_comm, proc_status,
                        source_version, tcp_table, world)

DATA_PORT = 9000
TOOLS = ("tunnelgate", "autossh")
AUTOSSH = "/usr/bin/autossh"


# ---------------------------------------------------------------------------
# /proc


def proc_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def children(pid):
    """Pids whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc_ppid(int(entry)) == pid:
            out.append(int(entry))
    return out


def ssh_connections(pid, port=22):
    """Local ports of the established TCP connections to `port` that process
    `pid` holds (its SSH connection to the gateway)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        return set()
    return {lp for lp, rp, st, ino in tcp_table(pid) if rp == port and st == "01"
            and ino in inodes}


def resources(pid):
    """Descriptors, threads and resident memory of a process (None if it is gone)."""
    st = proc_status(pid)
    if not st:
        return None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None

    def kib(key):
        v = st.get(key)
        return int(v.split()[0]) if v else None
    return {"fds": fds, "threads": threads, "rss_kib": kib("VmRSS"),
            "anon_kib": kib("RssAnon"), "hwm_kib": kib("VmHWM")}


# ---------------------------------------------------------------------------
# statistics


def p95(values):
    """Nearest rank: the ceil(0.95 n)-th smallest value."""
    v = sorted(values)
    return v[max(0, math.ceil(0.95 * len(v)) - 1)] if v else None


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"n": len(values), "median": statistics.median(values), "p95": p95(values),
            "min": min(values), "max": max(values), "mean": statistics.fmean(values)}


# ---------------------------------------------------------------------------


class Poller:
    """Connects to 127.0.0.1:port in the client namespace every `interval` s,
    sends ECHO and a payload, until the payload comes back (or the deadline)."""

    def __init__(self, w, tool, port, interval, read_timeout):
        self.w = w
        self.tool = tool
        self.port = port
        self.interval = interval
        self.read_timeout = read_timeout
        self.done_at = None      # monotonic time of the first full echo
        self.probes = 0
        self.last_error = None
        self.error = None        # an exception of the poller itself

    def probe(self):
        payload = os.urandom(32).hex().encode()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(1.0)
            s.connect(("127.0.0.1", self.port))
            # tunnelgated holds a connection made while it reconnects and serves
            # it once the session is back: wait for that, as a user's program would
            s.settimeout(self.read_timeout)
            s.sendall(b"ECHO\n" + payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(len(payload) - len(got))
                if not chunk:
                    self.last_error = "closed without an answer"
                    return False
                got += chunk
            if got != payload:
                raise BenchError(f"{self.tool}: the echo came back different")
            return True
        except OSError as e:
            self.last_error = f"{type(e).__name__}: {e}"
            return False
        finally:
            s.close()

    def loop(self, start, deadline):
        start.wait()
        while True:
            t0 = time.monotonic()
            if t0 > deadline:
                return
            self.probes += 1
            if self.probe():
                self.done_at = time.monotonic()
                return
            pause = t0 + self.interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def thread(self, start, deadline):
        def run():
            try:
                world.in_netns(self.w.client_ns, self.loop, start, deadline)
            except BaseException as e:  # noqa: BLE001 - reported by the caller
                self.error = e
        t = threading.Thread(target=run, name=f"poll-{self.tool}", daemon=True)
        t.start()
        return t


class Bench:
    def __init__(self, w, args, daemon_binary):
        self.w = w
        self.args = args
        self.user = args.user
        self.daemon_binary = daemon_binary
        self.tunnel = None        # D-Bus path
        self.tunnel_id = None
        self.autossh = None       # Proc
        self.autossh_log = None
        self.ports = {}
        self.samples = []         # one dict per outage
        self.resources = []       # (after k outages, {"tunnelgated": ..., ...})
        self.dataserver = None
        self.old_ports = {t: [] for t in TOOLS}   # SSH connections an outage cut
        self.reconnects_total = 0
        self.losses_in_outages = 0
        self.last_ssh = None          # autossh's ssh after the last outage
        self.ssh_restarts_between = 0  # ssh changed with no outage going on

    # -- helpers ----------------------------------------------------------------

    def busctl(self, *args, json=False, timeout=30):
        return self.w.busctl(self.user, *args, json=json, check=not json, timeout=timeout)

    def tunnel_prop(self, name):
        out = self.busctl("get-property", world.BUS_NAME, self.tunnel, world.TUNNEL_IFACE,
                          name, json=True)
        return out["data"]

    def link(self, state):
        subprocess.run(["ip", "-n", self.w.client_ns, "link", "set", "gw0", state],
                       check=True, capture_output=True)

    def ssh_child(self):
        """The ssh that autossh runs now (None between two)."""
        for pid in children(self.autossh.pid):
            if proc_comm(pid) == "ssh":
                return pid
        return None

    def gateway_sessions(self):
        """Per-connection sshd processes in the gateway (the listener left out)."""
        return len(gateway_sshd_pids(self.w))

    def gateway_client_ports(self):
        """Client-side ports of the connections the gateway's sshd still has."""
        return {rp for lp, rp, st, _ in tcp_table(self.w.proc("sshd").pid)
                if lp == 22 and st == "01"}

    def tool_ports(self):
        ssh = self.ssh_child()
        return {"tunnelgate": ssh_connections(self.w.daemon.pid),
                "autossh": ssh_connections(ssh) if ssh else set()}

    def stale_sessions(self):
        """Per tool: how many SSH connections cut by an outage the gateway still has."""
        live = self.gateway_client_ports()
        return {t: sum(1 for p in self.old_ports[t] if p in live) for t in TOOLS}

    def losses(self, since=0):
        """The daemon's "lost" lines for the tunnel (one per loss of an up session)."""
        return len(re.findall(rf"tunnel {re.escape(self.tunnel_id)} of \S+ to \S+ lost: ",
                              self.w.daemon.log()[since:]))

    def wait_up(self, what, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            state = self.tunnel_prop("State")
            if state == "up":
                return
            if state not in ("reconnecting", "connecting") or time.monotonic() > deadline:
                raise BenchError(f"{self.tunnel} is {state} {what}: "
                                 f"{self.tunnel_prop('LastError')}")
            time.sleep(0.1)

    def check_alive(self):
        d = self.w.daemon
        if not d.alive():
            raise BenchError(f"tunnelgated exited ({d.returncode}):\n{d.log(tail=60)}")
        if not self.autossh.alive():
            raise BenchError(f"autossh exited ({self.autossh.returncode}):\n"
                             f"{self.autossh.log(tail=30)}\n{self.read_autossh_log()[-3000:]}")

    def read_autossh_log(self):
        try:
            return self.autossh_log.read_text(errors="replace")
        except OSError:
            return ""

    def echo_once(self, tool, timeout=10.0):
        p = Poller(self.w, tool, self.ports[tool], 0, timeout)
        ok = world.in_netns(self.w.client_ns, p.probe)
        if not ok:
            raise BenchError(f"{tool}: 127.0.0.1:{self.ports[tool]} does not echo: "
                             f"{p.last_error}")

    # -- setup ------------------------------------------------------------------

    def start_dataserver(self):
        w = self.w
        self.dataserver = w.spawn([world.PYTHON, "-u", w.dir / "tools" / "dataserver.py",
                                   "--listen", f"0.0.0.0:{DATA_PORT}"],
                                  ns="intranet", name="intranet-data", stdout=subprocess.PIPE)
        line = world._readline_timeout(self.dataserver.popen.stdout, 10.0)
        if not line or not line.startswith(b"READY"):
            raise BenchError(f"dataserver did not start:\n{self.dataserver.log()}")

    def tunnelgate_options(self):
        a = self.args
        return [("reconnect", "b", "true"), ("keepalive", "u", str(a.keepalive)),
                ("keepalive-count", "u", str(a.keepalive_count))]

    def open_tunnel(self):
        w = self.w
        port = self.ports["tunnelgate"] = free_client_port(self.w)
        u = w.user(self.user)
        opts = [("agent", "s", str(u.agent_sock))] + self.tunnelgate_options() + [
            ("description", "s", "reconnect bench")]
        flat = [x for o in opts for x in o]
        out = self.busctl("call", world.BUS_NAME, world.MANAGER_PATH, world.MANAGER_IFACE,
                          "OpenTunnel", "sasa{sv}", f"{self.user}@gw", 1,
                          f"L 127.0.0.1:{port}:intra:{DATA_PORT}", len(opts), *flat,
                          json=True, timeout=60)
        self.tunnel = out["data"][0]
        self.tunnel_id = self.tunnel.rsplit("/", 1)[1]
        state = self.tunnel_prop("State")
        if state != "up":
            raise BenchError(f"{self.tunnel} is {state} after OpenTunnel")

    def autossh_env(self):
        return {"AUTOSSH_GATETIME": "0", "AUTOSSH_POLL": str(self.args.autossh_poll),
                "AUTOSSH_PATH": "/usr/bin/ssh"}

    def autossh_argv(self):
        a = self.args
        ssh = self.w.ssh_argv(self.user, identity=False, options=[
            "-N", "-o", f"ServerAliveInterval={a.keepalive}",
            "-o", f"ServerAliveCountMax={a.keepalive_count}",
            "-o", "ExitOnForwardFailure=yes",
            "-L", f"127.0.0.1:{self.ports['autossh']}:intra:{DATA_PORT}"])
        assert ssh[0] == "ssh"
        return [AUTOSSH, "-M", "0"] + ssh[1:]

    def start_autossh(self):
        w = self.w
        self.ports["autossh"] = free_client_port(self.w)
        u = w.user(self.user)
        self.autossh_log = u.dir / "autossh.log"
        env = dict(self.autossh_env(), AUTOSSH_LOGFILE=str(self.autossh_log),
                   AUTOSSH_LOGLEVEL="7")
        self.autossh = w.spawn_as(self.user, self.autossh_argv(), ns="client", name="autossh",
                                  env=env)
        deadline = time.monotonic() + 30
        while True:
            if not self.autossh.alive():
                raise BenchError(f"autossh exited ({self.autossh.returncode}):\n"
                                 f"{self.autossh.log()}\n{self.read_autossh_log()}")
            if proc_comm(self.autossh.pid) == "autossh" and self.ssh_child():
                try:
                    world.in_netns(w.client_ns, socket.create_connection,
                                   ("127.0.0.1", self.ports["autossh"]), 1.0).close()
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise BenchError(f"autossh's ssh did not listen on {self.ports['autossh']}:\n"
                                 f"{self.autossh.log()}\n{self.read_autossh_log()}")
            time.sleep(0.05)

    def sample_resources(self, after):
        """A snapshot taken while the tunnel is up and stays up (a loss in between
        changes tunnelgated's descriptors: the figures would not compare)."""
        for _ in range(20):
            self.wait_up(f"after {after} outage(s)")
            losses = self.losses()
            d = resources(self.w.daemon.pid)
            a = resources(self.autossh.pid)
            ssh = self.ssh_child()
            s = resources(ssh) if ssh else None
            if d is None or a is None:
                self.check_alive()
            if self.tunnel_prop("State") == "up" and self.losses() == losses:
                break
            time.sleep(0.5)
        entry = {"after_outages": after, "tunnelgated": d, "autossh": a, "ssh": s,
                 "gateway_sshd": self.gateway_sessions(), "stale": self.stale_sessions(),
                 "losses": self.losses()}
        self.resources.append(entry)
        return entry

    # -- one outage -------------------------------------------------------------

    def outage(self, k):
        a = self.args
        w = self.w
        self.check_alive()
        # both answer before the link goes (tunnelgated may be back from a loss
        # of its own: see the losses outside the outages in the summary)
        self.wait_up(f"before outage {k}")
        for tool in TOOLS:
            self.echo_once(tool)
        old_ssh = self.ssh_child()
        if old_ssh is None:
            raise BenchError(f"autossh runs no ssh before outage {k}")
        if self.last_ssh is not None and old_ssh != self.last_ssh:
            self.ssh_restarts_between += 1
        ports = self.tool_ports()
        reconnects0 = self.tunnel_prop("Reconnects")
        dlog0 = len(w.daemon.log())
        alog0 = len(self.read_autossh_log())

        noticed = {}
        t_down = time.monotonic()
        self.link("down")
        try:
            deadline = t_down + a.down + a.notice_timeout
            while True:
                now = time.monotonic()
                if "autossh" not in noticed:
                    if old_ssh not in children(self.autossh.pid):
                        noticed["autossh"] = time.monotonic() - t_down
                if "tunnelgate" not in noticed:
                    state = self.tunnel_prop("State")
                    if state == "reconnecting":
                        noticed["tunnelgate"] = time.monotonic() - t_down
                    elif state != "up":
                        raise BenchError(f"{self.tunnel} went {state} during outage {k}: "
                                         f"{self.tunnel_prop('LastError')}")
                if len(noticed) == 2 and now - t_down >= a.down:
                    break
                if now > deadline:
                    missing = [t for t in TOOLS if t not in noticed]
                    raise BenchError(f"outage {k}: {', '.join(missing)} did not notice the "
                                     f"link down within {a.down + a.notice_timeout:.0f} s")
                self.check_alive()
                time.sleep(0.05)
            start = threading.Event()
            t_up_deadline = time.monotonic() + a.timeout + 1
            pollers = {t: Poller(w, t, self.ports[t], a.interval, a.read_timeout)
                       for t in TOOLS}
            order = list(TOOLS) if k % 2 else list(reversed(TOOLS))
            threads = [pollers[t].thread(start, t_up_deadline) for t in order]
            self.link("up")
        except BaseException:
            self.link("up")
            raise
        t_up = time.monotonic()
        start.set()
        for t in threads:
            t.join(a.timeout + a.read_timeout + 10)
        down_s = t_up - t_down
        sample = {"outage": k, "down_s": down_s, "noticed_s": noticed}
        for tool, p in pollers.items():
            if p.error is not None:
                raise BenchError(f"{tool} poller failed: {p.error!r}")
            if p.done_at is None:
                self.check_alive()
                raise BenchError(f"outage {k}: the {tool} forward did not answer within "
                                 f"{a.timeout:.0f} s of the link coming back (last: "
                                 f"{p.last_error}); tunnel State "
                                 f"{self.tunnel_prop('State')}")
            sample[tool] = p.done_at - t_up
            sample[f"{tool}_probes"] = p.probes
        # how each came back: tunnelgate's attempt, autossh's ssh starts
        self.wait_up(f"after outage {k}", timeout=10)
        reconnects = self.tunnel_prop("Reconnects")
        if reconnects <= reconnects0:
            raise BenchError(f"outage {k}: the tunnel answers but Reconnects is still "
                             f"{reconnects}")
        sample["tunnelgate_losses"] = self.losses(dlog0)
        self.losses_in_outages += min(1, sample["tunnelgate_losses"])
        for tool in TOOLS:
            self.old_ports[tool].extend(ports[tool])
        self.last_ssh = self.ssh_child()
        m = re.findall(rf"tunnel {re.escape(self.tunnel_id)} of \S+ to \S+ is up again after "
                       r"([0-9.]+) s \(attempt (\d+)\)", w.daemon.log()[dlog0:])
        sample["tunnelgate_attempt"] = int(m[-1][1]) if m else None
        alog = self.read_autossh_log()[alog0:]
        sample["autossh_ssh_starts"] = len(re.findall(r"starting ssh \(count \d+\)", alog))
        sleeps = [int(x) for x in re.findall(r"sleeping for grace time (\d+) secs", alog)]
        sample["autossh_grace_sleeps_s"] = sleeps
        self.samples.append(sample)
        return sample

    # -- teardown -----------------------------------------------------------------

    def close(self):
        if self.autossh is not None:
            self.autossh.stop(timeout=5.0)
        if self.tunnel is not None and self.w.daemon is not None and self.w.daemon.alive():
            self.w.busctl(self.user, "call", world.BUS_NAME, self.tunnel, world.TUNNEL_IFACE,
                          "Close", timeout=30)


# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time from link-up to tunnel-up: a tunnelgated tunnel with reconnect vs "
                    "autossh around ssh -L, through the same outages of the client's link "
                    "in the integration-test world. Run as root.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Exit status: 0 when the benchmark ran (whatever the figures), 1 when it "
               "could not run or a tunnel did not come back, 77 when not root. "
               "See bench/README.md.")
    p.add_argument("--outages", "-n", type=int, default=24, help="outages in a row")
    p.add_argument("--down", type=float, default=8.0,
                   help="seconds the link stays down at least (longer until both tools "
                        "have noticed)")
    p.add_argument("--gap", type=float, default=12.0,
                   help="seconds both stay up between outages (and before the first); "
                        "autossh backs off after ssh runs that lasted under 10 s")
    p.add_argument("--interval", type=float, default=0.02,
                   help="seconds between two connection attempts to a forward after link-up")
    p.add_argument("--read-timeout", type=float, default=5.0,
                   help="how long one probe waits for its echo (tunnelgated holds a "
                        "connection until the session is back)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="a forward not answering this long after link-up is a failure")
    p.add_argument("--notice-timeout", type=float, default=60.0,
                   help="seconds beyond --down for both tools to notice the outage")
    p.add_argument("--keepalive", type=int, default=2,
                   help="tunnelgate keepalive / ssh ServerAliveInterval")
    p.add_argument("--keepalive-count", type=int, default=2,
                   help="tunnelgate keepalive-count / ssh ServerAliveCountMax")
    p.add_argument("--autossh-poll", type=int, default=30,
                   help="AUTOSSH_POLL: with -M 0 it only caps autossh's back-off between "
                        "failed restarts (default of autossh itself: 600)")
    add_daemon_args(p, "tg-bench-rc", "start tunnelgated with --verbose")
    add_output_args(p, "also write every outage and resource sample as JSON")
    a = p.parse_args(argv)
    if a.outages < 1 or a.down <= 0 or a.interval <= 0 or a.gap < 0:
        p.error("--outages, --down and --interval must be positive, --gap not negative")
    if not 1 <= a.keepalive_count <= 10 or a.keepalive < 1:
        p.error("--keepalive must be >= 1 and --keepalive-count from 1 to 10")
    check_user(p, a)
    return a


def print_settings(bench, args, daemon, out=sys.stdout):
    w = bench.w
    print(f"tunnelgate reconnect benchmark: {args.outages} outages of the client's link "
          f"(ip link set gw0 down, >= {args.down:g} s and until both noticed), "
          f"poll every {args.interval * 1000:g} ms", file=out)
    print(f"  source {source_version()}, daemon {daemon}, {os.cpu_count()} CPU cores",
          file=out)
    opts = ", ".join(f"{k} {v}" for k, _, v in bench.tunnelgate_options())
    print(f"  tunnelgate: OpenTunnel {bench.user}@gw 'L 127.0.0.1:"
          f"{bench.ports['tunnelgate']}:intra:{DATA_PORT}' options agent, {opts}", file=out)
    env = " ".join(f"{k}={v}" for k, v in bench.autossh_env().items())
    argv = " ".join(str(x) for x in bench.autossh_argv()).replace(str(w.known_hosts),
                                                                  "KNOWN_HOSTS")
    print(f"  autossh:    {env} {argv}", file=out)
    out.flush()


def print_table(bench, args, out=sys.stdout):
    samples = bench.samples
    n = len(samples)
    print(file=out)
    print(f"link-up -> first echo through the forward, seconds, {n} outage(s) "
          f"(poll every {args.interval * 1000:g} ms):", file=out)
    print(f"  {'tool':<11} {'median':>7} {'p95':>7} {'min':>7} {'max':>7} {'mean':>7}",
          file=out)
    sums = {}
    for tool in TOOLS:
        s = sums[tool] = summary([x[tool] for x in samples])
        if s is None:
            continue
        print(f"  {tool:<11} {s['median']:7.2f} {s['p95']:7.2f} {s['min']:7.2f} "
              f"{s['max']:7.2f} {s['mean']:7.2f}", file=out)
    t, a = sums.get("tunnelgate"), sums.get("autossh")
    if t and a:
        def ratio(key):
            return t[key] / a[key] if a[key] else None
        print(f"  ratio tunnelgate/autossh: median {fmt(ratio('median'))}, "
              f"p95 {fmt(ratio('p95'))}, mean {fmt(ratio('mean'))} (below 1: tunnelgate "
              f"is back sooner)", file=out)
    print(file=out)
    print("link-down -> noticed (tunnelgate: State reconnecting; autossh: its ssh "
          "exited), seconds:", file=out)
    for tool in TOOLS:
        s = summary([x["noticed_s"].get(tool) for x in samples])
        if s:
            print(f"  {tool:<11} median {s['median']:.2f}, min {s['min']:.2f}, "
                  f"max {s['max']:.2f}", file=out)
    downs = summary([x["down_s"] for x in samples])
    if downs:
        print(f"  link down for {downs['min']:.1f}-{downs['max']:.1f} s "
              f"(median {downs['median']:.1f})", file=out)
    atts = [x["tunnelgate_attempt"] for x in samples if x["tunnelgate_attempt"]]
    starts = [x["autossh_ssh_starts"] for x in samples]
    if atts:
        print(f"  tunnelgate came back at attempt {min(atts)}-{max(atts)} "
              f"(median {statistics.median(atts):g})", file=out)
    if starts:
        print(f"  autossh started ssh {min(starts)}-{max(starts)} times per outage "
              f"(median {statistics.median(starts):g})", file=out)
    out.flush()


def print_resources(bench, out=sys.stdout):
    res = bench.resources
    if len(res) < 2:
        return []
    first, last = res[0], res[-1]
    one = res[1] if len(res) > 2 else None
    warnings = []
    print(file=out)
    cols = [("before 1st", first)] + ([("after 1st", one)] if one else []) + \
        [(f"after {last['after_outages']}", last)]
    head = "".join(f"{c:>12}" for c, _ in cols)
    print(f"resources (tunnel up and idle, {bench.args.gap:g} s after the previous "
          f"outage):", file=out)
    print(f"  {'':<26}{head}{'growth':>10}", file=out)
    for proc, label in (("tunnelgated", f"tunnelgated pid {bench.w.daemon.pid}"),
                        ("autossh", f"autossh pid {bench.autossh.pid}"),
                        ("ssh", "ssh (autossh's current)")):
        print(f"  {label}", file=out)
        for key, name in (("fds", "fds"), ("threads", "threads"),
                          ("rss_kib", "VmRSS KiB"), ("anon_kib", "RssAnon KiB")):
            vals = [(c[proc] or {}).get(key) for _, c in cols]
            a, b = vals[0], vals[-1]
            growth = None if a is None or b is None else b - a
            print(f"    {name:<24}" + "".join(f"{fmt(v, 'd'):>12}" for v in vals) +
                  f"{fmt(growth, '+d'):>10}", file=out)
            if proc != "ssh" and key in ("fds", "threads") and growth:
                warnings.append(f"WARNING: {proc} has {b} {name} after "
                                f"{last['after_outages']} outages, {a} before the first")
    vals = [c["gateway_sshd"] for _, c in cols]
    print(f"  {'gateway sshd processes':<26}" + "".join(f"{v:>12}" for v in vals) +
          f"{vals[-1] - vals[0]:>+10}", file=out)
    print("  (ssh is a new process after every restart: its growth means nothing)", file=out)
    d0, d1 = first["tunnelgated"], last["tunnelgated"]
    if d0 and d1:
        g = d1["rss_kib"] - d0["rss_kib"]
        print(f"  tunnelgated VmRSS growth over {last['after_outages']} outages: "
              f"{g:+d} KiB ({g * 1024:+d} bytes)" +
              (f"; after the 1st outage: {d1['rss_kib'] - one['tunnelgated']['rss_kib']:+d} KiB"
               if one and one["tunnelgated"] else ""), file=out)
    stale = last["stale"]
    n = len(bench.samples)
    print(f"  SSH connections cut by an outage that the gateway's sshd still holds at the end: "
          f"tunnelgate {stale['tunnelgate']} of {len(bench.old_ports['tunnelgate'])}, "
          f"autossh {stale['autossh']} of {len(bench.old_ports['autossh'])}", file=out)
    spurious = last["losses"] - bench.losses_in_outages
    print(f"  sessions lost with no outage going on: tunnelgated {spurious} (of "
          f"{last['losses']} losses in all, {n} outages), autossh's ssh restarted "
          f"{bench.ssh_restarts_between} time(s) between outages", file=out)
    if spurious > 0:
        warnings.append(f"WARNING: tunnelgated lost its up session {spurious} time(s) with "
                        "the link up (see its log: \"No answer from gw ... keepalive\")")
    if not any(" fds " in x or " threads " in x for x in warnings):
        print("  tunnelgated and autossh: fds and threads equal before the first and after "
              "the last outage", file=out)
    for line in warnings:
        print(line, file=out)
    out.flush()
    return warnings


def main(argv=None):
    args = parse_args(argv)
    world.require_root()
    if not os.access(AUTOSSH, os.X_OK):
        print(f"ERROR: {AUTOSSH} is missing (Debian package autossh; scripts/install-deps)",
              file=sys.stderr)
        return 1
    build_root, daemon = daemon_binary(args)
    if no_daemon(daemon):
        return 1
    bt = build_type(build_root) if not args.daemon else None
    log(f"daemon {daemon}" + (f" ({bt} build)" if bt else "") +
        f", source {source_version()}, load average {loadavg()}")

    bench = None
    with bench_world(args, build_root, "reconnect") as run:
        w = run.world
        log(f"world {w.id} up in {w.setup_seconds:.1f}s")
        w.start_agent(args.user)
        bench = Bench(w, args, daemon)
        bench.start_dataserver()
        w.start_daemon(binary=daemon, verbose=args.verbose_daemon)
        try:
            bench.open_tunnel()
            bench.start_autossh()
            print_settings(bench, args, daemon, out=sys.stderr)
            log(f"tunnelgated pid {w.daemon.pid} ({bench.tunnel}), autossh pid "
                f"{bench.autossh.pid}; both up, waiting {args.gap:g} s")
            time.sleep(args.gap)
            r = bench.sample_resources(0)
            log(f"before the first outage: tunnelgated {r['tunnelgated']}, "
                f"autossh {r['autossh']}")
            for k in range(1, args.outages + 1):
                s = bench.outage(k)
                time.sleep(args.gap)
                bench.check_alive()
                r = bench.sample_resources(k)
                d = r["tunnelgated"]
                nt = s["noticed_s"]
                log(f"outage {k:2d}/{args.outages}: down {s['down_s']:4.1f} s "
                    f"(noticed: tunnelgate {nt['tunnelgate']:.1f} s, autossh "
                    f"{nt['autossh']:.1f} s); up -> echo: tunnelgate "
                    f"{s['tunnelgate']:5.2f} s (attempt {s['tunnelgate_attempt']}, "
                    f"{s['tunnelgate_losses']} loss(es), "
                    f"{s['tunnelgate_probes']} probes), autossh {s['autossh']:5.2f} s "
                    f"({s['autossh_ssh_starts']} ssh starts, grace sleeps "
                    f"{s['autossh_grace_sleeps_s']}, {s['autossh_probes']} probes); "
                    f"tunnelgated fds {d['fds']} threads {d['threads']} "
                    f"rss {d['rss_kib']} KiB")
        finally:
            bench.close()
        res = w.daemon.stop(check=False)
        if res.returncode != 0:
            log(f"WARNING: tunnelgated exited with status {res.returncode}")
    status = run.status
    if bench is None or not bench.samples:
        return status or 1
    if status != 0:
        print(f"(partial results: {len(bench.samples)} of {args.outages} outages; "
              "the benchmark did not finish)")
    log(f"load average at the end {loadavg()}")
    print_settings(bench, args, daemon)
    print_table(bench, args)
    print_resources(bench)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "source": source_version(), "outages": bench.samples,
            "resources": bench.resources}, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgate throughput benchmark: tunnelgated local forward vs OpenSSH ``ssh -N -L``.

Builds the integration-test world (tests/integration/world.py: network
namespaces client / gateway / intranet, a private system bus, the real
polkitd, OpenSSH sshd on the gateway) with its own user (default tg-bench),
starts an iperf3 server in the intranet namespace and measures the same
iperf3 transfer, run as the bench user in the client namespace, through

  * OpenSSH:    ssh -N -L 127.0.0.1:P:INTRANET:5201 -c CIPHER -o Compression=no
                (the user's ssh-agent, the world's known_hosts), and
  * tunnelgate: a tunnel opened by the same user over the real D-Bus API
                (busctl OpenTunnel with the options agent and ciphers),

for each cipher and stream count, optionally in both directions. Each run
gets a fresh ssh / tunnel that is torn down (and checked gone) afterwards;
the order of the two alternates from run to run. The table reports the
median over --repeat runs, the ratio tunnelgate/OpenSSH, and the CPU time
and peak RSS of tunnelgated (whole process, during the transfer) and of the
ssh client. Exit status 0 whatever the ratio (it is a benchmark, not a
test); 1 if the benchmark itself could not run.

Run as root:  bench/throughput.py --build-root /tmp/bb [--seconds 10] [--repeat 3] [--reverse]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchworld import (BenchError, add_daemon_args, add_output_args, bench_world,
                        build_type, check_user, daemon_binary, fmt, free_client_port,
                        gateway_sshd_pids, listening_ports, loadavg, log, no_daemon,
                        proc_comm, proc_status_kib, source_version, world)

DEFAULT_CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com")
DEFAULT_STREAMS = (1, 8)
IPERF_PORT = 5201
TARGET_RATIO = 0.80
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# /proc sampling


def proc_cpu_seconds(pid):
    """utime+stime of a process (all its threads), in seconds; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reset_peak_rss(pid):
    """Reset VmHWM (see proc(5), clear_refs value 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def system_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


# ---------------------------------------------------------------------------


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Bench:
    def __init__(self, w, args):
        self.w = w
        self.args = args
        self.user = args.user
        self.run_no = 0
        self.iperf = None
        self.profile_dir = Path(args.profile_dir) if args.profile else None

    # -- helpers --------------------------------------------------------------

    def sshd_sessions(self):
        """{pid: cpu seconds} of the per-connection sshd processes in the gateway."""
        out = {}
        for pid in gateway_sshd_pids(self.w):
            cpu = proc_cpu_seconds(pid)
            if cpu is not None:
                out[pid] = cpu
        return out

    def wait_sshd_idle(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.sshd_sessions():
            if time.monotonic() > deadline:
                raise BenchError(f"sshd sessions still alive {timeout}s after teardown: "
                                 f"{sorted(self.sshd_sessions())}")
            time.sleep(0.05)

    def check_port_closed(self, port, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.w.connect("client", "127.0.0.1", port, timeout=1.0).close()
            except ConnectionRefusedError:
                return
            except OSError:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"127.0.0.1:{port} still accepts connections after teardown")
            time.sleep(0.05)

    def start_iperf_server(self):
        if self.iperf is not None and self.iperf.alive():
            return
        w = self.w
        self.iperf = w.spawn(["iperf3", "-s", "--forceflush", "-B", w.intranet_ip,
                              "-p", str(IPERF_PORT)],
                             ns="intranet", name="iperf3-server")
        self.iperf.wait_log(r"Server listening", timeout=10.0)

    def iperf_client(self, port, streams, reverse):
        """Runs the iperf3 client as the bench user; returns the parsed --json."""
        a = self.args
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(a.seconds),
                "-P", str(streams), "--json", "--connect-timeout", "10000"]
        if a.omit:
            argv += ["-O", str(a.omit)]
        if reverse:
            argv.append("-R")
        r = self.w.run_as(self.user, argv, ns="client", timeout=a.seconds + a.omit + 60)
        try:
            data = json.loads(r.stdout)
        except ValueError:
            raise BenchError(f"iperf3 printed no JSON (status {r.returncode}):\n"
                             f"{r.stdout}\n{r.stderr}") from None
        if data.get("error"):
            raise BenchError(f"iperf3 failed: {data['error']}")
        return data

    def measure(self, port, streams, reverse, pid, reset_rss):
        """Runs iperf3 through 127.0.0.1:port, sampling the tunnel process `pid`."""
        sshd0 = self.sshd_sessions()
        if reset_rss:
            reset_peak_rss(pid)
        cpu0 = proc_cpu_seconds(pid)
        sys0 = system_cpu()
        t0 = time.monotonic()
        data = self.iperf_client(port, streams, reverse)
        wall = time.monotonic() - t0
        cpu1 = proc_cpu_seconds(pid)
        sys1 = system_cpu()
        sshd1 = self.sshd_sessions()
        rss = proc_status_kib(pid, "VmHWM")
        end = data["end"]
        recv = end["sum_received"]
        sample = {
            "gbps": recv["bits_per_second"] / 1e9,
            "bytes": recv["bytes"],
            "seconds": recv["seconds"],
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
            "tunnel_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "tunnel_peak_rss_kib": rss,
            "sshd_cpu_s": sum(v - sshd0.get(p, 0.0) for p, v in sshd1.items()),
            "machine_busy_cores": ((sys1[0] - sys0[0]) / (sys1[1] - sys0[1]) * os.cpu_count()
                                   if sys1[1] > sys0[1] else None),
            "wall_s": wall,
            "iperf_cpu": end.get("cpu_utilization_percent"),
        }
        return sample

    # -- OpenSSH ----------------------------------------------------------------

    def run_ssh(self, cipher, streams, reverse, profile_tag=None):
        w = self.w
        profiler = None
        self.run_no += 1
        port = free_client_port(w)
        argv = w.ssh_argv(self.user, identity=False, options=[
            "-N", "-c", cipher, "-o", "Compression=no", "-o", "ExitOnForwardFailure=yes",
            "-L", f"127.0.0.1:{port}:{w.intranet_ip}:{IPERF_PORT}"])
        proc = w.spawn_as(self.user, argv, ns="client", name=f"ssh-run{self.run_no}")
        try:
            # `ip netns exec` and setpriv exec (no fork): the pid becomes ssh's
            pid = proc.pid
            deadline = time.monotonic() + 15
            while port not in listening_ports(pid) or proc_comm(pid) != "ssh":
                if not proc.alive():
                    raise BenchError(f"ssh -L exited ({proc.returncode}):\n{proc.log()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"ssh -L did not listen on {port}:\n{proc.log()}")
                time.sleep(0.02)
            if profile_tag:
                profiler = self.start_profiler(pid, "ssh-" + profile_tag)
            sample = self.measure(port, streams, reverse, pid, reset_rss=False)
            if not proc.alive():
                raise BenchError(f"ssh exited during the run:\n{proc.log()}")
        finally:
            if profiler:
                self.stop_profiler(profiler)
            proc.stop(timeout=5.0)
        self.check_port_closed(port)
        self.wait_sshd_idle()
        return sample

    # -- tunnelgate -------------------------------------------------------------

    def run_tunnelgate(self, cipher, streams, reverse, profile_tag=None):
        w = self.w
        d = w.daemon
        self.run_no += 1
        u = w.user(self.user)
        spec = f"L 127.0.0.1:0:{w.intranet_ip}:{IPERF_PORT}"
        out = w.busctl(self.user, "call", world.BUS_NAME, world.MANAGER_PATH,
                       world.MANAGER_IFACE, "OpenTunnel", "sasa{sv}", f"{self.user}@gw",
                       1, spec, 3, "agent", "s", u.agent_sock, "ciphers", "s", cipher,
                       "description", "s", f"throughput bench run {self.run_no}",
                       json=True, timeout=30)
        path = out["data"][0]
        profiler = None
        try:
            lst = w.busctl(self.user, "get-property", world.BUS_NAME, path, world.TUNNEL_IFACE,
                           "Listeners", json=True)
            ports = {p for (_, addr, p) in lst["data"] if addr == "127.0.0.1"}
            if len(ports) != 1:
                raise BenchError(f"unexpected Listeners of {path}: {lst}")
            port = ports.pop()
            if profile_tag:
                profiler = self.start_profiler(d.pid, "tunnelgate-" + profile_tag)
            sample = self.measure(port, streams, reverse, d.pid, reset_rss=True)
        finally:
            if profiler:
                self.stop_profiler(profiler)
            w.busctl(self.user, "call", world.BUS_NAME, path, world.TUNNEL_IFACE, "Close",
                     check=True, timeout=30)
        if not d.alive():
            raise BenchError(f"tunnelgated died:\n{d.log(tail=100)}")
        self.check_port_closed(port)
        sample["daemon_rss_after_close_kib"] = proc_status_kib(d.pid, "VmRSS")
        left = w.busctl(self.user, "call", world.BUS_NAME, world.MANAGER_PATH,
                        world.MANAGER_IFACE, "ListTunnels", json=True)
        if any(t[0] == path for t in left["data"][0]):
            raise BenchError(f"{path} still listed after Close: {left}")
        self.wait_sshd_idle()
        return sample

    # -- profiling (optional) -------------------------------------------------------

    def start_profiler(self, pid, tag):
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        kind = self.args.profile
        if kind.startswith("perf"):
            out = self.profile_dir / f"{kind}-{tag}.data"
            argv = ["perf", "record", "-e", "cpu-clock", "-p", str(pid), "-o", str(out)]
            if kind == "perf-dwarf":     # libssh and libcrypto have no frame pointers
                argv += ["-F", "500", "--call-graph", "dwarf,16384"]
            else:
                argv += ["-F", "2000", "-g"]
        elif kind == "strace":
            out = self.profile_dir / f"strace-{tag}.txt"
            argv = ["strace", "-c", "-f", "-S", "calls", "-p", str(pid), "-o", str(out)]
        else:  # strace-sizes: every read/write of the daemon, with sizes
            out = self.profile_dir / f"strace-io-{tag}.txt"
            argv = ["strace", "-f", "-qq", "-e", "trace=read,write,recvfrom,sendto,recvmsg,"
                    "sendmsg,poll,ppoll", "-e", "abbrev=all", "-s", "0", "-p", str(pid),
                    "-o", str(out)]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
        time.sleep(1.0)          # let it attach
        if p.poll() is not None:
            raise BenchError(f"{argv[0]} failed: {p.stderr.read().decode()}")
        log(f"profiling pid {pid} ({proc_comm(pid)}) with {kind} -> {out}")
        return p

    @staticmethod
    def stop_profiler(p):
        try:
            p.send_signal(signal.SIGINT)
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Throughput of a tunnelgated local forward vs OpenSSH ssh -N -L "
                    "(iperf3 through the integration-test world). Run as root.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Exit status: 0 when the benchmark ran (whatever the ratio), 1 when it "
               "could not run, 77 when not root. See bench/README.md.")
    p.add_argument("--seconds", "-t", type=int, default=10, help="iperf3 -t per run")
    p.add_argument("--omit", type=int, default=0, help="iperf3 -O (seconds of warm-up "
                   "not counted)")
    p.add_argument("--repeat", "-r", type=int, default=1,
                   help="runs per (cipher, streams, direction) and tool; the median is "
                        "reported; the order ssh/tunnelgate alternates")
    p.add_argument("--reverse", action="store_true",
                   help="also measure the -R direction (intranet server sends)")
    p.add_argument("--only-reverse", action="store_true", help="measure only -R")
    p.add_argument("--ciphers", default=",".join(DEFAULT_CIPHERS), help="comma list")
    p.add_argument("--streams", default=",".join(map(str, DEFAULT_STREAMS)),
                   help="comma list of iperf3 -P values")
    p.add_argument("--tools", default="ssh,tunnelgate",
                   help="which to measure: ssh, tunnelgate or both")
    add_daemon_args(p, "tg-bench", "start tunnelgated with --verbose (debug log per "
                    "connection)")
    p.add_argument("--profile", choices=("perf", "perf-dwarf", "strace", "strace-io"),
                   default=None,
                   help="attach a profiler to tunnelgated / the ssh client during each "
                        "transfer: perf record -e cpu-clock -g, or with DWARF call graphs; "
                        "strace -c -f; or strace of every read/write/poll with sizes. "
                        "Slows it down, strace a lot: the figures of profiled runs are "
                        "not comparable")
    p.add_argument("--profile-dir", default="/tmp/tg-bench-profile",
                   help="where --profile writes")
    add_output_args(p, "also write every sample and the medians as JSON")
    a = p.parse_args(argv)
    a.ciphers = [c for c in a.ciphers.split(",") if c]
    a.streams = [int(s) for s in a.streams.split(",") if s]
    a.tools = [t for t in a.tools.split(",") if t]
    if not set(a.tools) <= {"ssh", "tunnelgate"} or not a.tools:
        p.error("--tools takes ssh and/or tunnelgate")
    if a.seconds < 1 or a.repeat < 1:
        p.error("--seconds and --repeat must be >= 1")
    check_user(p, a)
    a.directions = [True] if a.only_reverse else ([False, True] if a.reverse else [False])
    return a


def print_table(rows, args):
    out = sys.stdout
    cores = os.cpu_count()
    print(file=out)
    print(f"tunnelgate throughput: iperf3 -t {args.seconds}, median of {args.repeat} "
          f"run(s) each, {cores} CPU cores", file=out)
    hdr = (f"{'cipher':<30} {'P':>2} {'dir':<4} {'OpenSSH':>8} {'tgate':>8} {'ratio':>6} | "
           f"{'ssh cpu':>7} {'tg cpu':>7} {'ssh s/GB':>8} {'tg s/GB':>8} | "
           f"{'ssh RSS':>7} {'tg RSS':>7} | {'sshd s/GB':>9} {'sshd s/GB':>9}")
    sub = (f"{'':<30} {'':>2} {'':<4} {'Gbit/s':>8} {'Gbit/s':>8} {'tg/ssh':>6} | "
           f"{'s':>7} {'s':>7} {'':>8} {'':>8} | {'MiB':>7} {'MiB':>7} | "
           f"{'(ssh)':>9} {'(tgate)':>9}")
    print(hdr, file=out)
    print(sub, file=out)
    print("-" * len(hdr), file=out)
    for r in rows:
        s, t = r["ssh"], r["tunnelgate"]
        print(f"{r['cipher']:<30} {r['streams']:>2} {r['dir']:<4} "
              f"{fmt(s.get('gbps')):>8} {fmt(t.get('gbps')):>8} {fmt(r['ratio']):>6} | "
              f"{fmt(s.get('tunnel_cpu_s')):>7} {fmt(t.get('tunnel_cpu_s')):>7} "
              f"{fmt(s.get('cpu_s_per_gb')):>8} {fmt(t.get('cpu_s_per_gb')):>8} | "
              f"{fmt(s.get('rss_mib'), '.1f'):>7} {fmt(t.get('rss_mib'), '.1f'):>7} | "
              f"{fmt(s.get('sshd_s_per_gb')):>9} {fmt(t.get('sshd_s_per_gb')):>9}",
              file=out)
    print(file=out)
    for r in rows:
        label = f"{r['cipher']} -P {r['streams']} {r['dir']}"
        if r["ratio"] is None:
            print(f"{label}: ratio n/a", file=out)
            continue
        verdict = ""
        if r["streams"] == 1:
            verdict = "  OK" if r["ratio"] >= TARGET_RATIO else "  BELOW TARGET"
        print(f"{label}: ratio {r['ratio']:.2f} (target >= {TARGET_RATIO:.2f} single stream)"
              f"{verdict}", file=out)
    print(file=out)
    print("cpu = CPU time (user+sys) of the ssh client / of the whole tunnelgated process "
          "during the transfer; s/GB = that per 10^9 bytes moved; RSS = peak resident set "
          "(VmHWM; tunnelgated's reset before each run); sshd s/GB = gateway sshd session "
          "CPU per GB, with ssh / with tunnelgate as the client. dir: fwd = client sends, "
          "rev = iperf3 -R (intranet sends).", file=out)
    out.flush()


def summarize(samples, args):
    rows = []
    for cipher in args.ciphers:
        for streams in args.streams:
            for reverse in args.directions:
                key = (cipher, streams, reverse)
                row = {"cipher": cipher, "streams": streams,
                       "dir": "rev" if reverse else "fwd"}
                for tool in ("ssh", "tunnelgate"):
                    ss = samples.get(key + (tool,), [])
                    m = {}
                    if ss:
                        m["gbps"] = median([x["gbps"] for x in ss])
                        m["tunnel_cpu_s"] = median([x["tunnel_cpu_s"] for x in ss])
                        m["cpu_s_per_gb"] = median(
                            [x["tunnel_cpu_s"] / (x["bytes"] / 1e9) for x in ss
                             if x["tunnel_cpu_s"] is not None and x["bytes"]])
                        m["sshd_s_per_gb"] = median(
                            [x["sshd_cpu_s"] / (x["bytes"] / 1e9) for x in ss if x["bytes"]])
                        m["rss_mib"] = median([x["tunnel_peak_rss_kib"] / 1024 for x in ss
                                               if x["tunnel_peak_rss_kib"] is not None])
                        m["all_gbps"] = [round(x["gbps"], 3) for x in ss]
                    row[tool] = m
                s, t = row["ssh"].get("gbps"), row["tunnelgate"].get("gbps")
                row["ratio"] = t / s if s and t is not None else None
                rows.append(row)
    return rows


def main(argv=None):
    args = parse_args(argv)
    world.require_root()
    profiler = (args.profile or "").split("-")[0]
    for tool in ("iperf3",) + ((profiler,) if profiler else ()):
        if shutil.which(tool, path=world.ROOT_PATH) is None:
            print(f"ERROR: {tool} is missing (Debian package {tool})", file=sys.stderr)
            return 1

    build_root, daemon = daemon_binary(args)
    if "tunnelgate" in args.tools:
        if no_daemon(daemon):
            return 1
        bt = build_type(build_root) if not args.daemon else None
        if bt not in (None, "release", "plain"):
            log(f"WARNING: {build_root} is a '{bt}' build; use --buildtype=release for "
                "meaningful figures")
        log(f"daemon {daemon}" + (f" ({bt} build)" if bt else ""))

    log(f"source {source_version()}, load average {loadavg()}, {os.cpu_count()} cores")
    samples = {}
    with bench_world(args, build_root, "throughput") as run:
        w = run.world
        log(f"world {w.id} up in {w.setup_seconds:.1f}s (namespaces "
            f"{', '.join(w.ns.values())})")
        w.start_agent(args.user)
        bench = Bench(w, args)
        bench.start_iperf_server()
        if "tunnelgate" in args.tools:
            w.start_daemon(binary=daemon,
                           verbose=args.verbose_daemon)
            log(f"tunnelgated pid {w.daemon.pid}, RSS "
                f"{proc_status_kib(w.daemon.pid, 'VmRSS')} KiB at start")
        k = 0
        for cipher in args.ciphers:
            for streams in args.streams:
                for reverse in args.directions:
                    for rep in range(args.repeat):
                        order = list(args.tools)
                        if k % 2 == 1:
                            order.reverse()
                        k += 1
                        for tool in order:
                            bench.start_iperf_server()
                            tag = (f"{cipher.split('@')[0]}-P{streams}-"
                                   f"{'rev' if reverse else 'fwd'}-{rep + 1}")
                            if tool == "ssh":
                                s = bench.run_ssh(
                                    cipher, streams, reverse,
                                    profile_tag=tag if args.profile else None)
                            else:
                                s = bench.run_tunnelgate(
                                    cipher, streams, reverse,
                                    profile_tag=tag if args.profile else None)
                            s["tool"], s["rep"] = tool, rep + 1
                            samples.setdefault((cipher, streams, reverse, tool),
                                               []).append(s)
                            log(f"{tool:<10} {tag:<28} {s['gbps']:6.2f} Gbit/s  "
                                f"cpu {fmt(s['tunnel_cpu_s'])} s  "
                                f"sshd {s['sshd_cpu_s']:.2f} s  "
                                f"rss {fmt(s['tunnel_peak_rss_kib'], 'd')} KiB"
                                + (f" (after close {s['daemon_rss_after_close_kib']})"
                                   if tool == "tunnelgate" else "") + "  "
                                f"machine {fmt(s['machine_busy_cores'])} cores busy"
                                f"  retr {s['retransmits']}")
        if w.daemon is not None:
            res = w.daemon.stop(check=False)
            if res.returncode != 0:
                log(f"WARNING: tunnelgated exited with status {res.returncode}")
    status = run.status
    if status != 0:
        if not samples:
            return status
        print("(partial results, the benchmark did not finish)")
    log(f"load average at the end {loadavg()}")
    rows = summarize(samples, args)
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": {k: v for k, v in vars(args).items()},
            "rows": rows,
            "samples": [dict(s, cipher=k[0], streams=k[1], reverse=k[2])
                        for k, ss in samples.items() for s in ss],
        }, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())

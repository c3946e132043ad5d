#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test world's network: the client, gateway and intranet network
namespaces, their veth links, addresses and /etc/netns hosts files, and
sockets made inside them (NetnsMixin).
"""

import os
import socket
import subprocess
import time
from pathlib import Path

from world_base import WorldError, in_netns


class NetnsMixin:
    """World's namespaces: client_ns, gateway_ns, intranet_ns, nsname(), the
    network made at start, and socket(), connect(), listen(), wait_port()."""

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

    # -- changing the network (for what watches it) ---------------------------------

    # The client's one link, to the gateway: "gw0" in the client namespace; its
    # peer is "client0" in the gateway namespace (the gateway's link to the
    # intranet is "intra0", the intranet's to the gateway "gw0" again). The
    # client has no default route until replace_default_route() makes one.
    CLIENT_UPLINK = "gw0"
    GATEWAY_CLIENT_LINK = "client0"

    def link_down(self, ns, dev):
        """`ip link set DEV down` in namespace `ns` ('client', 'gateway', 'intranet').

        The link's addresses stay (IPv6 ones too: keep_addr_on_down is set
        first), its routes go: the kernel drops IPv4 routes through a link that
        goes down without a netlink message for each. link_up() brings back the
        addresses' own routes, not a default route (replace_default_route()
        again). Down on one end of a veth pair takes the carrier of the other:
        link_down("gateway", GATEWAY_CLIENT_LINK) is the client's cable pulled
        (its gw0 stays up, NO-CARRIER)."""
        def keep_addresses():
            with open(f"/proc/sys/net/ipv6/conf/{dev}/keep_addr_on_down", "w") as f:
                f.write("1")
        in_netns(self.nsname(ns), keep_addresses)
        self._ip("link", "set", dev, "down", ns=ns)

    def link_up(self, ns, dev):
        """`ip link set DEV up` in namespace `ns`."""
        self._ip("link", "set", dev, "up", ns=ns)

    def replace_default_route(self, ns="client", via=None, dev=None):
        """`ip route replace default via VIA dev DEV` in namespace `ns`. In the
        client the defaults are the gateway (gateway_ip, or gateway_ip6 with
        via="ipv6") over CLIENT_UPLINK; elsewhere give via and/or dev."""
        if ns == "client":
            if via in (None, "ipv6"):
                via = self.gateway_ip6 if via == "ipv6" else self.gateway_ip
            dev = dev or self.CLIENT_UPLINK
        family = ["-6"] if via is not None and ":" in via else []
        argv = family + ["route", "replace", "default"]
        argv += (["via", via] if via else []) + (["dev", dev] if dev else [])
        self._ip(*argv, ns=ns)

    def delete_default_route(self, ns="client", ipv6=False):
        """Remove the default route of namespace `ns` (IPv4, or IPv6 with ipv6=True);
        none there is not an error."""
        argv = ["ip"] + (["-6"] if ipv6 else []) + ["-n", self.nsname(ns), "route", "del",
                                                       "default"]
        subprocess.run(argv, capture_output=True, text=True)

    def default_route(self, ns="client", ipv6=False):
        """`ip route show default` in namespace `ns` (empty: none)."""
        return self._ip(*(["-6"] if ipv6 else []), "route", "show", "default", ns=ns).strip()

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


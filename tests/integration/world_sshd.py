#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test world's OpenSSH: sshd in the gateway namespace (host key,
known_hosts, sshd_config), ssh client argv, and the users' ssh-agents
(SshdMixin).
"""

import os
import re
import subprocess
import time
from pathlib import Path

from world_base import SSHD, WorldError, _ssh_fingerprint


class SshdMixin:
    """World's sshd and agents: sshd_config(), restart_sshd(), ssh_argv(),
    start_agent(), stop_agent()."""

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


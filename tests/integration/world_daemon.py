#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgated in the test world: Daemon (a running daemon), DaemonResult,
and World's part that starts and stops it and runs busctl and tunnelgatectl
(DaemonMixin).
"""

import glob
import os
import signal
import subprocess
from pathlib import Path

from world_base import (GLIB_VALGRIND_SUPP, HERE, VALGRIND_ERROR_EXIT, BUS_NAME, DaemonError,
                        Proc, _process_snapshot, _read, _tail)


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



class DaemonMixin:
    """World's tunnelgated: start_daemon, wait_daemon, stop_daemon, busctl, ctl,
    write_config (the daemon's --config-dir)."""

    @property
    def daemon_binary(self):
        env = os.environ.get("TG_DAEMON")
        return Path(env) if env else self.build_root / "src" / "tunnelgated"

    @property
    def ctl_binary(self):
        env = os.environ.get("TG_CTL")
        return Path(env) if env else self.build_root / "src" / "ctl" / "tunnelgatectl"

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


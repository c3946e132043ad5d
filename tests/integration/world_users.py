#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test world's Unix users (tg-alice ...): made with useradd, each with an
ed25519 key pair, removed again at cleanup (UsersMixin, User); and the users
of a test directory: a second NSS source (tests/nss/nss-tgtest.c) that, like
sssd with enumerate = false, answers lookups but is never enumerated.
"""

import grp
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

from world_base import (NSS_DIR, USER_MARKER, USER_PATH, WorldError, _LIVE_WORLDS, _kill_pids,
                        _merge_env, _pid_alive, _read, _uids_processes)


class User:
    """A test user made by the world."""

    def __init__(self, name, uid, gid, home, directory, groups):
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = Path(home)
        self.dir = Path(directory)            # per-world dir owned by the user (0700)
        self.key = self.dir / "id_ed25519"    # private key (owned by the user, 0600)
        self.pubkey_path = self.dir / "id_ed25519.pub"
        self.groups = list(groups)
        self.agent_sock = None                # set by World.start_agent
        self.agent = None                     # its Proc

    @property
    def pubkey(self):
        return _read(self.pubkey_path).strip()

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<User {self.name} uid={self.uid}>"



class UsersMixin:
    """World's users: user(), add_user(), user_env() and their making and removal."""

    def user(self, user):
        if isinstance(user, User):
            return user
        if user not in self.users:
            raise WorldError(f"{user!r} is not a user of this world ({', '.join(self.users)})")
        return self.users[user]

    # -- users -------------------------------------------------------------------

    def _make_users(self):
        keygens = []
        for name in self.want_users:
            keygens.append(self._add_user(name, self.want_groups.get(name, ())))
        return keygens

    def add_user(self, name, groups=()):
        """Create another test user (with key pair and authorized key) on a running world."""
        p = self._add_user(name, groups)
        if p.wait() != 0:
            raise WorldError(f"ssh-keygen for {name} failed")
        self._finish_users([name])
        return self.users[name]

    def _add_user(self, name, groups):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            pw = None
        if pw is not None:
            m = re.match(rf"{USER_MARKER} (tg-(\d+)-\S+)", pw.pw_gecos)
            if not m:
                raise WorldError(f"user {name} already exists and was not made by a test world; "
                                 "refusing to touch it")
            owner, pid = m.group(1), int(m.group(2))
            if any(w.id == owner and not w._cleaned for w in _LIVE_WORLDS) or \
                    (pid != os.getpid() and _pid_alive(pid)):
                raise WorldError(f"user {name} belongs to the live test world {owner}")
            self._remove_user(name)
        for g in groups:
            try:
                grp.getgrnam(g)
            except KeyError:
                self._run_checked(["groupadd", g])
                self._groups_created.append(g)
        argv = ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*",
                "--user-group", "--comment", f"{USER_MARKER} {self.id}"]
        if groups:
            argv += ["--groups", ",".join(groups)]
        self._run_checked(argv + [name])
        pw = pwd.getpwnam(name)
        udir = self.dir / "users" / name
        udir.mkdir(mode=0o700)
        os.chown(udir, pw.pw_uid, pw.pw_gid)
        u = User(name, pw.pw_uid, pw.pw_gid, pw.pw_dir, udir, groups)
        self.users[name] = u
        return subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                 f"{name}@{self.id}", "-f", str(u.key)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def _finish_users(self, names=None):
        for name in names or list(self.users):
            u = self.users[name]
            for f, mode in ((u.key, 0o600), (u.pubkey_path, 0o644)):
                os.chown(f, u.uid, u.gid)
                os.chmod(f, mode)
            ak = self.dir / "authorized_keys" / name
            ak.write_text(u.pubkey + "\n")
            os.chmod(ak, 0o644)

    # -- the test directory --------------------------------------------------------

    def enable_directory(self):
        """Turn on the test directory for the client and gateway namespaces: their
        nsswitch.conf (iproute2's /etc/netns/<ns>/, bind-mounted by "ip netns exec")
        lists "tgtest" after files for passwd and group, and every process the world
        starts from now on finds libnss_tgtest.so.2 (LD_LIBRARY_PATH). Processes
        already running (sshd) must be restarted to see it. Nothing outside the
        world's namespaces changes: the host's /etc/nsswitch.conf is not touched."""
        if self._nss_env:
            return
        libdir = os.environ.get("TG_TEST_NSS_LIBDIR") or str(self.build_root / "tests" / "nss")
        if not os.path.exists(os.path.join(libdir, "libnss_tgtest.so.2")):
            raise WorldError(f"no libnss_tgtest.so.2 in {libdir} (build tests/nss first)")
        try:
            owner = (NSS_DIR / "owner").read_text().strip()
        except OSError:
            owner = None
        if owner is not None and owner != self.id:
            raise WorldError(f"{NSS_DIR} belongs to the test world {owner}")
        NSS_DIR.mkdir(mode=0o755, exist_ok=True)
        (NSS_DIR / "owner").write_text(self.id + "\n")
        self._directory = {"passwd": [], "group": []}
        self._write_directory()
        host = Path("/etc/nsswitch.conf").read_text().splitlines()
        lines = [re.sub(r"^((passwd|group):\s.*)$", r"\1 tgtest", line) for line in host]
        for role in ("client", "gateway"):
            f = Path("/etc/netns") / self.ns[role] / "nsswitch.conf"
            f.write_text(f"# tunnelgate test world {self.id}: the test directory\n"
                         + "\n".join(lines) + "\n")
            os.chmod(f, 0o644)
        self._nss_env = {"LD_LIBRARY_PATH": libdir}

    def _write_directory(self):
        for kind in ("passwd", "group"):
            f = NSS_DIR / kind
            f.write_text("".join(line + "\n" for line in self._directory[kind]))
            os.chmod(f, 0o644)

    def add_directory_group(self, name, gid, members=()):
        """A group of the test directory; `members` are listed in it (gr_mem)."""
        self._directory["group"].append(f"{name}:*:{gid}:{','.join(members)}")
        self._write_directory()

    def add_directory_user(self, name, uid, gid):
        """A user of the test directory (any name NSS takes: alice@corp, CORP\\bob),
        with a home, a key pair and an authorized key, like add_user()."""
        home = self.dir / "dirhome" / str(uid)
        home.mkdir(parents=True, mode=0o700)
        os.chown(home, uid, gid)
        self._directory["passwd"].append(
            f"{name}:*:{uid}:{gid}:{USER_MARKER} {self.id}:{home}:/bin/bash")
        self._write_directory()
        udir = self.dir / "users" / str(uid)
        udir.mkdir(mode=0o700)
        os.chown(udir, uid, gid)
        u = User(name, uid, gid, home, udir, ())
        self.users[name] = u
        self._directory_users.add(name)
        p = subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                              f"{uid}@{self.id}", "-f", str(u.key)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if p.wait() != 0:
            raise WorldError(f"ssh-keygen for {name} failed")
        self._finish_users([name])
        return u

    def _remove_directory(self):
        try:
            owner = (NSS_DIR / "owner").read_text().strip()
        except OSError:
            return
        if owner == self.id:
            shutil.rmtree(NSS_DIR)

    def _remove_user(self, name):
        if name in self._directory_users:     # not in /etc/passwd: its processes only
            uid = self.users[name].uid
            for _ in range(3):
                pids = _uids_processes(uid)
                if not pids:
                    break
                _kill_pids(pids)
                time.sleep(0.05)
            return
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return
        for _ in range(3):
            pids = _uids_processes(pw.pw_uid)
            if not pids:
                break
            _kill_pids(pids)
            time.sleep(0.05)
        r = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        if r.returncode not in (0, 12):      # 12: could not remove home (already gone)
            raise WorldError(f"userdel {name} failed: {r.stderr.strip()}")
        try:
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True)
        except KeyError:
            pass

    def _run_checked(self, argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise WorldError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def user_env(self, user, env=None):
        """The environment of a command run as `user`: HOME USER LOGNAME SHELL PATH LANG,
        DBUS_SYSTEM_BUS_ADDRESS, SSH_AUTH_SOCK (once start_agent ran); `env` overrides
        (a value of None removes the variable)."""
        u = self.user(user)
        e = {"HOME": str(u.home), "USER": u.name, "LOGNAME": u.name, "SHELL": "/bin/bash",
             "PATH": USER_PATH, "LANG": "C.UTF-8", "TG_WORLD": self.id}
        if self.bus_address:
            e["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        if u.agent_sock:
            e["SSH_AUTH_SOCK"] = str(u.agent_sock)
        e.update(self._nss_env)
        return _merge_env(e, env)


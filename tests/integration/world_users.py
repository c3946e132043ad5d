#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test world's Unix users (tg-alice ...): made with useradd, each with an
ed25519 key pair, removed again at cleanup (UsersMixin, User).
"""

import grp
import os
import pwd
import re
import subprocess
import time
from pathlib import Path

from world_base import (USER_MARKER, USER_PATH, WorldError, _LIVE_WORLDS, _kill_pids,
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

    def _remove_user(self, name):
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
        return _merge_env(e, env)


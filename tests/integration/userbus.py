#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A busclient (GDBus) connection driven from the test process but running
AS a test user.

The D-Bus daemon and polkit identify a caller by the credentials of the
process that opened the connection (SO_PEERCRED), so a test that wants to
speak D-Bus "as tg-alice" with fd passing or signals must run a real process
as tg-alice. This file is both halves:

  * run as a script (``userbus.py serve``), it is that process: it opens one
    busclient.Connection to $DBUS_SYSTEM_BUS_ADDRESS and executes JSON requests
    read line by line from stdin, answering one JSON line each on stdout;
  * imported, ``UserBus(world, user)`` starts it with world.spawn_as() and
    offers call()/get()/get_all()/add_match()/signals()/close().

Descriptors for 'h' arguments are made by the user process itself, with the
user's rights: {"$fd": ["connect", PATH]} (a connected unix socket),
{"$fd": ["open", PATH]} (a file opened read-only) and {"$fd": ["pipe", TEXT]}
(the read end of a pipe holding TEXT). In Python use the helpers FdConnect,
FdOpen and FdPipe; the child sends them with a Gio.UnixFDList.
busclient.Variant(sig, value) is a variant as usual. Signals are collected
in the child with signal_subscribe() (add_match) while it pumps its GLib
main context (signals).
"""

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import busclient  # noqa: E402


# ----------------------------------------------------------------------------
# child side (runs as the user)


_to_json = busclient.to_json


class _Child:
    def __init__(self):
        self.conn = busclient.Connection(timeout=60)
        self.opened = []

    def make_fd(self, kind, arg):
        if kind == "connect":
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(arg)
            fd = s.detach()
        elif kind == "open":
            fd = os.open(arg, os.O_RDONLY)
        elif kind == "pipe":
            r, w = os.pipe()
            os.write(w, arg.encode())
            os.close(w)
            fd = r
        else:
            raise ValueError(f"unknown fd kind {kind}")
        self.opened.append(fd)
        return fd

    def decode(self, v):
        if isinstance(v, dict):
            if set(v) == {"$v"}:
                sig, val = v["$v"]
                return busclient.Variant(sig, self.decode(val))
            if set(v) == {"$fd"}:
                return self.make_fd(*v["$fd"])
            return {k: self.decode(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.decode(x) for x in v]
        return v

    @staticmethod
    def signal_json(m):
        """A busclient.Signal as JSON."""
        return {"path": m.path, "interface": m.interface, "member": m.member,
                "sender": m.sender, "destination": m.destination, "signature": m.signature,
                "body": _to_json(m.body), "time": time.time()}

    def handle(self, req):
        op = req["op"]
        if op == "call":
            args = self.decode(req.get("args", []))
            try:
                body = self.conn.call(req["dest"], req["path"], req["iface"], req["member"],
                                      req.get("signature", ""), args,
                                      timeout=req.get("timeout", 60), flags=req.get("flags", 0))
            finally:
                for fd in self.opened:
                    os.close(fd)
                self.opened = []
            return {"ok": _to_json(body)}
        if op == "add_match":
            self.conn.add_match(req["rule"])
            return {"ok": None}
        if op == "signals":
            return {"ok": [self.signal_json(m) for m in self.conn.pending_signals()]}
        if op == "unique_name":
            return {"ok": self.conn.unique_name}
        if op == "close":
            self.conn.close()
            return {"ok": None}
        raise ValueError(f"unknown op {op}")


def serve():
    child = _Child()
    out = sys.stdout
    out.write(json.dumps({"ready": child.conn.unique_name, "uid": os.getuid(),
                          "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            reply = child.handle(req)
        except busclient.DBusError as e:
            reply = {"error": e.name, "message": e.message}
        except Exception as e:  # noqa: BLE001 - reported to the test
            reply = {"exception": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if req["op"] == "close":
            break
    return 0


# ----------------------------------------------------------------------------
# test side


class FdConnect(dict):
    """An 'h' argument: a unix socket the user process connects to PATH."""

    def __init__(self, path):
        super().__init__({"$fd": ["connect", str(path)]})


class FdOpen(dict):
    """An 'h' argument: PATH opened read-only by the user process."""

    def __init__(self, path):
        super().__init__({"$fd": ["open", str(path)]})


class FdPipe(dict):
    """An 'h' argument: the read end of a pipe holding TEXT."""

    def __init__(self, text):
        super().__init__({"$fd": ["pipe", text]})


def _encode(v):
    if isinstance(v, busclient.Variant):
        return {"$v": [v.signature, _encode(v.value)]}
    if isinstance(v, (FdConnect, FdOpen, FdPipe)):
        return dict(v)
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


class UserBusError(Exception):
    pass


class UserBus:
    """A busclient connection held by a process running as `user` (see module doc)."""

    def __init__(self, world, user, ns="client"):
        self.world = world
        self.user = user
        tool = world.dir / "tools" / "userbus.py"
        if not tool.exists():      # busclient.py is there already (World._make_dirs)
            shutil.copy(HERE / "userbus.py", tool)
            os.chmod(tool, 0o644)
        self.proc = world.spawn_as(user, ["/usr/bin/python3", "-u", tool, "serve"], ns=ns,
                                   name=f"userbus-{user}", stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE)
        hello = self._read(30)
        if "ready" not in hello:
            raise UserBusError(f"userbus as {user} did not start: {hello}")
        self.unique_name = hello["ready"]
        self.pid = hello["pid"]
        self.uid = hello["uid"]
        self.closed = False

    def _read(self, timeout):
        f = self.proc.popen.stdout
        fd = f.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                raise UserBusError(f"userbus as {self.user}: no answer within {timeout}s\n"
                                   f"{self.proc.log(tail=30)}")
            c = os.read(fd, 65536)
            if not c:
                raise UserBusError(f"userbus as {self.user} exited "
                                   f"({self.proc.returncode}):\n{self.proc.log(tail=30)}")
            buf += c
        return json.loads(buf)

    def request(self, req, timeout=90):
        self.proc.popen.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.popen.stdin.flush()
        reply = self._read(timeout)
        if "exception" in reply:
            raise UserBusError(reply["exception"])
        if "error" in reply:
            raise busclient.DBusError(reply["error"], reply["message"])
        return reply["ok"]

    def call(self, dest, path, iface, member, signature="", args=(), flags=0, timeout=60):
        return self.request({"op": "call", "dest": dest, "path": path, "iface": iface,
                             "member": member, "signature": signature,
                             "args": _encode(list(args)), "flags": flags,
                             "timeout": timeout}, timeout=timeout + 30)

    def get(self, dest, path, iface, name):
        return self.call(dest, path, "org.freedesktop.DBus.Properties", "Get", "ss",
                         [iface, name])[0]

    def get_all(self, dest, path, iface):
        return self.call(dest, path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                         [iface])[0]

    def add_match(self, rule):
        return self.request({"op": "add_match", "rule": rule})

    def signals(self):
        """Signals received since the last call (list of dicts: path, interface,
        member, sender, destination (None: a broadcast), signature, body, time)."""
        return self.request({"op": "signals"})

    def close(self):
        """Close the bus connection (the process then exits)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.request({"op": "close"}, timeout=10)
        except (UserBusError, OSError, ValueError):
            pass
        try:
            self.proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        sys.exit(serve())
    print("usage: userbus.py serve", file=sys.stderr)
    sys.exit(2)

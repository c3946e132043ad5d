#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A stand-in for systemd-logind on the test world's private system bus
(World.start_fake_login1() starts it; run it as root).

It connects to $DBUS_SYSTEM_BUS_ADDRESS, owns org.freedesktop.login1 and
exports /org/freedesktop/login1 with the part of org.freedesktop.login1.Manager
that sleep inhibitors use:

  Inhibit(s what, s who, s why, s mode) -> h   as logind: `what` is a
      colon-separated list of sleep, shutdown, idle, handle-*; `mode` is
      block or delay (else InvalidArgs). The caller gets the write end of a
      pipe; the read end stays here, and when every copy of the write end is
      closed it reports POLLHUP: that is how this process (like logind)
      knows an inhibitor was released.
  ListInhibitors() -> a(ssssuu)                the inhibitors still open
  signal PrepareForSleep(b start)              when told to (below)

Commands, one per line on stdin; each answer ends with a line "ok" (or a
line "error <text>"):

  sleep            emit PrepareForSleep(true) (flushed to the bus before "ok")
  resume           emit PrepareForSleep(false)
  inhibitors?      print how many inhibitor fds are still open
  list             print one JSON object per open inhibitor (what, who, why,
                   mode, sender, uid, pid)
  refuse on|off    answer Inhibit with org.freedesktop.DBus.Error.AccessDenied
  quit             exit (so does the end of stdin)

On start it prints "ready <unique bus name>"; what it is asked is logged on
stderr.
"""

import json
import os
import select
import sys
import threading

import gi

gi.require_version("GLib", "2.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

NAME = "org.freedesktop.login1"
PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
WHATS = {"sleep", "shutdown", "idle", "handle-power-key", "handle-suspend-key",
         "handle-hibernate-key", "handle-lid-switch", "handle-reboot-key"}

XML = f"""<node>
  <interface name="{MANAGER}">
    <method name="Inhibit">
      <arg name="what" type="s" direction="in"/>
      <arg name="who" type="s" direction="in"/>
      <arg name="why" type="s" direction="in"/>
      <arg name="mode" type="s" direction="in"/>
      <arg name="pipe_fd" type="h" direction="out"/>
    </method>
    <method name="ListInhibitors">
      <arg name="inhibitors" type="a(ssssuu)" direction="out"/>
    </method>
    <signal name="PrepareForSleep">
      <arg name="start" type="b"/>
    </signal>
  </interface>
</node>"""


def log(text):
    print(f"fake_login1: {text}", file=sys.stderr, flush=True)


class FakeLogin1:
    def __init__(self, address):
        self.conn = Gio.DBusConnection.new_for_address_sync(
            address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
        self.conn.set_exit_on_close(False)
        self.lock = threading.Lock()
        self.inhibitors = []          # dicts; "fd" is the read end kept here
        self.refuse = False
        self.loop = GLib.MainLoop()
        info = Gio.DBusNodeInfo.new_for_xml(XML).interfaces[0]
        self.conn.register_object(PATH, info, self.on_call, None, None)
        # flag 4: DO_NOT_QUEUE; 1: the primary owner
        (reply,) = self.conn.call_sync(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "RequestName", GLib.Variant("(su)", (NAME, 4)), GLib.VariantType("(u)"),
            Gio.DBusCallFlags.NONE, 10000, None).unpack()
        if reply != 1:
            raise SystemExit(f"fake_login1: could not own {NAME} (RequestName: {reply})")

    # -- the bus side (main thread) ----------------------------------------------------

    def _credentials(self, sender):
        try:
            (creds,) = self.conn.call_sync(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                "GetConnectionCredentials", GLib.Variant("(s)", (sender,)),
                GLib.VariantType("(a{sv})"), Gio.DBusCallFlags.NONE, 10000, None).unpack()
            return creds.get("UnixUserID", 0), creds.get("ProcessID", 0)
        except GLib.Error:
            return 0, 0

    def on_call(self, conn, sender, path, interface, method, params, invocation):
        if method == "ListInhibitors":
            with self.lock:
                self._prune()
                items = [(i["what"], i["who"], i["why"], i["mode"], i["uid"], i["pid"])
                         for i in self.inhibitors]
            invocation.return_value(GLib.Variant("(a(ssssuu))", (items,)))
            return
        what, who, why, mode = params.unpack()
        log(f"Inhibit({what!r}, {who!r}, {why!r}, {mode!r}) from {sender}")
        if self.refuse:
            invocation.return_dbus_error("org.freedesktop.DBus.Error.AccessDenied",
                                         "Inhibitors refused (test)")
            return
        if mode not in ("block", "delay") or not what or \
                not set(what.split(":")) <= WHATS:
            invocation.return_dbus_error("org.freedesktop.DBus.Error.InvalidArgs",
                                         "Invalid what or mode specification")
            return
        uid, pid = self._credentials(sender)
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        fds = Gio.UnixFDList.new()
        index = fds.append(write_end)          # a duplicate
        os.close(write_end)
        with self.lock:
            self.inhibitors.append({"fd": read_end, "what": what, "who": who, "why": why,
                                    "mode": mode, "sender": sender, "uid": uid, "pid": pid})
        invocation.return_value_with_unix_fd_list(GLib.Variant("(h)", (index,)), fds)

    def emit(self, start):
        self.conn.emit_signal(None, PATH, MANAGER, "PrepareForSleep",
                              GLib.Variant("(b)", (start,)))
        self.conn.flush_sync(None)

    # -- inhibitors (any thread, under the lock) ------------------------------------------

    def _prune(self):
        """Forget the inhibitors whose every write end is closed."""
        poll = select.poll()
        for i in self.inhibitors:
            poll.register(i["fd"], select.POLLIN)
        closed = {fd for fd, events in poll.poll(0) if events & (select.POLLHUP | select.POLLERR)}
        for i in [i for i in self.inhibitors if i["fd"] in closed]:
            log(f"inhibitor of {i['who']!r} ({i['sender']}) released")
            os.close(i["fd"])
            self.inhibitors.remove(i)

    def open_inhibitors(self):
        with self.lock:
            self._prune()
            return [{k: v for k, v in i.items() if k != "fd"} for i in self.inhibitors]

    # -- commands (stdin thread) -----------------------------------------------------------

    def command(self, line):
        words = line.split()
        if not words:
            return []
        cmd, args = words[0], words[1:]
        if cmd == "sleep":
            log("PrepareForSleep(true)")
            self.emit(True)
            return []
        if cmd == "resume":
            log("PrepareForSleep(false)")
            self.emit(False)
            return []
        if cmd == "inhibitors?":
            return [str(len(self.open_inhibitors()))]
        if cmd == "list":
            return [json.dumps(i, sort_keys=True) for i in self.open_inhibitors()]
        if cmd == "refuse" and args in (["on"], ["off"]):
            self.refuse = args[0] == "on"
            return []
        raise ValueError(f"unknown command {line.strip()!r}")

    def read_commands(self):
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            try:
                out = self.command(line)
            except (ValueError, GLib.Error) as e:
                print(f"error {e}", flush=True)
                continue
            for text in out + ["ok"]:
                print(text, flush=True)
        GLib.idle_add(self.loop.quit)

    def run(self):
        print(f"ready {self.conn.get_unique_name()}", flush=True)
        threading.Thread(target=self.read_commands, daemon=True).start()
        self.loop.run()
        print("ok", flush=True)


def main():
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    if not address:
        print("fake_login1: DBUS_SYSTEM_BUS_ADDRESS is not set", file=sys.stderr)
        return 2
    FakeLogin1(address).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

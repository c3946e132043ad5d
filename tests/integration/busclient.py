#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The integration tests' D-Bus client: a thin layer over GLib's GDBus
(python3-gi: Gio.DBusConnection, GLib.Variant).

It gives the tests plain Python values instead of GLib.Variant, D-Bus errors
as DBusError with the error's name, unix fd passing ('h') through
Gio.UnixFDList, and signals collected with signal_subscribe() while the
connection's own GLib main context is pumped.

Library use::

    with busclient.Connection(address) as bus:
        owner = bus.name_has_owner(names.BUS_NAME)
        (path,) = bus.call(names.BUS_NAME, names.MANAGER_PATH, names.MANAGER_IFACE,
                           "OpenTunnel", "sasa{sv}",
                           ["tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                            {"agent": Variant("s", sock)}])

Type mapping: struct -> tuple (a list is accepted when writing), array ->
list, a{..} -> dict, variant -> its plain value when reading (write it as
Variant(signature, value); a bare value gets a guessed type), 'h' -> int
fd (writing: an int fd or an object with fileno(), sent as a duplicate;
reading: a new fd owned by the caller), 'ay' is read as bytes.

Command-line use (e.g. run as a test user with setpriv)::

    busclient.py [--address ADDR] check-auth ACTION [--subject self|pid] [--flags N]
    busclient.py [--address ADDR] call DEST PATH IFACE MEMBER [SIGNATURE [JSON-ARGS]]
    busclient.py [--address ADDR] get DEST PATH IFACE PROPERTY
    busclient.py [--address ADDR] whoami

The address defaults to $DBUS_SYSTEM_BUS_ADDRESS. In JSON-ARGS the string
"$SELF" is replaced by the connection's unique name and {"$v": [sig, value]}
makes a variant. Output is one line of JSON; D-Bus errors print
{"error": name, "message": text} and exit with status 1.
"""

import atexit
import collections
import json
import os
import sys
import threading
import time
import weakref

import gi

gi.require_version("GLib", "2.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

__all__ = ["Connection", "DBusError", "Variant", "Signal", "ALLOW_INTERACTIVE_AUTHORIZATION",
           "check_authorization", "polkit_subject_bus_name", "polkit_subject_process"]

# method call flags (Gio.DBusCallFlags values; Connection.call(flags=...))
NO_AUTO_START = int(Gio.DBusCallFlags.NO_AUTO_START)
ALLOW_INTERACTIVE_AUTHORIZATION = int(Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION)

BUS_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
PROPERTIES = "org.freedesktop.DBus.Properties"


class DBusError(Exception):
    """An error reply (or a local failure). .name is the D-Bus error name."""

    def __init__(self, name, message=""):
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


def _error(e):
    """The DBusError (or TimeoutError) for a GLib.Error raised by GDBus."""
    if Gio.DBusError.is_remote_error(e):
        name = Gio.DBusError.get_remote_error(e)
        prefix = f"GDBus.Error:{name}: "
        text = e.message[len(prefix):] if e.message.startswith(prefix) else e.message
        return DBusError(name, text)
    if e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
        return TimeoutError(f"D-Bus call timed out: {e.message}")
    if e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.CLOSED):
        return DBusError("org.freedesktop.DBus.Error.Disconnected", e.message)
    return DBusError(Gio.DBusError.encode_gerror(e), e.message)


class Variant:
    """A value together with its D-Bus signature, for writing 'v'."""
    __slots__ = ("signature", "value")

    def __init__(self, signature, value):
        self.signature = signature
        self.value = value

    def __repr__(self):
        return f"Variant({self.signature!r}, {self.value!r})"

    def __eq__(self, other):
        return (isinstance(other, Variant) and other.signature == self.signature
                and other.value == self.value)


# ----------------------------------------------------------------------------
# Python values <-> GLib.Variant


def _type_end(sig, i):
    """Index just past the single complete type starting at sig[i]."""
    c = sig[i]
    if c in "am":
        return _type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while sig[j] != close:
            j = _type_end(sig, j)
        return j + 1
    return i + 1


def split_signature(sig):
    """The complete types of a signature: "sa{sv}(ii)" -> ["s", "a{sv}", "(ii)"]."""
    out, i = [], 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def guess_signature(value):
    """Best-effort signature of a Python value given bare where a 'v' goes."""
    if isinstance(value, Variant):
        return "v"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i" if -2**31 <= value < 2**31 else "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    if isinstance(value, (bytes, bytearray)):
        return "ay"
    if isinstance(value, dict):
        if not value:
            return "a{sv}"
        k, v = next(iter(value.items()))
        return "a{" + guess_signature(k) + guess_signature(v) + "}"
    if isinstance(value, list):
        return "a" + (guess_signature(value[0]) if value else "s")
    if isinstance(value, tuple):
        return "(" + "".join(guess_signature(v) for v in value) + ")"
    raise TypeError(f"cannot guess the D-Bus type of {value!r}")


def to_variant(signature, value, fds=None):
    """The GLib.Variant of `value` as the single complete type `signature`.

    'h' values (int fds or objects with fileno()) are appended to the
    Gio.UnixFDList `fds` and replaced by their index."""
    s = signature
    if isinstance(value, GLib.Variant):
        return value
    if s == "v":
        if not isinstance(value, Variant):
            value = Variant(guess_signature(value), value)
        return GLib.Variant.new_variant(to_variant(value.signature, value.value, fds))
    if s == "h":
        if fds is None:
            raise TypeError("an 'h' argument needs an fd list")
        fd = value if isinstance(value, int) else value.fileno()
        return GLib.Variant.new_handle(fds.append(fd))
    if s[0] in "({":
        members = split_signature(s[1:-1])
        value = list(value)
        if len(members) != len(value):
            raise TypeError(f"{s} needs {len(members)} values, got {len(value)}")
        children = [to_variant(m, v, fds) for m, v in zip(members, value)]
        if s[0] == "{":
            return GLib.Variant.new_dict_entry(*children)
        return GLib.Variant.new_tuple(*children)
    if s == "ay" and isinstance(value, (bytes, bytearray)):
        return GLib.Variant("ay", bytes(value))
    if s[0] == "a":
        elem = s[1:]
        if elem[0] == "{":
            value = value.items()
        return GLib.Variant.new_array(GLib.VariantType.new(elem),
                                      [to_variant(elem, v, fds) for v in value])
    return GLib.Variant(s, value)


def from_variant(v, fds=()):
    """The plain Python value of GLib.Variant `v`; 'h' indexes `fds`."""
    s = v.get_type_string()
    if s == "v":
        return from_variant(v.get_variant(), fds)
    if s == "h":
        i = v.get_handle()
        return fds[i] if i < len(fds) else i
    if s == "ay":
        return bytes(v.get_data_as_bytes().get_data())
    if s[0] == "(":
        return tuple(from_variant(v.get_child_value(i), fds) for i in range(v.n_children()))
    if s.startswith("a{"):
        out = {}
        for i in range(v.n_children()):
            e = v.get_child_value(i)
            out[from_variant(e.get_child_value(0), fds)] = from_variant(e.get_child_value(1), fds)
        return out
    if s[0] == "a":
        return [from_variant(v.get_child_value(i), fds) for i in range(v.n_children())]
    return v.unpack()


def _body(v, fds=()):
    return [] if v is None else list(from_variant(v, fds))


# ----------------------------------------------------------------------------
# connection


class Signal:
    """A received signal: path, interface, member, sender, destination (None:
    a broadcast), signature and body (a list of plain values)."""

    def __init__(self, sender, path, interface, member, destination, params):
        self.sender = sender
        self.path = path
        self.interface = interface
        self.member = member
        self.destination = destination
        self.signature = params.get_type_string()[1:-1] if params is not None else ""
        self.body = _body(params)

    def __repr__(self):
        return (f"<Signal {self.interface}.{self.member} path={self.path} "
                f"sender={self.sender} destination={self.destination} body={self.body!r}>")


def _same_body(a, b):
    empty = (None, GLib.Variant.new_tuple())
    return a == b or (a in empty and b in empty)


def _parse_match_rule(rule):
    """A match rule "key='value',..." as a dict (values may not contain quotes)."""
    out = {}
    for part in rule.split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip().strip("'")
    return out


_OPEN = weakref.WeakSet()


@atexit.register
def _close_all():
    # a message filter must not be called while the interpreter shuts down
    for c in list(_OPEN):
        c.close()


class Connection:
    """A GDBus connection to a message bus (or a peer) at a D-Bus address."""

    def __init__(self, address=None, timeout=25.0, bus=True):
        address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") \
            or "unix:path=/run/dbus/system_bus_socket"
        self.address = address
        self.timeout = timeout
        flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        if bus:
            flags |= Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
        try:
            self.conn = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
        except GLib.Error as e:
            raise _error(e) from None
        self.conn.set_exit_on_close(False)
        self.unique_name = self.conn.get_unique_name()
        # signal callbacks run in this context, pumped by pending_signals()
        self.context = GLib.MainContext.new()
        self._subscriptions = []
        self._signals = []
        # the destination of each incoming signal, noted by a message filter
        # (GDBus's worker thread): signal_subscribe callbacks do not get it
        self._headers = collections.deque()
        self._headers_lock = threading.Lock()
        self._filter = None
        _OPEN.add(self)

    # -- plumbing ------------------------------------------------------------------

    def close(self):
        if self.conn is None:
            return
        for sid in self._subscriptions:
            self.conn.signal_unsubscribe(sid)
        self._subscriptions = []
        if self._filter is not None:
            self.conn.remove_filter(self._filter)
            self._filter = None
        try:
            self.conn.close_sync(None)
        except GLib.Error:
            pass
        self.conn = None
        self._iterate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _timeout_ms(self, timeout):
        timeout = self.timeout if timeout is None else timeout
        return -1 if timeout is None else max(1, int(timeout * 1000))

    # -- method calls ----------------------------------------------------------------

    def call_message(self, destination, path, interface, member, signature="", args=(),
                     timeout=None, flags=0):
        """Call a method; returns (body list, fds received with the reply)."""
        fdlist = Gio.UnixFDList.new()
        params = to_variant(f"({signature})", list(args), fdlist)
        try:
            reply, out_fds = self.conn.call_with_unix_fd_list_sync(
                destination, path, interface, member, params, None,
                Gio.DBusCallFlags(flags), self._timeout_ms(timeout),
                fdlist if fdlist.get_length() else None, None)
        except GLib.Error as e:
            raise _error(e) from None
        fds = out_fds.steal_fds() if out_fds is not None else []
        return _body(reply, fds), fds

    def call(self, destination, path, interface, member, signature="", args=(),
             timeout=None, flags=0):
        """Call a method and return the reply's body as a list."""
        return self.call_message(destination, path, interface, member, signature, args,
                                 timeout, flags)[0]

    def get_property(self, destination, path, interface, name, timeout=None):
        (v,) = self.call(destination, path, PROPERTIES, "Get", "ss", [interface, name], timeout)
        return v

    def get_all_properties(self, destination, path, interface, timeout=None):
        (v,) = self.call(destination, path, PROPERTIES, "GetAll", "s", [interface], timeout)
        return v

    def _bus(self, member, signature="", args=(), timeout=None):
        return self.call(*BUS_DBUS, member, signature, args, timeout)

    def name_has_owner(self, name):
        return self._bus("NameHasOwner", "s", [name])[0]

    def get_name_owner(self, name):
        """Unique name owning `name`, or None."""
        try:
            return self._bus("GetNameOwner", "s", [name])[0]
        except DBusError as e:
            if e.name == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return None
            raise

    def request_name(self, name, flags=0x4):
        """RequestName (default flag DO_NOT_QUEUE); returns the numeric reply (1 = primary owner)."""
        return self._bus("RequestName", "su", [name, flags])[0]

    def release_name(self, name):
        return self._bus("ReleaseName", "s", [name])[0]

    def connection_credentials(self, name):
        return self._bus("GetConnectionCredentials", "s", [name])[0]

    def connection_unix_pid(self, name):
        return self._bus("GetConnectionUnixProcessID", "s", [name])[0]

    def wait_for_name(self, name, timeout=10.0, interval=0.02, alive=None):
        """Poll until `name` has an owner. alive() -> False aborts early (returns False)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.name_has_owner(name):
                return True
            if alive is not None and not alive():
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    # -- signals ---------------------------------------------------------------------

    def _note_header(self, conn, message, incoming):
        if incoming and message.get_message_type() == Gio.DBusMessageType.SIGNAL:
            with self._headers_lock:
                self._headers.append((message.get_sender(), message.get_path(),
                                      message.get_interface(), message.get_member(),
                                      message.get_body(), message.get_destination()))
        return message

    def _on_signal(self, conn, sender, path, interface, member, params):
        # the filter saw every incoming signal in the order GDBus dispatches
        # them: the first one noted that is this one carries its destination
        key = (sender, path, interface, member)
        with self._headers_lock:
            while self._headers:
                h = self._headers.popleft()
                if h[:4] == key and _same_body(h[4], params):
                    self._signals.append(Signal(sender, path, interface, member, h[5], params))
                    return
        # nothing noted: a second subscription matching a signal already taken

    def add_match(self, rule):
        """Subscribe to the signals of a match rule (type, sender, interface,
        member, path, arg0). Active on the bus when this returns."""
        keys = _parse_match_rule(rule)
        if keys.pop("type", "signal") != "signal" or \
                set(keys) - {"sender", "interface", "member", "path", "arg0"}:
            raise ValueError(f"unsupported match rule {rule!r}")
        if self._filter is None:
            self._filter = self.conn.add_filter(self._note_header)
        self.context.push_thread_default()
        try:
            sid = self.conn.signal_subscribe(keys.get("sender"), keys.get("interface"),
                                             keys.get("member"), keys.get("path"),
                                             keys.get("arg0"), Gio.DBusSignalFlags.NONE,
                                             self._on_signal)
        finally:
            self.context.pop_thread_default()
        self._subscriptions.append(sid)
        # GDBus sends AddMatch without waiting; the bus handles one
        # connection's messages in order, so after this reply it is in place
        self._bus("GetId")

    def _iterate(self):
        while self.context.iteration(False):
            pass

    def pending_signals(self):
        """Signals received so far that nobody has consumed (without blocking)."""
        self._iterate()
        sigs, self._signals = self._signals, []
        return sigs

    def wait_signal(self, predicate=None, timeout=None, **match):
        """Wait for a signal (subscribe with add_match first).

        match keys: interface, member, path, sender; predicate(signal) -> bool.
        Returns the Signal (others stay pending); raises TimeoutError.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout

        def ok(s):
            return (all(getattr(s, k) == v for k, v in match.items())
                    and (predicate is None or predicate(s)))
        while True:
            self._iterate()
            for i, s in enumerate(self._signals):
                if ok(s):
                    del self._signals[i]
                    return s
            if time.monotonic() >= deadline:
                raise TimeoutError("timed out waiting for a D-Bus signal")
            time.sleep(0.01)


# ----------------------------------------------------------------------------
# polkit helpers

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"


def polkit_subject_bus_name(name):
    return ("system-bus-name", {"name": Variant("s", name)})


def polkit_subject_process(pid, start_time=0, uid=None):
    d = {"pid": Variant("u", pid), "start-time": Variant("t", start_time)}
    if uid is not None:
        d["uid"] = Variant("i", uid)
    return ("unix-process", d)


def check_authorization(conn, action_id, subject=None, details=None, flags=0, timeout=None):
    """polkit CheckAuthorization; subject defaults to this connection's bus name.

    Returns (is_authorized, is_challenge, details dict).
    """
    if subject is None:
        subject = polkit_subject_bus_name(conn.unique_name)
    (res,) = conn.call(POLKIT_NAME, POLKIT_PATH, POLKIT_IFACE, "CheckAuthorization",
                       "(sa{sv})sa{ss}us", [subject, action_id, details or {}, flags, ""],
                       timeout)
    return res


# ----------------------------------------------------------------------------
# JSON (the command line and userbus.py)


def from_json(v, unique_name=None):
    """JSON arguments: "$SELF" is `unique_name`, {"$v": [sig, value]} a Variant."""
    if isinstance(v, str) and v == "$SELF":
        return unique_name
    if isinstance(v, dict):
        if set(v) == {"$v"}:
            sig, val = v["$v"]
            return Variant(sig, from_json(val, unique_name))
        return {k: from_json(x, unique_name) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x, unique_name) for x in v]
    return v


def to_json(v):
    if isinstance(v, bytes):
        return list(v)
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    return v


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="D-Bus client of the tunnelgate tests")
    p.add_argument("--address", default=None)
    p.add_argument("--timeout", type=float, default=25.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    ca = sub.add_parser("check-auth", help="polkit CheckAuthorization for ourselves")
    ca.add_argument("action")
    ca.add_argument("--subject", choices=["self", "pid"], default="self",
                    help="self: system-bus-name of this connection; pid: unix-process of this pid")
    ca.add_argument("--flags", type=int, default=0)
    ca.add_argument("--detail", action="append", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("call")
    c.add_argument("dest")
    c.add_argument("path")
    c.add_argument("iface")
    c.add_argument("member")
    c.add_argument("signature", nargs="?", default="")
    c.add_argument("args", nargs="?", default="[]")
    g = sub.add_parser("get")
    g.add_argument("dest")
    g.add_argument("path")
    g.add_argument("iface")
    g.add_argument("prop")
    sub.add_parser("whoami")
    a = p.parse_args(argv)
    try:
        with Connection(a.address, timeout=a.timeout) as conn:
            if a.cmd == "check-auth":
                subject = None
                if a.subject == "pid":
                    subject = polkit_subject_process(os.getpid())
                details = dict(d.split("=", 1) for d in a.detail)
                authorized, challenge, det = check_authorization(conn, a.action, subject,
                                                                 details, a.flags)
                out = {"authorized": authorized, "challenge": challenge, "details": det,
                       "unique_name": conn.unique_name, "pid": os.getpid(), "uid": os.getuid()}
            elif a.cmd == "call":
                args = from_json(json.loads(a.args), conn.unique_name)
                out = to_json(conn.call(a.dest, a.path, a.iface, a.member, a.signature, args))
            elif a.cmd == "get":
                out = to_json(conn.get_property(a.dest, a.path, a.iface, a.prop))
            else:
                out = {"unique_name": conn.unique_name, "pid": os.getpid(), "uid": os.getuid()}
    except DBusError as e:
        print(json.dumps({"error": e.name, "message": e.message}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

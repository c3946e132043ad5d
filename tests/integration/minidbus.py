#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A small, dependency-free D-Bus client (Python standard library only).

Used by the tunnelgate integration tests (world.py) to talk to the private
system bus, to polkitd and to tunnelgated without python3-gi / python3-dbus.
It speaks the real wire protocol over a unix socket: SASL EXTERNAL
authentication (so the bus and polkit see the real uid and pid of the
process), unix fd passing, method calls, properties and signals.

Library use::

    with minidbus.Connection(address) as bus:
        owner = bus.name_has_owner("org.tunnelgate.TunnelGate1")
        (path,) = bus.call("org.tunnelgate.TunnelGate1", "/org/tunnelgate/TunnelGate1",
                           "org.tunnelgate.Manager1", "OpenTunnel", "sasa{sv}",
                           ["tg-alice@gw", ["L 127.0.0.1:0:intra:80"],
                            {"agent": Variant("s", sock)}])

Type mapping: struct -> tuple, array -> list, a{..} -> dict, variant ->
its plain value when reading (write it as Variant(signature, value)),
'h' -> int fd (writing: an int fd or an object with fileno(); reading: a
new fd owned by the caller), 'ay' is read as bytes.

Command-line use (e.g. run as a test user with setpriv)::

    minidbus.py [--address ADDR] check-auth ACTION [--subject self|pid] [--flags N]
    minidbus.py [--address ADDR] call DEST PATH IFACE MEMBER [SIGNATURE [JSON-ARGS]]
    minidbus.py [--address ADDR] get DEST PATH IFACE PROPERTY
    minidbus.py [--address ADDR] whoami

The address defaults to $DBUS_SYSTEM_BUS_ADDRESS. In JSON-ARGS the string
"$SELF" is replaced by the connection's unique name and {"$v": [sig, value]}
makes a variant. Output is one line of JSON; D-Bus errors print
{"error": name, "message": text} and exit with status 1.
"""

import array
import json
import os
import select
import socket
import struct
import sys
import time

__all__ = ["Connection", "DBusError", "Variant", "ObjectPath", "Signature",
           "check_authorization", "polkit_subject_bus_name",
           "polkit_subject_process"]

MESSAGE_METHOD_CALL = 1
MESSAGE_METHOD_RETURN = 2
MESSAGE_ERROR = 3
MESSAGE_SIGNAL = 4

FLAG_NO_REPLY_EXPECTED = 0x1
FLAG_NO_AUTO_START = 0x2
FLAG_ALLOW_INTERACTIVE_AUTHORIZATION = 0x4

_F_PATH, _F_INTERFACE, _F_MEMBER, _F_ERROR_NAME = 1, 2, 3, 4
_F_REPLY_SERIAL, _F_DESTINATION, _F_SENDER, _F_SIGNATURE, _F_UNIX_FDS = 5, 6, 7, 8, 9
_FIELD_SIG = {1: "o", 2: "s", 3: "s", 4: "s", 5: "u", 6: "s", 7: "s", 8: "g", 9: "u"}

_FIXED = {  # code: (struct format, size)
    "y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4),
    "u": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4),
}
_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "h": 4,
          "s": 4, "o": 4, "a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}


class DBusError(Exception):
    """An error reply (or a protocol failure). .name is the D-Bus error name."""

    def __init__(self, name, message=""):
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


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


class ObjectPath(str):
    """Marks a str as an object path when a variant type must be guessed."""


class Signature(str):
    """Marks a str as a signature when a variant type must be guessed."""


# ----------------------------------------------------------------------------
# signatures


def _type_end(sig, i):
    """Index just past the single complete type starting at sig[i]."""
    c = sig[i]
    if c == "a":
        return _type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while sig[j] != close:
            j = _type_end(sig, j)
        return j + 1
    if c in _FIXED or c in "sogv":
        return i + 1
    raise DBusError("org.freedesktop.DBus.Error.InvalidSignature", f"bad type {c!r} in {sig!r}")


def split_signature(sig):
    """Split a signature into its complete types: "sa{sv}(ii)" -> [s, a{sv}, (ii)]."""
    out, i = [], 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def guess_signature(value):
    """Best-effort signature of a Python value (used for variants given bare)."""
    if isinstance(value, Variant):
        return "v"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i" if -2**31 <= value < 2**31 else "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, ObjectPath):
        return "o"
    if isinstance(value, Signature):
        return "g"
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
    raise TypeError(f"cannot guess D-Bus type of {value!r}")


# ----------------------------------------------------------------------------
# marshalling


class _Writer:
    def __init__(self, endian="<"):
        self.e = endian
        self.buf = bytearray()
        self.fds = []

    def align(self, n):
        pad = (-len(self.buf)) % n
        if pad:
            self.buf += b"\0" * pad

    def write(self, sig, value):
        c = sig[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.align(size)
            if c == "b":
                value = 1 if value else 0
            elif c == "h":
                fd = value if isinstance(value, int) else value.fileno()
                self.fds.append(fd)
                value = len(self.fds) - 1
            self.buf += struct.pack(self.e + fmt, value)
        elif c in "so":
            data = str(value).encode()
            self.align(4)
            self.buf += struct.pack(self.e + "I", len(data)) + data + b"\0"
        elif c == "g":
            data = str(value).encode()
            self.buf += bytes([len(data)]) + data + b"\0"
        elif c == "v":
            if isinstance(value, Variant):
                vsig, vval = value.signature, value.value
            else:
                vsig, vval = guess_signature(value), value
            if len(split_signature(vsig)) != 1:
                raise DBusError("org.freedesktop.DBus.Error.InvalidSignature",
                                f"variant needs a single complete type, got {vsig!r}")
            self.write("g", vsig)
            self.write(vsig, vval)
        elif c == "a":
            elem = sig[1:]
            self.align(4)
            at = len(self.buf)
            self.buf += b"\0\0\0\0"
            self.align(_ALIGN[elem[0]])
            start = len(self.buf)
            if elem == "y" and isinstance(value, (bytes, bytearray, memoryview)):
                self.buf += bytes(value)
            elif elem[0] == "{":
                items = value.items() if isinstance(value, dict) else value
                for k, v in items:
                    self.write(elem, (k, v))
            else:
                for v in value:
                    self.write(elem, v)
            struct.pack_into(self.e + "I", self.buf, at, len(self.buf) - start)
        elif c in "({":
            self.align(8)
            inner = sig[1:-1]
            types = split_signature(inner)
            value = tuple(value)
            if len(types) != len(value):
                raise DBusError("org.freedesktop.DBus.Error.InvalidArgs",
                                f"struct {sig} needs {len(types)} values, got {len(value)}")
            for t, v in zip(types, value):
                self.write(t, v)
        else:
            raise DBusError("org.freedesktop.DBus.Error.InvalidSignature", f"bad type {sig!r}")


class _Reader:
    def __init__(self, data, endian="<", fds=()):
        self.data = data
        self.e = endian
        self.pos = 0
        self.fds = list(fds)

    def align(self, n):
        self.pos += (-self.pos) % n

    def read(self, sig):
        c = sig[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.align(size)
            (v,) = struct.unpack_from(self.e + fmt, self.data, self.pos)
            self.pos += size
            if c == "b":
                return bool(v)
            if c == "h":
                return self.fds[v] if v < len(self.fds) else -1
            return v
        if c in "so":
            self.align(4)
            (n,) = struct.unpack_from(self.e + "I", self.data, self.pos)
            self.pos += 4
            s = bytes(self.data[self.pos:self.pos + n]).decode("utf-8", "replace")
            self.pos += n + 1
            return s
        if c == "g":
            n = self.data[self.pos]
            s = bytes(self.data[self.pos + 1:self.pos + 1 + n]).decode()
            self.pos += n + 2
            return s
        if c == "v":
            vsig = self.read("g")
            return self.read(vsig)
        if c == "a":
            elem = sig[1:]
            self.align(4)
            (n,) = struct.unpack_from(self.e + "I", self.data, self.pos)
            self.pos += 4
            self.align(_ALIGN[elem[0]])
            end = self.pos + n
            if elem == "y":
                v = bytes(self.data[self.pos:end])
                self.pos = end
                return v
            if elem[0] == "{":
                d = {}
                while self.pos < end:
                    k, v = self.read(elem)
                    d[k] = v
                return d
            out = []
            while self.pos < end:
                out.append(self.read(elem))
            return out
        if c in "({":
            self.align(8)
            return tuple(self.read(t) for t in split_signature(sig[1:-1]))
        raise DBusError("org.freedesktop.DBus.Error.InvalidSignature", f"bad type {sig!r}")


class Message:
    """A received message. .body is a list of the values of .signature."""

    def __init__(self, mtype, flags, serial, fields, body, fds):
        self.type = mtype
        self.flags = flags
        self.serial = serial
        self.fields = fields
        self.body = body
        self.fds = fds

    path = property(lambda self: self.fields.get(_F_PATH))
    interface = property(lambda self: self.fields.get(_F_INTERFACE))
    member = property(lambda self: self.fields.get(_F_MEMBER))
    error_name = property(lambda self: self.fields.get(_F_ERROR_NAME))
    reply_serial = property(lambda self: self.fields.get(_F_REPLY_SERIAL))
    sender = property(lambda self: self.fields.get(_F_SENDER))
    destination = property(lambda self: self.fields.get(_F_DESTINATION))
    signature = property(lambda self: self.fields.get(_F_SIGNATURE, ""))

    def __repr__(self):
        return (f"<Message type={self.type} {self.interface}.{self.member} "
                f"path={self.path} sender={self.sender} body={self.body!r}>")


def _encode_message(mtype, serial, fields, signature="", args=(), flags=0):
    body = _Writer()
    types = split_signature(signature)
    args = list(args)
    if len(types) != len(args):
        raise DBusError("org.freedesktop.DBus.Error.InvalidArgs",
                        f"signature {signature!r} needs {len(types)} arguments, got {len(args)}")
    for t, a in zip(types, args):
        body.write(t, a)
    fields = dict(fields)
    if signature:
        fields[_F_SIGNATURE] = signature
    if body.fds:
        fields[_F_UNIX_FDS] = len(body.fds)
    hdr = _Writer()
    hdr.buf += struct.pack("<cBBBII", b"l", mtype, flags, 1, len(body.buf), serial)
    hdr.write("a(yv)", [(code, Variant(_FIELD_SIG[code], val))
                        for code, val in sorted(fields.items())])
    hdr.align(8)
    return bytes(hdr.buf + body.buf), body.fds


# ----------------------------------------------------------------------------
# connection


def _parse_address(address):
    for part in address.split(";"):
        transport, _, params = part.partition(":")
        kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        kv = {k: _unescape(v) for k, v in kv.items()}
        if transport == "unix":
            if "path" in kv:
                return kv["path"]
            if "abstract" in kv:
                return "\0" + kv["abstract"]
    raise DBusError("org.freedesktop.DBus.Error.BadAddress", f"no usable unix address in {address!r}")


def _unescape(v):
    out, i = bytearray(), 0
    b = v.encode()
    while i < len(b):
        if b[i:i + 1] == b"%":
            out.append(int(b[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return out.decode()


class Connection:
    """A connection to a message bus (or a peer) at a D-Bus address."""

    def __init__(self, address=None, timeout=25.0, bus=True):
        address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") \
            or "unix:path=/run/dbus/system_bus_socket"
        self.address = address
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self.sock.connect(_parse_address(address))
        self._rbuf = bytearray()
        self._rfds = []
        self._serial = 0
        self._queue = []           # messages received while waiting for something else
        self.unix_fd = False
        self.unique_name = None
        self._auth()
        if bus:
            (self.unique_name,) = self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "Hello")

    # -- plumbing ------------------------------------------------------------

    def _readline(self):
        while b"\r\n" not in self._rbuf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise DBusError("org.freedesktop.DBus.Error.AuthFailed", "connection closed during auth")
            self._rbuf += chunk
        line, _, rest = bytes(self._rbuf).partition(b"\r\n")
        self._rbuf = bytearray(rest)
        return line.decode()

    def _auth(self):
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        reply = self._readline()
        if not reply.startswith("OK "):
            raise DBusError("org.freedesktop.DBus.Error.AuthFailed", reply)
        self.guid = reply[3:]
        self.sock.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        self.unix_fd = self._readline().startswith("AGREE_UNIX_FD")
        self.sock.sendall(b"BEGIN\r\n")

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for fd in self._rfds:
            os.close(fd)
        self._rfds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fileno(self):
        return self.sock.fileno()

    def _send(self, data, fds):
        if fds:
            if not self.unix_fd:
                raise DBusError("org.freedesktop.DBus.Error.NotSupported", "fd passing not negotiated")
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = self.sock.sendmsg([data], anc)
            if sent < len(data):
                self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def _recv_more(self, deadline):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out waiting for a D-Bus message")
            self.sock.settimeout(remaining)
        else:
            self.sock.settimeout(None)
        data, anc, _flags, _addr = self.sock.recvmsg(
            1 << 20, socket.CMSG_SPACE(64 * array.array("i").itemsize))
        for level, ctype, cdata in anc:
            if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
                self._rfds.extend(a)
        if not data:
            raise DBusError("org.freedesktop.DBus.Error.Disconnected", "connection closed by the bus")
        self._rbuf += data

    def _parse_one(self):
        """Take one complete message from the read buffer, or return None."""
        buf = self._rbuf
        if len(buf) < 16:
            return None
        endian = "<" if buf[0:1] == b"l" else ">"
        mtype, flags = buf[1], buf[2]
        blen, serial, flen = struct.unpack_from(endian + "III", buf, 4)
        hlen = 16 + flen
        hlen += (-hlen) % 8
        total = hlen + blen
        if len(buf) < total:
            return None
        r = _Reader(bytes(buf[:hlen]), endian)
        r.pos = 12
        fields = dict((code, val) for code, val in r.read("a(yv)"))
        nfds = fields.get(_F_UNIX_FDS, 0)
        fds, self._rfds = self._rfds[:nfds], self._rfds[nfds:]
        sig = fields.get(_F_SIGNATURE, "")
        br = _Reader(bytes(buf[hlen:total]), endian, fds)
        body = [br.read(t) for t in split_signature(sig)]
        del self._rbuf[:total]
        return Message(mtype, flags, serial, fields, body, fds)

    def _next_message(self, deadline):
        while True:
            msg = self._parse_one()
            if msg is not None:
                return msg
            self._recv_more(deadline)

    def _handle_incoming_call(self, msg):
        """Answer method calls addressed to us (Peer.Ping; everything else: unknown)."""
        if msg.flags & FLAG_NO_REPLY_EXPECTED:
            return
        if msg.interface == "org.freedesktop.DBus.Peer" and msg.member == "Ping":
            self._reply(msg, "", ())
        else:
            self._serial += 1
            data, fds = _encode_message(MESSAGE_ERROR, self._serial, {
                _F_REPLY_SERIAL: msg.serial, _F_DESTINATION: msg.sender,
                _F_ERROR_NAME: "org.freedesktop.DBus.Error.UnknownMethod"},
                "s", [f"minidbus: no method {msg.interface}.{msg.member}"], FLAG_NO_REPLY_EXPECTED)
            self._send(data, fds)

    def _reply(self, msg, signature, args):
        self._serial += 1
        data, fds = _encode_message(MESSAGE_METHOD_RETURN, self._serial, {
            _F_REPLY_SERIAL: msg.serial, _F_DESTINATION: msg.sender},
            signature, args, FLAG_NO_REPLY_EXPECTED)
        self._send(data, fds)

    # -- API -------------------------------------------------------------------

    def send_call(self, destination, path, interface, member, signature="", args=(),
                  flags=0):
        """Send a method call without waiting; returns its serial."""
        self._serial += 1
        fields = {_F_PATH: path, _F_MEMBER: member}
        if interface:
            fields[_F_INTERFACE] = interface
        if destination:
            fields[_F_DESTINATION] = destination
        data, fds = _encode_message(MESSAGE_METHOD_CALL, self._serial, fields, signature, args, flags)
        self._send(data, fds)
        return self._serial

    def wait_reply(self, serial, timeout=None):
        """Wait for the reply to `serial`; returns the body list or raises DBusError."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        for i, m in enumerate(self._queue):
            if m.type in (MESSAGE_METHOD_RETURN, MESSAGE_ERROR) and m.reply_serial == serial:
                del self._queue[i]
                return self._result(m)
        while True:
            m = self._next_message(deadline)
            if m.type in (MESSAGE_METHOD_RETURN, MESSAGE_ERROR) and m.reply_serial == serial:
                return self._result(m)
            if m.type == MESSAGE_METHOD_CALL:
                self._handle_incoming_call(m)
            else:
                self._queue.append(m)

    @staticmethod
    def _result(m):
        if m.type == MESSAGE_ERROR:
            text = m.body[0] if m.body and isinstance(m.body[0], str) else ""
            raise DBusError(m.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return m.body

    def call(self, destination, path, interface, member, signature="", args=(),
             timeout=None, flags=0):
        """Call a method and return the reply's body as a list."""
        serial = self.send_call(destination, path, interface, member, signature, args, flags)
        return self.wait_reply(serial, timeout)

    def call_message(self, destination, path, interface, member, signature="", args=(),
                     timeout=None, flags=0):
        """Like call() but also returns the fds received with the reply: (body, fds)."""
        serial = self.send_call(destination, path, interface, member, signature, args, flags)
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            m = self._next_message(deadline)
            if m.type in (MESSAGE_METHOD_RETURN, MESSAGE_ERROR) and m.reply_serial == serial:
                return self._result(m), m.fds
            if m.type == MESSAGE_METHOD_CALL:
                self._handle_incoming_call(m)
            else:
                self._queue.append(m)

    def get_property(self, destination, path, interface, name, timeout=None):
        (v,) = self.call(destination, path, "org.freedesktop.DBus.Properties", "Get", "ss",
                         [interface, name], timeout)
        return v

    def get_all_properties(self, destination, path, interface, timeout=None):
        (v,) = self.call(destination, path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                         [interface], timeout)
        return v

    def _bus(self, member, signature="", args=(), timeout=None):
        return self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                         member, signature, args, timeout)

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

    def add_match(self, rule):
        self._bus("AddMatch", "s", [rule])

    def wait_signal(self, predicate=None, timeout=None, **match):
        """Wait for a signal (set up a match rule with add_match first).

        match keys: interface, member, path, sender; predicate(msg) -> bool.
        Returns the Message; raises TimeoutError.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout

        def ok(m):
            if m.type != MESSAGE_SIGNAL:
                return False
            for k, v in match.items():
                if getattr(m, k) != v:
                    return False
            return predicate is None or predicate(m)

        for i, m in enumerate(self._queue):
            if ok(m):
                del self._queue[i]
                return m
        while True:
            m = self._next_message(deadline)
            if ok(m):
                return m
            if m.type == MESSAGE_METHOD_CALL:
                self._handle_incoming_call(m)
            else:
                self._queue.append(m)

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

    def pending_signals(self):
        """Signals received so far that nobody has consumed (without blocking)."""
        while True:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                break
            self._recv_more(time.monotonic() + 1.0)
            while True:
                m = self._parse_one()
                if m is None:
                    break
                if m.type == MESSAGE_METHOD_CALL:
                    self._handle_incoming_call(m)
                else:
                    self._queue.append(m)
        sigs = [m for m in self._queue if m.type == MESSAGE_SIGNAL]
        self._queue = [m for m in self._queue if m.type != MESSAGE_SIGNAL]
        return sigs


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
# command line


def _from_json(v, conn):
    if isinstance(v, str) and v == "$SELF":
        return conn.unique_name
    if isinstance(v, dict):
        if set(v) == {"$v"}:
            sig, val = v["$v"]
            return Variant(sig, _from_json(val, conn))
        return {k: _from_json(x, conn) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x, conn) for x in v]
    return v


def _to_json(v):
    if isinstance(v, bytes):
        return list(v)
    if isinstance(v, (list, tuple)):
        return [_to_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _to_json(x) for k, x in v.items()}
    return v


def _fix_structs(sig, v):
    """JSON has no tuples: turn lists into tuples where the signature says struct."""
    c = sig[0]
    if c in "({":
        return tuple(_fix_structs(t, x) for t, x in zip(split_signature(sig[1:-1]), v))
    if c == "a" and sig[1] == "{" and isinstance(v, dict):
        kt, vt = split_signature(sig[2:-1])
        return {k: _fix_structs(vt, x) for k, x in v.items()}
    if c == "a" and isinstance(v, list):
        return [_fix_structs(sig[1:], x) for x in v]
    return v


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="tiny D-Bus client for the tunnelgate tests")
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
                args = _from_json(json.loads(a.args), conn)
                types = split_signature(a.signature)
                args = [_fix_structs(t, x) for t, x in zip(types, args)]
                out = _to_json(conn.call(a.dest, a.path, a.iface, a.member, a.signature, args))
            elif a.cmd == "get":
                out = _to_json(conn.get_property(a.dest, a.path, a.iface, a.prop))
            else:
                out = {"unique_name": conn.unique_name, "pid": os.getpid(), "uid": os.getuid()}
    except DBusError as e:
        print(json.dumps({"error": e.name, "message": e.message}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

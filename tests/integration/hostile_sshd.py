#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A hostile SSH server for the tunnelgate integration tests (paramiko).

Not a stand-in for sshd: a misbehaving network peer that tunnelgated connects
to, driven by the test over a control socket. It

  * accepts any user with any public key (no other method),
  * answers "tcpip-forward" global requests as configured (by default
    success, with a port of its own choosing for port 0, as RFC 4254 says)
    but never listens anywhere,
  * and then, on command, does what a hostile server may do to a client:
    opens channels of any type with any parameters towards it (forwarded-tcpip
    for ports it was never asked for, session, x11, huge originators, tiny
    packet sizes), sends global requests and raw packets of its own making,
    or hangs up.

Usage (the test starts it in the world's gateway namespace):

  hostile_sshd.py --listen ADDR:PORT --host-key FILE --control PATH

It prints "READY <port>" once it listens on both sockets, and logs one line
per event on stdout.

The control socket (a Unix stream socket at PATH) takes one JSON object per
line and answers each with one JSON object per line ({"ok": false,
"error": ...} when the operation failed). Operations ("op"):

  ping                                   -> {"ok": true}
  config  forward_reply=MODE             how to answer tcpip-forward from now on:
          ok (success; the bound port only for port 0), fail (failure),
          silent (no answer at all), port0 (success naming port 0 for a
          port-0 request), noport (success without a port for a port-0
          request), bigport (success naming port 70000 for a port-0 request)
  sessions                               -> {"ok": true, "sessions": [SESSION...]}
  wait_session after=N forwards=K timeout=T
                                         -> the first session with id > N that
          is authenticated and has at least K tcpip-forwards: {"session": SESSION}
  open    session=ID kind=TYPE [dest=[A,P]] [orig=[A,P]] [window=W]
          [orig_b64=B64] [max_packet=M] [timeout=T]
                                         -> {"ok": true, "channel": CID} when the
          client accepted; {"ok": false, "error": "refused", "code": C,
          "text": "..."} when it answered SSH_MSG_CHANNEL_OPEN_FAILURE;
          {"ok": false, "error": "timeout"} when it did not answer
  echo    channel=CID data=B64 [timeout=T]
                                         sends "ECHO\\n" + data on an open channel,
          shuts down writing and reads to EOF -> {"ok": true, "data": B64}
  send    channel=CID data=B64           sends data on an open channel (no EOF)
  close_channel channel=CID
  global  session=ID kind=NAME [want_reply=true] [payload=B64] [timeout=T]
                                         a global request whose body after the
          name and want_reply flag is payload (raw bytes) -> {"ok": true,
          "reply": "success"|"failure"|"none", "data": B64}
  raw     session=ID payload=B64         an arbitrary packet payload (its first
          byte is the message number), sent as it is
  disconnect session=ID                  drops the connection

SESSION is {"id", "peer", "user", "authenticated", "active", "forwards":
[{"address", "port", "bound"}]}.
"""

import argparse
import base64
import json
import os
import socket
import sys
import threading
import time
import traceback

import paramiko
from paramiko.common import (MSG_GLOBAL_REQUEST, cMSG_REQUEST_FAILURE,
                             cMSG_REQUEST_SUCCESS)
from paramiko.message import Message

LOG_LOCK = threading.Lock()


def log(text):
    with LOG_LOCK:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        sys.stdout.flush()


def short(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} long)"


class Session:
    def __init__(self, server, sid, peer):
        self.server = server
        self.id = sid
        self.peer = peer
        self.user = None
        self.authenticated = False
        self.transport = None
        self.forwards = []             # {"address", "port", "bound"}
        self.lock = threading.Lock()   # serialises opens (they patch the transport)

    def describe(self):
        return {"id": self.id, "peer": self.peer, "user": self.user,
                "authenticated": self.authenticated,
                "active": bool(self.transport and self.transport.is_active()),
                "forwards": [dict(f) for f in self.forwards]}


class Interface(paramiko.ServerInterface):
    """Lets anyone in with any key; refuses every channel the client opens."""

    def __init__(self, session):
        self.session = session

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_none(self, username):
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        log(f"session {self.session.id}: publickey {key.get_name()} "
            f"{key.get_fingerprint().hex()} for {username!r}: accepted")
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        log(f"session {self.session.id}: client opens a {kind} channel: refused")
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind, msg):
        log(f"session {self.session.id}: global request {kind!r} from the client: refused")
        return False


class HostileTransport(paramiko.Transport):
    """A Transport whose tcpip-forward answers follow the configured mode."""

    hostile_session = None

    def _hostile_global_request(self, m):
        session = self.hostile_session
        kind = m.get_text()
        want_reply = m.get_boolean()
        if kind == "keepalive@openssh.com":
            ok, extra = False, None
        elif kind in ("tcpip-forward", "cancel-tcpip-forward"):
            address = m.get_text()
            port = m.get_int()
            ok, extra = session.server.forward_request(session, kind, address, port)
        else:
            log(f"session {session.id}: global request {kind!r} from the client: refused")
            ok, extra = False, None
        if ok is None:                       # "silent": no answer at all
            return
        if want_reply:
            msg = Message()
            if ok:
                msg.add_byte(cMSG_REQUEST_SUCCESS)
                if extra is not None:
                    msg.add_int(extra)
            else:
                msg.add_byte(cMSG_REQUEST_FAILURE)
            self._send_message(msg)

    _handler_table = dict(paramiko.Transport._handler_table)
    _handler_table[MSG_GLOBAL_REQUEST] = _hostile_global_request


class HostileServer:
    def __init__(self, host_key):
        self.host_key = host_key
        self.lock = threading.Condition()
        self.sessions = {}
        self.next_session = 1
        self.channels = {}
        self.next_channel = 1
        self.forward_reply = "ok"
        self.next_port = 31000

    # -- SSH side ---------------------------------------------------------------------

    def forward_request(self, session, kind, address, port):
        """(ok, extra) for a tcpip-forward or cancel-tcpip-forward; ok None = no answer."""
        with self.lock:
            mode = self.forward_reply
            if kind == "cancel-tcpip-forward":
                session.forwards = [f for f in session.forwards
                                    if not (f["address"] == address and f["bound"] == port)]
                log(f"session {session.id}: cancel-tcpip-forward {address!r} {port}: ok")
                self.lock.notify_all()
                return True, None
            if mode == "fail":
                result = (False, None)
            elif mode == "silent":
                result = (None, None)
            elif port != 0:
                result = (True, None)
            elif mode == "port0":
                result = (True, 0)
            elif mode == "noport":
                result = (True, None)
            elif mode == "bigport":
                result = (True, 70000)
            else:
                self.next_port += 1
                result = (True, self.next_port)
            if result[0] and mode == "ok":
                bound = port if port != 0 else result[1]
                session.forwards.append({"address": address, "port": port, "bound": bound})
            self.lock.notify_all()
        log(f"session {session.id}: tcpip-forward {address!r} {port}: mode {mode}, "
            f"answer {result}")
        return result

    def serve_connection(self, sock, peer):
        with self.lock:
            sid = self.next_session
            self.next_session += 1
            session = Session(self, sid, f"{peer[0]}:{peer[1]}")
            self.sessions[sid] = session
        log(f"session {sid}: connection from {session.peer}")
        t = HostileTransport(sock)
        t.hostile_session = session
        session.transport = t
        t.add_server_key(self.host_key)
        try:
            t.start_server(server=Interface(session))
        except (paramiko.SSHException, EOFError, OSError) as e:
            log(f"session {sid}: handshake failed: {e!r}")
            return
        # the transport's thread does the work; wait for authentication
        deadline = time.monotonic() + 60
        while t.is_active() and not t.is_authenticated() and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            session.user = t.get_username()
            session.authenticated = t.is_authenticated()
            self.lock.notify_all()
        log(f"session {sid}: authenticated={session.authenticated} user={session.user!r}")
        # Channels the client tries to open are refused by Interface;
        # accept() only drains paramiko's queue of accepted ones (none).
        while t.is_active():
            t.accept(0.5)
        log(f"session {sid}: connection ended")
        with self.lock:
            self.lock.notify_all()

    def accept_loop(self, listener):
        while True:
            try:
                sock, peer = listener.accept()
            except OSError as e:
                log(f"accept: {e!r}")
                time.sleep(0.1)
                continue
            threading.Thread(target=self.serve_connection, args=(sock, peer), daemon=True,
                             name=f"ssh-{peer[1]}").start()

    # -- control side ---------------------------------------------------------------------

    def session(self, req):
        with self.lock:
            s = self.sessions.get(int(req["session"]))
        if s is None or s.transport is None:
            raise KeyError(f"no session {req.get('session')}")
        return s

    def channel(self, req):
        with self.lock:
            c = self.channels.get(int(req["channel"]))
        if c is None:
            raise KeyError(f"no channel {req.get('channel')}")
        return c

    def op_ping(self, req):
        return {}

    def op_config(self, req):
        mode = req["forward_reply"]
        if mode not in ("ok", "fail", "silent", "port0", "noport", "bigport"):
            raise ValueError(f"unknown forward_reply {mode!r}")
        with self.lock:
            self.forward_reply = mode
        log(f"control: tcpip-forward answers are now {mode!r}")
        return {}

    def op_sessions(self, req):
        with self.lock:
            return {"sessions": [s.describe() for s in self.sessions.values()]}

    def op_wait_session(self, req):
        after, want = int(req.get("after", 0)), int(req.get("forwards", 0))
        deadline = time.monotonic() + float(req.get("timeout", 30))
        with self.lock:
            while True:
                for s in sorted(self.sessions.values(), key=lambda s: s.id):
                    if s.id > after and s.authenticated and len(s.forwards) >= want:
                        return {"session": s.describe()}
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no session after {after} with {want} forwards: "
                                       f"{[s.describe() for s in self.sessions.values()]}")
                self.lock.wait(min(left, 0.2))

    def op_open(self, req):
        s = self.session(req)
        t = s.transport
        kind = req["kind"]
        dest = tuple(req.get("dest") or ("localhost", 0))
        orig = tuple(req.get("orig") or ("127.0.0.1", 40000))
        if "orig_b64" in req:           # an originator that is not text (any bytes)
            orig = (base64.b64decode(req["orig_b64"]), orig[1])
        timeout = float(req.get("timeout", 15))
        window, max_packet = req.get("window"), req.get("max_packet")
        log(f"session {s.id}: opening a {kind} channel dest={short(dest[0])}:{dest[1]} "
            f"orig={short(orig[0])}:{orig[1]} window={window} max_packet={max_packet}")
        with s.lock:
            # paramiko clamps both to sane values; a hostile server need not
            if max_packet is not None:
                t._sanitize_packet_size = lambda v: v
            if window is not None:
                t._sanitize_window_size = lambda v: v
            try:
                chan = t.open_channel(kind, dest_addr=dest, src_addr=orig,
                                      window_size=window, max_packet_size=max_packet,
                                      timeout=timeout)
            except paramiko.ChannelException as e:
                log(f"session {s.id}: the client refused the {kind} channel: "
                    f"{e.code} {e.text!r}")
                return {"ok": False, "error": "refused", "code": e.code, "text": e.text}
            except paramiko.SSHException as e:
                log(f"session {s.id}: opening the {kind} channel failed: {e!r}")
                return {"ok": False, "error": "timeout" if "Timeout" in str(e) else "ssh",
                        "text": str(e)}
            finally:
                t.__dict__.pop("_sanitize_packet_size", None)
                t.__dict__.pop("_sanitize_window_size", None)
        with self.lock:
            cid = self.next_channel
            self.next_channel += 1
            self.channels[cid] = chan
        log(f"session {s.id}: the client accepted the {kind} channel (control id {cid})")
        return {"channel": cid}

    def op_echo(self, req):
        chan = self.channel(req)
        data = base64.b64decode(req.get("data", ""))
        chan.settimeout(float(req.get("timeout", 30)))
        err = []

        def writer():
            try:
                chan.sendall(b"ECHO\n" + data)
                chan.shutdown_write()
            except Exception as e:  # noqa: BLE001 - reported below
                err.append(e)

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        chunks = []
        try:
            while True:
                c = chan.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except socket.timeout:
            raise TimeoutError(f"echo: no EOF after {len(b''.join(chunks))} bytes") from None
        finally:
            w.join(5)
        if err:
            raise err[0]
        return {"data": base64.b64encode(b"".join(chunks)).decode()}

    def op_send(self, req):
        chan = self.channel(req)
        chan.settimeout(float(req.get("timeout", 30)))
        chan.sendall(base64.b64decode(req.get("data", "")))
        return {}

    def op_close_channel(self, req):
        chan = self.channel(req)
        chan.close()
        with self.lock:
            self.channels.pop(int(req["channel"]), None)
        return {}

    def op_global(self, req):
        s = self.session(req)
        t = s.transport
        kind = req["kind"]
        want_reply = bool(req.get("want_reply", True))
        payload = base64.b64decode(req.get("payload", ""))
        m = Message()
        m.add_byte(bytes([MSG_GLOBAL_REQUEST]))
        m.add_string(kind)
        m.add_boolean(want_reply)
        m.add_bytes(payload)
        log(f"session {s.id}: sending global request {short(kind)} want_reply={want_reply} "
            f"with {len(payload)} bytes")
        with s.lock:
            t.completion_event = event = threading.Event()
            t.global_response = None
            t._send_user_message(m)
            if not want_reply:
                return {"reply": "none", "data": ""}
            if not event.wait(float(req.get("timeout", 10))):
                log(f"session {s.id}: no answer to the global request")
                return {"reply": "none", "data": "", "active": t.is_active()}
            response = t.global_response
        if response is None:
            log(f"session {s.id}: the client answered the global request with failure")
            return {"reply": "failure", "data": ""}
        rest = response.get_remainder()
        log(f"session {s.id}: the client answered the global request with success")
        return {"reply": "success", "data": base64.b64encode(rest).decode()}

    def op_raw(self, req):
        s = self.session(req)
        payload = base64.b64decode(req["payload"])
        m = Message()
        m.add_bytes(payload)
        log(f"session {s.id}: sending a raw packet of type {payload[:1].hex()} "
            f"({len(payload)} bytes)")
        s.transport._send_user_message(m)
        return {"active": s.transport.is_active()}

    def op_disconnect(self, req):
        s = self.session(req)
        log(f"session {s.id}: disconnecting")
        s.transport.close()
        return {}

    def control_client(self, conn):
        f = conn.makefile("rb")
        try:
            for line in f:
                try:
                    req = json.loads(line)
                    handler = getattr(self, "op_" + str(req.get("op")), None)
                    if handler is None:
                        raise ValueError(f"unknown op {req.get('op')!r}")
                    res = handler(req)
                    res.setdefault("ok", True)
                except Exception as e:  # noqa: BLE001 - handed to the test
                    log(f"control: {line[:200]!r} failed: {e!r}\n{traceback.format_exc()}")
                    res = {"ok": False, "error": type(e).__name__, "text": str(e)}
                conn.sendall((json.dumps(res) + "\n").encode())
        except OSError:
            pass
        finally:
            conn.close()

    def control_loop(self, listener):
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self.control_client, args=(conn,), daemon=True,
                             name="control").start()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="ADDR:PORT (PORT 0: any)")
    p.add_argument("--host-key", required=True, help="an OpenSSH private key file")
    p.add_argument("--control", required=True, help="path of the control socket")
    p.add_argument("--paramiko-log", help="write paramiko's debug log to this file")
    a = p.parse_args(argv)

    if a.paramiko_log:
        paramiko.util.log_to_file(a.paramiko_log, level="DEBUG")
    key = None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key = cls(filename=a.host_key)
            break
        except paramiko.SSHException:
            continue
    if key is None:
        sys.exit(f"cannot read the host key {a.host_key}")
    server = HostileServer(key)

    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(64)

    try:
        os.unlink(a.control)
    except FileNotFoundError:
        pass
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(a.control)
    os.chmod(a.control, 0o600)
    control.listen(8)

    threading.Thread(target=server.control_loop, args=(control,), daemon=True,
                     name="control-accept").start()
    log(f"host key {key.get_name()} {key.get_fingerprint().hex()}")
    print(f"READY {listener.getsockname()[1]}", flush=True)
    try:
        server.accept_loop(listener)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""TCP (and unix socket) "data" service for the tunnelgate integration tests.

The first line the client sends selects the mode:

  ECHO\\n        echo everything that follows until EOF, then half-close and close
  HASH\\n        read everything that follows until EOF (the client half-closes),
                then reply with the hex SHA-256 of it and "\\n", and close
  SEND <n>\\n    send n bytes of the deterministic stream (pattern_bytes(n)), then close
  WHOAMI\\n      reply "<peer address> <peer port>\\n" (how the server sees the client), close
  HOLD\\n        send nothing; wait until the client closes (for idle/lifetime tests)

Anything else (a first line that is not a command, or no newline within the
first 64 bytes) is plain echo of everything received, including those bytes.

The SEND stream is a 1 MiB block of SHA-256-chain pseudorandom bytes
(seed PATTERN_SEED) repeated; pattern_bytes()/pattern_sha256() below let a
test compute what it must receive. Stdlib only; one thread per connection
with 256 KiB buffers, a 4096 listen backlog and small thread stacks, so
hundreds of concurrent connections and high throughput are fine.

Usage: dataserver.py [--listen HOST:PORT | --listen unix:PATH]... [--verbose]
Prints "READY <addresses>" on stdout once every listener is bound.
"""

import argparse
import hashlib
import os
import signal
import socket
import sys
import threading
import time

BUFSIZE = 256 * 1024
PATTERN_SEED = b"tunnelgate-dataserver-v1"
_PATTERN_LEN = 1 << 20
_pattern = None
_pattern_lock = threading.Lock()


def _pattern_block():
    global _pattern
    with _pattern_lock:
        if _pattern is None:
            out = bytearray()
            h = hashlib.sha256(PATTERN_SEED).digest()
            while len(out) < _PATTERN_LEN:
                h = hashlib.sha256(h).digest()
                out += h
            _pattern = bytes(out)
    return _pattern


def iter_pattern(n, chunk=BUFSIZE):
    """Yield the first n bytes of the deterministic stream as memoryview chunks."""
    block = memoryview(_pattern_block())
    off = 0
    while n > 0:
        take = min(n, chunk, _PATTERN_LEN - off)
        yield block[off:off + take]
        n -= take
        off = (off + take) % _PATTERN_LEN


def pattern_bytes(n):
    """The first n bytes of the SEND stream."""
    return b"".join(bytes(c) for c in iter_pattern(n))


def pattern_sha256(n):
    """Hex SHA-256 of the first n bytes of the SEND stream (without building it)."""
    h = hashlib.sha256()
    for c in iter_pattern(n, 1 << 20):
        h.update(c)
    return h.hexdigest()


VERBOSE = False


def log(msg):
    if VERBOSE:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def _finish(conn):
    """Half-close, drain what the peer still sends (so close() sends FIN, not RST), close."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(30)
        while conn.recv(BUFSIZE):
            pass
    except OSError:
        pass


def _echo(conn, initial):
    if initial:
        conn.sendall(initial)
    buf = bytearray(BUFSIZE)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        conn.sendall(view[:n])
    _finish(conn)


def _hash(conn, initial):
    h = hashlib.sha256(initial)
    buf = bytearray(BUFSIZE)
    view = memoryview(buf)
    total = len(initial)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        h.update(view[:n])
        total += n
    conn.sendall(h.hexdigest().encode() + b"\n")
    log(f"HASH {total} bytes")
    _finish(conn)


def _send(conn, n):
    for chunk in iter_pattern(n):
        conn.sendall(chunk)
    _finish(conn)


def handle(conn, peer):
    try:
        conn.settimeout(None)
        first = bytearray()
        while b"\n" not in first and len(first) < 64:
            chunk = conn.recv(BUFSIZE)
            if not chunk:
                break
            first += chunk
        line, nl, rest = bytes(first).partition(b"\n")
        words = line.strip().split()
        cmd = words[0].upper() if nl and words else b""
        log(f"connection from {peer}: {cmd.decode(errors='replace') or 'raw echo'}")
        if cmd == b"ECHO" and len(words) == 1:
            _echo(conn, rest)
        elif cmd == b"HASH" and len(words) == 1:
            _hash(conn, rest)
        elif cmd == b"SEND" and len(words) == 2 and words[1].isdigit():
            _send(conn, int(words[1]))
        elif cmd == b"WHOAMI" and len(words) == 1:
            if isinstance(peer, tuple):
                host = peer[0]
                if host.startswith("::ffff:") and "." in host:
                    host = host[7:]         # IPv4-mapped (dual-stack listener)
                conn.sendall(f"{host} {peer[1]}\n".encode())
            else:
                conn.sendall(b"unix -\n")
            _finish(conn)
        elif cmd == b"HOLD" and len(words) == 1:
            while conn.recv(BUFSIZE):
                pass
        else:
            if not first:       # EOF before anything was sent
                _finish(conn)
            else:
                _echo(conn, bytes(first))
    except OSError as e:
        log(f"connection from {peer}: {e}")
    finally:
        conn.close()


def serve(listener):
    while True:
        try:
            conn, peer = listener.accept()
        except OSError as e:
            log(f"accept: {e}")
            continue
        t = threading.Thread(target=handle, args=(conn, peer), daemon=True)
        t.start()


def make_listener(spec):
    if spec.startswith("unix:"):
        path = spec[5:]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, 0o666)
    else:
        host, _, port = spec.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((host, int(port)))
    s.listen(4096)
    return s


def main(argv=None):
    global VERBOSE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", action="append", default=[],
                   help="HOST:PORT, [V6]:PORT or unix:PATH (repeatable; default 0.0.0.0:9000)")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    VERBOSE = a.verbose
    threading.stack_size(256 * 1024)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _pattern_block()
    listeners = [make_listener(s) for s in (a.listen or ["0.0.0.0:9000"])]
    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    print("READY " + " ".join(a.listen or ["0.0.0.0:9000"]), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)

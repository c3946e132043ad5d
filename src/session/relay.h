/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The hot path: bytes between one accepted local connection and its SSH
 * channel. Runs only in the tunnel's worker thread.
 *
 * Back-pressure both ways, with nothing buffered without bound:
 *  - client -> server: the client socket is polled for input only while the
 *    channel's remote window is open and libssh's output queue is empty, and
 *    at most the window (and 64 KiB) is read, so the server's flow control
 *    and the SSH socket's speed reach the client through TCP;
 *  - server -> client: data is taken from the channel only when everything
 *    read before has been written to the client; libssh grows the local
 *    window only as data is taken, so a slow reader stalls the server's
 *    sender instead of filling our memory.
 * Half-close: EOF from the client becomes channel EOF, channel EOF becomes
 * shutdown(SHUT_WR) on the client; the other direction keeps flowing until
 * it ends too. No logging and no allocation per packet. */
#pragma once

#include <glib.h>
#include <libssh/libssh.h>
#include <poll.h>

#include "counters.h"
#include "socks.h"

typedef struct _TgRelay TgRelay;

typedef enum {
  TG_RELAY_CONTINUE,
  TG_RELAY_DONE,          /* both directions finished normally */
  TG_RELAY_FAILED,        /* channel refused or broken, or the client reset */
  TG_RELAY_SOCKS_REQUEST, /* a SOCKS client asked for a destination: decide
                           * with tg_relay_socks_allow() or _deny() */
} TgRelayStatus;

/* Takes ownership of client_fd (non-blocking). The channel is opened with
 * direct-tcpip to target_host:target_port, naming the client's address as
 * originator, as OpenSSH does. */
/* The most a relay's buffers hold: what MaxBuffered counts per connection. */
#define TG_RELAY_BUFFER_BYTES (320 * 1024)

TgRelay *tg_relay_new(ssh_session session, guint forward_index, int client_fd,
                      const char *target_host, guint16 target_port,
                      const char *origin_address, guint16 origin_port);

/* As tg_relay_new(), to a Unix socket on the server
 * (direct-streamlocal@openssh.com) at @target_path. */
TgRelay *tg_relay_new_unix_target(ssh_session session, guint forward_index, int client_fd,
                                  const char *target_path, const char *origin_address,
                                  guint16 origin_port);

/* A remote forward's connection: the server opened @channel (accepted);
 * @connecting_fd (taken, non-blocking) is the daemon's connection to
 * target_host:target_port, still connecting. The relay starts moving bytes
 * once it is connected, and fails (closing the channel) if it cannot. */
TgRelay *tg_relay_new_connect_back(ssh_channel channel, guint forward_index,
                                   int connecting_fd, const char *target_host,
                                   guint16 target_port, const char *origin_address,
                                   guint16 origin_port);

/* A dynamic (D) forward's connection: a SOCKS handshake first, which must
 * complete before @deadline (monotonic time). */
TgRelay *tg_relay_new_socks(ssh_session session, guint forward_index, int client_fd,
                            const char *origin_address, guint16 origin_port,
                            gint64 deadline);

/* The destination a SOCKS client asked for (after TG_RELAY_SOCKS_REQUEST). */
const char *tg_relay_socks_host(TgRelay *relay);
guint16 tg_relay_socks_port(TgRelay *relay);
/* Opens the channel to it; the client hears success or failure from the
 * channel's opening. */
void tg_relay_socks_allow(TgRelay *relay);
/* Refuses it with the protocol's code (TG_SOCKS_NOT_ALLOWED for a policy
 * denial); returns TG_RELAY_FAILED with @why as the failure. */
TgRelayStatus tg_relay_socks_deny(TgRelay *relay, TgSocksStatus status, const char *why);

/* The monotonic time by which the relay must have made progress (a SOCKS
 * handshake), or 0. Past it, tg_relay_pump() fails the relay. */
gint64 tg_relay_deadline(TgRelay *relay);

/* The index of the forward whose listener accepted this connection. */
guint tg_relay_forward_index(TgRelay *relay);

/* poll() events to wait for on the client socket. While libssh has output
 * queued (ssh_output_queued), clients are not read. */
short tg_relay_client_events(TgRelay *relay, gboolean ssh_output_queued);
int tg_relay_client_fd(TgRelay *relay);

/* TRUE when the relay has work without news on its client socket: the
 * channel has data, EOF or close pending, or the channel is still opening. */
gboolean tg_relay_wants_pump(TgRelay *relay);

/* TRUE when libssh holds data, EOF or close for an open relay that nobody
 * took yet: arrived while libssh processed packets outside the poll loop
 * (e.g. waiting for the server's answer to a tcpip-forward request). The
 * loop must not sleep in poll() then: the SSH socket may stay quiet. */
gboolean tg_relay_has_news(TgRelay *relay);

/* Moves what can be moved without blocking. */
TgRelayStatus tg_relay_pump(TgRelay *relay, short client_revents,
                            gboolean ssh_output_queued, TgCounters *counters);

/* Why a relay failed, for the log; NULL when it did not. */
const char *tg_relay_failure(TgRelay *relay);

/* "address port" of the local client, and of the target, for logs. */
const char *tg_relay_peer(TgRelay *relay);
const char *tg_relay_destination(TgRelay *relay);

/* Bytes this connection moved: client to server, and back. */
void tg_relay_get_bytes(TgRelay *relay, guint64 *sent, guint64 *received);

/* Closes the channel and the client socket. */
void tg_relay_free(TgRelay *relay);

/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "relay.h"

#include <errno.h>
#include <libssh/callbacks.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum {
  RELAY_SOCKS,      /* D: reading the client's SOCKS handshake */
  RELAY_DECIDING,   /* D: the request waits for the policy's answer */
  RELAY_OPENING,    /* L (and D, once allowed): the channel is being opened */
  RELAY_CONNECTING, /* R: the channel is open, our TCP connect is not yet */
  RELAY_OPEN,
} RelayState;

struct _TgRelay {
  int client_fd;
  guint forward_index;
  ssh_channel channel;
  RelayState state;
  gboolean client_eof;   /* client sent EOF */
  gboolean eof_sent;     /* ...and it was passed on as channel EOF */
  gboolean server_eof;   /* channel EOF received; client write side shut */
  gboolean channel_news; /* data, EOF or close arrived on the channel */

  /* server -> client bytes read from the channel but not yet written */
  guint8 *pending;
  gsize pending_size, pending_start, pending_end;
  /* client -> server bytes libssh did not take yet (during a key exchange) */
  guint8 *outgoing;
  gsize outgoing_start, outgoing_end;

  char *target_host;
  guint16 target_port;
  char *origin_address;
  char *peer_text;        /* "address port", for the audit log */
  char *destination_text; /* "host port" */
  guint16 origin_port;
  char *failure;
  guint64 bytes_sent, bytes_received;
  struct ssh_channel_callbacks_struct callbacks;

  gboolean unix_target; /* target_host is a socket path on the server */

  /* D only */
  gboolean socks;
  TgSocksParser parser;
  guint8 *handshake; /* TG_SOCKS_MAX_HANDSHAKE bytes */
  gsize handshake_length;
  gint64 deadline;
};

#define PENDING_CAPACITY (256 * 1024)
G_STATIC_ASSERT(TG_RELAY_BUFFER_BYTES >= PENDING_CAPACITY + 64 * 1024);
/* at most this much per channel write: libssh's session socket is blocking
 * after the handshake and it sends its whole queue at once */
#define OUTGOING_CAPACITY (64 * 1024)

/* libssh calls these while processing packets in this thread. They only
 * note that the relay has work; the data stays in libssh's channel buffer
 * (consuming 0 bytes) until tg_relay_pump() takes it. */
static int
on_channel_data(ssh_session session, ssh_channel channel, void *data, uint32_t length,
                int is_stderr, void *user_data)
{
  ((TgRelay *)user_data)->channel_news = TRUE;
  return 0;
}

static void
on_channel_eof_or_close(ssh_session session, ssh_channel channel, void *user_data)
{
  ((TgRelay *)user_data)->channel_news = TRUE;
}

static TgRelayStatus relay_fail(TgRelay *relay, const char *why);

static TgRelay *
relay_new(ssh_channel channel, RelayState state, guint forward_index, int client_fd,
          const char *target_host, guint16 target_port, const char *origin_address,
          guint16 origin_port)
{
  TgRelay *relay = g_new0(TgRelay, 1);

  relay->client_fd = client_fd;
  relay->forward_index = forward_index;
  relay->channel = channel;
  relay->state = state;
  relay->target_host = g_strdup(target_host);
  relay->target_port = target_port;
  relay->origin_address = g_strdup(origin_address);
  relay->origin_port = origin_port;
  relay->peer_text = g_strdup_printf("%s port %u", origin_address, origin_port);
  relay->destination_text = g_strdup_printf("%s port %u", target_host, target_port);
  if (relay->channel == NULL) {
    relay->failure = g_strdup("cannot allocate a channel");
    return relay;
  }
  ssh_callbacks_init(&relay->callbacks);
  relay->callbacks.userdata = relay;
  relay->callbacks.channel_data_function = on_channel_data;
  relay->callbacks.channel_eof_function = on_channel_eof_or_close;
  relay->callbacks.channel_close_function = on_channel_eof_or_close;
  ssh_set_channel_callbacks(relay->channel, &relay->callbacks);
  return relay;
}

TgRelay *
tg_relay_new(ssh_session session, guint forward_index, int client_fd,
             const char *target_host, guint16 target_port, const char *origin_address,
             guint16 origin_port)
{
  return relay_new(ssh_channel_new(session), RELAY_OPENING, forward_index, client_fd,
                   target_host, target_port, origin_address, origin_port);
}

TgRelay *
tg_relay_new_unix_target(ssh_session session, guint forward_index, int client_fd,
                         const char *target_path, const char *origin_address,
                         guint16 origin_port)
{
  TgRelay *relay = relay_new(ssh_channel_new(session), RELAY_OPENING, forward_index,
                             client_fd, target_path, 0, origin_address, origin_port);

  relay->unix_target = TRUE;
  g_free(relay->destination_text);
  relay->destination_text = g_strdup_printf("unix socket %s", target_path);
  return relay;
}

TgRelay *
tg_relay_new_socks(ssh_session session, guint forward_index, int client_fd,
                   const char *origin_address, guint16 origin_port, gint64 deadline)
{
  TgRelay *relay = relay_new(ssh_channel_new(session), RELAY_SOCKS, forward_index,
                             client_fd, "", 0, origin_address, origin_port);

  relay->socks = TRUE;
  tg_socks_parser_init(&relay->parser);
  relay->handshake = g_malloc(TG_SOCKS_MAX_HANDSHAKE);
  relay->deadline = deadline;
  g_free(relay->destination_text);
  relay->destination_text = g_strdup("(SOCKS handshake)");
  return relay;
}

const char *
tg_relay_socks_host(TgRelay *relay)
{
  return relay->parser.host;
}

guint16
tg_relay_socks_port(TgRelay *relay)
{
  return relay->parser.port;
}

gint64
tg_relay_deadline(TgRelay *relay)
{
  return relay->state == RELAY_SOCKS ? relay->deadline : 0;
}

/* A small handshake answer; the socket buffer of a fresh connection always
 * has room for it. */
static gboolean
send_small(TgRelay *relay, const guint8 *data, gsize length)
{
  return length == 0 || send(relay->client_fd, data, length,
                             MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)length;
}

void
tg_relay_socks_allow(TgRelay *relay)
{
  g_return_if_fail(relay->state == RELAY_DECIDING);
  g_free(relay->target_host);
  relay->target_host = g_strdup(relay->parser.host);
  relay->target_port = relay->parser.port;
  g_free(relay->destination_text);
  relay->destination_text =
      g_strdup_printf("%s port %u", relay->target_host, relay->target_port);
  relay->state = RELAY_OPENING;
}

TgRelayStatus
tg_relay_socks_deny(TgRelay *relay, TgSocksStatus status, const char *why)
{
  guint8 reply[TG_SOCKS_MAX_REPLY];

  g_free(relay->destination_text);
  relay->destination_text =
      g_strdup_printf("%s port %u", relay->parser.host, relay->parser.port);
  send_small(relay, reply, tg_socks_reply(&relay->parser, status, reply));
  return relay_fail(relay, why);
}

/* D: reads the handshake and answers its first part; a complete request is
 * handed to the session for the policy's decision. */
static TgRelayStatus
pump_socks(TgRelay *relay, short client_revents)
{
  guint8 reply[TG_SOCKS_MAX_REPLY];
  gsize consumed, reply_length;
  const char *error;
  ssize_t n;

  if (g_get_monotonic_time() >= relay->deadline)
    return relay_fail(relay, "SOCKS handshake not finished in time");
  if ((client_revents & (POLLIN | POLLHUP | POLLERR)) == 0)
    return TG_RELAY_CONTINUE;
  n = recv(relay->client_fd, relay->handshake + relay->handshake_length,
           TG_SOCKS_MAX_HANDSHAKE - relay->handshake_length, MSG_DONTWAIT);
  if (n == 0)
    return relay_fail(relay, "the client left during the SOCKS handshake");
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
               ? TG_RELAY_CONTINUE
               : relay_fail(relay, "client connection reset");
  relay->handshake_length += n;

  for (;;) {
    TgSocksResult result =
        tg_socks_parse(&relay->parser, relay->handshake, relay->handshake_length,
                       &consumed, reply, &reply_length, &error);

    switch (result) {
    case TG_SOCKS_MORE:
      if (relay->handshake_length == TG_SOCKS_MAX_HANDSHAKE)
        return relay_fail(relay, "SOCKS handshake too long");
      return TG_RELAY_CONTINUE;
    case TG_SOCKS_ERROR:
      send_small(relay, reply, reply_length);
      return relay_fail(relay, error);
    case TG_SOCKS_REPLY:
      if (!send_small(relay, reply, reply_length))
        return relay_fail(relay, "client connection broken");
      break;
    case TG_SOCKS_REQUEST:
      break;
    }
    memmove(relay->handshake, relay->handshake + consumed,
            relay->handshake_length - consumed);
    relay->handshake_length -= consumed;
    if (result == TG_SOCKS_REQUEST) {
      relay->state = RELAY_DECIDING;
      return TG_RELAY_SOCKS_REQUEST;
    }
  }
}

TgRelay *
tg_relay_new_connect_back(ssh_channel channel, guint forward_index, int connecting_fd,
                          const char *target_host, guint16 target_port,
                          const char *origin_address, guint16 origin_port)
{
  /* the origin is the server side's peer; the "client" socket is ours */
  return relay_new(channel, RELAY_CONNECTING, forward_index, connecting_fd, target_host,
                   target_port, origin_address, origin_port);
}

guint
tg_relay_forward_index(TgRelay *relay)
{
  return relay->forward_index;
}

int
tg_relay_client_fd(TgRelay *relay)
{
  return relay->client_fd;
}

const char *
tg_relay_failure(TgRelay *relay)
{
  return relay->failure;
}

const char *
tg_relay_peer(TgRelay *relay)
{
  return relay->peer_text;
}

const char *
tg_relay_destination(TgRelay *relay)
{
  return relay->destination_text;
}

void
tg_relay_get_bytes(TgRelay *relay, guint64 *sent, guint64 *received)
{
  *sent = relay->bytes_sent;
  *received = relay->bytes_received;
}

short
tg_relay_client_events(TgRelay *relay, gboolean ssh_output_queued)
{
  short events = 0;

  if (relay->state == RELAY_CONNECTING)
    return POLLOUT;
  if (relay->state == RELAY_SOCKS)
    return POLLIN;
  if (relay->state != RELAY_OPEN)
    return 0;
  if (!relay->client_eof && !ssh_output_queued &&
      relay->outgoing_end == relay->outgoing_start &&
      ssh_channel_window_size(relay->channel) > 0)
    events |= POLLIN;
  if (relay->pending_end > relay->pending_start)
    events |= POLLOUT;
  return events;
}

gboolean
tg_relay_wants_pump(TgRelay *relay)
{
  if (relay->state == RELAY_SOCKS)
    return g_get_monotonic_time() >= relay->deadline;
  if (relay->state == RELAY_DECIDING)
    return FALSE;
  return relay->state == RELAY_OPENING || relay->channel_news || relay->failure != NULL ||
         relay->outgoing_end > relay->outgoing_start ||
         (relay->client_eof && !relay->eof_sent);
}

gboolean
tg_relay_has_news(TgRelay *relay)
{
  return relay->state == RELAY_OPEN && relay->channel_news && relay->pending_end == 0;
}

static TgRelayStatus
relay_fail(TgRelay *relay, const char *why)
{
  if (relay->failure == NULL)
    relay->failure = g_strdup(why);
  return TG_RELAY_FAILED;
}

/* Writes pending server->client bytes; FALSE on a broken client. */
static gboolean
flush_pending(TgRelay *relay)
{
  while (relay->pending_end > relay->pending_start) {
    ssize_t n =
        send(relay->client_fd, relay->pending + relay->pending_start,
             relay->pending_end - relay->pending_start, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    relay->pending_start += n;
  }
  relay->pending_start = relay->pending_end = 0;
  return TRUE;
}

/* server -> client: take from the channel only when nothing is pending. */
static TgRelayStatus
pump_to_client(TgRelay *relay, TgCounters *counters)
{
  if (!flush_pending(relay))
    return relay_fail(relay, "client connection broken");

  relay->channel_news = FALSE;
  while (relay->pending_end == 0 && !relay->server_eof) {
    int n = ssh_channel_read_nonblocking(relay->channel, relay->pending,
                                         relay->pending_size, 0);
    if (n == SSH_ERROR)
      return relay_fail(relay, "channel read failed");
    if (n > 0) {
      tg_counter_add(&counters->bytes_received, n);
      relay->bytes_received += n;
      relay->pending_end = n;
      if (!flush_pending(relay))
        return relay_fail(relay, "client connection broken");
      continue;
    }
    if (ssh_channel_is_eof(relay->channel)) {
      relay->server_eof = TRUE;
      shutdown(relay->client_fd, SHUT_WR);
    }
    break;
  }
  return TG_RELAY_CONTINUE;
}

/* Hands queued client bytes to libssh, as far as the window allows. */
static gboolean
flush_outgoing(TgRelay *relay)
{
  gsize queued = relay->outgoing_end - relay->outgoing_start;
  uint32_t window = ssh_channel_window_size(relay->channel);
  int written;

  if (queued == 0 || window == 0)
    return TRUE;
  written = ssh_channel_write(relay->channel, relay->outgoing + relay->outgoing_start,
                              MIN(queued, window));
  if (written < 0)
    return FALSE;
  relay->outgoing_start += written; /* 0 during a key exchange: retried */
  if (relay->outgoing_start == relay->outgoing_end)
    relay->outgoing_start = relay->outgoing_end = 0;
  return TRUE;
}

/* client -> server: one read of at most what the remote window accepts. */
static TgRelayStatus
pump_to_server(TgRelay *relay, short client_revents, gboolean ssh_output_queued,
               TgCounters *counters)
{
  if (ssh_output_queued)
    return TG_RELAY_CONTINUE;
  if (!flush_outgoing(relay))
    return relay_fail(relay, "channel write failed");

  if (relay->outgoing_end == 0 && !relay->client_eof &&
      (client_revents & (POLLIN | POLLHUP))) {
    uint32_t window = ssh_channel_window_size(relay->channel);
    ssize_t n = window == 0 ? -1
                            : recv(relay->client_fd, relay->outgoing,
                                   MIN(window, OUTGOING_CAPACITY), MSG_DONTWAIT);
    if (n > 0) {
      tg_counter_add(&counters->bytes_sent, n);
      relay->bytes_sent += n;
      relay->outgoing_end = n;
      if (!flush_outgoing(relay))
        return relay_fail(relay, "channel write failed");
    } else if (n == 0) {
      relay->client_eof = TRUE;
    } else if (window > 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return relay_fail(relay, "client connection reset");
    }
  }
  if (relay->client_eof && relay->outgoing_end == 0 && !relay->eof_sent) {
    ssh_channel_send_eof(relay->channel); /* SSH_AGAIN means queued */
    relay->eof_sent = TRUE;
  }
  return TG_RELAY_CONTINUE;
}

static void
allocate_buffers(TgRelay *relay)
{
  relay->state = RELAY_OPEN;
  relay->pending_size = PENDING_CAPACITY;
  relay->pending = g_malloc(relay->pending_size);
  relay->outgoing = g_malloc(OUTGOING_CAPACITY);
  if (relay->handshake != NULL) {
    /* what a SOCKS client sent after its request goes first */
    memcpy(relay->outgoing, relay->handshake, relay->handshake_length);
    relay->outgoing_end = relay->handshake_length;
    g_clear_pointer(&relay->handshake, g_free);
  }
}

/* R: our connection to the target is up, or failed. */
static TgRelayStatus
relay_connected(TgRelay *relay, short client_revents)
{
  int error = 0;
  socklen_t length = sizeof error;

  if ((client_revents & (POLLOUT | POLLERR | POLLHUP)) == 0)
    return TG_RELAY_CONTINUE;
  if (getsockopt(relay->client_fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0)
    error = errno;
  if (error != 0) {
    g_autofree char *why =
        g_strdup_printf("cannot connect to %s port %u: %s", relay->target_host,
                        relay->target_port, g_strerror(error));
    return relay_fail(relay, why);
  }
  allocate_buffers(relay);
  return TG_RELAY_CONTINUE;
}

static TgRelayStatus
relay_open(TgRelay *relay)
{
  int rc = relay->unix_target
               ? ssh_channel_open_forward_unix(relay->channel, relay->target_host,
                                               relay->origin_address, relay->origin_port)
               : ssh_channel_open_forward(relay->channel, relay->target_host,
                                          relay->target_port, relay->origin_address,
                                          relay->origin_port);
  if (rc == SSH_AGAIN)
    return TG_RELAY_CONTINUE;
  if (rc != SSH_OK) {
    /* read the reason now: the session's error text is overwritten later */
    g_autofree char *why = g_strdup_printf(
        "the server refused the channel to %s: %s", relay->destination_text,
        ssh_get_error(ssh_channel_get_session(relay->channel)));
    if (relay->socks) {
      guint8 reply[TG_SOCKS_MAX_REPLY];
      send_small(relay, reply,
                 tg_socks_reply(&relay->parser, TG_SOCKS_UNREACHABLE, reply));
    }
    return relay_fail(relay, why);
  }
  if (relay->socks) {
    guint8 reply[TG_SOCKS_MAX_REPLY];
    if (!send_small(relay, reply,
                    tg_socks_reply(&relay->parser, TG_SOCKS_GRANTED, reply)))
      return relay_fail(relay, "client connection broken");
  }
  allocate_buffers(relay);
  return TG_RELAY_CONTINUE;
}

TgRelayStatus
tg_relay_pump(TgRelay *relay, short client_revents, gboolean ssh_output_queued,
              TgCounters *counters)
{
  TgRelayStatus status;

  if (relay->failure != NULL)
    return TG_RELAY_FAILED;
  if (relay->state == RELAY_SOCKS)
    return pump_socks(relay, client_revents);
  if (relay->state == RELAY_DECIDING)
    return TG_RELAY_CONTINUE;
  if (relay->state == RELAY_OPENING) {
    status = relay_open(relay);
    if (status != TG_RELAY_CONTINUE || relay->state == RELAY_OPENING)
      return status;
  }
  if (relay->state == RELAY_CONNECTING) {
    status = relay_connected(relay, client_revents);
    if (status != TG_RELAY_CONTINUE || relay->state == RELAY_CONNECTING)
      return status;
    client_revents &= ~POLLOUT; /* that was the connect */
  }
  if (client_revents & POLLERR)
    return relay_fail(relay, "client connection error");

  status = pump_to_client(relay, counters);
  if (status == TG_RELAY_CONTINUE)
    status = pump_to_server(relay, client_revents, ssh_output_queued, counters);
  if (status != TG_RELAY_CONTINUE)
    return status;

  if (relay->pending_end == 0 &&
      ((relay->eof_sent && relay->server_eof) || ssh_channel_is_closed(relay->channel)))
    return TG_RELAY_DONE;
  return TG_RELAY_CONTINUE;
}

void
tg_relay_free(TgRelay *relay)
{
  if (relay == NULL)
    return;
  if (relay->channel != NULL) {
    ssh_remove_channel_callbacks(relay->channel, &relay->callbacks);
    if ((relay->state == RELAY_OPEN || relay->state == RELAY_CONNECTING) &&
        !ssh_channel_is_closed(relay->channel))
      ssh_channel_close(relay->channel);
    ssh_channel_free(relay->channel);
  }
  close(relay->client_fd);
  g_free(relay->pending);
  g_free(relay->outgoing);
  g_free(relay->target_host);
  g_free(relay->origin_address);
  g_free(relay->failure);
  g_free(relay->peer_text);
  g_free(relay->destination_text);
  g_free(relay->handshake);
  g_free(relay);
}

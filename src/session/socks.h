/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The SOCKS side of a dynamic (D) forward: SOCKS4, SOCKS4a and SOCKS5
 * (RFC 1928, no authentication, CONNECT only), as `ssh -D` serves them.
 * Pure: bytes in, bytes out; the relay feeds it what a client sent and
 * sends back the replies it writes. Malformed or unsupported input ends the
 * handshake with the protocol's refusal where it has one. */
#pragma once

#include <glib.h>

/* The largest handshake a client may send before its request is complete
 * (a SOCKS4a request with a 255-byte user id and host name). */
#define TG_SOCKS_MAX_HANDSHAKE 600
/* The longest reply: SOCKS5's, with an IPv4 bound address. */
#define TG_SOCKS_MAX_REPLY 10

typedef enum {
  TG_SOCKS_MORE,    /* a complete message has not arrived yet */
  TG_SOCKS_REPLY,   /* send the reply and keep reading (SOCKS5 method choice) */
  TG_SOCKS_REQUEST, /* a CONNECT request: host and port are set */
  TG_SOCKS_ERROR,   /* send the reply (if any) and close; error says why */
} TgSocksResult;

typedef enum {
  TG_SOCKS_GRANTED,
  TG_SOCKS_NOT_ALLOWED, /* the policy refused the destination */
  TG_SOCKS_UNREACHABLE, /* the server could not (or would not) connect */
  TG_SOCKS_FAILED,      /* anything else */
} TgSocksStatus;

typedef struct {
  int version;    /* 4 or 5 once known, else 0 */
  int stage;      /* SOCKS5: 0 method selection, 1 request */
  char host[256]; /* the destination: a name or an address as text */
  guint16 port;
} TgSocksParser;

void tg_socks_parser_init(TgSocksParser *parser);

/* Looks at the @length bytes a client sent since the last complete message.
 * Sets *consumed to the bytes of the message handled (REPLY, REQUEST), and
 * fills @reply (TG_SOCKS_MAX_REPLY bytes) with *reply_length bytes to send.
 * On ERROR, *error is a static text for the log. */
TgSocksResult tg_socks_parse(TgSocksParser *parser, const guint8 *data, gsize length,
                             gsize *consumed, guint8 *reply, gsize *reply_length,
                             const char **error);

/* The answer to a request, in the client's protocol; returns its length. */
gsize tg_socks_reply(const TgSocksParser *parser, TgSocksStatus status, guint8 *reply);

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for the SOCKS handshake parser. Input: a byte whose low
 * three bits say how many chunk sizes follow (0 to 7 bytes, each the size
 * of one read, 0 for as much as fits, used in turn), then the client's
 * bytes. They are fed as the relay feeds them (a TG_SOCKS_MAX_HANDSHAKE
 * buffer, parse until MORE, drop what a REPLY or REQUEST consumed) in those
 * chunks, in one read and byte by byte: every call must keep the parser's
 * promises, the three must end the same, and the parser must decide before
 * the buffer is full. The whole input also goes through one call. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  TgSocksResult result; /* REQUEST, ERROR, or MORE when the input ran out */
  gboolean too_long;
  guint n_replies;
  guint8 sent[64];
  gsize sent_length;
  gsize request_end;
  char host[256];
  guint16 port;
  int version;
} Outcome;

static void G_GNUC_NORETURN
broken(const char *what, TgSocksResult result, gsize length, gsize consumed,
       gsize reply_length)
{
  fprintf(stderr, "%s (result %d, length %zu, consumed %zu, reply_length %zu)\n", what,
          (int)result, (size_t)length, (size_t)consumed, (size_t)reply_length);
  abort();
}

static gboolean
printable_name(const TgSocksParser *parser)
{
  const char *end = memchr(parser->host, '\0', sizeof parser->host);

  if (end == NULL || end == parser->host)
    return FALSE;
  for (const char *p = parser->host; p < end; p++) {
    if (*p <= ' ' || *p >= 0x7f)
      return FALSE;
  }
  return TRUE;
}

static TgSocksResult
parse_checked(TgSocksParser *parser, const guint8 *data, gsize length, gsize *consumed,
              guint8 *reply, gsize *reply_length)
{
  const char *error = "not set";
  TgSocksResult result;

  *consumed = G_MAXSIZE;
  *reply_length = G_MAXSIZE;
  result = tg_socks_parse(parser, data, length, consumed, reply, reply_length, &error);
  if (*consumed > length)
    broken("consumed more than given", result, length, *consumed, *reply_length);
  if (*reply_length > TG_SOCKS_MAX_REPLY)
    broken("reply too long", result, length, *consumed, *reply_length);
  if (parser->version != 0 && parser->version != 4 && parser->version != 5)
    broken("bad version", result, length, *consumed, *reply_length);
  switch (result) {
  case TG_SOCKS_MORE:
    if (*consumed != 0 || *reply_length != 0 || error != NULL)
      broken("MORE with a side effect", result, length, *consumed, *reply_length);
    break;
  case TG_SOCKS_REPLY:
    if (*consumed < 3 || *reply_length != 2 || reply[0] != 5 || reply[1] != 0 ||
        error != NULL || parser->version != 5 || parser->stage != 1)
      broken("bad REPLY", result, length, *consumed, *reply_length);
    break;
  case TG_SOCKS_REQUEST:
    if (*consumed < 8 || *reply_length != 0 || error != NULL || parser->port == 0 ||
        !printable_name(parser))
      broken("bad REQUEST", result, length, *consumed, *reply_length);
    break;
  case TG_SOCKS_ERROR:
    if (error == NULL)
      broken("ERROR without a reason", result, length, *consumed, *reply_length);
    break;
  default:
    broken("unknown result", result, length, *consumed, *reply_length);
  }
  return result;
}

/* The relay's loop (see pump_socks in relay.c). */
static void
relay_feed(const guint8 *input, gsize length, const guint8 *chunks, gsize n_chunks,
           Outcome *out)
{
  guint8 buffer[TG_SOCKS_MAX_HANDSHAKE];
  gsize buffered = 0, offset = 0, stream_consumed = 0;
  TgSocksParser parser;
  guint reads = 0;

  memset(out, 0, sizeof *out);
  tg_socks_parser_init(&parser);
  while (offset < length) {
    gsize want = n_chunks > 0 ? chunks[reads++ % n_chunks] : 0;
    gsize n =
        MIN(want == 0 ? G_MAXSIZE : want, MIN(length - offset, sizeof buffer - buffered));

    memcpy(buffer + buffered, input + offset, n);
    buffered += n;
    offset += n;
    for (;;) {
      guint8 reply[TG_SOCKS_MAX_REPLY];
      gsize consumed, reply_length;
      TgSocksResult result =
          parse_checked(&parser, buffer, buffered, &consumed, reply, &reply_length);

      if (result == TG_SOCKS_MORE) {
        if (buffered == sizeof buffer) {
          out->too_long = TRUE;
          goto done;
        }
        break;
      }
      memcpy(out->sent + out->sent_length, reply, reply_length);
      out->sent_length += reply_length;
      if (result == TG_SOCKS_ERROR) {
        out->result = result;
        goto done;
      }
      memmove(buffer, buffer + consumed, buffered - consumed);
      buffered -= consumed;
      stream_consumed += consumed;
      if (result == TG_SOCKS_REQUEST) {
        out->result = result;
        out->request_end = stream_consumed;
        memcpy(out->host, parser.host, sizeof out->host);
        out->port = parser.port;
        goto done;
      }
      if (++out->n_replies > 1)
        broken("a second REPLY", result, buffered, consumed, reply_length);
    }
  }
  out->result = TG_SOCKS_MORE;
done:
  out->version = parser.version;
}

static void
check_same(const char *how, const Outcome *a, const Outcome *b)
{
  if (a->result != b->result || a->too_long != b->too_long ||
      a->n_replies != b->n_replies || a->sent_length != b->sent_length ||
      memcmp(a->sent, b->sent, a->sent_length) != 0 || a->version != b->version ||
      (a->result == TG_SOCKS_REQUEST &&
       (a->request_end != b->request_end || strcmp(a->host, b->host) != 0 ||
        a->port != b->port))) {
    fprintf(stderr, "%s: result %d/%d, replies %u/%u, request end %zu/%zu\n", how,
            (int)a->result, (int)b->result, a->n_replies, b->n_replies,
            (size_t)a->request_end, (size_t)b->request_end);
    abort();
  }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const guint8 one = 1;
  const guint8 *chunks, *input;
  gsize n_chunks, length;
  Outcome chunked, whole, bytewise;

  if (size < 1)
    return 0;
  n_chunks = data[0] & 7;
  if (size < 1 + n_chunks)
    return 0;
  chunks = data + 1;
  input = data + 1 + n_chunks;
  length = size - 1 - n_chunks;

  /* one call with everything, however long */
  {
    TgSocksParser parser;
    guint8 reply[TG_SOCKS_MAX_REPLY];
    gsize consumed, reply_length;

    tg_socks_parser_init(&parser);
    (void)parse_checked(&parser, input, length, &consumed, reply, &reply_length);
  }

  relay_feed(input, length, chunks, n_chunks, &chunked);
  relay_feed(input, length, NULL, 0, &whole);
  relay_feed(input, length, &one, 1, &bytewise);
  if (whole.too_long) {
    fprintf(stderr, "no decision within %d bytes\n", TG_SOCKS_MAX_HANDSHAKE);
    abort();
  }
  check_same("chunked/whole", &chunked, &whole);
  check_same("bytewise/whole", &bytewise, &whole);
  return 0;
}

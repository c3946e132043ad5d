/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for socks.c: SOCKS5 method selection and CONNECT requests,
 * SOCKS4 and SOCKS4a requests, refusals and their replies, and the relay's
 * way of feeding the parser (accumulate, parse, drop what was consumed)
 * whatever the segmentation of the client's bytes. */
#include <string.h>

#include "socks.h"

/* ---- Helpers ------------------------------------------------------------ */

/* A byte string literal with its length (it may hold NULs). */
#define BYTES(s) (const guint8 *)(s), sizeof(s) - 1

/* No reply expected (reply_length 0). */
#define NO_REPLY (-1)

/* The SOCKS5 greeting a plain client sends: one method, no authentication. */
static const guint8 greeting[] = { 5, 1, 0 };

/* One call of tg_socks_parse and what it said. */
typedef struct {
  TgSocksResult result;
  gsize consumed;
  guint8 reply[TG_SOCKS_MAX_REPLY];
  gsize reply_length;
  const char *error;
} Outcome;

/* Bytes as "05 01 00" for the log. */
static char *
hex(const guint8 *data, gsize length)
{
  GString *text = g_string_new(NULL);

  for (gsize i = 0; i < length && i < 64; i++)
    g_string_append_printf(text, i == 0 ? "%02x" : " %02x", data[i]);
  if (length > 64)
    g_string_append_printf(text, " ... (%" G_GSIZE_FORMAT " bytes)", length);
  return g_string_free(text, FALSE);
}

static void
log_input(const char *label, const guint8 *data, gsize length)
{
  g_autofree char *text = hex(data, length);

  g_test_message("%s: %s", label, text);
}

static gboolean
is_printable_name(const char *text)
{
  if (*text == '\0')
    return FALSE;
  for (const char *p = text; *p != '\0'; p++) {
    if (*p <= ' ' || *p >= 0x7f)
      return FALSE;
  }
  return TRUE;
}

/* What must hold after any call, whatever the input. */
static void
assert_invariants(const TgSocksParser *parser, gsize length, const Outcome *o)
{
  switch (o->result) {
  case TG_SOCKS_MORE:
    g_assert_cmpuint(o->consumed, ==, 0);
    g_assert_cmpuint(o->reply_length, ==, 0);
    g_assert_null(o->error);
    break;
  case TG_SOCKS_REPLY:
    /* only SOCKS5's method choice, after which the request is read */
    g_assert_cmpint(parser->version, ==, 5);
    g_assert_cmpint(parser->stage, ==, 1);
    g_assert_cmpuint(o->consumed, >=, 3);
    g_assert_cmpuint(o->consumed, <=, length);
    g_assert_cmpuint(o->reply_length, ==, 2);
    g_assert_cmpuint(o->reply[0], ==, 5);
    g_assert_cmpuint(o->reply[1], ==, 0);
    g_assert_null(o->error);
    break;
  case TG_SOCKS_REQUEST:
    g_assert_true(parser->version == 4 || parser->version == 5);
    g_assert_cmpuint(o->consumed, >=, 8); /* SOCKS5, 1-byte name */
    g_assert_cmpuint(o->consumed, <=, length);
    g_assert_cmpuint(o->reply_length, ==, 0);
    g_assert_null(o->error);
    g_assert_nonnull(memchr(parser->host, '\0', sizeof parser->host));
    g_assert_true(is_printable_name(parser->host));
    g_assert_cmpuint(parser->port, !=, 0);
    break;
  case TG_SOCKS_ERROR:
    g_assert_nonnull(o->error);
    g_assert_cmpuint(o->consumed, <=, length);
    g_assert_cmpuint(o->reply_length, <=, TG_SOCKS_MAX_REPLY);
    /* nothing, SOCKS5's "no acceptable method", a SOCKS4 or SOCKS5 reply */
    g_assert_true(o->reply_length == 0 || o->reply_length == 2 || o->reply_length == 8 ||
                  o->reply_length == 10);
    break;
  default:
    g_error("tg_socks_parse returned %d", o->result);
  }
}

static void
parse_with(TgSocksParser *parser, const guint8 *data, gsize length, Outcome *o)
{
  memset(o, 0, sizeof *o);
  /* garbage that must be overwritten */
  o->consumed = G_MAXSIZE;
  o->reply_length = G_MAXSIZE;
  o->error = "not set";
  o->result = tg_socks_parse(parser, data, length, &o->consumed, o->reply,
                             &o->reply_length, &o->error);
  assert_invariants(parser, length, o);
}

static void
parse_fresh(TgSocksParser *parser, const guint8 *data, gsize length, Outcome *o)
{
  tg_socks_parser_init(parser);
  parse_with(parser, data, length, o);
}

/* A SOCKS5 parser that has answered the greeting: it reads the request. */
static void
parser_after_greeting(TgSocksParser *parser)
{
  Outcome o;

  parse_fresh(parser, greeting, sizeof greeting, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_REPLY);
  g_assert_cmpuint(o.consumed, ==, sizeof greeting);
}

static void
assert_socks5_reply(const Outcome *o, guint8 code)
{
  const guint8 expected[10] = { 5, code, 0, 1, 0, 0, 0, 0, 0, 0 };

  g_assert_cmpmem(o->reply, o->reply_length, expected, sizeof expected);
}

static void
assert_socks4_reply(const Outcome *o, guint8 code)
{
  const guint8 expected[8] = { 0, code, 0, 0, 0, 0, 0, 0 };

  g_assert_cmpmem(o->reply, o->reply_length, expected, sizeof expected);
}

/* ---- The relay's loop --------------------------------------------------- */

/* What the relay would have done with a client's byte stream. */
typedef struct {
  TgSocksResult result; /* REQUEST, ERROR, or MORE when the stream ended */
  gboolean too_long;    /* MORE with the handshake buffer full */
  guint n_replies;      /* REPLYs sent */
  guint8 sent[64];      /* the bytes sent back: REPLYs and the ERROR's reply */
  gsize sent_length;
  gsize request_end; /* the stream offset after the request */
  char host[256];
  guint16 port;
  int version;
} RelayOutcome;

/* Feeds @input as the relay reads it: chunks of the sizes in @chunks (used
 * in turn, 0 for as much as fits), into a TG_SOCKS_MAX_HANDSHAKE buffer;
 * parses after each read until MORE, sends replies, drops consumed bytes. */
static void
relay_feed(const guint8 *input, gsize length, const gsize *chunks, gsize n_chunks,
           RelayOutcome *out)
{
  guint8 buffer[TG_SOCKS_MAX_HANDSHAKE];
  gsize buffered = 0, offset = 0, stream_consumed = 0;
  TgSocksParser parser;
  guint reads = 0;

  memset(out, 0, sizeof *out);
  tg_socks_parser_init(&parser);
  for (;;) {
    gsize want = chunks[reads++ % n_chunks];
    gsize n;

    if (offset == length) {
      out->result = TG_SOCKS_MORE;
      break;
    }
    if (want == 0)
      want = G_MAXSIZE;
    n = MIN(want, MIN(length - offset, sizeof buffer - buffered));
    g_assert_cmpuint(n, >, 0);
    memcpy(buffer + buffered, input + offset, n);
    buffered += n;
    offset += n;

    for (;;) {
      Outcome o;

      parse_with(&parser, buffer, buffered, &o);
      if (o.result == TG_SOCKS_MORE) {
        if (buffered == sizeof buffer) {
          out->result = TG_SOCKS_MORE;
          out->too_long = TRUE;
          goto done;
        }
        break;
      }
      g_assert_cmpuint(out->sent_length + o.reply_length, <=, sizeof out->sent);
      memcpy(out->sent + out->sent_length, o.reply, o.reply_length);
      out->sent_length += o.reply_length;
      if (o.result == TG_SOCKS_ERROR) {
        out->result = TG_SOCKS_ERROR;
        goto done;
      }
      /* REPLY or REQUEST */
      memmove(buffer, buffer + o.consumed, buffered - o.consumed);
      buffered -= o.consumed;
      stream_consumed += o.consumed;
      if (o.result == TG_SOCKS_REQUEST) {
        out->result = TG_SOCKS_REQUEST;
        out->request_end = stream_consumed;
        memcpy(out->host, parser.host, sizeof out->host);
        out->port = parser.port;
        goto done;
      }
      out->n_replies++;
      /* a client sends one greeting, so a second REPLY is never due */
      g_assert_cmpuint(out->n_replies, ==, 1);
    }
  }
done:
  out->version = parser.version;
}

static void
relay_feed_whole(const guint8 *input, gsize length, RelayOutcome *out)
{
  const gsize all = 0;

  relay_feed(input, length, &all, 1, out);
}

static void
relay_feed_bytewise(const guint8 *input, gsize length, RelayOutcome *out)
{
  const gsize one = 1;

  relay_feed(input, length, &one, 1, out);
}

static void
assert_same_relay_outcome(const RelayOutcome *a, const RelayOutcome *b)
{
  g_assert_cmpint(a->result, ==, b->result);
  g_assert_cmpint(a->too_long, ==, b->too_long);
  g_assert_cmpuint(a->n_replies, ==, b->n_replies);
  g_assert_cmpmem(a->sent, a->sent_length, b->sent, b->sent_length);
  g_assert_cmpint(a->version, ==, b->version);
  if (a->result == TG_SOCKS_REQUEST) {
    g_assert_cmpuint(a->request_end, ==, b->request_end);
    g_assert_cmpstr(a->host, ==, b->host);
    g_assert_cmpuint(a->port, ==, b->port);
  }
}

/* Appends a SOCKS5 CONNECT for a name. */
static void
append_socks5_name_request(GByteArray *bytes, const char *name, gsize name_length,
                           guint16 port)
{
  const guint8 header[] = { 5, 1, 0, 3, (guint8)name_length };
  const guint8 port_bytes[] = { port >> 8, port & 0xff };

  g_byte_array_append(bytes, header, sizeof header);
  g_byte_array_append(bytes, (const guint8 *)name, name_length);
  g_byte_array_append(bytes, port_bytes, sizeof port_bytes);
}

/* Appends a SOCKS4a CONNECT (user id and host as given, each NUL-ended). */
static void
append_socks4a_request(GByteArray *bytes, const char *user, const char *host,
                       guint16 port)
{
  const guint8 header[] = { 4, 1, port >> 8, port & 0xff, 0, 0, 0, 1 };

  g_byte_array_append(bytes, header, sizeof header);
  g_byte_array_append(bytes, (const guint8 *)user, strlen(user) + 1);
  g_byte_array_append(bytes, (const guint8 *)host, strlen(host) + 1);
}

/* ---- SOCKS5 method selection -------------------------------------------- */

typedef struct {
  const char *what;
  const guint8 *bytes;
  gsize length;
  TgSocksResult result;
  int reply; /* the method chosen (REPLY, or 0xff with ERROR), or NO_REPLY */
} MethodCase;

static void
test_socks5_methods(void)
{
  // clang-format off
  static const MethodCase cases[] = {
    { "no auth alone", BYTES("\x05\x01\x00"), TG_SOCKS_REPLY, 0x00 },
    { "no auth last of three", BYTES("\x05\x03\x02\x01\x00"), TG_SOCKS_REPLY, 0x00 },
    { "no auth first of two", BYTES("\x05\x02\x00\x02"), TG_SOCKS_REPLY, 0x00 },
    { "private method and no auth", BYTES("\x05\x02\x80\x00"), TG_SOCKS_REPLY, 0x00 },
    { "no auth offered twice", BYTES("\x05\x02\x00\x00"), TG_SOCKS_REPLY, 0x00 },
    { "username/password only", BYTES("\x05\x01\x02"), TG_SOCKS_ERROR, 0xff },
    { "GSSAPI and username/password", BYTES("\x05\x02\x01\x02"), TG_SOCKS_ERROR, 0xff },
    { "0xff offered", BYTES("\x05\x01\xff"), TG_SOCKS_ERROR, 0xff },
    { "NMETHODS 0", BYTES("\x05\x00"), TG_SOCKS_ERROR, NO_REPLY },
    { "NMETHODS 0, more bytes", BYTES("\x05\x00\x00\x01"), TG_SOCKS_ERROR, NO_REPLY },
  };
  // clang-format on

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const MethodCase *c = &cases[i];
    TgSocksParser parser;
    Outcome o;

    log_input(c->what, c->bytes, c->length);
    parse_fresh(&parser, c->bytes, c->length, &o);
    g_assert_cmpint(o.result, ==, c->result);
    g_assert_cmpint(parser.version, ==, 5);
    if (c->reply == NO_REPLY) {
      g_assert_cmpuint(o.reply_length, ==, 0);
    } else {
      const guint8 expected[] = { 5, (guint8)c->reply };

      g_assert_cmpmem(o.reply, o.reply_length, expected, sizeof expected);
    }
    if (c->result == TG_SOCKS_REPLY) {
      g_assert_cmpuint(o.consumed, ==, c->length);
      g_assert_cmpint(parser.stage, ==, 1);
    } else {
      g_assert_cmpint(parser.stage, ==, 0);
    }
  }
}

/* 255 methods, no authentication the last one: all of them are read. */
static void
test_socks5_methods_all(void)
{
  guint8 bytes[2 + 255];
  TgSocksParser parser;
  Outcome o;

  bytes[0] = 5;
  bytes[1] = 255;
  for (guint i = 0; i < 255; i++)
    bytes[2 + i] = (guint8)(254 - i); /* 0xfe ... 0x01, then 0x00 */
  g_assert_cmpuint(bytes[2 + 254], ==, 0);
  parse_fresh(&parser, bytes, sizeof bytes, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_REPLY);
  g_assert_cmpuint(o.consumed, ==, sizeof bytes);
  /* the same without the last one: no acceptable method */
  bytes[1] = 254;
  parse_fresh(&parser, bytes, sizeof bytes - 1, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
  g_assert_cmpmem(o.reply, o.reply_length, "\x05\xff", 2);
}

/* Every prefix of a greeting waits for more, without a reply. */
static void
test_socks5_methods_partial(void)
{
  static const guint8 greetings[][6] = {
    { 5, 1, 0 }, { 5, 3, 2, 1, 0 }, { 5, 4, 1, 2, 3, 0 }, { 5, 1, 2 }
  };
  static const gsize lengths[] = { 3, 5, 6, 3 };

  for (gsize g = 0; g < G_N_ELEMENTS(greetings); g++) {
    for (gsize n = 0; n < lengths[g]; n++) {
      TgSocksParser parser;
      Outcome o;

      parse_fresh(&parser, greetings[g], n, &o);
      g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
      g_assert_cmpint(parser.stage, ==, 0);
    }
  }
}

/* A request sent along with the greeting is not taken with it. */
static void
test_socks5_methods_pipelined(void)
{
  static const guint8 bytes[] = { 5, 2, 2, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80 };
  TgSocksParser parser;
  Outcome o;

  parse_fresh(&parser, bytes, sizeof bytes, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_REPLY);
  g_assert_cmpuint(o.consumed, ==, 4);
  /* the rest, as the relay passes it on: the request */
  parse_with(&parser, bytes + o.consumed, sizeof bytes - o.consumed, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
  g_assert_cmpuint(o.consumed, ==, sizeof bytes - 4);
  g_assert_cmpstr(parser.host, ==, "127.0.0.1");
  g_assert_cmpuint(parser.port, ==, 80);
}

/* ---- SOCKS5 requests ---------------------------------------------------- */

typedef struct {
  const char *what;
  const guint8 *bytes;
  gsize length;
  TgSocksResult result;
  int reply_code; /* ERROR: the SOCKS5 reply's REP field, or NO_REPLY */
  const char *host;
  guint16 port;
} RequestCase;

// clang-format off
#define OK(what, bytes, host, port) \
  { what, BYTES(bytes), TG_SOCKS_REQUEST, NO_REPLY, host, port }
#define REFUSED(what, bytes, code) \
  { what, BYTES(bytes), TG_SOCKS_ERROR, code, NULL, 0 }

/* The 16 bytes of 2001:db8::1 */
#define IPV6_DOC "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"

static const RequestCase socks5_requests[] = {
  OK("IPv4", "\x05\x01\x00\x01\x0a\x01\x02\x03\x01\xbb", "10.1.2.3", 443),
  OK("IPv4 loopback", "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16", "127.0.0.1", 22),
  OK("IPv4 port 65535", "\x05\x01\x00\x01\xff\xff\xff\xff\xff\xff",
     "255.255.255.255", 65535),
  OK("IPv6", "\x05\x01\x00\x04" IPV6_DOC "\x00\x50", "2001:db8::1", 80),
  OK("IPv6 loopback",
     "\x05\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
     "\x01\xbb", "::1", 443),
  OK("IPv6 mapped IPv4",
     "\x05\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x0a\x00\x00\x01"
     "\x00\x01", "::ffff:10.0.0.1", 1),
  OK("IPv6 full",
     "\x05\x01\x00\x04\xfe\x80\x12\x34\x56\x78\x9a\xbc\xde\xf0\x11\x22\x33\x44\x55\x66"
     "\x1f\x90", "fe80:1234:5678:9abc:def0:1122:3344:5566", 8080),
  OK("name", "\x05\x01\x00\x03\x0b" "example.com" "\x01\xbb", "example.com", 443),
  OK("one-letter name", "\x05\x01\x00\x03\x01" "h" "\x00\x50", "h", 80),
  OK("name with punctuation", "\x05\x01\x00\x03\x0e" "my_host-1.corp" "\x00\x50",
     "my_host-1.corp", 80),
  OK("name as IPv4 text", "\x05\x01\x00\x03\x07" "1.2.3.4" "\x00\x50", "1.2.3.4", 80),
  OK("trailing dot", "\x05\x01\x00\x03\x04" "web." "\x00\x50", "web.", 80),
  /* RSV is not looked at (nor by ssh -D) */
  OK("RSV not 0", "\x05\x01\x07\x01\x0a\x00\x00\x01\x00\x50", "10.0.0.1", 80),
  /* port 0: nothing can be reached there */
  REFUSED("IPv4 port 0", "\x05\x01\x00\x01\x0a\x01\x02\x03\x00\x00", 4),
  REFUSED("IPv6 port 0", "\x05\x01\x00\x04" IPV6_DOC "\x00\x00", 4),
  REFUSED("name port 0", "\x05\x01\x00\x03\x01" "h" "\x00\x00", 4),
  /* only CONNECT */
  REFUSED("BIND", "\x05\x02\x00\x01\x0a\x01\x02\x03\x01\xbb", 7),
  REFUSED("UDP ASSOCIATE", "\x05\x03\x00\x01\x0a\x01\x02\x03\x01\xbb", 7),
  REFUSED("command 0", "\x05\x00\x00\x01\x0a\x01\x02\x03\x01\xbb", 7),
  REFUSED("command 0xff", "\x05\xff\x00\x01\x0a\x01\x02\x03\x01\xbb", 7),
  /* the command is judged before the address type */
  REFUSED("BIND, unknown ATYP", "\x05\x02\x00\x09\x0a", 7),
  REFUSED("ATYP 0", "\x05\x01\x00\x00\x0a\x01\x02\x03\x01\xbb", 8),
  REFUSED("ATYP 2", "\x05\x01\x00\x02\x0a\x01\x02\x03\x01\xbb", 8),
  REFUSED("ATYP 5", "\x05\x01\x00\x05\x0a\x01\x02\x03\x01\xbb", 8),
  REFUSED("ATYP 0xff", "\x05\x01\x00\xff\x0a\x01\x02\x03\x01\xbb", 8),
  REFUSED("empty name", "\x05\x01\x00\x03\x00\x00\x50", 4),
  REFUSED("empty name, nothing after", "\x05\x01\x00\x03\x00", 4),
  /* what the policy could not match, or would match wrongly */
  REFUSED("name with NUL", "\x05\x01\x00\x03\x03" "a\0b" "\x00\x50", 4),
  REFUSED("name NUL only", "\x05\x01\x00\x03\x01\x00\x00\x50", 4),
  REFUSED("name with space", "\x05\x01\x00\x03\x03" "a b" "\x00\x50", 4),
  REFUSED("name with tab", "\x05\x01\x00\x03\x03" "a\tb" "\x00\x50", 4),
  REFUSED("name with newline", "\x05\x01\x00\x03\x03" "a\nb" "\x00\x50", 4),
  REFUSED("name with ESC", "\x05\x01\x00\x03\x03" "a\x1b" "b" "\x00\x50", 4),
  REFUSED("name with DEL", "\x05\x01\x00\x03\x03" "a\x7f" "b" "\x00\x50", 4),
  REFUSED("name with UTF-8", "\x05\x01\x00\x03\x05" "caf\xc3\xa9" "\x00\x50", 4),
  REFUSED("name with 0x80", "\x05\x01\x00\x03\x01\x80\x00\x50", 4),
  REFUSED("name with 0xff", "\x05\x01\x00\x03\x02" "a\xff" "\x00\x50", 4),
  /* numbers the resolver reads as addresses a policy on "10.*" would miss */
  REFUSED("hex octet", "\x05\x01\x00\x03\x0a" "10.0x1.2.3" "\x01\xbb", 4),
  REFUSED("short dotted form", "\x05\x01\x00\x03\x05" "127.1" "\x00\x50", 4),
  REFUSED("one decimal number", "\x05\x01\x00\x03\x09" "167772161" "\x00\x50", 4),
  REFUSED("octal octet", "\x05\x01\x00\x03\x09" "010.1.2.3" "\x00\x50", 4),
  REFUSED("name with a colon", "\x05\x01\x00\x03\x06" "intra:" "\x00\x50", 4),
  REFUSED("name with '*'", "\x05\x01\x00\x03\x03" "a*b" "\x00\x50", 4),
  /* a request in another version after a SOCKS5 greeting */
  REFUSED("version 4 request", "\x04\x01\x00\x01\x0a\x01\x02\x03\x01\xbb", 1),
  REFUSED("version 0 request", "\x00\x01\x00\x01\x0a\x01\x02\x03\x01\xbb", 1),
};
// clang-format on

static void
test_socks5_requests(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(socks5_requests); i++) {
    const RequestCase *c = &socks5_requests[i];
    TgSocksParser parser;
    Outcome o;

    log_input(c->what, c->bytes, c->length);
    parser_after_greeting(&parser);
    parse_with(&parser, c->bytes, c->length, &o);
    g_assert_cmpint(o.result, ==, c->result);
    if (c->result == TG_SOCKS_REQUEST) {
      g_assert_cmpuint(o.consumed, ==, c->length);
      g_assert_cmpstr(parser.host, ==, c->host);
      g_assert_cmpuint(parser.port, ==, c->port);
    } else if (c->reply_code == NO_REPLY) {
      g_assert_cmpuint(o.reply_length, ==, 0);
    } else {
      assert_socks5_reply(&o, (guint8)c->reply_code);
    }
  }
}

/* Every prefix of a request that is not refused early waits for more. */
static void
test_socks5_requests_partial(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(socks5_requests); i++) {
    const RequestCase *c = &socks5_requests[i];

    if (c->result != TG_SOCKS_REQUEST)
      continue;
    log_input(c->what, c->bytes, c->length);
    for (gsize n = 0; n < c->length; n++) {
      TgSocksParser parser;
      Outcome o;

      parser_after_greeting(&parser);
      parse_with(&parser, c->bytes, n, &o);
      g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
    }
  }
}

/* Data the client sends right after its request (it may not wait for the
 * reply) is not part of it. */
static void
test_socks5_requests_pipelined(void)
{
  static const char trailer[] = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

  for (gsize i = 0; i < G_N_ELEMENTS(socks5_requests); i++) {
    const RequestCase *c = &socks5_requests[i];
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    TgSocksParser parser;
    Outcome o;

    if (c->result != TG_SOCKS_REQUEST)
      continue;
    g_byte_array_append(bytes, c->bytes, c->length);
    g_byte_array_append(bytes, (const guint8 *)trailer, sizeof trailer - 1);
    parser_after_greeting(&parser);
    parse_with(&parser, bytes->data, bytes->len, &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
    g_assert_cmpuint(o.consumed, ==, c->length);
    g_assert_cmpstr(parser.host, ==, c->host);
    g_assert_cmpuint(parser.port, ==, c->port);
  }
}

/* Names of every length up to 255 (all a name length byte can say). */
static void
test_socks5_name_lengths(void)
{
  char name[256];

  for (gsize length = 1; length <= 255; length++) {
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    TgSocksParser parser;
    Outcome o;

    for (gsize i = 0; i < length; i++)
      name[i] = "abcdefghij.-_0123456789"[i % 23];
    name[length] = '\0';
    append_socks5_name_request(bytes, name, length, 443);
    parser_after_greeting(&parser);
    parse_with(&parser, bytes->data, bytes->len, &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
    g_assert_cmpuint(o.consumed, ==, 5 + length + 2);
    g_assert_cmpstr(parser.host, ==, name);
    g_assert_cmpuint(parser.port, ==, 443);
    /* one byte short: more */
    parser_after_greeting(&parser);
    parse_with(&parser, bytes->data, bytes->len - 1, &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
  }
}

/* A bad byte anywhere in a long name refuses it. */
static void
test_socks5_name_bad_byte_anywhere(void)
{
  static const guint8 bad[] = { 0x00, 0x01, ' ', 0x1f, 0x7f, 0x80, 0xc3, 0xff };
  char name[255];

  for (gsize b = 0; b < G_N_ELEMENTS(bad); b++) {
    for (gsize at = 0; at < sizeof name; at += 7) {
      g_autoptr(GByteArray) bytes = g_byte_array_new();
      TgSocksParser parser;
      Outcome o;

      memset(name, 'x', sizeof name);
      name[at] = (char)bad[b];
      append_socks5_name_request(bytes, name, sizeof name, 80);
      parser_after_greeting(&parser);
      parse_with(&parser, bytes->data, bytes->len, &o);
      g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
      assert_socks5_reply(&o, 4);
    }
  }
}

/* ---- SOCKS4 and SOCKS4a ------------------------------------------------- */

typedef struct {
  const char *what;
  const guint8 *bytes;
  gsize length;
  TgSocksResult result;
  const char *host;
  guint16 port;
} Socks4Case;

// clang-format off
#define OK4(what, bytes, host, port) \
  { what, BYTES(bytes), TG_SOCKS_REQUEST, host, port }
#define REFUSED4(what, bytes) \
  { what, BYTES(bytes), TG_SOCKS_ERROR, NULL, 0 }

static const Socks4Case socks4_requests[] = {
  OK4("IPv4 with user id", "\x04\x01\x00\x50\x0a\x00\x00\x01" "alice\0", "10.0.0.1", 80),
  OK4("IPv4, empty user id", "\x04\x01\x01\xbb\xc0\xa8\x01\x02\0", "192.168.1.2", 443),
  OK4("user id with any bytes", "\x04\x01\x00\x16\x7f\x00\x00\x01" "\x01\xff a\0",
      "127.0.0.1", 22),
  /* 0.0.0.0 is not SOCKS4a (x must not be 0) */
  OK4("0.0.0.0", "\x04\x01\x00\x50\x00\x00\x00\x00\0", "0.0.0.0", 80),
  /* 0.0.1.1 is not 0.0.0.x: an address */
  OK4("0.0.1.1", "\x04\x01\x00\x50\x00\x00\x01\x01" "x\0", "0.0.1.1", 80),
  OK4("4a with user id", "\x04\x01\x01\xbb\x00\x00\x00\x01" "bob\0" "example.com\0",
      "example.com", 443),
  OK4("4a, empty user id", "\x04\x01\x00\x50\x00\x00\x00\xff\0" "intra.corp\0",
      "intra.corp", 80),
  OK4("4a port 65535", "\x04\x01\xff\xff\x00\x00\x00\x07\0" "h\0", "h", 65535),
  REFUSED4("port 0", "\x04\x01\x00\x00\x0a\x00\x00\x01" "alice\0"),
  REFUSED4("4a port 0", "\x04\x01\x00\x00\x00\x00\x00\x01\0" "example.com\0"),
  REFUSED4("BIND", "\x04\x02\x00\x50\x0a\x00\x00\x01" "alice\0"),
  REFUSED4("BIND, only two bytes", "\x04\x02"),
  REFUSED4("command 0", "\x04\x00\x00\x50\x0a\x00\x00\x01\0"),
  REFUSED4("command 0xff", "\x04\xff\x00\x50\x0a\x00\x00\x01\0"),
  REFUSED4("4a empty host", "\x04\x01\x00\x50\x00\x00\x00\x01" "u\0\0"),
  REFUSED4("4a host with space", "\x04\x01\x00\x50\x00\x00\x00\x01\0" "a b\0"),
  REFUSED4("4a host with control", "\x04\x01\x00\x50\x00\x00\x00\x01\0" "a\rb\0"),
  REFUSED4("4a host with DEL", "\x04\x01\x00\x50\x00\x00\x00\x01\0" "a\x7f\0"),
  REFUSED4("4a host with UTF-8", "\x04\x01\x00\x50\x00\x00\x00\x01\0" "caf\xc3\xa9\0"),
  REFUSED4("4a ambiguous number", "\x04\x01\x00\x50\x00\x00\x00\x01\0" "10.0x1.2.3\0"),
};
// clang-format on

static void
test_socks4_requests(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(socks4_requests); i++) {
    const Socks4Case *c = &socks4_requests[i];
    TgSocksParser parser;
    Outcome o;

    log_input(c->what, c->bytes, c->length);
    parse_fresh(&parser, c->bytes, c->length, &o);
    g_assert_cmpint(o.result, ==, c->result);
    g_assert_cmpint(parser.version, ==, 4);
    if (c->result == TG_SOCKS_REQUEST) {
      g_assert_cmpuint(o.consumed, ==, c->length);
      g_assert_cmpstr(parser.host, ==, c->host);
      g_assert_cmpuint(parser.port, ==, c->port);
    } else {
      assert_socks4_reply(&o, 0x5b);
    }
  }
}

static void
test_socks4_requests_partial(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(socks4_requests); i++) {
    const Socks4Case *c = &socks4_requests[i];

    if (c->result != TG_SOCKS_REQUEST)
      continue;
    log_input(c->what, c->bytes, c->length);
    for (gsize n = 0; n < c->length; n++) {
      TgSocksParser parser;
      Outcome o;

      parse_fresh(&parser, c->bytes, n, &o);
      g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
    }
  }
}

static void
test_socks4_requests_pipelined(void)
{
  static const guint8 trailer[] = { 0x16, 0x03, 0x01, 0x00, 0x00, 0x00 };

  for (gsize i = 0; i < G_N_ELEMENTS(socks4_requests); i++) {
    const Socks4Case *c = &socks4_requests[i];
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    TgSocksParser parser;
    Outcome o;

    if (c->result != TG_SOCKS_REQUEST)
      continue;
    g_byte_array_append(bytes, c->bytes, c->length);
    g_byte_array_append(bytes, trailer, sizeof trailer);
    parse_fresh(&parser, bytes->data, bytes->len, &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
    g_assert_cmpuint(o.consumed, ==, c->length);
    g_assert_cmpstr(parser.host, ==, c->host);
  }
}

/* User ids up to 255 bytes are read; a 256th byte without a NUL ends it,
 * and so does a NUL that comes later in the same read. */
static void
test_socks4_user_id_limit(void)
{
  static const guint8 header[] = { 4, 1, 0, 80, 10, 0, 0, 1 };
  guint8 bytes[8 + 400];
  TgSocksParser parser;
  Outcome o;

  memcpy(bytes, header, sizeof header);
  memset(bytes + 8, 'u', sizeof bytes - 8);

  /* 255 bytes and the NUL */
  bytes[8 + 255] = 0;
  parse_fresh(&parser, bytes, 8 + 256, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
  g_assert_cmpuint(o.consumed, ==, 8 + 256);
  g_assert_cmpstr(parser.host, ==, "10.0.0.1");
  /* 255 bytes, no NUL yet */
  parse_fresh(&parser, bytes, 8 + 255, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);

  /* 256 bytes without a NUL, and more */
  bytes[8 + 255] = 'u';
  for (gsize length = 8 + 256; length <= sizeof bytes; length += 16) {
    parse_fresh(&parser, bytes, length, &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
    assert_socks4_reply(&o, 0x5b);
  }
  /* a NUL after 256 or more bytes, all in one read */
  for (gsize at = 256; at < 400; at += 13) {
    memset(bytes + 8, 'u', sizeof bytes - 8);
    bytes[8 + at] = 0;
    parse_fresh(&parser, bytes, 8 + at + 1, &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
    assert_socks4_reply(&o, 0x5b);
  }
}

/* SOCKS4a host names: 255 bytes at most, however they arrive. */
static void
test_socks4a_host_limit(void)
{
  char host[300];

  for (gsize length = 250; length < sizeof host; length++) {
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    TgSocksParser parser;
    Outcome o;

    memset(host, 'h', length);
    host[length] = '\0';
    append_socks4a_request(bytes, "user", host, 443);
    parse_fresh(&parser, bytes->data, bytes->len, &o);
    if (length <= 255) {
      g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
      g_assert_cmpstr(parser.host, ==, host);
      g_assert_cmpuint(o.consumed, ==, bytes->len);
    } else {
      g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
      assert_socks4_reply(&o, 0x5b);
    }
    /* without the NUL: more up to 255 bytes, then refused */
    parse_fresh(&parser, bytes->data, bytes->len - 1, &o);
    if (length <= 255) {
      g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
    } else {
      g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
      assert_socks4_reply(&o, 0x5b);
    }
  }
}

/* The largest requests fit in the relay's buffer. */
static void
test_max_handshake(void)
{
  g_autoptr(GByteArray) socks4a = g_byte_array_new();
  g_autoptr(GByteArray) socks5 = g_byte_array_new();
  char user[256], host[256];
  guint8 methods[2 + 255];
  RelayOutcome out;

  memset(user, 'u', 255);
  user[255] = '\0';
  memset(host, 'h', 255);
  host[255] = '\0';
  append_socks4a_request(socks4a, user, host, 80);
  g_assert_cmpuint(socks4a->len, <=, TG_SOCKS_MAX_HANDSHAKE);
  relay_feed_whole(socks4a->data, socks4a->len, &out);
  g_assert_cmpint(out.result, ==, TG_SOCKS_REQUEST);
  g_assert_cmpstr(out.host, ==, host);
  g_assert_cmpuint(out.request_end, ==, socks4a->len);

  /* a greeting with every method and a request for a 255-byte name, in one */
  methods[0] = 5;
  methods[1] = 255;
  for (guint i = 0; i < 255; i++)
    methods[2 + i] = (guint8)i;
  g_byte_array_append(socks5, methods, sizeof methods);
  append_socks5_name_request(socks5, host, 255, 80);
  g_assert_cmpuint(socks5->len, <=, TG_SOCKS_MAX_HANDSHAKE);
  relay_feed_whole(socks5->data, socks5->len, &out);
  g_assert_cmpint(out.result, ==, TG_SOCKS_REQUEST);
  g_assert_cmpuint(out.n_replies, ==, 1);
  g_assert_cmpmem(out.sent, out.sent_length, "\x05\x00", 2);
  g_assert_cmpstr(out.host, ==, host);
  g_assert_cmpuint(out.request_end, ==, socks5->len);
}

/* ---- Neither -------------------------------------------------------------- */

static void
test_not_socks(void)
{
  static const guint8 first_bytes[] = { 0, 1, 3, 6, 'C', 'G', 0x16, 0x80, 0xff };

  for (gsize i = 0; i < G_N_ELEMENTS(first_bytes); i++) {
    guint8 bytes[16];
    TgSocksParser parser;
    Outcome o;

    memset(bytes, 1, sizeof bytes);
    bytes[0] = first_bytes[i];
    /* alone and followed by what would be a request */
    for (gsize length = 1; length <= sizeof bytes; length += 15) {
      parse_fresh(&parser, bytes, length, &o);
      g_assert_cmpint(o.result, ==, TG_SOCKS_ERROR);
      g_assert_cmpuint(o.reply_length, ==, 0);
      g_assert_cmpint(parser.version, ==, 0);
    }
  }
}

/* Nothing at all: more, and the version is not decided. */
static void
test_empty(void)
{
  TgSocksParser parser;
  Outcome o;

  parse_fresh(&parser, (const guint8 *)"", 0, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
  g_assert_cmpint(parser.version, ==, 0);
  parser_after_greeting(&parser);
  parse_with(&parser, (const guint8 *)"", 0, &o);
  g_assert_cmpint(o.result, ==, TG_SOCKS_MORE);
}

/* ---- Replies ------------------------------------------------------------ */

static void
test_replies(void)
{
  static const struct {
    TgSocksStatus status;
    guint8 socks5_code;
    guint8 socks4_code;
  } cases[] = {
    { TG_SOCKS_GRANTED, 0x00, 0x5a },
    { TG_SOCKS_NOT_ALLOWED, 0x02, 0x5b },
    { TG_SOCKS_UNREACHABLE, 0x04, 0x5b },
    { TG_SOCKS_FAILED, 0x01, 0x5b },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const guint8 socks5[10] = { 5, cases[i].socks5_code, 0, 1, 0, 0, 0, 0, 0, 0 };
    const guint8 socks4[8] = { 0, cases[i].socks4_code, 0, 0, 0, 0, 0, 0 };
    guint8 reply[TG_SOCKS_MAX_REPLY + 1];
    TgSocksParser parser;
    Outcome o;
    gsize length;

    /* parsers as the relay has them when it answers */
    parser_after_greeting(&parser);
    parse_with(&parser,
               BYTES("\x05\x01\x00\x03\x01"
                     "h"
                     "\x00\x50"),
               &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
    memset(reply, 0xee, sizeof reply);
    length = tg_socks_reply(&parser, cases[i].status, reply);
    g_assert_cmpmem(reply, length, socks5, sizeof socks5);
    g_assert_cmpuint(reply[TG_SOCKS_MAX_REPLY], ==, 0xee);

    parse_fresh(&parser, BYTES("\x04\x01\x00\x50\x0a\x00\x00\x01\0"), &o);
    g_assert_cmpint(o.result, ==, TG_SOCKS_REQUEST);
    memset(reply, 0xee, sizeof reply);
    length = tg_socks_reply(&parser, cases[i].status, reply);
    g_assert_cmpmem(reply, length, socks4, sizeof socks4);
    g_assert_cmpuint(reply[8], ==, 0xee);
  }
}

/* ---- Segmentation --------------------------------------------------------- */

/* Whole handshakes as clients send them, each with a little data after. */
typedef struct {
  const char *what;
  const guint8 *bytes;
  gsize length;
  gsize request_end;
  guint n_replies;
  const char *host;
  guint16 port;
} StreamCase;

// clang-format off
#define STREAM(what, bytes, end, replies, host, port) \
  { what, BYTES(bytes), end, replies, host, port }

static const StreamCase streams[] = {
  STREAM("SOCKS5 IPv4",
         "\x05\x01\x00" "\x05\x01\x00\x01\x0a\x01\x02\x03\x01\xbb" "data",
         3 + 10, 1, "10.1.2.3", 443),
  STREAM("SOCKS5 IPv6, three methods",
         "\x05\x03\x02\x01\x00" "\x05\x01\x00\x04" IPV6_DOC "\x00\x50" "GET",
         5 + 22, 1, "2001:db8::1", 80),
  STREAM("SOCKS5 name",
         "\x05\x02\x00\x02" "\x05\x01\x00\x03\x0b" "example.com" "\x01\xbb"
         "\x16\x03\x01",
         4 + 18, 1, "example.com", 443),
  STREAM("SOCKS4",
         "\x04\x01\x00\x50\x0a\x00\x00\x01" "alice\0" "GET /",
         14, 0, "10.0.0.1", 80),
  STREAM("SOCKS4a",
         "\x04\x01\x01\xbb\x00\x00\x00\x01" "bob\0" "example.com\0" "x",
         24, 0, "example.com", 443),
};
// clang-format on

static void
assert_stream_case(const StreamCase *c, const RelayOutcome *out)
{
  g_assert_cmpint(out->result, ==, TG_SOCKS_REQUEST);
  g_assert_cmpuint(out->request_end, ==, c->request_end);
  g_assert_cmpuint(out->n_replies, ==, c->n_replies);
  if (c->n_replies > 0)
    g_assert_cmpmem(out->sent, out->sent_length, "\x05\x00", 2);
  else
    g_assert_cmpuint(out->sent_length, ==, 0);
  g_assert_cmpstr(out->host, ==, c->host);
  g_assert_cmpuint(out->port, ==, c->port);
}

/* Split once at every offset, byte by byte, and in random chunks: the same
 * as in one read. */
static void
test_split_everywhere(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(streams); i++) {
    const StreamCase *c = &streams[i];
    RelayOutcome whole, split;

    log_input(c->what, c->bytes, c->length);
    relay_feed_whole(c->bytes, c->length, &whole);
    assert_stream_case(c, &whole);

    relay_feed_bytewise(c->bytes, c->length, &split);
    assert_same_relay_outcome(&whole, &split);

    for (gsize at = 1; at < c->length; at++) {
      const gsize chunks[] = { at, 0 };

      relay_feed(c->bytes, c->length, chunks, G_N_ELEMENTS(chunks), &split);
      assert_same_relay_outcome(&whole, &split);
    }
    for (guint round = 0; round < 200; round++) {
      gsize chunks[5];

      for (gsize k = 0; k < G_N_ELEMENTS(chunks); k++)
        chunks[k] = (gsize)g_test_rand_int_range(1, 8);
      relay_feed(c->bytes, c->length, chunks, G_N_ELEMENTS(chunks), &split);
      assert_same_relay_outcome(&whole, &split);
    }
  }
}

/* Refusals too come out the same however the bytes arrive. */
static void
test_split_refusals(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(socks5_requests); i++) {
    const RequestCase *c = &socks5_requests[i];
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    RelayOutcome whole, split;

    g_byte_array_append(bytes, greeting, sizeof greeting);
    g_byte_array_append(bytes, c->bytes, c->length);
    relay_feed_whole(bytes->data, bytes->len, &whole);
    g_assert_cmpint(whole.result, ==, c->result);
    relay_feed_bytewise(bytes->data, bytes->len, &split);
    assert_same_relay_outcome(&whole, &split);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(socks4_requests); i++) {
    const Socks4Case *c = &socks4_requests[i];
    RelayOutcome whole, split;

    relay_feed_whole(c->bytes, c->length, &whole);
    g_assert_cmpint(whole.result, ==, c->result);
    relay_feed_bytewise(c->bytes, c->length, &split);
    assert_same_relay_outcome(&whole, &split);
  }
}

/* ---- Random input --------------------------------------------------------- */

static guint8
random_byte(void)
{
  return (guint8)g_test_rand_int_range(0, 256);
}

/* Random bytes, mostly shaped like a handshake so the parser gets past the
 * first checks: a version byte, a plausible command, greeting and address
 * type, printable names, NULs now and then. */
static gsize
random_input(guint8 *data, gsize capacity)
{
  gsize length = (gsize)g_test_rand_int_range(0, (gint32)capacity + 1);
  int printable = g_test_rand_int_range(0, 4);

  for (gsize i = 0; i < length; i++) {
    if (printable > 0 && g_test_rand_int_range(0, 64) != 0)
      data[i] = (guint8)g_test_rand_int_range(0x21, 0x7f);
    else
      data[i] = random_byte();
  }
  if (length == 0 || g_test_rand_int_range(0, 10) == 0)
    return length; /* as it came */
  data[0] = g_test_rand_bit() ? 4 : 5;
  if (length > 1 && g_test_rand_int_range(0, 4) != 0)
    data[1] = 1;
  if (data[0] == 4) {
    if (length > 7 && g_test_rand_bit()) {
      data[4] = data[5] = data[6] = 0; /* SOCKS4a */
      data[7] = g_test_rand_int_range(0, 8) == 0 ? 0 : random_byte();
    }
    /* end the user id and the host somewhere */
    for (int k = g_test_rand_int_range(0, 3); k > 0 && length > 8; k--)
      data[g_test_rand_int_range(8, (gint32)length)] = 0;
  } else if (length > 2 && g_test_rand_int_range(0, 4) != 0) {
    /* a greeting, then a request */
    gsize n = (gsize)g_test_rand_int_range(0, 5);
    gsize at = 2 + n;

    data[1] = (guint8)n;
    if (n > 0 && at <= length && g_test_rand_int_range(0, 8) != 0)
      data[2 + g_test_rand_int_range(0, (gint32)n)] = 0;
    if (at + 5 <= length) {
      static const guint8 types[] = { 1, 3, 4, 1, 3, 4, 0, 2 };

      data[at] = g_test_rand_int_range(0, 8) != 0 ? 5 : random_byte();
      data[at + 1] = g_test_rand_int_range(0, 4) != 0 ? 1 : random_byte();
      data[at + 3] = types[g_test_rand_int_range(0, G_N_ELEMENTS(types))];
      if (data[at + 3] == 3 && g_test_rand_bit())
        data[at + 4] = (guint8)g_test_rand_int_range(0, 40);
    }
  }
  return length;
}

static void
test_random(void)
{
  guint8 data[700];
  guint counts[4] = { 0 };
  guint whole_counts[4] = { 0 };

  for (guint round = 0; round < 20000; round++) {
    gsize length = random_input(data, sizeof data);
    TgSocksParser parser;
    RelayOutcome whole, bytewise;
    Outcome o;

    /* one call with everything (more than the relay would ever pass) */
    parse_fresh(&parser, data, length, &o);
    counts[o.result]++;
    /* as the relay reads it: at once, and byte by byte */
    relay_feed_whole(data, length, &whole);
    relay_feed_bytewise(data, length, &bytewise);
    if (whole.result != bytewise.result || whole.sent_length != bytewise.sent_length ||
        whole.n_replies != bytewise.n_replies)
      log_input("differs", data, length);
    assert_same_relay_outcome(&whole, &bytewise);
    whole_counts[whole.result]++;
    /* the parser decides before the relay's buffer is full */
    g_assert_false(whole.too_long);
  }
  g_test_message("single call: %u more, %u reply, %u request, %u error", counts[0],
                 counts[1], counts[2], counts[3]);
  g_test_message("relay: %u more, %u request, %u error", whole_counts[0], whole_counts[2],
                 whole_counts[3]);
  /* the inputs reached every outcome */
  for (guint i = 0; i < 4; i++)
    g_assert_cmpuint(counts[i], >, 100);
  g_assert_cmpuint(whole_counts[TG_SOCKS_REQUEST], >, 100);
  g_assert_cmpuint(whole_counts[TG_SOCKS_ERROR], >, 100);
  g_assert_cmpuint(whole_counts[TG_SOCKS_MORE], >, 100);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);

  g_test_add_func("/socks5/methods", test_socks5_methods);
  g_test_add_func("/socks5/methods-all", test_socks5_methods_all);
  g_test_add_func("/socks5/methods-partial", test_socks5_methods_partial);
  g_test_add_func("/socks5/methods-pipelined", test_socks5_methods_pipelined);
  g_test_add_func("/socks5/requests", test_socks5_requests);
  g_test_add_func("/socks5/requests-partial", test_socks5_requests_partial);
  g_test_add_func("/socks5/requests-pipelined", test_socks5_requests_pipelined);
  g_test_add_func("/socks5/name-lengths", test_socks5_name_lengths);
  g_test_add_func("/socks5/name-bad-byte-anywhere", test_socks5_name_bad_byte_anywhere);
  g_test_add_func("/socks4/requests", test_socks4_requests);
  g_test_add_func("/socks4/requests-partial", test_socks4_requests_partial);
  g_test_add_func("/socks4/requests-pipelined", test_socks4_requests_pipelined);
  g_test_add_func("/socks4/user-id-limit", test_socks4_user_id_limit);
  g_test_add_func("/socks4/host-limit", test_socks4a_host_limit);
  g_test_add_func("/socks/max-handshake", test_max_handshake);
  g_test_add_func("/socks/not-socks", test_not_socks);
  g_test_add_func("/socks/empty", test_empty);
  g_test_add_func("/socks/replies", test_replies);
  g_test_add_func("/socks/split-everywhere", test_split_everywhere);
  g_test_add_func("/socks/split-refusals", test_split_refusals);
  g_test_add_func("/socks/random", test_random);

  return g_test_run();
}

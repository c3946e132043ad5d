/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "socks.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "forward-spec.h"

#define SOCKS4_CONNECT 1
#define SOCKS5_CONNECT 1
#define SOCKS5_NO_AUTH 0x00
#define SOCKS5_NO_METHOD 0xff
#define SOCKS5_ATYP_IPV4 1
#define SOCKS5_ATYP_NAME 3
#define SOCKS5_ATYP_IPV6 4

/* SOCKS5 reply codes (RFC 1928 §6) */
#define SOCKS5_OK 0x00
#define SOCKS5_GENERAL_FAILURE 0x01
#define SOCKS5_NOT_ALLOWED 0x02
#define SOCKS5_HOST_UNREACHABLE 0x04
#define SOCKS5_COMMAND_NOT_SUPPORTED 0x07
#define SOCKS5_ADDRESS_NOT_SUPPORTED 0x08
/* SOCKS4 */
#define SOCKS4_GRANTED 0x5a
#define SOCKS4_REJECTED 0x5b

void
tg_socks_parser_init(TgSocksParser *parser)
{
  memset(parser, 0, sizeof *parser);
}

static gsize
socks5_reply(guint8 code, guint8 *reply)
{
  /* VER REP RSV ATYP=IPv4 0.0.0.0 port 0: the bound address is not told */
  const guint8 message[10] = { 5, code, 0, SOCKS5_ATYP_IPV4, 0, 0, 0, 0, 0, 0 };

  memcpy(reply, message, sizeof message);
  return sizeof message;
}

static gsize
socks4_reply(guint8 code, guint8 *reply)
{
  const guint8 message[8] = { 0, code, 0, 0, 0, 0, 0, 0 };

  memcpy(reply, message, sizeof message);
  return sizeof message;
}

gsize
tg_socks_reply(const TgSocksParser *parser, TgSocksStatus status, guint8 *reply)
{
  if (parser->version == 4)
    return socks4_reply(status == TG_SOCKS_GRANTED ? SOCKS4_GRANTED : SOCKS4_REJECTED,
                        reply);
  switch (status) {
  case TG_SOCKS_GRANTED:
    return socks5_reply(SOCKS5_OK, reply);
  case TG_SOCKS_NOT_ALLOWED:
    return socks5_reply(SOCKS5_NOT_ALLOWED, reply);
  case TG_SOCKS_UNREACHABLE:
    return socks5_reply(SOCKS5_HOST_UNREACHABLE, reply);
  case TG_SOCKS_FAILED:
  default:
    return socks5_reply(SOCKS5_GENERAL_FAILURE, reply);
  }
}

/* A destination name as a client sent it must be one a forward spec could
 * name (tg_forward_host_problem(): letters, digits, '.', '_', '-', no
 * ambiguous numeric address), since that is what the policy can match.
 * NULL when it is, else why not; the name is copied to @host. */
static const char *
name_problem(const guint8 *name, gsize length, char *host)
{
  const char *problem;

  if (length == 0 || length > 255)
    return "host name empty or longer than 255 bytes";
  if (memchr(name, '\0', length) != NULL)
    return "host name with a NUL byte";
  memcpy(host, name, length);
  host[length] = '\0';
  problem = tg_forward_host_problem(host);
  if (problem != NULL)
    host[0] = '\0';
  return problem;
}

/* The index of the first NUL in data[from, length), or -1. */
static gssize
find_nul(const guint8 *data, gsize from, gsize length)
{
  const guint8 *nul = from < length ? memchr(data + from, 0, length - from) : NULL;

  return nul != NULL ? nul - data : -1;
}

static TgSocksResult
fail(const char *why, const char **error)
{
  *error = why;
  return TG_SOCKS_ERROR;
}

/* VN=4 CD DSTPORT DSTIP USERID NUL [HOST NUL if DSTIP is 0.0.0.x, x != 0] */
static TgSocksResult
parse_socks4(TgSocksParser *parser, const guint8 *data, gsize length, gsize *consumed,
             guint8 *reply, gsize *reply_length, const char **error)
{
  gssize user_end, host_end;
  gboolean socks4a;
  const char *problem;

  if (length >= 2 && data[1] != SOCKS4_CONNECT) {
    *reply_length = socks4_reply(SOCKS4_REJECTED, reply);
    return fail("SOCKS4: only CONNECT is supported", error);
  }
  if (length < 9)
    return TG_SOCKS_MORE;
  user_end = find_nul(data, 8, length);
  /* the limit holds however the request arrived: a NUL found past it in one
   * read must not let through what byte by byte would have been refused */
  if ((user_end < 0 ? (gssize)length : user_end) - 8 > 255) {
    *reply_length = socks4_reply(SOCKS4_REJECTED, reply);
    return fail("SOCKS4: user id longer than 255 bytes", error);
  }
  if (user_end < 0)
    return TG_SOCKS_MORE;
  parser->port = (guint16)((data[2] << 8) | data[3]);
  socks4a = data[4] == 0 && data[5] == 0 && data[6] == 0 && data[7] != 0;
  if (!socks4a) {
    inet_ntop(AF_INET, data + 4, parser->host, sizeof parser->host);
    *consumed = user_end + 1;
  } else {
    host_end = find_nul(data, user_end + 1, length);
    if (host_end < 0 && length - (user_end + 1) > 255) {
      *reply_length = socks4_reply(SOCKS4_REJECTED, reply);
      return fail("SOCKS4a: host name longer than 255 bytes", error);
    }
    if (host_end < 0)
      return TG_SOCKS_MORE;
    problem = name_problem(data + user_end + 1, host_end - (user_end + 1), parser->host);
    if (problem != NULL) {
      *reply_length = socks4_reply(SOCKS4_REJECTED, reply);
      return fail(problem, error);
    }
    *consumed = host_end + 1;
  }
  if (parser->port == 0) {
    *reply_length = socks4_reply(SOCKS4_REJECTED, reply);
    return fail("SOCKS4: port 0", error);
  }
  return TG_SOCKS_REQUEST;
}

/* VER=5 NMETHODS METHODS... */
static TgSocksResult
parse_socks5_methods(TgSocksParser *parser, const guint8 *data, gsize length,
                     gsize *consumed, guint8 *reply, gsize *reply_length,
                     const char **error)
{
  gsize n;

  if (length < 2)
    return TG_SOCKS_MORE;
  n = data[1];
  if (n == 0)
    return fail("SOCKS5: no authentication method offered", error);
  if (length < 2 + n)
    return TG_SOCKS_MORE;
  *consumed = 2 + n;
  reply[0] = 5;
  *reply_length = 2;
  if (memchr(data + 2, SOCKS5_NO_AUTH, n) == NULL) {
    reply[1] = SOCKS5_NO_METHOD;
    return fail("SOCKS5: the client wants authentication, which is not offered", error);
  }
  reply[1] = SOCKS5_NO_AUTH;
  parser->stage = 1;
  return TG_SOCKS_REPLY;
}

/* VER=5 CMD RSV ATYP DST.ADDR DST.PORT */
static TgSocksResult
parse_socks5_request(TgSocksParser *parser, const guint8 *data, gsize length,
                     gsize *consumed, guint8 *reply, gsize *reply_length,
                     const char **error)
{
  gsize address_length, header = 4;

  if (length < 5)
    return TG_SOCKS_MORE;
  if (data[0] != 5) {
    *reply_length = socks5_reply(SOCKS5_GENERAL_FAILURE, reply);
    return fail("SOCKS5: request with another version", error);
  }
  if (data[1] != SOCKS5_CONNECT) {
    *reply_length = socks5_reply(SOCKS5_COMMAND_NOT_SUPPORTED, reply);
    return fail("SOCKS5: only CONNECT is supported", error);
  }
  switch (data[3]) {
  case SOCKS5_ATYP_IPV4:
    address_length = 4;
    break;
  case SOCKS5_ATYP_IPV6:
    address_length = 16;
    break;
  case SOCKS5_ATYP_NAME:
    address_length = data[4];
    header = 5;
    if (address_length == 0) {
      *reply_length = socks5_reply(SOCKS5_HOST_UNREACHABLE, reply);
      return fail("SOCKS5: empty host name", error);
    }
    break;
  default:
    *reply_length = socks5_reply(SOCKS5_ADDRESS_NOT_SUPPORTED, reply);
    return fail("SOCKS5: unknown address type", error);
  }
  if (length < header + address_length + 2)
    return TG_SOCKS_MORE;
  if (data[3] == SOCKS5_ATYP_NAME) {
    const char *problem = name_problem(data + header, address_length, parser->host);

    if (problem != NULL) {
      *reply_length = socks5_reply(SOCKS5_HOST_UNREACHABLE, reply);
      return fail(problem, error);
    }
  } else {
    inet_ntop(data[3] == SOCKS5_ATYP_IPV4 ? AF_INET : AF_INET6, data + header,
              parser->host, sizeof parser->host);
  }
  parser->port =
      (guint16)((data[header + address_length] << 8) | data[header + address_length + 1]);
  *consumed = header + address_length + 2;
  if (parser->port == 0) {
    *reply_length = socks5_reply(SOCKS5_HOST_UNREACHABLE, reply);
    return fail("SOCKS5: port 0", error);
  }
  return TG_SOCKS_REQUEST;
}

TgSocksResult
tg_socks_parse(TgSocksParser *parser, const guint8 *data, gsize length, gsize *consumed,
               guint8 *reply, gsize *reply_length, const char **error)
{
  *consumed = 0;
  *reply_length = 0;
  *error = NULL;
  if (length == 0)
    return TG_SOCKS_MORE;
  if (parser->version == 0) {
    if (data[0] != 4 && data[0] != 5)
      return fail("not a SOCKS4 or SOCKS5 client", error);
    parser->version = data[0];
  }
  if (parser->version == 4)
    return parse_socks4(parser, data, length, consumed, reply, reply_length, error);
  if (parser->stage == 0)
    return parse_socks5_methods(parser, data, length, consumed, reply, reply_length,
                                error);
  return parse_socks5_request(parser, data, length, consumed, reply, reply_length, error);
}

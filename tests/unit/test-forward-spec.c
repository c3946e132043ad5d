/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for forward-spec.c: forward strings as ssh(1) -L/-R/-D takes
 * them, the loopback predicate, and destinations. */
#include <string.h>

#include "forward-spec.h"
#include "tg-error.h"

/* ---- Helpers ------------------------------------------------------------ */

/* What one end of a parsed forward should hold. */
typedef struct {
  const char *host;
  guint16 port;
  const char *path;
} ExpectedEndpoint;

/* Expected endpoints in the tables: TCP host and port, a Unix socket path,
 * or nothing (D, remote dynamic). */
// clang-format off
#define TCP(host, port) { (host), (port), NULL }
#define SOCK(path) { NULL, 0, (path) }
#define NONE { NULL, 0, NULL }
// clang-format on

typedef struct {
  const char *input;
  TgForwardKind kind;
  ExpectedEndpoint listen;
  ExpectedEndpoint connect;
  gboolean remote_dynamic;
  const char *canonical; /* NULL: same as input */
} ForwardCase;

typedef struct {
  const char *input;
  const char *expected_in_message; /* names the bad part */
} BadCase;

/* Inputs hold control characters and invalid UTF-8: escape them so the TAP
 * output stays one line per message. */
static void
log_input(const char *label, const char *input)
{
  g_autofree char *escaped = g_strescape(input, NULL);

  g_test_message("%s: %s", label, escaped);
}

static void
assert_endpoint_equal(const TgEndpoint *a, const TgEndpoint *b)
{
  g_assert_cmpstr(a->host, ==, b->host);
  g_assert_cmpuint(a->port, ==, b->port);
  g_assert_cmpstr(a->path, ==, b->path);
}

static void
assert_forward_equal(const TgForward *a, const TgForward *b)
{
  g_assert_cmpint(a->kind, ==, b->kind);
  assert_endpoint_equal(&a->listen, &b->listen);
  assert_endpoint_equal(&a->connect, &b->connect);
  g_assert_cmpint(a->remote_dynamic, ==, b->remote_dynamic);
  g_assert_cmpstr(a->spec, ==, b->spec);
}

/* The canonical spec must parse back to the very same forward. */
static void
assert_round_trip(const TgForward *forward)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgForward) again = tg_forward_parse(forward->spec, &error);

  g_assert_no_error(error);
  g_assert_nonnull(again);
  assert_forward_equal(forward, again);
}

static void
assert_endpoint_expected(const TgEndpoint *end, const ExpectedEndpoint *expected)
{
  g_assert_cmpstr(end->host, ==, expected->host);
  g_assert_cmpuint(end->port, ==, expected->port);
  g_assert_cmpstr(end->path, ==, expected->path);
}

static void
check_forward_case(const ForwardCase *c)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgForward) forward = NULL;

  log_input("forward", c->input);
  forward = tg_forward_parse(c->input, &error);
  g_assert_no_error(error);
  g_assert_nonnull(forward);
  g_assert_cmpint(forward->kind, ==, c->kind);
  assert_endpoint_expected(&forward->listen, &c->listen);
  assert_endpoint_expected(&forward->connect, &c->connect);
  g_assert_cmpint(forward->remote_dynamic, ==, c->remote_dynamic);
  g_assert_cmpstr(forward->spec, ==, c->canonical != NULL ? c->canonical : c->input);
  assert_round_trip(forward);
}

static void
check_forward_cases(const ForwardCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++)
    check_forward_case(&cases[i]);
}

static gboolean
is_printable_ascii(const char *text)
{
  for (const char *p = text; *p != '\0'; p++) {
    if (*p < 0x20 || *p > 0x7e)
      return FALSE;
  }
  return TRUE;
}

/* Messages go out as D-Bus errors: valid UTF-8, naming the whole input (when
 * it can be quoted verbatim) and the bad part. */
static void
assert_input_error(const GError *error, const char *what, const char *input,
                   const char *expected_in_message)
{
  g_autofree char *prefix = g_strdup_printf("%s '%s': ", what, input);

  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_true(g_utf8_validate(error->message, -1, NULL));
  if (is_printable_ascii(input) && strlen(input) <= 1024)
    g_assert_true(g_str_has_prefix(error->message, prefix));
  else
    g_assert_true(g_str_has_prefix(error->message, what));
  if (strstr(error->message, expected_in_message) == NULL)
    g_error("message '%s' lacks '%s'", error->message, expected_in_message);
}

static void
check_forward_rejected(const char *input, const char *expected_in_message)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgForward) forward = NULL;

  log_input("bad forward", input);
  forward = tg_forward_parse(input, &error);
  g_assert_null(forward);
  assert_input_error(error, "forward", input, expected_in_message);
}

static void
check_bad_forwards(const BadCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++)
    check_forward_rejected(cases[i].input, cases[i].expected_in_message);
}

/* ---- Good forwards ------------------------------------------------------ */

static void
test_local_forms(void)
{
  static const ForwardCase cases[] = {
    /* [bind_address:]port:host:hostport */
    { "L 8080:intra:80", TG_FORWARD_LOCAL, TCP(NULL, 8080), TCP("intra", 80), FALSE,
      NULL },
    { "L 127.0.0.1:8080:intra:80", TG_FORWARD_LOCAL, TCP("127.0.0.1", 8080),
      TCP("intra", 80), FALSE, NULL },
    { "L localhost:8080:db.example.com:5432", TG_FORWARD_LOCAL, TCP("localhost", 8080),
      TCP("db.example.com", 5432), FALSE, NULL },
    { "L *:8080:intra:80", TG_FORWARD_LOCAL, TCP("*", 8080), TCP("intra", 80), FALSE,
      NULL },
    /* Empty bind address: all interfaces, as in OpenSSH. */
    { "L :8080:intra:80", TG_FORWARD_LOCAL, TCP("", 8080), TCP("intra", 80), FALSE,
      NULL },
    { "L 8080:10.1.2.3:443", TG_FORWARD_LOCAL, TCP(NULL, 8080), TCP("10.1.2.3", 443),
      FALSE, NULL },
    { "L 1:my_host-1.example.com.:65535", TG_FORWARD_LOCAL, TCP(NULL, 1),
      TCP("my_host-1.example.com.", 65535), FALSE, NULL },
    /* [bind_address:]port:remote_socket */
    { "L 8080:/run/app.sock", TG_FORWARD_LOCAL, TCP(NULL, 8080), SOCK("/run/app.sock"),
      FALSE, NULL },
    { "L 127.0.0.1:8080:/run/app.sock", TG_FORWARD_LOCAL, TCP("127.0.0.1", 8080),
      SOCK("/run/app.sock"), FALSE, NULL },
    /* local_socket:host:hostport */
    { "L /tmp/local.sock:intra:80", TG_FORWARD_LOCAL, SOCK("/tmp/local.sock"),
      TCP("intra", 80), FALSE, NULL },
    /* local_socket:remote_socket */
    { "L /tmp/local.sock:/run/remote.sock", TG_FORWARD_LOCAL, SOCK("/tmp/local.sock"),
      SOCK("/run/remote.sock"), FALSE, NULL },
    /* Any field with a '/' is a path, relative ones too (as in OpenSSH). */
    { "L relative/dir.sock:pg:5432", TG_FORWARD_LOCAL, SOCK("relative/dir.sock"),
      TCP("pg", 5432), FALSE, NULL },
    /* Ports are decimal; leading zeros are read as OpenSSH reads them. */
    { "L 08080:intra:0080", TG_FORWARD_LOCAL, TCP(NULL, 8080), TCP("intra", 80), FALSE,
      "L 8080:intra:80" },
  };

  check_forward_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_remote_forms(void)
{
  static const ForwardCase cases[] = {
    /* [bind_address:]port:host:hostport */
    { "R 8080:intra:80", TG_FORWARD_REMOTE, TCP(NULL, 8080), TCP("intra", 80), FALSE,
      NULL },
    { "R 0.0.0.0:8080:localhost:80", TG_FORWARD_REMOTE, TCP("0.0.0.0", 8080),
      TCP("localhost", 80), FALSE, NULL },
    { "R *:2222:10.0.0.1:22", TG_FORWARD_REMOTE, TCP("*", 2222), TCP("10.0.0.1", 22),
      FALSE, NULL },
    /* [bind_address:]port:local_socket */
    { "R 8080:/run/local.sock", TG_FORWARD_REMOTE, TCP(NULL, 8080),
      SOCK("/run/local.sock"), FALSE, NULL },
    { "R :8080:/run/local.sock", TG_FORWARD_REMOTE, TCP("", 8080),
      SOCK("/run/local.sock"), FALSE, NULL },
    /* remote_socket:host:hostport */
    { "R /tmp/remote.sock:intra:80", TG_FORWARD_REMOTE, SOCK("/tmp/remote.sock"),
      TCP("intra", 80), FALSE, NULL },
    /* remote_socket:local_socket */
    { "R /tmp/remote.sock:/run/local.sock", TG_FORWARD_REMOTE, SOCK("/tmp/remote.sock"),
      SOCK("/run/local.sock"), FALSE, NULL },
    /* [bind_address:]port alone: SOCKS on the server (remote dynamic) */
    { "R 1080", TG_FORWARD_REMOTE, TCP(NULL, 1080), NONE, TRUE, NULL },
    { "R 127.0.0.1:1080", TG_FORWARD_REMOTE, TCP("127.0.0.1", 1080), NONE, TRUE, NULL },
    { "R [::1]:1080", TG_FORWARD_REMOTE, TCP("::1", 1080), NONE, TRUE, NULL },
    { "R :1080", TG_FORWARD_REMOTE, TCP("", 1080), NONE, TRUE, NULL },
    { "R *:0", TG_FORWARD_REMOTE, TCP("*", 0), NONE, TRUE, NULL },
  };

  check_forward_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_dynamic_forms(void)
{
  static const ForwardCase cases[] = {
    { "D 1080", TG_FORWARD_DYNAMIC, TCP(NULL, 1080), NONE, FALSE, NULL },
    { "D 127.0.0.1:1080", TG_FORWARD_DYNAMIC, TCP("127.0.0.1", 1080), NONE, FALSE, NULL },
    { "D localhost:1080", TG_FORWARD_DYNAMIC, TCP("localhost", 1080), NONE, FALSE, NULL },
    { "D *:1080", TG_FORWARD_DYNAMIC, TCP("*", 1080), NONE, FALSE, NULL },
    { "D :1080", TG_FORWARD_DYNAMIC, TCP("", 1080), NONE, FALSE, NULL },
    { "D [::1]:1080", TG_FORWARD_DYNAMIC, TCP("::1", 1080), NONE, FALSE, NULL },
    { "D [::]:1080", TG_FORWARD_DYNAMIC, TCP("::", 1080), NONE, FALSE, NULL },
    { "D 01080", TG_FORWARD_DYNAMIC, TCP(NULL, 1080), NONE, FALSE, "D 1080" },
  };

  check_forward_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_ipv6(void)
{
  static const ForwardCase cases[] = {
    { "L [::1]:8080:intra:80", TG_FORWARD_LOCAL, TCP("::1", 8080), TCP("intra", 80),
      FALSE, NULL },
    { "L 8080:[2001:db8::1]:80", TG_FORWARD_LOCAL, TCP(NULL, 8080),
      TCP("2001:db8::1", 80), FALSE, NULL },
    { "L [::]:8080:[fe80::1]:22", TG_FORWARD_LOCAL, TCP("::", 8080), TCP("fe80::1", 22),
      FALSE, NULL },
    { "L [::1]:8080:/run/app.sock", TG_FORWARD_LOCAL, TCP("::1", 8080),
      SOCK("/run/app.sock"), FALSE, NULL },
    { "R [2001:db8::5]:8080:[::ffff:10.0.0.1]:80", TG_FORWARD_REMOTE,
      TCP("2001:db8::5", 8080), TCP("::ffff:10.0.0.1", 80), FALSE, NULL },
    { "L /tmp/l.sock:[2001:db8::1]:443", TG_FORWARD_LOCAL, SOCK("/tmp/l.sock"),
      TCP("2001:db8::1", 443), FALSE, NULL },
    /* Brackets around anything are just quoting; the canonical form keeps
     * them only where a ':' needs them. */
    { "L [127.0.0.1]:[8080]:[intra]:[80]", TG_FORWARD_LOCAL, TCP("127.0.0.1", 8080),
      TCP("intra", 80), FALSE, "L 127.0.0.1:8080:intra:80" },
    /* A non-canonical IPv6 spelling is kept as written. */
    { "L [0:0:0:0:0:0:0:1]:8080:h:80", TG_FORWARD_LOCAL, TCP("0:0:0:0:0:0:0:1", 8080),
      TCP("h", 80), FALSE, NULL },
  };

  check_forward_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_escapes_and_paths(void)
{
  static const ForwardCase cases[] = {
    /* A backslash takes the next character literally. */
    { "L 8080:\\:\\:1:80", TG_FORWARD_LOCAL, TCP(NULL, 8080), TCP("::1", 80), FALSE,
      "L 8080:[::1]:80" },
    { "L 80\\80:intra:80", TG_FORWARD_LOCAL, TCP(NULL, 8080), TCP("intra", 80), FALSE,
      "L 8080:intra:80" },
    { "L /tmp/a\\:b.sock:/run/x.sock", TG_FORWARD_LOCAL, SOCK("/tmp/a:b.sock"),
      SOCK("/run/x.sock"), FALSE, "L [/tmp/a:b.sock]:/run/x.sock" },
    { "L /tmp/back\\\\slash.sock:/r.sock", TG_FORWARD_LOCAL,
      SOCK("/tmp/back\\slash.sock"), SOCK("/r.sock"), FALSE,
      "L [/tmp/back\\slash.sock]:/r.sock" },
    /* A path with ']' and ':' can only be written with backslashes. */
    { "L /tmp/x]\\:y.sock:/r.sock", TG_FORWARD_LOCAL, SOCK("/tmp/x]:y.sock"),
      SOCK("/r.sock"), FALSE, NULL },
    /* A leading '[' escaped is not a bracket. */
    { "L \\[x/y:/r.sock", TG_FORWARD_LOCAL, SOCK("[x/y"), SOCK("/r.sock"), FALSE,
      "L [[x/y]:/r.sock" },
    { "L \\[x]/y:/r.sock", TG_FORWARD_LOCAL, SOCK("[x]/y"), SOCK("/r.sock"), FALSE,
      NULL },
    /* Brackets: taken literally, '/' inside still makes a path. */
    { "L [/tmp/a:b.sock]:[/run/c:d.sock]", TG_FORWARD_LOCAL, SOCK("/tmp/a:b.sock"),
      SOCK("/run/c:d.sock"), FALSE, NULL },
    { "R 8080:[/run/with\\backslash]", TG_FORWARD_REMOTE, TCP(NULL, 8080),
      SOCK("/run/with\\backslash"), FALSE, NULL },
    /* Non-ASCII is fine in paths. */
    { "L /tmp/caf\xc3\xa9.sock:h:80", TG_FORWARD_LOCAL, SOCK("/tmp/caf\xc3\xa9.sock"),
      TCP("h", 80), FALSE, NULL },
  };

  check_forward_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_listen_port_zero(void)
{
  static const ForwardCase cases[] = {
    { "L 0:intra:80", TG_FORWARD_LOCAL, NONE, TCP("intra", 80), FALSE, NULL },
    { "L 127.0.0.1:0:/run/app.sock", TG_FORWARD_LOCAL, TCP("127.0.0.1", 0),
      SOCK("/run/app.sock"), FALSE, NULL },
    { "R 0:intra:80", TG_FORWARD_REMOTE, NONE, TCP("intra", 80), FALSE, NULL },
    { "R 0", TG_FORWARD_REMOTE, NONE, NONE, TRUE, NULL },
    { "D 0", TG_FORWARD_DYNAMIC, NONE, NONE, FALSE, NULL },
    { "D [::1]:000", TG_FORWARD_DYNAMIC, TCP("::1", 0), NONE, FALSE, "D [::1]:0" },
  };

  check_forward_cases(cases, G_N_ELEMENTS(cases));
}

/* ---- Bad forwards ------------------------------------------------------- */

static void
test_bad_kind_and_spacing(void)
{
  static const BadCase cases[] = {
    { "", "empty" },
    { "L", "missing space after the kind letter" },
    { "L8080:h:80", "missing space after the kind letter" },
    { "L ", "nothing after 'L '" },
    { "D ", "nothing after 'D '" },
    { "L  8080:h:80", "more than one space after the kind letter" },
    { "l 8080:h:80", "unknown kind 'l' (expected L, R or D)" },
    { "X 1:a:2", "unknown kind 'X' (expected L, R or D)" },
    { "Local 8080:h:80", "unknown kind 'Local'" },
    { " L 8080:h:80", "unknown kind ' '" },
    { "-L 8080:h:80", "unknown kind '-L'" },
    { "\xc3\x84 1:a:2", "unknown kind '\xc3\x84'" },
  };

  check_bad_forwards(cases, G_N_ELEMENTS(cases));
  /* Only NUL can end the letter's word; a tab is a control character. */
  check_forward_rejected("L\t8080:h:80", "control character U+0009");
}

static void
test_bad_fields(void)
{
  static const BadCase cases[] = {
    { "L 8080", "missing fields (expected [bind_address:]port:host:hostport" },
    { "L 8080:intra", "missing fields" },
    { "L 127.0.0.1:8080", "missing fields" },
    { "L /tmp/a.sock:8080", "missing fields" },
    { "L /tmp/a.sock", "missing fields" },
    { "R /tmp/remote.sock", "missing fields" },
    { "R /tmp/remote.sock:intra", "missing fields" },
    { "L 1:2:3:4:5", "too many fields (at most 4); extra text '5'" },
    { "R a:1:b:2:c:3", "too many fields" },
    { "D 1:2:3", "too many fields (expected port or bind_address:port)" },
    { "D h:1080:x:80", "too many fields" },
    { "L 8080:h:80:", "trailing ':'" },
    { "L 8080:h:", "trailing ':'" },
    { "R 1080:", "trailing ':'" },
    { "L 8080::80", "empty host" },
    { "L :h:80", "empty listen port" },
    { "L 8080:h:[]", "empty connect port" },
    { "D :", "trailing ':'" },
    /* Three fields to OpenSSH, not an IPv6 address: IPv6 needs brackets. */
    { "D ::1080", "too many fields" },
  };

  check_bad_forwards(cases, G_N_ELEMENTS(cases));
  /* Paths where a host or port belongs. */
  check_forward_rejected("L /tmp/x:80:h:90",
                         "'/tmp/x' is a Unix socket path where a bind "
                         "address was expected");
  check_forward_rejected("L 80:/x:90", "'/x' is a Unix socket path where a host was "
                                       "expected");
  check_forward_rejected("L /a:h:/b", "'/b' is a Unix socket path where a "
                                      "connect port was expected");
  /* Three fields ending in a path: bind_address:port:path. */
  check_forward_rejected("L 127.0.0.1:h:/x", "listen port 'h' is not a number");
  check_forward_rejected("L 8080:h:/x", "bind address '8080' looks like a port (expected "
                                        "[bind_address:]port:host:hostport");
  check_forward_rejected("R 8080:80", "bind address '8080' looks like a port");
  check_forward_rejected("D 1:1080", "bind address '1' looks like a port "
                                     "(expected port or bind_address:port)");
  /* D never takes a Unix socket. */
  check_forward_rejected("D /tmp/socks.sock", "dynamic forwards cannot use a Unix socket "
                                              "('/tmp/socks.sock')");
  check_forward_rejected("D 127.0.0.1:/tmp/x", "Unix socket ('/tmp/x')");
  check_forward_rejected("D [/tmp/x]", "Unix socket");
}

static void
test_bad_ports(void)
{
  static const BadCase cases[] = {
    { "L abc:h:80", "listen port 'abc' is not a number from 0 to 65535" },
    { "L -1:h:80", "port '-1' is not a number" },
    { "L +80:h:80", "port '+80' is not a number" },
    { "L 99999:h:80", "port '99999' is not a number from 0 to 65535" },
    { "L 65536:h:80", "port '65536' is not a number" },
    { "L 8080:h:99999999999999999999999",
      "connect port '99999999999999999999999' is not a number" },
    { "L 8080:h:4294967376", "connect port '4294967376' is not a number" },
    { "L 8080:h: 80", "connect port ' 80' is not a number" },
    { "L 8080:h:80 ", "connect port '80 ' is not a number" },
    { "L 0x50:h:80", "port '0x50' is not a number" },
    { "L ssh:h:80", "port 'ssh' is not a number" },
    { "L 8080:h:1e3", "port '1e3' is not a number" },
    { "L 8080:h:0", "connect port 0 is not allowed" },
    { "L 8080:h:000", "connect port 0 is not allowed" },
    { "R 8080:h:0", "connect port 0 is not allowed" },
    { "L /tmp/l.sock:h:0", "connect port 0 is not allowed" },
    { "D -1080", "listen port '-1080' is not a number" },
    { "R 70000", "listen port '70000' is not a number" },
    /* An escaped '/' is not a path: this is bind "8080", port "/x". */
    { "R localhost:\\/x", "listen port '/x' is not a number" },
  };

  check_bad_forwards(cases, G_N_ELEMENTS(cases));
}

static void
test_bad_hosts(void)
{
  static const BadCase cases[] = {
    { "L 8080:a\\/b:80", "invalid host 'a/b'" },
    { "L 8080:h h:80", "invalid host 'h h'" },
    { "L 8080:*:80", "invalid host '*'" },
    { "L 8080:-oProxyCommand:80", "invalid host '-oProxyCommand': must not "
                                  "start with '-'" },
    { "L 8080:.hidden:80", "invalid host '.hidden'" },
    { "L 8080:h;rm:80", "invalid host 'h;rm'" },
    { "L 8080:127.1:80", "invalid host '127.1': ambiguous numeric address" },
    { "L 8080:2130706433:80", "invalid host '2130706433': ambiguous" },
    { "L 8080:0x7f.0.0.1:80", "invalid host '0x7f.0.0.1': ambiguous" },
    { "L 8080:0177.0.0.1:80", "invalid host '0177.0.0.1': ambiguous" },
    { "L 8080:[1::2::3]:80", "invalid host '1::2::3': not a valid IPv6" },
    { "L 8080:[fe80::1%eth0]:80", "invalid host 'fe80::1%eth0'" },
    { "L 8080:\\:\\:\\::80", "invalid host ':::'" },
    { "L bad!:8080:h:80", "invalid bind address 'bad!'" },
    { "L **:8080:h:80", "invalid bind address '**'" },
    { "D 127.1:1080", "invalid bind address '127.1'" },
    { "R -x:1080", "invalid bind address '-x'" },
  };

  check_bad_forwards(cases, G_N_ELEMENTS(cases));
}

static void
test_bad_brackets_and_escapes(void)
{
  static const BadCase cases[] = {
    { "L [::1:8080:h:80", "unterminated '[' in '[::1:8080:h:80'" },
    { "L 8080:[::1", "unterminated '['" },
    { "L [", "unterminated '['" },
    { "L [::1]x:8080:h:80", "unexpected text after ']' in '[::1]x'" },
    { "L 8080:[::1]80", "unexpected text after ']' in '[::1]80'" },
    { "L 8080:[h]]:80", "unexpected text after ']' in '[h]]'" },
    { "L 8080:h:80\\", "'\\' at the end escapes nothing" },
    { "L \\", "escapes nothing" },
  };

  check_bad_forwards(cases, G_N_ELEMENTS(cases));
}

static void
test_bad_characters(void)
{
  static const BadCase cases[] = {
    { "L 8080:h\tx:80", "control character U+0009 at byte 8" },
    { "L 8080:intra:80\n", "control character U+000A at byte 15" },
    { "L 8080:intra:80\r", "U+000D" },
    { "L 8080:h\x1b[31m:80", "U+001B" },
    { "L 8080:h\x7f:80", "U+007F" },
    { "L /tmp/\xc2\x85.sock:h:80", "U+0085" }, /* C1 NEXT LINE */
    { "L 8080:\xff:80", "not valid UTF-8" },
    { "L /tmp/\xc3(.sock:h:80", "not valid UTF-8" },
    { "L /tmp/\xed\xa0\x80.sock:h:80", "not valid UTF-8" }, /* surrogate */
    { "L 8080:${HOME}/x.sock", "environment variables ('${')" },
    { "R ${PORT}", "environment variables" },
  };

  check_bad_forwards(cases, G_N_ELEMENTS(cases));
}

static char *
repeat_char(char c, gsize count)
{
  char *text = g_malloc(count + 1);

  memset(text, c, count);
  text[count] = '\0';
  return text;
}

static void
test_lengths(void)
{
  g_autofree char *huge_body = repeat_char('1', 100 * 1024);
  g_autofree char *huge = g_strconcat("L ", huge_body, NULL);
  g_autofree char *zeros = repeat_char('0', 1024 - strlen("L 8080:h:80"));
  g_autofree char *longest = g_strconcat("L ", zeros, "8080:h:80", NULL);
  g_autofree char *too_long = g_strconcat("L 0", zeros, "8080:h:80", NULL);
  g_autofree char *dir107 = repeat_char('d', 107 - strlen("/.sock"));
  g_autofree char *path107 = g_strconcat("/", dir107, ".sock", NULL);
  g_autofree char *path108 = g_strconcat("/", dir107, "x.sock", NULL);
  g_autofree char *host255 = repeat_char('a', 255);
  g_autofree char *host256 = repeat_char('a', 256);
  g_autoptr(GError) error = NULL;
  g_autoptr(TgForward) forward = NULL;
  g_autofree char *spec = NULL;

  /* 100 KB: refused, and the message quotes only a prefix. */
  forward = tg_forward_parse(huge, &error);
  g_assert_null(forward);
  assert_input_error(error, "forward", huge, "longer than 1024 bytes");
  g_assert_cmpuint(strlen(error->message), <, 200);
  g_clear_error(&error);

  /* Exactly 1024 bytes is fine; 1025 is not. */
  g_assert_cmpuint(strlen(longest), ==, 1024);
  forward = tg_forward_parse(longest, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(forward->listen.port, ==, 8080);
  g_assert_cmpstr(forward->spec, ==, "L 8080:h:80");
  g_clear_pointer(&forward, tg_forward_free);
  check_forward_rejected(too_long, "longer than 1024 bytes");

  /* Socket paths: sizeof(sun_path) - 1 = 107 bytes at most. */
  g_assert_cmpuint(strlen(path107), ==, 107);
  spec = g_strdup_printf("L %s:%s", path107, path107);
  forward = tg_forward_parse(spec, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(forward->listen.path, ==, path107);
  g_assert_cmpstr(forward->connect.path, ==, path107);
  g_clear_pointer(&forward, tg_forward_free);
  g_free(spec);
  spec = g_strdup_printf("L %s:h:80", path108);
  check_forward_rejected(spec, "is longer than 107 bytes");
  g_free(spec);
  spec = g_strdup_printf("R 8080:%s", path108);
  check_forward_rejected(spec, "is longer than 107 bytes");
  g_free(spec);

  /* Host names: 255 bytes at most, bind addresses too. */
  spec = g_strdup_printf("L %s:8080:%s:80", host255, host255);
  forward = tg_forward_parse(spec, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(forward->listen.host, ==, host255);
  g_assert_cmpstr(forward->connect.host, ==, host255);
  g_clear_pointer(&forward, tg_forward_free);
  g_free(spec);
  spec = g_strdup_printf("L 8080:%s:80", host256);
  check_forward_rejected(spec, "longer than 255 bytes");
  g_free(spec);
  spec = g_strdup_printf("D %s:1080", host256);
  check_forward_rejected(spec, "longer than 255 bytes");
}

/* ---- Random input ------------------------------------------------------- */

static const char *
pick(GRand *rand, const char *const *choices, gsize n_choices)
{
  return choices[g_rand_int_range(rand, 0, (gint32)n_choices)];
}

/* Characters that mean something to the grammar, and some raw bytes. */
static void
append_random_chars(GRand *rand, GString *text)
{
  static const char alphabet[] = "LRD :::[]\\//.*-_@0123456789abcxyz$";
  gint length = g_rand_int_range(rand, 0, 40);

  for (gint i = 0; i < length; i++) {
    if (g_rand_int_range(rand, 0, 8) == 0)
      g_string_append_c(text, (char)g_rand_int_range(rand, 1, 256));
    else
      g_string_append_c(text, alphabet[g_rand_int_range(rand, 0, sizeof alphabet - 1)]);
  }
}

/* Whole pieces (ports, hosts, paths, quoting) joined by ':', mostly good
 * ones, so that a few hundred inputs parse and go through the round trip. */
static void
append_random_tokens(GRand *rand, GString *text)
{
  static const char *const good[] = {
    "0", "80", "08080",       "65535",  "h",      "localhost", "127.0.0.1",    "[::1]",
    "*", "",   "/tmp/x.sock", "[/a:b]", "/a\\:b", "\\[x/y",    "/caf\xc3\xa9",
  };
  static const char *const bad[] = {
    "65536", "-1",   "127.1", "[::1", "[x]y", "::1",       "a/b\\",
    "\\/",   "${X}", " ",     "\xff", "\t",   "[1::2::3]",
  };
  gint n_tokens = g_rand_int_range(rand, 1, 6);

  for (gint i = 0; i < n_tokens; i++) {
    if (i > 0)
      g_string_append_c(text, ':');
    if (g_rand_int_range(rand, 0, 6) != 0)
      g_string_append(text, pick(rand, good, G_N_ELEMENTS(good)));
    else
      g_string_append(text, pick(rand, bad, G_N_ELEMENTS(bad)));
  }
}

static char *
random_input(GRand *rand, const char *const *prefixes, gsize n_prefixes)
{
  GString *text = g_string_new(pick(rand, prefixes, n_prefixes));

  if (g_rand_boolean(rand))
    append_random_chars(rand, text);
  else
    append_random_tokens(rand, text);
  return g_string_free(text, FALSE);
}

static void
test_forward_random_input(void)
{
  static const char *const prefixes[] = { "L ",      "R ",  "D ",  "",
                                          "L 8080:", "R 1", "L [", "X " };
  g_autoptr(GRand) rand = g_rand_new_with_seed(20240611);
  guint n_parsed = 0;

  for (guint i = 0; i < 10000; i++) {
    g_autofree char *input = random_input(rand, prefixes, G_N_ELEMENTS(prefixes));
    g_autoptr(GError) error = NULL;
    g_autoptr(TgForward) forward = tg_forward_parse(input, &error);

    /* Exactly one of the two. */
    g_assert_true((forward != NULL) != (error != NULL));
    if (forward == NULL) {
      g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
      g_assert_true(g_utf8_validate(error->message, -1, NULL));
      continue;
    }
    n_parsed++;
    g_assert_true(g_utf8_validate(forward->spec, -1, NULL));
    assert_round_trip(forward);
  }
  g_test_message("random forwards: %u of 10000 parsed", n_parsed);
  g_assert_cmpuint(n_parsed, >, 100);
}

/* ---- Copy, free, loopback ----------------------------------------------- */

static void
test_copy_and_free(void)
{
  static const char *const specs[] = {
    "L 127.0.0.1:8080:intra:80",
    "L /tmp/a.sock:/run/b.sock",
    "R 1080",
    "R [::1]:8080:/run/x.sock",
    "D *:1080",
    "L 8080:[2001:db8::1]:443",
  };

  for (gsize i = 0; i < G_N_ELEMENTS(specs); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(TgForward) forward = tg_forward_parse(specs[i], &error);
    g_autoptr(TgForward) copy = NULL;

    g_assert_no_error(error);
    copy = tg_forward_copy(forward);
    assert_forward_equal(forward, copy);
    /* Deep: no string is shared. */
    g_assert_true(copy->spec != forward->spec);
    g_assert_true(copy->listen.host == NULL || copy->listen.host != forward->listen.host);
    g_assert_true(copy->listen.path == NULL || copy->listen.path != forward->listen.path);
    g_assert_true(copy->connect.host == NULL ||
                  copy->connect.host != forward->connect.host);
    g_assert_true(copy->connect.path == NULL ||
                  copy->connect.path != forward->connect.path);
  }
  tg_forward_free(NULL);
  tg_destination_free(NULL);
}

static void
test_loopback_parsed(void)
{
  static const struct {
    const char *spec;
    gboolean loopback_only;
  } cases[] = {
    { "L 8080:h:80", TRUE },
    { "L localhost:8080:h:80", TRUE },
    { "L LocalHost:8080:h:80", TRUE },
    { "L 127.0.0.1:8080:h:80", TRUE },
    { "L 127.255.255.254:8080:h:80", TRUE },
    { "L 127.0.0.1:8080:/run/x.sock", TRUE },
    { "L [::1]:8080:h:80", TRUE },
    { "L [0:0:0:0:0:0:0:1]:8080:h:80", TRUE },
    { "L [::0:1]:8080:h:80", TRUE },
    { "D 1080", TRUE },
    { "D 127.0.0.1:1080", TRUE },
    { "D [::1]:1080", TRUE },
    { "L :8080:h:80", FALSE },
    { "L *:8080:h:80", FALSE },
    { "L 0.0.0.0:8080:h:80", FALSE },
    { "L [::]:8080:h:80", FALSE },
    { "L 10.0.0.1:8080:h:80", FALSE },
    { "L 128.0.0.1:8080:h:80", FALSE },
    { "L 126.255.255.255:8080:h:80", FALSE },
    { "L [::ffff:127.0.0.1]:8080:h:80", FALSE },
    { "L [::2]:8080:h:80", FALSE },
    { "L example.com:8080:h:80", FALSE },
    { "L localhost.localdomain:8080:h:80", FALSE },
    { "L localhost.:8080:h:80", FALSE },
    { "L /tmp/l.sock:h:80", FALSE },
    { "L /tmp/l.sock:/run/r.sock", FALSE },
    { "D *:1080", FALSE },
    { "D :1080", FALSE },
    /* R listens on the server: never "our" loopback. */
    { "R 8080:h:80", FALSE },
    { "R localhost:8080:h:80", FALSE },
    { "R 127.0.0.1:8080:h:80", FALSE },
    { "R 1080", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(TgForward) forward = tg_forward_parse(cases[i].spec, &error);

    g_test_message("loopback: %s", cases[i].spec);
    g_assert_no_error(error);
    g_assert_cmpint(tg_forward_listens_on_loopback_only(forward), ==,
                    cases[i].loopback_only);
  }
}

/* Forwards built by hand (not through the parser) with hosts the parser
 * would refuse: the predicate must still err on the side of "not loopback". */
static void
test_loopback_hand_built(void)
{
  static const struct {
    const char *host;
    gboolean loopback_only;
  } cases[] = {
    { "127.1", FALSE },      { "0177.0.0.1", FALSE }, { "2130706433", FALSE },
    { " 127.0.0.1", FALSE }, { "127.0.0.1 ", FALSE }, { "localhost ", FALSE },
    { "::1%lo", FALSE },     { "[::1]", FALSE },      { "LOCALHOST", TRUE },
    { "127.0.0.1", TRUE },   { "::0:0:1", TRUE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    TgForward forward = { .kind = TG_FORWARD_LOCAL };

    forward.listen.host = (char *)cases[i].host;
    forward.listen.port = 8080;
    g_test_message("loopback (hand-built): '%s'", cases[i].host);
    g_assert_cmpint(tg_forward_listens_on_loopback_only(&forward), ==,
                    cases[i].loopback_only);
    forward.kind = TG_FORWARD_DYNAMIC;
    g_assert_cmpint(tg_forward_listens_on_loopback_only(&forward), ==,
                    cases[i].loopback_only);
    forward.kind = TG_FORWARD_REMOTE;
    g_assert_false(tg_forward_listens_on_loopback_only(&forward));
  }
}

/* ---- Destinations ------------------------------------------------------- */

typedef struct {
  const char *input;
  const char *user;
  const char *host;
  guint16 port;
  const char *profile;
} DestinationCase;

static void
check_destination_cases(const DestinationCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++) {
    const DestinationCase *c = &cases[i];
    g_autoptr(GError) error = NULL;
    g_autoptr(TgDestination) destination = NULL;

    log_input("destination", c->input);
    destination = tg_destination_parse(c->input, &error);
    g_assert_no_error(error);
    g_assert_nonnull(destination);
    g_assert_cmpstr(destination->user, ==, c->user);
    g_assert_cmpstr(destination->host, ==, c->host);
    g_assert_cmpuint(destination->port, ==, c->port);
    g_assert_cmpstr(destination->profile, ==, c->profile);
  }
}

static void
check_bad_destinations(const BadCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(TgDestination) destination = NULL;

    log_input("bad destination", cases[i].input);
    destination = tg_destination_parse(cases[i].input, &error);
    g_assert_null(destination);
    assert_input_error(error, "destination", cases[i].input,
                       cases[i].expected_in_message);
  }
}

static void
test_destination_good(void)
{
  static const DestinationCase cases[] = {
    { "host", NULL, "host", 22, NULL },
    { "alice@host", "alice", "host", 22, NULL },
    { "alice@host:2222", "alice", "host", 2222, NULL },
    { "bastion.example.com:022", NULL, "bastion.example.com", 22, NULL },
    { "h:65535", NULL, "h", 65535, NULL },
    { "h:1", NULL, "h", 1, NULL },
    { "10.0.0.1", NULL, "10.0.0.1", 22, NULL },
    { "root@10.0.0.1:2200", "root", "10.0.0.1", 2200, NULL },
    { "a.b-c_d.example.com", NULL, "a.b-c_d.example.com", 22, NULL },
    { "user.name_1-x@h", "user.name_1-x", "h", 22, NULL },
    { "_svc@h", "_svc", "h", 22, NULL },
    { "abcdefghijklmnopqrstuvwxyz012345@h", "abcdefghijklmnopqrstuvwxyz012345", "h", 22,
      NULL },
    /* IPv6: in brackets, or bare (then without a port). */
    { "[2001:db8::1]:2222", NULL, "2001:db8::1", 2222, NULL },
    { "[2001:db8::1]", NULL, "2001:db8::1", 22, NULL },
    { "user@[::1]", "user", "::1", 22, NULL },
    { "bob@[::1]:2022", "bob", "::1", 2022, NULL },
    { "2001:db8::1", NULL, "2001:db8::1", 22, NULL },
    { "::1", NULL, "::1", 22, NULL },
    { "carol@fe80::1", "carol", "fe80::1", 22, NULL },
    { "[::ffff:10.0.0.1]", NULL, "::ffff:10.0.0.1", 22, NULL },
    /* Profiles. */
    { "@prod", NULL, NULL, 22, "prod" },
    { "@my_profile-1.2", NULL, NULL, 22, "my_profile-1.2" },
    { "@_", NULL, NULL, 22, "_" },
    { "@0123456789012345678901234567890123456789012345678901234567890123", NULL, NULL, 22,
      "0123456789012345678901234567890123456789012345678901234567890123" },
  };

  check_destination_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_destination_bad(void)
{
  static const BadCase cases[] = {
    { "", "empty" },
    { "x@@y", "invalid user name 'x@'" },
    { "user@host@", "invalid user name 'user@host'" },
    { "-user@h", "invalid user name '-user'" },
    { "us er@h", "invalid user name 'us er'" },
    { "abcdefghijklmnopqrstuvwxyz0123456@h",
      "invalid user name 'abcdefghijklmnopqrstuvwxyz0123456'" },
    { "user@", "empty host" },
    { "user@:22", "empty host" },
    { ":22", "empty host" },
    { "-oProxyCommand=x", "invalid host '-oProxyCommand=x'" },
    { "-host", "invalid host '-host': must not start with '-'" },
    { ".host", "invalid host '.host'" },
    { "h h", "invalid host 'h h'" },
    { "h/x", "invalid host 'h/x'" },
    { "127.1", "invalid host '127.1': ambiguous numeric address" },
    { "1::2::3", "invalid host '1::2::3': not a valid IPv6 address" },
    { "h:", "empty port after ':'" },
    { "h:0", "invalid port '0' (expected 1 to 65535)" },
    { "h:65536", "invalid port '65536'" },
    { "h:-1", "invalid port '-1'" },
    { "h:+22", "invalid port '+22'" },
    { "h:ssh", "invalid port 'ssh'" },
    { "h:22 ", "invalid port '22 '" },
    { "[::1", "unterminated '[' in '[::1'" },
    { "[::1]x", "unexpected text 'x' after ']'" },
    { "[::1]:", "empty port after ':'" },
    { "[::1]:0", "invalid port '0'" },
    { "[1.2.3.4]", "invalid IPv6 address '1.2.3.4' in brackets" },
    { "[host]:22", "invalid IPv6 address 'host'" },
    { "[]", "invalid IPv6 address ''" },
    { "h\t", "control character U+0009" },
    { "h\n", "control character U+000A" },
    { "\xff", "not valid UTF-8" },
    { "@", "invalid profile name ''" },
    { "@.hidden", "invalid profile name '.hidden'" },
    { "@-x", "invalid profile name '-x'" },
    { "@a b", "invalid profile name 'a b'" },
    { "@a/b", "invalid profile name 'a/b'" },
    { "@prod@x", "invalid profile name 'prod@x'" },
    { "@01234567890123456789012345678901234567890123456789012345678901234",
      "invalid profile name '0123456789" },
  };

  check_bad_destinations(cases, G_N_ELEMENTS(cases));
}

static void
test_destination_lengths(void)
{
  g_autofree char *host255 = repeat_char('h', 255);
  g_autofree char *host256 = repeat_char('h', 256);
  g_autofree char *huge = repeat_char('h', 100 * 1024);
  g_autofree char *text = g_strdup_printf("u@%s:2222", host255);
  g_autoptr(GError) error = NULL;
  g_autoptr(TgDestination) destination = tg_destination_parse(text, &error);

  g_assert_no_error(error);
  g_assert_cmpstr(destination->host, ==, host255);
  g_assert_cmpuint(destination->port, ==, 2222);
  g_clear_pointer(&destination, tg_destination_free);

  destination = tg_destination_parse(host256, &error);
  g_assert_null(destination);
  assert_input_error(error, "destination", host256, "longer than 255 bytes");
  g_clear_error(&error);

  destination = tg_destination_parse(huge, &error);
  g_assert_null(destination);
  assert_input_error(error, "destination", huge, "longer than 1024 bytes");
  g_assert_cmpuint(strlen(error->message), <, 200);
}

static void
test_destination_random_input(void)
{
  static const char *const prefixes[] = { "", "", "@", "u@", "[", "h:" };
  g_autoptr(GRand) rand = g_rand_new_with_seed(4242);
  guint n_parsed = 0;

  for (guint i = 0; i < 10000; i++) {
    g_autofree char *input = random_input(rand, prefixes, G_N_ELEMENTS(prefixes));
    g_autoptr(GError) error = NULL;
    g_autoptr(TgDestination) destination = tg_destination_parse(input, &error);

    g_assert_true((destination != NULL) != (error != NULL));
    if (destination == NULL) {
      g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
      g_assert_true(g_utf8_validate(error->message, -1, NULL));
      continue;
    }
    n_parsed++;
    /* Exactly one of host and profile. */
    g_assert_true((destination->host != NULL) != (destination->profile != NULL));
    g_assert_cmpuint(destination->port, >, 0);
  }
  g_test_message("random destinations: %u of 10000 parsed", n_parsed);
  g_assert_cmpuint(n_parsed, >, 100);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);

  g_test_add_func("/forward-spec/local-forms", test_local_forms);
  g_test_add_func("/forward-spec/remote-forms", test_remote_forms);
  g_test_add_func("/forward-spec/dynamic-forms", test_dynamic_forms);
  g_test_add_func("/forward-spec/ipv6", test_ipv6);
  g_test_add_func("/forward-spec/escapes-and-paths", test_escapes_and_paths);
  g_test_add_func("/forward-spec/listen-port-zero", test_listen_port_zero);
  g_test_add_func("/forward-spec/bad/kind-and-spacing", test_bad_kind_and_spacing);
  g_test_add_func("/forward-spec/bad/fields", test_bad_fields);
  g_test_add_func("/forward-spec/bad/ports", test_bad_ports);
  g_test_add_func("/forward-spec/bad/hosts", test_bad_hosts);
  g_test_add_func("/forward-spec/bad/brackets-and-escapes",
                  test_bad_brackets_and_escapes);
  g_test_add_func("/forward-spec/bad/characters", test_bad_characters);
  g_test_add_func("/forward-spec/lengths", test_lengths);
  g_test_add_func("/forward-spec/random-input", test_forward_random_input);
  g_test_add_func("/forward-spec/copy-and-free", test_copy_and_free);
  g_test_add_func("/forward-spec/loopback/parsed", test_loopback_parsed);
  g_test_add_func("/forward-spec/loopback/hand-built", test_loopback_hand_built);
  g_test_add_func("/destination/good", test_destination_good);
  g_test_add_func("/destination/bad", test_destination_bad);
  g_test_add_func("/destination/lengths", test_destination_lengths);
  g_test_add_func("/destination/random-input", test_destination_random_input);

  return g_test_run();
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for policy-match.c: host and port patterns, the allow-list
 * index (checked against the one-pattern reference matcher), globs and the
 * user/group pattern lists of Match blocks. */
#include <arpa/inet.h>
#include <string.h>

#include "policy-match.h"
#include "tg-error.h"

/* ---- Host and port patterns ---------------------------------------------- */

typedef struct {
  const char *entry;
  TgPortRule rule;
  const char *host;
  guint16 port;
  gboolean matches;
} MatchCase;

#define OPEN TG_PORT_REQUIRED
#define SERVER TG_PORT_OPTIONAL
#define LISTEN TG_PORT_LISTEN

/* Every case is checked twice: with the reference matcher and through an
 * index holding only that entry. */
static void
check_match_case(const MatchCase *c)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgHostPattern) pattern = tg_host_pattern_parse(c->entry, c->rule, &error);
  g_autoptr(TgHostIndex) index = tg_host_index_new();
  TgHostQuery query;

  g_test_message("%s against %s port %u", c->entry, c->host, c->port);
  g_assert_no_error(error);
  g_assert_nonnull(pattern);
  tg_host_query_init(&query, c->host);
  g_assert_cmpint(tg_host_pattern_matches(pattern, &query, c->port), ==, c->matches);
  tg_host_index_add(index, pattern, GINT_TO_POINTER(1));
  g_assert_cmpint(tg_host_index_lookup(index, &query, c->port) != NULL, ==, c->matches);
}

static void
check_match_cases(const MatchCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++)
    check_match_case(&cases[i]);
}

static void
test_names(void)
{
  static const MatchCase cases[] = {
    { "db.corp:5432", OPEN, "db.corp", 5432, TRUE },
    { "db.corp:5432", OPEN, "db.corp", 5433, FALSE },
    { "db.corp:5432", OPEN, "xdb.corp", 5432, FALSE },
    { "db.corp:5432", OPEN, "db.corp.evil", 5432, FALSE },
    /* case and one trailing dot, on either side */
    { "DB.Corp:5432", OPEN, "db.CORP", 5432, TRUE },
    { "db.corp.:5432", OPEN, "db.corp", 5432, TRUE },
    { "db.corp:5432", OPEN, "DB.CORP.", 5432, TRUE },
    { "db.corp:5432", OPEN, "db.corp..", 5432, FALSE },
    /* wildcards */
    { "db?.corp:1", OPEN, "db1.corp", 1, TRUE },
    { "db?.corp:1", OPEN, "db10.corp", 1, FALSE },
    { "db?.corp:1", OPEN, "db.corp", 1, FALSE },
    { "db*.corp:1", OPEN, "db.corp", 1, TRUE },
    { "db*.corp:1", OPEN, "db-a.b.corp", 1, TRUE },
    { "*db.corp:1", OPEN, "mydb.corp", 1, TRUE },
    { "*.*:1", OPEN, "a.b", 1, TRUE },
    { "*.*:1", OPEN, "ab", 1, FALSE },
    /* "*.suffix": one or more labels */
    { "*.corp.example.com:443", OPEN, "a.corp.example.com", 443, TRUE },
    { "*.corp.example.com:443", OPEN, "a.b.corp.example.com", 443, TRUE },
    { "*.corp.example.com:443", OPEN, "corp.example.com", 443, FALSE },
    { "*.corp.example.com:443", OPEN, "xcorp.example.com", 443, FALSE },
    { "*.corp.example.com:443", OPEN, ".corp.example.com", 443, FALSE },
    { "*.corp.example.com:443", OPEN, "A.CORP.EXAMPLE.COM.", 443, TRUE },
    { "*.corp.example.com:443", OPEN, "a.corp.example.com", 444, FALSE },
    /* "*" is any host, name or address */
    { "*:443", OPEN, "anything.example", 443, TRUE },
    { "*:443", OPEN, "10.1.2.3", 443, TRUE },
    { "*:443", OPEN, "2001:db8::1", 443, TRUE },
    { "*:443", OPEN, "10.1.2.3", 80, FALSE },
  };

  check_match_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_addresses(void)
{
  static const MatchCase cases[] = {
    { "10.0.0.0/8:22", OPEN, "10.255.255.255", 22, TRUE },
    { "10.0.0.0/8:22", OPEN, "10.0.0.0", 22, TRUE },
    { "10.0.0.0/8:22", OPEN, "11.0.0.0", 22, FALSE },
    { "10.0.0.0/8:22", OPEN, "9.255.255.255", 22, FALSE },
    { "10.1.2.3:22", OPEN, "10.1.2.3", 22, TRUE },
    { "10.1.2.3/32:22", OPEN, "10.1.2.4", 22, FALSE },
    { "192.168.4.0/22:*", OPEN, "192.168.7.255", 9, TRUE },
    { "192.168.4.0/22:*", OPEN, "192.168.8.0", 9, FALSE },
    { "0.0.0.0/0:80", OPEN, "203.0.113.9", 80, TRUE },
    { "0.0.0.0/0:80", OPEN, "2001:db8::1", 80, FALSE },
    /* IPv4-mapped IPv6 is the IPv4 address */
    { "10.0.0.0/8:22", OPEN, "::ffff:10.1.2.3", 22, TRUE },
    { "[::ffff:10.0.0.0]/104:22", OPEN, "10.9.9.9", 22, TRUE },
    /* IPv6, bracketed when a port follows */
    { "[2001:db8::]/32:8000-8999", OPEN, "2001:db8:ffff::1", 8500, TRUE },
    { "[2001:db8::]/32:8000-8999", OPEN, "2001:db9::1", 8500, FALSE },
    { "[2001:db8::]/32:8000-8999", OPEN, "2001:db8::1", 9000, FALSE },
    { "[2001:db8::/32]:22", OPEN, "2001:db8::1", 22, TRUE },
    { "[2001:DB8::1]:22", OPEN, "2001:db8:0:0:0:0:0:1", 22, TRUE },
    { "[2001:db8::1]/128:22", OPEN, "2001:db8::2", 22, FALSE },
    { "[::]/0:22", OPEN, "fe80::1", 22, TRUE },
    { "[::]/0:22", OPEN, "10.0.0.1", 22, FALSE },
    { "[::1]:22", OPEN, "::1", 22, TRUE },
    /* brackets around names and IPv4 are only quoting */
    { "[db.corp]:5432", OPEN, "db.corp", 5432, TRUE },
    { "[10.0.0.0]/8:22", OPEN, "10.2.3.4", 22, TRUE },
    /* PermitServer: no port means any port; bare IPv6 without port */
    { "2001:db8::/32", SERVER, "2001:db8::5", 2222, TRUE },
    { "10.9.0.0/16", SERVER, "10.9.3.4", 22, TRUE },
    { "gw.corp", SERVER, "gw.corp", 2222, TRUE },
    { "gw.corp:22", SERVER, "gw.corp", 2222, FALSE },
  };

  check_match_cases(cases, G_N_ELEMENTS(cases));
}

/* Names are matched as written, addresses as addresses: never the one
 * against the other (doc/policy.md). */
static void
test_names_never_match_addresses(void)
{
  static const MatchCase cases[] = {
    { "10.0.0.0/8:22", OPEN, "ten.corp", 22, FALSE },
    { "0.0.0.0/0:22", OPEN, "localhost", 22, FALSE },
    { "[::]/0:22", OPEN, "db.corp", 22, FALSE },
    { "*.corp:22", OPEN, "10.0.0.1", 22, FALSE },
    { "*:22", OPEN, "10.0.0.1", 22, TRUE },
    { "localhost:22", OPEN, "127.0.0.1", 22, FALSE },
    { "127.0.0.1:22", OPEN, "localhost", 22, FALSE },
    { "*1:22", OPEN, "10.0.0.1", 22, FALSE },
    { "*:*", OPEN, "not-an-address", 1, TRUE },
  };

  check_match_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_ports(void)
{
  static const MatchCase cases[] = {
    { "h:8000-8999", OPEN, "h", 8000, TRUE },
    { "h:8000-8999", OPEN, "h", 8999, TRUE },
    { "h:8000-8999", OPEN, "h", 7999, FALSE },
    { "h:8000-8999", OPEN, "h", 9000, FALSE },
    { "h:*", OPEN, "h", 1, TRUE },
    { "h:*", OPEN, "h", 65535, TRUE },
    { "h:65535", OPEN, "h", 65535, TRUE },
    { "h:00443", OPEN, "h", 443, TRUE },
    { "h:5-5", OPEN, "h", 5, TRUE },
    /* PermitListen: a single field is the port, for any bind address */
    { "8080", LISTEN, "localhost", 8080, TRUE },
    { "8080", LISTEN, "10.0.0.1", 8080, TRUE },
    { "0", LISTEN, "localhost", 0, TRUE },
    { "0", LISTEN, "localhost", 8080, FALSE },
    { "*", LISTEN, "localhost", 0, TRUE },
    { "0-1023", LISTEN, "localhost", 0, TRUE },
    { "localhost:8080", LISTEN, "localhost", 8080, TRUE },
    { "localhost:8080", LISTEN, "127.0.0.1", 8080, FALSE },
    { "[::1]:0", LISTEN, "::1", 0, TRUE },
  };

  check_match_cases(cases, G_N_ELEMENTS(cases));
}

/* A listener on every address ("R *:port") matches only "*" hosts. */
static void
test_all_addresses_query(void)
{
  static const struct {
    const char *entry;
    gboolean matches;
  } cases[] = {
    { "8080", TRUE },
    { "*:8080", TRUE },
    { "localhost:8080", FALSE },
    { "0.0.0.0/0:8080", FALSE },
    { "[::]/0:8080", FALSE },
    { "*.corp:8080", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgHostPattern) pattern =
        tg_host_pattern_parse(cases[i].entry, LISTEN, NULL);
    g_autoptr(TgHostIndex) index = tg_host_index_new();
    TgHostQuery query;

    tg_host_query_init_all_addresses(&query);
    g_assert_nonnull(pattern);
    g_assert_cmpint(tg_host_pattern_matches(pattern, &query, 8080), ==, cases[i].matches);
    tg_host_index_add(index, pattern, GINT_TO_POINTER(1));
    g_assert_cmpint(tg_host_index_lookup(index, &query, 8080) != NULL, ==,
                    cases[i].matches);
  }
}

static void
test_queries(void)
{
  TgHostQuery query;
  g_autofree char *long_name = g_strnfill(256, 'a');
  g_autoptr(TgHostPattern) any = tg_host_pattern_parse("*:1", OPEN, NULL);
  g_autoptr(TgHostPattern) glob = tg_host_pattern_parse("a*:1", OPEN, NULL);

  tg_host_query_init(&query, "Db.Corp.");
  g_assert_cmpint(query.kind, ==, TG_HOST_QUERY_NAME);
  g_assert_cmpstr(query.name, ==, "db.corp");
  tg_host_query_init(&query, "::ffff:192.0.2.1");
  g_assert_cmpint(query.kind, ==, TG_HOST_QUERY_ADDRESS);
  g_assert_cmpint(query.address.family, ==, AF_INET);
  g_assert_cmpint(query.address.prefix, ==, 32);
  tg_host_query_init(&query, "");
  g_assert_cmpint(query.kind, ==, TG_HOST_QUERY_UNMATCHABLE);
  /* Too long to be a name: only "*" matches it, never a truncated copy. */
  tg_host_query_init(&query, long_name);
  g_assert_cmpint(query.kind, ==, TG_HOST_QUERY_UNMATCHABLE);
  g_assert_true(tg_host_pattern_matches(any, &query, 1));
  g_assert_false(tg_host_pattern_matches(glob, &query, 1));
}

/* ---- Bad entries --------------------------------------------------------- */

typedef struct {
  const char *entry;
  TgPortRule rule;
  const char *message;
} BadEntryCase;

static void
test_bad_entries(void)
{
  static const BadEntryCase cases[] = {
    { "db.corp", OPEN, "missing port (expected host:port)" },
    { "2001:db8::1:22", OPEN,
      "missing port (an IPv6 address needs brackets when a port follows: "
      "[2001:db8::1]:443)" },
    { "db.corp:", OPEN, "empty port" },
    { ":22", OPEN, "empty host" },
    { "db.corp:0", OPEN, "port 0 is only meaningful in PermitListen" },
    { "db.corp:0-10", OPEN, "port 0 is only meaningful in PermitListen" },
    { "gw:0", SERVER, "port 0 is only meaningful in PermitListen" },
    { "db.corp:65536", OPEN, "invalid port '65536' (expected a number, a range or '*')" },
    { "db.corp:http", OPEN, "invalid port 'http' (expected a number, a range or '*')" },
    { "db.corp:-1", OPEN, "invalid port range '-1' (expected low-high, 0 to 65535)" },
    { "db.corp:9-1", OPEN, "invalid port range '9-1' (expected low-high, 0 to 65535)" },
    { "db.corp:1-2-3", OPEN,
      "invalid port range '1-2-3' (expected low-high, 0 to 65535)" },
    { "10.1.2.3/8:22", OPEN,
      "host bits set in '10.1.2.3/8' (the network is 10.0.0.0/8)" },
    { "[2001:db8::1]/32:22", OPEN,
      "host bits set in '2001:db8::1/32' (the network is 2001:db8::/32)" },
    { "10.0.0.0/33:22", OPEN, "invalid prefix length '33' (0 to 32)" },
    { "[::]/129:22", OPEN, "invalid prefix length '129' (0 to 128)" },
    { "10.0.0.0/:22", OPEN, "invalid prefix length '' (0 to 32)" },
    { "10.0.0.0/x:22", OPEN, "invalid prefix length 'x' (0 to 32)" },
    { "10.0.0/8:22", OPEN, "invalid address '10.0.0'" },
    { "[2001:db8::1:22", OPEN, "unterminated '['" },
    { "[::1]x:22", OPEN, "unexpected text after ']'" },
    { "[::1]", OPEN,
      "missing port (an IPv6 address needs brackets when a port "
      "follows: [2001:db8::1]:443)" },
    { "db_corp$:1", OPEN,
      "invalid host 'db_corp$' (letters, digits, '.', '_', '-', '*' "
      "and '?')" },
    { "-db.corp:1", OPEN,
      "invalid host '-db.corp' (too long, or starts with '.' or '-')" },
    { ".corp:1", OPEN, "invalid host '.corp' (too long, or starts with '.' or '-')" },
    { "db..corp:1", OPEN, "invalid host 'db..corp' (empty label)" },
    { "db.corp..:1", OPEN, "invalid host 'db.corp..' (empty label)" },
    { "*..corp:1", OPEN, "invalid host '*..corp' (empty label)" },
    { "127.1:22", OPEN,
      "ambiguous numeric address '127.1' (write IPv4 addresses as "
      "a.b.c.d)" },
    { "2130706433:22", OPEN,
      "ambiguous numeric address '2130706433' (write IPv4 "
      "addresses as a.b.c.d)" },
    { "localhost", LISTEN,
      "invalid port 'localhost' (expected a number, a range or '*')" },
    { "localhost:", LISTEN, "empty port" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(TgHostPattern) pattern =
        tg_host_pattern_parse(cases[i].entry, cases[i].rule, &error);

    g_test_message("bad entry %s", cases[i].entry);
    g_assert_null(pattern);
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, cases[i].message);
  }
}

static void
test_canonical_text(void)
{
  static const struct {
    const char *entry;
    TgPortRule rule;
    const char *canonical;
  } cases[] = {
    { "DB.Corp.:5432", OPEN, "db.corp:5432" },
    { "*.Web.Corp:0443", OPEN, "*.web.corp:443" },
    { "db?.corp:1-2", OPEN, "db?.corp:1-2" },
    { "[2001:DB8::]/32:8000-8999", OPEN, "[2001:db8::]/32:8000-8999" },
    { "[2001:db8::/32]:22", OPEN, "[2001:db8::]/32:22" },
    { "[::ffff:10.0.0.0]/104:22", OPEN, "10.0.0.0/8:22" },
    { "10.1.2.3/32:22", OPEN, "10.1.2.3:22" },
    { "*:*", OPEN, "*:*" },
    { "gw.corp", SERVER, "gw.corp" },
    { "gw.corp:*", SERVER, "gw.corp" },
    { "2001:db8::/32", SERVER, "2001:db8::/32" },
    { "[2001:db8::1]:22", SERVER, "[2001:db8::1]:22" },
    { "8080", LISTEN, "8080" },
    { "*:0", LISTEN, "0" },
    { "localhost:8000-8010", LISTEN, "localhost:8000-8010" },
    { "[::1]:*", LISTEN, "[::1]:*" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgHostPattern) pattern =
        tg_host_pattern_parse(cases[i].entry, cases[i].rule, NULL);
    g_autoptr(TgHostPattern) again = NULL;
    g_autofree char *text = NULL;
    g_autofree char *text_again = NULL;

    g_assert_nonnull(pattern);
    text = tg_host_pattern_to_string(pattern, cases[i].rule);
    g_assert_cmpstr(text, ==, cases[i].canonical);
    again = tg_host_pattern_parse(text, cases[i].rule, NULL);
    g_assert_nonnull(again);
    text_again = tg_host_pattern_to_string(again, cases[i].rule);
    g_assert_cmpstr(text_again, ==, text);
  }
}

/* ---- The index against the reference matcher ----------------------------- */

static const char *const random_labels[] = { "a", "b", "db", "web", "corp", "x1", "Z" };

static char *
random_name(GRand *rand, gboolean pattern)
{
  GString *out = g_string_new(NULL);
  guint labels = (guint)g_rand_int_range(rand, 1, 5);

  if (pattern && g_rand_boolean(rand))
    g_string_append(out, g_rand_boolean(rand) ? "*." : "*");
  for (guint i = 0; i < labels; i++) {
    const char *label = random_labels[g_rand_int_range(rand, 0, 7)];

    g_string_append_printf(out, "%s%s", i > 0 ? "." : "", label);
    if (pattern && g_rand_int_range(rand, 0, 8) == 0)
      g_string_append_c(out, '?');
  }
  if (g_rand_int_range(rand, 0, 10) == 0)
    g_string_append_c(out, '.');
  return g_string_free(out, FALSE);
}

/* Addresses from a small space (10-11.0-1.0.0-3, 2001:db8-db9::0-3), so
 * that random entries and queries often meet. A pattern gets a random
 * prefix length, with the host bits cleared; a query is a plain address,
 * sometimes written as IPv4-mapped IPv6. */
static char *
random_address(GRand *rand, gboolean pattern)
{
  gboolean v4 = g_rand_boolean(rand);
  guint bits = v4 ? 32 : 128;
  guint prefix =
      pattern ? (guint)g_rand_int_range(rand, (gint)bits / 2, (gint)bits + 1) : bits;
  guint8 bytes[16] = { 0 };
  char text[INET6_ADDRSTRLEN];

  if (v4) {
    bytes[0] = (guint8)g_rand_int_range(rand, 10, 12);
    bytes[1] = (guint8)g_rand_int_range(rand, 0, 2);
    bytes[3] = (guint8)g_rand_int_range(rand, 0, 4);
  } else {
    memcpy(bytes, "\x20\x01\x0d", 3);
    bytes[3] = (guint8)g_rand_int_range(rand, 0xb8, 0xba);
    bytes[15] = (guint8)g_rand_int_range(rand, 0, 4);
  }
  for (guint bit = prefix; bit < bits; bit++)
    bytes[bit / 8] &= (guint8) ~(0x80 >> (bit % 8));
  inet_ntop(v4 ? AF_INET : AF_INET6, bytes, text, sizeof text);
  if (!pattern)
    return v4 && g_rand_int_range(rand, 0, 4) == 0 ? g_strdup_printf("::ffff:%s", text)
                                                   : g_strdup(text);
  return g_strdup_printf(v4 ? "%s/%u" : "[%s]/%u", text, prefix);
}

static char *
random_entry(GRand *rand)
{
  g_autofree char *host = NULL;
  guint first = (guint)g_rand_int_range(rand, 1, 20);

  guint kind = (guint)g_rand_int_range(rand, 0, 100);

  if (kind == 0)
    host = g_strdup("*");
  else if (kind == 1)
    host = g_strdup(g_rand_boolean(rand) ? "0.0.0.0/0" : "[::]/0");
  else if (kind < 50)
    host = random_name(rand, TRUE);
  else
    host = random_address(rand, TRUE);
  if (g_rand_int_range(rand, 0, 100) == 0)
    return g_strdup_printf("%s:*", host);
  return g_strdup_printf("%s:%u-%u", host, first,
                         first + (guint)g_rand_int_range(rand, 0, 5));
}

/* Thousands of random entries: the index must return exactly the first
 * entry the reference matcher accepts, for names and addresses alike. */
static void
test_index_agrees_with_reference(void)
{
  g_autoptr(GRand) rand = g_rand_new_with_seed(20240603);
  g_autoptr(TgHostIndex) index = tg_host_index_new();
  g_autoptr(GPtrArray) patterns =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_host_pattern_free);
  guint hits = 0;

  while (patterns->len < 3000) {
    g_autofree char *entry = random_entry(rand);
    g_autoptr(GError) error = NULL;
    TgHostPattern *pattern = tg_host_pattern_parse(entry, OPEN, &error);

    g_assert_no_error(error);
    tg_host_index_add(index, pattern, GUINT_TO_POINTER(patterns->len + 1));
    g_ptr_array_add(patterns, pattern);
  }
  g_assert_cmpuint(tg_host_index_size(index), ==, 3000);
  for (guint q = 0; q < 20000; q++) {
    g_autofree char *host =
        g_rand_boolean(rand) ? random_name(rand, FALSE) : random_address(rand, FALSE);
    /* Half the ports are beyond every range but "*". */
    guint16 port = (guint16)(g_rand_boolean(rand) ? g_rand_int_range(rand, 0, 26)
                                                  : g_rand_int_range(rand, 26, 65536));
    guint expected = 0;
    TgHostQuery query;

    tg_host_query_init(&query, host);
    for (guint i = 0; i < patterns->len && expected == 0; i++) {
      if (tg_host_pattern_matches(g_ptr_array_index(patterns, i), &query, port))
        expected = i + 1;
    }
    g_assert_cmpuint(GPOINTER_TO_UINT(tg_host_index_lookup(index, &query, port)), ==,
                     expected);
    hits += expected != 0;
  }
  /* Both answers must be common, or the comparison proves little. */
  g_test_message("%u of 20000 lookups matched", hits);
  g_assert_cmpuint(hits, >, 2000);
  g_assert_cmpuint(hits, <, 18000);
}

/* ---- Globs and pattern lists ---------------------------------------------- */

static void
test_glob(void)
{
  static const struct {
    const char *pattern;
    const char *text;
    gboolean matches;
  } cases[] = {
    { "alice", "alice", TRUE },
    { "alice", "Alice", FALSE },
    { "a*", "alice", TRUE },
    { "a*", "bob", FALSE },
    { "*", "", TRUE },
    { "?", "", FALSE },
    { "a?c", "abc", TRUE },
    { "a?c", "ac", FALSE },
    { "*b*", "abc", TRUE },
    { "a*b*c", "aXbYbZc", TRUE },
    { "a*b*c", "aXbYbZ", FALSE },
    { "**", "x", TRUE },
    { "*.*", "a.b.c", TRUE },
    { "", "", TRUE },
    { "", "a", FALSE },
    { "a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    g_assert_cmpint(tg_glob_match(cases[i].pattern, cases[i].text), ==, cases[i].matches);
}

static void
test_pattern_lists(void)
{
  static const struct {
    const char *list;
    const char *text;
    TgPatternListResult result;
  } cases[] = {
    { "alice", "alice", TG_PATTERN_LIST_MATCH },
    { "alice,bob", "bob", TG_PATTERN_LIST_MATCH },
    { "alice,bob", "carol", TG_PATTERN_LIST_NO_MATCH },
    { "*,!bob", "bob", TG_PATTERN_LIST_NEGATED },
    { "*,!bob", "alice", TG_PATTERN_LIST_MATCH },
    { "!bob,*", "bob", TG_PATTERN_LIST_NEGATED },
    /* only negations: nothing positive ever matches */
    { "!bob", "alice", TG_PATTERN_LIST_NO_MATCH },
    { "dev*,!dev-ext", "dev-ext", TG_PATTERN_LIST_NEGATED },
    { "dev*,!dev-ext", "developers", TG_PATTERN_LIST_MATCH },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_auto(GStrv) patterns = tg_pattern_list_parse(cases[i].list, NULL);

    g_assert_nonnull(patterns);
    g_assert_cmpint(tg_pattern_list_match((const char *const *)patterns, cases[i].text),
                    ==, cases[i].result);
  }
}

static void
test_pattern_list_any(void)
{
  static const struct {
    const char *list;
    const char *groups[4];
    gboolean matches;
  } cases[] = {
    { "dba", { "alice", "dba", NULL }, TRUE },
    { "dba", { "alice", "dev", NULL }, FALSE },
    { "dba,!contractors", { "bob", "dba", "contractors", NULL }, FALSE },
    { "dba,!contractors", { "contractors", "dba", NULL }, FALSE },
    { "dba,!contractors", { "carol", "dba", NULL }, TRUE },
    { "d*", { "x", "dev", NULL }, TRUE },
    { "dba", { NULL }, FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_auto(GStrv) patterns = tg_pattern_list_parse(cases[i].list, NULL);

    g_assert_cmpint(
        tg_pattern_list_match_any((const char *const *)patterns, cases[i].groups), ==,
        cases[i].matches);
  }
}

static void
test_bad_pattern_lists(void)
{
  static const char *const cases[] = { "", ",", "a,,b", "a,", "!", "a,!" };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_auto(GStrv) patterns = tg_pattern_list_parse(cases[i], &error);
    g_autofree char *expected = g_strdup_printf("empty pattern in list '%s'", cases[i]);

    g_assert_null(patterns);
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, expected);
  }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/policy-match/names", test_names);
  g_test_add_func("/policy-match/addresses", test_addresses);
  g_test_add_func("/policy-match/names-never-match-addresses",
                  test_names_never_match_addresses);
  g_test_add_func("/policy-match/ports", test_ports);
  g_test_add_func("/policy-match/all-addresses", test_all_addresses_query);
  g_test_add_func("/policy-match/queries", test_queries);
  g_test_add_func("/policy-match/bad-entries", test_bad_entries);
  g_test_add_func("/policy-match/canonical-text", test_canonical_text);
  g_test_add_func("/policy-match/index-agrees-with-reference",
                  test_index_agrees_with_reference);
  g_test_add_func("/policy-match/glob", test_glob);
  g_test_add_func("/policy-match/pattern-lists", test_pattern_lists);
  g_test_add_func("/policy-match/pattern-list-any", test_pattern_list_any);
  g_test_add_func("/policy-match/bad-pattern-lists", test_bad_pattern_lists);
  return g_test_run();
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "policy-match.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "text.h"
#include "tg-error.h"

#define PORT_ANY_FIRST 0
#define PORT_ANY_LAST G_MAXUINT16

/* ---- Glob and pattern lists ------------------------------------------- */

gboolean
tg_glob_match(const char *pattern, const char *text)
{
  const char *star = NULL;
  const char *resume = NULL;

  /* Backtrack only to the last '*': linear in practice, never exponential. */
  while (*text != '\0') {
    if (*pattern == '*') {
      star = pattern++;
      resume = text;
    } else if (*pattern != '\0' && (*pattern == '?' || *pattern == *text)) {
      pattern++;
      text++;
    } else if (star != NULL) {
      pattern = star + 1;
      text = ++resume;
    } else {
      return FALSE;
    }
  }
  while (*pattern == '*')
    pattern++;
  return *pattern == '\0';
}

char **
tg_pattern_list_parse(const char *text, GError **error)
{
  g_auto(GStrv) patterns = g_strsplit(text, ",", -1);

  /* g_strsplit() makes nothing of "": that is an empty pattern too. */
  if (patterns[0] == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "empty pattern in list '%s'",
                text);
    return NULL;
  }
  for (guint i = 0; patterns[i] != NULL; i++) {
    const char *body = patterns[i][0] == '!' ? patterns[i] + 1 : patterns[i];

    if (*body == '\0') {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "empty pattern in list '%s'", text);
      return NULL;
    }
  }
  return g_steal_pointer(&patterns);
}

TgPatternListResult
tg_pattern_list_match(const char *const *patterns, const char *text)
{
  TgPatternListResult result = TG_PATTERN_LIST_NO_MATCH;

  for (guint i = 0; patterns[i] != NULL; i++) {
    gboolean negated = patterns[i][0] == '!';

    if (!tg_glob_match(patterns[i] + (negated ? 1 : 0), text))
      continue;
    if (negated)
      return TG_PATTERN_LIST_NEGATED;
    result = TG_PATTERN_LIST_MATCH;
  }
  return result;
}

gboolean
tg_pattern_list_match_any(const char *const *patterns, const char *const *names)
{
  gboolean found = FALSE;

  for (guint i = 0; names != NULL && names[i] != NULL; i++) {
    switch (tg_pattern_list_match(patterns, names[i])) {
    case TG_PATTERN_LIST_NEGATED:
      return FALSE;
    case TG_PATTERN_LIST_MATCH:
      found = TRUE;
      break;
    case TG_PATTERN_LIST_NO_MATCH:
      break;
    }
  }
  return found;
}

/* ---- Addresses and networks ------------------------------------------- */

static guint
family_bits(guint8 family)
{
  return family == AF_INET ? 32 : 128;
}

static gsize
family_bytes(guint8 family)
{
  return family == AF_INET ? 4 : 16;
}

static void
network_mask(TgNetwork *network, guint prefix)
{
  network->prefix = (guint8)prefix;
  for (guint i = 0; i < 16; i++) {
    guint bit = i * 8;

    if (bit >= prefix)
      network->bytes[i] = 0;
    else if (prefix - bit < 8)
      network->bytes[i] &= (guint8)(0xff << (8 - (prefix - bit)));
  }
}

/* ::ffff:a.b.c.d reaches a.b.c.d: it is matched as that IPv4 address, so
 * an address cannot slip past IPv4 rules by being written as IPv6. */
static gboolean
is_ipv4_mapped(const TgNetwork *network)
{
  static const guint8 prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

  return network->family == AF_INET6 && network->prefix >= 96 &&
         memcmp(network->bytes, prefix, sizeof prefix) == 0;
}

static void
unmap_ipv4(TgNetwork *network)
{
  guint8 v4[4];

  if (!is_ipv4_mapped(network))
    return;
  memcpy(v4, network->bytes + 12, 4);
  memset(network->bytes, 0, sizeof network->bytes);
  memcpy(network->bytes, v4, 4);
  network->family = AF_INET;
  network->prefix -= 96;
}

/* An IPv4 or IPv6 literal as a full-length network. */
static gboolean
parse_address(const char *text, TgNetwork *network)
{
  memset(network, 0, sizeof *network);
  if (inet_pton(AF_INET, text, network->bytes) == 1)
    network->family = AF_INET;
  else if (inet_pton(AF_INET6, text, network->bytes) == 1)
    network->family = AF_INET6;
  else
    return FALSE;
  network->prefix = (guint8)family_bits(network->family);
  return TRUE;
}

static gboolean
parse_prefix_length(const char *text, guint max, guint *prefix)
{
  guint value = 0;

  if (*text == '\0' || strlen(text) > 3)
    return FALSE;
  for (const char *p = text; *p != '\0'; p++) {
    if (!g_ascii_isdigit(*p))
      return FALSE;
    value = value * 10 + (guint)(*p - '0');
  }
  *prefix = value;
  return value <= max;
}

/* "10.0.0.0/8", "2001:db8::/32" or a plain address. Host bits must be zero:
 * "10.1.2.3/8" is more likely a typo than a wish for all of 10/8. */
static gboolean
parse_network(const char *text, TgNetwork *network, GError **error)
{
  const char *slash = strchr(text, '/');
  g_autofree char *address =
      g_strndup(text, slash != NULL ? (gsize)(slash - text) : strlen(text));
  TgNetwork masked;
  guint prefix;

  if (!parse_address(address, network)) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "invalid address '%s'",
                address);
    return FALSE;
  }
  if (slash != NULL) {
    if (!parse_prefix_length(slash + 1, family_bits(network->family), &prefix)) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "invalid prefix length '%s' (0 to %u)", slash + 1,
                  family_bits(network->family));
      return FALSE;
    }
    masked = *network;
    network_mask(&masked, prefix);
    if (memcmp(masked.bytes, network->bytes, sizeof masked.bytes) != 0) {
      char text_masked[INET6_ADDRSTRLEN];

      inet_ntop(masked.family, masked.bytes, text_masked, sizeof text_masked);
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "host bits set in '%s' (the network is %s/%u)", text, text_masked,
                  prefix);
      return FALSE;
    }
    *network = masked;
  }
  unmap_ipv4(network);
  return TRUE;
}

static gboolean
network_contains(const TgNetwork *network, const TgNetwork *address)
{
  TgNetwork masked = *address;

  if (network->family != address->family)
    return FALSE;
  network_mask(&masked, network->prefix);
  return memcmp(masked.bytes, network->bytes, family_bytes(network->family)) == 0;
}

/* ---- Names --------------------------------------------------------------- */

static gboolean
is_name_pattern_char(char c)
{
  return g_ascii_isalnum(c) || c == '.' || c == '_' || c == '-' || c == '*' || c == '?';
}

/* Lower case, one trailing dot removed: "DB.Corp." and "db.corp" are the
 * same host to the resolver. */
static char *
normalise_name(const char *text)
{
  char *name = g_ascii_strdown(text, -1);
  gsize length = strlen(name);

  if (length > 1 && name[length - 1] == '.')
    name[length - 1] = '\0';
  return name;
}

static gboolean
parse_name_pattern(const char *text, TgHostPattern *pattern, GError **error)
{
  g_autofree char *name = normalise_name(text);
  gboolean wild = strpbrk(name, "*?") != NULL;
  struct in_addr legacy;

  for (const char *p = name; *p != '\0'; p++) {
    if (!is_name_pattern_char(*p)) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "invalid host '%s' (letters, digits, '.', '_', '-', '*' and '?')",
                  text);
      return FALSE;
    }
  }
  if (strlen(name) > TG_HOST_NAME_MAX || name[0] == '.' || name[0] == '-') {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "invalid host '%s' (too long, or starts with '.' or '-')", text);
    return FALSE;
  }
  /* "db..corp" or "db.corp..": no resolver name has an empty label, and
   * only one trailing dot is taken off. */
  if (strstr(text, "..") != NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "invalid host '%s' (empty label)", text);
    return FALSE;
  }
  /* The forward parser refuses "127.1" as a host; a pattern for it would
   * silently never match. */
  if (!wild && inet_aton(name, &legacy) != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "ambiguous numeric address '%s' (write IPv4 addresses as a.b.c.d)", text);
    return FALSE;
  }
  if (g_str_equal(name, "*")) {
    pattern->kind = TG_HOST_PATTERN_ANY;
  } else if (g_str_has_prefix(name, "*.") && name[2] != '\0' &&
             strpbrk(name + 2, "*?") == NULL) {
    pattern->kind = TG_HOST_PATTERN_SUFFIX;
    pattern->name = g_strdup(name + 2);
  } else {
    pattern->kind = wild ? TG_HOST_PATTERN_GLOB : TG_HOST_PATTERN_NAME;
    pattern->name = g_steal_pointer(&name);
  }
  return TRUE;
}

static gboolean
parse_host_part(const char *text, TgHostPattern *pattern, GError **error)
{
  if (*text == '\0') {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "empty host");
    return FALSE;
  }
  if (g_str_equal(text, "*")) {
    pattern->kind = TG_HOST_PATTERN_ANY;
    return TRUE;
  }
  if (strchr(text, '/') != NULL || strchr(text, ':') != NULL ||
      parse_address(text, &pattern->network)) {
    pattern->kind = TG_HOST_PATTERN_NETWORK;
    return parse_network(text, &pattern->network, error);
  }
  return parse_name_pattern(text, pattern, error);
}

/* ---- Ports ----------------------------------------------------------------- */

gboolean
tg_port_range_parse(const char *text, TgPortRule rule, TgPortRange *ports, GError **error)
{
  const char *dash = strchr(text, '-');

  if (g_str_equal(text, "*")) {
    ports->first = PORT_ANY_FIRST;
    ports->last = PORT_ANY_LAST;
    return TRUE;
  }
  if (dash != NULL) {
    g_autofree char *first = g_strndup(text, (gsize)(dash - text));

    if (!tg_text_parse_port(first, &ports->first) ||
        !tg_text_parse_port(dash + 1, &ports->last) || ports->first > ports->last) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "invalid port range '%s' (expected low-high, 0 to 65535)", text);
      return FALSE;
    }
  } else if (!tg_text_parse_port(text, &ports->first)) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "invalid port '%s' (expected a number, a range or '*')", text);
    return FALSE;
  } else {
    ports->last = ports->first;
  }
  /* Only a listener can ask for port 0 (the server picks one). */
  if (ports->first == 0 && rule != TG_PORT_LISTEN) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        "port 0 is only meaningful in PermitListen");
    return FALSE;
  }
  return TRUE;
}

/* ---- Entries ---------------------------------------------------------------- */

/* Splits an entry into host and port text like OpenSSH's hpdelim(): a host
 * in [brackets] may hold ':'; without brackets, two or more ':' make a bare
 * IPv6 address, which cannot be followed by a port. *port is NULL when the
 * entry has none. */
static gboolean
split_entry(const char *text, TgPortRule rule, char **host, char **port, GError **error)
{
  const char *colon = strchr(text, ':');

  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    const char *rest;

    if (close == NULL) {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "unterminated '['");
      return FALSE;
    }
    /* "[2001:db8::]/32:443": the prefix length may follow the bracket. */
    rest = close + 1 + strcspn(close + 1, ":");
    if (close[1] != '\0' && close[1] != ':' && close[1] != '/') {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                          "unexpected text after ']'");
      return FALSE;
    }
    *host = g_strdup_printf("%.*s%.*s", (int)(close - text - 1), text + 1,
                            (int)(rest - close - 1), close + 1);
    *port = *rest == ':' ? g_strdup(rest + 1) : NULL;
  } else if (colon == NULL) {
    /* PermitListen's single field is the port. */
    *host = g_strdup(rule == TG_PORT_LISTEN ? "*" : text);
    *port = rule == TG_PORT_LISTEN ? g_strdup(text) : NULL;
  } else if (strchr(colon + 1, ':') == NULL) {
    *host = g_strndup(text, (gsize)(colon - text));
    *port = g_strdup(colon + 1);
  } else {
    *host = g_strdup(text);
    *port = NULL;
  }
  return TRUE;
}

static gboolean
parse_entry_port(const char *host, const char *port, TgPortRule rule, TgPortRange *ports,
                 GError **error)
{
  if (port == NULL && rule == TG_PORT_OPTIONAL) {
    ports->first = PORT_ANY_FIRST;
    ports->last = PORT_ANY_LAST;
    return TRUE;
  }
  if (port == NULL) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        strchr(host, ':') != NULL
                            ? "missing port (an IPv6 address needs brackets when a "
                              "port follows: [2001:db8::1]:443)"
                            : "missing port (expected host:port)");
    return FALSE;
  }
  if (*port == '\0') {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "empty port");
    return FALSE;
  }
  return tg_port_range_parse(port, rule, ports, error);
}

TgHostPattern *
tg_host_pattern_parse(const char *text, TgPortRule rule, GError **error)
{
  g_autoptr(TgHostPattern) pattern = g_new0(TgHostPattern, 1);
  g_autofree char *host = NULL;
  g_autofree char *port = NULL;

  g_return_val_if_fail(text != NULL, NULL);

  /* Match lists use commas, allow-lists spaces (as sshd's PermitOpen). */
  if (strchr(text, ',') != NULL) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        "',' in an entry (separate entries with spaces)");
    return NULL;
  }
  if (!split_entry(text, rule, &host, &port, error) ||
      !parse_host_part(host, pattern, error) ||
      !parse_entry_port(host, port, rule, &pattern->ports, error))
    return NULL;
  return g_steal_pointer(&pattern);
}

void
tg_host_pattern_free(TgHostPattern *pattern)
{
  if (pattern == NULL)
    return;
  g_free(pattern->name);
  g_free(pattern);
}

void
tg_port_range_append(GString *out, const TgPortRange *ports)
{
  if (ports->first == PORT_ANY_FIRST && ports->last == PORT_ANY_LAST)
    g_string_append_c(out, '*');
  else if (ports->first == ports->last)
    g_string_append_printf(out, "%u", ports->first);
  else
    g_string_append_printf(out, "%u-%u", ports->first, ports->last);
}

static void
append_network(GString *out, const TgNetwork *network, gboolean port_follows)
{
  char text[INET6_ADDRSTRLEN];
  gboolean brackets = network->family == AF_INET6 && port_follows;

  inet_ntop(network->family, network->bytes, text, sizeof text);
  g_string_append_printf(out, "%s%s%s", brackets ? "[" : "", text, brackets ? "]" : "");
  if (network->prefix != family_bits(network->family))
    g_string_append_printf(out, "/%u", network->prefix);
}

char *
tg_host_pattern_to_string(const TgHostPattern *pattern, TgPortRule rule)
{
  GString *out = g_string_new(NULL);
  gboolean any_port =
      pattern->ports.first == PORT_ANY_FIRST && pattern->ports.last == PORT_ANY_LAST;
  gboolean port_follows = !(rule == TG_PORT_OPTIONAL && any_port);

  switch (pattern->kind) {
  case TG_HOST_PATTERN_ANY:
    if (rule == TG_PORT_LISTEN) {
      tg_port_range_append(out, &pattern->ports);
      return g_string_free(out, FALSE);
    }
    g_string_append_c(out, '*');
    break;
  case TG_HOST_PATTERN_SUFFIX:
    g_string_append_printf(out, "*.%s", pattern->name);
    break;
  case TG_HOST_PATTERN_NAME:
  case TG_HOST_PATTERN_GLOB:
    g_string_append(out, pattern->name);
    break;
  case TG_HOST_PATTERN_NETWORK:
    append_network(out, &pattern->network, port_follows);
    break;
  }
  if (port_follows) {
    g_string_append_c(out, ':');
    tg_port_range_append(out, &pattern->ports);
  }
  return g_string_free(out, FALSE);
}

/* ---- Queries and the reference matcher ------------------------------------- */

void
tg_host_query_init(TgHostQuery *query, const char *host)
{
  gsize length = strlen(host);

  memset(query, 0, sizeof *query);
  if (parse_address(host, &query->address)) {
    unmap_ipv4(&query->address);
    query->kind = TG_HOST_QUERY_ADDRESS;
    return;
  }
  if (length > 1 && host[length - 1] == '.')
    length--;
  if (length == 0 || length > TG_HOST_NAME_MAX) {
    query->kind = TG_HOST_QUERY_UNMATCHABLE;
    return;
  }
  query->kind = TG_HOST_QUERY_NAME;
  for (gsize i = 0; i < length; i++)
    query->name[i] = g_ascii_tolower(host[i]);
  query->name[length] = '\0';
}

void
tg_host_query_init_all_addresses(TgHostQuery *query)
{
  memset(query, 0, sizeof *query);
  query->kind = TG_HOST_QUERY_ALL_ADDRESSES;
}

/* "*.corp" needs at least one label before ".corp". */
static gboolean
name_has_suffix(const char *name, const char *suffix)
{
  gsize name_length = strlen(name);
  gsize suffix_length = strlen(suffix);

  return name_length > suffix_length + 1 &&
         name[name_length - suffix_length - 1] == '.' &&
         strcmp(name + name_length - suffix_length, suffix) == 0;
}

static gboolean
host_matches(const TgHostPattern *pattern, const TgHostQuery *query)
{
  if (pattern->kind == TG_HOST_PATTERN_ANY)
    return TRUE;
  if (pattern->kind == TG_HOST_PATTERN_NETWORK)
    return query->kind == TG_HOST_QUERY_ADDRESS &&
           network_contains(&pattern->network, &query->address);
  if (query->kind != TG_HOST_QUERY_NAME)
    return FALSE;
  switch (pattern->kind) {
  case TG_HOST_PATTERN_NAME:
    return strcmp(pattern->name, query->name) == 0;
  case TG_HOST_PATTERN_SUFFIX:
    return name_has_suffix(query->name, pattern->name);
  case TG_HOST_PATTERN_GLOB:
    return tg_glob_match(pattern->name, query->name);
  case TG_HOST_PATTERN_ANY:
  case TG_HOST_PATTERN_NETWORK:
    break;
  }
  return FALSE;
}

static gboolean
port_in_range(const TgPortRange *ports, guint16 port)
{
  return port >= ports->first && port <= ports->last;
}

gboolean
tg_host_pattern_matches(const TgHostPattern *pattern, const TgHostQuery *query,
                        guint16 port)
{
  return port_in_range(&pattern->ports, port) && host_matches(pattern, query);
}

/* ---- The index --------------------------------------------------------------- */

typedef struct {
  TgPortRange ports;
  guint ordinal; /* order of addition: the earliest match wins */
  gpointer data;
} IndexEntry;

typedef struct {
  char *pattern;
  IndexEntry entry;
} GlobEntry;

/* All networks of one family and prefix length, by network address. */
typedef struct {
  guint prefix;
  GHashTable *by_network; /* TgNetwork* -> GArray of IndexEntry */
} PrefixTable;

struct _TgHostIndex {
  guint n_entries;
  GArray *any;            /* IndexEntry: host "*" */
  GHashTable *names;      /* name -> GArray of IndexEntry */
  GHashTable *suffixes;   /* "corp" of "*.corp" -> GArray of IndexEntry */
  GPtrArray *globs;       /* GlobEntry */
  GPtrArray *ipv4_tables; /* PrefixTable, only the prefix lengths in use */
  GPtrArray *ipv6_tables;
};

static guint
network_hash(gconstpointer key)
{
  const TgNetwork *network = key;
  guint hash = network->family;

  for (guint i = 0; i < 16; i++)
    hash = hash * 31 + network->bytes[i];
  return hash;
}

static gboolean
network_equal(gconstpointer a, gconstpointer b)
{
  return memcmp(a, b, sizeof(TgNetwork)) == 0;
}

static void
entries_free(gpointer entries)
{
  g_array_unref(entries);
}

static GArray *
entries_new(void)
{
  return g_array_new(FALSE, FALSE, sizeof(IndexEntry));
}

static void
prefix_table_free(gpointer data)
{
  PrefixTable *table = data;

  g_hash_table_unref(table->by_network);
  g_free(table);
}

static void
glob_entry_free(gpointer data)
{
  GlobEntry *glob = data;

  g_free(glob->pattern);
  g_free(glob);
}

TgHostIndex *
tg_host_index_new(void)
{
  TgHostIndex *index = g_new0(TgHostIndex, 1);

  index->any = entries_new();
  index->names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, entries_free);
  index->suffixes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, entries_free);
  index->globs = g_ptr_array_new_with_free_func(glob_entry_free);
  index->ipv4_tables = g_ptr_array_new_with_free_func(prefix_table_free);
  index->ipv6_tables = g_ptr_array_new_with_free_func(prefix_table_free);
  return index;
}

void
tg_host_index_free(TgHostIndex *index)
{
  if (index == NULL)
    return;
  g_array_unref(index->any);
  g_hash_table_unref(index->names);
  g_hash_table_unref(index->suffixes);
  g_ptr_array_unref(index->globs);
  g_ptr_array_unref(index->ipv4_tables);
  g_ptr_array_unref(index->ipv6_tables);
  g_free(index);
}

guint
tg_host_index_size(const TgHostIndex *index)
{
  return index->n_entries;
}

static void
add_to_table(GHashTable *table, const char *key, const IndexEntry *entry)
{
  GArray *entries = g_hash_table_lookup(table, key);

  if (entries == NULL) {
    entries = entries_new();
    g_hash_table_insert(table, g_strdup(key), entries);
  }
  g_array_append_val(entries, *entry);
}

static PrefixTable *
prefix_table_for(TgHostIndex *index, const TgNetwork *network)
{
  GPtrArray *tables =
      network->family == AF_INET ? index->ipv4_tables : index->ipv6_tables;
  PrefixTable *table;

  for (guint i = 0; i < tables->len; i++) {
    table = g_ptr_array_index(tables, i);
    if (table->prefix == network->prefix)
      return table;
  }
  table = g_new0(PrefixTable, 1);
  table->prefix = network->prefix;
  table->by_network =
      g_hash_table_new_full(network_hash, network_equal, g_free, entries_free);
  g_ptr_array_add(tables, table);
  return table;
}

static void
add_network(TgHostIndex *index, const TgNetwork *network, const IndexEntry *entry)
{
  PrefixTable *table = prefix_table_for(index, network);
  GArray *entries = g_hash_table_lookup(table->by_network, network);

  if (entries == NULL) {
    entries = entries_new();
    g_hash_table_insert(table->by_network, g_memdup2(network, sizeof *network), entries);
  }
  g_array_append_val(entries, *entry);
}

void
tg_host_index_add(TgHostIndex *index, const TgHostPattern *pattern, gpointer data)
{
  IndexEntry entry = { pattern->ports, index->n_entries++, data };
  GlobEntry *glob;

  switch (pattern->kind) {
  case TG_HOST_PATTERN_ANY:
    g_array_append_val(index->any, entry);
    break;
  case TG_HOST_PATTERN_NAME:
    add_to_table(index->names, pattern->name, &entry);
    break;
  case TG_HOST_PATTERN_SUFFIX:
    add_to_table(index->suffixes, pattern->name, &entry);
    break;
  case TG_HOST_PATTERN_GLOB:
    glob = g_new0(GlobEntry, 1);
    glob->pattern = g_strdup(pattern->name);
    glob->entry = entry;
    g_ptr_array_add(index->globs, glob);
    break;
  case TG_HOST_PATTERN_NETWORK:
    add_network(index, &pattern->network, &entry);
    break;
  }
}

/* Keeps in *best the earliest entry of @entries allowing @port. */
static void
consider(const GArray *entries, guint16 port, const IndexEntry **best)
{
  for (guint i = 0; entries != NULL && i < entries->len; i++) {
    const IndexEntry *entry = &g_array_index(entries, IndexEntry, i);

    if (port_in_range(&entry->ports, port) &&
        (*best == NULL || entry->ordinal < (*best)->ordinal))
      *best = entry;
  }
}

static void
lookup_name(const TgHostIndex *index, const char *name, guint16 port,
            const IndexEntry **best)
{
  consider(g_hash_table_lookup(index->names, name), port, best);
  /* "a.b.corp" tries the suffixes "b.corp" and "corp"; a leading dot
   * has no label before it. */
  for (const char *dot = strchr(name + 1, '.'); dot != NULL; dot = strchr(dot + 1, '.')) {
    if (dot[1] != '\0')
      consider(g_hash_table_lookup(index->suffixes, dot + 1), port, best);
  }
  for (guint i = 0; i < index->globs->len; i++) {
    const GlobEntry *glob = g_ptr_array_index(index->globs, i);

    if (port_in_range(&glob->entry.ports, port) &&
        (*best == NULL || glob->entry.ordinal < (*best)->ordinal) &&
        tg_glob_match(glob->pattern, name))
      *best = &glob->entry;
  }
}

static void
lookup_address(const TgHostIndex *index, const TgNetwork *address, guint16 port,
               const IndexEntry **best)
{
  const GPtrArray *tables =
      address->family == AF_INET ? index->ipv4_tables : index->ipv6_tables;

  for (guint i = 0; i < tables->len; i++) {
    const PrefixTable *table = g_ptr_array_index(tables, i);
    TgNetwork masked = *address;

    network_mask(&masked, table->prefix);
    consider(g_hash_table_lookup(table->by_network, &masked), port, best);
  }
}

gpointer
tg_host_index_lookup(const TgHostIndex *index, const TgHostQuery *query, guint16 port)
{
  const IndexEntry *best = NULL;

  consider(index->any, port, &best);
  if (query->kind == TG_HOST_QUERY_NAME)
    lookup_name(index, query->name, port, &best);
  else if (query->kind == TG_HOST_QUERY_ADDRESS)
    lookup_address(index, &query->address, port, &best);
  return best != NULL ? best->data : NULL;
}

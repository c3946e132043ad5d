/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Matching for the policy: host and port patterns of the allow-lists
 * (PermitOpen, PermitRemoteOpen, PermitListen, PermitServer,
 * ServerPermitOpen), the index that answers "does any entry allow
 * host:port" without scanning the list, and the user/group pattern lists
 * of Match blocks and profiles. Pure: no I/O, no name resolution.
 *
 * Names are matched as written (case-insensitively, one trailing dot
 * ignored); addresses are matched as addresses. A name never matches an
 * address pattern and an address never matches a name pattern; "*" matches
 * both (doc/policy.md, "Hosts, ports, and what is matched against what"). */
#pragma once

#include <glib.h>

#include "network.h"

typedef enum {
  TG_HOST_PATTERN_ANY,     /* "*": every name and every address */
  TG_HOST_PATTERN_NAME,    /* "db.corp": exactly this name */
  TG_HOST_PATTERN_SUFFIX,  /* "*.corp": one or more labels, then ".corp" */
  TG_HOST_PATTERN_GLOB,    /* other names with '*' or '?' */
  TG_HOST_PATTERN_NETWORK, /* "10.0.0.0/8", "2001:db8::1" */
} TgHostPatternKind;

/* How an entry's port is written. */
typedef enum {
  TG_PORT_REQUIRED, /* host:port (PermitOpen); port 0 refused */
  TG_PORT_OPTIONAL, /* host[:port] (PermitServer); no port = any */
  TG_PORT_LISTEN,   /* [host:]port (PermitListen); no host = any; 0 allowed */
} TgPortRule;

/* "443", "8000-8999" or "*"; 0 only with TG_PORT_LISTEN. */
gboolean tg_port_range_parse(const char *text, TgPortRule rule, TgPortRange *ports,
                             GError **error);
/* Appends the canonical form: "443", "8000-8999" or "*". */
void tg_port_range_append(GString *out, const TgPortRange *ports);

typedef struct {
  TgHostPatternKind kind;
  char *name; /* NAME: the name; SUFFIX: the part after "*."; GLOB: the
               * pattern. Lower case, no trailing dot. NULL otherwise. */
  TgNetwork network;
  TgPortRange ports;
} TgHostPattern;

/* Parses one allow-list entry. Errors are TG_ERROR_INVALID_ARGUMENT saying
 * what is wrong, without the entry itself (the caller names it). */
TgHostPattern *tg_host_pattern_parse(const char *text, TgPortRule rule, GError **error);
void tg_host_pattern_free(TgHostPattern *pattern);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgHostPattern, tg_host_pattern_free)

/* Canonical text, parseable again with the same rule. */
char *tg_host_pattern_to_string(const TgHostPattern *pattern, TgPortRule rule);

/* A host to look up, normalised once so lookups allocate nothing. */
typedef enum {
  TG_HOST_QUERY_NAME,
  TG_HOST_QUERY_ADDRESS,
  /* A listener on every address ("*" or "" as bind address): only "*"
   * patterns allow it. */
  TG_HOST_QUERY_ALL_ADDRESSES,
  /* A name no pattern but "*" can match (longer than 255 bytes). */
  TG_HOST_QUERY_UNMATCHABLE,
} TgHostQueryKind;

#define TG_HOST_NAME_MAX 255

typedef struct {
  TgHostQueryKind kind;
  char name[TG_HOST_NAME_MAX + 1]; /* NAME: lower case, no trailing dot */
  TgNetwork address;               /* ADDRESS: full prefix; IPv4-mapped IPv6
                                    * addresses are stored as IPv4 */
} TgHostQuery;

void tg_host_query_init(TgHostQuery *query, const char *host);
void tg_host_query_init_all_addresses(TgHostQuery *query);

/* The reference matcher: one pattern against one host and port. */
gboolean tg_host_pattern_matches(const TgHostPattern *pattern, const TgHostQuery *query,
                                 guint16 port);

/* The index over one allow-list: exact names in a hash table, "*.suffix"
 * names by suffix (a lookup walks the name's label suffixes), other
 * wildcard names in a short list, networks in one hash table per prefix
 * length and address family, "*" apart. Each hit then checks its ports.
 * Immutable after the last add; lookups from many threads are safe. */
typedef struct _TgHostIndex TgHostIndex;

TgHostIndex *tg_host_index_new(void);
void tg_host_index_free(TgHostIndex *index);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgHostIndex, tg_host_index_free)

/* Adds @pattern (copied) with @data, returned by lookups that it matches. */
void tg_host_index_add(TgHostIndex *index, const TgHostPattern *pattern, gpointer data);
guint tg_host_index_size(const TgHostIndex *index);

/* The data of the earliest added entry matching @query and @port, or NULL.
 * "Earliest" makes the answer (and the line a decision names) independent
 * of how entries are spread over the index. */
gpointer tg_host_index_lookup(const TgHostIndex *index, const TgHostQuery *query,
                              guint16 port);

/* '*' and '?' wildcards, byte-wise and case-sensitive. */
gboolean tg_glob_match(const char *pattern, const char *text);

/* Comma-separated pattern lists as in sshd's Match: "alice,b*,!bob".
 * Returns NULL with an error for empty elements. */
char **tg_pattern_list_parse(const char *text, GError **error);

typedef enum {
  TG_PATTERN_LIST_NO_MATCH = 0,
  TG_PATTERN_LIST_MATCH = 1,
  TG_PATTERN_LIST_NEGATED = -1, /* a "!pattern" matched: excluded */
} TgPatternListResult;

TgPatternListResult tg_pattern_list_match(const char *const *patterns, const char *text);

/* Any of @names: excluded if a negated pattern matches any of them (as
 * sshd's Match Group over all of a user's groups). */
gboolean tg_pattern_list_match_any(const char *const *patterns, const char *const *names);

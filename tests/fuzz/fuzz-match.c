/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for the matcher. Input: a rule byte, then a line of
 * allow-list entries, then lines of "host port" queries. Every entry that
 * parses must print and parse back to the same text; every query must get
 * from the index exactly the first entry the reference matcher accepts. The
 * lines also go through globs and pattern lists. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-match.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_round_trip(const TgHostPattern *pattern, TgPortRule rule, const char *entry)
{
  g_autofree char *text = tg_host_pattern_to_string(pattern, rule);
  g_autoptr(TgHostPattern) again = tg_host_pattern_parse(text, rule, NULL);
  g_autofree char *text_again =
      again != NULL ? tg_host_pattern_to_string(again, rule) : NULL;

  if (g_strcmp0(text, text_again) != 0) {
    fprintf(stderr, "'%s' printed as '%s', which reads back as '%s'\n", entry, text,
            text_again != NULL ? text_again : "(error)");
    abort();
  }
}

static void
check_query(const TgHostIndex *index, const GPtrArray *patterns, const char *line)
{
  const char *space = strrchr(line, ' ');
  g_autofree char *host =
      g_strndup(line, space != NULL ? (size_t)(space - line) : strlen(line));
  guint16 port = space != NULL ? (guint16)strtoul(space + 1, NULL, 10) : 0;
  guint expected = 0;
  guint found;
  TgHostQuery query;

  if (g_str_equal(host, "<all>"))
    tg_host_query_init_all_addresses(&query);
  else
    tg_host_query_init(&query, host);
  for (guint i = 0; i < patterns->len && expected == 0; i++) {
    if (tg_host_pattern_matches(g_ptr_array_index(patterns, i), &query, port))
      expected = i + 1;
  }
  found = GPOINTER_TO_UINT(tg_host_index_lookup(index, &query, port));
  if (found != expected) {
    fprintf(stderr, "'%s' port %u: index says entry %u, reference %u\n", host, port,
            found, expected);
    abort();
  }
}

static void
check_pattern_list(const char *list, const char *text)
{
  g_auto(GStrv) patterns = tg_pattern_list_parse(list, NULL);
  const char *names[] = { text, list, NULL };

  if (patterns == NULL)
    return;
  (void)tg_pattern_list_match((const char *const *)patterns, text);
  (void)tg_pattern_list_match_any((const char *const *)patterns, names);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const TgPortRule rules[] = { TG_PORT_REQUIRED, TG_PORT_OPTIONAL,
                                      TG_PORT_LISTEN };
  g_autofree char *text = NULL;
  g_auto(GStrv) lines = NULL;
  g_auto(GStrv) entries = NULL;
  g_autoptr(TgHostIndex) index = tg_host_index_new();
  g_autoptr(GPtrArray) patterns =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_host_pattern_free);
  TgPortRule rule;

  if (size < 1)
    return 0;
  rule = rules[data[0] % 3];
  text = g_strndup((const char *)data + 1, size - 1);
  lines = g_strsplit(text, "\n", -1);
  if (lines[0] == NULL)
    return 0;
  entries = g_strsplit(lines[0], " ", -1);
  for (guint i = 0; entries[i] != NULL; i++) {
    TgHostPattern *pattern = tg_host_pattern_parse(entries[i], rule, NULL);

    if (pattern == NULL)
      continue;
    check_round_trip(pattern, rule, entries[i]);
    tg_host_index_add(index, pattern, GUINT_TO_POINTER(patterns->len + 1));
    g_ptr_array_add(patterns, pattern);
  }
  for (guint i = 1; lines[i] != NULL; i++) {
    check_query(index, patterns, lines[i]);
    (void)tg_glob_match(lines[0], lines[i]);
    check_pattern_list(lines[0], lines[i]);
  }
  return 0;
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Policy files: keywords and their values, Match blocks, and the order in
 * which files are read. What the values mean is policy.c's business. */
#include "config.h"

#include <string.h>
#include <sys/socket.h>

#include "config-tokenizer.h"
#include "policy-model.h"
#include "text.h"
#include "tg-error.h"

/* Beyond this a "number" is a typo, and sums of times stay far from
 * overflowing (about 68 years of seconds). */
#define MAX_COUNT G_MAXUINT32
#define MAX_SECONDS ((guint64)G_MAXINT32)
/* Messages quote at most this much of a word. */
#define MAX_QUOTED 80

/* ---- Keywords ---------------------------------------------------------- */

/* Keywords are case-insensitive, as in sshd_config. -1 when unknown. */
static int
lookup_keyword(const char *name)
{
  for (int i = 0; i < TG_KW_COUNT; i++) {
    if (g_ascii_strcasecmp(name, tg_policy_keywords[i].name) == 0)
      return i;
  }
  return -1;
}

/* ---- Settings and blocks ------------------------------------------------ */

static TgSetting *
setting_new(TgPolicyKeyword keyword, const char *file, guint line)
{
  TgSetting *setting = g_new0(TgSetting, 1);

  setting->keyword = keyword;
  setting->file = file;
  setting->line = line;
  if (tg_policy_keywords[keyword].type == TG_VALUE_HOSTS) {
    setting->hosts.entries = g_ptr_array_new_with_free_func(tg_host_entry_free);
    setting->hosts.patterns = g_ptr_array_new();
    setting->hosts.index = tg_host_index_new();
  }
  if (tg_policy_keywords[keyword].type == TG_VALUE_ADDRESSES) {
    setting->addresses = g_array_new(FALSE, FALSE, sizeof(TgNetwork));
    setting->address_set =
        g_hash_table_new_full(tg_network_hash, tg_network_equal, g_free, NULL);
  }
  if (tg_policy_keywords[keyword].type == TG_VALUE_PRINCIPALS)
    setting->principals = g_ptr_array_new_with_free_func(g_free);
  return setting;
}

static guint
file_index(const TgPolicy *policy, const char *file)
{
  for (guint i = 0; i < policy->files->len; i++) {
    if (g_ptr_array_index(policy->files, i) == file)
      return i;
  }
  g_return_val_if_reached(0);
}

static void add_warning(TgPolicy *policy, const char *file, guint line,
                        const char *format, ...) G_GNUC_PRINTF(4, 5);

/* @file must be the policy's own copy of the name (setting->file). */
static void
add_warning(TgPolicy *policy, const char *file, guint line, const char *format, ...)
{
  g_autofree char *message = NULL;
  TgWarning warning = { file_index(policy, file), line, policy->pending_warnings->len,
                        NULL };
  va_list args;

  if (policy->pending_warnings->len >= TG_POLICY_MAX_WARNINGS) {
    policy->dropped_warnings++;
    return;
  }
  va_start(args, format);
  message = g_strdup_vprintf(format, args);
  va_end(args);
  warning.text = g_strdup_printf("%s:%u: %s", file, line, message);
  g_array_append_val(policy->pending_warnings, warning);
}

static gint
compare_warnings(gconstpointer a, gconstpointer b)
{
  const TgWarning *x = a;
  const TgWarning *y = b;

  if (x->file_index != y->file_index)
    return x->file_index < y->file_index ? -1 : 1;
  if (x->line != y->line)
    return x->line < y->line ? -1 : 1;
  return x->sequence < y->sequence ? -1 : x->sequence > y->sequence;
}

/* In the order of the files and lines they are about. */
static void
sort_warnings(TgPolicy *policy)
{
  g_array_sort(policy->pending_warnings, compare_warnings);
  for (guint i = 0; i < policy->pending_warnings->len; i++) {
    TgWarning *warning = &g_array_index(policy->pending_warnings, TgWarning, i);

    g_ptr_array_add(policy->warnings, g_steal_pointer(&warning->text));
  }
  g_array_set_size(policy->pending_warnings, 0);
  if (policy->dropped_warnings > 0)
    g_ptr_array_add(policy->warnings, g_strdup_printf("(%u more warnings not shown)",
                                                      policy->dropped_warnings));
  g_ptr_array_add(policy->warnings, NULL);
}

/* ---- Values ------------------------------------------------------------- */

/* "yes, all, no, local or remote" */
static char *
describe_words(const char *const *words)
{
  GString *out = g_string_new(NULL);

  for (guint i = 0; words[i] != NULL; i++) {
    if (i > 0)
      g_string_append(out, words[i + 1] == NULL ? " or " : ", ");
    g_string_append(out, words[i]);
  }
  return g_string_free(out, FALSE);
}

static gboolean
expect_one_argument(const TgKeywordInfo *info, const TgConfigLine *line, GError **error)
{
  if (line->n_words == 2)
    return TRUE;
  tg_config_set_error(error, line->file, line->number, "%s takes one argument, not %u",
                      info->name, line->n_words - 1);
  return FALSE;
}

static gboolean
set_value_error(const TgKeywordInfo *info, const TgConfigLine *line, const char *value,
                const char *problem, GError **error)
{
  g_autofree char *quoted = tg_text_printable(value, MAX_QUOTED);

  tg_config_set_error(error, line->file, line->number, "%s: invalid value '%s' (%s)",
                      info->name, quoted, problem);
  return FALSE;
}

/* Values of fixed words are case-insensitive, as sshd's yes/no. */
static gboolean
parse_word(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
           GError **error)
{
  g_autofree char *words = NULL;
  g_autofree char *expected = NULL;

  if (!expect_one_argument(info, line, error))
    return FALSE;
  for (guint i = 0; info->words[i] != NULL; i++) {
    if (g_ascii_strcasecmp(line->words[1], info->words[i]) == 0) {
      setting->word = i;
      return TRUE;
    }
  }
  words = describe_words(info->words);
  expected = g_strdup_printf("expected %s", words);
  return set_value_error(info, line, line->words[1], expected, error);
}

static gboolean
add_host_entry(const TgKeywordInfo *info, const TgConfigLine *line, const char *text,
               TgHostList *hosts, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  TgHostPattern *pattern = tg_host_pattern_parse(text, info->port_rule, &local_error);
  TgHostEntry *entry;

  if (pattern == NULL)
    return set_value_error(info, line, text, local_error->message, error);
  if ((info->flags & TG_KEYWORD_FIREWALL_HOSTS) &&
      pattern->kind != TG_HOST_PATTERN_NAME && pattern->kind != TG_HOST_PATTERN_NETWORK) {
    tg_host_pattern_free(pattern);
    return set_value_error(info, line, text,
                           "the firewall holds addresses: names, addresses or networks, "
                           "not wildcards ('any' allows every destination)",
                           error);
  }
  entry = g_new0(TgHostEntry, 1);
  entry->pattern = pattern;
  entry->line = line->number;
  g_ptr_array_add(hosts->entries, entry);
  g_ptr_array_add(hosts->patterns, pattern);
  tg_host_index_add(hosts->index, pattern, entry);
  return TRUE;
}

/* "any" and "none" stand alone in a block, since "none" next to entries
 * has no clear meaning. */
static gboolean
check_any_none_alone(const TgKeywordInfo *info, const TgConfigLine *line, gboolean any,
                     gboolean none, guint n_entries, GError **error)
{
  if ((any ? 1 : 0) + (none ? 1 : 0) + (n_entries > 0 ? 1 : 0) <= 1)
    return TRUE;
  tg_config_set_error(error, line->file, line->number,
                      "%s: 'any' and 'none' cannot be combined with other entries "
                      "in the same block",
                      info->name);
  return FALSE;
}

/* Entries add up over the lines of a block. */
static gboolean
parse_hosts(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
            GError **error)
{
  TgHostList *hosts = &setting->hosts;

  for (guint i = 1; i < line->n_words; i++) {
    const char *word = line->words[i];

    if (g_ascii_strcasecmp(word, "any") == 0)
      hosts->any = TRUE;
    else if (g_ascii_strcasecmp(word, "none") == 0)
      hosts->none = TRUE;
    else if (!add_host_entry(info, line, word, hosts, error))
      return FALSE;
  }
  return check_any_none_alone(info, line, hosts->any, hosts->none, hosts->entries->len,
                              error);
}

/* Does an address entry name a port? As tg_host_pattern_parse() splits:
 * after "[...]", or after the only ':' (two or more make an IPv6 address). */
static gboolean
entry_has_port(const char *text)
{
  const char *colon = strchr(text, ':');

  if (text[0] == '[') {
    const char *close = strchr(text, ']');

    return close != NULL && strchr(close, ':') != NULL;
  }
  return colon != NULL && strchr(colon + 1, ':') == NULL;
}

/* ListenerSources: single addresses, since the firewall's listener sets
 * hold addresses (with the listener's port), not networks, names or ports.
 * An address given twice is kept once: the firewall adds and removes each
 * element exactly once. */
static gboolean
add_address(const TgKeywordInfo *info, const TgConfigLine *line, const char *text,
            TgSetting *setting, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(TgHostPattern) pattern = NULL;
  g_autofree char *shown = tg_text_printable(text, MAX_QUOTED);
  const char *problem = NULL;

  if (entry_has_port(text)) {
    problem = ", without a port";
  } else {
    pattern = tg_host_pattern_parse(text, TG_PORT_OPTIONAL, &local_error);
    if (pattern == NULL)
      return set_value_error(info, line, text, local_error->message, error);
    switch (pattern->kind) {
    case TG_HOST_PATTERN_ANY:
    case TG_HOST_PATTERN_SUFFIX:
    case TG_HOST_PATTERN_GLOB:
      problem = ", not wildcards ('any' allows every source)";
      break;
    case TG_HOST_PATTERN_NAME:
      problem = ", not host names (the daemon does not resolve them)";
      break;
    case TG_HOST_PATTERN_NETWORK:
      if (pattern->network.prefix != (pattern->network.family == AF_INET ? 32 : 128))
        problem = " (the firewall's listener sets hold addresses, not networks)";
      break;
    }
  }
  if (problem != NULL) {
    tg_config_set_error(error, line->file, line->number,
                        "%s takes single IP addresses%s: %s", info->name, problem, shown);
    return FALSE;
  }
  if (g_hash_table_add(setting->address_set,
                       g_memdup2(&pattern->network, sizeof pattern->network)))
    g_array_append_val(setting->addresses, pattern->network);
  return TRUE;
}

/* Entries add up over the lines of a block and are separated by commas
 * and/or blanks, as SshPorts. */
static gboolean
parse_addresses(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
                GError **error)
{
  for (guint i = 1; i < line->n_words; i++) {
    g_auto(GStrv) parts = g_strsplit(line->words[i], ",", -1);

    for (guint j = 0; parts[j] != NULL; j++) {
      const char *part = parts[j];

      if (*part == '\0')
        return set_value_error(info, line, line->words[i], "empty entry between commas",
                               error);
      if (g_ascii_strcasecmp(part, "any") == 0)
        setting->any = TRUE;
      else if (g_ascii_strcasecmp(part, "none") == 0)
        setting->none = TRUE;
      else if (!add_address(info, line, part, setting, error))
        return FALSE;
    }
  }
  return check_any_none_alone(info, line, setting->any, setting->none,
                              setting->addresses->len, error);
}

/* ListenerUsers: owner (always allowed: the word only says so), any, or
 * user:NAME and group:NAME, which the daemon resolves when a listener is
 * made. Separated by commas and/or blanks; entries add up over the lines of
 * a block, each kept once. */
static gboolean
parse_principals(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
                 GError **error)
{
  for (guint i = 1; i < line->n_words; i++) {
    g_auto(GStrv) parts = g_strsplit(line->words[i], ",", -1);

    for (guint j = 0; parts[j] != NULL; j++) {
      const char *part = parts[j];
      const char *name = NULL;

      if (*part == '\0')
        return set_value_error(info, line, line->words[i], "empty entry between commas",
                               error);
      if (g_ascii_strcasecmp(part, "any") == 0) {
        setting->any = TRUE;
        continue;
      }
      if (g_ascii_strcasecmp(part, "owner") == 0)
        continue;
      if (g_ascii_strncasecmp(part, "user:", 5) == 0)
        name = part + 5;
      else if (g_ascii_strncasecmp(part, "group:", 6) == 0)
        name = part + 6;
      if (name == NULL || *name == '\0')
        return set_value_error(info, line, part,
                               "expected owner, any, user:NAME or group:NAME", error);
      {
        g_autofree char *entry = g_strdup_printf(
            "%s:%s", part[0] == 'u' || part[0] == 'U' ? "user" : "group", name);
        gboolean seen = FALSE;

        for (guint k = 0; k < setting->principals->len && !seen; k++)
          seen = strcmp(g_ptr_array_index(setting->principals, k), entry) == 0;
        if (!seen)
          g_ptr_array_add(setting->principals, g_steal_pointer(&entry));
      }
    }
  }
  return check_any_none_alone(info, line, setting->any, FALSE, setting->principals->len,
                              error);
}

static gboolean
parse_count(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
            GError **error)
{
  if (!expect_one_argument(info, line, error))
    return FALSE;
  if (g_ascii_strcasecmp(line->words[1], "none") == 0) {
    setting->none = TRUE;
    return TRUE;
  }
  if (!tg_text_parse_decimal(line->words[1], MAX_COUNT, &setting->number))
    return set_value_error(info, line, line->words[1],
                           "expected a number from 0 to 4294967295 or 'none'", error);
  return TRUE;
}

/* Bytes: a number with an optional K, M, G or T (powers of 1024), or none. */
static gboolean
parse_size(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
           GError **error)
{
  const char *text = line->words[1];
  g_autofree char *digits = NULL;
  guint64 multiplier = 1, number = 0;
  gsize length;

  if (!expect_one_argument(info, line, error))
    return FALSE;
  if (g_ascii_strcasecmp(text, "none") == 0) {
    setting->none = TRUE;
    return TRUE;
  }
  length = strlen(text);
  if (length > 0) {
    switch (g_ascii_toupper(text[length - 1])) {
    case 'K':
      multiplier = G_GUINT64_CONSTANT(1) << 10;
      break;
    case 'M':
      multiplier = G_GUINT64_CONSTANT(1) << 20;
      break;
    case 'G':
      multiplier = G_GUINT64_CONSTANT(1) << 30;
      break;
    case 'T':
      multiplier = G_GUINT64_CONSTANT(1) << 40;
      break;
    default:
      break;
    }
  }
  digits = g_strndup(text, multiplier > 1 ? length - 1 : length);
  if (!tg_text_parse_decimal(digits, G_MAXUINT32, &number))
    return set_value_error(info, line, text,
                           "expected a number of bytes, optionally with K, M, G or T "
                           "(powers of 1024), or 'none'",
                           error);
  setting->number = number * multiplier;
  return TRUE;
}

static guint64
time_unit_seconds(char unit)
{
  switch (g_ascii_tolower(unit)) {
  case 's':
    return 1;
  case 'm':
    return 60;
  case 'h':
    return 60 * 60;
  case 'd':
    return 24 * 60 * 60;
  case 'w':
    return 7 * 24 * 60 * 60;
  default:
    return 0;
  }
}

/* sshd's time format: "90", "90m", "1h30m"; a number without a unit is
 * seconds. */
static gboolean
parse_seconds(const char *text, guint64 *seconds)
{
  const char *p = text;

  *seconds = 0;
  if (*p == '\0')
    return FALSE;
  while (*p != '\0') {
    guint64 value = 0;
    guint64 unit = 1;

    if (!g_ascii_isdigit(*p))
      return FALSE;
    for (; g_ascii_isdigit(*p); p++) {
      value = value * 10 + (guint64)(*p - '0');
      if (value > MAX_SECONDS)
        return FALSE;
    }
    if (*p != '\0' && (unit = time_unit_seconds(*p++)) == 0)
      return FALSE;
    *seconds += value * unit;
    if (*seconds > MAX_SECONDS)
      return FALSE;
  }
  return TRUE;
}

/* "0" would mean "close at once"; a limit that is no limit is "none". */
static gboolean
parse_time(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
           GError **error)
{
  if (!expect_one_argument(info, line, error))
    return FALSE;
  if (g_ascii_strcasecmp(line->words[1], "none") == 0) {
    setting->none = TRUE;
    return TRUE;
  }
  if (!parse_seconds(line->words[1], &setting->number) || setting->number == 0)
    return set_value_error(info, line, line->words[1],
                           "expected a time such as 90, 30m or 1h30m, not 0, or 'none'",
                           error);
  return TRUE;
}

/* "22,2222" or "22 2222", ranges allowed. */
static gboolean
parse_ports(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
            GError **error)
{
  setting->ports = g_array_new(FALSE, FALSE, sizeof(TgPortRange));
  for (guint i = 1; i < line->n_words; i++) {
    g_auto(GStrv) parts = g_strsplit(line->words[i], ",", -1);

    for (guint j = 0; parts[j] != NULL; j++) {
      g_autoptr(GError) local_error = NULL;
      TgPortRange range;

      if (!tg_port_range_parse(parts[j], TG_PORT_REQUIRED, &range, &local_error))
        return set_value_error(info, line, parts[j], local_error->message, error);
      g_array_append_val(setting->ports, range);
    }
  }
  return TRUE;
}

static gboolean
parse_path(const TgKeywordInfo *info, const TgConfigLine *line, TgSetting *setting,
           GError **error)
{
  if (!expect_one_argument(info, line, error))
    return FALSE;
  if (!g_path_is_absolute(line->words[1]))
    return set_value_error(info, line, line->words[1], "expected an absolute path",
                           error);
  setting->path = g_strdup(line->words[1]);
  return TRUE;
}

static gboolean
parse_value(TgSetting *setting, const TgConfigLine *line, GError **error)
{
  const TgKeywordInfo *info = &tg_policy_keywords[setting->keyword];

  switch (info->type) {
  case TG_VALUE_WORD:
    return parse_word(info, line, setting, error);
  case TG_VALUE_HOSTS:
    return parse_hosts(info, line, setting, error);
  case TG_VALUE_COUNT:
    return parse_count(info, line, setting, error);
  case TG_VALUE_SIZE:
    return parse_size(info, line, setting, error);
  case TG_VALUE_TIME:
    return parse_time(info, line, setting, error);
  case TG_VALUE_PORTS:
    return parse_ports(info, line, setting, error);
  case TG_VALUE_PATH:
    return parse_path(info, line, setting, error);
  case TG_VALUE_ADDRESSES:
    return parse_addresses(info, line, setting, error);
  case TG_VALUE_PRINCIPALS:
    return parse_principals(info, line, setting, error);
  }
  g_return_val_if_reached(FALSE);
}

/* ---- Lines -------------------------------------------------------------- */

typedef struct {
  TgPolicy *policy;
  const char *file;
  TgBlock *block; /* where the next keyword goes */
} ParseState;

static TgBlock *
add_block(ParseState *state, guint line, GArray *criteria)
{
  TgBlock *block = g_new0(TgBlock, 1);

  block->file = state->file;
  block->line = line;
  block->criteria = criteria;
  g_ptr_array_add(state->policy->blocks, block);
  if (criteria != NULL)
    g_ptr_array_add(state->policy->match_blocks, block);
  state->block = block;
  return block;
}

static gboolean
parse_criterion(const TgConfigLine *line, guint *index, TgCriterion *criterion,
                GError **error)
{
  const char *name = line->words[*index];
  g_autoptr(GError) local_error = NULL;

  if (g_ascii_strcasecmp(name, "All") == 0) {
    if (line->n_words != 2) {
      tg_config_set_error(error, line->file, line->number,
                          "Match All cannot be combined with other criteria");
      return FALSE;
    }
    criterion->kind = TG_CRITERION_ALL;
    *index += 1;
    return TRUE;
  }
  if (g_ascii_strcasecmp(name, "User") == 0) {
    criterion->kind = TG_CRITERION_USER;
  } else if (g_ascii_strcasecmp(name, "Group") == 0) {
    criterion->kind = TG_CRITERION_GROUP;
  } else {
    g_autofree char *quoted = tg_text_printable(name, MAX_QUOTED);

    tg_config_set_error(error, line->file, line->number,
                        "unknown Match criterion '%s' (expected User, Group or All)",
                        quoted);
    return FALSE;
  }
  if (*index + 1 >= line->n_words) {
    tg_config_set_error(error, line->file, line->number, "Match %s needs a pattern list",
                        name);
    return FALSE;
  }
  criterion->patterns = tg_pattern_list_parse(line->words[*index + 1], &local_error);
  if (criterion->patterns == NULL) {
    tg_config_set_error(error, line->file, line->number, "Match %s: %s", name,
                        local_error->message);
    return FALSE;
  }
  *index += 2;
  return TRUE;
}

static gboolean
start_match_block(ParseState *state, const TgConfigLine *line, GError **error)
{
  g_autoptr(GArray) criteria = g_array_new(FALSE, TRUE, sizeof(TgCriterion));
  guint index = 1;

  g_array_set_clear_func(criteria, tg_criterion_clear);
  if (line->n_words < 2) {
    tg_config_set_error(error, line->file, line->number,
                        "Match needs criteria (User, Group or All)");
    return FALSE;
  }
  while (index < line->n_words) {
    TgCriterion criterion = { 0 };

    if (!parse_criterion(line, &index, &criterion, error))
      return FALSE;
    g_array_append_val(criteria, criterion);
  }
  add_block(state, line->number, g_steal_pointer(&criteria));
  return TRUE;
}

/* The first value in a block wins: a repeated non-list keyword is checked,
 * then ignored with a warning. */
static gboolean
parse_setting_line(ParseState *state, TgPolicyKeyword keyword, const TgConfigLine *line,
                   GError **error)
{
  const TgKeywordInfo *info = &tg_policy_keywords[keyword];
  TgSetting *existing = state->block->settings[keyword];
  g_autoptr(TgSetting) setting = NULL;

  if (state->block->criteria != NULL && (info->flags & TG_KEYWORD_GLOBAL_ONLY)) {
    tg_config_set_error(error, line->file, line->number,
                        "%s is not allowed in a Match block (global only)", info->name);
    return FALSE;
  }
  if (line->n_words < 2) {
    tg_config_set_error(error, line->file, line->number, "%s: missing value", info->name);
    return FALSE;
  }
  if (existing != NULL && (info->flags & TG_KEYWORD_LIST))
    return parse_value(existing, line, error);

  setting = setting_new(keyword, state->file, line->number);
  if (!parse_value(setting, line, error))
    return FALSE;
  if (existing != NULL) {
    add_warning(state->policy, state->file, line->number,
                "%s ignored: already set in this block at line %u", info->name,
                existing->line);
    return TRUE;
  }
  state->block->settings[keyword] = g_steal_pointer(&setting);
  return TRUE;
}

static gboolean
parse_line(const TgConfigLine *line, gpointer user_data, GError **error)
{
  ParseState *state = user_data;
  int keyword;

  if (g_ascii_strcasecmp(line->words[0], "Match") == 0)
    return start_match_block(state, line, error);
  keyword = lookup_keyword(line->words[0]);
  if (keyword < 0) {
    g_autofree char *quoted = tg_text_printable(line->words[0], MAX_QUOTED);

    tg_config_set_error(error, line->file, line->number, "unknown keyword '%s'", quoted);
    return FALSE;
  }
  return parse_setting_line(state, (TgPolicyKeyword)keyword, line, error);
}

gboolean
tg_policy_parse_source(TgPolicy *policy, const char *file, const char *data, gsize length,
                       GError **error)
{
  char *stored_name = g_strdup(file);
  ParseState state = { policy, stored_name, NULL };

  /* Settings point at this copy of the name; the policy keeps it. */
  g_ptr_array_add(policy->files, stored_name);
  add_block(&state, 0, NULL);
  return tg_config_tokenize(stored_name, data, length, parse_line, &state, error);
}

/* ---- Finishing ---------------------------------------------------------- */

/* The first global section that sets a keyword decides it for everyone
 * without a Match block of their own; later ones are ignored. */
static void
collect_global_settings(TgPolicy *policy)
{
  for (guint i = 0; i < policy->blocks->len; i++) {
    const TgBlock *block = g_ptr_array_index(policy->blocks, i);

    if (block->criteria != NULL)
      continue;
    for (guint k = 0; k < TG_KW_COUNT; k++) {
      const TgSetting *setting = block->settings[k];
      const TgSetting *first = policy->global[k];

      if (setting == NULL)
        continue;
      if (first == NULL)
        policy->global[k] = setting;
      else
        add_warning(policy, setting->file, setting->line,
                    "%s ignored: already set at %s:%u", tg_policy_keywords[k].name,
                    first->file, first->line);
    }
  }
}

static void
parse_defaults(TgPolicy *policy)
{
  for (guint k = 0; k < TG_KW_COUNT; k++) {
    g_autoptr(GError) error = NULL;
    g_autofree char *text = g_strdup_printf("%s %s", tg_policy_keywords[k].name,
                                            tg_policy_keywords[k].default_text);
    g_auto(GStrv) words = g_strsplit(text, " ", -1);
    TgConfigLine line = { TG_POLICY_DEFAULT_ORIGIN, 0, words, g_strv_length(words) };

    policy->defaults[k] = setting_new(k, TG_POLICY_DEFAULT_ORIGIN, 0);
    if (!parse_value(policy->defaults[k], &line, &error))
      g_error("built-in default: %s", error->message);
  }
}

static gboolean
effective_flag(const TgPolicy *policy, TgPolicyKeyword keyword)
{
  return tg_policy_effective(policy, NULL, keyword)->word != 0;
}

/* Global-only keywords cannot be in Match blocks, so no subject is needed. */
static void
fill_globals(TgPolicy *policy)
{
  TgPolicyGlobals *globals = &policy->globals;

  globals->egress_lockdown = effective_flag(policy, TG_KW_EGRESS_LOCKDOWN);
  globals->ssh_ports = tg_policy_effective(policy, NULL, TG_KW_SSH_PORTS)->ports;
  globals->listener_guard = effective_flag(policy, TG_KW_LISTENER_GUARD);
  globals->connect_back_pinning = effective_flag(policy, TG_KW_CONNECT_BACK_PINNING);
  globals->detect_ssh_banner = effective_flag(policy, TG_KW_DETECT_SSH_BANNER);
  globals->log_rejections = effective_flag(policy, TG_KW_LOG_REJECTIONS);
  globals->server_mode = effective_flag(policy, TG_KW_SERVER_MODE);
  globals->sshd_config = tg_policy_effective(policy, NULL, TG_KW_SSHD_CONFIG)->path;
  globals->sshd_binary = tg_policy_effective(policy, NULL, TG_KW_SSHD_BINARY)->path;
  globals->sshd_drop_in = tg_policy_effective(policy, NULL, TG_KW_SSHD_DROP_IN)->path;
  globals->sshd_reload = effective_flag(policy, TG_KW_SSHD_RELOAD);
}

void
tg_policy_finish(TgPolicy *policy)
{
  collect_global_settings(policy);
  parse_defaults(policy);
  fill_globals(policy);
  sort_warnings(policy);
  g_ptr_array_add(policy->files, NULL);
}

/* ---- Files -------------------------------------------------------------- */

static gint
compare_strings(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* dir/ *.conf in byte order; hidden files are skipped like a shell glob. */
static gboolean
list_dropins(const char *dir, GPtrArray *paths, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(GDir) handle = g_dir_open(dir, 0, &local_error);
  g_autoptr(GPtrArray) names = g_ptr_array_new();
  const char *name;

  if (handle == NULL) {
    if (g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return TRUE;
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: %s", dir,
                local_error->message);
    return FALSE;
  }
  while ((name = g_dir_read_name(handle)) != NULL) {
    if (name[0] != '.' && g_str_has_suffix(name, ".conf"))
      g_ptr_array_add(names, (gpointer)name);
  }
  g_ptr_array_sort(names, compare_strings);
  for (guint i = 0; i < names->len; i++)
    g_ptr_array_add(paths, g_build_filename(dir, g_ptr_array_index(names, i), NULL));
  return TRUE;
}

static gboolean
read_and_parse(TgPolicy *policy, const char *path, gboolean missing_ok, GError **error)
{
  g_autoptr(GBytes) contents = NULL;
  gsize length = 0;
  const char *data;

  if (!tg_config_read_file(path, missing_ok, &contents, error))
    return FALSE;
  if (contents == NULL)
    return TRUE;
  data = g_bytes_get_data(contents, &length);
  return tg_policy_parse_source(policy, path, data != NULL ? data : "", length, error);
}

TgPolicy *
tg_policy_load(const char *default_file, const char *main_file, const char *dropin_dir,
               GError **error)
{
  g_autoptr(TgPolicy) policy = tg_policy_new();
  g_autoptr(GPtrArray) dropins = g_ptr_array_new_with_free_func(g_free);

  if (dropin_dir != NULL && !list_dropins(dropin_dir, dropins, error))
    return NULL;
  /* A listed drop-in that vanished or dangles is an error: it might have
   * been the file that forbids something. */
  for (guint i = 0; i < dropins->len; i++) {
    if (!read_and_parse(policy, g_ptr_array_index(dropins, i), FALSE, error))
      return NULL;
  }
  if (main_file != NULL && !read_and_parse(policy, main_file, TRUE, error))
    return NULL;
  if (default_file != NULL && !read_and_parse(policy, default_file, TRUE, error))
    return NULL;
  tg_policy_finish(policy);
  return g_steal_pointer(&policy);
}

TgPolicy *
tg_policy_load_system(GError **error)
{
  return tg_policy_load(TG_DATADIR "/policy.conf", TG_SYSCONFDIR "/policy.conf",
                        TG_SYSCONFDIR "/policy.d", error);
}

TgPolicy *
tg_policy_load_files(const char *const *files, GError **error)
{
  g_autoptr(TgPolicy) policy = tg_policy_new();

  for (guint i = 0; files != NULL && files[i] != NULL; i++) {
    if (!read_and_parse(policy, files[i], FALSE, error))
      return NULL;
  }
  tg_policy_finish(policy);
  return g_steal_pointer(&policy);
}

TgPolicy *
tg_policy_parse_string(const char *name, const char *text, gssize length, GError **error)
{
  g_autoptr(TgPolicy) policy = tg_policy_new();

  g_return_val_if_fail(name != NULL && text != NULL, NULL);

  if (!tg_policy_parse_source(policy, name, text,
                              length < 0 ? strlen(text) : (gsize)length, error))
    return NULL;
  tg_policy_finish(policy);
  return g_steal_pointer(&policy);
}

gboolean
tg_policy_validate(const char *const *files, char **report, GError **error)
{
  g_autoptr(TgPolicy) policy = files != NULL && files[0] != NULL
                                   ? tg_policy_load_files(files, error)
                                   : tg_policy_load_system(error);
  GString *out;

  if (policy == NULL)
    return FALSE;
  out = g_string_new(NULL);
  for (const char *const *w = tg_policy_get_warnings(policy); *w != NULL; w++)
    g_string_append_printf(out, "%s\n", *w);
  *report = g_string_free(out, FALSE);
  return TRUE;
}

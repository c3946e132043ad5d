/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Server mode's view of the policy: SftpOnly as sshd Match conditions, and
 * the user and group names the server-mode blocks name. Pure. */
#include <string.h>

#include "policy-model.h"

/* A yes block after many "SftpOnly no" blocks multiplies out; past this
 * many Match lines for one block the drop-in says nothing for it. */
#define MAX_TERMS 64

typedef struct {
  gboolean group;
  char *list; /* sshd pattern list, unquoted */
} Literal;

static void
literal_clear(gpointer data)
{
  g_free(((Literal *)data)->list);
}

/* A conjunction of literals; an empty one holds for everyone. */
static GArray *
term_new(void)
{
  GArray *term = g_array_new(FALSE, FALSE, sizeof(Literal));

  g_array_set_clear_func(term, literal_clear);
  return term;
}

static GArray *
term_copy(GArray *term)
{
  GArray *copy = term_new();

  for (guint i = 0; i < term->len; i++) {
    Literal literal = g_array_index(term, Literal, i);

    literal.list = g_strdup(literal.list);
    g_array_append_val(copy, literal);
  }
  return copy;
}

static void
term_add(GArray *term, gboolean group, char *list)
{
  Literal literal = { group, list };

  g_array_append_val(term, literal);
}

/* A word of an sshd_config Match line: sshd splits on blanks and '=', and
 * reads a double-quoted word as it is (no escapes). NULL when sshd cannot
 * read @text back (a '"' or a control character). */
char *
tg_policy_sshd_word(const char *text)
{
  gboolean plain = text[0] != '\0';

  for (const guchar *p = (const guchar *)text; *p != '\0'; p++) {
    if (*p == '"' || *p < 0x20 || *p == 0x7f)
      return NULL;
    if (!g_ascii_isalnum(*p) && strchr("_.-,*?!@$", *p) == NULL)
      plain = FALSE;
  }
  return plain ? g_strdup(text) : g_strdup_printf("\"%s\"", text);
}

static gboolean
list_writable(const char *list)
{
  g_autofree char *word = tg_policy_sshd_word(list);

  return word != NULL;
}

/* The alternatives of "not @criterion": each a one-literal term. NULL when
 * the criterion never holds (it has no positive pattern): its negation
 * always holds. */
static GPtrArray *
negate_criterion(const TgCriterion *criterion)
{
  g_autoptr(GString) positive = g_string_new("*");
  g_autoptr(GString) negative = g_string_new(NULL);
  gboolean group = criterion->kind == TG_CRITERION_GROUP;
  GPtrArray *alternatives;
  gboolean any_positive = FALSE;

  for (guint i = 0; criterion->patterns[i] != NULL; i++) {
    const char *pattern = criterion->patterns[i];

    if (pattern[0] == '!') {
      g_string_append_printf(negative, "%s%s", negative->len > 0 ? "," : "", pattern + 1);
    } else {
      g_string_append_printf(positive, ",!%s", pattern);
      any_positive = TRUE;
    }
  }
  if (!any_positive)
    return NULL;
  alternatives = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
  /* for a group list, "*,!p..." also asks for one named group at least: a
   * user with none is taken as excluded, so sshd forwards for them */
  for (int n = 0; n < 2; n++) {
    GString *list = n == 0 ? positive : negative;
    GArray *term;

    if (list->len == 0)
      continue;
    term = term_new();
    term_add(term, group, g_strdup(list->str));
    g_ptr_array_add(alternatives, term);
  }
  return alternatives;
}

static char *
join_patterns(char **patterns)
{
  return g_strjoinv(",", patterns);
}

static gboolean
block_writable(const TgBlock *block)
{
  for (guint i = 0; i < block->criteria->len; i++) {
    const TgCriterion *criterion = &g_array_index(block->criteria, TgCriterion, i);
    g_autofree char *list = NULL;

    if (criterion->kind == TG_CRITERION_ALL)
      continue;
    list = join_patterns(criterion->patterns);
    if (!list_writable(list))
      return FALSE;
  }
  return TRUE;
}

static void
append_line(GPtrArray *lines, const TgBlock *block, GArray *term)
{
  GString *line = g_string_new(NULL);

  for (guint i = 0; block != NULL && i < block->criteria->len; i++) {
    const TgCriterion *criterion = &g_array_index(block->criteria, TgCriterion, i);
    g_autofree char *list = NULL, *word = NULL;

    if (criterion->kind == TG_CRITERION_ALL)
      continue;
    list = join_patterns(criterion->patterns);
    word = tg_policy_sshd_word(list);
    g_string_append_printf(line, "%s%s %s", line->len > 0 ? " " : "",
                           criterion->kind == TG_CRITERION_USER ? "User" : "Group", word);
  }
  for (guint i = 0; i < term->len; i++) {
    const Literal *literal = &g_array_index(term, Literal, i);
    g_autofree char *word = tg_policy_sshd_word(literal->list);

    g_string_append_printf(line, "%s%s %s", line->len > 0 ? " " : "",
                           literal->group ? "Group" : "User", word);
  }
  if (line->len == 0)
    g_string_append(line, "All");
  g_ptr_array_add(lines, g_string_free(line, FALSE));
}

GPtrArray *
tg_policy_sftp_only_sshd_matches(const TgPolicy *policy, GPtrArray *notes)
{
  GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
  /* who no earlier "SftpOnly no" block took: a disjunction of terms */
  g_autoptr(GPtrArray) rest = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
  const TgSetting *global;

  g_ptr_array_add(rest, term_new());
  for (guint b = 0; b < policy->match_blocks->len; b++) {
    const TgBlock *block = g_ptr_array_index(policy->match_blocks, b);
    const TgSetting *setting = block->settings[TG_KW_SFTP_ONLY];
    g_autoptr(GPtrArray) product = NULL;
    gboolean never = FALSE;

    if (setting == NULL)
      continue;
    if (!block_writable(block)) {
      g_ptr_array_add(notes, g_strdup_printf(
                                 "%s:%u: a name in this Match cannot be written in an "
                                 "sshd_config Match line (it has '\"' or a control "
                                 "character); the drop-in says nothing %s",
                                 block->file, block->line,
                                 setting->word != 0 ? "for this block"
                                                    : "for this and later SftpOnly blocks"));
      if (setting->word != 0)
        continue;
      return lines;
    }
    if (setting->word != 0) {
      for (guint t = 0; t < rest->len; t++)
        append_line(lines, block, g_ptr_array_index(rest, t));
      continue;
    }
    /* SftpOnly no: later blocks apply only where this one does not */
    product = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
    for (guint c = 0; c < block->criteria->len && !never; c++) {
      const TgCriterion *criterion = &g_array_index(block->criteria, TgCriterion, c);
      g_autoptr(GPtrArray) alternatives = NULL;

      if (criterion->kind == TG_CRITERION_ALL)
        continue;
      alternatives = negate_criterion(criterion);
      if (alternatives == NULL) {
        never = TRUE;
        break;
      }
      for (guint t = 0; t < rest->len; t++) {
        for (guint a = 0; a < alternatives->len; a++) {
          GArray *term = term_copy(g_ptr_array_index(rest, t));
          GArray *alternative = g_ptr_array_index(alternatives, a);

          term_add(term, g_array_index(alternative, Literal, 0).group,
                   g_strdup(g_array_index(alternative, Literal, 0).list));
          g_ptr_array_add(product, term);
        }
      }
    }
    if (never)
      continue;
    if (product->len == 0) /* Match All ... SftpOnly no: nobody is left */
      return lines;
    if (product->len > MAX_TERMS) {
      g_ptr_array_add(notes, g_strdup_printf(
                                 "%s:%u: with the SftpOnly blocks before it, this one "
                                 "would need more than %u Match lines; the drop-in says "
                                 "nothing for later SftpOnly blocks",
                                 block->file, block->line, MAX_TERMS));
      return lines;
    }
    g_ptr_array_unref(rest);
    rest = g_steal_pointer(&product);
  }
  global = policy->global[TG_KW_SFTP_ONLY] != NULL ? policy->global[TG_KW_SFTP_ONLY]
                                                    : policy->defaults[TG_KW_SFTP_ONLY];
  if (global->word != 0) {
    for (guint t = 0; t < rest->len; t++)
      append_line(lines, NULL, g_ptr_array_index(rest, t));
  }
  return lines;
}

static void
name_free(gpointer data)
{
  TgPolicyServerName *name = data;

  g_free(name->name);
  g_free(name);
}

GPtrArray *
tg_policy_server_names(const TgPolicy *policy)
{
  GPtrArray *names = g_ptr_array_new_with_free_func(name_free);

  for (guint b = 0; b < policy->match_blocks->len; b++) {
    const TgBlock *block = g_ptr_array_index(policy->match_blocks, b);

    if (block->settings[TG_KW_SFTP_ONLY] == NULL &&
        block->settings[TG_KW_SERVER_PERMIT_OPEN] == NULL)
      continue;
    for (guint c = 0; c < block->criteria->len; c++) {
      const TgCriterion *criterion = &g_array_index(block->criteria, TgCriterion, c);

      if (criterion->kind == TG_CRITERION_ALL)
        continue;
      for (guint i = 0; criterion->patterns[i] != NULL; i++) {
        const char *pattern = criterion->patterns[i];
        TgPolicyServerName *name = g_new0(TgPolicyServerName, 1);

        name->group = criterion->kind == TG_CRITERION_GROUP;
        name->negated = pattern[0] == '!';
        name->name = g_strdup(pattern + (name->negated ? 1 : 0));
        name->wildcard = strpbrk(name->name, "*?") != NULL;
        name->file = block->file;
        name->line = block->line;
        g_ptr_array_add(names, name);
      }
    }
  }
  return names;
}

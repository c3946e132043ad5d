/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for policy-sshd.c: SftpOnly as sshd Match lines. Besides the
 * exact lines for a few policies, every policy below is checked against an
 * sshd-like reader of those lines (OpenSSH's match_pattern_list and
 * ga_match_pattern_list): for every subject, some line matches exactly
 * when the policy says SftpOnly yes. */
#include <string.h>

#include "policy-match.h"
#include "policy.h"
#include "tg-error.h"

/* ---- an sshd-like reader of the lines ---- */

/* sshd's strdelim for a Match line: blanks and '=' split, "..." is one word. */
static char **
split_words(const char *line)
{
  GPtrArray *words = g_ptr_array_new();
  const char *p = line;

  while (*p != '\0') {
    GString *word = g_string_new(NULL);

    while (*p == ' ' || *p == '=')
      p++;
    if (*p == '\0') {
      g_string_free(word, TRUE);
      break;
    }
    if (*p == '"') {
      const char *end = strchr(p + 1, '"');

      g_assert_nonnull(end);
      g_string_append_len(word, p + 1, end - p - 1);
      p = end + 1;
    } else {
      while (*p != '\0' && *p != ' ' && *p != '=' && *p != '"')
        g_string_append_c(word, *p++);
    }
    g_ptr_array_add(words, g_string_free(word, FALSE));
  }
  g_ptr_array_add(words, NULL);
  return (char **)g_ptr_array_free(words, FALSE);
}

/* match_pattern_list(): 1 positive, -1 negated, 0 none */
static int
sshd_list(const char *string, const char *list)
{
  g_auto(GStrv) patterns = g_strsplit(list, ",", -1);
  int got = 0;

  for (guint i = 0; patterns[i] != NULL; i++) {
    gboolean negated = patterns[i][0] == '!';

    if (tg_glob_match(patterns[i] + (negated ? 1 : 0), string)) {
      if (negated)
        return -1;
      got = 1;
    }
  }
  return got;
}

static gboolean
sshd_line_matches(const char *line, const TgPolicySubject *subject)
{
  g_auto(GStrv) words = split_words(line);

  if (g_strv_length(words) == 1 && g_str_equal(words[0], "All"))
    return TRUE;
  g_assert_cmpuint(g_strv_length(words) % 2, ==, 0);
  for (guint i = 0; words[i] != NULL; i += 2) {
    if (g_str_equal(words[i], "User")) {
      if (sshd_list(subject->user, words[i + 1]) != 1)
        return FALSE;
    } else {
      gboolean found = FALSE;

      g_assert_cmpstr(words[i], ==, "Group");
      for (guint g = 0; subject->groups[g] != NULL; g++) {
        int r = sshd_list(subject->groups[g], words[i + 1]);

        if (r < 0)
          return FALSE;
        found |= r > 0;
      }
      if (!found)
        return FALSE;
    }
  }
  return TRUE;
}

/* ---- helpers ---- */

static TgPolicy *
parse(const char *text)
{
  g_autoptr(GError) error = NULL;
  TgPolicy *policy = tg_policy_parse_string("t.conf", text, -1, &error);

  g_assert_no_error(error);
  return policy;
}

static char *
lines_text(const char *policy_text, GPtrArray *notes)
{
  g_autoptr(TgPolicy) policy = parse(policy_text);
  g_autoptr(GPtrArray) lines = tg_policy_sftp_only_sshd_matches(policy, notes);

  g_ptr_array_add(lines, NULL);
  return g_strjoinv("\n", (char **)lines->pdata);
}

/* ---- exact lines ---- */

static void
test_lines(void)
{
  static const struct {
    const char *policy;
    const char *lines;
  } cases[] = {
    { "", "" },
    { "SftpOnly yes\n", "All" },
    { "Match Group sftp\n SftpOnly yes\n", "Group sftp" },
    { "Match Group sftp@corp User *@corp\n SftpOnly yes\n",
      "Group sftp@corp User *@corp" },
    { "Match User \"CORP\\\\bob,carol\"\n SftpOnly yes\n", "User \"CORP\\bob,carol\"" },
    { "Match Group \"domain users\"\n SftpOnly yes\n", "Group \"domain users\"" },
    { "Match User bob\n SftpOnly no\nMatch Group sftp\n SftpOnly yes\n",
      "Group sftp User *,!bob" },
    { "Match User a*,!alice\n SftpOnly no\nMatch Group sftp\n SftpOnly yes\n",
      "Group sftp User *,!a*\nGroup sftp User alice" },
    { "Match Group staff User x\n SftpOnly no\nMatch Group sftp\n SftpOnly yes\n",
      "Group sftp Group *,!staff\nGroup sftp User *,!x" },
    /* a block that never matches excludes nobody */
    { "Match User !bob\n SftpOnly no\nMatch Group sftp\n SftpOnly yes\n", "Group sftp" },
    /* Match All ... no: nobody is left for later blocks */
    { "Match Group sftp\n SftpOnly yes\nMatch All\n SftpOnly no\nMatch Group x\n "
      "SftpOnly yes\n",
      "Group sftp" },
    { "SftpOnly yes\nMatch Group admins\n SftpOnly no\n", "Group *,!admins" },
    /* other keywords' blocks do not matter */
    { "Match Group sftp\n PermitOpen none\nMatch User bob\n SftpOnly yes\n", "User bob" },
  };

  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *text = lines_text(cases[i].policy, notes);

    g_test_message("policy: %s", cases[i].policy);
    g_assert_cmpstr(text, ==, cases[i].lines);
    g_assert_cmpuint(notes->len, ==, 0);
  }
}

static void
test_words(void)
{
  static const struct {
    const char *text, *word;
  } cases[] = {
    { "tg-sftp1", "tg-sftp1" },   { "alice@corp", "alice@corp" },
    { "*,!bob", "*,!bob" },   { "CORP\\bob", "\"CORP\\bob\"" },
    { "a b", "\"a b\"" },         { "x=y", "\"x=y\"" },
    { "a#b", "\"a#b\"" },         { "q\"x", NULL },
    { "tab\there", NULL },        { "", "\"\"" },
  };

  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *word = tg_policy_sshd_word(cases[i].text);
    g_assert_cmpstr(word, ==, cases[i].word);
  }
}

static void
test_not_writable(void)
{
  g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *yes = lines_text("Match User \"a\\\"b\"\n SftpOnly yes\n"
                                    "Match Group sftp\n SftpOnly yes\n",
                                    notes);
  g_autofree char *no = NULL;

  g_assert_cmpstr(yes, ==, "Group sftp");
  g_assert_cmpuint(notes->len, ==, 1);
  g_assert_nonnull(strstr(g_ptr_array_index(notes, 0), "t.conf:1: "));
  g_ptr_array_set_size(notes, 0);
  /* an exclusion sshd cannot read: later blocks cannot be written exactly */
  no = lines_text("Match User \"a\\\"b\"\n SftpOnly no\nMatch Group sftp\n SftpOnly yes\n",
                  notes);
  g_assert_cmpstr(no, ==, "");
  g_assert_cmpuint(notes->len, ==, 1);
  g_assert_nonnull(strstr(g_ptr_array_index(notes, 0), "later SftpOnly blocks"));
}

static void
test_too_many_lines(void)
{
  GString *text = g_string_new(NULL);
  g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *lines = NULL;

  for (guint i = 0; i < 7; i++)
    g_string_append_printf(text, "Match User u%u* Group g%u\n SftpOnly no\n", i, i);
  g_string_append(text, "Match Group sftp\n SftpOnly yes\n");
  lines = lines_text(text->str, notes);
  g_string_free(text, TRUE);
  g_assert_cmpstr(lines, ==, "");
  g_assert_cmpuint(notes->len, ==, 1);
  g_assert_nonnull(strstr(g_ptr_array_index(notes, 0), "more than 64 Match lines"));
}

/* ---- sshd and the policy agree ---- */

static const char *const agreement_policies[] = {
  "Match Group sftp\n SftpOnly yes\n",
  "Match User bob\n SftpOnly no\nMatch Group sftp\n SftpOnly yes\n",
  "Match Group staff,!sftp\n SftpOnly no\nMatch Group sftp,dba\n SftpOnly yes\n",
  "Match User a*,!alice Group dba\n SftpOnly no\nMatch Group sftp User *@corp\n"
  " SftpOnly yes\nMatch User carol\n SftpOnly yes\n",
  "SftpOnly yes\nMatch Group staff\n SftpOnly no\nMatch User bob\n SftpOnly no\n",
  "Match Group \"domain users\"\n SftpOnly no\nMatch All\n SftpOnly yes\n",
  "Match User CORP\\*\n SftpOnly yes\nMatch Group sftp\n SftpOnly no\nMatch Group dba\n"
  " SftpOnly yes\n",
  "Match Group contractors User !carol\n SftpOnly no\nMatch Group sftp,!dba\n"
  " SftpOnly yes\nSftpOnly yes\n",
};

static void
test_agreement(void)
{
  const char *const users[] = { "alice", "bob", "carol", "alice@corp", "CORP\\bob", "dave" };
  const char *const groups[] = { "sftp", "staff", "dba", "domain users", "contractors" };

  for (guint p = 0; p < G_N_ELEMENTS(agreement_policies); p++) {
    g_autoptr(TgPolicy) policy = parse(agreement_policies[p]);
    g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) lines = tg_policy_sftp_only_sshd_matches(policy, notes);

    g_assert_cmpuint(notes->len, ==, 0);
    for (guint u = 0; u < G_N_ELEMENTS(users); u++) {
      for (guint mask = 0; mask < (1u << G_N_ELEMENTS(groups)); mask++) {
        const char *subject_groups[G_N_ELEMENTS(groups) + 1];
        guint n = 0;
        g_autoptr(TgPolicySubject) subject = NULL;
        gboolean policy_yes, sshd_yes = FALSE;

        for (guint g = 0; g < G_N_ELEMENTS(groups); g++) {
          if (mask & (1u << g))
            subject_groups[n++] = groups[g];
        }
        subject_groups[n] = NULL;
        subject = tg_policy_subject_new(users[u], 1000 + u, subject_groups);
        policy_yes = tg_policy_is_sftp_only(policy, subject, NULL);
        for (guint l = 0; l < lines->len && !sshd_yes; l++)
          sshd_yes = sshd_line_matches(g_ptr_array_index(lines, l), subject);
        if (n == 0) {
          /* no named group: "Group *,!x" cannot hold, so sshd may forward
           * where the policy says no forwarding, never the other way */
          g_assert_true(!sshd_yes || policy_yes);
          continue;
        }
        if (policy_yes != sshd_yes)
          g_error("policy %u, user %s, groups mask %u: policy %d, sshd %d", p, users[u],
                  mask, policy_yes, sshd_yes);
      }
    }
  }
}

static void
test_server_names(void)
{
  g_autoptr(TgPolicy) policy =
      parse("Match User alice@corp,!b* Group sftp\n SftpOnly yes\n"
            "Match Group ignored\n PermitOpen none\n"
            "Match Group \"jump users\"\n ServerPermitOpen intra:80\n");
  g_autoptr(GPtrArray) names = tg_policy_server_names(policy);
  const TgPolicyServerName *name;

  g_assert_cmpuint(names->len, ==, 4);
  name = g_ptr_array_index(names, 0);
  g_assert_cmpstr(name->name, ==, "alice@corp");
  g_assert_false(name->group || name->negated || name->wildcard);
  g_assert_cmpstr(name->file, ==, "t.conf");
  g_assert_cmpuint(name->line, ==, 1);
  name = g_ptr_array_index(names, 1);
  g_assert_cmpstr(name->name, ==, "b*");
  g_assert_true(name->negated && name->wildcard && !name->group);
  name = g_ptr_array_index(names, 2);
  g_assert_cmpstr(name->name, ==, "sftp");
  g_assert_true(name->group);
  name = g_ptr_array_index(names, 3);
  g_assert_cmpstr(name->name, ==, "jump users");
  g_assert_cmpuint(name->line, ==, 5);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/policy-sshd/lines", test_lines);
  g_test_add_func("/policy-sshd/words", test_words);
  g_test_add_func("/policy-sshd/not-writable", test_not_writable);
  g_test_add_func("/policy-sshd/too-many-lines", test_too_many_lines);
  g_test_add_func("/policy-sshd/agreement", test_agreement);
  g_test_add_func("/policy-sshd/server-names", test_server_names);
  return g_test_run();
}

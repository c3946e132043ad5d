/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The policy verbs: `check-policy` validates policy files like `sshd -t`
 * and, for one user, prints the effective policy like `sshd -T`
 * (doc/policy.md). No daemon is involved: the files are read by the policy
 * engine itself, with the rights of whoever runs the command. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "policy.h"
#include "tg-error.h"

/* getpwnam_r() buffers grow up to this; real entries are far smaller. */
#define MAX_NSS_BUFFER (1024 * 1024)

typedef struct {
  char *config_dir;
  char *default_file;
  char *user;
  char *uid;
  char *groups;
  gboolean origins;
  gboolean strict;
  char **files;
} CheckPolicyOptions;

static void
check_policy_options_clear(CheckPolicyOptions *options)
{
  g_free(options->config_dir);
  g_free(options->default_file);
  g_free(options->user);
  g_free(options->uid);
  g_free(options->groups);
  g_strfreev(options->files);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(CheckPolicyOptions, check_policy_options_clear)

static const char check_policy_description[] =
    "Without FILE, checks the policy as tunnelgated reads it: DIR/policy.d/*.conf\n"
    "in lexical order, then DIR/policy.conf, then the shipped default, the first\n"
    "value winning (DIR is " TG_SYSCONFDIR "). With FILEs, checks exactly\n"
    "those files, the first winning; each must exist.\n"
    "\n"
    "A valid policy is silent. Errors and warnings go to standard error, naming\n"
    "file and line. With --user or --uid, the policy that applies to that user\n"
    "is printed, one keyword per line, as a policy file that means the same.\n"
    "\n"
    "Exit status:\n"
    "  0  the policy is valid\n"
    "  1  it is not (or, with --strict, it has warnings), bad usage,\n"
    "     or an unknown user\n";

static gboolean
parse_check_policy_options(int *argc, char ***argv, CheckPolicyOptions *options)
{
  const GOptionEntry entries[] = {
    { "config-dir", 0, 0, G_OPTION_ARG_FILENAME, &options->config_dir,
      "Read DIR/policy.conf and DIR/policy.d/*.conf (default " TG_SYSCONFDIR ")", "DIR" },
    { "default", 0, 0, G_OPTION_ARG_FILENAME, &options->default_file,
      "The shipped default policy (default " TG_DATADIR "/policy.conf)", "FILE" },
    /* tunnelgated's name for it */
    { "default-policy", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME,
      &options->default_file, NULL, NULL },
    { "user", 0, 0, G_OPTION_ARG_STRING, &options->user,
      "Print the effective policy for user NAME", "NAME" },
    { "uid", 0, 0, G_OPTION_ARG_STRING, &options->uid,
      "Print the effective policy for the user with UID", "UID" },
    { "groups", 0, 0, G_OPTION_ARG_STRING, &options->groups,
      "The user's groups, instead of asking the system (may be empty)", "GROUP,…" },
    { "origins", 0, 0, G_OPTION_ARG_NONE, &options->origins,
      "End each line of the effective policy with the file:line it came from", NULL },
    { "strict", 0, 0, G_OPTION_ARG_NONE, &options->strict,
      "Fail on warnings as well as on errors", NULL },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &options->files, NULL,
      NULL },
    { NULL },
  };

  return ctl_parse_options("check-policy", "[FILE…]", check_policy_description, entries,
                           argc, argv);
}

/* Combinations that cannot mean anything. */
static gboolean
check_usage(const CheckPolicyOptions *options)
{
  const char *problem = NULL;

  if (options->files != NULL && (options->config_dir || options->default_file))
    problem = "--config-dir and --default choose the installed files; "
              "they cannot be combined with FILE arguments";
  else if (options->user != NULL && options->uid != NULL)
    problem = "--user and --uid cannot be combined";
  else if (options->user != NULL && *options->user == '\0')
    problem = "--user needs a user name";
  else if (options->groups != NULL && !options->user && !options->uid)
    problem = "--groups needs --user or --uid";
  else if (options->origins && !options->user && !options->uid)
    problem = "--origins needs --user or --uid";
  if (problem == NULL)
    return TRUE;
  ctl_error("%s", problem);
  ctl_error("try 'tunnelgatectl check-policy --help'");
  return FALSE;
}

/* ---- The policy --------------------------------------------------------- */

/* tunnelgated takes a missing file or directory as empty; one named on the
 * command line is likelier a typo than a wish. */
static gboolean
check_named_path_exists(const char *path, GError **error)
{
  if (path == NULL || g_file_test(path, G_FILE_TEST_EXISTS))
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: %s", path,
              g_strerror(ENOENT));
  return FALSE;
}

static TgPolicy *
load_policy(const CheckPolicyOptions *options, GError **error)
{
  const char *config_dir = options->config_dir ? options->config_dir : TG_SYSCONFDIR;
  const char *default_file =
      options->default_file ? options->default_file : TG_DATADIR "/policy.conf";
  g_autofree char *main_file = NULL;
  g_autofree char *dropin_dir = NULL;

  if (options->files != NULL)
    return tg_policy_load_files((const char *const *)options->files, error);

  if (!check_named_path_exists(options->config_dir, error) ||
      !check_named_path_exists(options->default_file, error))
    return NULL;
  /* the same files, in the same order, as the daemon */
  main_file = g_build_filename(config_dir, "policy.conf", NULL);
  dropin_dir = g_build_filename(config_dir, "policy.d", NULL);
  return tg_policy_load(default_file, main_file, dropin_dir, error);
}

/* Warnings are printed either way; with --strict they fail the check. */
static gboolean
report_warnings(const TgPolicy *policy, gboolean strict)
{
  const char *const *warnings = tg_policy_get_warnings(policy);

  for (guint i = 0; warnings[i] != NULL; i++)
    ctl_error("warning: %s", warnings[i]);
  return !strict || warnings[0] == NULL;
}

/* ---- Who the policy is evaluated for ------------------------------------ */

static gboolean
parse_uid(const char *text, uid_t *uid, GError **error)
{
  guint64 value;

  /* (uid_t)-1 means "no user" to the kernel */
  if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT32 - 1, &value, NULL)) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "--uid: '%s' is not a user ID", text);
    return FALSE;
  }
  *uid = (uid_t)value;
  return TRUE;
}

static gboolean
lookup_uid_by_name(const char *name, uid_t *uid, GError **error)
{
  long initial = sysconf(_SC_GETPW_R_SIZE_MAX);
  gsize size = initial > 0 ? (gsize)initial : 4096;

  for (;;) {
    g_autofree char *buffer = g_malloc(size);
    struct passwd entry;
    struct passwd *result = NULL;
    int status = getpwnam_r(name, &entry, buffer, size, &result);

    if (status == ERANGE && size < MAX_NSS_BUFFER) {
      size *= 2;
      continue;
    }
    if (result == NULL) {
      g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "unknown user '%s'%s%s", name,
                  status != 0 ? ": " : "", status != 0 ? g_strerror(status) : "");
      return FALSE;
    }
    *uid = entry.pw_uid;
    return TRUE;
  }
}

/* "a,b" -> { "a", "b" }; "" is no group at all. */
static char **
parse_groups(const char *text, GError **error)
{
  g_auto(GStrv) groups = g_strsplit(text, ",", -1);

  for (guint i = 0; groups[i] != NULL; i++) {
    if (*groups[i] == '\0') {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "--groups: empty group name in '%s'", text);
      return NULL;
    }
  }
  return g_steal_pointer(&groups);
}

/* The daemon knows callers by uid and takes their name and groups from NSS
 * (tg_policy_subject_from_uid()); so does this, unless --groups sets the
 * groups: then --user NAME needs no NSS at all (a hypothetical user, whose
 * uid does not matter: Match compares names only). */
static TgPolicySubject *
resolve_subject(const CheckPolicyOptions *options, GError **error)
{
  g_autoptr(TgPolicySubject) subject = NULL;
  g_auto(GStrv) groups = NULL;
  uid_t uid = (uid_t)-1;

  if (options->groups != NULL && (groups = parse_groups(options->groups, error)) == NULL)
    return NULL;
  if (options->user != NULL && groups != NULL)
    return tg_policy_subject_new(options->user, uid, (const char *const *)groups);

  if (options->uid != NULL ? !parse_uid(options->uid, &uid, error)
                           : !lookup_uid_by_name(options->user, &uid, error))
    return NULL;
  subject = tg_policy_subject_from_uid(uid, error);
  if (subject == NULL)
    return NULL;
  if (options->user != NULL && !g_str_equal(subject->user, options->user))
    ctl_error("note: '%s' shares uid %u with '%s', the name the daemon uses",
              options->user, (guint)uid, subject->user);
  if (groups != NULL)
    return tg_policy_subject_new(subject->user, uid, (const char *const *)groups);
  return g_steal_pointer(&subject);
}

/* ---- The verb ----------------------------------------------------------- */

/* stdio, not g_print(): paths are printed byte for byte, whatever the
 * locale, so that the output parses back as the same policy. */
static gboolean
print_effective_policy(const TgPolicy *policy, const TgPolicySubject *subject,
                       gboolean with_origins, GError **error)
{
  g_autofree char *dump = tg_policy_dump_effective(policy, subject, with_origins);

  if (fputs(dump, stdout) == EOF || fflush(stdout) != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "cannot write the policy: %s",
                g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

int
ctl_check_policy(int argc, char **argv)
{
  g_auto(CheckPolicyOptions) options = { 0 };
  g_autoptr(TgPolicySubject) subject = NULL;
  g_autoptr(TgPolicy) policy = NULL;
  g_autoptr(GError) error = NULL;
  gboolean want_dump;

  if (!parse_check_policy_options(&argc, &argv, &options) || !check_usage(&options))
    return CTL_EXIT_FAILURE;
  want_dump = options.user != NULL || options.uid != NULL;

  /* the engine's messages already begin with "file:line: " */
  if ((want_dump && (subject = resolve_subject(&options, &error)) == NULL) ||
      (policy = load_policy(&options, &error)) == NULL) {
    ctl_error("%s", error->message);
    return CTL_EXIT_FAILURE;
  }
  if (!report_warnings(policy, options.strict))
    return CTL_EXIT_FAILURE;
  if (want_dump && !print_effective_policy(policy, subject, options.origins, &error)) {
    ctl_error("%s", error->message);
    return CTL_EXIT_FAILURE;
  }
  return CTL_EXIT_OK;
}

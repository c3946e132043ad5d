/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for profile.c: tunnel profiles in profiles.d, who may start
 * them, and the identity file check. */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profile.h"
#include "tg-error.h"

#define FINGERPRINT "SHA256:LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE"

static const char good_profile[] =
    "# The DBA team's way into the intranet database\n" /* 1 */
    "Description  Intranet database for the DBA team\n" /* 2 */
    "Server       gw.corp.example.com:2222\n"           /* 3 */
    "User         tunnel-db\n"                          /* 4 */
    "IdentityFile /etc/tunnelgate/keys/db_ed25519\n"    /* 5 */
    "HostKey      " FINGERPRINT "\n"                    /* 6 */
    "Forward      \"L 127.0.0.1:5432:db.corp:5432\"\n"  /* 7 */
    "forward      L 8443:web.corp:443\n"                /* 8 */
    "AllowGroups  dba,!contractors\n"                   /* 9 */
    "AllowGroups  ops\n"                                /* 10 */
    "# end\n";                                          /* 11 */

static TgProfile *
parse_profile(const char *text, GError **error)
{
  return tg_profile_parse_string("db", "p.conf", text, -1, error);
}

static void
test_good_profile(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgProfile) profile = parse_profile(good_profile, &error);
  const TgForward *first, *second;

  g_assert_no_error(error);
  g_assert_cmpstr(profile->name, ==, "db");
  g_assert_cmpstr(profile->file, ==, "p.conf");
  g_assert_cmpstr(profile->description, ==, "Intranet database for the DBA team");
  g_assert_cmpstr(profile->server_host, ==, "gw.corp.example.com");
  g_assert_cmpuint(profile->server_port, ==, 2222);
  g_assert_cmpstr(profile->user, ==, "tunnel-db");
  g_assert_cmpstr(profile->identity_file, ==, "/etc/tunnelgate/keys/db_ed25519");
  g_assert_cmpstr(profile->host_key, ==, FINGERPRINT);
  g_assert_cmpuint(profile->forwards->len, ==, 2);
  first = g_ptr_array_index(profile->forwards, 0);
  second = g_ptr_array_index(profile->forwards, 1);
  g_assert_cmpstr(first->spec, ==, "L 127.0.0.1:5432:db.corp:5432");
  g_assert_cmpstr(second->spec, ==, "L 8443:web.corp:443");
  g_assert_null(profile->allow_users);
  g_assert_cmpuint(g_strv_length(profile->allow_groups), ==, 3);
  g_assert_cmpstr(profile->allow_groups[2], ==, "ops");
}

static void
test_minimal_profile(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgProfile) profile = parse_profile("Server [2001:db8::1]\n"
                                               "User t\n"
                                               "IdentityFile /k\n"
                                               "HostKey " FINGERPRINT "\n"
                                               "Forward R 0:localhost:80\n"
                                               "AllowUsers alice bob,carol\n",
                                               &error);

  g_assert_no_error(error);
  g_assert_null(profile->description);
  g_assert_cmpstr(profile->server_host, ==, "2001:db8::1");
  g_assert_cmpuint(profile->server_port, ==, 22);
  g_assert_cmpuint(g_strv_length(profile->allow_users), ==, 3);
  g_assert_null(profile->allow_groups);
}

typedef struct {
  const char *removed; /* lines of good_profile to comment out, or NULL */
  const char *added;   /* a line to put at line 11, or NULL */
  const char *message;
} BadProfileCase;

/* Removed lines become comments and the added one replaces "# end", so
 * the other lines keep their numbers. */
static GString *
edit_profile(const BadProfileCase *c)
{
  GString *text = g_string_new(good_profile);

  if (c->removed != NULL) {
    g_autoptr(GString) comments = g_string_new(NULL);

    for (const char *p = c->removed; *p != '\0'; p++)
      if (*p == '\n')
        g_string_append(comments, "#\n");
    g_assert_cmpuint(g_string_replace(text, c->removed, comments->str, 1), ==, 1);
  }
  if (c->added != NULL)
    g_assert_cmpuint(g_string_replace(text, "# end\n", c->added, 1), ==, 1);
  return text;
}

static void
test_bad_profiles(void)
{
  static const BadProfileCase cases[] = {
    { "Server       gw.corp.example.com:2222\n", NULL, "p.conf: Server is required" },
    { "User         tunnel-db\n", NULL, "p.conf: User is required" },
    { "IdentityFile /etc/tunnelgate/keys/db_ed25519\n", NULL,
      "p.conf: IdentityFile is required" },
    { "HostKey      " FINGERPRINT "\n", NULL, "p.conf: HostKey is required" },
    { "Forward      \"L 127.0.0.1:5432:db.corp:5432\"\n"
      "forward      L 8443:web.corp:443\n",
      NULL, "p.conf: Forward is required" },
    { "AllowGroups  dba,!contractors\nAllowGroups  ops\n", NULL,
      "p.conf: AllowUsers or AllowGroups is required" },
    { "HostKey      " FINGERPRINT "\n", "HostKey SHA256:short\n",
      "p.conf:11: HostKey: invalid value 'SHA256:short' (expected SHA256: and 43 base64 "
      "characters)" },
    { "HostKey      " FINGERPRINT "\n", "HostKey MD5:aa:bb\n",
      "p.conf:11: HostKey: invalid value 'MD5:aa:bb' (expected SHA256: and 43 base64 "
      "characters)" },
    { "HostKey      " FINGERPRINT "\n", "HostKey SHA256:" FINGERPRINT "\n",
      "p.conf:11: HostKey: invalid value 'SHA256:" FINGERPRINT "' (expected SHA256: and "
      "43 base64 characters)" },
    { "Server       gw.corp.example.com:2222\n", "Server alice@gw\n",
      "p.conf:11: Server: invalid value 'alice@gw' (expected host[:port]; the user goes "
      "in User)" },
    { "Server       gw.corp.example.com:2222\n", "Server @other\n",
      "p.conf:11: Server: invalid value '@other' (expected host[:port]; the user goes in "
      "User)" },
    { "Server       gw.corp.example.com:2222\n", "Server gw:0\n",
      "p.conf:11: Server: invalid value 'gw:0' (destination 'gw:0': invalid port '0' "
      "(expected 1 to 65535))" },
    { "User         tunnel-db\n", "User -oProxyCommand=x\n",
      "p.conf:11: User: invalid value '-oProxyCommand=x' (1 to 32 of A-Z a-z 0-9 . _ -, "
      "not starting with '-')" },
    { "User         tunnel-db\n", "User a b\n",
      "p.conf:11: User takes one argument, not 2" },
    { "User         tunnel-db\n", "User\n", "p.conf:11: User: missing value" },
    { "IdentityFile /etc/tunnelgate/keys/db_ed25519\n", "IdentityFile keys/db\n",
      "p.conf:11: IdentityFile: invalid value 'keys/db' (expected an absolute path)" },
    { NULL, "Forward X 1:a:2\n",
      "p.conf:11: Forward: forward 'X 1:a:2': unknown kind 'X' (expected L, R or D)" },
    { NULL, "AllowGroups a,,b\n",
      "p.conf:11: AllowGroups: empty pattern in list 'a,,b'" },
    { NULL, "AllowUsers ,\n", "p.conf:11: AllowUsers: empty pattern in list ','" },
    { NULL, "Match User alice\n", "p.conf:11: unknown keyword 'Match'" },
    { NULL, "PermitOpen any\n", "p.conf:11: unknown keyword 'PermitOpen'" },
    { NULL, "Server other:22\n", "p.conf:11: Server given twice (first at line 3)" },
    { NULL, "Description again\n",
      "p.conf:11: Description given twice (first at line 2)" },
    { NULL, "HostKey \"" FINGERPRINT "\n", "p.conf:11: unterminated quote" },
    { NULL, "User \xff\n", "p.conf:11: invalid UTF-8 at byte 5" },
    /* Autostart and AutostartUser */
    { NULL, "Autostart maybe\n",
      "p.conf:11: Autostart: invalid value 'maybe' (expected yes or no)" },
    { NULL, "Autostart 1\n",
      "p.conf:11: Autostart: invalid value '1' (expected yes or no)" },
    { NULL, "Autostart\n", "p.conf:11: Autostart: missing value" },
    { NULL, "Autostart yes please\n", "p.conf:11: Autostart takes one argument, not 2" },
    { NULL, "Autostart yes\n",
      "p.conf:11: Autostart yes needs AutostartUser (the local account that owns the "
      "tunnel)" },
    { NULL, "Autostart yes\nAutostart no\nAutostartUser svc\n",
      "p.conf:12: Autostart given twice (first at line 11)" },
    { NULL, "AutostartUser svc\n",
      "p.conf:11: AutostartUser without Autostart (add Autostart yes, or Autostart no "
      "to keep it switched off)" },
    { NULL, "Autostart yes\nAutostartUser svc\nAutostartUser svc\n",
      "p.conf:13: AutostartUser given twice (first at line 12)" },
    { NULL, "Autostart yes\nAutostartUser\n", "p.conf:12: AutostartUser: missing value" },
    { NULL, "Autostart yes\nAutostartUser a b\n",
      "p.conf:12: AutostartUser takes one argument, not 2" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GString) text = edit_profile(&cases[i]);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgProfile) profile = NULL;

    g_test_message("%s", cases[i].message);
    profile = parse_profile(text->str, &error);
    g_assert_null(profile);
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, cases[i].message);
  }
}

/* AutostartUser's syntax: a local account name, which NSS looks up later. */
static void
test_autostart_user_names(void)
{
  static const char *const good[] = { "tunnel-db", "svc_1", "a",     "1a",
                                      "a.b",       "Svc",   "_sync", "0x" };
  static const char *const bad[] = { "-x",  ".x", "1000",        "0",    "a:b", "a/b",
                                     "a@b", "a$", "caf\xc3\xa9", "\"\"", "a\\b" };
  g_autofree char *longest = g_strnfill(32, 'u');
  g_autofree char *too_long = g_strnfill(33, 'u');

  for (gsize i = 0; i < G_N_ELEMENTS(good) + 1; i++) {
    const char *name = i < G_N_ELEMENTS(good) ? good[i] : longest;
    g_autofree char *text =
        g_strdup_printf("%sAutostart yes\nAutostartUser %s\n", good_profile, name);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgProfile) profile = parse_profile(text, &error);

    g_assert_no_error(error);
    g_assert_cmpstr(profile->autostart_user, ==, name);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(bad) + 1; i++) {
    const char *name = i < G_N_ELEMENTS(bad) ? bad[i] : too_long;
    g_autofree char *text =
        g_strdup_printf("%sAutostart yes\nAutostartUser %s\n", good_profile, name);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgProfile) profile = parse_profile(text, &error);

    g_test_message("AutostartUser %s", name);
    g_assert_null(profile);
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_true(
        g_str_has_prefix(error->message, "p.conf:13: AutostartUser: invalid value"));
    g_assert_true(g_str_has_suffix(
        error->message, "(a local user name: 1 to 32 of A-Z a-z 0-9 . _ -, not starting "
                        "with '.' or '-', not only digits)"));
  }
}

static void
test_autostart(void)
{
  static const struct {
    const char *lines; /* from line 12 */
    gboolean autostart;
    const char *user;
    guint line, user_line;
  } cases[] = {
    { "", FALSE, NULL, 0, 0 },
    { "Autostart no\n", FALSE, NULL, 12, 0 },
    { "Autostart yes\nAutostartUser tunnel-sync\n", TRUE, "tunnel-sync", 12, 13 },
    { "autostart YES\nautostartuser=svc\n", TRUE, "svc", 12, 13 },
    /* either order */
    { "AutostartUser svc\n# between\nAutostart yes\n", TRUE, "svc", 14, 12 },
    /* switched off, the account kept for later */
    { "Autostart No\nAutostartUser svc\n", FALSE, "svc", 12, 13 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *text = g_strconcat(good_profile, cases[i].lines, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgProfile) profile = parse_profile(text, &error);

    g_test_message("%s", cases[i].lines);
    g_assert_no_error(error);
    g_assert_cmpint(profile->autostart, ==, cases[i].autostart);
    g_assert_cmpstr(profile->autostart_user, ==, cases[i].user);
    g_assert_cmpuint(profile->autostart_line, ==, cases[i].line);
    g_assert_cmpuint(profile->autostart_user_line, ==, cases[i].user_line);
  }
}

static void
test_may_start(void)
{
  /* the rules start at line 6 of the profile; the decision names the
   * keyword and line that decided */
  static const struct {
    const char *rules;
    const char *user;
    const char *groups[4];
    gboolean allowed;
    const char *keyword;
    guint line;
  } cases[] = {
    { "AllowUsers alice", "alice", { "alice", NULL }, TRUE, "AllowUsers", 6 },
    { "AllowUsers alice", "bob", { "bob", NULL }, FALSE, "AllowUsers", 6 },
    { "AllowUsers *,!bob", "bob", { "bob", NULL }, FALSE, "AllowUsers", 6 },
    { "AllowUsers a*", "anna", { NULL }, TRUE, "AllowUsers", 6 },
    { "AllowGroups dba", "x", { "x", "dba", NULL }, TRUE, "AllowGroups", 6 },
    { "AllowGroups dba", "x", { "x", NULL }, FALSE, "AllowGroups", 6 },
    { "AllowGroups dba,!contractors",
      "x",
      { "x", "dba", "contractors", NULL },
      FALSE,
      "AllowGroups",
      6 },
    /* both given: as sshd, both must allow */
    { "AllowUsers alice\nAllowGroups dba",
      "alice",
      { "alice", "dba", NULL },
      TRUE,
      "AllowUsers",
      6 },
    { "AllowUsers alice\nAllowGroups dba",
      "alice",
      { "alice", NULL },
      FALSE,
      "AllowGroups",
      7 },
    { "AllowUsers alice\nAllowGroups dba",
      "carol",
      { "carol", "dba", NULL },
      FALSE,
      "AllowUsers",
      6 },
    { "AllowGroups dba\nAllowUsers x\nAllowUsers alice",
      "alice",
      { "alice", "dba", NULL },
      TRUE,
      "AllowUsers",
      7 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *text = g_strdup_printf("Server gw\nUser t\nIdentityFile /k\n"
                                            "HostKey " FINGERPRINT "\n"
                                            "Forward L 1:h:2\n%s\n",
                                            cases[i].rules);
    g_autoptr(TgProfile) profile = parse_profile(text, NULL);
    g_autoptr(TgPolicySubject) subject =
        tg_policy_subject_new(cases[i].user, 1, cases[i].groups);
    g_autoptr(TgPolicyDecision) decision = NULL;
    g_autofree char *expected = NULL;

    g_assert_nonnull(profile);
    g_assert_cmpint(tg_profile_may_start(profile, subject), ==, cases[i].allowed);
    g_assert_false(tg_profile_may_start(profile, NULL));
    decision = tg_profile_decide(profile, subject);
    g_assert_cmpint(decision->allowed, ==, cases[i].allowed);
    g_assert_cmpstr(decision->keyword, ==, cases[i].keyword);
    g_assert_cmpuint(decision->line, ==, cases[i].line);
    g_assert_cmpstr(decision->file, ==, profile->file);
    expected =
        g_strdup_printf("%s at %s:%u of profile '%s' %s user %s", cases[i].keyword,
                        profile->file, cases[i].line, profile->name,
                        cases[i].allowed ? "allows" : "does not allow", cases[i].user);
    g_assert_cmpstr(decision->reason, ==, expected);
  }
}

static void
test_names(void)
{
  static const char *const good[] = { "db", "DB-2", "a.b_c", "x1.", "0" };
  static const char *const bad[] = { "",    ".hidden", "-x",          "../etc/passwd",
                                     "a/b", "a b",     "caf\xc3\xa9", "a:b" };
  g_autofree char *long_name = g_strnfill(65, 'a');

  for (gsize i = 0; i < G_N_ELEMENTS(good); i++)
    g_assert_true(tg_profile_name_is_valid(good[i]));
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_false(tg_profile_name_is_valid(bad[i]));
  long_name[64] = '\0';
  g_assert_true(tg_profile_name_is_valid(long_name));
  long_name[64] = 'a';
  g_assert_false(tg_profile_name_is_valid(long_name));
}

static char *
write_file(const char *dir, const char *name, const char *text)
{
  char *path = g_build_filename(dir, name, NULL);

  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  return path;
}

static void
remove_dir(const char *path)
{
  g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
    g_autofree char *child = g_build_filename(path, name, NULL);

    g_unlink(child);
  }
  g_rmdir(path);
}

static void
test_load_and_list(void)
{
  g_autofree char *dir = g_dir_make_tmp("tg-profiles-XXXXXX", NULL);
  g_autofree char *missing_dir = g_build_filename(dir, "nope", NULL);
  g_autofree char *broken = NULL, *message = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(TgProfile) profile = NULL;
  g_auto(GStrv) names = NULL;
  g_auto(GStrv) none = NULL;
  static const char *const invalid[] = { ".hidden", "../x", "a/b", "", "-x" };

  g_free(write_file(dir, "db.conf", good_profile));
  g_free(write_file(dir, "web.conf", good_profile));
  g_free(write_file(dir, ".hidden.conf", good_profile));
  g_free(write_file(dir, "notes.txt", "hello"));
  g_free(write_file(dir, "bad name.conf", good_profile));
  broken = write_file(dir, "broken.conf", "Server gw\nPort 22\n");

  profile = tg_profile_load(dir, "db", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(profile->name, ==, "db");
  g_assert_true(g_str_has_suffix(profile->file, "/db.conf"));

  names = tg_profile_list(dir, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(g_strv_length(names), ==, 3);
  g_assert_cmpstr(names[0], ==, "broken");
  g_assert_cmpstr(names[1], ==, "db");
  g_assert_cmpstr(names[2], ==, "web");

  g_assert_null(tg_profile_load(dir, "broken", &error));
  message = g_strdup_printf("%s:2: unknown keyword 'Port'", broken);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr(error->message, ==, message);
  g_clear_error(&error);

  g_assert_null(tg_profile_load(dir, "missing", &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_NOT_FOUND);
  g_assert_cmpstr(error->message, ==, "No profile 'missing'");
  g_clear_error(&error);

  for (gsize i = 0; i < G_N_ELEMENTS(invalid); i++) {
    g_assert_null(tg_profile_load(dir, invalid[i], &error));
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_true(g_str_has_prefix(error->message, "Invalid profile name"));
    g_clear_error(&error);
  }

  none = tg_profile_list(missing_dir, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(g_strv_length(none), ==, 0);
  remove_dir(dir);
}

static void
test_identity_file(void)
{
  g_autofree char *dir = g_dir_make_tmp("tg-key-XXXXXX", NULL);
  g_autofree char *path = write_file(dir, "key", "not really a key\n");
  g_autofree char *message = NULL;
  g_autoptr(GError) error = NULL;
  int fd;
  int dir_fd;

  g_assert_cmpint(g_chmod(path, 0600), ==, 0);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  g_assert_true(tg_profile_check_identity_fd(fd, path, geteuid(), &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_chmod(path, 0400), ==, 0);
  g_assert_true(tg_profile_check_identity_fd(fd, path, geteuid(), NULL));

  g_assert_false(tg_profile_check_identity_fd(fd, path, geteuid() + 1, &error));
  message = g_strdup_printf("Identity file %s is owned by uid %u, not %u", path,
                            (guint)geteuid(), (guint)geteuid() + 1);
  g_assert_error(error, TG_ERROR, TG_ERROR_FAILED);
  g_assert_cmpstr(error->message, ==, message);
  g_clear_error(&error);
  g_clear_pointer(&message, g_free);

  g_assert_cmpint(g_chmod(path, 0640), ==, 0);
  g_assert_false(tg_profile_check_identity_fd(fd, path, geteuid(), &error));
  message = g_strdup_printf("Identity file %s is accessible by group or others (mode "
                            "0640); it must be 0600 or 0400",
                            path);
  g_assert_cmpstr(error->message, ==, message);
  g_clear_error(&error);
  g_clear_pointer(&message, g_free);
  g_assert_cmpint(g_chmod(path, 0604), ==, 0);
  g_assert_false(tg_profile_check_identity_fd(fd, path, geteuid(), NULL));
  close(fd);

  dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  g_assert_false(tg_profile_check_identity_fd(dir_fd, dir, geteuid(), &error));
  message = g_strdup_printf("Identity file %s is not a regular file", dir);
  g_assert_cmpstr(error->message, ==, message);
  close(dir_fd);
  remove_dir(dir);
}

/* The shipped example parses. */
static void
test_example_profile(void)
{
  g_autofree char *dir = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(TgProfile) profile = NULL;

  dir = g_build_filename(TG_SOURCE_ROOT, "data", "examples", NULL);
  profile = tg_profile_load(dir, "profile-intranet-db", &error);
  g_assert_no_error(error);
  g_assert_nonnull(profile);
  g_assert_false(profile->autostart);
}

/* The shipped autostart example parses, and its AllowUsers admits its
 * AutostartUser, as the daemon demands. */
static void
test_example_autostart_profile(void)
{
  static const char *const groups[] = { "tunnel-sync", NULL };
  g_autofree char *dir = g_build_filename(TG_SOURCE_ROOT, "data", "examples", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(TgProfile) profile = tg_profile_load(dir, "profile-replica-sync", &error);
  g_autoptr(TgPolicySubject) subject = NULL;

  g_assert_no_error(error);
  g_assert_true(profile->autostart);
  g_assert_cmpstr(profile->autostart_user, ==, "tunnel-sync");
  subject = tg_policy_subject_new(profile->autostart_user, 998, groups);
  g_assert_true(tg_profile_may_start(profile, subject));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/profile/good", test_good_profile);
  g_test_add_func("/profile/minimal", test_minimal_profile);
  g_test_add_func("/profile/bad", test_bad_profiles);
  g_test_add_func("/profile/autostart", test_autostart);
  g_test_add_func("/profile/autostart-user-names", test_autostart_user_names);
  g_test_add_func("/profile/may-start", test_may_start);
  g_test_add_func("/profile/names", test_names);
  g_test_add_func("/profile/load-and-list", test_load_and_list);
  g_test_add_func("/profile/identity-file", test_identity_file);
  g_test_add_func("/profile/example", test_example_profile);
  g_test_add_func("/profile/example-autostart", test_example_autostart_profile);
  return g_test_run();
}

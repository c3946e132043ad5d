/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "profile.h"

#include <string.h>
#include <sys/stat.h>

#include "config-tokenizer.h"
#include "forward-spec.h"
#include "policy-match.h"
#include "tg-error.h"

#define MAX_PROFILE_NAME 64
#define MAX_LOCAL_USER 32
/* Messages quote at most this much of a word. */
#define MAX_QUOTED 80
#define SHA256_PREFIX "SHA256:"
/* Unpadded base64 of 32 bytes, as ssh-keygen -l prints it. */
#define SHA256_BASE64_LENGTH 43

/* ---- Names -------------------------------------------------------------- */

gboolean
tg_profile_name_is_valid(const char *name)
{
  gsize length = strlen(name);

  if (length == 0 || length > MAX_PROFILE_NAME || name[0] == '.' || name[0] == '-')
    return FALSE;
  for (const char *p = name; *p != '\0'; p++) {
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-')
      return FALSE;
  }
  return TRUE;
}

void
tg_profile_free(TgProfile *profile)
{
  if (profile == NULL)
    return;
  g_free(profile->name);
  g_free(profile->file);
  g_free(profile->description);
  g_free(profile->server_host);
  g_free(profile->user);
  g_free(profile->identity_file);
  g_free(profile->host_key);
  g_free(profile->autostart_user);
  g_ptr_array_unref(profile->forwards);
  g_strfreev(profile->allow_users);
  g_strfreev(profile->allow_groups);
  g_free(profile);
}

/* ---- Keywords ----------------------------------------------------------- */

typedef enum {
  PROFILE_DESCRIPTION,
  PROFILE_SERVER,
  PROFILE_USER,
  PROFILE_IDENTITY_FILE,
  PROFILE_HOST_KEY,
  PROFILE_FORWARD,
  PROFILE_ALLOW_USERS,
  PROFILE_ALLOW_GROUPS,
  PROFILE_AUTOSTART,
  PROFILE_AUTOSTART_USER,
  PROFILE_N_KEYWORDS
} ProfileKeyword;

static const char *const profile_keywords[PROFILE_N_KEYWORDS] = {
  [PROFILE_DESCRIPTION] = "Description",
  [PROFILE_SERVER] = "Server",
  [PROFILE_USER] = "User",
  [PROFILE_IDENTITY_FILE] = "IdentityFile",
  [PROFILE_HOST_KEY] = "HostKey",
  [PROFILE_FORWARD] = "Forward",
  [PROFILE_ALLOW_USERS] = "AllowUsers",
  [PROFILE_ALLOW_GROUPS] = "AllowGroups",
  [PROFILE_AUTOSTART] = "Autostart",
  [PROFILE_AUTOSTART_USER] = "AutostartUser",
};

typedef struct {
  TgProfile *profile;
  guint first_line[PROFILE_N_KEYWORDS]; /* 0: not seen yet */
} ProfileParse;

/* The same set of characters ssh(1) accepts in a destination's user. */
static gboolean
is_valid_remote_user(const char *user)
{
  if (*user == '\0' || *user == '-' || strlen(user) > 32)
    return FALSE;
  for (const char *p = user; *p != '\0'; p++) {
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-')
      return FALSE;
  }
  return TRUE;
}

/* A local account name as useradd(8) takes it, in the portable set: a
 * name made only of digits would read as a uid. */
static gboolean
is_valid_local_user(const char *user)
{
  gboolean digits_only = TRUE;

  if (*user == '\0' || *user == '-' || *user == '.' || strlen(user) > MAX_LOCAL_USER)
    return FALSE;
  for (const char *p = user; *p != '\0'; p++) {
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-')
      return FALSE;
    if (!g_ascii_isdigit(*p))
      digits_only = FALSE;
  }
  return !digits_only;
}

static gboolean
is_valid_fingerprint(const char *text)
{
  const char *body = text + strlen(SHA256_PREFIX);

  if (!g_str_has_prefix(text, SHA256_PREFIX) || strlen(body) != SHA256_BASE64_LENGTH)
    return FALSE;
  for (const char *p = body; *p != '\0'; p++) {
    if (!g_ascii_isalnum(*p) && *p != '+' && *p != '/')
      return FALSE;
  }
  return TRUE;
}

static gboolean
bad_value(const TgConfigLine *line, const char *what, GError **error)
{
  g_autofree char *quoted = tg_text_printable(line->words[1], MAX_QUOTED);

  tg_config_set_error(error, line->file, line->number, "%s: invalid value '%s' (%s)",
                      line->words[0], quoted, what);
  return FALSE;
}

/* "host[:port]" through the destination parser, so a profile's server is
 * spelled exactly as OpenTunnel's destinations. */
static gboolean
parse_server(TgProfile *profile, const TgConfigLine *line, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(TgDestination) destination =
      tg_destination_parse(line->words[1], &local_error);

  if (destination == NULL)
    return bad_value(line, local_error->message, error);
  if (destination->user != NULL || destination->profile != NULL)
    return bad_value(line, "expected host[:port]; the user goes in User", error);
  profile->server_host = g_steal_pointer(&destination->host);
  profile->server_port = destination->port;
  return TRUE;
}

/* Forward "L 8080:h:80" or, unquoted, Forward L 8080:h:80. */
static gboolean
parse_forward(TgProfile *profile, const TgConfigLine *line, GError **error)
{
  g_autofree char *spec = g_strjoinv(" ", line->words + 1);
  g_autoptr(GError) local_error = NULL;
  TgForward *forward = tg_forward_parse(spec, &local_error);

  if (forward == NULL) {
    tg_config_set_error(error, line->file, line->number, "Forward: %s",
                        local_error->message);
    return FALSE;
  }
  g_ptr_array_add(profile->forwards, forward);
  return TRUE;
}

/* Words are comma-separated lists; several words or lines add up. */
static gboolean
parse_patterns(char ***patterns, const TgConfigLine *line, GError **error)
{
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new();

  if (*patterns != NULL)
    g_strv_builder_addv(builder, (const char **)*patterns);
  for (guint i = 1; i < line->n_words; i++) {
    g_autoptr(GError) local_error = NULL;
    g_auto(GStrv) list = tg_pattern_list_parse(line->words[i], &local_error);

    if (list == NULL) {
      tg_config_set_error(error, line->file, line->number, "%s: %s", line->words[0],
                          local_error->message);
      return FALSE;
    }
    g_strv_builder_addv(builder, (const char **)list);
  }
  g_strfreev(*patterns);
  *patterns = g_strv_builder_end(builder);
  return TRUE;
}

static gboolean
parse_single_value(TgProfile *profile, ProfileKeyword keyword, const TgConfigLine *line,
                   GError **error)
{
  const char *value = line->words[1];

  switch (keyword) {
  case PROFILE_SERVER:
    return parse_server(profile, line, error);
  case PROFILE_USER:
    if (!is_valid_remote_user(value))
      return bad_value(line, "1 to 32 of A-Z a-z 0-9 . _ -, not starting with '-'",
                       error);
    profile->user = g_strdup(value);
    return TRUE;
  case PROFILE_IDENTITY_FILE:
    if (!g_path_is_absolute(value))
      return bad_value(line, "expected an absolute path", error);
    profile->identity_file = g_strdup(value);
    return TRUE;
  case PROFILE_HOST_KEY:
    if (!is_valid_fingerprint(value))
      return bad_value(line, "expected SHA256: and 43 base64 characters", error);
    profile->host_key = g_strdup(value);
    return TRUE;
  case PROFILE_AUTOSTART:
    if (g_ascii_strcasecmp(value, "yes") == 0)
      profile->autostart = TRUE;
    else if (g_ascii_strcasecmp(value, "no") != 0)
      return bad_value(line, "expected yes or no", error);
    profile->autostart_line = line->number;
    return TRUE;
  case PROFILE_AUTOSTART_USER:
    if (!is_valid_local_user(value))
      return bad_value(line,
                       "a local user name: 1 to 32 of A-Z a-z 0-9 . _ -, not starting "
                       "with '.' or '-', not only digits",
                       error);
    profile->autostart_user = g_strdup(value);
    profile->autostart_user_line = line->number;
    return TRUE;
  default:
    g_return_val_if_reached(FALSE);
  }
}

/* -1 when unknown. */
static int
lookup_profile_keyword(const char *name)
{
  for (int i = 0; i < PROFILE_N_KEYWORDS; i++) {
    if (g_ascii_strcasecmp(name, profile_keywords[i]) == 0)
      return i;
  }
  return -1;
}

/* Keywords that may appear once. In a file that hands out a key, a second
 * Server or User is a mistake, not an override. */
static gboolean
parse_once(ProfileParse *parse, ProfileKeyword keyword, const TgConfigLine *line,
           GError **error)
{
  if (parse->first_line[keyword] != 0) {
    tg_config_set_error(error, line->file, line->number,
                        "%s given twice (first at line %u)", profile_keywords[keyword],
                        parse->first_line[keyword]);
    return FALSE;
  }
  parse->first_line[keyword] = line->number;
  if (keyword == PROFILE_DESCRIPTION) {
    parse->profile->description = g_strjoinv(" ", line->words + 1);
    return TRUE;
  }
  if (line->n_words != 2) {
    tg_config_set_error(error, line->file, line->number, "%s takes one argument, not %u",
                        profile_keywords[keyword], line->n_words - 1);
    return FALSE;
  }
  return parse_single_value(parse->profile, keyword, line, error);
}

static gboolean
parse_profile_line(const TgConfigLine *line, gpointer user_data, GError **error)
{
  ProfileParse *parse = user_data;
  int keyword = lookup_profile_keyword(line->words[0]);

  if (keyword < 0) {
    g_autofree char *quoted = tg_text_printable(line->words[0], MAX_QUOTED);

    tg_config_set_error(error, line->file, line->number, "unknown keyword '%s'", quoted);
    return FALSE;
  }
  if (line->n_words < 2) {
    tg_config_set_error(error, line->file, line->number, "%s: missing value",
                        profile_keywords[keyword]);
    return FALSE;
  }
  switch (keyword) {
  case PROFILE_FORWARD:
    return parse_forward(parse->profile, line, error);
  case PROFILE_ALLOW_USERS:
    if (parse->profile->allow_users_line == 0)
      parse->profile->allow_users_line = line->number;
    return parse_patterns(&parse->profile->allow_users, line, error);
  case PROFILE_ALLOW_GROUPS:
    if (parse->profile->allow_groups_line == 0)
      parse->profile->allow_groups_line = line->number;
    return parse_patterns(&parse->profile->allow_groups, line, error);
  default:
    return parse_once(parse, (ProfileKeyword)keyword, line, error);
  }
}

static gboolean
check_complete(const TgProfile *profile, GError **error)
{
  const char *missing = NULL;

  if (profile->server_host == NULL)
    missing = "Server";
  else if (profile->user == NULL)
    missing = "User";
  else if (profile->identity_file == NULL)
    missing = "IdentityFile";
  else if (profile->host_key == NULL)
    missing = "HostKey";
  else if (profile->forwards->len == 0)
    missing = "Forward";
  else if (profile->allow_users == NULL && profile->allow_groups == NULL)
    missing = "AllowUsers or AllowGroups";
  if (missing != NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: %s is required",
                profile->file, missing);
    return FALSE;
  }
  if (profile->autostart && profile->autostart_user == NULL) {
    tg_config_set_error(error, profile->file, profile->autostart_line,
                        "Autostart yes needs AutostartUser (the local account that "
                        "owns the tunnel)");
    return FALSE;
  }
  if (profile->autostart_user != NULL && profile->autostart_line == 0) {
    tg_config_set_error(error, profile->file, profile->autostart_user_line,
                        "AutostartUser without Autostart (add Autostart yes, or "
                        "Autostart no to keep it switched off)");
    return FALSE;
  }
  return TRUE;
}

TgProfile *
tg_profile_parse_string(const char *name, const char *file, const char *text,
                        gssize length, GError **error)
{
  g_autoptr(TgProfile) profile = g_new0(TgProfile, 1);
  ProfileParse parse = { profile, { 0 } };

  g_return_val_if_fail(name != NULL && file != NULL && text != NULL, NULL);

  profile->name = g_strdup(name);
  profile->file = g_strdup(file);
  profile->server_port = 22;
  profile->forwards = g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  if (!tg_config_tokenize(file, text, length < 0 ? strlen(text) : (gsize)length,
                          parse_profile_line, &parse, error) ||
      !check_complete(profile, error))
    return NULL;
  return g_steal_pointer(&profile);
}

/* ---- Files -------------------------------------------------------------- */

TgProfile *
tg_profile_load(const char *dir, const char *name, GError **error)
{
  g_autofree char *file_name = NULL;
  g_autofree char *path = NULL;
  g_autoptr(GBytes) contents = NULL;
  const char *data;
  gsize length = 0;

  if (!tg_profile_name_is_valid(name)) {
    g_autofree char *quoted = tg_text_printable(name, MAX_QUOTED);

    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Invalid profile name '%s' (1 to %d of A-Z a-z 0-9 . _ -, not starting "
                "with '.' or '-')",
                quoted, MAX_PROFILE_NAME);
    return NULL;
  }
  file_name = g_strconcat(name, ".conf", NULL);
  path = g_build_filename(dir, file_name, NULL);
  if (!tg_config_read_file(path, TRUE, &contents, error))
    return NULL;
  if (contents == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No profile '%s'", name);
    return NULL;
  }
  data = g_bytes_get_data(contents, &length);
  return tg_profile_parse_string(name, path, data != NULL ? data : "", (gssize)length,
                                 error);
}

static gint
compare_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char **
tg_profile_list(const char *dir, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(GDir) handle = g_dir_open(dir, 0, &local_error);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  const char *entry;

  if (handle == NULL && !g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "%s: %s", dir, local_error->message);
    return NULL;
  }
  while (handle != NULL && (entry = g_dir_read_name(handle)) != NULL) {
    g_autofree char *name = NULL;

    if (!g_str_has_suffix(entry, ".conf"))
      continue;
    name = g_strndup(entry, strlen(entry) - strlen(".conf"));
    if (tg_profile_name_is_valid(name))
      g_ptr_array_add(names, g_steal_pointer(&name));
  }
  g_ptr_array_sort(names, compare_names);
  g_ptr_array_add(names, NULL);
  return (char **)g_ptr_array_free(g_steal_pointer(&names), FALSE);
}

/* ---- Use ---------------------------------------------------------------- */

static TgPolicyDecision *
profile_decision(const TgProfile *profile, gboolean allowed, gboolean users,
                 const TgPolicySubject *subject)
{
  TgPolicyDecision *decision = g_new0(TgPolicyDecision, 1);
  const char *user = subject != NULL ? subject->user : "(nobody)";

  decision->allowed = allowed;
  decision->keyword = users ? "AllowUsers" : "AllowGroups";
  decision->file = g_strdup(profile->file);
  decision->line = users ? profile->allow_users_line : profile->allow_groups_line;
  decision->reason = g_strdup_printf(
      "%s at %s:%u of profile '%s' %s user %s", decision->keyword, decision->file,
      decision->line, profile->name, allowed ? "allows" : "does not allow", user);
  return decision;
}

TgPolicyDecision *
tg_profile_decide(const TgProfile *profile, const TgPolicySubject *subject)
{
  gboolean users;

  g_return_val_if_fail(profile != NULL, NULL);

  users = profile->allow_users != NULL;
  if (profile->allow_users == NULL && profile->allow_groups == NULL)
    return profile_decision(profile, FALSE, TRUE, subject); /* never parsed so */
  if (subject == NULL)
    return profile_decision(profile, FALSE, users, subject);
  if (users && tg_pattern_list_match((const char *const *)profile->allow_users,
                                     subject->user) != TG_PATTERN_LIST_MATCH)
    return profile_decision(profile, FALSE, TRUE, subject);
  if (profile->allow_groups != NULL &&
      !tg_pattern_list_match_any((const char *const *)profile->allow_groups,
                                 (const char *const *)subject->groups))
    return profile_decision(profile, FALSE, FALSE, subject);
  return profile_decision(profile, TRUE, users, subject);
}

gboolean
tg_profile_may_start(const TgProfile *profile, const TgPolicySubject *subject)
{
  g_autoptr(TgPolicyDecision) decision = NULL;

  g_return_val_if_fail(profile != NULL, FALSE);

  decision = tg_profile_decide(profile, subject);
  return decision->allowed;
}

gboolean
tg_profile_check_identity_fd(int fd, const char *path, uid_t owner, GError **error)
{
  struct stat info;

  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Identity file %s is not a regular file", path);
    return FALSE;
  }
  if (info.st_uid != owner) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Identity file %s is owned by uid %u, not %u", path, (guint)info.st_uid,
                (guint)owner);
    return FALSE;
  }
  if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Identity file %s is accessible by group or others (mode %04o); "
                "it must be 0600 or 0400",
                path, (guint)(info.st_mode & 07777));
    return FALSE;
  }
  return TRUE;
}

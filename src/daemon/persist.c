/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "persist.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forward-spec.h"
#include "hostkey.h"
#include "log.h"
#include "profile.h"
#include "text.h"
#include "tg-error.h"
#include "tg-names.h"

#define GROUP "Tunnel"
#define MAX_ID_DIGITS 20
#define MAX_UID 4294967294u /* (uid_t)-1 is no uid */
#define MAX_USER_NAME 255
#define MAX_CIPHERS 512
#define MAX_LISTENERS_PER_FORWARD 2
/* Messages quote at most this much of a value. */
#define MAX_QUOTED 80

#define KEY_ID "id"
#define KEY_CREATED "created"
#define KEY_UID "uid"
#define KEY_USER "user"
#define KEY_PROFILE "profile"
#define KEY_HOST "host"
#define KEY_PORT "port"
#define KEY_REMOTE_USER "remote-user"
#define KEY_FORWARDS "forwards"
#define KEY_LISTENERS "listeners"
#define KEY_AGENT "agent"
#define KEY_IDENTITY "identity"
#define KEY_HOST_KEY "host-key"
#define KEY_KEEPALIVE "keepalive"
#define KEY_KEEPALIVE_COUNT "keepalive-count"
#define KEY_CIPHERS "ciphers"
#define KEY_DESCRIPTION "description"
#define KEY_RECONNECT "reconnect"
#define KEY_GRANTED "granted"

static const char *const known_keys[] = {
  KEY_ID,      KEY_CREATED,     KEY_UID,         KEY_USER,      KEY_PROFILE,
  KEY_HOST,    KEY_PORT,        KEY_REMOTE_USER, KEY_FORWARDS,  KEY_LISTENERS,
  KEY_AGENT,   KEY_IDENTITY,    KEY_HOST_KEY,    KEY_KEEPALIVE, KEY_KEEPALIVE_COUNT,
  KEY_CIPHERS, KEY_DESCRIPTION, KEY_RECONNECT,   KEY_GRANTED,   NULL,
};

static const char *const known_actions[] = {
  TG_ACTION_ID_OPEN,        TG_ACTION_ID_OPEN_REMOTE, TG_ACTION_ID_BIND_ANY,
  TG_ACTION_ID_USE_PROFILE, TG_ACTION_ID_MANAGE,      NULL,
};

/* ---- Records ------------------------------------------------------------ */

static void
listener_free(gpointer data)
{
  TgPersistListener *listener = data;

  g_free(listener->address);
  g_free(listener);
}

TgPersistRecord *
tg_persist_record_new(void)
{
  TgPersistRecord *record = g_new0(TgPersistRecord, 1);

  record->forwards = g_ptr_array_new_with_free_func(g_free);
  record->listeners = g_ptr_array_new_with_free_func(listener_free);
  record->granted = g_ptr_array_new_with_free_func(g_free);
  return record;
}

void
tg_persist_record_free(TgPersistRecord *record)
{
  if (record == NULL)
    return;
  g_free(record->id);
  g_free(record->user);
  g_free(record->profile);
  g_free(record->host);
  g_free(record->remote_user);
  g_ptr_array_unref(record->forwards);
  g_ptr_array_unref(record->listeners);
  g_free(record->agent);
  g_free(record->identity);
  g_free(record->host_key);
  g_free(record->ciphers);
  g_free(record->description);
  g_ptr_array_unref(record->granted);
  g_free(record);
}

void
tg_persist_record_add_listener(TgPersistRecord *record, guint forward_index,
                               const char *address, guint16 port)
{
  TgPersistListener *listener = g_new0(TgPersistListener, 1);

  g_return_if_fail(record != NULL && address != NULL);

  listener->forward_index = forward_index;
  listener->address = g_strdup(address);
  listener->port = port;
  g_ptr_array_add(record->listeners, listener);
}

char *
tg_persist_dir(const char *state_dir)
{
  return g_build_filename(state_dir, TG_PERSIST_DIR_NAME, NULL);
}

gboolean
tg_persist_id_is_valid(const char *id)
{
  guint64 value;

  if (id == NULL || id[0] == '0' || strlen(id) > MAX_ID_DIGITS)
    return FALSE;
  return tg_text_parse_decimal(id, G_MAXUINT64, &value);
}

/* Ids are decimal without leading zeros: the shorter is the smaller. */
static int
compare_ids(const char *a, const char *b)
{
  gsize la = strlen(a), lb = strlen(b);

  if (la != lb)
    return la < lb ? -1 : 1;
  return strcmp(a, b);
}

/* ---- Checks ------------------------------------------------------------- */

static gboolean invalid(GError **error, const char *what, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static gboolean
invalid(GError **error, const char *what, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start(args, format);
  message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: %s", what, message);
  return FALSE;
}

static gboolean
check_user(const char *user, const char *what, GError **error)
{
  g_autofree char *quoted = tg_text_printable(user, MAX_QUOTED);

  if (user[0] == '\0' || user[0] == '-' || strlen(user) > MAX_USER_NAME ||
      !tg_text_is_printable(user) || strpbrk(user, ":/ ") != NULL)
    return invalid(error, what,
                   "user '%s' is not a user name (1 to %d bytes, no control "
                   "characters, ':', '/' or blanks, not starting with '-')",
                   quoted, MAX_USER_NAME);
  return TRUE;
}

/* The rules of OpenTunnel's destinations: the same parser. */
static gboolean
check_server(const TgPersistRecord *record, const char *what, GError **error)
{
  g_autofree char *quoted_host = tg_text_printable(record->host, MAX_QUOTED);
  g_autofree char *quoted_user = tg_text_printable(record->remote_user, MAX_QUOTED);
  g_autofree char *login = NULL;
  g_autoptr(TgDestination) destination = NULL;
  const char *problem;

  if (record->host[0] == '\0' || !tg_text_is_printable(record->host))
    return invalid(error, what, "host '%s' is empty or has control characters",
                   quoted_host);
  problem = tg_forward_host_problem(record->host);
  if (problem != NULL)
    return invalid(error, what, "host '%s': %s", quoted_host, problem);
  login = g_strconcat(record->remote_user, "@localhost", NULL);
  destination = tg_destination_parse(login, NULL);
  if (destination == NULL || g_strcmp0(destination->user, record->remote_user) != 0)
    return invalid(error, what,
                   "remote-user '%s' is not a login name (1 to 32 of A-Z a-z 0-9 . _ -, "
                   "not starting with '-')",
                   quoted_user);
  return TRUE;
}

static gboolean
check_path(const char *key, const char *path, const char *what, GError **error)
{
  g_autofree char *quoted = tg_text_printable(path, MAX_QUOTED);

  if (strlen(path) >= PATH_MAX)
    return invalid(error, what, "%s '%s' is longer than %d bytes", key, quoted,
                   PATH_MAX - 1);
  if (!tg_text_is_printable(path))
    return invalid(error, what, "%s '%s' has control characters", key, quoted);
  if (path[0] != '/')
    return invalid(error, what, "%s '%s' is not an absolute path", key, quoted);
  return TRUE;
}

/* A profile has its own server, login, key and host key. */
static gboolean
check_destination(const TgPersistRecord *record, const char *what, GError **error)
{
  if (record->profile != NULL) {
    static const char *const keys[] = { KEY_HOST,  KEY_PORT,     KEY_REMOTE_USER,
                                        KEY_AGENT, KEY_IDENTITY, KEY_HOST_KEY };
    gboolean given[] = { record->host != NULL,        record->port != 0,
                         record->remote_user != NULL, record->agent != NULL,
                         record->identity != NULL,    record->host_key != NULL };
    g_autofree char *quoted = tg_text_printable(record->profile, MAX_QUOTED);

    if (!tg_profile_name_is_valid(record->profile))
      return invalid(error, what,
                     "profile '%s' is not a profile name (1 to 64 of A-Z a-z 0-9 . _ -, "
                     "not starting with '.' or '-')",
                     quoted);
    for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
      if (given[i])
        return invalid(error, what, "%s cannot go with profile (the profile has it)",
                       keys[i]);
    }
    return TRUE;
  }
  if (record->host == NULL || record->port == 0 || record->remote_user == NULL)
    return invalid(error, what, "%s is required without profile",
                   record->host == NULL ? KEY_HOST
                   : record->port == 0  ? KEY_PORT
                                        : KEY_REMOTE_USER);
  if (!check_server(record, what, error))
    return FALSE;
  if (record->agent != NULL && record->identity != NULL)
    return invalid(error, what, "agent and identity are both given (at most one)");
  if (record->agent == NULL && record->identity == NULL)
    return invalid(error, what, "agent or identity is required without profile");
  return check_path(record->agent != NULL ? KEY_AGENT : KEY_IDENTITY,
                    record->agent != NULL ? record->agent : record->identity, what,
                    error);
}

static gboolean
check_forwards(const TgPersistRecord *record, GPtrArray *parsed, const char *what,
               GError **error)
{
  if (record->forwards->len == 0)
    return invalid(error, what, "forwards is empty (a tunnel has at least one)");
  if (record->forwards->len > TG_PERSIST_MAX_FORWARDS)
    return invalid(error, what, "%u forwards, more than %d", record->forwards->len,
                   TG_PERSIST_MAX_FORWARDS);
  for (guint i = 0; i < record->forwards->len; i++) {
    g_autoptr(GError) local_error = NULL;
    TgForward *forward =
        tg_forward_parse(g_ptr_array_index(record->forwards, i), &local_error);

    if (forward == NULL)
      return invalid(error, what, "forward %u: %s", i, local_error->message);
    g_ptr_array_add(parsed, forward);
  }
  return TRUE;
}

static gboolean
is_numeric_address(const char *text)
{
  struct in6_addr address;

  return inet_pton(AF_INET, text, &address) == 1 ||
         inet_pton(AF_INET6, text, &address) == 1;
}

static gboolean
check_listener(const TgPersistRecord *record, GPtrArray *forwards, guint i,
               guint *per_forward, const char *what, GError **error)
{
  const TgPersistListener *listener = g_ptr_array_index(record->listeners, i);
  g_autofree char *quoted =
      tg_text_printable(listener->address != NULL ? listener->address : "", MAX_QUOTED);
  const TgForward *forward;

  if (listener->forward_index >= forwards->len)
    return invalid(error, what, "listener %u: forward %u is beyond the %u forwards", i,
                   listener->forward_index, forwards->len);
  forward = g_ptr_array_index(forwards, listener->forward_index);
  if (forward->kind == TG_FORWARD_REMOTE || forward->listen.path != NULL)
    return invalid(error, what,
                   "listener %u: forward %u ('%s') has no local TCP listener", i,
                   listener->forward_index, forward->spec);
  if (listener->address == NULL || !is_numeric_address(listener->address))
    return invalid(error, what,
                   "listener %u: address '%s' is not a numeric IPv4 or IPv6 address", i,
                   quoted);
  if (listener->port == 0)
    return invalid(error, what, "listener %u: port 0 is out of range (1 to 65535)", i);
  if (forward->listen.port != 0 && forward->listen.port != listener->port)
    return invalid(error, what,
                   "listener %u: port %u is not the port of forward %u ('%s')", i,
                   listener->port, listener->forward_index, forward->spec);
  if (++per_forward[listener->forward_index] > MAX_LISTENERS_PER_FORWARD)
    return invalid(error, what, "listener %u: more than %d listeners for forward %u", i,
                   MAX_LISTENERS_PER_FORWARD, listener->forward_index);
  for (guint j = 0; j < i; j++) {
    const TgPersistListener *other = g_ptr_array_index(record->listeners, j);

    if (other->port == listener->port && g_str_equal(other->address, listener->address))
      return invalid(error, what, "listener %u: address %s port %u is also listener %u",
                     i, quoted, listener->port, j);
  }
  return TRUE;
}

static gboolean
check_listeners(const TgPersistRecord *record, GPtrArray *forwards, const char *what,
                GError **error)
{
  g_autofree guint *per_forward = g_new0(guint, forwards->len);

  for (guint i = 0; i < record->listeners->len; i++) {
    if (!check_listener(record, forwards, i, per_forward, what, error))
      return FALSE;
  }
  return TRUE;
}

static gboolean
check_ciphers(const char *ciphers, const char *what, GError **error)
{
  g_autofree char *quoted = tg_text_printable(ciphers, MAX_QUOTED);
  gboolean name_started = FALSE;

  for (const char *p = ciphers; strlen(ciphers) <= MAX_CIPHERS; p++) {
    if (*p == '\0' || *p == ',') {
      if (!name_started)
        break;
      if (*p == '\0')
        return TRUE;
      name_started = FALSE;
    } else if (g_ascii_isalnum(*p) || strchr("@._-", *p) != NULL) {
      name_started = TRUE;
    } else {
      break;
    }
  }
  return invalid(error, what,
                 "ciphers '%s' is not a comma list of cipher names (A-Z a-z 0-9 @ . _ -, "
                 "at most %d bytes)",
                 quoted, MAX_CIPHERS);
}

static gboolean
check_settings(const TgPersistRecord *record, const char *what, GError **error)
{
  if (record->host_key != NULL && !tg_hostkey_fingerprint_is_valid(record->host_key)) {
    g_autofree char *quoted = tg_text_printable(record->host_key, MAX_QUOTED);

    return invalid(error, what, "host-key '%s' is not SHA256: and 43 base64 characters",
                   quoted);
  }
  if (record->keepalive > TG_PERSIST_MAX_KEEPALIVE)
    return invalid(error, what, "keepalive %u is more than %d seconds", record->keepalive,
                   TG_PERSIST_MAX_KEEPALIVE);
  if (record->keepalive_count > TG_PERSIST_MAX_KEEPALIVE_COUNT)
    return invalid(error, what, "keepalive-count %u is more than %d",
                   record->keepalive_count, TG_PERSIST_MAX_KEEPALIVE_COUNT);
  if (record->ciphers != NULL && !check_ciphers(record->ciphers, what, error))
    return FALSE;
  if (record->description != NULL) {
    if (strlen(record->description) > TG_PERSIST_MAX_DESCRIPTION)
      return invalid(error, what, "description is longer than %d bytes",
                     TG_PERSIST_MAX_DESCRIPTION);
    if (!tg_text_is_printable(record->description))
      return invalid(error, what, "description has control characters");
  }
  for (guint i = 0; i < record->granted->len; i++) {
    const char *action = g_ptr_array_index(record->granted, i);
    g_autofree char *quoted = tg_text_printable(action, MAX_QUOTED);

    if (!g_strv_contains(known_actions, action))
      return invalid(error, what, "granted '%s' is not a tunnelgate polkit action",
                     quoted);
    for (guint j = 0; j < i; j++) {
      if (g_str_equal(action, g_ptr_array_index(record->granted, j)))
        return invalid(error, what, "granted '%s' is given twice", action);
    }
  }
  return TRUE;
}

gboolean
tg_persist_record_check(const TgPersistRecord *record, const char *what, GError **error)
{
  g_autoptr(GPtrArray) forwards = NULL;

  g_return_val_if_fail(record != NULL && what != NULL, FALSE);

  if (!tg_persist_id_is_valid(record->id)) {
    g_autofree char *quoted =
        tg_text_printable(record->id != NULL ? record->id : "", MAX_QUOTED);

    return invalid(error, what,
                   "id '%s' is not a tunnel id (1 to %d digits, not starting with 0)",
                   quoted, MAX_ID_DIGITS);
  }
  if (record->created < 0)
    return invalid(error, what, "created %" G_GINT64_FORMAT " is before 1970",
                   record->created);
  if ((guint64)record->uid > MAX_UID)
    return invalid(error, what, "uid %u is not a uid (0 to %u)", (guint)record->uid,
                   MAX_UID);
  if (record->user == NULL)
    return invalid(error, what, "user is required");
  if (!check_user(record->user, what, error) || !check_destination(record, what, error))
    return FALSE;
  forwards = g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  return check_forwards(record, forwards, what, error) &&
         check_listeners(record, forwards, what, error) &&
         check_settings(record, what, error);
}

/* ---- Text --------------------------------------------------------------- */

static void
set_list(GKeyFile *file, const char *key, GPtrArray *items)
{
  g_key_file_set_string_list(file, GROUP, key, (const char *const *)items->pdata,
                             items->len);
}

char *
tg_persist_record_to_data(const TgPersistRecord *record, gsize *length)
{
  g_autoptr(GKeyFile) file = g_key_file_new();
  g_autoptr(GPtrArray) forwards = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) listeners = g_ptr_array_new_with_free_func(g_free);

  g_return_val_if_fail(record != NULL, NULL);

  for (guint i = 0; i < record->forwards->len; i++) {
    const char *spec = g_ptr_array_index(record->forwards, i);
    g_autoptr(TgForward) forward = tg_forward_parse(spec, NULL);

    g_ptr_array_add(forwards, g_strdup(forward != NULL ? forward->spec : spec));
  }
  for (guint i = 0; i < record->listeners->len; i++) {
    const TgPersistListener *listener = g_ptr_array_index(record->listeners, i);

    g_ptr_array_add(listeners, g_strdup_printf("%u %s %u", listener->forward_index,
                                               listener->address, listener->port));
  }

  g_key_file_set_string(file, GROUP, KEY_ID, record->id != NULL ? record->id : "");
  g_key_file_set_int64(file, GROUP, KEY_CREATED, record->created);
  g_key_file_set_uint64(file, GROUP, KEY_UID, record->uid);
  g_key_file_set_string(file, GROUP, KEY_USER, record->user != NULL ? record->user : "");
  if (record->profile != NULL)
    g_key_file_set_string(file, GROUP, KEY_PROFILE, record->profile);
  if (record->host != NULL)
    g_key_file_set_string(file, GROUP, KEY_HOST, record->host);
  if (record->port != 0)
    g_key_file_set_uint64(file, GROUP, KEY_PORT, record->port);
  if (record->remote_user != NULL)
    g_key_file_set_string(file, GROUP, KEY_REMOTE_USER, record->remote_user);
  set_list(file, KEY_FORWARDS, forwards);
  set_list(file, KEY_LISTENERS, listeners);
  if (record->agent != NULL)
    g_key_file_set_string(file, GROUP, KEY_AGENT, record->agent);
  if (record->identity != NULL)
    g_key_file_set_string(file, GROUP, KEY_IDENTITY, record->identity);
  if (record->host_key != NULL)
    g_key_file_set_string(file, GROUP, KEY_HOST_KEY, record->host_key);
  g_key_file_set_uint64(file, GROUP, KEY_KEEPALIVE, record->keepalive);
  g_key_file_set_uint64(file, GROUP, KEY_KEEPALIVE_COUNT, record->keepalive_count);
  if (record->ciphers != NULL)
    g_key_file_set_string(file, GROUP, KEY_CIPHERS, record->ciphers);
  if (record->description != NULL)
    g_key_file_set_string(file, GROUP, KEY_DESCRIPTION, record->description);
  g_key_file_set_boolean(file, GROUP, KEY_RECONNECT, record->reconnect);
  set_list(file, KEY_GRANTED, record->granted);
  g_key_file_set_comment(file, GROUP, NULL,
                         " A tunnel tunnelgated opens again when it starts "
                         "(tunnelgated(8)).\n Written by the daemon: do not edit.",
                         NULL);
  return g_key_file_to_data(file, length, NULL);
}

/* The group and its keys: one [Tunnel], known keys, each once. */
static gboolean
check_layout(GKeyFile *file, const char *what, GError **error)
{
  g_auto(GStrv) groups = g_key_file_get_groups(file, NULL);
  g_auto(GStrv) keys = NULL;

  for (guint i = 0; groups[i] != NULL; i++) {
    g_autofree char *quoted = tg_text_printable(groups[i], MAX_QUOTED);

    if (!g_str_equal(groups[i], GROUP))
      return invalid(error, what,
                     "unknown group [%s] (written by a newer version of tunnelgate?)",
                     quoted);
  }
  if (groups[0] == NULL)
    return invalid(error, what, "no [" GROUP "] group");
  keys = g_key_file_get_keys(file, GROUP, NULL, NULL);
  for (guint i = 0; keys != NULL && keys[i] != NULL; i++) {
    g_autofree char *quoted = tg_text_printable(keys[i], MAX_QUOTED);

    if (!g_strv_contains(known_keys, keys[i]))
      return invalid(error, what,
                     "unknown key '%s' (written by a newer version of tunnelgate?)",
                     quoted);
    for (guint j = 0; j < i; j++) {
      if (g_str_equal(keys[i], keys[j]))
        return invalid(error, what, "key '%s' is given twice", keys[i]);
    }
  }
  return TRUE;
}

/* An absent key leaves *value NULL. */
static gboolean
get_string(GKeyFile *file, const char *key, gboolean required, char **value,
           const char *what, GError **error)
{
  g_autoptr(GError) local_error = NULL;

  if (!g_key_file_has_key(file, GROUP, key, NULL)) {
    if (required)
      return invalid(error, what, "%s is required", key);
    return TRUE;
  }
  *value = g_key_file_get_string(file, GROUP, key, &local_error);
  if (*value == NULL)
    return invalid(error, what, "%s: %s", key, local_error->message);
  return TRUE;
}

/* Digits only, no sign or blanks, at most @max. */
static gboolean
get_number(GKeyFile *file, const char *key, gboolean required, guint64 max,
           guint64 *value, const char *what, GError **error)
{
  g_autofree char *text = NULL;
  g_autofree char *quoted = NULL;

  if (!g_key_file_has_key(file, GROUP, key, NULL)) {
    if (required)
      return invalid(error, what, "%s is required", key);
    return TRUE;
  }
  text = g_key_file_get_value(file, GROUP, key, NULL);
  if (text != NULL && tg_text_parse_decimal(text, max, value))
    return TRUE;
  quoted = tg_text_printable(text != NULL ? text : "", MAX_QUOTED);
  return invalid(error, what, "%s '%s' is not a number from 0 to %" G_GUINT64_FORMAT, key,
                 quoted, max);
}

static gboolean
get_list(GKeyFile *file, const char *key, gboolean required, GPtrArray *items,
         const char *what, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_auto(GStrv) list = NULL;
  gsize n = 0;

  if (!g_key_file_has_key(file, GROUP, key, NULL)) {
    if (required)
      return invalid(error, what, "%s is required", key);
    return TRUE;
  }
  list = g_key_file_get_string_list(file, GROUP, key, &n, &local_error);
  if (list == NULL && local_error != NULL)
    return invalid(error, what, "%s: %s", key, local_error->message);
  for (gsize i = 0; i < n; i++)
    g_ptr_array_add(items, g_steal_pointer(&list[i]));
  return TRUE;
}

/* "FORWARD ADDRESS PORT" */
static gboolean
parse_listeners(GKeyFile *file, TgPersistRecord *record, const char *what, GError **error)
{
  g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(g_free);

  if (!get_list(file, KEY_LISTENERS, FALSE, items, what, error))
    return FALSE;
  for (guint i = 0; i < items->len; i++) {
    g_auto(GStrv) fields = g_strsplit(g_ptr_array_index(items, i), " ", -1);
    guint64 index, port;

    if (g_strv_length(fields) != 3 ||
        !tg_text_parse_decimal(fields[0], TG_PERSIST_MAX_FORWARDS, &index) ||
        !tg_text_parse_decimal(fields[2], G_MAXUINT16, &port)) {
      g_autofree char *quoted =
          tg_text_printable(g_ptr_array_index(items, i), MAX_QUOTED);

      return invalid(error, what, "listener %u '%s' is not 'FORWARD ADDRESS PORT'", i,
                     quoted);
    }
    tg_persist_record_add_listener(record, (guint)index, fields[1], (guint16)port);
  }
  return TRUE;
}

static gboolean
get_boolean(GKeyFile *file, const char *key, gboolean *value, const char *what,
            GError **error)
{
  g_autofree char *text = NULL;
  g_autofree char *quoted = NULL;

  if (!g_key_file_has_key(file, GROUP, key, NULL))
    return TRUE;
  text = g_key_file_get_value(file, GROUP, key, NULL);
  if (g_strcmp0(text, "true") == 0 || g_strcmp0(text, "false") == 0) {
    *value = text[0] == 't';
    return TRUE;
  }
  quoted = tg_text_printable(text != NULL ? text : "", MAX_QUOTED);
  return invalid(error, what, "%s '%s' is not true or false", key, quoted);
}

static gboolean
parse_fields(GKeyFile *file, TgPersistRecord *record, const char *what, GError **error)
{
  guint64 created = 0, uid = 0, port = 0, keepalive = 0, keepalive_count = 0;

  if (!get_string(file, KEY_ID, TRUE, &record->id, what, error) ||
      !get_number(file, KEY_CREATED, TRUE, G_MAXINT64, &created, what, error) ||
      !get_number(file, KEY_UID, TRUE, MAX_UID, &uid, what, error) ||
      !get_string(file, KEY_USER, TRUE, &record->user, what, error) ||
      !get_string(file, KEY_PROFILE, FALSE, &record->profile, what, error) ||
      !get_string(file, KEY_HOST, FALSE, &record->host, what, error) ||
      !get_number(file, KEY_PORT, FALSE, G_MAXUINT16, &port, what, error) ||
      !get_string(file, KEY_REMOTE_USER, FALSE, &record->remote_user, what, error) ||
      !get_list(file, KEY_FORWARDS, TRUE, record->forwards, what, error) ||
      !parse_listeners(file, record, what, error) ||
      !get_string(file, KEY_AGENT, FALSE, &record->agent, what, error) ||
      !get_string(file, KEY_IDENTITY, FALSE, &record->identity, what, error) ||
      !get_string(file, KEY_HOST_KEY, FALSE, &record->host_key, what, error) ||
      !get_number(file, KEY_KEEPALIVE, FALSE, G_MAXUINT32, &keepalive, what, error) ||
      !get_number(file, KEY_KEEPALIVE_COUNT, FALSE, G_MAXUINT32, &keepalive_count, what,
                  error) ||
      !get_string(file, KEY_CIPHERS, FALSE, &record->ciphers, what, error) ||
      !get_string(file, KEY_DESCRIPTION, FALSE, &record->description, what, error) ||
      !get_boolean(file, KEY_RECONNECT, &record->reconnect, what, error) ||
      !get_list(file, KEY_GRANTED, FALSE, record->granted, what, error))
    return FALSE;
  if (g_key_file_has_key(file, GROUP, KEY_PORT, NULL) && port == 0)
    return invalid(error, what, "port 0 is out of range (1 to 65535)");
  record->created = (gint64)created;
  record->uid = (uid_t)uid;
  record->port = (guint16)port;
  record->keepalive = (guint32)keepalive;
  record->keepalive_count = (guint32)keepalive_count;
  return TRUE;
}

TgPersistRecord *
tg_persist_record_from_data(const char *data, gsize length, const char *name,
                            GError **error)
{
  g_autoptr(TgPersistRecord) record = tg_persist_record_new();
  g_autoptr(GKeyFile) file = g_key_file_new();
  g_autoptr(GError) local_error = NULL;
  g_autofree char *base = NULL;
  g_autofree char *expected = NULL;

  g_return_val_if_fail(data != NULL || length == 0, NULL);
  g_return_val_if_fail(name != NULL, NULL);

  if (length > TG_PERSIST_MAX_FILE_SIZE) {
    invalid(error, name, "larger than %d bytes", TG_PERSIST_MAX_FILE_SIZE);
    return NULL;
  }
  if (length > 0 && memchr(data, '\0', length) != NULL) {
    invalid(error, name, "NUL byte at %" G_GSIZE_FORMAT,
            (gsize)((const char *)memchr(data, '\0', length) - data));
    return NULL;
  }
  if (!g_key_file_load_from_data(file, data != NULL ? data : "", length, G_KEY_FILE_NONE,
                                 &local_error)) {
    invalid(error, name, "not a key file: %s", local_error->message);
    return NULL;
  }
  if (!check_layout(file, name, error) || !parse_fields(file, record, name, error) ||
      !tg_persist_record_check(record, name, error))
    return NULL;
  base = g_path_get_basename(name);
  expected = g_strconcat(record->id, TG_PERSIST_SUFFIX, NULL);
  if (!g_str_equal(base, expected)) {
    invalid(error, name, "id %s does not match the file name (expected %s)", record->id,
            expected);
    return NULL;
  }
  /* the canonical form, as the daemon compares forwards */
  for (guint i = 0; i < record->forwards->len; i++) {
    g_autoptr(TgForward) forward =
        tg_forward_parse(g_ptr_array_index(record->forwards, i), NULL);

    g_free(record->forwards->pdata[i]);
    record->forwards->pdata[i] = g_strdup(forward->spec);
  }
  return g_steal_pointer(&record);
}

/* ---- Files -------------------------------------------------------------- */

static char *
record_path(const char *dir, const char *id)
{
  g_autofree char *name = g_strconcat(id, TG_PERSIST_SUFFIX, NULL);

  return g_build_filename(dir, name, NULL);
}

static gboolean failed(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static gboolean
failed(GError **error, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start(args, format);
  message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED, message);
  return FALSE;
}

/* The directory as the daemon's, without group and others; -1 on error. */
static int
open_dir_for_writing(const char *dir, GError **error)
{
  struct stat info;
  int fd;

  if (g_mkdir_with_parents(dir, 0700) != 0) {
    failed(error, "Cannot create %s: %s", dir, g_strerror(errno));
    return -1;
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    failed(error, "Cannot open %s: %s", dir, g_strerror(errno));
    return -1;
  }
  if (fstat(fd, &info) != 0 || info.st_uid != geteuid()) {
    failed(error, "%s is not owned by uid %u", dir, (guint)geteuid());
    close(fd);
    return -1;
  }
  if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0 && fchmod(fd, 0700) != 0) {
    failed(error, "Cannot change the mode of %s to 0700: %s", dir, g_strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* A rename or unlink lasts once the directory is on disk. */
static gboolean
sync_dir(int dir_fd, const char *dir, GError **error)
{
  if (fsync(dir_fd) == 0)
    return TRUE;
  return failed(error, "Cannot sync %s: %s", dir, g_strerror(errno));
}

gboolean
tg_persist_save(const char *dir, const TgPersistRecord *record, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autofree char *path = NULL;
  g_autofree char *data = NULL;
  gsize length = 0;
  gboolean ok;
  int dir_fd;

  g_return_val_if_fail(dir != NULL && record != NULL, FALSE);

  if (!tg_persist_id_is_valid(record->id))
    return tg_persist_record_check(record, "tunnel", error);
  path = record_path(dir, record->id);
  if (!tg_persist_record_check(record, path, error))
    return FALSE;
  data = tg_persist_record_to_data(record, &length);
  if (length > TG_PERSIST_MAX_FILE_SIZE)
    return invalid(error, path, "%" G_GSIZE_FORMAT " bytes, more than %d", length,
                   TG_PERSIST_MAX_FILE_SIZE);
  dir_fd = open_dir_for_writing(dir, error);
  if (dir_fd < 0)
    return FALSE;
  ok = g_file_set_contents_full(
      path, data, (gssize)length,
      G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE, 0600, &local_error);
  if (!ok)
    failed(error, "%s", local_error->message);
  else
    ok = sync_dir(dir_fd, dir, error);
  close(dir_fd);
  return ok;
}

gboolean
tg_persist_remove(const char *dir, const char *id, GError **error)
{
  g_autofree char *path = NULL;
  gboolean ok = TRUE;
  int dir_fd;

  g_return_val_if_fail(dir != NULL, FALSE);

  if (!tg_persist_id_is_valid(id)) {
    g_autofree char *quoted = tg_text_printable(id != NULL ? id : "", MAX_QUOTED);

    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "'%s' is not a tunnel id (1 to %d digits, not starting with 0)", quoted,
                MAX_ID_DIGITS);
    return FALSE;
  }
  path = record_path(dir, id);
  if (unlink(path) != 0) {
    if (errno == ENOENT)
      return TRUE;
    return failed(error, "Cannot remove %s: %s", path, g_strerror(errno));
  }
  dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ok = sync_dir(dir_fd, dir, error);
    close(dir_fd);
  }
  return ok;
}

static void add_problem(GPtrArray *problems, const char *format, ...) G_GNUC_PRINTF(2, 3);

static void
add_problem(GPtrArray *problems, const char *format, ...)
{
  va_list args;

  va_start(args, format);
  g_ptr_array_add(problems, g_strdup_vprintf(format, args));
  va_end(args);
}

/* Reads at most TG_PERSIST_MAX_FILE_SIZE + 1 bytes: one more tells that the
 * file grew past the limit since fstat(). */
static char *
read_limited(int fd, gsize *length, int *saved_errno)
{
  g_autofree char *data = g_malloc(TG_PERSIST_MAX_FILE_SIZE + 1);
  gsize size = 0;

  while (size <= TG_PERSIST_MAX_FILE_SIZE) {
    gssize n = read(fd, data + size, TG_PERSIST_MAX_FILE_SIZE + 1 - size);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      *saved_errno = errno;
      return NULL;
    }
    if (n == 0)
      break;
    size += (gsize)n;
  }
  *length = size;
  return g_steal_pointer(&data);
}

/* The file's text, or NULL with a problem added. */
static char *
read_record_file(int dir_fd, const char *name, const char *path, gsize *length,
                 GPtrArray *problems)
{
  g_autofree char *data = NULL;
  struct stat info;
  int saved_errno = 0;
  int fd =
      openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

  if (fd < 0) {
    if (errno == ELOOP)
      add_problem(problems, "%s: a symbolic link", path);
    else if (errno != ENOENT) /* removed since the listing */
      add_problem(problems, "%s: cannot open: %s", path, g_strerror(errno));
    return NULL;
  }
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode))
    add_problem(problems, "%s: not a regular file", path);
  else if (info.st_uid != geteuid())
    add_problem(problems, "%s: owned by uid %u, not %u", path, (guint)info.st_uid,
                (guint)geteuid());
  else if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    add_problem(problems, "%s: writable by group or others (mode %04o)", path,
                (guint)(info.st_mode & 07777));
  else if (info.st_size > TG_PERSIST_MAX_FILE_SIZE)
    add_problem(problems, "%s: larger than %d bytes", path, TG_PERSIST_MAX_FILE_SIZE);
  else if ((data = read_limited(fd, length, &saved_errno)) == NULL)
    add_problem(problems, "%s: cannot read: %s", path, g_strerror(saved_errno));
  else if (*length > TG_PERSIST_MAX_FILE_SIZE)
    add_problem(problems, "%s: larger than %d bytes", path, TG_PERSIST_MAX_FILE_SIZE);
  close(fd);
  if (data != NULL && *length > TG_PERSIST_MAX_FILE_SIZE)
    g_clear_pointer(&data, g_free);
  return g_steal_pointer(&data);
}

/* The directory, or -1 (a missing one adds no problem). */
static int
open_dir_for_reading(const char *dir, GPtrArray *problems)
{
  struct stat info;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

  if (fd < 0) {
    int saved_errno = errno;
    struct stat link;

    /* O_DIRECTORY | O_NOFOLLOW on a symbolic link fails with ENOTDIR */
    if (lstat(dir, &link) == 0 && S_ISLNK(link.st_mode))
      add_problem(problems, "%s: a symbolic link; no tunnel restored", dir);
    else if (saved_errno != ENOENT)
      add_problem(problems, "%s: cannot open: %s; no tunnel restored", dir,
                  g_strerror(saved_errno));
    return -1;
  }
  if (fstat(fd, &info) != 0 || info.st_uid != geteuid() ||
      (info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    add_problem(problems,
                "%s: not owned by uid %u or writable by group or others; no tunnel "
                "restored",
                dir, (guint)geteuid());
    close(fd);
    return -1;
  }
  return fd;
}

static void
load_entry(int dir_fd, const char *dir, const char *name, GPtrArray *records,
           GPtrArray *problems)
{
  g_autofree char *path = g_build_filename(dir, name, NULL);
  g_autofree char *stem = NULL;
  g_autofree char *data = NULL;
  g_autoptr(GError) error = NULL;
  TgPersistRecord *record;
  gsize length = 0;

  if (g_str_has_suffix(name, TG_PERSIST_SUFFIX))
    stem = g_strndup(name, strlen(name) - strlen(TG_PERSIST_SUFFIX));
  if (stem == NULL || !tg_persist_id_is_valid(stem)) {
    g_autofree char *quoted = tg_text_printable(path, PATH_MAX);

    add_problem(problems,
                "%s: not named ID" TG_PERSIST_SUFFIX
                " (ID: 1 to %d digits, not starting with 0)",
                quoted, MAX_ID_DIGITS);
    return;
  }
  data = read_record_file(dir_fd, name, path, &length, problems);
  if (data == NULL)
    return;
  record = tg_persist_record_from_data(data, length, path, &error);
  if (record == NULL)
    g_ptr_array_add(problems, g_strdup(error->message));
  else
    g_ptr_array_add(records, record);
}

static gint
compare_records(gconstpointer a, gconstpointer b)
{
  const TgPersistRecord *x = *(const TgPersistRecord *const *)a;
  const TgPersistRecord *y = *(const TgPersistRecord *const *)b;

  return compare_ids(x->id, y->id);
}

static gint
compare_strings(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *
tg_persist_load_all(const char *dir, GPtrArray **problems)
{
  GPtrArray *records =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_persist_record_free);
  g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func(g_free);
  DIR *listing = NULL;
  struct dirent *entry;
  int dir_fd;

  g_return_val_if_fail(dir != NULL, records);

  dir_fd = open_dir_for_reading(dir, found);
  if (dir_fd >= 0) {
    int list_fd = dup(dir_fd);

    listing = list_fd >= 0 ? fdopendir(list_fd) : NULL;
    if (listing == NULL) {
      add_problem(found, "%s: cannot list: %s; no tunnel restored", dir,
                  g_strerror(errno));
      if (list_fd >= 0)
        close(list_fd);
    }
  }
  while (listing != NULL && (entry = readdir(listing)) != NULL) {
    if (g_str_equal(entry->d_name, ".") || g_str_equal(entry->d_name, ".."))
      continue;
    load_entry(dir_fd, dir, entry->d_name, records, found);
  }
  if (listing != NULL)
    closedir(listing);
  if (dir_fd >= 0)
    close(dir_fd);
  g_ptr_array_sort(records, compare_records);
  g_ptr_array_sort(found, compare_strings);

  if (problems != NULL) {
    *problems = g_steal_pointer(&found);
  } else {
    for (guint i = 0; i < found->len; i++)
      tg_warning("persistent tunnels: %s", (const char *)g_ptr_array_index(found, i));
  }
  return records;
}

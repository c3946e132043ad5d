/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "restore.h"

#include "accounts.h"
#include "admission.h"
#include "log.h"
#include "opener.h"
#include "persist.h"
#include "profile.h"
#include "tg-error.h"

/* The owner of a tunnel nobody asks for, as the authorization gate makes a
 * caller, but with no bus name and no process (paths are then resolved in
 * the daemon's own view), and the owner for the policy. */
static gboolean
owner_from_uid(uid_t uid, TgCaller **owner, TgPolicySubject **subject, GError **error)
{
  g_autofree char *name = NULL;
  guint32 gid = 0;
  int found;

  *subject = tg_policy_subject_from_uid(uid, error);
  if (*subject == NULL)
    return FALSE;
  found = tg_accounts_lookup_uid(uid, &name, &gid);
  if (found != 1) {
    g_set_error(error, TG_ERROR, found == 0 ? TG_ERROR_NOT_FOUND : TG_ERROR_FAILED,
                found == 0 ? "No user with uid %u" : "Cannot look up uid %u now",
                (unsigned)uid);
    g_clear_pointer(subject, tg_policy_subject_free);
    return FALSE;
  }
  *owner = g_new0(TgCaller, 1);
  (*owner)->uid = uid;
  (*owner)->gid = gid;
  (*owner)->user_name = g_steal_pointer(&name);
  return TRUE;
}

/* ---- persistent tunnels ---- */

/* A record the policy, its profile or NSS now refuses goes; one that could
 * not be opened for a reason that may pass is kept for the next start. */
static gboolean
is_verdict(const GError *error)
{
  return g_error_matches(error, TG_ERROR, TG_ERROR_POLICY_DENIED) ||
         g_error_matches(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED) ||
         g_error_matches(error, TG_ERROR, TG_ERROR_NOT_FOUND) ||
         g_error_matches(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED) ||
         g_error_matches(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
}

static void
restore_refused(TgDaemon *daemon, const char *id, const char *user, const GError *error)
{
  g_autofree char *dir = tg_persist_dir(daemon->state_dir);
  g_autoptr(GError) remove_error = NULL;
  gboolean verdict = is_verdict(error);

  /* the daemon stopped while it was admitted: it comes back next time */
  if (!tg_registry_check_running(daemon->registry, NULL))
    return;
  if (verdict && !tg_persist_remove(dir, id, &remove_error))
    tg_warning("persistent tunnels: %s", remove_error->message);
  tg_log_event(
      G_LOG_LEVEL_WARNING, verdict ? "TUNNEL_RESTORE_REFUSED" : "TUNNEL_RESTORE_FAILED",
      "TUNNEL_ID", id, "USER", user, "MESSAGE",
      "persistent tunnel %s of %s not restored: %s; %s", id, user, error->message,
      verdict ? "its record is removed"
              : "its record is kept, to be tried at the next start");
}

static void
restore_done(TgOpenRequest *request, TgTunnel *tunnel, const GError *error,
             gpointer user_data)
{
  if (error != NULL)
    restore_refused(request->daemon, request->tunnel_id, request->owner->user_name,
                    error);
  tg_open_request_free(request);
}

/* What OpenTunnel with the record's options would have asked for. */
static gboolean
fill_request(TgOpenRequest *request, const TgPersistRecord *record, GError **error)
{
  request->destination = g_new0(TgDestination, 1);
  if (record->profile != NULL) {
    request->destination->profile = g_strdup(record->profile);
  } else {
    request->destination->host = g_strdup(record->host);
    request->destination->port = record->port;
    request->destination->user = g_strdup(record->remote_user);
  }
  for (guint i = 0; i < record->forwards->len; i++) {
    TgForward *forward = tg_forward_parse(g_ptr_array_index(record->forwards, i), error);

    if (forward == NULL)
      return FALSE;
    g_ptr_array_add(request->forwards, forward);
    if (!tg_admission_forward_is_served(forward, error))
      return FALSE;
  }
  request->listen_ports = g_array_new(FALSE, TRUE, sizeof(guint16));
  g_array_set_size(request->listen_ports, request->forwards->len);
  for (guint i = 0; i < record->listeners->len; i++) {
    const TgPersistListener *listener = g_ptr_array_index(record->listeners, i);

    g_array_index(request->listen_ports, guint16, listener->forward_index) =
        listener->port;
  }
  for (guint i = 0; i < record->granted->len; i++) {
    TgAction action = TG_ACTION_NONE;

    tg_action_from_id(g_ptr_array_index(record->granted, i), &action);
    request->granted |= action;
  }
  request->agent_path = g_strdup(record->agent);
  request->identity_path = g_strdup(record->identity);
  request->host_key = g_strdup(record->host_key);
  request->ciphers = g_strdup(record->ciphers);
  request->description = g_strdup(record->description);
  request->keepalive = record->keepalive;
  request->keepalive_given = TRUE;
  if (record->keepalive_count > 0)
    request->keepalive_count = record->keepalive_count;
  request->reconnect = TRUE;
  request->persist = TRUE;
  request->created = record->created;
  return TRUE;
}

static void
restore_record(TgDaemon *daemon, const TgPersistRecord *record)
{
  TgOpenRequest *request = tg_open_request_new(daemon);
  g_autoptr(GError) error = NULL;

  request->tunnel_id = g_strdup(record->id);
  if (!owner_from_uid(record->uid, &request->owner, &request->subject, &error)) {
    restore_refused(daemon, record->id, record->user, error);
    tg_open_request_free(request);
    return;
  }
  if (!g_str_equal(request->owner->user_name, record->user))
    g_set_error(&error, TG_ERROR, TG_ERROR_NOT_FOUND,
                "uid %u is now the account %s, not %s who opened it",
                (unsigned)record->uid, request->owner->user_name, record->user);
  if (error != NULL || !fill_request(request, record, &error)) {
    restore_refused(daemon, record->id, record->user, error);
    tg_open_request_free(request);
    return;
  }
  tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_RESTORING", "TUNNEL_ID", record->id, "USER",
               record->user, "MESSAGE", "restoring persistent tunnel %s of %s (uid %u)",
               record->id, record->user, (unsigned)record->uid);
  tg_open_request_run(request, restore_done, NULL);
}

/* Every <id>.tunnel in @dir, read or not: a file skipped stays in place,
 * and no new tunnel may write over it. */
static void
reserve_ids(TgDaemon *daemon, const char *dir)
{
  g_autoptr(GDir) listing = g_dir_open(dir, 0, NULL);
  const char *name;

  while (listing != NULL && (name = g_dir_read_name(listing)) != NULL) {
    g_autofree char *id = NULL;

    if (!g_str_has_suffix(name, TG_PERSIST_SUFFIX))
      continue;
    id = g_strndup(name, strlen(name) - strlen(TG_PERSIST_SUFFIX));
    if (tg_persist_id_is_valid(id))
      tg_registry_reserve_tunnel_id(daemon->registry, id);
  }
}

void
tg_restore_tunnels(TgDaemon *daemon)
{
  g_autofree char *dir = tg_persist_dir(daemon->state_dir);
  g_autoptr(GPtrArray) records = NULL;

  reserve_ids(daemon, dir);
  records = tg_persist_load_all(dir, NULL); /* skipped files: warnings */
  if (records->len > 0)
    tg_message("restoring %u persistent tunnels from %s", records->len, dir);
  for (guint i = 0; i < records->len; i++)
    restore_record(daemon, g_ptr_array_index(records, i));
}

/* ---- Autostart profiles ---- */

static void
autostart_done(TgOpenRequest *request, TgTunnel *tunnel, const GError *error,
               gpointer user_data)
{
  const char *profile = request->destination->profile;

  g_hash_table_remove(request->daemon->autostarting, profile);
  if (tunnel != NULL) {
    tg_tunnel_set_autostart(tunnel);
    tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_AUTOSTART", "TUNNEL_ID", request->tunnel_id,
                 "USER", request->owner->user_name, "MESSAGE",
                 "profile %s autostarted as tunnel %s of %s", profile, request->tunnel_id,
                 request->owner->user_name);
  } else if (tg_registry_check_running(request->daemon->registry, NULL)) {
    tg_log_event(G_LOG_LEVEL_WARNING, "AUTOSTART_REFUSED", "USER",
                 request->owner->user_name, "MESSAGE",
                 "profile %s not autostarted for %s: %s", profile,
                 request->owner->user_name, error->message);
  }
  tg_open_request_free(request);
}

/* Opens @profile as its AutostartUser, like @profile for that user: the
 * profile's AllowUsers and AllowGroups must admit them, the policy its
 * server and forwards (tg_open_request_run()); no polkit action, the
 * administrator who wrote the profile authorized it. */
static void
autostart_profile(TgDaemon *daemon, const TgProfile *profile)
{
  TgOpenRequest *request = tg_open_request_new(daemon);
  g_autoptr(GError) error = NULL;
  guint32 uid = 0;
  int found = tg_accounts_lookup_user(profile->autostart_user, &uid);

  if (found != 1)
    g_set_error(&error, TG_ERROR, found == 0 ? TG_ERROR_NOT_FOUND : TG_ERROR_FAILED,
                found == 0 ? "no such account" : "NSS cannot look the account up now");
  if (error != NULL || !owner_from_uid(uid, &request->owner, &request->subject, &error)) {
    tg_log_event(G_LOG_LEVEL_WARNING, "AUTOSTART_REFUSED", "USER",
                 profile->autostart_user, "MESSAGE",
                 "profile %s not autostarted: AutostartUser %s at %s:%u: %s",
                 profile->name, profile->autostart_user, profile->file,
                 profile->autostart_user_line, error->message);
    tg_open_request_free(request);
    return;
  }
  request->destination = g_new0(TgDestination, 1);
  request->destination->profile = g_strdup(profile->name);
  request->reconnect = TRUE;
  g_hash_table_add(daemon->autostarting, g_strdup(profile->name));
  tg_open_request_run(request, autostart_done, NULL);
}

/* A tunnel of @profile's that failed for good stayed visible until now:
 * it makes way for the new one. */
static void
close_failed(TgDaemon *daemon, const char *profile)
{
  g_autoptr(GPtrArray) tunnels = tg_registry_list_tunnels(daemon->registry);

  for (guint i = 0; i < tunnels->len; i++) {
    gboolean running, failed;

    if (g_strcmp0(tg_tunnel_get_autostart(tunnels->pdata[i], &running, &failed),
                  profile) == 0 &&
        failed)
      tg_tunnel_close(tunnels->pdata[i], "its profile is autostarted again", NULL);
  }
}

void
tg_restore_autostart(TgDaemon *daemon)
{
  g_autofree char *dir = g_build_filename(daemon->config_dir, "profiles.d", NULL);
  g_autoptr(GPtrArray) tunnels = tg_registry_list_tunnels(daemon->registry);
  g_autoptr(GHashTable) running =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) names = tg_profile_list(dir, &error);

  if (names == NULL) {
    tg_warning("Autostart profiles not started: %s", error->message);
    return;
  }
  for (guint i = 0; i < tunnels->len; i++) {
    gboolean live, failed;
    const char *profile = tg_tunnel_get_autostart(tunnels->pdata[i], &live, &failed);

    if (profile != NULL && live)
      g_hash_table_add(running, g_strdup(profile));
  }
  for (guint i = 0; names[i] != NULL; i++) {
    g_autoptr(GError) profile_error = NULL;
    g_autoptr(TgProfile) profile = tg_profile_load(dir, names[i], &profile_error);

    if (profile == NULL || !profile->autostart ||
        g_hash_table_contains(running, names[i]) ||
        g_hash_table_contains(daemon->autostarting, names[i]))
      continue; /* a profile that cannot be read: check-config says why */
    close_failed(daemon, names[i]);
    autostart_profile(daemon, profile);
  }
}

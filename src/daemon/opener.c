/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "opener.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "admission.h"
#include "gate.h"
#include "profile.h"
#include "tg-error.h"

/* keepalive of a tunnel with reconnect when none is given: a dead path is
 * noticed within 90 s, not the TCP keepalive's 60 + 3 × 60 */
#define RECONNECT_KEEPALIVE_SECONDS 30

TgOpenRequest *
tg_open_request_new(TgDaemon *daemon)
{
  TgOpenRequest *request = g_new0(TgOpenRequest, 1);

  request->daemon = daemon;
  request->agent_fd = request->identity_fd = -1;
  request->keepalive_count = TG_OPEN_DEFAULT_KEEPALIVE_COUNT;
  request->forwards = g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  return request;
}

void
tg_open_request_free(TgOpenRequest *request)
{
  if (request == NULL)
    return;
  tg_destination_free(request->destination);
  g_ptr_array_unref(request->forwards);
  g_free(request->agent_path);
  if (request->agent_fd >= 0)
    close(request->agent_fd);
  g_free(request->identity_path);
  if (request->identity_fd >= 0)
    close(request->identity_fd);
  g_free(request->host_key);
  g_free(request->ciphers);
  g_free(request->description);
  g_clear_pointer(&request->owner, tg_caller_free);
  tg_policy_subject_free(request->subject);
  g_clear_object(&request->invocation);
  g_free(request->tunnel_id);
  g_clear_pointer(&request->listen_ports, g_array_unref);
  g_clear_pointer(&request->config, tg_session_config_free);
  g_free(request->profile_description);
  g_free(request);
}

char *
tg_open_destination_text(const char *user, const char *host, guint16 port)
{
  gboolean ipv6 = strchr(host, ':') != NULL;

  return g_strdup_printf("%s@%s%s%s:%u", user, ipv6 ? "[" : "", host, ipv6 ? "]" : "",
                         port);
}

/* A profile replaces the destination, the forwards and the credentials with
 * the administrator's; the user never sees the key. */
static gboolean
apply_profile(TgOpenRequest *request, TgSessionConfig *config, GError **error)
{
  TgDaemon *daemon = request->daemon;
  g_autofree char *dir = g_build_filename(daemon->config_dir, "profiles.d", NULL);
  g_autoptr(TgProfile) profile = NULL;
  g_autoptr(GError) local_error = NULL;
  gboolean restored = request->forwards->len > 0;
  int fd;

  profile = tg_profile_load(dir, request->destination->profile, &local_error);
  if (profile == NULL) {
    if (g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT) ||
        g_error_matches(local_error, TG_ERROR, TG_ERROR_NOT_FOUND))
      g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No tunnel profile '%s'",
                  request->destination->profile);
    else
      g_propagate_error(error, g_steal_pointer(&local_error));
    return FALSE;
  }
  if (!tg_gate_check_profile(request->subject, config->tunnel_id, profile, error))
    return FALSE;
  fd = open(profile->identity_file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Profile '%s': cannot open %s: %s",
                profile->name, profile->identity_file, g_strerror(errno));
    return FALSE;
  }
  config->identity_fd = fd;
  if (!tg_profile_check_identity_fd(fd, profile->identity_file, 0, error))
    return FALSE;

  /* a restored tunnel brings its forwards as they were, the profile's at
   * first and any added or removed since */
  for (guint i = 0; !restored && i < profile->forwards->len; i++) {
    TgForward *forward = tg_forward_copy(g_ptr_array_index(profile->forwards, i));
    g_ptr_array_add(request->forwards, forward);
    if (!tg_admission_forward_is_served(forward, error))
      return FALSE;
  }
  config->host = g_strdup(profile->server_host);
  config->port = profile->server_port;
  config->user = g_strdup(profile->user);
  config->host_key = g_strdup(profile->host_key);
  request->profile_description =
      g_strdup_printf("profile %s%s%s", profile->name, profile->description ? ": " : "",
                      profile->description ? profile->description : "");
  return TRUE;
}

/* What the store keeps of a persistent tunnel: how to open it again (the
 * tunnel adds its forwards and listeners when it saves it). */
static TgPersistRecord *
persist_record_new(TgOpenRequest *request, const TgSessionConfig *config)
{
  TgPersistRecord *record = tg_persist_record_new();
  const TgAction actions[] = { TG_ACTION_OPEN, TG_ACTION_OPEN_REMOTE, TG_ACTION_BIND_ANY,
                               TG_ACTION_USE_PROFILE, TG_ACTION_MANAGE };

  record->id = g_strdup(config->tunnel_id);
  record->created = request->created;
  record->uid = request->owner->uid;
  record->user = g_strdup(request->owner->user_name);
  if (request->destination->profile != NULL) {
    /* the server, login, key and host key are the profile's, read again */
    record->profile = g_strdup(request->destination->profile);
  } else {
    record->host = g_strdup(config->host);
    record->port = config->port;
    record->remote_user = g_strdup(config->user);
    record->agent = g_strdup(config->agent_path);
    record->identity = g_strdup(config->identity_path);
    record->host_key = g_strdup(config->host_key);
  }
  record->keepalive = config->keepalive_seconds;
  record->keepalive_count = config->keepalive_count;
  record->ciphers = g_strdup(config->ciphers);
  record->description = g_strdup(request->description);
  record->reconnect = config->reconnect;
  for (gsize i = 0; i < G_N_ELEMENTS(actions); i++) {
    if (request->granted & actions[i])
      g_ptr_array_add(record->granted, g_strdup(tg_action_id(actions[i])));
  }
  return record;
}

static void
open_admitted(TgAdmission *admission, const GError *error, gpointer user_data)
{
  TgOpenRequest *request = user_data;
  g_autoptr(TgAdmission) owned = admission;
  TgDaemon *daemon = request->daemon;
  const char *profile = request->destination->profile;
  g_autoptr(TgSessionConfig) config = g_steal_pointer(&request->config);
  g_autoptr(GPtrArray) listeners = NULL;
  g_autoptr(GPtrArray) connect_backs = NULL;
  g_autofree char *destination = NULL;
  gboolean reconnect = request->reconnect || request->persist;
  TgPersistRecord *record = NULL;
  TgTunnel *tunnel;

  if (error != NULL) {
    request->done(request, NULL, error, request->done_data);
    return;
  }
  destination = tg_open_destination_text(config->user, config->host, config->port);
  config->host_key_mode = tg_admission_get_host_key_mode(admission);
  listeners = tg_admission_take_listeners(admission);
  connect_backs = tg_admission_take_connect_backs(admission);
  g_ptr_array_extend_and_steal(config->listeners, g_steal_pointer(&listeners));
  g_ptr_array_extend_and_steal(config->connect_backs, g_steal_pointer(&connect_backs));
  config->socket_mark = tg_enforcer_socket_mark(daemon->enforcer);
  config->connect_back_mark = tg_enforcer_connect_back_mark(daemon->enforcer);
  config->owner.uid = request->owner->uid;
  config->owner.gid = request->owner->gid;
  config->owner.user_name = g_strdup(request->owner->user_name);
  config->owner.pid = request->owner->pid;
  config->agent_path = g_steal_pointer(&request->agent_path);
  config->agent_fd = g_steal_fd(&request->agent_fd);
  config->identity_path = g_steal_pointer(&request->identity_path);
  if (config->identity_fd < 0)
    config->identity_fd = g_steal_fd(&request->identity_fd);
  config->ciphers = g_steal_pointer(&request->ciphers);
  config->keepalive_seconds = request->keepalive;
  if (reconnect && !request->keepalive_given)
    config->keepalive_seconds = RECONNECT_KEEPALIVE_SECONDS;
  config->keepalive_count = request->keepalive_count;
  config->reconnect = reconnect;
  config->retry_first = reconnect && request->invocation == NULL;
  config->connect_timeout_seconds = daemon->connect_timeout_seconds;
  config->ssh_dir = g_strdup(daemon->state_dir);
  config->known_hosts = g_build_filename(daemon->state_dir, "known_hosts", NULL);
  config->global_known_hosts = g_strdup(daemon->system_known_hosts);
  g_ptr_array_extend_and_steal(config->forwards, g_steal_pointer(&request->forwards));
  request->forwards = g_ptr_array_new();
  if (request->persist)
    record = persist_record_new(request, config);

  tunnel = tg_tunnel_open(
      daemon, request->owner, g_steal_pointer(&request->subject), destination,
      request->description != NULL ? request->description : request->profile_description,
      request->bind_to_caller, request->granted, profile == NULL,
      g_steal_pointer(&config), g_steal_pointer(&request->invocation));
  if (profile != NULL)
    tg_tunnel_set_profile(tunnel, profile);
  if (record != NULL)
    tg_tunnel_persist(tunnel, record);
  request->done(request, tunnel, NULL, request->done_data);
}

void
tg_open_request_run(TgOpenRequest *request, TgOpenDoneFunc done, gpointer user_data)
{
  TgDaemon *daemon = request->daemon;
  g_autoptr(GError) error = NULL;
  TgSessionConfig *config;
  TgAdmission *admission;
  gboolean profile = request->destination->profile != NULL;

  request->done = done;
  request->done_data = user_data;
  /* polkit may answer after SIGTERM: nothing new starts then */
  if (!tg_registry_check_running(daemon->registry, &error)) {
    done(request, NULL, error, user_data);
    return;
  }
  config = request->config = tg_session_config_new();

  /* the id first, so that the decisions below are logged with it (a refused
   * request uses its number up) */
  if (request->tunnel_id == NULL)
    request->tunnel_id = tg_registry_new_tunnel_id(daemon->registry);
  config->tunnel_id = g_strdup(request->tunnel_id);

  if (profile) {
    if (!apply_profile(request, config, &error)) {
      done(request, NULL, error, user_data);
      return;
    }
  } else {
    config->host = g_strdup(request->destination->host);
    config->port = request->destination->port;
    config->user =
        g_strdup(request->destination->user != NULL ? request->destination->user
                                                    : request->owner->user_name);
    config->host_key = g_steal_pointer(&request->host_key);
  }

  /* polkit said who may ask; now the admission: the policy says what, and
   * the listeners, guards and pins are made (a profile's forwards were
   * sanctioned by use-profile) */
  admission =
      tg_admission_new(daemon, request->owner->uid, request->subject, config->tunnel_id,
                       request->forwards, request->granted, !profile);
  tg_admission_set_server(admission, config->host, config->port, config->host_key, TRUE);
  for (guint i = 0; request->listen_ports != NULL && i < request->listen_ports->len; i++)
    tg_admission_set_listen_port(admission, i,
                                 g_array_index(request->listen_ports, guint16, i));
  tg_admission_run(admission, NULL, open_admitted, request);
}

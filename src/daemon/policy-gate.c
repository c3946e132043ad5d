/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "policy-gate.h"

#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "tg-error.h"
#include "tunnel.h"

/* Logs the decision, and turns a denial into the D-Bus error. */
static gboolean
gate_decide(const TgPolicySubject *subject, const char *tunnel_id, const char *what,
            TgPolicyDecision *decision, GError **error)
{
  g_autoptr(TgPolicyDecision) owned = decision;

  tg_policy_log_decision(subject, tunnel_id, what, owned);
  return tg_policy_decision_to_error(owned, error);
}

static guint
count_tunnels_of(TgDaemon *daemon, uid_t uid)
{
  GHashTableIter iter;
  gpointer tunnel;
  guint n = 0;

  g_hash_table_iter_init(&iter, daemon->tunnels);
  while (g_hash_table_iter_next(&iter, NULL, &tunnel))
    n += tg_tunnel_get_owner(tunnel) == uid;
  return n;
}

/* The verification the worker does for the policy's HostKeyPolicy. */
static TgHostKeyMode
host_key_mode(const TgPolicy *policy, const TgPolicySubject *subject)
{
  switch (tg_policy_get_host_key_policy(policy, subject, NULL)) {
  case TG_HOST_KEY_POLICY_STRICT:
    return TG_HOST_KEY_STRICT;
  case TG_HOST_KEY_POLICY_PINNED_ONLY:
    return TG_HOST_KEY_PINNED_ONLY;
  case TG_HOST_KEY_POLICY_KNOWN_OR_PINNED:
  default:
    return TG_HOST_KEY_KNOWN_OR_PINNED;
  }
}

gboolean
tg_gate_check_profile(const TgPolicySubject *subject, const char *tunnel_id,
                      const TgProfile *profile, GError **error)
{
  g_autofree char *what = g_strdup_printf("profile @%s", profile->name);

  return gate_decide(subject, tunnel_id, what, tg_profile_decide(profile, subject),
                     error);
}

gboolean
tg_gate_check_open(TgDaemon *daemon, const TgPolicySubject *subject,
                   const char *tunnel_id, const char *host, guint16 port,
                   GPtrArray *forwards, const char *pinned_host_key, TgHostKeyMode *mode,
                   GError **error)
{
  const TgPolicy *policy = daemon->policy;
  g_autofree char *server = g_strdup_printf("server %s port %u", host, port);

  if (!gate_decide(subject, tunnel_id, server,
                   tg_policy_check_server(policy, subject, host, port), error))
    return FALSE;
  for (guint i = 0; i < forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(forwards, i);
    if (!gate_decide(subject, tunnel_id, forward->spec,
                     tg_policy_check_forward(policy, subject, forward), error))
      return FALSE;
  }
  if (!gate_decide(subject, tunnel_id, "one more tunnel",
                   tg_policy_check_count_limit(policy, subject, TG_POLICY_MAX_TUNNELS,
                                               count_tunnels_of(daemon, subject->uid)),
                   error))
    return FALSE;
  *mode = host_key_mode(policy, subject);
  return gate_decide(subject, tunnel_id, "host key",
                     tg_policy_check_host_key(policy, subject, pinned_host_key != NULL),
                     error);
}

gboolean
tg_gate_check_new_forward(TgDaemon *daemon, const TgPolicySubject *subject,
                          const char *tunnel_id, const TgForward *forward, GError **error)
{
  return gate_decide(subject, tunnel_id, forward->spec,
                     tg_policy_check_forward(daemon->policy, subject, forward), error);
}

TgPolicyDecision *
tg_gate_check_forward(TgDaemon *daemon, const TgPolicySubject *subject, const char *host,
                      guint16 port, const TgForward *forward)
{
  g_autofree char *server = g_strdup_printf("server %s port %u", host, port);
  TgPolicyDecision *decision =
      tg_policy_check_server(daemon->policy, subject, host, port);

  tg_policy_log_decision(subject, NULL, server, decision);
  if (!decision->allowed)
    return decision;
  tg_policy_decision_free(decision);
  decision = tg_policy_check_forward(daemon->policy, subject, forward);
  tg_policy_log_decision(subject, NULL, forward->spec, decision);
  return decision;
}

TgPolicy *
tg_gate_load(TgDaemon *daemon, GError **error)
{
  g_autofree char *main_file = g_build_filename(daemon->config_dir, "policy.conf", NULL);
  g_autofree char *dropins = g_build_filename(daemon->config_dir, "policy.d", NULL);

  return tg_policy_load(daemon->default_policy, main_file, dropins, error);
}

gboolean
tg_gate_guard_listeners(TgDaemon *daemon, const TgPolicySubject *subject,
                        GPtrArray *listeners, const char *tunnel_id, GError **error)
{
  TgListenerSources sources;

  tg_policy_get_listener_sources(daemon->policy, subject, &sources);
  for (guint i = 0; i < listeners->len; i++) {
    TgListener *listener = g_ptr_array_index(listeners, i);

    if (!sources.any && sources.addresses != NULL) {
      listener->allowed_sources =
          g_array_sized_new(FALSE, FALSE, sizeof(TgNetwork), sources.addresses->len);
      g_array_append_vals(listener->allowed_sources, sources.addresses->data,
                          sources.addresses->len);
    }
    if (!tg_enforcer_add_listener(daemon->enforcer, listener->address, listener->port,
                                  &sources, tunnel_id,
                                  error)) {
      for (guint j = 0; j < i; j++) {
        const TgListener *done = g_ptr_array_index(listeners, j);
        tg_enforcer_remove_listener(daemon->enforcer, done->address, done->port);
      }
      return FALSE;
    }
  }
  return TRUE;
}

void
tg_gate_unguard_listener(TgDaemon *daemon, const char *address, guint16 port)
{
  tg_enforcer_remove_listener(daemon->enforcer, address, port);
}

TgConnectBack *
tg_gate_resolve_connect_back(const TgForward *forward, guint index, GError **error)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
  struct addrinfo *result = NULL;
  char port[8];
  g_autoptr(TgConnectBack) connect_back = tg_connect_back_new(index);
  int rc;

  g_snprintf(port, sizeof port, "%u", forward->connect.port);
  rc = getaddrinfo(forward->connect.host, port, &hints, &result);
  if (rc != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Forward '%s': cannot resolve %s: %s", forward->spec,
                forward->connect.host, gai_strerror(rc));
    return NULL;
  }
  for (struct addrinfo *a = result; a != NULL; a = a->ai_next) {
    struct sockaddr_storage address = { 0 };

    if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
        a->ai_addrlen > sizeof address)
      continue;
    memcpy(&address, a->ai_addr, a->ai_addrlen);
    g_array_append_val(connect_back->addresses, address);
  }
  freeaddrinfo(result);
  if (connect_back->addresses->len == 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Forward '%s': %s has no IPv4 or IPv6 address", forward->spec,
                forward->connect.host);
    return NULL;
  }
  return g_steal_pointer(&connect_back);
}

/* ---- R destinations, resolved off the D-Bus thread ---- */

struct _TgResolved {
  GPtrArray *forwards; /* borrowed: the caller keeps them unchanged until done */
  GPtrArray *results;  /* TgConnectBack* or NULL, one per forward */
  GPtrArray *errors;   /* GError* or NULL, one per forward */
  GArray *wanted;      /* gboolean, one per forward */
  TgResolvedFunc done;
  gpointer user_data;
};

static void
error_free0(gpointer error)
{
  if (error != NULL)
    g_error_free(error);
}

void
tg_resolved_free(TgResolved *resolved)
{
  if (resolved == NULL)
    return;
  g_ptr_array_unref(resolved->results);
  g_ptr_array_unref(resolved->errors);
  g_array_unref(resolved->wanted);
  g_free(resolved);
}

static void
resolve_thread(GTask *task, gpointer source, gpointer task_data,
               GCancellable *cancellable)
{
  TgResolved *resolved = task_data;

  for (guint i = 0; i < resolved->forwards->len; i++) {
    GError *error = NULL;

    if (!g_array_index(resolved->wanted, gboolean, i))
      continue;
    resolved->results->pdata[i] =
        tg_gate_resolve_connect_back(g_ptr_array_index(resolved->forwards, i), 0, &error);
    resolved->errors->pdata[i] = error;
  }
  g_task_return_boolean(task, TRUE);
}

static void
resolve_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  TgResolved *resolved = g_task_get_task_data(G_TASK(result));

  resolved->done(resolved, resolved->user_data);
}

void
tg_gate_resolve_connect_backs(TgDaemon *daemon, const TgPolicySubject *subject,
                              GPtrArray *forwards, TgResolvedFunc done,
                              gpointer user_data)
{
  TgResolved *resolved = g_new0(TgResolved, 1);
  g_autoptr(GTask) task = NULL;

  resolved->forwards = forwards;
  resolved->results =
      g_ptr_array_new_full(forwards->len, (GDestroyNotify)tg_connect_back_free);
  resolved->errors = g_ptr_array_new_full(forwards->len, error_free0);
  g_ptr_array_set_size(resolved->results, forwards->len);
  g_ptr_array_set_size(resolved->errors, forwards->len);
  resolved->wanted = g_array_sized_new(FALSE, TRUE, sizeof(gboolean), forwards->len);
  g_array_set_size(resolved->wanted, forwards->len);
  resolved->done = done;
  resolved->user_data = user_data;
  for (guint i = 0; i < forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(forwards, i);
    g_autoptr(TgPolicyDecision) decision = NULL;

    /* only what the policy allows: a forbidden name is never looked up (the
     * caller's logged check refuses it afterwards) */
    if (forward->kind != TG_FORWARD_REMOTE || forward->connect.host == NULL)
      continue;
    decision = tg_policy_check_forward(daemon->policy, subject, forward);
    g_array_index(resolved->wanted, gboolean, i) = decision->allowed;
  }
  task = g_task_new(NULL, NULL, resolve_done, NULL);
  g_task_set_task_data(task, resolved, (GDestroyNotify)tg_resolved_free);
  g_task_run_in_thread(task, resolve_thread);
}

TgConnectBack *
tg_resolved_take(TgResolved *resolved, guint position, guint index, GError **error)
{
  TgConnectBack *connect_back;
  const TgForward *forward = g_ptr_array_index(resolved->forwards, position);

  if (resolved->errors->pdata[position] != NULL) {
    *error = g_error_copy(resolved->errors->pdata[position]);
    return NULL;
  }
  connect_back = g_steal_pointer(&resolved->results->pdata[position]);
  if (connect_back == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                "Forward '%s': the policy changed during the call; try again",
                forward->spec);
    return NULL;
  }
  connect_back->forward_index = index;
  return connect_back;
}

gboolean
tg_gate_pin_connect_back(TgDaemon *daemon, const TgConnectBack *connect_back,
                         const char *tunnel_id, GError **error)
{
  for (guint i = 0; i < connect_back->addresses->len; i++) {
    if (!tg_enforcer_add_connect_back(
            daemon->enforcer,
            &g_array_index(connect_back->addresses, struct sockaddr_storage, i),
            tunnel_id, error)) {
      for (guint j = 0; j < i; j++)
        tg_enforcer_remove_connect_back(
            daemon->enforcer,
            &g_array_index(connect_back->addresses, struct sockaddr_storage, j));
      g_prefix_error(error, "Cannot pin the connect-back destination in the firewall: ");
      return FALSE;
    }
  }
  return TRUE;
}

void
tg_gate_unpin_connect_back(TgDaemon *daemon, const TgConnectBack *connect_back)
{
  for (guint i = 0; i < connect_back->addresses->len; i++)
    tg_enforcer_remove_connect_back(
        daemon->enforcer,
        &g_array_index(connect_back->addresses, struct sockaddr_storage, i));
}

/* The new policy, applied to one open tunnel. */
/* A profile's tunnel: the profile must still exist and allow its user. */
static gboolean
recheck_profile(TgDaemon *daemon, TgTunnel *tunnel, const TgPolicySubject *subject)
{
  g_autofree char *dir = g_build_filename(daemon->config_dir, "profiles.d", NULL);
  g_autoptr(TgProfile) profile = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *reason = NULL;

  profile = tg_profile_load(dir, tg_tunnel_get_profile(tunnel), &error);
  if (profile != NULL) {
    g_autofree char *what = g_strdup_printf("profile @%s", profile->name);
    g_autoptr(TgPolicyDecision) decision = tg_profile_decide(profile, subject);

    tg_policy_log_decision(subject, tg_tunnel_get_id(tunnel), what, decision);
    if (decision->allowed)
      return TRUE;
    reason = g_strdup_printf("the reloaded policy forbids it: %s", decision->reason);
  } else {
    reason = g_strdup_printf("its profile '%s' cannot be read any more: %s",
                             tg_tunnel_get_profile(tunnel), error->message);
  }
  tg_tunnel_close(tunnel, reason, NULL);
  return FALSE;
}

/* An owner as NSS gives them at this reload: looked up once per uid, not
 * once per tunnel (each lookup reads /etc/passwd and /etc/group). */
typedef struct {
  TgPolicySubject *subject; /* NULL: the lookup failed */
  char *error;
} OwnerLookup;

static void
owner_lookup_free(OwnerLookup *lookup)
{
  tg_policy_subject_free(lookup->subject);
  g_free(lookup->error);
  g_free(lookup);
}

static const OwnerLookup *
lookup_owner(GHashTable *owners, uid_t uid)
{
  OwnerLookup *lookup = g_hash_table_lookup(owners, GUINT_TO_POINTER(uid));

  if (lookup == NULL) {
    g_autoptr(GError) error = NULL;

    lookup = g_new0(OwnerLookup, 1);
    lookup->subject = tg_policy_subject_from_uid(uid, &error);
    if (lookup->subject == NULL)
      lookup->error = g_strdup(error->message);
    g_hash_table_insert(owners, GUINT_TO_POINTER(uid), lookup);
  }
  return lookup;
}

/* @owners: uid -> OwnerLookup, for this reload. */
static void
recheck_tunnel(TgDaemon *daemon, TgTunnel *tunnel, GHashTable *owners)
{
  const TgPolicySubject *subject;
  const char *host;
  guint16 port;
  g_autoptr(TgPolicyDecision) server = NULL;
  g_autoptr(TgPolicyDecision) host_key = NULL;
  g_autofree char *what = NULL;
  const OwnerLookup *owner = lookup_owner(owners, tg_tunnel_get_owner(tunnel));

  /* the owner as NSS knows them now: a group they left grants nothing more */
  if (owner->subject == NULL) {
    g_autofree char *reason = g_strdup_printf(
        "the owner's account cannot be looked up for the reloaded policy: %s",
        owner->error);
    tg_tunnel_close(tunnel, reason, NULL);
    return;
  }
  tg_tunnel_set_subject(tunnel, tg_policy_subject_copy(owner->subject));
  subject = tg_tunnel_get_subject(tunnel);

  if (tg_tunnel_get_profile(tunnel) != NULL && !recheck_profile(daemon, tunnel, subject))
    return;

  tg_tunnel_get_server(tunnel, &host, &port);
  what = g_strdup_printf("server %s port %u", host, port);
  server = tg_policy_check_server(daemon->policy, subject, host, port);
  tg_policy_log_decision(subject, tg_tunnel_get_id(tunnel), what, server);
  host_key = tg_policy_check_host_key(daemon->policy, subject,
                                      tg_tunnel_get_host_key(tunnel) != NULL);
  tg_policy_log_decision(subject, tg_tunnel_get_id(tunnel), "host key", host_key);
  if (!server->allowed || !host_key->allowed) {
    g_autofree char *reason =
        g_strdup_printf("the reloaded policy forbids it: %s",
                        !server->allowed ? server->reason : host_key->reason);
    tg_tunnel_close(tunnel, reason, NULL);
    return;
  }
  for (guint i = 0; i < tg_tunnel_get_n_forwards(tunnel); i++) {
    const TgForward *forward = tg_tunnel_get_forward(tunnel, i);
    g_autoptr(TgPolicyDecision) decision = NULL;

    if (forward == NULL) /* removed before */
      continue;
    decision = tg_policy_check_forward(daemon->policy, subject, forward);
    tg_policy_log_decision(subject, tg_tunnel_get_id(tunnel), forward->spec, decision);
    if (!decision->allowed &&
        !tg_tunnel_remove_forward(tunnel, i, decision->reason, NULL))
      return; /* that was its last forward, and the tunnel is gone */
  }
  tg_tunnel_apply_policy(tunnel, daemon->policy);
}

gboolean
tg_gate_reload(TgDaemon *daemon, GError **error)
{
  TgPolicy *fresh = tg_gate_load(daemon, error);
  g_autoptr(GList) tunnels = NULL;
  g_autoptr(GHashTable) owners = NULL;

  if (fresh == NULL)
    return FALSE;
  if (!tg_enforcer_apply_policy(daemon->enforcer, fresh, error)) {
    g_prefix_error(error, "The new policy asks for a firewall that cannot be installed; "
                          "the old policy stays in force: ");
    tg_policy_unref(fresh);
    return FALSE;
  }
  g_clear_pointer(&daemon->policy, tg_policy_unref);
  daemon->policy = fresh;
  {
    g_autoptr(GError) server_error = NULL;
    if (!tg_server_apply_policy(daemon->server, fresh, &server_error))
      tg_warning("server mode: %s", server_error->message);
  }
  tg_log_event(G_LOG_LEVEL_MESSAGE, "POLICY_RELOADED", "MESSAGE",
               "policy reloaded; re-checking %u tunnels",
               g_hash_table_size(daemon->tunnels));

  /* closing a tunnel may remove it from the table: walk a copy */
  tunnels = g_hash_table_get_values(daemon->tunnels);
  owners = g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)owner_lookup_free);
  for (GList *l = tunnels; l != NULL; l = l->next)
    recheck_tunnel(daemon, l->data, owners);
  return TRUE;
}

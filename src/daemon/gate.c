/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "gate.h"

#include <string.h>
#include <sys/socket.h>

#include "accounts.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "tg-error.h"

/* Logs the decision, and turns a denial into the D-Bus error. */
static gboolean
gate_decide(const TgPolicySubject *subject, const char *tunnel_id, const char *what,
            TgPolicyDecision *decision, GError **error)
{
  g_autoptr(TgPolicyDecision) owned = decision;

  tg_policy_log_decision(subject, tunnel_id, what, owned);
  return tg_policy_decision_to_error(owned, error);
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
tg_gate_check_server(TgDaemon *daemon, const TgPolicySubject *subject,
                     const char *tunnel_id, const char *host, guint16 port,
                     GError **error)
{
  g_autofree char *server = g_strdup_printf("server %s port %u", host, port);

  return gate_decide(subject, tunnel_id, server,
                     tg_policy_check_server(daemon->policy, subject, host, port), error);
}

gboolean
tg_gate_check_tunnel_count(TgDaemon *daemon, const TgPolicySubject *subject,
                           const char *tunnel_id, GError **error)
{
  guint open = tg_registry_count_tunnels(daemon->registry, subject->uid);

  return gate_decide(
      subject, tunnel_id, "one more tunnel",
      tg_policy_check_count_limit(daemon->policy, subject, TG_POLICY_MAX_TUNNELS, open),
      error);
}

gboolean
tg_gate_check_daemon_tunnel_count(TgDaemon *daemon, const TgPolicySubject *subject,
                                  const char *tunnel_id, GError **error)
{
  return gate_decide(subject, tunnel_id, "one more tunnel in the daemon",
                     tg_policy_check_count_limit(daemon->policy, subject,
                                                 TG_POLICY_DAEMON_MAX_TUNNELS,
                                                 tg_registry_n_tunnels(daemon->registry)),
                     error);
}

gboolean
tg_gate_check_pending_calls(const TgCaller *caller, guint user_calls, guint all_calls,
                            GError **error, gpointer user_data)
{
  TgDaemon *daemon = user_data;
  g_autoptr(TgPolicySubject) subject = NULL;
  g_autoptr(TgPolicyDecision) everyone = NULL;
  g_autoptr(TgPolicyDecision) own = NULL;

  everyone = tg_policy_check_count_limit(daemon->policy, NULL,
                                         TG_POLICY_DAEMON_MAX_PENDING_CALLS, all_calls);
  if (!everyone->allowed) {
    tg_policy_log_decision(NULL, NULL, "one more call in the daemon", everyone);
    return tg_policy_decision_to_error(everyone, error);
  }
  /* a user's first call passes without an account lookup (so MaxPendingCalls
   * 0 works as 1); the others pay for theirs */
  if (user_calls == 0)
    return TRUE;
  subject = tg_policy_subject_from_uid(caller->uid, NULL);
  own = tg_policy_check_count_limit(daemon->policy, subject, TG_POLICY_MAX_PENDING_CALLS,
                                    user_calls);
  if (own->allowed)
    return TRUE;
  tg_policy_log_decision(subject, NULL, "one more call", own);
  return tg_policy_decision_to_error(own, error);
}

gboolean
tg_gate_check_listener_count(TgDaemon *daemon, const TgPolicySubject *subject,
                             const char *tunnel_id, guint user_listeners,
                             guint daemon_listeners, guint more, GError **error)
{
  return gate_decide(subject, tunnel_id, "more listeners",
                     tg_policy_check_amount_limit(daemon->policy, subject,
                                                  TG_POLICY_MAX_LISTENERS, user_listeners,
                                                  more),
                     error) &&
         gate_decide(subject, tunnel_id, "more listeners in the daemon",
                     tg_policy_check_amount_limit(daemon->policy, subject,
                                                  TG_POLICY_DAEMON_MAX_LISTENERS,
                                                  daemon_listeners, more),
                     error);
}

gboolean
tg_gate_check_host_key(TgDaemon *daemon, const TgPolicySubject *subject,
                       const char *tunnel_id, gboolean pinned, TgHostKeyMode *mode,
                       GError **error)
{
  if (mode != NULL)
    *mode = host_key_mode(daemon->policy, subject);
  return gate_decide(subject, tunnel_id, "host key",
                     tg_policy_check_host_key(daemon->policy, subject, pinned), error);
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

static void
add_uid(GArray *uids, guint32 uid)
{
  for (guint i = 0; i < uids->len; i++)
    if (g_array_index(uids, guint32, i) == uid)
      return;
  g_array_append_val(uids, uid);
}

/* ListenerUsers for @subject's listeners: @owner, then each user:NAME and
 * each member a group:NAME lists (getent group NAME; users whose primary
 * group it is but who are not listed are not found without enumerating
 * every account). NULL when any local user may connect. Names NSS does not
 * know are left out, with a warning naming the policy line. */
static GArray *
listener_uids(TgDaemon *daemon, const TgPolicySubject *subject, uid_t owner,
              const char *tunnel_id)
{
  TgListenerUsers users;
  GArray *uids;

  tg_policy_get_listener_users(daemon->policy, subject, &users);
  if (users.any)
    return NULL;
  uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  add_uid(uids, owner);
  for (guint i = 0; users.principals != NULL && i < users.principals->len; i++) {
    const char *entry = g_ptr_array_index(users.principals, i);
    guint32 uid;

    if (g_str_has_prefix(entry, "user:")) {
      if (tg_accounts_lookup_user(entry + 5, &uid) > 0)
        add_uid(uids, uid);
      else
        tg_warning("tunnel %s: %s at %s:%u names no user this host knows; left out",
                   tunnel_id, entry, users.origin.file, users.origin.line);
    } else {
      g_autoptr(GPtrArray) members = g_ptr_array_new_with_free_func(g_free);

      if (tg_accounts_group_members(entry + 6, members) <= 0) {
        tg_warning("tunnel %s: %s at %s:%u names no group this host knows; left out",
                   tunnel_id, entry, users.origin.file, users.origin.line);
        continue;
      }
      for (guint m = 0; m < members->len; m++) {
        if (tg_accounts_lookup_user(g_ptr_array_index(members, m), &uid) > 0)
          add_uid(uids, uid);
      }
    }
  }
  return uids;
}

gboolean
tg_gate_guard_listeners(TgDaemon *daemon, const TgPolicySubject *subject, uid_t owner,
                        GPtrArray *listeners, const char *tunnel_id, GError **error)
{
  TgListenerSources sources;
  g_autoptr(GArray) uids = NULL;
  g_autofree char *owner_name =
      subject != NULL ? g_strdup(subject->user) : g_strdup_printf("uid %u", (guint)owner);

  if (listeners->len == 0)
    return TRUE;
  tg_policy_get_listener_sources(daemon->policy, subject, &sources);
  uids = listener_uids(daemon, subject, owner, tunnel_id);
  for (guint i = 0; i < listeners->len; i++) {
    TgListener *listener = g_ptr_array_index(listeners, i);

    if (!sources.any && sources.addresses != NULL) {
      listener->allowed_sources =
          g_array_sized_new(FALSE, FALSE, sizeof(TgNetwork), sources.addresses->len);
      g_array_append_vals(listener->allowed_sources, sources.addresses->data,
                          sources.addresses->len);
    }
    if (uids != NULL)
      listener->allowed_uids = g_array_ref(uids);
    if (!tg_enforcer_add_listener(daemon->enforcer, listener->address, listener->port,
                                  &sources, uids, tunnel_id, owner_name, error)) {
      for (guint j = 0; j < i; j++) {
        const TgListener *done = g_ptr_array_index(listeners, j);
        tg_enforcer_remove_listener(daemon->enforcer, done->address, done->port,
                                    tunnel_id);
      }
      return FALSE;
    }
  }
  return TRUE;
}

void
tg_gate_unguard_listener(TgDaemon *daemon, const char *address, guint16 port,
                         const char *tunnel_id)
{
  tg_enforcer_remove_listener(daemon->enforcer, address, port, tunnel_id);
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

/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "gate.h"

#include <string.h>
#include <sys/socket.h>

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
                                  &sources, tunnel_id, error)) {
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

/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "tunnel.h"

#include <unistd.h>

#include "admission.h"
#include "dbus-options.h"
#include "gate.h"
#include "listener.h"
#include "log.h"
#include "persist.h"
#include "text.h"
#include "tg-error.h"

struct _TgTunnel {
  TgDaemon *daemon;
  char *id;
  char *path;
  uid_t owner_uid;
  char *owner_name;
  char *destination;
  char *description;
  gint64 created;
  TgTunnelState state;
  gboolean closing; /* tg_tunnel_close() asked the worker to stop */
  char *server_host;
  guint16 server_port;
  char *profile;            /* the administrator's profile it was started from, or NULL */
  char *host_key;           /* the pinned host key, or NULL (rechecked on reload) */
  TgPolicySubject *subject; /* the owner, as the policy sees them */
  GPtrArray *forward_list;  /* TgForward*, NULL where a forward was removed */
  GArray *listener_info;    /* ListenerInfo: what each listening socket bound */
  GPtrArray *pins;          /* TgConnectBack: R destinations pinned in the firewall */
  GStrv forwards;           /* published: specs of forward_list */
  GVariant *listeners;      /* published: a(ssq), sunk */

  TgUsage *usage;
  TgUsage *daemon_usage;
  guint lifetime_timer;
  guint connect_timer; /* a tunnel still connecting when it fires is given up */
  char *abort_reason;  /* why the daemon gave it up, for the OpenTunnel reply */
  guint64 idle_limit;  /* seconds, 0: none (IdleTimeout) */
  gint64 idle_since;   /* monotonic time the tunnel went quiet, 0: busy */
  char *last_error;

  /* reconnecting (session.h): what a reconnect is re-admitted with */
  TgAction granted;       /* what polkit granted at open; a forward needing more
                           * is dropped at a reconnect */
  gboolean check_actions; /* FALSE: a profile's forwards (use-profile) */
  gboolean reconnect;
  gboolean persistent;
  TgPersistRecord *record; /* persist: what the store keeps of it, or NULL */
  gboolean autostart;      /* opened by its profile's Autostart */
  gboolean was_up;         /* it has been up (a persistent one is stored) */
  guint retry_attempt;     /* RetryAttempt: the next attempt, 0: none */
  gint64 next_retry;       /* NextRetry: wall-clock µs, 0: none */
  guint reconnects;        /* Reconnects: times it came back */
  gint64 down_since;       /* monotonic µs of the loss */
  gboolean suspended;      /* closed for sleep */

  TgCounters counters;
  /* what was last announced, so the timer emits only changes */
  guint64 published_sent, published_received, published_total;
  guint published_active;

  TgSession *session;
  gboolean exported; /* announced with InterfacesAdded */
  guint caller_watch;
  GDBusMethodInvocation *open_invocation;
  GPtrArray *close_invocations;
};

typedef struct {
  guint forward_index;
  char address[256]; /* L, D: the bound address; R: as the server was asked */
  guint16 port;
  gboolean guarded; /* its firewall element is (still) in place */
} ListenerInfo;

/* Takes away the firewall's connect-back elements of forward @index
 * (G_MAXUINT: all). */
static void
tunnel_unpin(TgTunnel *tunnel, guint index)
{
  for (guint i = tunnel->pins->len; i-- > 0;) {
    const TgConnectBack *pin = g_ptr_array_index(tunnel->pins, i);

    if (index == G_MAXUINT || pin->forward_index == index) {
      tg_gate_unpin_connect_back(tunnel->daemon, pin);
      g_ptr_array_remove_index(tunnel->pins, i);
    }
  }
}

/* Takes away the firewall elements of the listeners of forward @index
 * (G_MAXUINT: all), once they are closed or about to be. */
static void
tunnel_unguard(TgTunnel *tunnel, guint index)
{
  for (guint i = 0; i < tunnel->listener_info->len; i++) {
    ListenerInfo *info = &g_array_index(tunnel->listener_info, ListenerInfo, i);

    if (info->guarded && (index == G_MAXUINT || info->forward_index == index)) {
      tg_gate_unguard_listener(tunnel->daemon, info->address, info->port, tunnel->id);
      info->guarded = FALSE;
    }
  }
}

const char *
tg_tunnel_state_name(TgTunnelState state)
{
  static const char *const names[] = { "connecting", "up", "reconnecting", "failed",
                                       "closed" };
  return names[state];
}

const char *
tg_tunnel_get_id(TgTunnel *tunnel)
{
  return tunnel->id;
}

const char *
tg_tunnel_get_path(TgTunnel *tunnel)
{
  return tunnel->path;
}

uid_t
tg_tunnel_get_owner(TgTunnel *tunnel)
{
  return tunnel->owner_uid;
}

/* The value of a property, to be consumed at once by a GVariant constructor
 * or builder (which sink it): floating, or borrowed from the tunnel. */
static GVariant *
tunnel_property(TgTunnel *tunnel, const char *name)
{
  TgCounters *c = &tunnel->counters;

  if (g_str_equal(name, "Id"))
    return g_variant_new_string(tunnel->id);
  if (g_str_equal(name, "Owner"))
    return g_variant_new_uint32(tunnel->owner_uid);
  if (g_str_equal(name, "Destination"))
    return g_variant_new_string(tunnel->destination);
  if (g_str_equal(name, "Description"))
    return g_variant_new_string(tunnel->description);
  if (g_str_equal(name, "State"))
    return g_variant_new_string(tg_tunnel_state_name(tunnel->state));
  if (g_str_equal(name, "Forwards"))
    return g_variant_new_strv((const char *const *)tunnel->forwards, -1);
  if (g_str_equal(name, "Listeners"))
    return tunnel->listeners; /* borrowed: every consumer takes its own reference */
  if (g_str_equal(name, "BytesSent"))
    return g_variant_new_uint64(tg_counter_get(&c->bytes_sent));
  if (g_str_equal(name, "BytesReceived"))
    return g_variant_new_uint64(tg_counter_get(&c->bytes_received));
  if (g_str_equal(name, "ActiveConnections"))
    return g_variant_new_uint32(atomic_load(&c->active_connections));
  if (g_str_equal(name, "TotalConnections"))
    return g_variant_new_uint64(tg_counter_get(&c->total_connections));
  if (g_str_equal(name, "LastError"))
    return g_variant_new_string(tunnel->last_error);
  if (g_str_equal(name, "Created"))
    return g_variant_new_uint64(tunnel->created);
  if (g_str_equal(name, "Reconnect"))
    return g_variant_new_boolean(tunnel->reconnect);
  if (g_str_equal(name, "Persistent"))
    return g_variant_new_boolean(tunnel->persistent);
  if (g_str_equal(name, "RetryAttempt"))
    return g_variant_new_uint32(tunnel->retry_attempt);
  if (g_str_equal(name, "NextRetry"))
    return g_variant_new_uint64(tunnel->next_retry > 0 ? tunnel->next_retry : 0);
  if (g_str_equal(name, "Reconnects"))
    return g_variant_new_uint32(tunnel->reconnects);
  return NULL;
}

static GVariant *
tunnel_all_properties(TgTunnel *tunnel)
{
  GDBusInterfaceInfo *info = tg_daemon_interface(tunnel->daemon, TG_TUNNEL_INTERFACE);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a{sv}"));
  for (guint i = 0; info->properties[i] != NULL; i++) {
    const char *name = info->properties[i]->name;
    g_variant_builder_add(&builder, "{sv}", name, tunnel_property(tunnel, name));
  }
  return g_variant_builder_end(&builder);
}

/* PropertiesChanged with the values, to the connections that may read them
 * (the owner's, and those granted manage: tg_registry_emit()). */
static void
tunnel_emit_changed(TgTunnel *tunnel, const char *const *names)
{
  GVariantBuilder changed;
  const char *const invalidated[] = { NULL };

  if (!tunnel->exported)
    return;
  g_variant_builder_init(&changed, G_VARIANT_TYPE("a{sv}"));
  for (guint i = 0; names[i] != NULL; i++)
    g_variant_builder_add(&changed, "{sv}", names[i], tunnel_property(tunnel, names[i]));
  tg_registry_emit(
      tunnel->daemon->registry, tunnel->owner_uid, tunnel->path,
      TG_DBUS_PROPERTIES_INTERFACE, "PropertiesChanged",
      g_variant_new("(sa{sv}^as)", TG_TUNNEL_INTERFACE, &changed, invalidated));
}

/* MaxLifetime or IdleTimeout ran out: a policy decision like any other,
 * logged with the rule, then the tunnel closes naming it. */
static void
tunnel_close_by_limit(TgTunnel *tunnel, TgPolicyLimitKind kind)
{
  g_autoptr(TgPolicyDecision) decision =
      tg_policy_limit_reached(tunnel->daemon->policy, tunnel->subject, kind);

  tg_policy_log_decision(
      tunnel->subject, tunnel->id,
      kind == TG_POLICY_MAX_LIFETIME ? "tunnel lifetime" : "idle tunnel", decision);
  tg_tunnel_close(tunnel, decision->reason, NULL);
}

/* IdleTimeout: no connection and no traffic for that long closes the tunnel.
 * Called once a second with the counters. */
static void
tunnel_check_idle(TgTunnel *tunnel, gboolean busy)
{
  gint64 now = g_get_monotonic_time();

  if (busy || tunnel->state != TG_TUNNEL_UP || tunnel->idle_limit == 0) {
    tunnel->idle_since = 0;
    return;
  }
  if (tunnel->idle_since == 0)
    tunnel->idle_since = now;
  else if ((guint64)(now - tunnel->idle_since) >= tunnel->idle_limit * G_USEC_PER_SEC &&
           tunnel->session != NULL) {
    tunnel->idle_since = 0;
    tunnel_close_by_limit(tunnel, TG_POLICY_IDLE_TIMEOUT);
  }
}

void
tg_tunnel_publish_counters(TgTunnel *tunnel)
{
  TgCounters *c = &tunnel->counters;
  const char *names[5];
  guint n = 0;
  guint64 sent = tg_counter_get(&c->bytes_sent);
  guint64 received = tg_counter_get(&c->bytes_received);
  guint64 total = tg_counter_get(&c->total_connections);
  guint active = atomic_load(&c->active_connections);

  tunnel_check_idle(tunnel, active > 0 || sent != tunnel->published_sent ||
                                received != tunnel->published_received);
  if (sent != tunnel->published_sent)
    names[n++] = "BytesSent";
  if (received != tunnel->published_received)
    names[n++] = "BytesReceived";
  if (total != tunnel->published_total)
    names[n++] = "TotalConnections";
  if (active != tunnel->published_active)
    names[n++] = "ActiveConnections";
  names[n] = NULL;
  if (n == 0)
    return;
  tunnel->published_sent = sent;
  tunnel->published_received = received;
  tunnel->published_total = total;
  tunnel->published_active = active;
  tunnel_emit_changed(tunnel, names);
}

/* Recomputes Forwards and Listeners from the live forwards. */
static void
tunnel_publish_forwards(TgTunnel *tunnel)
{
  g_autoptr(GPtrArray) specs = g_ptr_array_new();
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a(ssq)"));
  for (guint i = 0; i < tunnel->listener_info->len; i++) {
    const ListenerInfo *info = &g_array_index(tunnel->listener_info, ListenerInfo, i);
    const TgForward *forward =
        g_ptr_array_index(tunnel->forward_list, info->forward_index);

    if (forward != NULL && tunnel->state != TG_TUNNEL_FAILED &&
        tunnel->state != TG_TUNNEL_CLOSED)
      g_variant_builder_add(&builder, "(ssq)", forward->spec, info->address, info->port);
  }
  for (guint i = 0; i < tunnel->forward_list->len; i++) {
    const TgForward *forward = g_ptr_array_index(tunnel->forward_list, i);
    if (forward != NULL)
      g_ptr_array_add(specs, forward->spec);
  }
  g_ptr_array_add(specs, NULL);
  g_strfreev(tunnel->forwards);
  tunnel->forwards = g_strdupv((char **)specs->pdata);
  g_clear_pointer(&tunnel->listeners, g_variant_unref);
  tunnel->listeners = g_variant_ref_sink(g_variant_builder_end(&builder));
}

/* persist: the record with the live forwards and the local TCP listeners'
 * addresses and ports (a port 0 forward's real port), saved in the store
 * once the tunnel has been up. A failure is logged; the tunnel runs on. */
static void
tunnel_store(TgTunnel *tunnel)
{
  TgPersistRecord *record = tunnel->record;
  g_autofree guint *positions = NULL; /* forward_list index -> record index */
  g_autofree char *dir = NULL;
  g_autoptr(GError) error = NULL;

  if (record == NULL || !tunnel->was_up)
    return;
  positions = g_new0(guint, tunnel->forward_list->len + 1);
  g_ptr_array_set_size(record->forwards, 0);
  g_ptr_array_set_size(record->listeners, 0);
  for (guint i = 0; i < tunnel->forward_list->len; i++) {
    const TgForward *forward = g_ptr_array_index(tunnel->forward_list, i);

    if (forward != NULL) {
      positions[i] = record->forwards->len;
      g_ptr_array_add(record->forwards, g_strdup(forward->spec));
    }
  }
  for (guint i = 0; i < tunnel->listener_info->len; i++) {
    const ListenerInfo *info = &g_array_index(tunnel->listener_info, ListenerInfo, i);
    const TgForward *forward =
        g_ptr_array_index(tunnel->forward_list, info->forward_index);

    if (forward != NULL && forward->kind != TG_FORWARD_REMOTE &&
        forward->listen.path == NULL && info->port != 0)
      tg_persist_record_add_listener(record, positions[info->forward_index],
                                     info->address, info->port);
  }
  record->created = tunnel->created;
  dir = tg_persist_dir(tunnel->daemon->state_dir);
  if (!tg_persist_save(dir, record, &error))
    tg_log_event(G_LOG_LEVEL_WARNING, "TUNNEL_PERSIST_FAILED", "TUNNEL_ID", tunnel->id,
                 "USER", tunnel->owner_name, "MESSAGE",
                 "tunnel %s of %s cannot be saved to be restored after a restart: %s",
                 tunnel->id, tunnel->owner_name, error->message);
}

/* The tunnel has ended: its record goes, unless the daemon is stopping
 * (then it stays, and the tunnel comes back at the next start). */
static void
tunnel_unstore(TgTunnel *tunnel)
{
  const char *names[] = { "Persistent", NULL };
  g_autofree char *dir = NULL;
  g_autoptr(GError) error = NULL;

  if (tunnel->record == NULL ||
      !tg_registry_check_running(tunnel->daemon->registry, NULL))
    return;
  dir = tg_persist_dir(tunnel->daemon->state_dir);
  if (!tg_persist_remove(dir, tunnel->id, &error))
    tg_log_event(G_LOG_LEVEL_WARNING, "TUNNEL_PERSIST_FAILED", "TUNNEL_ID", tunnel->id,
                 "USER", tunnel->owner_name, "MESSAGE",
                 "tunnel %s of %s has ended, but its record cannot be removed (it "
                 "would be restored at the next start): %s",
                 tunnel->id, tunnel->owner_name, error->message);
  g_clear_pointer(&tunnel->record, tg_persist_record_free);
  tunnel->persistent = FALSE;
  tunnel_emit_changed(tunnel, names);
}

GVariant *
tg_tunnel_summary(TgTunnel *tunnel)
{
  return g_variant_new("(osuss^as)", tunnel->path, tunnel->id, (guint32)tunnel->owner_uid,
                       tunnel->destination, tg_tunnel_state_name(tunnel->state),
                       tunnel->forwards);
}

GVariant *
tg_tunnel_interfaces(TgTunnel *tunnel)
{
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a{sa{sv}}"));
  g_variant_builder_add(&builder, "{s@a{sv}}", TG_TUNNEL_INTERFACE,
                        tunnel_all_properties(tunnel));
  return g_variant_builder_end(&builder);
}

/* InterfacesAdded (all properties, as GetManagedObjects) or InterfacesRemoved,
 * to the connections that may see the tunnel. */
static void
tunnel_announce(TgTunnel *tunnel, gboolean added)
{
  const char *interfaces[] = { TG_TUNNEL_INTERFACE, NULL };
  GVariant *body =
      added ? g_variant_new("(o@a{sa{sv}})", tunnel->path, tg_tunnel_interfaces(tunnel))
            : g_variant_new("(o^as)", tunnel->path, interfaces);

  tg_registry_emit(tunnel->daemon->registry, tunnel->owner_uid, TG_MANAGER_PATH,
                   TG_DBUS_OBJECT_MANAGER_INTERFACE,
                   added ? "InterfacesAdded" : "InterfacesRemoved", body);
}

static void
tunnel_remove(TgTunnel *tunnel)
{
  TgDaemon *daemon = tunnel->daemon;

  if (tunnel->exported) {
    tunnel->exported = FALSE;
    tunnel_announce(tunnel, FALSE);
  }
  tg_registry_remove_tunnel(daemon->registry, tunnel->id); /* frees the tunnel */
}

/* @also: more properties that changed with the state, announced with it. */
static void
tunnel_set_state_with(TgTunnel *tunnel, TgTunnelState state, const char *error_message,
                      const char *const *also)
{
  const char *names[10] = { "State", NULL };
  guint n = 1;

  for (guint i = 0; also != NULL && also[i] != NULL && n < G_N_ELEMENTS(names) - 3; i++)
    names[n++] = also[i];

  tunnel->state = state;
  if (error_message != NULL) {
    g_free(tunnel->last_error);
    tunnel->last_error = tg_text_printable(error_message, G_MAXSIZE);
    names[n++] = "LastError";
  }
  if (state == TG_TUNNEL_FAILED || state == TG_TUNNEL_CLOSED) {
    /* the worker closed every listener; the ports are free */
    tunnel_publish_forwards(tunnel);
    names[n++] = "Listeners";
  }
  /* the last counters before the new state: a watcher sees a tunnel's
   * traffic before it sees it closed */
  tg_tunnel_publish_counters(tunnel);
  tunnel_emit_changed(tunnel, names);
}

static void
tunnel_set_state(TgTunnel *tunnel, TgTunnelState state, const char *error_message)
{
  tunnel_set_state_with(tunnel, state, error_message, NULL);
}

static void
tunnel_reply_closers(TgTunnel *tunnel)
{
  for (guint i = 0; i < tunnel->close_invocations->len; i++) {
    GDBusMethodInvocation *invocation = g_ptr_array_index(tunnel->close_invocations, i);
    g_dbus_method_invocation_return_value(invocation, NULL);
    tunnel->close_invocations->pdata[i] = NULL;
  }
  g_ptr_array_set_size(tunnel->close_invocations, 0);
}

/* The server listens for an R forward: Listeners gets its real port (the
 * server's choice for port 0), announced with its value to the connections
 * that may read it, so the opener and the CLI learn a chosen port at once. */
static void
tunnel_remote_listening(guint forward_index, const char *address, guint16 port,
                        gpointer user_data)
{
  TgTunnel *tunnel = user_data;
  const char *names[] = { "Listeners", NULL };
  ListenerInfo info = { .forward_index = forward_index, .port = port };

  g_strlcpy(info.address, address, sizeof info.address);
  g_array_append_val(tunnel->listener_info, info);
  tunnel_publish_forwards(tunnel);
  tunnel_emit_changed(tunnel, names);
}

/* The server's listeners went with the session: R forwards have no
 * listener until the server is asked again (maybe another port for 0). */
static gboolean
tunnel_forget_remote_listeners(TgTunnel *tunnel)
{
  gboolean changed = FALSE;

  for (guint i = tunnel->listener_info->len; i-- > 0;) {
    const ListenerInfo *info = &g_array_index(tunnel->listener_info, ListenerInfo, i);
    const TgForward *forward =
        g_ptr_array_index(tunnel->forward_list, info->forward_index);

    if (forward != NULL && forward->kind == TG_FORWARD_REMOTE) {
      g_array_remove_index(tunnel->listener_info, i);
      changed = TRUE;
    }
  }
  if (changed)
    tunnel_publish_forwards(tunnel);
  return changed;
}

static void
tunnel_reconnecting(TgTunnel *tunnel, const TgSessionReport *report)
{
  const char *names[4] = { "RetryAttempt", "NextRetry", NULL };
  guint n = 2;
  gboolean first = tunnel->state != TG_TUNNEL_RECONNECTING;
  const char *cause = report->error != NULL ? report->error->message : "lost";
  g_autofree char *message = NULL;

  tunnel->retry_attempt = report->attempt;
  tunnel->next_retry = report->next_attempt;
  tunnel->suspended = report->suspended;
  if (first) {
    tunnel->down_since = g_get_monotonic_time();
    if (tunnel_forget_remote_listeners(tunnel))
      names[n++] = "Listeners";
  }
  tunnel_set_state_with(tunnel, TG_TUNNEL_RECONNECTING, cause, names);
  if (report->suspended)
    message = g_strdup_printf("tunnel %s of %s to %s is closed while the system sleeps; "
                              "it reconnects at the resume",
                              tunnel->id, tunnel->owner_name, tunnel->destination);
  else if (first && !tunnel->was_up)
    message = g_strdup_printf("tunnel %s of %s to %s is not up yet: %s; trying again "
                              "(attempt %u in %.1f s)",
                              tunnel->id, tunnel->owner_name, tunnel->destination, cause,
                              report->attempt,
                              MAX(0, report->next_attempt - g_get_real_time()) / 1e6);
  else if (first)
    message = g_strdup_printf("tunnel %s of %s to %s lost: %s; reconnecting (attempt %u "
                              "in %.1f s)",
                              tunnel->id, tunnel->owner_name, tunnel->destination, cause,
                              report->attempt,
                              MAX(0, report->next_attempt - g_get_real_time()) / 1e6);
  else
    message =
        g_strdup_printf("tunnel %s of %s to %s: %s; attempt %u in %.1f s", tunnel->id,
                        tunnel->owner_name, tunnel->destination, cause, report->attempt,
                        MAX(0, report->next_attempt - g_get_real_time()) / 1e6);
  if (first || report->suspended) {
    g_autofree char *attempt = g_strdup_printf("%u", report->attempt);

    tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_RECONNECTING", "TUNNEL_ID", tunnel->id,
                 "USER", tunnel->owner_name, "CAUSE", cause, "ATTEMPT", attempt,
                 "MESSAGE", "%s", message);
  } else {
    tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_RETRY", "TUNNEL_ID", tunnel->id, "USER",
                 tunnel->owner_name, "CAUSE", cause, "MESSAGE", "%s", message);
  }
}

typedef struct {
  TgDaemon *daemon;
  char *path;
  GArray *indexes; /* guint: the forward_list index of each admitted forward */
} Readmission;

static void
readmission_free(Readmission *readmission)
{
  g_free(readmission->path);
  g_array_unref(readmission->indexes);
  g_free(readmission);
}

static void
tunnel_readmitted(TgAdmission *admission, const GError *error, gpointer user_data)
{
  Readmission *readmission = user_data;
  TgTunnel *tunnel =
      tg_registry_find_tunnel(readmission->daemon->registry, readmission->path);

  if (tunnel == NULL || tunnel->session == NULL) /* gone meanwhile */
    goto done;
  if (error != NULL) {
    tg_session_readmitted(tunnel->session, error);
    goto done;
  }
  for (guint i = 0; i < readmission->indexes->len; i++) {
    const char *refusal = tg_admission_get_refusal(admission, i);
    g_autofree char *reason = NULL;

    if (refusal == NULL)
      continue;
    reason = g_strdup_printf("not re-admitted at the reconnect: %s", refusal);
    /* the tunnel's last forward closes it, which the worker hears too */
    tg_tunnel_remove_forward(tunnel, g_array_index(readmission->indexes, guint, i),
                             reason, NULL);
  }
  if (tunnel->session != NULL)
    tg_session_readmitted(tunnel->session, NULL);
done:
  tg_admission_free(admission);
  readmission_free(readmission);
}

static gboolean tunnel_profile_allows(TgTunnel *tunnel, gboolean reload, char **reason);

/* The session is back: its forwards pass the admission again, as at open,
 * for the owner as NSS knows them now, against the policy in force and
 * what polkit granted then (the caller may be long gone: polkit itself is
 * not asked again). */
static void
tunnel_readmit(TgTunnel *tunnel)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicySubject) owner =
      tg_policy_subject_from_uid(tunnel->owner_uid, &error);
  g_autoptr(GPtrArray) forwards = g_ptr_array_new();
  g_autofree char *reason = NULL;
  Readmission *readmission;
  TgAdmission *admission;

  if (owner == NULL) {
    g_autoptr(GError) refusal =
        g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                    "The owner's account cannot be looked up: %s", error->message);
    tg_session_readmitted(tunnel->session, refusal);
    return;
  }
  tg_policy_subject_free(tunnel->subject);
  tunnel->subject = g_steal_pointer(&owner);
  tg_tunnel_apply_policy(tunnel, tunnel->daemon->policy);
  if (tunnel->profile != NULL && !tunnel_profile_allows(tunnel, FALSE, &reason)) {
    g_autoptr(GError) refusal =
        g_error_new(TG_ERROR, TG_ERROR_POLICY_DENIED, "%s", reason);
    tg_session_readmitted(tunnel->session, refusal);
    return;
  }
  readmission = g_new0(Readmission, 1);
  readmission->daemon = tunnel->daemon;
  readmission->path = g_strdup(tunnel->path);
  readmission->indexes = g_array_new(FALSE, FALSE, sizeof(guint));
  for (guint i = 0; i < tunnel->forward_list->len; i++) {
    TgForward *forward = g_ptr_array_index(tunnel->forward_list, i);

    if (forward == NULL)
      continue;
    g_ptr_array_add(forwards, forward);
    g_array_append_val(readmission->indexes, i);
  }
  admission =
      tg_admission_new(tunnel->daemon, tunnel->owner_uid, tunnel->subject, tunnel->id,
                       forwards, tunnel->granted, tunnel->check_actions);
  tg_admission_set_readmission(admission);
  tg_admission_set_server(admission, tunnel->server_host, tunnel->server_port,
                          tunnel->host_key, FALSE);
  tg_admission_run(admission, NULL, tunnel_readmitted, readmission);
}

/* Reports from the worker, in the D-Bus thread. */
static void
tunnel_session_state(const TgSessionReport *report, gpointer user_data)
{
  TgTunnel *tunnel = user_data;
  TgSessionState session_state = report->state;
  const GError *error = report->error;
  TgTunnelState state = session_state == TG_SESSION_UP       ? TG_TUNNEL_UP
                        : session_state == TG_SESSION_FAILED ? TG_TUNNEL_FAILED
                                                             : TG_TUNNEL_CLOSED;
  char bytes[64];

  if (session_state == TG_SESSION_RECONNECTING) {
    tunnel_reconnecting(tunnel, report);
    return;
  }
  if (session_state == TG_SESSION_READMIT) {
    tunnel_readmit(tunnel);
    return;
  }
  if (state == TG_TUNNEL_UP && report->reconnected) {
    const char *names[] = { "RetryAttempt", "NextRetry", "Reconnects", NULL };
    guint attempts = tunnel->retry_attempt;
    g_autofree char *down =
        g_strdup_printf("%.1f", (g_get_monotonic_time() - tunnel->down_since) / 1e6);

    tunnel->retry_attempt = 0;
    tunnel->next_retry = 0;
    tunnel->suspended = FALSE;
    tunnel->reconnects++;
    tunnel_set_state_with(tunnel, TG_TUNNEL_UP, NULL, names);
    tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_RECONNECTED", "TUNNEL_ID", tunnel->id,
                 "USER", tunnel->owner_name, "DOWNTIME", down, "MESSAGE",
                 "tunnel %s of %s to %s is up again after %s s (attempt %u)", tunnel->id,
                 tunnel->owner_name, tunnel->destination, down, MAX(attempts, 1));
    return;
  }
  if (state == TG_TUNNEL_UP) {
    /* up for the first time, maybe after attempts (retry_first) */
    const char *retried[] = { "RetryAttempt", "NextRetry", NULL };

    g_clear_handle_id(&tunnel->connect_timer, g_source_remove);
    tunnel->was_up = TRUE;
    tunnel->suspended = FALSE;
    if (tunnel->retry_attempt == 0 && tunnel->next_retry == 0)
      retried[0] = NULL;
    tunnel->retry_attempt = 0;
    tunnel->next_retry = 0;
    tunnel_set_state_with(tunnel, TG_TUNNEL_UP, NULL, retried);
    tunnel_store(tunnel);
    tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_UP", "TUNNEL_ID", tunnel->id, "USER",
                 tunnel->owner_name, "MESSAGE", "tunnel %s of %s to %s is up", tunnel->id,
                 tunnel->owner_name, tunnel->destination);
    if (tunnel->open_invocation != NULL)
      g_dbus_method_invocation_return_value(g_steal_pointer(&tunnel->open_invocation),
                                            g_variant_new("(o)", tunnel->path));
    return;
  }

  /* FAILED or CLOSED: the worker is done and has closed everything */
  g_clear_pointer(&tunnel->session, tg_session_free);
  tunnel_unstore(tunnel);
  tunnel_unguard(tunnel, G_MAXUINT);
  tunnel_unpin(tunnel, G_MAXUINT);
  g_snprintf(bytes, sizeof bytes, "%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT,
             tg_counter_get(&tunnel->counters.bytes_sent),
             tg_counter_get(&tunnel->counters.bytes_received));
  tg_log_event(G_LOG_LEVEL_MESSAGE,
               state == TG_TUNNEL_FAILED ? "TUNNEL_FAILED" : "TUNNEL_CLOSED", "TUNNEL_ID",
               tunnel->id, "USER", tunnel->owner_name, "BYTES", bytes, "MESSAGE",
               "tunnel %s of %s to %s %s%s (%s bytes sent/received)", tunnel->id,
               tunnel->owner_name, tunnel->destination,
               state == TG_TUNNEL_FAILED ? "failed: " : "closed",
               error != NULL ? error->message : "", bytes);

  if (tunnel->open_invocation != NULL) {
    /* never came up: the caller gets the reason, the object goes away */
    if (error != NULL)
      g_dbus_method_invocation_return_gerror(g_steal_pointer(&tunnel->open_invocation),
                                             error);
    else if (tunnel->abort_reason != NULL)
      g_dbus_method_invocation_return_error(g_steal_pointer(&tunnel->open_invocation),
                                            TG_ERROR, TG_ERROR_CONNECT_FAILED, "%s",
                                            tunnel->abort_reason);
    else
      g_dbus_method_invocation_return_error(
          g_steal_pointer(&tunnel->open_invocation), TG_ERROR, TG_ERROR_DISCONNECTED,
          "Tunnel %s was closed before it was up", tunnel->id);
    tunnel_set_state(tunnel, state, error != NULL ? error->message : NULL);
    tunnel_reply_closers(tunnel);
    tunnel_remove(tunnel);
    return;
  }

  tunnel_set_state(tunnel, state, error != NULL ? error->message : NULL);
  if (state == TG_TUNNEL_CLOSED || tunnel->close_invocations->len > 0) {
    tunnel_reply_closers(tunnel);
    tunnel_remove(tunnel);
  }
  /* a tunnel that failed after being up stays visible with LastError until
   * its owner closes it */
}

void
tg_tunnel_close(TgTunnel *tunnel, const char *reason, GDBusMethodInvocation *invocation)
{
  tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_CLOSING", "TUNNEL_ID", tunnel->id, "USER",
               tunnel->owner_name, "MESSAGE", "closing tunnel %s of %s: %s", tunnel->id,
               tunnel->owner_name, reason);
  if (tunnel->session == NULL) { /* already failed: nothing runs any more */
    if (invocation != NULL)
      g_dbus_method_invocation_return_value(invocation, NULL);
    tunnel_set_state(tunnel, TG_TUNNEL_CLOSED, NULL);
    tunnel_remove(tunnel);
    return;
  }
  if (invocation != NULL)
    g_ptr_array_add(tunnel->close_invocations, invocation);
  tunnel->closing = TRUE;
  tg_session_stop(tunnel->session);
}

/* ---- Tunnel1 methods: validate, then authorize (owner: open; others:
 * manage), then act on the tunnel found again by its path. ---- */

typedef struct {
  TgDaemon *daemon;
  char *path;
  TgForward *forward;   /* AddForward, RemoveForward */
  GPtrArray *resolving; /* AddForward of R: { forward } while resolved (borrowed) */
  /* SetCredentials: exactly one, owned (fds -1 when unset) */
  char *agent_path, *identity_path;
  int agent_fd, identity_fd;
} TunnelCallData;

static void
tunnel_call_data_free(gpointer data)
{
  TunnelCallData *call_data = data;

  g_free(call_data->path);
  g_clear_pointer(&call_data->resolving, g_ptr_array_unref);
  tg_forward_free(call_data->forward);
  g_free(call_data->agent_path);
  g_free(call_data->identity_path);
  if (call_data->agent_fd >= 0)
    close(call_data->agent_fd);
  if (call_data->identity_fd >= 0)
    close(call_data->identity_fd);
  g_free(call_data);
}

static void tunnel_act_add_forward(TgCall *call);

static TunnelCallData *
tunnel_call_data_new(void)
{
  TunnelCallData *data = g_new0(TunnelCallData, 1);

  data->agent_fd = data->identity_fd = -1;
  return data;
}

static TgTunnel *
tunnel_call_target(TgCall *call)
{
  TunnelCallData *data = call->data;
  TgTunnel *tunnel = tg_registry_find_tunnel(data->daemon->registry, data->path);

  if (tunnel == NULL) {
    g_autoptr(GError) error =
        g_error_new(TG_ERROR, TG_ERROR_NOT_FOUND, "No tunnel %s", data->path);
    tg_call_return_error(call, error);
  }
  return tunnel;
}

/* A tunnel path the daemon could ever have exported: the prefix and a
 * number. Anything else is no tunnel, and saying so tells nothing. */
static gboolean
is_tunnel_path(const char *path)
{
  const char *id = path + strlen(TG_TUNNEL_PATH_PREFIX);

  if (!g_str_has_prefix(path, TG_TUNNEL_PATH_PREFIX) || *id == '\0' || *id == '0')
    return FALSE;
  for (; *id != '\0'; id++) {
    if (!g_ascii_isdigit(*id))
      return FALSE;
  }
  return TRUE;
}

static gboolean
tunnel_call_decide(TgCall *call)
{
  TunnelCallData *data = call->data;
  TgTunnel *tunnel = tg_registry_find_tunnel(data->daemon->registry, data->path);

  if (tunnel == NULL && !is_tunnel_path(data->path)) {
    g_autoptr(GError) error =
        g_error_new(TG_ERROR, TG_ERROR_NOT_FOUND, "No tunnel %s", data->path);
    tg_call_return_error(call, error);
    return FALSE;
  }
  /* someone else's tunnel, or none: manage instead of open, so that a caller
   * who may not manage gets the same answer for both (no existence oracle);
   * a manager then learns it does not exist */
  if (tunnel == NULL || tunnel->owner_uid != call->caller->uid)
    call->required = (call->required & ~TG_ACTION_OPEN) | TG_ACTION_MANAGE;
  if (tunnel == NULL)
    return TRUE;
  if (call->act == tunnel_act_add_forward) {
    /* a profile's tunnel logs in with the administrator's key: its user may
     * not extend it beyond the forwards the profile sanctioned */
    if (tunnel->profile != NULL)
      call->required = (call->required & ~TG_ACTION_OPEN) | TG_ACTION_MANAGE;
    /* and what OpenTunnel would need for this forward */
    call->required |= tg_admission_forward_actions(data->daemon->policy, tunnel->subject,
                                                   data->forward);
  }
  return TRUE;
}

static void
tunnel_act_close(TgCall *call)
{
  TgTunnel *tunnel = tunnel_call_target(call);
  g_autofree char *reason = NULL;

  if (tunnel == NULL)
    return;
  reason = g_strdup_printf("Close() by %s (uid %u)", call->caller->user_name,
                           (unsigned)call->caller->uid);
  tg_tunnel_close(tunnel, reason, g_steal_pointer(&call->invocation));
}

static void
tunnel_act_get(TgCall *call)
{
  TgTunnel *tunnel = tunnel_call_target(call);
  const char *name;

  if (tunnel == NULL)
    return;
  g_variant_get(g_dbus_method_invocation_get_parameters(call->invocation), "(&s&s)", NULL,
                &name);
  tg_call_return_value(call, g_variant_new("(v)", tunnel_property(tunnel, name)));
}

static void
tunnel_act_get_all(TgCall *call)
{
  TgTunnel *tunnel = tunnel_call_target(call);

  if (tunnel == NULL)
    return;
  tg_call_return_value(call, g_variant_new("(@a{sv})", tunnel_all_properties(tunnel)));
}

static void tunnel_add_forward(TgTunnel *tunnel, TgForward *forward, GPtrArray *listeners,
                               TgConnectBack *connect_back,
                               GDBusMethodInvocation *invocation);

/* AddForward: through the same admission as OpenTunnel (admission.h); the
 * policy is the owner's, whoever asks. The tunnel may change while names
 * are resolved (or go): it is looked up again and checked before anything
 * is bound. */
static gboolean
tunnel_still_takes_forward(TgAdmission *admission, gpointer user_data, GError **error)
{
  TgCall *call = user_data;
  TunnelCallData *data = call->data;
  TgTunnel *tunnel = tg_registry_find_tunnel(data->daemon->registry, data->path);

  if (tunnel == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No tunnel %s", data->path);
    return FALSE;
  }
  if (tunnel->session == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED, "Tunnel %s is %s", tunnel->id,
                tg_tunnel_state_name(tunnel->state));
    return FALSE;
  }
  if (tunnel->closing) {
    g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED, "Tunnel %s is closing",
                tunnel->id);
    return FALSE;
  }
  if (tunnel->state == TG_TUNNEL_RECONNECTING) {
    g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED,
                "Tunnel %s is reconnecting; add the forward once it is up again",
                tunnel->id);
    return FALSE;
  }
  if (tg_tunnel_find_forward(tunnel, data->forward->spec) != G_MAXUINT) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Tunnel %s already has the forward '%s'", tunnel->id,
                data->forward->spec);
    return FALSE;
  }
  if (tg_tunnel_count_forwards(tunnel) >= TG_MAX_FORWARDS_PER_TUNNEL) {
    g_set_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                "At most %d forwards per tunnel", TG_MAX_FORWARDS_PER_TUNNEL);
    return FALSE;
  }
  if (tunnel->forward_list->len >= TG_MAX_FORWARD_SLOTS) {
    g_set_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                "Tunnel %s has had %d forwards added; open a new tunnel", tunnel->id,
                TG_MAX_FORWARD_SLOTS);
    return FALSE;
  }
  tg_admission_set_first_index(admission, tunnel->forward_list->len);
  return TRUE;
}

static void
tunnel_add_forward_admitted(TgAdmission *admission, const GError *error,
                            gpointer user_data)
{
  g_autoptr(TgCall) call = user_data;
  g_autoptr(TgAdmission) owned = admission;
  TunnelCallData *data = call->data;
  TgTunnel *tunnel;
  g_autoptr(GPtrArray) listeners = NULL;
  g_autoptr(GPtrArray) connect_backs = NULL;

  if (error != NULL) {
    tg_call_return_error(call, error);
    return;
  }
  /* still_wanted() found it running, and nothing ran since */
  tunnel = tg_registry_find_tunnel(data->daemon->registry, data->path);
  listeners = tg_admission_take_listeners(admission);
  connect_backs = tg_admission_take_connect_backs(admission);
  tunnel_add_forward(tunnel, g_steal_pointer(&data->forward), g_steal_pointer(&listeners),
                     connect_backs->len > 0 ? g_ptr_array_steal_index(connect_backs, 0)
                                            : NULL,
                     g_steal_pointer(&call->invocation));
}

static void
tunnel_act_add_forward(TgCall *call)
{
  TunnelCallData *data = call->data;
  TgTunnel *tunnel = tunnel_call_target(call);
  g_autoptr(GPtrArray) forwards = NULL;
  TgAdmission *admission;

  if (tunnel == NULL)
    return;
  forwards = g_ptr_array_new();
  g_ptr_array_add(forwards, data->forward);
  admission = tg_admission_new(data->daemon, call->caller->uid, tunnel->subject,
                               tunnel->id, forwards, call->granted, TRUE);
  tg_admission_run(admission, tunnel_still_takes_forward, tunnel_add_forward_admitted,
                   tg_call_keep(call));
}

/* SetCredentials: the owner's agent or key for the next attempt of a
 * tunnel with reconnect (e.g. an agent restarted at another path). */
static void
tunnel_act_set_credentials(TgCall *call)
{
  TunnelCallData *data = call->data;
  TgTunnel *tunnel = tunnel_call_target(call);
  g_autoptr(GError) error = NULL;
  const char *what;

  if (tunnel == NULL)
    return;
  if (call->caller->uid != tunnel->owner_uid)
    error =
        g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                    "Only the owner of tunnel %s may give it credentials", tunnel->id);
  else if (tunnel->profile != NULL)
    error =
        g_error_new(TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                    "Tunnel %s was started from profile '%s', which brings its own key",
                    tunnel->id, tunnel->profile);
  else if (!tunnel->reconnect)
    error =
        g_error_new(TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                    "Tunnel %s was opened without reconnect: it has logged in once and "
                    "never will again",
                    tunnel->id);
  else if (tunnel->session == NULL || tunnel->closing)
    error =
        g_error_new(TG_ERROR, TG_ERROR_DISCONNECTED, "Tunnel %s has ended", tunnel->id);
  else if (tunnel->record != NULL && (data->agent_fd >= 0 || data->identity_fd >= 0))
    error =
        g_error_new(TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                    "Tunnel %s is persistent: give the agent or the key by path, which "
                    "the daemon can open again after a restart",
                    tunnel->id);
  if (error != NULL) {
    tg_call_return_error(call, error);
    return;
  }
  what = data->agent_path != NULL      ? data->agent_path
         : data->identity_path != NULL ? data->identity_path
         : data->agent_fd >= 0         ? "an ssh-agent descriptor"
                                       : "a key descriptor";
  tg_log_event(G_LOG_LEVEL_MESSAGE, "CREDENTIALS_CHANGED", "TUNNEL_ID", tunnel->id,
               "USER", tunnel->owner_name, "MESSAGE",
               "tunnel %s of %s: new credentials (%s) for its next attempt", tunnel->id,
               tunnel->owner_name, what);
  if (tunnel->record != NULL) {
    g_free(tunnel->record->agent);
    tunnel->record->agent = g_strdup(data->agent_path);
    g_free(tunnel->record->identity);
    tunnel->record->identity = g_strdup(data->identity_path);
    tunnel_store(tunnel);
  }
  tg_session_set_credentials(
      tunnel->session, g_steal_pointer(&data->agent_path), g_steal_fd(&data->agent_fd),
      g_steal_pointer(&data->identity_path), g_steal_fd(&data->identity_fd));
  tg_call_return_value(call, NULL);
}

static void
tunnel_act_remove_forward(TgCall *call)
{
  TunnelCallData *data = call->data;
  TgTunnel *tunnel = tunnel_call_target(call);
  g_autofree char *reason = NULL;
  guint index;

  if (tunnel == NULL)
    return;
  index = tg_tunnel_find_forward(tunnel, data->forward->spec);
  if (index == G_MAXUINT) {
    g_autoptr(GError) error =
        g_error_new(TG_ERROR, TG_ERROR_NOT_FOUND, "Tunnel %s has no forward '%s'",
                    tunnel->id, data->forward->spec);
    tg_call_return_error(call, error);
    return;
  }
  reason = g_strdup_printf("RemoveForward() by %s (uid %u)", call->caller->user_name,
                           (unsigned)call->caller->uid);
  tg_tunnel_remove_forward(tunnel, index, reason, g_steal_pointer(&call->invocation));
}

/* Validation before authorization: a malformed request is refused without
 * asking polkit, and without revealing anything about the tunnel. */
static gboolean
tunnel_validate(TgDaemon *daemon, const char *interface, const char *method,
                GVariant *parameters, void (**act)(TgCall *), TgForward **forward_out,
                GError **error)
{
  if (g_str_equal(interface, "org.freedesktop.DBus.Properties")) {
    const char *property_interface, *name = NULL;

    if (g_str_equal(method, "Get"))
      g_variant_get(parameters, "(&s&s)", &property_interface, &name);
    else if (g_str_equal(method, "GetAll"))
      g_variant_get(parameters, "(&s)", &property_interface);
    else
      goto unknown;
    if (!g_str_equal(property_interface, TG_TUNNEL_INTERFACE)) {
      g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_INTERFACE,
                  "No interface '%s' on a tunnel", property_interface);
      return FALSE;
    }
    if (name != NULL &&
        g_dbus_interface_info_lookup_property(
            tg_daemon_interface(daemon, TG_TUNNEL_INTERFACE), name) == NULL) {
      g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY,
                  "No property '%s' on %s", name, TG_TUNNEL_INTERFACE);
      return FALSE;
    }
    *act = name != NULL ? tunnel_act_get : tunnel_act_get_all;
    return TRUE;
  }
  if (g_str_equal(method, "Close")) {
    *act = tunnel_act_close;
    return TRUE;
  }
  if (g_str_equal(method, "SetCredentials")) {
    *act = tunnel_act_set_credentials; /* the dictionary: tunnel_parse_credentials() */
    return TRUE;
  }
  if (g_str_equal(method, "AddForward") || g_str_equal(method, "RemoveForward")) {
    const char *spec;
    g_autoptr(TgForward) forward = NULL;

    g_variant_get(parameters, "(&s)", &spec);
    forward = tg_forward_parse(spec, error);
    if (forward == NULL || (g_str_equal(method, "AddForward") &&
                            !tg_admission_forward_is_served(forward, error)))
      return FALSE;
    *act = g_str_equal(method, "AddForward") ? tunnel_act_add_forward
                                             : tunnel_act_remove_forward;
    *forward_out = g_steal_pointer(&forward);
    return TRUE;
  }
unknown:
  g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD, "No method %s.%s",
              interface, method);
  return FALSE;
}

/* SetCredentials' dictionary: exactly one of agent, agent-fd, identity,
 * identity-fd, checked before authorization like every argument. */
static gboolean
tunnel_parse_credentials(GDBusMethodInvocation *invocation, GVariant *parameters,
                         TunnelCallData *data, GError **error)
{
  g_autoptr(GVariantIter) iter = NULL;
  const char *key;
  GVariant *value;
  guint given = 0;

  g_variant_get(parameters, "(a{sv})", &iter);
  while (g_variant_iter_next(iter, "{&sv}", &key, &value)) {
    g_autoptr(GVariant) owned = value;

    if (!tg_option_is_credential(key)) {
      g_set_error(
          error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
          "Unknown credential '%s' (known: agent, agent-fd, identity, identity-fd)", key);
      return FALSE;
    }
    if (!tg_option_parse_credential(invocation, key, value, &data->agent_path,
                                    &data->agent_fd, &data->identity_path,
                                    &data->identity_fd, error))
      return FALSE;
    given++;
  }
  if (given != 1) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        "Give exactly one of agent, agent-fd, identity and identity-fd");
    return FALSE;
  }
  return TRUE;
}

static void
tunnel_authorize(TgDaemon *daemon, const char *path, TgAction action,
                 GDBusMethodInvocation *invocation, void (*act)(TgCall *),
                 TgForward *forward, TunnelCallData *data)
{
  TgCall *call = tg_call_new(invocation, action);

  data->daemon = daemon;
  data->path = g_strdup(path);
  data->forward = forward;
  call->data = data;
  call->free_data = tunnel_call_data_free;
  call->decide = tunnel_call_decide;
  call->act = act;
  tg_authz_run(daemon->authz, call);
}

void
tg_tunnel_authorize_close(TgDaemon *daemon, const char *path, TgAction action,
                          GDBusMethodInvocation *invocation)
{
  tunnel_authorize(daemon, path, action, invocation, tunnel_act_close, NULL,
                   tunnel_call_data_new());
}

static void
tunnel_method_call(GDBusConnection *connection, const char *sender, const char *path,
                   const char *interface, const char *method, GVariant *parameters,
                   GDBusMethodInvocation *invocation, gpointer user_data)
{
  TgDaemon *daemon = user_data;
  g_autoptr(GError) error = NULL;
  void (*act)(TgCall *) = NULL;
  TgForward *forward = NULL;
  TunnelCallData *data;
  TgAction action;

  if (!tg_authz_method_action(g_str_equal(interface, "org.freedesktop.DBus.Properties")
                                  ? TG_TUNNEL_INTERFACE
                                  : interface,
                              method, &action)) {
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR,
                                          G_DBUS_ERROR_UNKNOWN_METHOD, "No method %s.%s",
                                          interface, method);
    return;
  }
  if (!tunnel_validate(daemon, interface, method, parameters, &act, &forward, &error)) {
    g_dbus_method_invocation_return_gerror(invocation, error);
    return;
  }
  data = tunnel_call_data_new();
  if (act == tunnel_act_set_credentials &&
      !tunnel_parse_credentials(invocation, parameters, data, &error)) {
    tunnel_call_data_free(data);
    g_dbus_method_invocation_return_gerror(invocation, error);
    return;
  }
  tunnel_authorize(daemon, path, action, invocation, act, forward, data);
}

static const GDBusInterfaceVTable tunnel_vtable = {
  .method_call = tunnel_method_call,
  /* no get_property: Get and GetAll come to method_call, so that reading a
   * tunnel's properties is authorized like any other call */
};

/* ---- the subtree of tunnel objects ----
 *
 * One registration for every tunnel path, known or not: a call to a tunnel
 * that does not exist is dispatched and authorized like one to someone
 * else's (see tunnel_call_decide()), and introspection lists to each
 * connection only the tunnels it may see (as a watcher: after its first
 * authorized call), not everyone's ids. */

static char **
subtree_enumerate(GDBusConnection *connection, const char *sender,
                  const char *object_path, gpointer user_data)
{
  TgDaemon *daemon = user_data;

  return tg_registry_visible_ids(daemon->registry, sender);
}

static GDBusInterfaceInfo **
subtree_introspect(GDBusConnection *connection, const char *sender,
                   const char *object_path, const char *node, gpointer user_data)
{
  TgDaemon *daemon = user_data;
  GPtrArray *interfaces;

  if (node == NULL) /* the prefix itself: a container */
    return NULL;
  interfaces = g_ptr_array_new();
  g_ptr_array_add(interfaces, g_dbus_interface_info_ref(
                                  tg_daemon_interface(daemon, TG_TUNNEL_INTERFACE)));
  g_ptr_array_add(interfaces, NULL);
  return (GDBusInterfaceInfo **)g_ptr_array_free(interfaces, FALSE);
}

static const GDBusInterfaceVTable *
subtree_dispatch(GDBusConnection *connection, const char *sender, const char *object_path,
                 const char *interface_name, const char *node, gpointer *out_user_data,
                 gpointer user_data)
{
  *out_user_data = user_data;
  return node != NULL ? &tunnel_vtable : NULL;
}

static const GDBusSubtreeVTable tunnel_subtree_vtable = {
  .enumerate = subtree_enumerate,
  .introspect = subtree_introspect,
  .dispatch = subtree_dispatch,
};

guint
tg_tunnel_register_subtree(TgDaemon *daemon, GError **error)
{
  g_autofree char *root =
      g_strndup(TG_TUNNEL_PATH_PREFIX, strlen(TG_TUNNEL_PATH_PREFIX) - 1); /* no '/' */

  return g_dbus_connection_register_subtree(
      daemon->bus, root, &tunnel_subtree_vtable,
      G_DBUS_SUBTREE_FLAGS_DISPATCH_TO_UNENUMERATED_NODES, daemon, NULL, error);
}

/* Every step of connecting has its own timeout, but an ssh-agent that never
 * answers (libssh waits for it without one) would keep a tunnel connecting
 * for ever: this bounds the whole. */
static gboolean
tunnel_connect_timed_out(gpointer user_data)
{
  TgTunnel *tunnel = user_data;

  tunnel->connect_timer = 0;
  if (tunnel->state == TG_TUNNEL_CONNECTING && tunnel->session != NULL) {
    tunnel->abort_reason = g_strdup_printf(
        "Tunnel %s was not up after %u seconds (server, host key check, or "
        "authentication with the ssh-agent did not finish)",
        tunnel->id, tunnel->daemon->connect_timeout_seconds * 3);
    tg_tunnel_close(tunnel, tunnel->abort_reason, NULL);
  }
  return G_SOURCE_REMOVE;
}

static void
tunnel_caller_vanished(GDBusConnection *connection, const char *name, gpointer user_data)
{
  TgTunnel *tunnel = user_data;
  g_autofree char *reason =
      g_strdup_printf("its caller %s left the bus (bind-to-caller)", name);

  g_bus_unwatch_name(tunnel->caller_watch);
  tunnel->caller_watch = 0;
  tg_tunnel_close(tunnel, reason, NULL);
}

TgTunnel *
tg_tunnel_open(TgDaemon *daemon, const TgCaller *owner, TgPolicySubject *subject,
               const char *destination, const char *description, gboolean bind_to_caller,
               TgAction granted, gboolean check_actions, TgSessionConfig *config,
               GDBusMethodInvocation *open_invocation)
{
  TgTunnel *tunnel = g_new0(TgTunnel, 1);
  g_autoptr(GError) error = NULL;

  tunnel->daemon = daemon;
  g_return_val_if_fail(config->tunnel_id != NULL, NULL);
  tunnel->id = g_strdup(config->tunnel_id);
  tunnel->path = g_strconcat(TG_TUNNEL_PATH_PREFIX, tunnel->id, NULL);
  tunnel->owner_uid = owner->uid;
  tunnel->owner_name = g_strdup(owner->user_name);
  tunnel->subject = subject;
  tunnel->destination = g_strdup(destination);
  tunnel->description = g_strdup(description != NULL ? description : "");
  tunnel->server_host = g_strdup(config->host);
  tunnel->server_port = config->port;
  tunnel->host_key = g_strdup(config->host_key);
  tunnel->created = g_get_real_time();
  tunnel->state = TG_TUNNEL_CONNECTING;
  tunnel->last_error = g_strdup("");
  tunnel->granted = granted;
  tunnel->check_actions = check_actions;
  tunnel->reconnect = config->reconnect;
  tunnel->close_invocations = g_ptr_array_new();
  tunnel->forward_list = g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  for (guint i = 0; i < config->forwards->len; i++)
    g_ptr_array_add(tunnel->forward_list,
                    tg_forward_copy(g_ptr_array_index(config->forwards, i)));
  tunnel->listener_info = g_array_new(FALSE, TRUE, sizeof(ListenerInfo));
  tunnel->pins = g_ptr_array_new_with_free_func((GDestroyNotify)tg_connect_back_free);
  for (guint i = 0; i < config->connect_backs->len; i++)
    g_ptr_array_add(tunnel->pins,
                    tg_connect_back_copy(g_ptr_array_index(config->connect_backs, i)));
  for (guint i = 0; i < config->listeners->len; i++) {
    const TgListener *listener = g_ptr_array_index(config->listeners, i);
    ListenerInfo info = { .forward_index = listener->forward_index,
                          .port = listener->port,
                          .guarded = TRUE };
    g_strlcpy(info.address, listener->address, sizeof info.address);
    g_array_append_val(tunnel->listener_info, info);
  }
  tunnel_publish_forwards(tunnel);
  tunnel->open_invocation = open_invocation;
  tunnel->usage = tg_registry_usage(daemon->registry, owner->uid);
  tunnel->daemon_usage = tg_registry_daemon_usage(daemon->registry);

  tg_registry_add_tunnel(daemon->registry, tunnel->id, tunnel->owner_uid, tunnel);
  tunnel->exported = TRUE; /* the subtree serves it from now on */
  tunnel_announce(tunnel, TRUE);

  tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_OPENING", "TUNNEL_ID", tunnel->id, "USER",
               tunnel->owner_name, "MESSAGE", "opening tunnel %s for %s (uid %u) to %s",
               tunnel->id, tunnel->owner_name, (unsigned)tunnel->owner_uid, destination);

  if (bind_to_caller)
    tunnel->caller_watch = g_bus_watch_name_on_connection(
        daemon->bus, owner->bus_name, G_BUS_NAME_WATCHER_FLAGS_NONE, NULL,
        tunnel_caller_vanished, tunnel, NULL);

  tg_tunnel_apply_policy(tunnel, daemon->policy);
  config->subject = tg_policy_subject_copy(tunnel->subject);
  config->policy = tg_policy_ref(daemon->policy);
  if (open_invocation != NULL) /* someone waits: bounded */
    tunnel->connect_timer = g_timeout_add_seconds(daemon->connect_timeout_seconds * 3,
                                                  tunnel_connect_timed_out, tunnel);
  tunnel->session =
      tg_session_start(config, &tunnel->counters, tunnel->usage, tunnel->daemon_usage,
                       tunnel_session_state, tunnel_remote_listening, tunnel);
  tg_tunnel_apply_policy(tunnel,
                         daemon->policy); /* MaxReconnectAttempts: the session's */
  return tunnel;
}

void
tg_tunnel_network_changed(TgTunnel *tunnel)
{
  if (tunnel->session != NULL && tunnel->reconnect && !tunnel->closing)
    tg_session_check_now(tunnel->session);
}

void
tg_tunnel_sleep(TgTunnel *tunnel, gboolean sleeping)
{
  if (tunnel->session != NULL && tunnel->reconnect && !tunnel->closing)
    tg_session_suspend(tunnel->session, sleeping);
}

gboolean
tg_tunnel_ready_for_sleep(TgTunnel *tunnel)
{
  return !tunnel->reconnect || tunnel->session == NULL || tunnel->closing ||
         tunnel->suspended || tunnel->state != TG_TUNNEL_UP;
}

void
tg_tunnel_set_profile(TgTunnel *tunnel, const char *profile)
{
  g_free(tunnel->profile);
  tunnel->profile = g_strdup(profile);
}

void
tg_tunnel_set_autostart(TgTunnel *tunnel)
{
  const char *names[] = { "Persistent", NULL };

  g_return_if_fail(tunnel->profile != NULL);
  tunnel->autostart = TRUE;
  tunnel->persistent = TRUE;
  tunnel_emit_changed(tunnel, names);
}

const char *
tg_tunnel_get_autostart(TgTunnel *tunnel, gboolean *running, gboolean *failed)
{
  *running = tunnel->session != NULL && !tunnel->closing;
  *failed = tunnel->session == NULL;
  return tunnel->autostart ? tunnel->profile : NULL;
}

void
tg_tunnel_persist(TgTunnel *tunnel, TgPersistRecord *record)
{
  const char *names[] = { "Persistent", "Created", NULL };

  tg_persist_record_free(tunnel->record);
  tunnel->record = record;
  tunnel->persistent = TRUE;
  if (record->created > 0 && record->created != tunnel->created) {
    tunnel->created = record->created;
    tg_tunnel_apply_policy(tunnel, tunnel->daemon->policy); /* MaxLifetime */
  } else {
    names[1] = NULL;
  }
  tunnel_emit_changed(tunnel, names);
  tunnel_store(tunnel);
}

static void
reply_when_applied(gboolean applied, const GError *error, gpointer user_data)
{
  GDBusMethodInvocation *invocation = user_data;

  if (applied)
    g_dbus_method_invocation_return_value(invocation, NULL);
  else if (error != NULL)
    g_dbus_method_invocation_return_gerror(invocation, error);
  else
    g_dbus_method_invocation_return_error(invocation, TG_ERROR, TG_ERROR_DISCONNECTED,
                                          "The tunnel closed before the change was made");
}

typedef struct {
  TgTunnel *tunnel; /* alive: acknowledgements come before the worker's end */
  guint index;
  GDBusMethodInvocation *invocation;
} AddReply;

/* AddForward's answer; a forward the server would not listen for is taken
 * back (the tunnel runs on). */
static void
reply_when_added(gboolean applied, const GError *error, gpointer user_data)
{
  AddReply *reply = user_data;
  TgTunnel *tunnel = reply->tunnel;
  TgForward *forward = g_ptr_array_index(tunnel->forward_list, reply->index);

  if (!applied && error != NULL && forward != NULL) {
    const char *names[] = { "Forwards", "Listeners", NULL };

    tg_log_event(G_LOG_LEVEL_MESSAGE, "FORWARD_REMOVED", "TUNNEL_ID", tunnel->id, "USER",
                 tunnel->owner_name, "FORWARD", forward->spec, "MESSAGE",
                 "tunnel %s: forward '%s' not added: %s", tunnel->id, forward->spec,
                 error->message);
    tunnel->forward_list->pdata[reply->index] = NULL;
    tg_forward_free(forward);
    tunnel_unguard(tunnel, reply->index);
    tunnel_unpin(tunnel, reply->index);
    tunnel_publish_forwards(tunnel);
    tunnel_emit_changed(tunnel, names);
    tunnel_store(tunnel);
  }
  if (reply->invocation != NULL)
    reply_when_applied(applied, error, reply->invocation);
  g_free(reply);
}

gboolean
tg_tunnel_remove_forward(TgTunnel *tunnel, guint index, const char *reason,
                         GDBusMethodInvocation *invocation)
{
  const char *names[] = { "Forwards", "Listeners", NULL };
  TgForward *forward = g_ptr_array_index(tunnel->forward_list, index);
  gboolean any_left = FALSE;
  gboolean freed_now;

  g_return_val_if_fail(forward != NULL, TRUE);
  tg_log_event(G_LOG_LEVEL_MESSAGE, "FORWARD_REMOVED", "TUNNEL_ID", tunnel->id, "USER",
               tunnel->owner_name, "FORWARD", forward->spec, "MESSAGE",
               "tunnel %s: removing forward '%s': %s", tunnel->id, forward->spec, reason);
  tunnel->forward_list->pdata[index] = NULL;
  tg_forward_free(forward);
  tunnel_unguard(tunnel, index);
  tunnel_unpin(tunnel, index);
  for (guint i = 0; i < tunnel->forward_list->len; i++)
    any_left |= g_ptr_array_index(tunnel->forward_list, i) != NULL;

  if (!any_left) {
    /* a tunnel whose worker already ended is freed by this at once */
    freed_now = tunnel->session == NULL;
    tg_tunnel_close(tunnel, "no forward is left", invocation);
    return !freed_now;
  }
  tunnel_publish_forwards(tunnel);
  tunnel_emit_changed(tunnel, names);
  tunnel_store(tunnel);
  if (tunnel->session != NULL)
    tg_session_remove_forward(tunnel->session, index,
                              invocation != NULL ? reply_when_applied : NULL, invocation);
  else if (invocation != NULL)
    g_dbus_method_invocation_return_value(invocation, NULL);
  return TRUE;
}

static void
tunnel_add_forward(TgTunnel *tunnel, TgForward *forward, GPtrArray *listeners,
                   TgConnectBack *connect_back, GDBusMethodInvocation *invocation)
{
  const char *names[] = { "Forwards", "Listeners", NULL };
  guint index = tunnel->forward_list->len;
  AddReply *reply = g_new0(AddReply, 1);

  g_assert(tunnel->session != NULL); /* the caller answered for a tunnel that ended */
  tg_log_event(G_LOG_LEVEL_MESSAGE, "FORWARD_ADDED", "TUNNEL_ID", tunnel->id, "USER",
               tunnel->owner_name, "FORWARD", forward->spec, "MESSAGE",
               "tunnel %s: adding forward '%s'", tunnel->id, forward->spec);
  g_ptr_array_add(tunnel->forward_list, tg_forward_copy(forward));
  for (guint i = 0; i < listeners->len; i++) {
    TgListener *listener = g_ptr_array_index(listeners, i);
    ListenerInfo info = { .forward_index = index,
                          .port = listener->port,
                          .guarded = TRUE };

    g_strlcpy(info.address, listener->address, sizeof info.address);
    g_array_append_val(tunnel->listener_info, info);
  }
  if (connect_back != NULL)
    g_ptr_array_add(tunnel->pins, tg_connect_back_copy(connect_back));
  tunnel_publish_forwards(tunnel);
  tunnel_emit_changed(tunnel, names);
  tunnel_store(tunnel);
  reply->tunnel = tunnel;
  reply->index = index;
  reply->invocation = invocation;
  tg_session_add_forward(tunnel->session, index, forward, listeners, connect_back,
                         reply_when_added, reply);
}

guint
tg_tunnel_find_forward(TgTunnel *tunnel, const char *spec)
{
  for (guint i = 0; i < tunnel->forward_list->len; i++) {
    const TgForward *forward = g_ptr_array_index(tunnel->forward_list, i);
    if (forward != NULL && g_str_equal(forward->spec, spec))
      return i;
  }
  return G_MAXUINT;
}

guint
tg_tunnel_count_forwards(TgTunnel *tunnel)
{
  guint n = 0;

  for (guint i = 0; i < tunnel->forward_list->len; i++)
    n += g_ptr_array_index(tunnel->forward_list, i) != NULL;
  return n;
}

static gboolean
tunnel_lifetime_over(gpointer user_data)
{
  TgTunnel *tunnel = user_data;

  tunnel->lifetime_timer = 0;
  tunnel_close_by_limit(tunnel, TG_POLICY_MAX_LIFETIME);
  return G_SOURCE_REMOVE;
}

void
tg_tunnel_apply_policy(TgTunnel *tunnel, const TgPolicy *policy)
{
  if (tunnel->session != NULL)
    tg_session_set_policy(tunnel->session, (TgPolicy *)policy, tunnel->subject);
  TgPolicyLimit lifetime, idle, limit;
  gint64 age = (g_get_real_time() - tunnel->created) / G_USEC_PER_SEC;

  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_MAX_CONNECTIONS, &limit);
  atomic_store(&tunnel->usage->max_connections,
               limit.limited ? (guint)MIN(limit.value, G_MAXUINT - 1) : G_MAXUINT);
  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_MAX_BUFFERED, &limit);
  atomic_store(&tunnel->usage->max_buffered,
               limit.limited ? MIN(limit.value, G_MAXUINT64 - 1) : G_MAXUINT64);
  /* the daemon's are the same for every subject */
  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_DAEMON_MAX_CONNECTIONS, &limit);
  atomic_store(&tunnel->daemon_usage->max_connections,
               limit.limited ? (guint)MIN(limit.value, G_MAXUINT - 1) : G_MAXUINT);
  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_DAEMON_MAX_BUFFERED, &limit);
  atomic_store(&tunnel->daemon_usage->max_buffered,
               limit.limited ? MIN(limit.value, G_MAXUINT64 - 1) : G_MAXUINT64);

  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_IDLE_TIMEOUT, &idle);
  tunnel->idle_limit = idle.limited ? idle.value : 0;

  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_MAX_RECONNECT_ATTEMPTS, &limit);
  if (tunnel->session != NULL)
    tg_session_set_max_attempts(tunnel->session,
                                limit.limited ? (guint)MIN(limit.value, G_MAXUINT - 1)
                                              : G_MAXUINT);

  g_clear_handle_id(&tunnel->lifetime_timer, g_source_remove);
  tg_policy_get_limit(policy, tunnel->subject, TG_POLICY_MAX_LIFETIME, &lifetime);
  if (lifetime.limited)
    tunnel->lifetime_timer = g_timeout_add_seconds(
        (guint)MIN((guint64)MAX(0, (gint64)lifetime.value - age), G_MAXUINT / 2),
        tunnel_lifetime_over, tunnel);
}

void
tg_tunnel_free(TgTunnel *tunnel)
{
  if (tunnel == NULL)
    return;
  /* the daemon only frees tunnels whose worker has finished */
  g_assert(tunnel->session == NULL);
  g_assert(tunnel->open_invocation == NULL);
  tunnel_unguard(tunnel, G_MAXUINT);
  tunnel_unpin(tunnel, G_MAXUINT);
  if (tunnel->caller_watch != 0)
    g_bus_unwatch_name(tunnel->caller_watch);
  g_ptr_array_unref(tunnel->close_invocations);
  g_free(tunnel->id);
  g_free(tunnel->path);
  g_free(tunnel->owner_name);
  g_free(tunnel->destination);
  g_free(tunnel->description);
  g_strfreev(tunnel->forwards);
  g_variant_unref(tunnel->listeners);
  g_ptr_array_unref(tunnel->forward_list);
  g_array_unref(tunnel->listener_info);
  g_ptr_array_unref(tunnel->pins);
  g_free(tunnel->server_host);
  g_free(tunnel->host_key);
  g_free(tunnel->profile);
  tg_persist_record_free(tunnel->record);
  tg_policy_subject_free(tunnel->subject);
  g_clear_handle_id(&tunnel->lifetime_timer, g_source_remove);
  g_clear_handle_id(&tunnel->connect_timer, g_source_remove);
  g_free(tunnel->abort_reason);
  tg_usage_unref(tunnel->usage);
  tg_usage_unref(tunnel->daemon_usage);
  g_free(tunnel->last_error);
  g_free(tunnel);
}

/* ---- a reload: the tunnel re-checks itself ---- */

/* A profile's tunnel: the profile must still exist and allow its user. */
static gboolean
tunnel_profile_allows(TgTunnel *tunnel, gboolean reload, char **reason)
{
  g_autofree char *dir = g_build_filename(tunnel->daemon->config_dir, "profiles.d", NULL);
  g_autoptr(TgProfile) profile = NULL;
  g_autoptr(GError) error = NULL;

  profile = tg_profile_load(dir, tunnel->profile, &error);
  if (profile != NULL) {
    g_autofree char *what = g_strdup_printf("profile @%s", profile->name);
    g_autoptr(TgPolicyDecision) decision = tg_profile_decide(profile, tunnel->subject);

    tg_policy_log_decision(tunnel->subject, tunnel->id, what, decision);
    if (decision->allowed && tunnel->autostart &&
        (!profile->autostart ||
         g_strcmp0(profile->autostart_user, tunnel->owner_name) != 0))
      *reason =
          g_strdup_printf("its profile '%s' no longer autostarts it for %s (%s)",
                          profile->name, tunnel->owner_name,
                          !profile->autostart ? "Autostart no" : "another AutostartUser");
    else if (decision->allowed)
      return TRUE;
    else
      *reason = g_strdup_printf("the %s policy forbids it: %s",
                                reload ? "reloaded" : "current", decision->reason);
  } else {
    *reason = g_strdup_printf("its profile '%s' cannot be read any more: %s",
                              tunnel->profile, error->message);
  }
  return FALSE;
}

static gboolean
tunnel_recheck_profile(TgTunnel *tunnel)
{
  g_autofree char *reason = NULL;

  if (tunnel_profile_allows(tunnel, TRUE, &reason))
    return TRUE;
  tg_tunnel_close(tunnel, reason, NULL);
  return FALSE;
}

gboolean
tg_tunnel_recheck(TgTunnel *tunnel, const TgPolicySubject *owner,
                  const char *lookup_error)
{
  const TgPolicy *policy = tunnel->daemon->policy;
  g_autofree char *what = NULL;
  g_autoptr(TgPolicyDecision) server = NULL;
  g_autoptr(TgPolicyDecision) host_key = NULL;

  /* the owner as NSS knows them now: a group they left grants nothing more */
  if (owner == NULL) {
    g_autofree char *reason = g_strdup_printf(
        "the owner's account cannot be looked up for the reloaded policy: %s",
        lookup_error);
    tg_tunnel_close(tunnel, reason, NULL);
    return FALSE;
  }
  tg_policy_subject_free(tunnel->subject);
  tunnel->subject = tg_policy_subject_copy(owner);

  if (tunnel->profile != NULL && !tunnel_recheck_profile(tunnel))
    return FALSE;

  what = g_strdup_printf("server %s port %u", tunnel->server_host, tunnel->server_port);
  server = tg_policy_check_server(policy, tunnel->subject, tunnel->server_host,
                                  tunnel->server_port);
  tg_policy_log_decision(tunnel->subject, tunnel->id, what, server);
  host_key = tg_policy_check_host_key(policy, tunnel->subject, tunnel->host_key != NULL);
  tg_policy_log_decision(tunnel->subject, tunnel->id, "host key", host_key);
  if (!server->allowed || !host_key->allowed) {
    g_autofree char *reason =
        g_strdup_printf("the reloaded policy forbids it: %s",
                        !server->allowed ? server->reason : host_key->reason);
    tg_tunnel_close(tunnel, reason, NULL);
    return FALSE;
  }
  for (guint i = 0; i < tunnel->forward_list->len; i++) {
    const TgForward *forward = g_ptr_array_index(tunnel->forward_list, i);
    g_autoptr(TgPolicyDecision) decision = NULL;

    if (forward == NULL) /* removed before */
      continue;
    decision = tg_policy_check_forward(policy, tunnel->subject, forward);
    tg_policy_log_decision(tunnel->subject, tunnel->id, forward->spec, decision);
    if (!decision->allowed &&
        !tg_tunnel_remove_forward(tunnel, i, decision->reason, NULL))
      return FALSE; /* that was its last forward, and the tunnel is gone */
  }
  tg_tunnel_apply_policy(tunnel, policy);
  return TRUE;
}

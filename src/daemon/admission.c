/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "admission.h"

#include <string.h>
#include <sys/socket.h>

#include "gate.h"
#include "listener.h"
#include "resolve.h"
#include "tg-error.h"

struct _TgAdmission {
  TgDaemon *daemon;
  const TgAdmissionSteps *steps;
  uid_t caller_uid;
  TgPolicySubject *subject;
  char *tunnel_id;
  GPtrArray *forwards; /* TgForward*, owned */
  TgAction granted;
  gboolean check_actions;
  guint first_index;
  GArray *listen_ports; /* guint16 per forward: where port 0 binds (0: anywhere) */

  gboolean readmission; /* tg_admission_set_readmission() */
  GPtrArray *refusals;  /* char*, one per forward: NULL or why it was refused */

  gboolean check_server; /* tg_admission_set_server() */
  char *host;
  guint16 port;
  char *pinned_host_key;
  gboolean new_tunnel;
  TgHostKeyMode host_key_mode;

  /* RESOLVE: one slot per forward (NULL where nothing was resolved) */
  gboolean holds_resolver_slot;
  GPtrArray *resolved;       /* TgConnectBack* */
  GPtrArray *resolve_errors; /* GError* */
  GArray *wanted;            /* gboolean: resolved because the policy allowed it */

  /* what the transaction made; undone by rollback() unless taken */
  GPtrArray *listeners;     /* TgListener*, bound */
  guint n_guarded;          /* the first n_guarded listeners are guarded */
  GPtrArray *connect_backs; /* TgConnectBack* */
  guint n_pinned;           /* the first n_pinned connect-backs are pinned */

  TgAdmissionCheckFunc still_wanted;
  TgAdmissionDoneFunc done;
  gpointer user_data;
};

const TgAdmissionSteps tg_admission_default_steps = {
  .bind = tg_listener_bind,
  .guard = tg_gate_guard_listeners,
  .unguard = tg_gate_unguard_listener,
  .pin = tg_gate_pin_connect_back,
  .unpin = tg_gate_unpin_connect_back,
};

/* ---- what a forward is and needs ---- */

gboolean
tg_admission_forward_is_served(const TgForward *forward, GError **error)
{
  const char *missing = NULL;

  if (forward->kind == TG_FORWARD_REMOTE && forward->remote_dynamic)
    missing = "remote dynamic (R port, SOCKS on the server) forwards";
  else if (forward->kind == TG_FORWARD_REMOTE && forward->listen.path != NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED,
                "Forward '%s': remote Unix-socket forwarding "
                "(streamlocal-forward@openssh.com) has no client API in libssh 0.10, "
                "which tunnelgate uses; forward a remote TCP port instead",
                forward->spec);
    return FALSE;
  } else if (forward->kind == TG_FORWARD_REMOTE && forward->connect.path != NULL)
    missing = "remote forwards to a local Unix socket";
  if (missing == NULL)
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED,
              "Forward '%s': %s are not supported yet", forward->spec, missing);
  return FALSE;
}

TgAction
tg_admission_forward_actions(const TgPolicy *policy, const TgPolicySubject *subject,
                             const TgForward *forward)
{
  if (forward->kind == TG_FORWARD_REMOTE)
    return TG_ACTION_OPEN_REMOTE;
  if (forward->listen.path != NULL)
    return TG_ACTION_NONE; /* a socket file of the caller's, mode 0600 */
  if (!tg_forward_listens_on_loopback_only(forward) ||
      tg_policy_forward_listens_on_all_addresses(policy, subject, forward))
    return TG_ACTION_BIND_ANY;
  return TG_ACTION_NONE;
}

/* ---- life cycle ---- */

static void
error_free0(gpointer error)
{
  if (error != NULL)
    g_error_free(error);
}

TgAdmission *
tg_admission_new(TgDaemon *daemon, uid_t caller_uid, const TgPolicySubject *subject,
                 const char *tunnel_id, GPtrArray *forwards, TgAction granted,
                 gboolean check_actions)
{
  TgAdmission *admission = g_new0(TgAdmission, 1);
  guint n = forwards->len;

  admission->daemon = daemon;
  admission->steps = &tg_admission_default_steps;
  admission->caller_uid = caller_uid;
  admission->subject = tg_policy_subject_copy(subject);
  admission->tunnel_id = g_strdup(tunnel_id);
  admission->forwards = g_ptr_array_new_full(n, (GDestroyNotify)tg_forward_free);
  for (guint i = 0; i < n; i++)
    g_ptr_array_add(admission->forwards, tg_forward_copy(forwards->pdata[i]));
  admission->granted = granted;
  admission->check_actions = check_actions;
  admission->host_key_mode = TG_HOST_KEY_KNOWN_OR_PINNED;
  admission->resolved = g_ptr_array_new_full(n, (GDestroyNotify)tg_connect_back_free);
  g_ptr_array_set_size(admission->resolved, n);
  admission->resolve_errors = g_ptr_array_new_full(n, error_free0);
  g_ptr_array_set_size(admission->resolve_errors, n);
  admission->wanted = g_array_sized_new(FALSE, TRUE, sizeof(gboolean), n);
  g_array_set_size(admission->wanted, n);
  admission->listeners = g_ptr_array_new_with_free_func((GDestroyNotify)tg_listener_free);
  admission->connect_backs =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_connect_back_free);
  admission->refusals = g_ptr_array_new_full(n, g_free);
  g_ptr_array_set_size(admission->refusals, n);
  admission->listen_ports = g_array_sized_new(FALSE, TRUE, sizeof(guint16), n);
  g_array_set_size(admission->listen_ports, n);
  return admission;
}

void
tg_admission_set_readmission(TgAdmission *admission)
{
  admission->readmission = TRUE;
}

const char *
tg_admission_get_refusal(TgAdmission *admission, guint position)
{
  g_return_val_if_fail(position < admission->refusals->len, NULL);
  return g_ptr_array_index(admission->refusals, position);
}

void
tg_admission_set_server(TgAdmission *admission, const char *host, guint16 port,
                        const char *pinned_host_key, gboolean new_tunnel)
{
  admission->check_server = TRUE;
  g_free(admission->host);
  admission->host = g_strdup(host);
  admission->port = port;
  g_free(admission->pinned_host_key);
  admission->pinned_host_key = g_strdup(pinned_host_key);
  admission->new_tunnel = new_tunnel;
}

void
tg_admission_set_steps(TgAdmission *admission, const TgAdmissionSteps *steps)
{
  admission->steps = steps;
}

void
tg_admission_set_first_index(TgAdmission *admission, guint index)
{
  admission->first_index = index;
}

void
tg_admission_set_listen_port(TgAdmission *admission, guint position, guint16 port)
{
  g_return_if_fail(position < admission->listen_ports->len);
  g_array_index(admission->listen_ports, guint16, position) = port;
}

/* The one rollback: whatever the transaction made and nobody took. */
static void
rollback(TgAdmission *admission)
{
  TgDaemon *daemon = admission->daemon;

  for (guint i = admission->n_pinned; i-- > 0;)
    admission->steps->unpin(daemon, g_ptr_array_index(admission->connect_backs, i));
  admission->n_pinned = 0;
  g_ptr_array_set_size(admission->connect_backs, 0);
  for (guint i = admission->n_guarded; i-- > 0;) {
    const TgListener *listener = g_ptr_array_index(admission->listeners, i);
    admission->steps->unguard(daemon, listener->address, listener->port,
                              admission->tunnel_id);
  }
  admission->n_guarded = 0;
  g_ptr_array_set_size(admission->listeners, 0); /* closes them */
}

void
tg_admission_free(TgAdmission *admission)
{
  if (admission == NULL)
    return;
  g_assert(!admission->holds_resolver_slot); /* freed while its thread runs */
  rollback(admission);
  tg_policy_subject_free(admission->subject);
  g_free(admission->tunnel_id);
  g_ptr_array_unref(admission->forwards);
  g_free(admission->host);
  g_free(admission->pinned_host_key);
  g_ptr_array_unref(admission->resolved);
  g_ptr_array_unref(admission->resolve_errors);
  g_array_unref(admission->wanted);
  g_ptr_array_unref(admission->listeners);
  g_ptr_array_unref(admission->connect_backs);
  g_ptr_array_unref(admission->refusals);
  g_array_unref(admission->listen_ports);
  g_free(admission);
}

GPtrArray *
tg_admission_take_listeners(TgAdmission *admission)
{
  GPtrArray *taken = g_steal_pointer(&admission->listeners);

  admission->listeners = g_ptr_array_new_with_free_func((GDestroyNotify)tg_listener_free);
  admission->n_guarded = 0;
  return taken;
}

GPtrArray *
tg_admission_take_connect_backs(TgAdmission *admission)
{
  GPtrArray *taken = g_steal_pointer(&admission->connect_backs);

  admission->connect_backs =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_connect_back_free);
  admission->n_pinned = 0;
  return taken;
}

TgHostKeyMode
tg_admission_get_host_key_mode(TgAdmission *admission)
{
  return admission->host_key_mode;
}

/* ---- RESOLVE ---- */

/* The answer for forward @position: its connect-back, or why not. */
static void
store_resolved(TgAdmission *admission, guint position, TgResolved *resolved)
{
  const TgForward *forward = g_ptr_array_index(admission->forwards, position);
  TgConnectBack *connect_back;

  if (resolved->error != NULL) {
    admission->resolve_errors->pdata[position] = g_error_new(
        TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "Forward '%s': cannot resolve %s: %s",
        forward->spec, forward->connect.host, resolved->error->message);
    return;
  }
  connect_back = tg_connect_back_new(0);
  g_array_append_vals(connect_back->addresses, resolved->addresses->data,
                      resolved->addresses->len);
  admission->resolved->pdata[position] = connect_back;
}

static void admit(TgAdmission *admission);

static void
resolve_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  TgAdmission *admission = user_data;
  g_autoptr(GPtrArray) answers = tg_resolve_finish(result, NULL);
  guint next = 0;

  for (guint i = 0; i < admission->forwards->len; i++) {
    if (g_array_index(admission->wanted, gboolean, i))
      store_resolved(admission, i, g_ptr_array_index(answers, next++));
  }
  tg_registry_end_resolving(admission->daemon->registry, admission->caller_uid);
  admission->holds_resolver_slot = FALSE;
  admit(admission);
}

static void
finish(TgAdmission *admission, GError *error)
{
  if (error != NULL)
    rollback(admission);
  admission->done(admission, error, admission->user_data);
  if (error != NULL)
    g_error_free(error);
}

void
tg_admission_run(TgAdmission *admission, TgAdmissionCheckFunc still_wanted,
                 TgAdmissionDoneFunc done, gpointer user_data)
{
  TgDaemon *daemon = admission->daemon;
  gboolean any = FALSE;
  GError *error = NULL;
  g_autoptr(GPtrArray) hosts = g_ptr_array_new();
  g_autoptr(GArray) ports = g_array_new(FALSE, FALSE, sizeof(guint16));

  admission->still_wanted = still_wanted;
  admission->done = done;
  admission->user_data = user_data;
  for (guint i = 0; i < admission->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(admission->forwards, i);
    g_autoptr(TgPolicyDecision) decision = NULL;

    if (forward->kind != TG_FORWARD_REMOTE || forward->connect.host == NULL ||
        admission->readmission) /* its pins stay */
      continue;
    /* only what the policy allows: a forbidden name is never looked up (the
     * logged POLICY step refuses it afterwards) */
    decision = tg_policy_check_forward(daemon->policy, admission->subject, forward);
    g_array_index(admission->wanted, gboolean, i) = decision->allowed;
    any |= decision->allowed;
  }
  if (!any) {
    admit(admission);
    return;
  }
  if (!tg_registry_begin_resolving(daemon->registry, admission->caller_uid, &error)) {
    finish(admission, error);
    return;
  }
  admission->holds_resolver_slot = TRUE;
  for (guint i = 0; i < admission->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(admission->forwards, i);

    if (g_array_index(admission->wanted, gboolean, i)) {
      g_ptr_array_add(hosts, forward->connect.host);
      g_array_append_val(ports, forward->connect.port);
    }
  }
  tg_resolve_async((const char *const *)hosts->pdata, (const guint16 *)ports->data,
                   hosts->len, NULL, resolve_done, admission);
}

/* ---- RUNNING, ACTIONS, POLICY, BIND, GUARD, PIN ---- */

/* A readmission refuses one forward and goes on; otherwise the first
 * refusal ends the transaction. */
static gboolean
refuse_forward(TgAdmission *admission, guint position, GError **error)
{
  if (!admission->readmission)
    return FALSE;
  g_free(admission->refusals->pdata[position]);
  admission->refusals->pdata[position] = g_strdup((*error)->message);
  g_clear_error(error);
  return TRUE;
}

static gboolean
check_actions(TgAdmission *admission, GError **error)
{
  for (guint i = 0; admission->check_actions && i < admission->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(admission->forwards, i);

    if (tg_admission_forward_actions(admission->daemon->policy, admission->subject,
                                     forward) &
        ~admission->granted) {
      if (admission->readmission)
        g_set_error(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                    "Forward '%s' now needs more than was authorized when the tunnel "
                    "was opened",
                    forward->spec);
      else
        g_set_error(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                    "Forward '%s' needs more than was authorized (the policy changed "
                    "during the call); try again",
                    forward->spec);
      if (!refuse_forward(admission, i, error))
        return FALSE;
    }
  }
  return TRUE;
}

static gboolean
check_policy(TgAdmission *admission, GError **error)
{
  TgDaemon *daemon = admission->daemon;
  const TgPolicySubject *subject = admission->subject;
  const char *id = admission->tunnel_id;

  if (admission->check_server &&
      !tg_gate_check_server(daemon, subject, id, admission->host, admission->port, error))
    return FALSE;
  for (guint i = 0; i < admission->forwards->len; i++) {
    if (admission->refusals->pdata[i] != NULL)
      continue; /* refused already (a readmission) */
    if (!tg_gate_check_new_forward(daemon, subject, id,
                                   g_ptr_array_index(admission->forwards, i), error) &&
        !refuse_forward(admission, i, error))
      return FALSE;
  }
  if (admission->check_server && admission->new_tunnel &&
      !tg_gate_check_tunnel_count(daemon, subject, id, error))
    return FALSE;
  if (admission->new_tunnel &&
      !tg_gate_check_daemon_tunnel_count(daemon, subject, id, error))
    return FALSE;
  return !admission->check_server ||
         tg_gate_check_host_key(daemon, subject, id, admission->pinned_host_key != NULL,
                                &admission->host_key_mode, error);
}

/* An R forward's resolved destination, as forward @index of the tunnel. */
static TgConnectBack *
take_resolved(TgAdmission *admission, guint position, guint index, GError **error)
{
  const TgForward *forward = g_ptr_array_index(admission->forwards, position);
  TgConnectBack *connect_back;

  if (admission->resolve_errors->pdata[position] != NULL) {
    *error = g_error_copy(admission->resolve_errors->pdata[position]);
    return NULL;
  }
  connect_back = g_steal_pointer(&admission->resolved->pdata[position]);
  if (connect_back == NULL) {
    /* not resolved because the policy did not allow it then; it does now */
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                "Forward '%s': the policy changed during the call; try again",
                forward->spec);
    return NULL;
  }
  connect_back->forward_index = index;
  return connect_back;
}

/* MaxListeners and DaemonMaxListeners, now that the number is known: the
 * new listeners count from here until they are closed. */
static gboolean
charge_listeners(TgAdmission *admission, GError **error)
{
  TgDaemon *daemon = admission->daemon;
  TgUsage *user, *everyone;
  gboolean ok;

  if (admission->listeners->len == 0)
    return TRUE;
  user = tg_registry_usage(daemon->registry, admission->caller_uid);
  everyone = tg_registry_daemon_usage(daemon->registry);
  ok = tg_gate_check_listener_count(
      daemon, admission->subject, admission->tunnel_id, atomic_load(&user->listeners),
      atomic_load(&everyone->listeners), admission->listeners->len, error);
  for (guint i = 0; ok && i < admission->listeners->len; i++)
    tg_listener_charge(g_ptr_array_index(admission->listeners, i), user, everyone);
  tg_usage_unref(user);
  tg_usage_unref(everyone);
  return ok;
}

/* Forward @position as BIND takes it: on the port set for a port-0
 * listener (tg_admission_set_listen_port()); *@copy holds what to free. */
static const TgForward *
forward_to_bind(TgAdmission *admission, guint position, TgForward **copy)
{
  const TgForward *forward = g_ptr_array_index(admission->forwards, position);
  guint16 port = g_array_index(admission->listen_ports, guint16, position);

  if (port == 0 || forward->kind == TG_FORWARD_REMOTE || forward->listen.port != 0 ||
      forward->listen.path != NULL)
    return forward;
  *copy = tg_forward_copy(forward);
  (*copy)->listen.port = port;
  return *copy;
}

static gboolean
bind_and_guard(TgAdmission *admission, GError **error)
{
  TgDaemon *daemon = admission->daemon;

  for (guint i = 0; i < admission->forwards->len; i++) {
    g_autoptr(TgForward) copy = NULL;
    const TgForward *forward = forward_to_bind(admission, i, &copy);
    guint index = admission->first_index + i;

    if (forward->kind == TG_FORWARD_REMOTE) {
      TgConnectBack *connect_back = take_resolved(admission, i, index, error);
      if (connect_back == NULL)
        return FALSE;
      g_ptr_array_add(admission->connect_backs, connect_back);
    } else if (forward->listen.path == NULL &&
               !admission->steps->bind(forward, index,
                                       tg_policy_forward_listens_on_all_addresses(
                                           daemon->policy, admission->subject, forward),
                                       admission->caller_uid, admission->listeners,
                                       error)) {
      return FALSE;
    }
  }
  if (!charge_listeners(admission, error))
    return FALSE;
  if (!admission->steps->guard(daemon, admission->subject, admission->caller_uid,
                               admission->listeners, admission->tunnel_id, error)) {
    g_prefix_error(error, "Cannot guard the listeners in the firewall: ");
    return FALSE;
  }
  admission->n_guarded = admission->listeners->len;
  for (guint i = 0; i < admission->connect_backs->len; i++) {
    if (!admission->steps->pin(daemon, g_ptr_array_index(admission->connect_backs, i),
                               admission->tunnel_id, error))
      return FALSE;
    admission->n_pinned = i + 1;
  }
  return TRUE;
}

static void
admit(TgAdmission *admission)
{
  GError *error = NULL;

  if (!tg_registry_check_running(admission->daemon->registry, &error) ||
      (admission->still_wanted != NULL &&
       !admission->still_wanted(admission, admission->user_data, &error)) ||
      !check_actions(admission, &error) || !check_policy(admission, &error) ||
      (!admission->readmission && !bind_and_guard(admission, &error))) {
    finish(admission, error);
    return;
  }
  finish(admission, NULL);
}

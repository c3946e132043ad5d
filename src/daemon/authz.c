/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "authz.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "text.h"
#include "tg-error.h"
#include "tg-names.h"

/* The calls being answered, per uid and in all; referenced by the calls,
 * which may outlive the TgAuthz (kept calls finish after shutdown). D-Bus
 * thread only. */
typedef struct _TgAuthzPending {
  int refs;
  GHashTable *per_uid; /* uid -> count */
  guint total;
} TgAuthzPending;

struct _TgAuthz {
  GDBusConnection *bus;
  PolkitAuthority *authority;
  TgAuthorizedFunc authorized;
  gpointer authorized_data;
  TgAuthzLimitFunc limit;
  gpointer limit_data;
  TgAuthzPending *pending;
};

static void
pending_unref(TgAuthzPending *pending)
{
  if (--pending->refs == 0) {
    g_hash_table_unref(pending->per_uid);
    g_free(pending);
  }
}

static guint
pending_count(TgAuthzPending *pending, uid_t uid)
{
  return GPOINTER_TO_UINT(g_hash_table_lookup(pending->per_uid, GUINT_TO_POINTER(uid)));
}

static void
pending_add(TgCall *call, TgAuthzPending *pending, uid_t uid)
{
  g_hash_table_insert(pending->per_uid, GUINT_TO_POINTER(uid),
                      GUINT_TO_POINTER(pending_count(pending, uid) + 1));
  pending->total++;
  pending->refs++;
  call->pending = pending;
  call->pending_uid = uid;
}

static void
pending_remove(TgCall *call)
{
  TgAuthzPending *pending = call->pending;
  guint n = pending_count(pending, call->pending_uid);

  if (n <= 1)
    g_hash_table_remove(pending->per_uid, GUINT_TO_POINTER(call->pending_uid));
  else
    g_hash_table_insert(pending->per_uid, GUINT_TO_POINTER(call->pending_uid),
                        GUINT_TO_POINTER(n - 1));
  pending->total--;
  call->pending = NULL;
  pending_unref(pending);
}

/* The one table: every method the daemon serves, and the action guarding it.
 * A call starts with its row's action (tg_call_new); two rules refine it,
 * both in the handlers' decide() functions:
 *  - acting on a tunnel the caller does not own needs org.tunnelgate.manage
 *    instead of org.tunnelgate.open (ListTunnels and GetManagedObjects show
 *    other users' tunnels only when manage is granted);
 *  - OpenTunnel of "@profile" needs use-profile instead of open; a remote
 *    forward adds open-remote; a listener on a non-loopback address adds
 *    bind-any.
 * TG_ACTION_NONE marks what is public: the Manager's own properties (version,
 * policy file names, whether the firewall is enforcing) and introspection. */
static const TgMethodAction method_actions[] = {
  { TG_MANAGER_INTERFACE, "OpenTunnel", TG_ACTION_OPEN },
  { TG_MANAGER_INTERFACE, "CloseTunnel", TG_ACTION_OPEN },
  { TG_MANAGER_INTERFACE, "ListTunnels", TG_ACTION_OPEN },
  { TG_MANAGER_INTERFACE, "CheckForward", TG_ACTION_OPEN },
  { TG_MANAGER_INTERFACE, "ReloadPolicy", TG_ACTION_MANAGE },
  { TG_MANAGER_INTERFACE, "GetFirewall", TG_ACTION_MANAGE },
  { TG_MANAGER_INTERFACE, "Audit", TG_ACTION_MANAGE },
  { TG_MANAGER_INTERFACE, "Get", TG_ACTION_NONE },
  { TG_MANAGER_INTERFACE, "GetAll", TG_ACTION_NONE },
  { TG_TUNNEL_INTERFACE, "Close", TG_ACTION_OPEN },
  { TG_TUNNEL_INTERFACE, "AddForward", TG_ACTION_OPEN },
  { TG_TUNNEL_INTERFACE, "RemoveForward", TG_ACTION_OPEN },
  { TG_TUNNEL_INTERFACE, "SetCredentials", TG_ACTION_OPEN },
  { TG_TUNNEL_INTERFACE, "Get", TG_ACTION_OPEN },
  { TG_TUNNEL_INTERFACE, "GetAll", TG_ACTION_OPEN },
  { "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", TG_ACTION_OPEN },
};

const TgMethodAction *
tg_authz_table(gsize *n_rows)
{
  *n_rows = G_N_ELEMENTS(method_actions);
  return method_actions;
}

gboolean
tg_authz_method_action(const char *interface, const char *method, TgAction *action)
{
  for (gsize i = 0; i < G_N_ELEMENTS(method_actions); i++) {
    if (g_str_equal(method_actions[i].interface, interface) &&
        g_str_equal(method_actions[i].method, method)) {
      *action = method_actions[i].action;
      return TRUE;
    }
  }
  return FALSE;
}

const char *
tg_action_id(TgAction action)
{
  switch (action) {
  case TG_ACTION_OPEN:
    return TG_ACTION_ID_OPEN;
  case TG_ACTION_OPEN_REMOTE:
    return TG_ACTION_ID_OPEN_REMOTE;
  case TG_ACTION_BIND_ANY:
    return TG_ACTION_ID_BIND_ANY;
  case TG_ACTION_USE_PROFILE:
    return TG_ACTION_ID_USE_PROFILE;
  case TG_ACTION_MANAGE:
    return TG_ACTION_ID_MANAGE;
  case TG_ACTION_NONE:
    break;
  }
  g_return_val_if_reached(NULL);
}

gboolean
tg_action_from_id(const char *id, TgAction *action)
{
  for (TgAction each = TG_ACTION_OPEN; each <= TG_ACTION_MANAGE; each <<= 1) {
    if (g_str_equal(id, tg_action_id(each))) {
      *action = each;
      return TRUE;
    }
  }
  return FALSE;
}

TgCaller *
tg_caller_copy(const TgCaller *caller)
{
  TgCaller *copy = g_new0(TgCaller, 1);

  *copy = *caller;
  copy->bus_name = g_strdup(caller->bus_name);
  copy->user_name = g_strdup(caller->user_name);
  return copy;
}

void
tg_caller_free(TgCaller *caller)
{
  if (caller == NULL)
    return;
  g_free(caller->bus_name);
  g_free(caller->user_name);
  g_free(caller);
}

/* A descriptor kept in reserve for NSS: out of descriptors (a user filling
 * the table with connections), looking up a caller would fail and every
 * call with it; closing the reserve lets one lookup through. D-Bus thread. */
static int nss_reserve_fd = -1;

TgAuthz *
tg_authz_new(GDBusConnection *bus, PolkitAuthority *authority)
{
  TgAuthz *authz = g_new0(TgAuthz, 1);

  if (nss_reserve_fd < 0)
    nss_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  authz->bus = g_object_ref(bus);
  authz->authority = g_object_ref(authority);
  authz->pending = g_new0(TgAuthzPending, 1);
  authz->pending->refs = 1;
  authz->pending->per_uid = g_hash_table_new(NULL, NULL);
  return authz;
}

void
tg_authz_set_limit_func(TgAuthz *authz, TgAuthzLimitFunc func, gpointer user_data)
{
  authz->limit = func;
  authz->limit_data = user_data;
}

void
tg_authz_set_authorized_func(TgAuthz *authz, TgAuthorizedFunc func, gpointer user_data)
{
  authz->authorized = func;
  authz->authorized_data = user_data;
}

typedef struct {
  char *bus_name;
  TgAuthzAnswerFunc func;
  gpointer user_data;
} QuietCheck;

static void
quiet_check_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  QuietCheck *check = user_data;
  g_autoptr(PolkitAuthorizationResult) answer =
      polkit_authority_check_authorization_finish(POLKIT_AUTHORITY(source), result, NULL);

  check->func(check->bus_name,
              answer != NULL && polkit_authorization_result_get_is_authorized(answer),
              check->user_data);
  g_free(check->bus_name);
  g_free(check);
}

void
tg_authz_check_quietly(TgAuthz *authz, const char *bus_name, TgAction action,
                       TgAuthzAnswerFunc func, gpointer user_data)
{
  QuietCheck *check = g_new0(QuietCheck, 1);
  g_autoptr(PolkitSubject) subject = polkit_system_bus_name_new(bus_name);

  check->bus_name = g_strdup(bus_name);
  check->func = func;
  check->user_data = user_data;
  polkit_authority_check_authorization(authz->authority, subject, tg_action_id(action),
                                       NULL, POLKIT_CHECK_AUTHORIZATION_FLAGS_NONE, NULL,
                                       quiet_check_done, check);
}

void
tg_authz_free(TgAuthz *authz)
{
  if (authz == NULL)
    return;
  g_clear_object(&authz->bus);
  g_clear_object(&authz->authority);
  pending_unref(authz->pending);
  if (nss_reserve_fd >= 0)
    close(g_steal_fd(&nss_reserve_fd));
  g_free(authz);
}

TgCall *
tg_call_new(GDBusMethodInvocation *invocation, TgAction action)
{
  TgCall *call = g_new0(TgCall, 1);

  call->invocation = invocation;
  call->required = action;
  return call;
}

TgCall *
tg_call_keep(TgCall *call)
{
  TgCall *kept = g_new(TgCall, 1);

  *kept = *call;
  memset(call, 0, sizeof *call);
  return kept;
}

void
tg_call_free(TgCall *call)
{
  g_clear_object(&call->invocation);
  g_clear_pointer(&call->caller, tg_caller_free);
  g_clear_pointer(&call->details, g_variant_unref);
  if (call->pending != NULL)
    pending_remove(call);
  if (call->free_data != NULL)
    call->free_data(call->data);
  g_free(call);
}

/* The state machine's context: the call plus what is still to check. */
typedef struct {
  TgAuthz *authz;
  TgCall *call;
  TgAction pending_required;
  TgAction pending_optional;
} TgAuthzRun;

static void authz_check_next(TgAuthzRun *run);

/* `rule`: the polkit action that refused, or why no action was asked. */
static void
authz_run_deny(TgAuthzRun *run, const char *method, const char *rule, GError *error)
{
  const TgCaller *caller = run->call->caller;

  g_autofree char *uid =
      caller != NULL ? g_strdup_printf("%u", (unsigned)caller->uid) : g_strdup("unknown");

  tg_log_event(
      G_LOG_LEVEL_MESSAGE, "AUTHZ_DENIED", "USER",
      caller != NULL && caller->user_name != NULL ? caller->user_name : "unknown", "UID",
      uid, "METHOD", method, "DECISION", "deny", "RULE", rule, "MESSAGE",
      "denied %s from %s (uid %s): %s", method,
      g_dbus_method_invocation_get_sender(run->call->invocation), uid, error->message);
  g_dbus_method_invocation_return_gerror(g_steal_pointer(&run->call->invocation), error);
  tg_call_free(run->call);
  g_free(run);
}

static void
authz_run_finish(TgAuthzRun *run)
{
  TgCall *call = run->call;
  TgAuthz *authz = run->authz;

  g_free(run);
  if (authz->authorized != NULL)
    authz->authorized(call->caller,
                      ((call->required | call->optional) & TG_ACTION_MANAGE) != 0,
                      (call->granted & TG_ACTION_MANAGE) != 0, authz->authorized_data);
  call->act(call);
  tg_call_free(call);
}

static gboolean
call_allows_interaction(TgCall *call)
{
  GDBusMessage *message = g_dbus_method_invocation_get_message(call->invocation);

  return (g_dbus_message_get_flags(message) &
          G_DBUS_MESSAGE_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION) != 0;
}

static TgAction
lowest_action(TgAction set)
{
  return set & (~set + 1);
}

static void
authz_polkit_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  TgAuthzRun *run = user_data;
  TgCall *call = run->call;
  const char *method = g_dbus_method_invocation_get_method_name(call->invocation);
  g_autoptr(GError) error = NULL;
  g_autoptr(PolkitAuthorizationResult) answer = NULL;
  gboolean checking_required = run->pending_required != 0;
  TgAction action =
      lowest_action(checking_required ? run->pending_required : run->pending_optional);

  answer = polkit_authority_check_authorization_finish(POLKIT_AUTHORITY(source), result,
                                                       &error);
  if (checking_required)
    run->pending_required &= ~action;
  else
    run->pending_optional &= ~action;

  if (answer != NULL && polkit_authorization_result_get_is_authorized(answer)) {
    call->granted |= action;
    authz_check_next(run);
    return;
  }
  if (!checking_required) { /* an optional action: simply not granted */
    authz_check_next(run);
    return;
  }

  g_autoptr(GError) denial = NULL;
  if (answer == NULL)
    denial = g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                         "Could not check %s with polkit, so it is denied: %s",
                         tg_action_id(action), error->message);
  else if (polkit_authorization_result_get_dismissed(answer))
    denial = g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                         "Authentication for %s was dismissed", tg_action_id(action));
  else if (polkit_authorization_result_get_is_challenge(answer) &&
           call_allows_interaction(call))
    denial = g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                         "%s needs authentication, and no polkit authentication agent "
                         "could ask you (start one, e.g. pkttyagent)",
                         tg_action_id(action));
  else if (polkit_authorization_result_get_is_challenge(answer))
    denial = g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                         "%s needs authentication, and this call does not allow "
                         "interactive authorization (for busctl: "
                         "--allow-interactive-authorization=yes)",
                         tg_action_id(action));
  else
    denial = g_error_new(
        TG_ERROR, TG_ERROR_NOT_AUTHORIZED, "User %s (uid %u) is not allowed %s by polkit",
        call->caller->user_name, (unsigned)call->caller->uid, tg_action_id(action));
  authz_run_deny(run, method, tg_action_id(action), denial);
}

static void
authz_check_next(TgAuthzRun *run)
{
  TgCall *call = run->call;
  gboolean required = run->pending_required != 0;
  TgAction action;
  PolkitCheckAuthorizationFlags flags = POLKIT_CHECK_AUTHORIZATION_FLAGS_NONE;
  g_autoptr(PolkitSubject) subject = NULL;
  g_autoptr(PolkitDetails) details = polkit_details_new();

  if (run->pending_required == 0 && run->pending_optional == 0) {
    authz_run_finish(run);
    return;
  }
  action = lowest_action(required ? run->pending_required : run->pending_optional);

  /* Only the caller may allow a password prompt, and never for an optional
   * action, whose refusal costs nothing. */
  if (required && call_allows_interaction(call))
    flags |= POLKIT_CHECK_AUTHORIZATION_FLAGS_ALLOW_USER_INTERACTION;

  if (call->details != NULL) {
    GVariantIter iter;
    const char *key, *value;

    g_variant_iter_init(&iter, call->details);
    while (g_variant_iter_next(&iter, "{&s&s}", &key, &value))
      polkit_details_insert(details, key, value);
  }

  subject = polkit_system_bus_name_new(call->caller->bus_name);
  polkit_authority_check_authorization(run->authz->authority, subject,
                                       tg_action_id(action), details, flags, NULL,
                                       authz_polkit_done, run);
}

static int
lookup_passwd(uid_t uid, struct passwd *pw, char *buffer, gsize size,
              struct passwd **found)
{
  int rc;

  errno = 0;
  rc = getpwuid_r(uid, pw, buffer, size, found);
  /* glibc may return 0 and leave the reason in errno when a backend could
   * not open its file; other errno values are no reason (not found) */
  if (*found == NULL && rc == 0 &&
      (errno == EMFILE || errno == ENFILE || errno == ENOMEM))
    return errno;
  return rc;
}

static gboolean
caller_fill_from_passwd(TgCaller *caller, GError **error)
{
  struct passwd pw, *found = NULL;
  char buffer[4096];
  int rc;

  rc = lookup_passwd(caller->uid, &pw, buffer, sizeof buffer, &found);
  /* glibc does not always say EMFILE: a backend that could not open its
   * file passes the question to the next, whose 'not found' is the answer;
   * so any miss is asked again once with the reserve free */
  if (found == NULL && nss_reserve_fd >= 0) {
    close(nss_reserve_fd);
    rc = lookup_passwd(caller->uid, &pw, buffer, sizeof buffer, &found);
    nss_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: next time */
  } else if (nss_reserve_fd == -1) {
    nss_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (found == NULL && rc != 0 && rc != ENOENT && rc != ESRCH) {
    /* not an answer but a failure to ask */
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Cannot look up the account of caller uid %u now: %s; try again",
                (unsigned)caller->uid, g_strerror(rc));
    return FALSE;
  }
  if (found == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                "Caller uid %u has no user account", (unsigned)caller->uid);
    return FALSE;
  }
  caller->gid = pw.pw_gid;
  caller->user_name = g_strdup(pw.pw_name);
  return TRUE;
}

static void
authz_identified(GObject *source, GAsyncResult *result, gpointer user_data)
{
  TgAuthzRun *run = user_data;
  TgCall *call = run->call;
  const char *method = g_dbus_method_invocation_get_method_name(call->invocation);
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) credentials = NULL;
  guint32 uid, pid;

  reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  if (reply != NULL)
    credentials = g_variant_get_child_value(reply, 0);
  if (credentials == NULL || !g_variant_lookup(credentials, "UnixUserID", "u", &uid) ||
      !g_variant_lookup(credentials, "ProcessID", "u", &pid)) {
    g_autoptr(GError) denial = g_error_new(
        TG_ERROR, TG_ERROR_NOT_AUTHORIZED, "Could not identify the caller%s%s",
        error != NULL ? ": " : "", error != NULL ? error->message : "");
    authz_run_deny(run, method, "unidentified caller", denial);
    return;
  }

  call->caller = g_new0(TgCaller, 1);
  call->caller->bus_name =
      g_strdup(g_dbus_method_invocation_get_sender(call->invocation));
  call->caller->uid = uid;
  call->caller->pid = pid;
  if (!caller_fill_from_passwd(call->caller, &error)) {
    authz_run_deny(run, method, "unidentified caller", error);
    return;
  }
  if (run->authz->limit != NULL &&
      !run->authz->limit(call->caller, pending_count(run->authz->pending, uid),
                         run->authz->pending->total, &error, run->authz->limit_data)) {
    tg_call_return_error(call, error);
    tg_call_free(call);
    g_free(run);
    return;
  }
  pending_add(call, run->authz->pending, uid);

  if (call->decide != NULL && !call->decide(call)) {
    /* decide() replied with its own error (tg_call_return_error) */
    tg_call_free(call);
    g_free(run);
    return;
  }
  run->pending_required = call->required;
  run->pending_optional = call->optional & ~call->required;
  authz_check_next(run);
}

void
tg_call_return_error(TgCall *call, const GError *error)
{
  g_autoptr(GError) printable = g_error_copy(error);

  tg_text_error_printable(printable); /* D-Bus strings are valid UTF-8 */
  g_dbus_method_invocation_return_gerror(g_steal_pointer(&call->invocation), printable);
}

void
tg_call_return_value(TgCall *call, GVariant *value)
{
  g_dbus_method_invocation_return_value(g_steal_pointer(&call->invocation), value);
}

void
tg_authz_run(TgAuthz *authz, TgCall *call)
{
  TgAuthzRun *run = g_new0(TgAuthzRun, 1);
  const char *sender = g_dbus_method_invocation_get_sender(call->invocation);

  run->authz = authz;
  run->call = call;
  if (sender == NULL) { /* peer-to-peer connection: nobody we can identify */
    g_autoptr(GError) denial = g_error_new_literal(
        TG_ERROR, TG_ERROR_NOT_AUTHORIZED, "Could not identify the caller: no sender");
    authz_run_deny(run, g_dbus_method_invocation_get_method_name(call->invocation),
                   "unidentified caller", denial);
    return;
  }
  g_dbus_connection_call(authz->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                         "org.freedesktop.DBus", "GetConnectionCredentials",
                         g_variant_new("(s)", sender), G_VARIANT_TYPE("(a{sv})"),
                         G_DBUS_CALL_FLAGS_NONE, -1, NULL, authz_identified, run);
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Authorization: who is calling, and does polkit let them do it?
 *
 * Every D-Bus method of the daemon passes through tg_authz_run(). A call is
 * processed as a small asynchronous state machine:
 *
 *   validate arguments (the method handler, before anything else)
 *     -> IDENTIFY: ask the bus for the sender's credentials
 *        (GetConnectionCredentials; the bus took them from SO_PEERCRED).
 *        No answer, no uid, or a uid without a passwd entry: deny.
 *     -> DECIDE: the handler's decide() names the actions the request needs,
 *        now that the caller is known (e.g. a tunnel the caller does not own
 *        needs org.tunnelgate.manage instead of org.tunnelgate.open).
 *     -> CHECK: polkit, subject = the sender's system-bus-name, one action
 *        after the other; interactive only when the message allows it.
 *        Any error talking to polkit: deny.
 *     -> ACT: the handler's act() runs with the caller and the granted set.
 *
 * Which action guards which method is one table, in authz.c. */
#pragma once

#include <gio/gio.h>
#include <polkit/polkit.h>
#include <sys/types.h>

typedef enum {
  TG_ACTION_NONE = 0,
  TG_ACTION_OPEN = 1 << 0,
  TG_ACTION_OPEN_REMOTE = 1 << 1,
  TG_ACTION_BIND_ANY = 1 << 2,
  TG_ACTION_USE_PROFILE = 1 << 3,
  TG_ACTION_MANAGE = 1 << 4,
} TgAction;

/* The caller as the bus daemon identified it. */
typedef struct {
  char *bus_name;
  uid_t uid;
  gid_t gid; /* primary group, from the passwd entry of uid */
  pid_t pid;
  char *user_name;
} TgCaller;

TgCaller *tg_caller_copy(const TgCaller *caller);
void tg_caller_free(TgCaller *caller);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgCaller, tg_caller_free)

typedef struct _TgCall TgCall;

struct _TgCall {
  GDBusMethodInvocation *invocation; /* owned; replied to exactly once */
  TgCaller *caller;                  /* set after IDENTIFY */
  TgAction required;                 /* all must be granted */
  TgAction optional;                 /* checked without interaction */
  TgAction granted;                  /* required | granted optional ones */
  GVariant *details;                 /* a{ss} for polkit rules, may be NULL */

  /* Refines required (set from the table by tg_call_new) and optional; may
   * reply with an error and return FALSE. NULL: the table's action alone. */
  gboolean (*decide)(TgCall *call);
  /* Performs the call; replies to the invocation. */
  void (*act)(TgCall *call);

  gpointer data;
  GDestroyNotify free_data;

  /* authz's own: the pending-call count this call is in, until freed */
  struct _TgAuthzPending *pending;
  uid_t pending_uid;
};

typedef struct _TgAuthz TgAuthz;

TgAuthz *tg_authz_new(GDBusConnection *bus, PolkitAuthority *authority);
/* Called for every authorized call just before it acts, with the caller and
 * whether manage was asked (required or optional) and granted. */
typedef void (*TgAuthorizedFunc)(const TgCaller *caller, gboolean manage_checked,
                                 gboolean manage_granted, gpointer user_data);
void tg_authz_set_authorized_func(TgAuthz *authz, TgAuthorizedFunc func,
                                  gpointer user_data);
/* MaxPendingCalls: asked for every identified call, with the calls of the
 * same uid and of everyone still being answered (this one not counted);
 * FALSE with @error (LimitExceeded) refuses it before anything else. */
typedef gboolean (*TgAuthzLimitFunc)(const TgCaller *caller, guint user_calls,
                                     guint all_calls, GError **error, gpointer user_data);
void tg_authz_set_limit_func(TgAuthz *authz, TgAuthzLimitFunc func, gpointer user_data);

/* Is @action still granted to the connection @bus_name, without asking
 * anyone (no interaction)? @func gets the answer (FALSE on any error). */
typedef void (*TgAuthzAnswerFunc)(const char *bus_name, gboolean allowed,
                                  gpointer user_data);
void tg_authz_check_quietly(TgAuthz *authz, const char *bus_name, TgAction action,
                            TgAuthzAnswerFunc func, gpointer user_data);
void tg_authz_free(TgAuthz *authz);

/* A row of the one table. `method` is the method name; Get and GetAll rows
 * (org.freedesktop.DBus.Properties) are listed under the interface whose
 * properties they read. */
typedef struct {
  const char *interface;
  const char *method;
  TgAction action;
} TgMethodAction;

/* The table itself (for tests: every method in dbus/ has a row). */
const TgMethodAction *tg_authz_table(gsize *n_rows);

/* The action guarding a method, from the one table. Returns FALSE for a
 * method that is not in the table: such a method must not be served. */
gboolean tg_authz_method_action(const char *interface, const char *method,
                                TgAction *action);

const char *tg_action_id(TgAction action);
/* The action with polkit id @id (one action, not NONE); FALSE for another id. */
gboolean tg_action_from_id(const char *id, TgAction *action);

/* Reply helpers for decide() and act(): each gives up the invocation. */
void tg_call_return_error(TgCall *call, const GError *error);
void tg_call_return_value(TgCall *call, GVariant *value);

/* A call that needs `action` (the method's row of the table, from
 * tg_authz_method_action()) before decide() refines it. Takes ownership of
 * the invocation reference. */
TgCall *tg_call_new(GDBusMethodInvocation *invocation, TgAction action);
/* For an act() that finishes later (it waits for something without blocking
 * the D-Bus thread): everything of @call moves to the returned call, which
 * the act then finishes with and frees with tg_call_free(). */
TgCall *tg_call_keep(TgCall *call);
void tg_call_free(TgCall *call);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgCall, tg_call_free)

/* Starts the state machine. */
void tg_authz_run(TgAuthz *authz, TgCall *call);

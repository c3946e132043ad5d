/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the D-Bus side of the daemon shares: the bus, the authorization gate,
 * the tunnels, and the settings from the command line. */
#pragma once

#include <gio/gio.h>

#include "authz.h"
#include "counters.h"
#include "enforcer.h"
#include "server.h"
#include "forward-spec.h"
#include "policy.h"
#include "tg-names.h"


typedef struct _TgTunnel TgTunnel;

typedef struct {
  GDBusConnection *bus;
  TgAuthz *authz;
  GDBusNodeInfo *introspection; /* Manager1, Tunnel1, ObjectManager */
  GHashTable *tunnels;          /* id (string) -> TgTunnel*, owned */
  guint64 next_tunnel_id;
  guint manager_registration;
  guint object_manager_registration;
  guint counters_timer;
  guint watchers_timer; /* re-checks the watchers' manage with polkit */

  TgPolicy *policy;     /* replaced as a whole on reload */
  TgEnforcer *enforcer; /* the firewall table, kept in step with the policy */
  TgServer *server;     /* server mode: SFTP-only and jump-host users */
  char *default_policy; /* the shipped default policy file */
  GHashTable *usage;    /* uid -> TgUsage*, per-user connection counts */
  GHashTable *watchers; /* unique bus name -> TgWatcher* (manager.c): who hears signals */
  GHashTable *resolving; /* uid -> its calls waiting for the resolver (> 0) */
  gboolean stopping;     /* SIGTERM: calls still in flight are refused at their end */

  char *config_dir;
  char *state_dir;
  char *system_known_hosts;
  guint connect_timeout_seconds;
} TgDaemon;

GDBusInterfaceInfo *tg_daemon_interface(TgDaemon *daemon, const char *name);

#define TG_MAX_FORWARDS_PER_TUNNEL 32
/* forwards ever added to one tunnel (removed ones keep their slot) */
#define TG_MAX_FORWARD_SLOTS (8 * TG_MAX_FORWARDS_PER_TUNNEL)

/* FALSE, with NotSupported, for a forward this version cannot serve yet. */
gboolean tg_daemon_forward_is_served(const TgForward *forward, GError **error);

/* The polkit actions a forward needs beyond org.tunnelgate.open:
 * open-remote for R, bind-any for a listener beyond loopback (also when
 * the policy's GatewayPorts yes makes it listen on all addresses). */
TgAction tg_daemon_forward_actions(TgDaemon *daemon, const TgPolicySubject *subject,
                                   const TgForward *forward);

/* The usage record of uid, created on first use; tg_usage_unref() it. */
TgUsage *tg_daemon_usage(TgDaemon *daemon, uid_t uid);

/* Signals about tunnels go only to connections that may read them: a
 * connection becomes a watcher with its first authorized call (which tells
 * its uid and whether org.tunnelgate.manage was granted) and stops being one
 * when it leaves the bus. A watcher hears about its uid's tunnels, and with
 * manage about everyone's; polkit is asked again (without interaction) every
 * TG_WATCHER_RECHECK_SECONDS whether it still has manage, so a one-shot or
 * expired grant, or a changed rule, ends it. */
#define TG_WATCHER_RECHECK_SECONDS 10

/* Emits @signal_name of @interface at @path with @parameters (consumed if
 * floating) to each watcher that may see tunnels of @owner. */
void tg_daemon_emit_to_watchers(TgDaemon *daemon, uid_t owner, const char *path,
                                const char *interface, const char *signal_name,
                                GVariant *parameters);

/* R destinations are resolved in a thread (getaddrinfo may take seconds):
 * at most TG_MAX_RESOLVING_PER_USER calls of one user at a time (a user
 * with names whose DNS never answers must not tie up the thread pool), and
 * the daemon waits for them before it exits. FALSE with LimitExceeded. */
#define TG_MAX_RESOLVING_PER_USER 4
gboolean tg_daemon_begin_resolving(TgDaemon *daemon, uid_t uid, GError **error);
void tg_daemon_end_resolving(TgDaemon *daemon, uid_t uid);
/* FALSE with Failed once the daemon is stopping: for calls that finish
 * after waiting (a resolver), which must not start anything then. */
gboolean tg_daemon_check_running(TgDaemon *daemon, GError **error);

/* The tunnel exported at path, or NULL. */
TgTunnel *tg_daemon_find_tunnel(TgDaemon *daemon, const char *path);

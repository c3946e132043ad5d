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

#define TG_BUS_NAME "org.tunnelgate.TunnelGate1"
#define TG_MANAGER_PATH "/org/tunnelgate/TunnelGate1"
#define TG_TUNNEL_PATH_PREFIX "/org/tunnelgate/TunnelGate1/tunnel/"
#define TG_MANAGER_INTERFACE "org.tunnelgate.Manager1"
#define TG_TUNNEL_INTERFACE "org.tunnelgate.Tunnel1"

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

  TgPolicy *policy;     /* replaced as a whole on reload */
  TgEnforcer *enforcer; /* the firewall table, kept in step with the policy */
  TgServer *server;     /* server mode: SFTP-only and jump-host users */
  char *default_policy; /* the shipped default policy file */
  GHashTable *usage;    /* uid -> TgUsage*, per-user connection counts */
  GHashTable *watchers; /* unique bus name -> TgWatcher*: who hears which signals */

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
 * manage about everyone's. */
typedef struct {
  uid_t uid;
  gboolean manage;
  guint name_watch; /* removes the watcher when its connection leaves */
} TgWatcher;

/* Emits @signal_name of @interface at @path with @parameters (consumed if
 * floating) to each watcher that may see tunnels of @owner. */
void tg_daemon_emit_to_watchers(TgDaemon *daemon, uid_t owner, const char *path,
                                const char *interface, const char *signal_name,
                                GVariant *parameters);

/* The tunnel exported at path, or NULL. */
TgTunnel *tg_daemon_find_tunnel(TgDaemon *daemon, const char *path);

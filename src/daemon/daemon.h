/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the D-Bus side of the daemon shares: the bus, the authorization
 * gate, the registry, the policy and the firewall in force, and the
 * settings from the command line. A plain context, built by main.c and
 * read by the daemon's modules, which own none of it; it declares no
 * functions, so that no module depends on another through it. */
#pragma once

#include <gio/gio.h>

#include "authz.h"
#include "enforcer.h"
#include "policy.h"
#include "registry.h"
#include "server.h"
#include "tg-names.h"

#define TG_MAX_FORWARDS_PER_TUNNEL 32
/* forwards ever added to one tunnel (removed ones keep their slot) */
#define TG_MAX_FORWARD_SLOTS (8 * TG_MAX_FORWARDS_PER_TUNNEL)

typedef struct {
  GDBusConnection *bus;
  TgAuthz *authz;
  TgRegistry *registry;         /* tunnels, usage, resolver quota, watchers */
  GDBusNodeInfo *introspection; /* Manager1, Tunnel1, ObjectManager */

  TgPolicy *policy;     /* replaced as a whole on reload */
  TgEnforcer *enforcer; /* the firewall table, kept in step with the policy */
  TgServer *server;     /* server mode: SFTP-only and jump-host users */
  char *default_policy; /* the shipped default policy file */

  /* profile names whose Autostart tunnel is being admitted (restore.c) */
  GHashTable *autostarting;

  char *config_dir;
  char *state_dir;
  char *system_known_hosts;
  guint connect_timeout_seconds;
} TgDaemon;

static inline GDBusInterfaceInfo *
tg_daemon_interface(TgDaemon *daemon, const char *name)
{
  return g_dbus_node_info_lookup_interface(daemon->introspection, name);
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A tunnel: one SSH session of one caller with its forwards, exported on the
 * bus as /org/tunnelgate/TunnelGate1/tunnel/<id> (org.tunnelgate.Tunnel1).
 * This file is the D-Bus face of a tunnel; session.c is its engine. */
#pragma once

#include <gio/gio.h>

#include "daemon.h"
#include "persist.h"
#include "policy.h"
#include "session.h"

typedef enum {
  TG_TUNNEL_CONNECTING,
  TG_TUNNEL_UP,
  TG_TUNNEL_RECONNECTING,
  TG_TUNNEL_FAILED,
  TG_TUNNEL_CLOSED,
} TgTunnelState;

/* The State property's text of @state. */
const char *tg_tunnel_state_name(TgTunnelState state);

typedef struct _TgTunnel TgTunnel;

/* Creates and exports a tunnel in state "connecting" (its id: config->tunnel_id,
 * from tg_registry_new_tunnel_id()), registers it, and starts its session.
 * open_invocation (owned; NULL for a tunnel the daemon opens by itself) is
 * answered when the tunnel is up or has failed. @granted: the polkit
 * actions the opener was granted, which bound what a reconnect re-admits
 * (with @check_actions FALSE, as for a profile's forwards, they are not
 * looked at). */
TgTunnel *tg_tunnel_open(TgDaemon *daemon, const TgCaller *owner,
                         TgPolicySubject *subject, const char *destination,
                         const char *description, gboolean bind_to_caller,
                         TgAction granted, gboolean check_actions,
                         TgSessionConfig *config, GDBusMethodInvocation *open_invocation);

/* Marks a tunnel started from an administrator's profile: AddForward on it
 * then needs org.tunnelgate.manage. */
void tg_tunnel_set_profile(TgTunnel *tunnel, const char *profile);

/* Marks a profile's tunnel opened by the profile's Autostart: Persistent
 * (announced), though not in the store: the profile opens it again. A
 * reload, or a reconnect, closes it once the profile no longer autostarts
 * it for its owner (Autostart no, another AutostartUser). */
void tg_tunnel_set_autostart(TgTunnel *tunnel);
/* The profile whose Autostart opened the tunnel, or NULL; *@running: its
 * session runs on (it has not failed and is not closing); *@failed: it
 * failed for good, and stays visible until it is closed. */
const char *tg_tunnel_get_autostart(TgTunnel *tunnel, gboolean *running,
                                    gboolean *failed);

/* Makes the tunnel persistent (Persistent TRUE, announced): @record (taken)
 * holds how to open it again; the tunnel fills in its forwards, listeners
 * and creation time and saves it in the store (persist.h) once it is up,
 * and again whenever its forwards change. The record is removed when the
 * tunnel ends (fails, or closes), except when the daemon is stopping: then
 * the tunnel is restored at the next start. A record with a creation time
 * (a restored tunnel) gives the tunnel its own: Created, and MaxLifetime,
 * count from the first open. */
void tg_tunnel_persist(TgTunnel *tunnel, TgPersistRecord *record);

/* A reload: the tunnel checks itself against the policy now in force as
 * if it were opened now, for @owner as NSS gives them now (NULL: the lookup
 * failed with @lookup_error): its profile, server and host key (or it
 * closes), each forward (a forbidden one is removed), its limits. FALSE
 * when it closed, and may be gone: the caller must not use it any more. */
gboolean tg_tunnel_recheck(TgTunnel *tunnel, const TgPolicySubject *owner,
                           const char *lookup_error);

/* Closes one forward's listeners and connections; the tunnel runs on, or
 * closes when no forward is left. Returns FALSE when the tunnel is gone
 * (freed) as a result: the caller must not use it any more. invocation
 * (may be NULL, taken) is answered once the listeners are closed. */
gboolean tg_tunnel_remove_forward(TgTunnel *tunnel, guint index, const char *reason,
                                  GDBusMethodInvocation *invocation);

/* The index of the live forward with this canonical spec, or G_MAXUINT. */
guint tg_tunnel_find_forward(TgTunnel *tunnel, const char *spec);
/* How many forwards the tunnel has now. */
guint tg_tunnel_count_forwards(TgTunnel *tunnel);

/* The policy's limits for this tunnel: MaxConnections, MaxLifetime,
 * IdleTimeout. Applied at open and after each reload. */
void tg_tunnel_apply_policy(TgTunnel *tunnel, const TgPolicy *policy);

const char *tg_tunnel_get_id(TgTunnel *tunnel);
const char *tg_tunnel_get_path(TgTunnel *tunnel);
uid_t tg_tunnel_get_owner(TgTunnel *tunnel);

/* Closes the tunnel; invocation (may be NULL, owned) gets an empty reply
 * once everything is closed and the listeners' ports are free. */
void tg_tunnel_close(TgTunnel *tunnel, const char *reason,
                     GDBusMethodInvocation *invocation);

/* Authorizes and performs CloseTunnel(path), which needs `action` (the
 * table's row): the same gate as Tunnel1.Close. */
/* Serves every tunnel path (/org/tunnelgate/TunnelGate1/tunnel/ID) on the
 * bus, existing or not; unregister with g_dbus_connection_unregister_subtree().
 * 0 with @error when the path is taken. */
guint tg_tunnel_register_subtree(TgDaemon *daemon, GError **error);

void tg_tunnel_authorize_close(TgDaemon *daemon, const char *path, TgAction action,
                               GDBusMethodInvocation *invocation);

/* (osussas) entry for ListTunnels. */
GVariant *tg_tunnel_summary(TgTunnel *tunnel);
/* {sa{sv}} interfaces and properties, as ObjectManager reports them. */
GVariant *tg_tunnel_interfaces(TgTunnel *tunnel);

/* The network changed (a route, an address, a link): a reconnecting tunnel
 * tries at once, one that is up is asked for a sign of life. */
void tg_tunnel_network_changed(TgTunnel *tunnel);
/* The system goes to sleep (@sleeping) or has resumed: a tunnel with
 * reconnect closes its session cleanly and waits for the resume, which
 * brings an attempt at once. */
void tg_tunnel_sleep(TgTunnel *tunnel, gboolean sleeping);
/* Nothing more to close before sleep: closed for it, or nothing to close
 * (no reconnect, or no session up). */
gboolean tg_tunnel_ready_for_sleep(TgTunnel *tunnel);

/* Emits PropertiesChanged for counters that moved since the last call. */
void tg_tunnel_publish_counters(TgTunnel *tunnel);

void tg_tunnel_free(TgTunnel *tunnel);

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's side of the firewall: turns the policy into the nftables
 * table (src/firewall.h) and keeps the table in step with the tunnels.
 * D-Bus thread only.
 *
 * The table is managed while the policy asks for any of EgressLockdown,
 * ListenerGuard or ConnectBackPinning. A policy that asks for it when the
 * table cannot be installed is an error (at start: the daemon does not
 * start; on reload: the reload is refused and the old policy stays). With
 * all three off the daemon removes its table. */
#pragma once

#include <glib.h>
#include <sys/socket.h>

#include "firewall.h"
#include "policy.h"

typedef struct _TgEnforcer TgEnforcer;

/* @may_own: let the table be owned by the daemon where the kernel can
 * (owner|persist, 6.9+); FALSE for --no-firewall-owner. */
TgEnforcer *tg_enforcer_new(gboolean may_own);
/* Closes the netlink sockets; the table stays in force (fail closed). */
void tg_enforcer_free(TgEnforcer *enforcer);

/* Installs, updates or removes the table for @policy. Structural changes
 * (ports, switches, logging) replace the table in one transaction and put
 * every current listener back; changed exemptions and servers are set
 * updates. PermitServer names are resolved in a thread afterwards and added
 * when the answers come (and again every 5 minutes). */
gboolean tg_enforcer_apply_policy(TgEnforcer *enforcer, const TgPolicy *policy,
                                  GError **error);

/* Whether the table is in force (Manager1.Enforcing). */
gboolean tg_enforcer_is_enforcing(const TgEnforcer *enforcer);
/* SO_MARK for the daemon's SSH sockets: 0 when no lockdown is in force. */
guint32 tg_enforcer_socket_mark(const TgEnforcer *enforcer);

/* The guard of the listener bound to @address (text) and @port, of tunnel
 * @tunnel_id owned by @owner_name. From other hosts: only @sources (not
 * guarded when bound to loopback, which other hosts cannot reach, or when
 * sources->any). From this host: only root and @local_uids (NULL: anyone).
 * Does nothing (TRUE) when the guard is off or there is nothing to guard. */
gboolean tg_enforcer_add_listener(TgEnforcer *enforcer, const char *address, guint16 port,
                                  const TgListenerSources *sources,
                                  const GArray *local_uids, const char *tunnel_id,
                                  const char *owner_name, GError **error);
/* Takes away the guard of tunnel @tunnel_id's listener on @address and @port. */
void tg_enforcer_remove_listener(TgEnforcer *enforcer, const char *address, guint16 port,
                                 const char *tunnel_id);

/* SO_MARK for connect-back sockets: the connect-back mark under
 * ConnectBackPinning, the daemon mark when the table is there without it,
 * 0 when no table is in force. */
guint32 tg_enforcer_connect_back_mark(const TgEnforcer *enforcer);

/* ConnectBackPinning: connect-back sockets may reach @address (a struct
 * sockaddr_in/in6 with its port). Counted: the same destination for two
 * forwards is one element, removed with the last. Nothing (TRUE) when
 * pinning is off. */
gboolean tg_enforcer_add_connect_back(TgEnforcer *enforcer,
                                      const struct sockaddr_storage *address,
                                      const char *tunnel_id, GError **error);
void tg_enforcer_remove_connect_back(TgEnforcer *enforcer,
                                     const struct sockaddr_storage *address);

/* Server mode: the uids whose sockets carry nothing (SFTP-only), the
 * jump-host uids with their allowed destinations, and every uid placed
 * (those and the unrestricted: the kernel drops the packets of the rest).
 * Kept across table replacements. _add_ adds uids placed since. */
gboolean tg_enforcer_set_server_users(TgEnforcer *enforcer,
                                      const TgFirewallServerUsers *users, GError **error);
gboolean tg_enforcer_add_server_users(TgEnforcer *enforcer,
                                      const TgFirewallServerUsers *users, GError **error);
/* Server mode: @func is called when the kernel reports packets of uids not
 * placed (tg_firewall_set_unknown_handler()), whatever table is in force. */
void tg_enforcer_set_unknown_handler(TgEnforcer *enforcer, TgFirewallUnknownFunc func,
                                     gpointer user_data);
/* Why the table's nflog group is not bound, or NULL. */
const char *tg_enforcer_get_log_error(const TgEnforcer *enforcer);
/* Server mode: the uids whose packets the kernel dropped as unknown lately
 * (guint32; empty when no table or no server mode). */
GArray *tg_enforcer_read_unknown_uids(TgEnforcer *enforcer, GError **error);

/* The live table for `tunnelgatectl firewall`. */
char *tg_enforcer_describe(TgEnforcer *enforcer);

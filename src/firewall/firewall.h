/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The firewall: one nftables table, `inet tunnelgate`, that makes the kernel
 * refuse forwarding the policy did not sanction (nft/README.md has the design).
 *
 * tg_firewall_new() replaces the whole table in one transaction; the per-tunnel
 * calls change set elements only, one batch each, independent of how many
 * tunnels exist. Freeing the object leaves the table in force (fail closed). */
#pragma once

#include <glib.h>

#include "policy-match.h"

/* Default socket marks (SO_MARK, needs CAP_NET_ADMIN): "TG" + 1 and + 2. */
#define TG_FIREWALL_DAEMON_MARK 0x54470001u
#define TG_FIREWALL_CONNECT_BACK_MARK 0x54470002u
#define TG_FIREWALL_LOG_PREFIX "tunnelgate-lockdown: "

/* An address or network: a TgNetwork as PermitServer and the listener sources
 * use it (family AF_INET/AF_INET6, prefix length, network-order bytes). */
typedef TgNetwork TgFirewallAddress;

typedef enum {
  TG_FIREWALL_OWNERSHIP_AUTO,  /* owner|persist when the kernel has it (≥ 6.9) */
  TG_FIREWALL_OWNERSHIP_NEVER, /* never own the table (others may edit; repair) */
} TgFirewallOwnership;

/* Server mode, jump hosts: @uid's new TCP connections may reach @network
 * (any prefix length) on ports @first_port to @last_port. */
typedef struct {
  guint32 uid;
  TgFirewallAddress network;
  guint16 first_port;
  guint16 last_port;
} TgFirewallJumpRule;

typedef struct {
  guint32 daemon_mark;       /* 0: TG_FIREWALL_DAEMON_MARK */
  guint32 connect_back_mark; /* 0: TG_FIREWALL_CONNECT_BACK_MARK */
  gboolean egress_lockdown;
  gboolean detect_ssh_banner;   /* with egress_lockdown: reset SSH client banners */
  const TgPortRange *ssh_ports; /* n_ssh_ports ranges, first >= 1 */
  gsize n_ssh_ports;
  const TgFirewallAddress *ssh_servers; /* PermitServer hosts, resolved */
  gsize n_ssh_servers;
  const guint32 *exempt_uids;
  gsize n_exempt_uids;
  gboolean listener_guard;
  gboolean connect_back_pinning;
  const char *log_prefix; /* NULL: no logging; else e.g. TG_FIREWALL_LOG_PREFIX */
  TgFirewallOwnership ownership;
  /* server mode: the sockets of SFTP-only uids carry nothing; jump-host
   * uids connect only to their rules' destinations */
  gboolean server_mode;
  const guint32 *sftp_only_uids;
  gsize n_sftp_only_uids;
  const guint32 *jump_uids;
  gsize n_jump_uids;
  const TgFirewallJumpRule *jump_rules;
  gsize n_jump_rules;
  /* every uid the daemon has placed (SFTP-only, jump host, or neither); uid
   * 0 always is. The packets of any other uid's sockets are dropped. */
  const guint32 *known_uids;
  gsize n_known_uids;
} TgFirewallConfig;

/* Server mode's users, for tg_firewall_set/add_server_users(). */
typedef struct {
  const guint32 *known_uids;
  gsize n_known_uids;
  const guint32 *sftp_only_uids;
  gsize n_sftp_only_uids;
  const guint32 *jump_uids;
  gsize n_jump_uids;
  const TgFirewallJumpRule *jump_rules;
  gsize n_jump_rules;
} TgFirewallServerUsers;

typedef struct {
  guint64 lockdown_packets;
  guint64 listener_packets;
  guint64 connect_back_packets;
  guint64 server_packets;
  guint64 owner_packets; /* local connections to another user's listener */
  guint64 unknown_packets; /* server mode: dropped until the uid is placed */
} TgFirewallCounters;

typedef struct _TgFirewall TgFirewall;

/* Validates the config, then installs the whole table in one batch (replacing an
 * old one, e.g. of a killed daemon). A kernel without nftables or a refused batch
 * is TG_ERROR_NOT_SUPPORTED / TG_ERROR_FAILED with the netlink error text. */
TgFirewall *tg_firewall_new(const TgFirewallConfig *config, GError **error);
/* Closes the sockets; the table stays in force. */
void tg_firewall_free(TgFirewall *firewall);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgFirewall, tg_firewall_free)

/* TRUE if the table carries owner|persist (nobody else can change it). */
gboolean tg_firewall_is_owner(const TgFirewall *firewall);

/* A daemon listener (L or D forward) on @address, or on every address of
 * @family when @address is NULL or the any-address, and @port.
 *
 * From other hosts (@guard_remote): new connections are reset unless they
 * come from one of the n_sources allowed addresses (full length). Set it
 * FALSE for a listener bound to loopback (other hosts cannot reach it) and
 * for one open to every source.
 * From this host (@guard_local): new connections are reset unless the
 * connecting socket belongs to one of the n_uids uids or to root; the
 * refusals are reported to the refusal handler. FALSE: any local user.
 *
 * Keyed by family, address and port: listeners on one port but different
 * addresses are independent. tunnel_id labels the elements for
 * tg_firewall_describe(). One batch. */
typedef struct {
  int family;
  const TgFirewallAddress *address;
  guint16 port;
  gboolean guard_remote;
  const TgFirewallAddress *sources;
  gsize n_sources;
  gboolean guard_local;
  const guint32 *uids;
  gsize n_uids;
  const char *tunnel_id;
} TgFirewallListener;

gboolean tg_firewall_add_listener(TgFirewall *firewall,
                                  const TgFirewallListener *listener, GError **error);
gboolean tg_firewall_remove_listener(TgFirewall *firewall, int family,
                                     const TgFirewallAddress *address, guint16 port,
                                     GError **error);

/* A local connection the kernel reset because its socket's owner may not
 * use the listener (guard_local): what the daemon learns from the table's
 * log group. */
typedef struct {
  int family;
  TgFirewallAddress source; /* full length */
  guint16 source_port;
  TgFirewallAddress destination;
  guint16 destination_port;
  gboolean has_uid;
  guint32 uid;
  const char *tunnel_id; /* of the listener, NULL if it is gone */
} TgFirewallRefusal;

typedef void (*TgFirewallRefusalFunc)(const TgFirewallRefusal *refusal,
                                      gpointer user_data);
/* Called in the context of tg_firewall_watch() for each refusal. */
void tg_firewall_set_refusal_handler(TgFirewall *firewall, TgFirewallRefusalFunc func,
                                     gpointer user_data);

/* The nflog group the owner rule and server mode's unknown-uid rule log to
 * (one per network namespace). */
#define TG_FIREWALL_LOG_GROUP 21575

/* A destination (full-length address, port) connect-back sockets may reach. */
gboolean tg_firewall_add_connect_back(TgFirewall *firewall,
                                      const TgFirewallAddress *address, guint16 port,
                                      const char *tunnel_id, GError **error);
gboolean tg_firewall_remove_connect_back(TgFirewall *firewall,
                                         const TgFirewallAddress *address, guint16 port,
                                         GError **error);

/* Replace the whole exempt uid / SSH server lists (policy reload). One batch. */
gboolean tg_firewall_set_exempt_uids(TgFirewall *firewall, const guint32 *uids,
                                     gsize n_uids, GError **error);
gboolean tg_firewall_update_servers(TgFirewall *firewall,
                                    const TgFirewallAddress *servers, gsize n_servers,
                                    GError **error);

/* Server mode: replace the known uids, the SFTP-only uids, the jump-host
 * uids and their rules (users or groups changed, or a reload). One batch. */
gboolean tg_firewall_set_server_users(TgFirewall *firewall,
                                      const TgFirewallServerUsers *users, GError **error);
/* Server mode: add uids placed since (they were unknown). One batch. */
gboolean tg_firewall_add_server_users(TgFirewall *firewall,
                                      const TgFirewallServerUsers *users, GError **error);
/* Server mode: called (in the context of tg_firewall_watch()) when the
 * kernel reports that it dropped packets of a uid not in the known set
 * (or reports may have been lost); tg_firewall_read_unknown_uids() says
 * which. */
typedef void (*TgFirewallUnknownFunc)(gpointer user_data);
void tg_firewall_set_unknown_handler(TgFirewall *firewall, TgFirewallUnknownFunc func,
                                     gpointer user_data);
/* Why the table's nflog group could not be bound by tg_firewall_watch(), or
 * NULL (bound, or not needed). */
const char *tg_firewall_get_log_error(const TgFirewall *firewall);
/* Server mode: the uids whose packets were dropped as unknown in the last
 * 30 s (the kernel forgets them then). guint32 array; empty without server
 * mode. */
GArray *tg_firewall_read_unknown_uids(TgFirewall *firewall, GError **error);

/* Tamper repair: watch nftables events in context (NULL: the default one);
 * changes by others are undone (full re-install) within ~100 ms and logged. */
gboolean tg_firewall_watch(TgFirewall *firewall, GMainContext *context, GError **error);
/* Number of repairs done since tg_firewall_new(). */
guint tg_firewall_get_repair_count(const TgFirewall *firewall);

/* Reads the kernel's counters. */
gboolean tg_firewall_read_counters(TgFirewall *firewall, TgFirewallCounters *counters,
                                   GError **error);
/* Text listing of the state (for `tunnelgatectl firewall`), tunnel per element. */
char *tg_firewall_describe(TgFirewall *firewall);

/* Deletes the table (tests, uninstall). Not needed to stop the daemon. */
gboolean tg_firewall_remove_table(GError **error);

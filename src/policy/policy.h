/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The organisation policy: what may be forwarded (doc/policy.md).
 *
 * A TgPolicy is loaded once from the files in precedence order, then never
 * changes: reloading builds a new one, and the daemon swaps pointers. Any
 * number of threads may query one policy at once (worker threads check each
 * SOCKS request). Every answer names the keyword, file and line that
 * decided it.
 *
 * The code is split by concept:
 *   config-tokenizer.c  the sshd_config-style lines and words (also profiles)
 *   policy-match.c      host/port patterns, the allow-list index, user and
 *                       group pattern lists
 *   policy-parser.c     keywords and values, Match blocks, file order
 *   policy-sshd.c       SftpOnly as sshd Match conditions (server mode)
 *   policy.c            which value applies to whom, decisions, the dump
 *   policy-subject.c    who the caller is, from NSS (the only impure part) */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "forward-spec.h"
#include "policy-match.h"

typedef struct _TgPolicy TgPolicy;

/* ---- Loading ------------------------------------------------------------ */

/* Reads @dropin_dir/ *.conf in lexical order, then @main_file, then
 * @default_file (drop-ins win). Missing files and a missing directory are
 * fine (none at all gives the built-in defaults); an unreadable or broken
 * one is TG_ERROR_INVALID_ARGUMENT naming file and line. Any may be NULL. */
TgPolicy *tg_policy_load(const char *default_file, const char *main_file,
                         const char *dropin_dir, GError **error);

/* tg_policy_load() with the installed locations: TG_DATADIR/policy.conf,
 * TG_SYSCONFDIR/policy.conf and TG_SYSCONFDIR/policy.d. */
TgPolicy *tg_policy_load_system(GError **error);

/* Exactly these files, the first winning; every one must exist. */
TgPolicy *tg_policy_load_files(const char *const *files, GError **error);

/* One policy file's text; @name stands for the file in messages.
 * @length -1: @text is NUL-terminated. */
TgPolicy *tg_policy_parse_string(const char *name, const char *text, gssize length,
                                 GError **error);

TgPolicy *tg_policy_ref(TgPolicy *policy);
void tg_policy_unref(TgPolicy *policy);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgPolicy, tg_policy_unref)

/* The files read, in precedence order (the PolicyFiles property). */
const char *const *tg_policy_get_files(const TgPolicy *policy);

/* "file:line: message" for lines that were ignored or have no effect yet,
 * in file and line order (at most 1000, then a count); empty (not NULL)
 * when there are none. */
const char *const *tg_policy_get_warnings(const TgPolicy *policy);

/* `tunnelgatectl check-policy [FILE...]`, like `sshd -t`: @files (NULL or
 * empty for the installed locations) are loaded; on success *report holds
 * the warnings, one per line (empty when there are none). */
gboolean tg_policy_validate(const char *const *files, char **report, GError **error);

/* ---- Who asks ----------------------------------------------------------- */

typedef struct {
  char *user;
  uid_t uid;
  char **groups; /* every group name, primary first; NULL-terminated */
} TgPolicySubject;

TgPolicySubject *tg_policy_subject_new(const char *user, uid_t uid,
                                       const char *const *groups);
/* From NSS: getpwuid_r, getgrouplist, getgrgid_r. Groups without a name
 * are left out. TG_ERROR_NOT_FOUND for a uid NSS says has no account,
 * TG_ERROR_FAILED when NSS could not answer. */
TgPolicySubject *tg_policy_subject_from_uid(uid_t uid, GError **error);
/* NULL for NULL. */
TgPolicySubject *tg_policy_subject_copy(const TgPolicySubject *subject);
void tg_policy_subject_free(TgPolicySubject *subject);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgPolicySubject, tg_policy_subject_free)

/* In every function below, a NULL subject is a caller no "Match User" or
 * "Match Group" applies to ("Match All" still does). */

/* ---- Decisions ---------------------------------------------------------- */

typedef struct {
  gboolean allowed;
  const char *keyword; /* "PermitOpen": the keyword that decided */
  char *file;          /* "<default>" for a built-in default */
  guint line;          /* 0 for a built-in default */
  char *reason;        /* "PermitOpen at /etc/tunnelgate/policy.conf:12 does not
                        * allow db.corp:5433" */
} TgPolicyDecision;

void tg_policy_decision_free(TgPolicyDecision *decision);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgPolicyDecision, tg_policy_decision_free)

/* The POLICY_DECISION event of every decision (journal fields USER, UID,
 * TUNNEL_ID, FORWARD = @what was decided, DECISION, RULE = file:line
 * Keyword): "policy allows|denies WHAT for USER (uid N): REASON". */
void tg_policy_log_decision(const TgPolicySubject *subject, const char *tunnel_id,
                            const char *what, const TgPolicyDecision *decision);

/* TRUE when allowed; else sets TG_ERROR_POLICY_DENIED with the reason
 * (TG_ERROR_LIMIT_EXCEEDED for MaxTunnels and MaxConnections). */
gboolean tg_policy_decision_to_error(const TgPolicyDecision *decision, GError **error);

/* PermitServer: may a tunnel go to the SSH server @host:@port? */
TgPolicyDecision *tg_policy_check_server(const TgPolicy *policy,
                                         const TgPolicySubject *subject, const char *host,
                                         guint16 port);

/* Everything about one forward, checked in this order, the first denial
 * deciding (else the last check names the allowing rule):
 *   L: AllowTcpForwarding/AllowStreamLocalForwarding (local), GatewayPorts
 *      (TCP listener), PermitOpen (TCP destination);
 *   R: AllowTcpForwarding/AllowStreamLocalForwarding (remote),
 *      AllowDynamicForwarding (remote dynamic), PermitListen (TCP listener),
 *      PermitRemoteOpen (TCP destination);
 *   D: AllowDynamicForwarding, AllowTcpForwarding (local), GatewayPorts.
 * A forward with a TCP end needs AllowTcpForwarding, one with a Unix socket
 * end needs AllowStreamLocalForwarding, a mixed one needs both. */
TgPolicyDecision *tg_policy_check_forward(const TgPolicy *policy,
                                          const TgPolicySubject *subject,
                                          const TgForward *forward);

/* PermitOpen, for each request on a D (SOCKS) listener. */
TgPolicyDecision *tg_policy_check_socks_destination(const TgPolicy *policy,
                                                    const TgPolicySubject *subject,
                                                    const char *host, guint16 port);

/* PermitRemoteOpen, for each request on a remote dynamic forward ("R port"),
 * where the daemon opens the connection. */
TgPolicyDecision *tg_policy_check_remote_open(const TgPolicy *policy,
                                              const TgPolicySubject *subject,
                                              const char *host, guint16 port);

/* ServerPermitOpen (server mode): may @subject's own SSH sessions on this
 * host forward to @host:@port, matched as PermitOpen matches (names as
 * written, addresses as addresses)? The daemon enforces ServerPermitOpen in
 * the kernel, from tg_policy_get_server_permit_open(); this answers the
 * same question for one destination (logs, tests, tunnelgatectl). */
TgPolicyDecision *tg_policy_check_server_permit_open(const TgPolicy *policy,
                                                     const TgPolicySubject *subject,
                                                     const char *host, guint16 port);

/* ---- Values ------------------------------------------------------------- */

/* Where a value came from; strings belong to the policy. */
typedef struct {
  const char *keyword;
  const char *file; /* "<default>" */
  guint line;       /* 0 for a built-in default */
} TgPolicyOrigin;

typedef enum {
  TG_GATEWAY_PORTS_NO,
  TG_GATEWAY_PORTS_YES,
  TG_GATEWAY_PORTS_CLIENT_SPECIFIED,
} TgGatewayPorts;

TgGatewayPorts tg_policy_get_gateway_ports(const TgPolicy *policy,
                                           const TgPolicySubject *subject,
                                           TgPolicyOrigin *origin);

/* TRUE when the daemon should listen on all addresses for @forward: an L or
 * D forward without a bind address under GatewayPorts yes (as ssh -g).
 * Such a listener also needs polkit's org.tunnelgate.bind-any. */
gboolean tg_policy_forward_listens_on_all_addresses(const TgPolicy *policy,
                                                    const TgPolicySubject *subject,
                                                    const TgForward *forward);

/* ListenerSources: which remote sources may connect to @subject's L and D
 * listeners when GatewayPorts lets one bind beyond loopback (the firewall's
 * ListenerGuard enforces it; loopback is always allowed). */
typedef struct {
  gboolean any; /* no restriction */
  /* TgNetwork (policy-match.h), full-length prefix; empty for none; NULL
   * when any */
  const GArray *addresses;
  TgPolicyOrigin origin;
} TgListenerSources;

/* Fills @sources; its pointers belong to the policy. Addresses are in file
 * order, each once; IPv4-mapped IPv6 addresses are stored as IPv4 (as
 * TgHostQuery does). */
void tg_policy_get_listener_sources(const TgPolicy *policy,
                                    const TgPolicySubject *subject,
                                    TgListenerSources *sources);

/* ListenerUsers: which local users may connect to @subject's L and D
 * listeners besides their owner (and root, whom nothing on this host can
 * keep out). The firewall resets the others' connections (ListenerGuard),
 * and the daemon checks each accepted local peer's uid as well. */
typedef struct {
  gboolean any; /* every local user */
  /* "user:NAME" and "group:NAME" entries (char*), in file order; NULL when
   * any, empty for the owner alone */
  const GPtrArray *principals;
  TgPolicyOrigin origin;
} TgListenerUsers;

/* Fills @users; its pointers belong to the policy. */
void tg_policy_get_listener_users(const TgPolicy *policy, const TgPolicySubject *subject,
                                  TgListenerUsers *users);

/* Every PermitServer entry of every block (global sections, Match blocks,
 * the built-in default), in precedence order, each pattern once per entry;
 * @any is set when some block allows any server ("any" or "*").
 *
 * Precisely: the blocks whose value can apply to someone, as
 * tg_policy_check_server() finds them: every Match block that sets
 * PermitServer, in order; then the first global line (later global lines
 * are ignored, with a warning, and are left out); the built-in default
 * ("any") only when no global line sets PermitServer. A "*" entry is passed
 * to @func too (TG_HOST_PATTERN_ANY). Ports of entries are in the patterns;
 * @any may be NULL. For the firewall's server set, which holds addresses:
 * NAME patterns are resolved by the caller, NETWORK patterns used as they
 * are, and SUFFIX, GLOB and ANY patterns cannot be listed there. */
void tg_policy_foreach_server(const TgPolicy *policy,
                              void (*func)(const TgHostPattern *pattern,
                                           gpointer user_data),
                              gpointer user_data, gboolean *any);

typedef enum {
  TG_POLICY_MAX_TUNNELS,
  TG_POLICY_MAX_CONNECTIONS,
  TG_POLICY_MAX_LIFETIME, /* seconds */
  TG_POLICY_IDLE_TIMEOUT, /* seconds */
  TG_POLICY_MAX_LISTENERS,
  TG_POLICY_MAX_BUFFERED, /* bytes */
  TG_POLICY_MAX_PENDING_CALLS,
  /* global-only: for the whole daemon (any subject gives the same) */
  TG_POLICY_DAEMON_MAX_TUNNELS,
  TG_POLICY_DAEMON_MAX_LISTENERS,
  TG_POLICY_DAEMON_MAX_CONNECTIONS,
  TG_POLICY_DAEMON_MAX_BUFFERED, /* bytes */
  TG_POLICY_DAEMON_MAX_PENDING_CALLS,
  /* attempts to reconnect after each loss (a tunnel with reconnect) */
  TG_POLICY_MAX_RECONNECT_ATTEMPTS,
} TgPolicyLimitKind;

typedef struct {
  gboolean limited; /* FALSE: "none" */
  guint64 value;    /* a count, or seconds */
  TgPolicyOrigin origin;
} TgPolicyLimit;

void tg_policy_get_limit(const TgPolicy *policy, const TgPolicySubject *subject,
                         TgPolicyLimitKind kind, TgPolicyLimit *limit);

/* A count limit (every kind but MaxLifetime and IdleTimeout): may
 * @subject have one more, having @in_use already? A denial names the
 * keyword, its value and where it is set; tg_policy_decision_to_error()
 * makes it LimitExceeded, not PolicyDenied. */
TgPolicyDecision *tg_policy_check_count_limit(const TgPolicy *policy,
                                              const TgPolicySubject *subject,
                                              TgPolicyLimitKind kind, guint64 in_use);
/* The same for @more at once (listeners of a new tunnel, bytes). */
TgPolicyDecision *tg_policy_check_amount_limit(const TgPolicy *policy,
                                               const TgPolicySubject *subject,
                                               TgPolicyLimitKind kind, guint64 in_use,
                                               guint64 more);

/* MaxLifetime or IdleTimeout ran out for a tunnel of @subject: the denial
 * that ends it ("IdleTimeout 300s at policy.conf:4 ends the tunnel"). */
TgPolicyDecision *tg_policy_limit_reached(const TgPolicy *policy,
                                          const TgPolicySubject *subject,
                                          TgPolicyLimitKind kind);

typedef enum {
  TG_HOST_KEY_POLICY_KNOWN_OR_PINNED,
  TG_HOST_KEY_POLICY_STRICT,
  TG_HOST_KEY_POLICY_PINNED_ONLY,
} TgHostKeyPolicy;

TgHostKeyPolicy tg_policy_get_host_key_policy(const TgPolicy *policy,
                                              const TgPolicySubject *subject,
                                              TgPolicyOrigin *origin);

/* HostKeyPolicy for a tunnel with a pinned host key or without (@pinned):
 * only pinned-only refuses, a tunnel without a pin. */
TgPolicyDecision *tg_policy_check_host_key(const TgPolicy *policy,
                                           const TgPolicySubject *subject,
                                           gboolean pinned);

/* ---- The firewall; server mode ------------------------------------------ */

typedef struct {
  gboolean egress_lockdown;
  const GArray *ssh_ports; /* TgPortRange (policy-match.h), at least one */
  gboolean listener_guard;
  gboolean connect_back_pinning;
  gboolean detect_ssh_banner;
  gboolean log_rejections;
  /* Server mode (doc/policy.md, "Server mode"); paths are absolute. */
  gboolean server_mode;
  const char *sshd_config;  /* SshdConfig: sshd's main configuration file */
  const char *sshd_binary;  /* SshdBinary: the sshd run for -t and -T */
  const char *sshd_drop_in; /* SshdDropIn: the file the daemon writes */
  gboolean sshd_reload;     /* SshdReload: SIGHUP sshd after writing it */
} TgPolicyGlobals;

/* The global-only keywords; owned by the policy. */
const TgPolicyGlobals *tg_policy_get_globals(const TgPolicy *policy);

gboolean tg_policy_is_lockdown_exempt(const TgPolicy *policy,
                                      const TgPolicySubject *subject,
                                      TgPolicyOrigin *origin);

/* SftpOnly (server mode): no forwarding of any kind for @subject's SSH
 * sessions on this host. */
gboolean tg_policy_is_sftp_only(const TgPolicy *policy, const TgPolicySubject *subject,
                                TgPolicyOrigin *origin);

/* SftpOnly as sshd sees it: the conditions of sshd_config Match lines
 * ("Group sftp User \"*,!bob\"", or "All") under which SftpOnly is yes,
 * in order, for the server-mode drop-in. Match blocks with "SftpOnly no"
 * before a yes block become negated lists in its lines, so sshd matches
 * exactly the users the policy marks, whatever NSS source they come from
 * and without listing them. What cannot be written for sshd (a name with
 * '"' or a control character, too many lines) is left out, and @notes
 * gets a "file:line: ..." text for it. */
GPtrArray *tg_policy_sftp_only_sshd_matches(const TgPolicy *policy, GPtrArray *notes);

/* @text as one word of an sshd_config Match line (quoted when needed), or
 * NULL when sshd cannot read it back. */
char *tg_policy_sshd_word(const char *text);

/* A user or group pattern of a Match block that sets SftpOnly or
 * ServerPermitOpen. */
typedef struct {
  gboolean group;    /* Match Group (else Match User) */
  gboolean negated;  /* written "!name" */
  gboolean wildcard; /* has '*' or '?' */
  char *name;        /* without the '!' */
  const char *file;  /* owned by the policy */
  guint line;
} TgPolicyServerName;

/* Every such pattern, in policy order (TgPolicyServerName*, owned by the
 * array). */
GPtrArray *tg_policy_server_names(const TgPolicy *policy);

/* An allow-list as its effective value for one subject. */
typedef struct {
  gboolean any;             /* "any" (the default): no restriction */
  gboolean none;            /* "none": no forwarding destination at all */
  const GPtrArray *entries; /* const TgHostPattern* (policy-match.h), in order; NULL for
                             * any/none */
  TgPolicyOrigin origin;
} TgPolicyHostList;

/* ServerPermitOpen (server mode): the destinations @subject's new TCP
 * connections on this host may reach, for the firewall, which enforces it;
 * fills @list, whose pointers belong to the policy. The value is that of the
 * first matching Match block that sets it, else of the first global line,
 * else the default "any"; its entries are all that block's lines', in file
 * order (the origin names the first line). Each entry is a TgHostPattern
 * with a port range (ports; "*" is 0-65535, else no port 0) and of kind
 * TG_HOST_PATTERN_NAME (to be resolved by the caller) or
 * TG_HOST_PATTERN_NETWORK (used as it is: a single address has a
 * full-length prefix; IPv4-mapped IPv6 is stored as IPv4); the parser
 * refuses wildcards here. Neither @any nor @none: at least one entry. */
void tg_policy_get_server_permit_open(const TgPolicy *policy,
                                      const TgPolicySubject *subject,
                                      TgPolicyHostList *list);

/* ---- The effective policy ----------------------------------------------- */

/* Every keyword with the value that applies to @subject, one per line,
 * keyword in lower case, in the order of doc/policy.md (as `sshd -T`). With
 * @with_origins, each line ends with "  # file:line". */
char *tg_policy_dump_effective(const TgPolicy *policy, const TgPolicySubject *subject,
                               gboolean with_origins);

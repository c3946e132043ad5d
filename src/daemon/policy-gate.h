/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The organisation policy as the daemon applies it: the checks OpenTunnel
 * and CheckForward make after polkit agreed, the audit event of every
 * decision, and ReloadPolicy (SIGHUP) with its re-check of open tunnels.
 * The policy engine itself (policy.c) is pure; this is its use. */
#pragma once

#include "daemon.h"
#include "session.h"
#include "forward-spec.h"
#include "hostkey.h"
#include "profile.h"

/* A profile's AllowUsers/AllowGroups for @subject (logged; PolicyDenied
 * naming the profile's file, line and keyword). */
gboolean tg_gate_check_profile(const TgPolicySubject *subject, const char *tunnel_id,
                               const TgProfile *profile, GError **error);

/* Everything the policy says about a tunnel about to open: the server
 * (PermitServer), each forward, MaxTunnels, and HostKeyPolicy against the
 * pin. Logs each decision. On denial sets PolicyDenied or LimitExceeded. */
gboolean tg_gate_check_open(TgDaemon *daemon, const TgPolicySubject *subject,
                            const char *tunnel_id, const char *host, guint16 port,
                            GPtrArray *forwards, const char *pinned_host_key,
                            TgHostKeyMode *host_key_mode, GError **error);

/* A forward to add to the running tunnel tunnel_id of subject (AddForward):
 * the policy for that forward, logged; PolicyDenied on denial. */
gboolean tg_gate_check_new_forward(TgDaemon *daemon, const TgPolicySubject *subject,
                                   const char *tunnel_id, const TgForward *forward,
                                   GError **error);

/* One forward, as CheckForward answers it: the server, then the forward. */
TgPolicyDecision *tg_gate_check_forward(TgDaemon *daemon, const TgPolicySubject *subject,
                                        const char *host, guint16 port,
                                        const TgForward *forward);

/* Newly bound listeners of @subject's tunnel @tunnel_id: each gets the
 * sources ListenerSources allows (checked on accept) and its element in the
 * firewall's listener guard. On error none of them is guarded. */
gboolean tg_gate_guard_listeners(TgDaemon *daemon, const TgPolicySubject *subject,
                                 GPtrArray *listeners, const char *tunnel_id,
                                 GError **error);
/* The guard of a listener that closed (bound to @address, @port). */
void tg_gate_unguard_listener(TgDaemon *daemon, const char *address, guint16 port);

/* R: where the forward's connections go, resolved now: it blocks, so the
 * daemon calls it in a thread (tg_gate_resolve_connect_backs() below).
 * InvalidArgument naming the forward when it does not resolve. */
TgConnectBack *tg_gate_resolve_connect_back(const TgForward *forward, guint index,
                                            GError **error);

/* The destinations of @forwards' R forwards that the policy allows
 * @subject, resolved in a thread: getaddrinfo() may take seconds, and the
 * D-Bus thread must not wait for it. @done runs in the calling thread's
 * main context; the caller keeps @forwards unchanged until then and takes
 * the results with tg_resolved_take() (@resolved is freed after @done). */
typedef struct _TgResolved TgResolved;
typedef void (*TgResolvedFunc)(TgResolved *resolved, gpointer user_data);
void tg_gate_resolve_connect_backs(TgDaemon *daemon, const TgPolicySubject *subject,
                                   GPtrArray *forwards, TgResolvedFunc done,
                                   gpointer user_data);
/* The connect-back of the R forward at @position, as forward @index; NULL
 * with the resolver's error, or NotAuthorized when it was not resolved
 * because the policy did not allow it then (it changed during the call). */
TgConnectBack *tg_resolved_take(TgResolved *resolved, guint position, guint index,
                                GError **error);
void tg_resolved_free(TgResolved *resolved);

/* ConnectBackPinning: the kernel lets connect-back sockets reach exactly
 * these addresses (all or none are pinned). */
gboolean tg_gate_pin_connect_back(TgDaemon *daemon, const TgConnectBack *connect_back,
                                  const char *tunnel_id, GError **error);
void tg_gate_unpin_connect_back(TgDaemon *daemon, const TgConnectBack *connect_back);

/* Loads the policy files; on success replaces the daemon's policy and
 * re-checks every tunnel: tunnels whose server the new policy forbids are
 * closed, forbidden forwards are removed from the others; the firewall
 * follows the new policy. On error (a broken file, or a firewall the new
 * policy asks for that cannot be installed) nothing changes and the error
 * says why. */
gboolean tg_gate_reload(TgDaemon *daemon, GError **error);

/* The policy files the daemon reads, in precedence order. */
TgPolicy *tg_gate_load(TgDaemon *daemon, GError **error);

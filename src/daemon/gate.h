/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The gate: the organisation policy and the firewall as the daemon applies
 * them to a caller's request. Each decision is logged as a POLICY_DECISION
 * event naming its rule and turned into the D-Bus error of a denial; the
 * firewall elements of a forward (listener guard, connect-back pins) are
 * put and taken here. The policy engine itself (src/policy) is pure; this
 * is its use. D-Bus thread only; it knows nothing of tunnels. */
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

/* PermitServer for @host:@port (logged; PolicyDenied naming the rule). */
gboolean tg_gate_check_server(TgDaemon *daemon, const TgPolicySubject *subject,
                              const char *tunnel_id, const char *host, guint16 port,
                              GError **error);
/* MaxTunnels against @subject's open tunnels, for one more (logged;
 * LimitExceeded). */
gboolean tg_gate_check_tunnel_count(TgDaemon *daemon, const TgPolicySubject *subject,
                                    const char *tunnel_id, GError **error);
/* HostKeyPolicy for a tunnel with (@pinned) or without a pinned key
 * (logged); @mode (may be NULL) gets the verification the worker does. */
/* MaxPendingCalls and DaemonMaxPendingCalls (a TgAuthzLimitFunc; user_data
 * is the daemon): denials are logged. */
gboolean tg_gate_check_pending_calls(const TgCaller *caller, guint user_calls,
                                     guint all_calls, GError **error, gpointer user_data);

/* DaemonMaxTunnels: one more tunnel of anyone's (logged). */
gboolean tg_gate_check_daemon_tunnel_count(TgDaemon *daemon,
                                           const TgPolicySubject *subject,
                                           const char *tunnel_id, GError **error);
/* MaxListeners and DaemonMaxListeners: @more listening sockets, with
 * @user_listeners of @subject's and @daemon_listeners in all (logged). */
gboolean tg_gate_check_listener_count(TgDaemon *daemon, const TgPolicySubject *subject,
                                      const char *tunnel_id, guint user_listeners,
                                      guint daemon_listeners, guint more, GError **error);

gboolean tg_gate_check_host_key(TgDaemon *daemon, const TgPolicySubject *subject,
                                const char *tunnel_id, gboolean pinned,
                                TgHostKeyMode *mode, GError **error);

/* A forward to add to the running tunnel tunnel_id of subject (AddForward):
 * the policy for that forward, logged; PolicyDenied on denial. */
gboolean tg_gate_check_new_forward(TgDaemon *daemon, const TgPolicySubject *subject,
                                   const char *tunnel_id, const TgForward *forward,
                                   GError **error);

/* One forward, as CheckForward answers it: the server, then the forward. */
TgPolicyDecision *tg_gate_check_forward(TgDaemon *daemon, const TgPolicySubject *subject,
                                        const char *host, guint16 port,
                                        const TgForward *forward);

/* Newly bound listeners of @subject's tunnel @tunnel_id (owned by uid
 * @owner): each gets the sources ListenerSources allows and the local users
 * ListenerUsers allows (both checked on accept) and its elements in the
 * firewall's listener guard. On error none of them is guarded. */
gboolean tg_gate_guard_listeners(TgDaemon *daemon, const TgPolicySubject *subject,
                                 uid_t owner, GPtrArray *listeners, const char *tunnel_id,
                                 GError **error);
/* The guard of tunnel @tunnel_id's listener that closed (@address, @port). */
void tg_gate_unguard_listener(TgDaemon *daemon, const char *address, guint16 port,
                              const char *tunnel_id);

/* ConnectBackPinning: the kernel lets connect-back sockets reach exactly
 * these addresses (all or none are pinned). */
gboolean tg_gate_pin_connect_back(TgDaemon *daemon, const TgConnectBack *connect_back,
                                  const char *tunnel_id, GError **error);
void tg_gate_unpin_connect_back(TgDaemon *daemon, const TgConnectBack *connect_back);

/* The policy files the daemon reads, in precedence order. */
TgPolicy *tg_gate_load(TgDaemon *daemon, GError **error);

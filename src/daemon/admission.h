/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Forward admission: the one path by which forwards get into a tunnel, for
 * OpenTunnel (all of a new tunnel's forwards), AddForward (one more) and a
 * reconnect (a tunnel's forwards again: tg_admission_set_readmission()). One
 * transaction, in this order:
 *
 *   RESOLVE  the R destinations the policy allows, in a thread (at most
 *            TG_MAX_RESOLVING_PER_USER calls of one uid at a time)
 *   RUNNING  the daemon is not stopping, and the caller's still_wanted()
 *            agrees (e.g. the tunnel still runs); it also says where the
 *            forwards go (tg_admission_set_first_index())
 *   ACTIONS  no forward needs a polkit action beyond those granted (a reload
 *            while polkit was asked may have widened what one needs)
 *   POLICY   the server and host key (tg_admission_set_server()), each
 *            forward, and MaxTunnels for a new tunnel; every decision logged
 *   BIND     the L and D listeners (Unix sockets: by the worker, as the owner)
 *   GUARD    each listener's element in the firewall's listener guard
 *   PIN      each R destination's connect-back elements
 *
 * A step that fails rolls back all the others did, in one place: pins and
 * guards removed, listeners closed, the resolver slot given back. Then
 * done() gets the error. On success, done() gets NULL and the caller takes
 * the listeners and connect-backs; their firewall elements are then the
 * caller's to remove (tg_gate_unguard_listener(), tg_gate_unpin_connect_back()).
 *
 * Requires: the D-Bus thread. The admission is the caller's: it frees it
 * (after done(), never before) with tg_admission_free(), which rolls back
 * whatever was not taken. */
#pragma once

#include "daemon.h"
#include "session.h"

typedef struct _TgAdmission TgAdmission;

/* The steps that change the system, for tests that make each fail in
 * turn; tg_admission_default_steps are the real ones (gate.c, listener.c). */
typedef struct {
  gboolean (*bind)(const TgForward *forward, guint forward_index, gboolean all_addresses,
                   uid_t caller_uid, GPtrArray *out, GError **error);
  gboolean (*guard)(TgDaemon *daemon, const TgPolicySubject *subject, uid_t owner,
                    GPtrArray *listeners, const char *tunnel_id, GError **error);
  void (*unguard)(TgDaemon *daemon, const char *address, guint16 port,
                  const char *tunnel_id);
  gboolean (*pin)(TgDaemon *daemon, const TgConnectBack *connect_back,
                  const char *tunnel_id, GError **error);
  void (*unpin)(TgDaemon *daemon, const TgConnectBack *connect_back);
} TgAdmissionSteps;

extern const TgAdmissionSteps tg_admission_default_steps;

/* Forward kinds this version serves: FALSE, with NotSupported naming the
 * forward, for one it cannot serve yet. */
gboolean tg_admission_forward_is_served(const TgForward *forward, GError **error);

/* The polkit actions a forward needs beyond org.tunnelgate.open:
 * open-remote for R, bind-any for a listener beyond loopback (also when
 * the policy's GatewayPorts yes makes it listen on all addresses). */
TgAction tg_admission_forward_actions(const TgPolicy *policy,
                                      const TgPolicySubject *subject,
                                      const TgForward *forward);

/* @forwards (copied) of @subject's tunnel @tunnel_id, asked for by
 * @caller_uid, who was granted @granted (TG_ACTION_NONE with
 * @check_actions FALSE: a profile's forwards, sanctioned by use-profile). */
TgAdmission *tg_admission_new(TgDaemon *daemon, uid_t caller_uid,
                              const TgPolicySubject *subject, const char *tunnel_id,
                              GPtrArray *forwards, TgAction granted,
                              gboolean check_actions);
/* Also decide on the tunnel: PermitServer for @host:@port, HostKeyPolicy
 * against @pinned_host_key, and with @new_tunnel MaxTunnels. */
void tg_admission_set_server(TgAdmission *admission, const char *host, guint16 port,
                             const char *pinned_host_key, gboolean new_tunnel);
void tg_admission_set_steps(TgAdmission *admission, const TgAdmissionSteps *steps);
/* The index in the tunnel's list of the first forward (0 by default). */
void tg_admission_set_first_index(TgAdmission *admission, guint index);
/* BIND puts the TCP listener of the forward at @position of those given,
 * whose spec asks for port 0, on @port instead of one the kernel chooses
 * (a persistent tunnel restored on the port it had). Everything else sees
 * the forward as given: the policy decides on port 0. */
void tg_admission_set_listen_port(TgAdmission *admission, guint position, guint16 port);

/* A reconnect: the forwards are the tunnel's own, admitted before, whose
 * listeners and pins stay (nothing is resolved, bound, guarded or pinned
 * again). The server and host key must still pass, or the transaction
 * fails; a forward the policy now forbids, or that needs an action beyond
 * those granted, does not fail it: tg_admission_get_refusal() says why. */
void tg_admission_set_readmission(TgAdmission *admission);
/* After a readmission: why the forward at @position of those given was
 * refused, or NULL when it was admitted again. */
const char *tg_admission_get_refusal(TgAdmission *admission, guint position);

typedef gboolean (*TgAdmissionCheckFunc)(TgAdmission *admission, gpointer user_data,
                                         GError **error);
typedef void (*TgAdmissionDoneFunc)(TgAdmission *admission, const GError *error,
                                    gpointer user_data);

/* Runs the transaction; @done is called exactly once, maybe before this
 * returns. @still_wanted may be NULL. */
void tg_admission_run(TgAdmission *admission, TgAdmissionCheckFunc still_wanted,
                      TgAdmissionDoneFunc done, gpointer user_data);

/* After success: the bound listeners (TgListener*, guarded) and the R
 * forwards' connect-backs (TgConnectBack*, pinned), each indexed in the
 * tunnel's list; the verification HostKeyPolicy asks for. */
GPtrArray *tg_admission_take_listeners(TgAdmission *admission);
GPtrArray *tg_admission_take_connect_backs(TgAdmission *admission);
TgHostKeyMode tg_admission_get_host_key_mode(TgAdmission *admission);

void tg_admission_free(TgAdmission *admission);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgAdmission, tg_admission_free)

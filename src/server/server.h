/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Server mode (ServerMode yes): tunnelgated on an SSH server makes "no
 * forwarding" hold for SFTP-only users and "only these destinations" for
 * jump-host users, whatever sshd_config says (doc/policy.md, "Server mode").
 *
 *  - users: uids are placed (SFTP-only, jump host, or neither) by asking
 *    the policy about every user NSS enumerates, the users server-mode
 *    blocks name and the members their groups list, at start, on reload,
 *    and whenever /etc/passwd or /etc/group change; and about any other
 *    uid when the kernel first drops a packet of its (nfnetlink_log tells,
 *    the firewall's server_unknown_uids says which): directory users NSS
 *    does not enumerate;
 *  - kernel: the uids go into the firewall's server sets (enforcer.c);
 *  - sshd: a drop-in with the policy's SftpOnly conditions as Match blocks
 *    (tg_policy_sftp_only_sshd_matches()) disabling every kind of
 *    forwarding, checked with `sshd -t` before it replaces the old one
 *    (atomic rename), sshd told with SIGHUP when SshdReload is yes;
 *  - audit: `sshd -T -C user=...` per SFTP-only user placed; forwarding
 *    still allowed is drift, logged as a warning and returned by
 *    tg_server_audit_async(), with the names the policy gives that NSS
 *    does not resolve or list.
 * The user walk, group lookups, name resolution and every sshd run happen
 * on a worker thread, one job at a time; a burst of changes while a job
 * runs costs one more job. The functions below are for the D-Bus thread:
 * none of them waits, except tg_server_wait() (start-up) and
 * tg_server_free(). */
#pragma once

#include <gio/gio.h>

#include "enforcer.h"
#include "policy.h"

typedef struct _TgServer TgServer;

typedef struct {
  char *user;
  char *setting; /* "allowtcpforwarding" ..., "drop-in", "unknown-user",
                  * "unknown-group", "unlisted-members", "learning" */
  char *value;   /* what sshd -T said, or the error */
} TgServerFinding;

TgServer *tg_server_new(TgEnforcer *enforcer);
void tg_server_free(TgServer *server);

/* Puts @policy in force: users, firewall sets, drop-in, audit, on the
 * worker (or, server mode turned off, the drop-in removed). The policy is
 * referenced for the passwd/group watch. */
void tg_server_apply_policy(TgServer *server, TgPolicy *policy);

/* Calls back once the worker is idle (everything asked so far is done).
 * _finish: FALSE with the error when the firewall refused the last users'
 * sets; a drop-in sshd -t refuses is logged and reported by the audit, not
 * an error (the kernel enforces either way). */
void tg_server_wait_async(TgServer *server, GAsyncReadyCallback callback,
                          gpointer user_data);
gboolean tg_server_wait_finish(TgServer *server, GAsyncResult *result, GError **error);

/* tg_server_wait_async() that iterates the main context until it answers:
 * for start-up, before the daemon serves calls. */
gboolean tg_server_wait(TgServer *server, GError **error);

/* Runs the audit after what is already asked: _finish gives the findings
 * (TgServerFinding*, owned by the array), empty when every SFTP-only user
 * has forwarding off or server mode is off. */
void tg_server_audit_async(TgServer *server, GAsyncReadyCallback callback,
                           gpointer user_data);
GPtrArray *tg_server_audit_finish(GAsyncResult *result, GError **error);

/* Whether server mode is on. */
gboolean tg_server_is_active(const TgServer *server);

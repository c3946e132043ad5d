/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Server mode (ServerMode yes): tunnelgated on an SSH server makes "no
 * forwarding" hold for SFTP-only users and "only these destinations" for
 * jump-host users, whatever sshd_config says (doc/policy.md, "Server mode").
 *
 *  - users: SftpOnly and ServerPermitOpen are resolved to uids by asking the
 *    policy about every user NSS knows, at start, on reload, and whenever
 *    /etc/passwd or /etc/group change;
 *  - kernel: their uids go into the firewall's server sets (enforcer.c);
 *  - sshd: a drop-in with a Match block per SFTP-only user disabling every
 *    kind of forwarding, checked with `sshd -t` before it replaces the old
 *    one (atomic rename), sshd told with SIGHUP when SshdReload is yes;
 *  - audit: `sshd -T -C user=...` per SFTP-only user; forwarding still
 *    allowed is drift, logged as a warning and returned by tg_server_audit().
 * D-Bus thread only. */
#pragma once

#include <glib.h>

#include "enforcer.h"
#include "policy.h"

typedef struct _TgServer TgServer;

typedef struct {
  char *user;
  char *setting; /* "allowtcpforwarding" ... or "drop-in" for an install error */
  char *value;   /* what sshd -T said, or the error */
} TgServerFinding;

TgServer *tg_server_new(TgEnforcer *enforcer);
void tg_server_free(TgServer *server);

/* Applies @policy: users, firewall sets, drop-in. The policy is referenced
 * for the passwd/group watch. FALSE with an error when the firewall sets
 * cannot be updated; a drop-in sshd -t refuses is logged and reported by the
 * audit, not an error (the kernel enforces either way). */
gboolean tg_server_apply_policy(TgServer *server, TgPolicy *policy, GError **error);

/* Runs the audit now: findings (TgServerFinding*, owned by the array), empty
 * when every SFTP-only user has forwarding off. */
GPtrArray *tg_server_audit(TgServer *server);

/* Whether server mode is on. */
gboolean tg_server_is_active(const TgServer *server);

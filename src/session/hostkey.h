/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Server host key verification for a tunnel's SSH session.
 *
 * Keys are trusted when they are in the system's /etc/ssh/ssh_known_hosts or
 * in the daemon's own known_hosts (/var/lib/tunnelgate/known_hosts); users'
 * ~/.ssh/known_hosts files are never read. A caller may pin the key they
 * expect with the host-key option ("SHA256:..."), which also lets them reach
 * a server neither file knows. A key that differs from a known one is always
 * refused. */
#pragma once

#include <glib.h>
#include <libssh/libssh.h>

/* HostKeyPolicy (policy.md): what a pin may do. */
typedef enum {
  TG_HOST_KEY_KNOWN_OR_PINNED, /* known hosts files, or the caller's pin */
  TG_HOST_KEY_STRICT,          /* known hosts files only; a pin only narrows */
  TG_HOST_KEY_PINNED_ONLY,     /* a pin is required and decides */
} TgHostKeyMode;

/* The server's host key fingerprint in OpenSSH's form, "SHA256:<base64>". */
char *tg_hostkey_fingerprint(ssh_session session, char **key_type, GError **error);

/* Verifies the connected session's host key; sets HostKeyUnknown or
 * HostKeyChanged naming the fingerprint. pinned may be NULL. */
gboolean tg_hostkey_verify(ssh_session session, const char *host, const char *pinned,
                           TgHostKeyMode mode, GError **error);

/* TRUE when text looks like "SHA256:" followed by 43 base64 characters. */
gboolean tg_hostkey_fingerprint_is_valid(const char *text);

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The one walk over the user accounts NSS knows (getpwent), for the
 * firewall's lockdown exemptions and server mode's SFTP-only and jump-host
 * users, and the one over the groups (getgrent) that tells server mode
 * which groups NSS enumerates. getpwent's cursor is process-wide: every walk goes through here,
 * under one lock, so walks on different threads do not disturb each other.
 * Blocks (NSS may be remote): call it off the D-Bus thread where it can run
 * for long. */
#pragma once

#include <glib.h>

typedef struct {
  guint32 uid;
  char *name;
} TgAccount;

/* Every account, in NSS order; an account listed twice (files and another
 * source) appears once, at its first place. The array owns its TgAccount*. */
GPtrArray *tg_accounts_list(void);

/* The name of every group NSS enumerates, in NSS order, each once. */
GPtrArray *tg_accounts_list_groups(void);
